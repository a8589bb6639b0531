//! Synchronisation primitives, swapped for loom's under `cfg(procwatch_loom)` so the registry's
//! concurrency can be model-checked (`RUSTFLAGS="--cfg procwatch_loom" cargo test --lib --release loom`).

#[cfg(procwatch_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(procwatch_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
