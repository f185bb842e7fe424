// Alerts on the database tiers. Every alert of the monitoring design (seed 000) is here under its
// original name, rewritten so that it can actually fire and cannot fire by accident; the extra
// alerts below each group are marked "added".
//
// Conventions (checked by crates/bundle-tests):
//   labels:      severity (critical | warning | info), component
//   annotations: summary (static text), description (templated), runbook_url =
//                https://github.com/example/db-observability/blob/main/docs/runbooks/<AlertName>.md
// The runbook base URL is documented in alerts/README.md; change it there and with one sed.
// Threshold alerts on gauges read them through last_over_time(x[2m]): a failed scrape writes
// staleness markers, and a bare selector would then return nothing for one evaluation and
// reset the alert's `for:` (a single missed scrape sent HighReplicationLag back to pending).
// Range functions skip staleness markers, so the last real sample bridges gaps up to 2m.
// last_over_time is in PromQL (2.26+) and MetricsQL, so vmalert loads these rules too.
local lib = import '../lib/render.libsonnet';
{
  ruleFiles+:: {
    'database.rules.yml': {
      header: 'Alerts on the database tiers: the alerts of the monitoring design, corrected, and the added ones (mixin/alerts/database.libsonnet says why).',
      groups: [
        lib.group($._config, 'tx-engines', [
          {
            alert: 'HighTransactionLatency',
            component: 'tx-engine',
            expr: |||
              instance:tx_engine_transaction_duration_seconds:p99_rate5m > %(threshold)s
                and on (%(cji)s)
              instance:tx_engine_transaction_duration_seconds_count:rate5m >= %(minRate)s
            |||,
            summary: 'TX engine p99 transaction latency above %(threshold_duration)s',
            description: 'p99 transaction latency on {{ $labels.%(i)s }} is {{ $value | humanizeDuration }} over the last 5m (threshold %(threshold_duration)s).',
          },
          {
            alert: 'LowCacheHitRate',
            component: 'tx-engine',
            expr: |||
              instance:tx_engine_cache_hit:ratio_rate5m < %(threshold)s
                and on (%(cji)s)
              instance:tx_engine_cache_lookups:rate5m >= %(minRate)s
            |||,
            summary: 'TX engine cache hit ratio below %(threshold_percent)s',
            description: 'Cache hit ratio on {{ $labels.%(i)s }} is {{ $value | humanizePercentage }} over the last 5m (threshold %(threshold_percent)s).',
          },
          {
            alert: 'HighReplicationLag',
            component: 'tx-engine',
            expr: 'last_over_time(tx_engine_replication_lag_seconds[2m]) > %(threshold)s',
            summary: 'TX engine replication lag above %(threshold_duration)s',
            description: 'The oldest unreplicated change on {{ $labels.%(i)s }} is {{ $value | humanizeDuration }} old (threshold %(threshold_duration)s).',
          },
          // added: the error ratio of the TX tier (rolled-back share of all transactions).
          {
            alert: 'HighTransactionErrorRatio',
            component: 'tx-engine',
            expr: |||
              instance:tx_engine_transaction_rollback:ratio_rate5m > %(threshold)s
                and on (%(cji)s)
              instance:tx_engine_transactions:rate5m >= %(minRate)s
            |||,
            summary: 'More than %(threshold_percent)s of TX engine transactions roll back',
            description: '{{ $value | humanizePercentage }} of transactions on {{ $labels.%(i)s }} rolled back over the last 5m (threshold %(threshold_percent)s).',
          },
        ]),
        lib.group($._config, 'clock-sync', [
          {
            alert: 'ClockSyncDegraded',
            component: 'clock-sync',
            expr: 'last_over_time(tx_engine_clock_uncertainty_seconds[2m]) > %(threshold)s',
            summary: 'TX engine clock uncertainty above %(threshold_duration)s',
            description: 'Clock uncertainty on {{ $labels.%(i)s }} is {{ $value | humanizeDuration }} (threshold %(threshold_duration)s).',
          },
          {
            alert: 'ClockSyncLost',
            component: 'clock-sync',
            expr: 'increase(tx_engine_clock_heartbeats_missed_total[5m]) > %(threshold)s',
            summary: 'TX engine is missing clock master heartbeats',
            description: '{{ $labels.%(i)s }} missed {{ $value | humanize }} clock master heartbeats in the last 5m (threshold %(threshold)s).',
          },
          // added: the offset is drifting towards the uncertainty budget; warns before ClockSyncDegraded.
          {
            alert: 'ClockSkewGrowing',
            component: 'clock-sync',
            expr: |||
              abs(predict_linear(tx_engine_clock_offset_seconds[30m], 3600)) > %(threshold)s
                and on (%(cji)s)
              abs(last_over_time(tx_engine_clock_offset_seconds[2m])) > %(minOffset)s
            |||,
            summary: 'TX engine clock offset is trending past %(threshold_duration)s within an hour',
            description: 'At the trend of the last 30m the clock offset of {{ $labels.%(i)s }} reaches {{ $value | humanizeDuration }} in one hour (now above %(minOffset_duration)s).',
          },
          // added: the primary clock master sends no heartbeats. Only the primary: a standby sends
          // none by design (clock_master_primary, set by the engine, says which is which). A
          // counter that never appeared (a master that sends nothing after a restart) counts as
          // none sent. A cluster where no master sends at all has ClockMasterPrimaryMissing.
          {
            alert: 'ClockMasterHeartbeatsStopped',
            component: 'clock-sync',
            expr: |||
              last_over_time(clock_master_primary[5m]) == 1
                unless on (%(cji)s)
              sum by (%(cji)s) (rate(clock_master_heartbeats_sent_total[5m])) > 0
            |||,
            summary: 'Clock master sends no heartbeats',
            description: 'The clock master on {{ $labels.%(i)s }} has sent no heartbeat for at least 5m.',
          },
          // added: no clock master of a cluster sends heartbeats, while the cluster has TX engines or
          // clock masters to be seen. It does not depend on any master being alive: a dead primary
          // host, both masters silent and a standby that failed to take over all end here, and a
          // failover to a standby that sends is silent.
          {
            alert: 'ClockMasterPrimaryMissing',
            component: 'clock-sync',
            expr: |||
              group by (%(c)s) (up{job=~"%(job_tx)s|%(job_clock)s"})
                unless on (%(c)s)
              (sum by (%(c)s) (rate(clock_master_heartbeats_sent_total[5m])) > 0)
            |||,
            summary: 'No clock master of the cluster sends heartbeats',
            description: 'No clock master%(ofCluster)s has sent a heartbeat for 5m: the primary is down or silent and no standby took over; the TX engines lose clock sync.',
          },
        ]),
        lib.group($._config, 'ingestion-engines', [
          {
            alert: 'HighConflictRate',
            component: 'ingestion',
            expr: |||
              instance:ingestion_conflict:ratio_rate5m > %(threshold)s
                and on (%(cji)s)
              instance:ingestion_events_received:rate5m >= %(minRate)s
            |||,
            summary: 'Ingestion conflict rate above %(threshold_percent)s',
            description: 'Conflicts were detected on {{ $value | humanizePercentage }} of the events {{ $labels.%(i)s }} received over the last 5m (threshold %(threshold_percent)s).',
          },
          {
            alert: 'OLAPPushLagHigh',
            component: 'ingestion',
            expr: 'last_over_time(ingestion_olap_push_lag_seconds[2m]) > %(threshold)s',
            summary: 'Ingestion to OLAP push lag above %(threshold_duration)s',
            description: 'The oldest change not yet pushed to OLAP by {{ $labels.%(i)s }} is {{ $value | humanizeDuration }} old (threshold %(threshold_duration)s).',
          },
          {
            alert: 'MergeQueueBackup',
            component: 'ingestion',
            expr: 'last_over_time(ingestion_merge_queue_depth[2m]) > %(threshold)s',
            summary: 'Ingestion merge queue above %(threshold_count)s events',
            description: 'The merge queue on {{ $labels.%(i)s }} holds {{ $value | humanize }} events (threshold %(threshold_count)s).',
          },
          // added: events the ingestion engine could not process are lost to OLAP until replayed.
          {
            alert: 'HighIngestionFailureRatio',
            component: 'ingestion',
            expr: |||
              instance:ingestion_event_failure:ratio_rate5m > %(threshold)s
                and on (%(cji)s)
              instance:ingestion_events_received:rate5m >= %(minRate)s
            |||,
            summary: 'More than %(threshold_percent)s of change events fail processing',
            description: '{{ $value | humanizePercentage }} of the events {{ $labels.%(i)s }} received over the last 5m failed processing (threshold %(threshold_percent)s).',
          },
        ]),
        lib.group($._config, 'olap-shards', [
          // The largest finite bucket of olap_query_duration_seconds is 60s and histogram_quantile
          // returns that bound when the quantile falls into +Inf, so the comparison must be >= 60.
          {
            alert: 'SlowOLAPQueries',
            component: 'olap',
            expr: |||
              instance:olap_query_duration_seconds:p99_rate5m >= %(threshold)s
                and on (%(cji)s)
              instance:olap_query_duration_seconds_count:rate5m >= %(minRate)s
            |||,
            summary: 'OLAP p99 query time at or above %(threshold_duration)s',
            description: 'p99 query time on {{ $labels.%(i)s }} is {{ $value | humanizeDuration }} over the last 5m (threshold %(threshold_duration)s; %(threshold_duration)s means at least %(threshold_duration)s).',
          },
          {
            alert: 'StorageHighUtilization',
            component: 'olap',
            expr: 'last_over_time(instance:olap_data_filesystem_used:ratio[2m]) > %(threshold)s',
            summary: 'OLAP data filesystem more than %(threshold_percent)s used',
            description: 'The data filesystem of {{ $labels.%(i)s }} is {{ $value | humanizePercentage }} used (threshold %(threshold_percent)s).',
          },
          // added: the hard stop before the shard cannot write any more.
          {
            alert: 'StorageCriticalUtilization',
            component: 'olap',
            expr: 'last_over_time(instance:olap_data_filesystem_used:ratio[2m]) > %(threshold)s',
            summary: 'OLAP data filesystem more than %(threshold_percent)s used',
            description: 'The data filesystem of {{ $labels.%(i)s }} is {{ $value | humanizePercentage }} used (threshold %(threshold_percent)s); writes will fail when it is full.',
          },
          // A shard that never completed a compaction exposes 0 and is left out. "None is running"
          // is "not known to be running": a compactor that stops re-sending its gauge still fires.
          // Age of the last compaction; when the sidecar has seen none since it started (the
          // timestamp is absent after a restart), the time since it started, so a stalled compactor
          // is not hidden by a restart.
          {
            alert: 'CompactionLag',
            component: 'olap',
            expr: |||
              (
                  (time() - (olap_last_compaction_timestamp_seconds > 0) > %(threshold)s)
                or on (%(cji)s)
                  (
                    (time() - max by (%(cji)s) (process_start_time_seconds{job="%(job_olap)s"}) > 7200)
                      unless on (%(cji)s) (olap_last_compaction_timestamp_seconds > 0)
                  )
              )
                unless on (%(cji)s)
              (last_over_time(olap_compactions_running[2m]) > 0)
            |||,
            summary: 'No OLAP compaction completed for more than %(threshold_duration)s',
            description: 'No compaction completed on {{ $labels.%(i)s }} for {{ $value | humanizeDuration }} (since the last one, or since its sidecar started without seeing one) and none is known to be running (threshold %(threshold_duration)s).',
          },
          // added: failed analytical queries.
          {
            alert: 'HighOLAPQueryFailureRatio',
            component: 'olap',
            expr: |||
              instance:olap_query_failure:ratio_rate5m > %(threshold)s
                and on (%(cji)s)
              instance:olap_queries:rate5m >= %(minRate)s
            |||,
            summary: 'More than %(threshold_percent)s of OLAP queries fail',
            description: '{{ $value | humanizePercentage }} of queries on {{ $labels.%(i)s }} failed over the last 5m (threshold %(threshold_percent)s).',
          },
        ]),
        lib.group($._config, 'cluster-health', [
          {
            alert: 'ClusterReplicationLagHigh',
            component: 'cluster',
            expr: 'max by (%(c_)sserver_id) (last_over_time(ingestion_lag_by_source_seconds[2m])) > %(threshold)s',
            summary: 'Replication lag from a TX engine above %(threshold_duration)s',
            description: 'Changes from TX engine server_id={{ $labels.server_id }} reach ingestion {{ $value | humanizeDuration }} late (threshold %(threshold_duration)s).',
          },
          // Counts 0, instead of returning nothing, for a cluster that has targets of other database
          // tiers but none of the TX tier (its discovery broke), and when no TX target is discovered
          // at all (absent branch).
          {
            alert: 'InsufficientTXEngines',
            component: 'cluster',
            expr: |||
              (
                cluster:tx_engine_healthy:sum
                  or on (%(c)s)
                (group by (%(c)s) (up{job=~"%(tierJobs)s"}) * 0)
                  or on (%(c)s)
                (absent(up{job="%(job_tx)s"}) * 0)
              ) < %(minimum)s
            |||,
            summary: 'Fewer than %(minimum)s healthy TX engines',
            description: 'Only {{ $value }} TX engines are healthy (scraped and engine_up == 1); the minimum is %(minimum)s.',
          },
          // added: an ingestion engine or OLAP shard is not scraped. Neither tier is redundant (an
          // OLAP shard holds its part of the data, an ingestion engine its share of the stream), and
          // their engine_up goes stale with the scrape, so a whole host lost would otherwise only
          // warn (ExporterTargetDown). TX has InsufficientTXEngines, clock ClockMasterPrimaryMissing.
          {
            alert: 'DatabaseNodeUnreachable',
            component: 'cluster',
            expr: 'up{job=~"%(job_ingestion)s|%(job_olap)s"} == 0',
            summary: 'An ingestion engine or OLAP shard cannot be reached',
            description: 'The {{ $labels.job }} node {{ $labels.%(i)s }} has failed every scrape for 3m: the host, the engine with it, or its sidecar is down, and nothing about that node is known.',
          },
        ]),
      ],
    },
  },
}
