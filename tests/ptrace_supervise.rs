//! `supervise.rs` against the Ptrace backend (see `ptrace_tree.rs`).

#[path = "supervise.rs"]
mod supervise;
