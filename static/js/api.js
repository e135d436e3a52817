// The extension's REST API (docs/api.md) through LNbits.api.request. Every call
// goes with a key of the user's first wallet: the admin key for writes (and the
// super user's endpoints), the invoice key for reads.

window.SatMachineApi = {
  PREFIX: '/satmachineadmin/api/v1',

  // request('GET', '/machines'), request('POST', '/deposits', body), ...
  // options go to axios (responseType, headers: the API key is kept).
  request(method, path, data, options = {}) {
    const wallet = window.g.user.wallets[0]
    const admin = method.toUpperCase() !== 'GET' || path.startsWith('/super')
    const key = admin ? wallet.adminkey : wallet.inkey
    if (options.headers) {
      options = {...options, headers: {'X-Api-Key': key, ...options.headers}}
    }
    return LNbits.api.request(method, this.PREFIX + path, key, data, options)
  },

  // The server's reason for a refused call, as one line.
  errorText(err) {
    const detail = err?.response?.data?.detail
    if (Array.isArray(detail)) {
      return detail
        .map(e => `${e.msg}${e.loc ? ` (${e.loc.join('/')})` : ''}`)
        .join('; ')
    }
    if (detail) return String(detail)
    return err?.message || String(err)
  },

  // FastAPI's own 404 for a route that is not there (not a domain 404).
  missingEndpoint(err) {
    return (
      err?.response?.status === 404 && err.response.data?.detail === 'Not Found'
    )
  },

  // Tell the user a call failed (`what`: "Saving the machine"); returns the
  // reason, for the forms that also show it in a banner.
  fail(err, what) {
    if (this.missingEndpoint(err)) {
      Quasar.Notify.create({
        type: 'warning',
        message: `${what}: this server does not offer that endpoint yet`,
        caption: '404 NOT FOUND',
        timeout: 5000,
        closeBtn: true
      })
      return `${what}: this server does not offer that endpoint yet (404 Not Found)`
    }
    LNbits.utils.notifyApiError(err)
    return this.errorText(err)
  }
}
