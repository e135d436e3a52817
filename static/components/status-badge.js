// A status (of a settlement, leg, deposit, machine or LP) in its colour, the same
// everywhere on the page: <sm-status-badge :status="row.status">.

window.app.component('sm-status-badge', {
  template: '#sm-status-badge',
  props: {
    status: {type: String, default: ''},
    label: {type: String, default: null}, // default: the status
    color: {type: String, default: null}, // default: the status's colour
    chip: Boolean // a square chip instead of a badge
  },
  computed: {
    shownColor() {
      return this.color || SatMachine.statusColor(this.status)
    },
    shownLabel() {
      return this.label ?? this.status
    }
  }
})
