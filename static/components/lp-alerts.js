// The LP's notifications on My DCA: which they get through their LNbits
// notification channels (a deposit confirmed, a payout digest at most once per
// period, the cycle complete, an autoforward that failed), and the latest ones.

window.app.component('sm-lp-alerts', {
  template: '#sm-lp-alerts',
  mixins: [window.SatMachineMixin, window.SatMachineLive.mixin({lp: 'load'})],
  data() {
    return {
      form: null,
      rows: [],
      saving: false,
      kinds: [
        ['deposit_confirmed', 'A deposit of mine is confirmed'],
        ['payout_digest', 'A summary of my payouts'],
        ['cycle_complete', 'All my deposits are converted'],
        ['autoforward_failed', 'Forwarding to my Lightning address failed']
      ],
      periods: [
        {label: 'at most hourly', value: 'hour'},
        {label: 'at most daily', value: 'day'},
        {label: 'at most weekly', value: 'week'}
      ]
    }
  },
  activated() {
    this.load()
  },
  methods: {
    async load() {
      try {
        const [settings, history] = await Promise.all([
          this.call('GET', '/lp/alerts/settings'),
          this.call('GET', '/lp/alerts?limit=20')
        ])
        if (!this.saving) this.form = settings.data
        this.rows = history.data
      } catch (err) {
        this.fail(err, 'Loading your notifications')
      }
    },
    async save() {
      this.saving = true
      try {
        const {data} = await this.call('PUT', '/lp/alerts/settings', this.form)
        this.form = data
        this.ok('Notification settings saved')
      } catch (err) {
        this.fail(err, 'Saving your notifications')
      } finally {
        this.saving = false
      }
    }
  }
})
