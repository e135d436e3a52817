// Live updates: the page listens on LNbits' websocket channel
// satmachineadmin-<user id> (services/live.py) and counts what changed:
// `books` (the operator's settlements, legs, balances), `lp` (the LP's own),
// `alerts`. A tab takes SatMachineLive.mixin({books: 'loadX'}) and reloads with
// that method when the count moves while it is shown (a burst is one reload).

window.SatMachineLive = (function () {
  const state = Vue.reactive({books: 0, lp: 0, alerts: 0, connected: false})
  let socket = null
  let retry = 1000

  function connect() {
    const user = window.g?.user?.id
    if (!user || socket) return
    const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws'
    socket = new WebSocket(
      `${scheme}://${window.location.host}/api/v1/ws/satmachineadmin-${user}`
    )
    socket.onopen = () => {
      state.connected = true
      retry = 1000
    }
    socket.onmessage = event => {
      let message
      try {
        message = JSON.parse(event.data)
      } catch (err) {
        return
      }
      if (message.event === 'changed' && message.what in state) {
        state[message.what] += 1
      } else if (message.event === 'cycle_complete') {
        state.lp += 1
      }
    }
    socket.onclose = () => {
      state.connected = false
      socket = null
      setTimeout(connect, retry)
      retry = Math.min(retry * 2, 30000)
    }
  }

  // {what: method name}: reload with that method when `what` changes, if shown
  function mixin(reloads) {
    const watch = {}
    Object.entries(reloads).forEach(([what, method]) => {
      watch[`live.${what}`] = function () {
        if (!this.liveShown) return
        clearTimeout(this.liveTimers[what])
        this.liveTimers[what] = setTimeout(() => this[method](), 300)
      }
    })
    return {
      data() {
        return {live: state, liveShown: true, liveTimers: {}}
      },
      activated() {
        this.liveShown = true
      },
      deactivated() {
        this.liveShown = false
      },
      watch
    }
  }

  return {state, connect, mixin}
})()
