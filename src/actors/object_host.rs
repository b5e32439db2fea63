//! `ObjectHost`: one isolate serving many Durable Objects of one worker version
//! on one isolate thread.
//!
//! Design. As in Workers, instances of a worker's Durable Object classes may
//! share an isolate (and so its globals); each object still has its own actor,
//! mailbox, gates and database. Sharing keeps a live object to its instance and
//! its storage handles instead of a whole isolate (~3.3 MiB each before), and
//! keeps the isolate's code warm however the traffic spreads over objects.
//!
//! The host ([`ObjectHost::serve`]) owns the [`Worker`] (in `BindMode::Objects`) and one driver task
//! that polls its event loop. Objects occupy *slots*: [`ObjectHost::activate`]
//! constructs the instance, [`ObjectHost::start`] runs one of its events,
//! [`ObjectHost::deactivate`] drops it. Everything runs on the host's thread;
//! the pool keeps a weak handle per worker version and the objects' actors the
//! strong ones, so a host goes when its last object does.
//!
//! Invariant: if the isolate dies (CPU or memory limit, a broken event loop),
//! the host is dead for good: every request in flight on it has been answered
//! with the error, and every object's actor is woken to reset; the next call
//! activates the object in a fresh host.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::js::{EngineError, InvokeRequest, Reply, Worker};
use crate::state::durable::ObjectStore;

/// Object host isolates on the node.
pub(crate) const HOSTS: &str = "edged_do_hosts";

pub struct ObjectHost {
    worker: RefCell<Worker>,
    next_slot: Cell<u32>,
    /// Why the isolate died, once it has.
    death: RefCell<Option<EngineError>>,
    /// The stores of the objects it serves, by slot: their actors are woken
    /// through them when the host dies.
    stores: RefCell<HashMap<u32, Rc<ObjectStore>>>,
    driver: RefCell<Option<Waker>>,
    /// This isolate's share of its thread's load.
    _load: super::pool::LoadShare,
}

impl ObjectHost {
    /// Takes a worker bound with `BindMode::Objects` and starts driving it.
    /// Must run on the worker's isolate thread, inside an actix system.
    pub fn serve(worker: Worker, load: super::pool::LoadShare) -> Rc<Self> {
        let host = Rc::new(ObjectHost {
            _load: load,
            worker: RefCell::new(worker),
            next_slot: Cell::new(1),
            death: RefCell::new(None),
            stores: RefCell::new(HashMap::new()),
            driver: RefCell::new(None),
        });
        metrics::gauge!(HOSTS).increment(1.0);
        let weak = Rc::downgrade(&host);
        actix::spawn(std::future::poll_fn(move |cx| {
            let Some(host) = weak.upgrade() else {
                return Poll::Ready(());
            };
            {
                let mut driver = host.driver.borrow_mut();
                if !driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *driver = Some(cx.waker().clone());
                }
            }
            if host.death.borrow().is_some() {
                return Poll::Ready(());
            }
            let polled = host.worker.borrow_mut().poll(cx);
            match polled {
                Poll::Ready(fatal) => {
                    host.die(fatal);
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            }
        }));
        host
    }

    /// Why the host's isolate died, if it has.
    pub fn death(&self) -> Option<EngineError> {
        self.death.borrow().clone()
    }

    /// Marks the host dead and wakes every object's actor to reset.
    fn die(&self, cause: EngineError) {
        tracing::warn!(%cause, "Durable Object host isolate died; its objects reset");
        *self.death.borrow_mut() = Some(cause);
        for store in self.stores.borrow().values() {
            store.wake();
        }
    }

    /// Constructs an instance of `class_name` for object `id` with `store`, in
    /// a new slot. `Err(Script)`: the constructor threw (the host lives on);
    /// other errors: the host died.
    pub fn activate(
        &self,
        class_name: &str,
        id: &str,
        name: Option<&str>,
        store: Rc<ObjectStore>,
        sockets: std::sync::Arc<crate::js::hibernation::ObjectSockets>,
    ) -> Result<u32, EngineError> {
        if let Some(cause) = self.death() {
            return Err(cause);
        }
        let slot = self.next_slot.get();
        self.next_slot.set(slot.wrapping_add(1).max(1));
        let result = self.worker.borrow_mut().activate(
            slot,
            class_name,
            id,
            name,
            store.clone(),
            sockets,
            super::deployment::next_request_id(),
        );
        match result {
            Ok(()) => {
                self.stores.borrow_mut().insert(slot, store);
                self.wake_driver();
                Ok(slot)
            }
            Err(e @ EngineError::Script(_)) => Err(e),
            Err(fatal) => {
                self.die(fatal.clone());
                self.wake_driver();
                Err(fatal)
            }
        }
    }

    /// Starts one event of the object in `slot`; its outcome goes to `reply`.
    /// `Err`: the host is dead (the reply has been answered).
    pub fn start(
        &self,
        slot: u32,
        request_id: u64,
        request: InvokeRequest,
        reply: Reply,
    ) -> Result<(), EngineError> {
        if let Some(cause) = self.death() {
            let _ = reply.send(Err(cause.clone().into()));
            return Err(cause);
        }
        let result = self
            .worker
            .borrow_mut()
            .start_in(Some(slot), request_id, request, reply);
        if let Err(fatal) = &result {
            self.die(fatal.clone());
        }
        self.wake_driver();
        result
    }

    /// Whether the object in `slot` must stay live though no event runs: it
    /// streams a response or holds an accepted WebSocket.
    pub fn busy(&self, slot: u32) -> bool {
        self.death.borrow().is_none() && self.worker.borrow().slot_busy(slot)
    }

    /// Drops the object in `slot` (its actor is stopping).
    pub fn deactivate(&self, slot: u32) {
        self.stores.borrow_mut().remove(&slot);
        if self.death.borrow().is_none() {
            self.worker.borrow_mut().deactivate(slot);
        }
    }

    fn wake_driver(&self) {
        if let Some(w) = self.driver.borrow().as_ref() {
            w.wake_by_ref();
        }
    }
}

impl Drop for ObjectHost {
    fn drop(&mut self) {
        metrics::gauge!(HOSTS).decrement(1.0);
        // Let the driver task see the host is gone and end.
        if let Some(w) = self.driver.get_mut().take() {
            w.wake();
        }
    }
}
