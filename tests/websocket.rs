//! WebSockets end to end: a real WebSocket client (tokio-tungstenite) against
//! a real `edged serve`, through the data plane, to workers and Durable
//! Objects that use Workers' WebSocket API.

mod common;

use std::time::Duration;

use common::TestNode;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const ECHO: &str = r#"
export default {
  async fetch(req) {
    const url = new URL(req.url);
    if (url.pathname === "/errors") {
      const out = {};
      const [a, b] = Object.values(new WebSocketPair());
      try { a.send("x"); } catch (e) { out.sendBeforeAccept = `${e.name}: ${e.message}`; }
      a.accept();
      try { a.close(1005); } catch (e) { out.badCode = `${e.name}: ${e.message}`; }
      try { a.close(undefined, "why"); } catch (e) { out.reasonNoCode = `${e.name}: ${e.message}`; }
      try { new Response(null, { status: 101, webSocket: a }); out.returnAccepted = "made"; } catch (e) { out.returnAccepted = `${e.name}: ${e.message}`; }
      try { new Response(null, { status: 200, webSocket: b }); } catch (e) { out.wrongStatus = `${e.name}: ${e.message}`; }
      try { new Response(null, { status: 101 }); } catch (e) { out.noSocket = `${e.name}: ${e.message}`; }
      out.readyState = a.readyState;
      out.pairKeys = Object.keys(new WebSocketPair());
      out.isWebSocket = b instanceof WebSocket;
      out.ctor = (() => { try { new WebSocket("ftp://x"); return "made"; } catch (e) { return e.name; } })();
      return Response.json(out);
    }
    if (url.pathname === "/bad") return new Response("bad", { status: 400 });
    if (url.pathname === "/throw") throw new Error("boom");
    if (url.pathname === "/fresh") {
      const [c, s] = Object.values(new WebSocketPair());
      s.accept();
      return new Response(null, { status: 101, webSocket: c });
    }
    if (url.pathname === "/accepted") {
      const [c, s] = Object.values(new WebSocketPair());
      c.accept();
      return new Response(null, { status: 101, webSocket: c });
    }
    if (req.headers.get("upgrade") !== "websocket") {
      return new Response("expected a websocket", { status: 426 });
    }
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    server.addEventListener("message", (ev) => {
      if (ev.data === "close-me") { server.close(4000, "asked"); return; }
      if (ev.data === "state") { server.send(`state ${server.readyState}`); return; }
      if (ev.data === "kind") { server.send(typeof ev.data); return; }
      if (typeof ev.data !== "string") { server.send(new Uint8Array(ev.data)); return; }
      server.send(ev.data);
    });
    server.onclose = (ev) => console.log(`ws-closed ${ev.code} ${ev.reason} ${ev.wasClean}`);
    const headers = {};
    const asked = req.headers.get("sec-websocket-protocol");
    if (asked) headers["sec-websocket-protocol"] = asked.split(",")[0].trim();
    return new Response(null, { status: 101, webSocket: client, headers });
  },
};
"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn connect(node: &TestNode, host: &str, path: &str) -> Ws {
    let addr = node.data.trim_start_matches("http://");
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("host", host.parse().expect("host"));
    let config = WebSocketConfig::default()
        .max_message_size(Some(8 << 20))
        .max_frame_size(Some(8 << 20));
    let (ws, response) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async_with_config(request, Some(config), false),
    )
    .await
    .expect("upgrade within 30 s")
    .expect("upgrade");
    assert_eq!(response.status().as_u16(), 101);
    ws
}

async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("a message within 30 s")
        .expect("the socket is open")
        .expect("a valid message")
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn gauge(node: &TestNode, name: &str) -> f64 {
    TestNode::metric_in(&node.metrics(), name).unwrap_or(0.0)
}

#[test]
fn the_websocket_api_refuses_misuse_with_workers_errors() {
    let node = TestNode::start();
    node.deploy_ok("echo", ECHO);
    let (status, body) = node.get_worker("echo", "/errors");
    assert_eq!(status, 200, "{body}");
    let out: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        out["sendBeforeAccept"],
        "TypeError: You must call one of accept() or state.acceptWebSocket() on this WebSocket before sending messages."
    );
    assert_eq!(
        out["badCode"],
        "TypeError: Invalid WebSocket close code: 1005."
    );
    assert_eq!(
        out["reasonNoCode"],
        "TypeError: If you specify a WebSocket close reason, you must also specify a code."
    );
    // Making the Response is allowed; returning it is not (checked below).
    assert_eq!(out["returnAccepted"], "made");
    assert!(
        out["wrongStatus"]
            .as_str()
            .unwrap_or("")
            .starts_with("RangeError"),
        "{out}"
    );
    assert!(
        out["noSocket"]
            .as_str()
            .unwrap_or("")
            .starts_with("RangeError"),
        "{out}"
    );
    assert_eq!(out["readyState"], 1);
    assert_eq!(out["pairKeys"], json!(["0", "1"]));
    assert_eq!(out["isWebSocket"], true);
    assert_eq!(out["ctor"], "SyntaxError");

    // An accepted end cannot leave in a response: a 500, and the node serves on.
    let rt = runtime();
    let addr = node.data.trim_start_matches("http://").to_owned();
    let mut request = format!("ws://{addr}/accepted")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("host", "echo.workers.localhost".parse().unwrap());
    let refused = rt.block_on(tokio_tungstenite::connect_async(request));
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 500)
        }
        other => panic!("expected a 500, got {other:?}"),
    }
    // An upgrade answered with a plain 200, a 400 or a throw: the client gets
    // that answer at once, never a hang.
    for (path, want) in [("/errors", 200), ("/bad", 400), ("/throw", 500)] {
        let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("host", "echo.workers.localhost".parse().unwrap());
        let answered = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                tokio_tungstenite::connect_async(request),
            )
            .await
        });
        match answered {
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
                assert_eq!(r.status().as_u16(), want, "{path}")
            }
            other => panic!("{path}: expected a plain {want}, got {other:?}"),
        }
    }
    // A plain GET that the worker answers with a socket is a 400, not a 101.
    let (status, body) = node.get_worker("echo", "/fresh");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_websocket_upgrade"), "{body}");
    wait_for("the refused sockets are let go", || {
        gauge(&node, "edged_websocket_ends") == 0.0
    });
}

#[test]
fn echo_text_binary_fragments_ping_and_both_closes() {
    let node = TestNode::start();
    node.deploy_ok("echo", ECHO);
    let rt = runtime();
    rt.block_on(async {
        let mut ws = connect(&node, "echo.workers.localhost", "/").await;
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text("hello"));
        ws.send(Message::binary(vec![0u8, 1, 2, 255]))
            .await
            .unwrap();
        assert_eq!(next(&mut ws).await, Message::binary(vec![0u8, 1, 2, 255]));
        ws.send(Message::text("state")).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text("state 1"));

        // Exactly 1 MiB passes, both ways.
        let big = vec![7u8; 1 << 20];
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::binary(big));

        // A message in three fragments arrives whole.
        ws.send(Message::Frame(Frame::message(
            b"frag".to_vec(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await
        .unwrap();
        ws.send(Message::Frame(Frame::message(
            b"men".to_vec(),
            OpCode::Data(Data::Continue),
            false,
        )))
        .await
        .unwrap();
        ws.send(Message::Frame(Frame::message(
            b"ted".to_vec(),
            OpCode::Data(Data::Continue),
            true,
        )))
        .await
        .unwrap();
        assert_eq!(next(&mut ws).await, Message::text("fragmented"));

        // Pings are answered by the runtime with the same payload.
        ws.send(Message::Ping(b"are you there".to_vec().into()))
            .await
            .unwrap();
        assert_eq!(
            next(&mut ws).await,
            Message::Pong(b"are you there".to_vec().into())
        );

        // The client closes: the worker's close handler runs and the close is answered.
        ws.send(Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            },
        )))
        .await
        .unwrap();
        match next(&mut ws).await {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1000),
            other => panic!("expected the close answered, got {other:?}"),
        }

        // The worker closes: the client gets its code and reason.
        let mut ws = connect(&node, "echo.workers.localhost", "/").await;
        ws.send(Message::text("close-me")).await.unwrap();
        match next(&mut ws).await {
            Message::Close(Some(f)) => {
                assert_eq!((u16::from(f.code), f.reason.as_str()), (4000, "asked"))
            }
            other => panic!("expected the worker's close, got {other:?}"),
        }
        let _ = ws.close(None).await;
    });
    wait_for("the worker saw the client's clean close", || {
        node.log().contains("ws-closed 1000 bye true")
    });
    wait_for("the worker saw its own close answered", || {
        node.log().contains("ws-closed 4000 asked true")
    });
    wait_for("every socket closed", || {
        gauge(&node, "edged_websockets_open") == 0.0 && gauge(&node, "edged_websocket_ends") == 0.0
    });
    let m = node.metrics();
    assert!(
        TestNode::metric_in(&m, "edged_websocket_messages_total").unwrap_or(0.0) >= 10.0,
        "{m}"
    );
    assert!(m.contains("edged_websocket_closes_total"), "{m}");
}

#[test]
fn an_oversized_message_closes_with_1009_and_a_vanished_client_is_a_1006() {
    let node = TestNode::start();
    node.deploy_ok("echo", ECHO);
    let rt = runtime();
    rt.block_on(async {
        let mut ws = connect(&node, "echo.workers.localhost", "/").await;
        ws.send(Message::binary(vec![1u8; (1 << 20) + 1]))
            .await
            .unwrap();
        match next(&mut ws).await {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1009),
            other => panic!("expected a 1009 close, got {other:?}"),
        }

        // Over 1 MiB in fragments is refused the same way.
        let mut ws = connect(&node, "echo.workers.localhost", "/").await;
        for (i, last) in [(0, false), (1, true)] {
            let op = if i == 0 { Data::Binary } else { Data::Continue };
            ws.send(Message::Frame(Frame::message(
                vec![2u8; 600 * 1024],
                OpCode::Data(op),
                last,
            )))
            .await
            .unwrap();
        }
        match next(&mut ws).await {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1009),
            other => panic!("expected a 1009 close, got {other:?}"),
        }

        // A client that just goes away.
        let mut ws = connect(&node, "echo.workers.localhost", "/").await;
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text("hi"));
        drop(ws);
    });
    wait_for("the worker saw the oversized message's close", || {
        node.log().contains("ws-closed 1009")
    });
    wait_for("the worker saw the vanished client", || {
        node.log()
            .contains("ws-closed 1006 WebSocket disconnected without sending Close frame. false")
    });
    wait_for("nothing leaks", || {
        gauge(&node, "edged_websockets_open") == 0.0
            && gauge(&node, "edged_websocket_ends") == 0.0
            && gauge(&node, "edged_request_contexts") == 0.0
    });
    // And the node serves on.
    let (status, _) = node.get_worker("echo", "/plain");
    assert_eq!(status, 426);
}

const CHAT: &str = r#"
import { DurableObject } from "cloudflare:workers";
export class Room extends DurableObject {
  constructor(ctx, env) { super(ctx, env); this.sockets = new Set(); }
  async fetch(req) {
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    const name = new URL(req.url).searchParams.get("who");
    this.sockets.add(server);
    server.addEventListener("message", async (ev) => {
      const n = ((await this.ctx.storage.get("n")) ?? 0) + 1;
      await this.ctx.storage.put("n", n);
      for (const s of this.sockets) s.send(`${n} ${name}: ${ev.data}`);
    });
    server.addEventListener("close", () => this.sockets.delete(server));
    return new Response(null, { status: 101, webSocket: client });
  }
}
export default {
  async fetch(req, env) {
    if (req.headers.get("upgrade") !== "websocket") return new Response("no", { status: 400 });
    const room = new URL(req.url).searchParams.get("room");
    return env.ROOM.getByName(room).fetch(req);
  },
};
"#;

#[test]
fn a_chat_room_object_broadcasts_to_sockets_handed_over_by_a_front_worker() {
    let node = TestNode::start_with("[durable_objects]\nhibernate_after_s = 1\n");
    let (status, body) = node.deploy(
        "chat",
        CHAT,
        json!([{"type":"durable_object_namespace","name":"ROOM","class_name":"Room"}]),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    let rt = runtime();
    rt.block_on(async {
        let mut alice = connect(&node, "chat.workers.localhost", "/?room=r1&who=alice").await;
        let mut bob = connect(&node, "chat.workers.localhost", "/?room=r1&who=bob").await;
        let mut other = connect(&node, "chat.workers.localhost", "/?room=r2&who=carol").await;
        alice.send(Message::text("hi all")).await.unwrap();
        assert_eq!(next(&mut alice).await, Message::text("1 alice: hi all"));
        assert_eq!(next(&mut bob).await, Message::text("1 alice: hi all"));
        // The object stays live with its sockets open, past its hibernation time.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        bob.send(Message::text("hello")).await.unwrap();
        assert_eq!(next(&mut alice).await, Message::text("2 bob: hello"));
        assert_eq!(next(&mut bob).await, Message::text("2 bob: hello"));
        other.send(Message::text("alone")).await.unwrap();
        assert_eq!(next(&mut other).await, Message::text("1 carol: alone"));
        alice.close(None).await.unwrap();
        bob.send(Message::text("still here")).await.unwrap();
        assert_eq!(next(&mut bob).await, Message::text("3 bob: still here"));
        bob.close(None).await.unwrap();
        other.close(None).await.unwrap();
    });
    wait_for("every socket closed", || {
        gauge(&node, "edged_websockets_open") == 0.0 && gauge(&node, "edged_websocket_ends") == 0.0
    });
    // With its sockets gone the objects hibernate.
    wait_for("the rooms hibernated", || {
        gauge(&node, "edged_do_live_objects") == 0.0
    });
}

#[test]
fn a_thousand_idle_sockets_stay_open_with_bounded_memory() {
    let node = TestNode::start_with("[limits]\nwebsockets_per_worker = 1000\n");
    node.deploy_ok("echo", ECHO);
    let rt = runtime();
    let before = node.rss_kib();
    rt.block_on(async {
        let mut open = Vec::new();
        for _ in 0..1000 {
            open.push(connect(&node, "echo.workers.localhost", "/").await);
        }
        // One over the cap is refused with a 429, and the others are unharmed.
        let addr = node.data.trim_start_matches("http://").to_owned();
        let mut request = format!("ws://{addr}/").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("host", "echo.workers.localhost".parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status().as_u16(), 429)
            }
            other => panic!("expected a 429, got {other:?}"),
        }
        let grown = node.rss_kib().saturating_sub(before);
        eprintln!(
            "1000 open sockets: RSS grew {grown} KiB ({} KiB per socket)",
            grown / 1000
        );
        assert!(
            grown < 400 * 1024,
            "1000 idle sockets grew RSS by {grown} KiB"
        );
        assert_eq!(gauge(&node, "edged_websockets_open"), 1000.0);
        for (i, ws) in open.iter_mut().enumerate().step_by(97) {
            ws.send(Message::text(format!("n{i}"))).await.unwrap();
            assert_eq!(next(ws).await, Message::text(format!("n{i}")));
        }
        for ws in &mut open {
            let _ = ws.close(None).await;
        }
    });
    wait_for("every socket closed", || {
        gauge(&node, "edged_websockets_open") == 0.0 && gauge(&node, "edged_websocket_ends") == 0.0
    });
}

const HIBERNATING_CHAT: &str = r#"
import { DurableObject } from "cloudflare:workers";
export class Room extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("ping", "pong"));
  }
  async fetch(req) {
    const url = new URL(req.url);
    if (url.pathname === "/errors") {
      const out = {};
      const [a, b] = Object.values(new WebSocketPair());
      a.accept();
      try { this.ctx.acceptWebSocket(a); } catch (e) { out.afterAccept = `${e.name}: ${e.message}`; }
      try { this.ctx.acceptWebSocket(b); } catch (e) { out.pairAccepted = `${e.name}: ${e.message}`; }
      const [c] = Object.values(new WebSocketPair());
      try { this.ctx.acceptWebSocket(c, Array.from({ length: 11 }, (_, i) => `t${i}`)); } catch (e) { out.tags = `${e.name}: ${e.message}`; }
      try { this.ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair("x".repeat(2049), "y")); } catch (e) { out.bigAuto = `${e.name}: ${e.message}`; }
      try { this.ctx.setHibernatableWebSocketEventTimeout(604800001); } catch (e) { out.timeout = `${e.name}: ${e.message}`; }
      try { this.ctx.getTags(a); } catch (e) { out.getTags = e.name; }
      this.ctx.setHibernatableWebSocketEventTimeout(5000);
      out.eventTimeout = this.ctx.getHibernatableWebSocketEventTimeout();
      out.auto = this.ctx.getWebSocketAutoResponse().response;
      return Response.json(out);
    }
    const [client, server] = Object.values(new WebSocketPair());
    const who = url.searchParams.get("who");
    this.ctx.acceptWebSocket(server, ["room", `user:${who}`, "room"]);
    server.serializeAttachment({ who, joined: new Date(0) });
    return new Response(null, { status: 101, webSocket: client });
  }
  async webSocketMessage(ws, msg) {
    const { who, joined } = ws.deserializeAttachment();
    if (msg === "who") {
      const me = this.ctx.getWebSockets(`user:${who}`);
      ws.send(`${who} tags=${this.ctx.getTags(ws).join(",")} sockets=${this.ctx.getWebSockets().length} same=${me[0] === ws} auto=${this.ctx.getWebSocketAutoResponseTimestamp(ws) !== null} joined=${joined instanceof Date}`);
      return;
    }
    const n = ((await this.ctx.storage.get("n")) ?? 0) + 1;
    await this.ctx.storage.put("n", n);
    const text = typeof msg === "string" ? msg : `${msg.byteLength} bytes`;
    for (const s of this.ctx.getWebSockets("room")) s.send(`${n} ${who}: ${text}`);
  }
  async webSocketClose(ws, code, reason, wasClean) {
    const { who } = ws.deserializeAttachment();
    for (const s of this.ctx.getWebSockets()) s.send(`left ${who} ${code} ${reason} ${wasClean}`);
  }
}
export default {
  async fetch(req, env) {
    const room = new URL(req.url).searchParams.get("room") ?? "lobby";
    return env.ROOM.getByName(room).fetch(req);
  },
};
"#;

#[test]
fn a_hibernating_chat_room_keeps_its_sockets_and_attachments() {
    let node = TestNode::start_with("[durable_objects]\nhibernate_after_s = 1\n");
    let (status, body) = node.deploy(
        "hchat",
        HIBERNATING_CHAT,
        json!([{"type":"durable_object_namespace","name":"ROOM","class_name":"Room"}]),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = node.get("hchat.workers.localhost", "/errors");
    assert_eq!(status, 200, "{body}");
    let out: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        out["afterAccept"],
        "Error: Cannot call `acceptWebSocket()` if the WebSocket was already accepted via `accept()`"
    );
    assert_eq!(
        out["pairAccepted"],
        "Error: Cannot call `acceptWebSocket()` on this WebSocket because its pair has already been accepted or used in a Response."
    );
    assert_eq!(
        out["tags"],
        "Error: a Hibernatable WebSocket cannot have more than 10 tags"
    );
    assert_eq!(
        out["bigAuto"],
        "RangeError: Request cannot be larger than 2048 bytes. A request of size 2049 was provided."
    );
    assert_eq!(
        out["timeout"],
        "Error: Event timeout should not exceed 604800000 ms."
    );
    assert_eq!(out["getTags"], "TypeError");
    assert_eq!(out["eventTimeout"], 5000);
    assert_eq!(out["auto"], "pong");
    // A client's request with an event's method is an HTTP request for the
    // object's fetch(), never its webSocketMessage (here: fetch() answers
    // with a socket, which a non-upgrade request cannot take: a 400).
    for method in ["WEBSOCKET", "ALARM", "RPC"] {
        let resp = reqwest::blocking::Client::new()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}/?room=r9&who=mallory", node.data),
            )
            .header("host", "hchat.workers.localhost")
            .send()
            .expect("answered");
        assert_eq!(resp.status().as_u16(), 400, "{method}");
        assert!(
            resp.text().unwrap().contains("bad_websocket_upgrade"),
            "{method}"
        );
    }
    let counter = |name: &str| gauge(&node, name);
    let rt = runtime();
    rt.block_on(async {
        let mut alice = connect(&node, "hchat.workers.localhost", "/?room=r1&who=alice").await;
        let mut bob = connect(&node, "hchat.workers.localhost", "/?room=r1&who=bob").await;
        alice.send(Message::text("hi")).await.unwrap();
        assert_eq!(next(&mut alice).await, Message::text("1 alice: hi"));
        assert_eq!(next(&mut bob).await, Message::text("1 alice: hi"));
        // Idle, the room hibernates while the runtime keeps both sockets open.
        let hibernated = counter("edged_do_hibernations_total");
        let t0 = std::time::Instant::now();
        while counter("edged_do_live_objects") != 0.0 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the room never hibernated"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(counter("edged_do_hibernations_total") > hibernated - 1.0);
        assert_eq!(counter("edged_do_websockets_open"), 2.0);
        // The auto-response is answered without waking the object.
        let activations = counter("edged_do_activations_total");
        alice.send(Message::text("ping")).await.unwrap();
        assert_eq!(next(&mut alice).await, Message::text("pong"));
        assert_eq!(counter("edged_do_activations_total"), activations);
        assert_eq!(counter("edged_do_live_objects"), 0.0);
        assert_eq!(counter("edged_do_websocket_auto_responses_total"), 1.0);
        // The next message reconstructs it; tags and attachments survived.
        alice.send(Message::text("who")).await.unwrap();
        assert_eq!(
            next(&mut alice).await,
            Message::text("alice tags=room,user:alice sockets=2 same=true auto=true joined=true")
        );
        assert_eq!(counter("edged_do_activations_total"), activations + 1.0);
        bob.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(next(&mut alice).await, Message::text("2 bob: 3 bytes"));
        assert_eq!(next(&mut bob).await, Message::text("2 bob: 3 bytes"));
        // A clean close reaches the object's webSocketClose, and the runtime
        // answers the handshake.
        bob.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: CloseCode::Library(4001),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
        assert_eq!(
            next(&mut alice).await,
            Message::text("left bob 4001 bye true")
        );
        match next(&mut bob).await {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 4001),
            other => panic!("expected bob's close answered, got {other:?}"),
        }
        // A client that vanishes is a 1006 for the object.
        let mut carol = connect(&node, "hchat.workers.localhost", "/?room=r1&who=carol").await;
        carol.send(Message::text("who")).await.unwrap();
        assert_eq!(
            next(&mut carol).await,
            Message::text("carol tags=room,user:carol sockets=2 same=true auto=false joined=true")
        );
        drop(carol);
        assert_eq!(
            next(&mut alice).await,
            Message::text(
                "left carol 1006 WebSocket disconnected without sending Close frame. false"
            )
        );
        alice.close(None).await.unwrap();
    });
    wait_for("every socket closed", || {
        gauge(&node, "edged_do_websockets_open") == 0.0
            && gauge(&node, "edged_websockets_open") == 0.0
            && gauge(&node, "edged_websocket_ends") == 0.0
    });
    wait_for("the room hibernated", || {
        gauge(&node, "edged_do_live_objects") == 0.0
    });
}

const RELAY: &str = r#"
export default {
  async fetch(req) {
    const url = new URL(req.url);
    const target = url.searchParams.get("to");
    if (url.pathname === "/plain") {
      const r = await fetch(target, { headers: { Upgrade: "websocket" } });
      return new Response(`status ${r.status} socket ${r.webSocket} body ${await r.text()}`);
    }
    if (url.pathname === "/refused") {
      try { await fetch(target, { headers: { Upgrade: "websocket" } }); return new Response("connected"); }
      catch (e) { return new Response(`${e.name}: ${e.message}`); }
    }
    if (url.pathname === "/ctor") {
      const ws = new WebSocket(target);
      const states = [ws.readyState];
      const got = await new Promise((resolve, reject) => {
        ws.addEventListener("open", () => { states.push(ws.readyState); ws.send("via ctor"); });
        ws.addEventListener("message", (ev) => { resolve(ev.data); ws.close(1000, "done"); });
        ws.addEventListener("error", (ev) => reject(new Error(ev.message)));
      });
      return new Response(`${got} states ${states.join(",")}`);
    }
    const resp = await fetch(target, { headers: { Upgrade: "websocket" } });
    if (resp.status !== 101) return new Response(`upstream said ${resp.status}`, { status: 502 });
    const upstream = resp.webSocket;
    upstream.accept();
    const [client, server] = Object.values(new WebSocketPair());
    server.accept();
    server.addEventListener("message", (ev) => upstream.send(ev.data));
    upstream.addEventListener("message", (ev) => server.send(ev.data));
    upstream.addEventListener("close", (ev) => server.close(ev.code, ev.reason));
    server.addEventListener("close", (ev) => upstream.close(ev.code === 1005 ? 1000 : ev.code, ev.reason));
    return new Response(null, { status: 101, webSocket: client });
  },
};
"#;

/// A loopback WebSocket server that answers every message with "srv:" and
/// the message, and echoes the client's close.
async fn upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        Message::Text(t) => Message::text(format!("srv:{t}")),
                        Message::Binary(b) => Message::binary([b"srv:".as_slice(), &b].concat()),
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[test]
fn a_worker_connects_out_and_relays_under_the_egress_policy() {
    let node = TestNode::start_with("[egress]\nallow = [\"127.0.0.1\"]\n");
    node.deploy_ok("relay", RELAY);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // A plain HTTP server: the upgrade is refused with a 403.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_addr = plain.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in plain.incoming().flatten().take(1) {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno",
            );
        }
    });
    rt.block_on(async {
        let (addr, _server) = upstream().await;
        let (status, body) = {
            let node = &node;
            let path = format!("/plain?to=http://{plain_addr}/");
            tokio::task::block_in_place(|| node.get("relay.workers.localhost", &path))
        };
        assert_eq!(
            (status, body.as_str()),
            (200, "status 403 socket null body no")
        );
        let (_, body) = tokio::task::block_in_place(|| {
            node.get("relay.workers.localhost", "/refused?to=ws://127.0.0.2:9/")
        });
        assert!(
            body.starts_with("TypeError: fetch to 127.0.0.2 refused by the node's egress policy"),
            "{body}"
        );
        let (_, body) = tokio::task::block_in_place(|| {
            node.get("relay.workers.localhost", &format!("/ctor?to=ws://{addr}/"))
        });
        assert_eq!(body, "srv:via ctor states 0,1");
        // Client ⇄ worker ⇄ upstream, both ways, then a clean close through.
        let mut ws = connect(
            &node,
            "relay.workers.localhost",
            &format!("/?to=http://{addr}/"),
        )
        .await;
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text("srv:hello"));
        ws.send(Message::binary(vec![9u8, 8])).await.unwrap();
        assert_eq!(
            next(&mut ws).await,
            Message::binary(b"srv:\x09\x08".to_vec())
        );
        ws.close(None).await.unwrap();
    });
    wait_for("every socket closed", || {
        gauge(&node, "edged_websockets_open") == 0.0 && gauge(&node, "edged_websocket_ends") == 0.0
    });
    assert_eq!(
        TestNode::metric_in(&node.metrics(), "edged_websocket_outbound_total"),
        Some(3.0),
        "two sockets and one refused upgrade (an egress refusal never connects)"
    );
}
