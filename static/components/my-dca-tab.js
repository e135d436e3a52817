// My DCA, the LP's own page: their preferences (wallet, flow or fixed mode,
// forwarding to a Lightning address), their balance at each machine, a chart of
// sats and balance over time, their payouts, their deposits with status, and a
// statement per period (deposits, payouts in sats and fiat, average cost, fees)
// as a table, a CSV and a printable page.

window.app.component('sm-my-dca-tab', {
  template: '#sm-my-dca-tab',
  mixins: [
    window.SatMachineMixin,
    window.SatMachineLive.mixin({lp: 'refreshFigures'})
  ],
  data() {
    return {
      lp: {
        prefs: {
          wallet_id: null,
          dca_mode: 'flow',
          fixed_mode_daily_limit: '',
          autoforward_enabled: false,
          autoforward_ln_address: ''
        },
        prefsSet: false,
        summary: [],
        payments: [],
        chartMachine: null,
        loading: false,
        deposits: [],
        statement: {period: 'month', rows: [], totals: []}
      },
      depositColumns: SatMachine.columns([
        ['created_at', 'Recorded', 'left', {format: this.dateTime}],
        [
          'machine',
          'Machine',
          'left',
          {field: 'machine_id', format: this.machineLabel}
        ],
        ['amount', 'Amount', 'right', {format: SatMachine.withCurrency}],
        ['status', 'Status', 'left', {badge: true}],
        [
          'confirmed_at',
          'Confirmed / cancelled',
          'left',
          {
            field: d => d.confirmed_at || d.cancelled_at,
            format: this.dateTime
          }
        ]
      ]),
      statementColumns: SatMachine.columns([
        ['period', 'Period from', 'left'],
        ['machine_name', 'Machine', 'left'],
        [
          'deposits',
          'Deposits',
          'right',
          {format: (v, r) => `${v} ${r.currency} (${r.deposits_count})`}
        ],
        ['payouts_count', 'Payouts', 'right'],
        ['payout_sats', 'Sats', 'right', {format: this.sats}],
        ['payout_fiat', 'Fiat', 'right', {format: SatMachine.withCurrency}],
        [
          'average_cost_fiat_per_btc',
          'Average cost (per BTC)',
          'right',
          {format: (v, r) => (v ? `${this.groupDigits(v)} ${r.currency}` : '–')}
        ],
        ['fees_msat', 'Fees (msat)', 'right', {format: this.sats}]
      ]),
      lpPaymentColumns: SatMachine.columns([
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
        ['leg_type', 'Type', 'left'],
        ['status', 'Status', 'left', {badge: true}],
        ['amount_sats', 'Sats', 'right', {format: this.sats}],
        ['amount_fiat', 'Fiat', 'right', {format: SatMachine.withCurrency}],
        ['exchange_rate', 'Rate (sats/unit)', 'right'],
        [
          'note',
          'To / reason',
          'left',
          {field: 'destination', format: (_, leg) => this.payoutNote(leg)}
        ]
      ])
    }
  },
  computed: {
    // the LP's machines are mostly someone else's: named by the summary
    machineNames() {
      const names = {}
      this.machines.forEach(m => (names[m.id] = m.name))
      this.lp.summary.forEach(
        s => (names[s.machine_id] = names[s.machine_id] || s.machine_name)
      )
      return names
    },
    // the period rows, then one total per machine
    statementRows() {
      const st = this.lp.statement
      return [...st.rows, ...st.totals].map(r => ({
        ...r,
        id: `${r.period} ${r.machine_id}`
      }))
    },
    printableUrl() {
      return `/satmachineadmin/statement?period=${this.lp.statement.period}`
    },
    lpChartOptions() {
      return this.lp.summary.map(s => ({
        label: s.machine_name,
        value: s.machine_id
      }))
    }
  },
  watch: {
    'lp.chartMachine'() {
      this.$nextTick(() => this.renderLpChart())
    }
  },
  activated() {
    this.loadLp()
  },
  methods: {
    // a payout's reason when it failed, else where it went
    payoutNote(leg) {
      if (leg.error) return leg.error
      return leg.destination_kind === 'wallet'
        ? this.walletName(leg.destination)
        : this.short(leg.destination, 12)
    },
    // [label, value, class] of one machine's summary
    summaryFigures(s) {
      const cost = s.average_cost_basis_fiat_per_btc
      return [
        [
          'Remaining balance',
          `${s.remaining_balance} ${s.currency}`,
          'text-h6'
        ],
        ['Sats received', this.sats(s.sats_received), 'text-h6'],
        [
          'Converted / deposited',
          `${s.total_converted} / ${s.total_deposits}`,
          'text-body1'
        ],
        [
          'Average cost',
          cost ? `${this.groupDigits(cost)} ${s.currency}/BTC` : '–',
          'text-body1'
        ]
      ]
    },
    async loadLp() {
      this.lp.loading = true
      try {
        // 404: no preferences yet (a missing endpoint is an error)
        const prefs = await this.call('GET', '/lp').catch(err => {
          if (
            err?.response?.status === 404 &&
            !SatMachineApi.missingEndpoint(err)
          ) {
            return null
          }
          throw err
        })
        if (prefs) {
          const p = prefs.data
          this.lp.prefs = {
            wallet_id: p.wallet_id,
            dca_mode: p.dca_mode,
            fixed_mode_daily_limit: p.fixed_mode_daily_limit || '',
            autoforward_enabled: p.autoforward_enabled,
            autoforward_ln_address: p.autoforward_ln_address || ''
          }
          this.lp.prefsSet = true
        } else {
          this.lp.prefsSet = false
          this.lp.prefs.wallet_id =
            this.lp.prefs.wallet_id || this.g.user.wallets[0]?.id
        }
        const [summary, payments, deposits] = await Promise.all([
          this.call('GET', '/lp/summary'),
          this.call('GET', '/lp/legs?limit=10000'),
          this.call('GET', '/lp/deposits'),
          this.loadStatement()
        ])
        this.lp.summary = summary.data
        this.lp.payments = payments.data
        this.lp.deposits = deposits.data
        if (!this.lp.chartMachine && this.lp.summary.length) {
          this.lp.chartMachine = this.lp.summary[0].machine_id
        } else {
          this.$nextTick(() => this.renderLpChart())
        }
      } catch (err) {
        this.fail(err, 'Loading your DCA')
      } finally {
        this.lp.loading = false
      }
    },
    async loadStatement() {
      const st = this.lp.statement
      try {
        const {data} = await this.call(
          'GET',
          `/lp/statement?period=${st.period}`
        )
        st.rows = data.rows
        st.totals = data.totals
      } catch (err) {
        this.fail(err, 'Loading your statement')
      }
    },
    async downloadStatement() {
      const period = this.lp.statement.period
      try {
        const response = await this.call(
          'GET',
          `/lp/statement.csv?period=${period}`,
          undefined,
          {responseType: 'blob'}
        )
        const url = URL.createObjectURL(
          new Blob([response.data], {type: 'text/csv'})
        )
        const a = document.createElement('a')
        a.href = url
        a.download = `satmachine-statement-${period}.csv`
        document.body.appendChild(a)
        a.click()
        a.remove()
        setTimeout(() => URL.revokeObjectURL(url), 10000)
      } catch (err) {
        this.fail(err, 'Downloading your statement')
      }
    },
    // a live update: balances and payouts (the preference form is left alone)
    async refreshFigures() {
      try {
        const [summary, payments, deposits] = await Promise.all([
          this.call('GET', '/lp/summary'),
          this.call('GET', '/lp/legs?limit=10000'),
          this.call('GET', '/lp/deposits')
        ])
        this.lp.summary = summary.data
        this.lp.payments = payments.data
        this.lp.deposits = deposits.data
        this.$nextTick(() => this.renderLpChart())
      } catch (err) {
        /* the next update or a reload tries again */
      }
    },
    renderLpChart() {
      const s = this.lp.summary.find(x => x.machine_id === this.lp.chartMachine)
      if (!s) return SatMachine.destroyChart('lp')
      const legs = this.lp.payments.filter(l => l.machine_id === s.machine_id)
      SatMachine.lpChart(
        'lp',
        this.$refs.lpChart,
        SatMachine.lpEventsBackwards(s.remaining_balance, legs),
        s.currency
      )
    },
    async saveLpPrefs() {
      const p = this.lp.prefs
      const {textOrNull} = SatMachine
      const body = {
        wallet_id: p.wallet_id,
        dca_mode: p.dca_mode,
        fixed_mode_daily_limit:
          p.dca_mode === 'fixed' ? textOrNull(p.fixed_mode_daily_limit) : null,
        autoforward_enabled: p.autoforward_enabled,
        autoforward_ln_address: p.autoforward_enabled
          ? textOrNull(p.autoforward_ln_address)
          : null
      }
      try {
        await this.call('PUT', '/lp', body)
        this.lp.prefsSet = true
        this.ok('Your DCA preferences are saved')
      } catch (err) {
        this.fail(err, 'Saving your preferences')
      }
    }
  }
})
