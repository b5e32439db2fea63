//! The module loader of a tenant isolate.
//!
//! An isolate is created blank (from the pool) and learns its tenant's modules only
//! when it is bound, so the loader's module table is filled once, at bind time. It
//! resolves exactly three kinds of specifier and refuses everything else:
//! - the tenant's own modules, by name or relative path (`./util.js`), under
//!   `file:///` (the prefix never appears in error messages);
//! - `cloudflare:workers`, the Workers built-in module;
//! - nothing from the runtime: `ext:` and `node:` specifiers are refused, so tenant
//!   code cannot reach the runtime's internal modules or ops.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use deno_core::error::ModuleLoaderError;
use deno_core::{
    ModuleLoadResponse, ModuleLoader, ModuleSource, ModuleSourceCode, ModuleSpecifier, ModuleType,
    RequestedModuleType, ResolutionKind,
};
use deno_error::JsErrorBox;

/// Specifier prefix of tenant modules.
pub const TENANT_PREFIX: &str = "file:///";

const CLOUDFLARE_WORKERS: &str = "cloudflare:workers";

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
export default { env, DurableObject, WorkerEntrypoint };
"#;

fn loader_error(e: JsErrorBox) -> ModuleLoaderError {
    ModuleLoaderError::Core(deno_core::error::CoreError::JsBox(e))
}

/// Module table shared between the isolate and its loader.
#[derive(Default)]
pub struct TenantLoader {
    modules: RefCell<BTreeMap<String, String>>,
}

impl TenantLoader {
    pub fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    /// Installs the tenant's modules (name → source). Called once, at bind.
    pub fn install(&self, modules: &BTreeMap<String, String>) {
        *self.modules.borrow_mut() = modules.clone();
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
        if specifier == CLOUDFLARE_WORKERS {
            return ModuleSpecifier::parse(CLOUDFLARE_WORKERS)
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

    fn load(
        &self,
        specifier: &ModuleSpecifier,
        _referrer: Option<&ModuleSpecifier>,
        _is_dyn_import: bool,
        _requested_module_type: RequestedModuleType,
    ) -> ModuleLoadResponse {
        let source = if specifier.as_str() == CLOUDFLARE_WORKERS {
            Ok(CLOUDFLARE_WORKERS_SOURCE.to_owned())
        } else {
            let name = specifier
                .as_str()
                .strip_prefix(TENANT_PREFIX)
                .unwrap_or(specifier.as_str());
            self.modules.borrow().get(name).cloned().ok_or_else(|| {
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
