// What the tabs share: the operator's machines and their health, the selected
// machine and every LP's name, in one reactive object (SatMachineStore), and
// SatMachineMixin, which every tab component takes: the store, the formatters,
// the API call and the notifications.

window.SatMachineStore = (function () {
  const api = window.SatMachineApi
  let machinesLoading = null // the call in flight, shared by whoever asks

  const store = Vue.reactive({
    machines: [],
    health: null, // GET /health: float and pending needs per machine
    selectedMachineId: null,
    allClients: {}, // client id -> client, for the LP names in legs

    // GET /machines and /health (a failed health check leaves it empty); the
    // page and the Machines tab ask at the same time, the server once.
    loadMachines() {
      if (!machinesLoading) {
        machinesLoading = Promise.all([
          api.request('GET', '/machines'),
          api.request('GET', '/health').catch(() => ({data: null}))
        ])
          .then(([machines, health]) => {
            store.machines = machines.data
            store.health = health.data
          })
          .finally(() => (machinesLoading = null))
      }
      return machinesLoading
    },

    async loadAllClients() {
      try {
        const {data} = await api.request('GET', '/clients')
        const map = {}
        data.forEach(c => (map[c.id] = c))
        store.allClients = map
      } catch (err) {
        /* the names are a nicety */
      }
    }
  })
  return store
})()

window.SatMachineMixin = {
  data() {
    return {store: window.SatMachineStore}
  },
  computed: {
    machines() {
      return this.store.machines
    },
    walletOptions() {
      return this.g.user.walletOptions
    },
    machineOptions() {
      return this.store.machines.map(m => ({
        label: `${m.name} (${m.fiat_currency})`,
        value: m.id
      }))
    },
    machineNames() {
      const names = {}
      this.store.machines.forEach(m => (names[m.id] = m.name))
      return names
    }
  },
  methods: {
    sats: SatMachine.sats,
    groupDigits: SatMachine.groupDigits,
    dateTime: SatMachine.dateTime,
    short: SatMachine.short,

    call(method, path, data, options) {
      return SatMachineApi.request(method, path, data, options)
    },
    // one GET per item (path(item)), as {item id: answer}, null where it failed
    async fetchEach(items, path, pick = data => data) {
      const out = {}
      await Promise.all(
        items.map(item =>
          this.call('GET', path(item))
            .then(r => (out[item.id] = pick(r.data)))
            .catch(() => (out[item.id] = null))
        )
      )
      return out
    },
    fail(err, what) {
      return SatMachineApi.fail(err, what)
    },
    ok(message) {
      Quasar.Notify.create({type: 'positive', message, timeout: 2500})
    },
    // done, but not as hoped (a failed connection test, an unpaid leg)
    warn(message) {
      Quasar.Notify.create({
        type: 'warning',
        message,
        timeout: 5000,
        closeBtn: true
      })
    },
    // a machine by its name (machineNames), or its short id
    machineLabel(id) {
      return this.machineNames[id] || SatMachine.short(id)
    },
    walletName(id) {
      const w = this.g.user.wallets.find(w => w.id === id)
      return w ? w.name : SatMachine.short(id)
    },
    clientName(id) {
      if (!id) return ''
      const c = this.store.allClients[id]
      return c
        ? c.username || SatMachine.short(c.user_id)
        : SatMachine.short(id)
    }
  }
}
