// promtool tests rendered from the config: for each alert with a gauge threshold, a series a
// little above it fires once the config's `for` has passed (and not a minute before), with the
// config's severity, and a series a little below never does. mixin/render.py --tests writes it
// beside the rewritten suite, for the default config and for any other.
local lib = import '../lib/render.libsonnet';
function(overrides={})
  local mixin = (import '../mixin.libsonnet') + overrides;
  local c = mixin._config;
  local rules = std.flattenArrays([g.rules for f in std.objectFields(mixin.ruleFiles) for g in mixin.ruleFiles[f].groups]);
  local ruleOf(name) = [r for r in rules if std.get(r, 'alert') == name][0];
  // metric: the series the alert reads; by: the labels its expression keeps (null: all);
  // ratio: a share of 1, so "above" stays below 1.
  local cases = [
    { alert: 'HighReplicationLag', metric: 'tx_engine_replication_lag_seconds', job: 'tx' },
    { alert: 'ClockSyncDegraded', metric: 'tx_engine_clock_uncertainty_seconds', job: 'tx' },
    { alert: 'OLAPPushLagHigh', metric: 'ingestion_olap_push_lag_seconds', job: 'ingestion' },
    { alert: 'MergeQueueBackup', metric: 'ingestion_merge_queue_depth', job: 'ingestion' },
    { alert: 'ClusterReplicationLagHigh', metric: 'ingestion_lag_by_source_seconds', job: 'ingestion', extra: { server_id: '7' }, by: ['server_id'] },
    { alert: 'KafkaIngestionConsumerLag', metric: 'kafka_consumergroup_lag', job: 'kafkaExporter', extra: { consumergroup: 'ingestion-group-1', topic: 'changes' }, by: ['consumergroup', 'topic'] },
    { alert: 'ExporterLogFollowerBehind', metric: 'tx_exporter_log_behind_bytes', job: 'tx', extra: { path: '/var/log/db/tx/events.log' } },
    { alert: 'StorageHighUtilization', storage: true, job: 'olap', ratio: true },
    { alert: 'StorageCriticalUtilization', storage: true, job: 'olap', ratio: true },
  ];
  local minutes(d) = lib.windowSeconds(d) / 60;
  local labels(case, where) =
    { job: c.jobs[case.job], [c.instanceLabel]: where + ':9000' }
    + (if c.clusterLabel != '' then { [c.clusterLabel]: 'a' } else {})
    + std.get(case, 'extra', {});
  local selector(l) = '{' + std.join(', ', ['%s="%s"' % [k, l[k]] for k in std.objectFields(l)]) + '}';
  local threshold(case) = c.alerts[case.alert].threshold;
  local above(case) =
    local t = threshold(case);
    if std.get(case, 'ratio', false) then t + (1 - t) / 2 else t * 1.25;
  local series(case, where, value) =
    local l = labels(case, where);
    local n = minutes(c.alerts[case.alert]['for']) + 10;
    if std.get(case, 'storage', false) then [
      { series: 'olap_data_filesystem_size_bytes' + selector(l), values: '1000000x%d' % n },
      { series: 'olap_data_filesystem_avail_bytes' + selector(l), values: '%sx%d' % [lib.num(1000000 * (1 - value)), n] },
    ] else [
      { series: case.metric + selector(l), values: '%sx%d' % [lib.num(value), n] },
    ];
  local firing(case) =
    local kept = labels(case, 'above');
    local by = std.get(case, 'by', null);
    local out = if by == null then kept else
      { [k]: kept[k] for k in by } + (if c.clusterLabel != '' then { [c.clusterLabel]: 'a' } else {});
    'ALERTS' + selector(out + ruleOf(case.alert).labels + { alertname: case.alert, alertstate: 'firing' });
  local test(case) = {
    local f = minutes(c.alerts[case.alert]['for']),
    name: '%s: above %s fires after %s with severity %s, below it stays silent' % [
      case.alert,
      lib.num(threshold(case)),
      c.alerts[case.alert]['for'],
      c.alerts[case.alert].severity,
    ],
    interval: '1m',
    input_series: series(case, 'above', above(case)) + series(case, 'below', threshold(case) * 0.8),
    promql_expr_test: [
      { expr: 'ALERTS{alertname="%s", alertstate="firing"}' % case.alert, eval_time: '%dm' % (f - 1), exp_samples: [] },
      { expr: 'ALERTS{alertname="%s", alertstate="firing"}' % case.alert, eval_time: '%dm' % (f + 2), exp_samples: [{ labels: firing(case), value: 1 }] },
    ],
  };
  '# Rendered by mixin/render.py --tests from mixin/tests/thresholds.jsonnet and the config.\n'
  + std.manifestYamlDoc({
    rule_files: ['../recording.rules.yml', '../database.rules.yml', '../exporters.rules.yml', '../kafka.rules.yml'],
    evaluation_interval: '1m',
    group_eval_order: ['db-recording', 'tx-engines', 'clock-sync', 'ingestion-engines', 'olap-shards', 'cluster-health', 'exporters', 'kafka'],
    tests: [test(case) for case in cases],
  }, indent_array_in_object=true, quote_keys=false) + '\n'
