//! Shared helpers for end-to-end tests: a real `edged serve` process on free
//! loopback ports, with its own data directory, and a small blocking HTTP client.
#![allow(dead_code)]

pub mod cluster;
pub mod origin;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

pub const TOKEN: &str = "test-token";

pub struct TestNode {
    child: Option<Child>,
    pub data: String,
    pub control: String,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra_config: String,
    pub http: reqwest::blocking::Client,
}

fn spawn(dir: &Path, extra_config: &str) -> (Child, String, String) {
    let config = dir.join("edged.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ncontrol_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ntoken = \"{TOKEN}\"\n{extra_config}",
        dir.join("data").display()
    );
    std::fs::write(&config, text).expect("write config");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("edged.log"))
        .expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edged"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("EDGED_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start edged");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut data, mut control) = (None, None);
    while data.is_none() || control.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("edged did not announce its listeners within 60 s");
        if let Some(a) = line.strip_prefix("edged: data plane listening on ") {
            data = Some(a.to_owned());
        }
        if let Some(a) = line.strip_prefix("edged: control plane listening on ") {
            control = Some(a.to_owned());
        }
    }
    (child, data.unwrap_or_default(), control.unwrap_or_default())
}

impl TestNode {
    pub fn start() -> TestNode {
        Self::start_with("")
    }

    /// Starts a node; `extra_config` is TOML appended to the generated `[server]`
    /// table: plain keys land in it, and a `[table]` header opens another.
    pub fn start_with(extra_config: &str) -> TestNode {
        Self::start_prepared(extra_config, |_| {})
    }

    /// [`TestNode::start_with`], after `prepare` has run on the node's
    /// directory (its data directory will be `<dir>/data`).
    pub fn start_prepared(extra_config: &str, prepare: impl FnOnce(&Path)) -> TestNode {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        prepare(&dir);
        let (child, data, control) = spawn(&dir, extra_config);
        TestNode {
            child: Some(child),
            data,
            control,
            dir,
            _tmp: Some(tmp),
            extra_config: extra_config.to_owned(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }

    /// The value of metric `name` in `/metrics` text (summed over its label
    /// sets), if it is there.
    pub fn metric_in(text: &str, name: &str) -> Option<f64> {
        let values: Vec<f64> = text
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Kills the process (SIGKILL) and starts a new one on the same data dir.
    pub fn restart(&mut self) {
        self.kill();
        let (child, data, control) = spawn(&self.dir, &self.extra_config);
        self.child = Some(child);
        self.data = data;
        self.control = control;
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the process.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.child.as_ref().map(|c| c.id()) {
            let _ = Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status();
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The node's Prometheus text from `/metrics`.
    pub fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.control))
            .send()
            .expect("metrics request")
            .text()
            .unwrap_or_default()
    }

    /// Everything the node has logged so far (stderr of every run).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("edged.log")).unwrap_or_default()
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The node's resident set size in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    pub fn control_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        self.control_request_as(TOKEN, method, path, body)
    }

    /// Creates account `id` and a token for it (operator calls); the token.
    pub fn account(&self, id: &str) -> String {
        let post = reqwest::Method::POST;
        let (s, b) = self.control_request(post.clone(), "/v1/accounts", Some(&json!({ "id": id })));
        assert_eq!(s, 201, "{b}");
        let body = json!({ "account": id, "label": "test" });
        let (s, b) = self.control_request(post, "/v1/tokens", Some(&body));
        assert_eq!(s, 201, "{b}");
        b["token"].as_str().expect("token").to_owned()
    }

    /// A control-plane call with `token` (an account's, say); (status, JSON).
    pub fn control_request_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.control))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().expect("control plane request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn deploy_body(&self, name: &str, body: &Value) -> (u16, Value) {
        self.control_request(
            reqwest::Method::PUT,
            &format!("/v1/workers/{name}"),
            Some(body),
        )
    }

    /// Deploys one module with bindings and routes; returns (status, JSON).
    pub fn deploy(
        &self,
        name: &str,
        source: &str,
        bindings: Value,
        routes: &[&str],
    ) -> (u16, Value) {
        self.deploy_body(
            name,
            &json!({
                "main_module": "worker.js",
                "modules": { "worker.js": source },
                "bindings": bindings,
                "routes": routes,
            }),
        )
    }

    /// Deploys and asserts success.
    pub fn deploy_ok(&self, name: &str, source: &str) -> Value {
        let (status, body) = self.deploy(name, source, json!([]), &[]);
        assert_eq!(status, 200, "deploy {name}: {body}");
        body
    }

    /// A data-plane request with the given Host header.
    pub fn get(&self, host: &str, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.data))
            .header("host", host)
            .send()
            .expect("data plane request");
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    /// GET on `<worker>.workers.localhost`.
    pub fn get_worker(&self, worker: &str, path: &str) -> (u16, String) {
        self.get(&format!("{worker}.workers.localhost"), path)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- node log ----\n{}", self.log());
        }
    }
}
