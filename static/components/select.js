// A choice of the page: a filled, dense q-select whose model is the chosen
// option's value ({label, value} options, or plain strings). Everything given to
// it (v-model, options, label, clearable, @filter) goes to the q-select.

window.app.component('sm-select', {
  template: '#sm-select'
})
