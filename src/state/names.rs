//! Names are never paths: every name that can reach the file system is checked
//! here, where it enters, and every path under the data directory is built
//! here from checked parts.
//!
//! A tenant chooses worker names, Durable Object class names, KV namespace
//! names and object names; none of them is used as a path as given. Worker
//! names do not appear on disk at all: a worker's Durable Object storage lives
//! under its *storage id*, a random id the node assigns when the name is first
//! deployed and forgets when the worker is deleted, so a later worker of the
//! same name (in any account) starts empty. Class names must be JavaScript
//! identifiers, namespace names a short safe alphabet, object ids 64 hex
//! digits; and every path built is checked to stay under its root.

use std::path::{Path, PathBuf};

/// A name refused at the door, with the reason in the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

fn err(msg: String) -> Result<(), NameError> {
    Err(NameError(msg))
}

/// Worker and account names: `[a-z0-9-]{1,63}`, not starting or ending with `-`.
pub fn check_worker(name: &str) -> Result<(), NameError> {
    check_slug("worker", name)
}

pub fn check_account(name: &str) -> Result<(), NameError> {
    check_slug("account", name)
}

fn check_slug(what: &str, name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        err(format!(
            "{what} name '{}' must be 1-63 characters of a-z, 0-9 and '-' (not at either end)",
            printable(name)
        ))
    }
}

/// Durable Object class names: JavaScript identifiers of at most 128 ASCII
/// characters (they name the class the main module exports).
pub fn check_class(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    let ok = name.len() <= 128
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ok {
        Ok(())
    } else {
        err(format!(
            "Durable Object class name '{}' must be a JavaScript identifier (letters, digits, '_' and '$', not starting with a digit), at most 128 characters",
            printable(name)
        ))
    }
}

/// KV namespace names: `[A-Za-z0-9_-]{1,64}`.
pub fn check_namespace(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        err(format!(
            "KV namespace '{}' must be 1-64 of A-Z, a-z, 0-9, '_' and '-'",
            printable(name)
        ))
    }
}

/// Storage ids and object ids: lowercase hex of a fixed length.
fn check_hex(what: &str, name: &str, len: usize) -> Result<(), NameError> {
    if name.len() == len
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        err(format!("{what} must be {len} lowercase hex digits"))
    }
}

pub fn check_object_id(id: &str) -> Result<(), NameError> {
    check_hex("a Durable Object id", id, 64)
}

pub fn check_storage_id(id: &str) -> Result<(), NameError> {
    check_hex("a storage id", id, 32)
}

/// A fresh storage id: 128 random bits, never reused.
pub fn new_storage_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A name as it may appear in an error message: control characters escaped,
/// cut at 80 characters.
pub fn printable(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(80)
        .flat_map(char::escape_default)
        .collect();
    if name.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// `path` if it lies under `root` (both as given: no `..`, no symlink games in
/// what this module builds, but checked all the same).
fn under(root: &Path, path: PathBuf) -> Result<PathBuf, NameError> {
    use std::path::Component;
    let escapes = path
        .strip_prefix(root)
        .map(|rest| {
            rest.components()
                .any(|c| !matches!(c, Component::Normal(_)))
        })
        .unwrap_or(true);
    if escapes {
        return Err(NameError(
            "a storage path would leave the data directory".into(),
        ));
    }
    Ok(path)
}

/// `<data_dir>/do`: every Durable Object database and the alarm index.
pub fn objects_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("do")
}

/// `<data_dir>/do/<storage id>`: one worker's Durable Object storage.
pub fn worker_objects_dir(data_dir: &Path, storage: &str) -> Result<PathBuf, NameError> {
    check_storage_id(storage)?;
    under(data_dir, objects_dir(data_dir).join(storage))
}

/// `<data_dir>/do/<storage id>/<class>/<id>.db`: one object's database.
pub fn object_db(
    data_dir: &Path,
    storage: &str,
    class: &str,
    id: &str,
) -> Result<PathBuf, NameError> {
    check_class(class)?;
    check_object_id(id)?;
    let dir = worker_objects_dir(data_dir, storage)?;
    under(data_dir, dir.join(class).join(format!("{id}.db")))
}

/// `<data_dir>/kv/<namespace>.db`.
pub fn kv_db(data_dir: &Path, namespace: &str) -> Result<PathBuf, NameError> {
    check_namespace(namespace)?;
    under(
        data_dir,
        data_dir.join("kv").join(format!("{namespace}.db")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "",
        ".",
        "..",
        "../..",
        "../../../etc",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "a\0b",
        "C:\\x",
        "é",
        "\u{202e}gnp.exe",
        "a b",
        "a\nb",
    ];

    #[test]
    fn hostile_names_are_refused_everywhere() {
        let long = "a".repeat(300);
        for name in HOSTILE.iter().copied().chain([long.as_str()]) {
            assert!(check_worker(name).is_err(), "worker {name:?}");
            assert!(check_account(name).is_err(), "account {name:?}");
            assert!(check_namespace(name).is_err(), "ns {name:?}");
            assert!(check_class(name).is_err(), "class {name:?}");
            assert!(check_object_id(name).is_err(), "id {name:?}");
            assert!(check_storage_id(name).is_err(), "storage {name:?}");
        }
        assert!(check_worker("-x").is_err() && check_worker("x-").is_err());
        assert!(check_worker("api-2").is_ok() && check_class("$Room_2").is_ok());
        let root = Path::new("/data");
        let s = new_storage_id();
        assert!(object_db(root, &s, "Room", &"a".repeat(64)).is_ok());
        assert!(object_db(root, &s, "../x", &"a".repeat(64)).is_err());
        assert!(object_db(root, "..", "Room", &"a".repeat(64)).is_err());
        assert!(object_db(root, &s, "Room", "../../etc/passwd").is_err());
        assert!(kv_db(root, "../x").is_err());
        assert!(kv_db(root, "ok-ns_1").is_ok());
        assert!(under(root, PathBuf::from("/data/do/../x")).is_err());
        assert!(under(root, PathBuf::from("/elsewhere/x")).is_err());
    }

    #[test]
    fn printable_names_cannot_break_messages() {
        assert_eq!(printable("a\nb"), "a\\nb");
        assert!(printable(&"x".repeat(200)).ends_with('…'));
    }
}
