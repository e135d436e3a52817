// Machines: the operator's machines (float, pending needs, last settlement), the
// machine dialog, and the selected machine's panel: its LPs (sm-machine-lps),
// fixed mode (sm-fixed-mode) and auto-settlement (sm-auto-settlement). The LPs
// and their balances are loaded here and handed down.

window.app.component('sm-machines-tab', {
  template: '#sm-machines-tab',
  mixins: [window.SatMachineMixin],
  data() {
    return {
      machinesLoading: false,
      lastSettlement: {},
      machineTab: 'lps',
      // bumped at each selection: the machine's forms start afresh
      selection: 0,
      machineDialog: {show: false, data: this.blankMachine()},
      currencyOptions: Array.isArray(CURRENCIES)
        ? CURRENCIES
        : ['GTQ', 'USD', 'EUR'],
      machinesTable: {
        columns: SatMachine.columns([
          ['name', 'Machine', 'left', {sortable: true, classes: 'text-bold'}],
          ['fiat_currency', 'Currency', 'left'],
          [
            'wallet',
            'Wallet',
            'left',
            {field: 'wallet_id', format: this.walletName}
          ],
          ['status', 'Status', 'left', {badge: true}],
          [
            'float',
            'Float (sats)',
            'right',
            {
              field: 'id',
              format: id => this.sats(this.healthByMachine[id]?.float_sats)
            }
          ],
          ['needs', 'Pending needs (sats)', 'right', {field: 'id'}],
          ['last', 'Last settlement', 'left', {field: 'id'}],
          ['actions', '', 'right', {field: 'id'}]
        ]),
        pagination: {rowsPerPage: 10}
      },
      // the LPs of the selected machine
      clients: [],
      balances: {},
      clientsLoading: false
    }
  },
  computed: {
    selectedMachineId() {
      return this.store.selectedMachineId
    },
    selectedMachine() {
      return this.machines.find(m => m.id === this.selectedMachineId) || null
    },
    healthByMachine() {
      const out = {}
      ;(this.store.health?.machines || []).forEach(m => (out[m.machine_id] = m))
      return out
    },
    // An upgrade in place from v1 (m005): what was imported, once, and its notes.
    v1Import() {
      return this.store.health?.v1_import || null
    },
    v1ImportLine() {
      const imported = this.v1Import
      if (!imported) return ''
      const minor = String(imported.remaining_minor ?? 0).padStart(3, '0')
      const remaining = `${minor.slice(0, -2)}.${minor.slice(-2)}`
      return (
        `Imported from v1 on ${(imported.imported_at || '').slice(0, 10)}: ` +
        `${imported.lps} LPs, ${imported.deposits} deposits, ` +
        `${imported.payments} payments (as paid legs), ` +
        `${imported.settlements} Lamassu transactions (settled, never paid ` +
        `again); LP balances remaining ${remaining} GTQ.`
      )
    }
  },
  activated() {
    this.loadMachines()
  },
  methods: {
    blankMachine() {
      return {
        id: null,
        name: '',
        wallet_id: null,
        fiat_currency: 'GTQ',
        machine_npub: '',
        lamassu_device_id: '',
        status: 'active'
      }
    },
    async loadMachines() {
      this.machinesLoading = true
      try {
        await this.store.loadMachines()
        this.lastSettlement = await this.fetchEach(
          this.machines,
          m => `/settlements?machine_id=${m.id}&limit=1`,
          rows => rows[0] || null
        )
        if (!this.selectedMachineId && this.machines.length) {
          this.selectMachine(this.machines[0].id)
        } else if (this.selectedMachineId) {
          this.loadClients()
        }
        this.store.loadAllClients()
      } catch (err) {
        this.fail(err, 'Loading machines')
      } finally {
        this.machinesLoading = false
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
            status: machine.status,
            rate_band_percent: machine.rate_band_percent
          }
        : {
            ...this.blankMachine(),
            wallet_id: this.g.user.wallets[0]?.id || null
          }
      this.machineDialog.show = true
    },
    async saveMachine() {
      const d = this.machineDialog.data
      const body = {
        name: d.name,
        wallet_id: d.wallet_id,
        fiat_currency: d.fiat_currency,
        machine_npub: SatMachine.textOrNull(d.machine_npub),
        lamassu_device_id: SatMachine.textOrNull(d.lamassu_device_id)
      }
      try {
        if (d.id) {
          body.status = d.status
          body.rate_band_percent = SatMachine.textOrNull(d.rate_band_percent)
          await this.call('PUT', `/machines/${d.id}`, body)
          this.ok(`Machine ${d.name} saved`)
        } else {
          const {data} = await this.call('POST', '/machines', body)
          this.store.selectedMachineId = data.id
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
      this.store.selectedMachineId = id
      this.selection += 1
      this.loadClients()
    },
    // after fixed mode or auto-settlement saved: the machine as the server has it
    async refreshMachine() {
      try {
        const {data} = await this.call(
          'GET',
          `/machines/${this.selectedMachineId}`
        )
        const i = this.machines.findIndex(m => m.id === data.id)
        if (i >= 0) this.machines.splice(i, 1, data)
      } catch (err) {
        /* shown on the next load */
      }
    },
    async loadClients() {
      if (!this.selectedMachineId) return
      this.clientsLoading = true
      try {
        const {data} = await this.call(
          'GET',
          `/clients?machine_id=${this.selectedMachineId}`
        )
        this.clients = data
        this.balances = await this.fetchEach(
          data,
          c => `/clients/${c.id}/balance`
        )
      } catch (err) {
        this.fail(err, 'Loading LPs')
      } finally {
        this.clientsLoading = false
      }
    }
  }
})
