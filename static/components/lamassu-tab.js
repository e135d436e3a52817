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
  computed: {
    // the poller's status, [label, value] a line (after Polling: on/off)
    statusRows() {
      const st = this.lamassu.status
      const rows = [
        ['Last poll', this.dateTime(st.last_poll_at) || 'never'],
        ['Last success', this.dateTime(st.last_success_at) || 'never'],
        [
          'Found / new (last poll)',
          `${st.last_found ?? '–'} / ${st.last_new ?? '–'}`
        ],
        ['Consecutive failures', st.consecutive_failures ?? 0]
      ]
      if (st.next_poll_at) {
        rows.push(['Next poll', this.dateTime(st.next_poll_at)])
      }
      return rows
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
    // one of the form's buttons at work (busy: 'save', 'test' or 'poll') while
    // run() runs; a failure is told as `what`
    async busyWith(busy, what, run) {
      this.lamassu.busy = busy
      try {
        await run()
      } catch (err) {
        this.fail(err, what)
      } finally {
        this.lamassu.busy = ''
      }
    },
    saveLamassu() {
      return this.busyWith(
        'save',
        'Saving the Lamassu connection',
        async () => {
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
        }
      )
    },
    testLamassu() {
      this.lamassu.testResult = null
      return this.busyWith('test', 'Testing the connection', async () => {
        const {data} = await this.call(
          'POST',
          '/lamassu/test',
          this.lamassuBody()
        )
        this.lamassu.testResult = data
        if (data.ok) this.ok('Connection test passed')
        else this.warn('Connection test failed: see the checks')
      })
    },
    pollLamassu() {
      return this.busyWith('poll', 'Polling', async () => {
        const {data} = await this.call('POST', '/lamassu/poll')
        this.lamassu.pollResult = data
        this.lamassu.status = data.status
        if (data.ok) this.ok(`Polled: ${data.found} found, ${data.new} new`)
        else this.warn(`Poll failed: ${data.error}`)
      })
    }
  }
})
