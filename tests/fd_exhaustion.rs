//! Running out of file descriptors while processes are tracked.
//!
//! The test lowers `RLIMIT_NOFILE` to just above the descriptors in use and fills every free
//! slot below it (duplicates of `/dev/null`), so that any `open`, `pipe`, `socket` or
//! `eventfd` fails with `EMFILE`. While the process is in that state:
//!
//! * a tree that was already watched is released and forks and exits: its stream still gets
//!   every `Child` and `Exit`, with the right codes (draining the netlink socket needs no new
//!   descriptor);
//! * `watch`, `spawn` and `ProcWatcher::new` fail with an error that names the operation, the
//!   pid and backend where there is one, says the process ran out of file descriptors and what
//!   to do; nothing is left attached, no process is left behind;
//! * a second watcher with a tiny receive buffer overflows under a fork storm: its `/proc`
//!   resync cannot even list `/proc` then, and must not take the live process it tracks for
//!   a dead one;
//! * with only a few free slots, `spawn` and `ProcWatcher::new` either work completely or fail
//!   cleanly, whichever step runs out.
//!
//! Then the limit is restored and everything works again. No panic may happen anywhere (a
//! hook counts them), no descriptor or thread may leak.
//!
//! The limit and the descriptor table belong to the whole process, so this file holds a
//! single test.

mod support;

use procwatch::{
    BackendKind, ErrorKind, Interest, NetlinkOptions, Pid, ProcEvent, ProcEvents, ProcWatcher,
};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use std::collections::HashMap;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};

/// The process's descriptor table, full up to a lowered soft `RLIMIT_NOFILE`. Dropping it
/// closes the fillers and puts the old limit back.
struct Exhaustion {
    saved: Rlimit,
    devnull: OwnedFd,
    fillers: Vec<OwnedFd>,
}

impl Exhaustion {
    /// Lowers the soft limit to `room` above the highest descriptor open now, then fills
    /// every free slot below it.
    fn start(room: u64) -> Exhaustion {
        let devnull = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .expect("open /dev/null");
        let saved = getrlimit(Resource::Nofile);
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        let limit = highest + 1 + room;
        assert!(
            saved.current.is_none_or(|c| c >= limit),
            "the soft RLIMIT_NOFILE ({:?}) is already below {limit}",
            saved.current
        );
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(limit),
                maximum: saved.maximum,
            },
        )
        .expect("lower RLIMIT_NOFILE");
        let mut ex = Exhaustion {
            saved,
            devnull,
            fillers: Vec::new(),
        };
        ex.fill();
        ex
    }

    /// Takes every free slot again; returns how many there were.
    fn fill(&mut self) -> usize {
        let mut n = 0;
        loop {
            // Close-on-exec, so that children started meanwhile do not inherit them.
            match rustix::io::fcntl_dupfd_cloexec(&self.devnull, 0) {
                Ok(fd) => {
                    self.fillers.push(fd);
                    n += 1;
                }
                Err(Errno::MFILE) => return n,
                Err(e) => panic!("dup /dev/null: {e}"),
            }
        }
    }

    /// Frees exactly `k` slots.
    fn leave_free(&mut self, k: usize) {
        self.fill();
        assert!(
            self.fillers.len() >= k,
            "only {} fillers",
            self.fillers.len()
        );
        for _ in 0..k {
            self.fillers.pop();
        }
    }

    /// Checks that no slot is free (nothing this test did since the last fill closed one).
    fn assert_exhausted(&mut self) {
        let err = std::fs::File::open("/dev/null").expect_err("the fd table should be full");
        assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
    }

    fn restore(&mut self) {
        self.fillers.clear();
        setrlimit(Resource::Nofile, self.saved).expect("restore RLIMIT_NOFILE");
    }
}

impl Drop for Exhaustion {
    fn drop(&mut self) {
        self.restore();
    }
}

/// A shell held at `read` until a line arrives on its stdin.
fn held(script: &str) -> tokio::process::Command {
    let mut cmd = sh(&format!("read go; {script}"));
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    cmd
}

/// Lets a held shell go. Writing to a pipe that is open already needs no descriptor.
async fn release(stdin: &mut ChildStdin) {
    tokio::time::timeout(DEADLINE, stdin.write_all(b"go\n"))
        .await
        .expect("writing to a held shell hung")
        .expect("write to a held shell");
}

async fn wait(child: &mut Child, what: &str) -> ExitStatus {
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} did not exit"))
        .unwrap_or_else(|e| panic!("wait for {what}: {e}"))
}

/// Three children of the root exit 3, 5, 11; a fourth exits 7 after its own child exits 9;
/// the root exits 42.
const TREE: &str =
    "for c in 3 5 11; do (exit $c) & done; ( (exit 9) & wait; exit 7 ) & wait; exit 42";

/// Checks the tree's whole trace.
fn check_tree(root: Pid, events: &[ProcEvent]) {
    check_order(events);
    let parent_of: HashMap<Pid, Pid> = parents_of(events);
    let code_of: HashMap<Pid, Option<i32>> = events
        .iter()
        .filter(|e| matches!(e, ProcEvent::Exit { .. }))
        .map(|e| (e.pid(), exit_code(e)))
        .collect();
    assert_eq!(
        parent_of.len(),
        5,
        "five processes below the root: {events:?}"
    );
    let mut direct: Vec<Option<i32>> = parent_of
        .iter()
        .filter(|(_, &p)| p == root)
        .map(|(c, _)| code_of.get(c).copied().flatten())
        .collect();
    direct.sort();
    assert_eq!(
        direct,
        vec![Some(3), Some(5), Some(7), Some(11)],
        "the root's children's exit codes: {events:?}"
    );
    let (grandchild, middle) = parent_of
        .iter()
        .find(|(_, &p)| p != root)
        .map(|(&c, &p)| (c, p))
        .expect("a grandchild");
    assert_eq!(code_of.get(&middle), Some(&Some(7)), "{events:?}");
    assert_eq!(code_of.get(&grandchild), Some(&Some(9)), "{events:?}");
    assert_eq!(
        code_of.get(&root),
        Some(&Some(42)),
        "the root's Exit: {events:?}"
    );
    assert_eq!(code_of.len(), 6, "one Exit per process: {events:?}");
}

/// Checks an error caused by `EMFILE`: the kind, the number, the operation, and a message a
/// user can act on.
fn check_out_of_fds(err: &procwatch::Error, op: &str) {
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Other, "{text}");
    assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err:?}");
    assert!(
        err.operation().starts_with(op),
        "operation {:?}, expected {op}: {text}",
        err.operation()
    );
    assert_eq!(err.backend(), Some(BackendKind::Netlink), "{text}");
    assert!(text.starts_with(op), "{text}");
    assert!(text.contains("(netlink backend)"), "{text}");
    assert!(text.contains("ran out of file descriptors"), "{text}");
    assert!(text.contains("RLIMIT_NOFILE"), "{text}");
    assert!(text.contains("close descriptors"), "{text}");
    assert!(text.contains("raise the limit"), "{text}");
}

/// Drains what a stream holds now without waiting; `true` if it has ended.
fn drain_now(events: &mut ProcEvents, into: &mut Vec<ProcEvent>) -> bool {
    loop {
        match events.try_next() {
            Ok(Some(ev)) => into.push(ev),
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// An unwatched fork storm (four shells forking 250 `true`s each, 25 at a time), held at
/// `read` until released: it overflows a tiny receive buffer.
const STORM: &str = "l=0; while [ $l -lt 4 ]; do \
                       ( i=0; while [ $i -lt 10 ]; do \
                           j=0; while [ $j -lt 25 ]; do true & j=$((j+1)); done; wait; \
                           i=$((i+1)); done ) & \
                       l=$((l+1)); done; wait";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_while_tracking() {
    let panics = count_panics();
    let _watchdog = Watchdog::arm(Duration::from_secs(300), "fd_exhaustion");
    let w = require!(netlink_watcher());
    // Follows one process across kernel drops; see the "resync" step below.
    let tiny = require!(watcher_with(
        |b| b.netlink(NetlinkOptions::new().receive_buffer(4096))
    ));

    // Whatever tokio or std create on a first spawn (a pidfd, signal plumbing) is created
    // now, before the descriptors are counted.
    let mut warm = w.spawn(sh("exit 0"), Interest::ALL).expect("spawn");
    collect(&mut warm.events, DEADLINE).await;
    wait(&mut warm.child, "warm-up").await;
    drop(warm);
    let fds_before = fd_count();
    let threads_before = thread_count();

    // The watched tree, held before its first fork.
    let mut tree = w.spawn(held(TREE), Interest::ALL).expect("spawn the tree");
    let tree_root = tree.pid();
    let mut tree_stdin = tree.child.stdin.take().unwrap();
    // A process to watch while exhausted: exits 17 once released.
    let mut sleeper = held("exit 17").spawn().expect("spawn the sleeper");
    let sleeper_pid = Pid::from_raw(sleeper.id().unwrap() as i32).unwrap();
    let mut sleeper_stdin = sleeper.stdin.take().unwrap();
    let mut on_tiny = tiny
        .watch(sleeper_pid, Interest::ALL)
        .expect("watch the sleeper");
    let mut storms: Vec<(Child, ChildStdin)> = (0..3)
        .map(|_| {
            let mut c = held(STORM).spawn().expect("spawn a storm");
            let stdin = c.stdin.take().unwrap();
            (c, stdin)
        })
        .collect();

    let mut ex = Exhaustion::start(16);
    ex.assert_exhausted();
    eprintln!(
        "RLIMIT_NOFILE lowered to {}; {} slots filled",
        getrlimit(Resource::Nofile).current.unwrap(),
        ex.fillers.len()
    );

    // (a) The tree forks and exits; its stream delivers everything.
    release(&mut tree_stdin).await;
    let tree_events = collect(&mut tree.events, DEADLINE).await;
    ex.assert_exhausted();
    let status = wait(&mut tree.child, "the tree").await;
    assert_eq!(status.code(), Some(42));
    check_tree(tree_root, &tree_events);
    // tokio closes a child's pidfd once it has reaped it: take that slot too.
    assert_eq!(
        ex.fill(),
        1,
        "reaping the tree frees its pidfd, nothing else"
    );
    ex.assert_exhausted();

    // (b) A new watch fails, clearly, and leaves nothing attached.
    assert_eq!(w.tracked(), 0, "the tree's stream has ended");
    for interest in [Interest::ALL, Interest::EXIT] {
        let err = w
            .watch(sleeper_pid, interest)
            .expect_err("watch without a free descriptor");
        check_out_of_fds(&err, "watch");
        assert_eq!(err.pid(), Some(sleeper_pid), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("watch pid {sleeper_pid} (netlink backend)")),
            "{text}"
        );
        assert!(text.contains(&format!("/proc/{sleeper_pid}")), "{text}");
        eprintln!("watch: {err}");
    }
    assert_eq!(w.tracked(), 0, "a failed watch attached something");

    // (c) So does a spawn, before any process exists.
    let err = w
        .spawn(sh("exit 0"), Interest::ALL)
        .expect_err("spawn without a free descriptor");
    check_out_of_fds(&err, "spawn");
    eprintln!("spawn: {err}");

    // (d) And a new watcher.
    for result in [
        ProcWatcher::new(),
        ProcWatcher::builder().backend(BackendKind::Netlink).build(),
    ] {
        let err = result.expect_err("a watcher without a free descriptor");
        check_out_of_fds(&err, "netlink");
        eprintln!("new watcher: {err}");
    }
    ex.assert_exhausted();

    // (e) The tiny-buffer watcher overflows under storms; its resync cannot list /proc now,
    // and must not report the live sleeper as exited.
    let mut tiny_seen = Vec::new();
    for (storm, stdin) in &mut storms {
        release(stdin).await;
        let status = wait(storm, "a storm").await;
        ex.fill(); // the storm's pidfd, closed once it is reaped
        assert!(status.success(), "storm: {status}");
        assert!(!drain_now(&mut on_tiny, &mut tiny_seen), "{tiny_seen:?}");
    }
    // Several failed resync attempts (one every 100 ms) while still exhausted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ex.assert_exhausted();
    let ended = drain_now(&mut on_tiny, &mut tiny_seen);
    eprintln!("tiny-buffer stream after the storms: {tiny_seen:?}");
    assert!(
        tiny_seen
            .iter()
            .any(|e| matches!(e, ProcEvent::Lost { .. })),
        "no storm overflowed the 4 KiB receive buffer: {tiny_seen:?}"
    );
    assert!(
        !ended
            && !tiny_seen
                .iter()
                .any(|e| matches!(e, ProcEvent::Exit { .. })),
        "a resync without file descriptors reported the live sleeper as exited: {tiny_seen:?}"
    );

    // (f) A few free slots: whichever step runs out, the call works or fails cleanly.
    let mut outcomes = Vec::new();
    for k in 1..=14 {
        ex.leave_free(k);
        let result = w.spawn(sh("exit 4"), Interest::ALL);
        let outcome = match result {
            Ok(mut c) => {
                let evs = collect(&mut c.events, DEADLINE).await;
                check_order(&evs);
                assert_eq!(evs.last().and_then(exit_code), Some(4), "{evs:?}");
                assert_eq!(wait(&mut c.child, "a spawned shell").await.code(), Some(4));
                "ok".to_string()
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                assert!(e.to_string().contains("ran out of file descriptors"), "{e}");
                e.operation().to_string()
            }
        };
        outcomes.push((k, outcome));
    }
    eprintln!("spawn with k free descriptors: {outcomes:?}");
    assert_eq!(
        outcomes.last().map(|(_, o)| o.as_str()),
        Some("ok"),
        "spawn failed with 14 free descriptors"
    );
    let mut outcomes = Vec::new();
    for k in 1..=4 {
        ex.leave_free(k);
        match ProcWatcher::builder().backend(BackendKind::Netlink).build() {
            Ok(other) => {
                drop(other);
                outcomes.push((k, "ok"));
            }
            Err(e) => {
                check_out_of_fds(&e, "netlink");
                outcomes.push((k, e.operation()));
            }
        }
    }
    eprintln!("new watcher with k free descriptors: {outcomes:?}");
    // Attaching reads /proc/<pid>/status, then /proc/<pid>/stat: one slot at a time.
    ex.leave_free(1);
    let one_slot = w.watch(sleeper_pid, Interest::ALL);
    assert!(
        one_slot.is_ok(),
        "watch with one free descriptor: {one_slot:?}"
    );
    drop(one_slot);

    // Back to normal.
    ex.restore();
    drop(ex);
    let children = children_of_this_process();
    assert_eq!(
        children.iter().map(|&(p, _)| p).collect::<Vec<_>>(),
        vec![sleeper_pid],
        "stray or zombie processes: {children:?}"
    );
    assert!(
        proc_stat(sleeper_pid).is_some_and(|(s, _)| s != 'Z'),
        "the sleeper is alive"
    );
    let mut on_w = w
        .watch(sleeper_pid, Interest::ALL)
        .expect("watch after the limit is back");
    let mut again = w
        .spawn(sh("(exit 6) & wait; exit 8"), Interest::ALL)
        .expect("spawn after the limit is back");
    let evs = collect(&mut again.events, DEADLINE).await;
    check_order(&evs);
    let codes: Vec<i32> = evs.iter().filter_map(exit_code).collect();
    assert_eq!(codes, vec![6, 8], "{evs:?}");
    assert!(
        evs.iter()
            .any(|e| matches!(e, ProcEvent::Child { parent, .. } if *parent == again.pid())),
        "{evs:?}"
    );
    assert_eq!(wait(&mut again.child, "a shell").await.code(), Some(8));
    drop(again);
    drop(ProcWatcher::new().expect("a watcher after the limit is back"));

    release(&mut sleeper_stdin).await;
    assert_eq!(wait(&mut sleeper, "the sleeper").await.code(), Some(17));
    let evs = collect(&mut on_w, DEADLINE).await;
    check_order(&evs);
    assert_eq!(evs.last().and_then(exit_code), Some(17), "{evs:?}");
    tiny_seen.extend(collect(&mut on_tiny, DEADLINE).await);
    check_order_allowing_lost(&tiny_seen);
    let exits: Vec<&ProcEvent> = tiny_seen
        .iter()
        .filter(|e| matches!(e, ProcEvent::Exit { .. }))
        .collect();
    assert!(
        matches!(exits[..], [ProcEvent::Exit { pid, status, .. }]
            if *pid == sleeper_pid && status.is_none_or(|s| s.code() == Some(17))),
        "the tiny-buffer stream's Exit: {tiny_seen:?}"
    );

    // Nothing leaked.
    drop((
        tree,
        tree_stdin,
        sleeper,
        sleeper_stdin,
        storms,
        on_w,
        on_tiny,
    ));
    let settled = eventually(Duration::from_secs(10), || fd_count() == fds_before).await;
    assert!(
        settled,
        "descriptors: {fds_before} before, {} after",
        fd_count()
    );
    let settled = eventually(Duration::from_secs(10), || thread_count() <= threads_before).await;
    assert!(
        settled,
        "threads: {threads_before} before, now {:?}",
        thread_names()
    );
    assert!(children_of_this_process().is_empty());
    drop(tiny);
    drop(w);
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a panic happened");
}
