// The satmachineadmin page: a tab bar over one component per tab
// (static/components/, templates in templates/satmachineadmin/components/):
// operator (machines, settlements, commission, Lamassu, health and exports), LP
// ("My DCA") and super user (platform fee). Each tab loads its data whenever it
// is shown; what they share is in SatMachineStore (store.js).
/* global SATMACHINE_IS_SUPER */

window.app = Vue.createApp({
  el: '#vue',
  mixins: [window.windowMixin],
  data() {
    return {
      tab: 'machines',
      // the tab bar and its panels: [name (?tab=), icon, label, component]
      tabs: [
        ['machines', 'point_of_sale', 'Machines', 'sm-machines-tab'],
        ['settlements', 'receipt_long', 'Settlements', 'sm-settlements-tab'],
        ['commission', 'call_split', 'Commission', 'sm-commission-tab'],
        ['lamassu', 'storage', 'Lamassu', 'sm-lamassu-tab'],
        ['reports', 'insights', 'Health & reports', 'sm-reports-tab'],
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

  async created() {
    SatMachineLive.connect()
    const wanted = new URLSearchParams(window.location.search).get('tab')
    try {
      await SatMachineStore.loadMachines()
    } catch (err) {
      /* the Machines tab says why */
    }
    if (wanted) {
      this.tab = wanted
      return
    }
    if (!SatMachineStore.machines.length) {
      // someone with no machine is most likely an LP
      try {
        const {data} = await SatMachineApi.request('GET', '/lp/summary')
        if (data.length) this.tab = 'lp'
      } catch (err) {
        /* stay on machines */
      }
    }
  }
})
