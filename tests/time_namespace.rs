//! Event times and where a stream begins, in time namespaces.
//!
//! The kernel stamps proc-connector events on the initial time namespace's `CLOCK_MONOTONIC`;
//! the crate moves them onto the program's own clock. Two programs are checked, each watching
//! a program it started (an `execve` after the watch must be delivered, stamped after the
//! watch began and not in the future; what came before the watch must not be delivered):
//!
//! * one running inside a time namespace whose monotonic clock is 1,000 s ahead
//!   (`unshare --time --monotonic 1000`): `/proc/self/timens_offsets` gives its offset;
//! * one that unshared a time namespace (`unshare(CLONE_NEWTIME)`, as a container runtime does
//!   for what it starts) with that offset but did not enter it: the file then shows the
//!   namespace of its children, not its own clock, and only the kernel's answer to the
//!   subscription tells the true offset.
//!
//! The unsharing must happen on the main thread (the file shows the thread-group leader's
//! namespaces), so this test has its own `main` instead of the test harness, and re-runs
//! itself for each case, once per backend. (The Ptrace backend's tracer is a child process:
//! in the second case it lives in the new namespace, and its clocks are not the program's.)

mod support;

use procwatch::{BackendKind, Interest, Pid, ProcEvent, Timestamp};
use std::process::Stdio;
use support::*;

const HELPER_ENV: &str = "PROCWATCH_TIMENS_HELPER";
const EXPECTED: &str = "execs=1 after-watch=true not-future=true status=Ok(Some(0))";

/// Watches a program it starts with a `backend` watcher and says what it saw.
async fn watch_a_program(backend: BackendKind) -> String {
    let Some(w) = watcher_on(backend, |b| b) else {
        return "no watcher".into();
    };
    // A program that execs /bin/true once released; `sh` itself came before the watch.
    let mut program = tokio::process::Command::new("sh");
    program
        .args(["-c", "echo ready; read x; exec /bin/true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut started = start(&w, program, Interest::ALL, Start::WatchWhenReady, "ready");
    let root: Pid = started.pid();
    let events = collect(&mut started.events, DEADLINE).await;
    let read_at = Timestamp::now();
    let status = within(DEADLINE, "the program's exit", started.child.wait())
        .await
        .map(|s| s.code());
    let execs = events
        .iter()
        .filter(|e| matches!(e, ProcEvent::Exec { pid, .. } if *pid == root))
        .count();
    let after_watch = events.iter().all(|e| e.at() >= started.watched_at);
    let not_future = events.iter().all(|e| e.at() <= read_at);
    format!("execs={execs} after-watch={after_watch} not-future={not_future} status={status:?}")
}

/// The helper side, on the main thread: `case` says whether to unshare first, then which
/// backend to use (`entered:ptrace`).
fn helper(case: &str) -> String {
    let (case, backend) = match case.split_once(':') {
        Some((case, "ptrace")) => (case, BackendKind::Ptrace),
        Some((case, _)) => (case, BackendKind::Netlink),
        None => (case, BackendKind::Netlink),
    };
    if case == "unentered" {
        // SAFETY: unshare(2) with CLONE_NEWTIME only changes the namespace this (main) thread's
        // later children get.
        if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
            return format!("unshare failed: {}", std::io::Error::last_os_error());
        }
        if let Err(e) = std::fs::write("/proc/self/timens_offsets", "monotonic 1000 0\n") {
            return format!("cannot set the offsets: {e}");
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(watch_a_program(backend))
}

/// Runs this binary again for `case`, under `wrapper` (a command and its arguments) if any.
fn run_case(case: &str, wrapper: &[&str]) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = tokio::process::Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => tokio::process::Command::new(&exe),
    };
    cmd.env(HELPER_ENV, case).kill_on_drop(true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(helper_result(cmd, DEADLINE * 2))
}

fn main() {
    if let Ok(case) = std::env::var(HELPER_ENV) {
        println!("RESULT={}", helper(&case));
        return;
    }
    if watcher().is_none() {
        return; // skipped, with the reason printed
    }
    let probe = std::process::Command::new("unshare")
        .args(["--time", "--fork", "true"])
        .status();
    if !matches!(&probe, Ok(s) if s.success()) {
        let why = format!("cannot create a time namespace here: {probe:?}");
        assert!(!in_ci(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    for backend in ["netlink", "ptrace"] {
        let entered = run_case(
            &format!("entered:{backend}"),
            &["unshare", "--time", "--fork", "--monotonic", "1000"],
        );
        assert_eq!(entered, EXPECTED, "{backend}: inside a time namespace");
        let unentered = run_case(&format!("unentered:{backend}"), &[]);
        assert_eq!(
            unentered, EXPECTED,
            "{backend}: after unsharing a time namespace without entering it"
        );
    }
    println!("time namespaces: 4 passed, 0 failed");
}
