// Health & reports: the background tasks and each machine's float, a CSV export
// of the payments (legs) in a date range, and the sats paid to LPs per day.

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
        }))
      ]
    }
  },
  activated() {
    this.loadReports()
  },
  methods: {
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
    async exportCsv() {
      const f = this.exportForm
      const params = new URLSearchParams()
      if (f.since) {
        params.set('since', new Date(`${f.since}T00:00:00`).toISOString())
      }
      if (f.until) {
        params.set('until', new Date(`${f.until}T23:59:59`).toISOString())
      }
      if (f.machine_id) params.set('machine_id', f.machine_id)
      if (f.leg_type) params.set('leg_type', f.leg_type)
      f.busy = true
      try {
        const response = await this.call(
          'GET',
          `/legs.csv?${params}`,
          undefined,
          {responseType: 'blob'}
        )
        const blob = new Blob([response.data], {type: 'text/csv'})
        const url = URL.createObjectURL(blob)
        const a = document.createElement('a')
        a.href = url
        a.download = `satmachine-payments${f.since ? '-' + f.since : ''}${f.until ? '-' + f.until : ''}.csv`
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
