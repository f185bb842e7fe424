// The knobs of the bundle, monitoring-mixins style. Override any of them in your own file:
//
//   (import 'db-observability-mixin/mixin.libsonnet') + {
//     _config+:: {
//       jobs+: { tx: 'db/tx-engine-metrics' },
//       clusterLabel: 'dc',
//       alerts+: { HighReplicationLag+: { threshold: 10, severity: 'warning' } },
//     },
//   }
//
// then render (docs/mixin.md). The defaults render exactly the files in alerts/ and dashboards/.
{
  _config+:: {
    local cfg = self,

    // The database tiers, from the [tier] tables of crates/*/schema.toml (mixin/render.py
    // writes tiers.json; a new tier's crate adds itself there).
    tiers: (import 'tiers.json').tiers,

    // The `job` label of each scrape job: one per tier (default: the tier's job), Kafka's JMX
    // exporter, kafka_exporter and node_exporter.
    jobs: { [t.name]: t.job for t in cfg.tiers } + {
      kafka: 'kafka',
      kafkaExporter: 'kafka-exporter',
      node: 'node',
    },

    // The label that tells clusters apart in one store (an external label in the scale-out
    // variant); '' when the store holds one cluster and has no such label.
    clusterLabel: 'cluster',
    // The label that names one target.
    instanceLabel: 'instance',

    // Every runbook_url is this base followed by <AlertName>.md.
    runbookBase: 'https://github.com/example/db-observability/blob/main/docs/runbooks/',

    // The EC2 `Tier` tag of each tier's instances in deploy/prometheus/prometheus-ec2.yml
    // (default: the tier's name).
    ec2TierTags: { tx: 'transaction' },

    // The ingestion engines' Kafka consumer groups (KafkaIngestionConsumerLag, the Kafka panels).
    ingestionConsumerGroups: 'ingestion-group-.+',

    // Per alert: `for` (null: fires at once), severity (critical pages, warning tickets, info
    // waits; Watchdog's `none` goes to the dead man's switch only) and its thresholds, in base
    // units (seconds, ratios, bytes).
    alerts: {
      // tx-engines
      HighTransactionLatency: { 'for': '5m', severity: 'warning', threshold: 1, minRate: 0.1 },
      LowCacheHitRate: { 'for': '10m', severity: 'warning', threshold: 0.7, minRate: 1 },
      HighReplicationLag: { 'for': '3m', severity: 'critical', threshold: 5 },
      HighTransactionErrorRatio: { 'for': '10m', severity: 'warning', threshold: 0.05, minRate: 0.1 },
      // clock-sync
      ClockSyncDegraded: { 'for': '5m', severity: 'warning', threshold: 0.1 },
      ClockSyncLost: { 'for': '1m', severity: 'critical', threshold: 10 },
      ClockSkewGrowing: { 'for': '15m', severity: 'info', threshold: 0.1, minOffset: 0.01 },
      ClockMasterHeartbeatsStopped: { 'for': '2m', severity: 'critical' },
      ClockMasterPrimaryMissing: { 'for': '2m', severity: 'critical' },
      // ingestion-engines
      HighConflictRate: { 'for': '10m', severity: 'warning', threshold: 0.05, minRate: 1 },
      OLAPPushLagHigh: { 'for': '5m', severity: 'warning', threshold: 600 },
      MergeQueueBackup: { 'for': '5m', severity: 'warning', threshold: 100000 },
      HighIngestionFailureRatio: { 'for': '10m', severity: 'warning', threshold: 0.01, minRate: 1 },
      // olap-shards
      SlowOLAPQueries: { 'for': '10m', severity: 'warning', threshold: 60, minRate: 0.01 },
      StorageHighUtilization: { 'for': '1h', severity: 'warning', threshold: 0.85 },
      StorageCriticalUtilization: { 'for': '5m', severity: 'critical', threshold: 0.95 },
      CompactionLag: { 'for': '30m', severity: 'warning', threshold: 7200 },
      HighOLAPQueryFailureRatio: { 'for': '10m', severity: 'warning', threshold: 0.05, minRate: 0.1 },
      // cluster-health
      ClusterReplicationLagHigh: { 'for': '5m', severity: 'critical', threshold: 10 },
      InsufficientTXEngines: { 'for': '5m', severity: 'critical', minimum: 2 },
      DatabaseNodeUnreachable: { 'for': '3m', severity: 'critical' },
      // exporters
      ExporterTargetDown: { 'for': '5m', severity: 'warning' },
      ExporterTargetsAbsent: { 'for': '10m', severity: 'warning' },
      ExporterEngineDown: { 'for': '2m', severity: 'critical' },
      ExporterReceivingNothing: { 'for': '5m', severity: 'warning' },
      EngineStoppedPushing: { 'for': '1m', severity: 'critical' },
      ExporterIngestRejections: { 'for': '15m', severity: 'warning' },
      ExporterStatsdUdpDrops: { 'for': '10m', severity: 'warning' },
      ExporterLogFollowerBehind: { 'for': '10m', severity: 'warning', threshold: 64 * 1024 * 1024 },
      ExporterSourceDown: { 'for': '5m', severity: 'warning' },
      ExporterConfigReloadFailed: { 'for': '10m', severity: 'warning' },
      ClockSourceUnreachable: { 'for': '5m', severity: 'warning' },
      // kafka
      KafkaUnderReplicatedPartitions: { 'for': '10m', severity: 'warning' },
      KafkaOfflinePartitions: { 'for': '1m', severity: 'critical' },
      KafkaActiveControllerCount: { 'for': '5m', severity: 'critical' },
      KafkaIsrShrinking: { 'for': '15m', severity: 'warning' },
      KafkaIngestionConsumerLag: { 'for': '10m', severity: 'warning', threshold: 100000 },
      // monitoring
      Watchdog: { 'for': null, severity: 'none' },
      ScrapeTargetDown: { 'for': '5m', severity: 'warning' },
      PrometheusRuleEvaluationFailures: { 'for': '15m', severity: 'critical' },
      PrometheusNotificationsFailing: { 'for': '15m', severity: 'warning', threshold: 0.01 },
      PrometheusNotConnectedToAlertmanagers: { 'for': '10m', severity: 'warning' },
      PrometheusRemoteWriteBehind: { 'for': '15m', severity: 'critical', threshold: 120 },
      AlertmanagerNotificationsFailing: { 'for': '5m', severity: 'warning', threshold: 0.01 },
      VmalertRuleEvaluationFailures: { 'for': '15m', severity: 'critical' },
      VmalertNotificationsFailing: { 'for': '15m', severity: 'warning' },
    } + {
      // The SLO alerts (below): the fast burn pages, the slow burn tickets.
      [slo.alertName + 'BudgetBurnFast']: { 'for': '2m', severity: 'critical' }
      for slo in cfg.slos
    } + {
      [slo.alertName + 'BudgetBurnSlow']: { 'for': '15m', severity: 'warning' }
      for slo in cfg.slos
    },

    // SLOs, per cluster: the SRE workbook's multiwindow, multi-burn-rate alerts over `window`.
    // objective: the share of good events; the error budget is 1 - objective.
    slos: [
      {
        name: 'tx-availability',
        alertName: 'TXAvailability',
        component: 'tx-engine',
        objective: 0.98,
        what: 'transactions that commit (not rolled back)',
        errorsWere: 'of transactions rolled back',
        errors: 'tx_engine_transactions_rolled_back_total',
        total: 'tx_engine_transactions_total',
      },
      {
        name: 'tx-latency',
        alertName: 'TXLatency',
        component: 'tx-engine',
        objective: 0.99,
        // A bucket boundary of tx_engine_transaction_duration_seconds (crates/tx-exporter/schema.toml).
        latencyThreshold: 0.1,
        what: 'transactions that complete within %(latencyThreshold_duration)s',
        errorsWere: 'of transactions took over %(latencyThreshold_duration)s',
        histogram: 'tx_engine_transaction_duration_seconds',
      },
      {
        name: 'olap-query-success',
        alertName: 'OLAPQuerySuccess',
        component: 'olap',
        objective: 0.99,
        what: 'OLAP queries that succeed',
        errorsWere: 'of OLAP queries failed',
        errors: 'olap_queries_failed_total',
        total: 'olap_queries_total',
      },
    ],
    // The SLO window and the burn rates: pages at 14.4x over 1h and 5m, or 6x over 6h and 30m;
    // tickets at 3x over 1d and 2h, or 1x over 3d and 6h (the workbook's table for 30 days).
    sloWindow: '30d',
    sloBurns: {
      fast: [{ factor: 14.4, long: '1h', short: '5m' }, { factor: 6, long: '6h', short: '30m' }],
      slow: [{ factor: 3, long: '1d', short: '2h' }, { factor: 1, long: '3d', short: '6h' }],
    },

    // The dashboards (dashboards/*.json, rendered by dashboards/generate.py from this config).
    dashboards: {
      timeFrom: 'now-6h',
      refresh: '30s',
      tags: ['db-observability'],
    },

    // Derived: the names the rule files format with. Not a knob.
    names:: {
      local cl = cfg.clusterLabel,
      local joined(labels) = std.join(', ', [l for l in labels if l != '']),
      c: cl,
      c_: if cl == '' then '' else cl + ', ',
      // The cluster in alert texts; nothing when there is no cluster label.
      inCluster: if cl == '' then '' else '{{ with $labels.%s }} in cluster {{ . }}{{ end }}' % cl,
      ofCluster: if cl == '' then '' else ' of cluster {{ $labels.%s }}' % cl,
      InCluster: if cl == '' then '' else 'In cluster {{ $labels.%s }}, ' % cl,
      i: cfg.instanceLabel,
      ci: joined([cl, cfg.instanceLabel]),
      cji: joined([cl, 'job', cfg.instanceLabel]),
      tierJobs: std.join('|', [cfg.jobs[t.name] for t in cfg.tiers]),
      consumerGroups: cfg.ingestionConsumerGroups,
    } + { ['job_' + k]: cfg.jobs[k] for k in std.objectFields(cfg.jobs) },
  },
}
