// A deliberately foreign config, as a Kubernetes user with ServiceMonitors might have: other job
// names, the cluster label called `dc`, the target label called `pod`, other thresholds, `for`
// and severities, another runbook base, other SLO objectives and dashboard settings.
// crates/bundle-tests renders the bundle with it and runs the promtool suite (rewritten for
// these names by mixin/render.py --tests), the threshold tests and the bundle checks on it; the
// e2e test runs a Prometheus whose jobs carry these names.
{
  _config+:: {
    jobs+: {
      tx: 'db/tx-engine-metrics',
      ingestion: 'db/ingestion-engine-metrics',
      olap: 'db/olap-shard-metrics',
      clock: 'db/clock-master-metrics',
      kafka: 'db/kafka-jmx',
      kafkaExporter: 'db/kafka-consumer-lag',
      node: 'infra/node-exporter',
    },
    clusterLabel: 'dc',
    instanceLabel: 'pod',
    runbookBase: 'https://wiki.example.org/sre/db-runbooks/',
    ingestionConsumerGroups: 'ingestion-group-.+',
    alerts+: {
      HighReplicationLag+: { threshold: 8, severity: 'warning', 'for': '4m' },
      ClockSyncDegraded+: { threshold: 0.25 },
      OLAPPushLagHigh+: { threshold: 900, 'for': '10m' },
      MergeQueueBackup+: { threshold: 250000 },
      ClusterReplicationLagHigh+: { threshold: 30 },
      StorageHighUtilization+: { threshold: 0.8 },
      StorageCriticalUtilization+: { threshold: 0.9, 'for': '2m' },
      KafkaIngestionConsumerLag+: { threshold: 50000 },
      ExporterLogFollowerBehind+: { threshold: 16 * 1024 * 1024, severity: 'info' },
      ExporterTargetDown+: { severity: 'critical' },
      KafkaIsrShrinking+: { severity: 'info' },
    },
    dashboards+: { timeFrom: 'now-24h', refresh: '1m', tags: ['db', 'sre'] },
  },
}
