// One settlement in a dialog: its figures, legs, notes, and the corrections
// (approve or reject a held settlement, retry the failed legs, partial dispense,
// void one none of whose legs was paid, with a reason).
// open(row) shows it; emits `changed` when a correction changed it.

window.app.component('sm-settlement-detail', {
  template: '#sm-settlement-detail',
  mixins: [
    window.SatMachineMixin,
    window.SatMachineLive.mixin({books: 'reloadIfShown'})
  ],
  emits: ['changed'],
  data() {
    return {
      detail: this.detailState(null),
      legColumns: SatMachine.columns([
        ['leg_type', 'Leg', 'left'],
        ['status', 'Status', 'left', {badge: true}],
        ['amount_sats', 'Sats', 'right', {format: this.sats}],
        ['amount_fiat', 'Fiat', 'right', {format: SatMachine.withCurrency}],
        [
          'to',
          'To',
          'left',
          {field: 'destination', format: (_, leg) => this.legTarget(leg)}
        ],
        [
          'reason',
          'Reason / error',
          'left',
          {field: 'error', classes: 'sm-wrap'}
        ]
      ])
    }
  },
  computed: {
    detailLegs() {
      return this.detail.s?.legs || []
    },
    // the server decides (409 once a leg completed); this only hides the button
    voidable() {
      const s = this.detail.s
      return (
        ['pending', 'errored', 'processed'].includes(s.status) &&
        !this.detailLegs.some(
          l => l.status === 'completed' && l.leg_type !== 'autoforward'
        )
      )
    },
    figures() {
      const s = this.detail.s
      const sats = n => `${this.sats(n)} sats`
      return [
        ['Fiat', `${s.fiat_amount} ${s.currency}`],
        ['Rate (sats/unit)', s.exchange_rate || '–'],
        ['Wire', sats(s.wire_sats)],
        ['Principal', sats(s.principal_sats)],
        ['Fee', sats(s.fee_sats)],
        ['Platform fee', sats(s.platform_fee_sats)],
        ['Operator fee', sats(s.operator_fee_sats)],
        ['Orphan', `${sats(s.orphan_sats)} (${s.orphan_fiat})`]
      ]
    }
  },
  methods: {
    // the dialog, shown for the row (hidden for null)
    detailState(row) {
      return {
        show: !!row,
        s: row && {...row, legs: []},
        loading: !!row,
        note: '',
        pdMode: 'fraction',
        pdValue: '',
        rejectReason: '',
        voidShow: false,
        voidReason: ''
      }
    },
    async open(row) {
      this.detail = this.detailState(row)
      await this.reloadDetail()
    },
    // a live update: the legs of the settlement on screen
    reloadIfShown() {
      if (this.detail.show) this.reloadDetail()
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
    // a correction: POST /settlements/{id}/ACTION, then the settlement as it is
    // now (and `changed`, unless it is only a note); true once done
    async correct(action, body, message, what, changed = true) {
      try {
        await this.call(
          'POST',
          `/settlements/${this.detail.s.id}/${action}`,
          body
        )
      } catch (err) {
        this.fail(err, what)
        return false
      }
      this.ok(message)
      await this.reloadDetail()
      if (changed) this.$emit('changed')
      return true
    },
    retrySettlement() {
      return this.correct(
        'retry',
        undefined,
        'Retry queued: failed legs will be paid again, completed ones never',
        'Retrying'
      )
    },
    approveHeld() {
      return this.correct(
        'approve',
        undefined,
        'Approved: the engine pays it now',
        'Approving'
      )
    },
    async rejectHeld() {
      const body = {reason: this.detail.rejectReason.trim()}
      const message = 'Rejected: it stays visible and is never paid'
      if (await this.correct('reject', body, message, 'Rejecting')) {
        this.detail.rejectReason = ''
      }
    },
    async voidSettlement() {
      const body = {reason: this.detail.voidReason.trim()}
      const message = 'Voided: never paid nor retried, LP balances released'
      if (await this.correct('void', body, message, 'Voiding')) {
        this.detail.voidShow = false
        this.detail.voidReason = ''
      }
    },
    async partialDispense() {
      const value = this.detail.pdValue.trim()
      const body =
        this.detail.pdMode === 'fraction'
          ? {dispensed_fraction: value}
          : {dispensed_fiat: value}
      const message = 'Settlement rescaled to what the machine dispensed'
      if (
        await this.correct(
          'partial-dispense',
          body,
          message,
          'Partial dispense'
        )
      ) {
        this.detail.pdValue = ''
      }
    },
    async addNote() {
      const body = {note: this.detail.note}
      if (
        await this.correct(
          'notes',
          body,
          'Note added',
          'Adding the note',
          false
        )
      ) {
        this.detail.note = ''
      }
    }
  }
})
