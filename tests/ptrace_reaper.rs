//! `reaper.rs` against the Ptrace backend (see `ptrace_tree.rs`).

#[path = "reaper.rs"]
mod reaper;
