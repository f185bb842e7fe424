#!/usr/bin/env python3
"""Generates the Grafana dashboards of the bundle (dashboards/*.json).

The models are built with Grafana's own typed builders (pip install
grafana-foundation-sdk==1769699379!11.6.0, the Grafana 11.6 schema), so they follow Grafana's
schema by construction. The JSON files are committed; edit this script and run python3 mixin/render.py, which passes
it the mixin's config (job names, cluster and instance labels, thresholds for the descriptions,
time range, refresh, tags), rather than editing the JSON by hand. Conventions, checked by crates/bundle-tests:
timeseries panels only, a `datasource` variable used by every panel and variable, `cluster`
(followed by every query), `job` and `instance` variables, counts that show 0 rather than
"No data", the engine process (memory, CPU) on every tier's dashboard, `$__rate_interval` in every rate()/increase() (fixed 5m windows only through
the recording rules of alerts/recording.rules.yml, the same series the alerts read), a unit and a
description on every panel, exemplars on latency panels, stable uids.
"""
import json
import os
import re
import sys

from grafana_foundation_sdk.builders import common as gc
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import prometheus as pq
from grafana_foundation_sdk.builders import timeseries as ts
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as mc
from grafana_foundation_sdk.models import dashboard as md
from grafana_foundation_sdk.models import prometheus as mp

DS_REF = md.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every query follows the cluster variable: several clusters may share one store (deploy/).
# Its "All" is ".*", which also matches series without a cluster label (a single Prometheus
# adds its external labels only when it sends data elsewhere). The queries below are written
# with the default names (cluster, instance, the default jobs); localize() puts in the config's.
SEL = 'cluster=~"$cluster", job=~"$job", instance=~"$instance"'
CLUSTER = 'cluster=~"$cluster"'

# Set by configure() from the mixin config (mixin/config.jsonnet).
CFG = {}
TIER_INFOS = []
SELF_PREFIXES = []
TIER_JOBS = ""
METRIC_PREFIX = {}


def configure(cfg):
    global CFG, TIER_INFOS, SELF_PREFIXES, TIER_JOBS, METRIC_PREFIX
    CFG = cfg
    TIER_INFOS = cfg["tiers"]
    SELF_PREFIXES = [t["self_prefix"] for t in TIER_INFOS]
    # The default jobs; localize() maps them to the configured ones.
    TIER_JOBS = "|".join(t["job"] for t in TIER_INFOS)
    METRIC_PREFIX = {t["name"]: t["metric_prefix"] for t in TIER_INFOS}


def human(alert, knob="threshold", form="duration"):
    """A threshold of an alert as its rule text writes it (the config's: '5s', '70%', '100k')."""
    return CFG["human"][alert][f"{knob}_{form}" if form else knob]


def localize(text):
    """A query, legend or variable written with the default names, in the config's names."""
    jobs = CFG["jobs"]
    for t in TIER_INFOS:
        text = re.sub(r"(?<![\w-])" + re.escape(t["job"]) + r"(?![\w-])", lambda _m: jobs[t["name"]], text)
    text = text.replace('job="kafka-exporter"', f'job="{jobs["kafkaExporter"]}"')
    text = text.replace('job="kafka"', f'job="{jobs["kafka"]}"')
    text = text.replace("|kafka|node)$/", f'|{re.escape(jobs["kafka"])}|{re.escape(jobs["node"])})$/')
    text = text.replace('"ingestion-group-.+"', '"' + CFG["ingestionConsumerGroups"] + '"')
    inst = CFG["instanceLabel"]
    if inst != "instance":
        text = text.replace('instance=~"$instance"', f'{inst}=~"$instance"')
        text = re.sub(r"([(,] ?)instance([,)])", lambda m: m.group(1) + inst + m.group(2), text)
        text = text.replace("{{instance}}", "{{" + inst + "}}")
    cl = CFG["clusterLabel"]
    if cl == "":
        text = text.replace('cluster=~"$cluster", ', "").replace(', cluster=~"$cluster"', "")
        text = text.replace('{cluster=~"$cluster"}', "")
        text = text.replace("(cluster, ", "(").replace("(cluster)", "()")
        text = text.replace(" {{cluster}}", "").replace("{{cluster}}", "")
    elif cl != "cluster":
        text = text.replace('cluster=~"$cluster"', f'{cl}=~"$cluster"')
        text = re.sub(r"([(,] ?)cluster([,)])", lambda m: m.group(1) + cl + m.group(2), text)
        text = text.replace("{{cluster}}", "{{" + cl + "}}")
    return text


# Per-instance series keep `cluster`: equal addresses in two clusters sharing a store are two
# series, not one sum.
BY_INSTANCE = "cluster, instance"


def rate(metric, by=BY_INSTANCE, sel=SEL, fn="rate"):
    return f"sum by ({by}) ({fn}({metric}{{{sel}}}[$__rate_interval]))"


def quantile(q, metric, by=BY_INSTANCE, sel=SEL):
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[$__rate_interval])))"


def latency(metric, by=BY_INSTANCE, qs=(0.5, 0.95, 0.99), sel=SEL, legend="instance"):
    return [(quantile(q, metric, by, sel), f"p{int(q * 100)} {{{{{legend}}}}}") for q in qs]


def each_tier(template, joiner=" or "):
    """An expression over the self-metrics of every exporter (their prefixes differ)."""
    return joiner.join(template.format(p=p) for p in SELF_PREFIXES)


def engine_process(d, tier):
    """The engine process as its sidecar measures it: memory and CPU, for any tier."""
    p = METRIC_PREFIX[tier]
    d.row("Engine process")
    d.panel("Engine memory",
            "Resident memory of the engine process, measured by the sidecar (NaN while it is not found).",
            "bytes", [(f"{p}memory_used_bytes{{{SEL}}}", "{{instance}}")])
    d.panel("Engine CPU",
            "CPU seconds per second used by the engine process, measured by the sidecar; 100% is one full core (the unit of the Sidecar CPU panel).",
            "percentunit", [(rate(f"{p}cpu_seconds_total"), "{{instance}}")])


class Dashboard:
    def __init__(self, uid, title, description, var_metric, tags, job_regex=None, per_cluster=False):
        """per_cluster: every series is per cluster (the SLOs), so there is no job or instance
        to choose."""
        self.uid, self.title, self.description = uid, title, description
        self.var_metric, self.tags, self.job_regex = var_metric, tags, job_regex
        self.per_cluster = per_cluster
        self.panels = []

    def row(self, title):
        self.panels.append(("row", title))

    def panel(self, title, description, unit, targets, exemplar=False, stack=False, width=12):
        self.panels.append(("panel", dict(title=title, description=description, unit=unit,
                                          targets=targets, exemplar=exemplar, stack=stack,
                                          width=width)))

    def render(self):
        """The dashboard, built with Grafana's own typed builders (grafana-foundation-sdk), so
        the model follows Grafana's schema by construction."""
        b = (gd.Dashboard(self.title)
             .uid(self.uid)
             .description(self.description)
             .tags(CFG["dashboards"]["tags"] + self.tags)
             .editable()
             .tooltip(md.DashboardCursorSync.CROSSHAIR)
             .refresh(CFG["dashboards"]["refresh"])
             .time(CFG["dashboards"]["timeFrom"], "now")
             .timezone("")
             .link(gd.DashboardLink("Database dashboards")
                   .type(md.DashboardLinkType.DASHBOARDS)
                   .tags(CFG["dashboards"]["tags"])
                   .as_dropdown(True))
             .annotation(gd.AnnotationQuery()
                         .name("Firing alerts")
                         .datasource(DS_REF)
                         .enable(True)
                         .icon_color("red")
                         .expr(localize('ALERTS{alertstate="firing", cluster=~"$cluster"}' if self.per_cluster
                                        else 'ALERTS{alertstate="firing", cluster=~"$cluster", job=~"$job|"}')))
             .with_variable(gd.DatasourceVariable("datasource").label("Data source").type("prometheus")))
        scoped = {"cluster": "", "job": f"{{{CLUSTER}}}", "instance": f'{{{CLUSTER}, job=~"$job"}}'}
        for name, label, regex, all_value in (
                ("cluster", "Cluster", "", ".*"),
                ("job", "Job", self.job_regex or "", ".+"),
                ("instance", "Instance", "", ".+")):
            if self.per_cluster and name != "cluster":
                continue
            if name == "cluster" and CFG["clusterLabel"] == "":
                continue  # one cluster, no label to choose by
            if regex:
                # A Grafana /regex/: a job name's own slashes are escaped.
                regex = "/" + localize(regex[1:-1]).replace("/", "\\/") + "/"
            b = b.with_variable(
                gd.QueryVariable(name).label(label).datasource(DS_REF)
                .query(localize(f"label_values({self.var_metric}{scoped[name]}, {name})"))
                .regex(regex)
                .refresh(md.VariableRefresh.ON_TIME_RANGE_CHANGED)
                .sort(md.VariableSort.ALPHABETICAL_ASC)
                .include_all(True).multi(True).all_value(all_value))
        for kind, p in self.panels:
            if kind == "row":
                b = b.with_row(gd.Row(p))
                continue
            panel = (ts.Panel()
                     .title(p["title"]).description(p["description"])
                     .datasource(DS_REF).unit(p["unit"])
                     .height(8).span(p["width"])
                     .draw_style(mc.GraphDrawStyle.LINE).line_width(1).fill_opacity(10)
                     .show_points(mc.VisibilityMode.NEVER).span_nulls(False)
                     .stacking(gc.StackingConfig()
                               .mode(mc.StackingMode.NORMAL if p["stack"] else mc.StackingMode.NONE)
                               .group("A"))
                     .legend(gc.VizLegendOptions()
                             .display_mode(mc.LegendDisplayMode.TABLE)
                             .placement(mc.LegendPlacement.BOTTOM)
                             .show_legend(True)
                             .calcs(["mean", "max", "lastNotNull"]))
                     .tooltip(gc.VizTooltipOptions()
                              .mode(mc.TooltipDisplayMode.MULTI)
                              .sort(mc.SortOrder.DESCENDING)))
            for i, (expr, legend) in enumerate(p["targets"]):
                q = (pq.Dataquery().expr(localize(expr)).legend_format(localize(legend))
                     .ref_id(chr(ord("A") + i)).range().editor_mode(mp.QueryEditorMode.CODE)
                     .datasource(DS_REF))
                if p["exemplar"]:
                    q = q.exemplar(True)
                panel = panel.with_target(q)
            b = b.with_panel(panel)
        return json.loads(json.dumps(b.build(), cls=JSONEncoder))


def cluster_overview():
    d = Dashboard("db-cluster-overview", "Database / Cluster overview",
                  "Health of the whole database cluster: tiers, throughput, latency, lag, clocks, storage.",
                  "up", ["overview"], job_regex=f"/^({TIER_JOBS}|kafka|node)$/")
    d.row("Health")
    d.panel("Healthy TX engines",
            "TX engines whose sidecar is scraped and reports the engine alive (recording rule "
            f"cluster:tx_engine_healthy:sum, as InsufficientTXEngines uses); the alert fires below {human('InsufficientTXEngines', 'minimum', None)}.",
            "short", [(f"cluster:tx_engine_healthy:sum{{{CLUSTER}}}", "healthy TX engines {{cluster}}")])
    d.panel("Targets up per job",
            "Scrape targets answering, per job (sum of up). A drop means a sidecar or exporter cannot be scraped.",
            "short", [(f'sum by (job) (up{{{SEL}}})', "{{job}}")])
    d.panel("Firing alerts by severity",
            "Alerts currently firing in Prometheus, by severity label.",
            "short", [(f'sum by (severity) (ALERTS{{alertstate="firing", {CLUSTER}}})', "{{severity}}")], stack=True)
    d.panel("Engines reported down",
            "Sidecars reporting engine_up == 0, per job: the engine process is gone or its address refuses connections. 0 while every engine is up.",
            "short", [(each_tier("sum by (job) ({p}engine_up{{" + SEL + "}} == bool 0)"), "{{job}}")])
    d.row("Transactions")
    d.panel("Transaction throughput",
            "Transactions per second across the selected TX engines, by outcome.",
            "ops", [(f"sum({rate('tx_engine_transactions_committed_total', by='job')})", "commits/s"),
                    (f"sum({rate('tx_engine_transactions_rolled_back_total', by='job')})", "rollbacks/s")],
            stack=True)
    d.panel("Transaction latency",
            "Cluster-wide transaction latency quantiles from the histogram buckets; exemplars link to traces.",
            "s", latency("tx_engine_transaction_duration_seconds", by="job"), exemplar=True)
    d.panel("Cache hit ratio (5m)",
            "Per-engine cache hit ratio over 5m (recording rule, the series LowCacheHitRate alerts on at 70%).",
            "percentunit", [('instance:tx_engine_cache_hit:ratio_rate5m{cluster=~"$cluster", instance=~"$instance"}', "{{instance}}")])
    d.panel("Replication lag",
            "Age of the oldest change not yet replicated: maximum and average over the TX engines.",
            "s", [(f"max(tx_engine_replication_lag_seconds{{{SEL}}})", "max"),
                  (f"avg(tx_engine_replication_lag_seconds{{{SEL}}})", "avg")])
    d.row("Pipeline")
    d.panel("Replication lag by source TX engine",
            "Worst lag seen by any ingestion engine for the changes of each TX engine (server_id).",
            "s", [('max by (server_id) (ingestion_lag_by_source_seconds{cluster=~"$cluster"})', "server_id {{server_id}}")])
    d.panel("Clock uncertainty",
            f"Largest clock uncertainty reported by a TX engine; ClockSyncDegraded fires above {human('ClockSyncDegraded')}.",
            "s", [(f"max(tx_engine_clock_uncertainty_seconds{{{SEL}}})", "max TX engine"),
                  (f"max(clock_master_uncertainty_seconds{{{SEL}}})", "max clock master")])
    d.panel("OLAP queries",
            "OLAP queries per second across the shards, and the failed ones.",
            "ops", [(f"sum({rate('olap_queries_total', by='job')})", "queries/s"),
                    (f"sum({rate('olap_queries_failed_total', by='job')})", "failed/s")])
    d.panel("Storage compression ratio",
            "Uncompressed bytes divided by compressed bytes over all shards (higher is better).",
            "none", [(f"sum(olap_total_bytes_uncompressed{{{SEL}}}) / (sum(olap_total_bytes_compressed{{{SEL}}}) > 0)", "ratio")])
    d.panel("OLAP data filesystem used",
            "Share of each shard's data filesystem no longer usable by the engine (recording rule used by the storage alerts).",
            "percentunit", [('instance:olap_data_filesystem_used:ratio{cluster=~"$cluster", instance=~"$instance"}', "{{instance}}")])
    d.row("Kafka")
    d.panel("Kafka messages in",
            "Messages per second written to the Kafka brokers (JMX exporter, per-topic meters summed), per broker.",
            "short", [(rate("kafka_server_brokertopicmetrics_messagesin_total", sel='cluster=~"$cluster", job="kafka"'), "{{instance}}")])
    d.panel("Ingestion consumer-group lag",
            f"Messages the ingestion consumer group is behind the end of each topic (kafka_exporter); KafkaIngestionConsumerLag fires above {human('KafkaIngestionConsumerLag', form='count')} for {CFG['alerts']['KafkaIngestionConsumerLag']['for']}.",
            "short", [('sum by (consumergroup, topic) (kafka_consumergroup_lag{cluster=~"$cluster", job="kafka-exporter", consumergroup=~"ingestion-group-.+"})', "{{consumergroup}} {{topic}}")])
    d.panel("Kafka under-replicated and offline partitions",
            "Partitions whose replicas are not all in sync (per broker), and partitions without a leader (cluster); both should be 0.",
            "short", [('sum by (cluster, instance) (kafka_server_replicamanager_underreplicatedpartitions{cluster=~"$cluster", job="kafka"})', "under-replicated {{instance}}"),
                      ('sum(kafka_controller_kafkacontroller_offlinepartitionscount{cluster=~"$cluster", job="kafka"}) or vector(0)', "offline")])
    d.panel("Kafka active controllers and ISR shrinks",
            "Brokers acting as controller (must be exactly 1), and in-sync replica set shrinks per second.",
            "short", [('sum(kafka_controller_kafkacontroller_activecontrollercount{cluster=~"$cluster", job="kafka"})', "active controllers"),
                      (rate("kafka_server_replicamanager_isrshrinks_total", by="cluster, instance", sel='cluster=~"$cluster", job="kafka"'), "ISR shrinks {{instance}}")])
    return d


def tx_detail():
    d = Dashboard("db-tx-engine", "Database / TX engine detail",
                  "One or more TX engines in detail: transactions, latency, connections, cache, replication, clock, resources.",
                  "tx_exporter_build_info", ["tx"])
    d.row("Transactions")
    d.panel("Transaction rate",
            "Transactions per second per engine, committed and rolled back.",
            "ops", [(rate("tx_engine_transactions_committed_total"), "committed {{instance}}"),
                    (rate("tx_engine_transactions_rolled_back_total"), "rolled back {{instance}}")])
    d.panel("Rollback ratio (5m)",
            f"Share of transactions rolled back over 5m (recording rule; HighTransactionErrorRatio fires above {human('HighTransactionErrorRatio', form='percent')}).",
            "percentunit", [('instance:tx_engine_transaction_rollback:ratio_rate5m{cluster=~"$cluster", job=~"$job", instance=~"$instance"}', "{{instance}}")])
    d.panel("Transaction latency",
            "Transaction duration quantiles per engine from the histogram; exemplars link to the traces of slow transactions.",
            "s", latency("tx_engine_transaction_duration_seconds"), exemplar=True)
    d.panel("Query latency",
            "Query duration quantiles per engine from the histogram, with exemplars.",
            "s", latency("tx_engine_query_duration_seconds", qs=(0.5, 0.99)), exemplar=True)
    d.row("Connections and cache")
    d.panel("Connections",
            "Client connections per engine: executing work (active) and open but idle.",
            "short", [(f"tx_engine_connections_active{{{SEL}}}", "active {{instance}}"),
                      (f"tx_engine_connections_idle{{{SEL}}}", "idle {{instance}}")])
    d.panel("Cache hit ratio",
            "Hits divided by lookups per engine; no value while the cache sees no lookups.",
            "percentunit", [(f"{rate('tx_engine_cache_hits_total')} / ({rate('tx_engine_cache_hits_total')} + {rate('tx_engine_cache_misses_total')} > 0)", "{{instance}}")])
    d.panel("Cache lookups",
            "Cache hits and misses per second per engine.",
            "ops", [(rate("tx_engine_cache_hits_total"), "hits {{instance}}"),
                    (rate("tx_engine_cache_misses_total"), "misses {{instance}}")])
    d.panel("Cache size",
            "Current size of the engine cache.",
            "bytes", [(f"tx_engine_cache_size_bytes{{{SEL}}}", "{{instance}}")])
    d.row("Replication")
    d.panel("Replication lag",
            f"Age of the oldest change event not yet replicated; HighReplicationLag fires above {human('HighReplicationLag')}.",
            "s", [(f"tx_engine_replication_lag_seconds{{{SEL}}}", "{{instance}}")])
    d.panel("Replication queue",
            "Change events waiting to be sent to replication, and events sent per second.",
            "short", [(f"tx_engine_replication_queue_depth{{{SEL}}}", "queued {{instance}}"),
                      (rate("tx_engine_replication_events_sent_total"), "sent/s {{instance}}")])
    d.row("Clock")
    d.panel("Clock uncertainty and offset",
            "Uncertainty bound of the engine clock and its offset from the clock master.",
            "s", [(f"tx_engine_clock_uncertainty_seconds{{{SEL}}}", "uncertainty {{instance}}"),
                  (f"tx_engine_clock_offset_seconds{{{SEL}}}", "offset {{instance}}")])
    d.panel("Missed clock heartbeats",
            f"Clock master heartbeats missed per interval; ClockSyncLost fires above {human('ClockSyncLost', form=None)} in 5m.",
            "short", [(rate("tx_engine_clock_heartbeats_missed_total", fn="increase"), "{{instance}}")])
    engine_process(d, "tx")
    return d


def ingestion():
    d = Dashboard("db-ingestion", "Database / Ingestion",
                  "Ingestion engines: change events, merge queue, conflicts, deduplication, pushes to OLAP, lag per source.",
                  "ingestion_exporter_build_info", ["ingestion"])
    d.row("Events")
    d.panel("Change events",
            "Change events received, processed and failed per second per ingestion engine.",
            "ops", [(rate("ingestion_events_received_total"), "received {{instance}}"),
                    (rate("ingestion_events_processed_total"), "processed {{instance}}"),
                    (rate("ingestion_events_failed_total"), "failed {{instance}}")])
    d.panel("Event processing latency",
            "Time to process one change event, quantiles from the histogram, with exemplars.",
            "s", latency("ingestion_event_processing_duration_seconds"), exemplar=True)
    d.panel("Failure ratio (5m)",
            f"Failed share of received events over 5m (recording rule; HighIngestionFailureRatio fires above {human('HighIngestionFailureRatio', form='percent')}).",
            "percentunit", [('instance:ingestion_event_failure:ratio_rate5m{cluster=~"$cluster", job=~"$job", instance=~"$instance"}', "{{instance}}")])
    d.panel("Validation failures",
            "Change events rejected by validation per second.",
            "ops", [(rate("ingestion_validation_failures_total"), "{{instance}}")])
    d.row("Merge")
    d.panel("Queues",
            f"Events waiting in the merge queue and batches waiting to be pushed to OLAP; MergeQueueBackup fires above {human('MergeQueueBackup', form='count')}.",
            "short", [(f"ingestion_merge_queue_depth{{{SEL}}}", "merge {{instance}}"),
                      (f"ingestion_olap_push_queue_depth{{{SEL}}}", "OLAP push {{instance}}")])
    d.panel("Conflict ratio (5m)",
            f"Conflicts detected per received event over 5m (recording rule; HighConflictRate fires above {human('HighConflictRate', form='percent')}).",
            "percentunit", [('instance:ingestion_conflict:ratio_rate5m{cluster=~"$cluster", job=~"$job", instance=~"$instance"}', "{{instance}}")])
    d.panel("Conflicts",
            "Write conflicts detected and resolved per second.",
            "ops", [(rate("ingestion_conflicts_detected_total"), "detected {{instance}}"),
                    (rate("ingestion_conflicts_resolved_total"), "resolved {{instance}}")])
    d.panel("Deduplication",
            "Duplicate change events skipped per second per ingestion engine.",
            "ops", [(rate("ingestion_duplicates_skipped_total"), "skipped/s {{instance}}")])
    d.row("OLAP push")
    d.panel("OLAP batches pushed",
            "Batches pushed to the OLAP shards per second.",
            "ops", [(rate("ingestion_olap_batches_pushed_total"), "{{instance}}")])
    d.panel("OLAP push latency",
            "Time to push one batch to OLAP, quantiles from the histogram, with exemplars.",
            "s", latency("ingestion_olap_push_duration_seconds", qs=(0.5, 0.99)), exemplar=True)
    d.panel("OLAP push lag",
            f"Age of the oldest change not yet pushed to OLAP; OLAPPushLagHigh fires above {human('OLAPPushLagHigh')}.",
            "s", [(f"ingestion_olap_push_lag_seconds{{{SEL}}}", "{{instance}}")])
    d.row("Sources")
    d.panel("Lag by source TX engine",
            f"Replication lag per TX engine (server_id) as seen by each ingestion engine; ClusterReplicationLagHigh fires above {human('ClusterReplicationLagHigh')}.",
            "s", [(f"ingestion_lag_by_source_seconds{{{SEL}}}", "{{instance}} server_id {{server_id}}")])
    d.panel("Events by source TX engine",
            "Change events received per second from each TX engine.",
            "ops", [(rate("ingestion_events_by_source_total", by="server_id"), "server_id {{server_id}}")], stack=True)
    engine_process(d, "ingestion")
    return d


def olap():
    d = Dashboard("db-olap", "Database / OLAP shards",
                  "OLAP shards: queries, latency, storage, partitions, I/O, compaction and cache.",
                  "olap_exporter_build_info", ["olap"])
    d.row("Queries")
    d.panel("Queries",
            "Queries executed and failed per second per shard.",
            "ops", [(rate("olap_queries_total"), "queries {{instance}}"),
                    (rate("olap_queries_failed_total"), "failed {{instance}}")])
    d.panel("Query latency",
            "Query duration quantiles per shard; 60s is the largest bucket, so a value of 60s means at least 60s. Exemplars link to traces.",
            "s", latency("olap_query_duration_seconds"), exemplar=True)
    d.panel("Mean query time",
            "Mean query duration per shard, from the histogram's sum and count (the seed's \"SQL query performance\" view); no value without queries.",
            "s", [(f"{rate('olap_query_duration_seconds_sum')} / ({rate('olap_query_duration_seconds_count')} > 0)", "{{instance}}")])
    d.panel("Query failure ratio (5m)",
            f"Failed share of queries over 5m (recording rule; HighOLAPQueryFailureRatio fires above {human('HighOLAPQueryFailureRatio', form='percent')}).",
            "percentunit", [('instance:olap_query_failure:ratio_rate5m{cluster=~"$cluster", job=~"$job", instance=~"$instance"}', "{{instance}}")])
    d.panel("Optimizer pruning",
            "Partitions and columns skipped by the query optimizer per second.",
            "ops", [(rate("olap_partitions_pruned_total"), "partitions {{instance}}"),
                    (rate("olap_columns_pruned_total"), "columns {{instance}}")])
    d.row("Storage")
    d.panel("Data filesystem used",
            "Share of the data filesystem the engine can no longer use (recording rule; storage alerts at 85% and 95%).",
            "percentunit", [('instance:olap_data_filesystem_used:ratio{cluster=~"$cluster", job=~"$job", instance=~"$instance"}', "{{instance}}")])
    d.panel("Data filesystem space",
            "Available bytes of the data filesystem and bytes used by the data directory.",
            "bytes", [(f"olap_data_filesystem_avail_bytes{{{SEL}}}", "available {{instance}}"),
                      (f"olap_data_dir_used_bytes{{{SEL}}}", "data dir {{instance}}")])
    d.panel("Stored bytes",
            "Bytes stored per shard before and after compression.",
            "bytes", [(f"olap_total_bytes_uncompressed{{{SEL}}}", "uncompressed {{instance}}"),
                      (f"olap_total_bytes_compressed{{{SEL}}}", "compressed {{instance}}")])
    d.panel("Compression ratio",
            "Uncompressed divided by compressed bytes per shard.",
            "none", [(f"olap_compression_ratio{{{SEL}}}", "{{instance}}")])
    d.panel("Rows",
            "Rows stored per shard.",
            "short", [(f"olap_total_rows{{{SEL}}}", "{{instance}}")])
    d.panel("Partitions",
            "Partitions per shard: all, active and cold.",
            "short", [(f"olap_partitions{{{SEL}}}", "all {{instance}}"),
                      (f"olap_partitions_active{{{SEL}}}", "active {{instance}}"),
                      (f"olap_partitions_cold{{{SEL}}}", "cold {{instance}}")])
    d.panel("Storage I/O",
            "Bytes read from and written to storage per second.",
            "Bps", [(rate("olap_bytes_read_total"), "read {{instance}}"),
                    (rate("olap_bytes_written_total"), "written {{instance}}")])
    d.row("Compaction")
    d.panel("Time since last compaction",
            f"Seconds since the latest compaction completed; CompactionLag fires above {human('CompactionLag')} when none is running.",
            "s", [(f"time() - (olap_last_compaction_timestamp_seconds{{{SEL}}} > 0)", "{{instance}}")])
    d.panel("Compactions",
            "Compactions running, and completed per second.",
            "short", [(f"olap_compactions_running{{{SEL}}}", "running {{instance}}"),
                      (rate("olap_compactions_completed_total"), "completed/s {{instance}}")])
    d.panel("Compaction duration",
            "Compaction duration quantiles from the histogram, with exemplars.",
            "s", latency("olap_compaction_duration_seconds", qs=(0.5, 0.99)), exemplar=True)
    d.panel("Bytes compacted",
            "Bytes rewritten by compactions per second.",
            "Bps", [(rate("olap_bytes_compacted_total"), "{{instance}}")])
    d.row("Cache")
    d.panel("Result cache hit ratio",
            "Query result cache hits divided by lookups; no value without lookups.",
            "percentunit", [(f"{rate('olap_cache_hits_total')} / ({rate('olap_cache_hits_total')} + {rate('olap_cache_misses_total')} > 0)", "{{instance}}")])
    d.panel("Result cache size",
            "Size of the query result cache.",
            "bytes", [(f"olap_cache_size_bytes{{{SEL}}}", "{{instance}}")])
    engine_process(d, "olap")
    return d


def clock():
    d = Dashboard("db-clock", "Database / Clock",
                  "Clock masters and time sources: uncertainty, jitter, drift, per-source offsets, heartbeats; TX engine clocks.",
                  "clock_exporter_build_info", ["clock"])
    d.row("Clock masters")
    d.panel("Uncertainty",
            "Bound on the host clock error of each clock master (chrony root distance, else the kernel's maximum error).",
            "s", [(f"clock_master_uncertainty_seconds{{{SEL}}}", "{{instance}}")])
    d.panel("Jitter",
            "Clock jitter of each clock master (chrony RMS offset, else the kernel's estimated error).",
            "s", [(f"clock_master_jitter_seconds{{{SEL}}}", "{{instance}}")])
    d.panel("Frequency drift",
            "Frequency error of the host clock in parts per million.",
            "short", [(f"clock_master_drift_ppm{{{SEL}}}", "{{instance}}")])
    d.panel("Clock versus Prometheus",
            "Host clock read at scrape time minus the scrape timestamp: a rough cross-check of the host clock against Prometheus' clock.",
            "s", [(f"clock_master_current_timestamp_seconds{{{SEL}}} - timestamp(clock_master_current_timestamp_seconds{{{SEL}}})", "{{instance}}")])
    d.row("Time sources")
    d.panel("Offset per source",
            "Offset of the host clock from each time source (NTP, PTP, chrony).",
            "s", [(f"clock_master_source_offset_seconds{{{SEL}}}", "{{instance}} {{source}}")])
    d.panel("Source quality",
            "Quality score of each time source, 0 (unusable) to 1 (selected, reachable, low error).",
            "percentunit", [(f"clock_master_source_quality{{{SEL}}}", "{{instance}} {{source}}")])
    d.panel("Source reachable",
            "1 when the exporter could read the time source at the last probe, 0 when not (ClockSourceUnreachable after 5m).",
            "short", [(f"clock_exporter_source_up{{{SEL}}}", "{{instance}} {{source}}")])
    d.panel("Source probe errors",
            "Failed queries per interval to each time source, by reason (timeout, connect, bad reply, ...).",
            "short", [(rate("clock_exporter_source_errors_total", by="cluster, instance, source, reason", fn="increase"), "{{instance}} {{source}} {{reason}}")])
    d.panel("chrony stratum",
            "Stratum of chronyd on each clock master (1 = directly attached reference, 16 = unsynchronised).",
            "short", [(f"clock_master_chrony_stratum{{{SEL}}}", "{{instance}}")])
    d.panel("chrony root delay and dispersion",
            "chronyd's root delay and root dispersion: together they bound the error to the reference.",
            "s", [(f"clock_master_chrony_root_delay_seconds{{{SEL}}}", "delay {{instance}}"),
                  (f"clock_master_chrony_root_dispersion_seconds{{{SEL}}}", "dispersion {{instance}}")])
    d.row("Heartbeats")
    d.panel("Heartbeats sent",
            "Heartbeats sent per second by each clock master; ClockMasterHeartbeatsStopped fires when it drops to 0.",
            "ops", [(rate("clock_master_heartbeats_sent_total"), "{{instance}}")])
    d.panel("Clients connected",
            "Clients connected to each clock master.",
            "short", [(f"clock_master_clients_connected{{{SEL}}}", "{{instance}}")])
    d.panel("TX engine clock uncertainty",
            f"Clock uncertainty reported by the TX engines (all TX jobs); ClockSyncDegraded fires above {human('ClockSyncDegraded')}.",
            "s", [('tx_engine_clock_uncertainty_seconds{cluster=~"$cluster", job="tx-engines"}', "{{instance}}")])
    d.panel("TX engine clock offset",
            "Offset of each TX engine clock from the clock master; ClockSkewGrowing watches its trend.",
            "s", [('tx_engine_clock_offset_seconds{cluster=~"$cluster", job="tx-engines"}', "{{instance}}")])
    engine_process(d, "clock")
    return d


def exporter_health():
    d = Dashboard("db-exporter-health", "Database / Exporter self-health",
                  "The four sidecar exporters themselves: scrapes, engine detection, ingest, StatsD, log following, resources.",
                  "up", ["exporters"], job_regex=f"/^({TIER_JOBS})$/")
    d.row("Scrapes")
    d.panel("Target up",
            f"1 when Prometheus scraped the sidecar successfully; ExporterTargetDown fires after {CFG['alerts']['ExporterTargetDown']['for']} at 0.",
            "short", [(f"up{{{SEL}}}", "{{instance}}")])
    d.panel("Engine up",
            "engine_up as reported by each sidecar: 1 when its engine process is found (and its address answers).",
            "short", [(each_tier("{p}engine_up{{" + SEL + "}}"), "{{instance}}")])
    d.panel("Scrape duration",
            "How long Prometheus took to scrape each sidecar.",
            "s", [(f"scrape_duration_seconds{{{SEL}}}", "{{instance}}")])
    d.panel("/metrics render time",
            "p99 of the time a sidecar spends rendering one /metrics response, from its own histogram.",
            "s", [("histogram_quantile(0.99, sum by (cluster, instance, le) (" +
                   each_tier("rate({p}scrape_duration_seconds_bucket{{" + SEL + "}}[$__rate_interval])") +
                   "))", "p99 {{instance}}")], exemplar=True)
    d.row("Ingest")
    d.panel("Samples accepted",
            "StatsD samples and event-log effects applied per second, by source.",
            "ops", [("sum by (cluster, instance, source) (" + each_tier("rate({p}ingest_samples_accepted_total{{" + SEL + "}}[$__rate_interval])") + ")",
                     "{{instance}} {{source}}")])
    d.panel("Inputs rejected",
            "Samples, lines and effects rejected per second, by source and reason; ExporterIngestRejections fires when they persist.",
            "ops", [("sum by (cluster, instance, source, reason) (" + each_tier("rate({p}ingest_rejected_total{{" + SEL + "}}[$__rate_interval])") + ")",
                     "{{instance}} {{source}} {{reason}}")])
    d.panel("Tags dropped and series expired",
            "DogStatsD tags dropped (not declared labels) and labelled series expired by TTL, per second.",
            "ops", [("sum by (cluster, instance) (" + each_tier("rate({p}ingest_tags_dropped_total{{" + SEL + "}}[$__rate_interval])") + ")", "tags dropped {{instance}}"),
                    ("sum by (cluster, instance) (" + each_tier("rate({p}ingest_series_expired_total{{" + SEL + "}}[$__rate_interval])") + ")", "series expired {{instance}}")])
    d.row("StatsD")
    d.panel("StatsD datagrams and lines",
            "Datagrams and lines received per second, by listener.",
            "ops", [("sum by (cluster, instance, listener) (" + each_tier("rate({p}statsd_datagrams_total{{" + SEL + "}}[$__rate_interval])") + ")", "datagrams {{instance}} {{listener}}"),
                    ("sum by (cluster, instance, listener) (" + each_tier("rate({p}statsd_lines_total{{" + SEL + "}}[$__rate_interval])") + ")", "lines {{instance}} {{listener}}")])
    d.panel("StatsD bytes",
            "StatsD payload bytes received per second, by listener.",
            "Bps", [("sum by (cluster, instance, listener) (" + each_tier("rate({p}statsd_received_bytes_total{{" + SEL + "}}[$__rate_interval])") + ")", "{{instance}} {{listener}}")])
    d.panel("UDP datagrams dropped",
            "Datagrams the kernel dropped because the sidecar's UDP receive queue was full; ExporterStatsdUdpDrops fires on sustained drops.",
            "short", [("sum by (cluster, instance) (" + each_tier("increase({p}statsd_udp_dropped_total{{" + SEL + "}}[$__rate_interval])") + ")", "{{instance}}")])
    d.row("Event logs")
    d.panel("Log follower behind",
            f"Bytes between the follower's position and the end of each event-log file; ExporterLogFollowerBehind fires above {human('ExporterLogFollowerBehind', form='bytes')}.",
            "bytes", [(each_tier("{p}log_behind_bytes{{" + SEL + "}}"), "{{instance}} {{path}}")])
    d.panel("Log lines read",
            "Event-log lines read per second, by file.",
            "ops", [("sum by (cluster, instance, path) (" + each_tier("rate({p}log_lines_read_total{{" + SEL + "}}[$__rate_interval])") + ")", "{{instance}} {{path}}")])
    d.panel("Log bytes read",
            "Event-log bytes read per second, by file.",
            "Bps", [("sum by (cluster, instance, path) (" + each_tier("rate({p}log_read_bytes_total{{" + SEL + "}}[$__rate_interval])") + ")", "{{instance}} {{path}}")])
    d.panel("Files followed, rotations and truncations",
            "Event-log files followed, and rotations and truncations seen per interval.",
            "short", [(each_tier("{p}log_files_followed{{" + SEL + "}}"), "files {{instance}}"),
                      ("sum by (cluster, instance) (" + each_tier("increase({p}log_rotations_total{{" + SEL + "}}[$__rate_interval])") + ")", "rotations {{instance}}"),
                      ("sum by (cluster, instance) (" + each_tier("increase({p}log_truncations_total{{" + SEL + "}}[$__rate_interval])") + ")", "truncations {{instance}}")])
    d.panel("Open files and follower errors",
            "Event-log files held open (at most ingest.log_max_open_files) and waiting for an open slot, and the follower's errors per interval by reason: scan (a glob could not be expanded), open, read, positions_write (the follower pauses until the positions file can be written).",
            "short", [(each_tier("{p}log_files_open{{" + SEL + "}}"), "open {{instance}}"),
                      (each_tier("{p}log_files_waiting{{" + SEL + "}}"), "waiting {{instance}}"),
                      ("sum by (cluster, instance, reason) (" + each_tier("increase({p}log_follower_errors_total{{" + SEL + "}}[$__rate_interval])") + ")", "{{reason}} {{instance}}")])
    d.row("Process")
    d.panel("Sidecar CPU",
            "CPU seconds per second used by each sidecar process; 100% is one full core.",
            "percentunit", [(rate("process_cpu_seconds_total"), "{{instance}}")])
    d.panel("Sidecar memory",
            "Resident memory of each sidecar process.",
            "bytes", [(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")])
    d.panel("Open file descriptors",
            "File descriptors open in each sidecar process.",
            "short", [(f"process_open_fds{{{SEL}}}", "{{instance}}")])
    d.panel("Sidecar uptime",
            "Time since each sidecar process started; a reset means a restart.",
            "s", [(f"time() - process_start_time_seconds{{{SEL}}}", "{{instance}}")])
    return d


def slos():
    window = CFG["sloWindow"]
    days = {"d": "days", "w": "weeks", "h": "hours"}[window[-1]]
    span = f"{window[:-1]} {days}"
    fast, slow = CFG["sloBurns"]["fast"], CFG["sloBurns"]["slow"]
    d = Dashboard("db-slos", "Database / SLOs",
                  f"Service level objectives per cluster (alerts/slo.rules.yml): error budget left over {span} "
                  "and how fast each window burns it.",
                  "slo:sli_error:ratio_rate5m", ["slo"], per_cluster=True)
    budget = "on (slo) group_left max by (slo) (1 - slo:objective:ratio)"
    d.row("Error budget")
    d.panel(f"Error budget left ({span})",
            f"Share of the {window[:-1]}-{days[:-1]} error budget not spent yet, per SLO: 1 minus the {window[:-1]}-{days[:-1]} error ratio (the mean "
            "of the 5m ratios, recorded) divided by the budget (1 - objective). Below 0 the objective is missed.",
            "percentunit", [(f"1 - (slo:sli_error:ratio_rate{window}{{{CLUSTER}}} / {budget})",
                             "{{slo}} {{cluster}}")], width=24)
    d.row("Burn rate")
    windows = [(fast[0]["short"], f"short window of the pages ({fast[0]['factor']:g}x)")]
    windows += [(b["long"], f"pages above {b['factor']:g}x") for b in fast]
    windows += [(b["long"], f"tickets above {b['factor']:g}x") for b in slow]
    for w, alerts in windows:
        d.panel(f"Burn rate over {w}",
                f"Error ratio over {w} divided by the budget: 1 spends the budget in exactly {span}; "
                f"{alerts}.",
                "short", [(f"slo:sli_error:ratio_rate{w}{{{CLUSTER}}} / {budget}", "{{slo}} {{cluster}}")])
    d.panel("Error ratio (5m)",
            "Share of requests that failed the SLO over 5m: rolled-back or slow transactions, failed OLAP queries.",
            "percentunit", [(f"slo:sli_error:ratio_rate5m{{{CLUSTER}}}", "{{slo}} {{cluster}}")])
    return d


# The tiers with a hand-made dashboard; every other tier of the schemas gets tier_dashboard().
HAND_MADE = {"tx": "tx_detail", "ingestion": "ingestion", "olap": "olap", "clock": "clock"}


def tier_dashboard(t):
    """A tier without a hand-made dashboard: its sidecars, then one panel per metric its engine
    sends (from its schema), then the engine process. A new tier is shown without an edit here."""
    name, selfp = t["name"], t["self_prefix"]
    d = Dashboard(f"db-{name}", f"Database / {name} engines",
                  f"The {name} tier from its schema: its sidecars, every metric its engines send, the engine process.",
                  f"{selfp}build_info", [name])
    d.row("Sidecars")
    d.panel("Engine up", "1 when the sidecar finds its engine process (and its address answers).",
            "short", [(f"{selfp}engine_up{{{SEL}}}", "{{instance}}")])
    d.panel("Samples accepted", "StatsD samples and event-log effects applied per second, by source.",
            "ops", [(rate(f"{selfp}ingest_samples_accepted_total", by="cluster, instance, source"), "{{instance}} {{source}}")])
    d.row("Engine metrics")
    for m in t["metrics"]:
        labels = " ".join("{{" + label + "}}" for label in m.get("labels", []))
        legend = "{{instance}}" + (" " + labels if labels else "")
        by = ", ".join([BY_INSTANCE] + m.get("labels", []))
        unit = {"seconds": "s", "bytes": "bytes", "ratio": "percentunit"}.get(m.get("unit", ""), "short")
        if m["type"] == "counter":
            d.panel(m["name"], m["help"] + " (per second).", "Bps" if unit == "bytes" else "ops",
                    [(rate(m["name"], by=by), legend)])
        elif m["type"] == "histogram":
            d.panel(m["name"], m["help"] + " (quantiles).", unit, latency(m["name"]), exemplar=True)
        else:
            d.panel(m["name"], m["help"] + ".", unit, [(f"{m['name']}{{{SEL}}}", legend)])
    engine_process(d, name)
    return d


def main():
    """Writes the dashboards of one config (mixin/render.py runs this, and checks the result)."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="the mixin config as JSON (mixin/config.jsonnet)")
    ap.add_argument("--out", required=True, help="the directory to write the dashboards to")
    a = ap.parse_args()
    with open(a.config) as f:
        configure(json.load(f))
    builders = [cluster_overview, tx_detail, ingestion, olap, clock, exporter_health, slos]
    builders += [lambda t=t: tier_dashboard(t) for t in TIER_INFOS if t["name"] not in HAND_MADE]
    for build in builders:
        d = build()
        path = os.path.join(a.out, d.uid.removeprefix("db-") + ".json")
        with open(path, "w") as f:
            f.write(json.dumps(d.render(), indent=2) + "\n")
        print(path, sum(1 for k, _ in d.panels if k == "panel"), "panels")


if __name__ == "__main__":
    main()
