// Fixed mode of the selected machine: the times of day (in its time zone) at
// which fixed-mode LPs are paid, and a run of the current slot. Emits `saved`
// (the machine changed) and `ran` (LPs may have been paid).

window.app.component('sm-fixed-mode', {
  template: '#sm-fixed-mode',
  mixins: [window.SatMachineMixin],
  props: {
    machine: {type: Object, required: true}
  },
  emits: ['saved', 'ran'],
  data() {
    const zones =
      (Intl.supportedValuesOf && Intl.supportedValuesOf('timeZone')) || []
    const timezones = zones.includes('UTC') ? zones : ['UTC', ...zones]
    return {
      timezones,
      fixedForm: {
        times: [...(this.machine.fixed_times || [])],
        timezone: this.machine.fixed_timezone || 'UTC',
        newTime: '',
        error: '',
        runResult: null
      }
    }
  },
  methods: {
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
        await this.call('PUT', `/machines/${this.machine.id}/fixed-schedule`, {
          times: this.fixedForm.times,
          timezone: this.fixedForm.timezone
        })
        this.ok('Fixed-mode schedule saved')
        this.$emit('saved')
      } catch (err) {
        this.fixedForm.error = this.fail(err, 'Saving the schedule')
      }
    },
    async runFixedNow() {
      this.fixedForm.error = ''
      try {
        const {data} = await this.call(
          'POST',
          `/machines/${this.machine.id}/fixed-run`
        )
        this.fixedForm.runResult = data
        this.ok(`Fixed-mode run done: ${data.length} leg(s)`)
        this.$emit('ran')
      } catch (err) {
        this.fixedForm.error = this.fail(err, 'Running fixed mode')
      }
    }
  }
})
