// A refusal in a red banner, shown while `text` is set: <sm-error-banner
// :text="form.error" class="q-mt-md">.

window.app.component('sm-error-banner', {
  template: '#sm-error-banner',
  props: {
    text: {type: String, default: ''}
  }
})
