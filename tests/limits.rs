//! End-to-end: per-isolate CPU and memory limits stop the offender, not the node or
//! other workers.

mod common;

use std::time::{Duration, Instant};

use common::TestNode;
use serde_json::Value;

const STEADY: &str = "export default { fetch() { return new Response('steady'); } }";

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// `GET path` on `worker` from another thread: status, body and how long it took.
fn get_in_background(
    node: &TestNode,
    worker: &str,
    path: &str,
) -> std::thread::JoinHandle<(u16, String, Duration)> {
    let http = node.http.clone();
    let url = format!("{}{path}", node.data);
    let host = format!("{worker}.workers.localhost");
    std::thread::spawn(move || {
        let started = Instant::now();
        let r = http.get(url).header("host", host).send().unwrap();
        (r.status().as_u16(), r.text().unwrap(), started.elapsed())
    })
}

#[test]
fn infinite_loop_is_stopped_by_the_cpu_limit() {
    let node = TestNode::start();
    node.deploy_ok("steady", STEADY);
    node.deploy_ok(
        "spin",
        "export default { async fetch(req) {
            if (new URL(req.url).pathname === '/ok') return new Response('ok');
            while (true) {}
        } }",
    );

    // The other worker keeps answering while the loop runs.
    let spinner = get_in_background(&node, "spin", "/loop");
    for _ in 0..20 {
        assert_eq!(node.get_worker("steady", "/"), (200, "steady".to_owned()));
    }
    let (status, body, took) = spinner.join().unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(json(&body)["error"]["code"], "cpu_limit_exceeded");
    assert!(took < Duration::from_secs(10), "loop ran for {took:?}");

    // The isolate was replaced: the same worker serves again.
    assert_eq!(node.get_worker("spin", "/ok"), (200, "ok".to_owned()));

    // An await-heavy request that uses little CPU is not penalised for wall time.
    node.deploy_ok(
        "sleepy",
        "export default { async fetch() { await new Promise(r => setTimeout(r, 300)); return new Response('rested'); } }",
    );
    assert_eq!(node.get_worker("sleepy", "/"), (200, "rested".to_owned()));

    let metrics = node.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("edged_limit_kills_total")
                && l.contains("limit=\"cpu\"")
                && l.contains("worker=\"spin\"")),
        "{metrics}"
    );
}

#[test]
fn memory_bomb_is_stopped_by_the_heap_limit() {
    let mut node = TestNode::start_with("[limits]\nmemory_mb = 64\ncpu_ms = 10000\n");
    node.deploy_ok("steady", STEADY);
    node.deploy_ok(
        "bomb",
        "export default { fetch(req) {
            if (new URL(req.url).pathname === '/ok') return new Response('ok');
            const hoard = [];
            while (true) hoard.push(new Array(100000).fill({ x: Math.random() }));
        } }",
    );
    let (status, body) = node.get_worker("bomb", "/");
    assert_eq!(status, 503, "{body}");
    assert_eq!(json(&body)["error"]["code"], "memory_limit_exceeded");
    assert!(node.alive(), "the node process died");
    assert_eq!(node.get_worker("steady", "/"), (200, "steady".to_owned()));
    assert_eq!(node.get_worker("bomb", "/ok"), (200, "ok".to_owned()));

    let metrics = node.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("edged_limit_kills_total") && l.contains("limit=\"memory\"")),
        "{metrics}"
    );
}

#[test]
fn a_huge_string_fails_its_request_not_the_node() {
    let mut node = TestNode::start();
    node.deploy_ok("steady", STEADY);
    node.deploy_ok(
        "stringer",
        "export default { fetch() { return new Response(String(JSON.stringify('x'.repeat(300 << 20)).length)); } }",
    );
    for _ in 0..3 {
        let (status, body) = node.get_worker("stringer", "/");
        assert_eq!(status, 503, "{body}");
        assert_eq!(json(&body)["error"]["code"], "memory_limit_exceeded");
        assert!(node.alive(), "the node died:\n{}", node.log());
        assert_eq!(node.get_worker("steady", "/"), (200, "steady".to_owned()));
    }
}

#[test]
fn array_buffers_count_against_the_memory_limit() {
    // CPU to spare: touching 100 MiB of fresh pages takes tens of milliseconds.
    let mut node = TestNode::start_with("[limits]\ncpu_ms = 2000\n");
    node.deploy_ok("steady", STEADY);
    node.deploy_ok(
        "hoarder",
        "export default { fetch(req) {
            const u = new URL(req.url);
            try {
              if (u.pathname === '/one') { const b = new Uint8Array(1536 << 20); b.fill(1); return new Response('got ' + b.length); }
              const all = [];
              for (let i = 0; i < 200; i++) { const b = new Uint8Array(16 << 20); b.fill(1); all.push(b); }
              return new Response('got all');
            } catch (e) { return new Response(`${e.name}: ${e.message}`); }
        } }",
    );
    let before = node.rss_kib();
    let (status, body) = node.get_worker("hoarder", "/one");
    assert_eq!(status, 200);
    assert!(body.starts_with("RangeError"), "{body}");
    let (_, body) = node.get_worker("hoarder", "/many");
    assert!(body.starts_with("RangeError"), "{body}");
    let grown = node.rss_kib().saturating_sub(before);
    println!(
        "1.5 GiB and 200 × 16 MiB refused: RSS grew by {} MiB",
        grown >> 10
    );
    assert!(grown < 256 << 10, "RSS grew by {} MiB", grown >> 10);
    assert!(node.alive());
    assert_eq!(node.get_worker("steady", "/"), (200, "steady".to_owned()));
}

#[test]
fn a_handler_that_can_never_answer_is_answered_at_once() {
    let node = TestNode::start_with("[limits]\nresponse_timeout_s = 2\n");
    node.deploy_ok(
        "hang",
        "export default { async fetch(req) {
            const u = new URL(req.url);
            if (u.pathname === '/forever') return new Promise(() => {});
            if (u.pathname === '/await') { await new Promise(() => {}); return new Response('no'); }
            // Pending timers keep the event loop busy: only the timeout can end it.
            await new Promise((r) => setTimeout(r, 3600 * 1000));
            return new Response('late');
        } }",
    );
    for path in ["/forever", "/await"] {
        let started = Instant::now();
        let (status, body) = node.get_worker("hang", path);
        assert_eq!(status, 500, "{body}");
        assert_eq!(json(&body)["error"]["code"], "worker_never_responded");
        assert_eq!(
            json(&body)["error"]["message"],
            "The script will never generate a response."
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    let started = Instant::now();
    let (status, body) = node.get_worker("hang", "/timer");
    assert_eq!(status, 504, "{body}");
    assert_eq!(json(&body)["error"]["code"], "worker_timeout");
    assert!(started.elapsed() < Duration::from_secs(6));
}

/// The node's `edged_request_contexts` gauge.
fn live_contexts(node: &TestNode) -> f64 {
    TestNode::metric_in(&node.metrics(), "edged_request_contexts").unwrap_or(0.0)
}

#[test]
fn abandoned_requests_leave_nothing_behind() {
    use std::io::Write;
    let node = TestNode::start_with("[limits]\nresponse_timeout_s = 1\n");
    node.deploy_ok(
        "slow",
        "export default { async fetch() { await new Promise((r) => setTimeout(r, 3600 * 1000)); return new Response('late'); } }",
    );
    assert_eq!(node.get_worker("slow", "/").0, 504, "warm-up failed");
    let before = node.rss_kib();
    let addr = node.data.trim_start_matches("http://").to_owned();
    for _ in 0..10 {
        let mut clients = Vec::new();
        for _ in 0..200 {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nhost: slow.workers.localhost\r\n\r\n")
                .unwrap();
            clients.push(s);
        }
        std::thread::sleep(Duration::from_millis(300));
        drop(clients);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while live_contexts(&node) > 0.0 {
        assert!(
            Instant::now() < deadline,
            "{} requests still alive after their clients left",
            live_contexts(&node)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let grown = node.rss_kib().saturating_sub(before);
    println!("2,000 abandoned requests: RSS grew by {} KiB", grown);
    assert!(grown < 64 << 10, "RSS grew by {} MiB", grown >> 10);
}

#[test]
fn object_and_service_calls_count_as_subrequests() {
    let node = TestNode::start_with("[limits]\nsubrequests = 4\n");
    let source = r#"
export class Obj { async fetch() { return new Response("o"); } ping() { return "p"; } }
export default { async fetch(req, env) {
  const u = new URL(req.url);
  if (u.pathname === "/leaf") return new Response("leaf");
  let n = 0;
  try {
    for (let i = 0; i < 10; i++) {
      if (u.pathname === "/objects") await env.O.getByName("x" + i).fetch("https://o/");
      else if (u.pathname === "/rpc") await env.O.getByName("x").ping();
      else await env.SELF.fetch("https://self/leaf");
      n++;
    }
  } catch (e) { return new Response(`${n} then ${e.message}`); }
  return new Response(`${n} calls`);
} }"#;
    let (status, body) = node.deploy(
        "counted",
        source,
        serde_json::json!([
            {"type": "durable_object_namespace", "name": "O", "class_name": "Obj"},
            {"type": "service", "name": "SELF", "service": "counted"}
        ]),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    for path in ["/objects", "/rpc", "/service"] {
        let (_, b) = node.get_worker("counted", path);
        assert!(b.starts_with("4 then Too many subrequests."), "{path}: {b}");
    }
}

/// Latencies of `n` requests to `worker` on `node`, one after another.
fn latencies(node: &TestNode, worker: &str, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(node.get_worker(worker, "/").0, 200);
            std::thread::sleep(Duration::from_millis(5));
            started.elapsed()
        })
        .collect()
}

const BURNER: &str = r#"
let ticks = 0;
function burn(ms) { const end = Date.now() + ms; let x = 0; while (performance.now() >= 0 && x < 1e12) { x++; if ((x & 0xffff) === 0 && stop()) break; } return x; }
let deadline = 0;
function stop() { return false; }
export class Db {
  constructor(ctx) { this.ctx = ctx; }
  async fetch() {
    try {
      const r = this.ctx.storage.sql.exec("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) AS n FROM c").one();
      return new Response("finished " + r.n);
    } catch (e) { return new Response(`${e.name}: ${e.message}`); }
  }
}
export default { async fetch(req, env, ctx) {
  const u = new URL(req.url);
  switch (u.pathname) {
    case "/pbkdf2": {
      const key = await crypto.subtle.importKey("raw", new Uint8Array(16), "PBKDF2", false, ["deriveBits"]);
      try { await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: new Uint8Array(16), iterations: 3_000_000 }, key, 256); return new Response("derived"); }
      catch (e) { return new Response(`${e.name}: ${e.message}`); }
    }
    case "/pbkdf2-many": {
      const key = await crypto.subtle.importKey("raw", new Uint8Array(16), "PBKDF2", false, ["deriveBits"]);
      for (let i = 0; i < 1000; i++) await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: new Uint8Array(16), iterations: 100_000 }, key, 256);
      return new Response("all derived");
    }
    case "/rsa": {
      const k = await crypto.subtle.generateKey({ name: "RSASSA-PKCS1-v1_5", modulusLength: 4096, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, false, ["sign"]);
      return new Response("generated");
    }
    case "/sql": return env.DB.get(env.DB.idFromName("q")).fetch(req);
    case "/wait-until": {
      ctx.waitUntil((async () => { for (;;) { await scheduler.wait(1); let x = 0; for (let i = 0; i < 2e6; i++) x += i; ticks++; } })());
      return new Response("responded");
    }
    case "/interval": {
      setInterval(() => { let x = 0; for (let i = 0; i < 2e6; i++) x += i; ticks++; }, 5);
      return new Response("started");
    }
    case "/ticks": return new Response(String(ticks));
  }
  return new Response("?");
} }
"#;

#[test]
fn cpu_outside_the_handler_is_charged_and_stopped_while_a_neighbour_answers() {
    let node = TestNode::start_with("[isolates]\nthreads = 1\n");
    node.deploy_ok("steady", STEADY);
    let (status, body) = node.deploy(
        "burner",
        BURNER,
        serde_json::json!([{"type": "durable_object_namespace", "name": "DB", "class_name": "Db"}]),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    latencies(&node, "steady", 5);

    // Web Crypto: Workers' PBKDF2 bound, and its time counted as CPU.
    let (_, b) = node.get_worker("burner", "/pbkdf2");
    assert!(
        b.starts_with("NotSupportedError: Pbkdf2 failed: iteration counts above 100000"),
        "{b}"
    );
    let started = Instant::now();
    let (s, b) = node.get_worker("burner", "/pbkdf2-many");
    assert_eq!(s, 503, "{b}");
    assert_eq!(json(&b)["error"]["code"], "cpu_limit_exceeded");
    println!("1,000 PBKDF2 calls stopped after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(5));
    let (s, b) = node.get_worker("burner", "/rsa");
    assert_eq!(
        (s, json(&b)["error"]["code"].clone()),
        (503, "cpu_limit_exceeded".into()),
        "{b}"
    );

    // SQL stops at the CPU limit, and the neighbour on the same thread answers.
    let sql = get_in_background(&node, "burner", "/sql");
    let slow = latencies(&node, "steady", 20);
    let (status, body, took) = sql.join().unwrap();
    assert!(
        status >= 500 || body.contains("interrupted"),
        "{status} {body}"
    );
    assert!(took < Duration::from_secs(3), "the query ran for {took:?}");
    let worst = slow.iter().max().copied().unwrap_or_default();
    println!(
        "runaway SQL answered after {took:?}; the neighbour's worst latency meanwhile {worst:?}"
    );
    // The target is 100 ms (measured in the note); the bound here is generous
    // because CI shares two cores with other tests, and still far below the
    // seconds the runaway would hold the thread if it were not interrupted.
    assert!(
        worst < Duration::from_millis(1000),
        "the neighbour waited {worst:?}"
    );

    // waitUntil work and intervals stop with their request's CPU budget.
    for path in ["/wait-until", "/interval"] {
        assert_eq!(node.get_worker("burner", path).0, 200);
        std::thread::sleep(Duration::from_millis(600));
        let (_, before) = node.get_worker("burner", "/ticks");
        std::thread::sleep(Duration::from_millis(600));
        let (_, after) = node.get_worker("burner", "/ticks");
        assert_eq!(before, after, "{path}: work went on past the CPU limit");
        let worst = latencies(&node, "steady", 10)
            .into_iter()
            .max()
            .unwrap_or_default();
        println!("{path}: stopped; the neighbour's worst latency after {worst:?}");
        assert!(
            worst < Duration::from_millis(1000),
            "{path}: the neighbour waited {worst:?}"
        );
    }
}

#[test]
fn a_waiting_request_is_not_charged_for_its_neighbours_cpu() {
    let node = TestNode::start_with("[isolates]\nthreads = 1\nmax_isolates = 1\nmin_warm = 1\n");
    node.deploy_ok(
        "shared",
        "export default { async fetch(req) {
            const u = new URL(req.url);
            if (u.pathname === '/wait') { await scheduler.wait(600); return new Response('waited'); }
            // ~15 ms of CPU after a short wait: each neighbour stays well under 50 ms
            // (even on a loaded machine), eight of them well over it.
            await scheduler.wait(10);
            const end = Date.now();
            let x = 0, n = 0;
            const t = performance.now();
            while (n++ < 2e7) x += n;
            return new Response('burned ' + (x > 0));
        } }",
    );
    assert_eq!(node.get_worker("shared", "/burn").0, 200, "warm-up");
    let waiter = get_in_background(&node, "shared", "/wait");
    std::thread::sleep(Duration::from_millis(50));
    let burners: Vec<_> = (0..8)
        .map(|_| get_in_background(&node, "shared", "/burn"))
        .collect();
    let results: Vec<_> = burners.into_iter().map(|b| b.join().unwrap()).collect();
    let (status, body, _) = waiter.join().unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "waited"),
        "neighbours: {results:?}"
    );
}
