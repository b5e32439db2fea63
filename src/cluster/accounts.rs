//! Accounts and tokens everywhere: an account or token made on any PoP's
//! control plane works on every PoP.
//!
//! The engine's `edged_accounts` bucket holds one record per account
//! (`a.<id>`) and per token (`t.<id>`, with the SHA-256 digest of its secret,
//! never the secret). A change goes to the engine first (create-if-absent,
//! so two PoPs creating one account get one 201 and one 409), then to this
//! PoP's store; every PoP watches the bucket and applies each record to its
//! own store (`actors::account_sync`), where authentication looks tokens up —
//! so a token keeps working while the core is down, and a revoked one stops
//! everywhere within a watch's delay (milliseconds on loopback). Deletions
//! leave a marker in the engine, so a PoP that was away applies them on
//! return. While the core is down, these changes answer 503 and change nothing.
//!
//! Removing an account goes in this order: its record, then its tokens (no
//! PoP authenticates it from then on, and a token made meanwhile withdraws
//! itself when it sees the record gone); its workers with delete records
//! through `edged_deploys`; its KV data with a drop record per namespace
//! through the KV log (both applied by every PoP in order with the other
//! writes); last, its namespace claims and host patterns (`claims`), so the
//! names can be taken again only once the data under them is gone. A retry
//! finishes a removal the engine interrupted.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::engine::{EngineError, Presence};
use super::Cluster;

/// An account's record in the engine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccountRecord {
    pub created_at: u64,
}

/// A token's record in the engine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub account: String,
    /// SHA-256 (hex) of the secret.
    pub hash: String,
    #[serde(default)]
    pub label: Option<String>,
    pub created_at: u64,
}

/// One change of the accounts bucket, as the watcher applies it.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountChange {
    Account(String, Option<AccountRecord>),
    Token(String, Option<TokenRecord>),
}

impl AccountChange {
    /// Parses a change; `Err` names what is malformed.
    pub fn parse(key: &str, value: Option<&[u8]>) -> Result<AccountChange, String> {
        let bad = |e: serde_json::Error| format!("malformed record {key}: {e}");
        if let Some(id) = key.strip_prefix("a.") {
            crate::state::names::check_account(id).map_err(|e| e.0)?;
            let record = value.map(serde_json::from_slice).transpose().map_err(bad)?;
            return Ok(AccountChange::Account(id.to_owned(), record));
        }
        if let Some(id) = key.strip_prefix("t.") {
            let record: Option<TokenRecord> =
                value.map(serde_json::from_slice).transpose().map_err(bad)?;
            if let Some(r) = &record {
                crate::state::names::check_account(&r.account).map_err(|e| e.0)?;
            }
            return Ok(AccountChange::Token(id.to_owned(), record));
        }
        Err(format!("unknown key {key}"))
    }
}

fn json<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

impl Cluster {
    async fn accounts_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(
            super::engine::Buckets,
        ) -> futures::future::BoxFuture<'static, Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        let buckets = self.buckets()?;
        self.run(f(buckets))
            .await
            .map_err(EngineError::Unreachable)?
    }

    /// Records a new account; `Conflict` if it exists in the cluster.
    pub async fn create_account(&self, id: &str, created_at: u64) -> Result<(), EngineError> {
        let (key, value) = (format!("a.{id}"), json(&AccountRecord { created_at }));
        self.accounts_call(move |b| Box::pin(async move { b.account_create(&key, value).await }))
            .await
    }

    /// Records a new token.
    pub async fn create_token(&self, id: &str, record: &TokenRecord) -> Result<(), EngineError> {
        let (key, value) = (format!("t.{id}"), json(record));
        self.accounts_call(move |b| Box::pin(async move { b.account_create(&key, value).await }))
            .await
    }

    /// Revokes a token everywhere.
    pub async fn revoke_token(&self, id: &str) -> Result<(), EngineError> {
        let key = format!("t.{id}");
        self.accounts_call(move |b| Box::pin(async move { b.account_delete(&key).await }))
            .await
    }

    /// The cluster-wide KV namespaces `account` owns.
    pub async fn namespaces_of(&self, account: &str) -> Result<Vec<String>, EngineError> {
        let account = account.to_owned();
        self.accounts_call(move |b| Box::pin(async move { b.namespaces_of(&account).await }))
            .await
    }

    /// The workers that have a deployment record in the engine.
    pub async fn deployed_workers(&self) -> Result<Vec<String>, EngineError> {
        self.accounts_call(|b| Box::pin(async move { b.deployed_workers().await }))
            .await
    }

    /// Deletes an account's record, then every token of it (a token made
    /// meanwhile sees the record gone and withdraws itself).
    pub async fn retire_account(&self, id: &str) -> Result<(), EngineError> {
        let account = id.to_owned();
        self.accounts_call(move |b| {
            Box::pin(async move {
                b.account_delete(&format!("a.{account}")).await?;
                for key in b.account_keys().await? {
                    if !key.starts_with("t.") {
                        continue;
                    }
                    if let Presence::Live(v) = b.account_entry(&key).await? {
                        let owned = serde_json::from_slice::<TokenRecord>(&v)
                            .is_ok_and(|t| t.account == account);
                        if owned {
                            b.account_delete(&key).await?;
                        }
                    }
                }
                Ok(())
            })
        })
        .await?;
        self.forget_account(id);
        Ok(())
    }

    /// Releases a removed account's namespace and host claims (its data must
    /// be gone first: the names can then be taken by anyone).
    pub async fn release_claims(&self, id: &str) -> Result<(), EngineError> {
        let account = id.to_owned();
        self.accounts_call(move |b| {
            Box::pin(async move {
                for ns in b.namespaces_of(&account).await? {
                    b.namespace_release(&ns, &account).await?;
                }
                for _ in 0..10 {
                    let (value, revision) = b.host_claims().await?;
                    let Ok(mut claims) = serde_json::from_slice::<BTreeMap<String, String>>(&value)
                    else {
                        // Never rewrite a map this node cannot read.
                        return Err(EngineError::Unreachable(
                            "the cluster's host claims are unreadable".into(),
                        ));
                    };
                    let before = claims.len();
                    claims.retain(|_, owner| *owner != account);
                    if claims.len() == before {
                        return Ok(());
                    }
                    match b.set_host_claims(json(&claims), revision).await {
                        Ok(()) => return Ok(()),
                        Err(EngineError::Conflict) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(EngineError::Unreachable(
                    "the host claims keep changing; try again".into(),
                ))
            })
        })
        .await?;
        self.forget_account(id);
        Ok(())
    }

    /// Forgets the namespace owners cached for a removed account.
    pub fn forget_account(&self, id: &str) {
        self.inner.namespaces.lock().retain(|_, owner| owner != id);
    }

    /// What the engine holds for an account or token key.
    pub async fn account_presence(&self, key: &str) -> Result<Presence, EngineError> {
        let key = key.to_owned();
        self.accounts_call(move |b| Box::pin(async move { b.account_entry(&key).await }))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_changes_and_refuses_bad_ones() {
        assert_eq!(
            AccountChange::parse("a.acme", Some(br#"{"created_at":5}"#)).unwrap(),
            AccountChange::Account("acme".into(), Some(AccountRecord { created_at: 5 }))
        );
        assert_eq!(
            AccountChange::parse("a.acme", None).unwrap(),
            AccountChange::Account("acme".into(), None)
        );
        let t = br#"{"account":"acme","hash":"ab","label":null,"created_at":1}"#;
        assert!(matches!(
            AccountChange::parse("t.tok_1", Some(t)).unwrap(),
            AccountChange::Token(id, Some(r)) if id == "tok_1" && r.account == "acme"
        ));
        assert!(AccountChange::parse("a.../x", Some(b"{}")).is_err());
        assert!(AccountChange::parse("a.acme", Some(b"not json")).is_err());
        let evil = br#"{"account":"../x","hash":"ab","created_at":1}"#;
        assert!(AccountChange::parse("t.tok_2", Some(evil)).is_err());
        assert!(AccountChange::parse("z.q", None).is_err());
    }
}
