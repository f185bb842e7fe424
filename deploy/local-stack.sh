#!/usr/bin/env bash
# The whole system live on one machine, without Docker: the four exporters, engine-sim playing
# the engines of a small cluster (two TX engines, one ingestion engine, one OLAP shard, one
# clock master), a real Prometheus with the shipped alerts/ rules and a real Alertmanager with
# the shipped routing (notifications stripped). Everything listens on 127.0.0.1 only.
#
#   deploy/local-stack.sh                   # builds (cargo build --bins), then steady state
#   deploy/local-stack.sh --fast --scenario conflict-storm
#
# Options:
#   --scenario NAME   engine-sim scenario (default steady; `--list` shows them)
#   --list            list the scenarios and exit
#   --duration DUR    stop after this long (default 1h)
#   --fault-after DUR when the scenario's fault starts (default: the scenario's own after_s)
#   --fast            one minute of the rules is one second: every `for:` and range window
#                     divided by 60, scrape and evaluation every second (alerts in seconds)
#   --port-base N     ports N..N+50 on 127.0.0.1 (default 19100)
#   --keep            keep the work directory (configs, logs, data) after stopping
#   --release         build and run the release profile
# Environment: PROMETHEUS, ALERTMANAGER (binaries); BIN_DIR (use these exporters as they are,
# no build). Without BIN_DIR the binaries are built first with cargo, in the target directory
# cargo itself uses (CARGO_TARGET_DIR and .cargo/config honoured), so a stale build never runs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCENARIO=steady
DURATION=1h
FAULT_AFTER=""
FAST=0
BASE=19100
KEEP=0
LIST=0

while [ $# -gt 0 ]; do
  case "$1" in
    --scenario) SCENARIO=$2; shift 2 ;;
    --scenario=*) SCENARIO=${1#*=}; shift ;;
    --duration) DURATION=$2; shift 2 ;;
    --duration=*) DURATION=${1#*=}; shift ;;
    --fault-after) FAULT_AFTER=$2; shift 2 ;;
    --fault-after=*) FAULT_AFTER=${1#*=}; shift ;;
    --port-base) BASE=$2; shift 2 ;;
    --port-base=*) BASE=${1#*=}; shift ;;
    --fast) FAST=1; shift ;;
    --keep) KEEP=1; shift ;;
    --list) LIST=1; shift ;;
    --release) RELEASE=1; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "local-stack: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

BINS="tx-exporter ingestion-exporter olap-exporter clock-exporter engine-sim"
complete() { for b in $BINS; do [ -x "$1/$b" ] || return 1; done; }
if [ -z "${BIN_DIR:-}" ]; then
  PROFILE_FLAG=""; PROFILE_DIR=debug
  if [ "${RELEASE:-0}" = 1 ]; then PROFILE_FLAG="--release"; PROFILE_DIR=release; fi
  ( cd "$ROOT" && cargo build --quiet --bins $PROFILE_FLAG ) || exit 1
  TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])') || exit 1
  BIN_DIR=$TARGET_DIR/$PROFILE_DIR
fi
if ! complete "$BIN_DIR"; then
  echo "local-stack: binaries missing in $BIN_DIR" >&2
  exit 1
fi
if [ "$LIST" = 1 ]; then exec "$BIN_DIR/engine-sim" --list; fi

PROMETHEUS=${PROMETHEUS:-$(command -v prometheus || true)}
ALERTMANAGER=${ALERTMANAGER:-$(command -v prometheus-alertmanager || command -v alertmanager || true)}
if [ -z "$PROMETHEUS" ] || [ -z "$ALERTMANAGER" ]; then
  echo "local-stack: needs prometheus and prometheus-alertmanager (apt-get install prometheus prometheus-alertmanager)" >&2
  exit 1
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
P_PROM=$BASE; P_AM=$((BASE + 1))
P_WEB=($((BASE + 10)) $((BASE + 11)) $((BASE + 12)) $((BASE + 13)) $((BASE + 14)))
P_STATSD=($((BASE + 20)) $((BASE + 21)) $((BASE + 22)) $((BASE + 23)) $((BASE + 24)))
P_ENGINE=($((BASE + 30)) $((BASE + 31)) $((BASE + 32)) $((BASE + 33)) $((BASE + 34)))
P_NTP=$((BASE + 40)); P_KAFKA=$((BASE + 41))
for p in $P_PROM $P_AM "${P_WEB[@]}" "${P_ENGINE[@]}" $P_KAFKA; do
  if port_busy "$p"; then
    echo "local-stack: 127.0.0.1:$p is in use; pick other ports with --port-base" >&2
    exit 1
  fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/db-local-stack.XXXXXX")
PIDS=()
cleanup() {
  # A second Ctrl-C (or the terminal's group-wide signal) must not cut the cleanup short.
  trap '' INT TERM
  trap - EXIT
  echo; echo "local-stack: stopping"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then echo "local-stack: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The OLAP data directory: a 64 MiB tmpfs in a user+mount namespace when the kernel allows it
# (so storage-nearly-full can really fill it; the exporter reads it through /proc/PID/root),
# else a plain directory (engine-sim then refuses to fill the big disk and says so).
mkdir -p "$WORK/olap-data"
DATA_DIR=$WORK/olap-data
NS=""
if unshare --user --map-root-user --mount true 2>/dev/null; then NS="--user --map-root-user --mount"
elif [ "$(id -u)" = 0 ] && unshare --mount true 2>/dev/null; then NS="--mount"
fi
if [ -n "$NS" ]; then
  mkfifo "$WORK/holder.ready"
  # shellcheck disable=SC2086 # NS is a list of flags
  unshare $NS sh -c \
    'mount -t tmpfs -o size=64m tmpfs "$1" && echo ready > "$2" && exec sleep 1000000' \
    sh "$WORK/olap-data" "$WORK/holder.ready" &
  HOLDER=$!; PIDS+=("$HOLDER")
  if [ "$(timeout 10 cat "$WORK/holder.ready")" = ready ]; then
    DATA_DIR=/proc/$HOLDER/root$WORK/olap-data
  fi
fi

# Rules: the shipped files, or in --fast mode the same files with every duration / 60.
mkdir -p "$WORK/rules"
if [ "$FAST" = 1 ]; then
  INTERVAL=1s
  for f in "$ROOT"/alerts/*.rules.yml; do
    awk '
      function scale(d,   n, u, s) {
        n = d + 0; u = substr(d, length(n "") + 1)
        s = (u == "h") ? n * 3600 : (u == "m") ? n * 60 : n
        s = int(s / 60); if (s < 1) s = 1
        return s "s"
      }
      /^ *for: / { match($0, /for: /); print substr($0, 1, RSTART + 4) scale(substr($0, RSTART + 5)); next }
      {
        out = ""; line = $0
        while (match(line, /\[[0-9]+[smh]\]/)) {
          out = out substr(line, 1, RSTART) scale(substr(line, RSTART + 1, RLENGTH - 2)) "]"
          line = substr(line, RSTART + RLENGTH)
        }
        print out line
      }' "$f" > "$WORK/rules/$(basename "$f")"
  done
else
  INTERVAL=5s
  cp "$ROOT"/alerts/*.rules.yml "$WORK/rules/"
fi

# Alertmanager: the shipped routing and inhibition; receivers keep their names only.
awk '
  /^receivers:/ { inr = 1; print; next }
  inr && /^  - name:/ { print; next }
  inr && /^[^ #]/ { inr = 0 }
  !inr { print }' "$ROOT/deploy/alertmanager/alertmanager.yml" > "$WORK/alertmanager.yml"

cat > "$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: $INTERVAL
  evaluation_interval: $INTERVAL
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:$P_AM']
rule_files:
  - rules/*.rules.yml
scrape_configs:
  - job_name: tx-engines
    static_configs:
      - targets: ['127.0.0.1:${P_WEB[0]}', '127.0.0.1:${P_WEB[1]}']
  - job_name: ingestion-engines
    static_configs:
      - targets: ['127.0.0.1:${P_WEB[2]}']
  - job_name: olap-shards
    static_configs:
      - targets: ['127.0.0.1:${P_WEB[3]}']
  - job_name: clock-masters
    static_configs:
      - targets: ['127.0.0.1:${P_WEB[4]}']
  # The node's Kafka broker and kafka_exporter, both played by engine-sim.
  - job_name: kafka
    static_configs:
      - targets: ['127.0.0.1:$P_KAFKA']
  - job_name: kafka-exporter
    metrics_path: /kafka-exporter/metrics
    static_configs:
      - targets: ['127.0.0.1:$P_KAFKA']
EOF
if command -v promtool >/dev/null; then
  promtool check config "$WORK/prometheus.yml" >"$WORK/promtool.log" 2>&1 \
    || { cat "$WORK/promtool.log" >&2; exit 1; }
fi

start() { # name command...
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}
exporter() { # name binary index extra-args...
  local name=$1 bin=$2 i=$3; shift 3
  start "$name" "$BIN_DIR/$bin" --web.listen-address="127.0.0.1:${P_WEB[$i]}" \
    --ingest.statsd-udp="127.0.0.1:${P_STATSD[$i]}" --engine.address="127.0.0.1:${P_ENGINE[$i]}" "$@"
}

# Exporters first (an event log that appears later is read from its start), then the
# simulator, then clock-exporter (its first SNTP query must find the clock master serving).
exporter tx-exporter-1 tx-exporter 0 --ingest.log-path="$WORK/tx-1.log"
exporter tx-exporter-2 tx-exporter 1 --ingest.log-path="$WORK/tx-2.log"
exporter ingestion-exporter ingestion-exporter 2 --ingest.log-path="$WORK/ingestion.log"
exporter olap-exporter olap-exporter 3 --ingest.log-path="$WORK/olap.log" --olap.data-dir="$DATA_DIR"
sleep 1
SIM_ARGS=(--scenario="$SCENARIO" --duration="$DURATION" --host=local-node
  --tx="statsd=127.0.0.1:${P_STATSD[0]},log=$WORK/tx-1.log,engine=127.0.0.1:${P_ENGINE[0]}"
  --tx="statsd=127.0.0.1:${P_STATSD[1]},log=$WORK/tx-2.log,engine=127.0.0.1:${P_ENGINE[1]}"
  --ingestion="statsd=127.0.0.1:${P_STATSD[2]},log=$WORK/ingestion.log,engine=127.0.0.1:${P_ENGINE[2]}"
  --olap="statsd=127.0.0.1:${P_STATSD[3]},log=$WORK/olap.log,engine=127.0.0.1:${P_ENGINE[3]}"
  --clock="statsd=127.0.0.1:${P_STATSD[4]},engine=127.0.0.1:${P_ENGINE[4]}"
  --olap.data-dir="$DATA_DIR" --olap.max-fill=64MiB --clock.ntp-listen="127.0.0.1:$P_NTP"
  --kafka.listen="127.0.0.1:$P_KAFKA")
[ -n "$FAULT_AFTER" ] && SIM_ARGS+=(--fault-after="$FAULT_AFTER")
start engine-sim "$BIN_DIR/engine-sim" "${SIM_ARGS[@]}"
SIM_PID=${PIDS[-1]}
sleep 0.5
exporter clock-exporter clock-exporter 4 --clock.chrony-address= --clock.ntp-server="127.0.0.1:$P_NTP"
# The sidecars look for their engine every 5 s; start alerting once they have.
sleep 6
start alertmanager "$ALERTMANAGER" --config.file="$WORK/alertmanager.yml" \
  --storage.path="$WORK/am-data" --web.listen-address="127.0.0.1:$P_AM" --cluster.listen-address=
start prometheus "$PROMETHEUS" --config.file="$WORK/prometheus.yml" \
  --storage.tsdb.path="$WORK/prom-data" --web.listen-address="127.0.0.1:$P_PROM" \
  --enable-feature=exemplar-storage
sleep 2
for pid in "${PIDS[@]}"; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "local-stack: a component exited early; logs in $WORK:" >&2
    tail -n 5 "$WORK"/*.log >&2
    KEEP=1
    exit 1
  fi
done

cat <<EOF

Local stack up: scenario $SCENARIO$( [ "$FAST" = 1 ] && echo ", --fast (1 rule minute = 1 second)" ), stops after $DURATION.
  Prometheus     http://127.0.0.1:$P_PROM/alerts   (rules, targets, graph)
  Alertmanager   http://127.0.0.1:$P_AM/#/alerts
  tx-exporter    http://127.0.0.1:${P_WEB[0]}/metrics  http://127.0.0.1:${P_WEB[1]}/metrics
  ingestion      http://127.0.0.1:${P_WEB[2]}/metrics
  olap           http://127.0.0.1:${P_WEB[3]}/metrics   (data dir $DATA_DIR)
  clock          http://127.0.0.1:${P_WEB[4]}/metrics
  Kafka (sim)    http://127.0.0.1:$P_KAFKA/metrics  http://127.0.0.1:$P_KAFKA/kafka-exporter/metrics
  Grafana        not started: point one at http://127.0.0.1:$P_PROM and import dashboards/*.json
  work dir       $WORK (configs, event logs, component logs)
Ctrl-C stops everything.
EOF
wait "$SIM_PID" || true
echo "local-stack: engine-sim finished ($DURATION)"
