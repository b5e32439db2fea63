//! An isolate's memory outside the JavaScript heap: the budget its
//! ArrayBuffers are allocated against.
//!
//! V8's heap limit bounds JavaScript objects, but an ArrayBuffer's bytes live
//! outside the heap, in memory V8 asks the embedder's allocator for. Every
//! isolate gets its own allocator ([`budget_allocator`]) that counts the bytes
//! its buffers hold and refuses an allocation that would take them past the
//! isolate's memory limit: V8 then throws `RangeError: Array buffer
//! allocation failed` in the worker, which may catch it, and the node's RSS
//! never grows by more than the limit on its behalf. Buffers are freed from
//! any thread (V8 frees backing stores during GC), so the count is atomic.
//!
//! Buffers made in Rust and handed to JavaScript (a KV value, a body chunk)
//! are not allocated here; each is bounded by the limit of the API that makes
//! it.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use deno_core::v8;

/// The ArrayBuffer bytes one isolate holds, against its limit.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
}

impl MemoryBudget {
    /// Bytes held by the isolate's ArrayBuffers now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn reserve(&self, len: usize) -> bool {
        let mut current = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = current.checked_add(len).filter(|n| *n <= self.limit) else {
                return false;
            };
            match self.used.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    fn release(&self, len: usize) {
        self.used.fetch_sub(len, Ordering::AcqRel);
    }
}

unsafe extern "C" fn allocate(budget: &MemoryBudget, len: usize) -> *mut c_void {
    if !budget.reserve(len) {
        return std::ptr::null_mut();
    }
    // SAFETY: calloc with a count of 1 is always a valid call; a null result is
    // handled (V8 reports the failure to JavaScript).
    let p = unsafe { libc::calloc(1, len.max(1)) };
    if p.is_null() {
        budget.release(len);
    }
    p
}

unsafe extern "C" fn allocate_uninitialized(budget: &MemoryBudget, len: usize) -> *mut c_void {
    if !budget.reserve(len) {
        return std::ptr::null_mut();
    }
    // SAFETY: as above; V8 initialises what it asked for uninitialised.
    let p = unsafe { libc::malloc(len.max(1)) };
    if p.is_null() {
        budget.release(len);
    }
    p
}

unsafe extern "C" fn free(budget: &MemoryBudget, data: *mut c_void, len: usize) {
    // SAFETY: `data` came from `allocate` or `allocate_uninitialized` above.
    unsafe { libc::free(data) };
    budget.release(len);
}

unsafe extern "C" fn drop_budget(budget: *const MemoryBudget) {
    // SAFETY: the pointer is the one `budget_allocator` leaked with
    // `Arc::into_raw`, handed back once when V8 drops the allocator.
    drop(unsafe { Arc::from_raw(budget) });
}

static VTABLE: v8::RustAllocatorVtable<MemoryBudget> = v8::RustAllocatorVtable {
    allocate,
    allocate_uninitialized,
    free,
    drop: drop_budget,
};

/// An ArrayBuffer allocator that holds an isolate's buffers to `limit` bytes,
/// and the budget it counts against.
pub fn budget_allocator(limit: usize) -> (v8::UniqueRef<v8::Allocator>, Arc<MemoryBudget>) {
    let budget = Arc::new(MemoryBudget {
        used: AtomicUsize::new(0),
        limit,
    });
    let handle = Arc::into_raw(budget.clone());
    // SAFETY: `handle` is a live `MemoryBudget` the allocator owns one count
    // of, given back in `drop_budget`; the vtable's functions expect exactly it.
    let allocator = unsafe { v8::new_rust_allocator(handle, &VTABLE) };
    (allocator, budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_past_its_limit_and_frees() {
        let budget = MemoryBudget {
            used: AtomicUsize::new(0),
            limit: 100,
        };
        assert!(budget.reserve(60));
        assert!(!budget.reserve(41));
        assert!(budget.reserve(40));
        budget.release(60);
        assert_eq!(budget.used(), 40);
        assert!(!budget.reserve(usize::MAX));
    }
}
