//! Static asset blobs across the cluster.
//!
//! A PoP keeps an account's blobs on its own disk (`state::assets`), content
//! addressed; in a cluster the engine keeps them too (object store
//! `edged_assets`, `<account>/<sha256>`). An upload goes to the engine as
//! well as to the PoP that took it; a deploy makes sure the engine has every
//! blob its manifest names (pushing from the deploying PoP's disk what it
//! lacks, e.g. blobs uploaded before the node joined a cluster) before the
//! deployment record exists; every PoP that applies the record fetches what
//! its disk lacks before the version goes live there. A fetched blob is
//! stored only if it hashes to its name (`AssetStore::put`), so the engine
//! cannot hand a PoP anything but the content the manifest names.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use super::engine::EngineError;
use super::Cluster;
use crate::state::assets::{AssetStore, MAX_FILE_BYTES};

/// Blobs moved to or from the engine at once.
const PARALLEL: usize = 8;
/// Blobs this node knows the engine holds, before it forgets them all.
const KNOWN_CAP: usize = 1_000_000;

fn failed(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unreachable(e.to_string())
}

impl Cluster {
    /// This node's blob store (set once at start).
    pub fn set_asset_store(&self, store: Arc<AssetStore>) {
        *self.inner.asset_store.write() = Some(store);
    }

    fn asset_store(&self) -> Result<Arc<AssetStore>, EngineError> {
        self.inner
            .asset_store
            .read()
            .clone()
            .ok_or_else(|| failed("the asset store is not ready"))
    }

    fn known(&self, account: &str, hash: &str) -> bool {
        self.inner
            .assets_known
            .lock()
            .contains(&format!("{account}/{hash}"))
    }

    fn remember(&self, account: &str, hash: &str) {
        let mut known = self.inner.assets_known.lock();
        if known.len() >= KNOWN_CAP {
            known.clear();
        }
        known.insert(format!("{account}/{hash}"));
    }

    /// An uploaded blob (already checked and stored here) goes to the engine.
    pub async fn put_asset(
        &self,
        account: &str,
        hash: &str,
        data: Bytes,
    ) -> Result<(), EngineError> {
        let buckets = self.buckets()?;
        let (a, h) = (account.to_owned(), hash.to_owned());
        self.run(async move { buckets.put_asset(&a, &h, data).await })
            .await
            .map_err(failed)??;
        self.remember(account, hash);
        Ok(())
    }

    /// Makes sure the engine holds each of `hashes` for `account`, pushing
    /// from this node's disk what it lacks (a deploy, before its record).
    pub async fn replicate_assets(
        &self,
        account: &str,
        hashes: Vec<String>,
    ) -> Result<(), EngineError> {
        let store = self.asset_store()?;
        let todo: Vec<String> = unique(hashes)
            .into_iter()
            .filter(|h| !self.known(account, h))
            .collect();
        in_parallel(todo, |hash| {
            let (this, store, account) = (self.clone(), store.clone(), account.to_owned());
            async move {
                let buckets = this.buckets()?;
                let (a, h) = (account.clone(), hash.clone());
                let present = this
                    .run(async move { buckets.has_asset(&a, &h).await })
                    .await
                    .map_err(failed)??;
                if present {
                    this.remember(&account, &hash);
                    return Ok(());
                }
                let (s, a, h) = (store.clone(), account.clone(), hash.clone());
                let data = tokio::task::spawn_blocking(move || s.read(&a, &h))
                    .await
                    .map_err(failed)?
                    .map_err(|e| failed(format!("asset {hash}: {e}")))?;
                this.put_asset(&account, &hash, Bytes::from(data)).await
            }
        })
        .await
    }

    /// Fetches from the engine each of `hashes` this node's disk lacks for
    /// `account` (a deployment applied here).
    pub async fn fetch_assets(
        &self,
        account: &str,
        hashes: Vec<String>,
    ) -> Result<(), EngineError> {
        let store = self.asset_store()?;
        let todo: Vec<String> = unique(hashes)
            .into_iter()
            .filter(|h| !store.has(account, h))
            .collect();
        in_parallel(todo, |hash| {
            let (this, store, account) = (self.clone(), store.clone(), account.to_owned());
            async move {
                let buckets = this.buckets()?;
                let (a, h) = (account.clone(), hash.clone());
                let data = this
                    .run(async move { buckets.asset(&a, &h, MAX_FILE_BYTES as usize).await })
                    .await
                    .map_err(failed)??;
                tokio::task::spawn_blocking(move || store.put(&account, &hash, &data))
                    .await
                    .map_err(failed)?
                    .map_err(failed)
            }
        })
        .await
    }

    /// An account was removed: its blobs leave the engine (best effort).
    pub fn forget_assets(&self, account: &str) {
        let Ok(buckets) = self.buckets() else {
            return;
        };
        let prefix = format!("{account}/");
        self.inner
            .assets_known
            .lock()
            .retain(|k| !k.starts_with(&prefix));
        let account = account.to_owned();
        self.inner.handle.spawn(async move {
            if let Err(e) = buckets.purge_assets(&account).await {
                tracing::warn!(account = %account, error = %e, "cannot remove a removed account's assets from the engine");
            }
        });
    }
}

/// Runs `f` on each blob, [`PARALLEL`] at a time; the first error, if any.
async fn in_parallel<F, Fut>(todo: Vec<String>, f: F) -> Result<(), EngineError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), EngineError>>,
{
    futures::stream::iter(todo)
        .map(f)
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn unique(hashes: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    hashes
        .into_iter()
        .filter(|h| seen.insert(h.clone()))
        .collect()
}
