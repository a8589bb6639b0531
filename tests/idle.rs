//! An idle watcher stays quiet: while nothing happens, its threads sleep instead of polling
//! (Netlink: the backstop thread backs off to its longest period, the runtime task waits on
//! the reactor, the thread that reads command lines waits for an exec; Ptrace: the reader thread and the tracer process block until something
//! happens), so a long-running supervisor costs no steady stream of wakeups.

#[macro_use]
mod support;

use procwatch::{BackendKind, Interest, ProcEvent};
use std::time::Duration;
use support::*;

/// Voluntary context switches of this process's thread named `name` (each one is a sleep,
/// so each later wakeup is counted by the next one).
fn switches_of(name: &str) -> Option<u64> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        // The kernel keeps 15 bytes of a thread's name.
        if comm.trim_end() != &name[..name.len().min(15)] {
            continue;
        }
        return switches_in(&task.path().join("status"));
    }
    None
}

fn switches_in(status: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(status)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Voluntary context switches of the child process named `name` of process `parent`, and
/// that child's pid.
fn switches_of_child(parent: u32, name: &str) -> Option<(u64, u32)> {
    let (pid, _, _) = children_of(parent as i32)
        .into_iter()
        .find(|(_, _, n)| n == name)?;
    let path = std::path::Path::new("/proc").join(pid.as_raw().to_string());
    Some((switches_in(&path.join("status"))?, pid.as_raw() as u32))
}

#[tokio::test(flavor = "current_thread")]
async fn an_idle_watcher_backs_off() {
    let w = require!(watcher());
    let mut cmd = sh("read x");
    cmd.stdin(std::process::Stdio::piped());
    let mut started = w
        .spawn(cmd, Interest::ALL | Interest::ARGV)
        .expect("spawn a quiet shell");
    // The exec of sh, then quiet: the shell blocks reading its stdin, a pipe nobody writes.
    assert!(matches!(
        next(&mut started.events, DEADLINE).await,
        Some(ProcEvent::Exec { .. })
    ));
    if w.backend() == BackendKind::Ptrace {
        // All three (the reader thread, the tracer, its doorbell) block until there is
        // something to do: no wakeup at all in two quiet seconds.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let count = || {
            let reader = switches_of("procwatch-ptrace").expect("the reader thread runs");
            let (tracer, pid) =
                switches_of_child(std::process::id(), "procwatch-trace").expect("the tracer runs");
            let (bell, _) = switches_of_child(pid, "procwatch-bell").expect("the doorbell runs");
            [reader, tracer, bell]
        };
        let before = count();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = count();
        eprintln!("idle for 2 s: {before:?} -> {after:?} (reader, tracer, doorbell) switches");
        assert!(
            (0..3).all(|i| after[i] - before[i] <= 2),
            "an idle ptrace watcher woke up: {before:?} -> {after:?} (reader, tracer, doorbell)"
        );
    } else {
        // Let the backstop reach its longest period, then count what a quiet second costs.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let count = || {
            let backstop = switches_of("procwatch-netlink").expect("the backstop thread runs");
            let argv = switches_of("procwatch-argv").expect("the argv thread runs");
            (backstop, argv)
        };
        let before = count();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = count();
        let per_second = (after.0 - before.0) as f64 / 2.0;
        let argv_per_second = (after.1 - before.1) as f64 / 2.0;
        eprintln!(
            "backstop thread: {per_second}, argv thread: {argv_per_second} wakeups a second while idle"
        );
        // It has no timer: only an exec somewhere on the machine wakes it.
        assert!(
            argv_per_second <= 10.0,
            "the idle argv thread woke {argv_per_second} times a second"
        );
        // 10 a second at the longest period (100 ms) with the default buffer; a backstop that
        // did not back off would wake 100 times a second. Events from elsewhere on the machine
        // that the task drains late reset the period, hence the margin.
        assert!(
            per_second <= 30.0,
            "the idle backstop thread woke {per_second} times a second"
        );
    }
    drop(started.child.stdin.take()); // EOF: the shell exits
    let _ = collect(&mut started.events, DEADLINE).await;
    let _ = tokio::time::timeout(DEADLINE, started.child.wait()).await;
}
