// Builders shared by the rule files: they turn a rule written against the config's names
// (%(job_tx)s, %(cji)s, %(threshold)s...) into the rule Prometheus loads.
{
  // A number as PromQL and people write it: 0.7, not 0.69999999999999996.
  num(x):: std.format('%.15g', x),

  // Human forms of a threshold for summaries and descriptions.
  duration(seconds)::
    if seconds >= 3600 && seconds % 3600 == 0 then '%dh' % (seconds / 3600)
    else if seconds >= 120 && seconds % 60 == 0 then '%dm' % (seconds / 60)
    else if seconds >= 1 then $.num(seconds) + 's'
    else $.num(seconds * 1000) + 'ms',
  percent(ratio):: $.num(ratio * 100) + '%',
  count(n)::
    if n >= 1e6 && n % 1e6 == 0 then $.num(n / 1e6) + 'M'
    else if n >= 1e3 && n % 1e3 == 0 then $.num(n / 1e3) + 'k'
    else $.num(n),
  bytes(n)::
    if n >= 1073741824 && n % 1073741824 == 0 then $.num(n / 1073741824) + 'GiB'
    else if n >= 1048576 && n % 1048576 == 0 then $.num(n / 1048576) + 'MiB'
    else if n >= 1024 && n % 1024 == 0 then $.num(n / 1024) + 'KiB'
    else $.num(n) + 'B',

  // A Prometheus duration ('5m', '1h', '30d') in seconds, and as an adjective ('30-day').
  windowSeconds(w)::
    local unit = w[std.length(w) - 1];
    local n = std.parseInt(w[0:std.length(w) - 1]);
    n * { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[unit],
  windowHuman(w)::
    local unit = w[std.length(w) - 1];
    w[0:std.length(w) - 1] + '-' + { s: 'second', m: 'minute', h: 'hour', d: 'day', w: 'week' }[unit],
  // How long a budget of `window` lasts at the slowest burn of `factors` that fires.
  exhaustion(window, factors)::
    'in %s days or less' % std.format('%.2g', $.windowSeconds(window) / std.foldl(std.min, factors, 1e9) / 86400),

  // Text put into a string that is formatted again: its % signs stay literal.
  literal(s):: std.strReplace(s, '%', '%%'),

  // The format variables of one alert: the config's label and job names, and each numeric knob
  // of the alert as it goes into PromQL (name) and as people read it (name_duration,
  // name_percent, name_count, name_bytes).
  vars(c, knobs)::
    c.names + {
      [k]: $.num(knobs[k])
      for k in std.objectFields(knobs)
      if std.isNumber(knobs[k])
    } + std.foldl(function(acc, k) acc {
      [k + '_duration']: $.duration(knobs[k]),
      [k + '_percent']: $.percent(knobs[k]),
      [k + '_count']: $.count(knobs[k]),
      [k + '_bytes']: $.bytes(knobs[k]),
    }, [k for k in std.objectFields(knobs) if std.isNumber(knobs[k])], {}),

  // An alert: `for`, severity and thresholds come from c.alerts[name], so a user changes them
  // in the config and never in the rule.
  alert(c, r)::
    local knobs = c.alerts[r.alert];
    local v = $.vars(c, knobs);
    {
      alert: r.alert,
      expr: r.expr % v,
      labels: { severity: knobs.severity, component: r.component } + std.get(r, 'labels', {}),
      annotations: {
        summary: r.summary % v,
        description: r.description % v,
        runbook_url: c.runbookBase + r.alert + '.md',
      },
    } + (if knobs['for'] != null then { 'for': knobs['for'] } else {}),

  record(c, name, expr, labels={}):: { record: name, expr: expr % c.names } + (if labels != {} then { labels: labels } else {}),

  group(c, name, rules):: {
    name: name,
    rules: [if std.objectHas(r, 'alert') then $.alert(c, r) else r for r in rules],
  },
}
