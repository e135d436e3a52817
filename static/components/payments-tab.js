// Payments: every leg of the operator's machines in one table, whatever its kind
// (dca, fixed, settlement, the commission's splits, the platform's fee,
// autoforwards), filtered by machine, kind, status and date range, paged by the
// server (GET /legs with X-Total-Count). A leg of an estimated settlement and a
// payment in flight are marked.

window.app.component('sm-payments-tab', {
  template: '#sm-payments-tab',
  mixins: [window.SatMachineMixin],
  data() {
    return {
      legTypes: [
        {label: 'DCA (flow)', value: 'dca'},
        {label: 'Fixed mode', value: 'fixed'},
        {label: 'Balance settlement', value: 'settlement'},
        {label: 'Commission split', value: 'operator_split'},
        {label: 'Platform fee', value: 'super_fee'},
        {label: 'Autoforward', value: 'autoforward'}
      ],
      legStatuses: ['pending', 'completed', 'failed', 'skipped', 'voided'],
      filter: {
        machine_id: null,
        leg_type: null,
        status: null,
        since: '',
        until: ''
      },
      rows: [],
      loading: false,
      pagination: {page: 1, rowsPerPage: 25, rowsNumber: 0, sortBy: null},
      columns: SatMachine.columns([
        [
          'created_at',
          'Time',
          'left',
          {field: l => l.completed_at || l.created_at, format: this.dateTime}
        ],
        [
          'machine',
          'Machine',
          'left',
          {field: 'machine_id', format: this.machineLabel}
        ],
        ['leg_type', 'Kind', 'left'],
        ['status', 'Status', 'left'],
        ['amount_sats', 'Sats', 'right', {format: this.sats}],
        ['amount_fiat', 'Fiat', 'right', {format: SatMachine.withCurrency}],
        ['exchange_rate', 'Rate (sats/unit)', 'right'],
        [
          'to',
          'To / reason',
          'left',
          {
            field: 'destination',
            format: (_, leg) => this.legTarget(leg),
            classes: 'sm-wrap'
          }
        ]
      ])
    }
  },
  activated() {
    if (!Object.keys(this.store.allClients).length) this.store.loadAllClients()
    this.load()
  },
  methods: {
    legTarget(leg) {
      if (leg.error) return leg.error
      if (leg.client_id) return `LP ${this.clientName(leg.client_id)}`
      if (leg.destination_kind === 'wallet') {
        return this.walletName(leg.destination)
      }
      return this.short(leg.destination, 12)
    },
    params() {
      const f = this.filter
      const params = new URLSearchParams()
      ;['machine_id', 'leg_type', 'status'].forEach(
        k => f[k] && params.set(k, f[k])
      )
      if (f.since) {
        params.set('since', new Date(`${f.since}T00:00:00`).toISOString())
      }
      if (f.until) {
        params.set('until', new Date(`${f.until}T23:59:59`).toISOString())
      }
      return params
    },
    load() {
      return this.onRequest({pagination: this.pagination})
    },
    filtered() {
      this.pagination.page = 1
      this.load()
    },
    async onRequest(props) {
      const {page, rowsPerPage} = props.pagination
      const limit = rowsPerPage || 500
      const params = this.params()
      params.set('limit', limit)
      params.set('offset', (page - 1) * limit)
      this.loading = true
      try {
        const response = await this.call('GET', `/legs?${params}`)
        this.rows = response.data
        this.pagination = {
          ...this.pagination,
          page,
          rowsPerPage,
          rowsNumber: Number(
            response.headers['x-total-count'] || response.data.length
          )
        }
      } catch (err) {
        this.fail(err, 'Loading payments')
      } finally {
        this.loading = false
      }
    }
  }
})
