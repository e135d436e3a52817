// The head of a card: <sm-card-header title="Health" reload-label="Reload health"
// @reload="load">caption</sm-card-header>.

window.app.component('sm-card-header', {
  template: '#sm-card-header',
  props: {
    title: {type: String, required: true},
    reloadLabel: {type: String, default: null} // a reload button, so named
  },
  emits: ['reload']
})
