// One of a few options as buttons (no caps, flat, the chosen one in the primary
// colour). v-model, options, dense, size go to the q-btn-toggle.

window.app.component('sm-btn-toggle', {
  template: '#sm-btn-toggle'
})
