//! End-to-end: request and response bodies stream through the data plane in both
//! directions with bounded memory, and a body stream that fails midway truncates
//! the response without hurting the node.

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::TestNode;

const WORKER: &str = r#"
export default {
  async fetch(request) {
    const url = new URL(request.url);
    switch (url.pathname) {
      case "/generate": {
        // `mb` MiB produced on demand, one 64 KiB chunk per pull.
        const chunks = Number(url.searchParams.get("mb")) * 16;
        const chunk = new Uint8Array(64 * 1024).fill(120);
        let sent = 0;
        return new Response(new ReadableStream({
          pull(controller) {
            if (sent++ < chunks) controller.enqueue(chunk);
            else controller.close();
          },
        }), { headers: { "content-type": "application/octet-stream" } });
      }
      case "/count": {
        let bytes = 0;
        let chunks = 0;
        const reader = request.body.getReader();
        try {
          while (true) {
            const { value, done } = await reader.read();
            if (done) break;
            bytes += value.byteLength;
            chunks++;
          }
        } catch (e) {
          return new Response(`${e.name}: ${e.message}`, { status: 413 });
        }
        return Response.json({ bytes, chunks });
      }
      case "/text-twice": {
        const text = await request.text();
        let second;
        try { await request.text(); second = "read again"; } catch (e) { second = e.name; }
        return Response.json({ length: text.length, used: request.bodyUsed, second });
      }
      case "/echo":
        return new Response(request.body, { headers: { "x-echo": "1" } });
      case "/transform": {
        const upper = new TransformStream({
          transform(chunk, controller) {
            controller.enqueue(new TextEncoder().encode(new TextDecoder().decode(chunk).toUpperCase()));
          },
        });
        return new Response(request.body.pipeThrough(upper));
      }
      case "/fail-midway": {
        let i = 0;
        return new Response(new ReadableStream({
          async pull(controller) {
            await scheduler.wait(5);
            if (i++ < 4) controller.enqueue(new TextEncoder().encode(`part ${i}\n`.repeat(4000)));
            else controller.error(new Error("the upstream went away"));
          },
        }));
      }
      case "/not-bytes":
        return new Response(new ReadableStream({
          start(controller) { controller.enqueue("a string"); controller.close(); },
        }));
      default:
        return new Response("ok");
    }
  },
};
"#;

/// The tests here run one at a time: two streams on 2 cores starve each
/// other's isolate, and a lagging isolate collects its garbage chunks later,
/// which the 1 GiB tests would measure as memory.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn node() -> TestNode {
    // Uploads of 1 GiB need a body limit above the default 100 MiB, and a worker
    // that touches every chunk of 1 GiB in JS needs more than the default 50 ms
    // of CPU (about 300 ms on the development machine, mostly per-chunk overhead).
    let node = TestNode::start_with("request_body_mb = 1100\n[limits]\ncpu_ms = 3000\n");
    node.deploy_ok("streams", WORKER);
    node
}

/// Samples the node's RSS every 20 ms while `work` runs; returns the growth
/// over the RSS measured just before (KiB).
fn rss_growth_during(node: &TestNode, work: impl FnOnce()) -> u64 {
    let before = node.rss_kib();
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let pid = node.pid();
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap_or_default()
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0);
                peak.fetch_max(rss, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    work();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    peak.load(Ordering::Relaxed).saturating_sub(before)
}

#[test]
fn one_gib_response_streams_with_bounded_memory() {
    let _turn = serial();
    let node = node();
    // Warm the isolate and the path first so the measurement sees only the stream.
    let (s, _) = node.get_worker("streams", "/generate?mb=4");
    assert_eq!(s, 200);
    let mut received = 0u64;
    let growth = rss_growth_during(&node, || {
        let mut resp = node
            .http
            .get(format!("{}/generate?mb=1024", node.data))
            .header("host", "streams.workers.localhost")
            .timeout(Duration::from_secs(300))
            .send()
            .expect("request");
        assert_eq!(resp.status(), 200);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = resp.read(&mut buf).expect("read body");
            if n == 0 {
                break;
            }
            assert!(buf[..n].iter().all(|b| *b == b'x'));
            received += n as u64;
        }
    });
    assert_eq!(received, 1 << 30);
    eprintln!("1 GiB response: RSS growth {growth} KiB");
    assert!(growth < 64 * 1024, "RSS grew by {growth} KiB");
}

/// A reader producing `total` bytes without holding them.
struct Zeros {
    left: u64,
}

impl Read for Zeros {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        buf[..n].fill(0);
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn one_gib_upload_streams_with_bounded_memory() {
    let _turn = serial();
    let node = node();
    let (s, _) = node.get_worker("streams", "/");
    assert_eq!(s, 200);
    let total = 1u64 << 30;
    let mut answer = String::new();
    let growth = rss_growth_during(&node, || {
        let resp = node
            .http
            .post(format!("{}/count", node.data))
            .header("host", "streams.workers.localhost")
            .timeout(Duration::from_secs(300))
            .body(reqwest::blocking::Body::sized(Zeros { left: total }, total))
            .send()
            .expect("upload");
        assert_eq!(resp.status(), 200);
        answer = resp.text().expect("text");
    });
    let v: serde_json::Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(v["bytes"], total, "{answer}");
    assert!(
        v["chunks"].as_u64().unwrap_or(0) > 100,
        "streamed in chunks: {answer}"
    );
    eprintln!("1 GiB upload: RSS growth {growth} KiB");
    assert!(growth < 64 * 1024, "RSS grew by {growth} KiB");
}

#[test]
fn bodies_echo_and_transform_while_streaming() {
    let _turn = serial();
    let node = node();
    // 5 MiB of varied bytes, echoed: request.body straight into the Response.
    let data: Vec<u8> = (0..5u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let resp = node
        .http
        .post(format!("{}/echo", node.data))
        .header("host", "streams.workers.localhost")
        .body(data.clone())
        .send()
        .expect("echo");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo"], "1");
    assert!(resp.bytes().expect("bytes") == data, "echoed bytes differ");

    // A streamed body read whole is used up like any other.
    let resp = node
        .http
        .post(format!("{}/text-twice", node.data))
        .header("host", "streams.workers.localhost")
        .body("y".repeat(300_000))
        .send()
        .expect("text twice");
    assert_eq!(
        resp.text().expect("text"),
        r#"{"length":300000,"used":true,"second":"TypeError"}"#
    );

    let text = "streams all the way down ".repeat(10_000);
    let resp = node
        .http
        .post(format!("{}/transform", node.data))
        .header("host", "streams.workers.localhost")
        .body(text.clone())
        .send()
        .expect("transform");
    assert_eq!(resp.text().expect("text"), text.to_uppercase());
}

#[test]
fn stream_errors_truncate_the_response_and_the_node_keeps_serving() {
    let _turn = serial();
    let node = node();
    let result = node
        .http
        .get(format!("{}/fail-midway", node.data))
        .header("host", "streams.workers.localhost")
        .send()
        .and_then(|r| r.bytes());
    match result {
        // The response is cut off: the chunked body never completes.
        Err(_) => {}
        Ok(body) => panic!("a failed stream arrived complete ({} bytes)", body.len()),
    }
    // A stream that yields strings instead of bytes fails the same way.
    let result = node
        .http
        .get(format!("{}/not-bytes", node.data))
        .header("host", "streams.workers.localhost")
        .send()
        .and_then(|r| r.bytes());
    assert!(result.is_err(), "a non-bytes stream must not complete");

    let (s, body) = node.get_worker("streams", "/");
    assert_eq!((s, body.as_str()), (200, "ok"));
    let log = node.log();
    assert!(
        log.contains("response body stream failed: Error: the upstream went away"),
        "{log}"
    );
    assert!(
        log.contains("This ReadableStream did not return bytes."),
        "{log}"
    );
    assert!(
        node.metrics()
            .contains("edged_response_stream_errors_total 2"),
        "{}",
        node.metrics()
    );
}

#[test]
fn upload_limits_hold_for_declared_and_streamed_bodies() {
    let _turn = serial();
    let node = TestNode::start_with("request_body_mb = 1\n");
    node.deploy_ok("streams", WORKER);
    // Declared too large: 413 before the worker runs.
    let resp = node
        .http
        .post(format!("{}/count", node.data))
        .header("host", "streams.workers.localhost")
        .body(vec![0u8; (1 << 20) + 1])
        .send()
        .expect("upload");
    assert_eq!(resp.status(), 413);
    assert!(resp
        .text()
        .unwrap_or_default()
        .contains("payload_too_large"));
    // Chunked (no length): the worker's read fails with a TypeError past the limit.
    let resp = node
        .http
        .post(format!("{}/count", node.data))
        .header("host", "streams.workers.localhost")
        .body(reqwest::blocking::Body::new(Zeros { left: 3 << 20 }))
        .send()
        .expect("upload");
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    assert_eq!(status, 413, "{text}");
    assert!(
        text.starts_with("TypeError:") && text.contains("limit"),
        "{text}"
    );
    // Just under the limit passes.
    let resp = node
        .http
        .post(format!("{}/count", node.data))
        .header("host", "streams.workers.localhost")
        .body(reqwest::blocking::Body::new(Zeros { left: 1 << 20 }))
        .send()
        .expect("upload");
    assert_eq!(resp.status(), 200);
    assert!(resp
        .text()
        .unwrap_or_default()
        .contains(&format!("\"bytes\":{}", 1 << 20)));
}
