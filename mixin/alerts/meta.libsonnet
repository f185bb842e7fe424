// Alerts on the monitoring itself: the scrape jobs beside the sidecars, and the Prometheus,
// Alertmanager and vmalert that carry every other alert, as kube-prometheus watches its own.
// Conventions as in database.rules.yml; the jobs are those of deploy/prometheus/prometheus.yml.
local lib = import '../lib/render.libsonnet';
{
  ruleFiles+:: {
    'meta.rules.yml': {
      header: 'Alerts on the monitoring itself: scrape targets outside the sidecars, Prometheus, Alertmanager, vmalert, and the Watchdog.',
      groups: [
        lib.group($._config, 'monitoring', [
          // Always firing. Route it to a dead man's switch outside this stack (the Alertmanager
          // config sends it to the `deadmans-switch` receiver every minute): when it stops
          // arriving, Prometheus, its rules or Alertmanager are down and nothing else can page.
          {
            alert: 'Watchdog',
            component: 'monitoring',
            expr: 'vector(1)',
            summary: 'Always firing, to prove the alerting pipeline works',
            description: "This alert always fires (value {{ $value }}); an external dead man's switch must page when it stops arriving.",
          },
          // Every scrape job that is not a database sidecar (ExporterTargetDown has those): Kafka's
          // JMX exporter and kafka_exporter, node_exporter, and the monitoring stack's own jobs.
          {
            alert: 'ScrapeTargetDown',
            component: 'monitoring',
            expr: 'up{job!~"%(tierJobs)s"} == 0',
            summary: 'Prometheus cannot scrape a target outside the database tiers',
            description: 'The {{ $labels.job }} target {{ $labels.%(i)s }} has failed every scrape for 5m: the alerts and panels built on it have no data.',
          },
          // A rule that fails to evaluate can neither fire nor record: its alert is blind.
          {
            alert: 'PrometheusRuleEvaluationFailures',
            component: 'monitoring',
            expr: 'sum by (%(cji)s) (increase(prometheus_rule_evaluation_failures_total[5m])) > 0',
            summary: 'Prometheus fails to evaluate rules',
            description: 'Prometheus {{ $labels.%(i)s }} failed {{ $value | humanize }} rule evaluations in 5m: the alerts of those rules cannot fire.',
          },
          {
            alert: 'PrometheusNotificationsFailing',
            component: 'monitoring',
            expr: |||
              sum by (%(cji)s) (rate(prometheus_notifications_errors_total[5m]))
                / on (%(cji)s)
              (sum by (%(cji)s) (rate(prometheus_notifications_sent_total[5m])) > 0)
                > %(threshold)s
            |||,
            summary: 'Prometheus fails to send alerts to Alertmanager',
            description: 'Prometheus {{ $labels.%(i)s }} failed to send {{ $value | humanizePercentage }} of its alerts to Alertmanager in 5m.',
          },
          {
            alert: 'PrometheusNotConnectedToAlertmanagers',
            component: 'monitoring',
            expr: 'max by (%(cji)s) (max_over_time(prometheus_notifications_alertmanagers_discovered[5m])) < 1',
            summary: 'Prometheus knows no Alertmanager',
            description: 'Prometheus {{ $labels.%(i)s }} has discovered {{ $value }} Alertmanagers: its alerts go nowhere.',
          },
          // The scale-out shards: what they scraped reaches the global store, where vmalert (or
          // the Thanos/Mimir ruler) evaluates every alert, more than 2 minutes late. The sent
          // timestamp exists only after a first successful send, so a queue that never sent (the
          // store down since the shard started) is the second leg, not silence.
          {
            alert: 'PrometheusRemoteWriteBehind',
            component: 'monitoring',
            expr: |||
              (
                max_over_time(prometheus_remote_storage_highest_timestamp_in_seconds[5m])
                  - ignoring (remote_name, url) group_right
                max_over_time(prometheus_remote_storage_queue_highest_sent_timestamp_seconds[5m])
              ) > %(threshold)s
                or
              (
                group by (%(cji)s, remote_name, url) (prometheus_remote_storage_shards)
                  unless on (%(cji)s, remote_name, url)
                prometheus_remote_storage_queue_highest_sent_timestamp_seconds
              )
            |||,
            summary: 'Prometheus remote write falls behind',
            description: 'Prometheus {{ $labels.%(i)s }} remote write to {{ $labels.url }} is {{ $value | humanizeDuration }} behind (1s: it never sent anything): the global ruler sees stale data.',
          },
          {
            alert: 'AlertmanagerNotificationsFailing',
            component: 'monitoring',
            expr: |||
              sum by (%(cji)s, integration) (rate(alertmanager_notifications_failed_total[5m]))
                / on (%(cji)s, integration)
              (sum by (%(cji)s, integration) (rate(alertmanager_notifications_total[5m])) > 0)
                > %(threshold)s
            |||,
            summary: 'Alertmanager fails to deliver notifications',
            description: 'Alertmanager {{ $labels.%(i)s }} failed {{ $value | humanizePercentage }} of its {{ $labels.integration }} notifications in 5m.',
          },
          // vmalert, the scale-out ruler: rules that fail to execute, alerts it cannot send.
          {
            alert: 'VmalertRuleEvaluationFailures',
            component: 'monitoring',
            expr: 'sum by (%(cji)s) (increase(vmalert_execution_errors_total[5m])) > 0',
            summary: 'vmalert fails to evaluate rules',
            description: 'vmalert {{ $labels.%(i)s }} failed {{ $value | humanize }} rule executions in 5m: the alerts of those rules cannot fire.',
          },
          {
            alert: 'VmalertNotificationsFailing',
            component: 'monitoring',
            expr: 'sum by (%(cji)s) (increase(vmalert_alerts_send_errors_total[5m])) > 0',
            summary: 'vmalert fails to send alerts to Alertmanager',
            description: 'vmalert {{ $labels.%(i)s }} failed to send alerts {{ $value | humanize }} times in 5m.',
          },
        ]),
      ],
    },
  },
}
