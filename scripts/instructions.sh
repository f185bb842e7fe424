#!/bin/sh
# Instructions per line on the two ingest hot paths (StatsD line, JSON event line), counted by
# valgrind on the in-process load generator: the difference between N and 2N lines divided by
# N, so start-up cost cancels out. Counts repeat to the instruction where timings on a shared
# machine do not; compare two trees by running this in each.
#   scripts/instructions.sh [N]        (needs valgrind)
set -eu
cd "$(dirname "$0")/.."
n=${1:-100000}
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed" >&2; exit 1; }
cargo build -q --release -p exporter-core --example ingest_load
bin=${CARGO_TARGET_DIR:-target}/release/examples/ingest_load
count() { # path lines -> instructions of the whole run
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$bin" count "$1" "$2" 2>&1 \
        | sed -n 's/.*I *refs: *//p' | tr -d ,
}
for path in events statsd statsd-plain; do
    a=$(count "$path" "$n")
    b=$(count "$path" $((2 * n)))
    echo "$path: $(( (b - a) / n )) instructions per line"
done
