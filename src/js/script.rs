//! What a deployed worker version is made of: its modules and its bindings.
//!
//! These are the engine's input; the control plane deserializes them from the
//! deploy API's JSON and the deployment store persists them as JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::body::Body;

/// One version of one worker: everything needed to bind it to an isolate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerScript {
    pub name: String,
    pub version: u64,
    pub main_module: String,
    /// Module name → module. The main module is an ES module.
    pub modules: BTreeMap<String, Module>,
    #[serde(default)]
    pub bindings: Vec<Binding>,
    #[serde(default)]
    pub compatibility_date: Option<String>,
    /// Compatibility flags as deployed (validated by `compat::resolve`).
    #[serde(default)]
    pub compatibility_flags: Vec<String>,
    /// Cron Triggers: five-field expressions that fire `scheduled()`.
    #[serde(default)]
    pub crons: Vec<String>,
    /// The account the worker belongs to.
    #[serde(default)]
    pub account: String,
    /// The worker's storage id: where its Durable Objects and caches live. Set
    /// when the name is first deployed, kept across redeploys, never reused
    /// after the worker is deleted (`state::names`).
    #[serde(default)]
    pub storage: String,
    /// When this version was deployed (ms since the epoch; 0: not recorded).
    #[serde(default)]
    pub deployed_at_ms: u64,
    /// Static assets served before (or instead of) the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets: Option<Assets>,
}

/// A version's static assets: the manifest (URL path → content hash) and how
/// requests map onto it, as Workers' `assets` settings say. The content
/// lives in the node's asset store (`state::assets`), by hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Assets {
    /// `/path/file.ext` (decoded, starting with `/`) → the file.
    pub files: BTreeMap<String, AssetFile>,
    #[serde(default)]
    pub html_handling: HtmlHandling,
    #[serde(default)]
    pub not_found_handling: NotFoundHandling,
    /// `true`: every request goes to the worker first (it serves assets with
    /// `env.ASSETS.fetch`); a list: the paths that do (`*` any characters,
    /// a leading `!` excludes).
    #[serde(default)]
    pub run_worker_first: RunWorkerFirst,
    /// `false` for an assets-only project: a request that matches no asset
    /// gets `not_found_handling`'s answer, never the worker.
    #[serde(default = "yes")]
    pub has_worker: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AssetFile {
    /// SHA-256 of the content, lowercase hex.
    pub hash: String,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HtmlHandling {
    #[default]
    AutoTrailingSlash,
    ForceTrailingSlash,
    DropTrailingSlash,
    None,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NotFoundHandling {
    SinglePageApplication,
    #[serde(rename = "404-page")]
    NotFoundPage,
    #[default]
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RunWorkerFirst {
    All(bool),
    Paths(Vec<String>),
}

impl Default for RunWorkerFirst {
    fn default() -> Self {
        RunWorkerFirst::All(false)
    }
}

impl RunWorkerFirst {
    /// Whether a request for `path` goes to the worker before the assets.
    pub fn applies(&self, path: &str) -> bool {
        match self {
            RunWorkerFirst::All(all) => *all,
            RunWorkerFirst::Paths(patterns) => {
                let hit = |p: &str| wildcard(p.as_bytes(), path.as_bytes());
                let excluded = patterns.iter().filter_map(|p| p.strip_prefix('!')).any(hit);
                !excluded
                    && patterns
                        .iter()
                        .filter(|p| !p.starts_with('!'))
                        .any(|p| hit(p))
            }
        }
    }
}

/// `*` matches any characters (slashes too), everything else itself. Linear
/// in practice: on a mismatch only the last `*` is retried (the classic
/// greedy matcher), so a hostile pattern cannot make matching exponential.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl WorkerScript {
    /// The bindings as JS's `makeEnv` takes them: a `version_metadata`
    /// binding becomes the JSON of this version's metadata, an `assets`
    /// binding a service binding to the worker's own assets.
    pub fn bindings_for_js(&self) -> Vec<Binding> {
        self.bindings
            .iter()
            .map(|b| match b {
                Binding::VersionMetadata { name } => Binding::Json {
                    name: name.clone(),
                    json: self.version_metadata().to_string(),
                },
                Binding::Assets { name } => Binding::Service {
                    name: name.clone(),
                    service: format!("{ASSETS_SERVICE_PREFIX}{}", self.name),
                    entrypoint: None,
                    props: None,
                },
                other => other.clone(),
            })
            .collect()
    }

    /// `{id, tag, timestamp}`: `id` a UUID fixed by the worker's storage id
    /// and version (the same on every PoP), `tag` empty (edged has no version
    /// tags), `timestamp` the deploy time in ISO 8601.
    pub fn version_metadata(&self) -> serde_json::Value {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"edged-version-id-v1\0");
        h.update(self.storage.as_bytes());
        h.update(b"\0");
        h.update(self.version.to_be_bytes());
        let digest = h.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let timestamp = chrono::DateTime::from_timestamp_millis(self.deployed_at_ms as i64)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        serde_json::json!({"id": id.to_string(), "tag": "", "timestamp": timestamp})
    }
}

/// One uploaded module: an ES module's source (the common case, stored as a
/// bare string), or a module of another of Workers' types.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Module {
    Esm(String),
    Typed(TypedModule),
}

impl From<String> for Module {
    fn from(source: String) -> Self {
        Module::Esm(source)
    }
}

impl From<&str> for Module {
    fn from(source: &str) -> Self {
        Module::Esm(source.to_owned())
    }
}

/// The module types of Workers' upload API (and of wrangler's module rules).
/// Binary content travels as base64.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TypedModule {
    /// An ES module (`application/javascript+module`).
    Esm { content: String },
    /// A CommonJS module: `module.exports` is its default export, and it may
    /// `require()` the worker's other non-ES modules.
    Commonjs { content: String },
    /// A string (`text/plain`): `import s from "./a.txt"`.
    Text { content: String },
    /// Parsed JSON (`application/json`).
    Json { content: String },
    /// An `ArrayBuffer` (`application/octet-stream`).
    Data { content_base64: String },
    /// A `WebAssembly.Module` the worker instantiates (`application/wasm`).
    Wasm { content_base64: String },
}

impl Module {
    /// The source of an ES module (`None` for every other type).
    pub fn esm_source(&self) -> Option<&str> {
        match self {
            Module::Esm(s) | Module::Typed(TypedModule::Esm { content: s }) => Some(s),
            Module::Typed(_) => None,
        }
    }

    /// How many bytes the module holds (binary content decoded).
    pub fn size(&self) -> usize {
        match self {
            Module::Esm(s) => s.len(),
            Module::Typed(
                TypedModule::Esm { content }
                | TypedModule::Commonjs { content }
                | TypedModule::Text { content }
                | TypedModule::Json { content },
            ) => content.len(),
            Module::Typed(
                TypedModule::Data { content_base64 } | TypedModule::Wasm { content_base64 },
            ) => content_base64.len() / 4 * 3,
        }
    }

    /// The type's name as the deploy API spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Module::Esm(_) | Module::Typed(TypedModule::Esm { .. }) => "esm",
            Module::Typed(TypedModule::Commonjs { .. }) => "commonjs",
            Module::Typed(TypedModule::Text { .. }) => "text",
            Module::Typed(TypedModule::Json { .. }) => "json",
            Module::Typed(TypedModule::Data { .. }) => "data",
            Module::Typed(TypedModule::Wasm { .. }) => "wasm",
        }
    }

    /// Checks what can be checked without an isolate: base64 decodes, JSON
    /// parses, WebAssembly starts with its magic number. The message names
    /// no module (the caller does).
    pub fn check(&self) -> Result<(), String> {
        use base64::Engine;
        match self {
            Module::Typed(TypedModule::Json { content }) => {
                serde_json::from_str::<serde::de::IgnoredAny>(content)
                    .map(|_| ())
                    .map_err(|e| format!("is not valid JSON: {e}"))
            }
            Module::Typed(TypedModule::Data { content_base64 }) => {
                base64::engine::general_purpose::STANDARD
                    .decode(content_base64)
                    .map(|_| ())
                    .map_err(|e| format!("has invalid base64 content: {e}"))
            }
            Module::Typed(TypedModule::Wasm { content_base64 }) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(content_base64)
                    .map_err(|e| format!("has invalid base64 content: {e}"))?;
                if bytes.starts_with(b"\0asm") {
                    Ok(())
                } else {
                    Err("is not a WebAssembly module (no \\0asm header)".to_owned())
                }
            }
            _ => Ok(()),
        }
    }
}

/// An `env` binding, tagged by `type` as in the deploy API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Binding {
    PlainText {
        name: String,
        text: String,
    },
    SecretText {
        name: String,
        text: String,
    },
    Json {
        name: String,
        json: String,
    },
    KvNamespace {
        name: String,
        namespace: String,
    },
    /// Another worker on the same node: `env.NAME.fetch()` and RPC to its
    /// default export, or to the `WorkerEntrypoint` class it exports as
    /// `entrypoint`.
    Service {
        name: String,
        service: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entrypoint: Option<String>,
        /// `ctx.props` of the calls through this binding (a JSON object),
        /// as the binding's owner configured it: the callee can trust it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        props: Option<serde_json::Value>,
    },
    DurableObjectNamespace {
        name: String,
        class_name: String,
    },
    /// `{id, tag, timestamp}` of the running version (Workers'
    /// `version_metadata` binding).
    VersionMetadata {
        name: String,
    },
    /// `env.ASSETS.fetch(request)`: the version's static assets.
    Assets {
        name: String,
    },
}

/// The service name an `assets` binding calls: not a valid worker name, so
/// it names no worker.
pub const ASSETS_SERVICE_PREFIX: &str = "assets:";

impl Binding {
    pub fn name(&self) -> &str {
        match self {
            Binding::PlainText { name, .. }
            | Binding::SecretText { name, .. }
            | Binding::Json { name, .. }
            | Binding::KvNamespace { name, .. }
            | Binding::Service { name, .. }
            | Binding::DurableObjectNamespace { name, .. }
            | Binding::VersionMetadata { name }
            | Binding::Assets { name } => name,
        }
    }

    /// The binding as the control plane shows it: secrets never echoed.
    pub fn redacted(&self) -> serde_json::Value {
        match self {
            Binding::SecretText { name, .. } => {
                serde_json::json!({"type": "secret_text", "name": name})
            }
            other => serde_json::to_value(other).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A request handed to a worker's `fetch` handler.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Option<Body>,
    /// How many worker-to-worker calls (service bindings) led to this request;
    /// 0 for a request from a client.
    pub depth: u8,
    /// Set when the request's client can go away (see [`Cancel`]).
    pub cancel: Cancel,
    /// The named `WorkerEntrypoint` export a service binding calls (`None`:
    /// the default export). Set only by the runtime from the binding.
    pub entrypoint: Option<String>,
    /// `ctx.props` as JSON, from the service binding the call came through
    /// (`None`: `{}`). Set only by the runtime from the binding.
    pub props: Option<String>,
    /// `request.cf` as JSON, for a request from a client (what the PoP
    /// knows of the connection); `None` otherwise.
    pub cf: Option<String>,
}

/// Methods the runtime uses for events that are not HTTP requests (an RPC
/// call, an alarm, a cron run, a hibernatable WebSocket's message); their
/// URLs are not `http:`/`https:`.
const EVENT_METHODS: [&str; 4] = ["RPC", "ALARM", "SCHEDULED", "WEBSOCKET"];

/// Whether a `fetch()` from JS would pass for one of the runtime's own
/// events: such a request is refused rather than delivered as that event.
pub fn mimics_event(method: &str, url: &str) -> bool {
    EVENT_METHODS.contains(&method) && !(url.starts_with("http://") || url.starts_with("https://"))
}

/// Headers as JS hands them to an op (`[name, value, name, value, …]`), as
/// an [`InvokeRequest`] carries them; an odd trailing name is dropped.
pub fn headers_from_flat(flat: &[String]) -> Vec<(String, Vec<u8>)> {
    flat.chunks_exact(2)
        .map(|p| (p[0].clone(), p[1].as_bytes().to_vec()))
        .collect()
}

/// An [`InvokeResponse`]'s headers flattened for JS (`[name, value, …]`).
pub fn headers_to_flat(headers: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<String> {
    headers
        .into_iter()
        .flat_map(|(k, v)| {
            [
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ]
        })
        .collect()
}

/// Lets whoever made a request withdraw it: the caller keeps the guard from
/// [`Cancel::guard`]; once it is dropped (the client disconnected and the HTTP
/// layer dropped its handler), the isolate ends the request, freeing what it
/// held. The default never cancels.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Option<std::sync::Weak<()>>);

impl Cancel {
    pub fn guard() -> (std::sync::Arc<()>, Cancel) {
        let guard = std::sync::Arc::new(());
        let cancel = Cancel(Some(std::sync::Arc::downgrade(&guard)));
        (guard, cancel)
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.as_ref().is_some_and(|w| w.strong_count() == 0)
    }

    /// Whether a caller may withdraw the request at all.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

/// The Response a worker's `fetch` handler returned.
#[derive(Debug, Clone)]
pub struct InvokeResponse {
    pub status: u16,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Option<Body>,
    /// A 101's end of a WebSocket (`new Response(null, {status: 101, webSocket})`).
    pub websocket: Option<super::websocket::SocketSlot>,
    /// `encodeBody: "manual"`: the body is already in its Content-Encoding.
    /// Otherwise the data plane applies a gzip or br Content-Encoding.
    pub encode_manually: bool,
    /// An RPC answer's targets passed by reference (`rpc.rs`).
    pub rpc: Option<super::rpc::RpcExports>,
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards_match_and_stay_fast_on_hostile_patterns() {
        assert!(wildcard(b"/api/*", b"/api/x/y"));
        assert!(!wildcard(b"/api/*", b"/apix"));
        assert!(wildcard(b"*", b""));
        assert!(wildcard(b"/a*b*c", b"/aXbYc"));
        assert!(!wildcard(b"/a*b*c", b"/aXbY"));
        let pattern = format!("/{}b", "*a".repeat(120));
        let text = format!("/{}", "a".repeat(5000));
        let started = std::time::Instant::now();
        assert!(!wildcard(pattern.as_bytes(), text.as_bytes()));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
