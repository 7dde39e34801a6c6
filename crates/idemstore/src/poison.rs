//! Poison: after a failed fsync or a background thread's panic the store
//! refuses every later write, with the first cause in its error, instead of
//! acknowledging what it can no longer make durable.

use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Default)]
pub(crate) struct Poison {
    poisoned: AtomicBool,
    cause: Mutex<Option<String>>,
}

impl Poison {
    /// Marks the store unusable for writes; the first cause is kept.
    pub(crate) fn set(&self, cause: String) {
        let mut c = self.cause.lock();
        if c.is_none() {
            *c = Some(cause);
        }
        self.poisoned.store(true, Ordering::SeqCst);
    }

    /// Fails with [`Error::Poisoned`] (and the first cause) once set.
    pub(crate) fn check(&self) -> Result<()> {
        if self.poisoned.load(Ordering::SeqCst) {
            let cause = self.cause.lock().clone().unwrap_or_default();
            return Err(Error::Poisoned { cause });
        }
        Ok(())
    }
}
