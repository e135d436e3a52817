// Commission: how the operator's share of each commission is split (the default
// rules, or a machine's own), with the percents checked exactly as the server
// checks them before they can be saved.

window.app.component('sm-commission-tab', {
  template: '#sm-commission-tab',
  mixins: [window.SatMachineMixin],
  data() {
    return {
      targetKinds: [
        {label: 'My wallet', value: 'wallet'},
        {label: 'Lightning address', value: 'lnaddress'},
        {label: 'LNURL', value: 'lnurl'},
        {label: 'Invoice key / wallet id', value: 'key'},
        {label: 'LPs pro rata', value: 'lps'}
      ],
      splits: {
        scope: 'default', // or a machine id
        inherited: false,
        legs: [],
        loading: false,
        serverError: ''
      }
    }
  },
  computed: {
    splitScopeOptions() {
      return [
        {
          label: 'Default (every machine without its own rules)',
          value: 'default'
        },
        ...this.machines.map(m => ({label: `Machine: ${m.name}`, value: m.id}))
      ]
    },
    splitCheck() {
      return SatMachine.checkPercents(this.splits.legs.map(l => l.percent))
    },
    splitTargetsComplete() {
      return this.splits.legs.every(
        l =>
          l.kind === 'lps' ||
          (l.kind === 'wallet' ? l.wallet : SatMachine.textOrNull(l.text))
      )
    },
    canSaveSplits() {
      return (
        this.splitCheck.valid &&
        this.splitTargetsComplete &&
        !this.splits.loading
      )
    }
  },
  watch: {
    'splits.scope'() {
      this.loadSplits()
    }
  },
  activated() {
    this.loadSplits()
  },
  methods: {
    async loadSplits() {
      const scope = this.splits.scope
      const query = scope === 'default' ? '' : `?machine_id=${scope}`
      this.splits.loading = true
      this.splits.serverError = ''
      try {
        const {data} = await this.call('GET', `/commission/splits${query}`)
        this.splits.inherited = data.inherited
        this.splits.legs = data.legs.map(l => this.legFromRule(l))
      } catch (err) {
        this.fail(err, 'Loading commission rules')
      } finally {
        this.splits.loading = false
      }
    },
    blankLeg() {
      return {kind: 'wallet', wallet: null, text: '', percent: '', label: ''}
    },
    // a saved rule as the form shows it: one of the user's wallets is picked
    // from the list, any other wallet is typed (invoice key / wallet id)
    legFromRule(rule) {
      const leg = this.blankLeg()
      leg.percent = rule.percent
      leg.label = rule.label || ''
      if (rule.target_kind === 'lps') leg.kind = 'lps'
      else if (rule.target_kind === 'wallet') {
        if (this.g.user.wallets.some(w => w.id === rule.target)) {
          leg.kind = 'wallet'
          leg.wallet = rule.target
        } else {
          leg.kind = 'key'
          leg.text = rule.target
        }
      } else {
        leg.kind = rule.target_kind === 'lnurl' ? 'lnurl' : 'lnaddress'
        leg.text = rule.target
      }
      return leg
    },
    addSplitLeg() {
      this.splits.legs.push(this.blankLeg())
    },
    removeSplitLeg(i) {
      this.splits.legs.splice(i, 1)
    },
    splitPayload() {
      const target = l =>
        l.kind === 'lps'
          ? 'lps'
          : l.kind === 'wallet'
            ? l.wallet
            : l.text.trim()
      return {
        machine_id: this.splits.scope === 'default' ? null : this.splits.scope,
        legs: this.splits.legs.map(l => ({
          target: target(l),
          percent: String(l.percent).trim(),
          label: SatMachine.textOrNull(l.label)
        }))
      }
    },
    async saveSplits() {
      this.splits.serverError = ''
      try {
        const {data} = await this.call(
          'PUT',
          '/commission/splits',
          this.splitPayload()
        )
        this.splits.inherited = data.inherited
        this.splits.legs = data.legs.map(l => this.legFromRule(l))
        this.ok(
          data.legs.length
            ? 'Commission rules saved'
            : this.splits.scope === 'default'
              ? 'Default rules cleared'
              : 'Machine rules cleared: it uses the default rules'
        )
        if (!data.legs.length && this.splits.scope !== 'default') {
          this.loadSplits()
        }
      } catch (err) {
        this.splits.serverError = this.fail(err, 'Saving commission rules')
      }
    }
  }
})
