// The satmachineadmin page: a tab bar over one component per tab
// (static/components/, templates in templates/satmachineadmin/components/):
// operator (machines, settlements, payments, commission, Lamassu, health, reports
// and exports, audit trail), LP ("My DCA": their balance, deposits, statement) and
// super user (platform fee and overview). An LP who operates no machine sees
// only "My DCA" (and can ask for the operator's tabs). Each tab loads its data whenever it
// is shown; what they share is in SatMachineStore (store.js).
/* global SATMACHINE_IS_SUPER */

window.app = Vue.createApp({
  el: '#vue',
  mixins: [window.windowMixin],
  data() {
    return {
      tab: 'machines',
      // someone who operates no machine but is an LP: only their own page
      lpOnly: false
    }
  },

  computed: {
    // the tab bar and its panels: [name (?tab=), icon, label, component]
    tabs() {
      const operator = [
        ['machines', 'point_of_sale', 'Machines', 'sm-machines-tab'],
        ['settlements', 'receipt_long', 'Settlements', 'sm-settlements-tab'],
        ['payments', 'payments', 'Payments', 'sm-payments-tab'],
        ['commission', 'call_split', 'Commission', 'sm-commission-tab'],
        ['lamassu', 'storage', 'Lamassu', 'sm-lamassu-tab'],
        ['reports', 'insights', 'Health & reports', 'sm-reports-tab'],
        ['audit', 'history', 'Audit trail', 'sm-audit-tab']
      ]
      return [
        ...(this.lpOnly ? [] : operator),
        ['lp', 'savings', 'My DCA', 'sm-my-dca-tab'],
        ...(SATMACHINE_IS_SUPER
          ? [
              [
                'platform',
                'admin_panel_settings',
                'Platform',
                'sm-platform-tab'
              ]
            ]
          : [])
      ].map(([name, icon, label, component]) => ({
        name,
        icon,
        label,
        component
      }))
    }
  },

  methods: {
    // an LP who also operates (or is about to): the operator's tabs too
    showOperatorTabs() {
      this.lpOnly = false
      this.tab = 'machines'
    }
  },

  async created() {
    SatMachineLive.connect()
    const wanted = new URLSearchParams(window.location.search).get('tab')
    try {
      await SatMachineStore.loadMachines()
    } catch (err) {
      /* the Machines tab says why */
    }
    if (!SatMachineStore.machines.length) {
      // an LP who operates no machine lands on "My DCA" and sees only their own
      try {
        const {data} = await SatMachineApi.request('GET', '/lp/summary')
        if (data.length) {
          this.lpOnly = true
          this.tab = 'lp'
        }
      } catch (err) {
        /* stay on machines */
      }
    }
    if (wanted && this.tabs.some(t => t.name === wanted)) this.tab = wanted
  }
})
