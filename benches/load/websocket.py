#!/usr/bin/env python3
"""WebSocket benchmark, edged vs workerd with the same echo worker:

- echo: `ws_load echo` (examples/ws_load.rs) with C connections, each sending
  a small text message and waiting for its echo (one in flight per
  connection): messages/s and per-message round-trip p50/p99;
- idle: N sockets opened and held; the server's RSS before and while they
  are open, per socket.

    cargo build --release --example ws_load
    python3 benches/load/websocket.py [--seconds 10] [--connections 32] [--idle 1000]

Needs workerd from npm (installed into the cache as run.py does). Bounded:
each phase has a duration or a deadline.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ROOT, Edged, Workerd, log, rss_kib, wait_http, workerd_binary, workerd_version  # noqa: E402

ECHO = """
export default {
  fetch(req) {
    if (req.headers.get("upgrade") !== "websocket") return new Response("ok");
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    server.addEventListener("message", (ev) => server.send(ev.data));
    return new Response(null, { status: 101, webSocket: client });
  },
};
"""
HOST = "echo.workers.localhost"
LOAD = os.path.join(ROOT, "target", "release", "examples", "ws_load")


def echo(url, seconds, conns, size):
    out = subprocess.run([LOAD, "echo", url, HOST, str(conns), str(seconds), str(size)],
                         capture_output=True, text=True, timeout=seconds + 120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def idle(url, pid, n, hold=4):
    before = rss_kib(pid, "VmRSS")
    p = subprocess.Popen([LOAD, "idle", url, HOST, str(n), str(hold + 600)],
                         stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        opened = json.loads(line)["open"] if line else 0
        time.sleep(hold)
        during = rss_kib(pid, "VmRSS")
    finally:
        p.kill()
        p.wait(10)
    return {"open": opened, "before_kib": before, "during_kib": during,
            "per_socket_kib": round((during - before) / max(opened, 1), 1)}


def measure(name, url, pid, args, rows):
    log(f"{name}: echo, {args.connections} connections, {args.seconds} s")
    rows[(name, "echo")] = echo(url, args.seconds, args.connections, 64)
    log(f"{name}: echo, 1 connection")
    rows[(name, "echo1")] = echo(url, args.seconds, 1, 64)
    log(f"{name}: {args.idle} idle sockets")
    rows[(name, "idle")] = idle(url, pid, args.idle)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--idle", type=int, default=1000)
    args = ap.parse_args()
    if not os.path.exists(LOAD):
        sys.exit("build the load generator first: cargo build --release --example ws_load")
    work = tempfile.mkdtemp(prefix="edged-ws-bench-")
    rows = {}
    edged = Edged(work)
    try:
        edged.deploy("echo", ECHO)
        wait_http(edged.url("/"), HOST)
        ws = edged.url("/").replace("http://", "ws://")
        measure("edged", ws, edged.proc.pid, args, rows)
    finally:
        edged.stop()
    binary, reason = workerd_binary()
    if binary is None:
        log(f"workerd: {reason}")
    else:
        wd = Workerd(binary, work, {"echo": ECHO})
        try:
            wait_http(wd.url("echo", "/"))
            log(f"workerd {workerd_version(binary)}")
            measure("workerd", wd.url("echo", "/").replace("http://", "ws://"), wd.proc.pid, args, rows)
        finally:
            wd.stop()
    print()
    print("| WebSocket echo (64 B text) | edged | workerd |")
    print("| --- | ---: | ---: |")
    for key, label in [("echo", f"{args.connections} connections"), ("echo1", "1 connection")]:
        cells = []
        for who in ["edged", "workerd"]:
            r = rows.get((who, key))
            cells.append(f"{r['msgs_per_s']} msg/s, p50 {r['p50_ms']} / p99 {r['p99_ms']} ms"
                         + (f", {r['errors']} errors" if r["errors"] else "") if r else "–")
        print(f"| {label} | {cells[0]} | {cells[1]} |")
    cells = []
    for who in ["edged", "workerd"]:
        r = rows.get((who, "idle"))
        cells.append(f"{r['open']} open: {r['before_kib']} → {r['during_kib']} KiB RSS, "
                     f"{r['per_socket_kib']} KiB/socket" if r else "–")
    print(f"| {args.idle} idle sockets | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
