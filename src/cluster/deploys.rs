//! Deployments everywhere: what the engine holds for each worker, and the
//! bundles it points to.
//!
//! A deploy, rollback or delete on any node's control plane becomes one
//! [`DeployRecord`] under the worker's key in `edged_deploys`, written with
//! compare-and-set on the revision read first, so two concurrent deploys of
//! one worker cannot both win and every node sees the same version numbers.
//! The version's [`Bundle`] (script, routes, hosts) goes to the object store
//! first, under the SHA-256 of its sealed bytes; it is sealed (AES-256-GCM,
//! key derived from the cluster secret) because it carries the worker's
//! secrets. Every node watches the bucket and applies the latest record of each
//! worker to its own registry and `deployments.db` (`actors/deploy_sync.rs`),
//! so a node restarts and serves its deployments while the core is down.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::js::WorkerScript;
use crate::state::secrets::NodeKey;

/// Bundles are at most this size.
pub const MAX_BUNDLE: usize = 64 << 20;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DeployOp {
    /// `version` (in `bundle`) is the live one.
    Deploy,
    /// The worker was deleted (its storage too unless `keep_storage`).
    Delete,
}

/// A worker's current state in the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeployRecord {
    pub op: DeployOp,
    pub version: u64,
    pub storage: String,
    pub account: String,
    /// SHA-256 (hex) of the sealed bundle; empty for a delete.
    #[serde(default)]
    pub bundle: String,
    #[serde(default)]
    pub keep_storage: bool,
    /// The node whose control plane made the change.
    pub origin: String,
    /// The highest version number ever given to the worker: after a rollback
    /// the next deploy still gets a new number.
    #[serde(default)]
    pub max_version: u64,
}

impl DeployRecord {
    /// The number the worker's next new version gets.
    pub fn next_version(&self) -> u64 {
        self.version.max(self.max_version) + 1
    }

    pub fn to_bytes(&self) -> Bytes {
        serde_json::to_vec(self).unwrap_or_default().into()
    }
    pub fn parse(bytes: &[u8]) -> Result<DeployRecord, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("malformed deployment record: {e}"))
    }
}

/// One version as every node needs it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub script: WorkerScript,
    pub routes: Vec<String>,
    pub hosts: Vec<String>,
}

/// Seals a bundle: its name (hex SHA-256 of the sealed bytes) and the bytes.
pub fn seal(key: &NodeKey, bundle: &Bundle) -> Result<(String, Bytes), String> {
    let json = serde_json::to_string(bundle).map_err(|e| e.to_string())?;
    let sealed = key.seal(&json).map_err(|e| e.to_string())?;
    let name = hex::encode(Sha256::digest(sealed.as_bytes()));
    Ok((name, Bytes::from(sealed)))
}

/// Opens a sealed bundle, checking it is the one named.
pub fn open(key: &NodeKey, name: &str, sealed: &[u8]) -> Result<Bundle, String> {
    if hex::encode(Sha256::digest(sealed)) != name {
        return Err(format!("bundle {name} does not match its digest"));
    }
    let text = std::str::from_utf8(sealed).map_err(|_| format!("bundle {name} is not text"))?;
    let json = key.open(text).map_err(|_| {
        format!("bundle {name} cannot be opened: is the cluster secret the same on every node?")
    })?;
    serde_json::from_str(&json).map_err(|e| format!("malformed bundle {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_open_only_with_the_same_secret_and_digest() {
        let key = NodeKey::derived("a-long-cluster-secret", "bundles");
        let bundle = Bundle {
            script: WorkerScript {
                name: "w".into(),
                version: 3,
                main_module: "m.js".into(),
                modules: [("m.js".to_owned(), "export default {}".into())].into(),
                bindings: Vec::new(),
                compatibility_date: None,
                compatibility_flags: Vec::new(),
                deployed_at_ms: 0,
                assets: None,
                crons: Vec::new(),
                account: "a".into(),
                storage: "s".into(),
            },
            routes: vec!["x.example/*".into()],
            hosts: vec!["x.example".into()],
        };
        let (name, sealed) = seal(&key, &bundle).expect("seals");
        assert_eq!(open(&key, &name, &sealed).expect("opens"), bundle);
        let other = NodeKey::derived("another-cluster-secret", "bundles");
        assert!(open(&other, &name, &sealed).is_err());
        let mut tampered = sealed.to_vec();
        tampered[20] ^= 1;
        assert!(open(&key, &name, &tampered).is_err());
        assert!(DeployRecord::parse(b"{\"op\":\"nuke\"}").is_err());
    }
}
