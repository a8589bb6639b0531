//! Shared fixtures for the integration tests.
#![allow(dead_code)]

use futures::StreamExt;
use procwatch::{
    Builder, ErrorKind, Interest, Pid, ProcEvent, ProcEvents, ProcWatcher, WatchedChild,
};
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
    watcher_with(|b| b)
}

/// Like [`watcher`], with builder settings of the test's own.
pub fn watcher_with(configure: impl FnOnce(Builder) -> Builder) -> Option<ProcWatcher> {
    let builder = ProcWatcher::builder().backend(procwatch::BackendKind::Netlink);
    match configure(builder).build() {
        Ok(w) => Some(w),
        Err(e)
            if !in_ci()
                && matches!(
                    e.kind(),
                    ErrorKind::PermissionDenied | ErrorKind::Unsupported
                ) =>
        {
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
    check_order_allowing_lost(events);
    assert!(
        !events.iter().any(|e| matches!(e, ProcEvent::Lost { .. })),
        "unexpected Lost in {events:?}"
    );
}

// ---- Process and memory probes (added with threads.rs, drop_safety.rs, stalled_consumer.rs,
// lost_resync.rs) ----

/// The state letter (field 3) and start time in clock ticks since boot (field 22) of
/// `/proc/<pid>/stat`, or `None` if there is no such process.
pub fn proc_stat(pid: Pid) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some((f.first()?.chars().next()?, f.get(22 - 3)?.parse().ok()?))
}

/// Whether the process that had `pid` and started at `start_ticks` is gone for good (reaped):
/// `/proc/<pid>` is absent, or the number now names a process started at another time.
pub fn proc_gone(pid: Pid, start_ticks: u64) -> bool {
    match proc_stat(pid) {
        None => true,
        Some((_, start)) => start != start_ticks,
    }
}

/// Whether our child `pid` has exited and is waiting to be reaped. Uses `waitid(WNOWAIT)`, so
/// the child is *not* reaped and tokio's `Child::wait` still gets its status.
pub fn exited_unreaped(pid: Pid) -> bool {
    let raw = rustix::process::Pid::from_raw(pid.as_raw()).expect("positive pid");
    let opts = rustix::process::WaitIdOptions::EXITED
        | rustix::process::WaitIdOptions::NOHANG
        | rustix::process::WaitIdOptions::NOWAIT;
    matches!(
        rustix::process::waitid(rustix::process::WaitId::Pid(raw), opts),
        Ok(Some(_))
    )
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The names of this process's threads (for messages about leaked threads).
pub fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|s| s.trim_end().to_owned())
        .collect();
    names.sort();
    names
}

/// The per-pid half of [`check_order`], for traces that may contain `Lost`: `Child` first and
/// at most once, `Exit` last and at most once. `Lost` events (about the stream, not about a
/// process) are left out of the per-pid view.
pub fn check_order_allowing_lost(events: &[ProcEvent]) {
    let about_processes: Vec<ProcEvent> = events
        .iter()
        .filter(|e| !matches!(e, ProcEvent::Lost { .. }))
        .cloned()
        .collect();
    for (pid, evs) in by_pid(&about_processes) {
        let childs = evs
            .iter()
            .filter(|(_, e)| matches!(e, ProcEvent::Child { .. }))
            .count();
        let exits = evs
            .iter()
            .filter(|(_, e)| matches!(e, ProcEvent::Exit { .. }))
            .count();
        assert!(childs <= 1, "{pid}: {childs} Child events: {evs:?}");
        assert!(exits <= 1, "{pid}: {exits} Exit events: {evs:?}");
        if childs == 1 {
            assert!(
                matches!(evs[0].1, ProcEvent::Child { .. }),
                "{pid}: Child is not first: {evs:?}"
            );
        }
        if exits == 1 {
            assert!(
                matches!(evs.last().unwrap().1, ProcEvent::Exit { .. }),
                "{pid}: Exit is not last: {evs:?}"
            );
        }
    }
}

/// Aborts the whole test process, with a message, unless dropped within `limit`: the last
/// resort against a hang in synchronous code (a `Drop`) that no async timeout can interrupt.
/// It runs one thread (`test-watchdog`) while armed.
pub struct Watchdog {
    disarm: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn arm(limit: Duration, what: &'static str) -> Watchdog {
        let (disarm, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-watchdog".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                    eprintln!("WATCHDOG: {what} still running after {limit:?}; aborting");
                    std::process::abort();
                }
            })
            .expect("start the watchdog thread");
        Watchdog {
            disarm: Some(disarm),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.disarm.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
