// Auto-settlement of the selected machine: after each distribution, an LP's
// remaining balance under a threshold is settled from a funding wallet. Emits
// `saved` (the machine changed).

window.app.component('sm-auto-settlement', {
  template: '#sm-auto-settlement',
  mixins: [window.SatMachineMixin],
  props: {
    machine: {type: Object, required: true}
  },
  emits: ['saved'],
  data() {
    const a = this.machine.auto_settlement || {}
    return {
      autoForm: {
        enabled: !!a.enabled,
        threshold_type: a.threshold_type || 'absolute',
        threshold_value: a.threshold_value || '',
        funding_wallet_id: a.funding_wallet_id || null,
        error: ''
      }
    }
  },
  methods: {
    async saveAutoSettlement() {
      const a = this.autoForm
      a.error = ''
      try {
        await this.call('PUT', `/machines/${this.machine.id}/auto-settlement`, {
          enabled: a.enabled,
          threshold_type: a.threshold_type,
          threshold_value: SatMachine.textOrNull(a.threshold_value),
          funding_wallet_id: a.funding_wallet_id
        })
        this.ok('Auto-settlement saved')
        this.$emit('saved')
      } catch (err) {
        a.error = this.fail(err, 'Saving auto-settlement')
      }
    }
  }
})
