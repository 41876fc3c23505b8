//! How many tasks of one agent run at once: one cap per agent, taken by the
//! scheduler for the tasks it starts and by `tasks.call` for an agent run on
//! another's behalf, so a callee never runs past its cap because its callers
//! came from elsewhere.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The running-task slots of one agent.
pub(crate) struct Slots {
    sem: Arc<Semaphore>,
    cap: AtomicUsize,
    /// Woken whenever a slot is freed (the scheduler waits on it).
    listeners: Mutex<Vec<Arc<Notify>>>,
}

/// A slot held by a running task; freed on drop.
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Free the slot first, then tell whoever waits for one.
        drop(self.permit.take());
        for listener in self.slots.listeners.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            listener.notify_one();
        }
    }
}

impl Slots {
    /// Slots without a cap (until [`Slots::limit`]).
    pub fn unlimited() -> Arc<Slots> {
        Arc::new(Slots {
            sem: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
            cap: AtomicUsize::new(Semaphore::MAX_PERMITS),
            listeners: Mutex::default(),
        })
    }

    /// Lowers the cap to `n` (at least 1). Slots already taken stay taken.
    pub fn limit(&self, n: usize) {
        let n = n.max(1);
        let cap = self.cap.load(Relaxed);
        if n < cap {
            self.sem.forget_permits(cap - n);
        } else {
            self.sem.add_permits(n - cap);
        }
        self.cap.store(n, Relaxed);
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap.load(Relaxed)
    }

    /// Whether a slot is free now.
    pub fn available(&self) -> bool {
        self.sem.available_permits() > 0
    }

    /// Takes a slot if one is free.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let permit = self.sem.clone().try_acquire_owned().ok()?;
        Some(Slot { permit: Some(permit), slots: self.clone() })
    }

    /// Waits for a slot.
    pub async fn take(self: &Arc<Self>) -> Slot {
        let permit = self.sem.clone().acquire_owned().await.expect("the semaphore is never closed");
        Slot { permit: Some(permit), slots: self.clone() }
    }

    /// Wakes `notify` whenever a slot is freed (once, however often it is given).
    pub fn on_free(&self, notify: Arc<Notify>) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        if !listeners.iter().any(|l| Arc::ptr_eq(l, &notify)) {
            listeners.push(notify);
        }
    }
}
