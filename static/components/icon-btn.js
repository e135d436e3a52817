// A round icon button with its name: <sm-icon-btn icon="edit" label="Edit
// machine" @click="...">; size, color, loading and the rest go to the q-btn.

window.app.component('sm-icon-btn', {
  template: '#sm-icon-btn',
  props: {
    icon: {type: String, required: true},
    label: {type: String, required: true},
    tip: {type: String, default: null}
  }
})
