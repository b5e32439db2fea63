//! A backend the node provides after the isolates that use it exist: the
//! Durable Object directory and the service bindings are actors started after
//! the isolate threads, so hosts hold an empty slot that the node fills once.

use std::sync::{Arc, OnceLock};

pub struct LateBound<T: ?Sized>(Arc<OnceLock<Arc<T>>>);

impl<T: ?Sized> LateBound<T> {
    /// Fills the slot; later calls are ignored.
    pub fn set(&self, backend: Arc<T>) {
        let _ = self.0.set(backend);
    }

    pub fn get(&self) -> Option<Arc<T>> {
        self.0.get().cloned()
    }
}

impl<T: ?Sized> Clone for LateBound<T> {
    fn clone(&self) -> Self {
        LateBound(self.0.clone())
    }
}

impl<T: ?Sized> Default for LateBound<T> {
    fn default() -> Self {
        LateBound(Arc::default())
    }
}
