// One labelled figure in a q-col-gutter row: <sm-figure label="Fee" :value="..."
// value-class="text-h6">.

window.app.component('sm-figure', {
  template: '#sm-figure',
  props: {
    label: {type: String, required: true},
    value: {type: [String, Number], default: ''},
    valueClass: {type: String, default: null}
  }
})
