//! Who used the CPU of an event-loop turn: per-request CPU accounting when
//! several requests share an isolate.
//!
//! Design. The watchdog (`limits.rs`) measures each synchronous section of
//! JavaScript with the thread's CPU clock. When one request is live in the
//! isolate, the whole section is its. When several are, a section may run
//! continuations of any of them, so the section is split by who was running:
//! V8's promise hook (`before`/`after` each promise reaction, which is where
//! continuations run) and the runtime's timer dispatch mark each switch of the
//! current request, and the wall time between switches — a cheap clock — is
//! each request's share of the section. The section's measured CPU is then
//! divided in those proportions. Glue that runs for no request (op results
//! arriving, the runtime's own bookkeeping) is charged to nobody.
//!
//! The hook makes every promise operation slower, so it is installed only for
//! sections that run while two or more requests are live, and removed after.
//! It also tells which request was running when the watchdog stopped a
//! runaway section, so that request, and not its neighbours, is the one that
//! exceeded its limit.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use deno_core::v8;

use super::context::RequestId;

#[derive(Debug, Default)]
struct Tracker {
    active: bool,
    current: RequestId,
    since: Option<Instant>,
    shares: Vec<(RequestId, Duration)>,
    /// The CPU budget each live request had left when the section began.
    budgets: Vec<(RequestId, Duration)>,
}

impl Tracker {
    fn switch(&mut self, to: RequestId) {
        if to == self.current {
            return;
        }
        if self.active {
            // The watchdog holds the request now running to its own budget.
            let left = self
                .budgets
                .iter()
                .find(|(id, _)| *id == to)
                .map(|(_, d)| *d);
            super::limits::owner_changed(left);
        }
        let now = Instant::now();
        if let Some(since) = self.since {
            let spent = now.saturating_duration_since(since);
            match self.shares.iter_mut().find(|(id, _)| *id == self.current) {
                Some((_, d)) => *d += spent,
                None => self.shares.push((self.current, spent)),
            }
        }
        self.current = to;
        self.since = Some(now);
    }
}

thread_local! {
    static TRACKER: RefCell<Tracker> = RefCell::new(Tracker::default());
}

extern "C" {
    // rusty_v8's binding; `None` (a null hook) removes it, which the safe
    // `set_promise_hook` cannot express.
    fn v8__Isolate__SetPromiseHook(isolate: *mut v8::Isolate, hook: Option<v8::PromiseHook>);
}

extern "C" fn promise_hook(
    kind: v8::PromiseHookType,
    promise: v8::Local<v8::Promise>,
    _parent: v8::Local<v8::Value>,
) {
    let to = match kind {
        v8::PromiseHookType::Before => {
            // SAFETY: the hook runs inside V8 on the isolate's thread, with the
            // promise's context entered; a callback scope over it is sound.
            let callback = &mut unsafe { v8::CallbackScope::new(promise) };
            let scope = &mut v8::HandleScope::new(callback);
            super::context::current(scope).unwrap_or(0)
        }
        v8::PromiseHookType::After => 0,
        _ => return,
    };
    TRACKER.with(|t| t.borrow_mut().switch(to));
}

/// The current request changed (a timer is about to run its callback).
pub fn switch_to(id: RequestId) {
    TRACKER.with(|t| {
        let mut t = t.borrow_mut();
        if t.active {
            t.switch(id);
        }
    });
}

/// Starts splitting a section of JavaScript on `isolate` among requests;
/// `owner` runs first (0: none); `budgets` is what each live request has left.
/// Only worth it with two or more live requests.
pub fn begin(isolate: &mut v8::Isolate, owner: RequestId, budgets: Vec<(RequestId, Duration)>) {
    TRACKER.with(|t| {
        let mut t = t.borrow_mut();
        t.active = true;
        t.current = RequestId::MAX;
        t.since = None;
        t.shares.clear();
        t.budgets = budgets;
        t.switch(owner);
    });
    // SAFETY: `isolate` is live and entered on this thread.
    unsafe { v8__Isolate__SetPromiseHook(isolate, Some(promise_hook)) };
}

/// Ends the section: the wall time each request ran in it (0 for nobody's
/// glue), and which request was running when it ended.
pub fn end(isolate: &mut v8::Isolate) -> (Vec<(RequestId, Duration)>, RequestId) {
    // SAFETY: as in `begin`.
    unsafe { v8__Isolate__SetPromiseHook(isolate, None) };
    TRACKER.with(|t| {
        let mut t = t.borrow_mut();
        let last = t.current;
        t.active = false;
        t.switch(RequestId::MAX);
        (std::mem::take(&mut t.shares), last)
    })
}

/// A section's measured `cpu` divided among the requests by their wall
/// shares; nobody's glue (id 0) is charged to nobody.
pub fn split(walls: &[(RequestId, Duration)], cpu: Duration) -> Vec<(RequestId, Duration)> {
    let total: Duration = walls.iter().map(|(_, d)| *d).sum();
    if total.is_zero() {
        return Vec::new();
    }
    walls
        .iter()
        .filter(|(id, _)| *id != 0 && *id != RequestId::MAX)
        .map(|(id, d)| (*id, cpu.mul_f64(d.as_secs_f64() / total.as_secs_f64())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_split_wall_time_by_owner() {
        let mut t = Tracker::default();
        t.switch(1);
        std::thread::sleep(Duration::from_millis(20));
        t.switch(0);
        std::thread::sleep(Duration::from_millis(5));
        t.switch(2);
        std::thread::sleep(Duration::from_millis(10));
        t.switch(1);
        t.switch(RequestId::MAX);
        let one = t
            .shares
            .iter()
            .find(|(id, _)| *id == 1)
            .map(|s| s.1)
            .unwrap();
        let two = t
            .shares
            .iter()
            .find(|(id, _)| *id == 2)
            .map(|s| s.1)
            .unwrap();
        assert!(one >= Duration::from_millis(20) && two >= Duration::from_millis(10));
        assert!(one > two);
    }
}
