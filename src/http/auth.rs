//! Who is calling the control plane, and what they may see.
//!
//! Two kinds of caller ([`Principal`]):
//! - the **operator**, with the node's token (`server.token`, `EDGED_TOKEN` or
//!   `<data_dir>/control-token`), or anyone in `edged dev`: manages accounts
//!   and tokens and may act on every account's workers and namespaces (a new
//!   worker goes to `?account=` or the default account);
//! - an **account**, with one of its tokens (`edged tokens create`): sees and
//!   changes only what its account owns; anything else does not exist for it
//!   (404), and naming another account's namespace, service or host is a 403.
//!
//! `edged dev` needs no token, so its control plane guards against web pages:
//! a request whose `Host` is not a loopback name or the listener's own
//! address (DNS rebinding), or that a browser sent from another origin, is
//! refused.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::HttpRequest;

use super::control_plane::ControlPlane;
use super::error::HttpError;
use crate::state::DEFAULT_ACCOUNT;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    Account(String),
}

impl Principal {
    /// Whether the caller may see and change what `account` owns.
    pub fn sees(&self, account: &str) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Account(a) => a == account,
        }
    }

    /// Only the operator may do this.
    pub fn operator(&self) -> Result<(), HttpError> {
        match self {
            Principal::Operator => Ok(()),
            Principal::Account(_) => Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this needs the operator's token",
            )),
        }
    }

    /// The account a new worker (or namespace) of this caller goes to:
    /// an account's own; for the operator, `requested` or the default one.
    pub fn account_for(&self, requested: Option<&str>) -> Result<String, HttpError> {
        match (self, requested) {
            (Principal::Operator, Some(a)) => Ok(a.to_owned()),
            (Principal::Operator, None) => Ok(DEFAULT_ACCOUNT.to_owned()),
            (Principal::Account(a), None) => Ok(a.clone()),
            (Principal::Account(a), Some(r)) if r == a => Ok(a.clone()),
            (Principal::Account(_), Some(_)) => Err(HttpError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "an account token acts for its own account only",
            )),
        }
    }
}

fn unauthorized(message: &str) -> HttpError {
    HttpError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Who sent `req`; an error if nobody the node knows.
pub fn authenticate(req: &HttpRequest, plane: &ControlPlane) -> Result<Principal, HttpError> {
    let Some(operator) = &plane.token else {
        dev_guard(req)?;
        return Ok(Principal::Operator);
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let Some(given) = given else {
        return Err(unauthorized(
            "the control plane needs 'Authorization: Bearer <token>'",
        ));
    };
    if constant_time_eq(given.as_bytes(), operator.as_bytes()) {
        return Ok(Principal::Operator);
    }
    match plane.store.token_account(given) {
        Ok(Some(account)) => Ok(Principal::Account(account)),
        Ok(None) => Err(unauthorized("invalid bearer token")),
        Err(e) => Err(e.into()),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Whether `host` (a `Host` header, with or without a port) names this
/// machine's loopback interface.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// `edged dev`'s guard against web pages (DNS rebinding, cross-site requests).
fn dev_guard(req: &HttpRequest) -> Result<(), HttpError> {
    let forbidden = |m: &str| HttpError::new(StatusCode::FORBIDDEN, "forbidden", m);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let own = req.app_config().local_addr();
    let own_address = own.ip().to_string();
    let host_name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    if !(loopback_host(host)
        || host_name == own_address
        || host_name.trim_matches(['[', ']']) == own_address)
    {
        return Err(forbidden(
            "edged dev's control plane answers only requests for its own loopback address (Host header)",
        ));
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        if !same {
            return Err(forbidden(
                "edged dev's control plane does not answer requests from web pages of other origins",
            ));
        }
    }
    if req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site" || v == "same-site")
    {
        return Err(forbidden(
            "edged dev's control plane does not answer cross-site browser requests",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8081",
            "127.0.0.1:9",
            "[::1]:8081",
            "a.localhost",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "evil.com",
            "evil.com:8081",
            "10.0.0.1",
            "localhost.evil.com",
            "127.0.0.1.nip.io",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn principals() {
        let shop = Principal::Account("shop".into());
        assert!(shop.sees("shop") && !shop.sees("other"));
        assert!(shop.operator().is_err());
        assert!(shop.account_for(Some("other")).is_err());
        assert_eq!(
            Principal::Operator.account_for(None).unwrap(),
            DEFAULT_ACCOUNT
        );
    }
}
