#!/usr/bin/env python3
"""Load benchmark: edged and workerd side by side, same worker scripts, same load.

    python3 benches/load/run.py            # full run (10 s per scenario and runtime)
    python3 benches/load/run.py --quick    # under a minute
    python3 benches/load/run.py --json out.json --results   # also write JSON and benches/RESULTS.md

Each scenario is a worker script in benches/load/workers/. Both runtimes serve it
on loopback and are driven, one after the other, by the same `wrk` command
(bounded in time and connections). workerd comes from the npm registry (package
`workerd`, pinned below) into a cache directory; without npm the workerd columns
say why they are empty. Scenarios whose subsystem edged does not have yet say so
instead of failing. Loopback only: every address here is 127.0.0.1.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORKERS = os.path.join(ROOT, "benches", "load", "workers")
WORKERD_VERSION = "1.20261117.1"
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "edged-bench")
TOKEN = "bench-token"

# scenario -> (script, path, missing subsystem or None)
SCENARIOS = {
    "hello": ("hello.js", "/", None),
    "json": ("json.js", "/items?id=42&tag=a&tag=b", None),
    "headers": ("headers.js", "/", None),
    "kv-read": ("kv_read.js", "/", None),
    "do-counter": ("do_counter.js", "/?objects=1", None),
    "do-fanout": ("do_counter.js", "/?objects=100", None),
}
HEADER_ARGS = [f"X-H{i}: value-{i}" for i in range(1, 8)]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid, field="VmHWM"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def wait_http(url, host=None, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            req = urllib.request.Request(url, headers={"Host": host} if host else {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status < 500:
                    return True
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.02)
    return False


# ---------------------------------------------------------------- edged

class Edged:
    def __init__(self, workdir, extra_config=""):
        self.dir = tempfile.mkdtemp(dir=workdir, prefix="edged-")
        cfg = os.path.join(self.dir, "edged.toml")
        with open(cfg, "w") as f:
            f.write(
                "[server]\nlisten = \"127.0.0.1:0\"\ncontrol_listen = \"127.0.0.1:0\"\n"
                f"data_dir = \"{self.dir}/data\"\ntoken = \"{TOKEN}\"\n" + extra_config
            )
        env = dict(os.environ, EDGED_LOG="warn")
        self.proc = subprocess.Popen(
            [os.path.join(ROOT, "target", "release", "edged"), "serve", "--config", cfg],
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.dir, "log"), "w"), text=True, env=env,
        )
        self.data = self.control = None
        while self.data is None or self.control is None:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("edged exited during start-up; see " + self.dir + "/log")
            m = re.match(r"edged: (data|control) plane listening on (\S+)", line)
            if m:
                setattr(self, m.group(1), m.group(2))

    def deploy(self, name, source, bindings=()):
        body = json.dumps(
            {"main_module": "worker.js", "modules": {"worker.js": source}, "bindings": list(bindings)}
        ).encode()
        req = urllib.request.Request(
            f"{self.control}/v1/workers/{name}", data=body, method="PUT",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def kv_put(self, namespace, key, value):
        req = urllib.request.Request(
            f"{self.control}/v1/kv/{namespace}/values/{key}", data=value.encode(), method="PUT",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status

    def url(self, path):
        return self.data + path

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        # Keep the last node's log (warnings and errors only) for a look after the run.
        os.makedirs(CACHE, exist_ok=True)
        shutil.copy(os.path.join(self.dir, "log"), os.path.join(CACHE, "last-edged.log"))


# ---------------------------------------------------------------- workerd

def workerd_binary(allow_install=True):
    """The native workerd binary from the npm package, installed into the cache."""
    prefix = os.path.join(CACHE, f"workerd-{WORKERD_VERSION}")
    candidates = [
        os.path.join(prefix, "node_modules", "@cloudflare", "workerd-linux-64", "bin", "workerd"),
        os.path.join(prefix, "node_modules", "workerd", "bin", "workerd"),
    ]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c, None
    if not allow_install:
        return None, "workerd is not installed"
    if shutil.which("npm") is None:
        return None, "npm is not available, so workerd cannot be installed"
    log(f"installing workerd {WORKERD_VERSION} from npm into {prefix} ...")
    os.makedirs(prefix, exist_ok=True)
    r = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", prefix, f"workerd@{WORKERD_VERSION}"],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        return None, "npm install workerd failed: " + r.stderr.strip().splitlines()[-1:][0] if r.stderr.strip() else "npm install failed"
    return workerd_binary(allow_install=False)


def workerd_version(binary):
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


class Workerd:
    """One workerd process serving `workers` (name -> source), each on its own port."""

    def __init__(self, binary, workdir, workers, kv_store=None, durable=False):
        self.dir = tempfile.mkdtemp(dir=workdir, prefix="workerd-")
        self.ports = {}
        services, sockets, consts = [], [], []
        for i, (name, source) in enumerate(workers.items()):
            fname = f"w{i}.js"
            with open(os.path.join(self.dir, fname), "w") as f:
                f.write(source)
            port = free_port()
            self.ports[name] = port
            services.append(f'(name = "s{i}", worker = .w{i})')
            sockets.append(f'(name = "h{i}", address = "127.0.0.1:{port}", http = (), service = "s{i}")')
            bindings = ', bindings = [(name = "KV", kvNamespace = "kvstore")]' if kv_store else ""
            if durable:
                bindings = (
                    ', bindings = [(name = "COUNTER", durableObjectNamespace = "Counter")]'
                    f', durableObjectNamespaces = [(className = "Counter", uniqueKey = "edged-bench-{i}")]'
                    ', durableObjectStorage = (localDisk = "do-disk")'
                )
            consts.append(
                f'const w{i} :Workerd.Worker = (modules = [(name = "worker.js", esModule = embed "{fname}")], '
                f'compatibilityDate = "2025-01-01"{bindings});'
            )
        if durable:
            disk = os.path.join(self.dir, "do-disk")
            os.makedirs(disk, exist_ok=True)
            services.append(f'(name = "do-disk", disk = (path = "{disk}", writable = true))')
        if kv_store:
            with open(os.path.join(self.dir, "kvstore.js"), "w") as f:
                f.write(kv_store)
            services.append('(name = "kvstore", worker = .kvstore)')
            consts.append(
                'const kvstore :Workerd.Worker = (modules = [(name = "worker.js", esModule = embed "kvstore.js")], '
                'compatibilityDate = "2025-01-01");'
            )
        with open(os.path.join(self.dir, "config.capnp"), "w") as f:
            f.write('using Workerd = import "/workerd/workerd.capnp";\n')
            f.write("const config :Workerd.Config = (\n  services = [" + ", ".join(services) + "],\n")
            f.write("  sockets = [" + ", ".join(sockets) + "]\n);\n")
            f.write("\n".join(consts) + "\n")
        self.started = time.time()
        self.proc = subprocess.Popen(
            [binary, "serve", os.path.join(self.dir, "config.capnp")],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "log"), "w"),
        )

    def url(self, name, path):
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------- load

def parse_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return None
    v = float(m.group(1))
    return {"us": v / 1000, "ms": v, "s": v * 1000}[m.group(2)]


def wrk(url, host, seconds, connections, threads, headers=None):
    """`headers`: extra request headers (default: the scenarios' HEADER_ARGS)."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"Host: {host}"]
    for h in HEADER_ARGS if headers is None else headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(rps.group(1)) if rps else None,
        "p50_ms": parse_ms(p50.group(1)) if p50 else None,
        "p99_ms": parse_ms(p99.group(1)) if p99 else None,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


def throughput_scenarios(args, wd_binary, wd_reason, workdir):
    rows = []
    for name in args.scenarios:
        if name == "cold":
            continue
        script, path, missing = SCENARIOS[name]
        row = {"scenario": name}
        if missing:
            row["note"] = missing
            rows.append(row)
            continue
        with open(os.path.join(WORKERS, script)) as f:
            source = f.read()
        kv = name == "kv-read"
        durable = name.startswith("do-")
        edged = Edged(workdir)
        try:
            if kv:
                edged.kv_put("bench", "hot", "hot value: ".ljust(64, "x"))
            bindings = []
            if kv:
                bindings = [{"type": "kv_namespace", "name": "KV", "namespace": "bench"}]
            if durable:
                bindings = [{"type": "durable_object_namespace", "name": "COUNTER", "class_name": "Counter"}]
            edged.deploy(name, source, bindings)
            host = f"{name}.workers.localhost"
            wait_http(edged.url(path), host)
            wrk(edged.url(path), host, 1, args.connections, args.threads)  # warm-up
            row["edged"] = wrk(edged.url(path), host, args.seconds, args.connections, args.threads)
            row["edged"]["peak_rss_mib"] = round((rss_kib(edged.proc.pid) or 0) / 1024, 1)
        finally:
            edged.stop()
        if wd_binary:
            kv_store = None
            if kv:
                with open(os.path.join(WORKERS, "kv_store_workerd.js")) as f:
                    kv_store = f.read()
            wd = Workerd(wd_binary, workdir, {name: source}, kv_store, durable)
            try:
                url = wd.url(name, path)
                if not wait_http(url):
                    row["workerd_note"] = "workerd did not start; see " + wd.dir + "/log"
                else:
                    wrk(url, "localhost", 1, args.connections, args.threads)
                    row["workerd"] = wrk(url, "localhost", args.seconds, args.connections, args.threads)
                    row["workerd"]["peak_rss_mib"] = round((rss_kib(wd.proc.pid) or 0) / 1024, 1)
            finally:
                wd.stop()
        else:
            row["workerd_note"] = wd_reason
        rows.append(row)
        log(f"{name}: done")
    return rows


def cold_scenario(args, wd_binary, wd_reason, workdir):
    """Deploy → first response, and memory per idle worker with N deployed."""
    with open(os.path.join(WORKERS, "hello.js")) as f:
        hello = f.read()
    n = 20 if args.quick else 100
    result = {"scenario": "cold", "workers": n}
    edged = Edged(workdir)
    try:
        edged.deploy("warmup", hello)
        times = []
        base = rss_kib(edged.proc.pid, "VmRSS")
        for i in range(n):
            t0 = time.perf_counter()
            edged.deploy(f"w{i}", hello.replace("Hello", f"Hello {i}"))
            ok = wait_http(edged.url("/"), f"w{i}.workers.localhost")
            times.append((time.perf_counter() - t0) * 1000)
            assert ok
        time.sleep(args.idle_settle)
        after = rss_kib(edged.proc.pid, "VmRSS")
        result["edged"] = {
            "deploy_to_first_response_p50_ms": round(statistics.median(times), 2),
            "mib_per_idle_worker": round((after - base) / n / 1024, 2),
        }
    finally:
        edged.stop()
    if not wd_binary:
        result["workerd_note"] = wd_reason
        return result
    # workerd has no deploy API: its cold path is process start → first response.
    starts = []
    for _ in range(3 if args.quick else 5):
        wd = Workerd(wd_binary, workdir, {"hello": hello})
        t0 = wd.started
        ok = wait_http(wd.url("hello", "/"))
        starts.append((time.time() - t0) * 1000)
        wd.stop()
        assert ok
    one = Workerd(wd_binary, workdir, {"hello": hello})
    wait_http(one.url("hello", "/"))
    time.sleep(args.idle_settle)
    rss_one = rss_kib(one.proc.pid, "VmRSS")
    one.stop()
    many = Workerd(wd_binary, workdir, {f"w{i}": hello.replace("Hello", f"Hello {i}") for i in range(n)})
    for name in list(many.ports):
        wait_http(many.url(name, "/"))
    time.sleep(args.idle_settle)
    rss_many = rss_kib(many.proc.pid, "VmRSS")
    many.stop()
    result["workerd"] = {
        "start_to_first_response_p50_ms": round(statistics.median(starts), 2),
        "mib_per_idle_worker": round((rss_many - rss_one) / (n - 1) / 1024, 2),
    }
    return result


# ---------------------------------------------------------------- output

def rps_cell(r):
    """Requests/s, flagged when any response was not 2xx/3xx or a socket failed."""
    if not r:
        return "-"
    cell = fmt(r.get("rps"))
    if r.get("non_2xx"):
        cell += f" ({r['non_2xx']} non-2xx!)"
    if r.get("socket_errors"):
        cell += f" (socket errors: {r['socket_errors']})"
    return cell


def fmt(v, suffix=""):
    return "-" if v is None else f"{v:,.0f}{suffix}" if isinstance(v, float) and v >= 100 else f"{v}{suffix}"


def table(rows, cold):
    lines = [
        "| scenario | edged req/s | workerd req/s | ratio | edged p50 / p99 ms | workerd p50 / p99 ms | edged peak RSS MiB | workerd peak RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "note" in r:
            lines.append(f"| {r['scenario']} | {r['note']} | | | | | | |")
            continue
        e, w = r.get("edged", {}), r.get("workerd")
        ratio = f"{e['rps'] / w['rps']:.2f}×" if w and w.get("rps") and e.get("rps") else "-"
        lines.append(
            f"| {r['scenario']} | {rps_cell(e)} | {rps_cell(w) if w else r.get('workerd_note', '-')} | {ratio} | "
            f"{fmt(e.get('p50_ms'))} / {fmt(e.get('p99_ms'))} | "
            f"{(fmt(w.get('p50_ms')) + ' / ' + fmt(w.get('p99_ms'))) if w else '-'} | "
            f"{fmt(e.get('peak_rss_mib'))} | {fmt(w.get('peak_rss_mib')) if w else '-'} |"
        )
    if cold:
        e, w = cold.get("edged", {}), cold.get("workerd")
        lines.append("")
        lines.append("| cold | edged | workerd |")
        lines.append("| --- | ---: | ---: |")
        lines.append(
            f"| new worker → first response, p50 ms | {e.get('deploy_to_first_response_p50_ms', '-')} (deploy API) | "
            f"{w.get('start_to_first_response_p50_ms', '-') if w else cold.get('workerd_note', '-')} (process start) |"
        )
        lines.append(
            f"| memory per idle worker, MiB ({cold['workers']} deployed) | {e.get('mib_per_idle_worker', '-')} | "
            f"{w.get('mib_per_idle_worker', '-') if w else '-'} |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs, under a minute in all")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--results", action="store_true", help="regenerate benches/RESULTS.md")
    ap.add_argument("--no-workerd", action="store_true", help="run edged only")
    ap.add_argument("--scenarios", default=",".join(list(SCENARIOS) + ["cold"]))
    ap.add_argument("--seconds", type=int, default=None)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS and s != "cold"]
    if unknown:
        ap.error(f"unknown scenarios: {unknown}")
    if args.seconds is None:
        args.seconds = 2 if args.quick else 10
    # How long deployed workers sit idle before their memory is read (both runtimes).
    args.idle_settle = 2 if args.quick else 5
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (Debian package 'wrk'): apt-get install wrk")

    log("building edged (release) ...")
    subprocess.run([os.path.join(ROOT, "scripts", "setup-v8.sh")], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    # Flush what the build wrote, so it does not land on the storage scenarios' fsyncs.
    subprocess.run(["sync"], check=False)

    wd_binary, wd_reason = (None, "skipped (--no-workerd)") if args.no_workerd else workerd_binary()
    if wd_reason:
        log("workerd: " + wd_reason)
    workdir = tempfile.mkdtemp(prefix="edged-load-")
    try:
        rows = throughput_scenarios(args, wd_binary, wd_reason, workdir)
        cold = cold_scenario(args, wd_binary, wd_reason, workdir) if "cold" in args.scenarios else None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "edged": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "workerd": workerd_version(wd_binary) if wd_binary else wd_reason,
        "load": f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, loopback",
        "mode": "quick" if args.quick else "full",
    }
    text = table(rows, cold)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "scenarios": rows, "cold": cold}, f, indent=2)
    if args.results:
        with open(os.path.join(ROOT, "benches", "RESULTS.md"), "w") as f:
            f.write("# Load benchmark results\n\n")
            f.write("Generated by `python3 benches/load/run.py --results`; do not edit by hand.\n\n")
            for k, v in meta.items():
                f.write(f"- {k}: {v}\n")
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
