// A form field of the page: a filled, dense q-input. Everything given to it
// (v-model, label, hint, type, events) goes to the q-input.

window.app.component('sm-input', {
  template: '#sm-input'
})
