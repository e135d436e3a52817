// Platform (super user only): the platform's fee, a fraction of every
// commission, and the wallet it is paid to.

window.app.component('sm-platform-tab', {
  template: '#sm-platform-tab',
  mixins: [window.SatMachineMixin],
  data() {
    return {
      superCfg: {super_fee_fraction: '', fee_wallet_id: null, updated_at: null}
    }
  },
  activated() {
    this.loadSuper()
  },
  methods: {
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
