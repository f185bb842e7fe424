#!/usr/bin/env python3
"""Ingest benchmark, this project beside its peers, on the same input in one run.

Events: N seed-format JSON lines (the tx tier's rules) appended to a file that tx-exporter
follows, and the same file read by mtail (Debian `mtail`) with an equivalent program.
StatsD: D datagrams of 10 counter lines sent over loopback UDP to tx-exporter, to collectd's
statsd plugin (Debian `collectd-core`) and to Etsy statsd (npm `statsd`).

For each: lines per CPU-second of the receiver (utime+stime from /proc, or from `time` for
mtail's one-shot run), the fraction delivered (kernel drops read from /proc/net/udp for the
receiver's socket) and the ratio to this project. Missing peers are installed (apt-get, npm)
or skipped with a note.

Usage: scripts/bench-ingest.py [--events N] [--datagrams D] [--skip-build] [--steady-runs R]
"""
import argparse
import atexit
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
TICK = os.sysconf("SC_CLK_TCK")


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    """utime+stime of a process and its waited-for children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK


def cpu_ns_threads(pid):
    """CPU of a process in nanoseconds, summed over its live threads (schedstat): finer than
    the 10 ms ticks of /proc/PID/stat, which matter at 1% of a core. Falls back to ticks."""
    try:
        total = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        return cpu_seconds(pid)


def cpu_ns_by_thread_name(pid):
    """CPU seconds of a process's live threads, summed per thread name (the exporter names its
    sources' threads: statsd-udp, log-follower; the rest are tokio's and main)."""
    by_name = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        by_name[name] = by_name.get(name, 0) + ns / 1e9
    return by_name


def tree_cpu(pid):
    """CPU of a process and all its live descendants (npm/node wrappers)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            total += cpu_seconds(p)
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def udp_socket_stats(port):
    """(rx_queue bytes, drops) of the UDP socket bound to 127.0.0.1:port."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1] == want:
                return int(cols[4].split(":")[1], 16), int(cols[-1])
    return None


def wait_udp_bound(port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if udp_socket_stats(port):
            return True
        time.sleep(0.05)
    return False


def scrape_value(url, series):
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(series + " ") or line.startswith(series + "{"):
            if line.startswith(series + " ") or series.endswith("}"):
                return float(line.rsplit(" ", 1)[1])
    return None


def sum_values(url, prefix):
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(prefix))


def event_line(i):
    """The seed format, as crates/core/examples/ingest_load.rs writes it."""
    k = i % 4
    if k in (0, 1):
        return ('{"timestamp":"2026-11-21T10:00:00Z","level":"info","component":"txn",'
                '"event":"transaction_committed","duration_ms":%d,'
                '"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}\n' % (i % 50))
    if k == 2:
        return ('{"timestamp":"2026-11-21T10:00:00Z","level":"info","event":"query_executed",'
                '"duration_ms":%d}\n' % (i % 7))
    return '{"timestamp":"2026-11-21T10:00:00Z","event":"replication_events_sent","count":3}\n'


MTAIL_PROGRAM = r"""
counter tx_engine_transactions_total
counter tx_engine_transactions_committed_total
counter tx_engine_replication_events_sent_total
histogram tx_engine_transaction_duration_seconds buckets 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0
histogram tx_engine_query_duration_seconds buckets 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0

/"event":"transaction_committed".*"duration_ms":(?P<d>[0-9.]+)/ {
  tx_engine_transactions_total++
  tx_engine_transactions_committed_total++
  tx_engine_transaction_duration_seconds = $d / 1000.0
}
/"event":"query_executed".*"duration_ms":(?P<d>[0-9.]+)/ {
  tx_engine_query_duration_seconds = $d / 1000.0
}
/"event":"replication_events_sent".*"count":(?P<c>[0-9]+)/ {
  tx_engine_replication_events_sent_total += $c
}
"""


def mtail_programs(work):
    """A directory holding the mtail program equivalent to the tx rules."""
    progs = os.path.join(work, "mtail")
    os.makedirs(progs, exist_ok=True)
    with open(os.path.join(progs, "tx.mtail"), "w") as f:
        f.write(MTAIL_PROGRAM)
    return progs


def ensure_apt(binary, package):
    if shutil.which(binary):
        return True
    print(f"   installing Debian {package} ...", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        subprocess.run(sudo + ["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return shutil.which(binary) is not None or os.path.exists(binary)


def ensure_etsy_statsd():
    home = os.path.join(TARGET, "bench-peers")
    stats_js = os.path.join(home, "node_modules", "statsd", "stats.js")
    if os.path.exists(stats_js):
        return stats_js
    if not shutil.which("npm"):
        return None
    print("   installing npm statsd ...", flush=True)
    os.makedirs(home, exist_ok=True)
    r = subprocess.run(["npm", "install", "--prefix", home, "--no-audit", "--no-fund", "statsd@0.9"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return stats_js if r.returncode == 0 and os.path.exists(stats_js) else None


# Every process started here, stopped at exit even when a step fails.
STARTED = []
atexit.register(lambda: [p.kill() for p in STARTED if p.poll() is None])


def start_exporter(binary, work, log, *extra):
    web = f"127.0.0.1:{free_port()}"
    udp = free_port(socket.SOCK_DGRAM)
    proc = subprocess.Popen([
        binary, f"--web.listen-address={web}", f"--ingest.statsd-udp=127.0.0.1:{udp}",
        f"--ingest.log-path={log}", f"--ingest.positions-file={work}/positions.json",
        "--log.level=warn", *extra], stdout=subprocess.DEVNULL, stderr=open(f"{work}/exporter.log", "w"))
    STARTED.append(proc)
    url = f"http://{web}/metrics"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://{web}/health", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    wait_udp_bound(udp)
    return proc, url, udp


def bench_events(binary, n, work):
    src = os.path.join(work, "events.src")
    with open(src, "w") as f:
        for i in range(n):
            f.write(event_line(i))
    size = os.path.getsize(src)
    results = {}

    log = os.path.join(work, "events.log")
    open(log, "w").close()
    proc, url, _ = start_exporter(binary, work, log)
    time.sleep(0.5)  # first scan: the empty file is followed from its end
    cpu0 = cpu_ns_threads(proc.pid)
    t0 = time.time()
    with open(src, "rb") as s, open(log, "ab") as d:
        shutil.copyfileobj(s, d, 1 << 20)
    series = f'tx_exporter_log_lines_read_total{{path="{log}"}}'
    while time.time() - t0 < 300:
        if (scrape_value(url, series) or 0) >= n:
            break
        time.sleep(0.05)
    cpu = cpu_ns_threads(proc.pid) - cpu0
    committed = scrape_value(url, "tx_engine_transactions_committed_total")
    rejected = sum_values(url, "tx_exporter_ingest_rejected_total{")
    proc.terminate()
    proc.wait()
    expect = sum(1 for i in range(n) if i % 4 in (0, 1))
    results["this project (tx-exporter)"] = (n / cpu, committed == expect and rejected == 0,
                                             f"committed {committed:.0f}/{expect}, rejected {rejected:.0f}")

    if ensure_apt("mtail", "mtail"):
        progs = mtail_programs(work)
        out = subprocess.run(
            ["/usr/bin/time", "-f", "%U %S", "mtail", "--one_shot", "--one_shot_format=prometheus",
             "--progs", progs, "--logs", src, "--logtostderr"],
            capture_output=True, text=True)
        cpu = sum(float(x) for x in out.stderr.strip().splitlines()[-1].split())
        m = re.search(r"^tx_engine_transactions_committed_total\{[^}]*\} (\S+)", out.stdout, re.M) \
            or re.search(r"^tx_engine_transactions_committed_total (\S+)", out.stdout, re.M)
        got = float(m.group(1)) if m else -1
        results["mtail (Debian)"] = (n / cpu, got == expect, f"committed {got:.0f}/{expect}")
    else:
        print("   mtail unavailable: skipped")
    return size, results


def flood(port, datagrams, lines_per):
    body = "".join(f"tx_engine_cache_hits:1|c\n" for _ in range(lines_per)).encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    for _ in range(datagrams):
        s.sendto(body, ("127.0.0.1", port))
    s.close()


def measure_udp(pid, port, datagrams, lines_per, cpu_of=cpu_seconds):
    stats = udp_socket_stats(port)
    if stats is None:
        sys.exit(f"no UDP socket bound on 127.0.0.1:{port}")
    _, drops0 = stats
    cpu0 = cpu_of(pid)
    flood(port, datagrams, lines_per)
    end = time.time() + 30
    while time.time() < end:  # until the receiver has drained its socket
        queued, _ = udp_socket_stats(port)
        if queued == 0:
            break
        time.sleep(0.02)
    time.sleep(0.3)
    cpu = cpu_of(pid) - cpu0
    _, drops = udp_socket_stats(port)
    lines = datagrams * lines_per
    delivered = 1 - (drops - drops0) / datagrams
    return lines * delivered / cpu, delivered


def bench_statsd(binary, datagrams, work):
    lines_per = 10
    results = {}
    log = os.path.join(work, "none.log")
    open(log, "w").close()
    proc, url, port = start_exporter(binary, work, log)
    rate, delivered = measure_udp(proc.pid, port, datagrams, lines_per, cpu_ns_threads)
    counted = scrape_value(url, "tx_engine_cache_hits_total")
    proc.terminate()
    proc.wait()
    exact = counted == round(datagrams * lines_per * delivered)
    results["this project (tx-exporter)"] = (rate, delivered, f"counted {counted:.0f}, exact={exact}")

    if ensure_apt("/usr/sbin/collectd", "collectd-core"):
        port = free_port(socket.SOCK_DGRAM)
        conf = os.path.join(work, "collectd.conf")
        with open(conf, "w") as f:
            f.write(f'Interval 10\nLoadPlugin statsd\n<Plugin statsd>\n  Host "127.0.0.1"\n'
                    f'  Port "{port}"\n</Plugin>\n')
        c = subprocess.Popen(["/usr/sbin/collectd", "-f", "-C", conf],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        STARTED.append(c)
        if wait_udp_bound(port):
            time.sleep(0.3)
            rate, delivered = measure_udp(c.pid, port, datagrams, lines_per, cpu_ns_threads)
            results["collectd statsd plugin (Debian)"] = (rate, delivered, "")
        c.terminate()
        c.wait()
    else:
        print("   collectd unavailable: skipped")

    stats_js = ensure_etsy_statsd()
    if stats_js and shutil.which("node"):
        port = free_port(socket.SOCK_DGRAM)
        conf = os.path.join(work, "statsd.js")
        with open(conf, "w") as f:
            f.write(json.dumps({"port": port, "address": "127.0.0.1", "backends": [],
                                "flushInterval": 600000}))
        n = subprocess.Popen(["node", stats_js, conf], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        STARTED.append(n)
        if wait_udp_bound(port):
            time.sleep(0.3)
            rate, delivered = measure_udp(n.pid, port, datagrams, lines_per, tree_cpu)
            results["Etsy statsd (npm)"] = (rate, delivered, "")
        n.terminate()
        n.wait()
    else:
        print("   Etsy statsd unavailable: skipped")
    return results


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_steady(binary, work, seconds=10, events_per_tick=1000, datagrams_per_tick=100):
    """Sidecar CPU at a steady 10k events/s plus 10k StatsD lines/s (by default), and RSS idle
    and after. Both arrive every 100 ms, as a DogStatsD client flushes its buffer."""
    log = os.path.join(work, "steady.log")
    open(log, "w").close()
    proc, url, port = start_exporter(binary, work, log)
    time.sleep(1.0)
    idle_rss = rss_mib(proc.pid)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    body = "".join("tx_engine_cache_hits:1|c\n" for _ in range(10)).encode()
    cpu0, t0, i = cpu_ns_threads(proc.pid), time.time(), 0
    threads0 = cpu_ns_by_thread_name(proc.pid)
    with open(log, "a") as f:
        for tick in range(seconds * 10):  # every 100 ms
            if events_per_tick:
                f.write("".join(event_line(i + k) for k in range(events_per_tick)))
                f.flush()
                i += events_per_tick
            for _ in range(datagrams_per_tick):
                s.sendto(body, ("127.0.0.1", port))
            time.sleep(max(0.0, t0 + (tick + 1) * 0.1 - time.time()))
    wall = time.time() - t0
    cpu = cpu_ns_threads(proc.pid) - cpu0
    threads = {name: (ns - threads0.get(name, 0)) / wall
               for name, ns in cpu_ns_by_thread_name(proc.pid).items()}
    busy_rss = rss_mib(proc.pid)
    proc.terminate()
    proc.wait()
    return cpu / wall, threads, idle_rss, busy_rss


SCRAPE_SERIES = 10_000


OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def scrape_times(url, n=50, accept=None):
    """Wall time of n scrapes in ms, after three to warm up; the body's size and samples."""
    headers = {"Accept": accept} if accept else {}
    get = lambda: urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10).read()
    body = b""
    for _ in range(3):
        body = get()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        get()
        times.append((time.perf_counter() - t) * 1000)
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return sorted(times), len(body), samples


def bench_scrape(binary, work):
    """A 10k-series scrape: the ingestion exporter with 10k gauge series pushed over StatsD,
    beside Debian's Pushgateway holding the same 10k series; p50 and p90 of 50 scrapes each,
    timed by the same client over loopback."""
    results = {}
    work = tempfile.mkdtemp(dir=work)  # its own positions file and log
    log = os.path.join(work, "scrape.log")
    open(log, "w").close()
    proc, url, udp = start_exporter(binary, work, log, f"--ingest.series-limit={2 * SCRAPE_SERIES}")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lines = [f"ingestion_lag_by_source_seconds:1.5|g|#server_id:s{i}\n" for i in range(SCRAPE_SERIES)]
    for i in range(0, len(lines), 25):
        s.sendto("".join(lines[i:i + 25]).encode(), ("127.0.0.1", udp))
        if i % 2500 == 0:
            time.sleep(0.01)  # let the listener keep up: every series must arrive
    accepted = "ingestion_exporter_ingest_samples_accepted_total{source=\"statsd\"}"
    for _ in range(200):
        if (scrape_value(url, accepted) or 0) >= SCRAPE_SERIES:
            break
        time.sleep(0.05)
    results["this project (ingestion-exporter)"] = scrape_times(url)
    # What Prometheus asks for: OpenMetrics, written without the 0.0.4 conversion.
    results["  the same, as OpenMetrics"] = scrape_times(url, accept=OPENMETRICS)
    proc.terminate()
    proc.wait()

    pushgateway = "/usr/bin/prometheus-pushgateway"
    if ensure_apt(pushgateway, "prometheus-pushgateway"):
        web = f"127.0.0.1:{free_port()}"
        pg = subprocess.Popen([pushgateway, f"--web.listen-address={web}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        STARTED.append(pg)
        body = "# TYPE ingestion_lag_by_source_seconds gauge\n" + "".join(
            f'ingestion_lag_by_source_seconds{{server_id="s{i}"}} 1.5\n' for i in range(SCRAPE_SERIES))
        for _ in range(100):
            try:
                req = urllib.request.Request(f"http://{web}/metrics/job/bench", data=body.encode(),
                                             method="PUT")
                urllib.request.urlopen(req, timeout=10)
                break
            except OSError:
                time.sleep(0.05)
        results["Pushgateway (Debian)"] = scrape_times(f"http://{web}/metrics")
        pg.terminate()
        pg.wait()
    else:
        print("   Pushgateway unavailable: skipped")
    return results


def steady_sweep(binary):
    """Each source alone at 1x, 4x and 16x a base rate: the thread's CPU, and a line fitted
    through it, so what a wake-up costs (the fixed part) and what a line costs are apart."""
    cases = [("log-follower", "events/s", lambda n: dict(events_per_tick=n, datagrams_per_tick=0), 250),
             ("statsd-udp", "StatsD lines/s", lambda n: dict(events_per_tick=0, datagrams_per_tick=n), 25)]
    for thread, unit, load, base in cases:
        points = []
        for n in (base, 4 * base, 16 * base):
            with tempfile.TemporaryDirectory() as work:
                _, threads, _, _ = bench_steady(binary, work, seconds=8, **load(n))
            rate = n * 10 * (1 if thread == "log-follower" else 10)
            points.append((rate, threads.get(thread, 0.0)))
            print(f"  {thread:13s} at {rate:>7,} {unit}: {threads.get(thread, 0.0):.3%} of a core", flush=True)
        mx = sum(x for x, _ in points) / 3
        my = sum(y for _, y in points) / 3
        slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
        print(f"  {thread}: {slope * 1e9:.0f} ns per line, {(my - slope * mx):.3%} of a core "
              f"fixed (10 bursts a second)\n")


def process_cost(pid, seconds):
    """Idle CPU share over `seconds`, RSS (MiB) and open descriptors of a process."""
    c0 = cpu_seconds(pid)
    time.sleep(seconds)
    share = (cpu_seconds(pid) - c0) / seconds
    return share, rss_mib(pid), len(os.listdir(f"/proc/{pid}/fd"))


def bench_many_files(binary, n, work, seconds=20):
    """N one-line files matched by one glob: read each once, then idle. Descriptors, RSS and
    idle CPU beside mtail following the same glob (mtail keeps every file open)."""
    logs = os.path.join(work, "many")
    os.makedirs(logs, exist_ok=True)
    for i in range(n):
        with open(os.path.join(logs, f"{i:06}.log"), "w") as f:
            f.write(event_line(0))
    glob = os.path.join(logs, "*.log")
    results = {}
    proc, url, _ = start_exporter(binary, work, glob, "--ingest.read-from-start")
    t0 = time.time()
    while time.time() - t0 < 300:
        if (scrape_value(url, "tx_engine_transactions_committed_total") or 0) >= n:
            break
        time.sleep(0.2)
    caught_up = time.time() - t0
    time.sleep(2)
    share, rss, fds = process_cost(proc.pid, seconds)
    got = scrape_value(url, "tx_engine_transactions_committed_total")
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    samples = sum(1 for line in body.splitlines() if not line.startswith("#"))
    proc.terminate()
    proc.wait()
    results["this project (tx-exporter)"] = (share, rss, fds,
        f"read in {caught_up:.1f} s, committed {got:.0f}/{n}, {samples:,} samples in /metrics")
    if ensure_apt("mtail", "mtail"):
        progs = mtail_programs(work)
        port = free_port()
        m = subprocess.Popen(["mtail", "--progs", progs, "--logs", glob, "--address", "127.0.0.1",
                              "--port", str(port), "--logtostderr"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        STARTED.append(m)
        time.sleep(10)  # mtail reads files present at start from their end: let it settle
        share, rss, fds = process_cost(m.pid, seconds)
        m.kill()
        m.wait()
        results["mtail (Debian)"] = (share, rss, fds, "polls every file every 250 ms")
    else:
        print("   mtail unavailable: skipped")
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--datagrams", type=int, default=100_000)
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--steady-runs", type=int, default=3,
                    help="runs of the steady load (10 s each); the median is reported")
    ap.add_argument("--many-files", type=int, metavar="N",
                    help="only this: N one-line files under one glob, descriptors, RSS and idle CPU "
                         "beside mtail")
    ap.add_argument("--steady-sweep", action="store_true",
                    help="only the steady load, per source at three rates: fixed and per-line CPU")
    args = ap.parse_args()
    if args.steady_runs < 1:
        ap.error("--steady-runs must be at least 1")
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "tx-exporter", "-p", "ingestion-exporter"],
                       cwd=ROOT, check=True)
    binary = os.path.join(TARGET, "release", "tx-exporter")
    if args.steady_sweep:
        return steady_sweep(binary)
    if args.many_files:
        with tempfile.TemporaryDirectory() as work:
            res = bench_many_files(binary, args.many_files, work)
        ours = res["this project (tx-exporter)"]
        print(f"\n{args.many_files:,} one-line files under one glob, then idle for 20 s "
              f"(ratio = peer / this project)")
        for name, (share, rss, fds, note) in res.items():
            ratio = "" if name.startswith("this") else \
                f"CPU {share / max(ours[0], 1e-9):5.1f}x, RSS {rss / ours[1]:4.1f}x, fds {fds / ours[2]:5.1f}x"
            print(f"  {name:30s} idle CPU {share:6.2%}  RSS {rss:6.1f} MiB  {fds:>6,} fds  {ratio}  {note}")
        return None
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            rmem = f"net.core.rmem_max {int(f.read()) / 1024:.0f} KiB"
    except (OSError, ValueError):
        rmem = "net.core.rmem_max unknown"
    # The UDP receive queue a listener gets is twice this (capped request), so floods'
    # delivered fractions depend on it.
    print(f"== {os.cpu_count()} cores, {os.uname().release}, {rmem}")
    with tempfile.TemporaryDirectory() as work:
        size, ev = bench_events(binary, args.events, work)
        ours = ev["this project (tx-exporter)"][0]
        print(f"\nJSON events: {args.events} lines ({size / 1e6:.0f} MB), lines per CPU-second")
        for name, (rate, exact, note) in ev.items():
            print(f"  {name:34s} {rate:>12,.0f}   {ours / rate:6.1f}x   exact={exact} {note}")
        st = bench_statsd(binary, args.datagrams, work)
        ours = st["this project (tx-exporter)"][0]
        print(f"\nStatsD: {args.datagrams} datagrams x 10 counter lines, delivered lines per CPU-second")
        for name, (rate, delivered, note) in st.items():
            print(f"  {name:34s} {rate:>12,.0f}   {ours / rate:6.1f}x   delivered {delivered:6.1%} {note}")
        # One run's share moves by a third with the machine's state: the median of several
        # runs, each on a fresh exporter, with their range.
        runs = []
        for _ in range(args.steady_runs):
            with tempfile.TemporaryDirectory(dir=work) as run_dir:
                runs.append(bench_steady(binary, run_dir))
        runs.sort(key=lambda r: r[0])
        share, threads, idle_rss, busy_rss = runs[len(runs) // 2]
        split = ", ".join(f"{name} {cpu:.2%}" for name, cpu in
                          sorted(threads.items(), key=lambda t: -t[1]) if cpu >= 0.00005)
        print(f"\nSteady 10k events/s + 10k StatsD lines/s, median of {len(runs)} runs of 10 s: "
              f"sidecar CPU {share:.2%} of a core (runs {runs[0][0]:.2%}–{runs[-1][0]:.2%}; "
              f"median run: {split}); RSS {idle_rss:.1f} MiB idle, {busy_rss:.1f} MiB after")
        ingestion = os.path.join(TARGET, "release", "ingestion-exporter")
        if os.path.exists(ingestion):
            sc = bench_scrape(ingestion, work)
            ours = sc["this project (ingestion-exporter)"][0]
            print(f"\nScrape of {SCRAPE_SERIES:,} series, 50 scrapes, 0.0.4 text unless said (wall time over "
                  f"loopback, one client; ratio = peer / this project)")
            for name, (times, size, samples) in sc.items():
                p50, p90 = times[len(times) // 2], times[len(times) * 9 // 10]
                ratio = "" if name.startswith(" ") else f"{p50 / ours[len(ours) // 2]:4.1f}x"
                print(f"  {name:34s} p50 {p50:6.2f} ms  p90 {p90:6.2f} ms  {size / 1e3:5.0f} kB "
                      f"{samples:>7,} samples   {ratio}")
        else:
            print(f"\nScrape: {ingestion} not built: skipped")
    print("\n(ratio = this project / peer; figures vary between machines, ratios are what count)")


if __name__ == "__main__":
    main()
