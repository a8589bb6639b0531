//! Shared fixtures for the integration tests.
#![allow(dead_code)]

use futures::StreamExt;
use procwatch::{ErrorKind, Interest, Pid, ProcEvent, ProcEvents, ProcWatcher, WatchedChild};
use std::collections::HashMap;
use std::time::Duration;

/// The default deadline for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Whether this run is CI, where a capability this machine has must never be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A netlink watcher, or `None` (with a printed reason) when this machine cannot provide one
/// outside CI. Under `CI=true` a failure is a test failure.
pub fn watcher() -> Option<ProcWatcher> {
    match ProcWatcher::builder().backend(procwatch::BackendKind::Netlink).build() {
        Ok(w) => Some(w),
        Err(e) if !in_ci() && matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::Unsupported) => {
            eprintln!("SKIPPED: the netlink backend is not available here: {e}");
            None
        }
        Err(e) => panic!("the netlink backend must work on this machine: {e}"),
    }
}

/// Unwraps a fixture or returns from the test (outside CI only; see [`watcher`]).
#[macro_export]
macro_rules! require {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return,
        }
    };
}

/// A `sh -c script` command.
pub fn sh(script: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c").arg(script);
    c.kill_on_drop(true);
    c
}

/// Spawns `sh -c script` watched with `interest`.
pub fn spawn_sh(w: &ProcWatcher, script: &str, interest: Interest) -> WatchedChild {
    w.spawn(sh(script), interest).expect("spawn watched sh")
}

/// Reads the stream until it ends, failing the test if that takes longer than `limit`.
pub async fn collect(events: &mut ProcEvents, limit: Duration) -> Vec<ProcEvent> {
    let mut out = Vec::new();
    let res = tokio::time::timeout(limit, async {
        while let Some(ev) = events.next().await {
            out.push(ev);
        }
    })
    .await;
    if res.is_err() {
        panic!(
            "stream did not end within {limit:?}; {} events so far, last few: {:?}",
            out.len(),
            &out[out.len().saturating_sub(10)..]
        );
    }
    out
}

/// Waits for the next event, failing the test after `limit`.
pub async fn next(events: &mut ProcEvents, limit: Duration) -> Option<ProcEvent> {
    tokio::time::timeout(limit, events.next())
        .await
        .unwrap_or_else(|_| panic!("no event within {limit:?}"))
}

/// Number of open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Number of threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Waits until `f` holds, polling, up to `limit`. Returns whether it did.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// Per-pid view of a trace: each event's index, for order checks.
pub fn by_pid(events: &[ProcEvent]) -> HashMap<Pid, Vec<(usize, ProcEvent)>> {
    let mut m: HashMap<Pid, Vec<(usize, ProcEvent)>> = HashMap::new();
    for (i, ev) in events.iter().enumerate() {
        m.entry(ev.pid()).or_default().push((i, ev.clone()));
    }
    m
}

/// Checks the per-stream guarantees that hold for every trace: `Child` first and at most
/// once, `Exit` last and at most once, and no `Lost`.
pub fn check_order(events: &[ProcEvent]) {
    for (pid, evs) in by_pid(events) {
        let childs = evs.iter().filter(|(_, e)| matches!(e, ProcEvent::Child { .. })).count();
        let exits = evs.iter().filter(|(_, e)| matches!(e, ProcEvent::Exit { .. })).count();
        assert!(childs <= 1, "{pid}: {childs} Child events: {evs:?}");
        assert!(exits <= 1, "{pid}: {exits} Exit events: {evs:?}");
        if childs == 1 {
            assert!(matches!(evs[0].1, ProcEvent::Child { .. }), "{pid}: Child is not first: {evs:?}");
        }
        if exits == 1 {
            assert!(
                matches!(evs.last().unwrap().1, ProcEvent::Exit { .. }),
                "{pid}: Exit is not last: {evs:?}"
            );
        }
    }
    assert!(
        !events.iter().any(|e| matches!(e, ProcEvent::Lost { .. })),
        "unexpected Lost in {events:?}"
    );
}
