//! Turning a project's entry point into modules: esbuild through Node.js
//! (`bundle.mjs`, wrangler's settings and module rules), or, with
//! `no_bundle`, the files under `base_dir` picked by the rules as they are.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::{json, Map, Value};

use super::config::Rule;
use super::ProjectError;
use crate::js::{Module, TypedModule};

/// The bundler script, run with `node --input-type=module -e`.
const BUNDLE_MJS: &str = include_str!("bundle.mjs");

/// The most modules a project may produce (as `edged deploy script.js`).
const MAX_MODULES: usize = 1000;

/// A module file read as the rule's type says.
fn read_module(kind: &str, file: &Path) -> Result<Module, ProjectError> {
    let bytes = std::fs::read(file)
        .map_err(|e| ProjectError(format!("cannot read {}: {e}", file.display())))?;
    let text = || {
        String::from_utf8(bytes.clone())
            .map_err(|_| ProjectError(format!("{} is not UTF-8 text", file.display())))
    };
    let b64 = || base64::engine::general_purpose::STANDARD.encode(&bytes);
    Ok(match kind {
        "esm" => Module::Esm(text()?),
        "commonjs" => Module::Typed(TypedModule::Commonjs { content: text()? }),
        "text" => Module::Typed(TypedModule::Text { content: text()? }),
        "data" => Module::Typed(TypedModule::Data {
            content_base64: b64(),
        }),
        "wasm" => Module::Typed(TypedModule::Wasm {
            content_base64: b64(),
        }),
        other => return Err(ProjectError(format!("unknown module type '{other}'"))),
    })
}

/// The Node.js to run the bundler with: `$EDGED_NODE`, else `node` on PATH.
fn node() -> String {
    std::env::var("EDGED_NODE").unwrap_or_else(|_| "node".to_owned())
}

/// The main module's name, every module, and esbuild's warnings.
pub struct Bundled {
    pub main: String,
    pub modules: BTreeMap<String, Module>,
    pub warnings: Vec<String>,
}

/// Bundles `entry` (relative to `project`) with esbuild.
pub fn bundle(
    project: &Path,
    entry: &str,
    rules: &[Rule],
    options: &Map<String, Value>,
) -> Result<Bundled, ProjectError> {
    let mut request = json!({
        "projectDir": project,
        "entry": entry,
        "rules": rules,
    });
    for (k, v) in options {
        request[k] = v.clone();
    }
    let mut child = Command::new(node())
        .arg("--input-type=module")
        .arg("-e")
        .arg(BUNDLE_MJS)
        .current_dir(project)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            ProjectError(format!(
                "cannot run Node.js ('{}'), which bundling needs (install Node.js 18 or later, or set EDGED_NODE): {e}",
                node()
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(request.to_string().as_bytes())
            .map_err(|e| ProjectError(format!("cannot talk to the bundler: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| ProjectError(format!("the bundler did not finish: {e}")))?;
    let answer: Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        ProjectError(format!(
            "the bundler failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    if let Some(e) = answer.get("error").and_then(Value::as_str) {
        return Err(ProjectError(format!("bundling {entry} failed:\n{e}")));
    }
    let main = answer["main"]["name"]
        .as_str()
        .unwrap_or("index.js")
        .to_owned();
    let code = answer["main"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut modules = BTreeMap::new();
    modules.insert(main.clone(), Module::Esm(code));
    for m in answer["modules"].as_array().into_iter().flatten() {
        let (Some(name), Some(kind), Some(file)) =
            (m["name"].as_str(), m["type"].as_str(), m["file"].as_str())
        else {
            continue;
        };
        modules.insert(name.to_owned(), read_module(kind, Path::new(file))?);
    }
    if modules.len() > MAX_MODULES {
        return Err(ProjectError(format!("more than {MAX_MODULES} modules")));
    }
    let warnings = answer["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|w| w.trim().to_owned())
        .collect();
    Ok(Bundled {
        main,
        modules,
        warnings,
    })
}

/// Which rule a path (relative, `/`-separated) falls under.
fn rule_for<'a>(rules: &'a [Rule], path: &str) -> Option<&'a str> {
    rules.iter().find_map(|r| {
        r.globs
            .iter()
            .any(|g| glob_matches(g, path))
            .then_some(r.kind)
    })
}

/// wrangler's globs: `**/` any directories, `*` within a name, `?` one character.
pub fn glob_matches(glob: &str, path: &str) -> bool {
    fn go(g: &[u8], p: &[u8]) -> bool {
        match g {
            [] => p.is_empty(),
            [b'*', b'*', b'/', rest @ ..] => {
                go(rest, p)
                    || p.iter()
                        .enumerate()
                        .any(|(i, c)| *c == b'/' && go(rest, &p[i + 1..]))
            }
            [b'*', rest @ ..] => (0..=p.len())
                .take_while(|&i| i == 0 || p[i - 1] != b'/')
                .any(|i| go(rest, &p[i..])),
            [b'?', rest @ ..] => !p.is_empty() && go(rest, &p[1..]),
            [c, rest @ ..] => p.first() == Some(c) && go(rest, &p[1..]),
        }
    }
    go(glob.as_bytes(), path.as_bytes())
}

/// `no_bundle`: the entry and every file under `base` a rule (or the ES
/// module rule for `.js`/`.mjs`, CommonJS for `.cjs`) picks, as they are.
pub fn collect(
    base: &Path,
    entry: &Path,
    rules: &[Rule],
) -> Result<(String, BTreeMap<String, Module>), ProjectError> {
    let mut rules = rules.to_vec();
    rules.push(Rule {
        kind: "esm",
        globs: vec!["**/*.js".into(), "**/*.mjs".into()],
    });
    rules.push(Rule {
        kind: "commonjs",
        globs: vec!["**/*.cjs".into()],
    });
    let main = entry
        .strip_prefix(base)
        .map_err(|_| {
            ProjectError(format!(
                "main {} is not under base_dir {}",
                entry.display(),
                base.display()
            ))
        })?
        .to_string_lossy()
        .replace('\\', "/");
    let mut modules = BTreeMap::new();
    let mut stack: Vec<PathBuf> = vec![base.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| ProjectError(format!("cannot read {}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with('.') || file_name == "node_modules" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            if let Some(kind) = rule_for(&rules, &rel) {
                if modules.len() >= MAX_MODULES {
                    return Err(ProjectError(format!("more than {MAX_MODULES} modules")));
                }
                modules.insert(rel, read_module(kind, &path)?);
            }
        }
    }
    if !matches!(modules.get(&main), Some(Module::Esm(_))) {
        modules.insert(main.clone(), read_module("esm", entry)?);
    }
    Ok((main, modules))
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs_match_as_wranglers_do() {
        assert!(glob_matches("**/*.wasm", "a.wasm"));
        assert!(glob_matches("**/*.wasm", "lib/x/a.wasm"));
        assert!(!glob_matches("**/*.wasm", "a.wasm.js"));
        assert!(glob_matches("*.txt", "a.txt"));
        assert!(!glob_matches("*.txt", "d/a.txt"));
        assert!(glob_matches("data/?.bin", "data/a.bin"));
        assert!(!glob_matches("data/?.bin", "data/ab.bin"));
    }
}
