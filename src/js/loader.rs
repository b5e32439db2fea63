//! The module loader of a tenant isolate.
//!
//! An isolate is created blank (from the pool) and learns its tenant's modules only
//! when it is bound, so the loader's module table is filled once, at bind time. It
//! resolves exactly three kinds of specifier and refuses everything else:
//! - the tenant's own modules, by name or relative path (`./util.js`), under
//!   `file:///` (the prefix never appears in error messages);
//! - `cloudflare:workers`, the Workers built-in module;
//! - `edged:cjs`, the registry of the worker's CommonJS modules (below);
//! - with Node.js compatibility (`node.rs` decides, from the worker's flags),
//!   `node:<name>` (and a bare `<name>` no uploaded module has) for the
//!   modules edged implements, each under one `edged-node:` specifier; a
//!   `node:` module edged lacks or the worker's flags do not give is refused,
//!   naming it;
//! - nothing else from the runtime: `ext:` specifiers are refused, so tenant
//!   code cannot reach the runtime's internal modules or ops.

//!
//! Every module is loaded as JavaScript. An ES module is its own source. A
//! Text, JSON, Data or WebAssembly module is a one-line module exporting a
//! value the runtime made in Rust before any tenant code ran
//! ([`module_values`]): the string, the parsed JSON, an `ArrayBuffer`, a
//! compiled `WebAssembly.Module`. Those values reach the module through the
//! hidden global that also carries `cloudflare:workers`, so like it they can
//! be imported only while the worker's modules first evaluate. A CommonJS
//! module is `export default require(name)` over `edged:cjs`, one generated
//! module holding every CommonJS module as a factory function, so that
//! `require()` between them is synchronous and lazy as in Node.
//!
//! WebAssembly is compiled only here, from uploaded modules: the isolate's
//! code-generation callback ([`allow_wasm_code_generation`]) refuses
//! `WebAssembly.compile(bytes)` from tenant code, as Workers does.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use deno_core::error::ModuleLoaderError;
use deno_core::{
    ModuleLoadResponse, ModuleLoader, ModuleSource, ModuleSourceCode, ModuleSpecifier, ModuleType,
    RequestedModuleType, ResolutionKind,
};
use deno_error::JsErrorBox;

use super::node::{self, NodeCompat};
use super::script::{Module, TypedModule};

/// Specifier prefix of tenant modules.
pub const TENANT_PREFIX: &str = "file:///";

const CLOUDFLARE_WORKERS: &str = "cloudflare:workers";

/// The generated module of the worker's CommonJS factories.
const CJS_REGISTRY: &str = "edged:cjs";

/// The body of `edged:cjs` around the factories: `require` as Node's, over the
/// worker's modules (no `node_modules` lookup: a bundle holds everything).
const CJS_RUNTIME: &str = r#"
const m = globalThis.__edged_cloudflare_workers;
if (m === undefined) {
  throw new Error("CommonJS modules can only be loaded while a worker's modules first evaluate");
}
const values = m.modules;
const cache = { __proto__: null };
function normalize(path) {
  const out = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop(); else out.push(part);
  }
  return out.join("/");
}
// A `node:` name is the built-in; a bare name is the worker's own module if
// it has one, else the built-in (as the loader resolves an import).
function resolve(dir, spec) {
  if (spec.startsWith("node:") && spec in builtins) return spec;
  const base = spec.startsWith("./") || spec.startsWith("../") ? normalize(dir + "/" + spec) : normalize(spec);
  for (const name of [base, base + ".js", base + ".cjs", base + ".json", base + "/index.js"]) {
    if (name in kinds) return name;
  }
  if (spec in builtins) return "node:" + spec.replace(/^node:/, "");
  throw new Error(`No such module "${spec}".`);
}
function load(name) {
  if (name.startsWith("node:") && name in builtins) return builtins[name];
  const kind = kinds[name];
  if (kind === "esm") {
    throw new Error(`require() of the ES module "${name}" is not supported; import it instead`);
  }
  if (kind !== "commonjs") return values[name];
  const cached = cache[name];
  if (cached !== undefined) return cached.exports;
  const module = { exports: {}, id: name, filename: name, loaded: false };
  cache[name] = module;
  const slash = name.lastIndexOf("/");
  const dir = slash < 0 ? "" : name.slice(0, slash);
  try {
    factories[name].call(module.exports, module.exports, makeRequire(dir), module, name, dir);
  } catch (e) {
    delete cache[name];
    throw e;
  }
  module.loaded = true;
  return module.exports;
}
function makeRequire(dir) {
  return function require(spec) {
    if (typeof spec !== "string") throw new TypeError("require() takes a module name");
    return load(resolve(dir, spec));
  };
}
export function requireModule(name) {
  return load(name);
}
"#;

/// Source of the `cloudflare:workers` module. The runtime puts its exports on a
/// hidden global while the tenant's modules evaluate (see `10_worker.js`).
const CLOUDFLARE_WORKERS_SOURCE: &str = r#"
const m = globalThis.__edged_cloudflare_workers;
if (m === undefined) {
  throw new Error("cloudflare:workers can only be imported statically by a worker's modules");
}
export const env = m.env;
export const DurableObject = m.DurableObject;
export const WorkerEntrypoint = m.WorkerEntrypoint;
export const RpcTarget = m.RpcTarget;
export default { env, DurableObject, WorkerEntrypoint, RpcTarget };
"#;

fn loader_error(e: JsErrorBox) -> ModuleLoaderError {
    ModuleLoaderError::Core(deno_core::error::CoreError::JsBox(e))
}

/// Module table shared between the isolate and its loader.
#[derive(Default)]
pub struct TenantLoader {
    modules: RefCell<BTreeMap<String, Module>>,
    node: Cell<NodeCompat>,
}

impl TenantLoader {
    pub fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    /// Installs the tenant's modules. Called once, at bind.
    pub fn install(&self, modules: &BTreeMap<String, Module>, node: NodeCompat) {
        *self.modules.borrow_mut() = modules.clone();
        self.node.set(node);
    }

    /// The `edged-node:` specifier of a `node:` module (or a bare name no
    /// uploaded module has), if the worker may import it; an error names a
    /// `node:` module it may not.
    fn node_module(&self, specifier: &str) -> Result<Option<String>, JsErrorBox> {
        let compat = self.node.get();
        if specifier == "cloudflare:node" {
            if !compat.modules {
                return Err(JsErrorBox::type_error(
                    "No such module \"cloudflare:node\": it needs the nodejs_compat compatibility flag",
                ));
            }
            return Ok(Some(format!("{}{}", node::SCHEME, node::CLOUDFLARE_NODE)));
        }
        if let Some(name) = specifier.strip_prefix("node:") {
            return match compat.file_for(name) {
                Some(file) => Ok(Some(format!("{}{file}", node::SCHEME))),
                None if node::MODULES.iter().any(|(n, _)| *n == name)
                    && !compat.modules =>
                {
                    Err(JsErrorBox::type_error(format!(
                        "No such module \"{specifier}\": Node.js built-in modules need the nodejs_compat compatibility flag"
                    )))
                }
                None => Err(JsErrorBox::type_error(format!(
                    "No such module \"{specifier}\": edged does not implement this Node.js module"
                ))),
            };
        }
        if self.modules.borrow().contains_key(specifier) {
            return Ok(None);
        }
        Ok(compat
            .file_for(specifier)
            .map(|file| format!("{}{file}", node::SCHEME)))
    }

    /// The JavaScript the loader hands V8 for a tenant module.
    fn source_of(&self, name: &str) -> Option<String> {
        let modules = self.modules.borrow();
        let module = modules.get(name)?;
        let literal = serde_json::to_string(name).unwrap_or_default();
        Some(match module {
            Module::Esm(s) | Module::Typed(TypedModule::Esm { content: s }) => s.clone(),
            Module::Typed(TypedModule::Commonjs { .. }) => format!(
                "import {{ requireModule }} from \"{CJS_REGISTRY}\";\nexport default requireModule({literal});\n"
            ),
            Module::Typed(_) => format!(
                "const m = globalThis.__edged_cloudflare_workers;\n\
                 if (m === undefined) throw new Error(\"the module \" + {literal} + \" can only be imported while the worker's modules first evaluate\");\n\
                 export default m.modules[{literal}];\n"
            ),
        })
    }

    /// `edged:cjs`: every CommonJS module as a factory, the kind of every
    /// module, and `require`. A factory's source is pasted between braces,
    /// so a module that breaks out of them breaks this registry: the
    /// worker's own CommonJS modules, nothing of the runtime's. The
    /// factories run in strict mode (this is an ES module), where Node and
    /// Workers run CommonJS sloppy.
    fn cjs_registry(&self) -> String {
        let modules = self.modules.borrow();
        let mut src = String::from(CJS_RUNTIME);
        // The node modules a CommonJS module names (a string literal of the
        // name) are imported up front, so that require() of them is
        // synchronous; each is required as its default export, which is
        // its `module.exports` in Node.
        let compat = self.node.get();
        let mut builtins = String::from("const builtins = { __proto__: null");
        for (i, (name, file)) in node::MODULES.iter().enumerate() {
            if compat.file_for(name).is_none() {
                continue;
            }
            let quoted = [
                format!("\"node:{name}\""),
                format!("'node:{name}'"),
                format!("\"{name}\""),
                format!("'{name}'"),
            ];
            let named = modules.values().any(|m| match m {
                Module::Typed(TypedModule::Commonjs { content }) => {
                    quoted.iter().any(|q| content.contains(q.as_str()))
                }
                _ => false,
            });
            if named {
                src.push_str(&format!(
                    "import * as node{i} from \"{}{file}\";\n",
                    node::SCHEME
                ));
                builtins.push_str(&format!(
                    ", [\"node:{name}\"]: node{i}.default, [\"{name}\"]: node{i}.default"
                ));
            }
        }
        builtins.push_str(" };\n");
        src.push_str(&builtins);
        src.push_str("const kinds = { __proto__: null");
        for (name, module) in modules.iter() {
            let literal = serde_json::to_string(name).unwrap_or_default();
            // Computed keys: a module named `__proto__` is a key like any other.
            src.push_str(&format!(", [{literal}]: \"{}\"", module.kind()));
        }
        src.push_str(" };\nconst factories = { __proto__: null");
        for (name, module) in modules.iter() {
            if let Module::Typed(TypedModule::Commonjs { content }) = module {
                let literal = serde_json::to_string(name).unwrap_or_default();
                // A hashbang line is a comment to Node; here it would be a
                // syntax error inside the function.
                let content = match content.strip_prefix("#!") {
                    Some(rest) => format!("//{rest}"),
                    None => content.clone(),
                };
                src.push_str(&format!(
                    ",\n[{literal}]: function (exports, require, module, __filename, __dirname) {{\n{content}\n}}"
                ));
            }
        }
        src.push_str("\n};\n");
        src
    }

    pub fn specifier_for(name: &str) -> Result<ModuleSpecifier, JsErrorBox> {
        ModuleSpecifier::parse(&format!("{TENANT_PREFIX}{}", name.trim_start_matches("./")))
            .map_err(|e| JsErrorBox::type_error(format!("invalid module name '{name}': {e}")))
    }
}

impl ModuleLoader for TenantLoader {
    fn resolve(
        &self,
        specifier: &str,
        referrer: &str,
        _kind: ResolutionKind,
    ) -> Result<ModuleSpecifier, ModuleLoaderError> {
        if specifier == CLOUDFLARE_WORKERS || specifier == CJS_REGISTRY {
            return ModuleSpecifier::parse(specifier)
                .map_err(|e| loader_error(JsErrorBox::generic(e.to_string())));
        }
        let internal = if let Some(file) = referrer
            .strip_prefix(node::SCHEME)
            .and(specifier.strip_prefix("./"))
        {
            // The node modules import each other by relative path.
            Some(format!("{}{file}", node::SCHEME))
        } else if specifier == node::GLOBALS
            && self.node.get().globals
            && !referrer.starts_with(TENANT_PREFIX)
        {
            // The runtime's own root module (`isolate.rs` loads it before the
            // worker's); no tenant module can import it.
            Some(specifier.to_owned())
        } else if referrer.starts_with(node::SCHEME) {
            // Internal modules import only each other, never a tenant's.
            return Err(loader_error(JsErrorBox::type_error(format!(
                "No such module \"{specifier}\""
            ))));
        } else {
            self.node_module(specifier).map_err(loader_error)?
        };
        if let Some(internal) = internal {
            if node::source(&internal[node::SCHEME.len()..]).is_none() {
                return Err(loader_error(JsErrorBox::type_error(format!(
                    "No such module \"{specifier}\""
                ))));
            }
            return ModuleSpecifier::parse(&internal)
                .map_err(|e| loader_error(JsErrorBox::generic(e.to_string())));
        }
        let is_relative = specifier.starts_with("./")
            || specifier.starts_with("../")
            || specifier.starts_with('/');
        let resolved = if is_relative && referrer.starts_with(TENANT_PREFIX) {
            deno_core::resolve_import(specifier, referrer)
                .map_err(|e| loader_error(JsErrorBox::type_error(e.to_string())))?
        } else if specifier.starts_with(TENANT_PREFIX) || !specifier.contains(':') {
            Self::specifier_for(specifier.trim_start_matches(TENANT_PREFIX))
                .map_err(loader_error)?
        } else {
            return Err(loader_error(JsErrorBox::type_error(format!(
                "Cannot import '{specifier}': only the worker's own modules and 'cloudflare:workers' can be imported"
            ))));
        };
        let name = &resolved.as_str()[TENANT_PREFIX.len()..];
        if !self.modules.borrow().contains_key(name) {
            return Err(loader_error(JsErrorBox::type_error(format!(
                "Cannot find module '{specifier}' imported from '{}': no module named '{name}' was uploaded",
                referrer.trim_start_matches(TENANT_PREFIX)
            ))));
        }
        Ok(resolved)
    }

    fn code_cache_ready(
        &self,
        specifier: ModuleSpecifier,
        _hash: u64,
        code_cache: &[u8],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        if let Some(file) = specifier.as_str().strip_prefix(node::SCHEME) {
            node::store_code_cache(file, code_cache);
        }
        Box::pin(async {})
    }

    fn load(
        &self,
        specifier: &ModuleSpecifier,
        _referrer: Option<&ModuleSpecifier>,
        _is_dyn_import: bool,
        _requested_module_type: RequestedModuleType,
    ) -> ModuleLoadResponse {
        let source = if specifier.as_str() == CLOUDFLARE_WORKERS {
            Ok(CLOUDFLARE_WORKERS_SOURCE.to_owned())
        } else if specifier.as_str() == CJS_REGISTRY {
            Ok(self.cjs_registry())
        } else if let Some(file) = specifier.as_str().strip_prefix(node::SCHEME) {
            // The runtime's node modules compile from a shared code cache.
            let Some(code) = node::source(file) else {
                return ModuleLoadResponse::Sync(Err(loader_error(JsErrorBox::type_error(
                    format!("Cannot find module '{specifier}'"),
                ))));
            };
            let cache = deno_core::SourceCodeCacheInfo {
                hash: node::source_hash(file),
                data: node::code_cache(file).map(std::borrow::Cow::Borrowed),
            };
            return ModuleLoadResponse::Sync(Ok(ModuleSource::new(
                ModuleType::JavaScript,
                ModuleSourceCode::String(deno_core::FastString::from_static(code)),
                specifier,
                Some(cache),
            )));
        } else {
            let name = specifier
                .as_str()
                .strip_prefix(TENANT_PREFIX)
                .unwrap_or(specifier.as_str());
            self.source_of(name).ok_or_else(|| {
                loader_error(JsErrorBox::type_error(format!(
                    "Cannot find module '{name}'"
                )))
            })
        };
        ModuleLoadResponse::Sync(source.map(|code| {
            ModuleSource::new(
                ModuleType::JavaScript,
                ModuleSourceCode::String(code.into()),
                specifier,
                None,
            )
        }))
    }
}

thread_local! {
    /// Set while the runtime compiles an uploaded WebAssembly module.
    static COMPILING_UPLOADED_WASM: Cell<bool> = const { Cell::new(false) };
}

/// The isolate's WebAssembly code-generation callback: only the runtime's
/// own compilation of uploaded modules is allowed.
pub extern "C" fn allow_wasm_code_generation(
    _context: deno_core::v8::Local<deno_core::v8::Context>,
    _source: deno_core::v8::Local<deno_core::v8::String>,
) -> bool {
    COMPILING_UPLOADED_WASM.with(Cell::get)
}

/// The values of the worker's Text, JSON, Data and WebAssembly modules, as a
/// frozen null-prototype object (name → value), made before tenant code runs.
/// An error names the module.
pub fn module_values<'s>(
    scope: &mut deno_core::v8::HandleScope<'s>,
    modules: &BTreeMap<String, Module>,
) -> Result<deno_core::v8::Local<'s, deno_core::v8::Object>, String> {
    use base64::Engine;
    use deno_core::v8;
    let null = v8::null(scope).into();
    let object = v8::Object::with_prototype_and_properties(scope, null, &[], &[]);
    for (name, module) in modules {
        let Module::Typed(typed) = module else {
            continue;
        };
        let value: v8::Local<v8::Value> = match typed {
            TypedModule::Esm { .. } | TypedModule::Commonjs { .. } => continue,
            TypedModule::Text { content } => v8::String::new(scope, content)
                .ok_or_else(|| format!("text module '{name}' is too large"))?
                .into(),
            TypedModule::Json { content } => {
                let text = v8::String::new(scope, content)
                    .ok_or_else(|| format!("JSON module '{name}' is too large"))?;
                v8::json::parse(scope, text)
                    .ok_or_else(|| format!("JSON module '{name}' is not valid JSON"))?
            }
            TypedModule::Data { content_base64 } | TypedModule::Wasm { content_base64 } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(content_base64)
                    .map_err(|e| format!("module '{name}' has invalid base64 content: {e}"))?;
                if let TypedModule::Wasm { .. } = typed {
                    let tc = &mut v8::TryCatch::new(scope);
                    COMPILING_UPLOADED_WASM.with(|c| c.set(true));
                    let compiled = v8::WasmModuleObject::compile(tc, &bytes);
                    COMPILING_UPLOADED_WASM.with(|c| c.set(false));
                    match compiled {
                        Some(module) => module.into(),
                        None => {
                            let why = tc
                                .exception()
                                .map(|e| e.to_rust_string_lossy(tc))
                                .unwrap_or_default();
                            return Err(format!(
                                "WebAssembly module '{name}' does not compile: {why}"
                            ));
                        }
                    }
                } else {
                    let store = v8::ArrayBuffer::new_backing_store_from_vec(bytes).make_shared();
                    v8::ArrayBuffer::with_backing_store(scope, &store).into()
                }
            }
        };
        let key = v8::String::new(scope, name)
            .ok_or_else(|| format!("module name '{name}' is too long"))?;
        object.set(scope, key.into(), value);
    }
    object.set_integrity_level(scope, v8::IntegrityLevel::Frozen);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loader(node: NodeCompat) -> Rc<TenantLoader> {
        let l = TenantLoader::new();
        let mut modules = BTreeMap::new();
        modules.insert("main.js".to_owned(), Module::Esm(String::new()));
        modules.insert("events".to_owned(), Module::Esm(String::new()));
        l.install(&modules, node);
        l
    }

    fn resolve(l: &TenantLoader, spec: &str, referrer: &str) -> Result<String, String> {
        l.resolve(spec, referrer, ResolutionKind::Import)
            .map(|s| s.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn node_modules_resolve_only_as_the_flags_say() {
        let main = "file:///main.js";
        let all = NodeCompat {
            modules: true,
            async_hooks: true,
            globals: true,
            process_env: true,
        };
        let l = loader(all);
        assert_eq!(
            resolve(&l, "node:crypto", main).unwrap(),
            "edged-node:crypto.js"
        );
        assert_eq!(resolve(&l, "crypto", main).unwrap(), "edged-node:crypto.js");
        // A module of the worker's own wins over a bare built-in name.
        assert_eq!(resolve(&l, "events", main).unwrap(), "file:///events");
        assert_eq!(
            resolve(&l, "node:events", main).unwrap(),
            "edged-node:events.js"
        );
        assert!(resolve(&l, "node:fs", main)
            .unwrap_err()
            .contains("does not implement"));
        // Internal specifiers are not the tenant's to name.
        for internal in [
            "edged-node:crypto.js",
            "edged-node:globals.js",
            "ext:core/ops",
        ] {
            assert!(resolve(&l, internal, main).is_err(), "{internal}");
        }
        // The runtime's own root module, and internal relative imports only.
        assert_eq!(
            resolve(&l, node::GLOBALS, ".").unwrap(),
            "edged-node:globals.js"
        );
        assert!(resolve(&l, "./buffer.js", "edged-node:stream.js").is_ok());
        assert!(resolve(&l, "./nope.js", "edged-node:stream.js").is_err());
        assert!(resolve(&l, "events", "edged-node:stream.js").is_err());
        assert!(resolve(&l, "../main.js", "edged-node:stream.js").is_err());

        let none = loader(NodeCompat::default());
        assert!(resolve(&none, "node:buffer", main)
            .unwrap_err()
            .contains("nodejs_compat"));
        assert!(resolve(&none, "cloudflare:node", main).is_err());
        assert!(resolve(&none, node::GLOBALS, ".").is_err());
        let als = loader(NodeCompat {
            async_hooks: true,
            ..NodeCompat::default()
        });
        assert!(resolve(&als, "node:async_hooks", main).is_ok());
        assert!(resolve(&als, "node:buffer", main).is_err());
    }
}
