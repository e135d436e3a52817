// The LPs enrolled at the selected machine (loaded by sm-machines-tab) and their
// dialogs: enrol an LP, record and confirm deposits, settle a balance, the LP's
// sats and balance over time. Emits `changed` when the LPs' balances moved.

window.app.component('sm-machine-lps', {
  template: '#sm-machine-lps',
  mixins: [window.SatMachineMixin],
  props: {
    machine: {type: Object, required: true},
    clients: {type: Array, required: true},
    balances: {type: Object, required: true},
    loading: Boolean
  },
  emits: ['changed'],
  data() {
    return {
      clientsTable: {
        columns: SatMachine.columns([
          ['username', 'LP', 'left', {sortable: true}],
          ['dca_mode', 'Mode', 'left'],
          ['status', 'Status', 'left', {badge: true}],
          [
            'deposits',
            'Deposits',
            'right',
            this.balanceColumn('total_deposits')
          ],
          [
            'remaining',
            'Remaining',
            'right',
            {...this.balanceColumn('remaining_balance'), classes: 'text-bold'}
          ],
          [
            'sats',
            'Sats received',
            'right',
            {
              field: 'id',
              format: id => this.sats(this.balances[id]?.total_sats)
            }
          ],
          ['cycle', 'Cycle', 'left', {field: 'id'}],
          ['actions', '', 'right', {field: 'id', classes: 'sm-actions'}]
        ]),
        pagination: {rowsPerPage: 10}
      },
      clientDialog: {show: false, data: {user_id: '', username: ''}},
      depositsDialog: this.depositsState(null),
      depositColumns: SatMachine.columns([
        ['created_at', 'Recorded', 'left', {format: this.dateTime}],
        ['amount', 'Amount', 'right', {format: SatMachine.withCurrency}],
        ['status', 'Status', 'left', {badge: true}],
        ['notes', 'Notes', 'left'],
        ['actions', '', 'right', {field: 'id'}]
      ]),
      settleDialog: {
        show: false,
        client: null,
        funding_wallet_id: null,
        exchange_rate: '',
        amount_fiat: '',
        error: '',
        result: null
      },
      lpChartDialog: {show: false, client: null, empty: false}
    }
  },
  methods: {
    // a column of the LP's balance: an amount with its currency
    balanceColumn(key) {
      return {
        field: 'id',
        format: id =>
          SatMachine.withCurrency(this.balances[id]?.[key], this.balances[id])
      }
    },
    openClientDialog() {
      this.clientDialog.data = {user_id: '', username: ''}
      this.clientDialog.show = true
    },
    async saveClient() {
      const d = this.clientDialog.data
      try {
        await this.call('POST', '/clients', {
          machine_id: this.machine.id,
          user_id: d.user_id.trim(),
          username: SatMachine.textOrNull(d.username)
        })
        this.ok(`LP ${d.username || d.user_id} enrolled`)
        this.clientDialog.show = false
        this.$emit('changed')
        this.store.loadAllClients()
      } catch (err) {
        this.fail(err, 'Enrolling the LP')
      }
    },
    async setClientStatus(client, status) {
      try {
        await this.call('PUT', `/clients/${client.id}`, {status})
        this.ok(`LP ${client.username || ''} is now ${status}`)
        this.$emit('changed')
      } catch (err) {
        this.fail(err, 'Updating the LP')
      }
    },

    // ---------------------------------------------------------------- deposits
    // the deposits dialog, shown for the client (hidden for null)
    depositsState(client) {
      return {
        show: !!client,
        client,
        deposits: [],
        amount: '',
        notes: '',
        loading: false
      }
    },
    async openDeposits(client) {
      this.depositsDialog = this.depositsState(client)
      await this.loadDeposits()
    },
    async loadDeposits() {
      const client = this.depositsDialog.client
      this.depositsDialog.loading = true
      try {
        const {data} = await this.call(
          'GET',
          `/deposits?client_id=${client.id}`
        )
        this.depositsDialog.deposits = data
      } catch (err) {
        this.fail(err, 'Loading deposits')
      } finally {
        this.depositsDialog.loading = false
      }
    },
    async addDeposit() {
      const dd = this.depositsDialog
      try {
        const {data} = await this.call('POST', '/deposits', {
          client_id: dd.client.id,
          amount: dd.amount.trim(),
          notes: SatMachine.textOrNull(dd.notes)
        })
        this.ok(
          `Deposit of ${data.amount} ${data.currency} recorded (pending until confirmed)`
        )
        dd.amount = ''
        dd.notes = ''
        await this.loadDeposits()
      } catch (err) {
        this.fail(err, 'Recording the deposit')
      }
    },
    async depositAction(deposit, action) {
      try {
        const {data} = await this.call(
          'POST',
          `/deposits/${deposit.id}/${action}`
        )
        this.ok(`Deposit of ${data.amount} ${data.currency} ${data.status}`)
        await this.loadDeposits()
        this.$emit('changed')
      } catch (err) {
        this.fail(
          err,
          action === 'confirm'
            ? 'Confirming the deposit'
            : 'Cancelling the deposit'
        )
      }
    },

    // ---------------------------------------------------------------- settle
    openSettle(client) {
      this.settleDialog = {
        show: true,
        client,
        funding_wallet_id: this.g.user.wallets[0]?.id || null,
        exchange_rate: '',
        amount_fiat: '',
        error: '',
        result: null,
        // a double click or a retry after a lost answer never pays twice
        idempotencyKey: this.newKey()
      }
    },
    newKey() {
      return `ui-${Date.now()}-${Math.random().toString(16).slice(2)}`
    },
    async settleBalance() {
      const sd = this.settleDialog
      sd.error = ''
      const body = {funding_wallet_id: sd.funding_wallet_id}
      if (SatMachine.textOrNull(sd.exchange_rate)) {
        body.exchange_rate = sd.exchange_rate.trim()
      }
      if (SatMachine.textOrNull(sd.amount_fiat)) {
        body.amount_fiat = sd.amount_fiat.trim()
      }
      try {
        const {data} = await this.call(
          'POST',
          `/clients/${sd.client.id}/settle`,
          body,
          {headers: {'Idempotency-Key': sd.idempotencyKey}}
        )
        sd.result = data
        sd.idempotencyKey = this.newKey() // answered: the next click is a new settlement
        if (data.status === 'completed') {
          this.ok(
            `Settled: ${this.sats(data.amount_sats)} sats to ${sd.client.username || 'the LP'}`
          )
        } else {
          sd.error = `The settlement leg is ${data.status}${data.error ? ': ' + data.error : ''}`
          this.warn(sd.error)
        }
        this.$emit('changed')
      } catch (err) {
        sd.error = this.fail(err, 'Settling the balance')
      }
    },

    // ---------------------------------------------------------------- chart
    openLpChart(client) {
      this.lpChartDialog = {show: true, client, empty: false}
    },
    async renderOperatorLpChart() {
      const client = this.lpChartDialog.client
      if (!client) return
      try {
        const [deposits, legs] = await Promise.all([
          this.call('GET', `/deposits?client_id=${client.id}`),
          this.call(
            'GET',
            `/legs?client_id=${client.id}&status=completed&limit=10000`
          )
        ])
        const points = SatMachine.lpEventsFromDeposits(deposits.data, legs.data)
        this.lpChartDialog.empty = points.length === 0
        await this.$nextTick()
        SatMachine.lpChart(
          'operatorLp',
          this.$refs.operatorLpChart,
          points,
          this.balances[client.id]?.currency
        )
      } catch (err) {
        this.fail(err, 'Loading the LP history')
      }
    }
  }
})
