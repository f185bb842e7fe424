#!/usr/bin/env bash
# Points every runbook_url of the bundle at another base, e.g. your fork's docs/runbooks/:
#   alerts/set-runbook-base.sh https://git.example.org/ops/db/-/blob/main/docs/runbooks/
# The base lives in alerts/runbook-base; the rule files and their promtool tests follow it, and
# the bundle tests check that they do.
set -euo pipefail
cd "$(dirname "$0")"
new="${1:?usage: set-runbook-base.sh https://host/path/docs/runbooks/}"
case "$new" in
  https://*/) ;;
  *) echo "set-runbook-base: give an https:// URL ending in /" >&2; exit 2 ;;
esac
old="$(cat runbook-base)"
# '#' is the sed delimiter and '&' or '\' would be read by sed: a base never needs them.
case "$new" in *'#'* | *'&'* | *'\'*) echo "set-runbook-base: no '#', '&' or '\' in the URL" >&2; exit 2 ;; esac
old_re="$(printf '%s' "$old" | sed 's/[.[\*^$]/\\&/g')"
sed -i "s#${old_re}#${new}#g" ./*.rules.yml tests/*.test.yml
printf '%s\n' "$new" > runbook-base
echo "runbook_url base: $old -> $new"
