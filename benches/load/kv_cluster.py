#!/usr/bin/env python3
"""KV across PoPs: reads stay local, writes go through one replicated log.

    python3 benches/load/kv_cluster.py             # 10 s per measurement
    python3 benches/load/kv_cluster.py --seconds 5

Starts a standalone node (the baseline) and then a local cluster with
scripts/cluster.sh (3 NATS servers, 3 PoPs on loopback; the fixed ports
4222-4224, 6222-6224 and 8080-8290 must be free), and drives with wrk (bounded
in time and connections):

- kv-read: 48 connections reading one hot key (benches/load/workers/kv_read.js),
  on the standalone node and on one PoP of the cluster;
- kv-write: 16 connections on each of the three PoPs at once, every request a
  `put` of one of 1,000 keys (puts/s summed), and the propagation of those
  writes to the other PoPs under that load, from `edged_kv_propagation_seconds`
  (writer's clock at the write to the reader's apply; one machine, one clock).

Targets (issue: KV across PoPs): kv-read on a cluster PoP within 10 % of the
standalone figure; propagation p99 <= 1 s.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Edged, ROOT, WORKERS, wait_http, wrk, log  # noqa: E402
from cluster import PORTS, control, parallel_wrk  # noqa: E402

WRITER = """
let n = 0;
export default {
  async fetch(request, env) {
    n++;
    await env.KV.put(`key-${(n * 7919) % 1000}`, `value ${n} `.padEnd(64, "x"));
    return new Response("ok");
  },
};
"""


def propagation(port):
    """(count, buckets) of edged_kv_propagation_seconds on one PoP."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port + 1}/metrics", timeout=10) as r:
        text = r.read().decode()
    buckets = []
    for line in text.splitlines():
        if line.startswith("edged_kv_propagation_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    return buckets


def quantile(buckets, q):
    total = buckets[-1][1] if buckets else 0
    for le, count in buckets:
        if count >= q * total:
            return le
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    with open(os.path.join(WORKERS, "kv_read.js")) as f:
        reader = f.read()
    bindings = [{"type": "kv_namespace", "name": "KV", "namespace": "bench"}]
    host = "kvread.workers.localhost"
    results = {}
    work = tempfile.mkdtemp(prefix="edged-kv-cluster-bench-")

    log("single node baseline")
    single = Edged(work)
    try:
        single.kv_put("bench", "hot", "hot value: ".ljust(64, "x"))
        single.deploy("kvread", reader, bindings)
        wait_http(single.url("/"), host)
        wrk(single.url("/"), host, 1, 48, 2)
        results["single kv-read (48)"] = wrk(single.url("/"), host, args.seconds, 48, 2)
    finally:
        single.stop()

    env = dict(os.environ, EDGED_CLUSTER_DIR=os.path.join(work, "cluster"))
    script = os.path.join(ROOT, "scripts", "cluster.sh")
    log("starting the cluster")
    subprocess.run([script, "up"], check=True, env=env)
    summary = ""
    try:
        token = open(os.path.join(work, "cluster", "token")).read().strip()
        req = urllib.request.Request(
            f"http://127.0.0.1:{PORTS[0] + 1}/v1/kv/bench/values/hot",
            data="hot value: ".ljust(64, "x").encode(), method="PUT",
            headers={"Authorization": f"Bearer {token}"})
        urllib.request.urlopen(req, timeout=60).read()
        for name, source in (("kvread", reader), ("kvwrite", WRITER)):
            body = json.dumps({"main_module": "worker.js", "modules": {"worker.js": source},
                               "bindings": bindings}).encode()
            control(0, "PUT", f"/v1/workers/{name}", token, body)
        for p in PORTS:
            wait_http(f"http://127.0.0.1:{p}/", host)
            wait_http(f"http://127.0.0.1:{p}/", "kvwrite.workers.localhost")
        url = f"http://127.0.0.1:{PORTS[1]}/"
        wrk(url, host, 1, 48, 2)
        results["cluster kv-read, one PoP (48)"] = wrk(url, host, args.seconds, 48, 2)
        before = [propagation(p) for p in PORTS]
        puts = parallel_wrk([f"http://127.0.0.1:{p}/" for p in PORTS],
                            "kvwrite.workers.localhost", args.seconds, 16)
        results["cluster kv-write, 3 PoPs (3x16)"] = {"rps": puts}
        after = [propagation(p) for p in PORTS]
        # This run's samples only: the difference of the cumulative buckets.
        merged = {}
        for b, a in zip(before, after):
            old = dict(b)
            for le, count in a:
                merged[le] = merged.get(le, 0) + count - old.get(le, 0)
        buckets = sorted(merged.items())
        summary = (f"propagation under the write load: p50 <= {quantile(buckets, 0.5) * 1000:g} ms, "
                   f"p99 <= {quantile(buckets, 0.99) * 1000:g} ms over {buckets[-1][1]:.0f} applied writes "
                   "(bucket upper bounds)")
    finally:
        subprocess.run([script, "down"], env=env)

    print()
    print("| measurement | req/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: |")
    for k, v in results.items():
        print(f"| {k} | {v.get('rps') or 0:,.0f} | {v.get('p50_ms', '') or ''} | {v.get('p99_ms', '') or ''} |")
    single_rps = results["single kv-read (48)"]["rps"] or 1
    ratio = (results["cluster kv-read, one PoP (48)"]["rps"] or 0) / single_rps
    print(f"\nkv-read on a cluster PoP = {ratio:.0%} of one node (target >= 90%)")
    print(summary)


if __name__ == "__main__":
    main()
