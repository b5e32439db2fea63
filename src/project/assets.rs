//! A project's static assets directory as the deploy API takes it: every
//! file's URL path, SHA-256 and size (the manifest), and where each blob is
//! on disk for the upload. `.assetsignore` (wrangler's, one glob per line,
//! `#` comments) leaves files out.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sha2::Digest;

use super::ProjectError;
use crate::state::assets::{hex, MAX_FILES, MAX_FILE_BYTES};

/// The manifest, and the blobs by hash.
pub struct Collected {
    pub files: BTreeMap<String, Value>,
    pub blobs: BTreeMap<String, PathBuf>,
    pub warnings: Vec<String>,
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Walks `dir` into a manifest.
pub fn collect(dir: &Path) -> Result<Collected, ProjectError> {
    let ignore: Vec<String> = std::fs::read_to_string(dir.join(".assetsignore"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').to_owned())
        .collect();
    let ignored = |rel: &str| {
        ignore.iter().any(|g| {
            super::glob_matches(g, rel)
                || super::glob_matches(&format!("{}/**/*", g.trim_end_matches('/')), rel)
                || super::glob_matches(&format!("**/{g}"), rel)
        })
    };
    let mut out = Collected {
        files: BTreeMap::new(),
        blobs: BTreeMap::new(),
        warnings: Vec::new(),
    };
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d)
            .map_err(|e| ProjectError(format!("cannot read {}: {e}", d.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            if rel == ".assetsignore" || ignored(&rel) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if rel == "_headers" || rel == "_redirects" {
                out.warnings.push(format!(
                    "assets: '{rel}' is not applied by edged (it is served as a file unless .assetsignore lists it)"
                ));
            }
            let size = entry
                .metadata()
                .map_err(|e| ProjectError(format!("{}: {e}", path.display())))?
                .len();
            if size > MAX_FILE_BYTES {
                return Err(ProjectError(format!(
                    "asset {} is {} MiB; Workers' limit (and edged's) is {} MiB per file",
                    path.display(),
                    size >> 20,
                    MAX_FILE_BYTES >> 20
                )));
            }
            if out.files.len() >= MAX_FILES {
                return Err(ProjectError(format!(
                    "more than {MAX_FILES} asset files (Workers' limit)"
                )));
            }
            let hash = sha256_of(&path)
                .map_err(|e| ProjectError(format!("cannot read {}: {e}", path.display())))?;
            out.files
                .insert(format!("/{rel}"), json!({"hash": hash, "size": size}));
            out.blobs.insert(hash, path);
        }
    }
    Ok(out)
}

/// The deploy body's `assets` from the manifest and the `assets` settings.
pub fn body(
    files: BTreeMap<String, Value>,
    settings: &Map<String, Value>,
    has_worker: bool,
) -> Value {
    let mut assets = json!({ "files": files, "has_worker": has_worker });
    for key in ["html_handling", "not_found_handling", "run_worker_first"] {
        if let Some(v) = settings.get(key) {
            assets[key] = v.clone();
        }
    }
    assets
}
