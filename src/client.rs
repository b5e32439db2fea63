//! The control-plane client behind `edged deploy` and `edged workers …`, and the
//! helpers that turn CLI flags into a deploy request.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::js::{Binding, Module};

/// A CLI or client failure, printed as is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub String);

/// Reads a worker script and the other JavaScript modules beside it (recursively,
/// skipping `node_modules` and dot-directories, at most 200 files), keyed by path
/// relative to the script's directory. Returns (main module name, modules).
pub fn read_modules(script: &Path) -> Result<(String, BTreeMap<String, Module>), ClientError> {
    let main_src = std::fs::read_to_string(script)
        .map_err(|e| ClientError(format!("cannot read {}: {e}", script.display())))?;
    let dir = script
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let main = script
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| ClientError(format!("{} is not a file", script.display())))?;
    let mut modules = BTreeMap::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "node_modules" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".js") || name.ends_with(".mjs") {
                if modules.len() >= 200 {
                    return Err(ClientError(
                        "more than 200 modules beside the script".into(),
                    ));
                }
                let rel = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                if let Ok(src) = std::fs::read_to_string(&path) {
                    modules.insert(rel, Module::Esm(src));
                }
            }
        }
    }
    modules.insert(main.clone(), Module::Esm(main_src));
    Ok((main, modules))
}

/// The worker name `edged dev` uses for a script: its file stem, made valid.
pub fn name_from_path(script: &Path) -> String {
    let stem = script
        .file_stem()
        .map(|s| s.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    if name.trim_matches('-').is_empty() {
        name = "worker".into();
    }
    name
}

fn split_pair(flag: &str, raw: &str) -> Result<(String, String), ClientError> {
    raw.split_once('=')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .ok_or_else(|| ClientError(format!("--{flag} expects NAME=VALUE, got '{raw}'")))
}

/// Bindings from `--var K=V`, `--secret K=V`, `--kv BINDING[=NAMESPACE]`,
/// `--do BINDING=Class` and `--service BINDING=worker`.
pub fn bindings_from_flags(
    vars: &[String],
    secrets: &[String],
    kv: &[String],
    durable_objects: &[String],
    services: &[String],
) -> Result<Vec<Binding>, ClientError> {
    let mut out = Vec::new();
    for v in vars {
        let (name, text) = split_pair("var", v)?;
        out.push(Binding::PlainText { name, text });
    }
    for v in secrets {
        let (name, text) = split_pair("secret", v)?;
        out.push(Binding::SecretText { name, text });
    }
    for v in kv {
        let (name, namespace) = match v.split_once('=') {
            Some((a, b)) => (a.to_owned(), b.to_owned()),
            None => (v.clone(), v.to_ascii_lowercase()),
        };
        out.push(Binding::KvNamespace { name, namespace });
    }
    for v in durable_objects {
        let (name, class_name) = split_pair("do", v)?;
        out.push(Binding::DurableObjectNamespace { name, class_name });
    }
    for v in services {
        let (name, service) = split_pair("service", v)?;
        out.push(Binding::Service {
            name,
            service,
            entrypoint: None,
            props: None,
        });
    }
    Ok(out)
}

/// A blocking client for one control plane.
pub struct ControlClient {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

impl ControlClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        ControlClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::blocking::Client::new(),
        }
    }

    /// A client that also trusts the CA certificate(s) in PEM file `ca` (a
    /// control plane with a self-signed certificate). The server is always
    /// verified: against the system's roots, and these.
    pub fn with_ca(base: &str, token: Option<String>, ca: &Path) -> Result<Self, ClientError> {
        let pem = std::fs::read(ca)
            .map_err(|e| ClientError(format!("cannot read CA file {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ClientError(format!("{} is not a PEM certificate: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(ClientError(format!(
                "{} holds no certificate",
                ca.display()
            )));
        }
        let mut builder = reqwest::blocking::Client::builder().use_rustls_tls();
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError(format!("cannot make an HTTPS client: {e}")))?;
        Ok(ControlClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// A JSON call: the response body as JSON.
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError(format!("cannot encode the request: {e}")))?;
        let resp = self.send_raw(method, path, body.map(|b| (b, "application/json")))?;
        Ok(resp.json().unwrap_or(Value::Null))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn deploy(
        &self,
        name: &str,
        account: Option<&str>,
        main_module: &str,
        modules: &BTreeMap<String, Module>,
        bindings: &[Binding],
        routes: &[String],
        crons: &[String],
    ) -> Result<Value, ClientError> {
        let body = json!({
            "main_module": main_module,
            "modules": modules,
            "bindings": bindings,
            "routes": routes,
            "crons": crons,
        });
        let query = account.map(|a| format!("?account={a}")).unwrap_or_default();
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/workers/{name}{query}"),
            Some(&body),
        )
    }

    /// Which of these asset blobs the account lacks.
    pub fn missing_assets(
        &self,
        account: Option<&str>,
        hashes: &[&String],
    ) -> Result<Vec<String>, ClientError> {
        let query = account.map(|a| format!("?account={a}")).unwrap_or_default();
        let out = self.call(
            reqwest::Method::POST,
            &format!("/v1/assets/missing{query}"),
            Some(&json!({ "hashes": hashes })),
        )?;
        Ok(out["missing"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str().map(str::to_owned))
            .collect())
    }

    /// Uploads one asset blob (its SHA-256 is its name).
    pub fn put_asset(
        &self,
        account: Option<&str>,
        hash: &str,
        content: Vec<u8>,
    ) -> Result<(), ClientError> {
        let query = account.map(|a| format!("?account={a}")).unwrap_or_default();
        self.send_raw(
            reqwest::Method::PUT,
            &format!("/v1/assets/{hash}{query}"),
            Some((content, "application/octet-stream")),
        )?;
        Ok(())
    }

    /// Deploys a complete deploy-API body (what a project produces).
    pub fn deploy_body(
        &self,
        name: &str,
        account: Option<&str>,
        body: &Value,
    ) -> Result<Value, ClientError> {
        let query = account.map(|a| format!("?account={a}")).unwrap_or_default();
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/workers/{name}{query}"),
            Some(body),
        )
    }

    pub fn accounts(&self) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, "/v1/accounts", None)
    }

    pub fn create_account(&self, id: &str) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::POST,
            "/v1/accounts",
            Some(&json!({ "id": id })),
        )
    }

    pub fn delete_account(&self, id: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::DELETE, &format!("/v1/accounts/{id}"), None)
    }

    pub fn assign_host(&self, account: &str, pattern: &str) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/accounts/{account}/hosts"),
            Some(&json!({ "pattern": pattern })),
        )
    }

    pub fn create_token(&self, account: &str, label: Option<&str>) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::POST,
            "/v1/tokens",
            Some(&json!({ "account": account, "label": label })),
        )
    }

    pub fn tokens(&self, account: Option<&str>) -> Result<Value, ClientError> {
        let query = account.map(|a| format!("?account={a}")).unwrap_or_default();
        self.call(reqwest::Method::GET, &format!("/v1/tokens{query}"), None)
    }

    pub fn revoke_token(&self, id: &str) -> Result<Value, ClientError> {
        self.call(reqwest::Method::DELETE, &format!("/v1/tokens/{id}"), None)
    }

    /// `GET /v1/cluster`: members, regions, ring and the node's health.
    pub fn cluster(&self) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, "/v1/cluster", None)
    }

    pub fn list(&self) -> Result<Value, ClientError> {
        self.call(reqwest::Method::GET, "/v1/workers", None)
    }

    pub fn delete(&self, name: &str, keep_storage: bool) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/v1/workers/{name}?keep_storage={keep_storage}"),
            None,
        )
    }

    /// Sends one request (body and its content type, if any); a non-2xx answer
    /// becomes an error carrying the control plane's error code and message.
    fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<reqwest::blocking::Response, ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some((b, content_type)) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(b);
        }
        let resp = req.send().map_err(|e| {
            ClientError(format!(
                "cannot reach the control plane at {}: {e}",
                self.base
            ))
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let value: Value = resp.json().unwrap_or(Value::Null);
        let code = value["error"]["code"].as_str().unwrap_or("error");
        let message = value["error"]["message"]
            .as_str()
            .unwrap_or("request failed");
        Err(ClientError(format!("{status}: {code}: {message}")))
    }

    fn kv_path(namespace: &str, key: &str) -> String {
        let key: String = key
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("/v1/kv/{namespace}/values/{key}")
    }

    /// The raw bytes of a KV value.
    pub fn kv_get(&self, namespace: &str, key: &str) -> Result<Vec<u8>, ClientError> {
        let resp = self.send_raw(reqwest::Method::GET, &Self::kv_path(namespace, key), None)?;
        resp.bytes()
            .map(|b| b.to_vec())
            .map_err(|e| ClientError(format!("cannot read the value: {e}")))
    }

    pub fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<u64>,
    ) -> Result<(), ClientError> {
        let mut path = Self::kv_path(namespace, key);
        if let Some(t) = ttl {
            path.push_str(&format!("?expiration_ttl={t}"));
        }
        self.send_raw(
            reqwest::Method::PUT,
            &path,
            Some((value, "application/octet-stream")),
        )
        .map(|_| ())
    }

    pub fn kv_delete(&self, namespace: &str, key: &str) -> Result<(), ClientError> {
        self.send_raw(
            reqwest::Method::DELETE,
            &Self::kv_path(namespace, key),
            None,
        )
        .map(|_| ())
    }

    pub fn kv_list(
        &self,
        namespace: &str,
        prefix: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut url = reqwest::Url::parse(&format!("{}/v1/kv/{namespace}/keys", self.base))
            .map_err(|e| ClientError(format!("bad control URL: {e}")))?;
        if let Some(p) = prefix {
            url.query_pairs_mut().append_pair("prefix", p);
        }
        if let Some(c) = cursor {
            url.query_pairs_mut().append_pair("cursor", c);
        }
        let path = format!("{}?{}", url.path(), url.query().unwrap_or(""));
        let resp = self.send_raw(reqwest::Method::GET, &path, None)?;
        resp.json()
            .map_err(|e| ClientError(format!("bad response: {e}")))
    }

    pub fn rollback(&self, name: &str) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/workers/{name}/rollback"),
            None,
        )
    }
}
