//! TLS at the PoP, end to end with certificates made here (rcgen): the HTTPS
//! data plane serves workers with `https:` URLs and `request.cf`, picks the
//! certificate by SNI, speaks HTTP/2 by ALPN, reloads certificates under load
//! without failing a request (file change and SIGHUP), answers a plain-HTTP
//! request on its port with a 400, refuses unknown names and failed
//! handshakes per connection, redirects plain HTTP when told to, and the
//! control plane over TLS works with `edged deploy --ca`.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestNode;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::Value;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "edged test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf certificate for `names`, written to `<dir>/<file>.pem|.key`;
    /// its DER.
    fn issue(&self, dir: &Path, file: &str, names: &[&str]) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        // Written beside and renamed in, as a deploy tool would.
        for (ext, text) in [("pem", cert.pem()), ("key", key.serialize_pem())] {
            let tmp = dir.join(format!(".{file}.{ext}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, dir.join(format!("{file}.{ext}"))).unwrap();
        }
        cert.der().to_vec()
    }

    fn write_pem(&self, path: &Path) {
        std::fs::write(path, self.cert.pem()).unwrap();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const WORKER: &str = "export default { fetch(req) { \
    return Response.json({ url: req.url, cf: req.cf, own: new Request('https://x/').cf ?? null }); } }";

/// A client that trusts `ca` and sends every name to `addr`.
fn client(ca: &Path, addr: SocketAddr, pooled: bool) -> reqwest::blocking::Client {
    let pem = std::fs::read(ca).unwrap();
    let mut b = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_info(true)
        .timeout(Duration::from_secs(30));
    for name in ["a.example", "b.example", "other.example", "x.b.example"] {
        b = b.resolve(name, addr);
    }
    if !pooled {
        b = b.pool_max_idle_per_host(0);
    }
    b.build().unwrap()
}

fn peer_der(resp: &reqwest::blocking::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

struct TlsNode {
    node: TestNode,
    https: SocketAddr,
    dir: tempfile::TempDir,
    ca: Ca,
    ca_file: PathBuf,
    a_der: Vec<u8>,
    b_der: Vec<u8>,
    default_der: Option<Vec<u8>>,
}

/// A node with `a.example` and `*.b.example`/`b.example` certificates, and a
/// default one when `default` is true; `extra` goes into `[tls]`.
fn tls_node(default: bool, extra: &str) -> TlsNode {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = dir.path().join("ca.pem");
    ca.write_pem(&ca_file);
    let a_der = ca.issue(dir.path(), "a", &["a.example"]);
    let b_der = ca.issue(dir.path(), "b", &["b.example", "*.b.example"]);
    let default_der =
        default.then(|| ca.issue(dir.path(), "default", &["other.example", "127.0.0.1"]));
    let port = free_port();
    let d = dir.path().display();
    let default_keys = if default {
        format!("cert = \"{d}/default.pem\"\nkey = \"{d}/default.key\"\n")
    } else {
        String::new()
    };
    let config = format!(
        "[tls]\nlisten = \"127.0.0.1:{port}\"\n{default_keys}{extra}\n\
         [[tls.certificates]]\nhosts = [\"a.example\"]\ncert = \"{d}/a.pem\"\nkey = \"{d}/a.key\"\n\
         [[tls.certificates]]\nhosts = [\"b.example\", \"*.b.example\"]\ncert = \"{d}/b.pem\"\nkey = \"{d}/b.key\"\n"
    );
    let node = TestNode::start_with(&config);
    let (s, b) = node.deploy(
        "tls-app",
        WORKER,
        serde_json::json!([]),
        &[
            "a.example/*",
            "b.example/*",
            "*.b.example/*",
            "other.example/*",
        ],
    );
    assert_eq!(s, 200, "{b}");
    TlsNode {
        node,
        https: SocketAddr::from(([127, 0, 0, 1], port)),
        dir,
        ca,
        ca_file,
        a_der,
        b_der,
        default_der,
    }
}

fn metric(node: &TestNode, name: &str) -> f64 {
    TestNode::metric_in(&node.metrics(), name).unwrap_or(0.0)
}

#[test]
fn https_serves_workers_with_sni_alpn_and_cf() {
    let t = tls_node(true, "");
    // Every client and response of the checks is dropped at the block's end.
    {
        check_sni_alpn_and_cf(&t);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&t.node, "edged_tls_connections_active") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "TLS connections never counted closed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn check_sni_alpn_and_cf(t: &TlsNode) {
    let port = t.https.port();
    let http = client(&t.ca_file, t.https, true);
    // HTTP/2 by ALPN, a.example's certificate, https: URL, request.cf.
    let resp = http
        .get(format!("https://a.example:{port}/path?q=1"))
        .send()
        .expect("HTTPS request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(peer_der(&resp), t.a_der, "a.example's certificate");
    let body: Value = resp.json().unwrap();
    assert_eq!(body["url"], format!("https://a.example:{port}/path?q=1"));
    let cf = &body["cf"];
    assert_eq!(cf["tlsVersion"], "TLSv1.3", "{cf}");
    assert!(
        cf["tlsCipher"]
            .as_str()
            .is_some_and(|c| c.starts_with("AEAD-")),
        "{cf}"
    );
    assert_eq!(cf["httpProtocol"], "HTTP/2", "{cf}");
    assert_eq!(cf["colo"], "local", "{cf}");
    assert!(cf["clientTcpRtt"].is_number(), "{cf}");
    assert_eq!(
        body["own"],
        Value::Null,
        "a request the worker makes has no cf"
    );
    // The other certificate by SNI, exact and wildcard; HTTP/1.1 when asked.
    let h1 = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&t.ca_file).unwrap()).unwrap(),
        )
        .tls_info(true)
        .http1_only()
        .resolve("x.b.example", t.https)
        .resolve("b.example", t.https)
        .build()
        .unwrap();
    for host in ["b.example", "x.b.example"] {
        let resp = h1
            .get(format!("https://{host}:{port}/"))
            .send()
            .expect("HTTPS/1.1");
        assert_eq!(resp.version(), reqwest::Version::HTTP_11);
        assert_eq!(peer_der(&resp), t.b_der, "{host}: b's certificate");
        let body: Value = resp.json().unwrap();
        assert_eq!(body["cf"]["httpProtocol"], "HTTP/1.1");
    }
    // TLS 1.2 works too.
    let tls12 = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&t.ca_file).unwrap()).unwrap(),
        )
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .resolve("a.example", t.https)
        .build()
        .unwrap();
    let body: Value = tls12
        .get(format!("https://a.example:{port}/"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["cf"]["tlsVersion"], "TLSv1.2", "{body}");
    assert!(body["cf"]["tlsCipher"]
        .as_str()
        .is_some_and(|c| c.starts_with("ECDHE-")));
    // An unknown name gets the default certificate.
    let resp = http
        .get(format!("https://other.example:{port}/"))
        .send()
        .unwrap();
    assert_eq!(Some(peer_der(&resp)), t.default_der);
    // Plain HTTP still serves, with an http: URL and empty TLS fields; a
    // client's forwarding headers do not make it https.
    let resp = t
        .node
        .http
        .get(format!("{}/plain", t.node.data))
        .header("host", "a.example")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "proto=https")
        .send()
        .unwrap();
    let (s, b) = (resp.status().as_u16(), resp.text().unwrap());
    assert_eq!(s, 200);
    let body: Value = serde_json::from_str(&b).unwrap();
    assert!(body["url"]
        .as_str()
        .unwrap()
        .starts_with("http://a.example"));
    assert_eq!(body["cf"]["tlsVersion"], "");
    assert_eq!(body["cf"]["httpProtocol"], "HTTP/1.1");
    // Metrics: handshakes by version, connections open now.
    let text = t.node.metrics();
    assert!(
        text.lines()
            .any(|l| l.starts_with("edged_tls_handshakes_total")
                && l.contains("outcome=\"ok\"")
                && l.contains("version=\"TLSv1_3\"")),
        "{text}"
    );
    assert!(metric(&t.node, "edged_tls_connections_active") >= 1.0);
}

#[test]
fn bad_input_fails_only_its_own_connection() {
    let t = tls_node(false, "");
    let port = t.https.port();
    let http = client(&t.ca_file, t.https, true);
    // Plain HTTP on the TLS port: a clear 400, then the connection closes.
    let plain = reqwest::blocking::Client::new();
    let resp = plain
        .get(format!("http://127.0.0.1:{port}/"))
        .header("host", "a.example")
        .send()
        .expect("an answer, not a hang");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["code"], "tls_required", "{body}");
    // A name with no certificate and no default: the handshake is refused.
    let e = http
        .get(format!("https://other.example:{port}/"))
        .send()
        .expect_err("no certificate for other.example");
    eprintln!("unknown SNI: {e:?}");
    // A client that does not trust the certificate: its handshake fails.
    let untrusting = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .resolve("a.example", t.https)
        .build()
        .unwrap();
    assert!(untrusting
        .get(format!("https://a.example:{port}/"))
        .send()
        .is_err());
    // A connection that never says anything: dropped after the handshake
    // timeout, while everyone else is served.
    let silent = std::net::TcpStream::connect(t.https).unwrap();
    let resp = http
        .get(format!("https://a.example:{port}/"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "others are served meanwhile");
    let text = t.node.metrics();
    let count = |outcome: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("edged_tls_handshakes_total")
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(count("plain_http") >= 1.0, "{text}");
    assert!(count("unknown_sni") >= 1.0, "{text}");
    assert!(count("failed") >= 1.0, "{text}");
    drop(silent);
}

#[test]
fn certificates_reload_under_load_without_a_failed_request() {
    // Files checked every second; new connections for every request, so
    // every request makes a handshake.
    let t = tls_node(true, "reload_s = 1\n");
    let port = t.https.port();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let http = client(&t.ca_file, t.https, false);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match http.get(format!("https://a.example:{port}/")).send() {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            eprintln!("status {}", r.status());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("request failed: {e:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    // A kept-alive connection opened before the reload stays up after it.
    let kept = client(&t.ca_file, t.https, true);
    assert_eq!(
        peer_der(
            &kept
                .get(format!("https://a.example:{port}/"))
                .send()
                .unwrap()
        ),
        t.a_der
    );
    std::thread::sleep(Duration::from_millis(500));
    let renewed = t.ca.issue(t.dir.path(), "a", &["a.example"]);
    // A new client each time: a resumed session would report the old one.
    let fresh = || client(&t.ca_file, t.https, false);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = fresh()
            .get(format!("https://a.example:{port}/"))
            .send()
            .unwrap();
        if peer_der(&resp) == renewed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken file keeps the previous certificates in use.
    std::fs::write(t.dir.path().join("a.pem"), "garbage").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let resp = fresh()
        .get(format!("https://a.example:{port}/"))
        .send()
        .unwrap();
    assert_eq!(peer_der(&resp), renewed, "a broken file changes nothing");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let resp = kept
        .get(format!("https://a.example:{port}/"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "the kept-alive connection survived");
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("reload under load: {ok} requests, {failed} failed");
    assert!(ok > 50, "the load ran ({ok})");
    assert_eq!(failed, 0, "no request failed across the reloads");
    let text = t.node.metrics();
    assert!(
        text.contains("edged_tls_reloads_total{outcome=\"ok\"}"),
        "{text}"
    );
    assert!(
        text.contains("edged_tls_reloads_total{outcome=\"failed\"}"),
        "{text}"
    );
}

#[test]
fn sighup_reloads_certificates() {
    let t = tls_node(false, "reload_s = 0\n");
    let port = t.https.port();
    let http = client(&t.ca_file, t.https, false);
    let before = peer_der(
        &http
            .get(format!("https://b.example:{port}/"))
            .send()
            .unwrap(),
    );
    assert_eq!(before, t.b_der);
    let renewed = t.ca.issue(t.dir.path(), "b", &["b.example", "*.b.example"]);
    std::thread::sleep(Duration::from_millis(300));
    let still = peer_der(
        &client(&t.ca_file, t.https, false)
            .get(format!("https://b.example:{port}/"))
            .send()
            .unwrap(),
    );
    assert_eq!(still, t.b_der, "no polling with reload_s = 0");
    t.node.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    // A new client each time: a resumed session would report the old one.
    while peer_der(
        &client(&t.ca_file, t.https, false)
            .get(format!("https://b.example:{port}/"))
            .send()
            .unwrap(),
    ) != renewed
    {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn plain_http_redirects_when_told() {
    let t = tls_node(true, "plain_http = \"redirect\"\n");
    let port = t.https.port();
    let no_follow = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_follow
        .get(format!("{}/p?x=1", t.node.data))
        .header("host", "a.example:8080")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        format!("https://a.example:{port}/p?x=1").as_str()
    );
}

#[test]
fn start_fails_naming_a_missing_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edged.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncontrol_listen = \"127.0.0.1:0\"\ndata_dir = \"{d}/data\"\ntoken = \"t\"\n\
             [tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{d}/missing.pem\"\nkey = \"{d}/missing.key\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edged"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.pem"), "{stderr}");
}

#[test]
fn control_plane_over_tls_with_deploy_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = dir.path().join("ca.pem");
    ca.write_pem(&ca_file);
    ca.issue(dir.path(), "control", &["localhost"]);
    ca.issue(dir.path(), "default", &["localhost"]);
    let d = dir.path().display();
    let mut node = TestNode::start_with(&format!(
        "[tls]\nlisten = \"127.0.0.1:{}\"\ncert = \"{d}/default.pem\"\nkey = \"{d}/default.key\"\n\
         control_cert = \"{d}/control.pem\"\ncontrol_key = \"{d}/control.key\"\n",
        free_port()
    ));
    assert!(node.control.starts_with("https://"), "{}", node.control);
    let url = node.control.replace("127.0.0.1", "localhost");
    // Plain HTTP to the control plane is not served.
    let plain = node.control.replace("https://", "http://");
    assert!(reqwest::blocking::Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .map(|r| r.status() != 200)
        .unwrap_or(true));
    let script = dir.path().join("w.js");
    std::fs::write(
        &script,
        "export default { fetch() { return new Response('over tls'); } }",
    )
    .unwrap();
    let deploy = |with_ca: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_edged"));
        cmd.args(["deploy", "--name", "secure"]).arg(&script).args([
            "--control",
            &url,
            "--token",
            common::TOKEN,
        ]);
        if with_ca {
            cmd.arg("--ca").arg(&ca_file);
        }
        cmd.output().unwrap()
    };
    let out = deploy(false);
    assert!(!out.status.success(), "an unverified server is refused");
    let out = deploy(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.http = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&ca_file).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    node.control = url;
    let (s, b) = node.control_request(reqwest::Method::GET, "/v1/workers/secure", None);
    assert_eq!(s, 200, "{b}");
    let (s, body) = node.get_worker("secure", "/");
    assert_eq!((s, body.as_str()), (200, "over tls"));
}

/// PoPs talk to each other over TLS when the cluster has a CA: a remote
/// actor message crosses it (the owner verified against the cluster CA), and
/// the peer listener no longer answers plain HTTP.
#[test]
fn peers_speak_tls_with_the_cluster_ca() {
    use common::cluster::{cluster_config, status, wait_members, NatsCore};
    let core = NatsCore::start(3);
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let ca_file = dir.path().join("cluster-ca.pem");
    ca.write_pem(&ca_file);
    let d = dir.path().display();
    let nodes: Vec<TestNode> = ["pop-a", "pop-b"]
        .iter()
        .map(|id| {
            ca.issue(dir.path(), id, &["127.0.0.1"]);
            let tls = format!(
                "[cluster]\npeer_cert = \"{d}/{id}.pem\"\npeer_key = \"{d}/{id}.key\"\npeer_ca = \"{}\"\n",
                ca_file.display()
            );
            TestNode::start_with(&cluster_config(&core.urls, id, "eu").replacen("[cluster]\n", &tls, 1))
        })
        .collect();
    wait_members(&nodes.iter().collect::<Vec<_>>(), 2);
    let source = "import { DurableObject } from 'cloudflare:workers';\n\
        export class Counter extends DurableObject {\n\
          async fetch() { const v = ((await this.ctx.storage.get('v')) ?? 0) + 1;\n\
            this.ctx.storage.put('v', v); return new Response(String(v)); } }\n\
        export default { fetch(req, env) { return env.C.get(env.C.idFromName('one')).fetch(req); } };";
    let (s, b) = nodes[0].deploy(
        "peer-tls",
        source,
        serde_json::json!([{"type": "durable_object_namespace", "name": "C", "class_name": "Counter"}]),
        &[],
    );
    assert_eq!(s, 200, "{b}");
    let mut seen = Vec::new();
    for i in 0..6 {
        let n = &nodes[i % 2];
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (s, body) = n.get_worker("peer-tls", "/");
            if s == 200 {
                seen.push(body.parse::<u64>().unwrap());
                break;
            }
            assert!(Instant::now() < deadline, "{s} {body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(
        seen,
        vec![1, 2, 3, 4, 5, 6],
        "one object, served across PoPs"
    );
    let remote: f64 = nodes
        .iter()
        .map(|n| {
            n.metrics()
                .lines()
                .filter(|l| {
                    l.starts_with("edged_cluster_remote_calls_total")
                        && l.contains("outcome=\"ok\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum();
    assert!(
        remote >= 3.0,
        "the calls from the non-owner went over the peer transport ({remote})"
    );
    // Plain HTTP to a peer listener gets no answer from it.
    let peer = status(&nodes[0])["members"][0]["peer"]
        .as_str()
        .unwrap()
        .to_owned();
    let plain = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .post(format!("http://{peer}/peer/v1/object"))
        .send();
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}
