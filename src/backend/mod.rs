//! Backends: where process events come from.
//!
//! # What a backend owes the registry
//!
//! A backend turns one kernel mechanism into [`Input`](crate::registry::Input) values and
//! feeds them to the shared registry. Every backend must:
//!
//! 1. **Start covered.** Once [`ProcWatcher::build`](crate::Builder::build) returns, the source
//!    is armed: any event that happens after a pid is attached (under the registry lock)
//!    reaches the registry. `watch` relies on this to promise that nothing after it returns is
//!    missed.
//! 2. **Keep per-process order.** Inputs about one process arrive in the order they happened.
//!    A backend that can see a new process before its parent's fork (ptrace) sends `Birth`
//!    first; the registry holds the child in flux until the `Fork` claims it.
//! 3. **Report process exit once.** Either per thread (`ThreadStart`/`ThreadExit`, and the
//!    registry works out the last thread) or per process (`Exit`), never both for one process.
//! 4. **Never lose silently.** When the source drops messages, call `mark_lost`, then feed a
//!    `/proc` resync (see [`crate::procfs`]).
//! 5. **Drain at its own pace.** Never block on a consumer: the registry coalesces, so a backend
//!    only needs the registry lock for short sections that never wait.
//! 6. **Stop without blocking.** [`Backend::shutdown`] only signals; the backend's thread or
//!    task releases its own resources (fds, traced processes) when it sees the signal.

pub(crate) mod netlink;

use crate::BackendKind;

/// The handle a watcher keeps on its running backend.
pub(crate) trait Backend: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Asks the backend to stop. Must not block; called from `Drop`.
    fn shutdown(&self);
}
