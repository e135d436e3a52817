// Settlements: every transaction of the operator's machines (filtered, paged by
// the server), a settlement's detail (sm-settlement-detail) and the manual entry
// dialog.

window.app.component('sm-settlements-tab', {
  template: '#sm-settlements-tab',
  mixins: [
    window.SatMachineMixin,
    window.SatMachineLive.mixin({books: 'loadSettlements'})
  ],
  data() {
    return {
      settlementStatuses: [
        'pending',
        'processing',
        'processed',
        'errored',
        'rejected',
        'held',
        'voided'
      ],
      settlements: {
        rows: [],
        loading: false,
        filter: {machine_id: null, status: null, tx_type: null},
        pagination: {page: 1, rowsPerPage: 10, rowsNumber: 0, sortBy: null},
        columns: SatMachine.columns([
          ['created_at', 'Time', 'left', {format: this.dateTime}],
          [
            'machine',
            'Machine',
            'left',
            {field: 'machine_id', format: this.machineLabel}
          ],
          ['source', 'Source', 'left'],
          ['tx_type', 'Type', 'left'],
          ['status', 'Status', 'left'],
          ['fiat_amount', 'Fiat', 'right', {format: SatMachine.withCurrency}],
          ['wire_sats', 'Wire', 'right', {format: this.sats}],
          ['principal_sats', 'Principal', 'right', {format: this.sats}],
          ['fee_sats', 'Fee', 'right', {format: this.sats}],
          ['platform_fee_sats', 'Platform', 'right', {format: this.sats}],
          ['operator_fee_sats', 'Operator', 'right', {format: this.sats}],
          [
            'orphan_sats',
            'Orphan',
            'right',
            {
              format: this.sats,
              classes: row =>
                row.orphan_sats > 0 ? 'text-warning text-weight-bold' : ''
            }
          ],
          [
            'external_id',
            'External id',
            'left',
            {format: id => this.short(id, 10)}
          ]
        ])
      },
      manualDialog: {show: false, data: this.blankManual()}
    }
  },
  computed: {
    settlementFilters() {
      return [
        {key: 'machine_id', label: 'Machine', options: this.machineOptions},
        {key: 'status', label: 'Status', options: this.settlementStatuses},
        {key: 'tx_type', label: 'Type', options: ['cash_out', 'cash_in']}
      ]
    }
  },
  activated() {
    this.loadSettlements()
  },
  methods: {
    loadSettlements() {
      return this.onSettlementsRequest({
        pagination: this.settlements.pagination
      })
    },
    async onSettlementsRequest(props) {
      const st = this.settlements
      const {page, rowsPerPage} = props.pagination
      const limit = rowsPerPage || 500
      const params = new URLSearchParams({limit, offset: (page - 1) * limit})
      Object.entries(st.filter).forEach(([k, v]) => v && params.set(k, v))
      st.loading = true
      try {
        const response = await this.call('GET', `/settlements?${params}`)
        st.rows = response.data
        st.pagination = {
          ...st.pagination,
          page,
          rowsPerPage,
          rowsNumber: Number(
            response.headers['x-total-count'] || response.data.length
          )
        }
      } catch (err) {
        this.fail(err, 'Loading settlements')
      } finally {
        st.loading = false
      }
    },
    filterSettlements() {
      this.settlements.pagination.page = 1
      this.loadSettlements()
    },
    openSettlement(row) {
      this.$refs.detail.open(row)
    },

    // ---------------------------------------------------------------- manual entry
    blankManual() {
      return {
        machine_id: null,
        tx_type: 'cash_out',
        external_id: '',
        fiat_amount: '',
        principal_sats: '',
        fee_sats: '0',
        exchange_rate: '',
        notes: ''
      }
    },
    openManual() {
      this.manualDialog.data = {
        ...this.blankManual(),
        machine_id: this.store.selectedMachineId || this.machines[0]?.id || null
      }
      this.manualDialog.show = true
    },
    async saveManual() {
      const {intOrNull, textOrNull} = SatMachine
      const d = this.manualDialog.data
      const body = {
        machine_id: d.machine_id,
        tx_type: d.tx_type,
        external_id: d.external_id.trim(),
        fiat_amount: d.fiat_amount.trim(),
        fee_sats: intOrNull(d.fee_sats) ?? 0
      }
      if (intOrNull(d.principal_sats) !== null) {
        body.principal_sats = intOrNull(d.principal_sats)
      }
      if (textOrNull(d.exchange_rate))
        body.exchange_rate = d.exchange_rate.trim()
      if (textOrNull(d.notes)) body.notes = d.notes.trim()
      try {
        const {data} = await this.call('POST', '/settlements', body)
        this.ok(`Settlement ${data.external_id} entered (${data.status})`)
        this.manualDialog.show = false
        this.loadSettlements()
      } catch (err) {
        this.fail(err, 'Manual entry')
      }
    }
  }
})
