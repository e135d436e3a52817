// satmachineclient: the LP's page. Everything comes from this extension's API
// (/satmachineclient/api/v1, docs/companion.md) with a key of the LP's first
// wallet: the invoice key to read, the admin key to save preferences. The chart
// is Chart.js, which LNbits' page already loads.
/* global Chart */

const SMC_API = '/satmachineclient/api/v1'

// Chart instances live outside Vue's reactivity (a proxied chart breaks).
let smcChart = null

window.app = Vue.createApp({
  el: '#vue',
  mixins: [window.windowMixin],
  data() {
    return {
      loading: false,
      saving: false,
      error: '',
      prefsSet: false,
      prefs: {
        wallet_id: null,
        dca_mode: 'flow',
        fixed_mode_daily_limit: '',
        autoforward_enabled: false,
        autoforward_ln_address: ''
      },
      positions: [],
      totals: {sats_stacked: 0, currencies: []},
      deposits: [],
      payouts: [],
      history: [],
      chartClient: null,
      payoutColumns: [
        this.column('at', 'Time', r => this.dateTime(r.completed_at || r.created_at)),
        this.column('machine', 'Machine', r => r.machine_name || r.machine_id),
        this.column('leg_type', 'Kind', r => this.legKind(r.leg_type)),
        this.column('status', 'Status', r => r.status),
        this.column('sats', 'Sats', r => this.sats(r.amount_sats), 'right'),
        this.column('fiat', 'Fiat', r => this.money(r.amount_fiat, r.currency), 'right'),
        this.column('rate', 'Rate (sats/unit)', r => r.exchange_rate || '–', 'right'),
        this.column('per_btc', 'Fiat per BTC', r => this.groupDigits(r.fiat_per_btc) || '–', 'right'),
        this.column('to', 'To / reason', r => this.payoutNote(r))
      ],
      depositColumns: [
        this.column('at', 'Time', r => this.dateTime(r.confirmed_at || r.created_at)),
        this.column('machine', 'Machine', r => r.machine_name),
        this.column('amount', 'Amount', r => this.money(r.amount, r.currency), 'right'),
        this.column('status', 'Status', r => r.status),
        this.column('notes', 'Notes', r => r.notes || '')
      ]
    }
  },
  computed: {
    userId() {
      return this.g.user ? this.g.user.id : ''
    },
    wallets() {
      return this.g.user ? this.g.user.wallets : []
    },
    walletOptions() {
      return this.wallets.map(w => ({label: w.name, value: w.id}))
    },
    chartOptions() {
      return this.history.map(s => ({label: s.machine_name, value: s.client_id}))
    }
  },
  watch: {
    chartClient() {
      this.$nextTick(() => this.drawChart())
    }
  },
  created() {
    this.load()
  },
  methods: {
    column(name, label, field, align = 'left') {
      return {name, label, field, align}
    },
    sats(n) {
      return n === null || n === undefined ? '–' : this.groupDigits(String(n))
    },
    // "666666.67" -> "666,666.67" (a decimal string stays exact: no float)
    groupDigits(text) {
      if (text === null || text === undefined || text === '') return ''
      const [whole, fraction] = String(text).split('.')
      const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ',')
      return fraction !== undefined ? `${grouped}.${fraction}` : grouped
    },
    money(amount, currency) {
      return amount ? `${amount} ${currency || ''}`.trim() : '–'
    },
    dateTime(iso) {
      return iso ? new Date(iso).toLocaleString() : ''
    },
    legKind(kind) {
      return (
        {
          dca: 'dca (flow)',
          fixed: 'fixed (daily)',
          settlement: 'settlement',
          autoforward: 'autoforward'
        }[kind] || kind
      )
    },
    payoutNote(leg) {
      if (leg.error) return leg.error
      if (leg.destination_kind === 'wallet') {
        const wallet = this.wallets.find(w => w.id === leg.destination)
        return wallet ? wallet.name : leg.destination
      }
      return leg.destination || ''
    },
    positionFigures(p) {
      const cost = p.average_cost_fiat_per_btc
      return [
        ['Remaining balance', `${p.remaining_balance} ${p.currency}`],
        ['Sats stacked', this.sats(p.sats_stacked)],
        ['Average cost', cost ? `${this.groupDigits(cost)} ${p.currency}/BTC` : '–'],
        ['Deposited', `${p.total_deposits} ${p.currency}`],
        ['Converted', `${p.total_converted} ${p.currency}`],
        ['Pending deposits', `${p.pending_deposits} ${p.currency}`]
      ]
    },
    key(admin) {
      const wallet = this.wallets[0]
      return admin ? wallet.adminkey : wallet.inkey
    },
    call(method, path, data, options) {
      const admin = method !== 'GET'
      return LNbits.api.request(method, SMC_API + path, this.key(admin), data, options)
    },
    reason(err) {
      const detail = err?.response?.data?.detail
      return detail ? String(detail) : err?.message || String(err)
    },
    async load() {
      if (!this.wallets.length) {
        this.error = 'You need an LNbits wallet first: create one, then come back.'
        return
      }
      this.loading = true
      try {
        const [overview, deposits, payouts, history] = await Promise.all([
          this.call('GET', '/overview'),
          this.call('GET', '/deposits'),
          this.call('GET', '/payouts?limit=10000'),
          this.call('GET', '/history')
        ])
        const prefs = overview.data.preferences
        this.prefsSet = !!prefs
        if (prefs) {
          this.prefs = {
            wallet_id: prefs.wallet_id,
            dca_mode: prefs.dca_mode,
            fixed_mode_daily_limit: prefs.fixed_mode_daily_limit || '',
            autoforward_enabled: prefs.autoforward_enabled,
            autoforward_ln_address: prefs.autoforward_ln_address || ''
          }
        } else {
          this.prefs.wallet_id = this.prefs.wallet_id || this.wallets[0].id
        }
        this.positions = overview.data.positions
        this.totals = overview.data.totals
        this.deposits = deposits.data
        this.payouts = payouts.data
        this.history = history.data
        this.error = ''
        const shown = this.history.some(s => s.client_id === this.chartClient)
        if (!shown && this.history.length) {
          this.chartClient = this.history[0].client_id
        } else {
          this.$nextTick(() => this.drawChart())
        }
      } catch (err) {
        this.error = `Loading your DCA: ${this.reason(err)}`
      } finally {
        this.loading = false
      }
    },
    async savePrefs() {
      const p = this.prefs
      const text = v => (v === null || v === undefined || v === '' ? null : v)
      const body = {
        wallet_id: p.wallet_id,
        dca_mode: p.dca_mode,
        fixed_mode_daily_limit:
          p.dca_mode === 'fixed' ? text(p.fixed_mode_daily_limit) : null,
        autoforward_enabled: p.autoforward_enabled,
        autoforward_ln_address: p.autoforward_enabled
          ? text(p.autoforward_ln_address)
          : null
      }
      this.saving = true
      try {
        await this.call('PUT', '/preferences', body)
        this.prefsSet = true
        Quasar.Notify.create({type: 'positive', message: 'Your DCA preferences are saved'})
        await this.load()
      } catch (err) {
        Quasar.Notify.create({
          type: 'negative',
          message: `Saving your preferences: ${this.reason(err)}`,
          timeout: 8000
        })
      } finally {
        this.saving = false
      }
    },
    async downloadStatement() {
      try {
        const response = await this.call('GET', '/statement.csv', null, {
          responseType: 'blob'
        })
        const url = URL.createObjectURL(response.data)
        const link = document.createElement('a')
        link.href = url
        link.download = `satmachine-statement-${new Date().toISOString().slice(0, 10)}.csv`
        document.body.appendChild(link)
        link.click()
        link.remove()
        setTimeout(() => URL.revokeObjectURL(url), 1000)
      } catch (err) {
        this.error = `Downloading your statement: ${this.reason(err)}`
      }
    },
    drawChart() {
      if (smcChart) {
        smcChart.destroy()
        smcChart = null
      }
      const series = this.history.find(s => s.client_id === this.chartClient)
      const canvas = this.$refs.chart
      if (!series || !canvas || typeof Chart === 'undefined') return
      const dark = Quasar.Dark && Quasar.Dark.isActive
      Chart.defaults.color = dark ? '#cfd8dc' : '#555'
      const line = (label, data, color, yAxisID) => ({
        label,
        data,
        borderColor: color,
        backgroundColor: color,
        yAxisID,
        stepped: true
      })
      // a picture: the exact figures are the cards and the statement
      const points = series.points
      smcChart = new Chart(canvas.getContext('2d'), {
        type: 'line',
        data: {
          labels: points.map(p => this.dateTime(p.at)),
          datasets: [
            line('sats stacked', points.map(p => p.sats_stacked), '#ff9800', 'sats'),
            line(
              `balance (${series.currency})`,
              points.map(p => Number(p.balance)),
              '#1976d2',
              'fiat'
            )
          ]
        },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          plugins: {legend: {position: 'bottom'}},
          scales: {
            sats: {position: 'left', beginAtZero: true, title: {display: true, text: 'sats'}},
            fiat: {
              position: 'right',
              beginAtZero: true,
              grid: {drawOnChartArea: false},
              title: {display: true, text: series.currency}
            }
          }
        }
      })
    }
  }
})
