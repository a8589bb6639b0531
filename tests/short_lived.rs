//! A child that forks a grandchild which exits at once: the grandchild's `Child` is never
//! lost, comes before its `Exit`, and the two are separate events (the exit status does not
//! overwrite the birth record, the NetBSD lost-NOTE_CHILD bug). Each case runs with the child
//! started by `ProcWatcher::spawn`, and started unwatched and watched once it is ready.

#[macro_use]
mod support;

use procwatch::{Interest, Pid, ProcEvent, ProcWatcher};
use std::collections::HashMap;
use support::{check_after_watch, check_order, collect, start_sh, watcher, Start, DEADLINE};

const ITERATIONS: usize = 500;

/// What one run's trace says about the grandchild: its pid, the index of its `Child` and
/// `Exit` events, and its exit code.
struct Grandchild {
    pid: Pid,
    child_at: usize,
    exit_at: usize,
    code: Option<i32>,
}

/// Checks a trace of `root` that created exactly one process, and returns what it says of it.
fn single_grandchild(root: Pid, events: &[ProcEvent], root_code: i32) -> Grandchild {
    check_order(events);
    let births: Vec<(usize, Pid, Pid)> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            ProcEvent::Child { pid, parent, .. } => Some((i, *pid, *parent)),
            _ => None,
        })
        .collect();
    assert_eq!(births.len(), 1, "exactly one Child expected: {events:?}");
    let (child_at, pid, parent) = births[0];
    assert_eq!(parent, root, "the grandchild's parent: {events:?}");
    let exits: HashMap<Pid, (usize, Option<i32>)> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            ProcEvent::Exit { pid, status, .. } => Some((*pid, (i, status.and_then(|s| s.code())))),
            _ => None,
        })
        .collect();
    assert_eq!(
        exits.len(),
        2,
        "an Exit for the root and the grandchild: {events:?}"
    );
    assert_eq!(
        exits.get(&root).map(|e| e.1),
        Some(Some(root_code)),
        "root Exit: {events:?}"
    );
    let (exit_at, code) = *exits
        .get(&pid)
        .unwrap_or_else(|| panic!("no Exit for the grandchild {pid}: {events:?}"));
    // Only Child and Exit were asked for, so nothing else may appear.
    assert_eq!(events.len(), 3, "unexpected events: {events:?}");
    Grandchild {
        pid,
        child_at,
        exit_at,
        code,
    }
}

async fn run_once(w: &ProcWatcher, iteration: usize, how: Start) {
    // `(exit N)` is not the last command, so dash forks a subshell for it, which exits at once.
    let code = (iteration % 200) as i32 + 1;
    let script = format!("(exit {code}); exit 0");
    let mut started = start_sh(w, &script, Interest::TRACK | Interest::EXIT, how);
    let root = started.pid();
    let events = collect(&mut started.events, DEADLINE).await;
    let status = tokio::time::timeout(DEADLINE, started.child.wait())
        .await
        .expect("the child exits in time")
        .expect("wait for the child");
    assert_eq!(
        status.code(),
        Some(0),
        "iteration {iteration}: child status"
    );
    check_after_watch(&events, started.watched_at);

    let g = single_grandchild(root, &events, 0);
    assert!(
        g.child_at < g.exit_at,
        "iteration {iteration}: Child({}) must come before its Exit: {events:?}",
        g.pid
    );
    assert_ne!(g.pid, root);
    assert_eq!(
        g.code,
        Some(code),
        "iteration {iteration}: grandchild status: {events:?}"
    );
}

async fn grandchild_that_exits_at_once(how: Start) {
    let w = require!(watcher());
    for iteration in 0..ITERATIONS {
        run_once(&w, iteration, how).await;
    }
    assert_eq!(
        w.tracked(),
        0,
        "the watcher still tracks processes after all streams ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchild_that_exits_at_once_500_spawns() {
    grandchild_that_exits_at_once(Start::Spawn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchild_that_exits_at_once_500_starts_watched_when_ready() {
    grandchild_that_exits_at_once(Start::WatchWhenReady).await;
}

/// The same shape inside one process: one child forks `ITERATIONS` grandchildren one after
/// the other, each exiting at once with its own code.
async fn grandchildren_of_one_child(how: Start) {
    let w = require!(watcher());
    let script = format!(
        "i=0; while [ $i -lt {ITERATIONS} ]; do (exit $((i % 256))); i=$((i + 1)); done; exit 3"
    );
    let mut started = start_sh(&w, &script, Interest::TRACK | Interest::EXIT, how);
    let root = started.pid();
    let events = collect(&mut started.events, DEADLINE).await;
    let status = tokio::time::timeout(DEADLINE, started.child.wait())
        .await
        .expect("the child exits in time")
        .expect("wait for the child");
    assert_eq!(status.code(), Some(3), "child status");

    check_order(&events);
    check_after_watch(&events, started.watched_at);
    let mut born: HashMap<Pid, usize> = HashMap::new();
    let mut died: HashMap<Pid, (usize, Option<i32>)> = HashMap::new();
    for (i, ev) in events.iter().enumerate() {
        match ev {
            ProcEvent::Child { pid, parent, .. } => {
                assert_eq!(*parent, root, "parent of {pid}");
                assert!(born.insert(*pid, i).is_none(), "two Child for {pid}");
            }
            ProcEvent::Exit { pid, status, .. } => {
                assert!(died
                    .insert(*pid, (i, status.and_then(|s| s.code())))
                    .is_none());
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(born.len(), ITERATIONS, "one Child per grandchild");
    assert_eq!(died.get(&root).map(|d| d.1), Some(Some(3)), "root Exit");
    let mut codes = Vec::new();
    for (pid, at) in &born {
        let (exit_at, code) = died
            .get(pid)
            .unwrap_or_else(|| panic!("grandchild {pid} has no Exit"));
        assert!(at < exit_at, "Child({pid}) after its Exit");
        codes.push(code.unwrap_or_else(|| panic!("grandchild {pid} exited without a code")));
    }
    assert_eq!(
        died.len(),
        ITERATIONS + 1,
        "an Exit per grandchild and the root"
    );
    codes.sort_unstable();
    let mut want: Vec<i32> = (0..ITERATIONS as i32).map(|i| i % 256).collect();
    want.sort_unstable();
    assert_eq!(codes, want, "grandchild exit codes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchild_that_exits_at_once_500_times_in_one_child() {
    grandchildren_of_one_child(Start::Spawn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchild_that_exits_at_once_500_times_in_one_child_watched_when_ready() {
    grandchildren_of_one_child(Start::WatchWhenReady).await;
}
