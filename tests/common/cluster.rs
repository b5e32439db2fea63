//! A real cluster for tests: a NATS JetStream core of real `nats-server`
//! processes (pinned 2.15.x, `sync_interval: always`, found through
//! `EDGED_NATS_SERVER`, `scripts/setup-nats.sh`'s install or `PATH`) and edged
//! nodes as real processes, all on free loopback ports.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::TestNode;

pub const SECRET: &str = "test-cluster-secret-0123456789";

/// The nats-server binary, or a panic saying how to get it.
pub fn nats_server() -> PathBuf {
    if let Ok(p) = std::env::var("EDGED_NATS_SERVER") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    let cached = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/edged/nats-server-2.15.1/bin/nats-server");
    if cached.exists() {
        return cached;
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in path.split(':') {
            let candidate = PathBuf::from(dir).join("nats-server");
            if candidate.exists() {
                return candidate;
            }
        }
    }
    panic!("nats-server not found: run scripts/setup-nats.sh (or set EDGED_NATS_SERVER)");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Server {
    child: Option<Child>,
    conf: PathBuf,
    log: PathBuf,
}

/// A NATS JetStream core of `n` clustered servers. `no_advertise` keeps the
/// servers from telling clients about each other, so a node configured with
/// one server's URL really depends on that server alone (tests cut nodes off).
pub struct NatsCore {
    servers: Vec<Server>,
    pub urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl NatsCore {
    pub fn start(n: usize) -> NatsCore {
        let dir = tempfile::tempdir().expect("tempdir");
        let clients: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers = Vec::new();
        for i in 0..n {
            let others: Vec<String> = (0..n)
                .filter(|j| *j != i)
                .map(|j| format!("\"nats-route://127.0.0.1:{}\"", routes[j]))
                .collect();
            let store = dir.path().join(format!("js{i}"));
            let conf = dir.path().join(format!("n{i}.conf"));
            let text = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{}\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\ncluster {{\n  name: edged\n  no_advertise: true\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                clients[i],
                store.display(),
                routes[i],
                others.join(", ")
            );
            std::fs::write(&conf, text).expect("write nats config");
            let log = dir.path().join(format!("n{i}.log"));
            servers.push(Server {
                child: None,
                conf,
                log,
            });
        }
        let mut core = NatsCore {
            servers,
            urls: clients
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect(),
            _dir: dir,
        };
        core.start_all();
        core
    }

    fn start_all(&mut self) {
        let bin = nats_server();
        for s in &mut self.servers {
            if s.child.is_some() {
                continue;
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&s.log)
                .expect("nats log");
            let err = log.try_clone().expect("nats log");
            s.child = Some(
                Command::new(&bin)
                    .arg("-c")
                    .arg(&s.conf)
                    .stdout(Stdio::from(log))
                    .stderr(Stdio::from(err))
                    .spawn()
                    .expect("start nats-server"),
            );
        }
        for url in &self.urls {
            let addr = url.trim_start_matches("nats://").to_owned();
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(&addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "nats-server {addr} did not start"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stops every server (SIGKILL).
    pub fn stop(&mut self) {
        for s in &mut self.servers {
            if let Some(mut c) = s.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Stops server `i` (SIGKILL).
    pub fn stop_one(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the stopped servers again on the same ports and storage.
    pub fn restart(&mut self) {
        self.start_all();
    }

    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| std::fs::read_to_string(&s.log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for NatsCore {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `[cluster]` TOML for a node that reaches the core at `urls`.
pub fn cluster_config(urls: &[String], node: &str, region: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[cluster]\nnode_id = \"{node}\"\nregion = \"{region}\"\nnats = [{}]\npeer_listen = \"127.0.0.1:0\"\nsecret = \"{SECRET}\"\nreplicas = 3\nheartbeat_ms = 500\nlease_ms = 2000\npeer_timeout_s = 10\n[durable_objects]\nhibernate_after_s = 600\n",
        urls.join(", ")
    )
}

pub fn start_node(core: &NatsCore, node: &str, region: &str) -> TestNode {
    TestNode::start_with(&cluster_config(&core.urls, node, region))
}

/// `GET /v1/cluster` on a node.
pub fn status(node: &TestNode) -> Value {
    node.control_request(reqwest::Method::GET, "/v1/cluster", None)
        .1
}

/// Waits until every node's engine is connected and it sees `n` members.
pub fn wait_members(nodes: &[&TestNode], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    for node in nodes {
        loop {
            let s = status(node);
            let members = s["members"].as_array().map(|m| m.len()).unwrap_or(0);
            if s["engine"] == "connected" && members == n && s["fenced"] == false {
                break;
            }
            if Instant::now() >= deadline {
                let all: Vec<String> = nodes.iter().map(|n| status(n).to_string()).collect();
                panic!(
                    "cluster did not form ({n} members) within 90 s: {s}\nevery node:\n{}",
                    all.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Messages in the Durable Object log stream (`EDGED_DOLOG`), read from the core.
pub fn object_log_messages(core: &NatsCore) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(core.urls.clone())
            .await
            .expect("connect to the core");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("EDGED_DOLOG").await.expect("the log stream");
        stream.info().await.expect("stream info").state.messages
    })
}

/// Which core server (by index) leads stream `name` now.
pub fn stream_leader(core: &NatsCore, name: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let leader = rt.block_on(async {
        let client = async_nats::connect(core.urls.clone())
            .await
            .expect("connect to the core");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(name).await.expect("the stream");
        let info = stream.info().await.expect("stream info");
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .expect("the stream has a leader")
    });
    leader
        .trim_start_matches('n')
        .parse()
        .expect("server names are n<index>")
}

/// A TCP proxy on loopback that can cut what passes through it (this kernel
/// has no netem): a partition made in user space.
pub struct Proxy {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    /// Forwards `127.0.0.1:<port>` to `target` (host:port).
    pub fn start(target: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Default::default();
        let (c, k, target) = (cut.clone(), conns.clone(), target.to_owned());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let mut list = k.lock().unwrap();
                for s in [&inbound, &outbound] {
                    if let Ok(s) = s.try_clone() {
                        list.push(s);
                    }
                }
                drop(list);
                for (mut from, mut to) in [
                    (inbound.try_clone(), outbound.try_clone()),
                    (outbound.try_clone(), inbound.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, cut, conns }
    }

    /// Cuts every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
