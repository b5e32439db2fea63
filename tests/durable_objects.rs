//! End-to-end: Durable Objects through a worker, against a real node process.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestNode;
use serde_json::{json, Value};

const WORKER: &str = r#"
import { DurableObject } from "cloudflare:workers";

export class Counter extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.instance = crypto.randomUUID();
    this.released = new Promise((r) => { this.release = r; });
    // No event may arrive before this finishes, though it waits on a timer.
    ctx.blockConcurrencyWhile(async () => {
      await new Promise((r) => setTimeout(r, 20));
      this.ready = true;
    });
  }
  async fetch(request) {
    const url = new URL(request.url);
    const s = this.ctx.storage;
    switch (url.pathname) {
      case "/inc": {
        const v = ((await s.get("v")) ?? 0) + 1;
        s.put("v", v);
        return new Response(String(v));
      }
      case "/slow-inc": {
        // Read, await storage several times, write: the input gate keeps any
        // other event out while this one awaits storage.
        const v = (await s.get("slow")) ?? 0;
        for (let i = 0; i < 5; i++) await s.get(`other-${i}`);
        await s.put("slow", v + 1);
        return new Response(String(v + 1));
      }
      case "/blocked-inc": {
        // Read, wait on a timer (which opens the input gate), write: only
        // blockConcurrencyWhile keeps concurrent events from losing updates.
        const v = await this.ctx.blockConcurrencyWhile(async () => {
          const v = ((await s.get("blocked")) ?? 0) + 1;
          await new Promise((r) => setTimeout(r, 2));
          await s.put("blocked", v);
          return v;
        });
        return new Response(String(v));
      }
      case "/ready": return Response.json({ ready: this.ready === true });
      case "/bcw-throw":
        await this.ctx.blockConcurrencyWhile(async () => { throw new Error("init failed on purpose"); });
        return new Response("unreachable");
      case "/wait": {
        // Parked on a promise only another event settles.
        await this.released;
        return new Response("released");
      }
      case "/release":
        this.release();
        return new Response("ok");
      case "/ping": {
        // A calls B, and B calls A back while A is still waiting for B.
        const peer = url.searchParams.get("peer");
        const r = await this.env.COUNTER.getByName(peer).fetch(`http://do/call?target=${this.ctx.id.name}`);
        return new Response(await r.text());
      }
      case "/stream": {
        // The rest of the body comes only after /release, which the client
        // sends once it has read the first chunk: a buffered response never
        // finishes.
        const released = this.released;
        const enc = new TextEncoder();
        return new Response(new ReadableStream({
          async start(c) {
            c.enqueue(enc.encode("first;"));
            await released;
            c.enqueue(enc.encode("second"));
            c.close();
          },
        }));
      }
      case "/ping-forever": {
        // Objects calling each other back without end: the chain is cut.
        const peer = url.searchParams.get("peer");
        const r = await this.env.COUNTER.getByName(peer).fetch(`http://do/ping-forever?peer=${this.ctx.id.name}`);
        return new Response(await r.text(), { status: r.status });
      }
      case "/put-then-fetch": {
        // The origin looks for this write on disk when the request reaches it.
        s.put("gated", "yes");
        const r = await fetch(`${url.searchParams.get("origin")}/check/${this.ctx.id}`);
        return new Response(await r.text());
      }
      case "/call":
        return this.env.COUNTER.getByName(url.searchParams.get("target")).fetch("http://do/inc");
      case "/get": return Response.json({
        v: (await s.get("v")) ?? 0, slow: (await s.get("slow")) ?? 0, blocked: (await s.get("blocked")) ?? 0,
      });
      case "/many": {
        for (let i = 0; i < 100; i++) s.put(`many:${String(i).padStart(3, "0")}`, i);
        return new Response("ok");
      }
      case "/txn": {
        await s.put("t", "before");
        try {
          await s.transaction(async (txn) => {
            await txn.put("t", "inside");
            await txn.put("t2", "inside");
            throw new Error("abort");
          });
        } catch {}
        return Response.json({ t: await s.get("t"), t2: (await s.get("t2")) ?? null });
      }
      case "/clone": {
        const value = {
          map: new Map([["a", 1]]), set: new Set([1, 2]), date: new Date(1700000000000),
          buf: new Uint8Array([1, 2, 3]).buffer, typed: new Int32Array([-1, 7]), big: 12345678901234567890n,
          nested: { arr: [1, "two", null] },
        };
        await s.put("clone", value);
        const b = await s.get("clone");
        return Response.json({
          map: b.map instanceof Map && b.map.get("a") === 1,
          set: b.set instanceof Set && b.set.has(2),
          date: b.date instanceof Date && b.date.getTime() === 1700000000000,
          buf: b.buf instanceof ArrayBuffer && new Uint8Array(b.buf)[2] === 3,
          typed: b.typed instanceof Int32Array && b.typed[0] === -1,
          big: b.big === 12345678901234567890n,
          nested: JSON.stringify(b.nested) === '[1,"two",null]' || b.nested.arr[1] === "two",
        });
      }
      case "/limits": {
        const out = {};
        const tryIt = async (name, f) => { try { await f(); out[name] = "ok"; } catch (e) { out[name] = e.name; } };
        await tryIt("entryUnder", () => s.put("big", "x".repeat(2 * 1024 * 1024 - 100)));
        await tryIt("entryOver", () => s.put("big2", "x".repeat(2 * 1024 * 1024 + 1)));
        const keys = (n) => Array.from({ length: n }, (_, i) => `k${i}`);
        await tryIt("get128", () => s.get(keys(128)));
        await tryIt("get129", () => s.get(keys(129)));
        await tryIt("delete129", () => s.delete(keys(129)));
        await tryIt("undefinedValue", () => s.put("u", undefined));
        await s.delete("big");
        return Response.json(out);
      }
      case "/list": {
        for (const k of ["a", "b", "c", "d"]) await s.put(`l:${k}`, k);
        const names = async (o) => [...(await s.list(o)).keys()];
        return Response.json({
          all: await names({ prefix: "l:" }),
          start: await names({ start: "l:b", prefix: "l:" }),
          startAfter: await names({ startAfter: "l:b", prefix: "l:" }),
          end: await names({ prefix: "l:", end: "l:c" }),
          reverse: await names({ prefix: "l:", reverse: true, limit: 2 }),
        });
      }
      case "/whoami":
        return Response.json({ instance: this.instance, id: this.ctx.id.toString(), name: this.ctx.id.name ?? null });
      case "/alarm-set": {
        await s.setAlarm(Date.now() + Number(url.searchParams.get("in")));
        return Response.json({ at: await s.getAlarm() });
      }
      case "/alarm-fail":
        await s.put("fail-until", Number(url.searchParams.get("n")));
        return new Response("ok");
      case "/alarm-state":
        return Response.json({ runs: (await s.get("alarm-runs")) ?? [], alarm: await s.getAlarm() });
      case "/sql": {
        const sql = s.sql;
        const fresh = sql.databaseSize;
        sql.exec("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)");
        const ins = sql.exec("INSERT INTO items (name, score, data) VALUES (?, ?, ?), (?, ?, ?)",
          "a", 1.5, new Uint8Array([1, 2]), "b", 2, null);
        const cursor = sql.exec("SELECT id, name, score, data FROM items WHERE score >= ? ORDER BY id", 1);
        const cols = cursor.columnNames;
        const rows = cursor.toArray();
        const one = sql.exec("SELECT COUNT(*) AS n FROM items").one();
        const raw = [...sql.exec("SELECT name FROM items ORDER BY id").raw()];
        const errs = {};
        const tryIt = (name, f) => { try { f(); errs[name] = "ok"; } catch (e) { errs[name] = e.name; } };
        tryIt("reserved", () => sql.exec("SELECT * FROM _edged_kv"));
        tryIt("syntax", () => sql.exec("SELEC 1"));
        tryIt("oneOfMany", () => sql.exec("SELECT * FROM items").one());
        tryIt("bindings100", () => sql.exec("SELECT " + Array(100).fill("?").join(","), ...Array(100).fill(1)));
        tryIt("bindings101", () => sql.exec("SELECT " + Array(101).fill("?").join(","), ...Array(101).fill(1)));
        tryIt("tooLong", () => sql.exec("SELECT 1 -- " + "x".repeat(100001)));
        return Response.json({
          written: ins.rowsWritten, cols, rows: rows.map((r) => ({ ...r, data: r.data === null ? null : [...new Uint8Array(r.data)] })),
          n: one.n, raw, errs, size: sql.databaseSize > 0, fresh,
        });
      }
      case "/sql-txn": {
        const sql = s.sql;
        sql.exec("CREATE TABLE IF NOT EXISTS t (v INTEGER)");
        try {
          await s.transaction(async () => {
            sql.exec("INSERT INTO t VALUES (1)");
            await s.put("in-txn", 1);
            throw new Error("roll back");
          });
        } catch {}
        s.transactionSync(() => {
          sql.exec("INSERT INTO t VALUES (2)");
        });
        try {
          s.transactionSync(() => {
            sql.exec("INSERT INTO t VALUES (3)");
            throw new Error("roll back too");
          });
        } catch {}
        const rows = sql.exec("SELECT v FROM t ORDER BY v").toArray().map((r) => r.v);
        return Response.json({ rows, kv: (await s.get("in-txn")) ?? null });
      }
      case "/sql-count": {
        s.sql.exec("CREATE TABLE IF NOT EXISTS c (v INTEGER)");
        s.sql.exec("INSERT INTO c VALUES (1)");
        return new Response(String(s.sql.exec("SELECT COUNT(*) AS n FROM c").one().n));
      }
      case "/big": {
        const bytes = new Uint8Array(Number(url.searchParams.get("kb")) * 1024).fill(7);
        try {
          await s.put(url.searchParams.get("key"), bytes);
          return new Response("stored");
        } catch (e) {
          return new Response(`${e.name}: ${e.message}`, { status: 507 });
        }
      }
      case "/sql-big": {
        try {
          s.sql.exec("CREATE TABLE IF NOT EXISTS blobs (b BLOB)");
          s.sql.exec("INSERT INTO blobs VALUES (?)", new Uint8Array(Number(url.searchParams.get("kb")) * 1024));
          return new Response("stored");
        } catch (e) {
          return new Response(`${e.name}: ${e.message}`, { status: 507 });
        }
      }
      case "/throw": throw new Error("object failed on purpose");
      case "/spin": while (true) {}
    }
    return new Response("no route", { status: 404 });
  }
  async add(n) {
    const v = ((await this.ctx.storage.get("v")) ?? 0) + n;
    await this.ctx.storage.put("v", v);
    return { v, echo: [n, new Map([["k", "v"]])] };
  }
  async fail() { throw new RangeError("rpc failed on purpose"); }
  async alarm(info) {
    const s = this.ctx.storage;
    const runs = (await s.get("alarm-runs")) ?? [];
    runs.push({ retryCount: info.retryCount, isRetry: info.isRetry, at: Date.now() });
    await s.put("alarm-runs", runs);
    if (info.retryCount < ((await s.get("fail-until")) ?? 0)) throw new Error("alarm fails on purpose");
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const name = url.searchParams.get("name") ?? "main";
    try {
      switch (url.pathname) {
        case "/ids": {
          const a = env.COUNTER.idFromName("x");
          const b = env.COUNTER.idFromName("x");
          const u = env.COUNTER.newUniqueId();
          let bad = null, badGet = null;
          try { env.COUNTER.idFromString("not-an-id"); } catch (e) { bad = e.name; }
          try { env.COUNTER.get("nope"); } catch (e) { badGet = e.name; }
          return Response.json({
            hex: /^[0-9a-f]{64}$/.test(a.toString()), same: a.equals(b), name: a.name,
            unique: u.toString() !== a.toString() && /^[0-9a-f]{64}$/.test(u.toString()),
            roundTrip: env.COUNTER.idFromString(a.toString()).equals(a), bad, badGet,
          });
        }
        case "/rpc": {
          const r = await env.COUNTER.getByName(name).add(5);
          return Response.json({ v: r.v, echo0: r.echo[0], echoMap: r.echo[1].get("k") });
        }
        case "/rpc-fail":
          try { await env.COUNTER.getByName(name).fail(); } catch (e) { return Response.json({ message: e.message, remote: e.remote === true, rangeError: e instanceof RangeError }); }
          return new Response("no error");
        case "/caught": {
          try { await env.COUNTER.getByName(name).fetch("http://do/throw"); } catch (e) { return Response.json({ message: e.message, name: e.name, remote: e.remote === true }); }
          return new Response("no error");
        }
        case "/caught-spin": {
          try { await env.COUNTER.getByName(name).fetch("http://do/spin"); } catch (e) { return Response.json({ message: e.message, overloaded: e.overloaded === true, remote: e.remote === true }); }
          return new Response("no error");
        }
      }
      return await env.COUNTER.getByName(name).fetch(request);
    } catch (e) {
      return Response.json({ error: e.name, message: e.message }, { status: 500 });
    }
  },
};
"#;

fn start(extra: &str) -> TestNode {
    let node = TestNode::start_with(extra);
    let (status, body) = node.deploy(
        "objects",
        WORKER,
        json!([{"type":"durable_object_namespace","name":"COUNTER","class_name":"Counter"}]),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    node
}

fn get_json(node: &TestNode, path: &str) -> Value {
    let (status, body) = node.get_worker("objects", path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn hammer(node: &TestNode, path: &str, threads: usize, per_thread: usize) -> Vec<String> {
    let url = format!("{}{path}", node.data);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                (0..per_thread)
                    .map(|_| {
                        let r = client
                            .get(&url)
                            .header("host", "objects.workers.localhost")
                            .send()
                            .unwrap();
                        assert_eq!(r.status().as_u16(), 200);
                        r.text().unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

#[test]
fn one_actor_per_id_counts_exactly() {
    let node = start("");
    let answers = hammer(&node, "/inc", 64, 10_000 / 64 + 1);
    let n = answers.len() as u64;
    assert_eq!(get_json(&node, "/get")["v"], n);
    // Every increment saw a distinct value: one actor, one event at a time.
    let distinct: BTreeSet<u64> = answers.iter().map(|a| a.parse().unwrap()).collect();
    assert_eq!(distinct.len() as u64, n);
    assert_eq!(*distinct.iter().max().unwrap(), n);
}

#[test]
fn input_gate_keeps_events_from_interleaving() {
    let node = start("");
    let answers = hammer(&node, "/slow-inc", 16, 10);
    assert_eq!(
        get_json(&node, "/get")["slow"],
        answers.len() as u64,
        "lost updates: events interleaved at storage awaits"
    );
    let answers = hammer(&node, "/blocked-inc", 16, 10);
    assert_eq!(
        get_json(&node, "/get")["blocked"],
        answers.len() as u64,
        "lost updates: blockConcurrencyWhile let events in"
    );
    // The constructor's blockConcurrencyWhile held the first event back.
    assert_eq!(get_json(&node, "/ready?name=fresh")["ready"], true);
    // A blockConcurrencyWhile callback that throws resets the object.
    let before = get_json(&node, "/whoami?name=bcw")["instance"].clone();
    let (status, body) = node.get_worker("objects", "/bcw-throw?name=bcw");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("init failed on purpose"), "{body}");
    let after = get_json(&node, "/whoami?name=bcw")["instance"].clone();
    assert_ne!(before, after, "the object was not reset");
}

#[test]
fn input_gate_opens_while_an_event_awaits_other_io() {
    let node = start("");
    // /wait is parked on a promise that only /release settles: with a gate that
    // held every event until the previous answered, this would never finish.
    let url = format!("{}/wait?name=gate", node.data);
    let waiter = std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
            .get(&url)
            .header("host", "objects.workers.localhost")
            .send()
            .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // The release may arrive before the waiter's event: it then resolves the
    // promise early and the waiter returns at once, which passes as well.
    loop {
        let (status, body) = node.get_worker("objects", "/release?name=gate");
        assert_eq!(status, 200, "{body}");
        if waiter.is_finished() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = waiter
        .join()
        .unwrap()
        .expect("the waiting event never finished");
    assert_eq!((status, body.as_str()), (200, "released"));

    // Re-entrant calls: A awaits B, which calls A back.
    let (status, body) = node.get_worker("objects", "/ping?name=a1&peer=b1");
    assert_eq!((status, body.as_str()), (200, "1"));
    assert_eq!(get_json(&node, "/get?name=a1")["v"], 1);
    // ... and a chain that never ends is cut at the depth limit.
    let (status, body) = node.get_worker("objects", "/ping-forever?name=a2&peer=b2");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("Subrequest depth limit exceeded"), "{body}");
}

#[test]
fn object_responses_stream() {
    use std::io::Read;
    let node = start("");
    let mut response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(format!("{}/stream?name=streamer", node.data))
        .header("host", "objects.workers.localhost")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut first = [0u8; 6];
    response
        .read_exact(&mut first)
        .expect("the first chunk did not arrive before the body ended");
    assert_eq!(&first, b"first;");
    let (status, body) = node.get_worker("objects", "/release?name=streamer");
    assert_eq!((status, body.as_str()), (200, "ok"));
    let mut rest = String::new();
    response.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "second");
}

/// An origin that, for `GET /check/<id>`, answers whether object `<id>`'s
/// database already holds the key `gated` at the moment the request arrives.
fn durability_origin(data_dir: std::path::PathBuf) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let id = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .trim_start_matches("/check/");
            // Objects live under their worker's storage id: do/<storage>/<class>/<id>.db.
            let db = std::fs::read_dir(data_dir.join("do"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join(format!("Counter/{id}.db")))
                .find(|p| p.exists())
                .unwrap_or_default();
            let found = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM _edged_kv WHERE key = 'gated'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .map(|n| if n == 1 { "found" } else { "missing" })
            .unwrap_or("no database");
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{found}",
                found.len()
            );
        }
    });
    url
}

#[test]
fn output_gate_holds_outgoing_fetch_until_writes_are_durable() {
    let node = start("[egress]\nallow = [\"127.0.0.1\"]\n");
    let origin = durability_origin(node.data_dir());
    let (status, body) = node.get_worker(
        "objects",
        &format!("/put-then-fetch?name=gated&origin={origin}"),
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "found"),
        "the fetch left before the write was durable"
    );
}

const SHARED: &str = r#"
let constructed = 0;
const ticks = {};
export class Room {
  constructor(ctx) {
    this.ctx = ctx; constructed += 1; this.seen = constructed;
    const name = ctx.id.name;
    if (name.startsWith("tick")) setInterval(() => { ticks[name] = (ticks[name] ?? 0) + 1; }, 10);
  }
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === "/spin") while (true) {}
    const v = ((await this.ctx.storage.get("v")) ?? 0) + 1;
    await this.ctx.storage.put("v", v);
    return Response.json({ v, constructed, seen: this.seen, ticks });
  }
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    try {
      return await env.ROOM.getByName(url.searchParams.get("name")).fetch(request);
    } catch (e) {
      return Response.json({ error: e.message, overloaded: e.overloaded === true }, { status: 500 });
    }
  },
};
"#;

/// A node with one isolate thread (so every object of a worker lands in the
/// same host) serving SHARED as "rooms"; `extra` is more config.
fn start_rooms(extra: &str) -> TestNode {
    let node = TestNode::start_with(&format!("[isolates]\nthreads = 1\n{extra}"));
    let (status, body) = node.deploy(
        "rooms",
        SHARED,
        json!([{"type":"durable_object_namespace","name":"ROOM","class_name":"Room"}]),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    node
}

fn room_json(node: &TestNode, path: &str) -> Value {
    let (status, body) = node.get_worker("rooms", path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

#[test]
fn objects_of_a_worker_share_an_isolate_and_cost_little_memory() {
    let node = start_rooms("");
    let room = |path: &str| room_json(&node, path);
    // Module globals are shared (as Workers allows); instances are not.
    assert_eq!(room("/?name=a")["seen"], 1);
    assert_eq!(room("/?name=b")["seen"], 2);
    let a = room("/?name=a");
    assert_eq!(
        (
            a["v"].as_u64(),
            a["seen"].as_u64(),
            a["constructed"].as_u64()
        ),
        (Some(2), Some(1), Some(2))
    );

    // 200 more live objects: a few hundred KiB each, not an isolate each (the
    // per-object isolates this replaced took about 3.3 MiB apiece).
    let before = node.rss_kib();
    for i in 0..200 {
        room(&format!("/?name=m{i}"));
    }
    let grown = node.rss_kib().saturating_sub(before);
    assert!(
        grown < 200 * 1024,
        "200 live objects grew RSS by {grown} KiB"
    );
    let m = node.metrics();
    assert_eq!(TestNode::metric_in(&m, "edged_do_hosts"), Some(1.0), "{m}");
    assert!(
        TestNode::metric_in(&m, "edged_do_live_objects").unwrap_or(0.0) >= 202.0,
        "{m}"
    );

    // A runaway object kills the shared isolate: the others reset too, keep
    // their storage, and are served again by a fresh host.
    let (status, body) = node.get_worker("rooms", "/spin?name=spinner");
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("\"overloaded\":true"), "{body}");
    let a = room("/?name=a");
    assert_eq!(
        (a["v"].as_u64(), a["seen"].as_u64()),
        (Some(3), Some(1)),
        "{a}"
    );
}

#[test]
fn a_hibernated_object_takes_its_timers_out_of_the_shared_isolate() {
    let node = start_rooms("[durable_objects]\nhibernate_after_s = 1\n");
    let room = |path: &str| room_json(&node, path);
    // tick1 starts an interval in its constructor; the watcher, kept busy, keeps
    // the shared isolate alive while tick1 goes idle and hibernates.
    room("/?name=tick1");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        room("/?name=watcher");
        if TestNode::metric_in(&node.metrics(), "edged_do_hibernations_total").unwrap_or(0.0) >= 1.0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tick1 never hibernated"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = room("/?name=watcher")["ticks"]["tick1"].clone();
    assert!(
        before.as_u64().unwrap_or(0) > 0,
        "the interval never ran: {before}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let after = room("/?name=watcher")["ticks"]["tick1"].clone();
    assert_eq!(before, after, "the hibernated object's interval still runs");
}

#[test]
fn storage_api_and_limits() {
    let node = start("");
    // Write coalescing: 100 puts without an await commit as one transaction.
    let commits = |node: &TestNode| -> u64 {
        TestNode::metric_in(&node.metrics(), "edged_do_commit_batch_events_count").unwrap_or(0.0)
            as u64
    };
    get_json(&node, "/whoami"); // activate
    let before = commits(&node);
    assert_eq!(node.get_worker("objects", "/many"), (200, "ok".to_owned()));
    assert_eq!(
        commits(&node) - before,
        1,
        "100 puts without await must be one commit"
    );

    assert_eq!(get_json(&node, "/txn"), json!({"t": "before", "t2": null}));
    assert_eq!(
        get_json(&node, "/clone"),
        json!({"map":true,"set":true,"date":true,"buf":true,"typed":true,"big":true,"nested":true})
    );
    assert_eq!(
        get_json(&node, "/limits"),
        json!({"entryUnder":"ok","entryOver":"RangeError","get128":"ok","get129":"RangeError","delete129":"RangeError","undefinedValue":"TypeError"})
    );
    assert_eq!(
        get_json(&node, "/list"),
        json!({
            "all": ["l:a","l:b","l:c","l:d"], "start": ["l:b","l:c","l:d"], "startAfter": ["l:c","l:d"],
            "end": ["l:a","l:b"], "reverse": ["l:d","l:c"]
        })
    );
}

#[test]
fn sql_api() {
    let node = start("");
    let v = get_json(&node, "/sql?name=sql");
    assert_eq!(v["written"], 2);
    assert_eq!(v["cols"], json!(["id", "name", "score", "data"]));
    assert_eq!(
        v["rows"],
        json!([{"id":1,"name":"a","score":1.5,"data":[1,2]},{"id":2,"name":"b","score":2,"data":null}])
    );
    assert_eq!(v["n"], 2);
    assert_eq!(v["raw"], json!([["a"], ["b"]]));
    assert_eq!(
        v["errs"],
        json!({"reserved":"TypeError","syntax":"TypeError","oneOfMany":"Error","bindings100":"ok","bindings101":"RangeError","tooLong":"RangeError"})
    );
    assert_eq!(v["size"], true);
    assert_eq!(
        v["fresh"], 4096,
        "a new object's databaseSize, as Workers reports it"
    );
    // SQL writes are durable and survive reactivation of the table data.
    let again = get_json(&node, "/sql?name=sql");
    assert_eq!(again["n"], 4);
    // SQL inside transaction()/transactionSync() rolls back with it.
    assert_eq!(
        get_json(&node, "/sql-txn?name=sqltxn"),
        json!({"rows": [2], "kv": null})
    );
}

#[test]
fn acknowledged_sql_writes_survive_a_kill() {
    let mut node = start("");
    let mut last = 0u64;
    for _ in 0..20 {
        let (s, b) = node.get_worker("objects", "/sql-count?name=sqlkill");
        assert_eq!(s, 200, "{b}");
        last = b.parse().expect("count");
    }
    assert_eq!(last, 20);
    // The output gate released each answer only after its SQL write committed.
    node.restart();
    let (s, b) = node.get_worker("objects", "/sql-count?name=sqlkill");
    assert_eq!((s, b.as_str()), (200, "21"));
}

#[test]
fn ids_rpc_and_errors() {
    let node = start("");
    assert_eq!(
        get_json(&node, "/ids"),
        json!({"hex":true,"same":true,"name":"x","unique":true,"roundTrip":true,"bad":"TypeError","badGet":"TypeError"})
    );
    assert_eq!(
        get_json(&node, "/rpc?name=r"),
        json!({"v": 5, "echo0": 5, "echoMap": "v"})
    );
    assert_eq!(
        get_json(&node, "/rpc?name=r"),
        json!({"v": 10, "echo0": 5, "echoMap": "v"})
    );
    let who = get_json(&node, "/whoami?name=r");
    assert_eq!(who["name"], "r");
    assert_eq!(
        get_json(&node, "/rpc-fail?name=r"),
        json!({"message": "rpc failed on purpose", "remote": true, "rangeError": true})
    );
    assert_eq!(
        get_json(&node, "/caught?name=r"),
        json!({"message": "object failed on purpose", "name": "Error", "remote": true})
    );
    let spin = get_json(&node, "/caught-spin?name=spin");
    assert_eq!(spin["overloaded"], true, "{spin}");
    assert_eq!(spin["remote"], true);
    // The object was reset and serves again with its storage intact.
    assert_eq!(get_json(&node, "/rpc?name=r")["v"], 15);
    assert_eq!(node.get_worker("objects", "/inc?name=spin").1, "1");
}

#[test]
fn hibernation_keeps_storage() {
    let node = start("[durable_objects]\nhibernate_after_s = 1\n");
    assert_eq!(node.get_worker("objects", "/inc?name=h").1, "1");
    let first = get_json(&node, "/whoami?name=h")["instance"].clone();
    assert_eq!(
        get_json(&node, "/whoami?name=h")["instance"],
        first,
        "same instance while active"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let second = get_json(&node, "/whoami?name=h")["instance"].clone();
    assert_ne!(
        second, first,
        "object was not reconstructed after hibernating"
    );
    assert_eq!(
        node.get_worker("objects", "/inc?name=h").1,
        "2",
        "storage lost across hibernation"
    );
    let m = node.metrics();
    assert!(
        TestNode::metric_in(&m, "edged_do_hibernations_total").unwrap_or(0.0) > 0.0,
        "{m}"
    );
}

#[test]
fn kill_after_responses_loses_no_acknowledged_increment() {
    let mut node = start("");
    let highest = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{}/inc?name=durable", node.data);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (highest, acked, stop, url) =
                (highest.clone(), acked.clone(), stop.clone(), url.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    match client
                        .get(&url)
                        .header("host", "objects.workers.localhost")
                        .send()
                    {
                        Ok(r) if r.status().is_success() => {
                            let v: u64 = r.text().unwrap().parse().unwrap();
                            highest.fetch_max(v, Ordering::SeqCst);
                            *acked.lock().unwrap() += 1;
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    node.kill();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let highest = highest.load(Ordering::SeqCst);
    assert!(highest > 20, "too few increments: {highest}");
    node.restart();
    let stored = get_json(&node, "/get?name=durable")["v"].as_u64().unwrap();
    assert!(
        stored >= highest,
        "acknowledged {highest} but only {stored} survived the kill"
    );
}

fn wait_for_runs(node: &TestNode, name: &str, n: usize, within: Duration) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let state = get_json(node, &format!("/alarm-state?name={name}"));
        if state["runs"].as_array().map(|r| r.len()).unwrap_or(0) >= n {
            return state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alarm runs did not reach {n}: {state}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn alarms_run_at_their_time_and_retry_with_backoff() {
    let node = start("");
    let set = get_json(&node, "/alarm-set?name=a&in=400");
    let at = set["at"].as_u64().unwrap();
    assert_eq!(
        get_json(&node, "/alarm-state?name=a")["runs"],
        json!([]),
        "ran early"
    );
    let state = wait_for_runs(&node, "a", 1, Duration::from_secs(10));
    let ran = state["runs"][0]["at"].as_u64().unwrap();
    assert!(ran >= at, "alarm ran {} ms before its time", at - ran);
    assert_eq!(state["runs"][0]["retryCount"], 0);
    assert_eq!(state["alarm"], Value::Null, "a finished alarm is cleared");

    // A handler that throws twice is retried with 1 s, then 2 s backoff.
    assert_eq!(
        node.get_worker("objects", "/alarm-fail?name=r&n=2"),
        (200, "ok".to_owned())
    );
    get_json(&node, "/alarm-set?name=r&in=100");
    let state = wait_for_runs(&node, "r", 3, Duration::from_secs(15));
    let runs = state["runs"].as_array().unwrap();
    let retries: Vec<u64> = runs
        .iter()
        .map(|r| r["retryCount"].as_u64().unwrap())
        .collect();
    assert_eq!(retries, vec![0, 1, 2]);
    assert_eq!(runs[1]["isRetry"], true);
    let t: Vec<u64> = runs.iter().map(|r| r["at"].as_u64().unwrap()).collect();
    assert!(
        t[1] - t[0] >= 950 && t[2] - t[1] >= 1950,
        "backoff too short: {t:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get_json(&node, "/alarm-state?name=r")["alarm"], Value::Null);
}

#[test]
fn alarms_survive_restart_and_hibernation() {
    let mut node = start("[durable_objects]\nhibernate_after_s = 1\n");
    // Hibernation: the object sleeps before its alarm is due and is woken by it.
    get_json(&node, "/alarm-set?name=sleepy&in=3000");
    std::thread::sleep(Duration::from_millis(2000));
    let m = node.metrics();
    assert!(
        TestNode::metric_in(&m, "edged_do_hibernations_total").unwrap_or(0.0) > 0.0,
        "{m}"
    );
    wait_for_runs(&node, "sleepy", 1, Duration::from_secs(10));

    // Restart: an alarm set just before a kill -9 still runs after the restart.
    get_json(&node, "/alarm-set?name=restart&in=1500");
    node.restart();
    wait_for_runs(&node, "restart", 1, Duration::from_secs(10));
}

#[test]
fn live_objects_are_capped_and_objects_are_size_capped() {
    let node = start("[durable_objects]\nmax_live = 2\nmax_object_mb = 1\n");
    // Four objects touched in turn: past two live ones, the least recently used
    // idle ones are evicted, and come back with their storage when called again.
    for name in ["a", "b", "c", "d"] {
        let (s, b) = node.get_worker("objects", &format!("/inc?name={name}"));
        assert_eq!((s, b.as_str()), (200, "1"), "{name}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = node.metrics();
        let evicted = TestNode::metric_in(&m, "edged_do_evictions_total").unwrap_or(0.0);
        let live = TestNode::metric_in(&m, "edged_do_live_objects").unwrap_or(99.0);
        if evicted >= 2.0 && live <= 2.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no eviction: {m}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for name in ["a", "b", "c", "d"] {
        assert_eq!(
            get_json(&node, &format!("/get?name={name}"))["v"],
            1,
            "{name}"
        );
    }

    // 1 MiB per object: key-value writes past it fail with a clear error, SQL
    // writes past it fail in SQLite, and the object keeps serving.
    let (s, b) = node.get_worker("objects", "/big?name=full&key=k1&kb=600");
    assert_eq!((s, b.as_str()), (200, "stored"));
    let (s, b) = node.get_worker("objects", "/big?name=full&key=k2&kb=600");
    assert_eq!(s, 507, "{b}");
    assert!(b.contains("storage limit exceeded"), "{b}");
    let (s, b) = node.get_worker("objects", "/sql-big?name=full&kb=900");
    assert_eq!(s, 507, "{b}");
    assert!(b.contains("full"), "{b}");
    let (s, b) = node.get_worker("objects", "/inc?name=full");
    assert_eq!((s, b.as_str()), (200, "1"));
    let m = node.metrics();
    let stored = TestNode::metric_in(&m, "edged_do_storage_bytes").unwrap_or(0.0);
    assert!(stored > 600.0 * 1024.0, "{m}");
}

#[test]
fn a_redeploy_moves_live_objects_to_the_new_version() {
    let node = TestNode::start();
    let source = |tag: &str| {
        format!(
            r#"
import {{ DurableObject }} from "cloudflare:workers";
export class Versioned extends DurableObject {{
  async fetch() {{
    const n = ((await this.ctx.storage.get("n")) ?? 0) + 1;
    await this.ctx.storage.put("n", n);
    return new Response("{tag} " + n);
  }}
}}
export default {{ fetch(req, env) {{ return env.V.getByName("one").fetch(req); }} }};
"#
        )
    };
    let bindings = json!([{"type":"durable_object_namespace","name":"V","class_name":"Versioned"}]);
    let (s, b) = node.deploy("ver", &source("v1"), bindings.clone(), &[]);
    assert_eq!(s, 200, "{b}");
    assert_eq!(node.get_worker("ver", "/"), (200, "v1 1".to_owned()));
    let (s, b) = node.deploy("ver", &source("v2"), bindings, &[]);
    assert_eq!(s, 200, "{b}");
    // Within a few seconds the idle object is retired; its storage carries over.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 1;
    loop {
        let (s, body) = node.get_worker("ver", "/");
        assert_eq!(s, 200, "{body}");
        n += 1;
        if body.starts_with("v2") {
            assert_eq!(body, format!("v2 {n}"), "storage kept across versions");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still old code: {body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn an_alarm_that_always_throws_is_dropped_after_six_retries() {
    // 1 + 2 + 4 + 8 + 16 + 32 s of backoff: about 63 s, bounded below.
    let node = start("");
    assert_eq!(
        node.get_worker("objects", "/alarm-fail?name=doomed&n=100"),
        (200, "ok".to_owned())
    );
    get_json(&node, "/alarm-set?name=doomed&in=50");
    let state = wait_for_runs(&node, "doomed", 7, Duration::from_secs(90));
    let retries: Vec<u64> = state["runs"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["retryCount"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(retries, vec![0, 1, 2, 3, 4, 5, 6]);
    // Dropped: no further run, and the object no longer reports the alarm.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = get_json(&node, "/alarm-state?name=doomed");
        if state["alarm"].is_null() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alarm still set: {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let runs = get_json(&node, "/alarm-state?name=doomed")["runs"]
        .as_array()
        .map(|r| r.len())
        .unwrap_or(0);
    assert_eq!(runs, 7, "no run after the last retry");
}
