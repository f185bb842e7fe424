// The config as JSON, for dashboards/generate.py: mixin/render.py runs it.
function(overrides={})
  local c = ((import 'mixin.libsonnet') + overrides)._config;
  c { names: c.names }
