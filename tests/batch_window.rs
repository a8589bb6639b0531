//! `NetlinkOptions::batch_window`: reading the proc connector in batches changes when events
//! arrive, never which ones or in what order.

#[macro_use]
mod support;

use procwatch::bench_support::{backstop_reads, windowed_reads};
use procwatch::{
    ArgvPriority, BackendKind, ErrorKind, Interest, NetlinkOptions, Pid, ProcEvent, ProcWatcher,
    MAX_BATCH_WINDOW,
};
use std::collections::BTreeMap;
use std::time::Duration;
use support::{check_order, collect, netlink_watcher_with, sh, within, DEADLINE};

/// Children of the watched shell, each exiting with `i % 7`.
const CHILDREN: usize = 200;

fn windowed(window: Duration) -> Option<ProcWatcher> {
    netlink_watcher_with(|b| b.netlink(NetlinkOptions::new().batch_window(window)))
}

/// A shell forks `CHILDREN` children at once (some short-lived, all reaped); a
/// `tokio::process::Child` started outside procwatch runs beside it. Every child has its
/// `Child` and its exit code, in order, and the tokio child keeps its own status.
async fn storm_under_window(window: Duration) {
    let Some(w) = windowed(window) else { return };
    let mut own = sh("sleep 0.2; exit 3")
        .spawn()
        .expect("spawn a tokio child");
    let script =
        format!("i=0; while [ $i -lt {CHILDREN} ]; do (exit $((i % 7))) & i=$((i+1)); done; wait");
    let started = w
        .spawn(sh(&script), Interest::ALL)
        .expect("spawn watched sh");
    let (mut child, mut events) = (started.child, started.events);
    let root = Pid::from_raw(child.id().expect("running") as i32).expect("a pid");
    let trace = collect(&mut events, DEADLINE).await;
    let status = within(DEADLINE, "the shell's exit", child.wait()).await;
    assert!(status.expect("wait").success());
    check_order(&trace);
    let born: Vec<Pid> = trace
        .iter()
        .filter_map(|e| match e {
            ProcEvent::Child { pid, parent, .. } if *parent == root => Some(*pid),
            _ => None,
        })
        .collect();
    assert_eq!(born.len(), CHILDREN, "one Child per child of the shell");
    let mut codes: BTreeMap<i32, usize> = BTreeMap::new();
    for ev in &trace {
        if let ProcEvent::Exit { pid, status, .. } = ev {
            if born.contains(pid) {
                let code = status.and_then(|s| s.code()).expect("an exit code");
                *codes.entry(code).or_default() += 1;
            }
        }
    }
    let mut expected: BTreeMap<i32, usize> = BTreeMap::new();
    for i in 0..CHILDREN {
        *expected.entry((i % 7) as i32).or_default() += 1;
    }
    assert_eq!(codes, expected, "every child's exit code, once");
    let own = within(DEADLINE, "the tokio child's exit", own.wait()).await;
    assert_eq!(
        own.expect("wait").code(),
        Some(3),
        "the tokio child keeps its status"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_window_loses_nothing_on_a_current_thread_runtime() {
    storm_under_window(Duration::from_millis(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_loses_nothing_on_a_multi_thread_runtime() {
    storm_under_window(Duration::from_millis(20)).await;
}

/// 20,000 short processes from four shells at once: well over 10,000 messages a second on
/// this kind of machine, so the watcher reads in windows; nothing is lost or out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_is_read_in_windows_and_loses_nothing() {
    let Some(w) = windowed(Duration::from_millis(5)) else {
        return;
    };
    let script = "l=0
while [ $l -lt 4 ]; do
  ( r=0; while [ $r -lt 100 ]; do
      j=0; while [ $j -lt 50 ]; do true & j=$((j+1)); done; wait; r=$((r+1))
    done ) &
  l=$((l+1))
done
wait";
    let started = w.spawn(sh(script), Interest::ALL).expect("spawn the storm");
    let (mut child, mut events) = (started.child, started.events);
    let reader = tokio::spawn(async move { collect(&mut events, DEADLINE).await });
    let status = within(DEADLINE, "the storm's exit", child.wait()).await;
    assert!(status.expect("wait").success());
    let trace = reader.await.expect("the reader");
    check_order(&trace);
    assert!(
        !trace.iter().any(|e| matches!(e, ProcEvent::Lost { .. })),
        "nothing lost"
    );
    let children = trace
        .iter()
        .filter(|e| matches!(e, ProcEvent::Child { .. }))
        .count();
    let exits = trace
        .iter()
        .filter(|e| matches!(e, ProcEvent::Exit { .. }))
        .count();
    assert_eq!(children, 4 + 20_000, "the four loops and every `true`");
    assert_eq!(exits, children + 1, "every child's exit, and the root's");
    let windows = windowed_reads(&w).expect("a Netlink watcher counts its windows");
    assert!(
        windows > 0,
        "a storm of 20,000 processes was read without a window"
    );
}

/// Runs `script` watched until its shell exits: its events, checked for order.
async fn run_to_the_end(w: &ProcWatcher, script: &str, interest: Interest) -> Vec<ProcEvent> {
    let started = w.spawn(sh(script), interest).expect("spawn watched sh");
    let (mut child, mut events) = (started.child, started.events);
    let trace = collect(&mut events, DEADLINE).await;
    within(DEADLINE, "the shell's exit", child.wait())
        .await
        .expect("wait");
    check_order(&trace);
    trace
}

/// The exit codes in `trace`, in order.
fn exit_codes(trace: &[ProcEvent]) -> Vec<i32> {
    trace
        .iter()
        .filter_map(|e| match e {
            ProcEvent::Exit { status, .. } => status.and_then(|s| s.code()),
            _ => None,
        })
        .collect()
}

/// A few processes, 20 ms apart: each message is read as it comes (no window), so what
/// reads `/proc` at an exec still finds the process.
#[tokio::test(flavor = "current_thread")]
async fn a_quiet_tree_is_read_without_a_window() {
    let Some(w) = windowed(Duration::from_millis(20)) else {
        return;
    };
    run_to_the_end(
        &w,
        "for i in 1 2 3 4 5 6 7 8 9 10; do (exit $i); sleep 0.02; done",
        Interest::ALL,
    )
    .await;
    assert_eq!(windowed_reads(&w), Some(0), "a quiet tree waited a window");
}

/// With `batch_threshold(0)` the window applies at every rate: the same quiet tree is read
/// in windows, and nothing changes but when events arrive. Command lines are read by the
/// argv thread as each exec happens, so the window does not cost them. A
/// `tokio::process::Child` beside keeps its own status.
#[tokio::test(flavor = "current_thread")]
async fn a_zero_threshold_reads_even_a_quiet_tree_in_windows() {
    let Some(w) = netlink_watcher_with(|b| {
        b.netlink(
            NetlinkOptions::new()
                .batch_window(Duration::from_millis(20))
                .batch_threshold(0)
                .argv_priority(ArgvPriority::Realtime),
        )
    }) else {
        return;
    };
    let mut own = sh("sleep 0.1; exit 4")
        .spawn()
        .expect("spawn a tokio child");
    let n = 20;
    let trace = run_to_the_end(
        &w,
        &format!("for i in $(seq {n}); do /bin/echo \"$i\" >/dev/null; (exit 3); sleep 0.02; done"),
        Interest::ALL | Interest::ARGV,
    )
    .await;
    let windows = windowed_reads(&w).expect("a Netlink watcher counts its windows");
    assert!(windows >= 10, "{windows} windows for {n} spells of events");
    // The backstop thread wakes every 10 ms or so, inside most 20 ms windows: what it finds
    // then is the task's to read. It cannot tell a gap of more than a window and a period
    // since the task's last read from a runtime that stopped, and reads what it finds then:
    // between spells of this tree that happens now and then (up to 10 reads beside 27
    // windows in debug builds, whose spells are slower; none in most release runs).
    let backstop = backstop_reads(&w).expect("a Netlink watcher counts the backstop's reads");
    eprintln!("{windows} windows, {backstop} backstop reads");
    assert!(
        backstop * 2 <= windows,
        "the backstop read {backstop} times beside {windows} windows of a live task"
    );
    let threes = trace
        .iter()
        .filter(|e| matches!(e, ProcEvent::Exit { status: Some(s), .. } if s.code() == Some(3)))
        .count();
    assert_eq!(threes, n, "every subshell's exit code");
    let echoes: Vec<u32> = trace
        .iter()
        .filter_map(|e| match e {
            ProcEvent::Exec {
                argv: Some(argv), ..
            } if argv.get(0).is_some_and(|a| a == "/bin/echo") => {
                argv.get(1)?.to_str()?.parse().ok()
            }
            _ => None,
        })
        .collect();
    eprintln!("{} of {n} echoes with their command line", echoes.len());
    assert!(echoes.len() >= n - 2, "{} of {n} with argv", echoes.len());
    assert!(echoes.windows(2).all(|p| p[0] < p[1]), "{echoes:?}");
    let own = within(DEADLINE, "the tokio child's exit", own.wait()).await;
    assert_eq!(
        own.expect("wait").code(),
        Some(4),
        "the tokio child keeps its status"
    );
}

/// The other order: the runtime's only thread blocks while the events of a window wait in
/// the socket. The task cannot read them, so the backstop thread does, within about a
/// window and a backstop period, and the stream has them all once the runtime runs again.
#[tokio::test(flavor = "current_thread")]
async fn a_blocked_runtime_is_relieved_by_the_backstop_even_in_windows() {
    let Some(w) = netlink_watcher_with(|b| {
        b.netlink(
            NetlinkOptions::new()
                .batch_window(Duration::from_millis(20))
                .batch_threshold(0),
        )
    }) else {
        return;
    };
    let mut own = sh("exit 5").spawn().expect("spawn a tokio child");
    let mut started = w
        .spawn(
            sh("for i in 1 2 3 4 5 6 7 8; do (exit $i); done; exit 9"),
            Interest::ALL,
        )
        .expect("spawn watched sh");
    // The runtime's only thread, blocked before the task could read anything.
    std::thread::sleep(Duration::from_millis(400));
    let backstop = backstop_reads(&w).expect("a Netlink watcher counts the backstop's reads");
    assert!(backstop >= 1, "nobody read the socket for 400 ms");
    let trace = collect(&mut started.events, DEADLINE).await;
    within(DEADLINE, "the shell's exit", started.child.wait())
        .await
        .expect("wait");
    check_order(&trace);
    assert_eq!(
        exit_codes(&trace),
        [1, 2, 3, 4, 5, 6, 7, 8, 9],
        "each subshell's code, then the shell's"
    );
    let own = within(DEADLINE, "the tokio child's exit", own.wait()).await;
    assert_eq!(
        own.expect("wait").code(),
        Some(5),
        "the tokio child keeps its status"
    );
}

/// A consumer that does not read for a while, with the longest window: the events wait in
/// the stream, and all of them come once it reads.
#[tokio::test(flavor = "current_thread")]
async fn a_stalled_consumer_with_the_longest_window_gets_everything() {
    let Some(w) = windowed(MAX_BATCH_WINDOW) else {
        return;
    };
    let started = w
        .spawn(
            sh("for i in 1 2 3 4 5; do (exit $i); done; exit 9"),
            Interest::ALL,
        )
        .expect("spawn watched sh");
    let (mut child, mut events) = (started.child, started.events);
    within(DEADLINE, "the shell's exit", child.wait())
        .await
        .expect("wait");
    std::thread::sleep(Duration::from_millis(300)); // the runtime's only thread, blocked
    let trace = collect(&mut events, DEADLINE).await;
    check_order(&trace);
    assert_eq!(
        exit_codes(&trace),
        [1, 2, 3, 4, 5, 9],
        "each subshell's code, then the shell's"
    );
}

/// A window above the limit is refused before anything starts, naming the backend and the
/// limit (no proc connector needed to see that).
#[test]
fn a_window_above_the_limit_is_refused() {
    let err = ProcWatcher::builder()
        .backend(BackendKind::Netlink)
        .netlink(NetlinkOptions::new().batch_window(MAX_BATCH_WINDOW + Duration::from_millis(1)))
        .build()
        .expect_err("a 101 ms window is refused");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let text = err.to_string();
    assert!(text.contains("batch window"), "{text}");
    assert!(
        text.contains("Netlink") || text.contains("netlink"),
        "{text}"
    );
}
