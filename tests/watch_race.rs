//! `watch` on an existing pid returns only once the source covers it: a fork straight after it
//! returns is never missed (guarantee 9 in the crate docs).

#[macro_use]
mod support;

use procwatch::{Interest, Pid, ProcEvent, ProcWatcher};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use support::{check_order, collect, sh, watcher, DEADLINE};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const BLOCKED_ITERATIONS: usize = 200;
const BURST: i32 = 10;

/// What a trace of `root` says about the processes `root` created.
#[derive(Default, Debug)]
struct Seen {
    /// Child pid → exit code (`None`: no `Exit` seen or no code).
    children: HashMap<Pid, Option<i32>>,
    /// Sum of the `count`s of the root's `Fork` events.
    forks: u32,
    /// The root's `Exit` status.
    root_exit: Option<Option<std::process::ExitStatus>>,
}

fn summarize(root: Pid, events: &[ProcEvent]) -> Seen {
    check_order(events);
    let mut seen = Seen::default();
    let mut exits: HashMap<Pid, Option<std::process::ExitStatus>> = HashMap::new();
    let mut fork_children = Vec::new();
    for ev in events {
        match ev {
            ProcEvent::Child { pid, parent, .. } => {
                assert_eq!(*parent, root, "Child {pid} of another parent: {events:?}");
                seen.children.insert(*pid, None);
            }
            ProcEvent::Fork {
                pid, child, count, ..
            } => {
                assert_eq!(
                    *pid, root,
                    "Fork by an untracked-looking process: {events:?}"
                );
                seen.forks += count;
                fork_children.push(*child);
            }
            ProcEvent::Exit { pid, status, .. } => {
                exits.insert(*pid, *status);
            }
            other => panic!("unexpected event {other:?} in {events:?}"),
        }
    }
    for child in fork_children {
        assert!(
            seen.children.contains_key(&child),
            "Fork names {child}, which has no Child: {events:?}"
        );
    }
    for (pid, code) in seen.children.iter_mut() {
        let status = exits
            .remove(pid)
            .unwrap_or_else(|| panic!("no Exit for {pid}: {events:?}"));
        *code = status.and_then(|s| s.code());
    }
    seen.root_exit = exits.remove(&root);
    assert!(
        exits.is_empty(),
        "Exit for untracked processes {exits:?}: {events:?}"
    );
    seen
}

/// One round: a shell blocked on its stdin is watched with `watch`; right after `watch`
/// returns it is released and at once forks `BURST` children.
async fn blocked_then_released(w: &ProcWatcher, iteration: usize) {
    let script = format!(
        "read x; for i in {}; do (exit $i) & done; wait; exit 5",
        (1..=BURST)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut cmd = sh(&script);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn sh");
    let root = Pid::from_raw(child.id().expect("running") as i32).unwrap();
    let mut stdin = child.stdin.take().unwrap();

    let mut events = w
        .watch(root, Interest::TRACK | Interest::FORK | Interest::EXIT)
        .expect("watch a live process");
    // The shell cannot fork before it reads this line: every fork below happens after `watch`
    // returned.
    tokio::time::timeout(DEADLINE, stdin.write_all(b"go\n"))
        .await
        .expect("the shell's stdin takes a line in time")
        .expect("release the shell");
    drop(stdin);

    let trace = collect(&mut events, DEADLINE).await;
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("sh exits in time")
        .expect("wait for sh");
    assert_eq!(status.code(), Some(5), "iteration {iteration}: sh status");

    let seen = summarize(root, &trace);
    assert_eq!(
        seen.children.len(),
        BURST as usize,
        "iteration {iteration}: a fork after watch was missed: {trace:?}"
    );
    assert_eq!(
        seen.forks, BURST as u32,
        "iteration {iteration}: Fork counts: {trace:?}"
    );
    let codes: BTreeSet<Option<i32>> = seen.children.values().copied().collect();
    let want: BTreeSet<Option<i32>> = (1..=BURST).map(Some).collect();
    assert_eq!(
        codes, want,
        "iteration {iteration}: children's exit codes: {trace:?}"
    );
    assert_eq!(
        seen.root_exit.map(|s| s.and_then(|s| s.code())),
        Some(Some(5)),
        "iteration {iteration}: root Exit: {trace:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_right_after_watch_of_a_blocked_process() {
    let w = require!(watcher());
    for iteration in 0..BLOCKED_ITERATIONS {
        blocked_then_released(&w, iteration).await;
    }
}

/// The last pid the kernel handed out in this pid namespace.
fn last_pid() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .expect("read ns_last_pid")
        .trim()
        .parse()
        .expect("ns_last_pid is a number")
}

const LOOP_ITERATIONS: usize = 20;
/// How many times one iteration is run again when the pid space wrapped during it.
const WRAP_ATTEMPTS: usize = 5;
/// How many children the forker must create after `watch` returned before it is stopped.
const AFTER_WATCH: usize = 100;

/// How one run of [`tight_forker`] went.
#[derive(Debug, PartialEq)]
enum Forker {
    /// Every child forked after `watch` returned was announced.
    Clean,
    /// Pids wrapped around `pid_max` during the run, so "forked after `watch` returned" cannot
    /// be told from the pids; everything else was checked.
    Wrapped,
}

/// One round: a bash that forks in a tight loop from the start (each subshell prints its own
/// pid, one after the other), watched at an arbitrary moment. Pids are handed out in increasing
/// order, so every child whose pid is above `ns_last_pid` read just after `watch` returned was
/// forked after `watch` returned, and must be announced.
async fn tight_forker(w: &ProcWatcher, iteration: usize) -> Forker {
    let mut cmd = tokio::process::Command::new("bash");
    cmd.args(["-c", "while :; do (echo $BASHPID); done"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn bash");
    let root = Pid::from_raw(child.id().expect("running") as i32).unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut log: Vec<i32> = Vec::new();
    let mut read_line = |line: Option<String>| -> Option<i32> {
        let pid = line?.trim().parse().expect("a pid per line");
        log.push(pid);
        Some(pid)
    };

    // Let it run for a varying number of forks, then watch it mid-flight.
    let warmup = 1 + iteration % 7;
    let run = async {
        let mut prev = 0;
        for _ in 0..warmup {
            let line = lines.next_line().await.expect("read bash stdout");
            prev = read_line(line).expect("bash runs");
        }
        let mut events = w
            .watch(root, Interest::TRACK | Interest::FORK | Interest::EXIT)
            .expect("watch a live process");
        let last = last_pid();
        let reader = async {
            // Bash forks one child at a time, so its pids rise until they wrap. Stop only once
            // AFTER_WATCH children were certainly forked after the watch, or once a wrap makes
            // that unknowable (the run is then repeated).
            let mut after = 0;
            let mut wrapped = false;
            while after < AFTER_WATCH && !wrapped {
                let line = lines.next_line().await.expect("read bash stdout");
                let pid = read_line(line).expect("bash runs until killed");
                after += usize::from(pid > last);
                wrapped |= pid < prev;
                prev = pid;
            }
            child.start_kill().expect("kill bash");
            while let Some(line) = lines.next_line().await.expect("read bash stdout") {
                read_line(Some(line));
            }
        };
        let (_, trace) = tokio::join!(reader, collect(&mut events, DEADLINE));
        (last, trace)
    };
    let (last, trace) = tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("iteration {iteration}: bash did not fork or end in time"));
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("bash exits in time")
        .expect("wait for bash");
    assert_eq!(
        status.signal(),
        Some(9),
        "iteration {iteration}: bash status"
    );

    let seen = summarize(root, &trace);
    let logged: HashSet<i32> = log.iter().copied().collect();
    assert_eq!(logged.len(), log.len(), "a pid printed twice: {log:?}");
    for pid in seen.children.keys() {
        assert!(
            logged.contains(&pid.as_raw()),
            "iteration {iteration}: Child {pid} is not a child bash printed"
        );
    }
    for (pid, code) in &seen.children {
        assert_eq!(*code, Some(0), "iteration {iteration}: exit code of {pid}");
    }
    assert_eq!(
        seen.forks as usize,
        seen.children.len(),
        "iteration {iteration}: every Fork after the attach also tracks the child"
    );
    assert_eq!(
        seen.root_exit.map(|s| s.and_then(|s| s.signal())),
        Some(Some(9)),
        "iteration {iteration}: root Exit"
    );

    // The log is in fork order. A wrap anywhere in it (also between the last pid read before
    // `watch` and the first after it) shows as a pid lower than the one before, and leaves pids
    // above `last` that were forked before the watch, or pids forked after it below `last`.
    if log.windows(2).any(|p| p[1] < p[0]) {
        return Forker::Wrapped;
    }
    let must: Vec<i32> = log.iter().copied().filter(|&p| p > last).collect();
    assert!(
        must.len() >= AFTER_WATCH,
        "iteration {iteration}: forker stopped early: {} of {AFTER_WATCH} children after the \
         watch (ns_last_pid was {last}): {log:?}",
        must.len()
    );
    let missed: Vec<i32> = must
        .iter()
        .copied()
        .filter(|&p| !seen.children.contains_key(&Pid::from_raw(p).unwrap()))
        .collect();
    assert!(
        missed.is_empty(),
        "iteration {iteration}: children forked after watch returned (ns_last_pid was {last}) \
         were missed: {missed:?}; seen {} of {} printed",
        seen.children.len(),
        log.len()
    );
    Forker::Clean
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fork_after_watch_of_a_tight_forker() {
    let w = require!(watcher());
    let mut wraps = 0;
    for iteration in 0..LOOP_ITERATIONS {
        // A run during which the pid space wrapped proves nothing about missed forks; it is
        // repeated, and the test fails if no clean run can be had.
        let mut attempt = 0;
        loop {
            match tight_forker(&w, iteration).await {
                Forker::Clean => break,
                Forker::Wrapped => {
                    wraps += 1;
                    attempt += 1;
                    eprintln!(
                        "iteration {iteration}, attempt {attempt}: pids wrapped around pid_max; \
                         repeating it"
                    );
                    assert!(
                        attempt < WRAP_ATTEMPTS,
                        "iteration {iteration}: the pid space wrapped in each of \
                         {WRAP_ATTEMPTS} runs, so no run could show that no fork was missed"
                    );
                }
            }
        }
    }
    eprintln!("{wraps} runs repeated because the pid space wrapped");
}

/// Eight threads watch one process at the same moment, many times over, while it forks: every
/// `watch` succeeds (the later ones wait for the earlier ones' `/proc` reads), and every stream
/// sees the fork made after all of them returned, then the process's exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_watches_of_one_pid_all_attach() {
    let Some(w) = watcher() else {
        return;
    };
    let w = std::sync::Arc::new(w);
    for round in 0..20 {
        let mut cmd = sh("read x; /bin/true; exit 3");
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().expect("start sh");
        let pid = Pid::from_raw(child.id().expect("running") as i32).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let watchers: Vec<_> = (0..8)
            .map(|_| {
                let (w, barrier) = (w.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    w.watch(pid, Interest::FORK | Interest::EXIT | Interest::TRACK)
                })
            })
            .collect();
        let mut streams = Vec::new();
        for t in watchers {
            let stream = t.join().expect("a watching thread").unwrap_or_else(|e| {
                panic!("round {round}: a concurrent watch of {pid} failed: {e}")
            });
            streams.push(stream);
        }
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").await.unwrap();
        drop(stdin);
        for mut s in streams {
            let events = collect(&mut s, DEADLINE).await;
            let seen = summarize(pid, &events);
            assert_eq!(seen.forks, 1, "round {round}: {events:?}");
            assert_eq!(seen.children.len(), 1, "round {round}: {events:?}");
            let code = seen.root_exit.flatten().and_then(|s| s.code());
            assert_eq!(code, Some(3), "round {round}: {events:?}");
        }
        let status = tokio::time::timeout(DEADLINE, child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.code(), Some(3));
    }
}
