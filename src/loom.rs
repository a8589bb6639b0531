//! Synchronisation primitives, swapped for loom's under `cfg(loom)` so the registry's
//! concurrency can be model-checked (`RUSTFLAGS="--cfg loom" cargo test --lib --release loom`).

#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
