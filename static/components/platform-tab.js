// Platform (super user only): the platform's fee, a fraction of every
// commission, and the wallet it is paid to; and a read-only overview of every
// operator's machines, volumes and the platform fees earned per period
// (GET /super/overview).

window.app.component('sm-platform-tab', {
  template: '#sm-platform-tab',
  mixins: [window.SatMachineMixin],
  data() {
    return {
      superCfg: {super_fee_fraction: '', fee_wallet_id: null, updated_at: null},
      overview: {period: 'month', machines: [], rows: [], loading: false},
      platformMachineColumns: SatMachine.columns([
        [
          'operator',
          'Operator',
          'left',
          {
            field: m => m.operator_name || this.short(m.operator_user_id)
          }
        ],
        ['name', 'Machine', 'left'],
        ['currency', 'Currency', 'left'],
        ['status', 'Status', 'left', {badge: true}],
        ['created_at', 'Since', 'left', {format: this.dateTime}]
      ]),
      platformRowColumns: SatMachine.columns([
        ['period', 'Period from', 'left'],
        [
          'operator',
          'Operator',
          'left',
          {
            field: r => r.operator_name || this.short(r.operator_user_id)
          }
        ],
        ['machine_name', 'Machine', 'left'],
        ['cash_outs', 'Cash-outs', 'right'],
        [
          'cash_out_fiat',
          'Cash out',
          'right',
          {format: SatMachine.withCurrency}
        ],
        ['cash_ins', 'Cash-ins', 'right'],
        ['cash_in_fiat', 'Cash in', 'right', {format: SatMachine.withCurrency}],
        ['commission_sats', 'Commission', 'right', {format: this.sats}],
        ['platform_fee_sats', 'Platform fee', 'right', {format: this.sats}],
        ['platform_fee_paid_sats', 'Fee paid', 'right', {format: this.sats}]
      ])
    }
  },
  activated() {
    this.loadSuper()
    this.loadOverview()
  },
  methods: {
    async loadOverview() {
      const o = this.overview
      o.loading = true
      try {
        const {data} = await this.call(
          'GET',
          `/super/overview?period=${o.period}`
        )
        o.machines = data.machines.map(m => ({...m, id: m.machine_id}))
        o.rows = data.rows.map(r => ({
          ...r,
          id: `${r.period} ${r.machine_id}`
        }))
        await this.$nextTick()
        const fees = data.fees_by_period
        SatMachine.barChart(
          'platform',
          this.$refs.feeChart,
          {
            labels: fees.map(f => f.period),
            datasets: [
              {
                label: 'platform fee paid',
                data: fees.map(f => f.platform_fee_paid_sats)
              }
            ]
          },
          'sats'
        )
      } catch (err) {
        this.fail(err, 'Loading the platform overview')
      } finally {
        o.loading = false
      }
    },
    async loadSuper() {
      try {
        const {data} = await this.call('GET', '/super/config')
        this.superCfg = data
      } catch (err) {
        this.fail(err, 'Loading platform settings')
      }
    },
    async saveSuper() {
      try {
        const {data} = await this.call('PUT', '/super/config', {
          super_fee_fraction: String(this.superCfg.super_fee_fraction).trim(),
          fee_wallet_id: this.superCfg.fee_wallet_id || null
        })
        this.superCfg = data
        this.ok('Platform fee saved')
      } catch (err) {
        this.fail(err, 'Saving platform settings')
      }
    },
    feePercent(fraction) {
      const n = Number(fraction)
      return isFinite(n) && String(fraction).trim() !== ''
        ? `${(n * 100).toFixed(2)} % of every commission`
        : ''
    }
  }
})
