// Rendered by mixin/render.py: the shipped dashboards (the default config), for
// grafanaDashboards. dashboards/generate.py builds them; a config of your own reaches
// them through `python3 mixin/render.py --config ... --out ...` (docs/mixin.md).
{
  'clock.json': import '../dashboards/clock.json',
  'cluster-overview.json': import '../dashboards/cluster-overview.json',
  'exporter-health.json': import '../dashboards/exporter-health.json',
  'ingestion.json': import '../dashboards/ingestion.json',
  'olap.json': import '../dashboards/olap.json',
  'slos.json': import '../dashboards/slos.json',
  'tx-engine.json': import '../dashboards/tx-engine.json',
}
