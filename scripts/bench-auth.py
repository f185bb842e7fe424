#!/usr/bin/env python3
"""Valid-scrape latency of an exporter with basic auth while 40 clients hammer it with a wrong
password (bcrypt cost 10), on 127.0.0.1 only, bounded in time. Prints p50/p99 and the target.

    python3 scripts/bench-auth.py [path/to/tx-exporter]   # default: target/release, else debug
"""
import base64, http.client, os, socket, subprocess, sys, tempfile, threading, time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = sys.argv[1] if len(sys.argv) > 1 else next(
    p for p in (os.path.join(root, "target", d, "tx-exporter") for d in ("release", "debug"))
    if os.path.exists(p))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def bcrypt_hash(password, cost=10):
    # Python's bcrypt module when present, else the exporter's own test dependency is not at
    # hand: use htpasswd (apache2-utils) if installed.
    try:
        import bcrypt
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
    except ImportError:
        out = subprocess.run(["htpasswd", "-nbBC", str(cost), "u", password], capture_output=True, text=True, check=True)
        return out.stdout.strip().split(":", 1)[1]

tmp = tempfile.mkdtemp(prefix="bench-auth-")
web = os.path.join(tmp, "web.yml")
with open(web, "w") as f:
    f.write(f"basic_auth_users:\n  scraper: '{bcrypt_hash('right')}'\n")
port, statsd = free_port(), free_port()
proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}", f"--ingest.statsd-udp=127.0.0.1:{statsd}",
                         f"--web.config.file={web}", "--log.level=error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def auth(user, pw):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.1).close(); break
    except OSError:
        time.sleep(0.05)

stop = time.monotonic() + 20
attempts = [0]
def attacker():
    while time.monotonic() < stop:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/metrics", headers=auth("scraper", "wrong")); c.getresponse().read(); c.close()
            attempts[0] += 1
        except OSError:
            pass
threads = [threading.Thread(target=attacker, daemon=True) for _ in range(40)]
for t in threads: t.start()
time.sleep(1)
lat = []
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
for _ in range(50):
    if time.monotonic() > stop - 1: break
    t0 = time.perf_counter(); c.request("GET", "/metrics", headers=auth("scraper", "right"))
    r = c.getresponse(); r.read(); assert r.status == 200, r.status
    lat.append(time.perf_counter() - t0); time.sleep(0.05)
stop = 0
for t in threads: t.join(timeout=15)
proc.terminate(); proc.wait(timeout=10)
lat.sort()
p50, p99 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99) - 1] * 1000
print(f"valid scrapes under 40 wrong-password clients: n={len(lat)} p50 {p50:.1f} ms p99 {p99:.1f} ms "
      f"({attempts[0]} refused attempts); target p50 < 100 ms: {'met' if p50 < 100 else 'NOT met'}")
