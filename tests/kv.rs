//! End-to-end: Workers KV through the binding and the control plane, against a
//! real node process.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestNode, TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

/// A worker that exposes the KV binding `env.KV` over HTTP.
const KV_WORKER: &str = r#"
function fail(e) {
  return Response.json({ error: e.name, message: e.message }, { status: 400 });
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const q = (k) => url.searchParams.get(k);
    const key = q("key");
    try {
      switch (url.pathname) {
        case "/put": {
          const opts = {};
          if (q("ttl")) opts.expirationTtl = Number(q("ttl"));
          if (q("exp")) opts.expiration = Number(q("exp"));
          if (q("meta") !== null) opts.metadata = JSON.parse(q("meta"));
          const value = q("as") === "text" ? await request.text() : await request.arrayBuffer();
          await env.KV.put(key, value, opts);
          return new Response("ok");
        }
        case "/put-stream":
          await env.KV.put(key, request.body);
          return new Response("ok");
        case "/get": {
          const type = q("type") ?? "text";
          const opts = { type };
          if (q("cacheTtl")) opts.cacheTtl = Number(q("cacheTtl"));
          const v = await env.KV.get(key, opts);
          if (v === null) return new Response("null", { status: 404 });
          if (type === "json") return Response.json({ json: v });
          return new Response(v);
        }
        case "/meta":
          return Response.json(await env.KV.getWithMetadata(key));
        case "/bulk": {
          const m = await env.KV.get(q("keys").split(","), q("type") ?? "text");
          return Response.json(Object.fromEntries(m));
        }
        case "/delete":
          await env.KV.delete(key);
          return new Response("ok");
        case "/list": {
          const opts = {};
          if (q("prefix") !== null) opts.prefix = q("prefix");
          if (q("limit") !== null) opts.limit = Number(q("limit"));
          if (q("cursor") !== null) opts.cursor = q("cursor");
          return Response.json(await env.KV.list(opts));
        }
      }
      return new Response("no route", { status: 404 });
    } catch (e) {
      return fail(e);
    }
  },
};
"#;

fn deploy_kv(node: &TestNode, name: &str, namespace: &str) {
    let (status, body) = node.deploy(
        name,
        KV_WORKER,
        json!([{"type":"kv_namespace","name":"KV","namespace":namespace}]),
        &[],
    );
    assert_eq!(status, 200, "{body}");
}

struct Kv<'a> {
    node: &'a TestNode,
    worker: &'a str,
}

impl Kv<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.node.data)
    }
    fn host(&self) -> String {
        format!("{}.workers.localhost", self.worker)
    }
    fn put(&self, query: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, String) {
        let r = self
            .node
            .http
            .post(self.url(&format!("/put?{query}")))
            .header("host", self.host())
            .body(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }
    fn put_text(&self, key: &str, value: &str) {
        let (s, b) = self.put(&format!("as=text&key={}", enc(key)), value.to_owned());
        assert_eq!((s, b.as_str()), (200, "ok"), "put {key}");
    }
    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let r = self
            .node
            .http
            .get(self.url(path))
            .header("host", self.host())
            .send()
            .unwrap();
        (r.status().as_u16(), r.bytes().unwrap().to_vec())
    }
    fn get_text(&self, key: &str) -> Option<String> {
        let (s, b) = self.get(&format!("/get?key={}", enc(key)));
        match s {
            200 => Some(String::from_utf8(b).unwrap()),
            404 => None,
            _ => panic!("get {key}: {s} {}", String::from_utf8_lossy(&b)),
        }
    }
    fn json(&self, path: &str) -> Value {
        let (s, b) = self.get(path);
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        assert!(s == 200 || s == 400, "{path}: {s} {v}");
        v
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn assert_type_error(v: &Value, needle: &str) {
    assert_eq!(v["error"], "TypeError", "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains(needle), "{v}");
}

#[test]
fn binding_api_and_limits() {
    let node = TestNode::start();
    deploy_kv(&node, "kv", "main");
    let kv = Kv {
        node: &node,
        worker: "kv",
    };

    // Missing key → null.
    assert_eq!(kv.get_text("missing"), None);
    assert_eq!(
        kv.json("/meta?key=missing"),
        json!({"value": null, "metadata": null, "cacheStatus": null})
    );

    // text, json, metadata; read-your-writes after an overwrite.
    kv.put_text("greeting", "hello");
    assert_eq!(kv.get_text("greeting").as_deref(), Some("hello"));
    kv.put_text("greeting", "hello again");
    assert_eq!(kv.get_text("greeting").as_deref(), Some("hello again"));
    kv.put_text("doc", r#"{"a":[1,2]}"#);
    assert_eq!(
        kv.json("/get?key=doc&type=json"),
        json!({"json": {"a": [1, 2]}})
    );
    let (s, _) = kv.put(&format!("as=text&key=m&meta={}", enc(r#"{"v":1}"#)), "x");
    assert_eq!(s, 200);
    assert_eq!(
        kv.json("/meta?key=m"),
        json!({"value": "x", "metadata": {"v": 1}, "cacheStatus": null})
    );

    // Binary values round-trip byte for byte (arrayBuffer and stream types).
    let binary: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    assert_eq!(kv.put("key=bin", binary.clone()).0, 200);
    assert_eq!(
        kv.get("/get?key=bin&type=arrayBuffer"),
        (200, binary.clone())
    );
    assert_eq!(kv.get("/get?key=bin&type=stream"), (200, binary));

    // Bulk get.
    assert_eq!(
        kv.json("/bulk?keys=greeting,missing,m"),
        json!({"greeting": "hello again", "missing": null, "m": "x"})
    );
    let too_many: Vec<String> = (0..101).map(|i| format!("k{i}")).collect();
    assert_type_error(
        &kv.json(&format!("/bulk?keys={}", too_many.join(","))),
        "between 1 and 100",
    );

    // Delete.
    assert_eq!(kv.get("/delete?key=greeting").0, 200);
    assert_eq!(kv.get_text("greeting"), None);

    // Key limits: 512 bytes fine, 513 not; empty, "." and ".." never.
    let k512 = "k".repeat(512);
    kv.put_text(&k512, "long");
    assert_eq!(kv.get_text(&k512).as_deref(), Some("long"));
    let (s, b) = kv.put(&format!("as=text&key={}", "k".repeat(513)), "x");
    assert_eq!(s, 400);
    assert_type_error(
        &serde_json::from_str(&b).unwrap(),
        "513 exceeds key length limit of 512",
    );
    for bad in ["", ".", ".."] {
        let (s, b) = kv.put(&format!("as=text&key={bad}"), "x");
        assert_eq!(s, 400, "key {bad:?}: {b}");
        assert_type_error(&serde_json::from_str(&b).unwrap(), "Invalid key name");
    }

    // Metadata: 1024 serialized bytes fine, 1025 not.
    let meta_ok = json!("m".repeat(1022)).to_string();
    assert_eq!(meta_ok.len(), 1024);
    assert_eq!(
        kv.put(&format!("as=text&key=meta-ok&meta={}", enc(&meta_ok)), "x")
            .0,
        200
    );
    let meta_bad = json!("m".repeat(1023)).to_string();
    let (s, b) = kv.put(
        &format!("as=text&key=meta-bad&meta={}", enc(&meta_bad)),
        "x",
    );
    assert_eq!(s, 400);
    assert_type_error(
        &serde_json::from_str(&b).unwrap(),
        "Metadata length of 1025 exceeds limit of 1024",
    );

    // expirationTtl: 60 fine, 59 not; an absolute expiration in the past not.
    assert_eq!(kv.put("as=text&key=ttl-ok&ttl=60", "x").0, 200);
    let (s, b) = kv.put("as=text&key=ttl-bad&ttl=59", "x");
    assert_eq!(s, 400);
    assert_type_error(
        &serde_json::from_str(&b).unwrap(),
        "Expiration TTL must be at least 60",
    );
    let (s, _) = kv.put("as=text&key=exp-bad&exp=1000", "x");
    assert_eq!(s, 400);
    let listed = kv.json("/list?prefix=ttl-");
    let exp = listed["keys"][0]["expiration"]
        .as_u64()
        .expect("expiration listed");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(exp >= now + 55 && exp <= now + 65, "{listed}");

    // cacheTtl must be at least 30.
    assert_type_error(
        &kv.json("/get?key=m&cacheTtl=29"),
        "Cache TTL must be at least 30",
    );
    assert_eq!(kv.get("/get?key=m&cacheTtl=30").0, 200);

    // list limit: 1000 fine, 1001 not.
    assert_eq!(kv.json("/list?limit=1000")["list_complete"], true);
    assert_type_error(&kv.json("/list?limit=1001"), "key_count_limit of 1001");

    // Values: 25 MiB exactly fine (streamed in and out), one byte more not.
    let big: Vec<u8> = (0..(25usize << 20)).map(|i| (i % 251) as u8).collect();
    let r = node
        .http
        .post(kv.url("/put-stream?key=big"))
        .header("host", kv.host())
        .body(big.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    let (s, back) = kv.get("/get?key=big&type=stream");
    assert_eq!(s, 200);
    assert!(back == big, "25 MiB value changed on the way");
    let mut over = big;
    over.push(0);
    let r = node
        .http
        .post(kv.url("/put?key=big2"))
        .header("host", kv.host())
        .body(over)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_type_error(&r.json().unwrap(), "exceeds limit of 26214400");
    assert_eq!(kv.get_text("big2"), None);
}

#[test]
fn list_pages_in_byte_order() {
    let node = TestNode::start();
    deploy_kv(&node, "kv", "paged");
    let kv = Kv {
        node: &node,
        worker: "kv",
    };

    let mut expected: Vec<String> = (0..5000).map(|i| format!("item:{i:05}")).collect();
    let entries: Vec<Value> = expected
        .iter()
        .map(|k| json!({"key": k, "value": "v"}))
        .collect();
    let (s, b) = node.control_request(Method::POST, "/v1/kv/paged/bulk", Some(&json!(entries)));
    assert_eq!(s, 200, "{b}");
    for k in ["other:é", "other:z", "other:Z", "other:a"] {
        kv.put_text(k, "x");
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/list?prefix=item:&limit=1000&cursor={c}"),
            None => "/list?prefix=item:&limit=1000".to_owned(),
        };
        let page = kv.json(&path);
        pages += 1;
        for k in page["keys"].as_array().unwrap() {
            seen.push(k["name"].as_str().unwrap().to_owned());
        }
        if page["list_complete"] == true {
            assert!(page.get("cursor").is_none(), "{page}");
            break;
        }
        cursor = Some(page["cursor"].as_str().unwrap().to_owned());
        assert!(pages < 10, "paging does not end");
    }
    expected.sort();
    assert_eq!(seen.len(), 5000);
    assert_eq!(seen, expected);
    assert_eq!(pages, 5);

    // Sorted by UTF-8 bytes: "Z" < "a" < "z" < "é".
    let others = kv.json("/list?prefix=other:");
    let names: Vec<&str> = others["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["other:Z", "other:a", "other:z", "other:é"]);
    assert_type_error(&kv.json("/list?cursor=zz-not-hex"), "Invalid cursor");
}

#[test]
fn namespaces_are_isolated_and_shared_by_binding_and_survive_restart() {
    let mut node = TestNode::start();
    deploy_kv(&node, "alpha", "ns-a");
    deploy_kv(&node, "beta", "ns-b");
    deploy_kv(&node, "alpha-twin", "ns-a");
    let a = Kv {
        node: &node,
        worker: "alpha",
    };
    let b = Kv {
        node: &node,
        worker: "beta",
    };
    let twin = Kv {
        node: &node,
        worker: "alpha-twin",
    };
    a.put_text("secret", "from-a");
    assert_eq!(b.get_text("secret"), None, "another namespace saw the key");
    assert_eq!(
        twin.get_text("secret").as_deref(),
        Some("from-a"),
        "same namespace must be shared"
    );
    b.put_text("secret", "from-b");
    assert_eq!(a.get_text("secret").as_deref(), Some("from-a"));

    // The control plane sees the same data.
    let r = node
        .http
        .get(format!("{}/v1/kv/ns-b/values/secret", node.control))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), "from-b");

    node.restart();
    let a = Kv {
        node: &node,
        worker: "alpha",
    };
    let b = Kv {
        node: &node,
        worker: "beta",
    };
    assert_eq!(a.get_text("secret").as_deref(), Some("from-a"));
    assert_eq!(b.get_text("secret").as_deref(), Some("from-b"));

    // A namespace name that could escape the data directory is refused at deploy.
    let (s, e) = node.deploy(
        "evil",
        KV_WORKER,
        json!([{"type":"kv_namespace","name":"KV","namespace":"../deployments"}]),
        &[],
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["code"], "invalid_binding");
}

#[test]
fn control_plane_kv_api_and_cli() {
    let node = TestNode::start();
    let put = |key: &str, body: &'static [u8], query: &str| {
        node.http
            .put(format!("{}/v1/kv/ops/values/{key}{query}", node.control))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .unwrap()
    };
    assert_eq!(put("a%2Fb", b"slash", "").status().as_u16(), 200);
    assert_eq!(
        put("m", b"with-meta", "?metadata=%7B%22x%22%3A1%7D")
            .status()
            .as_u16(),
        200
    );
    let r = put("bad", b"x", "?expiration_ttl=10");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "kv_invalid");
    let r = put(&"k".repeat(513), b"x", "");
    assert_eq!(r.status().as_u16(), 414);

    let (s, list) = node.control_request(Method::GET, "/v1/kv/ops/keys", None);
    assert_eq!(s, 200);
    assert_eq!(
        list["keys"],
        json!([{"name": "a/b"}, {"name": "m", "metadata": {"x": 1}}])
    );

    // A bulk write with one bad entry writes nothing.
    let (s, e) = node.control_request(
        Method::POST,
        "/v1/kv/ops/bulk",
        Some(&json!([{"key":"b1","value":"aGk=","base64":true},{"key":"","value":"x"}])),
    );
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("entry 1:"),
        "{e}"
    );
    let (s, _) = node.control_request(Method::GET, "/v1/kv/ops/values/b1", None);
    assert_eq!(s, 404);

    // The CLI.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edged"))
            .arg("kv")
            .args(args)
            .args(["--control", &node.control, "--token", TOKEN])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(cli(&["put", "ops", "cli-key", "cli-value"]).0);
    assert_eq!(cli(&["get", "ops", "cli-key"]).1, "cli-value");
    let (ok, listed, _) = cli(&["list", "ops", "--prefix", "cli-"]);
    assert!(ok && listed.contains("cli-key"), "{listed}");
    assert!(cli(&["delete", "ops", "cli-key"]).0);
    let (ok, _, err) = cli(&["get", "ops", "cli-key"]);
    assert!(!ok && err.contains("404"), "{err}");
}

#[test]
fn kill_during_writes_loses_no_acknowledged_put() {
    let mut node = TestNode::start();
    deploy_kv(&node, "writer", "durable");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..4 {
        let (acked, stop) = (acked.clone(), stop.clone());
        let url = format!("{}/put?as=text&key=", node.data);
        handles.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("t{t}-{i:06}");
                let r = client
                    .post(format!("{url}{key}"))
                    .header("host", "writer.workers.localhost")
                    .body(key.clone())
                    .send();
                match r {
                    Ok(r) if r.status().is_success() => {
                        acked.lock().unwrap().insert(key);
                    }
                    Ok(_) => {}
                    Err(_) => return, // the node is gone
                }
                i += 1;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    node.kill(); // SIGKILL while writes are in flight
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "too few writes to mean anything: {}",
        acked.len()
    );

    node.restart();
    let mut stored = BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let (s, page) = node.control_request(
            Method::GET,
            &format!("/v1/kv/durable/keys?cursor={cursor}"),
            None,
        );
        assert_eq!(s, 200, "{page}");
        for k in page["keys"].as_array().unwrap() {
            stored.insert(k["name"].as_str().unwrap().to_owned());
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged puts lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
