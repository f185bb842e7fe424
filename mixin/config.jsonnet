// The config as JSON, for dashboards/generate.py: mixin/render.py runs it. `human` holds each
// alert's thresholds as the rule texts write them (threshold_duration, threshold_percent, ...),
// so panel descriptions say what the rules do.
local lib = import 'lib/render.libsonnet';
function(overrides={})
  local c = ((import 'mixin.libsonnet') + overrides)._config;
  c {
    names::: c.names,
    human: {
      [a]: {
        [k]: v
        for k in std.objectFields(lib.vars(c, c.alerts[a]))
        for v in [lib.vars(c, c.alerts[a])[k]]
        if !std.objectHas(c.names, k)
      }
      for a in std.objectFields(c.alerts)
    },
  }
