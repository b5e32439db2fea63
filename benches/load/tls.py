#!/usr/bin/env python3
"""TLS benchmark: hello over HTTPS, edged vs workerd, with TLS configured the
same way (one self-signed P-256 certificate made here with openssl, TLS 1.3,
loopback), side by side:

- keep-alive: wrk -t2 -c32, every request on a kept-alive HTTPS connection;
- new connection per request: the same with `Connection: close`, so every
  request pays a full TLS handshake (wrk reconnects after each response);
- plain HTTP keep-alive, for reference.

    python3 benches/load/tls.py [--seconds 10]

Needs wrk (built with TLS, as Debian's is), openssl, and workerd from npm
(installed into the cache as run.py does). Bounded: each run is --seconds.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from run import Edged, Workerd, WORKERS, free_port, log, wait_http, workerd_binary, workerd_version  # noqa: E402


def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-days", "2", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    return cert, key


# edged routes by Host; workerd serves its one worker whatever the Host says.
HOST = "hello.workers.localhost"


def load(url, seconds, close=False):
    """wrk -t2 -c32; `close`: a new connection (full handshake) per request."""
    return run.wrk(url, HOST, seconds, 32, 2, headers=["Connection: close"] if close else [])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="edged-tls-bench-")
    cert, key = make_cert(work)
    with open(os.path.join(WORKERS, "hello.js")) as f:
        hello = f.read()
    rows = {}

    port = free_port()
    edged = Edged(work, f'[tls]\nlisten = "127.0.0.1:{port}"\ncert = "{cert}"\nkey = "{key}"\n')
    try:
        edged.deploy("hello", hello)
        wait_http(edged.url("/"), HOST)
        https = f"https://127.0.0.1:{port}/"
        log("edged: keep-alive")
        rows[("edged", "https keep-alive")] = load(https, args.seconds)
        log("edged: new connection per request")
        rows[("edged", "https new connection")] = load(https, args.seconds, close=True)
        rows[("edged", "http keep-alive")] = load(edged.url("/"), args.seconds)
    finally:
        edged.stop()

    binary, reason = workerd_binary()
    if binary is None:
        log(f"workerd: {reason}")
    else:
        wd = Workerd(binary, work, {"hello": hello})
        plain_port = wd.ports["hello"]
        wd.stop()
        # The same worker with an HTTPS socket beside the plain one.
        tls_port = free_port()
        cfg = os.path.join(wd.dir, "config.capnp")
        # capnp embeds files by a path relative to the config.
        shutil.copy(cert, os.path.join(wd.dir, "cert.pem"))
        shutil.copy(key, os.path.join(wd.dir, "key.pem"))
        text = open(cfg).read()
        text = text.replace(
            "sockets = [",
            f'sockets = [(name = "tls", address = "127.0.0.1:{tls_port}", https = (options = (), '
            f'tlsOptions = (keypair = (privateKey = embed "key.pem", certificateChain = embed "cert.pem"))), '
            'service = "s0"), ',
            1,
        )
        open(cfg, "w").write(text)
        proc = subprocess.Popen([binary, "serve", cfg], stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(wd.dir, "log"), "w"))
        try:
            wait_http(f"http://127.0.0.1:{plain_port}/")
            https = f"https://127.0.0.1:{tls_port}/"
            log(f"workerd ({workerd_version(binary)}): keep-alive")
            rows[("workerd", "https keep-alive")] = load(https, args.seconds)
            log("workerd: new connection per request")
            rows[("workerd", "https new connection")] = load(https, args.seconds, close=True)
            rows[("workerd", "http keep-alive")] = load(f"http://127.0.0.1:{plain_port}/", args.seconds)
        finally:
            proc.terminate()
            proc.wait(10)

    print()
    print("| hello | edged req/s | edged p50 / p99 ms | workerd req/s | workerd p50 / p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for mode in ["https keep-alive", "https new connection", "http keep-alive"]:
        e, w = rows.get(("edged", mode), {}), rows.get(("workerd", mode), {})
        cell = lambda r: run.rps_cell(r) if r.get("rps") else "–"
        lat = lambda r: f"{r.get('p50_ms')} / {r.get('p99_ms')}" if r.get("rps") else "–"
        print(f"| {mode} | {cell(e)} | {lat(e)} | {cell(w)} | {lat(w)} |")


if __name__ == "__main__":
    main()
