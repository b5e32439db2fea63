//! End-to-end: storage that is damaged is reported, never served as empty;
//! the node's own stores are checked at start; disk use stays close to the
//! data.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestNode;
use serde_json::{json, Value};

const COUNTER: &str = r#"
export class Counter {
  constructor(ctx) { this.ctx = ctx; }
  async fetch(request) {
    const u = new URL(request.url);
    if (u.pathname === "/alarm") { await this.ctx.storage.setAlarm(Date.now() + 1500); return new Response("set"); }
    if (u.pathname === "/fired") return new Response(String((await this.ctx.storage.get("fired")) ?? 0));
    const v = ((await this.ctx.storage.get("v")) ?? 0) + 1;
    await this.ctx.storage.put("v", v);
    return new Response(String(v));
  }
  async alarm() { await this.ctx.storage.put("fired", ((await this.ctx.storage.get("fired")) ?? 0) + 1); }
}
export default {
  async fetch(request, env) {
    const u = new URL(request.url);
    try {
      return await env.C.get(env.C.idFromName(u.searchParams.get("n") ?? "one")).fetch(request);
    } catch (e) { return new Response(`${e.name}: ${e.message}`, { status: 503 }); }
  },
};
"#;

fn counter_node(extra: &str) -> TestNode {
    let node = TestNode::start_with(extra);
    let (s, b) = node.deploy(
        "counter",
        COUNTER,
        json!([{"type": "durable_object_namespace", "name": "C", "class_name": "Counter"}]),
        &[],
    );
    assert_eq!(s, 200, "{b}");
    node
}

/// Every object database of the node.
fn object_dbs(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![data.join("do")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "db") && !p.ends_with("alarms.db") {
                out.push(p);
            }
        }
    }
    out
}

fn wal(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

#[test]
fn damaged_object_storage_is_reported_not_recreated() {
    let mut node = counter_node("");
    for (name, damage) in [("emptied", 0), ("garbage-wal", 1), ("deleted", 2)] {
        for i in 1..=3 {
            assert_eq!(
                node.get_worker("counter", &format!("/inc?n={name}")),
                (200, i.to_string())
            );
        }
        let before: Vec<PathBuf> = object_dbs(&node.data_dir());
        node.kill();
        let db = before
            .iter()
            .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .expect("the object's database")
            .clone();
        match damage {
            0 => {
                std::fs::write(&db, b"").unwrap();
                let _ = std::fs::remove_file(wal(&db));
            }
            1 => std::fs::write(wal(&db), vec![0x5a; 8192]).unwrap(),
            _ => {
                std::fs::remove_file(&db).unwrap();
                let _ = std::fs::remove_file(wal(&db));
            }
        }
        node.restart();
        for _ in 0..2 {
            let (s, b) = node.get_worker("counter", &format!("/inc?n={name}"));
            assert_eq!(s, 503, "{name}: {b}");
            assert!(
                b.contains("Durable Object storage is damaged"),
                "{name}: {b}"
            );
        }
        assert!(node.log().contains("Durable Object storage is damaged"));
    }
    let damaged = TestNode::metric_in(&node.metrics(), "edged_do_damaged_total").unwrap_or(0.0);
    assert!(damaged >= 1.0, "damage is counted");
    // The other objects are untouched by their neighbours' damage.
    assert_eq!(
        node.get_worker("counter", "/inc?n=fresh"),
        (200, "1".to_owned())
    );
    // An operator resets one: it starts empty, the others stay refused.
    let id = edged::js::durable::id_from_name("counter", "Counter", "emptied");
    let (s, b) = node.control_request(
        reqwest::Method::DELETE,
        &format!("/v1/workers/counter/objects/Counter/{id}"),
        None,
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        node.get_worker("counter", "/inc?n=emptied"),
        (200, "1".to_owned())
    );
    assert_eq!(node.get_worker("counter", "/inc?n=deleted").0, 503);
}

#[test]
fn a_damaged_alarm_index_is_rebuilt_from_the_objects() {
    let mut node = counter_node("");
    assert_eq!(
        node.get_worker("counter", "/alarm?n=a"),
        (200, "set".to_owned())
    );
    node.kill();
    let index = node.data_dir().join("do/alarms.db");
    std::fs::write(&index, b"this is not an index").unwrap();
    let _ = std::fs::remove_file(node.data_dir().join("do/alarms.db-wal"));
    node.restart();
    assert!(
        node.log().contains("rebuilding it from the objects"),
        "{}",
        node.log()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, fired) = node.get_worker("counter", "/fired?n=a");
        if fired == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the alarm set before the damage never fired"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `edged serve` on `dir`'s config and returns its exit status and stderr.
fn serve_once(config: &Path) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edged"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return (None, "still running".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn damaged_node_stores_stop_the_node_with_a_clear_error() {
    let mut node = counter_node("");
    assert_eq!(node.get_worker("counter", "/inc").0, 200);
    let (s, _) = node.control_request(reqwest::Method::PUT, "/v1/kv/cache/values/k", None);
    assert_eq!(s, 200);
    node.kill();
    let data = node.data_dir();
    let config = data.parent().unwrap().join("edged.toml");

    // A damaged KV namespace.
    let ns = data.join("kv/cache.db");
    let good = std::fs::read(&ns).unwrap();
    std::fs::write(&ns, b"garbage garbage garbage").unwrap();
    let (code, err) = serve_once(&config);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("KV namespace database")
            && err.contains("cache.db")
            && err.contains("damaged"),
        "{err}"
    );
    std::fs::write(&ns, good).unwrap();

    // A damaged, then a missing, deployment store.
    let store = data.join("deployments.db");
    let good = std::fs::read(&store).unwrap();
    std::fs::write(&store, b"garbage").unwrap();
    let (code, err) = serve_once(&config);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("deployments.db is damaged"), "{err}");
    std::fs::remove_file(&store).unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    let (code, err) = serve_once(&config);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("deployments.db is missing but the data directory holds"),
        "{err}"
    );
    std::fs::write(&store, good).unwrap();
    node.restart();
    assert_eq!(node.get_worker("counter", "/inc"), (200, "2".to_owned()));
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

#[test]
fn disk_use_stays_close_to_the_data() {
    let node =
        counter_node("[durable_objects]\nhibernate_after_s = 1\n[kv]\npurge_interval_s = 1\n");
    // 100 one-counter objects, then idle.
    for i in 0..100 {
        assert_eq!(node.get_worker("counter", &format!("/inc?n=o{i}")).0, 200);
    }
    std::thread::sleep(Duration::from_secs(4));
    let objects = dir_size(&node.data_dir().join("do"));
    println!(
        "disk: 100 idle one-counter objects take {} KiB",
        objects >> 10
    );
    assert!(
        objects < 8 << 20,
        "100 idle objects take {} KiB",
        objects >> 10
    );

    // 100,000 KV writes to 500 keys.
    for round in 0..10 {
        let entries: Vec<Value> = (0..10_000)
            .map(|i| json!({"key": format!("key-{}", (round * 10_000 + i) % 500), "value": format!("value {round} {i} {}", "x".repeat(40))}))
            .collect();
        let (s, b) = node.control_request(
            reqwest::Method::POST,
            "/v1/kv/busy/bulk",
            Some(&json!(entries)),
        );
        assert_eq!(s, 200, "{b}");
    }
    std::thread::sleep(Duration::from_secs(3));
    let kv = dir_size(&node.data_dir().join("kv"));
    let live: u64 = 500 * (8 + 60);
    println!(
        "disk: 100,000 KV writes to 500 keys take {} KiB ({} KiB of live data)",
        kv >> 10,
        live >> 10
    );
    // SQLite's pages and B-tree fill put a floor above the raw bytes (80 KiB
    // measured for 33 KiB); a change log kept per write would be far more.
    assert!(kv < 4 * live, "the namespace takes {} KiB", kv >> 10);
}

const BOX: &str = r#"
export class Box {
  constructor(ctx) { this.ctx = ctx; }
  async fetch(request) {
    const u = new URL(request.url);
    if (u.pathname === "/big") {
      for (let i = 0; i < 20; i++) await this.ctx.storage.put(`big-${i}`, "y".repeat(100000));
      return new Response("ok");
    }
    const v = ((await this.ctx.storage.get("v")) ?? 0) + 1;
    await this.ctx.storage.put("v", v);
    return new Response(String(v));
  }
}
export default {
  async fetch(request, env) {
    const u = new URL(request.url);
    try {
      if (u.pathname === "/kv") {
        await env.KV.put(u.searchParams.get("k"), "z".repeat(1 << 20));
        return new Response("ok");
      }
      if (u.pathname === "/kvlen") {
        return new Response(String((await env.KV.get(u.searchParams.get("k")))?.length ?? "none"));
      }
      return await env.B.get(env.B.idFromName("one")).fetch(request);
    } catch (e) { return new Response(`${e.name}: ${e.message}`, { status: 500 }); }
  },
};
"#;

/// Unmounts a test file system even when the test fails (lazily: the
/// node may still hold files open).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes zeros to `path` until the file system refuses.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_full_disk_fails_writes_cleanly_and_the_node_recovers() {
    // The data directory on a small tmpfs (needs root; skipped otherwise).
    let mut mounted = None;
    let node = TestNode::start_prepared("", |dir| {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
            .arg(&data)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            mounted = Some(Mount(data));
        }
    });
    let Some(_mount) = mounted else {
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    };
    let bindings = json!([
        {"type": "durable_object_namespace", "name": "B", "class_name": "Box"},
        {"type": "kv_namespace", "name": "KV", "namespace": "full"}
    ]);
    let (s, b) = node.deploy("box", BOX, bindings.clone(), &[]);
    assert_eq!(s, 200, "{b}");
    assert_eq!(node.get_worker("box", "/inc"), (200, "1".to_owned()));
    assert_eq!(
        node.get_worker("box", "/kv?k=before"),
        (200, "ok".to_owned())
    );

    let filler = node.data_dir().join("filler");
    fill(&filler);

    // Every kind of write fails with a clear error; nothing else breaks.
    let big = format!("{BOX}\n// {}\n", "p".repeat(1 << 20));
    let (s, b) = node.deploy("other", &big, json!([]), &[]);
    assert_eq!(s, 507, "{b}");
    assert_eq!(b["error"]["code"], "insufficient_storage", "{b}");
    let (s, b) = node.control_request(
        reqwest::Method::PUT,
        "/v1/kv/full/values/admin",
        Some(&json!("w".repeat(1 << 20))),
    );
    assert_eq!(s, 507, "{b}");
    assert_eq!(b["error"]["code"], "insufficient_storage", "{b}");
    let (s, b) = node.get_worker("box", "/kv?k=during");
    assert_eq!(s, 500, "{b}");
    assert!(b.contains("507 Insufficient Storage"), "{b}");
    let (s, b) = node.get_worker("box", "/big");
    assert_eq!(s, 500, "{b}");
    assert!(b.contains("disk is full"), "{b}");
    // Reads still work, and what was stored is intact.
    assert_eq!(
        node.get_worker("box", "/kvlen?k=before"),
        (200, (1 << 20).to_string())
    );
    assert_eq!(
        node.get_worker("box", "/kvlen?k=during"),
        (200, "none".to_owned())
    );

    // Space comes back: so does everything, with no data lost.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(node.get_worker("box", "/inc"), (200, "2".to_owned()));
    assert_eq!(node.get_worker("box", "/big"), (200, "ok".to_owned()));
    assert_eq!(
        node.get_worker("box", "/kv?k=after"),
        (200, "ok".to_owned())
    );
    let (s, b) = node.deploy("other", BOX, bindings, &[]);
    assert_eq!(s, 200, "{b}");
    assert_eq!(node.get_worker("other", "/inc"), (200, "1".to_owned()));
}
