//! End-to-end: outbound `fetch()` from workers (bodies, redirects, abort, the
//! subrequest limit, the egress policy), the event lifecycle (`ctx.waitUntil`
//! with its wall bound, `ctx.passThroughOnException`), and the Cache API's
//! size bound (the rest of the Cache API is in the conformance suite).

mod common;

use std::time::{Duration, Instant};

use common::origin::Origin;
use common::TestNode;
use serde_json::json;

const WORKER: &str = r#"
export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    const target = url.searchParams.get("u");
    if (url.pathname === "/pass-through") {
      ctx.passThroughOnException();
      throw new Error("worker bug");
    }
    const show = async (r) => `${r.status} redirected=${r.redirected} url=${r.url} body=${await r.text()}`;
    try {
      switch (url.pathname) {
        case "/get":
          return new Response(await show(await fetch(target)));
        case "/post": {
          const r = await fetch(target, { method: "POST", body: "payload!", headers: { "x-test": "yes" } });
          return new Response(`${await show(r)} x-origin=${r.headers.get("x-origin")}`);
        }
        case "/post-stream": {
          const { readable, writable } = new TransformStream();
          const writer = writable.getWriter();
          writer.write(new TextEncoder().encode("streamed "));
          writer.write(new TextEncoder().encode("upload")).then(() => writer.close());
          return new Response(await show(await fetch(target, { method: "POST", body: readable, duplex: "half" })));
        }
        case "/redirect":
          return new Response(await show(await fetch(target, { redirect: url.searchParams.get("mode") })));
        case "/abort": {
          const controller = new AbortController();
          setTimeout(() => controller.abort(), 100);
          const started = Date.now();
          try {
            await fetch(target, { signal: controller.signal });
            return new Response("not aborted");
          } catch (e) {
            return new Response(`${e.name} after ${Date.now() - started < 3000 ? "<3s" : ">=3s"}`);
          }
        }
        case "/many": {
          let ok = 0;
          try {
            for (let i = 0; i < 10; i++) {
              await (await fetch(target)).text();
              ok++;
            }
            return new Response(`all ${ok}`);
          } catch (e) {
            return new Response(`${ok} then ${e.name}: ${e.message}`);
          }
        }
        case "/wait-until": {
          const delay = Number(url.searchParams.get("ms"));
          ctx.waitUntil((async () => {
            await scheduler.wait(delay);
            await env.KV.put(url.searchParams.get("key"), "written later");
          })());
          return new Response("responded");
        }
        default:
          return new Response("ok");
      }
    } catch (e) {
      return new Response(`${e.constructor.name}: ${e.message}`, { status: 502 });
    }
  },
};
"#;

fn deploy(node: &TestNode) {
    let (s, b) = node.deploy(
        "out",
        WORKER,
        json!([{"type": "kv_namespace", "name": "KV", "namespace": "out"}]),
        &[],
    );
    assert_eq!(s, 200, "{b}");
}

fn get(node: &TestNode, path: &str) -> (u16, String) {
    node.get_worker("out", path)
}

fn kv_value(node: &TestNode, key: &str) -> Option<String> {
    let resp = node
        .http
        .get(format!("{}/v1/kv/out/values/{key}", node.control))
        .bearer_auth(common::TOKEN)
        .send()
        .expect("kv get");
    (resp.status() == 200).then(|| resp.text().unwrap_or_default())
}

#[test]
fn fetch_reaches_an_allowed_origin_with_bodies_and_redirects() {
    let origin = Origin::start();
    let node = TestNode::start_with("[egress]\nallow = [\"127.0.0.1/32\"]\n");
    deploy(&node);
    let o = &origin.url;

    let (s, b) = get(&node, &format!("/get?u={o}/hello"));
    assert_eq!(
        (s, b.as_str()),
        (
            200,
            format!("200 redirected=false url={o}/hello body=hello from origin").as_str()
        )
    );

    let (_, b) = get(&node, &format!("/post?u={o}/echo"));
    assert_eq!(b, format!("200 redirected=false url={o}/echo body=POST /echo x-test=yes body=payload! x-origin=yes"));

    let (_, b) = get(&node, &format!("/post-stream?u={o}/echo"));
    assert!(
        b.ends_with("body=POST /echo x-test= body=streamed upload"),
        "{b}"
    );

    // follow (the default): three hops, the final URL and `redirected`.
    let (_, b) = get(&node, &format!("/redirect?mode=follow&u={o}/redirect/3"));
    assert_eq!(
        b,
        format!("200 redirected=true url={o}/redirect/0 body=landed")
    );
    // manual: the 302 itself.
    let (_, b) = get(&node, &format!("/redirect?mode=manual&u={o}/redirect/3"));
    assert!(b.starts_with("302 redirected=false"), "{b}");
    // error: a TypeError.
    let (s, b) = get(&node, &format!("/redirect?mode=error&u={o}/redirect/3"));
    assert_eq!(s, 502);
    assert!(b.starts_with("TypeError:"), "{b}");

    // AbortSignal cancels a fetch in flight.
    let started = Instant::now();
    let (_, b) = get(&node, &format!("/abort?u={o}/slow"));
    assert_eq!(b, "AbortError after <3s");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn subrequests_past_the_limit_fail_with_a_clear_error() {
    let origin = Origin::start();
    let node =
        TestNode::start_with("[limits]\nsubrequests = 4\n[egress]\nallow = [\"127.0.0.1\"]\n");
    deploy(&node);
    let before = origin.seen().len();
    let (_, b) = get(&node, &format!("/many?u={}/hello", origin.url));
    assert_eq!(
        b,
        "4 then Error: Too many subrequests. A request may make at most 4 subrequests (fetch(), service binding and Durable Object calls)."
    );
    assert_eq!(
        origin.seen().len() - before,
        4,
        "the fifth call never left the node"
    );
    // The count is per request: the next request starts from zero.
    let (_, b) = get(&node, &format!("/many?u={}/hello", origin.url));
    assert!(b.starts_with("4 then Error"), "{b}");
}

#[test]
fn the_egress_policy_refuses_internal_targets_with_a_type_error() {
    let origin = Origin::start();
    let node = TestNode::start();
    deploy(&node);
    for (target, why) in [
        (format!("{}/hello", origin.url), "loopback"),
        (format!("{}/v1/workers", node.control), "loopback"),
        (
            format!("http://localhost:{}/hello", origin.port),
            "loopback",
        ),
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "link-local",
        ),
        ("http://10.0.0.1/".to_owned(), "private"),
        ("http://[::1]:80/".to_owned(), "loopback"),
    ] {
        let (s, b) = get(&node, &format!("/get?u={target}"));
        assert_eq!(s, 502, "{target}: {b}");
        assert!(
            b.starts_with("TypeError: fetch to ")
                && b.contains("refused by the node's egress policy")
                && b.contains(why),
            "{target}: {b}"
        );
    }
    assert!(origin.seen().is_empty(), "nothing reached the origin");
    // A redirect from an allowed place into a refused one is refused at the hop:
    // checked in the policy unit tests; here the node keeps serving.
    let (s, b) = get(&node, "/");
    assert_eq!((s, b.as_str()), (200, "ok"));
}

#[test]
fn wait_until_work_runs_after_the_response_within_its_bound() {
    let node = TestNode::start_with("[limits]\nwait_until_s = 1\n");
    deploy(&node);
    // Finishes within the bound: the write lands after the response.
    let started = Instant::now();
    let (s, b) = get(&node, "/wait-until?ms=300&key=soon");
    assert_eq!((s, b.as_str()), (200, "responded"));
    assert!(started.elapsed() < Duration::from_millis(300) || kv_value(&node, "soon").is_none());
    let deadline = Instant::now() + Duration::from_secs(10);
    while kv_value(&node, "soon").is_none() {
        assert!(Instant::now() < deadline, "waitUntil work never completed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(kv_value(&node, "soon").as_deref(), Some("written later"));

    // Runs past the 1 s bound: the request ends there, its timer is cancelled
    // (nothing runs for an ended request) and the key never appears.
    let (s, _) = get(&node, "/wait-until?ms=2000&key=late");
    assert_eq!(s, 200);
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(kv_value(&node, "late"), None);
    let log = node.log();
    assert!(
        log.contains("ctx.waitUntil() work did not finish within 1000 ms"),
        "{log}"
    );
}

#[test]
fn pass_through_on_exception_falls_back_to_the_origin() {
    let origin = Origin::start();
    let node = TestNode::start_with(&format!("pass_through_origin = \"{}\"\n", origin.url));
    deploy(&node);
    let resp = node
        .http
        .post(format!("{}/pass-through?x=1", node.data))
        .header("host", "out.workers.localhost")
        .header("x-test", "through")
        .body("original body")
        .send()
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.text().unwrap_or_default(),
        "hello from origin",
        "the origin answered"
    );
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "POST");
    assert_eq!(seen[0].1, "/pass-through?x=1");
    assert_eq!(seen[0].2, b"original body");
    // The origin is reachable for pass-through, not for the worker's own fetch to
    // other ports on that host (the control plane stays out of reach).
    let (s, b) = get(&node, &format!("/get?u={}/v1/workers", node.control));
    assert_eq!(s, 502, "{b}");

    // Without an origin: the generic 500.
    let plain = TestNode::start();
    deploy(&plain);
    let (s, b) = get(&plain, "/pass-through");
    assert_eq!(s, 500);
    assert!(b.contains("worker_exception"), "{b}");
}

const CACHE_WORKER: &str = r#"
export default {
  async fetch(request) {
    const url = new URL(request.url);
    const key = `https://cache.test/${url.searchParams.get("k")}`;
    if (url.pathname === "/put") {
      const body = "x".repeat(Number(url.searchParams.get("kb")) * 1024);
      await caches.default.put(key, new Response(body, { headers: { "cache-control": "max-age=600" } }));
      return new Response("put");
    }
    const hit = await caches.default.match(key);
    return new Response(hit === undefined ? "miss" : `hit ${(await hit.text()).length}`);
  },
};
"#;

#[test]
fn the_cache_is_bounded_and_evicts_least_recently_used() {
    let node = TestNode::start_with("[cache]\nsize_mb = 1\n");
    node.deploy_ok("cache", CACHE_WORKER);
    let get = |p: &str| node.get_worker("cache", p).1;
    assert_eq!(get("/put?k=a&kb=400"), "put");
    assert_eq!(get("/put?k=b&kb=400"), "put");
    // Touch a: b is now the least recently used.
    assert_eq!(get("/match?k=a"), "hit 409600");
    assert_eq!(get("/put?k=c&kb=400"), "put");
    assert_eq!(get("/match?k=b"), "miss", "the LRU entry made room");
    assert_eq!(get("/match?k=a"), "hit 409600");
    assert_eq!(get("/match?k=c"), "hit 409600");
    // An entry larger than the whole cache is not stored.
    assert_eq!(get("/put?k=huge&kb=1100"), "put");
    assert_eq!(get("/match?k=huge"), "miss");
    let m = node.metrics();
    assert!(
        m.contains("edged_cache_operations_total{op=\"evict\",result=\"lru\"}"),
        "{m}"
    );
    let bytes = TestNode::metric_in(&m, "edged_cache_bytes").unwrap_or(f64::MAX);
    assert!(bytes <= 1024.0 * 1024.0, "{m}");
}
