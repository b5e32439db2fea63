#!/usr/bin/env python3
"""Cluster benchmark: what a remote actor message costs, and one object's
throughput when its callers are spread over three PoPs.

    python3 benches/load/cluster.py             # 10 s per measurement
    python3 benches/load/cluster.py --seconds 5

Starts a standalone node (the single-node baseline) and then a whole local
cluster with scripts/cluster.sh (3 NATS servers, 3 PoPs on loopback; state in a
temporary EDGED_CLUSTER_DIR, so the fixed ports 4222-4224, 6222-6224 and
8080-8290 must be free), deploys benches/load/workers/do_counter.js (one
durable counter), and drives it with wrk (bounded in time and connections):

- hop: one connection, sequential increments, sent to the object's owner PoP
  (a local call) and to another PoP (a remote actor message): p50/p99 of each;
- throughput: 48 (and 192) connections on the standalone node, 48, 96 and
  192 on the owner PoP, and 16 on each of the three PoPs at once
  (requests/s summed).

- 100 objects: 48 connections over 100 counters, standalone and on one PoP of
  the cluster (objects spread over the three PoPs).

Every cluster figure includes replication: each commit is in the object's log
(R3, fsync before ack) before its response is released.

Targets (issue: cluster): the hop adds <= 0.5 ms p50; spread over 3 PoPs >= 80 %
of the single-node figure. (Issue: Durable Object replication): one object's
durable increments/s in the cluster >= 5,000 ("owner_48"). Everything here shares one machine's cores, so the
cluster figures are pessimistic.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Edged, ROOT, WORKERS, wait_http, wrk, log  # noqa: E402

PORTS = [8080, 8180, 8280]


def control(i, method, path, token, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{PORTS[i] + 1}{path}", data=body, method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def activations(i):
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS[i] + 1}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("edged_do_events_total"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def parallel_wrk(urls, host, seconds, connections):
    procs = []
    for url in urls:
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Host: {host}", url]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    total = 0.0
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 30)
        for line in out.splitlines():
            if line.startswith("Requests/sec:"):
                total += float(line.split()[1])
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    with open(os.path.join(WORKERS, "do_counter.js")) as f:
        source = f.read()
    bindings = [{"type": "durable_object_namespace", "name": "COUNTER", "class_name": "Counter"}]
    host = "counter.workers.localhost"
    results = {}
    work = tempfile.mkdtemp(prefix="edged-cluster-bench-")

    log("single node baseline")
    single = Edged(work)
    try:
        single.deploy("counter", source, bindings)
        wait_http(single.url("/"), host)
        results["single_48"] = wrk(single.url("/"), host, args.seconds, 48, 2)
        results["single_192"] = wrk(single.url("/"), host, args.seconds, 192, 2)
        results["single_hop"] = wrk(single.url("/"), host, args.seconds, 1, 1)
        results["single_100_objects_48"] = wrk(single.url("/?objects=100"), host, args.seconds, 48, 2)
    finally:
        single.stop()

    env = dict(os.environ, EDGED_CLUSTER_DIR=os.path.join(work, "cluster"))
    script = os.path.join(ROOT, "scripts", "cluster.sh")
    log("starting the cluster")
    subprocess.run([script, "up"], check=True, env=env)
    try:
        token = open(os.path.join(work, "cluster", "token")).read().strip()
        body = json.dumps({"main_module": "worker.js", "modules": {"worker.js": source},
                           "bindings": bindings}).encode()
        control(0, "PUT", "/v1/workers/counter", token, body)
        for p in PORTS:
            wait_http(f"http://127.0.0.1:{p}/", host)
        before = [activations(i) for i in range(3)]
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{PORTS[1]}/", headers={"Host": host}), timeout=30).read()
        after = [activations(i) for i in range(3)]
        owner = next(i for i in range(3) if after[i] > before[i])
        other = (owner + 1) % 3
        log(f"the object lives on PoP {owner}")
        results["local_hop"] = wrk(f"http://127.0.0.1:{PORTS[owner]}/", host, args.seconds, 1, 1)
        results["remote_hop"] = wrk(f"http://127.0.0.1:{PORTS[other]}/", host, args.seconds, 1, 1)
        results["owner_48"] = wrk(f"http://127.0.0.1:{PORTS[owner]}/", host, args.seconds, 48, 2)
        # One commit is in flight per object, so its throughput grows with the
        # number of callers whose events share a commit.
        results["owner_96"] = wrk(f"http://127.0.0.1:{PORTS[owner]}/", host, args.seconds, 96, 2)
        results["owner_192"] = wrk(f"http://127.0.0.1:{PORTS[owner]}/", host, args.seconds, 192, 2)
        results["spread_3x16"] = {"rps": parallel_wrk(
            [f"http://127.0.0.1:{p}/" for p in PORTS], host, args.seconds, 16)}
        results["cluster_100_objects_48"] = wrk(
            f"http://127.0.0.1:{PORTS[0]}/?objects=100", host, args.seconds, 48, 2)
    finally:
        subprocess.run([script, "down"], env=env)

    print()
    print("| measurement | req/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: |")
    for k, v in results.items():
        print(f"| {k} | {v.get('rps') or 0:,.0f} | {v.get('p50_ms', '') or ''} | {v.get('p99_ms', '') or ''} |")
    hop = (results["remote_hop"]["p50_ms"] or 0) - (results["local_hop"]["p50_ms"] or 0)
    ratio = results["spread_3x16"]["rps"] / max(results["single_48"]["rps"] or 1, 1)
    print(f"\nremote hop adds {hop:.3f} ms p50 (target <= 0.5); "
          f"spread over 3 PoPs = {ratio:.0%} of one node (target >= 80%)")


if __name__ == "__main__":
    main()
