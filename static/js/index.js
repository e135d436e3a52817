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
      isSuper: SATMACHINE_IS_SUPER
    }
  },

  async created() {
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
