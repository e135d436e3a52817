// Pure helpers of the satmachineadmin page: formatting, form values, exact percent
// arithmetic and the series behind the charts. No Vue, no network: loaded first.
/* global Chart */

window.SatMachine = (function () {
  // ------------------------------------------------------------ formatting

  function sats(value) {
    if (value === null || value === undefined || value === '') return ''
    return Number(value).toLocaleString('en-US')
  }

  function dateTime(iso) {
    if (!iso) return ''
    const d = new Date(iso)
    if (isNaN(d)) return String(iso)
    const pad = n => String(n).padStart(2, '0')
    return (
      `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}`
    )
  }

  function day(iso) {
    if (!iso) return ''
    const d = new Date(iso)
    const pad = n => String(n).padStart(2, '0')
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`
  }

  // "666666.67" -> "666,666.67", on the text: a money string never becomes a float
  function groupDigits(text) {
    if (text === null || text === undefined) return ''
    const m = /^(-?)(\d+)(\.\d+)?$/.exec(String(text))
    if (!m) return String(text)
    return m[1] + m[2].replace(/\B(?=(\d{3})+(?!\d))/g, ',') + (m[3] || '')
  }

  function short(text, keep = 8) {
    if (!text) return ''
    text = String(text)
    return text.length > keep * 2 + 1
      ? `${text.slice(0, keep)}…${text.slice(-4)}`
      : text
  }

  const STATUS_COLORS = {
    // settlements
    pending: 'grey-7',
    processing: 'blue',
    processed: 'positive',
    errored: 'negative',
    rejected: 'deep-orange',
    held: 'amber-9',
    // legs
    completed: 'positive',
    failed: 'negative',
    skipped: 'orange-8',
    voided: 'blue-grey',
    // deposits, machines, clients
    confirmed: 'positive',
    cancelled: 'blue-grey',
    active: 'positive',
    inactive: 'grey-7'
  }

  function statusColor(status) {
    return STATUS_COLORS[status] || 'grey'
  }

  // ------------------------------------------------------------ form values

  // An integer typed in a form, null when empty; a non-integer goes as it is, so
  // that the API says why it is refused.
  function intOrNull(text) {
    if (text === null || text === undefined || String(text).trim() === '')
      return null
    const t = String(text).trim()
    return /^-?\d+$/.test(t) ? Number(t) : t
  }

  function textOrNull(text) {
    if (text === null || text === undefined) return null
    const t = String(text).trim()
    return t === '' ? null : t
  }

  // ------------------------------------------------------------ tables

  // Quasar table columns (for sm-table) from rows of [name, label, align, options];
  // options: field (defaults to the name), sortable, format ((value, row) → the
  // cell's text), classes (the cell's, or (row) → them), badge (true: the value is
  // a status, shown as sm-status-badge).
  function columns(rows) {
    return rows.map(([name, label, align, options]) => ({
      name,
      label,
      align,
      field: name,
      ...options
    }))
  }

  // An amount with its row's currency ("30.00 GTQ"); nothing without an amount.
  function withCurrency(amount, row) {
    return amount ? `${amount} ${row.currency}` : ''
  }

  // ------------------------------------------------------------ exact percents

  // A percent as an integer number of 1/10000 %, the precision the API accepts
  // (at most 4 decimal places), so that the sum is exact: no float noise.
  const PERCENT_SCALE = 10000
  const HUNDRED = 100 * PERCENT_SCALE

  function percentUnits(text) {
    const m = /^\s*(\d{1,3})(?:\.(\d{0,4}))?\s*$/.exec(String(text ?? ''))
    if (!m) return null
    return Number(m[1]) * PERCENT_SCALE + Number((m[2] || '').padEnd(4, '0'))
  }

  function unitsText(units) {
    const whole = Math.trunc(units / PERCENT_SCALE)
    const frac = String(Math.abs(units % PERCENT_SCALE))
      .padStart(4, '0')
      .replace(/0+$/, '')
    return frac ? `${whole}.${frac}` : String(whole)
  }

  // {total (text), valid, problems: [..]} for a list of percent strings.
  function checkPercents(percents) {
    const problems = []
    let total = 0
    percents.forEach((p, i) => {
      const units = percentUnits(p)
      if (units === null) {
        problems.push(
          `leg ${i + 1}: "${p ?? ''}" is not a percent (up to 4 decimals)`
        )
      } else if (units <= 0 || units > HUNDRED) {
        problems.push(`leg ${i + 1}: must be more than 0 and at most 100`)
      } else {
        total += units
      }
    })
    if (percents.length && !problems.length && total !== HUNDRED) {
      problems.push(`the percents add up to ${unitsText(total)} %, not 100 %`)
    }
    return {total: unitsText(total), valid: problems.length === 0, problems}
  }

  // ------------------------------------------------------------ chart series

  // Completed DCA legs → {labels: [day...], datasets: [{label, data}...]}, sats per
  // day per machine.
  function dailySatsPerMachine(legs, machineNames) {
    const days = new Set()
    const perMachine = {}
    for (const leg of legs) {
      if (leg.status !== 'completed') continue
      const d = day(leg.completed_at || leg.created_at)
      days.add(d)
      perMachine[leg.machine_id] = perMachine[leg.machine_id] || {}
      perMachine[leg.machine_id][d] =
        (perMachine[leg.machine_id][d] || 0) + leg.amount_sats
    }
    const labels = [...days].sort()
    const datasets = Object.keys(perMachine).map(id => ({
      label: machineNames[id] || id.slice(0, 8),
      data: labels.map(d => perMachine[id][d] || 0)
    }))
    return {labels, datasets}
  }

  // Parse a fiat decimal string into integer minor units (hundredths; currencies
  // with other exponents are shown to 2 decimals here, the chart is a picture).
  function fiatCents(text) {
    if (text === null || text === undefined || text === '') return 0
    const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(String(text).trim())
    if (!m) return 0
    const cents = Number(m[2]) * 100 + Number(((m[3] || '') + '00').slice(0, 2))
    return m[1] ? -cents : cents
  }

  const LP_LEG_TYPES = ['dca', 'fixed', 'settlement']

  // The LP's history from events: deposits (+fiat) and payouts (-fiat, +sats).
  // events: [{at, fiat_cents, sats}] → [{at, sats (cumulative), balance_cents}]
  function lpHistory(events) {
    const sorted = [...events].sort((a, b) =>
      a.at < b.at ? -1 : a.at > b.at ? 1 : 0
    )
    let cumSats = 0
    let balance = 0
    return sorted.map(e => {
      cumSats += e.sats || 0
      balance += e.fiat_cents || 0
      return {at: e.at, sats: cumSats, balance_cents: balance}
    })
  }

  // Operator view: confirmed deposits and completed LP legs of one client.
  function lpEventsFromDeposits(deposits, legs) {
    const events = []
    for (const d of deposits) {
      if (d.status === 'confirmed' && d.confirmed_at) {
        events.push({
          at: d.confirmed_at,
          fiat_cents: fiatCents(d.amount),
          sats: 0
        })
      }
    }
    for (const leg of legs) {
      if (leg.status !== 'completed' || !LP_LEG_TYPES.includes(leg.leg_type))
        continue
      events.push({
        at: leg.completed_at || leg.created_at,
        fiat_cents: -fiatCents(leg.amount_fiat),
        sats: leg.amount_sats
      })
    }
    return lpHistory(events)
  }

  // LP view: no deposit history, so the balance is walked back from today's
  // remaining balance through the payouts (each payout lowered it by its fiat).
  function lpEventsBackwards(remainingText, legs) {
    const paid = legs
      .filter(
        l => l.status === 'completed' && LP_LEG_TYPES.includes(l.leg_type)
      )
      .map(l => ({
        at: l.completed_at || l.created_at,
        fiat: fiatCents(l.amount_fiat),
        sats: l.amount_sats
      }))
      .sort((a, b) => (a.at < b.at ? -1 : 1))
    const start =
      fiatCents(remainingText) + paid.reduce((s, l) => s + l.fiat, 0)
    const points = []
    let balance = start
    let cum = 0
    if (paid.length)
      points.push({at: paid[0].at, sats: 0, balance_cents: start})
    for (const l of paid) {
      balance -= l.fiat
      cum += l.sats
      points.push({at: l.at, sats: cum, balance_cents: balance})
    }
    return points
  }

  // GET /reports rows (or the platform's) → stacked sats per period: the total
  // rows only (machine_id null), every currency added up (sats are sats).
  // fields: [[field, label]...]
  function periodSeries(rows, fields) {
    const totals = {}
    for (const row of rows) {
      if (row.machine_id !== null && row.machine_id !== undefined) continue
      totals[row.period] = totals[row.period] || {}
      for (const [field] of fields) {
        totals[row.period][field] =
          (totals[row.period][field] || 0) + (row[field] || 0)
      }
    }
    const labels = Object.keys(totals).sort()
    return {
      labels,
      datasets: fields.map(([field, label]) => ({
        label,
        data: labels.map(p => totals[p][field] || 0)
      }))
    }
  }

  // ------------------------------------------------------------ Chart.js

  const PALETTE = [
    '#ff9800',
    '#1976d2',
    '#26a69a',
    '#9c27b0',
    '#e53935',
    '#7cb342',
    '#5c6bc0',
    '#8d6e63',
    '#00acc1',
    '#f06292'
  ]

  // Chart instances live outside Vue's reactivity (a proxied chart breaks).
  const charts = {}

  // Axis text and grid readable on LNbits' dark and light themes alike.
  function themeChart() {
    const dark =
      typeof Quasar !== 'undefined' && Quasar.Dark && Quasar.Dark.isActive
    Chart.defaults.color = dark ? '#cfd8dc' : '#555'
    Chart.defaults.borderColor = dark
      ? 'rgba(255,255,255,0.12)'
      : 'rgba(0,0,0,0.1)'
  }

  function destroyChart(name) {
    if (charts[name]) {
      charts[name].destroy()
      delete charts[name]
    }
  }

  // A new chart of that name in the canvas (the previous one goes), with the
  // options every chart of the page shares.
  function drawChart(name, canvas, type, data, scales) {
    destroyChart(name)
    if (!canvas || typeof Chart === 'undefined') return null
    themeChart()
    charts[name] = new Chart(canvas.getContext('2d'), {
      type,
      data,
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        plugins: {legend: {position: 'bottom'}},
        scales
      }
    })
    return charts[name]
  }

  const axisTitle = text => ({display: true, text})

  function barChart(name, canvas, series, yTitle) {
    const datasets = series.datasets.map((ds, i) => ({
      ...ds,
      backgroundColor: PALETTE[i % PALETTE.length]
    }))
    return drawChart(
      name,
      canvas,
      'bar',
      {labels: series.labels, datasets},
      {
        x: {stacked: true},
        y: {stacked: true, beginAtZero: true, title: axisTitle(yTitle)}
      }
    )
  }

  function lpChart(name, canvas, points, currency) {
    const fiat = currency || 'fiat'
    const steps = (label, data, color, yAxisID) => ({
      label,
      data,
      borderColor: color,
      backgroundColor: color,
      yAxisID,
      stepped: true
    })
    return drawChart(
      name,
      canvas,
      'line',
      {
        labels: points.map(p => dateTime(p.at)),
        datasets: [
          steps(
            'sats received (cumulative)',
            points.map(p => p.sats),
            PALETTE[0],
            'sats'
          ),
          steps(
            `remaining balance (${fiat})`,
            points.map(p => p.balance_cents / 100),
            PALETTE[1],
            'fiat'
          )
        ]
      },
      {
        sats: {position: 'left', beginAtZero: true, title: axisTitle('sats')},
        fiat: {
          position: 'right',
          beginAtZero: true,
          grid: {drawOnChartArea: false},
          title: axisTitle(fiat)
        }
      }
    )
  }

  return {
    sats,
    groupDigits,
    dateTime,
    day,
    short,
    statusColor,
    intOrNull,
    textOrNull,
    columns,
    withCurrency,
    percentUnits,
    unitsText,
    checkPercents,
    dailySatsPerMachine,
    periodSeries,
    fiatCents,
    lpEventsFromDeposits,
    lpEventsBackwards,
    barChart,
    lpChart,
    destroyChart
  }
})()
