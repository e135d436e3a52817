// One settlement in a dialog: its figures, legs, notes, and the corrections
// (approve or reject a held settlement, retry the failed legs, partial dispense).
// open(row) shows it; emits `changed` when a correction changed it.

window.app.component('sm-settlement-detail', {
  template: '#sm-settlement-detail',
  mixins: [window.SatMachineMixin],
  emits: ['changed'],
  data() {
    return {
      detail: {
        show: false,
        s: null,
        loading: false,
        note: '',
        pdMode: 'fraction',
        pdValue: '',
        rejectReason: ''
      },
      legColumns: SatMachine.columns([
        ['leg_type', 'Leg', 'left'],
        ['status', 'Status', 'left'],
        ['amount_sats', 'Sats', 'right'],
        ['amount_fiat', 'Fiat', 'right'],
        ['to', 'To', 'left', 'destination'],
        ['reason', 'Reason / error', 'left', 'error']
      ])
    }
  },
  computed: {
    detailLegs() {
      return this.detail.s?.legs || []
    }
  },
  methods: {
    async open(row) {
      this.detail = {
        show: true,
        s: {...row, legs: []},
        loading: true,
        note: '',
        pdMode: 'fraction',
        pdValue: '',
        rejectReason: ''
      }
      await this.reloadDetail()
    },
    async reloadDetail() {
      if (!this.detail.s) return
      this.detail.loading = true
      try {
        const {data} = await this.call(
          'GET',
          `/settlements/${this.detail.s.id}`
        )
        this.detail.s = data
      } catch (err) {
        this.fail(err, 'Loading the settlement')
      } finally {
        this.detail.loading = false
      }
    },
    legTarget(leg) {
      if (leg.client_id) return `LP ${this.clientName(leg.client_id)}`
      if (leg.destination_kind === 'wallet') {
        return this.walletName(leg.destination)
      }
      const to = this.short(leg.destination, 12)
      return leg.label ? `${leg.label}: ${to}` : to
    },
    async retrySettlement() {
      try {
        await this.call('POST', `/settlements/${this.detail.s.id}/retry`)
        this.ok(
          'Retry queued: failed legs will be paid again, completed ones never'
        )
        await this.reloadDetail()
        this.$emit('changed')
      } catch (err) {
        this.fail(err, 'Retrying')
      }
    },
    async approveHeld() {
      try {
        await this.call('POST', `/settlements/${this.detail.s.id}/approve`)
        this.ok('Approved: the engine pays it now')
        await this.reloadDetail()
        this.$emit('changed')
      } catch (err) {
        this.fail(err, 'Approving')
      }
    },
    async rejectHeld() {
      try {
        await this.call('POST', `/settlements/${this.detail.s.id}/reject`, {
          reason: this.detail.rejectReason.trim()
        })
        this.ok('Rejected: it stays visible and is never paid')
        this.detail.rejectReason = ''
        await this.reloadDetail()
        this.$emit('changed')
      } catch (err) {
        this.fail(err, 'Rejecting')
      }
    },
    async partialDispense() {
      const value = this.detail.pdValue.trim()
      const body =
        this.detail.pdMode === 'fraction'
          ? {dispensed_fraction: value}
          : {dispensed_fiat: value}
      try {
        await this.call(
          'POST',
          `/settlements/${this.detail.s.id}/partial-dispense`,
          body
        )
        this.ok('Settlement rescaled to what the machine dispensed')
        this.detail.pdValue = ''
        await this.reloadDetail()
        this.$emit('changed')
      } catch (err) {
        this.fail(err, 'Partial dispense')
      }
    },
    async addNote() {
      try {
        await this.call('POST', `/settlements/${this.detail.s.id}/notes`, {
          note: this.detail.note
        })
        this.ok('Note added')
        this.detail.note = ''
        await this.reloadDetail()
      } catch (err) {
        this.fail(err, 'Adding the note')
      }
    }
  }
})
