//! `nodejs_compat`: the `node:` built-in modules a worker may import.
//!
//! What a worker gets is decided in Rust from its compatibility settings
//! ([`NodeCompat::of`]), as Workers decides it: `nodejs_compat` gives every
//! module below, `nodejs_als` only `node:async_hooks`, and `nodejs_compat_v2`
//! (implied by `nodejs_compat` from 2024-09-23) also the `Buffer`, `process`
//! and `global` globals. Anything else under `node:` stays refused by the
//! loader, naming the module, so a worker that needs one fails at deploy.
//!
//! Where the code comes from:
//! - `vendor/`: maintained npm polyfills, bundled by esbuild with code
//!   splitting (one copy of `buffer`, `events`, `util` and `process` shared by
//!   all) and committed; `scripts/vendor-node.sh` regenerates it from the
//!   pinned versions of `scripts/node-vendor/package-lock.json`. They are the
//!   set webpack and Vite use for the browser (`node-stdlib-browser`):
//!   `buffer` (feross), `events`, `path-browserify`, `util`, `string_decoder`,
//!   `assert`, `url`, and `readable-stream` 4, which is Node's own streams
//!   code. Pure JavaScript over Web APIs, so they need nothing of the runtime.
//! - `node/*.js`: what cannot be a polyfill. `node:async_hooks`'
//!   `AsyncLocalStorage` rides on V8's continuation-preserved embedder data,
//!   the value that also carries the request id (`context.rs`): a frame is
//!   `[request, stores]`, the ops below change only the stores and copy the
//!   request from the running frame, so no tenant code can move itself into
//!   another request. `node:crypto`'s hashes and HMACs are Rust (synchronous,
//!   as Node's are; Web Crypto is only asynchronous); the rest of it is Web
//!   Crypto. `node:process` (env from the worker's text bindings, as Workers
//!   fills it), `node:timers` and the subpath modules are thin. `node:http`
//!   is the server side only (`createServer`, `IncomingMessage`,
//!   `ServerResponse`), served by `cloudflare:node`'s `httpServerHandler`.
//!
//! Every module is loaded as `edged-node:<file>`, so `node:buffer` and the
//! `Buffer` inside `node:stream` are one class; those modules import only
//! each other, and tenant code can name none of them directly. The globals
//! module ([`GLOBALS`]) is a root module of its own, evaluated before the
//! worker's main module, so the worker's sources are untouched. A module
//! reaches the ops through
//! the same hidden global as `cloudflare:workers`: it can only be imported
//! while the worker's modules first evaluate.

use deno_core::{op2, v8};
use deno_error::JsErrorBox;

mod vendor {
    include!("node/vendor/files.rs");
}

/// Specifier scheme of the runtime's node modules.
pub const SCHEME: &str = "edged-node:";

/// Which Node.js compatibility a worker has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCompat {
    /// Every module of [`MODULES`].
    pub modules: bool,
    /// `node:async_hooks` alone (`nodejs_als`).
    pub async_hooks: bool,
    /// `Buffer`, `process` and `global` on the global scope.
    pub globals: bool,
    /// `process.env` holds the worker's text bindings
    /// (`nodejs_compat_populate_process_env`, default from 2025-04-01).
    pub process_env: bool,
}

impl NodeCompat {
    /// From a deployment's (already validated) compatibility settings.
    pub fn of(date: Option<&str>, flags: &[String]) -> Self {
        let Ok(resolved) = super::compat::resolve(date, flags) else {
            return Self::default();
        };
        // nodejs_compat_v2 implies nodejs_compat, as in workerd.
        let modules = resolved.has("nodejs_compat") || resolved.has("nodejs_compat_v2");
        let v2_by_date = modules && date.is_some_and(|d| d >= "2024-09-23");
        let v2_off = flags.iter().any(|f| f == "no_nodejs_compat_v2");
        Self {
            modules,
            async_hooks: modules || resolved.has("nodejs_als"),
            globals: modules && !v2_off && (v2_by_date || resolved.has("nodejs_compat_v2")),
            process_env: modules
                && !flags
                    .iter()
                    .any(|f| f == "nodejs_compat_do_not_populate_process_env")
                && (date.is_some_and(|d| d >= "2025-04-01")
                    || resolved.has("nodejs_compat_populate_process_env")),
        }
    }

    /// The internal file serving `node:<name>` (or bare `<name>`), if this
    /// worker may import it.
    pub fn file_for(&self, name: &str) -> Option<&'static str> {
        let file = MODULES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)?;
        (self.modules || (self.async_hooks && name == "async_hooks")).then_some(file)
    }
}

/// `node:` module → the file serving it (vendored or `node/*.js`).
pub const MODULES: &[(&str, &str)] = &[
    ("assert", "assert.js"),
    ("assert/strict", "assert_strict.js"),
    ("async_hooks", "async_hooks.js"),
    ("buffer", "buffer.js"),
    ("crypto", "crypto.js"),
    ("events", "events.js"),
    ("http", "http.js"),
    ("path", "path.js"),
    ("path/posix", "path.js"),
    ("process", "process_node.js"),
    ("stream", "stream.js"),
    ("stream/promises", "stream_promises.js"),
    ("stream/web", "stream_web.js"),
    ("string_decoder", "string_decoder.js"),
    ("timers", "timers.js"),
    ("timers/promises", "timers_promises.js"),
    ("url", "url.js"),
    ("util", "util.js"),
    ("util/types", "util_types.js"),
];

/// The runtime's own node modules (see the module doc).
const OWN: &[(&str, &str)] = &[
    ("assert_strict.js", include_str!("node/assert_strict.js")),
    ("async_hooks.js", include_str!("node/async_hooks.js")),
    ("crypto.js", include_str!("node/crypto.js")),
    ("process_node.js", include_str!("node/process_node.js")),
    (
        "stream_promises.js",
        include_str!("node/stream_promises.js"),
    ),
    ("stream_web.js", include_str!("node/stream_web.js")),
    ("timers.js", include_str!("node/timers.js")),
    (
        "timers_promises.js",
        include_str!("node/timers_promises.js"),
    ),
    ("util_types.js", include_str!("node/util_types.js")),
    ("globals.js", include_str!("node/globals.js")),
    ("http.js", include_str!("node/http.js")),
    (
        "cloudflare_node.js",
        include_str!("node/cloudflare_node.js"),
    ),
];

/// `cloudflare:node` (`httpServerHandler`), with the node modules.
pub const CLOUDFLARE_NODE: &str = "cloudflare_node.js";

/// The module that installs the node globals, evaluated before the worker's
/// main module when [`NodeCompat::globals`] is on.
pub const GLOBALS: &str = "edged-node:globals.js";

/// V8 code caches of the internal files, made by the first isolate that
/// compiles each one and used by every later one (the files are part of the
/// binary, so a cache never goes stale; V8 checks it against the source
/// anyway). Set once per file, so the leaked bytes are bounded by the file
/// count.
static CODE_CACHE: std::sync::Mutex<Vec<(&'static str, &'static [u8])>> =
    std::sync::Mutex::new(Vec::new());

/// The code cache of `file`, if one was made.
pub fn code_cache(file: &str) -> Option<&'static [u8]> {
    let caches = CODE_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    caches.iter().find(|(f, _)| *f == file).map(|(_, c)| *c)
}

/// Keeps the code cache V8 made for `file` (the first one only).
pub fn store_code_cache(file: &str, cache: &[u8]) {
    let Some((name, _)) = files().find(|(f, _)| *f == file) else {
        return;
    };
    let mut caches = CODE_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if caches.iter().any(|(f, _)| f == name) {
        return;
    }
    caches.push((name, Box::leak(cache.to_vec().into_boxed_slice())));
}

/// The hash deno_core keys a file's code cache with: computed once per
/// process for every embedded file (the sources are fixed in the binary), not
/// at each isolate's load of the file.
pub fn source_hash(file: &str) -> u64 {
    static HASHES: std::sync::OnceLock<Vec<(&'static str, u64)>> = std::sync::OnceLock::new();
    let hashes = HASHES.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        files()
            .map(|(f, source)| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                source.hash(&mut h);
                (*f, h.finish())
            })
            .collect()
    });
    hashes
        .iter()
        .find(|(f, _)| *f == file)
        .map_or(0, |(_, h)| *h)
}

/// Every internal file: name and source.
fn files() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    OWN.iter().chain(vendor::FILES.iter())
}

/// The source of an internal file.
pub fn source(file: &str) -> Option<&'static str> {
    files().find(|(f, _)| *f == file).map(|(_, s)| *s)
}

/// The request part of the running frame (see the module doc): the request
/// id value `context.rs` reads, or undefined.
pub fn frame_request<'s>(
    scope: &mut v8::HandleScope<'s>,
    frame: v8::Local<'s, v8::Value>,
) -> v8::Local<'s, v8::Value> {
    match v8::Local::<v8::Array>::try_from(frame) {
        Ok(array) if array.length() == 2 => array
            .get_index(scope, 0)
            .unwrap_or_else(|| v8::undefined(scope).into()),
        _ => frame,
    }
}

/// `AsyncLocalStorage`'s stores of the running frame (a `Map`), or undefined.
#[op2]
pub fn op_edged_async_stores<'s>(scope: &mut v8::HandleScope<'s>) -> v8::Local<'s, v8::Value> {
    let frame = scope.get_continuation_preserved_embedder_data();
    match v8::Local::<v8::Array>::try_from(frame) {
        Ok(array) if array.length() == 2 => array
            .get_index(scope, 1)
            .unwrap_or_else(|| v8::undefined(scope).into()),
        _ => v8::undefined(scope).into(),
    }
}

/// Makes `stores` the stores of the code that runs next; the request stays
/// the running one. Not a fast op: it allocates on the JS heap.
#[op2(nofast)]
pub fn op_edged_async_set_stores(scope: &mut v8::HandleScope, stores: v8::Local<v8::Value>) {
    let frame = scope.get_continuation_preserved_embedder_data();
    let request = frame_request(scope, frame);
    let next = if stores.is_undefined() {
        request
    } else {
        v8::Array::new_with_elements(scope, &[request, stores]).into()
    };
    scope.set_continuation_preserved_embedder_data(next);
}

fn unknown_digest(algorithm: &str) -> JsErrorBox {
    JsErrorBox::new(
        "Error",
        format!("Digest method not supported: {}", algorithm.escape_debug()),
    )
}

/// `crypto.createHash(algorithm).update(…).digest()`, whole.
#[op2]
#[buffer]
pub fn op_edged_node_digest(
    #[string] algorithm: &str,
    #[buffer] data: &[u8],
) -> Result<Vec<u8>, JsErrorBox> {
    use sha2::Digest;
    Ok(match algorithm.to_ascii_lowercase().as_str() {
        "md5" => md5::Md5::digest(data).to_vec(),
        "sha1" | "sha-1" => sha1::Sha1::digest(data).to_vec(),
        "sha224" | "sha-224" => sha2::Sha224::digest(data).to_vec(),
        "sha256" | "sha-256" => sha2::Sha256::digest(data).to_vec(),
        "sha384" | "sha-384" => sha2::Sha384::digest(data).to_vec(),
        "sha512" | "sha-512" => sha2::Sha512::digest(data).to_vec(),
        _ => return Err(unknown_digest(algorithm)),
    })
}

/// `crypto.createHmac(algorithm, key).update(…).digest()`, whole.
#[op2]
#[buffer]
pub fn op_edged_node_hmac(
    #[string] algorithm: &str,
    #[buffer] key: &[u8],
    #[buffer] data: &[u8],
) -> Result<Vec<u8>, JsErrorBox> {
    use hmac::{Hmac, Mac};
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Result<Vec<u8>, JsErrorBox> {
        // HMAC takes a key of any length; the error cannot happen.
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
            .map_err(|e| JsErrorBox::new("Error", e.to_string()))?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
    }
    match algorithm.to_ascii_lowercase().as_str() {
        "md5" => run::<Hmac<md5::Md5>>(key, data),
        "sha1" | "sha-1" => run::<Hmac<sha1::Sha1>>(key, data),
        "sha224" | "sha-224" => run::<Hmac<sha2::Sha224>>(key, data),
        "sha256" | "sha-256" => run::<Hmac<sha2::Sha256>>(key, data),
        "sha384" | "sha-384" => run::<Hmac<sha2::Sha384>>(key, data),
        "sha512" | "sha-512" => run::<Hmac<sha2::Sha512>>(key, data),
        _ => Err(JsErrorBox::new(
            "Error",
            format!("Invalid digest: {}", algorithm.escape_debug()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_has_its_file() {
        for (name, file) in MODULES {
            assert!(source(file).is_some(), "node:{name} → {file} missing");
        }
        assert!(source("globals.js").is_some());
    }

    #[test]
    fn compat_follows_flags_and_date() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none = NodeCompat::of(Some("2024-01-01"), &[]);
        assert_eq!(none, NodeCompat::default());
        assert_eq!(none.file_for("buffer"), None);
        let als = NodeCompat::of(Some("2024-01-01"), &f(&["nodejs_als"]));
        assert_eq!(als.file_for("async_hooks"), Some("async_hooks.js"));
        assert_eq!(als.file_for("buffer"), None);
        let old = NodeCompat::of(Some("2024-01-01"), &f(&["nodejs_compat"]));
        assert!(old.modules && !old.globals);
        let new = NodeCompat::of(Some("2024-09-23"), &f(&["nodejs_compat"]));
        assert!(new.modules && new.globals);
        let v2 = NodeCompat::of(Some("2024-01-01"), &f(&["nodejs_compat_v2"]));
        assert!(v2.modules && v2.globals);
        let off = NodeCompat::of(
            Some("2025-01-01"),
            &f(&["nodejs_compat", "no_nodejs_compat_v2"]),
        );
        assert!(off.modules && !off.globals);
        assert_eq!(new.file_for("fs"), None);
    }
}
