#!/usr/bin/env python3
"""Soak benchmark: does the node stay flat under steady load, and come back after it?

    python3 benches/load/soak.py                      # 3 rounds of 120 s load + 30 s idle
    python3 benches/load/soak.py --rounds 2 --seconds 20 --idle 10   # a short look

One edged node (target/release/edged) serves three workers at once: hello, a KV
read/write worker and a Durable Object counter over 10 objects. Each round drives
all three together with `wrk` (bounded in time and connections, loopback only),
then leaves the node idle. RSS (VmRSS) is read before any load, at the end of each
round's load and at the end of each idle pause. The node is never scraped for
metrics during the run, since scraping is what used to hide a leak.

Target: RSS after each idle pause within 10% of the first one, and within 10% of
the RSS under load in the first round at the end of every round.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Edged, rss_kib, wait_http, wrk, log  # noqa: E402

KV_WORKER = """
let n = 0;
export default {
  async fetch(request, env) {
    const key = `key-${n++ % 200}`;
    if (n % 4 === 0) await env.KV.put(key, `value ${n} `.padEnd(64, "x"));
    const v = await env.KV.get(key);
    return new Response(v ?? "none");
  },
};
"""


def mib(kib):
    return round((kib or 0) / 1024, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=120, help="load per round")
    ap.add_argument("--idle", type=int, default=30, help="idle pause after each round")
    ap.add_argument("--connections", type=int, default=64, help="in all, split over the three workers")
    args = ap.parse_args()

    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    with open(os.path.join(root, "benches", "load", "workers", "hello.js")) as f:
        hello = f.read()
    with open(os.path.join(root, "benches", "load", "workers", "do_counter.js")) as f:
        counter = f.read()

    workdir = tempfile.mkdtemp(prefix="edged-soak-")
    edged = Edged(workdir)
    try:
        edged.deploy("hello", hello)
        edged.deploy("kv", KV_WORKER, [{"type": "kv_namespace", "name": "KV", "namespace": "soak"}])
        edged.deploy("counter", counter, [{"type": "durable_object_namespace", "name": "COUNTER", "class_name": "Counter"}])
        targets = [
            ("hello", "/"),
            ("kv", "/"),
            ("counter", "/?objects=10"),
        ]
        for name, path in targets:
            wait_http(edged.url(path), f"{name}.workers.localhost")
            wrk(edged.url(path), f"{name}.workers.localhost", 2, 4, 1)  # warm-up
        time.sleep(5)
        pid = edged.proc.pid
        before = rss_kib(pid, "VmRSS")
        log(f"before load: {mib(before)} MiB")
        per = max(1, args.connections // len(targets))
        rows = []
        for r in range(1, args.rounds + 1):
            procs = []
            for name, path in targets:
                cmd = ["wrk", "-t1", f"-c{per}", f"-d{args.seconds}s", "-H", f"Host: {name}.workers.localhost", edged.url(path)]
                procs.append((name, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
            rps = {}
            for name, p in procs:
                out, _ = p.communicate(timeout=args.seconds + 60)
                line = next((l for l in out.splitlines() if l.startswith("Requests/sec:")), "Requests/sec: 0")
                rps[name] = float(line.split()[1])
                bad = next((l for l in out.splitlines() if "Non-2xx" in l), None)
                if bad:
                    rps[name + "_errors"] = bad.strip()
            loaded = rss_kib(pid, "VmRSS")
            time.sleep(args.idle)
            idle = rss_kib(pid, "VmRSS")
            rows.append((r, loaded, idle, rps))
            log(f"round {r}: {mib(loaded)} MiB under load, {mib(idle)} MiB after {args.idle} s idle; req/s {rps}")
        if edged.proc.poll() is not None:
            log("edged exited during the soak")
            return 1
    finally:
        edged.stop()

    print(f"soak: {args.rounds} rounds × {args.seconds} s of hello + KV + DO (wrk, {per} connections each), {args.idle} s idle after each")
    print(f"RSS before load: {mib(before)} MiB")
    print("| round | RSS under load, MiB | RSS after idle, MiB | hello req/s | kv req/s | do req/s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for r, loaded, idle, rps in rows:
        print(f"| {r} | {mib(loaded)} | {mib(idle)} | {rps['hello']:,.0f} | {rps['kv']:,.0f} | {rps['counter']:,.0f} |")
    first_loaded, first_idle = rows[0][1], rows[0][2]
    drift_idle = max(abs(row[2] - first_idle) / first_idle for row in rows)
    drift_loaded = max(abs(row[1] - first_loaded) / first_loaded for row in rows)
    print(f"largest drift from round 1: {drift_loaded:.1%} under load, {drift_idle:.1%} after idle (target ≤ 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
