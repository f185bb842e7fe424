// SLO burn-rate alerts, the SRE workbook's multiwindow, multi-burn-rate way (as Sloth and Pyrra
// generate them), beside the seed's threshold alerts, which stay. Everything comes from
// _config.slos, _config.sloWindow and _config.sloBurns.
//
// slo:sli_error:ratio_rate<W> records the error ratio of each SLO over every window W an alert
// reads; slo:objective:ratio records the objective, for the SLO dashboard's error budget. The
// long window of each pair says the burn is real, the short one makes the alert resolve soon
// after the burn stops.
local lib = import '../lib/render.libsonnet';
{
  local c = $._config,
  local windows = std.uniq(std.sort(
    [b.long for b in c.sloBurns.fast + c.sloBurns.slow] + [b.short for b in c.sloBurns.fast + c.sloBurns.slow],
    function(w) lib.windowSeconds(w)
  ), function(w) lib.windowSeconds(w)),

  // The error ratio of one SLO over window w, per cluster.
  local errorRatio(slo, w) =
    local v = c.names { w: w };
    if std.objectHas(slo, 'histogram') then |||
      1 - (
        sum by (%(c)s) (rate(%(h)s_bucket{le="%(le)s"}[%(w)s]))
          / on (%(c)s)
        (sum by (%(c)s) (rate(%(h)s_count[%(w)s])) > 0)
      )
    ||| % (v { h: slo.histogram, le: lib.num(slo.latencyThreshold) })
    else |||
      sum by (%(c)s) (rate(%(e)s[%(w)s]))
        / on (%(c)s)
      (sum by (%(c)s) (rate(%(t)s[%(w)s])) > 0)
    ||| % (v { e: slo.errors, t: slo.total }),

  local recordings(slo) =
    [{ record: 'slo:objective:ratio', labels: { slo: slo.name }, expr: 'vector(%s)' % lib.num(slo.objective) }]
    + [{ record: 'slo:sli_error:ratio_rate' + w, labels: { slo: slo.name }, expr: errorRatio(slo, w) } for w in windows]
    + [{
      record: 'slo:sli_error:ratio_rate' + c.sloWindow,
      labels: { slo: slo.name },
      // The mean of the 5m ratios over the SLO window (Sloth's way), not a window-long rate.
      expr: 'avg_over_time(slo:sli_error:ratio_rate%s{slo="%s"}[%s])' % [windows[0], slo.name, c.sloWindow],
    }],

  local burnAlert(slo, speed) =
    local budget = lib.num(1 - slo.objective);
    local sel = '{slo="%s"}' % slo.name;
    local leg(b) = |||
      (
        slo:sli_error:ratio_rate%(long)s%(sel)s > (%(f)s * %(budget)s)
          and on (%%(c)s)
        slo:sli_error:ratio_rate%(short)s%(sel)s > (%(f)s * %(budget)s)
      )
    ||| % { long: b.long, short: b.short, sel: sel, f: lib.num(b.factor), budget: budget };
    local burns = c.sloBurns[speed];
    local knobs = slo { latencyThreshold: std.get(slo, 'latencyThreshold', 0) };
    local what = slo.what % lib.vars(c, knobs);
    local errorsWere = slo.errorsWere % lib.vars(c, knobs);
    {
      alert: slo.alertName + (if speed == 'fast' then 'BudgetBurnFast' else 'BudgetBurnSlow'),
      component: slo.component,
      labels: { slo: slo.name },
      expr: std.join('  or\n', [leg(b) for b in burns]),
      summary: slo.alertName + ' SLO error budget burning ' + (if speed == 'fast' then 'fast' else 'steadily'),
      description: '%%(InCluster)s{{ $value | humanizePercentage }} %s over the long window (objective: %s of %s, a budget of %s): at this rate the %s budget is gone %s.' % [
        lib.literal(errorsWere),
        lib.literal(lib.percent(slo.objective)),
        lib.literal(what),
        lib.literal(lib.percent(1 - slo.objective)),
        lib.windowHuman(c.sloWindow),
        lib.exhaustion(c.sloWindow, [b.factor for b in burns]),
      ],
    },

  ruleFiles+:: {
    'slo.rules.yml': {
      header: 'SLO burn-rate alerts (multiwindow, multi-burn-rate) and the recording rules they and dashboards/slos.json read.',
      groups: [
        { name: 'slo-recording', rules: std.flattenArrays([recordings(slo) for slo in c.slos]) },
        lib.group(c, 'slo-alerts', std.flattenArrays([[burnAlert(slo, 'fast'), burnAlert(slo, 'slow')] for slo in c.slos])),
      ],
    },
  },
}
