// Audit trail: who did what to which machine, LP, deposit, settlement, rule or
// connection (GET /audit), newest first, optionally for one entity's id.

window.app.component('sm-audit-tab', {
  template: '#sm-audit-tab',
  mixins: [window.SatMachineMixin],
  data() {
    return {
      entityId: '',
      limit: 200,
      rows: [],
      loading: false,
      columns: SatMachine.columns([
        ['created_at', 'Time', 'left', {format: this.dateTime}],
        ['action', 'Action', 'left'],
        ['entity_type', 'On', 'left'],
        ['entity_id', 'Id', 'left', {format: id => this.short(id, 10)}],
        [
          'actor_user_id',
          'By',
          'left',
          {format: id => (id === this.g.user.id ? 'you' : this.short(id))}
        ],
        ['detail', 'Detail', 'left']
      ])
    }
  },
  activated() {
    this.load()
  },
  methods: {
    // an audit row's detail as "key: value; ..." (lists shortened)
    detailText(detail) {
      if (!detail) return ''
      return Object.entries(detail)
        .map(([k, v]) => {
          const text = Array.isArray(v)
            ? `${v.length} (${v.map(x => this.short(String(x), 6)).join(', ')})`
            : typeof v === 'object' && v !== null
              ? JSON.stringify(v)
              : String(v)
          return `${k}: ${text}`
        })
        .join('; ')
    },
    async load() {
      const params = new URLSearchParams({limit: this.limit})
      const id = this.entityId.trim()
      if (id) params.set('entity_id', id)
      this.loading = true
      try {
        const {data} = await this.call('GET', `/audit?${params}`)
        this.rows = data
      } catch (err) {
        this.fail(err, 'Loading the audit trail')
      } finally {
        this.loading = false
      }
    }
  }
})
