//! `multi_stream.rs` against the Ptrace backend: `tests/support` picks the backend by the name of
//! the test target, and this one starts with `ptrace_`.

#[path = "multi_stream.rs"]
mod multi_stream;
