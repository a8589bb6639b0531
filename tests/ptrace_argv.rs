//! `argv.rs` against the Ptrace backend: `tests/support` picks the backend by the name of the
//! test target, and this one starts with `ptrace_`.

#[path = "argv.rs"]
mod argv;
