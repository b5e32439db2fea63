//! Accounts, their tokens, and what they own.
//!
//! Every worker, KV namespace and route host belongs to one account. Within an
//! account, workers share namespaces and may call each other; across accounts
//! nothing is visible. Ownership is decided here, in the deployment store's
//! database, inside the same transaction that stores a deploy, so two accounts
//! racing for a name cannot both win:
//! - a worker name belongs to the account that deployed it (or that deleted it
//!   keeping its storage) until it is deleted;
//! - a KV namespace to the account that first bound or wrote it;
//! - a host pattern to the account that first routed it (or that an operator
//!   assigned it to); no other account may claim an overlapping pattern
//!   (`hosts.rs`).
//!
//! Tokens are stored as SHA-256 digests; the secret is shown once, at
//! creation. The operator's token (from the config) is not stored here.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::deployments::{now_secs, DeploymentStore, DEFAULT_ACCOUNT};
use super::error::StateError;
use super::hosts::canonical_overlap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Account {
    pub id: String,
    pub created_at: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenInfo {
    pub id: String,
    pub account: String,
    pub label: Option<String>,
    pub created_at: u64,
}

/// What an account owned, for the node to clean up after it is removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountRemoval {
    /// Workers (name, storage id) that were deleted with it.
    pub workers: Vec<(String, String)>,
    /// Storage ids kept for names it had deleted.
    pub retained: Vec<String>,
    /// KV namespaces it owned.
    pub namespaces: Vec<String>,
}

pub(crate) fn create_tables(conn: &Connection) -> Result<(), StateError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS accounts (
             id TEXT PRIMARY KEY,
             created_at INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS tokens (
             id TEXT PRIMARY KEY,
             account TEXT NOT NULL,
             hash TEXT NOT NULL UNIQUE,
             label TEXT,
             created_at INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS hosts (
             pattern TEXT PRIMARY KEY,
             account TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS kv_namespaces (
             name TEXT PRIMARY KEY,
             account TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS retained (
             name TEXT PRIMARY KEY,
             account TEXT NOT NULL,
             storage TEXT NOT NULL
         );",
    )?;
    conn.execute(
        "INSERT OR IGNORE INTO accounts (id, created_at) VALUES (?1, ?2)",
        params![DEFAULT_ACCOUNT, now_secs() as i64],
    )?;
    Ok(())
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Refuses a deploy of `name` by `account` when another account owns the name
/// (a live worker, or a deleted one whose storage it kept).
pub(crate) fn check_worker_name(
    tx: &Transaction<'_>,
    name: &str,
    account: &str,
) -> Result<(), StateError> {
    let owner: Option<String> = tx
        .query_row(
            "SELECT account FROM workers WHERE name = ?1
             UNION ALL SELECT account FROM retained WHERE name = ?1 LIMIT 1",
            params![name],
            |r| r.get(0),
        )
        .optional()?;
    match owner {
        Some(o) if o != account => Err(StateError::Forbidden(format!(
            "the worker name '{name}' is taken; choose another"
        ))),
        _ => Ok(()),
    }
}

/// Claims `hosts` (canonical host patterns) and KV `namespaces` for `account`
/// inside `tx`, refusing if another account owns any of them (for hosts: any
/// overlapping pattern).
pub(crate) fn claim_in(
    tx: &Transaction<'_>,
    account: &str,
    hosts: &[String],
    namespaces: &[String],
) -> Result<(), StateError> {
    if !hosts.is_empty() {
        let claimed: Vec<(String, String)> = {
            let mut stmt = tx.prepare("SELECT pattern, account FROM hosts")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for host in hosts {
            if let Some((pattern, _)) = claimed
                .iter()
                .find(|(p, owner)| owner != account && canonical_overlap(p, host))
            {
                return Err(StateError::Forbidden(format!(
                    "the host '{host}' overlaps '{pattern}', which belongs to another account"
                )));
            }
        }
        for host in hosts {
            tx.execute(
                "INSERT OR IGNORE INTO hosts (pattern, account) VALUES (?1, ?2)",
                params![host, account],
            )?;
        }
    }
    for ns in namespaces {
        let owner: Option<String> = tx
            .query_row(
                "SELECT account FROM kv_namespaces WHERE name = ?1",
                params![ns],
                |r| r.get(0),
            )
            .optional()?;
        match owner {
            Some(o) if o != account => {
                return Err(StateError::Forbidden(format!(
                    "the KV namespace '{ns}' belongs to another account"
                )))
            }
            Some(_) => {}
            None => {
                tx.execute(
                    "INSERT INTO kv_namespaces (name, account) VALUES (?1, ?2)",
                    params![ns, account],
                )?;
            }
        }
    }
    Ok(())
}

impl DeploymentStore {
    /// [`claim_in`] in a transaction of its own.
    pub fn claim(
        &self,
        account: &str,
        hosts: &[String],
        namespaces: &[String],
    ) -> Result<(), StateError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        claim_in(&tx, account, hosts, namespaces)?;
        tx.commit()?;
        Ok(())
    }

    pub fn create_account(&self, id: &str) -> Result<Account, StateError> {
        super::names::check_account(id).map_err(|e| StateError::Invalid(e.0))?;
        let created_at = now_secs();
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO accounts (id, created_at) VALUES (?1, ?2)",
            params![id, created_at as i64],
        )?;
        if n == 0 {
            return Err(StateError::Conflict(format!(
                "account '{id}' exists already"
            )));
        }
        Ok(Account {
            id: id.to_owned(),
            created_at,
        })
    }

    pub fn accounts(&self) -> Result<Vec<Account>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, created_at FROM accounts ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(Account {
                id: r.get(0)?,
                created_at: r.get::<_, i64>(1)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn account_exists(&self, id: &str) -> Result<bool, StateError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM accounts WHERE id = ?1", params![id], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    /// Removes an account with its tokens, workers, hosts and namespaces.
    pub fn delete_account(&self, id: &str) -> Result<AccountRemoval, StateError> {
        if id == DEFAULT_ACCOUNT {
            return Err(StateError::Forbidden(
                "the default account cannot be removed".into(),
            ));
        }
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM accounts WHERE id = ?1", params![id])?;
        if n == 0 {
            return Err(StateError::NotFound(format!("account '{id}'")));
        }
        let collect = |sql: &str| -> Result<Vec<(String, String)>, StateError> {
            let mut stmt = tx.prepare(sql)?;
            let rows = stmt.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        };
        let workers = collect("SELECT name, storage FROM workers WHERE account = ?1")?;
        let retained = collect("SELECT name, storage FROM retained WHERE account = ?1")?;
        let namespaces = collect("SELECT name, account FROM kv_namespaces WHERE account = ?1")?;
        for (name, _) in &workers {
            tx.execute("DELETE FROM versions WHERE name = ?1", params![name])?;
        }
        for table in ["workers", "retained", "tokens", "hosts", "kv_namespaces"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE account = ?1"),
                params![id],
            )?;
        }
        tx.commit()?;
        Ok(AccountRemoval {
            workers,
            retained: retained.into_iter().map(|(_, s)| s).collect(),
            namespaces: namespaces.into_iter().map(|(n, _)| n).collect(),
        })
    }

    /// A new token for `account`: its id and the secret (shown only now).
    pub fn create_token(
        &self,
        account: &str,
        label: Option<&str>,
    ) -> Result<(TokenInfo, String), StateError> {
        let (info, secret, hash) = self.new_token(account, label)?;
        self.put_token(&info, &hash)?;
        Ok((info, secret))
    }

    /// A token for `account` that is not stored yet: its info, its secret
    /// and the digest to store.
    pub fn new_token(
        &self,
        account: &str,
        label: Option<&str>,
    ) -> Result<(TokenInfo, String, String), StateError> {
        if !self.account_exists(account)? {
            return Err(StateError::NotFound(format!("account '{account}'")));
        }
        let id = format!("tok_{}", hex::encode(rand::random::<[u8; 6]>()));
        let secret = format!("edg_{}", hex::encode(rand::random::<[u8; 24]>()));
        let hash = digest(&secret);
        let info = TokenInfo {
            id,
            account: account.to_owned(),
            label: label.map(str::to_owned),
            created_at: now_secs(),
        };
        Ok((info, secret, hash))
    }

    /// Stores a token by its digest (made here, or replicated from another
    /// PoP); its account is recorded too if this PoP has not seen it yet.
    pub fn put_token(&self, info: &TokenInfo, hash: &str) -> Result<(), StateError> {
        super::names::check_account(&info.account).map_err(|e| StateError::Invalid(e.0))?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO accounts (id, created_at) VALUES (?1, ?2)",
            params![info.account, info.created_at as i64],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO tokens (id, account, hash, label, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                info.id,
                info.account,
                hash,
                info.label,
                info.created_at as i64
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records an account another PoP made (nothing if it is known here).
    pub fn put_account(&self, id: &str, created_at: u64) -> Result<(), StateError> {
        super::names::check_account(id).map_err(|e| StateError::Invalid(e.0))?;
        self.conn().execute(
            "INSERT OR IGNORE INTO accounts (id, created_at) VALUES (?1, ?2)",
            params![id, created_at as i64],
        )?;
        Ok(())
    }

    /// Every token with its digest (to publish what this PoP made before it
    /// joined a cluster).
    pub fn token_digests(&self) -> Result<Vec<(TokenInfo, String)>, StateError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, account, label, created_at, hash FROM tokens ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                TokenInfo {
                    id: r.get(0)?,
                    account: r.get(1)?,
                    label: r.get(2)?,
                    created_at: r.get::<_, i64>(3)? as u64,
                },
                r.get(4)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes a token; returns whether it existed.
    pub fn revoke_token(&self, id: &str) -> Result<bool, StateError> {
        Ok(self
            .conn()
            .execute("DELETE FROM tokens WHERE id = ?1", params![id])?
            > 0)
    }

    pub fn tokens(&self, account: Option<&str>) -> Result<Vec<TokenInfo>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, account, label, created_at FROM tokens
             WHERE ?1 IS NULL OR account = ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map(params![account], |r| {
            Ok(TokenInfo {
                id: r.get(0)?,
                account: r.get(1)?,
                label: r.get(2)?,
                created_at: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The account a token secret works for, if it is a live token.
    pub fn token_account(&self, secret: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT account FROM tokens WHERE hash = ?1",
                params![digest(secret)],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The host patterns accounts own.
    pub fn hosts(&self) -> Result<Vec<(String, String)>, StateError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT pattern, account FROM hosts ORDER BY pattern")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// An operator gives `pattern` to `account`, taking it (and any pattern it
    /// overlaps that another account holds without routing it) from others.
    pub fn assign_host(&self, pattern: &str, account: &str) -> Result<(), StateError> {
        if !self.account_exists(account)? {
            return Err(StateError::NotFound(format!("account '{account}'")));
        }
        self.conn().execute(
            "INSERT OR REPLACE INTO hosts (pattern, account) VALUES (?1, ?2)",
            params![pattern, account],
        )?;
        Ok(())
    }

    /// The account that owns a KV namespace, if any does.
    pub fn namespace_owner(&self, ns: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT account FROM kv_namespaces WHERE name = ?1",
                params![ns],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The account a worker name belongs to (live, or kept after a delete).
    /// The KV namespaces this PoP's store says `account` owns.
    pub fn namespaces_of(&self, account: &str) -> Result<Vec<String>, StateError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name FROM kv_namespaces WHERE account = ?1 ORDER BY name")?;
        let rows = stmt.query_map(params![account], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn worker_owner(&self, name: &str) -> Result<Option<String>, StateError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT account FROM workers WHERE name = ?1
                 UNION ALL SELECT account FROM retained WHERE name = ?1 LIMIT 1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The storage id a deploy of `name` by `account` uses: the live worker's,
    /// the one kept when the account deleted it, or a fresh one.
    pub fn storage_for(&self, name: &str, account: &str) -> Result<String, StateError> {
        let conn = self.conn();
        let found: Option<(String, String)> = conn
            .query_row(
                "SELECT account, storage FROM workers WHERE name = ?1
                 UNION ALL SELECT account, storage FROM retained WHERE name = ?1 LIMIT 1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match found {
            Some((owner, _)) if owner != account => Err(StateError::Forbidden(format!(
                "the worker name '{name}' is taken; choose another"
            ))),
            Some((_, storage)) if !storage.is_empty() => Ok(storage),
            _ => Ok(super::names::new_storage_id()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_tokens_and_claims() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeploymentStore::open(dir.path()).unwrap();
        store.create_account("shop").unwrap();
        store.create_account("mallory").unwrap();
        assert!(matches!(
            store.create_account("shop"),
            Err(StateError::Conflict(_))
        ));
        assert!(store.create_account("../x").is_err());
        let (info, secret) = store.create_token("shop", Some("ci")).unwrap();
        assert_eq!(
            store.token_account(&secret).unwrap().as_deref(),
            Some("shop")
        );
        assert_eq!(store.token_account("edg_nope").unwrap(), None);
        store
            .claim("shop", &["shop.example".into()], &["cart".into()])
            .unwrap();
        // Another account: no overlapping host, no namespace of the shop.
        assert!(matches!(
            store.claim("mallory", &["*example".into()], &[]),
            Err(StateError::Forbidden(_))
        ));
        assert!(matches!(
            store.claim("mallory", &["shop.example".into()], &[]),
            Err(StateError::Forbidden(_))
        ));
        assert!(matches!(
            store.claim("mallory", &[], &["cart".into()]),
            Err(StateError::Forbidden(_))
        ));
        store
            .claim("mallory", &["mallory.example".into()], &["loot".into()])
            .unwrap();
        // The same account may claim more under its own host.
        store
            .claim("shop", &["*.shop.example".into()], &["cart".into()])
            .unwrap();
        assert!(store.revoke_token(&info.id).unwrap());
        assert_eq!(store.token_account(&secret).unwrap(), None);
        let removal = store.delete_account("mallory").unwrap();
        assert_eq!(removal.namespaces, vec!["loot".to_owned()]);
        assert!(store.delete_account("default").is_err());
    }
}
