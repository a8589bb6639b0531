//! Drop is safe at any moment (the crate docs' caveats): dropping a stream, or the whole
//! watcher with streams alive, in the middle of a fork storm never panics, hangs, leaks a
//! thread or a file descriptor, or leaves a process of ours unreaped; streams of a dropped
//! watcher end instead of waiting forever.
//!
//! The file holds a single test on purpose: it counts this process's threads and descriptors,
//! and a second test running beside it would change both counts.

#[macro_use]
mod support;

use futures::stream::FusedStream;
use futures::StreamExt;
use procwatch::{Interest, Pid, ProcEvent, ProcEvents, ProcWatcher, WatchedChild};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// Rounds per case.
const ROUNDS: usize = 3;

/// A fork storm that is certainly still running when the test drops something: batches of 50
/// short processes, at least 40 batches (2,000 processes), and then more until the file named
/// by `$GATE` exists. Everything is a shell builtin, so every process is a `fork` of `sh`.
const STORM: &str = r#"n=0
while [ $n -lt 40 ] || [ ! -e "$GATE" ]; do
  j=0; while [ $j -lt 50 ]; do true & j=$((j+1)); done; wait
  n=$((n+1))
done"#;

/// A file whose creation lets a [`STORM`] finish. Removed on drop.
struct Gate(PathBuf);

impl Gate {
    fn new(tag: &str) -> Gate {
        let path =
            std::env::temp_dir().join(format!("procwatch-drop-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Gate(path)
    }

    fn open(&self) {
        std::fs::write(&self.0, b"").unwrap();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A watched storm, its gate, and what identifies the process for the zombie check.
struct Storm {
    started: WatchedChild,
    gate: Gate,
    pid: Pid,
    start_ticks: u64,
}

fn start_storm(w: &ProcWatcher, tag: &str) -> Storm {
    let gate = Gate::new(tag);
    let mut cmd = sh(STORM);
    cmd.env("GATE", &gate.0);
    let started = w.spawn(cmd, Interest::ALL).expect("spawn the storm");
    let pid = started.pid();
    // Our unreaped child: /proc/<pid> exists (alive or zombie) until we wait for it.
    let (_, start_ticks) = proc_stat(pid).expect("/proc entry of our unreaped child");
    Storm {
        started,
        gate,
        pid,
        start_ticks,
    }
}

/// Lets the storm finish and checks that it exits normally and leaves no zombie.
async fn finish_storm(mut child: tokio::process::Child, gate: Gate, pid: Pid, start_ticks: u64) {
    gate.open();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap_or_else(|_| panic!("storm {pid} did not finish within {DEADLINE:?}"))
        .expect("wait for the storm");
    assert!(status.success(), "storm {pid} exited with {status}");
    assert!(
        proc_gone(pid, start_ticks),
        "storm {pid} is still in /proc after wait: {:?}",
        proc_stat(pid)
    );
}

/// Reads `n` events (the storm is running, so they come).
async fn read_some(events: &mut ProcEvents, n: usize) {
    for _ in 0..n {
        assert!(
            next(events, DEADLINE).await.is_some(),
            "the stream ended during the storm"
        );
    }
}

/// Drops a stream after reading a few events, while a second stream on the same storm lives
/// on and still sees everything until the end.
async fn drop_stream_after_a_few_events(w: &ProcWatcher, round: usize) {
    let storm = start_storm(w, &format!("a{round}"));
    let Storm {
        started,
        gate,
        pid,
        start_ticks,
    } = storm;
    let mut other = w
        .watch(pid, Interest::ALL)
        .expect("second stream on the storm");
    let mut events = started.events;
    read_some(&mut events, 5).await;
    drop(events);
    finish_storm(started.child, gate, pid, start_ticks).await;
    let rest = collect(&mut other, DEADLINE).await;
    check_order(&rest);
    assert!(
        rest.iter()
            .any(|e| matches!(e, ProcEvent::Exit { pid: p, .. } if *p == pid)),
        "the surviving stream must see the storm's Exit"
    );
}

/// Drops a stream inside a task that is parked in `next()` (its waker is registered) by
/// aborting that task on a runtime worker thread.
async fn abort_task_reading_stream(w: &ProcWatcher, round: usize) {
    let Storm {
        started,
        gate,
        pid,
        start_ticks,
    } = start_storm(w, &format!("b{round}"));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let mut events = started.events;
    let reader = tokio::spawn(async move {
        while events.next().await.is_some() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert!(
        eventually(DEADLINE, || seen.load(Ordering::SeqCst) >= 20).await,
        "the reader task saw no events"
    );
    reader.abort();
    let res = tokio::time::timeout(DEADLINE, reader)
        .await
        .expect("aborted task finishes");
    assert!(
        res.unwrap_err().is_cancelled(),
        "the reader ended by itself during the storm"
    );
    finish_storm(started.child, gate, pid, start_ticks).await;
}

/// Drops a stream that nobody read, right after `spawn`.
async fn drop_unread_stream(w: &ProcWatcher, round: usize) {
    let Storm {
        started,
        gate,
        pid,
        start_ticks,
    } = start_storm(w, &format!("c{round}"));
    drop(started.events);
    finish_storm(started.child, gate, pid, start_ticks).await;
}

/// Drops the watcher while two streams on a running storm are alive, one of them parked in
/// `next()` in another task. Both must end (while the storm still runs, so not because their
/// processes exited), and the storm must finish normally.
async fn drop_watcher_with_live_streams(round: usize) {
    let w = watcher().expect("watcher");
    let Storm {
        started,
        gate,
        pid,
        start_ticks,
    } = start_storm(&w, &format!("d{round}"));
    let mut first = started.events;
    let mut second = w
        .watch(pid, Interest::EXIT | Interest::TRACK)
        .expect("second stream");
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(ev) = second.next().await {
            out.push(ev);
            counter.fetch_add(1, Ordering::SeqCst);
        }
        assert!(second.is_terminated());
        out
    });
    read_some(&mut first, 5).await;
    assert!(
        eventually(DEADLINE, || seen.load(Ordering::SeqCst) >= 5).await,
        "the reader task saw no events"
    );
    drop(w);
    let rest = collect(&mut first, DEADLINE).await;
    check_order(&rest);
    assert!(first.is_terminated());
    assert!(
        first.try_next().is_err(),
        "try_next after the end must say Finished"
    );
    let theirs = tokio::time::timeout(DEADLINE, reader)
        .await
        .expect("the parked stream of a dropped watcher must end")
        .expect("reader task");
    check_order(&theirs);
    assert!(
        proc_stat(pid).is_some_and(|(state, _)| state != 'Z'),
        "the streams should have ended while the storm was still running"
    );
    finish_storm(started.child, gate, pid, start_ticks).await;
}

/// Waits until the dispatcher threads are gone and the counts are back to the baseline.
async fn check_no_leak(after: &str, fds: usize, threads: usize) {
    let ok = eventually(Duration::from_secs(10), || {
        fd_count() == fds && thread_count() == threads && connector_sockets() == 0
    })
    .await;
    let open: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            Some(format!(
                "{:?} -> {:?}",
                e.file_name(),
                std::fs::read_link(e.path()).ok()?
            ))
        })
        .collect();
    assert!(
        ok,
        "after {after}: {} fds (baseline {fds}), {} threads (baseline {threads}), {} connector \
         sockets\nthreads: {:?}\nfds: {open:?}",
        fd_count(),
        thread_count(),
        connector_sockets(),
        thread_names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_streams_and_watchers_during_a_fork_storm_is_safe() {
    // Every panic from here on, in the crate's threads and tasks too, where one would only show
    // as a missing event or a stream that ends early.
    let panics = count_panics();
    let panics_before = panics.load(Ordering::SeqCst);
    let _dog = Watchdog::arm(Duration::from_secs(300), "drop_safety");
    // Baseline, with the runtime up and everything that lives for the whole program already
    // created: a first watcher, a first watched child (tokio's SIGCHLD pipe and reaper state).
    {
        let w = require!(watcher());
        let mut first = spawn_sh(&w, "true", Interest::ALL);
        collect(&mut first.events, DEADLINE).await;
        let status = tokio::time::timeout(DEADLINE, first.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
    }
    // Its thread ends first; its socket and eventfds go when the runtime has dropped its
    // aborted task, a moment later. Counting before that would set the baseline too high.
    assert!(
        eventually(DEADLINE, || !thread_names()
            .iter()
            .any(|n| n.starts_with("procwatch"))
            && connector_sockets() == 0)
        .await,
        "the first watcher's threads or socket are still there: {:?}, {} sockets",
        thread_names(),
        connector_sockets()
    );
    let base_fds = fd_count();
    let base_threads = thread_count();

    {
        let w = watcher().expect("watcher");
        for round in 0..ROUNDS {
            drop_stream_after_a_few_events(&w, round).await;
            abort_task_reading_stream(&w, round).await;
            drop_unread_stream(&w, round).await;
        }
        assert_eq!(
            w.tracked(),
            0,
            "every stream is gone, nothing may stay tracked"
        );
    }
    check_no_leak("dropping streams", base_fds, base_threads).await;

    for round in 0..ROUNDS {
        drop_watcher_with_live_streams(round).await;
    }
    check_no_leak("dropping watchers", base_fds, base_threads).await;
    assert_eq!(
        panics.load(Ordering::SeqCst),
        panics_before,
        "a panic happened while dropping streams or watchers"
    );
}
