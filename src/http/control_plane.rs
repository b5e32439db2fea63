//! The control plane: the deploy API, accounts and tokens, `/healthz` and
//! `/metrics`.
//!
//! `/v1/*` requires `Authorization: Bearer <token>` unless the node runs in `dev`
//! mode: the operator's token or an account's (`auth.rs`), and an account sees
//! only what it owns. `/healthz` is open; `/metrics` is open unless
//! `server.metrics_token` is set. Every request is validated completely before
//! anything changes, and a deploy is applied by the registry in one step
//! (ownership claims included), so a rejected request changes nothing.

use std::collections::{BTreeMap, HashSet};

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{authenticate, Principal};
use super::body::read_body;
use super::error::HttpError;
use super::metrics;
use super::routes::RoutePattern;
use crate::actors::deploy_sync::SyncError;
use crate::actors::{
    ActorError, Delete, DeleteAccount, Deploy, Rollback, WorkerRegistry, WorkersView,
};
use crate::cluster::engine::EngineError;
use crate::js::{Binding, Module, TypedModule, WorkerScript};
use crate::state::{names, DeploymentStore, StateError};

pub struct ControlPlane {
    pub registry: Addr<WorkerRegistry>,
    pub directory: Addr<crate::actors::DurableObjectDirectory>,
    pub view: WorkersView,
    pub store: std::sync::Arc<DeploymentStore>,
    /// Static asset blobs, by account and content hash.
    pub assets: std::sync::Arc<crate::state::assets::AssetStore>,
    pub kv: std::sync::Arc<crate::state::KvService>,
    /// The operator's token; `None` in dev mode: no authentication.
    pub token: Option<String>,
    /// `/metrics` needs the operator's token.
    pub metrics_token: bool,
    pub body_limit: usize,
    /// In a cluster: deploys, rollbacks and deletes go through the engine.
    pub cluster: Option<crate::actors::deploy_sync::ClusterDeploys>,
    /// The node is stopping (its data plane drains): `/healthz` says so.
    pub closing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The deploy request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    main_module: String,
    /// Name → an ES module's source, or `{"type", "content"}` /
    /// `{"type", "content_base64"}` for the other module types.
    modules: BTreeMap<String, Value>,
    #[serde(default)]
    bindings: Vec<Value>,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    compatibility_date: Option<String>,
    #[serde(default)]
    compatibility_flags: Vec<String>,
    #[serde(default)]
    crons: Vec<String>,
    /// The manifest and settings of the version's static assets; the blobs
    /// are uploaded first (`PUT /v1/assets/{hash}`).
    #[serde(default)]
    assets: Option<Value>,
}

/// Worker names: `[a-z0-9-]{1,63}` (`state::names`).
pub fn valid_worker_name(name: &str) -> bool {
    names::check_worker(name).is_ok()
}

fn check_name(name: &str) -> Result<(), HttpError> {
    names::check_worker(name).map_err(|e| HttpError::bad_request("invalid_name", e.0))
}

/// The largest `props` of a service binding, as JSON.
const MAX_PROPS_BYTES: usize = 64 * 1024;

fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// The worker `name` if the caller may see it (404 otherwise, as if it did not
/// exist): its account.
fn visible_worker(
    plane: &ControlPlane,
    principal: &Principal,
    name: &str,
) -> Result<String, HttpError> {
    match plane.store.worker_owner(name)? {
        Some(account) if principal.sees(&account) => Ok(account),
        _ => Err(HttpError::not_found(format!("worker '{name}' not found"))),
    }
}

fn parse_bindings(raw: Vec<Value>) -> Result<Vec<Binding>, HttpError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, value) in raw.into_iter().enumerate() {
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let binding: Binding = serde_json::from_value(value).map_err(|e| {
            HttpError::bad_request(
                "invalid_binding",
                format!("binding {i} (type '{kind}'): {e}"),
            )
        })?;
        // Every name that could reach the file system is checked here.
        let checked = match &binding {
            Binding::KvNamespace { namespace, .. } => names::check_namespace(namespace),
            Binding::Service { service, .. } => names::check_worker(service),
            Binding::DurableObjectNamespace { class_name, .. } => names::check_class(class_name),
            _ => Ok(()),
        };
        if let Err(e) = checked {
            return Err(HttpError::bad_request("invalid_binding", e.0));
        }
        if let Binding::Service {
            entrypoint: Some(entrypoint),
            name,
            ..
        } = &binding
        {
            if !valid_identifier(entrypoint) || entrypoint.len() > 255 || entrypoint == "default" {
                return Err(HttpError::bad_request(
                    "invalid_binding",
                    format!(
                        "service binding '{name}': entrypoint '{}' must name an exported class (a JavaScript identifier)",
                        names::printable(entrypoint)
                    ),
                ));
            }
        }
        if let Binding::Service {
            props: Some(props),
            name,
            ..
        } = &binding
        {
            if !props.is_object() || props.to_string().len() > MAX_PROPS_BYTES {
                return Err(HttpError::bad_request(
                    "invalid_binding",
                    format!(
                        "service binding '{name}': props must be a JSON object of at most {MAX_PROPS_BYTES} bytes"
                    ),
                ));
            }
        }
        let name = binding.name();
        if !valid_identifier(name) {
            return Err(HttpError::bad_request(
                "invalid_binding",
                format!("binding name '{name}' is not a valid JavaScript identifier"),
            ));
        }
        if !seen.insert(name.to_owned()) {
            return Err(HttpError::bad_request(
                "invalid_binding",
                format!("binding name '{name}' is used twice"),
            ));
        }
        out.push(binding);
    }
    Ok(out)
}

#[derive(Deserialize)]
struct FireQuery {
    cron: Option<String>,
}

/// `POST /v1/workers/{name}/scheduled[?cron=EXPR]`: runs the worker's
/// `scheduled()` handler now (a test hook, like `wrangler dev`'s
/// `/__scheduled`). The cron defaults to the worker's first one.
async fn fire_scheduled(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<FireQuery>,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let principal = authenticate(&req, &plane)?;
    let name = path.into_inner();
    check_name(&name)?;
    visible_worker(&plane, &principal, &name)?;
    let deployment = plane
        .view
        .get(&name)
        .ok_or_else(|| HttpError::not_found(format!("worker '{name}' not found")))?;
    let cron = query
        .into_inner()
        .cron
        .or_else(|| deployment.script.crons.first().cloned())
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let outcome = crate::actors::cron::run_scheduled(&deployment, &cron, now).await;
    Ok(HttpResponse::Ok().json(match outcome {
        Ok(()) => json!({"worker": name, "cron": cron, "outcome": "ok"}),
        Err(e) => json!({"worker": name, "cron": cron, "outcome": "exception", "error": e}),
    }))
}

fn parse_assets(raw: Value) -> Result<crate::js::Assets, HttpError> {
    use crate::state::assets::{valid_hash, valid_path, MAX_FILES, MAX_FILE_BYTES};
    let assets: crate::js::Assets = serde_json::from_value(raw)
        .map_err(|e| HttpError::bad_request("invalid_assets", format!("'assets': {e}")))?;
    if assets.files.len() > MAX_FILES {
        return Err(HttpError::bad_request(
            "invalid_assets",
            format!("at most {MAX_FILES} asset files per version"),
        ));
    }
    for (path, file) in &assets.files {
        if !valid_path(path) {
            return Err(HttpError::bad_request(
                "invalid_assets",
                format!(
                    "asset path '{}' must start with '/' and have no empty, '.' or '..' segments",
                    names::printable(path)
                ),
            ));
        }
        if !valid_hash(&file.hash) {
            return Err(HttpError::bad_request(
                "invalid_assets",
                format!("asset '{path}': 'hash' must be a SHA-256 in lowercase hex"),
            ));
        }
        if file.size > MAX_FILE_BYTES {
            return Err(HttpError::bad_request(
                "asset_too_large",
                format!("asset '{path}' is over {} MiB", MAX_FILE_BYTES >> 20),
            ));
        }
    }
    if let crate::js::RunWorkerFirst::Paths(p) = &assets.run_worker_first {
        if p.len() > 100
            || p.iter()
                .any(|p| p.len() > 256 || !p.trim_start_matches('!').starts_with('/'))
        {
            return Err(HttpError::bad_request(
                "invalid_assets",
                "run_worker_first: at most 100 patterns, each starting with '/' (or '!/')",
            ));
        }
    }
    Ok(assets)
}

/// Checks a deploy request completely (the worker's name, the JSON body, every
/// module, binding, route and cron) without touching any state: the
/// [`Deploy`] to send, or the 4xx to answer. Pure, so it is fuzzed
/// (`tests/fuzz_inputs.rs`).
pub fn validate_deploy(name: &str, account: &str, body: &[u8]) -> Result<Deploy, HttpError> {
    check_name(name)?;
    let body: DeployBody = serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request("bad_request", format!("invalid deploy JSON: {e}")))?;
    if body.modules.is_empty() {
        return Err(HttpError::bad_request("bad_request", "'modules' is empty"));
    }
    if !body.modules.contains_key(&body.main_module) {
        return Err(HttpError::bad_request(
            "bad_request",
            format!(
                "main_module '{}' is not among 'modules'",
                names::printable(&body.main_module)
            ),
        ));
    }
    let mut modules = BTreeMap::new();
    for (module, raw) in body.modules {
        if module.is_empty()
            || module.len() > 512
            || module.contains("..")
            || module.starts_with('/')
            || module.contains(':')
            || !module
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/@+~".contains(&b))
        {
            return Err(HttpError::bad_request(
                "bad_request",
                format!(
                    "module name '{}' must be a relative path like 'worker.js' or 'lib/util.js' (letters, digits and ._-/@+~)",
                    names::printable(&module)
                ),
            ));
        }
        let parsed = match raw {
            Value::String(source) => Module::Esm(source),
            other => Module::Typed(serde_json::from_value::<TypedModule>(other).map_err(|e| {
                HttpError::bad_request(
                    "invalid_module",
                    format!(
                        "module '{module}': {e} (a module is a string of ES module source, or {{\"type\": \"esm\"|\"commonjs\"|\"text\"|\"json\", \"content\": ...}} or {{\"type\": \"data\"|\"wasm\", \"content_base64\": ...}})"
                    ),
                )
            })?),
        };
        parsed.check().map_err(|e| {
            HttpError::bad_request("invalid_module", format!("module '{module}' {e}"))
        })?;
        modules.insert(module, parsed);
    }
    if modules
        .get(&body.main_module)
        .and_then(Module::esm_source)
        .is_none()
    {
        return Err(HttpError::bad_request(
            "invalid_module",
            format!(
                "main_module '{}' must be an ES module",
                names::printable(&body.main_module)
            ),
        ));
    }
    let bindings = parse_bindings(body.bindings)?;
    let mut hosts = Vec::new();
    for r in &body.routes {
        let pattern =
            RoutePattern::parse(r).map_err(|m| HttpError::bad_request("invalid_route", m))?;
        let host = pattern.host.canonical();
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    for cron in &body.crons {
        crate::actors::cron::parse(cron).map_err(|m| HttpError::bad_request("invalid_cron", m))?;
    }
    if body.compatibility_flags.len() > 256 {
        return Err(HttpError::bad_request(
            "bad_request",
            "too many compatibility flags (at most 256)",
        ));
    }
    crate::js::compat::resolve(
        body.compatibility_date.as_deref(),
        &body.compatibility_flags,
    )
    .map_err(|e| HttpError::bad_request(e.code, e.message))?;
    let assets = match body.assets {
        None => None,
        Some(raw) => Some(parse_assets(raw)?),
    };
    if assets.is_none() && bindings.iter().any(|b| matches!(b, Binding::Assets { .. })) {
        return Err(HttpError::bad_request(
            "invalid_binding",
            "an 'assets' binding needs the deploy's 'assets'",
        ));
    }
    Ok(Deploy {
        script: WorkerScript {
            crons: body.crons,
            name: name.to_owned(),
            version: 0,
            main_module: body.main_module,
            modules,
            bindings,
            compatibility_date: body.compatibility_date,
            compatibility_flags: body.compatibility_flags,
            deployed_at_ms: 0,
            assets,
            account: account.to_owned(),
            storage: String::new(),
        },
        routes: body.routes,
        hosts,
    })
}

#[derive(Deserialize)]
struct AccountQuery {
    account: Option<String>,
}

/// The account a call acts for (the caller's, or `?account=` with the
/// operator's token), which must exist.
fn existing_account(
    req: &HttpRequest,
    plane: &ControlPlane,
    query: &AccountQuery,
) -> Result<String, HttpError> {
    let principal = authenticate(req, plane)?;
    let account = principal.account_for(query.account.as_deref())?;
    if !plane.store.account_exists(&account)? {
        return Err(HttpError::not_found(format!(
            "account '{account}' not found"
        )));
    }
    Ok(account)
}

async fn put_worker(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<AccountQuery>,
    payload: web::Payload,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let account = existing_account(&req, &plane, &query)?;
    let name = path.into_inner();
    let body = read_body(payload, plane.body_limit).await?;
    let deploy = validate_deploy(&name, &account, &body)?;
    let warnings = crate::js::compat::resolve(
        deploy.script.compatibility_date.as_deref(),
        &deploy.script.compatibility_flags,
    )
    .map(|r| r.warnings)
    .unwrap_or_default();
    // A service of another account is refused outright (at call time it would
    // not be there for this worker either).
    for b in &deploy.script.bindings {
        if let Binding::Service { service, .. } = b {
            if let Some(owner) = plane.store.worker_owner(service)? {
                if owner != account {
                    return Err(HttpError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        format!("the service '{service}' belongs to another account"),
                    ));
                }
            }
        }
    }
    if let Some(assets) = &deploy.script.assets {
        let store = plane.assets.clone();
        let hashes: Vec<String> = assets.files.values().map(|f| f.hash.clone()).collect();
        if let Some(c) = &plane.cluster {
            // Blobs uploaded through another PoP come from the engine (what
            // it lacks too is reported missing below).
            let _ = c.cluster.fetch_assets(&account, hashes.clone()).await;
        }
        let (owner, wanted) = (account.clone(), hashes.clone());
        let missing: Vec<String> = web::block(move || {
            wanted
                .into_iter()
                .filter(|h| !store.has(&owner, h))
                .take(10)
                .collect()
        })
        .await
        .map_err(|e| HttpError::internal(e.to_string()))?;
        if !missing.is_empty() {
            return Err(HttpError::bad_request(
                "missing_assets",
                format!(
                    "upload these assets first (PUT /v1/assets/{{hash}}): {}",
                    missing.join(", ")
                ),
            ));
        }
        // Every PoP fetches the blobs from the engine when it applies the
        // deployment: they are there before its record is.
        if let Some(c) = &plane.cluster {
            c.cluster.replicate_assets(&account, hashes).await?;
        }
    }
    let activated = match &plane.cluster {
        Some(cluster) => cluster.deploy(deploy).await?,
        None => plane
            .registry
            .send(deploy)
            .await
            .map_err(|e| HttpError::internal(e.to_string()))??,
    };
    Ok(HttpResponse::Ok().json(json!({
        "name": activated.name,
        "version": activated.version,
        "routes": activated.routes,
        "warnings": warnings,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MissingBody {
    hashes: Vec<String>,
}

/// `POST /v1/assets/missing[?account=A]` `{"hashes": [...]}`: which of these
/// blobs the account has not uploaded (`{"missing": [...]}`), so a deploy
/// uploads only what changed.
async fn missing_assets(
    req: HttpRequest,
    query: web::Query<AccountQuery>,
    payload: web::Payload,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let principal = authenticate(&req, &plane)?;
    let account = principal.account_for(query.account.as_deref())?;
    let body = read_body(payload, plane.body_limit).await?;
    let body: MissingBody = serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request("bad_request", format!("invalid JSON: {e}")))?;
    if body.hashes.len() > crate::state::assets::MAX_FILES {
        return Err(HttpError::bad_request("bad_request", "too many hashes"));
    }
    let store = plane.assets.clone();
    let missing = web::block(move || {
        body.hashes
            .into_iter()
            .filter(|h| !store.has(&account, h))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| HttpError::internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({ "missing": missing })))
}

/// `PUT /v1/assets/{hash}[?account=A]`: stores one blob, whose content must
/// hash to `hash` (SHA-256, lowercase hex).
async fn put_asset(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<AccountQuery>,
    payload: web::Payload,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let account = existing_account(&req, &plane, &query)?;
    let hash = path.into_inner();
    let limit = (crate::state::assets::MAX_FILE_BYTES as usize).max(plane.body_limit);
    let body = read_body(payload, limit).await?;
    let store = plane.assets.clone();
    let stored = hash.clone();
    let (owner, content) = (account.clone(), body.clone());
    web::block(move || store.put(&owner, &stored, &content))
        .await
        .map_err(|e| HttpError::internal(e.to_string()))?
        .map_err(|e| match e {
            crate::state::assets::AssetError::Invalid(m) => {
                HttpError::bad_request("invalid_asset", m)
            }
            other => HttpError::internal(other.to_string()),
        })?;
    // In a cluster the engine keeps it for the other PoPs (checked above).
    if let Some(c) = &plane.cluster {
        c.cluster.put_asset(&account, &hash, body).await?;
    }
    Ok(HttpResponse::Ok().json(json!({ "hash": hash })))
}

async fn list_workers(
    req: HttpRequest,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let principal = authenticate(&req, &plane)?;
    let published = plane.view.current();
    let mut workers: Vec<Value> = published
        .workers
        .values()
        .filter(|d| principal.sees(&d.script.account))
        .map(|d| {
            json!({
                "name": d.name(),
                "account": d.script.account,
                "version": d.version(),
                "routes": d.routes,
                "isolates": d.isolates(),
            })
        })
        .collect();
    workers.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(HttpResponse::Ok().json(json!({ "workers": workers })))
}

async fn get_worker(
    req: HttpRequest,
    path: web::Path<String>,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let principal = authenticate(&req, &plane)?;
    let name = path.into_inner();
    check_name(&name)?;
    visible_worker(&plane, &principal, &name)?;
    let store = plane.store.clone();
    let lookup = name.clone();
    let (record, active) = web::block(move || {
        let record = store.worker(&lookup)?;
        let active = match &record {
            Some(r) => store.version(&lookup, r.active_version)?,
            None => None,
        };
        Ok::<_, crate::state::StateError>((record, active))
    })
    .await
    .map_err(|e| HttpError::internal(e.to_string()))??;
    let (Some(record), Some(active)) = (record, active) else {
        return Err(HttpError::not_found(format!("worker '{name}' not found")));
    };
    let bindings: Vec<Value> = active
        .script
        .bindings
        .iter()
        .map(Binding::redacted)
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "name": record.name,
        "account": record.account,
        "version": record.active_version,
        "versions": record.versions,
        "routes": active.routes,
        "bindings": bindings,
        "main_module": active.script.main_module,
        "modules": active.script.modules.keys().collect::<Vec<_>>(),
        "module_types": active
            .script
            .modules
            .iter()
            .map(|(name, m)| (name.clone(), m.kind()))
            .collect::<BTreeMap<_, _>>(),
        "assets": active.script.assets.as_ref().map(|a| json!({
            "files": a.files.len(),
            "bytes": a.files.values().map(|f| f.size).sum::<u64>(),
            "html_handling": a.html_handling,
            "not_found_handling": a.not_found_handling,
            "run_worker_first": a.run_worker_first,
        })),
        "compatibility_date": active.script.compatibility_date,
        "compatibility_flags": active.script.compatibility_flags,
        "crons": active.script.crons,
        "created_at": active.created_at,
        "isolates": plane.view.get(&name).map(|d| d.isolates()).unwrap_or(0),
    })))
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    keep_storage: bool,
}

async fn delete_worker(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<DeleteQuery>,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let principal = authenticate(&req, &plane)?;
    let name = path.into_inner();
    check_name(&name)?;
    visible_worker(&plane, &principal, &name)?;
    match &plane.cluster {
        Some(cluster) => cluster.delete(&name, query.keep_storage).await?,
        None => plane
            .registry
            .send(Delete {
                name: name.clone(),
                keep_storage: query.keep_storage,
            })
            .await
            .map_err(|e| HttpError::internal(e.to_string()))??,
    }
    Ok(HttpResponse::Ok().json(json!({ "deleted": name, "storage_kept": query.keep_storage })))
}

/// `DELETE /v1/workers/{name}/objects/{class}/{id}`: resets one Durable
/// Object (after damage, accepting the loss): it stops, its database goes, its
/// next event starts it empty.
async fn reset_object(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let principal = authenticate(&req, &plane)?;
    let (name, class, id) = path.into_inner();
    check_name(&name)?;
    visible_worker(&plane, &principal, &name)?;
    names::check_class(&class).map_err(|e| HttpError::bad_request("invalid_name", e.0))?;
    names::check_object_id(&id).map_err(|e| HttpError::bad_request("invalid_name", e.0))?;
    let record = plane
        .store
        .worker(&name)?
        .ok_or_else(|| HttpError::not_found(format!("worker '{name}' not found")))?;
    let address = crate::js::durable::ObjectAddress {
        worker: name,
        storage: record.storage,
        class_name: class,
        id: id.clone(),
        name: None,
    };
    plane
        .directory
        .send(crate::actors::ForgetObject(address))
        .await
        .map_err(|e| HttpError::internal(e.to_string()))?
        .map_err(HttpError::internal)?;
    Ok(HttpResponse::Ok().json(json!({ "reset": id })))
}

async fn rollback_worker(
    req: HttpRequest,
    path: web::Path<String>,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let principal = authenticate(&req, &plane)?;
    let name = path.into_inner();
    check_name(&name)?;
    visible_worker(&plane, &principal, &name)?;
    let activated = match &plane.cluster {
        Some(cluster) => cluster.rollback(&name).await?,
        None => plane
            .registry
            .send(Rollback { name })
            .await
            .map_err(|e| HttpError::internal(e.to_string()))??,
    };
    Ok(HttpResponse::Ok().json(json!({
        "name": activated.name,
        "version": activated.version,
        "routes": activated.routes,
    })))
}

/// `/healthz`: the node serves; in a cluster also whether the engine is
/// reachable and whether the node has fenced itself (its data plane serves its
/// deployments either way). A stopping node answers 503 `draining`.
async fn healthz(plane: web::Data<ControlPlane>) -> HttpResponse {
    // A load balancer takes a stopping node out before it stops accepting.
    if plane.closing.load(std::sync::atomic::Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().json(json!({ "status": "draining" }));
    }
    match &plane.cluster {
        None => HttpResponse::Ok().json(json!({ "status": "ok" })),
        Some(c) => {
            let (cluster, connected) = (&c.cluster, c.cluster.engine_connected());
            let fenced = cluster.fenced();
            // A PoP that restarted is healthy once its KV replica caught up
            // with the log as it was; until then it says how far behind it is.
            let kv = cluster.kv_progress();
            HttpResponse::Ok().json(json!({
                "status": if connected && !fenced && kv.caught_up && !kv.missing { "ok" } else { "degraded" },
                "cluster": {
                    "node": cluster.node_id(),
                    "engine": if connected { "connected" } else { "unreachable" },
                    "fenced": fenced,
                    "members": cluster.live_members(),
                    "kv": kv,
                },
            }))
        }
    }
}

/// `GET /v1/cluster` (operator): members, regions, ring and this node's health.
async fn cluster_status(
    req: HttpRequest,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    // Node addresses are the operator's business, not a tenant's.
    authenticate(&req, &plane)?.operator()?;
    match &plane.cluster {
        Some(c) => Ok(HttpResponse::Ok().json(c.cluster.status())),
        None => Ok(HttpResponse::Ok().json(json!({ "node": null, "standalone": true }))),
    }
}

async fn metrics_text(
    req: HttpRequest,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    // The series name workers and namespaces: operators may keep them private.
    if plane.metrics_token {
        authenticate(&req, &plane)?.operator()?;
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics::render()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    id: String,
}

/// A small JSON request body (≤ 64 KiB) of type `T`; `what` names it in the
/// error.
async fn read_small_json<T: serde::de::DeserializeOwned>(
    payload: web::Payload,
    what: &str,
) -> Result<T, HttpError> {
    let body = read_body(payload, 64 << 10).await?;
    serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request("bad_request", format!("invalid {what} JSON: {e}")))
}

async fn list_accounts(
    req: HttpRequest,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    authenticate(&req, &plane)?.operator()?;
    Ok(HttpResponse::Ok().json(json!({ "accounts": plane.store.accounts()? })))
}

async fn create_account(
    req: HttpRequest,
    payload: web::Payload,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    authenticate(&req, &plane)?.operator()?;
    let body: NewAccount = read_small_json(payload, "account").await?;
    let Some(c) = &plane.cluster else {
        return Ok(HttpResponse::Created().json(plane.store.create_account(&body.id)?));
    };
    // Cluster-wide first (`cluster::accounts`): one PoP wins a name.
    names::check_account(&body.id).map_err(|e| HttpError::bad_request("invalid_name", e.0))?;
    if plane.store.account_exists(&body.id)? {
        return Err(StateError::Conflict(format!("account '{}' exists already", body.id)).into());
    }
    let created_at = crate::state::deployments::now_secs();
    c.cluster
        .create_account(&body.id, created_at)
        .await
        .map_err(|e| match e {
            EngineError::Conflict => HttpError::from(StateError::Conflict(format!(
                "account '{}' exists already",
                body.id
            ))),
            other => other.into(),
        })?;
    plane.store.put_account(&body.id, created_at)?;
    Ok(HttpResponse::Created().json(crate::state::Account {
        id: body.id,
        created_at,
    }))
}

async fn delete_account(
    req: HttpRequest,
    path: web::Path<String>,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    authenticate(&req, &plane)?.operator()?;
    let id = path.into_inner();
    names::check_account(&id).map_err(|e| HttpError::bad_request("invalid_name", e.0))?;
    if let Some(c) = &plane.cluster {
        return delete_account_everywhere(&plane, c, id).await;
    }
    let removal = plane
        .registry
        .send(DeleteAccount { id: id.clone() })
        .await
        .map_err(|e| HttpError::internal(e.to_string()))??;
    for ns in &removal.namespaces {
        plane.kv.drop_namespace(ns);
    }
    remove_local_assets(&plane, &id);
    Ok(HttpResponse::Ok().json(json!({
        "deleted": id,
        "workers": removal.workers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "namespaces": removal.namespaces,
    })))
}

/// A removed account's asset blobs leave this node's disk (best effort).
fn remove_local_assets(plane: &ControlPlane, account: &str) {
    if let Err(e) = plane.assets.remove_account(account) {
        tracing::warn!(account = %account, error = %e, "cannot remove the account's assets");
    }
}

/// Removes an account from the whole cluster, in the order that keeps its
/// names from being taken while its data is still anywhere: its workers
/// (delete records), its KV data (drop records in the KV log), then its
/// tokens, record and claims, then here. Each PoP applies the first two in
/// log order and the rest through its account watch. Stopped by the engine
/// going away half-way, a retry finishes it.
async fn delete_account_everywhere(
    plane: &ControlPlane,
    c: &crate::actors::deploy_sync::ClusterDeploys,
    id: String,
) -> Result<HttpResponse, HttpError> {
    if id == crate::state::DEFAULT_ACCOUNT {
        return Err(StateError::Forbidden("the default account cannot be removed".into()).into());
    }
    // A removal stopped half-way (the record already deleted) is finished
    // by a retry.
    let presence = c.cluster.account_presence(&format!("a.{id}")).await?;
    let known = matches!(presence, crate::cluster::engine::Presence::Live(_))
        || plane.store.account_exists(&id)?;
    if !known && presence == crate::cluster::engine::Presence::Never {
        return Err(StateError::NotFound(format!("account '{id}'")).into());
    }
    let local_namespaces = plane.store.namespaces_of(&id)?;
    // First the record and the tokens: from here no PoP authenticates the
    // account, makes it a token or deploys for it.
    c.cluster.retire_account(&id).await?;
    match plane.registry.send(DeleteAccount { id: id.clone() }).await {
        Ok(Ok(_)) | Ok(Err(ActorError::Store(StateError::NotFound(_)))) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(HttpError::internal(e.to_string())),
    }
    let workers = c.workers_of(&id).await?;
    for name in &workers {
        match c.delete(name, false).await {
            Ok(()) | Err(SyncError::Actor(ActorError::NotFound(_))) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut namespaces = c.cluster.namespaces_of(&id).await?;
    for ns in local_namespaces {
        if !namespaces.contains(&ns) {
            namespaces.push(ns);
        }
    }
    namespaces.sort();
    for ns in &namespaces {
        plane.kv.remove_namespace(ns).await.map_err(|e| {
            HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                e.to_string(),
            )
        })?;
    }
    // Its asset blobs (in the engine, and here).
    c.cluster.forget_assets(&id);
    remove_local_assets(plane, &id);
    // Last, the names: free once the data under them is gone everywhere.
    c.cluster.release_claims(&id).await?;
    if !known && workers.is_empty() && namespaces.is_empty() {
        return Err(StateError::NotFound(format!("account '{id}'")).into());
    }
    Ok(HttpResponse::Ok().json(json!({
        "deleted": id,
        "workers": workers,
        "namespaces": namespaces,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewHost {
    pattern: String,
}

/// The operator gives a host pattern to an account.
async fn assign_host(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    authenticate(&req, &plane)?.operator()?;
    let id = path.into_inner();
    let body: NewHost = read_small_json(payload, "host").await?;
    let pattern = crate::state::hosts::HostPattern::parse(&body.pattern)
        .map_err(|m| HttpError::bad_request("invalid_route", m))?
        .canonical();
    plane.store.assign_host(&pattern, &id)?;
    Ok(HttpResponse::Ok().json(json!({ "account": id, "pattern": pattern })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    account: String,
    label: Option<String>,
}

#[derive(Deserialize)]
struct TokensQuery {
    account: Option<String>,
}

async fn create_token(
    req: HttpRequest,
    payload: web::Payload,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    authenticate(&req, &plane)?.operator()?;
    let body: NewToken = read_small_json(payload, "token").await?;
    if body.label.as_ref().is_some_and(|l| l.len() > 200) {
        return Err(HttpError::bad_request(
            "bad_request",
            "label is longer than 200 bytes",
        ));
    }
    let (info, secret) = match &plane.cluster {
        None => plane
            .store
            .create_token(&body.account, body.label.as_deref())?,
        Some(c) => {
            let (info, secret, hash) = plane
                .store
                .new_token(&body.account, body.label.as_deref())?;
            let record = crate::cluster::accounts::TokenRecord {
                account: info.account.clone(),
                hash: hash.clone(),
                label: info.label.clone(),
                created_at: info.created_at,
            };
            c.cluster.create_token(&info.id, &record).await?;
            // The account may have been removed on another PoP meanwhile:
            // a token must never outlive it (a later account of the same
            // name would inherit it).
            if !matches!(
                c.cluster
                    .account_presence(&format!("a.{}", info.account))
                    .await?,
                crate::cluster::engine::Presence::Live(_)
            ) {
                c.cluster.revoke_token(&info.id).await?;
                return Err(StateError::NotFound(format!("account '{}'", info.account)).into());
            }
            plane.store.put_token(&info, &hash)?;
            (info, secret)
        }
    };
    Ok(HttpResponse::Created().json(json!({
        "id": info.id,
        "account": info.account,
        "label": info.label,
        "created_at": info.created_at,
        "token": secret,
    })))
}

async fn list_tokens(
    req: HttpRequest,
    query: web::Query<TokensQuery>,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    authenticate(&req, &plane)?.operator()?;
    Ok(HttpResponse::Ok().json(json!({ "tokens": plane.store.tokens(query.account.as_deref())? })))
}

async fn revoke_token(
    req: HttpRequest,
    path: web::Path<String>,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    authenticate(&req, &plane)?.operator()?;
    let id = path.into_inner();
    if let Some(c) = &plane.cluster {
        if !plane.store.tokens(None)?.iter().any(|t| t.id == id) {
            return Err(HttpError::not_found(format!("token '{id}' not found")));
        }
        c.cluster.revoke_token(&id).await?;
        // This PoP's watch may have removed it already.
        plane.store.revoke_token(&id)?;
        return Ok(HttpResponse::Ok().json(json!({ "revoked": id })));
    }
    if !plane.store.revoke_token(&id)? {
        return Err(HttpError::not_found(format!("token '{id}' not found")));
    }
    Ok(HttpResponse::Ok().json(json!({ "revoked": id })))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, HttpError> {
    Err(HttpError::not_found(format!(
        "no control-plane endpoint {} {}",
        req.method(),
        req.path()
    )))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics_text))
        .route("/v1/cluster", web::get().to(cluster_status))
        .route("/v1/workers", web::get().to(list_workers))
        .route("/v1/assets/missing", web::post().to(missing_assets))
        .route("/v1/assets/{hash}", web::put().to(put_asset))
        .route("/v1/workers/{name}", web::put().to(put_worker))
        .route("/v1/workers/{name}", web::get().to(get_worker))
        .route("/v1/workers/{name}", web::delete().to(delete_worker))
        .route(
            "/v1/workers/{name}/scheduled",
            web::post().to(fire_scheduled),
        )
        .route(
            "/v1/workers/{name}/rollback",
            web::post().to(rollback_worker),
        )
        .route(
            "/v1/workers/{name}/objects/{class}/{id}",
            web::delete().to(reset_object),
        )
        .route("/v1/accounts", web::get().to(list_accounts))
        .route("/v1/accounts", web::post().to(create_account))
        .route("/v1/accounts/{id}", web::delete().to(delete_account))
        .route("/v1/accounts/{id}/hosts", web::post().to(assign_host))
        .route("/v1/tokens", web::get().to(list_tokens))
        .route("/v1/tokens", web::post().to(create_token))
        .route("/v1/tokens/{id}", web::delete().to(revoke_token))
        .configure(super::kv_admin::configure)
        .default_service(web::to(not_found));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_names() {
        assert!(valid_worker_name("api-2"));
        assert!(!valid_worker_name(""));
        assert!(!valid_worker_name("Api"));
        assert!(!valid_worker_name("a_b"));
        assert!(!valid_worker_name(&"a".repeat(64)));
        assert!(valid_worker_name(&"a".repeat(63)));
    }

    #[test]
    fn bindings_are_checked() {
        let ok = parse_bindings(vec![json!({"type":"plain_text","name":"A","text":"x"})]);
        assert!(ok.is_ok());
        let unknown = parse_bindings(vec![json!({"type":"queue","name":"Q"})]).unwrap_err();
        assert_eq!(unknown.code, "invalid_binding");
        let dup = parse_bindings(vec![
            json!({"type":"plain_text","name":"A","text":"x"}),
            json!({"type":"secret_text","name":"A","text":"y"}),
        ])
        .unwrap_err();
        assert!(dup.message.contains("twice"));
    }
}
