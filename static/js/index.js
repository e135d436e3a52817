// The satmachineadmin page: operator (machines, LPs, deposits, settlements, commission,
// Lamassu, health, exports), LP ("My DCA") and super user (platform fee).
// Every call goes to the extension's REST API with a key of the user's first wallet:
// the admin key for writes, the invoice key for reads (spec/api.md).
/* global SATMACHINE_IS_SUPER, CURRENCIES */

const SM = window.SatMachine

const TARGET_KINDS = [
  {label: 'My wallet', value: 'wallet'},
  {label: 'Lightning address', value: 'lnaddress'},
  {label: 'LNURL', value: 'lnurl'},
  {label: 'Invoice key / wallet id', value: 'key'},
  {label: 'LPs pro rata', value: 'lps'}
]

const TIMEZONES = (() => {
  const zones = (Intl.supportedValuesOf && Intl.supportedValuesOf('timeZone')) || []
  return zones.includes('UTC') ? zones : ['UTC', ...zones]
})()

function blankMachine() {
  return {
    id: null,
    name: '',
    wallet_id: null,
    fiat_currency: 'GTQ',
    machine_npub: '',
    lamassu_device_id: '',
    status: 'active'
  }
}

function blankLeg(kind = 'wallet') {
  return {kind, wallet: null, text: '', percent: '', label: ''}
}

function blankLamassu() {
  return {
    host: '',
    port: 5432,
    database: 'lamassu',
    username: '',
    password: '',
    sslmode: 'prefer',
    poll_interval_seconds: 60,
    lookback_hours: 72,
    enabled: true
  }
}

function intOrNull(text) {
  if (text === null || text === undefined || String(text).trim() === '') return null
  const t = String(text).trim()
  return /^-?\d+$/.test(t) ? Number(t) : t // a non-integer goes as is: the API says why
}

function textOrNull(text) {
  if (text === null || text === undefined) return null
  const t = String(text).trim()
  return t === '' ? null : t
}

window.app = Vue.createApp({
  el: '#vue',
  mixins: [window.windowMixin],
  data() {
    return {
      tab: 'machines',
      isSuper: SATMACHINE_IS_SUPER,
      currencyOptions: Array.isArray(CURRENCIES) ? CURRENCIES : ['GTQ', 'USD', 'EUR'],
      targetKinds: TARGET_KINDS,
      timezones: TIMEZONES,
      timezoneOptions: TIMEZONES,
      currencyFilterOptions: null,
      settlementStatuses: ['pending', 'processing', 'processed', 'errored', 'rejected'],
      legTypes: ['super_fee', 'operator_split', 'dca', 'autoforward', 'fixed', 'settlement'],

      // machines
      machines: [],
      health: null,
      lastSettlement: {},
      machinesLoading: false,
      machineDialog: {show: false, data: blankMachine()},
      selectedMachineId: null,
      machineTab: 'lps',
      machinesTable: {
        columns: [
          {name: 'name', label: 'Machine', field: 'name', align: 'left', sortable: true},
          {name: 'fiat_currency', label: 'Currency', field: 'fiat_currency', align: 'left'},
          {name: 'wallet', label: 'Wallet', field: 'wallet_id', align: 'left'},
          {name: 'status', label: 'Status', field: 'status', align: 'left'},
          {name: 'float', label: 'Float (sats)', field: 'id', align: 'right'},
          {name: 'needs', label: 'Pending needs (sats)', field: 'id', align: 'right'},
          {name: 'last', label: 'Last settlement', field: 'id', align: 'left'},
          {name: 'actions', label: '', field: 'id', align: 'right'}
        ],
        pagination: {rowsPerPage: 10}
      },

      // LPs of the selected machine
      clients: [],
      balances: {},
      clientsLoading: false,
      allClients: {},
      clientsTable: {
        columns: [
          {name: 'username', label: 'LP', field: 'username', align: 'left', sortable: true},
          {name: 'dca_mode', label: 'Mode', field: 'dca_mode', align: 'left'},
          {name: 'status', label: 'Status', field: 'status', align: 'left'},
          {name: 'deposits', label: 'Deposits', field: 'id', align: 'right'},
          {name: 'remaining', label: 'Remaining', field: 'id', align: 'right'},
          {name: 'sats', label: 'Sats received', field: 'id', align: 'right'},
          {name: 'cycle', label: 'Cycle', field: 'id', align: 'left'},
          {name: 'actions', label: '', field: 'id', align: 'right'}
        ],
        pagination: {rowsPerPage: 10}
      },
      clientDialog: {show: false, data: {user_id: '', username: ''}},
      depositsDialog: {
        show: false,
        client: null,
        deposits: [],
        amount: '',
        notes: '',
        loading: false
      },
      depositColumns: [
        {name: 'created_at', label: 'Recorded', field: 'created_at', align: 'left'},
        {name: 'amount', label: 'Amount', field: 'amount', align: 'right'},
        {name: 'status', label: 'Status', field: 'status', align: 'left'},
        {name: 'notes', label: 'Notes', field: 'notes', align: 'left'},
        {name: 'actions', label: '', field: 'id', align: 'right'}
      ],
      settleDialog: {
        show: false,
        client: null,
        funding_wallet_id: null,
        exchange_rate: '',
        amount_fiat: '',
        error: '',
        result: null
      },
      lpChartDialog: {show: false, client: null, empty: false},
      fixedForm: {times: [], timezone: 'UTC', newTime: '', error: '', runResult: null},
      autoForm: {
        enabled: false,
        threshold_type: 'absolute',
        threshold_value: '',
        funding_wallet_id: null,
        error: ''
      },

      // settlements
      settlements: {
        rows: [],
        loading: false,
        filter: {machine_id: null, status: null, tx_type: null},
        pagination: {page: 1, rowsPerPage: 10, rowsNumber: 0, sortBy: null},
        columns: [
          {name: 'created_at', label: 'Time', field: 'created_at', align: 'left'},
          {name: 'machine', label: 'Machine', field: 'machine_id', align: 'left'},
          {name: 'source', label: 'Source', field: 'source', align: 'left'},
          {name: 'tx_type', label: 'Type', field: 'tx_type', align: 'left'},
          {name: 'status', label: 'Status', field: 'status', align: 'left'},
          {name: 'fiat_amount', label: 'Fiat', field: 'fiat_amount', align: 'right'},
          {name: 'wire_sats', label: 'Wire', field: 'wire_sats', align: 'right'},
          {name: 'principal_sats', label: 'Principal', field: 'principal_sats', align: 'right'},
          {name: 'fee_sats', label: 'Fee', field: 'fee_sats', align: 'right'},
          {name: 'platform_fee_sats', label: 'Platform', field: 'platform_fee_sats', align: 'right'},
          {name: 'operator_fee_sats', label: 'Operator', field: 'operator_fee_sats', align: 'right'},
          {name: 'orphan_sats', label: 'Orphan', field: 'orphan_sats', align: 'right'},
          {name: 'external_id', label: 'External id', field: 'external_id', align: 'left'}
        ]
      },
      detail: {
        show: false,
        s: null,
        loading: false,
        note: '',
        pdMode: 'fraction',
        pdValue: ''
      },
      legColumns: [
        {name: 'leg_type', label: 'Leg', field: 'leg_type', align: 'left'},
        {name: 'status', label: 'Status', field: 'status', align: 'left'},
        {name: 'amount_sats', label: 'Sats', field: 'amount_sats', align: 'right'},
        {name: 'amount_fiat', label: 'Fiat', field: 'amount_fiat', align: 'right'},
        {name: 'to', label: 'To', field: 'destination', align: 'left'},
        {name: 'reason', label: 'Reason / error', field: 'error', align: 'left'}
      ],
      manualDialog: {
        show: false,
        data: {
          machine_id: null,
          tx_type: 'cash_out',
          external_id: '',
          fiat_amount: '',
          principal_sats: '',
          fee_sats: '0',
          exchange_rate: '',
          notes: ''
        }
      },

      // commission rules
      splits: {
        scope: 'default',
        inherited: false,
        legs: [],
        loading: false,
        serverError: ''
      },

      // Lamassu
      lamassu: {
        form: blankLamassu(),
        passwordSet: false,
        configured: false,
        status: null,
        testResult: null,
        pollResult: null,
        busy: ''
      },

      // reports
      paymentsLoaded: false,
      exportForm: {since: '', until: '', machine_id: null, leg_type: null, busy: false},

      // LP
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
        loading: false
      },
      lpPaymentColumns: [
        {name: 'created_at', label: 'Time', field: 'created_at', align: 'left'},
        {name: 'machine', label: 'Machine', field: 'machine_id', align: 'left'},
        {name: 'leg_type', label: 'Type', field: 'leg_type', align: 'left'},
        {name: 'status', label: 'Status', field: 'status', align: 'left'},
        {name: 'amount_sats', label: 'Sats', field: 'amount_sats', align: 'right'},
        {name: 'amount_fiat', label: 'Fiat', field: 'amount_fiat', align: 'right'},
        {name: 'exchange_rate', label: 'Rate (sats/unit)', field: 'exchange_rate', align: 'right'},
        {name: 'note', label: 'To / reason', field: 'destination', align: 'left'}
      ],

      // super user
      superCfg: {super_fee_fraction: '', fee_wallet_id: null, updated_at: null}
    }
  },

  computed: {
    walletOptions() {
      return this.g.user.walletOptions
    },
    machineOptions() {
      return this.machines.map(m => ({label: `${m.name} (${m.fiat_currency})`, value: m.id}))
    },
    machineNames() {
      const names = {}
      this.machines.forEach(m => (names[m.id] = m.name))
      this.lp.summary.forEach(s => (names[s.machine_id] = names[s.machine_id] || s.machine_name))
      return names
    },
    healthByMachine() {
      const out = {}
      ;(this.health?.machines || []).forEach(m => (out[m.machine_id] = m))
      return out
    },
    selectedMachine() {
      return this.machines.find(m => m.id === this.selectedMachineId) || null
    },
    splitScopeOptions() {
      return [
        {label: 'Default (every machine without its own rules)', value: 'default'},
        ...this.machines.map(m => ({label: `Machine: ${m.name}`, value: m.id}))
      ]
    },
    splitCheck() {
      return SM.checkPercents(this.splits.legs.map(l => l.percent))
    },
    splitTargetsComplete() {
      return this.splits.legs.every(l => l.kind === 'lps' || (l.kind === 'wallet' ? l.wallet : textOrNull(l.text)))
    },
    canSaveSplits() {
      return this.splitCheck.valid && this.splitTargetsComplete && !this.splits.loading
    },
    lpChartOptions() {
      return this.lp.summary.map(s => ({label: s.machine_name, value: s.machine_id}))
    },
    detailLegs() {
      return this.detail.s?.legs || []
    }
  },

  watch: {
    tab(value) {
      this.onTab(value)
    },
    'splits.scope'() {
      this.loadSplits()
    },
    'lp.chartMachine'() {
      this.$nextTick(() => this.renderLpChart())
    }
  },

  methods: {
    // ---------------------------------------------------------------- plumbing
    sats: SM.sats,
    groupDigits: SM.groupDigits,
    dateTime: SM.dateTime,
    short: SM.short,
    statusColor: SM.statusColor,

    call(method, path, data, options = {}) {
      const wallet = this.g.user.wallets[0]
      // reads take the invoice key, writes (and the super user's endpoints) the admin key
      const admin = method.toUpperCase() !== 'GET' || path.startsWith('/super')
      const key = admin ? wallet.adminkey : wallet.inkey
      if (options.headers) {
        options = {...options, headers: {'X-Api-Key': key, ...options.headers}}
      }
      return LNbits.api.request(method, SM.API + path, key, data, options)
    },
    errorText(err) {
      const detail = err?.response?.data?.detail
      if (Array.isArray(detail)) {
        return detail.map(e => `${e.msg}${e.loc ? ` (${e.loc.join('/')})` : ''}`).join('; ')
      }
      if (detail) return String(detail)
      return err?.message || String(err)
    },
    missingEndpoint(err) {
      // FastAPI's own 404 for a route that is not there (not a domain 404).
      return err?.response?.status === 404 && err.response.data?.detail === 'Not Found'
    },
    fail(err, what) {
      if (this.missingEndpoint(err)) {
        Quasar.Notify.create({
          type: 'warning',
          message: `${what}: this server does not offer that endpoint yet`,
          caption: '404 NOT FOUND',
          timeout: 5000,
          closeBtn: true
        })
        return `${what}: this server does not offer that endpoint yet (404 Not Found)`
      }
      LNbits.utils.notifyApiError(err)
      return this.errorText(err)
    },
    ok(message) {
      Quasar.Notify.create({type: 'positive', message, timeout: 2500})
    },
    walletName(id) {
      const w = this.g.user.wallets.find(w => w.id === id)
      return w ? w.name : SM.short(id)
    },
    clientName(id) {
      if (!id) return ''
      const c = this.allClients[id]
      return c ? c.username || SM.short(c.user_id) : SM.short(id)
    },
    legTarget(leg) {
      if (leg.client_id) return `LP ${this.clientName(leg.client_id)}`
      if (leg.destination_kind === 'wallet') return this.walletName(leg.destination)
      return leg.label ? `${leg.label}: ${SM.short(leg.destination, 12)}` : SM.short(leg.destination, 12)
    },

    onTab(value) {
      if (value === 'machines') this.loadMachines()
      if (value === 'settlements') this.loadSettlements()
      if (value === 'commission') this.loadSplits()
      if (value === 'lamassu') this.loadLamassu()
      if (value === 'reports') this.loadReports()
      if (value === 'lp') this.loadLp()
      if (value === 'platform') this.loadSuper()
    },

    // ---------------------------------------------------------------- machines
    async loadMachines() {
      this.machinesLoading = true
      try {
        const [machines, health] = await Promise.all([
          this.call('GET', '/machines'),
          this.call('GET', '/health').catch(() => ({data: null}))
        ])
        this.machines = machines.data
        this.health = health.data
        const last = {}
        await Promise.all(
          this.machines.map(m =>
            this.call('GET', `/settlements?machine_id=${m.id}&limit=1`)
              .then(r => (last[m.id] = r.data[0] || null))
              .catch(() => (last[m.id] = null))
          )
        )
        this.lastSettlement = last
        if (!this.selectedMachineId && this.machines.length) {
          this.selectMachine(this.machines[0].id)
        } else if (this.selectedMachineId) {
          this.loadClients()
        }
        this.loadAllClients()
      } catch (err) {
        this.fail(err, 'Loading machines')
      } finally {
        this.machinesLoading = false
      }
    },
    async loadAllClients() {
      try {
        const {data} = await this.call('GET', '/clients')
        const map = {}
        data.forEach(c => (map[c.id] = c))
        this.allClients = map
      } catch (err) {
        /* the names are a nicety */
      }
    },
    openMachineDialog(machine) {
      this.machineDialog.data = machine
        ? {
            id: machine.id,
            name: machine.name,
            wallet_id: machine.wallet_id,
            fiat_currency: machine.fiat_currency,
            machine_npub: machine.machine_npub || '',
            lamassu_device_id: machine.lamassu_device_id || '',
            status: machine.status
          }
        : {...blankMachine(), wallet_id: this.g.user.wallets[0]?.id || null}
      this.machineDialog.show = true
    },
    async saveMachine() {
      const d = this.machineDialog.data
      const body = {
        name: d.name,
        wallet_id: d.wallet_id,
        fiat_currency: d.fiat_currency,
        machine_npub: textOrNull(d.machine_npub),
        lamassu_device_id: textOrNull(d.lamassu_device_id)
      }
      try {
        if (d.id) {
          body.status = d.status
          await this.call('PUT', `/machines/${d.id}`, body)
          this.ok(`Machine ${d.name} saved`)
        } else {
          const {data} = await this.call('POST', '/machines', body)
          this.selectedMachineId = data.id
          this.ok(`Machine ${data.name} created`)
        }
        this.machineDialog.show = false
        await this.loadMachines()
        if (this.selectedMachineId) this.selectMachine(this.selectedMachineId)
      } catch (err) {
        this.fail(err, 'Saving the machine')
      }
    },
    selectMachine(id) {
      this.selectedMachineId = id
      const m = this.selectedMachine
      if (m) {
        this.fixedForm = {
          times: [...(m.fixed_times || [])],
          timezone: m.fixed_timezone || 'UTC',
          newTime: '',
          error: '',
          runResult: null
        }
        const a = m.auto_settlement || {}
        this.autoForm = {
          enabled: !!a.enabled,
          threshold_type: a.threshold_type || 'absolute',
          threshold_value: a.threshold_value || '',
          funding_wallet_id: a.funding_wallet_id || null,
          error: ''
        }
      }
      this.loadClients()
    },

    // ---------------------------------------------------------------- LPs
    async loadClients() {
      if (!this.selectedMachineId) return
      this.clientsLoading = true
      try {
        const {data} = await this.call('GET', `/clients?machine_id=${this.selectedMachineId}`)
        this.clients = data
        const balances = {}
        await Promise.all(
          data.map(c =>
            this.call('GET', `/clients/${c.id}/balance`)
              .then(r => (balances[c.id] = r.data))
              .catch(() => (balances[c.id] = null))
          )
        )
        this.balances = balances
      } catch (err) {
        this.fail(err, 'Loading LPs')
      } finally {
        this.clientsLoading = false
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
          machine_id: this.selectedMachineId,
          user_id: d.user_id.trim(),
          username: textOrNull(d.username)
        })
        this.ok(`LP ${d.username || d.user_id} enrolled`)
        this.clientDialog.show = false
        this.loadClients()
        this.loadAllClients()
      } catch (err) {
        this.fail(err, 'Enrolling the LP')
      }
    },
    async setClientStatus(client, status) {
      try {
        await this.call('PUT', `/clients/${client.id}`, {status})
        this.ok(`LP ${client.username || ''} is now ${status}`)
        this.loadClients()
      } catch (err) {
        this.fail(err, 'Updating the LP')
      }
    },
    async openDeposits(client) {
      this.depositsDialog = {show: true, client, deposits: [], amount: '', notes: '', loading: false}
      await this.loadDeposits()
    },
    async loadDeposits() {
      const client = this.depositsDialog.client
      this.depositsDialog.loading = true
      try {
        const {data} = await this.call('GET', `/deposits?client_id=${client.id}`)
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
          notes: textOrNull(dd.notes)
        })
        this.ok(`Deposit of ${data.amount} ${data.currency} recorded (pending until confirmed)`)
        dd.amount = ''
        dd.notes = ''
        await this.loadDeposits()
      } catch (err) {
        this.fail(err, 'Recording the deposit')
      }
    },
    async depositAction(deposit, action) {
      try {
        const {data} = await this.call('POST', `/deposits/${deposit.id}/${action}`)
        this.ok(`Deposit of ${data.amount} ${data.currency} ${data.status}`)
        await this.loadDeposits()
        this.loadClients()
      } catch (err) {
        this.fail(err, action === 'confirm' ? 'Confirming the deposit' : 'Cancelling the deposit')
      }
    },
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
      if (textOrNull(sd.exchange_rate)) body.exchange_rate = sd.exchange_rate.trim()
      if (textOrNull(sd.amount_fiat)) body.amount_fiat = sd.amount_fiat.trim()
      try {
        const {data} = await this.call('POST', `/clients/${sd.client.id}/settle`, body, {
          headers: {'Idempotency-Key': sd.idempotencyKey}
        })
        sd.result = data
        sd.idempotencyKey = this.newKey() // answered: the next click is a new settlement
        if (data.status === 'completed') {
          this.ok(`Settled: ${SM.sats(data.amount_sats)} sats to ${sd.client.username || 'the LP'}`)
        } else {
          sd.error = `The settlement leg is ${data.status}${data.error ? ': ' + data.error : ''}`
          Quasar.Notify.create({type: 'warning', message: sd.error, timeout: 5000, closeBtn: true})
        }
        this.loadClients()
      } catch (err) {
        sd.error = this.fail(err, 'Settling the balance')
      }
    },
    async openLpChart(client) {
      this.lpChartDialog = {show: true, client, empty: false}
    },
    async renderOperatorLpChart() {
      const client = this.lpChartDialog.client
      if (!client) return
      try {
        const [deposits, legs] = await Promise.all([
          this.call('GET', `/deposits?client_id=${client.id}`),
          this.call('GET', `/payments?client_id=${client.id}&status=completed&limit=10000`)
        ])
        const points = SM.lpEventsFromDeposits(deposits.data, legs.data)
        this.lpChartDialog.empty = points.length === 0
        await this.$nextTick()
        SM.lpChart('operatorLp', this.$refs.operatorLpChart, points, this.balances[client.id]?.currency)
      } catch (err) {
        this.fail(err, 'Loading the LP history')
      }
    },

    // ---------------------------------------------------------------- fixed mode / auto-settlement
    filterTimezones(text, update) {
      update(() => {
        const needle = (text || '').toLowerCase()
        this.timezoneOptions = this.timezones.filter(z => z.toLowerCase().includes(needle))
      })
    },
    filterCurrencies(text, update) {
      update(() => {
        const needle = (text || '').toUpperCase()
        this.currencyFilterOptions = this.currencyOptions.filter(c => c.includes(needle))
      })
    },
    addFixedTime() {
      const t = (this.fixedForm.newTime || '').trim()
      if (!/^([01]\d|2[0-3]):[0-5]\d$/.test(t)) {
        this.fixedForm.error = 'a time is HH:MM, 00:00 to 23:59'
        return
      }
      this.fixedForm.error = ''
      if (!this.fixedForm.times.includes(t)) {
        this.fixedForm.times = [...this.fixedForm.times, t].sort()
      }
      this.fixedForm.newTime = ''
    },
    removeFixedTime(t) {
      this.fixedForm.times = this.fixedForm.times.filter(x => x !== t)
    },
    async saveFixedSchedule() {
      this.fixedForm.error = ''
      try {
        await this.call('PUT', `/machines/${this.selectedMachineId}/fixed-schedule`, {
          times: this.fixedForm.times,
          timezone: this.fixedForm.timezone
        })
        this.ok('Fixed-mode schedule saved')
        this.refreshMachine()
      } catch (err) {
        this.fixedForm.error = this.fail(err, 'Saving the schedule')
      }
    },
    async runFixedNow() {
      this.fixedForm.error = ''
      try {
        const {data} = await this.call('POST', `/machines/${this.selectedMachineId}/fixed-run`)
        this.fixedForm.runResult = data
        this.ok(`Fixed-mode run done: ${data.length} leg(s)`)
        this.loadClients()
      } catch (err) {
        this.fixedForm.error = this.fail(err, 'Running fixed mode')
      }
    },
    async saveAutoSettlement() {
      const a = this.autoForm
      a.error = ''
      try {
        await this.call('PUT', `/machines/${this.selectedMachineId}/auto-settlement`, {
          enabled: a.enabled,
          threshold_type: a.threshold_type,
          threshold_value: textOrNull(a.threshold_value),
          funding_wallet_id: a.funding_wallet_id
        })
        this.ok('Auto-settlement saved')
        this.refreshMachine()
      } catch (err) {
        a.error = this.fail(err, 'Saving auto-settlement')
      }
    },
    async refreshMachine() {
      try {
        const {data} = await this.call('GET', `/machines/${this.selectedMachineId}`)
        const i = this.machines.findIndex(m => m.id === data.id)
        if (i >= 0) this.machines.splice(i, 1, data)
      } catch (err) {
        /* shown on the next load */
      }
    },

    // ---------------------------------------------------------------- settlements
    loadSettlements() {
      return this.onSettlementsRequest({pagination: this.settlements.pagination})
    },
    async onSettlementsRequest(props) {
      const st = this.settlements
      const {page, rowsPerPage} = props.pagination
      const limit = rowsPerPage || 500
      const params = new URLSearchParams({limit, offset: (page - 1) * limit})
      Object.entries(st.filter).forEach(([k, v]) => v && params.set(k, v))
      st.loading = true
      try {
        const response = await this.call('GET', `/settlements?${params}`)
        st.rows = response.data
        st.pagination = {
          ...st.pagination,
          page,
          rowsPerPage,
          rowsNumber: Number(response.headers['x-total-count'] || response.data.length)
        }
      } catch (err) {
        this.fail(err, 'Loading settlements')
      } finally {
        st.loading = false
      }
    },
    filterSettlements() {
      this.settlements.pagination.page = 1
      this.loadSettlements()
    },
    async openSettlement(row) {
      this.detail = {show: true, s: {...row, legs: []}, loading: true, note: '', pdMode: 'fraction', pdValue: ''}
      await this.reloadDetail()
    },
    async reloadDetail() {
      if (!this.detail.s) return
      this.detail.loading = true
      try {
        const {data} = await this.call('GET', `/settlements/${this.detail.s.id}`)
        this.detail.s = data
      } catch (err) {
        this.fail(err, 'Loading the settlement')
      } finally {
        this.detail.loading = false
      }
    },
    async retrySettlement() {
      try {
        await this.call('POST', `/settlements/${this.detail.s.id}/retry`)
        this.ok('Retry queued: failed legs will be paid again, completed ones never')
        await this.reloadDetail()
        this.loadSettlements()
      } catch (err) {
        this.fail(err, 'Retrying')
      }
    },
    async partialDispense() {
      const body =
        this.detail.pdMode === 'fraction'
          ? {dispensed_fraction: this.detail.pdValue.trim()}
          : {dispensed_fiat: this.detail.pdValue.trim()}
      try {
        await this.call('POST', `/settlements/${this.detail.s.id}/partial-dispense`, body)
        this.ok('Settlement rescaled to what the machine dispensed')
        this.detail.pdValue = ''
        await this.reloadDetail()
        this.loadSettlements()
      } catch (err) {
        this.fail(err, 'Partial dispense')
      }
    },
    async addNote() {
      try {
        await this.call('POST', `/settlements/${this.detail.s.id}/notes`, {note: this.detail.note})
        this.ok('Note added')
        this.detail.note = ''
        await this.reloadDetail()
      } catch (err) {
        this.fail(err, 'Adding the note')
      }
    },
    openManual() {
      this.manualDialog.data = {
        machine_id: this.selectedMachineId || this.machines[0]?.id || null,
        tx_type: 'cash_out',
        external_id: '',
        fiat_amount: '',
        principal_sats: '',
        fee_sats: '0',
        exchange_rate: '',
        notes: ''
      }
      this.manualDialog.show = true
    },
    async saveManual() {
      const d = this.manualDialog.data
      const body = {
        machine_id: d.machine_id,
        tx_type: d.tx_type,
        external_id: d.external_id.trim(),
        fiat_amount: d.fiat_amount.trim(),
        fee_sats: intOrNull(d.fee_sats) ?? 0
      }
      if (intOrNull(d.principal_sats) !== null) body.principal_sats = intOrNull(d.principal_sats)
      if (textOrNull(d.exchange_rate)) body.exchange_rate = d.exchange_rate.trim()
      if (textOrNull(d.notes)) body.notes = d.notes.trim()
      try {
        const {data} = await this.call('POST', '/settlements', body)
        this.ok(`Settlement ${data.external_id} entered (${data.status})`)
        this.manualDialog.show = false
        this.loadSettlements()
      } catch (err) {
        this.fail(err, 'Manual entry')
      }
    },

    // ---------------------------------------------------------------- commission
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
    legFromRule(rule) {
      const leg = blankLeg()
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
      this.splits.legs.push(blankLeg())
    },
    removeSplitLeg(i) {
      this.splits.legs.splice(i, 1)
    },
    splitPayload() {
      return {
        machine_id: this.splits.scope === 'default' ? null : this.splits.scope,
        legs: this.splits.legs.map(l => ({
          target: l.kind === 'lps' ? 'lps' : l.kind === 'wallet' ? l.wallet : l.text.trim(),
          percent: String(l.percent).trim(),
          label: textOrNull(l.label)
        }))
      }
    },
    async saveSplits() {
      this.splits.serverError = ''
      try {
        const {data} = await this.call('PUT', '/commission/splits', this.splitPayload())
        this.splits.inherited = data.inherited
        this.splits.legs = data.legs.map(l => this.legFromRule(l))
        this.ok(
          data.legs.length
            ? 'Commission rules saved'
            : this.splits.scope === 'default'
              ? 'Default rules cleared'
              : 'Machine rules cleared: it uses the default rules'
        )
        if (!data.legs.length && this.splits.scope !== 'default') this.loadSplits()
      } catch (err) {
        this.splits.serverError = this.fail(err, 'Saving commission rules')
      }
    },

    // ---------------------------------------------------------------- Lamassu
    async loadLamassu() {
      try {
        const status = await this.call('GET', '/lamassu/status')
        this.lamassu.status = status.data
        this.lamassu.configured = !!status.data.configured
        if (this.lamassu.configured) {
          const {data} = await this.call('GET', '/lamassu/config')
          this.lamassu.form = {
            host: data.host,
            port: data.port,
            database: data.database,
            username: data.username,
            password: '',
            sslmode: data.sslmode,
            poll_interval_seconds: data.poll_interval_seconds,
            lookback_hours: data.lookback_hours,
            enabled: data.enabled
          }
          this.lamassu.passwordSet = !!data.password_set
        }
      } catch (err) {
        this.fail(err, 'Loading the Lamassu connection')
      }
    },
    lamassuBody() {
      const f = this.lamassu.form
      const body = {
        host: textOrNull(f.host),
        port: intOrNull(f.port),
        database: textOrNull(f.database),
        username: textOrNull(f.username),
        sslmode: f.sslmode,
        poll_interval_seconds: intOrNull(f.poll_interval_seconds),
        lookback_hours: intOrNull(f.lookback_hours),
        enabled: f.enabled
      }
      // write-only: sent only when typed; left out, the stored one is kept
      if (f.password) body.password = f.password
      return body
    },
    async saveLamassu() {
      this.lamassu.busy = 'save'
      try {
        const {data} = await this.call('PUT', '/lamassu/config', this.lamassuBody())
        this.lamassu.passwordSet = !!data.password_set
        this.lamassu.form.password = ''
        this.lamassu.configured = true
        this.ok('Lamassu connection saved')
        const status = await this.call('GET', '/lamassu/status')
        this.lamassu.status = status.data
      } catch (err) {
        this.fail(err, 'Saving the Lamassu connection')
      } finally {
        this.lamassu.busy = ''
      }
    },
    async testLamassu() {
      this.lamassu.busy = 'test'
      this.lamassu.testResult = null
      try {
        const {data} = await this.call('POST', '/lamassu/test', this.lamassuBody())
        this.lamassu.testResult = data
        if (data.ok) this.ok('Connection test passed')
        else Quasar.Notify.create({type: 'warning', message: 'Connection test failed: see the checks'})
      } catch (err) {
        this.fail(err, 'Testing the connection')
      } finally {
        this.lamassu.busy = ''
      }
    },
    async pollLamassu() {
      this.lamassu.busy = 'poll'
      try {
        const {data} = await this.call('POST', '/lamassu/poll')
        this.lamassu.pollResult = data
        this.lamassu.status = data.status
        if (data.ok) this.ok(`Polled: ${data.found} found, ${data.new} new`)
        else Quasar.Notify.create({type: 'warning', message: `Poll failed: ${data.error}`})
      } catch (err) {
        this.fail(err, 'Polling')
      } finally {
        this.lamassu.busy = ''
      }
    },

    // ---------------------------------------------------------------- reports
    async loadReports() {
      try {
        const [machines, health, legs] = await Promise.all([
          this.call('GET', '/machines'),
          this.call('GET', '/health'),
          this.call('GET', '/payments?leg_type=dca&status=completed&limit=10000')
        ])
        this.machines = machines.data
        this.health = health.data
        this.paymentsLoaded = true
        await this.$nextTick()
        SM.barChart(
          'daily',
          this.$refs.dailyChart,
          SM.dailySatsPerMachine(legs.data, this.machineNames),
          'sats to LPs'
        )
      } catch (err) {
        this.fail(err, 'Loading reports')
      }
    },
    async exportCsv() {
      const f = this.exportForm
      const params = new URLSearchParams()
      if (f.since) params.set('since', new Date(`${f.since}T00:00:00`).toISOString())
      if (f.until) params.set('until', new Date(`${f.until}T23:59:59`).toISOString())
      if (f.machine_id) params.set('machine_id', f.machine_id)
      if (f.leg_type) params.set('leg_type', f.leg_type)
      f.busy = true
      try {
        const response = await this.call('GET', `/payments.csv?${params}`, undefined, {
          responseType: 'blob'
        })
        const blob = new Blob([response.data], {type: 'text/csv'})
        const url = URL.createObjectURL(blob)
        const a = document.createElement('a')
        a.href = url
        a.download = `satmachine-payments${f.since ? '-' + f.since : ''}${f.until ? '-' + f.until : ''}.csv`
        document.body.appendChild(a)
        a.click()
        a.remove()
        setTimeout(() => URL.revokeObjectURL(url), 10000)
        this.ok('CSV downloaded')
      } catch (err) {
        if (err?.response?.data instanceof Blob) {
          const text = await err.response.data.text()
          try {
            err.response.data = JSON.parse(text)
          } catch (e) {
            err.response.data = {detail: text}
          }
        }
        this.fail(err, 'CSV export')
      } finally {
        f.busy = false
      }
    },

    // ---------------------------------------------------------------- LP
    async loadLp() {
      this.lp.loading = true
      try {
        const prefs = await this.call('GET', '/lp').catch(err => {
          if (err?.response?.status === 404 && !this.missingEndpoint(err)) return null
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
          this.lp.prefs.wallet_id = this.lp.prefs.wallet_id || this.g.user.wallets[0]?.id
        }
        const [summary, payments] = await Promise.all([
          this.call('GET', '/lp/summary'),
          this.call('GET', '/lp/payments?limit=10000')
        ])
        this.lp.summary = summary.data
        this.lp.payments = payments.data
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
    renderLpChart() {
      const s = this.lp.summary.find(x => x.machine_id === this.lp.chartMachine)
      if (!s) return SM.destroyChart('lp')
      const legs = this.lp.payments.filter(l => l.machine_id === s.machine_id)
      SM.lpChart('lp', this.$refs.lpChart, SM.lpEventsBackwards(s.remaining_balance, legs), s.currency)
    },
    async saveLpPrefs() {
      const p = this.lp.prefs
      const body = {
        wallet_id: p.wallet_id,
        dca_mode: p.dca_mode,
        fixed_mode_daily_limit: p.dca_mode === 'fixed' ? textOrNull(p.fixed_mode_daily_limit) : null,
        autoforward_enabled: p.autoforward_enabled,
        autoforward_ln_address: p.autoforward_enabled ? textOrNull(p.autoforward_ln_address) : null
      }
      try {
        await this.call('PUT', '/lp', body)
        this.lp.prefsSet = true
        this.ok('Your DCA preferences are saved')
      } catch (err) {
        this.fail(err, 'Saving your preferences')
      }
    },

    // ---------------------------------------------------------------- super user
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
      return isFinite(n) && String(fraction).trim() !== '' ? `${(n * 100).toFixed(2)} % of every commission` : ''
    }
  },

  async created() {
    const wanted = new URLSearchParams(window.location.search).get('tab')
    await this.loadMachines()
    if (wanted) {
      this.tab = wanted // the watcher loads it; 'machines' is loaded already
      return
    }
    if (!this.machines.length) {
      // someone with no machine is most likely an LP
      try {
        const {data} = await this.call('GET', '/lp/summary')
        if (data.length) this.tab = 'lp'
      } catch (err) {
        /* stay on machines */
      }
    }
  }
})
