//! The control plane's KV API, for operators and tests:
//!
//! | call | does |
//! | --- | --- |
//! | `PUT /v1/kv/{ns}/values/{key}?expiration_ttl=&expiration=&metadata=` | body is the value |
//! | `GET /v1/kv/{ns}/values/{key}` | the value's bytes, or 404 |
//! | `DELETE /v1/kv/{ns}/values/{key}` | deletes the key |
//! | `GET /v1/kv/{ns}/keys?prefix=&limit=&cursor=` | `{keys, list_complete, cursor}` |
//! | `POST /v1/kv/{ns}/bulk` | JSON array of `{key, value, expiration_ttl, expiration, metadata, base64}` |
//!
//! Everything goes through the same `KvService` as the binding, so limits and
//! error messages are the same; a bulk write checks every entry before writing any.
//! A namespace belongs to the account that first bound or wrote it: an account
//! token reaches only its own (another's is a 403), and a write to a namespace
//! nobody owns claims it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{authenticate, Principal};
use super::body::read_body;
use super::control_plane::ControlPlane;
use super::error::HttpError;
use crate::js::{KvBackend, KvError, KvListOptions, KvPutOptions};

const MAX_BULK: usize = 10_000;

impl From<KvError> for HttpError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Invalid(m) => {
                // Workers' messages carry the status: "KV PUT failed: 413 …".
                let status = m
                    .split("failed: ")
                    .nth(1)
                    .and_then(|r| r.get(..3))
                    .and_then(|c| c.parse::<u16>().ok())
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .filter(|s| s.is_client_error())
                    .unwrap_or(StatusCode::BAD_REQUEST);
                HttpError::new(status, "kv_invalid", m)
            }
            KvError::Unavailable(m) if m.contains(": 507 ") => {
                HttpError::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", m)
            }
            KvError::Unavailable(m) => {
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "kv_unavailable", m)
            }
        }
    }
}

fn claim_error(e: crate::cluster::claims::ClaimError) -> HttpError {
    match e {
        crate::cluster::claims::ClaimError::Forbidden(m) => {
            HttpError::new(StatusCode::FORBIDDEN, "forbidden", m)
        }
        crate::cluster::claims::ClaimError::Unavailable(m) => HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unavailable",
            format!(
                "the cluster engine is unreachable, so namespace ownership cannot be checked: {m}"
            ),
        ),
    }
}

/// Checks that the caller may use namespace `ns`; a write to a namespace
/// nobody owns claims it for the caller's account.
/// In a cluster the owner is the engine's (KV data is on every PoP, so a
/// namespace's owner must be the same everywhere; `cluster::claims`).
async fn namespace_access(
    req: &HttpRequest,
    plane: &ControlPlane,
    ns: &str,
    write: bool,
) -> Result<(), HttpError> {
    let principal = authenticate(req, plane)?;
    crate::state::names::check_namespace(ns)
        .map_err(|e| HttpError::bad_request("invalid_name", e.0))?;
    let cluster = plane.cluster.as_ref().map(|c| c.cluster.clone());
    let owner = match &cluster {
        Some(c) => match c.namespace_owner(ns).await.map_err(claim_error)? {
            Some(owner) => Some(owner),
            // Claimed here before the cluster decided such things: publish
            // it, so no other PoP's account can claim it (or, if one just
            // did, that one owns it).
            None => match plane.store.namespace_owner(ns)? {
                Some(local) => match c.claim(&local, &[], &[ns.to_owned()]).await {
                    Ok(()) => Some(local),
                    Err(crate::cluster::claims::ClaimError::Forbidden(_)) => {
                        c.namespace_owner(ns).await.map_err(claim_error)?
                    }
                    Err(e) => return Err(claim_error(e)),
                },
                None => None,
            },
        },
        None => plane.store.namespace_owner(ns)?,
    };
    match owner {
        Some(owner) if principal.sees(&owner) => Ok(()),
        Some(_) => Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the KV namespace '{ns}' belongs to another account"),
        )),
        None if write => {
            let account = match &principal {
                Principal::Operator => crate::state::DEFAULT_ACCOUNT.to_owned(),
                Principal::Account(a) => a.clone(),
            };
            if let Some(c) = &cluster {
                c.claim(&account, &[], &[ns.to_owned()])
                    .await
                    .map_err(claim_error)?;
            }
            plane.store.claim(&account, &[], &[ns.to_owned()])?;
            Ok(())
        }
        None => Ok(()),
    }
}

#[derive(Deserialize)]
struct PutQuery {
    expiration_ttl: Option<f64>,
    expiration: Option<f64>,
    metadata: Option<String>,
}

fn check_metadata(m: Option<String>) -> Result<Option<String>, HttpError> {
    match m {
        None => Ok(None),
        Some(text) => {
            serde_json::from_str::<Value>(&text).map_err(|e| {
                HttpError::bad_request("bad_request", format!("metadata is not JSON: {e}"))
            })?;
            Ok(Some(text))
        }
    }
}

async fn put_value(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<PutQuery>,
    payload: web::Payload,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let (ns, key) = path.into_inner();
    namespace_access(&req, &plane, &ns, true).await?;
    let body = read_body(payload, plane.body_limit).await?;
    let q = query.into_inner();
    let options = KvPutOptions {
        expiration: q.expiration,
        expiration_ttl: q.expiration_ttl,
        metadata: check_metadata(q.metadata)?,
    };
    plane.kv.put(&ns, &key, body, options).await?;
    Ok(HttpResponse::Ok().json(json!({ "key": key })))
}

async fn get_value(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let (ns, key) = path.into_inner();
    namespace_access(&req, &plane, &ns, false).await?;
    match plane.kv.get(&ns, &key, None).await? {
        Some(v) => {
            let mut resp = HttpResponse::Ok();
            resp.content_type("application/octet-stream");
            if let Some(m) = &v.metadata {
                resp.insert_header(("x-kv-metadata", m.as_str()));
            }
            if let Some(e) = v.expiration {
                resp.insert_header(("x-kv-expiration", e.to_string()));
            }
            Ok(resp.body(v.value))
        }
        None => Err(HttpError::not_found(format!(
            "key '{key}' not found in namespace '{ns}'"
        ))),
    }
}

async fn delete_value(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let (ns, key) = path.into_inner();
    namespace_access(&req, &plane, &ns, true).await?;
    plane.kv.delete(&ns, &key).await?;
    Ok(HttpResponse::Ok().json(json!({ "deleted": key })))
}

async fn list_keys(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<KvListOptions>,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let ns = path.into_inner();
    namespace_access(&req, &plane, &ns, false).await?;
    let result = plane.kv.list(&ns, query.into_inner()).await?;
    Ok(HttpResponse::Ok().json(result))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkEntry {
    key: String,
    value: String,
    expiration_ttl: Option<f64>,
    expiration: Option<f64>,
    metadata: Option<Value>,
    #[serde(default)]
    base64: bool,
}

async fn bulk_put(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    plane: web::Data<ControlPlane>,
) -> Result<HttpResponse, HttpError> {
    let ns = path.into_inner();
    namespace_access(&req, &plane, &ns, true).await?;
    let body = read_body(payload, plane.body_limit).await?;
    let entries: Vec<BulkEntry> = serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request("bad_request", format!("invalid bulk JSON: {e}")))?;
    if entries.len() > MAX_BULK {
        return Err(HttpError::bad_request(
            "bad_request",
            format!(
                "a bulk write takes at most {MAX_BULK} entries, got {}",
                entries.len()
            ),
        ));
    }
    // Decode and check everything first: a bad entry writes nothing.
    let mut writes = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let value = if e.base64 {
            base64::engine::general_purpose::STANDARD
                .decode(&e.value)
                .map_err(|err| {
                    HttpError::bad_request("bad_request", format!("entry {i}: bad base64: {err}"))
                })?
        } else {
            e.value.into_bytes()
        };
        let options = KvPutOptions {
            expiration: e.expiration,
            expiration_ttl: e.expiration_ttl,
            metadata: e.metadata.map(|m| m.to_string()),
        };
        crate::state::kv::check_put(&e.key, value.len(), &options)
            .map_err(|err| HttpError::from(err).with_prefix(&format!("entry {i}: ")))?;
        writes.push((e.key, value, options));
    }
    let n = writes.len();
    for (key, value, options) in writes {
        plane.kv.put(&ns, &key, value.into(), options).await?;
    }
    Ok(HttpResponse::Ok().json(json!({ "written": n })))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/kv/{ns}/values/{key:.+}", web::put().to(put_value))
        .route("/v1/kv/{ns}/values/{key:.+}", web::get().to(get_value))
        .route(
            "/v1/kv/{ns}/values/{key:.+}",
            web::delete().to(delete_value),
        )
        .route("/v1/kv/{ns}/keys", web::get().to(list_keys))
        .route("/v1/kv/{ns}/bulk", web::post().to(bulk_put));
}
