// Alerts on the four sidecar exporters themselves: is the sidecar scraped, does it see its engine,
// does it lose or reject what the engine sends it. Conventions as in database.rules.yml.
local lib = import '../lib/render.libsonnet';
{
  local c = $._config,
  // One expression over every tier's exporter: their self-metric prefixes differ. `%(p)s` is
  // the prefix; other %% directives are left for the alert's own variables.
  local eachTier(template, joiner) =
    std.join(joiner, [std.rstripChars(template % { p: t.self_prefix }, '\n') for t in c.tiers]),

  ruleFiles+:: {
    'exporters.rules.yml': {
      header: 'Alerts on the sidecar exporters themselves, one expression per alert over every tier of mixin/tiers.json.',
      groups: [
        lib.group($._config, 'exporters', [
          {
            alert: 'ExporterTargetDown',
            component: 'exporter',
            expr: 'up{job=~"%(tierJobs)s"} == 0',
            summary: 'Prometheus cannot scrape a database sidecar exporter',
            description: 'The {{ $labels.job }} target {{ $labels.%(i)s }} has failed every scrape for 5m; its tier is unmonitored there.',
          },
          // Service discovery returns no target for a tier: nothing is scraped, and every other alert
          // of that tier is silent. Per cluster (a cluster with targets of some database tiers and
          // none of this one: several clusters share one store), and globally (absent: no cluster
          // has any, or the store has no cluster label).
          {
            alert: 'ExporterTargetsAbsent',
            component: 'exporter',
            expr: std.join('\n  or ', [
              'absent(up{job="%s"})' % c.jobs[t.name]
              for t in c.tiers
            ] + [
              'label_replace(group by (%(c)s) (up{job=~"%(tierJobs)s"}) unless on (%(c)s) group by (%(c)s) (up{job="%(job)s"}), "job", "%(job)s", "", "")'
              % (c.names { job: c.jobs[t.name] })
              for t in c.tiers
            ]) + '\n',
            summary: 'No scrape target discovered for a database tier',
            description: 'Prometheus has no target for job {{ $labels.job }}%(inCluster)s; check service discovery and the scrape configuration.',
          },
          {
            alert: 'ExporterEngineDown',
            component: 'exporter',
            expr: eachTier('%(p)sengine_up == 0', '\n  or ') + '\n',
            summary: 'A sidecar exporter reports its database engine down',
            description: 'The sidecar on {{ $labels.%(i)s }} ({{ $labels.job }}) cannot find its engine process or reach its address.',
          },
          // The engine runs, yet the sidecar has applied nothing from it on any channel (StatsD or
          // the event log) since it started: the engine pushes to the wrong port or path. An engine
          // that delivered and then stopped is EngineStoppedPushing.
          {
            alert: 'ExporterReceivingNothing',
            component: 'exporter',
            expr: eachTier(|||
              (%(p)sengine_up == 1)
                unless on (%%(cji)s) %(p)singest_last_sample_timestamp_seconds
            |||, '\nor ') + '\n',
            summary: 'A sidecar receives nothing from its running engine',
            description: 'The engine beside {{ $labels.%(i)s }} ({{ $labels.job }}) is up, but its sidecar has applied no StatsD sample or event-log line since it started.',
          },
          // The engine delivered, and has applied nothing on any channel for 4 minutes while its
          // process still answers: it is hung (or stopped pushing). Its pushed gauges go stale after
          // ingest.gauge_stale_seconds (300s) and every alert on them resolves: this fires first
          // (at 5m, before those resolve at 7m), so a hung engine never turns a page into silence.
          {
            alert: 'EngineStoppedPushing',
            component: 'exporter',
            expr: eachTier(|||
              (
                group by (%%(cji)s) (%(p)singest_last_sample_timestamp_seconds)
                  unless on (%%(cji)s)
                (max by (%%(cji)s) (changes(%(p)singest_last_sample_timestamp_seconds[4m])) > 0)
              ) and on (%%(cji)s) (last_over_time(%(p)sengine_up[2m]) == 1)
            |||, '\nor ') + '\n',
            summary: 'A running engine stopped sending its metrics',
            description: 'The engine beside {{ $labels.%(i)s }} ({{ $labels.job }}) still answers, but its sidecar has applied nothing from it for over 4 minutes: it is hung, or its pushes go elsewhere. Its gauges are about to go stale.',
          },
          {
            alert: 'ExporterIngestRejections',
            component: 'exporter',
            expr: |||
              sum by (%%(cji)s, source, reason) (
                %s
              ) > 0
            ||| % eachTier('increase(%(p)singest_rejected_total[10m])', '\n    or '),
            summary: 'A sidecar exporter keeps rejecting engine input',
            description: '{{ $labels.%(i)s }} ({{ $labels.job }}) rejected {{ $value | humanize }} {{ $labels.source }} inputs in 10m, reason {{ $labels.reason }}.',
          },
          {
            alert: 'ExporterStatsdUdpDrops',
            component: 'exporter',
            expr: |||
              sum by (%%(cji)s) (
                %s
              ) > 0
            ||| % eachTier('increase(%(p)sstatsd_udp_dropped_total[5m])', '\n    or '),
            summary: 'The kernel drops StatsD datagrams sent to a sidecar',
            description: '{{ $labels.%(i)s }} ({{ $labels.job }}) lost {{ $value | humanize }} StatsD datagrams in 5m because its UDP receive queue was full.',
          },
          {
            alert: 'ExporterLogFollowerBehind',
            component: 'exporter',
            expr: |||
              (
                %s
              ) > %%(threshold)s
            ||| % eachTier('%(p)slog_behind_bytes', '\n    or '),
            summary: 'A sidecar is more than %(threshold_bytes)s behind an engine event log',
            description: '{{ $labels.%(i)s }} ({{ $labels.job }}) is {{ $value | humanize1024 }}B behind the end of {{ $labels.path }} (threshold %(threshold_bytes)s).',
          },
          // A source of the sidecar itself fails: the StatsD socket cannot be bound, the event-log
          // follower cannot read, the data-directory probe cannot measure. The page still renders,
          // so up is 1: only this says that part of it is blind. The engine probe has
          // ExporterEngineDown, clock sources ClockSourceUnreachable.
          {
            alert: 'ExporterSourceDown',
            component: 'exporter',
            expr: eachTier('%(p)ssource_up{source=~"statsd_udp|statsd_unixgram|event_log|log:.+|data_dir|data_dir_walk"} == 0', '\n  or ') + '\n',
            summary: 'A sidecar exporter cannot read one of its sources',
            description: 'The sidecar on {{ $labels.%(i)s }} ({{ $labels.job }}) reports source {{ $labels.source }} down: what it should bring in is missing from every metric it feeds.',
          },
          // A reload (SIGHUP, systemctl reload, POST /-/reload) was refused: the sidecar still runs
          // the previous configuration, and the change the operator made is not in effect.
          {
            alert: 'ExporterConfigReloadFailed',
            component: 'exporter',
            expr: eachTier('%(p)sconfig_last_reload_successful == 0', '\n  or ') + '\n',
            summary: 'A sidecar exporter refused its new configuration',
            description: 'The sidecar on {{ $labels.%(i)s }} ({{ $labels.job }}) refused its last configuration reload and still runs the previous configuration.',
          },
          {
            alert: 'ClockSourceUnreachable',
            component: 'clock-sync',
            expr: 'clock_exporter_source_up{source=~"kernel|chronyd|(chrony|ntp|ptp):.+"} == 0',
            summary: 'A time source of a clock master is unreachable',
            description: 'clock-exporter on {{ $labels.%(i)s }} cannot read time source {{ $labels.source }}.',
          },
        ]),
      ],
    },
  },
}
