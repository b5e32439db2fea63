//! The control plane: the deploy API, `/healthz` and `/metrics`.
//!
//! `/v1/*` requires `Authorization: Bearer <token>` unless the node runs in `dev`
//! mode; `/healthz` and `/metrics` are open (for load balancers and Prometheus).
//! Every request is validated completely before anything changes, and a deploy is
//! applied by the registry in one step, so a rejected request changes nothing.

use std::collections::{BTreeMap, HashSet};

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::body::read_body;
use super::error::HttpError;
use super::metrics;
use super::routes::RoutePattern;
use crate::actors::{Delete, Deploy, Rollback, WorkerRegistry, WorkersView};
use crate::js::{Binding, WorkerScript};
use crate::state::DeploymentStore;

pub struct ControlPlane {
    pub registry: Addr<WorkerRegistry>,
    pub view: WorkersView,
    pub store: std::sync::Arc<DeploymentStore>,
    pub kv: std::sync::Arc<crate::state::KvService>,
    /// `None` in dev mode: no authentication.
    pub token: Option<String>,
    pub body_limit: usize,
}

/// The deploy request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    main_module: String,
    modules: BTreeMap<String, String>,
    #[serde(default)]
    bindings: Vec<Value>,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    compatibility_date: Option<String>,
    #[serde(default)]
    crons: Vec<String>,
}

/// Worker names: `[a-z0-9-]{1,63}`.
pub fn valid_worker_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_name(name: &str) -> Result<(), HttpError> {
    if valid_worker_name(name) {
        Ok(())
    } else {
        Err(HttpError::bad_request(
            "invalid_name",
            format!("worker name '{name}' must be 1-63 characters of a-z, 0-9 and '-'"),
        ))
    }
}

fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
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
        if let Binding::KvNamespace { namespace, .. } = &binding {
            if !crate::state::kv::valid_namespace(namespace) {
                return Err(HttpError::bad_request(
                    "invalid_binding",
                    format!(
                        "KV namespace '{namespace}' must be 1-64 of A-Z, a-z, 0-9, '_' and '-'"
                    ),
                ));
            }
        }
        if let Binding::Service { service, .. } = &binding {
            if !valid_worker_name(service) {
                return Err(HttpError::bad_request(
                    "invalid_binding",
                    format!("service '{service}' is not a valid worker name"),
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

pub(crate) fn authorize(req: &HttpRequest, plane: &ControlPlane) -> Result<(), HttpError> {
    let Some(token) = &plane.token else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid bearer token",
        )),
        None => Err(HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the control plane needs 'Authorization: Bearer <token>'",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    authorize(&req, &plane)?;
    let name = path.into_inner();
    check_name(&name)?;
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

async fn put_worker(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &plane)?;
    let name = path.into_inner();
    check_name(&name)?;
    let body = read_body(payload, plane.body_limit).await?;
    let body: DeployBody = serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request("bad_request", format!("invalid deploy JSON: {e}")))?;
    if body.modules.is_empty() {
        return Err(HttpError::bad_request("bad_request", "'modules' is empty"));
    }
    if !body.modules.contains_key(&body.main_module) {
        return Err(HttpError::bad_request(
            "bad_request",
            format!("main_module '{}' is not among 'modules'", body.main_module),
        ));
    }
    for module in body.modules.keys() {
        if module.is_empty()
            || module.contains("..")
            || module.starts_with('/')
            || module.contains(':')
        {
            return Err(HttpError::bad_request(
                "bad_request",
                format!("module name '{module}' must be a relative path like 'worker.js' or 'lib/util.js'"),
            ));
        }
    }
    let bindings = parse_bindings(body.bindings)?;
    for r in &body.routes {
        RoutePattern::parse(r).map_err(|m| HttpError::bad_request("invalid_route", m))?;
    }
    for cron in &body.crons {
        crate::actors::cron::parse(cron).map_err(|m| HttpError::bad_request("invalid_cron", m))?;
    }
    let script = WorkerScript {
        crons: body.crons,
        name,
        version: 0,
        main_module: body.main_module,
        modules: body.modules,
        bindings,
        compatibility_date: body.compatibility_date,
    };
    let activated = plane
        .registry
        .send(Deploy {
            script,
            routes: body.routes,
        })
        .await
        .map_err(|e| HttpError::internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(json!({
        "name": activated.name,
        "version": activated.version,
        "routes": activated.routes,
    })))
}

async fn list_workers(
    req: HttpRequest,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &plane)?;
    let published = plane.view.current();
    let mut workers: Vec<Value> = published
        .workers
        .values()
        .map(|d| {
            json!({
                "name": d.name(),
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
    authorize(&req, &plane)?;
    let name = path.into_inner();
    check_name(&name)?;
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
        "version": record.active_version,
        "versions": record.versions,
        "routes": active.routes,
        "bindings": bindings,
        "main_module": active.script.main_module,
        "modules": active.script.modules.keys().collect::<Vec<_>>(),
        "compatibility_date": active.script.compatibility_date,
        "crons": active.script.crons,
        "created_at": active.created_at,
        "isolates": plane.view.get(&name).map(|d| d.isolates()).unwrap_or(0),
    })))
}

async fn delete_worker(
    req: HttpRequest,
    path: web::Path<String>,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &plane)?;
    let name = path.into_inner();
    check_name(&name)?;
    plane
        .registry
        .send(Delete { name: name.clone() })
        .await
        .map_err(|e| HttpError::internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(json!({ "deleted": name })))
}

async fn rollback_worker(
    req: HttpRequest,
    path: web::Path<String>,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    authorize(&req, &plane)?;
    let name = path.into_inner();
    check_name(&name)?;
    let activated = plane
        .registry
        .send(Rollback { name })
        .await
        .map_err(|e| HttpError::internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(json!({
        "name": activated.name,
        "version": activated.version,
        "routes": activated.routes,
    })))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn metrics_text() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics::render())
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
        .route("/v1/workers", web::get().to(list_workers))
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
