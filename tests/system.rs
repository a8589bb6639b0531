//! `ProcWatcher::watch_system`: one stream about every process on the host (Netlink only).
//!
//! The stream hears of everything the machine does meanwhile, so each test picks out the
//! processes it started and checks only those.

#[macro_use]
mod support;

#[path = "support/heap.rs"]
mod heap;

use futures::stream::FusedStream;
use procwatch::{BackendKind, ErrorKind, Interest, Pid, ProcEvent, ProcEvents};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use support::{check_order_allowing_lost, netlink_watcher, watcher_on, DEADLINE};

/// Reads `events` until `done` holds for what was read, failing after [`DEADLINE`]. Keeps
/// only the events `keep` selects (the rest of the host is noise here).
async fn read_until(
    events: &mut ProcEvents,
    mut keep: impl FnMut(&ProcEvent) -> bool,
    mut done: impl FnMut(&[ProcEvent]) -> bool,
) -> Vec<ProcEvent> {
    let mut kept = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        while !done(&kept) {
            match futures::StreamExt::next(events).await {
                Some(ev) if keep(&ev) => kept.push(ev),
                Some(_) => {}
                None => panic!("the system stream ended"),
            }
        }
    })
    .await;
    if read.is_err() {
        panic!("not done within {DEADLINE:?}; kept: {kept:?}");
    }
    kept
}

fn exit_of(events: &[ProcEvent], p: Pid) -> Option<Option<ExitStatus>> {
    events.iter().find_map(|e| match e {
        ProcEvent::Exit { pid, status, .. } if *pid == p => Some(*status),
        _ => None,
    })
}

fn parent_of(events: &[ProcEvent], p: Pid) -> Option<Pid> {
    events.iter().find_map(|e| match e {
        ProcEvent::Child { pid, parent, .. } if *pid == p => Some(*parent),
        _ => None,
    })
}

fn execs_of(events: &[ProcEvent], p: Pid) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, ProcEvent::Exec { pid, .. } if *pid == p))
        .count()
}

/// The processes announced with a `Child` whose parent is `p`.
fn children_of(events: &[ProcEvent], p: Pid) -> Vec<Pid> {
    events
        .iter()
        .filter_map(|e| match e {
            ProcEvent::Child { pid, parent, .. } if *parent == p => Some(*pid),
            _ => None,
        })
        .collect()
}

/// Held by the tests that count the host's processes, and by the one that makes a storm of
/// them.
static QUIET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn pid_of(child: &std::process::Child) -> Pid {
    Pid::from_raw(child.id() as i32).unwrap()
}

/// Waits for a `std` child without blocking the runtime, with the deadline.
async fn wait_std(mut child: std::process::Child) -> ExitStatus {
    let waited = tokio::task::spawn_blocking(move || child.wait());
    tokio::time::timeout(DEADLINE, waited)
        .await
        .expect("the child exits in time")
        .expect("the waiting task")
        .expect("wait for the child")
}

/// The numeric entries of `/proc` that are not zombies: the processes on the host.
fn live_processes() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(Pid::from_raw)
        .filter(|&p| support::proc_stat(p).is_some_and(|(state, _)| state != 'Z'))
        .count()
}

#[tokio::test]
async fn a_process_started_later_comes_with_child_exec_and_exit() {
    let w = require!(netlink_watcher());
    let mut events = w.watch_system(Interest::ALL).expect("watch the system");
    let child = std::process::Command::new("sh")
        .args(["-c", "exit 7"])
        .spawn()
        .expect("spawn sh");
    let p = pid_of(&child);
    let status = wait_std(child).await;
    assert_eq!(status.code(), Some(7));
    let seen = read_until(&mut events, |e| e.pid() == p, |k| exit_of(k, p).is_some()).await;
    check_order_allowing_lost(&seen);
    assert_eq!(parent_of(&seen, p), Some(Pid::this()), "{seen:?}");
    assert_eq!(execs_of(&seen, p), 1, "{seen:?}");
    let code = exit_of(&seen, p).unwrap().and_then(|s| s.code());
    assert_eq!(code, Some(7), "{seen:?}");
}

#[tokio::test]
async fn a_shells_background_child_and_a_double_fork_are_followed() {
    let w = require!(netlink_watcher());
    let mut events = w.watch_system(Interest::ALL).expect("watch the system");
    // `sleep 0.01 & wait`: the shell's child. `(sleep 0.02 &)`: a subshell that forks the
    // sleep and exits at once, so the sleep outlives its parent (a double fork).
    let child = std::process::Command::new("sh")
        .args(["-c", "sleep 0.01 & wait; (sleep 0.02 &); exit 4"])
        .spawn()
        .expect("spawn sh");
    let sh = pid_of(&child);
    let status = wait_std(child).await;
    assert_eq!(status.code(), Some(4));
    // Ours: the shell, and whatever descends from it.
    let mut ours = vec![sh];
    let done = |k: &[ProcEvent]| {
        let kids = children_of(k, sh);
        let grandchildren: Vec<Pid> = kids.iter().flat_map(|&c| children_of(k, c)).collect();
        exit_of(k, sh).is_some()
            && kids.len() == 2
            && grandchildren.len() == 1
            && kids
                .iter()
                .chain(&grandchildren)
                .all(|&c| exit_of(k, c).is_some())
    };
    let seen = read_until(
        &mut events,
        |e| {
            if let ProcEvent::Child { pid, parent, .. } = e {
                if ours.contains(parent) {
                    ours.push(*pid);
                }
            }
            ours.contains(&e.pid())
        },
        done,
    )
    .await;
    check_order_allowing_lost(&seen);
    assert_eq!(parent_of(&seen, sh), Some(Pid::this()));
    assert_eq!(exit_of(&seen, sh).unwrap().and_then(|s| s.code()), Some(4));
    let kids = children_of(&seen, sh);
    // The first child execs `sleep` and exits 0; the subshell does not exec and exits 0.
    let (sleeper, subshell) = match kids[..] {
        [a, b] if children_of(&seen, b).len() == 1 => (a, b),
        [a, b] => (b, a),
        _ => unreachable!("checked by done"),
    };
    assert_eq!(execs_of(&seen, sleeper), 1, "{seen:?}");
    assert_eq!(execs_of(&seen, subshell), 0, "{seen:?}");
    let orphan = children_of(&seen, subshell)[0];
    assert_eq!(parent_of(&seen, orphan), Some(subshell));
    assert_eq!(execs_of(&seen, orphan), 1, "{seen:?}");
    for p in [sleeper, subshell, orphan] {
        let status = exit_of(&seen, p).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{p}: {seen:?}");
    }
}

#[tokio::test]
async fn a_process_that_existed_before_has_no_child_but_its_exit() {
    let w = require!(netlink_watcher());
    let mut before = tokio::process::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sleep");
    let p = Pid::from_raw(before.id().unwrap() as i32).unwrap();
    // Let it finish its exec before the watch, so the stream starts with nothing about it:
    // the kernel names the process `sleep` a moment before it reports the exec, so wait
    // until it sleeps in its new program.
    assert!(
        support::eventually(DEADLINE, || {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
                && support::proc_stat(p).is_some_and(|(state, _)| state == 'S')
        })
        .await
    );
    let mut events = w.watch_system(Interest::ALL).expect("watch the system");
    // A tokio child started after the watch, beside it: it keeps its own exit status.
    let mut beside = tokio::process::Command::new("sh")
        .args(["-c", "exit 5"])
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sh");
    let q = Pid::from_raw(beside.id().unwrap() as i32).unwrap();
    before.start_kill().expect("kill sleep");
    let killed = support::within(DEADLINE, "sleep exits", before.wait()).await;
    assert_eq!(killed.unwrap().signal(), Some(libc::SIGKILL));
    let own = support::within(DEADLINE, "sh exits", beside.wait()).await;
    assert_eq!(own.unwrap().code(), Some(5), "tokio got its child's status");
    let seen = read_until(
        &mut events,
        |e| e.pid() == p || e.pid() == q,
        |k| exit_of(k, p).is_some() && exit_of(k, q).is_some(),
    )
    .await;
    check_order_allowing_lost(&seen);
    assert_eq!(
        parent_of(&seen, p),
        None,
        "no Child for a process from before: {seen:?}"
    );
    assert_eq!(execs_of(&seen, p), 0, "{seen:?}");
    // The proc connector reports the exit code of every process, whoever reaps it.
    let status = exit_of(&seen, p)
        .unwrap()
        .expect("a status from the proc connector");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{seen:?}");
    assert_eq!(parent_of(&seen, q), Some(Pid::this()));
    assert_eq!(exit_of(&seen, q).unwrap().and_then(|s| s.code()), Some(5));
}

#[tokio::test]
async fn the_stream_covers_the_host_and_does_not_end() {
    let w = require!(netlink_watcher());
    // Not beside the storm of `processes_created_during_the_call_keep_the_order`.
    let _quiet = QUIET.lock().await;
    let host = live_processes();
    let mut events = w.watch_system(Interest::ALL).expect("watch the system");
    assert_eq!(events.pid(), Pid::from_raw(1).unwrap());
    // A process that exited counts until its exit is read: read what is there.
    while let Ok(Some(_)) = events.try_next() {}
    let tracked = events.tracked();
    let after = live_processes();
    // Other programs start and stop processes meanwhile: a tolerance of a tenth, plus a few.
    let (low, high) = (host.min(after), host.max(after));
    let slack = high / 10 + 5;
    assert!(
        tracked + slack >= low && tracked <= high + slack,
        "tracked {tracked}, /proc listed {host} then {after}"
    );
    // The watcher's count leaves out processes whose exit the stream has not read yet.
    assert!(w.tracked() + slack >= tracked);
    // Read for a while: whatever the host does, the stream stays open.
    let until = Instant::now() + Duration::from_millis(500);
    let mut spawned = Vec::new();
    while Instant::now() < until {
        spawned.push(std::process::Command::new("true").spawn().unwrap());
        loop {
            match events.try_next() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => panic!("the system stream ended"),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in spawned {
        wait_std(c).await;
    }
    assert!(!events.is_terminated());
    assert!(events.tracked() > 1);
}

#[tokio::test]
async fn ptrace_and_hold_are_refused_with_a_reason() {
    if let Some(w) = netlink_watcher() {
        let e = w.watch_system(Interest::ALL | Interest::HOLD).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        let text = e.to_string();
        assert!(text.contains("netlink") && text.contains("HOLD"), "{text}");
    }
    let w = require!(watcher_on(BackendKind::Ptrace, |b| b));
    let e = w.watch_system(Interest::ALL).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let text = e.to_string();
    assert!(
        text.contains("ptrace") && text.contains("descendants") && text.contains("Netlink"),
        "{text}"
    );
    assert_eq!(w.tracked(), 0, "nothing is left attached");
}

/// Processes created while the call runs are either announced (`Child`) or attached as
/// already running, never both, and the per-stream order holds for every pid on the host.
#[tokio::test]
async fn processes_created_during_the_call_keep_the_order() {
    let w = require!(netlink_watcher());
    let _storm = QUIET.lock().await;
    let mut storm = support::sh("while :; do /bin/true; done")
        .spawn()
        .expect("spawn the storm");
    let shell = Pid::from_raw(storm.id().unwrap() as i32).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut events = w.watch_system(Interest::ALL).expect("watch the system");
    tokio::time::sleep(Duration::from_millis(300)).await;
    storm.start_kill().expect("stop the storm");
    support::within(DEADLINE, "the storm stops", storm.wait())
        .await
        .unwrap();
    // Everything up to the shell's exit, and the exits of the children it announced.
    let mut children: Vec<Pid> = Vec::new();
    let seen = read_until(
        &mut events,
        |e| {
            if let ProcEvent::Child { pid, parent, .. } = e {
                if *parent == shell {
                    children.push(*pid);
                }
            }
            true
        },
        |k| {
            exit_of(k, shell).is_some()
                && children_of(k, shell)
                    .iter()
                    .all(|&c| exit_of(k, c).is_some())
        },
    )
    .await;
    check_order_allowing_lost(&seen);
    let announced = children_of(&seen, shell);
    assert!(
        announced.len() > 5,
        "few children of the storm: {}",
        announced.len()
    );
    for c in announced {
        assert_eq!(execs_of(&seen, c), 1, "{c}");
        assert_eq!(exit_of(&seen, c).unwrap().and_then(|s| s.code()), Some(0));
    }
}

#[tokio::test]
async fn a_host_beyond_the_limit_is_refused_and_nothing_stays_attached() {
    let w = require!(support::netlink_watcher_with(|b| b.max_tracked(5)));
    let e = w.watch_system(Interest::ALL).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("max_tracked"), "{e}");
    assert_eq!(w.tracked(), 0, "the refused stream left processes attached");
    // The watcher still works.
    let mut started = w
        .spawn(support::sh("exit 2"), Interest::ALL)
        .expect("spawn after the refusal");
    let events = support::collect(&mut started.events, DEADLINE).await;
    assert_eq!(
        exit_of(&events, started.pid())
            .unwrap()
            .and_then(|s| s.code()),
        Some(2)
    );
    support::within(DEADLINE, "sh exits", started.child.wait())
        .await
        .unwrap();
}

/// The figures quoted in `ProcWatcher::watch_system`'s docs, printed (run with
/// `--nocapture`): the call's duration, what the stream tracks, the heap it adds, and how
/// long an event takes from the kernel's stamp to the reader.
#[tokio::test]
async fn cost_of_a_system_stream() {
    let w = require!(netlink_watcher());
    let _quiet = QUIET.lock().await;
    let host = live_processes();
    let heap_before = heap::live();
    let started = Instant::now();
    let mut events = w.watch_system(Interest::ALL).expect("watch the system");
    let took = started.elapsed();
    let heap = heap::live().saturating_sub(heap_before);
    let tracked = events.tracked();
    // Per event: 50 short processes, one after the other, each a Child, an Exec and an
    // Exit, read as they come.
    let mut latencies = Vec::new();
    for _ in 0..50 {
        let child = std::process::Command::new("true").spawn().unwrap();
        let p = pid_of(&child);
        let seen = read_until(
            &mut events,
            |e| {
                if e.pid() == p {
                    latencies.push(e.at().elapsed());
                }
                e.pid() == p
            },
            |k| exit_of(k, p).is_some(),
        )
        .await;
        assert_eq!(parent_of(&seen, p), Some(Pid::this()));
        wait_std(child).await;
    }
    drop(events);
    // The same processes, each on a stream of its own (`spawn`), for comparison.
    let mut alone = Vec::new();
    for _ in 0..50 {
        let mut started = w
            .spawn(tokio::process::Command::new("true"), Interest::ALL)
            .expect("spawn true");
        while let Some(ev) = support::next(&mut started.events, DEADLINE).await {
            alone.push(ev.at().elapsed());
        }
        support::within(DEADLINE, "true exits", started.child.wait())
            .await
            .unwrap();
    }
    let quantiles = |mut v: Vec<Duration>| {
        v.sort();
        (v.len(), v[v.len() / 2], v[v.len() * 9 / 10])
    };
    let (n, median, p90) = quantiles(latencies);
    let (n_alone, median_alone, p90_alone) = quantiles(alone);
    println!(
        "watch_system: {host} processes listed, the call took {took:?} ({:?} per process), \
         tracked {tracked}, heap +{heap} bytes ({} per tracked process); kernel-to-reader \
         latency of {n} events: median {median:?}, 90th percentile {p90:?}; on streams of \
         their own ({n_alone} events): median {median_alone:?}, 90th percentile {p90_alone:?}",
        took / tracked.max(1) as u32,
        heap / tracked.max(1),
    );
    assert!(tracked > 0);
}
