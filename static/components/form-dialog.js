// A dialog with a form: <sm-form-dialog v-model="dialog.show" title="Add an LP"
// width="520px" submit="Enrol LP" :disable="!valid" @submit="save"
// data-testid="client-form">fields</sm-form-dialog>. @submit, data-testid and
// the other attributes go to the q-form; submit and close label its buttons.

window.app.component('sm-form-dialog', {
  template: '#sm-form-dialog',
  inheritAttrs: false,
  props: {
    modelValue: Boolean,
    title: {type: String, required: true},
    width: {type: String, default: '560px'},
    submit: {type: String, required: true},
    disable: Boolean,
    close: {type: String, default: 'Cancel'}
  },
  emits: ['update:modelValue']
})
