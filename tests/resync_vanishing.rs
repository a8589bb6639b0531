//! Processes that vanish while a `/proc` resync reads (guarantees 6, 2 and 3 in the crate docs).
//!
//! `lost_resync.rs` checks the overflow itself: `Lost`, then `Child`/`Exit` from the resync,
//! with storm processes that die at once and sleepers that live throughout. This file aims at
//! what happens *during* the scan: processes whose lifetimes are spread over 0–300 ms (each
//! sleeps `pid % 300` ms in a forked `sleep`, then exits with `pid % 7 + 1`), so that while a
//! resync lists `/proc` and reads entry after entry, some of the processes it listed are
//! reaped before it reads them, some of their `task/` directories go away, and some are
//! zombies when read. A tiny receive buffer keeps the socket overflowing, so resyncs run again
//! and again while the processes come and go.
//!
//! Every storm process logs its pid, its start time (field 22 of its own `/proc/self/stat`)
//! and the code it will exit with. When the stream delivers an `Exit`, the reader looks at
//! `/proc/<pid>` at once: a process that is still there with the same start time, and is
//! neither a zombie nor exiting, was reported dead while alive.

mod support;

use procwatch::{NetlinkOptions, Pid, ProcEvent, ProcWatcher};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::*;

const LOOPS: usize = 4;
const ROUNDS: usize = 20;
const BATCH: usize = 25;
/// A loop shell starts a sleeper after every round `r` with `r % 5 == 2`.
const SLEEPERS_PER_LOOP: usize = ROUNDS / 5;

/// `PF_EXITING` in the flags (field 9) of `/proc/<pid>/stat`: set as `do_exit` begins, before
/// the proc connector reports the exit.
const PF_EXITING: u64 = 0x4;

/// The storm. Log lines are `TAG pid start code`: `R` root, `L` loop shell, `P` storm process
/// (sleeps, then exits with `code`), `S` sleeper (reads fd 3, the root's stdin, so it lives
/// until the test closes that pipe), and `D pid` when a loop shell is done with its storm.
fn storm_script() -> String {
    format!(
        r#"exec 3<&0
me() {{ read p c s pp pg se tt tp fl mi cmi ma cma ut st cut cst pr ni nt ir stt rest < /proc/self/stat; }}
me; echo "R $p $stt 0" >> "$LOG"
run_loop() {{
  me; echo "L $p $stt 0" >> "$LOG"
  r=0
  while [ $r -lt {ROUNDS} ]; do
    pids=; j=0
    while [ $j -lt {BATCH} ]; do
      {{ me; ms=$((p % 300)); code=$((p % 7 + 1))
         echo "P $p $stt $code" >> "$LOG"
         sleep "0.$((ms / 100))$((ms / 10 % 10))$((ms % 10))"
         exit $code; }} &
      pids="$pids $!"; j=$((j+1))
    done
    wait $pids
    if [ $((r % 5)) -eq 2 ]; then
      {{ me; echo "S $p $stt 0" >> "$LOG"; read x <&3; exit 0; }} &
    fi
    r=$((r+1))
  done
  echo "D $p" >> "$LOG"
  wait
}}
l=0
while [ $l -lt {LOOPS} ]; do run_loop & l=$((l+1)); done
wait"#
    )
}

/// What the log says about one process.
#[derive(Debug, Clone, Copy)]
struct Logged {
    tag: char,
    start: u64,
    code: i32,
}

fn parse_log(log: &str) -> (Vec<i32>, HashMap<i32, Logged>) {
    let mut order = Vec::new();
    let mut procs = HashMap::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let tag = f.first().and_then(|t| t.chars().next());
        let (Some(tag), Some(Ok(pid)), Some(Ok(start)), Some(Ok(code))) = (
            tag,
            f.get(1).map(|v| v.parse::<i32>()),
            f.get(2).map(|v| v.parse::<u64>()),
            f.get(3).map(|v| v.parse::<i32>()),
        ) else {
            continue; // `D` lines
        };
        order.push(pid);
        procs.insert(pid, Logged { tag, start, code });
    }
    (order, procs)
}

/// State letter, flags and start time of `/proc/<pid>/stat`, read right now.
fn look(pid: Pid) -> Option<(char, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some((
        f.first()?.chars().next()?,
        f.get(9 - 3)?.parse().ok()?,
        f.get(22 - 3)?.parse().ok()?,
    ))
}

/// One event as the reader saw it: for an `Exit`, what `/proc` showed of the pid right after,
/// and whether the sleepers had been released when it was read.
struct Seen {
    ev: ProcEvent,
    proc_at_exit: Option<(char, u64, u64)>,
    released: bool,
}

type Run = StormRun<Seen>;

async fn run_storm(w: &ProcWatcher, attempt: usize) -> Run {
    let (storm, reader) =
        LoggedStorm::start(w, "vanishing", attempt, &storm_script(), |ev, released| {
            let proc_at_exit = match ev {
                ProcEvent::Exit { pid, .. } => look(pid),
                _ => None,
            };
            Seen {
                ev,
                proc_at_exit,
                released,
            }
        });
    let done = |log: &str| log.lines().filter(|l| l.starts_with("D ")).count();
    assert!(
        eventually(Duration::from_secs(120), || done(&storm.log()) == LOOPS).await,
        "the loop shells did not finish their storms; log:\n{}",
        storm.log()
    );
    // EOF on fd 3: the sleepers exit, then the loop shells, then the root.
    storm.finish(reader).await
}

fn pid_space_wrapped(run: &Run) -> bool {
    let (order, procs) = parse_log(&run.log);
    order.len() != procs.len()
}

fn check_run(run: &Run) {
    let root = run.root;
    let (_, logged) = parse_log(&run.log);
    let events: Vec<ProcEvent> = run.seen.iter().map(|s| s.ev.clone()).collect();
    let count = |tag: char| logged.values().filter(|l| l.tag == tag).count();
    assert_eq!(count('R'), 1);
    assert_eq!(count('L'), LOOPS);
    assert_eq!(count('P'), LOOPS * ROUNDS * BATCH);
    assert_eq!(count('S'), LOOPS * SLEEPERS_PER_LOOP);
    assert_eq!(logged.get(&root.as_raw()).map(|l| l.tag), Some('R'));
    assert!(run.status.success(), "the root exits 0: {}", run.status);

    let lost: u32 = events
        .iter()
        .filter_map(|e| match *e {
            ProcEvent::Lost { count, .. } => Some(count),
            _ => None,
        })
        .sum();
    let mut per_pid: BTreeMap<Pid, Vec<&ProcEvent>> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| !matches!(e, ProcEvent::Lost { .. }))
    {
        per_pid.entry(e.pid()).or_default().push(e);
    }
    let parent_of: HashMap<Pid, Pid> = parents_of(&events);
    let unknown_status = run
        .seen
        .iter()
        .filter(|s| matches!(s.ev, ProcEvent::Exit { status: None, .. }))
        .count();
    eprintln!(
        "{} events; Lost x{lost}; {} pids reported ({} logged processes); {unknown_status} \
         Exits without status",
        events.len(),
        per_pid.len(),
        logged.len(),
    );
    assert!(
        lost > 0,
        "the 4 KiB receive buffer never overflowed, so no resync ran"
    );

    let mut problems: Vec<String> = Vec::new();
    let mut problem = |p: String| {
        if problems.len() < 20 {
            problems.push(p);
        }
    };

    // Per pid: one Child (the root has none), first; at most one Exit, last. Every process
    // the stream tracked ends with an Exit.
    for (&pid, evs) in &per_pid {
        let childs = evs
            .iter()
            .filter(|e| matches!(e, ProcEvent::Child { .. }))
            .count();
        let exits = evs
            .iter()
            .filter(|e| matches!(e, ProcEvent::Exit { .. }))
            .count();
        let want_childs = usize::from(pid != root);
        if childs != want_childs || exits != 1 {
            problem(format!(
                "{pid}: {childs} Child and {exits} Exit events: {evs:?}"
            ));
            continue;
        }
        if pid != root && !matches!(evs[0], ProcEvent::Child { .. }) {
            problem(format!("{pid}: Child is not first: {evs:?}"));
        }
        if !matches!(evs.last(), Some(ProcEvent::Exit { .. })) {
            problem(format!("{pid}: Exit is not last: {evs:?}"));
        }
    }
    assert!(per_pid.contains_key(&root), "the root never got its Exit");

    // Who is who: a logged process's parent is the one the script gives it; a process that
    // logged nothing is a `sleep` started by a storm process.
    for (&pid, &parent) in &parent_of {
        let want = match logged.get(&pid.as_raw()).map(|l| l.tag) {
            Some('L') => vec!['R'],
            Some('P') | Some('S') => vec!['L'],
            Some(t) => vec![t], // never: R has no Child
            None => vec!['P'],
        };
        let got = logged.get(&parent.as_raw()).map(|l| l.tag);
        if !got.is_some_and(|t| want.contains(&t)) {
            problem(format!(
                "{pid} ({:?}) has parent {parent} ({got:?}), expected one of {want:?}",
                logged.get(&pid.as_raw()).map(|l| l.tag)
            ));
        }
    }

    // Each Exit: the status, where known, is the real one, and the process really was dead
    // (or dying) when the Exit was read.
    for s in &run.seen {
        let ProcEvent::Exit { pid, status, .. } = s.ev else {
            continue;
        };
        let me = logged.get(&pid.as_raw());
        let want_code = me.map_or(0, |l| l.code); // unlogged: a `sleep`, exits 0
        if let Some(st) = status {
            if st.code() != Some(want_code) {
                problem(format!(
                    "{pid} ({me:?}) exited with {st}, expected {want_code}"
                ));
            }
        }
        if let (Some(l), Some((state, flags, start))) = (me, s.proc_at_exit) {
            let same = start == l.start;
            let dead = matches!(state, 'Z' | 'X' | 'x') || flags & PF_EXITING != 0;
            if same && !dead {
                problem(format!(
                    "{pid} ({l:?}) was reported exited while alive: state {state}, flags \
                     {flags:#x}"
                ));
            }
        }
        if me.is_some_and(|l| l.tag == 'S') && !s.released {
            problem(format!(
                "sleeper {pid} was reported exited before its release"
            ));
        }
    }

    // Sleepers lived through every resync: each was reported, and exited after the release.
    for (&raw, l) in &logged {
        if l.tag == 'S' && !parent_of.contains_key(&Pid::from_raw(raw).unwrap()) {
            problem(format!("sleeper {raw} was never reported with Child"));
        }
    }
    let unknown: HashSet<Pid> = events
        .iter()
        .map(|e| e.pid())
        .filter(|p| !logged.contains_key(&p.as_raw()) && !parent_of.contains_key(p))
        .collect();
    if !unknown.is_empty() {
        problem(format!(
            "events about pids that are neither logged nor children: {unknown:?}"
        ));
    }

    assert!(
        problems.is_empty(),
        "{} problems, the first ones:\n{}",
        problems.len(),
        problems.join("\n")
    );
    check_order_allowing_lost(&events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_vanishing_while_the_resync_reads_proc() {
    let panics = count_panics();
    let w = require!(netlink_watcher_with(
        |b| b.netlink(NetlinkOptions::new().receive_buffer(4096))
    ));
    for attempt in 0..3 {
        let run = run_storm(&w, attempt).await;
        if pid_space_wrapped(&run) {
            eprintln!("attempt {attempt}: the pid space wrapped during the run; repeating it");
            continue;
        }
        check_run(&run);
        assert_eq!(panics.load(Ordering::SeqCst), 0, "a panic happened");
        return;
    }
    panic!("the pid space wrapped in each of 3 runs: the machine is too busy for this test");
}
