// The page's tables: <sm-table :rows :columns (SatMachine.columns) ...>, every
// other q-table attribute (loading, pagination, no-data-label, data-testid, ...)
// passed on to the q-table. A cell of its own: <template v-slot:cell-NAME="{row}">.
// @row-click="open" makes the rows clickable (open(row)).

window.app.component('sm-table', {
  template: '#sm-table',
  props: {
    // a listener declared as a prop: the table knows whether there is one
    onRowClick: {type: Function, default: null}
  }
})
