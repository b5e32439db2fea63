//! Reading a Wrangler configuration: `wrangler.json`, `wrangler.jsonc` or
//! `wrangler.toml` (the order wrangler looks for them), one `[env.NAME]`
//! section merged over the top level as wrangler merges it, and every key
//! sorted into used, ignored with a warning, or refused.
//!
//! The output is the deploy API's body (bindings, routes, crons,
//! compatibility settings) plus what the bundler needs; nothing here touches
//! a node.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::ProjectError;

/// The configuration files wrangler reads, in its order of preference.
pub const CONFIG_FILES: [&str; 3] = ["wrangler.json", "wrangler.jsonc", "wrangler.toml"];

/// Keys an `[env.NAME]` section does not inherit from the top level
/// (wrangler's "non-inheritable keys": bindings and `define`).
const NOT_INHERITED: [&str; 20] = [
    "define",
    "vars",
    "durable_objects",
    "kv_namespaces",
    "r2_buckets",
    "d1_databases",
    "services",
    "queues",
    "analytics_engine_datasets",
    "tail_consumers",
    "version_metadata",
    "vectorize",
    "hyperdrive",
    "ai",
    "browser",
    "mtls_certificates",
    "dispatch_namespaces",
    "send_email",
    "workflows",
    "unsafe",
];

/// Bindings Workers has and edged does not: a deploy with one is refused
/// (the worker would fail at its first use).
const UNSUPPORTED_BINDINGS: [&str; 15] = [
    "r2_buckets",
    "d1_databases",
    "queues",
    "analytics_engine_datasets",
    "vectorize",
    "hyperdrive",
    "ai",
    "browser",
    "mtls_certificates",
    "dispatch_namespaces",
    "send_email",
    "workflows",
    "secrets_store_secrets",
    "images",
    "unsafe",
];

/// Keys that matter to Cloudflare's platform or to wrangler's own tooling
/// and not to the worker: accepted, named in a warning.
const IGNORED: [&str; 20] = [
    "account_id",
    "workers_dev",
    "preview_urls",
    "send_metrics",
    "keep_vars",
    "observability",
    "upload_source_maps",
    "logpush",
    "placement",
    "limits",
    "tail_consumers",
    "dev",
    "usage_model",
    "legacy_env",
    "first_party_worker",
    "logfwdr",
    "wasm_modules",
    "text_blobs",
    "data_blobs",
    "site",
];

/// Keys edged uses.
const USED: [&str; 25] = [
    "$schema",
    "name",
    "main",
    "compatibility_date",
    "compatibility_flags",
    "vars",
    "kv_namespaces",
    "durable_objects",
    "migrations",
    "services",
    "triggers",
    "routes",
    "route",
    "version_metadata",
    "rules",
    "base_dir",
    "find_additional_modules",
    "no_bundle",
    "define",
    "alias",
    "minify",
    "keep_names",
    "jsx_factory",
    "jsx_fragment",
    "tsconfig",
];

/// Also used: `build`, `assets`, `env`.
const USED_MORE: [&str; 3] = ["build", "assets", "env"];

/// A module rule as wrangler's `rules` gives it, types in edged's spelling.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rule {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub globs: Vec<String>,
}

/// What the configuration asks for.
#[derive(Debug)]
pub struct Settings {
    pub name: Option<String>,
    pub main: Option<String>,
    /// The deploy body without `main_module` and `modules`.
    pub body: Map<String, Value>,
    pub rules: Vec<Rule>,
    pub base_dir: Option<String>,
    pub no_bundle: bool,
    pub find_additional_modules: bool,
    /// Options passed to esbuild as they are.
    pub bundler: Map<String, Value>,
    /// `build.command` and its working directory.
    pub build: Option<(String, Option<String>)>,
    /// `assets` as configured (directory relative to the config file).
    pub assets: Option<Map<String, Value>>,
    pub warnings: Vec<String>,
}

fn err(file: &Path, msg: impl std::fmt::Display) -> ProjectError {
    ProjectError(format!("{}: {msg}", file.display()))
}

/// The configuration file of a project directory, if it has one.
pub fn find(dir: &Path) -> Option<PathBuf> {
    CONFIG_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Parses the file as TOML or JSON with comments.
pub fn parse(file: &Path) -> Result<Value, ProjectError> {
    let text = std::fs::read_to_string(file).map_err(|e| err(file, e))?;
    let value: Value = if file.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).map_err(|e| err(file, e))?
    } else {
        jsonc_parser::parse_to_serde_value(&text, &Default::default()).map_err(|e| err(file, e))?
    };
    if !value.is_object() {
        return Err(err(file, "the configuration is not a table/object"));
    }
    Ok(value)
}

/// The top level with the environment `env` merged over it, as wrangler
/// merges: the environment's keys win; inheritable keys come from the top
/// level; the name is `<name>-<env>` unless the environment sets one.
pub fn select_env(
    file: &Path,
    top: &Value,
    env: Option<&str>,
) -> Result<Map<String, Value>, ProjectError> {
    let mut merged = top.as_object().cloned().unwrap_or_default();
    let envs = merged.remove("env");
    let Some(env) = env else {
        return Ok(merged);
    };
    let section = envs
        .as_ref()
        .and_then(|e| e.get(env))
        .and_then(Value::as_object)
        .ok_or_else(|| {
            let known: Vec<String> = envs
                .as_ref()
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            err(
                file,
                format!(
                    "no environment '{env}' (environments: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })?;
    for key in NOT_INHERITED {
        merged.remove(key);
    }
    let base_name = merged
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    merged.remove("name");
    for (k, v) in section {
        merged.insert(k.clone(), v.clone());
    }
    if !merged.contains_key("name") {
        if let Some(base) = base_name {
            merged.insert("name".into(), Value::String(format!("{base}-{env}")));
        }
    }
    Ok(merged)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn array<'a>(
    file: &Path,
    cfg: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a [Value], ProjectError> {
    match cfg.get(key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(err(file, format!("'{key}' must be an array"))),
    }
}

/// The rule type names wrangler uses, in the deploy API's spelling.
fn rule_type(file: &Path, name: &str) -> Result<&'static str, ProjectError> {
    Ok(match name {
        "ESModule" => "esm",
        "CommonJS" => "commonjs",
        "Text" => "text",
        "Data" => "data",
        "CompiledWasm" => "wasm",
        "PythonModule" | "PythonRequirement" => {
            return Err(err(
                file,
                format!("rules: module type '{name}' is not supported"),
            ))
        }
        other => return Err(err(file, format!("rules: unknown module type '{other}'"))),
    })
}

/// Sorts every key of the merged configuration and builds the settings.
pub fn settings(file: &Path, cfg: Map<String, Value>) -> Result<Settings, ProjectError> {
    let mut warnings = Vec::new();
    for key in cfg.keys() {
        if UNSUPPORTED_BINDINGS.contains(&key.as_str()) {
            let empty = matches!(cfg.get(key), Some(Value::Array(a)) if a.is_empty());
            if !empty {
                return Err(err(
                    file,
                    format!("'{key}': edged has no such binding yet (R2, D1, Queues and the others are not built)"),
                ));
            }
        } else if IGNORED.contains(&key.as_str()) {
            warnings.push(format!("'{key}' is ignored by edged (it configures Cloudflare's platform or wrangler, not the worker)"));
        } else if !USED.contains(&key.as_str()) && !USED_MORE.contains(&key.as_str()) {
            warnings.push(format!("unknown key '{key}' is ignored"));
        }
    }

    let mut bindings = Vec::new();
    if let Some(vars) = cfg.get("vars") {
        let vars = vars
            .as_object()
            .ok_or_else(|| err(file, "'vars' must be a table of NAME = value"))?;
        for (name, value) in vars {
            bindings.push(match value {
                Value::String(text) => json!({"type": "plain_text", "name": name, "text": text}),
                other => json!({"type": "json", "name": name, "json": other.to_string()}),
            });
        }
    }
    for kv in array(file, &cfg, "kv_namespaces")? {
        let binding = str_of(kv, "binding")
            .ok_or_else(|| err(file, "kv_namespaces: an entry has no 'binding'"))?;
        let namespace = str_of(kv, "id").unwrap_or(binding).to_ascii_lowercase();
        bindings.push(json!({"type": "kv_namespace", "name": binding, "namespace": namespace}));
    }
    if let Some(dos) = cfg.get("durable_objects") {
        let list = dos
            .get("bindings")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for d in &list {
            let name = str_of(d, "name")
                .ok_or_else(|| err(file, "durable_objects.bindings: an entry has no 'name'"))?;
            let class = str_of(d, "class_name").ok_or_else(|| {
                err(
                    file,
                    format!("durable_objects binding '{name}' has no 'class_name'"),
                )
            })?;
            if let Some(script) = str_of(d, "script_name") {
                return Err(err(file, format!("durable_objects binding '{name}': 'script_name' ('{script}', a class of another worker) is not supported; bind the class in the worker that exports it")));
            }
            bindings.push(
                json!({"type": "durable_object_namespace", "name": name, "class_name": class}),
            );
        }
    }
    for m in array(file, &cfg, "migrations")? {
        for key in ["renamed_classes", "deleted_classes", "transferred_classes"] {
            if m.get(key)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                warnings.push(format!("migrations: '{key}' is not applied by edged (objects are kept by class name; a deleted class keeps its storage until the worker is deleted)"));
            }
        }
    }
    for s in array(file, &cfg, "services")? {
        let name =
            str_of(s, "binding").ok_or_else(|| err(file, "services: an entry has no 'binding'"))?;
        let service = str_of(s, "service")
            .ok_or_else(|| err(file, format!("services binding '{name}' has no 'service'")))?;
        let mut b = json!({"type": "service", "name": name, "service": service});
        if let Some(props) = s.get("props") {
            b["props"] = props.clone();
        }
        if let Some(entrypoint) = str_of(s, "entrypoint") {
            b["entrypoint"] = Value::String(entrypoint.to_owned());
        }
        if str_of(s, "environment").is_some() {
            warnings.push(format!("services binding '{name}': 'environment' is ignored (edged binds the worker named by 'service')"));
        }
        bindings.push(b);
    }
    if let Some(vm) = cfg.get("version_metadata") {
        let name =
            str_of(vm, "binding").ok_or_else(|| err(file, "version_metadata has no 'binding'"))?;
        bindings.push(json!({"type": "version_metadata", "name": name}));
    }

    let mut routes = Vec::new();
    let mut route_entries: Vec<Value> = array(file, &cfg, "routes")?.to_vec();
    if let Some(r) = cfg.get("route") {
        route_entries.push(r.clone());
    }
    for r in route_entries {
        match &r {
            Value::String(p) => routes.push(p.clone()),
            Value::Object(o) => {
                let pattern = o
                    .get("pattern")
                    .and_then(Value::as_str)
                    .ok_or_else(|| err(file, "routes: an entry has no 'pattern'"))?;
                if o.get("custom_domain").and_then(Value::as_bool) == Some(true) {
                    // A custom domain is the whole host.
                    routes.push(format!("{}/*", pattern.trim_end_matches('/')));
                } else {
                    routes.push(pattern.to_owned());
                }
            }
            _ => return Err(err(file, "routes: an entry must be a pattern or a table")),
        }
    }
    let crons: Vec<Value> = cfg
        .get("triggers")
        .and_then(|t| t.get("crons"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    let mut body = Map::new();
    body.insert("bindings".into(), Value::Array(bindings));
    body.insert("routes".into(), json!(routes));
    body.insert("crons".into(), Value::Array(crons));
    if let Some(d) = cfg.get("compatibility_date") {
        body.insert("compatibility_date".into(), d.clone());
    }
    if let Some(f) = cfg.get("compatibility_flags") {
        body.insert("compatibility_flags".into(), f.clone());
    }

    // wrangler's default rules come after the configured ones.
    let mut rules = Vec::new();
    for r in array(file, &cfg, "rules")? {
        let kind = rule_type(file, str_of(r, "type").unwrap_or(""))?;
        let globs = r
            .get("globs")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        rules.push(Rule { kind, globs });
    }
    for (kind, globs) in [
        ("text", vec!["**/*.txt", "**/*.html", "**/*.sql"]),
        ("data", vec!["**/*.bin"]),
        ("wasm", vec!["**/*.wasm", "**/*.wasm?module"]),
    ] {
        rules.push(Rule {
            kind,
            globs: globs.into_iter().map(str::to_owned).collect(),
        });
    }

    let mut bundler = Map::new();
    for (key, option) in [
        ("define", "define"),
        ("alias", "alias"),
        ("minify", "minify"),
        ("keep_names", "keepNames"),
        ("jsx_factory", "jsxFactory"),
        ("jsx_fragment", "jsxFragment"),
        ("tsconfig", "tsconfig"),
    ] {
        if let Some(v) = cfg.get(key) {
            bundler.insert(option.into(), v.clone());
        }
    }
    // As wrangler: with Node.js compatibility, Node's built-ins are left to
    // the runtime, bare names and require() calls included.
    // Only the modules edged has: another built-in name is left to esbuild
    // (an npm polyfill of it, or a clear resolution error), and a `node:`
    // import of it fails at deploy naming it.
    let flags: Vec<String> = cfg
        .get("compatibility_flags")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let date = cfg.get("compatibility_date").and_then(Value::as_str);
    let compat = crate::js::node::NodeCompat::of(date, &flags);
    let node_modules: Vec<&str> = crate::js::node::MODULES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| compat.file_for(name).is_some())
        .collect();
    bundler.insert("nodeModules".into(), json!(node_modules));
    let build = match cfg.get("build") {
        Some(b) => {
            str_of(b, "command").map(|c| (c.to_owned(), str_of(b, "cwd").map(str::to_owned)))
        }
        None => None,
    };
    let assets = match cfg.get("assets") {
        None => None,
        Some(Value::Object(o)) => Some(o.clone()),
        Some(_) => return Err(err(file, "'assets' must be a table")),
    };

    Ok(Settings {
        name: cfg.get("name").and_then(Value::as_str).map(str::to_owned),
        main: cfg.get("main").and_then(Value::as_str).map(str::to_owned),
        body,
        rules,
        base_dir: cfg
            .get("base_dir")
            .and_then(Value::as_str)
            .map(str::to_owned),
        no_bundle: cfg.get("no_bundle").and_then(Value::as_bool) == Some(true),
        find_additional_modules: cfg.get("find_additional_modules").and_then(Value::as_bool)
            == Some(true),
        bundler,
        build,
        assets,
        warnings,
    })
}
