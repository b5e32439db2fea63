//! Secrets at rest: `secret_text` bindings are stored encrypted with the node's
//! key (AES-256-GCM, a fresh nonce per value), never in clear in
//! `deployments.db`.
//!
//! The key is 32 bytes: from `EDGED_NODE_KEY` (64 hex digits) when set, else
//! `<data_dir>/node.key` (created on first start, mode 0600). Losing the key
//! loses the secrets; a wrong key is a clear error at start, never a silent
//! empty secret.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;

use super::error::StateError;

const KEY_FILE: &str = "node.key";
const KEY_ENV: &str = "EDGED_NODE_KEY";

pub struct NodeKey {
    cipher: Aes256Gcm,
}

fn bad_key(why: impl std::fmt::Display) -> StateError {
    StateError::Secrets(format!("the node key is unusable: {why}"))
}

impl NodeKey {
    /// The node's key, made on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<NodeKey, StateError> {
        let hex_key = match std::env::var(KEY_ENV) {
            Ok(k) if !k.trim().is_empty() => k.trim().to_owned(),
            _ => {
                let path = data_dir.join(KEY_FILE);
                match std::fs::read_to_string(&path) {
                    Ok(k) => k.trim().to_owned(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let k = hex::encode(rand::random::<[u8; 32]>());
                        super::private_file::write(&path, k.as_bytes())
                            .map_err(|source| StateError::Io { path, source })?;
                        k
                    }
                    Err(source) => return Err(StateError::Io { path, source }),
                }
            }
        };
        let bytes = hex::decode(&hex_key).map_err(bad_key)?;
        if bytes.len() != 32 {
            return Err(bad_key(format!("{} bytes, not 32", bytes.len())));
        }
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(bad_key)?;
        Ok(NodeKey { cipher })
    }

    /// A key derived from a secret shared by several nodes, for one purpose
    /// (the cluster's deployment bundles).
    pub fn derived(secret: &str, purpose: &str) -> NodeKey {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"edged key\0");
        h.update(purpose.as_bytes());
        h.update([0u8]);
        h.update(secret.as_bytes());
        let key = h.finalize();
        NodeKey {
            cipher: Aes256Gcm::new(&key),
        }
    }

    /// `base64(nonce || ciphertext)`.
    pub fn seal(&self, plaintext: &str) -> Result<String, StateError> {
        let nonce_bytes = rand::random::<[u8; 12]>();
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce_bytes), plaintext.as_bytes())
            .map_err(|_| StateError::Secrets("cannot encrypt a secret".into()))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<String, StateError> {
        let wrong = || {
            StateError::Secrets(
                "a stored secret cannot be decrypted: the node key does not match the one it was stored with".into(),
            )
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| wrong())?;
        if bytes.len() < 12 {
            return Err(wrong());
        }
        let (nonce, ct) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| wrong())?;
        String::from_utf8(plain).map_err(|_| wrong())
    }
}

/// Seals every `secret_text` binding of a stored spec (JSON) in place:
/// `"text"` becomes `"sealed"`.
pub fn seal_spec(key: &NodeKey, spec: &mut serde_json::Value) -> Result<(), StateError> {
    for b in bindings_mut(spec) {
        if b.get("type").and_then(|t| t.as_str()) == Some("secret_text") {
            if let Some(serde_json::Value::String(text)) = b.get("text").cloned() {
                let sealed = key.seal(&text)?;
                if let Some(o) = b.as_object_mut() {
                    o.remove("text");
                    o.insert("sealed".into(), serde_json::Value::String(sealed));
                }
            }
        }
    }
    Ok(())
}

/// The inverse of [`seal_spec`]; a spec stored before secrets were sealed
/// (with `"text"`) is accepted as it is. Returns whether any was in clear.
pub fn open_spec(key: &NodeKey, spec: &mut serde_json::Value) -> Result<bool, StateError> {
    let mut clear = false;
    for b in bindings_mut(spec) {
        if b.get("type").and_then(|t| t.as_str()) != Some("secret_text") {
            continue;
        }
        if let Some(serde_json::Value::String(sealed)) = b.get("sealed").cloned() {
            let text = key.open(&sealed)?;
            if let Some(o) = b.as_object_mut() {
                o.remove("sealed");
                o.insert("text".into(), serde_json::Value::String(text));
            }
        } else if b.get("text").is_some() {
            clear = true;
        }
    }
    Ok(clear)
}

fn bindings_mut(spec: &mut serde_json::Value) -> impl Iterator<Item = &mut serde_json::Value> {
    spec.get_mut("script")
        .and_then(|s| s.get_mut("bindings"))
        .and_then(|b| b.as_array_mut())
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_a_wrong_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::load_or_create(dir.path()).unwrap();
        let mut spec = serde_json::json!({"script": {"bindings": [
            {"type": "secret_text", "name": "K", "text": "s3cr3t"},
            {"type": "plain_text", "name": "P", "text": "open"}
        ]}});
        seal_spec(&key, &mut spec).unwrap();
        let stored = spec.to_string();
        assert!(!stored.contains("s3cr3t") && stored.contains("open"));
        let mut back = spec.clone();
        assert!(!open_spec(&key, &mut back).unwrap());
        assert!(back.to_string().contains("s3cr3t"));
        // The same key comes back from the file.
        let again = NodeKey::load_or_create(dir.path()).unwrap();
        assert!(open_spec(&again, &mut spec.clone()).is_ok());
        let other = tempfile::tempdir().unwrap();
        let wrong = NodeKey::load_or_create(other.path()).unwrap();
        assert!(open_spec(&wrong, &mut spec).is_err());
    }
}
