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
  // The SLOs: a constant error ratio above the fastest page's burn rate pages, one between the
  // pages' and the tickets' rates tickets and does not page, one below the slowest ticket's rate
  // raises nothing, each with the config's objective, burn rates and severities.
  local factors(speed) = [b.factor for b in c.sloBurns[speed]];
  local sloSeries(slo, where, burn) =
    local l = { job: c.jobs.tx, [c.instanceLabel]: 'slo:9000' } + (if c.clusterLabel != '' then { [c.clusterLabel]: where } else {});
    local l2 = if slo.component == 'olap' then l { job: c.jobs.olap } else l;
    local ratio = (1 - slo.objective) * burn;
    local perMinute = 6000;
    local n = 40;
    if std.objectHas(slo, 'histogram') then [
      { series: slo.histogram + '_bucket' + selector(l2 { le: lib.num(slo.latencyThreshold) }), values: '0+%sx%d' % [lib.num(perMinute * (1 - ratio)), n] },
      { series: slo.histogram + '_count' + selector(l2), values: '0+%dx%d' % [perMinute, n] },
    ] else [
      { series: slo.errors + selector(l2), values: '0+%sx%d' % [lib.num(perMinute * ratio), n] },
      { series: slo.total + selector(l2), values: '0+%dx%d' % [perMinute, n] },
    ];
  local burnAlert(slo, speed) = slo.alertName + (if speed == 'fast' then 'BudgetBurnFast' else 'BudgetBurnSlow');
  local sloAlerts(slo, speed, where) =
    local name = burnAlert(slo, speed);
    'ALERTS' + selector({ alertname: name, alertstate: 'firing', slo: slo.name, component: slo.component, severity: c.alerts[name].severity }
                        + (if c.clusterLabel != '' then { [c.clusterLabel]: where } else {}));
  local sloTest(slo) = {
    local fastBurn = std.foldl(std.max, factors('fast'), 0) * 1.2,
    local slowBurn = (std.foldl(std.min, factors('fast'), 1e9) + std.foldl(std.max, factors('slow'), 0)) / 2,
    local neutral = std.foldl(std.min, factors('slow'), 1e9) * 0.8,
    local at = minutes(c.alerts[burnAlert(slo, 'slow')]['for']) + 3,
    local query(speed) = 'ALERTS{alertname="%s", alertstate="firing"}' % burnAlert(slo, speed),
    name: '%s: a burn of %sx pages, %sx tickets only, %sx raises nothing (objective %s over %s)' % [
      slo.name,
      lib.num(fastBurn),
      lib.num(slowBurn),
      lib.num(neutral),
      lib.num(slo.objective),
      c.sloWindow,
    ],
    interval: '1m',
    input_series: sloSeries(slo, 'fast', fastBurn) + sloSeries(slo, 'slow', slowBurn) + sloSeries(slo, 'neutral', neutral),
    promql_expr_test: [
      { expr: query('fast'), eval_time: '1m', exp_samples: [] },
      { expr: query('slow'), eval_time: '1m', exp_samples: [] },
      { expr: query('fast'), eval_time: '%dm' % at, exp_samples: [{ labels: sloAlerts(slo, 'fast', 'fast'), value: 1 }] },
      { expr: query('slow'), eval_time: '%dm' % at, exp_samples: [
        { labels: sloAlerts(slo, 'slow', 'fast'), value: 1 },
        { labels: sloAlerts(slo, 'slow', 'slow'), value: 1 },
      ] },
    ],
  };
  // A config without a cluster label has one cluster: the three cases then share it.
  local sloTests = if c.clusterLabel == '' then [] else [sloTest(slo) for slo in c.slos];
  '# Rendered by mixin/render.py --tests from mixin/tests/thresholds.jsonnet and the config.\n'
  + std.manifestYamlDoc({
    rule_files: ['../recording.rules.yml', '../database.rules.yml', '../exporters.rules.yml', '../kafka.rules.yml', '../slo.rules.yml'],
    evaluation_interval: '1m',
    group_eval_order: ['db-recording', 'tx-engines', 'clock-sync', 'ingestion-engines', 'olap-shards', 'cluster-health', 'exporters', 'kafka', 'slo-recording', 'slo-alerts'],
    tests: [test(case) for case in cases] + sloTests,
  }, indent_array_in_object=true, quote_keys=false) + '\n'
