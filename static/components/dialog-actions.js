// The foot of a dialog, inside its q-form: <sm-dialog-actions submit="Save"
// :disable="!valid"> (Save submits the form, Cancel closes the dialog), or
// <sm-dialog-actions close="Close"> alone.

window.app.component('sm-dialog-actions', {
  template: '#sm-dialog-actions',
  props: {
    submit: {type: String, default: null},
    disable: Boolean,
    close: {type: String, default: 'Cancel'}
  }
})
