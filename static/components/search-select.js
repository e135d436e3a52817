// A choice from a long list of strings (currencies, time zones): typing narrows
// the list to those that hold the text, in any case. v-model, label and the rest
// go to the select.

window.app.component('sm-search-select', {
  template: '#sm-search-select',
  props: {
    options: {type: Array, required: true}
  },
  data() {
    return {shown: this.options}
  },
  methods: {
    narrow(text, update) {
      update(() => {
        const needle = (text || '').toLowerCase()
        this.shown = this.options.filter(o => o.toLowerCase().includes(needle))
      })
    }
  }
})
