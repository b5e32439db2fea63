//! Accounts and tokens everywhere (`cluster::accounts`): every PoP applies
//! the engine's account and token records to its own store, where
//! authentication finds them.
//!
//! Applying is idempotent (an account or token already here is kept, a
//! removed one already gone is nothing), so the watch is simply made again
//! when it ends or stalls. When the watch is first made, what this PoP holds
//! that the engine has never seen (made before it joined a cluster) is
//! published, and what the engine deleted while this PoP was away is removed
//! here by the deletion markers the watch delivers.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use futures::StreamExt;

use super::registry::{DeleteAccount, WorkerRegistry};
use super::ActorError;
use crate::cluster::accounts::{AccountChange, TokenRecord};
use crate::cluster::engine::Presence;
use crate::cluster::Cluster;
use crate::state::{DeploymentStore, TokenInfo, DEFAULT_ACCOUNT};

/// Applies the engine's account and token records here for as long as the
/// node runs.
pub fn spawn_watcher(
    cluster: Cluster,
    registry: Addr<WorkerRegistry>,
    store: Arc<DeploymentStore>,
) {
    actix::spawn(async move {
        let mut published = false;
        // The revision applied per key: a watch made again replays the
        // latest of every key, which needs no second application.
        let mut applied: std::collections::HashMap<String, u64> = Default::default();
        loop {
            let watch = match cluster.buckets() {
                Ok(b) => cluster.run(async move { b.watch_accounts().await }).await,
                Err(e) => Ok(Err(e)),
            };
            let mut changes = match watch {
                Ok(Ok(c)) => c,
                _ => {
                    actix::clock::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if !published {
                published = publish_local(&cluster, &store).await;
            }
            // Made again every 30 s, as the deployments' watch is (a watch
            // can stall when the core server holding its consumer goes).
            let made = std::time::Instant::now();
            while made.elapsed() < Duration::from_secs(30) {
                match tokio::time::timeout(Duration::from_secs(1), changes.next()).await {
                    Ok(Some(change)) => {
                        if applied
                            .get(&change.key)
                            .is_some_and(|r| *r >= change.revision)
                        {
                            continue;
                        }
                        applied.insert(change.key.clone(), change.revision);
                        match AccountChange::parse(&change.key, change.value.as_deref()) {
                            Ok(c) => apply(&cluster, &registry, &store, c).await,
                            Err(e) => tracing::error!(error = %e, "ignoring an account record"),
                        }
                    }
                    Ok(None) => break,
                    Err(_) if !published => published = publish_local(&cluster, &store).await,
                    Err(_) => {}
                }
            }
        }
    });
}

async fn apply(
    cluster: &Cluster,
    registry: &Addr<WorkerRegistry>,
    store: &Arc<DeploymentStore>,
    change: AccountChange,
) {
    let result = match change {
        AccountChange::Account(id, Some(r)) => store.put_account(&id, r.created_at),
        AccountChange::Account(id, None) => {
            if id == DEFAULT_ACCOUNT {
                return;
            }
            cluster.forget_account(&id);
            match registry.send(DeleteAccount { id: id.clone() }).await {
                Ok(Ok(removal)) => {
                    tracing::info!(account = %id, workers = removal.workers.len(), "account removed (from another PoP)");
                    Ok(())
                }
                Ok(Err(ActorError::Store(crate::state::StateError::NotFound(_)))) => Ok(()),
                Ok(Err(e)) => {
                    tracing::error!(account = %id, error = %e, "cannot remove an account here");
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(account = %id, error = %e, "cannot remove an account here");
                    Ok(())
                }
            }
        }
        // A token of an account this PoP does not know is not taken: its
        // account was removed (the engine deletes it right after), and
        // taking it would revive the account.
        AccountChange::Token(id, Some(r)) if !store.account_exists(&r.account).unwrap_or(false) => {
            tracing::warn!(token = %id, account = %r.account, "ignoring a token of an unknown account");
            Ok(())
        }
        AccountChange::Token(id, Some(r)) => store.put_token(
            &TokenInfo {
                id,
                account: r.account,
                label: r.label,
                created_at: r.created_at,
            },
            &r.hash,
        ),
        AccountChange::Token(id, None) => store.revoke_token(&id).map(|_| ()),
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot apply an account record here");
    }
}

/// Publishes the accounts and tokens this PoP holds that the engine has
/// never seen; `true` once done.
async fn publish_local(cluster: &Cluster, store: &Arc<DeploymentStore>) -> bool {
    let (Ok(accounts), Ok(tokens)) = (store.accounts(), store.token_digests()) else {
        return false;
    };
    // Only what is this PoP's alone: an account the engine has never seen,
    // and that account's tokens. A name the engine knows (live, or removed)
    // is another tenant's or gone, never merged with this one.
    let mut mine = std::collections::HashSet::new();
    for account in accounts.iter().filter(|a| a.id != DEFAULT_ACCOUNT) {
        match cluster.account_presence(&format!("a.{}", account.id)).await {
            Ok(Presence::Never) => {
                mine.insert(account.id.clone());
                if let Err(e) = cluster
                    .create_account(&account.id, account.created_at)
                    .await
                {
                    if e != crate::cluster::engine::EngineError::Conflict {
                        return false;
                    }
                }
                tracing::info!(account = %account.id, "published an account made before the cluster");
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    for (info, hash) in tokens {
        if !mine.contains(&info.account) && info.account != DEFAULT_ACCOUNT {
            continue;
        }
        match cluster.account_presence(&format!("t.{}", info.id)).await {
            Ok(Presence::Never) => {
                let record = TokenRecord {
                    account: info.account.clone(),
                    hash,
                    label: info.label.clone(),
                    created_at: info.created_at,
                };
                if let Err(e) = cluster.create_token(&info.id, &record).await {
                    if e != crate::cluster::engine::EngineError::Conflict {
                        return false;
                    }
                }
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    true
}
