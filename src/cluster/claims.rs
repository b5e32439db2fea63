//! Ownership of names across PoPs: which account owns a KV namespace and
//! each route host pattern, decided once for the whole cluster.
//!
//! Each PoP also keeps these claims in its own store (`state::accounts`), but a
//! PoP's store only learns another PoP's claims when a deployment that makes
//! them is applied there — too late for a second account deploying on a second
//! PoP at the same moment, and never for a namespace claimed only through the
//! KV API. KV data is on every PoP, so a namespace's owner must be known
//! everywhere. The engine's `edged_claims` bucket is the one answer:
//! namespaces with create-if-absent, host patterns as one map updated with
//! compare-and-set (an overlap check must see every pattern). A claim is
//! checked here first, then locally as before.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::engine::EngineError;
use super::Cluster;
use crate::state::hosts::canonical_overlap;

/// Why a claim was not made.
#[derive(Debug)]
pub enum ClaimError {
    /// Another account owns it (the message says what).
    Forbidden(String),
    /// The engine cannot be reached: nothing was claimed.
    Unavailable(String),
}

impl Cluster {
    /// Claims `hosts` (canonical patterns) and KV `namespaces` for `account`
    /// cluster-wide, or says which one another account owns.
    pub async fn claim(
        &self,
        account: &str,
        hosts: &[String],
        namespaces: &[String],
    ) -> Result<(), ClaimError> {
        let namespaces: Vec<String> = {
            let known = self.inner.namespaces.lock();
            namespaces
                .iter()
                .filter(|ns| known.get(*ns).map(String::as_str) != Some(account))
                .cloned()
                .collect()
        };
        if namespaces.is_empty() && hosts.is_empty() {
            return Ok(());
        }
        let buckets = self
            .buckets()
            .map_err(|e| ClaimError::Unavailable(e.to_string()))?;
        let (account, hosts) = (account.to_owned(), hosts.to_vec());
        let this = self.clone();
        self.run(async move {
            for ns in &namespaces {
                let owner = buckets
                    .namespace_claim(ns, Some(&account))
                    .await
                    .map_err(|e| ClaimError::Unavailable(e.to_string()))?;
                if let Some(o) = &owner {
                    this.inner.namespaces.lock().insert(ns.clone(), o.clone());
                }
                if owner.as_deref() != Some(account.as_str()) {
                    return Err(ClaimError::Forbidden(format!(
                        "the KV namespace '{ns}' belongs to another account"
                    )));
                }
            }
            if hosts.is_empty() {
                return Ok(());
            }
            for _ in 0..10 {
                let (value, revision) = buckets
                    .host_claims()
                    .await
                    .map_err(|e| ClaimError::Unavailable(e.to_string()))?;
                // Never rewrite a map this node cannot read: that would
                // erase every account's hosts.
                let mut claims: BTreeMap<String, String> = serde_json::from_slice(&value)
                    .map_err(|e| {
                        ClaimError::Unavailable(format!("the cluster's host claims are unreadable: {e}"))
                    })?;
                for host in &hosts {
                    if let Some((pattern, _)) = claims
                        .iter()
                        .find(|(p, owner)| **owner != account && canonical_overlap(p, host))
                    {
                        return Err(ClaimError::Forbidden(format!(
                            "the host '{host}' overlaps '{pattern}', which belongs to another account"
                        )));
                    }
                }
                let before = claims.len();
                for host in &hosts {
                    claims.entry(host.clone()).or_insert_with(|| account.clone());
                }
                if claims.len() == before {
                    return Ok(());
                }
                let value = Bytes::from(serde_json::to_vec(&claims).unwrap_or_default());
                match buckets.set_host_claims(value, revision).await {
                    Ok(()) => return Ok(()),
                    Err(EngineError::Conflict) => continue,
                    Err(e) => return Err(ClaimError::Unavailable(e.to_string())),
                }
            }
            Err(ClaimError::Unavailable(
                "the host claims keep changing; try again".into(),
            ))
        })
        .await
        .map_err(ClaimError::Unavailable)?
    }

    /// The account that owns KV namespace `ns` in the cluster, if any;
    /// answered from memory once the engine has named it (claims are never
    /// released), so reads keep working while the core is down.
    pub async fn namespace_owner(&self, ns: &str) -> Result<Option<String>, ClaimError> {
        if let Some(o) = self.inner.namespaces.lock().get(ns) {
            return Ok(Some(o.clone()));
        }
        let buckets = self
            .buckets()
            .map_err(|e| ClaimError::Unavailable(e.to_string()))?;
        let key = ns.to_owned();
        let owner = self
            .run(async move { buckets.namespace_claim(&key, None).await })
            .await
            .map_err(ClaimError::Unavailable)?
            .map_err(|e| ClaimError::Unavailable(e.to_string()))?;
        if let Some(o) = &owner {
            self.inner
                .namespaces
                .lock()
                .insert(ns.to_owned(), o.clone());
        }
        Ok(owner)
    }
}
