// The db-observability mixin: import it, override _config (config.libsonnet lists every knob),
// and take prometheusAlerts, prometheusRules and grafanaDashboards, as with any monitoring
// mixin. mixin/render.py writes them to files for a plain Prometheus (docs/mixin.md).
(import 'config.libsonnet')
+ (import 'rules/recording.libsonnet')
+ (import 'alerts/database.libsonnet')
+ (import 'alerts/exporters.libsonnet')
+ (import 'alerts/kafka.libsonnet')
+ (import 'alerts/meta.libsonnet')
+ (import 'rules/slo.libsonnet')
+ {
  local files = self.ruleFiles,
  local groups(kind) = std.flattenArrays([
    [g for g in files[f].groups if std.length([r for r in g.rules if std.objectHas(r, kind)]) > 0]
    for f in std.objectFields(files)
  ]),
  // Groups with alerts, and groups of recording rules only, kube-prometheus' split.
  prometheusAlerts+:: { groups+: groups('alert') },
  prometheusRules+:: { groups+: groups('record') },
  grafanaDashboards+:: (import 'dashboards.libsonnet'),
}
