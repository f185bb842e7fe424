// `jsonnet -S -m <dir> mixin/render.jsonnet`: every rule file of the bundle, as the text
// Prometheus loads. mixin/render.py runs it (with your config: --config).
function(overrides={})
  local mixin = (import 'mixin.libsonnet') + overrides;
  {
    [name]:
      '# Rendered by mixin/render.py from mixin/ and its config: do not edit, change the config (docs/mixin.md).\n'
      + '# ' + mixin.ruleFiles[name].header + '\n'
      + std.manifestYamlDoc({ groups: mixin.ruleFiles[name].groups }, indent_array_in_object=true, quote_keys=false)
      + '\n'
    for name in std.objectFields(mixin.ruleFiles)
  }
