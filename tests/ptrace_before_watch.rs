//! `before_watch.rs` against the Ptrace backend: `tests/support` picks the backend by the name of
//! the test target, and this one starts with `ptrace_`.

#[path = "before_watch.rs"]
mod before_watch;
