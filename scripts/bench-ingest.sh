#!/usr/bin/env bash
# Ingest benchmark on loopback through the real tx-exporter (release build): first beside its
# peers on the same input (scripts/bench-ingest.py: mtail, collectd, Etsy statsd, Pushgateway, with
# ratios), then a StatsD flood and the in-process parser figures.
# Usage: scripts/bench-ingest.sh [seconds-of-statsd] [events]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_STATSD="${1:-5}"
EVENTS="${2:-1000000}"

cargo build --release -q -p tx-exporter --bin tx-exporter -p ingestion-exporter --bin ingestion-exporter
cargo build --release -q -p exporter-core --example ingest_load
TARGET="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET/release/tx-exporter"
LOAD="$TARGET/release/examples/ingest_load"

dir="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
web="127.0.0.1:$(free_port)"
statsd="127.0.0.1:$(free_port)"
log="$dir/events.log"
: >"$log"

"$BIN" --web.listen-address="$web" --ingest.statsd-udp="$statsd" \
  --ingest.log-path="$log" --ingest.positions-file="$dir/positions.json" \
  --log.level=warn 2>"$dir/stderr.log" &
pid=$!
for _ in $(seq 100); do
  curl -fs "http://$web/health" >/dev/null 2>&1 && break
  sleep 0.1
done

python3 scripts/bench-ingest.py --skip-build --events "$EVENTS"

echo
echo "== flood and in-process figures"
"$LOAD" inproc
"$LOAD" --statsd="$statsd" --web="$web" --log="$log" --pid="$pid" \
  --seconds="$SECONDS_STATSD" --events="$EVENTS"
