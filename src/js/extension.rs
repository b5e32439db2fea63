//! The `edged` deno_core extension: the runtime's own ops and JS, plus the list of
//! deno Web API extensions every isolate carries.
//!
//! Ops are small and named `op_edged_<verb>`; the Web API logic lives in
//! `src/js/runtime/*.js`.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use deno_core::{op2, v8, Extension, OpDecl};
use deno_permissions::{PermissionCheckError, PermissionDeniedError};

use super::egress::EgressPolicy;

/// Who an isolate works for: put into the `OpState` when a worker is bound, read by
/// ops that log or account on the worker's behalf.
#[derive(Debug, Clone)]
pub struct WorkerIdentity {
    pub name: Arc<str>,
    pub version: u64,
    pub account: Arc<str>,
    /// The worker's storage id: its caches are kept under it.
    pub storage: Arc<str>,
}

/// Permissions the deno extensions ask for. Workers have no file system and no
/// high-resolution timers; network egress is checked against the node's
/// [`EgressPolicy`] (a blank isolate refuses everything).
pub struct EdgedPermissions {
    pub egress: Option<Arc<EgressPolicy>>,
}

impl deno_web::TimersPermission for EdgedPermissions {
    fn allow_hrtime(&mut self) -> bool {
        false
    }
}

impl deno_fetch::FetchPermissions for EdgedPermissions {
    fn check_net_url(
        &mut self,
        url: &deno_core::url::Url,
        _api_name: &str,
    ) -> Result<(), PermissionCheckError> {
        let verdict = match &self.egress {
            Some(policy) => policy.check(url),
            None => Err("network access (this isolate serves no worker)".to_owned()),
        };
        // Shown as "Requires <access>, which cannot be granted…"; the JS fetch
        // wrapper turns it into a TypeError carrying just the reason.
        verdict.map_err(|access| {
            PermissionCheckError::PermissionDenied(PermissionDeniedError::Fatal { access })
        })
    }

    fn check_read<'a>(
        &mut self,
        _resolved: bool,
        _p: &'a Path,
        _api_name: &str,
    ) -> Result<Cow<'a, Path>, deno_fs::FsError> {
        Err(deno_fs::FsError::NotCapable("workers have no file system"))
    }
}

/// The longest console message logged whole; longer ones are cut.
const MAX_LOG_CHARS: usize = 16 * 1024;

/// A console message as one log line: control characters (newlines, escapes)
/// are escaped so a tenant cannot forge lines or terminal sequences, and very
/// long messages are cut.
pub fn log_line(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len().min(MAX_LOG_CHARS) + 16);
    for (n, c) in msg.chars().enumerate() {
        if n == MAX_LOG_CHARS {
            out.push_str("…(truncated)");
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `console.*` → a tracing event tagged with the worker and the request the
/// calling code runs for (both from Rust, never from JS). Levels as deno's
/// Console passes them: 0 debug, 1 log/info, 2 warn, 3 error.
#[op2(nofast)]
fn op_edged_log(scope: &mut v8::HandleScope, level: u32, #[string] msg: &str) {
    let request_id = super::context::current(scope).unwrap_or(0);
    let state = deno_core::JsRuntime::op_state_from(scope);
    let worker = state
        .borrow()
        .try_borrow::<WorkerIdentity>()
        .map(|w| w.name.clone())
        .unwrap_or_else(|| Arc::from("-"));
    let msg = log_line(msg);
    match level {
        0 => tracing::debug!(target: "edged::console", worker = %worker, request_id, "{msg}"),
        2 => tracing::warn!(target: "edged::console", worker = %worker, request_id, "{msg}"),
        3 => tracing::error!(target: "edged::console", worker = %worker, request_id, "{msg}"),
        _ => tracing::info!(target: "edged::console", worker = %worker, request_id, "{msg}"),
    }
}

/// `crypto.subtle.timingSafeEqual(a, b)` (a Workers extension): compares in
/// time that depends only on the length.
#[op2(fast)]
pub fn op_edged_timing_safe_equal(#[buffer] a: &[u8], #[buffer] b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

deno_core::extension!(
    edged,
    deps = [deno_webidl, deno_console, deno_url, deno_web, deno_fetch, deno_crypto],
    ops = [
        op_edged_log,
        op_edged_timing_safe_equal,
        super::node::op_edged_async_stores,
        super::node::op_edged_async_set_stores,
        super::node::op_edged_node_digest,
        super::node::op_edged_node_hmac,
        super::context::op_edged_subrequest,
        super::context::op_edged_assert_live,
        super::context::op_edged_wait_until,
        super::context::op_edged_response_stream,
        super::context::op_edged_timer_start,
        super::context::op_edged_timer_fire,
        super::context::op_edged_timer_clear,
        super::context::op_edged_offthread_begin,
        super::context::op_edged_offthread_end,
        super::clock::op_edged_date_now,
        super::body::op_edged_body_open,
        super::body::op_edged_body_write,
        super::body::op_edged_body_close,
        super::body::op_edged_body_read,
        super::body::op_edged_body_collect,
        super::cache::op_cache_match,
        super::cache::op_cache_put,
        super::cache::op_cache_delete,
        super::service::op_service_fetch,
        super::service::op_service_rpc,
        super::rpc::op_rpc_stub_call,
        super::rpc::op_rpc_stub_dispose,
        super::kv::op_kv_get,
        super::kv::op_kv_put,
        super::kv::op_kv_delete,
        super::kv::op_kv_list,
        super::durable::op_do_id_from_name,
        super::durable::op_do_id_unique,
        super::durable::op_do_fetch,
        super::durable::op_do_rpc,
        super::durable::op_do_storage_get,
        super::durable::op_do_storage_put,
        super::durable::op_do_storage_delete,
        super::durable::op_do_storage_list,
        super::durable::op_do_storage_delete_all,
        super::durable::op_do_txn,
        super::durable::op_do_block,
        super::durable::op_do_reset,
        super::durable::op_do_dirty,
        super::durable::op_do_flush,
        super::durable::op_do_alarm_get,
        super::durable::op_do_alarm_set,
        super::durable::op_do_sql_exec,
        super::durable::op_do_sql_size,
        super::websocket::op_ws_pair,
        super::websocket::op_ws_accept,
        super::websocket::op_ws_send_text,
        super::websocket::op_ws_send_binary,
        super::websocket::op_ws_close,
        super::websocket::op_ws_release,
        super::websocket::op_ws_recv,
        super::hibernation::op_do_ws_accept,
        super::hibernation::op_do_ws_list,
        super::hibernation::op_do_ws_tags,
        super::hibernation::op_do_ws_send_text,
        super::hibernation::op_do_ws_send_binary,
        super::hibernation::op_do_ws_close,
        super::hibernation::op_do_ws_set_attachment,
        super::hibernation::op_do_ws_attachment,
        super::hibernation::op_do_ws_set_auto_response,
        super::hibernation::op_do_ws_auto_response,
        super::hibernation::op_do_ws_auto_response_at,
        super::hibernation::op_do_ws_set_event_timeout,
        super::hibernation::op_do_ws_event_timeout,
        super::websocket::op_ws_message,
        super::ws_client::op_ws_connect,
    ],
    esm_entry_point = "ext:edged/99_main.js",
    esm = [
        dir "src/js/runtime",
        "ext:deno_net/02_tls.js" = "02_tls_shim.js",
        "ext:deno_telemetry/telemetry.ts" = "03_telemetry_shim.js",
        "ext:deno_telemetry/util.ts" = "03_telemetry_shim.js",
        "00_globals.js",
        "05_body.js",
        "15_websocket.js",
        "25_rpc.js",
        "10_worker.js",
        "20_kv.js",
        "30_durable.js",
        "40_cache.js",
        "50_service.js",
        "99_main.js"
    ],
    middleware = replace_ops,
);

/// Ops of deno's extensions that edged replaces: `performance.now()` reads the
/// frozen clock (`clock.rs`).
fn replace_ops(op: OpDecl) -> OpDecl {
    match op.name {
        "op_now" => op.with_implementation_from(&super::clock::op_edged_performance_now()),
        _ => op,
    }
}

/// Every extension, in dependency order. `for_snapshot` includes the JS (it is
/// evaluated into the snapshot); otherwise only the ops are registered and the JS
/// comes from the snapshot.
pub fn extensions(for_snapshot: bool) -> Vec<Extension> {
    let blob_store = Arc::new(deno_web::BlobStore::default());
    let fetch_options = deno_fetch::Options {
        user_agent: "edged".to_owned(),
        ..Default::default()
    };
    if for_snapshot {
        vec![
            deno_webidl::deno_webidl::init_ops_and_esm(),
            deno_console::deno_console::init_ops_and_esm(),
            deno_url::deno_url::init_ops_and_esm(),
            deno_web::deno_web::init_ops_and_esm::<EdgedPermissions>(blob_store, None),
            deno_fetch::deno_fetch::init_ops_and_esm::<EdgedPermissions>(fetch_options),
            deno_crypto::deno_crypto::init_ops_and_esm(None),
            edged::init_ops_and_esm(),
        ]
    } else {
        vec![
            deno_webidl::deno_webidl::init_ops(),
            deno_console::deno_console::init_ops(),
            deno_url::deno_url::init_ops(),
            deno_web::deno_web::init_ops::<EdgedPermissions>(blob_store, None),
            deno_fetch::deno_fetch::init_ops::<EdgedPermissions>(fetch_options),
            deno_crypto::deno_crypto::init_ops(None),
            edged::init_ops(),
        ]
    }
}
