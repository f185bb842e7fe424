// One cluster, no cluster label in the store (a single Prometheus without external labels,
// rules evaluated there): every `by`/`on` list loses it, the texts do not name a cluster, and
// the dashboards have no cluster variable. crates/bundle-tests checks that this renders rules
// promtool and vmalert load, threshold tests that pass, and dashboard queries that parse.
{
  _config+:: {
    clusterLabel: '',
  },
}
