// Lamassu: the read-only connection to the Lamassu server's PostgreSQL (the
// password is write-only: sent when typed, never shown), a connection test, a
// poll now, and the poller's status.

window.app.component('sm-lamassu-tab', {
  template: '#sm-lamassu-tab',
  mixins: [window.SatMachineMixin],
  data() {
    return {
      lamassu: {
        form: {
          host: '',
          port: 5432,
          database: 'lamassu',
          username: '',
          password: '',
          sslmode: 'prefer',
          poll_interval_seconds: 60,
          lookback_hours: 72,
          enabled: true
        },
        passwordSet: false,
        configured: false,
        status: null,
        testResult: null,
        pollResult: null,
        busy: '' // 'save', 'test' or 'poll'
      }
    }
  },
  activated() {
    this.loadLamassu()
  },
  methods: {
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
      const {intOrNull, textOrNull} = SatMachine
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
        const {data} = await this.call(
          'PUT',
          '/lamassu/config',
          this.lamassuBody()
        )
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
        const {data} = await this.call(
          'POST',
          '/lamassu/test',
          this.lamassuBody()
        )
        this.lamassu.testResult = data
        if (data.ok) this.ok('Connection test passed')
        else {
          Quasar.Notify.create({
            type: 'warning',
            message: 'Connection test failed: see the checks'
          })
        }
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
        else {
          Quasar.Notify.create({
            type: 'warning',
            message: `Poll failed: ${data.error}`
          })
        }
      } catch (err) {
        this.fail(err, 'Polling')
      } finally {
        this.lamassu.busy = ''
      }
    }
  }
})
