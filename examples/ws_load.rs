//! WebSocket load generator for `benches/load/websocket.py`.
//!
//! `ws_load echo <ws-url> <host> <connections> <seconds> <bytes>`: each
//! connection sends a text message of `bytes` bytes, waits for its echo, and
//! repeats (one message in flight per connection); prints one JSON line with
//! messages/s and per-message round-trip percentiles.
//!
//! `ws_load idle <ws-url> <host> <connections> <hold-seconds>`: opens that many
//! sockets, prints `{"open": n}` once they are all open, holds them for
//! `hold-seconds`, and closes them (the caller measures the server's memory
//! meanwhile).
//!
//! Bounded: every phase has a deadline.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str, host: &str) -> Result<Ws, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request
        .headers_mut()
        .insert("host", host.parse().map_err(|_| "bad host".to_string())?);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(ws)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn echo(url: String, host: String, conns: usize, seconds: u64, bytes: usize) {
    let payload = "x".repeat(bytes);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (url, host, payload) = (url.clone(), host.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let Ok(mut ws) = open(&url, &host).await else {
                return (lat, 1);
            };
            while Instant::now() < end {
                let t = Instant::now();
                if ws.send(Message::text(payload.clone())).await.is_err() {
                    errors += 1;
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                    Ok(Some(Ok(Message::Text(_)))) => lat.push(t.elapsed().as_micros() as u64),
                    _ => {
                        errors += 1;
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
            (lat, errors)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let elapsed = started
        .elapsed()
        .as_secs_f64()
        .min(seconds as f64)
        .max(0.001);
    all.sort_unstable();
    println!(
        "{{\"messages\": {}, \"msgs_per_s\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"errors\": {}}}",
        all.len(),
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        errors
    );
}

async fn idle(url: String, host: String, conns: usize, hold: u64) {
    let mut open_sockets = Vec::new();
    for _ in 0..conns {
        match open(&url, &host).await {
            Ok(ws) => open_sockets.push(ws),
            Err(e) => {
                eprintln!("open failed: {e}");
                break;
            }
        }
    }
    // One round trip on a few, so every socket is fully set up server-side.
    for ws in open_sockets.iter_mut().step_by(97) {
        let _ = ws.send(Message::text("hi")).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    }
    println!("{{\"open\": {}}}", open_sockets.len());
    tokio::time::sleep(Duration::from_secs(hold)).await;
    for ws in &mut open_sockets {
        let _ = ws.close(None).await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: ws_load echo <url> <host> <conns> <seconds> <bytes> | idle <url> <host> <conns> <hold-seconds>";
    let num = |i: usize| -> u64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{usage}"))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.get(1).map(String::as_str) {
        Some("echo") => rt.block_on(echo(
            args[2].clone(),
            args[3].clone(),
            num(4) as usize,
            num(5),
            num(6) as usize,
        )),
        Some("idle") => rt.block_on(idle(
            args[2].clone(),
            args[3].clone(),
            num(4) as usize,
            num(5),
        )),
        _ => eprintln!("{usage}"),
    }
}
