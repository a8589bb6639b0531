//! State shared by the watcher, its streams and its backend.

use crate::loom::{Mutex, MutexGuard};
use crate::registry::Registry;
use crate::BackendKind;

/// The registry behind its lock, plus the facts every party needs.
pub(crate) struct Shared {
    registry: Mutex<Registry>,
    pub(crate) backend: BackendKind,
}

impl Shared {
    pub(crate) fn new(backend: BackendKind) -> Shared {
        Shared {
            registry: Mutex::new(Registry::new()),
            backend,
        }
    }

    /// Locks the registry. A panic while it was held (a bug) does not make every later call
    /// panic too: the registry's state is only changed by complete, syscall-free steps.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Registry> {
        match self.registry.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().is_closed()
    }
}
