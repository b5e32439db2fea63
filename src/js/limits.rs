//! CPU-time limit: a watchdog thread that terminates JavaScript which has used more
//! than its CPU budget.
//!
//! Design. Every isolate thread owns one [`ThreadSlot`] with its POSIX thread CPU
//! clock. Before the engine runs JavaScript (a request's dispatch, an event-loop
//! turn, a module evaluation) the isolate *arms* the slot with its `IsolateHandle`,
//! the thread's CPU time at that moment and the budget left; after, it *disarms*
//! it and reads how much CPU the segment used. The watchdog wakes every
//! millisecond, reads each armed slot's thread CPU clock (not wall time: a thread
//! that is descheduled does not burn its budget) and calls `TerminateExecution` on
//! the isolate whose segment is over budget. A generation counter guards against
//! terminating an isolate whose segment has already ended.
//!
//! Only one isolate runs on a thread at a time, so one slot per thread suffices.
//! Sleeping in `await` uses no CPU and no budget.
//!
//! Several requests in one segment: an event-loop turn may run continuations of
//! many requests. The segment then has a generous overall budget, and the CPU
//! attribution (`cpu.rs`) tells the slot at every switch whose code runs now
//! and how much budget that request has left ([`owner_changed`]); the watchdog
//! measures each owner's run from the first tick it sees it, so a runaway is
//! stopped within about a millisecond of its own budget, and a turn that runs
//! many requests' modest work in a row is not.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// One isolate thread's clock and its currently running segment.
pub struct ThreadSlot {
    clock: libc::clockid_t,
    generation: AtomicU64,
    armed: AtomicBool,
    start_ns: AtomicU64,
    budget_ns: AtomicU64,
    fired: AtomicBool,
    handle: Mutex<Option<v8::IsolateHandle>>,
    /// The segment's JavaScript has been terminated (after `fired`).
    stopped: AtomicBool,
    /// Bumped at each change of the request running in the segment.
    owner_switch: AtomicU64,
    /// The budget the request running now has left (`u64::MAX`: none of its
    /// own, the segment's budget alone applies).
    owner_budget_ns: AtomicU64,
}

/// The outcome of one metered segment.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub cpu: Duration,
    /// The watchdog terminated the segment for exceeding its budget.
    pub over_budget: bool,
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clock id comes from
    // pthread_getcpuclockid of a live thread (or CLOCK_THREAD_CPUTIME_ID).
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time the calling thread has used so far.
pub fn thread_cpu_now() -> Duration {
    Duration::from_nanos(clock_ns(libc::CLOCK_THREAD_CPUTIME_ID))
}

struct Watchdog {
    slots: Mutex<Vec<Arc<ThreadSlot>>>,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let _ = std::thread::Builder::new()
            .name("edged-cpu-watchdog".into())
            .spawn(watchdog_loop);
        Watchdog {
            slots: Mutex::new(Vec::new()),
        }
    })
}

fn watchdog_loop() {
    // Per slot: the (segment generation, owner switch) last seen and the
    // thread's CPU clock when it was first seen.
    let mut owners: std::collections::HashMap<usize, (u64, u64, u64)> = Default::default();
    loop {
        std::thread::sleep(Duration::from_millis(1));
        let slots: Vec<Arc<ThreadSlot>> = match watchdog().slots.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for slot in slots {
            if !slot.armed.load(Ordering::Acquire) {
                continue;
            }
            let generation = slot.generation.load(Ordering::Acquire);
            let now = clock_ns(slot.clock);
            let used = now.saturating_sub(slot.start_ns.load(Ordering::Acquire));
            let mut over = used > slot.budget_ns.load(Ordering::Acquire);
            let owner_budget = slot.owner_budget_ns.load(Ordering::Acquire);
            if !over && owner_budget != u64::MAX {
                let switch = slot.owner_switch.load(Ordering::Acquire);
                let key = Arc::as_ptr(&slot) as usize;
                let seen = owners.entry(key).or_insert((generation, switch, now));
                if seen.0 != generation || seen.1 != switch {
                    *seen = (generation, switch, now);
                }
                over = now.saturating_sub(seen.2) > owner_budget;
            }
            // Once decided, ask at every tick until tenant code is stopped
            // (the interrupt waits for a point in tenant code).
            let pending =
                slot.fired.load(Ordering::Acquire) && !slot.stopped.load(Ordering::Acquire);
            if !over && !pending {
                continue;
            }
            let guard = match slot.handle.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if slot.armed.load(Ordering::Acquire)
                && slot.generation.load(Ordering::Acquire) == generation
                && !slot.stopped.load(Ordering::Acquire)
            {
                if let Some(handle) = guard.as_ref() {
                    slot.fired.store(true, Ordering::Release);
                    handle.request_interrupt(stop_tenant_code, std::ptr::null_mut());
                }
            }
        }
    }
}

extern "C" {
    // rusty_v8's binding (its safe wrapper needs a context scope, which an
    // interrupt callback does not have): the script of the innermost
    // JavaScript frame, or null.
    fn v8__StackTrace__CurrentScriptNameOrSourceURL(isolate: *mut v8::Isolate)
        -> *const v8::String;
}

/// Runs on the isolate's thread at V8's next interrupt check after the
/// watchdog decided: terminates the JavaScript if tenant code is running, and
/// otherwise (the runtime's own JavaScript, such as deno_core building an op's
/// error, which must not be cut short) does nothing: the watchdog asks again
/// a millisecond later. deno_core cannot survive a termination in the middle
/// of its own work, so the runaway is stopped at the first point that is the
/// tenant's.
extern "C" fn stop_tenant_code(isolate: &mut v8::Isolate, _data: *mut std::ffi::c_void) {
    let tenant = {
        // SAFETY: interrupt callbacks run on the isolate's thread, with the
        // isolate entered; a callback scope over it is sound, and the handle
        // V8 returns lives in the handle scope made here.
        let callback = &mut unsafe { v8::CallbackScope::new(&mut *isolate) };
        let scope = &mut v8::HandleScope::new(callback);
        let isolate_ptr: *mut v8::Isolate = &mut **scope;
        let name = unsafe { v8__StackTrace__CurrentScriptNameOrSourceURL(isolate_ptr) };
        // SAFETY: a non-null result is a live handle to a string (see above).
        !name.is_null()
            && unsafe { &*name }
                .to_rust_string_lossy(scope)
                .starts_with(super::loader::TENANT_PREFIX)
    };
    if tenant {
        SLOT.with(|cell| {
            if let Some(slot) = cell.borrow().as_ref() {
                slot.stopped.store(true, Ordering::Release);
            }
        });
        isolate.terminate_execution();
    }
}

/// The request running in this thread's segment changed; it has `left` of
/// its CPU budget (`None`: nobody's code, the segment's budget applies).
pub fn owner_changed(left: Option<Duration>) {
    SLOT.with(|cell| {
        if let Some(slot) = cell.borrow().as_ref() {
            let ns = left.map_or(u64::MAX, |d| d.as_nanos().min(u64::MAX as u128 - 1) as u64);
            slot.owner_budget_ns.store(ns, Ordering::Release);
            slot.owner_switch.fetch_add(1, Ordering::AcqRel);
        }
    });
}

thread_local! {
    static SLOT: RefCell<Option<Arc<ThreadSlot>>> = const { RefCell::new(None) };
}

fn current_slot() -> Arc<ThreadSlot> {
    SLOT.with(|cell| {
        cell.borrow_mut()
            .get_or_insert_with(|| {
                let mut clock: libc::clockid_t = libc::CLOCK_THREAD_CPUTIME_ID;
                // SAFETY: pthread_self() is the calling, live thread; `clock` is a
                // valid out-pointer. On failure we keep CLOCK_THREAD_CPUTIME_ID,
                // which the watchdog would read for its own thread: the limit then
                // does not fire, but nothing unsafe happens.
                unsafe {
                    libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock);
                }
                let slot = Arc::new(ThreadSlot {
                    clock,
                    generation: AtomicU64::new(0),
                    armed: AtomicBool::new(false),
                    start_ns: AtomicU64::new(0),
                    budget_ns: AtomicU64::new(0),
                    fired: AtomicBool::new(false),
                    handle: Mutex::new(None),
                    stopped: AtomicBool::new(false),
                    owner_switch: AtomicU64::new(0),
                    owner_budget_ns: AtomicU64::new(u64::MAX),
                });
                let wd = watchdog();
                match wd.slots.lock() {
                    Ok(mut s) => s.push(slot.clone()),
                    Err(p) => p.into_inner().push(slot.clone()),
                }
                slot
            })
            .clone()
    })
}

/// Whether the JavaScript running on this thread has been stopped for its CPU
/// budget (the watchdog fired for the current segment). Rust work done inside
/// the segment on the request's behalf (SQL) polls this to stop early.
pub fn over_budget() -> bool {
    SLOT.with(|cell| {
        cell.borrow().as_ref().is_some_and(|slot| {
            slot.armed.load(Ordering::Acquire) && slot.fired.load(Ordering::Acquire)
        })
    })
}

/// Runs `f` (which enters JavaScript on `handle`'s isolate) with a CPU budget.
/// When the budget runs out, the watchdog terminates the JavaScript that `f` runs
/// (at the first interrupt check in tenant code: [`stop_tenant_code`]); the
/// caller learns it from [`Segment::over_budget`] and must discard the isolate.
pub fn metered<R>(
    handle: &v8::IsolateHandle,
    budget: Duration,
    f: impl FnOnce() -> R,
) -> (R, Segment) {
    let slot = current_slot();
    {
        let mut h = match slot.handle.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *h = Some(handle.clone());
    }
    slot.fired.store(false, Ordering::Release);
    slot.stopped.store(false, Ordering::Release);
    slot.owner_budget_ns.store(u64::MAX, Ordering::Release);
    slot.generation.fetch_add(1, Ordering::AcqRel);
    let start = clock_ns(slot.clock);
    slot.start_ns.store(start, Ordering::Release);
    slot.budget_ns.store(
        budget.as_nanos().min(u64::MAX as u128) as u64,
        Ordering::Release,
    );
    slot.armed.store(true, Ordering::Release);
    let result = f();
    slot.armed.store(false, Ordering::Release);
    slot.generation.fetch_add(1, Ordering::AcqRel);
    let used = clock_ns(slot.clock).saturating_sub(start);
    let over_budget = slot.fired.swap(false, Ordering::AcqRel);
    (
        result,
        Segment {
            cpu: Duration::from_nanos(used),
            over_budget,
        },
    )
}
