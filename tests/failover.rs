//! Durable Objects survive the loss of their node: 3 real `nats-server`
//! (R3, fsync before ack) and 3 edged PoPs, concurrent increments from clients
//! on every PoP, the owner killed (`kill -9`, 10 times) or paused past its
//! lease (SIGSTOP, then SIGCONT). Each object's history is checked for
//! linearizability (a fetch-and-increment checker below): no acknowledged
//! write lost, no value given twice, real-time order kept.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{cluster_config, stream_leader, wait_members, NatsCore, Proxy};
use common::TestNode;
use serde_json::{json, Value};

const WORKER: &str = r#"
import { DurableObject } from "cloudflare:workers";

export class Counter extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS log (v INTEGER PRIMARY KEY, at TEXT)");
  }
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === "/read") {
      const n = (await this.ctx.storage.get("n")) ?? 0;
      const rows = this.ctx.storage.sql.exec("SELECT count(*) AS c, max(v) AS m FROM log").one();
      return Response.json({ n, rows: rows.c, max: rows.m ?? 0 });
    }
    if (url.pathname === "/fill") {
      // One event (one commit): `rows` blobs of `size` bytes, inserted or
      // rewritten in place.
      this.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS blob (k INTEGER PRIMARY KEY, b BLOB)");
      const rows = Number(url.searchParams.get("rows")), size = Number(url.searchParams.get("size"));
      const from = Number(url.searchParams.get("from") ?? 0);
      for (let k = from; k < from + rows; k++) {
        this.ctx.storage.sql.exec("INSERT OR REPLACE INTO blob (k, b) VALUES (?, randomblob(?))", k, size);
      }
      return Response.json({ ok: true });
    }
    if (url.pathname === "/blobs") {
      this.ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS blob (k INTEGER PRIMARY KEY, b BLOB)");
      const r = this.ctx.storage.sql.exec("SELECT count(*) AS c, coalesce(sum(length(b)), 0) AS bytes FROM blob").one();
      return Response.json({ rows: r.c, bytes: r.bytes });
    }
    const v = ((await this.ctx.storage.get("n")) ?? 0) + 1;
    await this.ctx.storage.put("n", v);
    this.ctx.storage.sql.exec("INSERT INTO log (v, at) VALUES (?, ?)", v, url.searchParams.get("c"));
    return Response.json({ v });
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const id = env.COUNTER.idFromName(url.searchParams.get("name") ?? "x");
    if (url.pathname === "/fill") {
      try {
        return await env.COUNTER.get(id).fetch(request);
      } catch (e) {
        return new Response(`${e.name}: ${e.message}`, { status: 503 });
      }
    }
    return env.COUNTER.get(id).fetch(request);
  },
};
"#;

fn deploy(node: &TestNode) {
    let (code, body) = node.deploy_body(
        "ctr",
        &json!({
            "main_module": "worker.js",
            "modules": { "worker.js": WORKER },
            "bindings": [{"type":"durable_object_namespace","name":"COUNTER","class_name":"Counter"}],
        }),
    );
    assert_eq!(code, 200, "{body}");
}

/// One increment as a client saw it: `value` when acknowledged, `None` when
/// its outcome is unknown (an error: it may or may not have applied).
#[derive(Clone, Debug)]
struct Op {
    start: Instant,
    end: Instant,
    value: Option<u64>,
}

/// Checks a history of fetch-and-increment operations on a counter that
/// started at 0 and reads `final_value` once everything has settled:
/// acknowledged values are distinct, an operation that ended before another
/// began returned a smaller value, every acknowledged value is in the final
/// state, and each value never acknowledged can be accounted for by a
/// distinct operation with an unknown outcome.
fn check_linearizable(history: &[Op], final_value: u64) -> Result<(), String> {
    let mut acked: Vec<&Op> = history.iter().filter(|o| o.value.is_some()).collect();
    let unknown = history.len() - acked.len();
    acked.sort_by_key(|o| o.value);
    for w in acked.windows(2) {
        if w[0].value == w[1].value {
            return Err(format!("value {:?} acknowledged twice", w[0].value));
        }
    }
    // Real time: walking down from the largest value, no op with a larger
    // value may have ended before this one started.
    let mut min_end_above: Option<Instant> = None;
    for op in acked.iter().rev() {
        if let Some(end) = min_end_above {
            if end < op.start {
                return Err(format!(
                    "value {:?} was returned to an operation that started after one that got a larger value had ended",
                    op.value
                ));
            }
        }
        min_end_above = Some(min_end_above.map_or(op.end, |e| e.min(op.end)));
    }
    let max = acked.last().and_then(|o| o.value).unwrap_or(0);
    if final_value < max {
        return Err(format!(
            "acknowledged value {max} lost: the counter reads {final_value}"
        ));
    }
    let gaps = final_value as usize - acked.len();
    if gaps > unknown {
        return Err(format!(
            "the counter reads {final_value} but only {} operations were acknowledged and {unknown} are unknown",
            acked.len()
        ));
    }
    Ok(())
}

/// Clients incrementing one object through every PoP until `stop`.
struct Load {
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Op>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(urls: &[String], name: &str, per_pop: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            for j in 0..per_pop {
                let (stop, history) = (stop.clone(), history.clone());
                let url = format!("{url}/inc?name={name}&c={i}.{j}");
                threads.push(std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .expect("client");
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        let value = http
                            .get(&url)
                            .header("host", "ctr.workers.localhost")
                            .send()
                            .ok()
                            .filter(|r| r.status() == 200)
                            .and_then(|r| r.json::<Value>().ok())
                            .and_then(|v| v["v"].as_u64());
                        let end = Instant::now();
                        history.lock().unwrap().push(Op { start, end, value });
                        if value.is_none() {
                            // A PoP that is down answers at once: do not spin.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }));
            }
        }
        Load {
            stop,
            history,
            threads,
        }
    }

    fn history(&self) -> Vec<Op> {
        self.history.lock().unwrap().clone()
    }

    fn finish(self) -> Vec<Op> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let h = self.history.lock().unwrap().clone();
        h
    }
}

/// Which node holds the object live (every object here stays live: the
/// test config hibernates after 600 s).
fn owner_of(nodes: &[TestNode]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let owners: Vec<usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                n.pid() != 0
                    && TestNode::metric_in(&n.metrics(), "edged_do_live_objects").unwrap_or(0.0)
                        >= 1.0
            })
            .map(|(i, _)| i)
            .collect();
        if owners.len() == 1 {
            return owners[0];
        }
        assert!(Instant::now() < deadline, "no single owner: {owners:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read(node: &TestNode, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = node.get_worker("ctr", &format!("/read?name={name}"));
        if code == 200 {
            return serde_json::from_str(&body).expect("json");
        }
        assert!(Instant::now() < deadline, "read failed: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until an acknowledged op ended after `since`; the gap between the
/// last acknowledgement before `since` and the first after it.
fn wait_recovery(load: &Load, since: Instant) -> Duration {
    wait_recovery_within(load, since, Duration::from_secs(20))
}

/// [`wait_recovery`], waiting up to `limit`.
fn wait_recovery_within(load: &Load, since: Instant, limit: Duration) -> Duration {
    let deadline = Instant::now() + limit;
    loop {
        let h = load.history();
        let after = h
            .iter()
            .filter(|o| o.value.is_some() && o.start > since)
            .map(|o| o.end)
            .min();
        if let Some(first) = after {
            let before = h
                .iter()
                .filter(|o| o.value.is_some() && o.end <= since)
                .map(|o| o.end)
                .max()
                .unwrap_or(since);
            return first.duration_since(before);
        }
        assert!(Instant::now() < deadline, "the object did not come back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Three PoPs on `core`, the counter worker deployed and served by each
/// (reading object `name`).
fn three_pops_serving(core: &NatsCore, name: &str) -> Vec<TestNode> {
    three_pops_with(core, name, "")
}

/// [`three_pops_serving`] with `extra` TOML appended to each node's config.
fn three_pops_with(core: &NatsCore, name: &str, extra: &str) -> Vec<TestNode> {
    let pop = |node: &str, region: &str| {
        TestNode::start_with(&format!(
            "{}{extra}",
            cluster_config(&core.urls, node, region)
        ))
    };
    let nodes = vec![pop("pop-a", "eu"), pop("pop-b", "us"), pop("pop-c", "ap")];
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3);
    deploy(&nodes[0]);
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        while n.get_worker("ctr", &format!("/read?name={name}")).0 != 200 {
            assert!(Instant::now() < deadline, "worker not served");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    nodes
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn killing_an_objects_owner_loses_no_acknowledged_write() {
    let core = NatsCore::start(3);
    let name = "kill";
    let mut nodes = three_pops_serving(&core, name);
    let mut rtos = Vec::new();
    let mut history = Vec::new();
    for run in 0..10 {
        let urls: Vec<String> = nodes.iter().map(|n| n.data.clone()).collect();
        let load = Load::start(&urls, name, 2);
        std::thread::sleep(Duration::from_millis(700));
        let owner = owner_of(&nodes);
        nodes[owner].kill();
        let killed = Instant::now();
        let rto = wait_recovery(&load, killed);
        std::thread::sleep(Duration::from_millis(500));
        let ops = load.finish();
        let acked = ops.iter().filter(|o| o.value.is_some()).count();
        eprintln!(
            "run {run}: killed {} ; served again after {rto:?} ; {acked} of {} increments acknowledged",
            ["pop-a", "pop-b", "pop-c"][owner],
            ops.len()
        );
        history.extend(ops);
        rtos.push(rto);
        nodes[owner].restart();
        wait_members(&nodes.iter().collect::<Vec<_>>(), 3);
    }
    let state = read(&nodes[0], name);
    let n = state["n"].as_u64().unwrap();
    assert_eq!(
        state["rows"].as_u64(),
        Some(n),
        "SQL and key-value state replicated together: {state}"
    );
    assert_eq!(state["max"].as_u64(), Some(n), "{state}");
    for other in &nodes[1..] {
        assert_eq!(read(other, name)["n"].as_u64(), Some(n));
    }
    if let Err(e) = check_linearizable(&history, n) {
        panic!("not linearizable: {e}");
    }
    rtos.sort();
    eprintln!(
        "RTO over {} kills: p50 {:?}, max {:?} ; final value {n} ; {} operations checked",
        rtos.len(),
        percentile(&rtos, 0.5),
        rtos.last().unwrap(),
        history.len()
    );
    assert!(*rtos.last().unwrap() < Duration::from_secs(10));
    drop(core);
}

/// A rolling restart: the owner gets SIGTERM (3 times, under load), leaves the
/// cluster on purpose and its object moves at once, without waiting for its
/// lease to run out; nothing acknowledged is lost and the history stays
/// linearizable.
impl Load {
    /// Clients behind a load balancer: each starts on its own PoP, and a PoP
    /// that does not take the connection (stopped, restarting) or says it is
    /// draining (`Connection: close`) is skipped for the next one. A request
    /// that could not connect never reached a PoP, so it is not an operation;
    /// every other outcome is (an error of any kind is a failed request).
    fn balanced(urls: Arc<Mutex<Vec<String>>>, name: &str, per_pop: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        let pops = urls.lock().unwrap().len();
        for i in 0..pops {
            for j in 0..per_pop {
                let (stop, history, urls) = (stop.clone(), history.clone(), urls.clone());
                let name = name.to_owned();
                threads.push(std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(30))
                        .build()
                        .expect("client");
                    let mut at = i;
                    while !stop.load(Ordering::Relaxed) {
                        let base = urls.lock().unwrap()[at % pops].clone();
                        let url = format!("{base}/inc?name={name}&c={i}.{j}");
                        let start = Instant::now();
                        let sent = http
                            .get(&url)
                            .header("host", "ctr.workers.localhost")
                            .send();
                        let response = match sent {
                            Err(e) if e.is_connect() => {
                                at += 1;
                                std::thread::sleep(Duration::from_millis(5));
                                continue;
                            }
                            other => other,
                        };
                        let (value, why) = match response {
                            Err(e) => (None, format!("{e:?}")),
                            Ok(r) => {
                                // The PoP is draining (it is about to stop):
                                // a load balancer sends the next request
                                // elsewhere.
                                if r.headers().get("connection").is_some_and(|v| v == "close") {
                                    at += 1;
                                }
                                let status = r.status();
                                let body = r.text().unwrap_or_default();
                                let v = serde_json::from_str::<Value>(&body)
                                    .ok()
                                    .and_then(|v| v["v"].as_u64())
                                    .filter(|_| status == 200);
                                (v, format!("{status}: {body}"))
                            }
                        };
                        let end = Instant::now();
                        history.lock().unwrap().push(Op { start, end, value });
                        if value.is_none() {
                            eprintln!("request via PoP {} failed: {why}", at % pops);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }));
            }
        }
        Load {
            stop,
            history,
            threads,
        }
    }
}

/// A rolling restart of every PoP under load (SIGTERM, wait for the exit,
/// start again, next): the owner hands its objects over without waiting for
/// the lease (each object finishes what it started, no new event starts
/// there, the node leaves, the next owner takes over), open connections are
/// served to the end and closed, and clients that cannot connect go to
/// another PoP. No request fails; the history stays linearizable.
#[test]
fn a_rolling_restart_of_every_pop_fails_no_request() {
    let core = NatsCore::start(3);
    let name = "rolling";
    let mut nodes = three_pops_serving(&core, name);
    let urls = Arc::new(Mutex::new(
        nodes.iter().map(|n| n.data.clone()).collect::<Vec<_>>(),
    ));
    let load = Load::balanced(urls.clone(), name, 2);
    std::thread::sleep(Duration::from_millis(700));
    let first = owner_of(&nodes);
    let mut stalls = Vec::new();
    for round in 0..2 {
        for k in 0..3 {
            let i = (first + k) % 3;
            let owner = owner_of(&nodes);
            nodes[i].signal("TERM");
            let stopped = Instant::now();
            let deadline = Instant::now() + Duration::from_secs(20);
            while nodes[i].alive() {
                assert!(
                    Instant::now() < deadline,
                    "the node did not stop after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let exited = stopped.elapsed();
            // The longest time without an acknowledged increment around the
            // stop (a hand-over when this PoP owned the object).
            let stall = {
                let h = load.history();
                let mut ends: Vec<Instant> = h
                    .iter()
                    .filter(|o| o.value.is_some())
                    .map(|o| o.end)
                    .filter(|e| *e + Duration::from_secs(2) > stopped)
                    .collect();
                ends.sort();
                ends.windows(2)
                    .map(|w| w[1].duration_since(w[0]))
                    .max()
                    .unwrap_or_default()
            };
            eprintln!(
                "round {round}: SIGTERM to {}{} ; exited after {exited:?} ; longest gap {stall:?}",
                ["pop-a", "pop-b", "pop-c"][i],
                if i == owner { " (the owner)" } else { "" },
            );
            if i == owner {
                stalls.push(stall);
            }
            nodes[i].restart();
            urls.lock().unwrap()[i] = nodes[i].data.clone();
            wait_members(&nodes.iter().collect::<Vec<_>>(), 3);
            let _ = wait_recovery(&load, stopped);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let history = load.finish();
    let failed = history.iter().filter(|o| o.value.is_none()).count();
    let state = read(&nodes[0], name);
    let n = state["n"].as_u64().unwrap();
    assert_eq!(state["rows"].as_u64(), Some(n), "{state}");
    if let Err(e) = check_linearizable(&history, n) {
        panic!("not linearizable: {e}");
    }
    stalls.sort();
    eprintln!(
        "rolling restarts: {} operations, {failed} failed ; owner hand-overs {stalls:?} ; final value {n}",
        history.len()
    );
    assert_eq!(failed, 0, "requests failed during the rolling restart");
    assert!(!stalls.is_empty(), "the owner was never restarted");
    drop(core);
}

/// The NATS server that leads the object log's stream is killed under load:
/// writes stall while the others elect a new leader, then resume; nothing
/// acknowledged is lost and the history stays linearizable.
#[test]
fn killing_the_log_streams_leader_stalls_writes_and_loses_nothing() {
    let mut core = NatsCore::start(3);
    let name = "leader";
    let nodes = three_pops_serving(&core, name);
    let urls: Vec<String> = nodes.iter().map(|n| n.data.clone()).collect();
    let load = Load::start(&urls, name, 2);
    std::thread::sleep(Duration::from_millis(1000));
    let leader = stream_leader(&core, "EDGED_DOLOG");
    core.stop_one(leader);
    let killed = Instant::now();
    // The stall can be up to JetStream's 4-9 s election, and callers retry.
    let stall = wait_recovery_within(&load, killed, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let history = load.finish();
    let state = read(&nodes[0], name);
    let n = state["n"].as_u64().unwrap();
    assert_eq!(state["rows"].as_u64(), Some(n), "{state}");
    if let Err(e) = check_linearizable(&history, n) {
        panic!("not linearizable: {e}");
    }
    let failed = history.iter().filter(|o| o.value.is_none()).count();
    eprintln!(
        "stream leader n{leader} killed: writes stalled {stall:?}; {} operations ({failed} failed or unknown); final value {n}",
        history.len()
    );
    core.restart();
    drop(nodes);
    drop(core);
}

/// A PoP that comes back with an empty data directory restores its objects
/// from the engine: every other PoP leaves, so it must take the object over
/// with nothing of it on its disk.
#[test]
fn a_pop_with_an_empty_data_directory_restores_objects_from_the_engine() {
    let core = NatsCore::start(3);
    let name = "empty";
    let mut nodes = three_pops_serving(&core, name);
    for _ in 0..25 {
        assert_eq!(
            nodes[0].get_worker("ctr", &format!("/inc?name={name}")).0,
            200
        );
    }
    let owner = owner_of(&nodes);
    let wiped = (owner + 1) % 3;
    let third = (owner + 2) % 3;
    nodes[wiped].kill();
    std::fs::remove_dir_all(nodes[wiped].data_dir()).expect("wipe the data directory");
    nodes[wiped].restart();
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3);
    // The worker reaches the wiped PoP from the engine's deployment records.
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes[wiped]
        .get_worker("ctr", &format!("/read?name={name}"))
        .0
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the wiped PoP never served the worker"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in [owner, third] {
        nodes[i].signal("TERM");
    }
    for i in [owner, third] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while nodes[i].alive() {
            assert!(
                Instant::now() < deadline,
                "a node did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let state = read(&nodes[wiped], name);
    assert_eq!(state["n"].as_u64(), Some(25), "{state}");
    assert_eq!(state["rows"].as_u64(), Some(25), "{state}");
    let restores = TestNode::metric_in(&nodes[wiped].metrics(), "edged_do_restores_total");
    assert!(
        restores.unwrap_or(0.0) >= 1.0,
        "rebuilt from the log: {restores:?}"
    );
    drop(core);
}

/// Which PoP runs object `name` now: the one whose event count moves when
/// it is read (call with no load running).
fn serving_owner(nodes: &[TestNode], name: &str) -> usize {
    let events =
        |n: &TestNode| TestNode::metric_in(&n.metrics(), "edged_do_events_total").unwrap_or(0.0);
    let before: Vec<f64> = nodes.iter().map(events).collect();
    read(&nodes[1], name);
    let moved: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| events(n) > before[*i])
        .map(|(i, _)| i)
        .collect();
    assert_eq!(moved.len(), 1, "one PoP runs {name}: {moved:?}");
    moved[0]
}

/// Three PoPs where pop-a's config is rewritten by `edit` (its NATS URL or
/// peer address through a proxy), the counter worker served everywhere, and
/// the name of an object pop-a owns.
fn pops_with_a_proxied(
    core: &NatsCore,
    edit: impl Fn(String) -> String,
) -> (Vec<TestNode>, String) {
    let a = TestNode::start_with(&edit(cluster_config(&core.urls, "pop-a", "eu")));
    let b = TestNode::start_with(&cluster_config(&core.urls, "pop-b", "us"));
    let c = TestNode::start_with(&cluster_config(&core.urls, "pop-c", "ap"));
    let nodes = vec![a, b, c];
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3);
    deploy(&nodes[0]);
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        while n.get_worker("ctr", "/read?name=warm").0 != 200 {
            assert!(Instant::now() < deadline, "worker not served");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let live =
        |n: &TestNode| TestNode::metric_in(&n.metrics(), "edged_do_live_objects").unwrap_or(0.0);
    let name = (0..60)
        .map(|i| format!("part{i}"))
        .find(|name| {
            let before = live(&nodes[0]);
            assert_eq!(
                nodes[1].get_worker("ctr", &format!("/inc?name={name}")).0,
                200
            );
            live(&nodes[0]) > before
        })
        .expect("an object owned by pop-a");
    (nodes, name)
}

/// The owner loses the NATS core but not its peers: it fences itself within
/// its lease, another PoP takes the object over, and when the owner comes
/// back it serves again through the new owner; linearizable throughout.
#[test]
fn an_owner_cut_off_from_the_core_is_replaced_and_loses_nothing() {
    let core = NatsCore::start(3);
    let proxy = Proxy::start(core.urls[0].trim_start_matches("nats://"));
    let via = format!("nats = [\"nats://127.0.0.1:{}\"]", proxy.port);
    let (nodes, name) = pops_with_a_proxied(&core, |config| {
        let start = config.find("nats = [").unwrap();
        let end = start + config[start..].find(']').unwrap() + 1;
        format!("{}{via}{}", &config[..start], &config[end..])
    });
    let urls: Vec<String> = nodes.iter().map(|n| n.data.clone()).collect();
    let load = Load::start(&urls, &name, 2);
    std::thread::sleep(Duration::from_millis(700));
    proxy.cut();
    let cut = Instant::now();
    let rto = wait_recovery(&load, cut);
    std::thread::sleep(Duration::from_secs(2));
    proxy.heal();
    let deadline = Instant::now() + Duration::from_secs(30);
    while common::cluster::status(&nodes[0])["fenced"] != false {
        assert!(
            Instant::now() < deadline,
            "pop-a stayed fenced after the core came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let history = load.finish();
    let state = read(&nodes[1], &name);
    let n = state["n"].as_u64().unwrap();
    assert_eq!(state["rows"].as_u64(), Some(n), "{state}");
    assert_eq!(
        read(&nodes[0], &name)["n"].as_u64(),
        Some(n),
        "pop-a serves the same object again"
    );
    if let Err(e) = check_linearizable(&history, n) {
        panic!("not linearizable: {e}");
    }
    assert!(
        serving_owner(&nodes, &name) != 0,
        "the object stayed with its new owner"
    );
    eprintln!(
        "owner cut off from the core: served again after {rto:?}; {} operations checked; final value {n}",
        history.len()
    );
    drop(core);
}

/// The owner loses its peers but not the core: its lease holds, so it stays
/// the owner (no takeover: never two owners); the other PoPs' calls fail
/// meanwhile and work again when the partition heals; linearizable.
#[test]
fn an_owner_cut_off_from_its_peers_stays_the_only_owner() {
    let core = NatsCore::start(3);
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listen.local_addr().unwrap().port();
    drop(listen);
    let proxy = Proxy::start(&format!("127.0.0.1:{port}"));
    let (nodes, name) = pops_with_a_proxied(&core, |config| {
        config.replace(
            "peer_listen = \"127.0.0.1:0\"",
            &format!(
                "peer_listen = \"127.0.0.1:{port}\"\npeer_advertise = \"127.0.0.1:{}\"",
                proxy.port
            ),
        )
    });
    let urls: Vec<String> = nodes.iter().map(|n| n.data.clone()).collect();
    let load = Load::start(&urls, &name, 2);
    std::thread::sleep(Duration::from_millis(700));
    proxy.cut();
    let cut = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let during = load.history();
    let served_by_owner = during
        .iter()
        .filter(|o| o.start > cut + Duration::from_secs(1) && o.value.is_some())
        .count();
    let failed_during = during
        .iter()
        .filter(|o| o.start > cut && o.value.is_none())
        .count();
    proxy.heal();
    std::thread::sleep(Duration::from_secs(2));
    let history = load.finish();
    let state = read(&nodes[1], &name);
    let n = state["n"].as_u64().unwrap();
    assert_eq!(state["rows"].as_u64(), Some(n), "{state}");
    if let Err(e) = check_linearizable(&history, n) {
        panic!("not linearizable: {e}");
    }
    assert_eq!(
        serving_owner(&nodes, &name),
        0,
        "no takeover while the owner's lease holds"
    );
    assert!(
        served_by_owner > 0,
        "the owner's own callers were served during the cut"
    );
    eprintln!(
        "owner cut off from its peers: during the 4 s cut {served_by_owner} increments served by the owner's PoP, {failed_during} calls from the other PoPs failed; {} operations; final value {n}",
        history.len()
    );
    drop(core);
}

#[test]
fn a_paused_owner_acknowledges_nothing_after_the_takeover() {
    let core = NatsCore::start(3);
    let name = "pause";
    let nodes = three_pops_serving(&core, name);
    let urls: Vec<String> = nodes.iter().map(|n| n.data.clone()).collect();
    let load = Load::start(&urls, name, 2);
    std::thread::sleep(Duration::from_millis(700));
    let owner = owner_of(&nodes);
    nodes[owner].signal("STOP");
    let paused = Instant::now();
    let rto = wait_recovery(&load, paused);
    // Well past the takeover, the old owner wakes up with the object live and
    // requests held: it must fail them, not acknowledge them.
    std::thread::sleep(Duration::from_millis(1500));
    nodes[owner].signal("CONT");
    std::thread::sleep(Duration::from_millis(2500));
    let history = load.finish();
    let state = read(&nodes[(owner + 1) % 3], name);
    let n = state["n"].as_u64().unwrap();
    assert_eq!(state["rows"].as_u64(), Some(n), "{state}");
    for node in &nodes {
        assert_eq!(
            read(node, name)["n"].as_u64(),
            Some(n),
            "every PoP sees one object"
        );
    }
    if let Err(e) = check_linearizable(&history, n) {
        panic!("not linearizable: {e}");
    }
    let log = nodes[owner].log();
    eprintln!(
        "paused owner: served again after {rto:?}; {} operations checked; final value {n}; old owner fenced: {}",
        history.len(),
        log.contains("fences itself")
    );
    assert!(
        owner_of(&nodes) != owner,
        "the object stayed with its new owner"
    );
    drop(core);
}

/// A tenant decides how large a commit is; the node must not hold one of any
/// size in memory while it ships. Over the bound the commit is refused and the
/// object goes back to its log; under it, a large object's snapshot streams
/// from a copy on disk and a new owner rebuilds it whole.
#[test]
fn a_huge_commit_is_refused_and_a_large_object_moves_whole() {
    let core = NatsCore::start(3);
    let name = "big";
    // Generating ~76 MB of random blobs takes more than the default 50 ms.
    let mut nodes = three_pops_with(&core, name, "[limits]\ncpu_ms = 20000\n");
    let pop = |nodes: &[TestNode], i: usize, path: &str| {
        let sep = if path.contains('?') { '&' } else { '?' };
        nodes[i].get_worker("ctr", &format!("{path}{sep}name={name}"))
    };
    for _ in 0..3 {
        assert_eq!(pop(&nodes, 0, "/inc").0, 200);
    }
    let owner = owner_of(&nodes);
    let rss_before = nodes[owner].rss_kib();
    // 40 blobs of 1.9 MB in one transaction: ~76 MiB, over the 32 MiB bound.
    let (code, body) = pop(&nodes, owner, "/fill?rows=40&size=1900000");
    let rss_after = nodes[owner].rss_kib();
    assert!(code >= 500, "{code} {body}");
    assert!(body.contains("over the 32 MiB"), "{body}");
    eprintln!(
        "refused commit of ~76 MiB: owner RSS {} -> {} MiB",
        rss_before >> 10,
        rss_after >> 10
    );
    assert!(
        rss_after < rss_before + (160 << 10),
        "the refused commit was not held in memory: {rss_before} -> {rss_after} KiB"
    );
    // The object went back to its log: nothing of the refused commit, the
    // acknowledged counter intact, and it serves again.
    assert_eq!(read(&nodes[owner], name)["n"].as_u64(), Some(3));
    let (code, body) = pop(&nodes, owner, "/blobs");
    assert_eq!((code, body.as_str()), (200, r#"{"rows":0,"bytes":0}"#));
    // Now a large object: 16 commits of 1.9 MB, then each row rewritten, so
    // the log outgrows the database and an image of ~30 MiB ships.
    for k in 0..16 {
        let (code, body) = pop(
            &nodes,
            owner,
            &format!("/fill?rows=1&size=1900000&from={k}"),
        );
        assert_eq!(code, 200, "{body}");
    }
    for k in 0..16 {
        let (code, body) = pop(
            &nodes,
            owner,
            &format!("/fill?rows=1&size=1900000&from={k}"),
        );
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(pop(&nodes, owner, "/inc").0, 200);
    let snapshots = TestNode::metric_in(&nodes[owner].metrics(), "edged_do_snapshots_total");
    assert!(
        snapshots.unwrap_or(0.0) >= 2.0,
        "the base image and a snapshot of the large object: {snapshots:?}"
    );
    nodes[owner].kill();
    let other = (owner + 1) % 3;
    let state = read(&nodes[other], name);
    assert_eq!(state["n"].as_u64(), Some(4), "{state}");
    let (code, body) = pop(&nodes, other, "/blobs");
    assert_eq!(code, 200, "{body}");
    let blobs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(blobs["rows"].as_u64(), Some(16), "{blobs}");
    assert_eq!(blobs["bytes"].as_u64(), Some(16 * 1_900_000), "{blobs}");
    nodes[owner].restart();
    drop(core);
}

/// One owner appending large records back to back to its object's log is
/// never refused as if another owner had appended: the stream leader
/// acknowledges a record before it forgets the subject was busy, and that
/// refusal (JetStream 10164) must not read as a takeover (a CI run lost an
/// object's commit to it: "another node took the object over").
#[test]
fn back_to_back_appends_of_one_owner_are_not_fenced() {
    let core = NatsCore::start(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = edged::cluster::engine::Engine::connect(&core.urls, "t")
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let buckets = loop {
            match engine
                .open(3, Duration::from_secs(5), Duration::from_secs(600))
                .await
            {
                Ok(b) => break b,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no JetStream quorum: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let key = format!("{}.{}", "0".repeat(32), "1".repeat(64));
        let record = bytes::Bytes::from(vec![7u8; 900 << 10]);
        let mut last = 0;
        for i in 0..150 {
            last = buckets
                .log_append(&key, record.clone(), last)
                .await
                .unwrap_or_else(|e| panic!("append {i} after sequence {last}: {e:?}"));
        }
        // A real stale owner is still refused.
        assert_eq!(
            buckets.log_append(&key, record.clone(), last - 1).await,
            Err(edged::cluster::engine::EngineError::Conflict)
        );
    });
    drop(core);
}

/// An idle object with an alarm set, whose owner is killed: nobody calls the
/// object, yet another PoP takes it over in time and its alarm fires there
/// (not before its time), from the alarm entry the owner recorded in the
/// engine. Without it, the alarm would wait for the object's next call.
#[test]
fn an_idle_objects_alarm_fires_after_its_owner_dies() {
    const CLOCK: &str = r#"
import { DurableObject } from "cloudflare:workers";
export class Clock extends DurableObject {
  async fetch(request) {
    const at = Date.now() + Number(new URL(request.url).searchParams.get("in"));
    await this.ctx.storage.setAlarm(at);
    return Response.json({ at });
  }
  async alarm() {
    await this.env.FIRED.put(this.ctx.id.name, String(Date.now()));
  }
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const name = url.searchParams.get("name");
    if (url.pathname === "/fired") return new Response((await env.FIRED.get(name)) ?? "");
    return env.CLOCK.get(env.CLOCK.idFromName(name)).fetch(request);
  },
};
"#;
    let core = NatsCore::start(3);
    let pop =
        |node: &str, region: &str| TestNode::start_with(&cluster_config(&core.urls, node, region));
    let mut nodes = vec![pop("pop-a", "eu"), pop("pop-b", "us"), pop("pop-c", "ap")];
    wait_members(&nodes.iter().collect::<Vec<_>>(), 3);
    let (code, body) = nodes[0].deploy_body(
        "clock",
        &json!({
            "main_module": "worker.js",
            "modules": { "worker.js": CLOCK },
            "bindings": [
                {"type": "durable_object_namespace", "name": "CLOCK", "class_name": "Clock"},
                {"type": "kv_namespace", "name": "FIRED", "namespace": "fired"},
            ],
        }),
    );
    assert_eq!(code, 200, "{body}");
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        while n.get_worker("clock", "/fired?name=none").0 != 200 {
            assert!(Instant::now() < deadline, "worker not served");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (code, body) = nodes[0].get_worker("clock", "/set?name=late&in=6000");
    assert_eq!(code, 200, "{body}");
    let at = serde_json::from_str::<Value>(&body).unwrap()["at"]
        .as_u64()
        .unwrap();
    let owner = owner_of(&nodes);
    nodes[owner].kill();
    let killed = Instant::now();
    let other = &nodes[(owner + 1) % 3];
    let fired = loop {
        let (code, body) = other.get_worker("clock", "/fired?name=late");
        assert_eq!(code, 200, "{body}");
        if !body.is_empty() {
            break body.parse::<u64>().expect("a time");
        }
        assert!(
            killed.elapsed() < Duration::from_secs(40),
            "the alarm did not fire after its owner died"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "alarm due {} ms after the owner ({}) was killed fired {} ms late, on another PoP",
        at.saturating_sub(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
                - killed.elapsed().as_millis() as u64
        ),
        ["pop-a", "pop-b", "pop-c"][owner],
        fired as i64 - at as i64
    );
    assert!(fired >= at, "an alarm never runs before its time");
    drop(nodes);
    drop(core);
}

#[test]
fn the_checker_catches_lost_and_duplicated_writes() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let op = |s, e, v| Op {
        start: at(s),
        end: at(e),
        value: v,
    };
    let good = [
        op(0, 10, Some(1)),
        op(5, 20, Some(2)),
        op(21, 30, None),
        op(31, 40, Some(4)),
    ];
    assert!(check_linearizable(&good, 4).is_ok());
    // A lost write: 2 acknowledged, the counter reads 1.
    assert!(check_linearizable(&good[..2], 1).is_err());
    // Two owners: the same value given twice.
    assert!(check_linearizable(&[op(0, 10, Some(1)), op(20, 30, Some(1))], 1).is_err());
    // Stale read of the counter: a later op got a smaller value.
    assert!(check_linearizable(&[op(0, 10, Some(2)), op(20, 30, Some(1))], 2).is_err());
}
