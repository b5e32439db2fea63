#!/usr/bin/env python3
"""Runs the conformance cases on workerd and lists where it differs from the
expected exchanges (which edged passes: `cargo test --release --test conformance`).

    python3 tests/conformance/compare_workerd.py [--filter SUBSTRING] [--json FILE]

workerd comes from npm (the version pinned in benches/load/run.py, installed into
~/.cache/edged-bench on first use). All cases run in one workerd process, one
socket each, with outbound fetch allowed to loopback so the fetch cases reach the
same kind of local origin server the Rust runner uses. Case format: see
tests/conformance.rs.
"""

import argparse
import http.client
import http.server
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = os.path.join(ROOT, "tests", "conformance", "cases")


def load_bench():
    spec = importlib.util.spec_from_file_location("loadbench", os.path.join(ROOT, "benches", "load", "run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def unescape(s):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            out.append({"r": "\r", "n": "\n", "\\": "\\"}.get(n, "\\" + n))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse(name, source):
    case = {"name": name, "source": source, "method": "GET", "path": "/", "req_headers": [],
            "req_body": None, "status": 200, "headers": [], "body": None}
    for line in source.splitlines():
        if not line.startswith("// @"):
            continue
        key, _, value = line[4:].partition(" ")
        if key == "request":
            m, _, p = value.partition(" ")
            case["method"], case["path"] = m, p or "/"
        elif key == "request-header":
            k, _, v = value.partition(":")
            case["req_headers"].append((k.strip(), v.strip()))
        elif key == "request-body":
            case["req_body"] = unescape(value)
        elif key == "status":
            case["status"] = int(value)
        elif key == "header":
            k, _, v = value.partition(":")
            case["headers"].append((k.strip(), v.strip()))
        elif key == "body":
            case["body"] = unescape(value)
    return case


class OriginHandler(http.server.BaseHTTPRequestHandler):
    """The same routes as tests/common/origin.rs."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                chunk = self.rfile.read(size + 2)
                if size == 0:
                    break
                body += chunk[:size]
        extra = {}
        if self.path.startswith("/redirect/"):
            n = int(self.path[len("/redirect/"):] or 0)
            if n == 0:
                status, payload = 200, b"landed"
            else:
                status, payload = 302, b"moved"
                extra["Location"] = f"/redirect/{n - 1}"
        elif self.path == "/slow":
            time.sleep(5)
            status, payload = 200, b"slow"
        elif self.path.startswith("/echo"):
            status = 200
            payload = f"{self.command} {self.path} x-test={self.headers.get('x-test', '')} body=".encode() + body
            extra["X-Origin"] = "yes"
        else:
            status, payload = 200, b"hello from origin"
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


def start_workerd(binary, workdir, cases):
    ports, services, sockets, consts = {}, [], [], []
    # Hold every probe socket until all ports are chosen, so no port repeats.
    held = []
    for _ in cases:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
    chosen = [s.getsockname()[1] for s in held]
    for s in held:
        s.close()
    for i, case in enumerate(cases):
        with open(os.path.join(workdir, f"c{i}.js"), "w") as f:
            f.write(case["source"])
        port = chosen[i]
        ports[case["name"]] = port
        services.append(f'(name = "s{i}", worker = .c{i})')
        sockets.append(f'(name = "h{i}", address = "127.0.0.1:{port}", http = (), service = "s{i}")')
        consts.append(
            f'const c{i} :Workerd.Worker = (modules = [(name = "worker.js", esModule = embed "c{i}.js")], '
            f'compatibilityDate = "2025-01-01", compatibilityFlags = ["nodejs_compat"]);'
        )
    services.append('(name = "internet", network = (allow = ["public", "private", "local"]))')
    with open(os.path.join(workdir, "config.capnp"), "w") as f:
        f.write('using Workerd = import "/workerd/workerd.capnp";\n')
        f.write("const config :Workerd.Config = (\n  services = [" + ", ".join(services) + "],\n")
        f.write("  sockets = [" + ", ".join(sockets) + "]\n);\n")
        f.write("\n".join(consts) + "\n")
    log = open(os.path.join(workdir, "log"), "w")
    proc = subprocess.Popen([binary, "serve", os.path.join(workdir, "config.capnp")],
                            stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 120
    waiting = list(ports.values())
    while waiting and time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("workerd exited; see " + os.path.join(workdir, "log"))
        try:
            socket.create_connection(("127.0.0.1", waiting[-1]), 0.2).close()
            waiting.pop()
        except OSError:
            time.sleep(0.1)
    return proc, ports


def run_case(port, case, origin):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"x-origin": origin, "host": "localhost"}
    headers.update(dict(case["req_headers"]))
    body = case["req_body"].encode() if case["req_body"] is not None else None
    try:
        conn.request(case["method"], case["path"], body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
    except Exception as e:  # noqa: BLE001 - report any transport failure
        return f"request failed: {e}"
    if resp.status != case["status"]:
        return f"status {resp.status}, expected {case['status']} (body: {text[:200]!r})"
    for k, v in case["headers"]:
        got = ", ".join(resp.headers.get_all(k) or [])
        if got != v:
            return f"header {k}: {got!r}, expected {v!r}"
    if case["body"] is not None and text != case["body"]:
        return f"body {text!r}, expected {case['body']!r}"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--filter", default="")
    ap.add_argument("--json", help="write the differences as JSON to this file")
    args = ap.parse_args()
    cases = []
    for fn in sorted(os.listdir(CASES)):
        if fn.endswith(".js") and args.filter in fn:
            with open(os.path.join(CASES, fn)) as f:
                cases.append(parse(fn[:-3], f.read()))
    bench = load_bench()
    binary, reason = bench.workerd_binary()
    if not binary:
        print(f"workerd unavailable: {reason}")
        return 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OriginHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    workdir = tempfile.mkdtemp(prefix="edged-conformance-")
    proc, ports = start_workerd(binary, workdir, cases)
    diffs = {}
    try:
        for case in cases:
            why = run_case(ports[case["name"]], case, origin)
            if why:
                diffs[case["name"]] = why
                print(f"DIFF {case['name']}: {why}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.shutdown()
    print(f"conformance (workerd {bench.workerd_version(binary)}): {len(cases) - len(diffs)} passed, {len(diffs)} failed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(diffs, f, indent=2)
    if diffs:
        print(f"workerd config and log kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
