//! Several streams on one pid, zombies and missing pids, coalescing, `set_interest`, the
//! tracked-process limit, and `ProcEvents` inside `tokio::select!`.

#[macro_use]
mod support;

use futures::stream::FusedStream;
use futures::StreamExt;
use procwatch::{
    ErrorKind, Interest, Pid, ProcEvent, ProcEvents, ProcWatcher, TrackErrReason, WatchedChild,
};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use support::{check_order, collect, eventually, next, sh, watcher, watcher_with, DEADLINE};
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;

/// Spawns `sh -c script` watched with `interest`, its stdin a pipe the script can block on
/// (`read x`) until [`release`] is called. Returns the child and its stdin.
fn spawn_blocked(w: &ProcWatcher, script: &str, interest: Interest) -> (WatchedChild, ChildStdin) {
    let mut cmd = sh(script);
    cmd.stdin(Stdio::piped());
    let mut started = w.spawn(cmd, interest).expect("spawn watched sh");
    let stdin = started.child.stdin.take().expect("stdin is piped");
    (started, stdin)
}

/// Lets a script blocked in `read` go on.
async fn release(stdin: &mut ChildStdin) {
    tokio::time::timeout(DEADLINE, stdin.write_all(b"go\n"))
        .await
        .expect("the script's stdin takes a line in time")
        .expect("write to the script's stdin");
}

async fn wait_child(child: &mut tokio::process::Child) -> ExitStatus {
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("the child exits in time")
        .expect("wait for the child")
}

fn code(status: &Option<ExitStatus>) -> Option<i32> {
    status.as_ref().and_then(|s| s.code())
}

/// Children announced in a trace: pid → parent.
fn children(events: &[ProcEvent]) -> BTreeMap<Pid, Pid> {
    events
        .iter()
        .filter_map(|e| match e {
            ProcEvent::Child { pid, parent, .. } => Some((*pid, *parent)),
            _ => None,
        })
        .collect()
}

/// Exits in a trace: pid → exit code.
fn exits(events: &[ProcEvent]) -> BTreeMap<Pid, Option<i32>> {
    events
        .iter()
        .filter_map(|e| match e {
            ProcEvent::Exit { pid, status, .. } => Some((*pid, code(status))),
            _ => None,
        })
        .collect()
}

/// The `Fork` events of a trace as (pid, child, count).
fn forks(events: &[ProcEvent]) -> Vec<(Pid, Pid, u32)> {
    events
        .iter()
        .filter_map(|e| match e {
            ProcEvent::Fork {
                pid, child, count, ..
            } => Some((*pid, *child, *count)),
            _ => None,
        })
        .collect()
}

/// The `Exec` events of a trace as (pid, count).
fn execs(events: &[ProcEvent]) -> Vec<(Pid, u32)> {
    events
        .iter()
        .filter_map(|e| match e {
            ProcEvent::Exec { pid, count, .. } => Some((*pid, *count)),
            _ => None,
        })
        .collect()
}

/// A trace as a sorted list of its events' descriptions, to compare traces as multisets.
fn multiset(events: &[ProcEvent]) -> Vec<String> {
    let mut v: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_on_one_pid_both_get_every_event() {
    let w = require!(watcher());
    let (mut started, mut stdin) = spawn_blocked(
        &w,
        "read x; for i in 1 2 3; do (exit $i) & done; wait; exit 9",
        Interest::TRACK | Interest::EXIT,
    );
    let root = started.pid();
    let mut second = w
        .watch(root, Interest::TRACK | Interest::EXIT)
        .expect("second watch");
    let mut exit_only = w.watch(root, Interest::EXIT).expect("third watch");
    release(&mut stdin).await;

    let (a, b, c) = tokio::join!(
        collect(&mut started.events, DEADLINE),
        collect(&mut second, DEADLINE),
        collect(&mut exit_only, DEADLINE),
    );
    assert_eq!(wait_child(&mut started.child).await.code(), Some(9));

    for trace in [&a, &b] {
        check_order(trace);
        let kids = children(trace);
        assert_eq!(kids.len(), 3, "three children: {trace:?}");
        assert!(kids.values().all(|&p| p == root), "parents: {trace:?}");
        let ex = exits(trace);
        assert_eq!(ex.get(&root), Some(&Some(9)), "root Exit: {trace:?}");
        let codes: BTreeSet<Option<i32>> = kids.keys().map(|k| ex[k]).collect();
        assert_eq!(
            codes,
            (1..=3).map(Some).collect(),
            "children's codes: {trace:?}"
        );
        assert_eq!(trace.len(), 7, "3 Child + 4 Exit, nothing else: {trace:?}");
    }
    assert_eq!(
        multiset(&a),
        multiset(&b),
        "both TRACK streams see the same events"
    );
    assert_eq!(c.len(), 1, "the EXIT-only stream: {c:?}");
    assert!(
        matches!(&c[0], ProcEvent::Exit { pid, status, .. } if *pid == root && code(status) == Some(9)),
        "the EXIT-only stream gets the root's Exit: {c:?}"
    );
}

/// A child of ours that has exited and is not reaped yet; reaped when dropped.
struct Zombie(std::process::Child);

impl Zombie {
    async fn new(exit_code: i32) -> Zombie {
        let child = std::process::Command::new("sh")
            .args(["-c", &format!("exit {exit_code}")])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let z = Zombie(child);
        let pid = z.pid();
        let is_zombie = eventually(DEADLINE, || proc_state(pid) == Some('Z')).await;
        assert!(
            is_zombie,
            "{pid} did not become a zombie: state {:?}",
            proc_state(pid)
        );
        z
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32).unwrap()
    }

    fn reap(&mut self) -> ExitStatus {
        self.0.wait().expect("reap the zombie")
    }
}

impl Drop for Zombie {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `Z`, ...).
fn proc_state(pid: Pid) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_with_exit_interest_gets_exit_at_once() {
    let w = require!(watcher());
    let mut z = Zombie::new(42).await;
    let pid = z.pid();

    let mut exit_only = w
        .watch(pid, Interest::EXIT)
        .expect("watch a zombie with EXIT");
    let mut all = w
        .watch(pid, Interest::ALL)
        .expect("watch a zombie with ALL");
    // "At once": the Exit is ready when `watch` returns, without waiting for anything.
    let ev = all.try_next().expect("stream not finished");
    assert!(
        matches!(&ev, Some(ProcEvent::Exit { pid: p, status, .. }) if *p == pid && code(status) == Some(42)),
        "the Exit is ready as soon as watch returns: {ev:?}"
    );
    assert_eq!(
        all.try_next(),
        Err(procwatch::Finished),
        "nothing after the Exit"
    );
    assert!(all.is_terminated());

    let ev = next(&mut exit_only, DEADLINE).await;
    assert!(
        matches!(&ev, Some(ProcEvent::Exit { pid: p, status, .. }) if *p == pid && code(status) == Some(42)),
        "Exit with the zombie's status: {ev:?}"
    );
    assert_eq!(
        next(&mut exit_only, DEADLINE).await,
        None,
        "the stream ends after the Exit"
    );

    // The watch did not reap it: its status is still ours to collect.
    assert_eq!(proc_state(pid), Some('Z'));
    assert_eq!(z.reap().code(), Some(42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_without_exit_interest_is_no_such_process() {
    let w = require!(watcher());
    let mut z = Zombie::new(3).await;
    let pid = z.pid();
    for interest in [
        Interest::FORK,
        Interest::TRACK,
        Interest::FORK | Interest::EXEC | Interest::TRACK,
        Interest::ALL - Interest::EXIT,
    ] {
        let err = w
            .watch(pid, interest)
            .expect_err("a zombie without EXIT interest");
        assert_eq!(err.kind(), ErrorKind::NoSuchProcess, "{interest:?}: {err}");
    }
    assert_eq!(z.reap().code(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_pid_is_no_such_process() {
    let w = require!(watcher());
    let pid_max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("read pid_max")
        .trim()
        .parse()
        .expect("pid_max is a number");
    // Pids run from 1 to pid_max - 1.
    let mut missing = vec![pid_max, pid_max.saturating_add(1), i32::MAX];

    // A pid that was just reaped (the kernel hands out pids cyclically, so it is not reused
    // within this test).
    let mut gone = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let gone_pid = gone.id() as i32;
    let mut status = None;
    let reaped = eventually(DEADLINE, || {
        status = gone.try_wait().expect("try_wait true");
        status.is_some()
    })
    .await;
    assert!(reaped, "`true` did not exit in time");
    assert!(status.unwrap().success());
    missing.push(gone_pid);

    for raw in missing {
        let pid = Pid::from_raw(raw).unwrap();
        for interest in [
            Interest::EXIT,
            Interest::ALL,
            Interest::FORK | Interest::TRACK,
        ] {
            match w.watch(pid, interest) {
                Err(e) => assert_eq!(
                    e.kind(),
                    ErrorKind::NoSuchProcess,
                    "pid {raw} {interest:?}: {e}"
                ),
                Ok(s) => panic!("watch of missing pid {raw} with {interest:?} succeeded: {s:?}"),
            }
        }
    }
    assert_eq!(w.tracked(), 0, "failed watches leave nothing tracked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_interest_is_invalid_input() {
    let w = require!(watcher());
    let err = w
        .watch(Pid::this(), Interest::empty())
        .expect_err("empty interest");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let err = w
        .spawn(sh("exit 0"), Interest::empty())
        .expect_err("spawn with empty interest");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(w.tracked(), 0, "failed watches leave nothing tracked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_forks_say_how_many() {
    const FORKS: u32 = 50;
    let w = require!(watcher());
    // `true` is a dash builtin: `true &` forks one subshell and nothing else.
    let script =
        format!("read x; i=0; while [ $i -lt {FORKS} ]; do true & i=$((i + 1)); done; wait");
    let (mut started, mut stdin) = spawn_blocked(
        &w,
        &script,
        Interest::FORK | Interest::TRACK | Interest::EXIT,
    );
    let root = started.pid();
    // A second stream only to learn when the dispatcher has applied the root's exit, and so
    // every fork before it, without reading the first stream.
    // It also hears every fork, in program order, so its last `Fork` names the last child.
    let mut sentinel = w
        .watch(root, Interest::FORK | Interest::EXIT)
        .expect("watch sentinel");
    release(&mut stdin).await;
    let s = collect(&mut sentinel, DEADLINE).await;
    assert_eq!(
        exits(&s),
        BTreeMap::from([(root, Some(0))]),
        "sentinel: {s:?}"
    );
    let sentinel_forks = forks(&s);
    assert_eq!(sentinel_forks.iter().map(|f| f.2).sum::<u32>(), FORKS);
    let last_child = sentinel_forks.last().unwrap().1;
    assert!(wait_child(&mut started.child).await.success());

    // Nobody read the first stream while the root forked: its forks were folded.
    let trace = collect(&mut started.events, DEADLINE).await;
    check_order(&trace);
    let kids = children(&trace);
    assert_eq!(kids.len(), FORKS as usize, "one Child per fork: {trace:?}");
    assert!(kids.values().all(|&p| p == root));
    let fs = forks(&trace);
    assert!(
        fs.iter().all(|f| f.0 == root),
        "only the root forked: {fs:?}"
    );
    assert!(
        fs.iter().all(|f| kids.contains_key(&f.1)),
        "Fork children are Children: {fs:?}"
    );
    assert_eq!(
        fs.iter().map(|f| f.2).sum::<u32>(),
        FORKS,
        "Fork counts: {fs:?}"
    );
    assert!(fs.iter().any(|f| f.2 > 1), "forks were coalesced: {fs:?}");
    assert_eq!(
        fs.last().map(|f| f.1),
        Some(last_child),
        "a folded Fork names the last child: {fs:?}"
    );
    let ex = exits(&trace);
    assert_eq!(ex.len(), FORKS as usize + 1, "Exits: {trace:?}");
    assert!(ex.values().all(|&c| c == Some(0)), "exit codes: {ex:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_execs_say_how_many() {
    const EXECS: u32 = 5;
    let w = require!(watcher());
    // The script re-executes itself EXECS times in the same process, then exits with 3.
    let script = format!(
        "[ \"$N\" -eq 0 ] && read x; \
         if [ \"$N\" -lt {EXECS} ]; then N=$((N + 1)); export N; exec sh -c \"$0\" \"$0\"; fi; \
         exit 3"
    );
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", &script, &script])
        .env("N", "0")
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    let mut started = w
        .spawn(cmd, Interest::EXEC | Interest::EXIT)
        .expect("spawn");
    let mut stdin = started.child.stdin.take().unwrap();
    let root = started.pid();
    let mut sentinel = w.watch(root, Interest::EXIT).expect("watch sentinel");
    release(&mut stdin).await;
    let s = collect(&mut sentinel, DEADLINE).await;
    assert_eq!(
        exits(&s),
        BTreeMap::from([(root, Some(3))]),
        "sentinel: {s:?}"
    );
    assert_eq!(wait_child(&mut started.child).await.code(), Some(3));

    let trace = collect(&mut started.events, DEADLINE).await;
    check_order(&trace);
    let es = execs(&trace);
    assert!(es.iter().all(|e| e.0 == root), "Exec events: {es:?}");
    // The spawn's own exec of sh, then EXECS more.
    assert_eq!(
        es.iter().map(|e| e.1).sum::<u32>(),
        EXECS + 1,
        "Exec counts: {trace:?}"
    );
    assert!(
        es.iter().any(|e| e.1 > 1),
        "execs were coalesced: {trace:?}"
    );
    assert_eq!(
        trace.len(),
        es.len() + 1,
        "Exec events and one Exit: {trace:?}"
    );
    assert_eq!(exits(&trace), BTreeMap::from([(root, Some(3))]));
}

/// Reads `events` until `done` holds for the events read so far.
async fn read_until(
    events: &mut ProcEvents,
    mut done: impl FnMut(&[ProcEvent]) -> bool,
) -> Vec<ProcEvent> {
    let mut out = Vec::new();
    while !done(&out) {
        match next(events, DEADLINE).await {
            Some(ev) => out.push(ev),
            None => panic!("the stream ended early: {out:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_interest_changes_one_stream_only() {
    let w = require!(watcher());
    let (mut started, mut stdin) = spawn_blocked(
        &w,
        "read x; (exit 1) & wait; read y; (exit 2) & wait; exit 7",
        Interest::ALL,
    );
    let root = started.pid();
    let mut other = w.watch(root, Interest::EXIT).expect("second watch");
    assert_eq!(other.interest(), Interest::EXIT);
    assert_eq!(started.events.interest(), Interest::ALL);

    // Phase 1: the root forks G1. The EXIT-only stream does not hear of the fork.
    release(&mut stdin).await;
    let first = read_until(&mut started.events, |evs| {
        let kids = children(evs);
        kids.len() == 1
            && exits(evs).contains_key(kids.keys().next().unwrap())
            && !forks(evs).is_empty()
    })
    .await;
    let g1 = *children(&first).keys().next().unwrap();
    assert_eq!(forks(&first), vec![(root, g1, 1)], "phase 1: {first:?}");
    assert_eq!(
        exits(&first),
        BTreeMap::from([(g1, Some(1))]),
        "phase 1: {first:?}"
    );
    assert_eq!(
        execs(&first),
        vec![(root, 1)],
        "phase 1: the spawn's exec: {first:?}"
    );
    assert_eq!(first.len(), 4, "phase 1: {first:?}");

    // Phase 2: the second stream now wants forks, the first no longer does.
    other.set_interest(Interest::EXIT | Interest::FORK);
    started.events.set_interest(Interest::ALL - Interest::FORK);
    assert_eq!(other.interest(), Interest::EXIT | Interest::FORK);
    assert_eq!(started.events.interest(), Interest::ALL - Interest::FORK);
    release(&mut stdin).await;

    let (a, b) = tokio::join!(
        collect(&mut started.events, DEADLINE),
        collect(&mut other, DEADLINE)
    );
    assert_eq!(wait_child(&mut started.child).await.code(), Some(7));

    check_order(&[first.clone(), a.clone()].concat());
    let kids = children(&a);
    assert_eq!(kids.len(), 1, "phase 2: one new Child: {a:?}");
    let (&g2, &parent) = kids.iter().next().unwrap();
    assert_eq!(parent, root);
    assert_ne!(g2, g1);
    assert!(
        forks(&a).is_empty(),
        "phase 2: no Fork once FORK was removed: {a:?}"
    );
    assert_eq!(
        exits(&a),
        BTreeMap::from([(g2, Some(2)), (root, Some(7))]),
        "phase 2: {a:?}"
    );
    assert_eq!(a.len(), 3, "phase 2: {a:?}");

    check_order(&b);
    assert_eq!(
        forks(&b),
        vec![(root, g2, 1)],
        "the second stream hears only the later fork: {b:?}"
    );
    assert_eq!(
        exits(&b),
        BTreeMap::from([(root, Some(7))]),
        "the second stream: {b:?}"
    );
    assert_eq!(b.len(), 2, "the second stream: {b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tracked_limit_gives_track_err() {
    const LIMIT: usize = 3;
    let w = require!(watcher_with(|b| b.max_tracked(LIMIT)));
    // All five children exist (alive, or exited with an Exit nobody read yet) at once, so the
    // stream holds the root and two children and cannot follow the last three.
    let (mut started, mut stdin) = spawn_blocked(
        &w,
        "read x; for i in 1 2 3 4 5; do (exit $i) & done; wait",
        Interest::TRACK | Interest::EXIT,
    );
    let root = started.pid();
    let mut sentinel = w.watch(root, Interest::EXIT).expect("watch sentinel");
    // The whole truth, from a watcher without the limit (read after the fact): a Netlink one
    // (a second tracer could not trace the same processes), where this machine has one.
    let unlimited = ProcWatcher::builder()
        .backend(procwatch::BackendKind::Netlink)
        .build();
    let mut truth = unlimited.as_ref().ok().map(|u| {
        u.watch(root, Interest::FORK | Interest::TRACK | Interest::EXIT)
            .expect("watch without limit")
    });
    release(&mut stdin).await;
    let s = collect(&mut sentinel, DEADLINE).await;
    assert_eq!(
        exits(&s),
        BTreeMap::from([(root, Some(0))]),
        "sentinel: {s:?}"
    );
    assert!(wait_child(&mut started.child).await.success());
    let truth = match &mut truth {
        Some(t) => Some(collect(t, DEADLINE).await),
        None => None,
    };

    let trace = collect(&mut started.events, DEADLINE).await;
    check_order(&trace);
    let kids = children(&trace);
    assert_eq!(
        kids.len(),
        LIMIT - 1,
        "children followed within the limit: {trace:?}"
    );
    let mut errs = 0;
    for ev in &trace {
        if let ProcEvent::TrackErr {
            pid,
            child,
            reason,
            count,
            ..
        } = ev
        {
            assert_eq!(*pid, root, "{ev:?}");
            assert_eq!(*reason, TrackErrReason::Limit, "{ev:?}");
            assert!(
                !kids.contains_key(child) && *child != root,
                "{ev:?} names a tracked process"
            );
            errs += count;
        }
    }
    assert_eq!(errs, 5 - (LIMIT as u32 - 1), "TrackErr counts: {trace:?}");
    let ex = exits(&trace);
    assert_eq!(
        ex.len(),
        LIMIT,
        "Exit of the root and the followed children: {trace:?}"
    );
    assert_eq!(ex.get(&root), Some(&Some(0)));
    assert!(kids.keys().all(|k| ex.contains_key(k)));
    let Some(truth) = truth else {
        eprintln!("no Netlink watcher here to compare the children with");
        return;
    };
    let all_kids = children(&truth);
    assert_eq!(all_kids.len(), 5, "the unlimited stream: {truth:?}");
    let last_child = forks(&truth).last().expect("forks").1;
    assert!(
        kids.keys().all(|k| all_kids.contains_key(k)),
        "followed children are real children: {trace:?} vs {truth:?}"
    );
    let untracked: Vec<Pid> = trace
        .iter()
        .filter_map(|e| match e {
            ProcEvent::TrackErr { child, .. } => Some(*child),
            _ => None,
        })
        .collect();
    assert!(
        untracked.iter().all(|c| all_kids.contains_key(c)),
        "TrackErr names real children: {trace:?} vs {truth:?}"
    );
    assert_eq!(
        untracked.last(),
        Some(&last_child),
        "the last TrackErr names the last child forked: {trace:?} vs {truth:?}"
    );
}

fn assert_send_unpin_fused<T: Send + Unpin + FusedStream + 'static>() {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_send_and_cancel_safe_in_select() {
    assert_send_unpin_fused::<ProcEvents>();
    const FORKS: i32 = 100;
    let w = require!(watcher());
    let interest = Interest::TRACK | Interest::FORK | Interest::EXIT;
    let script = format!(
        "read x; i=0; while [ $i -lt {FORKS} ]; do (exit $((i % 7))) & i=$((i + 1)); done; wait; exit 4"
    );
    let (started, mut stdin) = spawn_blocked(&w, &script, interest);
    let root = started.pid();
    let mut straight = w.watch(root, interest).expect("second watch");

    // The select loop runs on another task (the stream is Send); its other branches fire all
    // the time and cancel a pending `next()` again and again.
    let WatchedChild {
        mut child,
        events: mut selected,
        ..
    } = started;
    let looper = tokio::spawn(async move {
        let mut trace = Vec::new();
        let mut cancels = 0u64;
        let mut tick = tokio::time::interval(Duration::from_micros(200));
        loop {
            tokio::select! {
                ev = selected.next() => match ev {
                    Some(ev) => trace.push(ev),
                    None => break,
                },
                _ = tokio::task::yield_now() => cancels += 1,
                _ = tick.tick() => cancels += 1,
            }
        }
        assert!(selected.is_terminated());
        assert_eq!(selected.next().await, None, "a fused stream stays ended");
        (trace, cancels)
    });
    release(&mut stdin).await;

    let direct = collect(&mut straight, DEADLINE).await;
    let (via_select, cancels) = tokio::time::timeout(DEADLINE, looper)
        .await
        .expect("the select loop ends in time")
        .expect("the select loop did not panic");
    assert_eq!(wait_child(&mut child).await.code(), Some(4));
    eprintln!(
        "select loop: {} events, {cancels} other branches taken",
        via_select.len()
    );

    for trace in [&direct, &via_select] {
        check_order(trace);
        let kids = children(trace);
        assert_eq!(kids.len(), FORKS as usize, "{trace:?}");
        let fs = forks(trace);
        assert_eq!(fs.iter().map(|f| f.2).sum::<u32>(), FORKS as u32, "{fs:?}");
        assert!(
            fs.iter().all(|f| f.0 == root && kids.contains_key(&f.1)),
            "{fs:?}"
        );
        let ex = exits(trace);
        assert_eq!(ex.get(&root), Some(&Some(4)));
        let mut codes: Vec<i32> = kids.keys().map(|k| ex[k].expect("an exit code")).collect();
        codes.sort_unstable();
        let mut want: Vec<i32> = (0..FORKS).map(|i| i % 7).collect();
        want.sort_unstable();
        assert_eq!(codes, want);
    }
    // Fork runs may be folded differently depending on when each stream was read; everything
    // else must be identical.
    let no_forks = |t: &[ProcEvent]| -> Vec<ProcEvent> {
        t.iter()
            .filter(|e| !matches!(e, ProcEvent::Fork { .. }))
            .cloned()
            .collect()
    };
    assert_eq!(
        multiset(&no_forks(&via_select)),
        multiset(&no_forks(&direct)),
        "the select loop lost or duplicated events"
    );
}

/// An event described without its time, to compare traces with expectations (the variants
/// are `#[non_exhaustive]`, so a test cannot build them).
fn describe(e: &ProcEvent) -> String {
    match *e {
        ProcEvent::Child { pid, parent, .. } => format!("Child {pid} of {parent}"),
        ProcEvent::Fork {
            pid, child, count, ..
        } => format!("Fork {pid} -> {child} x{count}"),
        ProcEvent::Exec { pid, count, .. } => format!("Exec {pid} x{count}"),
        ref other => format!("{other:?}"),
    }
}

/// A trace as the sorted descriptions of its events.
fn described(events: &[ProcEvent]) -> Vec<String> {
    let mut v: Vec<String> = events.iter().map(describe).collect();
    v.sort();
    v
}

/// Sorted expected descriptions.
fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_without_exit_interest_get_no_exit_and_still_end() {
    let w = require!(watcher());
    // The root forks c1, which forks g (exit 3), and then c2, which execs `true`; the root
    // waits for both and exits 7. dash forks once per `( ... ) &` and nothing else.
    let (mut started, mut stdin) = spawn_blocked(
        &w,
        "read x; ( (exit 3) & wait ) & ( exec true ) & wait; exit 7",
        Interest::EXEC | Interest::TRACK,
    );
    let root = started.pid();
    // Forks happen only after the release, so this stream misses none of them.
    let mut fork_track = w
        .watch(root, Interest::FORK | Interest::TRACK)
        .expect("watch with FORK | TRACK");
    // Only to learn when the dispatcher has applied the root's exit, and so everything before
    // it: the root exits only after its children, and c1 only after g.
    let mut sentinel = w.watch(root, Interest::EXIT).expect("watch sentinel");
    release(&mut stdin).await;
    let s = collect(&mut sentinel, DEADLINE).await;
    assert_eq!(
        exits(&s),
        BTreeMap::from([(root, Some(7))]),
        "sentinel: {s:?}"
    );
    assert_eq!(s.len(), 1, "sentinel: {s:?}");
    assert_eq!(wait_child(&mut started.child).await.code(), Some(7));

    // Read only now, so that the root's forks are folded the same way every time.
    let a = collect(&mut fork_track, DEADLINE).await;
    let b = collect(&mut started.events, DEADLINE).await;
    for (name, stream) in [
        ("FORK | TRACK", &mut fork_track),
        ("EXEC | TRACK", &mut started.events),
    ] {
        assert!(stream.is_terminated(), "{name}: the stream has not ended");
        assert_eq!(stream.try_next(), Err(procwatch::Finished), "{name}");
        assert_eq!(stream.tracked(), 0, "{name}: still tracks processes");
    }
    check_order(&a);
    check_order(&b);

    // The tree, from the FORK | TRACK stream's Child events: two children of the root, one of
    // which (c1) has one child (g).
    let kids = children(&a);
    assert_eq!(kids.len(), 3, "three descendants: {a:?}");
    let grand: Vec<(Pid, Pid)> = kids
        .iter()
        .filter(|(_, &p)| p != root)
        .map(|(&c, &p)| (c, p))
        .collect();
    assert_eq!(grand.len(), 1, "one grandchild: {a:?}");
    let (g, c1) = grand[0];
    assert_eq!(
        kids.get(&c1),
        Some(&root),
        "g's parent is a child of the root: {a:?}"
    );
    let c2 = *kids
        .iter()
        .find(|(&c, &p)| p == root && c != c1)
        .expect("a second child of the root")
        .0;
    let childs = [
        format!("Child {c1} of {root}"),
        format!("Child {c2} of {root}"),
        format!("Child {g} of {c1}"),
    ];

    // Exactly these events, nothing else: the root's two forks, folded (nobody read the
    // stream while they happened) and naming the last child, c1's fork of g, and one Child per
    // descendant with its parent. No Exit, no Exec.
    let mut want_a = vec![
        format!("Fork {root} -> {c2} x2"),
        format!("Fork {c1} -> {g} x1"),
    ];
    want_a.extend(childs.iter().cloned());
    assert_eq!(described(&a), sorted(want_a), "FORK | TRACK stream: {a:?}");

    // The spawned EXEC | TRACK stream: the spawn's exec of sh first, then the same Child
    // events and c2's exec of `true`. No Fork, no Exit.
    assert_eq!(
        b.first().map(describe),
        Some(format!("Exec {root} x1")),
        "the spawn's exec comes first: {b:?}"
    );
    let mut want_b = vec![format!("Exec {root} x1"), format!("Exec {c2} x1")];
    want_b.extend(childs.iter().cloned());
    assert_eq!(described(&b), sorted(want_b), "EXEC | TRACK stream: {b:?}");

    // Causal order across pids: a grandchild is announced after its parent.
    for trace in [&a, &b] {
        let at = |pid: Pid| {
            trace
                .iter()
                .position(|e| matches!(e, ProcEvent::Child { pid: p, .. } if *p == pid))
                .unwrap()
        };
        assert!(at(c1) < at(g), "Child of g before Child of c1: {trace:?}");
    }
}
