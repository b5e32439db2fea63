//! Time as Workers shows it: `Date.now()`, `new Date()` and `performance.now()`
//! do not advance while a request's code runs; they advance across I/O.
//!
//! Workers freezes the clock during execution so that code cannot time itself
//! precisely (a Spectre mitigation). Here the clock of an isolate thread is
//! read once each time the engine enters JavaScript (a dispatch, an event-loop
//! turn, a module evaluation: [`freeze`], called by the engine), and the ops
//! behind the clocks answer with that reading. Between two entries there is
//! always an await on I/O or a timer, so time moves exactly across I/O.

use std::cell::Cell;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use deno_core::{op2, OpState};

thread_local! {
    static FROZEN: Cell<Option<(f64, Instant)>> = const { Cell::new(None) };
}

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0)
}

/// Reads the clock for the JavaScript about to run on this thread.
pub fn freeze() {
    FROZEN.with(|f| f.set(Some((wall_ms(), Instant::now()))));
}

fn frozen() -> (f64, Instant) {
    FROZEN.with(|f| match f.get() {
        Some(t) => t,
        None => {
            let t = (wall_ms(), Instant::now());
            f.set(Some(t));
            t
        }
    })
}

/// `Date.now()`: whole milliseconds since the epoch, as of the last I/O.
#[op2(fast)]
pub fn op_edged_date_now() -> f64 {
    frozen().0
}

/// Stands in for deno_web's `op_now` (`performance.now()`): the time since the
/// isolate's time origin, as of the last I/O, in whole milliseconds.
#[op2(fast)]
pub fn op_edged_performance_now(state: &mut OpState, #[buffer] buf: &mut [u8]) {
    let origin = state.try_borrow::<deno_web::StartTime>().map(|s| **s);
    let elapsed = origin
        .map(|o| frozen().1.saturating_duration_since(o))
        .unwrap_or_default();
    let secs = elapsed.as_secs() as u32;
    let nanos = elapsed.subsec_millis() * 1_000_000;
    if buf.len() >= 8 {
        buf[0..4].copy_from_slice(&secs.to_ne_bytes());
        buf[4..8].copy_from_slice(&nanos.to_ne_bytes());
    }
}
