#!/usr/bin/env python3
"""Static assets benchmark: one 20 KiB file served by edged's assets (before
any worker runs) and by workerd serving the same directory natively (a `disk`
service on its socket; workerd has no Workers Assets of its own, and
wrangler's asset worker would only add a JS hop in front of it).

    python3 benches/load/assets.py [--seconds 10] [--connections 32]

wrk runs on the same machine (loopback, the same 2 cores). Each run is
bounded by --seconds. Also checks the responses: 200, 20,480 bytes, and a
304 for edged's ETag.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import TOKEN, Edged, log, wait_http, workerd_binary, workerd_version, wrk  # noqa: E402

HOST = "static.workers.localhost"
SIZE = 20 * 1024
WORKER = "export default { fetch() { return new Response('worker', { status: 404 }); } };"


def put(url, data, content_type):
    req = urllib.request.Request(url, data=data, method="PUT", headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def deploy_assets(edged, files):
    manifest = {}
    for path, content in files.items():
        digest = hashlib.sha256(content).hexdigest()
        put(f"{edged.control}/v1/assets/{digest}", content, "application/octet-stream")
        manifest[path] = {"hash": digest, "size": len(content)}
    body = {"main_module": "worker.js", "modules": {"worker.js": WORKER},
            "assets": {"files": manifest}}
    return put(f"{edged.control}/v1/workers/static", json.dumps(body).encode(), "application/json")


def check(url, host, etag_check):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
        assert r.status == 200 and len(body) == SIZE, (r.status, len(body))
        etag = r.headers.get("etag")
    if etag_check:
        req = urllib.request.Request(url, headers={"Host": host, "If-None-Match": etag})
        try:
            urllib.request.urlopen(req, timeout=10)
            raise AssertionError("expected a 304")
        except urllib.error.HTTPError as e:
            assert e.code == 304, e.code


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="edged-assets-bench-")
    content = bytes((i * 7 + 3) % 95 + 32 for i in range(SIZE))
    files = {"/app.js": content, "/index.html": b"<h1>hi</h1>"}
    rows = {}
    edged = Edged(work)
    try:
        deploy_assets(edged, files)
        url = edged.url("/app.js")
        wait_http(url, HOST)
        check(url, HOST, True)
        log(f"edged: {args.connections} connections, {args.seconds} s")
        rows["edged"] = wrk(url, HOST, args.seconds, args.connections, 2, headers=[])
        rows["edged-1"] = wrk(url, HOST, args.seconds, 1, 1, headers=[])
    finally:
        edged.stop()
    binary, reason = workerd_binary()
    if binary is None:
        log(f"workerd: {reason}")
    else:
        import subprocess
        import time
        from run import free_port
        d = tempfile.mkdtemp(dir=work, prefix="workerd-")
        public = os.path.join(d, "public")
        os.makedirs(public)
        for path, c in files.items():
            with open(os.path.join(public, path.lstrip("/")), "wb") as f:
                f.write(c)
        port = free_port()
        with open(os.path.join(d, "config.capnp"), "w") as f:
            f.write('using Workerd = import "/workerd/workerd.capnp";\n'
                    'const config :Workerd.Config = (\n'
                    f'  services = [(name = "static", disk = (path = "{public}", writable = false))],\n'
                    f'  sockets = [(name = "http", address = "127.0.0.1:{port}", http = (), service = "static")]\n);\n')
        proc = subprocess.Popen([binary, "serve", os.path.join(d, "config.capnp")],
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "w"))
        try:
            url = f"http://127.0.0.1:{port}/app.js"
            wait_http(url)
            check(url, None, False)
            log(f"workerd {workerd_version(binary)}: {args.connections} connections")
            rows["workerd"] = wrk(url, "127.0.0.1", args.seconds, args.connections, 2, headers=[])
            rows["workerd-1"] = wrk(url, "127.0.0.1", args.seconds, 1, 1, headers=[])
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            time.sleep(0.2)
    print()
    print(f"| 20 KiB static file, wrk {args.seconds} s | edged | workerd (disk service) |")
    print("| --- | ---: | ---: |")
    for key, label in [("", f"{args.connections} connections"), ("-1", "1 connection")]:
        cells = []
        for who in ["edged", "workerd"]:
            r = rows.get(who + key)
            cells.append(f"{r['rps']:.0f} req/s, p50 {r['p50_ms']:.3f} / p99 {r['p99_ms']:.3f} ms"
                         + (f", {r['non_2xx']} non-2xx" if r["non_2xx"] else "") if r and r["rps"] else "–")
        print(f"| {label} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
