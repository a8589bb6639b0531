//! A 10 × 10 process tree tracked from its root: every descendant is announced exactly once,
//! with the right parent, and its exit status is readable from the events alone; whether the
//! root was started by `ProcWatcher::spawn` or started unwatched and watched before it built
//! the tree.

#[macro_use]
mod support;

use procwatch::{Interest, Pid, ProcEvent};
use std::collections::{BTreeSet, HashMap};
use support::{check_after_watch, check_order, collect, start_sh, watcher, Start, DEADLINE};

const FANOUT: i32 = 10;

/// The root (a `sh`) starts `FANOUT` children, child `i` (1-based) starts `FANOUT`
/// grandchildren, grandchild `j` (0-based) of child `i` exits with `10 * i + j`, child `i` exits
/// with `i` once its grandchildren are gone, the root exits with 200.
///
/// Every node is exactly one process: dash forks once for `( ... ) &` and runs `exit`, `wait`
/// and the arithmetic as builtins, so nothing else is created (the counts below check it).
fn tree_script() -> String {
    let list = |from: i32| {
        (from..from + FANOUT)
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "for i in {children}; do \
           ( for j in {grandchildren}; do (exit $((10 * i + j))) & done; wait; exit $i ) & \
         done; \
         wait; exit 200",
        children = list(1),
        grandchildren = list(0),
    )
}

fn exit_code(status: &Option<std::process::ExitStatus>) -> Option<i32> {
    status.as_ref().and_then(|s| s.code())
}

async fn ten_by_ten_tree(how: Start) {
    let w = require!(watcher());
    let mut started = start_sh(&w, &tree_script(), Interest::ALL, how);
    let root = started.pid();
    let events = collect(&mut started.events, DEADLINE).await;
    let status = tokio::time::timeout(DEADLINE, started.child.wait())
        .await
        .expect("root exits in time")
        .expect("wait for root");
    assert_eq!(status.code(), Some(200), "root status");

    check_order(&events);
    check_after_watch(&events, started.watched_at);

    // Parent of every announced process, and exit codes, from the events alone.
    let mut parent_of: HashMap<Pid, Pid> = HashMap::new();
    let mut code_of: HashMap<Pid, Option<i32>> = HashMap::new();
    let mut forks: HashMap<Pid, u32> = HashMap::new();
    let mut fork_children: Vec<(Pid, Pid)> = Vec::new();
    let mut execs: HashMap<Pid, u32> = HashMap::new();
    for ev in &events {
        match ev {
            ProcEvent::Child { pid, parent, .. } => {
                assert!(
                    parent_of.insert(*pid, *parent).is_none(),
                    "two Child for {pid}"
                );
            }
            ProcEvent::Exit { pid, status, .. } => {
                assert!(
                    code_of.insert(*pid, exit_code(status)).is_none(),
                    "two Exit for {pid}"
                );
            }
            ProcEvent::Fork {
                pid, child, count, ..
            } => {
                assert!(*count >= 1, "Fork with count 0: {ev:?}");
                *forks.entry(*pid).or_default() += count;
                fork_children.push((*pid, *child));
            }
            ProcEvent::Exec { pid, count, .. } => *execs.entry(*pid).or_default() += count,
            other => panic!("unexpected event {other:?} in {events:?}"),
        }
    }

    // Exactly 110 descendants: 10 children of the root, 10 grandchildren of each child.
    assert_eq!(
        parent_of.len(),
        (FANOUT + FANOUT * FANOUT) as usize,
        "Child events: {parent_of:?}"
    );
    assert!(
        !parent_of.contains_key(&root),
        "the root was announced as a Child"
    );
    let children: BTreeSet<Pid> = parent_of
        .iter()
        .filter(|(_, p)| **p == root)
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(
        children.len(),
        FANOUT as usize,
        "children of the root: {children:?}"
    );
    let mut grandchildren_of: HashMap<Pid, Vec<Pid>> = HashMap::new();
    for (&pid, &parent) in &parent_of {
        if parent != root {
            assert!(
                children.contains(&parent),
                "{pid} has parent {parent}, which is neither the root nor a child"
            );
            grandchildren_of.entry(parent).or_default().push(pid);
        }
    }

    // Every tracked process exited exactly once, with the status the script gives it.
    assert_eq!(
        code_of.len(),
        parent_of.len() + 1,
        "Exit events: {code_of:?}"
    );
    assert_eq!(code_of.get(&root), Some(&Some(200)), "root Exit");
    let mut child_codes = BTreeSet::new();
    for &c in &children {
        let i = code_of[&c].unwrap_or_else(|| panic!("child {c} exited without a code"));
        assert!((1..=FANOUT).contains(&i), "child {c} exit code {i}");
        child_codes.insert(i);
        let gs = grandchildren_of.get(&c).map(Vec::as_slice).unwrap_or(&[]);
        assert_eq!(
            gs.len(),
            FANOUT as usize,
            "grandchildren of child {c} (code {i}): {gs:?}"
        );
        let got: BTreeSet<i32> = gs
            .iter()
            .map(|g| code_of[g].unwrap_or_else(|| panic!("grandchild {g} exited without a code")))
            .collect();
        let want: BTreeSet<i32> = (0..FANOUT).map(|j| (10 * i + j) % 256).collect();
        assert_eq!(
            got, want,
            "exit codes of the grandchildren of child {c} (code {i})"
        );
    }
    assert_eq!(
        child_codes,
        (1..=FANOUT).collect(),
        "exit codes of the children"
    );

    // Fork events agree: the root forked 10 times, each child 10 times, nothing else forked.
    assert_eq!(
        forks.get(&root),
        Some(&(FANOUT as u32)),
        "root forks: {forks:?}"
    );
    for &c in &children {
        assert_eq!(forks.get(&c), Some(&(FANOUT as u32)), "forks of child {c}");
    }
    assert_eq!(
        forks.len(),
        1 + children.len(),
        "processes that forked: {forks:?}"
    );
    for (pid, child) in fork_children {
        assert_eq!(
            parent_of.get(&child),
            Some(&pid),
            "Fork {pid} -> {child} has no matching Child"
        );
    }
    // Only the root ran a program (the spawn's exec of sh). Watched once ready, nothing did:
    // sh's exec came before the watch, and is not delivered.
    let want = match how {
        Start::Spawn => HashMap::from([(root, 1)]),
        Start::WatchWhenReady => HashMap::new(),
    };
    assert_eq!(execs, want, "Exec events");

    // Order across pids. A process is announced after its parent was (a grandchild's Child
    // after its parent's Child), and before its parent's Exit: every process here is created
    // before its parent exits, and a parent's Exit comes after the Child of every process it
    // created before exiting (guarantee 9 in the crate docs).
    // Where each pid's event of one kind stands in the trace (each comes once per pid).
    let index_of = |kind: fn(&ProcEvent) -> bool| -> HashMap<Pid, usize> {
        let of_kind = events.iter().enumerate().filter(|(_, e)| kind(e));
        of_kind.map(|(i, e)| (e.pid(), i)).collect()
    };
    let child_at = index_of(|e| matches!(e, ProcEvent::Child { .. }));
    let exit_at = index_of(|e| matches!(e, ProcEvent::Exit { .. }));
    for (&pid, &parent) in &parent_of {
        let at = child_at[&pid];
        if let Some(&parent_at) = child_at.get(&parent) {
            assert!(
                parent_at < at,
                "Child of {pid} (event {at}) before the Child of its parent {parent} \
                 (event {parent_at}): {events:?}"
            );
        }
        let parent_exit = exit_at[&parent];
        assert!(
            at < parent_exit,
            "Child of {pid} (event {at}) after the Exit of its parent {parent} \
             (event {parent_exit}): {events:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_by_ten_tree_is_tracked_from_its_root() {
    ten_by_ten_tree(Start::Spawn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_by_ten_tree_is_tracked_from_its_root_watched_when_ready() {
    ten_by_ten_tree(Start::WatchWhenReady).await;
}
