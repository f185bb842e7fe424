// Recording rules shared by the alerts and the dashboards (group db-recording).
//
// Naming follows the Prometheus convention level:metric:operations.
// Every aggregation keeps the cluster label (an external label in the scale-out variant, absent
// on a single Prometheus) next to job and instance, so the same files work on one Prometheus and
// on a global ruler (Thanos Rule, Mimir ruler, vmalert) that sees several clusters.
//
// Ratios divide by `(denominator > 0)`: at zero traffic the ratio has no sample instead of NaN,
// so alerts built on it stay silent and panels show a gap rather than a misleading value.
local lib = import '../lib/render.libsonnet';
{
  ruleFiles+:: {
    'recording.rules.yml': {
      header: 'Recording rules shared by the alerts in this directory and by the dashboards in dashboards/.',
      groups: [{
        local r(name, expr) = lib.record($._config, name, expr),
        name: 'db-recording',
        rules: [
          // ---- TX engines -------------------------------------------------------------------
          r('instance:tx_engine_transactions:rate5m', 'sum by (%(cji)s) (rate(tx_engine_transactions_total[5m]))'),
          r('instance:tx_engine_transactions_rolled_back:rate5m', 'sum by (%(cji)s) (rate(tx_engine_transactions_rolled_back_total[5m]))'),
          r('instance:tx_engine_transaction_rollback:ratio_rate5m', |||
            instance:tx_engine_transactions_rolled_back:rate5m
              / on (%(cji)s)
            (instance:tx_engine_transactions:rate5m > 0)
          |||),
          r('instance:tx_engine_transaction_duration_seconds_bucket:rate5m', 'sum by (%(cji)s, le) (rate(tx_engine_transaction_duration_seconds_bucket[5m]))'),
          r('instance:tx_engine_transaction_duration_seconds_count:rate5m', 'sum by (%(cji)s) (rate(tx_engine_transaction_duration_seconds_count[5m]))'),
          r('instance:tx_engine_transaction_duration_seconds:p99_rate5m', 'histogram_quantile(0.99, instance:tx_engine_transaction_duration_seconds_bucket:rate5m)'),
          r('instance:tx_engine_cache_lookups:rate5m', |||
            sum by (%(cji)s) (rate(tx_engine_cache_hits_total[5m]))
              + on (%(cji)s)
            sum by (%(cji)s) (rate(tx_engine_cache_misses_total[5m]))
          |||),
          r('instance:tx_engine_cache_hit:ratio_rate5m', |||
            sum by (%(cji)s) (rate(tx_engine_cache_hits_total[5m]))
              / on (%(cji)s)
            (instance:tx_engine_cache_lookups:rate5m > 0)
          |||),
          // Engines whose sidecar is scraped and reports the engine alive. A target that is down counts
          // as 0 (its engine_up series is stale), so the sum exists as long as service discovery
          // returns at least one TX target.
          r('cluster:tx_engine_healthy:sum', |||
            sum by (%(c)s) (
              tx_exporter_engine_up{job="%(job_tx)s"}
                or on (%(cji)s)
              (up{job="%(job_tx)s"} * 0)
            )
          |||),
          // ---- Ingestion engines --------------------------------------------------------------
          r('instance:ingestion_events_received:rate5m', 'sum by (%(cji)s) (rate(ingestion_events_received_total[5m]))'),
          r('instance:ingestion_event_failure:ratio_rate5m', |||
            sum by (%(cji)s) (rate(ingestion_events_failed_total[5m]))
              / on (%(cji)s)
            (instance:ingestion_events_received:rate5m > 0)
          |||),
          r('instance:ingestion_conflict:ratio_rate5m', |||
            sum by (%(cji)s) (rate(ingestion_conflicts_detected_total[5m]))
              / on (%(cji)s)
            (instance:ingestion_events_received:rate5m > 0)
          |||),
          // ---- OLAP shards --------------------------------------------------------------------
          r('instance:olap_queries:rate5m', 'sum by (%(cji)s) (rate(olap_queries_total[5m]))'),
          r('instance:olap_query_failure:ratio_rate5m', |||
            sum by (%(cji)s) (rate(olap_queries_failed_total[5m]))
              / on (%(cji)s)
            (instance:olap_queries:rate5m > 0)
          |||),
          r('instance:olap_query_duration_seconds_bucket:rate5m', 'sum by (%(cji)s, le) (rate(olap_query_duration_seconds_bucket[5m]))'),
          r('instance:olap_query_duration_seconds_count:rate5m', 'sum by (%(cji)s) (rate(olap_query_duration_seconds_count[5m]))'),
          r('instance:olap_query_duration_seconds:p99_rate5m', 'histogram_quantile(0.99, instance:olap_query_duration_seconds_bucket:rate5m)'),
          // Share of the data filesystem the engine can no longer use: blocks reserved for root count
          // as used, which is what matters to a non-root engine.
          r('instance:olap_data_filesystem_used:ratio', |||
            1 - (
              olap_data_filesystem_avail_bytes
                / on (%(cji)s)
              (olap_data_filesystem_size_bytes > 0)
            )
          |||),
        ],
      }],
    },
  },
}
