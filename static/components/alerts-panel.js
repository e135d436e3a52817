// Alerts on the Health & reports tab: how they reach the operator (their LNbits
// notification channels, anything failing to go out), the history, and which kinds
// the operator is told about, for all machines or one (docs/api.md, "Alerts").

window.app.component('sm-alerts-panel', {
  template: '#sm-alerts-panel',
  mixins: [
    window.SatMachineMixin,
    window.SatMachineLive.mixin({alerts: 'load'})
  ],
  data() {
    return {
      rows: [],
      loading: false,
      settings: null,
      dialog: false,
      saving: false,
      // the dialog: null = every machine, else one machine's own choices
      scope: null,
      form: null,
      columns: SatMachine.columns([
        ['opened_at', 'Opened', 'left', {format: this.dateTime}],
        ['subject', 'Alert', 'left', {classes: 'sm-wrap'}],
        ['resolved_at', 'Resolved', 'left', {format: this.dateTime}],
        ['delivery', 'Told', 'left', {format: (v, row) => this.told(row)}]
      ])
    }
  },
  computed: {
    delivery() {
      return this.store.health?.alerts || null
    },
    channelsText() {
      const c = this.delivery?.channels
      if (!c) return ''
      const ready = Object.entries(c)
        .filter(([, v]) => v.set && v.server_enabled)
        .map(([name]) => name)
      return ready.length
        ? `Alerts go to your ${ready.join(', ')}.`
        : 'No channel: set an e-mail address, Telegram chat id or Nostr identifier in your LNbits account (the server must have that channel enabled).'
    },
    scopeOptions() {
      return [{label: 'All machines', value: null}, ...this.machineOptions]
    }
  },
  activated() {
    this.load()
  },
  methods: {
    told(row) {
      if (!row.notify) return 'off'
      if (row.delivery === 'queued' && row.delivery_error) {
        return `retrying (${row.delivery_attempts})`
      }
      return row.delivery || '–'
    },
    async load() {
      this.loading = true
      try {
        const [alerts, settings] = await Promise.all([
          this.call('GET', '/alerts?limit=200'),
          this.call('GET', '/alerts/settings')
        ])
        this.rows = alerts.data
        this.settings = settings.data
      } catch (err) {
        this.fail(err, 'Loading alerts')
      } finally {
        this.loading = false
      }
    },
    openSettings() {
      const s = this.settings
      this.form = {
        kinds: {...s.kinds},
        machines: JSON.parse(JSON.stringify(s.machines || {})),
        stuck_minutes: s.stuck_minutes,
        leg_pending_minutes: s.leg_pending_minutes,
        errored_attempts: s.errored_attempts
      }
      this.scope = null
      this.dialog = true
    },
    // the toggle's value: a machine's own choice, else the all-machines one
    kindOn(kind) {
      const own = this.scope ? this.form.machines[this.scope] || {} : {}
      return kind in own ? own[kind] : this.form.kinds[kind]
    },
    setKind(kind, on) {
      if (!this.scope) {
        this.form.kinds[kind] = on
        return
      }
      const own = {...(this.form.machines[this.scope] || {})}
      if (on === this.form.kinds[kind]) delete own[kind]
      else own[kind] = on
      this.form.machines = {...this.form.machines, [this.scope]: own}
    },
    async save() {
      this.saving = true
      const machines = {}
      Object.entries(this.form.machines).forEach(([id, kinds]) => {
        if (Object.keys(kinds).length) machines[id] = kinds
      })
      try {
        const {data} = await this.call('PUT', '/alerts/settings', {
          kinds: this.form.kinds,
          machines,
          stuck_minutes: Number(this.form.stuck_minutes),
          leg_pending_minutes: Number(this.form.leg_pending_minutes),
          errored_attempts: Number(this.form.errored_attempts)
        })
        this.settings = data
        this.dialog = false
        this.ok('Alert settings saved')
      } catch (err) {
        this.fail(err, 'Saving alert settings')
      } finally {
        this.saving = false
      }
    }
  }
})
