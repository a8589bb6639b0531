//! `stalled_consumer.rs` against the Ptrace backend: `tests/support` picks the backend by the name of
//! the test target, and this one starts with `ptrace_`.

#[path = "stalled_consumer.rs"]
mod stalled_consumer;
