//! A blank isolate: a V8 isolate with the runtime bootstrapped from the startup
//! snapshot and no tenant code. [`BlankIsolate::bind`] turns it into a
//! [`Worker`](super::worker::Worker) bound to exactly one worker version; there is
//! no way back, so a tenant's isolate can never serve another tenant.

use std::cell::Cell;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use deno_core::{v8, JsRuntime, PollEventLoopOptions, RuntimeOptions};

use super::context::{ContextLimits, Contexts, SharedContexts};
use super::error::EngineError;
use super::extension::{extensions, EdgedPermissions, WorkerIdentity};
use super::limits::{metered, Segment};
use super::loader::{TenantLoader, TENANT_PREFIX};
use super::script::WorkerScript;
use super::snapshot::startup_snapshot;
use super::worker::Worker;

/// How far past its limit an isolate's heap may grow while it is being
/// terminated for reaching it (see the near-heap-limit callback).
const HEAP_HEADROOM: usize = 1536 << 20;

/// Per-isolate limits.
#[derive(Debug, Clone, Copy)]
pub struct IsolateLimits {
    /// CPU time one request may use.
    pub cpu: Duration,
    /// CPU time the tenant's top-level module evaluation may use.
    pub startup_cpu: Duration,
    /// Heap limit in bytes (and, separately, the ArrayBuffer budget).
    pub heap_bytes: usize,
    /// Wall time a request may take to produce its response (its head; a
    /// streamed body may go on); `None`: no limit.
    pub response_timeout: Option<Duration>,
}

impl Default for IsolateLimits {
    fn default() -> Self {
        IsolateLimits {
            cpu: Duration::from_millis(50),
            startup_cpu: Duration::from_millis(400),
            heap_bytes: 128 << 20,
            response_timeout: Some(Duration::from_secs(300)),
        }
    }
}

/// What the node provides to isolates beyond the engine: storage backends.
/// Cloned into every pool; a bound isolate sees only its worker's share.
#[derive(Clone, Default)]
pub struct HostServices {
    pub kv: Option<std::sync::Arc<dyn super::kv::KvBackend>>,
    pub durable_objects: super::durable::DurableObjectSlot,
    pub policy: std::sync::Arc<RuntimePolicy>,
    pub cache: Option<std::sync::Arc<dyn super::cache::CacheBackend>>,
    pub services: super::service::ServiceSlot,
}

/// Node-wide rules for what a request may do beyond its CPU and memory.
#[derive(Debug)]
pub struct RuntimePolicy {
    /// Where outbound `fetch()` may go.
    pub egress: std::sync::Arc<super::egress::EgressPolicy>,
    /// Outbound `fetch()` calls per request.
    pub subrequests: u32,
    /// How long `ctx.waitUntil()` work may run after the response.
    pub wait_until: Duration,
    /// Where a request goes when its worker threw after `passThroughOnException()`.
    pub pass_through_origin: Option<String>,
}

impl Default for RuntimePolicy {
    fn default() -> Self {
        RuntimePolicy {
            egress: Default::default(),
            subrequests: 50,
            wait_until: Duration::from_secs(30),
            pass_through_origin: None,
        }
    }
}

/// What `prepare` in `runtime/10_worker.js` receives besides the bindings.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct PrepareOptions<'a> {
    pass_through_origin: Option<&'a str>,
    /// The worker may import `node:` modules.
    node: bool,
    node_process_env: bool,
}

/// What a bound isolate serves.
pub enum BindMode {
    /// The worker's default export (`fetch(request, env, ctx)`).
    Worker,
    /// A host for Durable Objects of the worker's exported classes: objects are
    /// added with [`Worker::activate`] and share the isolate.
    Objects,
}

/// Many isolates share one thread, and V8 keeps a per-thread stack of *entered*
/// isolates (an isolate is entered when created and must be the current one when
/// dropped). So an isolate here is entered only while it is used: [`Entered`] for
/// each synchronous section, exited right after, and entered once more to drop.
/// Sections never span an `await`, so entries nest properly on the thread.
pub(crate) struct Entered(*mut v8::Isolate);

impl Entered {
    /// # Safety
    /// `isolate` must be alive for the guard's lifetime.
    unsafe fn new(isolate: *mut v8::Isolate) -> Self {
        (*isolate).enter();
        Entered(isolate)
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: the isolate outlives the guard (see `new`), and was entered by it.
        unsafe { (*self.0).exit() }
    }
}

/// The engine state every isolate shares between its blank and bound phases.
pub(crate) struct Engine {
    pub runtime: ManuallyDrop<JsRuntime>,
    isolate: *mut v8::Isolate,
    pub handle: v8::IsolateHandle,
    pub heap_exceeded: Rc<Cell<bool>>,
    pub limits: IsolateLimits,
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: the isolate is alive until the runtime is dropped; dropping it
        // exits it, balancing this enter.
        unsafe {
            (*self.isolate).enter();
            ManuallyDrop::drop(&mut self.runtime);
        }
    }
}

impl Engine {
    /// Runs one synchronous section of JavaScript: entered and CPU-metered.
    pub fn run<R>(
        &mut self,
        budget: Duration,
        f: impl FnOnce(&mut JsRuntime) -> R,
    ) -> (R, Segment) {
        let _entered = self.enter();
        super::clock::freeze();
        let handle = self.handle.clone();
        let runtime = &mut *self.runtime;
        metered(&handle, budget, || f(runtime))
    }

    /// Enters the isolate for one synchronous section.
    pub fn enter(&self) -> Entered {
        // SAFETY: `self.isolate` points into `self.runtime`, alive while `self` is;
        // callers keep the guard inside a borrow of the engine.
        unsafe { Entered::new(self.isolate) }
    }

    /// Maps a terminated execution to the limit that caused it.
    pub fn termination_cause(&self, over_cpu: bool) -> Option<EngineError> {
        if self.heap_exceeded.get() {
            Some(EngineError::MemoryLimit)
        } else if over_cpu {
            Some(EngineError::CpuLimit)
        } else {
            None
        }
    }
}

/// A pre-created isolate waiting in a pool for its tenant.
pub struct BlankIsolate {
    // Field order is drop order: handles into the isolate go before the engine.
    prepare: v8::Global<v8::Function>,
    bind: v8::Global<v8::Function>,
    bind_object: v8::Global<v8::Function>,
    loader: Rc<TenantLoader>,
    engine: Engine,
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

impl BlankIsolate {
    /// Creates an isolate from the startup snapshot. Must run on the thread that
    /// will own the isolate for its whole life.
    pub fn new(limits: IsolateLimits) -> Result<Self, EngineError> {
        let loader = TenantLoader::new();
        // ArrayBuffers count against the same limit as the heap, in a budget
        // of their own (`memory.rs`).
        let (allocator, _budget) = super::memory::budget_allocator(limits.heap_bytes);
        let create_params = v8::CreateParams::default()
            .heap_limits(0, limits.heap_bytes)
            .array_buffer_allocator(allocator);
        let mut runtime = JsRuntime::try_new(RuntimeOptions {
            extensions: extensions(false),
            startup_snapshot: Some(startup_snapshot()),
            module_loader: Some(loader.clone()),
            create_params: Some(create_params),
            ..Default::default()
        })
        .map_err(internal)?;
        let isolate: *mut v8::Isolate = &mut **runtime.v8_isolate();
        // Creation entered the isolate; leave it until it is used (see `Entered`).
        // SAFETY: the isolate was just created and entered on this thread.
        unsafe { (*isolate).exit() };
        let _entered = unsafe { Entered::new(isolate) };
        // As in Workers, Atomics.wait() may not block an isolate thread (it
        // throws a TypeError instead).
        runtime.v8_isolate().set_allow_atomics_wait(false);
        // Nor does it compile WebAssembly from bytes at run time: only the
        // worker's uploaded modules are compiled (`loader`).
        runtime
            .v8_isolate()
            .set_allow_wasm_code_generation_callback(super::loader::allow_wasm_code_generation);
        {
            let op_state = runtime.op_state();
            let mut state = op_state.borrow_mut();
            state.put(EdgedPermissions { egress: None });
            state.put(Contexts::new(ContextLimits::default()));
        }

        let handle = runtime.v8_isolate().thread_safe_handle();
        let heap_exceeded = Rc::new(Cell::new(false));
        {
            let handle = handle.clone();
            let flag = heap_exceeded.clone();
            runtime.add_near_heap_limit_callback(move |current, _initial| {
                // Terminate the JavaScript instead of letting V8 abort the
                // process. The allocation in progress must still succeed, or V8
                // aborts: one object can be as large as the longest string (1
                // GiB of two-byte characters), so the limit grows by more than
                // that. The isolate is discarded right after, memory and all.
                flag.set(true);
                handle.terminate_execution();
                current.saturating_add(HEAP_HEADROOM)
            });
        }

        let (prepare, bind, bind_object) = {
            let scope = &mut runtime.handle_scope();
            let context = scope.get_current_context();
            let global = context.global(scope);
            let key = v8::String::new(scope, "__edged_internals").ok_or_else(|| internal("key"))?;
            let internals = global
                .get(scope, key.into())
                .and_then(|v| v8::Local::<v8::Object>::try_from(v).ok())
                .ok_or_else(|| internal("runtime internals missing from snapshot"))?;
            let get_fn = |scope: &mut v8::HandleScope, name: &str| {
                let k = v8::String::new(scope, name)?;
                let v = internals.get(scope, k.into())?;
                let f = v8::Local::<v8::Function>::try_from(v).ok()?;
                Some(v8::Global::new(scope, f))
            };
            let prepare = get_fn(scope, "prepare").ok_or_else(|| internal("prepare missing"))?;
            let bind = get_fn(scope, "bind").ok_or_else(|| internal("bind missing"))?;
            let bind_object =
                get_fn(scope, "bindObjects").ok_or_else(|| internal("bindObjects missing"))?;
            // Tenant code sees neither the runtime's internals nor deno's
            // `Deno` and `__bootstrap` (its `core`, ops and primordials), nor
            // `Temporal` (not in Workers, and an unfrozen clock).
            for name in ["__edged_internals", "Deno", "__bootstrap", "Temporal"] {
                if let Some(k) = v8::String::new(scope, name) {
                    global.delete(scope, k.into());
                }
            }
            (prepare, bind, bind_object)
        };

        drop(_entered);
        Ok(BlankIsolate {
            engine: Engine {
                runtime: ManuallyDrop::new(runtime),
                isolate,
                handle,
                heap_exceeded,
                limits,
            },
            loader,
            prepare,
            bind,
            bind_object,
        })
    }

    /// Binds the isolate to one worker version: evaluates its modules and checks
    /// its default export. On error the isolate is dropped (it may hold half-run
    /// tenant code).
    pub async fn bind(
        self,
        script: &WorkerScript,
        host: &HostServices,
    ) -> Result<Worker, EngineError> {
        self.bind_as(script, host, BindMode::Worker).await
    }

    /// Binds the isolate to one worker version in the given mode.
    pub async fn bind_as(
        self,
        script: &WorkerScript,
        host: &HostServices,
        mode: BindMode,
    ) -> Result<Worker, EngineError> {
        let BlankIsolate {
            prepare,
            bind,
            bind_object,
            loader,
            mut engine,
        } = self;
        let budget = engine.limits.startup_cpu;
        let mut used = Duration::ZERO;
        let node = super::node::NodeCompat::of(
            script.compatibility_date.as_deref(),
            &script.compatibility_flags,
        );
        loader.install(&script.modules, node);
        // What the isolate may reach, all in its OpState before any tenant code.
        let mode = {
            let op_state = engine.runtime.op_state();
            let mut state = op_state.borrow_mut();
            state.put(EdgedPermissions {
                egress: Some(host.policy.egress.clone()),
            });
            state.put(WorkerIdentity {
                name: script.name.as_str().into(),
                version: script.version,
                account: script.account.as_str().into(),
                storage: script.storage.as_str().into(),
            });
            if let Some(contexts) = state.try_borrow::<SharedContexts>() {
                contexts.borrow_mut().limits = ContextLimits {
                    subrequests: host.policy.subrequests,
                    wait_until: host.policy.wait_until,
                };
            }
            let mut namespaces = std::collections::HashMap::new();
            let mut services = std::collections::HashMap::new();
            let mut kv_namespaces = std::collections::HashMap::new();
            for b in &script.bindings {
                match b {
                    crate::js::Binding::DurableObjectNamespace { name, class_name } => {
                        namespaces.insert(name.clone(), class_name.clone());
                    }
                    crate::js::Binding::Service {
                        name,
                        service,
                        entrypoint,
                        props,
                    } => {
                        services.insert(
                            name.clone(),
                            (
                                service.clone(),
                                entrypoint.clone(),
                                props.as_ref().map(|p| p.to_string()),
                            ),
                        );
                    }
                    crate::js::Binding::Assets { name } => {
                        services.insert(
                            name.clone(),
                            (
                                format!("{}{}", super::script::ASSETS_SERVICE_PREFIX, script.name),
                                None,
                                None,
                            ),
                        );
                    }
                    crate::js::Binding::KvNamespace { name, namespace } => {
                        kv_namespaces.insert(name.clone(), namespace.clone());
                    }
                    _ => {}
                }
            }
            state.put(super::durable::DoAccess {
                slot: host.durable_objects.clone(),
                worker: script.name.clone(),
                storage: script.storage.clone(),
                namespaces,
            });
            state.put(super::service::ServiceAccess {
                slot: host.services.clone(),
                account: script.account.clone(),
                services,
            });
            if let Some(cache) = &host.cache {
                state.put(super::cache::CacheAccess(cache.clone()));
            }
            if let Some(kv) = &host.kv {
                state.put(super::kv::KvAccess {
                    backend: kv.clone(),
                    namespaces: kv_namespaces,
                });
            }
            if let BindMode::Objects = mode {
                state.put(super::durable::ObjectStorages::default());
            }
            mode
        };

        // 1. env and the cloudflare:workers exports.
        let (result, seg) = engine.run(budget, |runtime| {
            let scope = &mut runtime.handle_scope();
            let bindings = deno_core::serde_v8::to_v8(scope, script.bindings_for_js())
                .map_err(|e| EngineError::Script(format!("TypeError: bad bindings: {e}")))?;
            let options = PrepareOptions {
                pass_through_origin: host.policy.pass_through_origin.as_deref(),
                node: node.async_hooks,
                node_process_env: node.process_env,
            };
            let options = deno_core::serde_v8::to_v8(scope, &options).map_err(internal)?;
            let modules = super::loader::module_values(scope, &script.modules)
                .map_err(|e| EngineError::Script(format!("TypeError: {e}")))?;
            call(scope, &prepare, &[bindings, options, modules.into()])?;
            // As in Workers: no eval() or new Function() from tenant code.
            scope
                .get_current_context()
                .set_allow_generation_from_strings(false);
            Ok::<_, EngineError>(())
        });
        used += seg.cpu;
        if let Some(e) = engine.termination_cause(seg.over_budget) {
            return Err(e);
        }
        result?;

        // 2. load and evaluate the main module (and what it imports).
        if script
            .modules
            .get(&script.main_module)
            .and_then(|m| m.esm_source())
            .is_none()
        {
            return Err(EngineError::Script(format!(
                "main module '{}' is not among the uploaded ES modules",
                script.main_module
            )));
        }
        let specifier = TenantLoader::specifier_for(&script.main_module)
            .map_err(|e| EngineError::Script(e.to_string()))?;
        // With the Node.js globals, their module evaluates first, on its own,
        // so the worker's modules (and their line and column numbers) are
        // untouched.
        let mut to_evaluate = Vec::with_capacity(2);
        if node.globals {
            let globals =
                deno_core::ModuleSpecifier::parse(super::node::GLOBALS).map_err(internal)?;
            to_evaluate.push((globals, false));
        }
        to_evaluate.push((specifier, true));
        let mut module_id = 0;
        for (specifier, main) in to_evaluate {
            module_id = {
                let isolate = engine.isolate;
                let runtime = &mut engine.runtime;
                type Loading<'a> = std::pin::Pin<
                    Box<
                        dyn Future<
                                Output = Result<deno_core::ModuleId, deno_core::error::CoreError>,
                            > + 'a,
                    >,
                >;
                let mut loading: Loading = if main {
                    Box::pin(runtime.load_main_es_module(&specifier))
                } else {
                    Box::pin(runtime.load_side_es_module(&specifier))
                };
                std::future::poll_fn(|cx| {
                    // SAFETY: the engine (and its isolate) outlives this future.
                    let _entered = unsafe { Entered::new(isolate) };
                    loading.as_mut().poll(cx)
                })
                .await
                .map_err(|e| EngineError::Script(format_core_error(&e)))?
            };
            let (evaluation, seg) = engine.run(budget.saturating_sub(used), |runtime| {
                runtime.mod_evaluate(module_id)
            });
            used += seg.cpu;
            if let Some(e) = engine.termination_cause(seg.over_budget) {
                return Err(e);
            }
            // Top-level await: drive the event loop until the evaluation settles,
            // within the startup CPU budget and a wall-clock bound.
            let mut evaluation = std::pin::pin!(evaluation);
            let settle = std::future::poll_fn(|cx| {
                let (polled, seg) = engine.run(budget.saturating_sub(used), |runtime| {
                    runtime.poll_event_loop(cx, PollEventLoopOptions::default())
                });
                used += seg.cpu;
                if let Some(e) = engine.termination_cause(seg.over_budget) {
                    return Poll::Ready(Err(e));
                }
                if let Poll::Ready(Err(e)) = polled {
                    return Poll::Ready(Err(EngineError::Script(format_core_error(&e))));
                }
                let _entered = engine.enter();
                match evaluation.as_mut().poll(cx) {
                    Poll::Ready(r) => {
                        Poll::Ready(r.map_err(|e| EngineError::Script(format_core_error(&e))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            });
            match tokio::time::timeout(Duration::from_secs(10), settle).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(EngineError::Script(
                        "Error: the main module's top-level await did not settle within 10 s"
                            .into(),
                    ))
                }
            }
        }

        // 3. check the default export and get the dispatch function.
        let mut object_fns = None;
        let (fns, seg) = engine.run(budget.saturating_sub(used), |runtime| {
            let namespace = runtime
                .get_module_namespace(module_id)
                .map_err(|e| EngineError::Script(format_core_error(&e)))?;
            let scope = &mut runtime.handle_scope();
            let ns = v8::Local::new(scope, &namespace);
            // Worker: [dispatch, clearTimers]; objects: [dispatch, clearTimers,
            // activate, deactivate].
            let fns = match mode {
                BindMode::Worker => call(scope, &bind, &[ns.into()])?,
                BindMode::Objects => call(scope, &bind_object, &[ns.into()])?,
            };
            let fns = v8::Local::<v8::Array>::try_from(fns)
                .map_err(|_| internal("bind() did not return an array"))?;
            let mut get = |i: u32| {
                fns.get_index(scope, i)
                    .and_then(|f| v8::Local::<v8::Function>::try_from(f).ok())
                    .map(|f| v8::Global::new(scope, f))
                    .ok_or_else(|| internal("bind() returned a non-function"))
            };
            let (dispatch, clear_timers) = (get(0)?, get(1)?);
            if let BindMode::Objects = mode {
                object_fns = Some(super::worker::ObjectFns {
                    activate: get(2)?,
                    deactivate: get(3)?,
                });
            }
            Ok::<_, EngineError>((dispatch, clear_timers))
        });
        if let Some(e) = engine.termination_cause(seg.over_budget) {
            return Err(e);
        }
        let (dispatch, clear_timers) = fns?;
        let contexts = engine
            .runtime
            .op_state()
            .borrow()
            .try_borrow::<SharedContexts>()
            .cloned()
            .ok_or_else(|| internal("request contexts missing"))?;
        let mut worker = Worker::new(
            engine,
            dispatch,
            clear_timers,
            contexts,
            script.name.as_str().into(),
        );
        worker.objects = object_fns;
        Ok(worker)
    }
}

/// Calls a JS function with `undefined` as receiver; an exception becomes
/// [`EngineError::Script`].
pub(crate) fn call<'s>(
    scope: &mut v8::HandleScope<'s>,
    f: &v8::Global<v8::Function>,
    args: &[v8::Local<'s, v8::Value>],
) -> Result<v8::Local<'s, v8::Value>, EngineError> {
    let tc = &mut v8::TryCatch::new(scope);
    let f = v8::Local::new(tc, f);
    let recv = v8::undefined(tc).into();
    match f.call(tc, recv, args) {
        Some(v) => Ok(v),
        None => match tc.exception() {
            Some(exception) if !tc.has_terminated() => {
                let err = deno_core::error::JsError::from_v8_exception(tc, exception);
                Err(EngineError::Script(format_js_error(&err)))
            }
            _ => Err(EngineError::Internal("execution terminated".into())),
        },
    }
}

/// `SyntaxError: Unexpected token '}' (worker.js:3:5)`: the error and where it is,
/// with the runtime's module prefix removed.
pub fn format_js_error(err: &deno_core::error::JsError) -> String {
    let mut message = err
        .exception_message
        .trim_start_matches("Uncaught ")
        .to_owned();
    if message.is_empty() {
        message = format!(
            "{}: {}",
            err.name.as_deref().unwrap_or("Error"),
            err.message.as_deref().unwrap_or("")
        );
    }
    if let Some(frame) = err.frames.first() {
        if let (Some(file), Some(line), Some(col)) =
            (&frame.file_name, frame.line_number, frame.column_number)
        {
            // Only tenant locations: the runtime's own files mean nothing to users.
            if let Some(file) = file.strip_prefix(TENANT_PREFIX) {
                message = format!("{message} ({file}:{line}:{col})");
            }
        }
    }
    message
}

fn format_core_error(err: &deno_core::error::CoreError) -> String {
    match err {
        deno_core::error::CoreError::Js(js) => format_js_error(js),
        other => other.to_string().replace(TENANT_PREFIX, ""),
    }
}
