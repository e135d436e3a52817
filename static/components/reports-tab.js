// Health & reports: the background tasks and each machine's float, CSV exports
// of the payments (legs) and settlements in a date range, the volumes by period
// (day, week, month: a chart and a table, GET /reports) and the sats paid to LPs
// per day.

window.app.component('sm-reports-tab', {
  template: '#sm-reports-tab',
  mixins: [
    window.SatMachineMixin,
    window.SatMachineLive.mixin({books: 'loadReports', alerts: 'loadReports'})
  ],
  data() {
    return {
      // the background tasks: [health's flag, icon, name]
      tasks: [
        ['listener_alive', 'hearing', 'payment listener'],
        ['engine_alive', 'settings', 'engine'],
        ['sweep_alive', 'cleaning_services', 'sweep']
      ],
      legTypes: [
        'super_fee',
        'operator_split',
        'dca',
        'autoforward',
        'fixed',
        'settlement'
      ],
      report: {period: 'day', machine_id: null, rows: [], loading: false},
      reportColumns: SatMachine.columns([
        ['period', 'Period from', 'left'],
        [
          'machine',
          'Machine',
          'left',
          {
            field: 'machine_id',
            format: id => (id ? this.machineLabel(id) : 'All machines')
          }
        ],
        ['cash_outs', 'Cash-outs', 'right'],
        [
          'cash_out_fiat',
          'Cash out',
          'right',
          {format: SatMachine.withCurrency}
        ],
        ['cash_ins', 'Cash-ins', 'right'],
        ['cash_in_fiat', 'Cash in', 'right', {format: SatMachine.withCurrency}],
        ['principal_sats', 'Principal', 'right', {format: this.sats}],
        ['commission_sats', 'Commission', 'right', {format: this.sats}],
        ['platform_fee_sats', 'Platform', 'right', {format: this.sats}],
        ['operator_fee_sats', 'Operator', 'right', {format: this.sats}],
        ['orphan_sats', 'Orphan', 'right', {format: this.sats}],
        ['lp_payout_sats', 'To LPs (sats)', 'right', {format: this.sats}],
        [
          'lp_payout_fiat',
          'To LPs (fiat)',
          'right',
          {format: SatMachine.withCurrency}
        ]
      ]),
      exportForm: {
        since: '',
        until: '',
        machine_id: null,
        leg_type: null,
        busy: false
      }
    }
  },
  computed: {
    health() {
      return this.store.health
    },
    // two rows of badges: the settlements by status, then errored and stuck
    healthBadges() {
      const h = this.health
      return [
        Object.entries(h.settlements || {}).map(([status, n]) => ({
          status,
          label: `${status}: ${n}`
        })),
        ['errored', 'stuck'].map(problem => ({
          color: h[problem] ? 'negative' : 'positive',
          label: `${problem}: ${h[problem]}`
        })),
        // payments that left LNbits and are not settled yet (LNbits says pending)
        [
          {
            color: h.legs_in_flight ? 'warning' : 'positive',
            label:
              `in flight: ${h.legs_in_flight || 0}` +
              (h.legs_in_flight
                ? ` (${this.sats(h.in_flight_sats)}, oldest ` +
                  `${this.dateTime(h.oldest_in_flight_since)})`
                : '')
          }
        ]
      ]
    }
  },
  activated() {
    this.loadReports()
    this.loadPeriods()
  },
  methods: {
    async loadPeriods() {
      const r = this.report
      const params = new URLSearchParams({period: r.period})
      if (r.machine_id) params.set('machine_id', r.machine_id)
      r.loading = true
      try {
        const {data} = await this.call('GET', `/reports?${params}`)
        // a row is one (period, machine or all, currency)
        r.rows = data.map(x => ({
          ...x,
          id: `${x.period} ${x.machine_id || 'all'} ${x.currency}`
        }))
        await this.$nextTick()
        SatMachine.barChart(
          'periods',
          this.$refs.periodChart,
          SatMachine.periodSeries(data, [
            ['lp_payout_sats', 'to LPs'],
            ['operator_fee_sats', 'operator fee'],
            ['platform_fee_sats', 'platform fee'],
            ['orphan_sats', 'orphan']
          ]),
          'sats'
        )
      } catch (err) {
        this.fail(err, 'Loading the report')
      } finally {
        r.loading = false
      }
    },
    async loadReports() {
      try {
        const [machines, health, legs] = await Promise.all([
          this.call('GET', '/machines'),
          this.call('GET', '/health'),
          this.call('GET', '/legs?leg_type=dca&status=completed&limit=10000')
        ])
        this.store.machines = machines.data
        this.store.health = health.data
        await this.$nextTick()
        SatMachine.barChart(
          'daily',
          this.$refs.dailyChart,
          SatMachine.dailySatsPerMachine(legs.data, this.machineNames),
          'sats to LPs'
        )
      } catch (err) {
        this.fail(err, 'Loading reports')
      }
    },
    async exportCsv(what = 'legs') {
      const f = this.exportForm
      const params = new URLSearchParams()
      if (f.since) {
        params.set('since', new Date(`${f.since}T00:00:00`).toISOString())
      }
      if (f.until) {
        params.set('until', new Date(`${f.until}T23:59:59`).toISOString())
      }
      if (f.machine_id) params.set('machine_id', f.machine_id)
      if (f.leg_type && what === 'legs') params.set('leg_type', f.leg_type)
      const name = what === 'legs' ? 'payments' : 'settlements'
      f.busy = true
      try {
        const response = await this.call(
          'GET',
          `/${what}.csv?${params}`,
          undefined,
          {responseType: 'blob'}
        )
        const blob = new Blob([response.data], {type: 'text/csv'})
        const url = URL.createObjectURL(blob)
        const a = document.createElement('a')
        a.href = url
        a.download = `satmachine-${name}${f.since ? '-' + f.since : ''}${f.until ? '-' + f.until : ''}.csv`
        document.body.appendChild(a)
        a.click()
        a.remove()
        setTimeout(() => URL.revokeObjectURL(url), 10000)
        this.ok('CSV downloaded')
      } catch (err) {
        // an error answer to a blob request is a blob too: read its JSON
        if (err?.response?.data instanceof Blob) {
          const text = await err.response.data.text()
          try {
            err.response.data = JSON.parse(text)
          } catch (e) {
            err.response.data = {detail: text}
          }
        }
        this.fail(err, 'CSV export')
      } finally {
        f.busy = false
      }
    }
  }
})
