//! A Wrangler project turned into a deploy: what `edged deploy <dir>` and
//! `edged dev <dir>` do with a directory holding `wrangler.toml`,
//! `wrangler.json` or `wrangler.jsonc`.
//!
//! Three steps, each in its own file, all on the client side (nothing here
//! runs in a node):
//! 1. `config`: read the configuration, merge `--env NAME`, sort every key
//!    into used, ignored with a warning naming it, or refused (a binding edged
//!    does not have is an error, never a silent drop);
//! 2. `bundle`: run the project's `build.command` if it has one, then bundle
//!    `main` as wrangler does, with esbuild (TypeScript, JSX, npm
//!    dependencies; `cloudflare:*` and `node:*` left external; wrangler's
//!    module rules for `.wasm`, `.txt`/`.html`/`.sql` and `.bin`), or with
//!    `no_bundle` take the files as they are;
//! 3. the result is the deploy API's JSON body ([`Project::body`]), which the
//!    node checks as it checks any deploy.

mod assets;
mod bundle;
mod config;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use bundle::glob_matches;
pub use config::CONFIG_FILES;

#[derive(Debug, Clone)]
pub struct ProjectError(pub String);

impl std::fmt::Display for ProjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProjectError {}

/// A project ready to deploy.
#[derive(Debug)]
pub struct Project {
    /// The worker's name (`name`, `<name>-<env>`, or `--name`).
    pub name: String,
    /// The deploy API's body.
    pub body: Value,
    /// The asset blobs to upload, by SHA-256 (the manifest is in `body`).
    pub asset_blobs: BTreeMap<String, PathBuf>,
    /// Keys and settings edged does not act on, and esbuild's warnings.
    pub warnings: Vec<String>,
}

/// Whether `dir` is a project directory (holds a Wrangler configuration).
pub fn is_project(dir: &Path) -> bool {
    dir.is_dir() && config::find(dir).is_some()
}

/// Reads, builds and bundles the project in `dir`.
pub fn load(dir: &Path, env: Option<&str>, name: Option<&str>) -> Result<Project, ProjectError> {
    let file = config::find(dir).ok_or_else(|| {
        ProjectError(format!(
            "{} has no {}",
            dir.display(),
            CONFIG_FILES.join(", ")
        ))
    })?;
    let top = config::parse(&file)?;
    let merged = config::select_env(&file, &top, env)?;
    let settings = config::settings(&file, merged)?;
    let mut warnings = settings.warnings.clone();
    let name = name
        .map(str::to_owned)
        .or_else(|| settings.name.clone())
        .ok_or_else(|| ProjectError(format!("{}: no 'name' (or give --name)", file.display())))?;

    if let Some((command, cwd)) = &settings.build {
        let cwd = dir.join(cwd.as_deref().unwrap_or("."));
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(&cwd)
            .status()
            .map_err(|e| ProjectError(format!("build.command '{command}': {e}")))?;
        if !status.success() {
            return Err(ProjectError(format!(
                "build.command '{command}' failed ({status})"
            )));
        }
    }

    let assets = match &settings.assets {
        None => None,
        Some(a) => {
            let directory = a.get("directory").and_then(Value::as_str).ok_or_else(|| {
                ProjectError(format!("{}: assets has no 'directory'", file.display()))
            })?;
            let path = dir.join(directory);
            if !path.is_dir() {
                return Err(ProjectError(format!(
                    "assets directory {} does not exist",
                    path.display()
                )));
            }
            Some((path, a.clone()))
        }
    };

    let (main_module, modules) = match &settings.main {
        Some(main) => {
            let entry = dir.join(main);
            if !entry.is_file() {
                return Err(ProjectError(format!(
                    "{}: main '{main}' does not exist",
                    file.display()
                )));
            }
            if settings.no_bundle {
                let base = match &settings.base_dir {
                    Some(b) => dir.join(b),
                    None => entry.parent().unwrap_or(dir).to_owned(),
                };
                bundle::collect(&base, &entry, &settings.rules)?
            } else {
                if settings.find_additional_modules {
                    warnings.push("'find_additional_modules' is ignored when bundling: imported modules are bundled or picked by the rules".into());
                }
                let bundled = bundle::bundle(dir, main, &settings.rules, &settings.bundler)?;
                warnings.extend(bundled.warnings);
                (bundled.main, bundled.modules)
            }
        }
        None if assets.is_some() => {
            // An assets-only project: a worker that has nothing to add.
            let mut modules = std::collections::BTreeMap::new();
            modules.insert(
                "assets-only.js".to_owned(),
                crate::js::Module::Esm(
                    "export default { fetch() { return new Response(null, { status: 404 }); } };"
                        .to_owned(),
                ),
            );
            ("assets-only.js".to_owned(), modules)
        }
        None => {
            return Err(ProjectError(format!(
                "{}: no 'main' (the worker's entry point)",
                file.display()
            )))
        }
    };

    let has_worker = settings.main.is_some();
    let mut body = settings.body;
    let mut asset_blobs = BTreeMap::new();
    if let Some((dir, config)) = &assets {
        let collected = assets::collect(dir)?;
        warnings.extend(collected.warnings);
        body.insert(
            "assets".into(),
            assets::body(collected.files, config, has_worker),
        );
        asset_blobs = collected.blobs;
        for key in config.keys() {
            if ![
                "directory",
                "binding",
                "html_handling",
                "not_found_handling",
                "run_worker_first",
            ]
            .contains(&key.as_str())
            {
                warnings.push(format!("assets: unknown key '{key}' is ignored"));
            }
        }
        if let Some(binding) = config.get("binding").and_then(Value::as_str) {
            if let Some(Value::Array(list)) = body.get_mut("bindings") {
                list.push(serde_json::json!({"type": "assets", "name": binding}));
            }
        }
    }
    body.insert("main_module".into(), Value::String(main_module));
    body.insert(
        "modules".into(),
        serde_json::to_value(&modules).map_err(|e| ProjectError(e.to_string()))?,
    );
    Ok(Project {
        name,
        body: Value::Object(body),
        asset_blobs,
        warnings,
    })
}
