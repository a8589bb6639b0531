//! A stalled consumer under a storm of 20,000 short processes (guarantees 5 and 7 in the crate
//! docs): nothing is read until the storm is over, memory stays bounded by the number of
//! tracked processes, and afterwards every process is there, in order, with no loss.
//!
//! The file holds a single test on purpose: it measures this process's memory, and a second
//! test running beside it would add its own.

#[macro_use]
mod support;

use procwatch::{Interest, Pid, ProcEvent};
use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// Parallel loop shells.
const LOOPS: usize = 4;
/// Batches per loop shell.
const ROUNDS: usize = 100;
/// Background processes per batch (at most `LOOPS * BATCH` storm processes are alive at once).
const BATCH: usize = 50;
/// Storm processes in all.
const STORM_PROCS: usize = LOOPS * ROUNDS * BATCH;

/// Fixed allowance for everything that is not per-process state: allocator arenas and
/// fragmentation, tokio, the dispatcher's buffers, the sampler task.
const FIXED_SLACK_KIB: u64 = 16 * 1024;
/// Allowance per tracked process. The aim is "a few hundred bytes at most"; the registry's
/// per-process state is one knote (pid, parent, six counted runs, the exit: ~130 bytes) in a
/// slab slot, a `u32` in the stream's ready list, and while the process lives an entry in the
/// pid table. 1 KiB leaves room for the doubling growth of those vectors and tables.
const PER_PROCESS_KIB: u64 = 1;

fn storm_script() -> String {
    format!(
        r#"l=0
while [ $l -lt {LOOPS} ]; do
  (
    r=0
    while [ $r -lt {ROUNDS} ]; do
      j=0; while [ $j -lt {BATCH} ]; do true & j=$((j+1)); done; wait
      r=$((r+1))
    done
  ) &
  l=$((l+1))
done
wait"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_consumer_under_a_20k_process_storm() {
    let watcher = require!(watcher());
    // Warm up (first spawn, tokio's process machinery) before the baseline.
    {
        let mut warm = spawn_sh(&watcher, "true & wait", Interest::ALL);
        collect(&mut warm.events, DEADLINE).await;
        let status = within(DEADLINE, "wait for the warm-up sh", warm.child.wait())
            .await
            .unwrap();
        assert!(status.success(), "warm-up sh: {status}");
    }
    let base_rss = vm_kib("VmRSS");

    let mut cmd = sh(&storm_script());
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let interest = Interest::TRACK | Interest::EXIT | Interest::FORK | Interest::EXEC;
    let mut started = watcher.spawn(cmd, interest).expect("spawn the storm");
    let root = started.pid();

    // Sample RSS while the storm runs; nobody reads the stream meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(base_rss));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(vm_kib("VmRSS"), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let t0 = std::time::Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(180), started.child.wait())
        .await
        .expect("the storm finishes")
        .expect("wait for the storm");
    let storm_time = t0.elapsed();
    assert!(status.success(), "storm: {status}");

    // Every process has exited and none of it was read: the stream holds one knote per
    // process (the root, the loop shells, the storm), and no live process is tracked.
    let expected_tracked = 1 + LOOPS + STORM_PROCS;
    let all_held = || started.events.tracked() == expected_tracked && watcher.tracked() == 0;
    assert!(
        eventually(DEADLINE, all_held).await,
        "tracked: stream {} (expected {expected_tracked}), watcher {} (expected 0)",
        started.events.tracked(),
        watcher.tracked()
    );
    peak.fetch_max(vm_kib("VmRSS"), Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    let peak_rss = peak.load(Ordering::SeqCst);
    let hwm = vm_kib("VmHWM");

    // Memory. Here every process has exited before anything is read, so each one's knote (its
    // Child and Exit) stays until read: memory is O(processes exited and unread), which still
    // is "bounded by tracked processes" (they count as tracked until their Exit is read). So the
    // bound is per process, not a constant. (It cannot tell a per-event queue from per-process
    // state by itself, at about two events per process; the event counts below check that the
    // 5,000 forks of each loop shell are folded into counted runs.) VmHWM is the true peak;
    // measured from the baseline RSS it over-estimates the growth, which is on the safe side.
    let bound = PER_PROCESS_KIB * expected_tracked as u64 + FIXED_SLACK_KIB;
    let growth = hwm.saturating_sub(base_rss);
    eprintln!(
        "storm of {STORM_PROCS} processes took {storm_time:?}; RSS baseline {base_rss} KiB, \
         sampled peak {peak_rss} KiB (+{} KiB), VmHWM {hwm} KiB (+{growth} KiB); bound +{bound} KiB",
        peak_rss.saturating_sub(base_rss)
    );
    assert!(
        growth < bound,
        "memory grew by {growth} KiB with {expected_tracked} processes pending; bound {bound} KiB"
    );

    // Now read everything.
    let events = collect(&mut started.events, DEADLINE).await;
    assert_eq!(started.events.tracked(), 0);
    check_order(&events); // includes: no Lost
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ProcEvent::TrackErr { .. })),
        "unexpected TrackErr"
    );

    let mut parent_of: HashMap<Pid, Pid> = HashMap::new();
    let mut exits: HashMap<Pid, Option<std::process::ExitStatus>> = HashMap::new();
    let mut forks: HashMap<Pid, (u32, usize)> = HashMap::new();
    for ev in &events {
        match *ev {
            ProcEvent::Child { pid, parent, .. } => {
                assert!(
                    parent_of.insert(pid, parent).is_none(),
                    "two Child events for {pid}"
                );
            }
            ProcEvent::Exit { pid, status, .. } => {
                assert!(
                    exits.insert(pid, status).is_none(),
                    "two Exit events for {pid}"
                );
            }
            ProcEvent::Fork { pid, count, .. } => {
                let f = forks.entry(pid).or_default();
                f.0 += count;
                f.1 += 1;
            }
            // Only the root runs a program (the spawn's exec of sh); counted below.
            ProcEvent::Exec { pid, .. } => assert_eq!(pid, root, "Exec of another process"),
            ref other => panic!("unexpected event {other:?}"),
        }
    }
    let loops: HashSet<Pid> = parent_of
        .iter()
        .filter(|(_, &p)| p == root)
        .map(|(&c, _)| c)
        .collect();
    assert_eq!(loops.len(), LOOPS, "loop shells (children of the root)");
    let storm = parent_of.values().filter(|p| loops.contains(p)).count();
    assert_eq!(
        storm, STORM_PROCS,
        "storm processes (children of the loop shells)"
    );
    assert_eq!(parent_of.len(), LOOPS + STORM_PROCS, "Child events");

    // Each Child is followed by its Exit (check_order put it last), all successful; the root too.
    for pid in parent_of.keys().chain([&root]) {
        match exits.get(pid) {
            Some(Some(s)) if s.success() => {}
            other => panic!("{pid}: Exit {other:?}, expected a successful one"),
        }
    }
    assert_eq!(
        exits[&root],
        Some(status),
        "the root's Exit must carry wait()'s status"
    );
    assert_eq!(exits.len(), 1 + LOOPS + STORM_PROCS);

    // Forks are counted, and a stalled consumer gets them folded: at most a knote's six runs
    // per pid, never one event per fork.
    assert_eq!(
        forks.get(&root).map(|f| f.0),
        Some(LOOPS as u32),
        "root forks"
    );
    for l in &loops {
        let (count, nevents) = forks[l];
        assert_eq!(count as usize, ROUNDS * BATCH, "forks of loop shell {l}");
        assert!(
            nevents <= 6,
            "loop shell {l}: {nevents} Fork events for {count} forks"
        );
    }
    let execs: u32 = events
        .iter()
        .filter_map(|e| match *e {
            ProcEvent::Exec { pid, count, .. } if pid == root => Some(count),
            _ => None,
        })
        .sum();
    assert_eq!(execs, 1, "the root's exec of sh");
    eprintln!("{} events read after the storm", events.len());
}
