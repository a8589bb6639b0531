//! Kernel traps of the proc connector around threads (guarantee 3 in the crate docs):
//!
//! * a thread creation is reported like a fork, with `child_pid != child_tgid`;
//! * exit messages come per thread, and the leader may exit long before the last thread;
//! * a non-leader thread's `execve` takes over the leader's pid (the old leader and every
//!   other thread exit, and the exec is reported under the leader's pid).
//!
//! None of this may show in a stream: threads never appear as `Fork`/`Child`/`Exit`, a process
//! gets exactly one `Exit`, when its last thread is gone, with the status `wait` reports.
//!
//! The multithreaded processes are this test binary itself, re-executed with
//! `PROCWATCH_THREADS_HELPER=<scenario>` to run only the [`helper`] test, which then plays the
//! scenario instead of returning. libtest runs a test on a thread of its own, so in the helper
//! the thread-group leader is libtest's main thread, parked waiting for the test's result, and
//! the helper's code runs on a non-leader thread.
//!
//! Each scenario runs twice: started by `ProcWatcher::spawn`, and started unwatched and
//! watched once it has said it is ready (the helper then waits for a go line on its stdin
//! before it plays the scenario): `watch` then finds the process already multithreaded
//! (libtest's main thread and the test's) and must take its thread set from `/proc`.

#[macro_use]
mod support;

use futures::StreamExt;
use procwatch::{Interest, Pid, ProcEvent, ProcEvents};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::AsyncReadExt;

/// The variable that turns the [`helper`] test into a scenario.
const HELPER_ENV: &str = "PROCWATCH_THREADS_HELPER";
/// Set (to anything) to make the helper say it is ready and wait for a line on its stdin
/// before it plays the scenario ([`Start::WatchWhenReady`]).
const WAIT_ENV: &str = "PROCWATCH_THREADS_HELPER_WAIT";
/// The prefix of the helper's report lines on stdout (libtest prints its own lines there too).
const MARK: &str = "PWH";

// ------------------------------------------------------------------------------------------
// The helper side: runs in the re-executed test binary.
// ------------------------------------------------------------------------------------------

/// Plays the scenario named by `PROCWATCH_THREADS_HELPER`; an ordinary run returns at once.
#[test]
fn helper() {
    let Ok(scenario) = std::env::var(HELPER_ENV) else {
        return;
    };
    // A scenario that says it is ready itself (after what must happen before the watch) skips
    // the ready line here.
    let ready_later = scenario == "thread_exec_then_ready";
    if std::env::var_os(WAIT_ENV).is_some() && !ready_later {
        say(format_args!("ready"));
        let mut go = String::new();
        std::io::stdin()
            .read_line(&mut go)
            .expect("helper: read the go line");
    }
    match scenario.as_str() {
        "churn" => churn(),
        "leader_first_exit_group_9" => leader_first(0, LastExit::Group(9)),
        "leader_first_all_exit_0" => leader_first(0, LastExit::Thread(0)),
        "leader_first_code_6" => leader_first(6, LastExit::Thread(0)),
        "leader_first_last_exit_3" => leader_first(0, LastExit::Thread(3)),
        "thread_exec" => thread_exec(""),
        "thread_exec_then_ready" => thread_exec(&format!("echo {MARK} ready; read x; ")),
        other => panic!("unknown {HELPER_ENV} scenario {other:?}"),
    }
}

fn gettid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

fn getpid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// Writes one report line and flushes it (the helper ends with raw exits that flush nothing).
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK} {line}").unwrap();
    out.flush().unwrap();
}

/// Starts a thread, reports its tid, and waits for it: one thread creation and one thread exit.
fn short_thread() {
    let tid = std::thread::spawn(gettid).join().unwrap();
    say(format_args!("tid {tid}"));
}

/// The state letter of thread `tid` of this process, `None` once it is gone.
fn task_state(tid: i32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    text[text.rfind(')')? + 1..].trim_start().chars().next()
}

/// The thread ids of this process (a zombie leader included).
fn task_ids() -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Spins (politely) until `f` holds; the helper has no runtime. Panics after 30 s.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "helper: timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// (a) Threads start and exit over and over (some from threads that are themselves not the
/// leader), a few real child processes are started from a non-leader thread, and then the
/// process calls `exit(5)` (`exit_group`) while two more threads are still running.
fn churn() -> ! {
    say(format_args!("tid {}", gettid()));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            std::thread::spawn(move || {
                say(format_args!("tid {}", gettid()));
                for round in 0..30 {
                    short_thread();
                    if w == 0 && round % 10 == 0 {
                        let mut c = std::process::Command::new("/bin/true").spawn().unwrap();
                        say(format_args!("child {}", c.id()));
                        assert!(c.wait().unwrap().success());
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    for _ in 0..2 {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            loop {
                std::thread::park();
            }
        });
        say(format_args!("tid {}", rx.recv().unwrap()));
    }
    std::process::exit(5)
}

/// How the last thread of [`leader_first`] leaves.
#[derive(Copy, Clone)]
enum LastExit {
    /// `exit_group(code)`: the process's status is `code`.
    Group(i32),
    /// `exit(code)` of this one thread: the process's status is the *leader's* exit code.
    Thread(i32),
}

/// The code the leader passes to the raw `exit` syscall in [`leader_exit_handler`].
static LEADER_CODE: AtomicI32 = AtomicI32::new(0);

extern "C" fn leader_exit_handler(_sig: libc::c_int) {
    // SAFETY: `SYS_exit` ends only the calling thread and never returns; it is async-signal-safe.
    unsafe {
        libc::syscall(libc::SYS_exit, LEADER_CODE.load(Ordering::SeqCst));
    }
}

/// (b) The leader thread exits first (raw `SYS_exit`, not `exit_group`), other threads keep
/// running and even start new threads, then the last thread ends the process with `last`.
fn leader_first(leader_code: i32, last: LastExit) -> ! {
    let pid = getpid();
    let me = gettid();
    assert_ne!(me, pid, "libtest runs a test on a thread of its own");
    say(format_args!("tid {me}"));
    LEADER_CODE.store(leader_code, Ordering::SeqCst);
    // SAFETY: a plain `sigaction` for SIGUSR1 with a handler that only makes a raw syscall.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = leader_exit_handler as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                say(format_args!("tid {}", gettid()));
                while !stop.load(Ordering::SeqCst) {
                    short_thread();
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    // Make the leader (libtest's main thread, parked in a channel receive) run the handler.
    // SAFETY: tgkill(2) with our own pid and the leader's tid.
    let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGUSR1) };
    assert_eq!(rc, 0, "tgkill");
    wait_until("the leader to exit", || task_state(pid) == Some('Z'));
    say(format_args!("leader-gone"));
    // The process lives on without its leader: more threads come and go.
    for _ in 0..20 {
        short_thread();
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    // `join` returns once the kernel cleared the thread's tid, a moment before the thread has
    // fully exited; wait until only the zombie leader and this thread are listed, so that this
    // thread's exit really is the last one.
    wait_until("the other threads to be gone", || {
        task_ids().iter().all(|&t| t == pid || t == me)
    });
    say(format_args!("last {me}"));
    // SAFETY: raw exits: the first ends the whole process, the second only this thread (the
    // last one, so the process too). Neither returns.
    unsafe {
        match last {
            LastExit::Group(code) => libc::syscall(libc::SYS_exit_group, code),
            LastExit::Thread(code) => libc::syscall(libc::SYS_exit, code),
        };
    }
    unreachable!("the exit syscall returned")
}

/// (c) A non-leader thread calls `execve` while other threads exist. The new program runs
/// `then` (shell text), forks a real child (`/bin/true`) and exits with 4.
fn thread_exec(then: &str) -> ! {
    let me = gettid();
    assert_ne!(me, getpid(), "libtest runs a test on a thread of its own");
    say(format_args!("tid {me}"));
    for _ in 0..3 {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            loop {
                std::thread::park();
            }
        });
        say(format_args!("tid {}", rx.recv().unwrap()));
    }
    say(format_args!("exec-from {me}"));
    let err = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("echo {MARK} execd $$; {then}/bin/true; exit 4"))
        .exec();
    panic!("helper: exec failed: {err}")
}

// ------------------------------------------------------------------------------------------
// The test side.
// ------------------------------------------------------------------------------------------

/// One helper run: what the stream said and what the process said and returned.
struct HelperRun {
    pid: Pid,
    /// How it was started.
    how: Start,
    /// The time read just before the watch began.
    watched_at: procwatch::Timestamp,
    events: Vec<ProcEvent>,
    status: ExitStatus,
    /// The helper's report lines, without the prefix.
    lines: Vec<String>,
    stderr: String,
}

impl HelperRun {
    /// The values of the report lines `"<key> <n>"`.
    fn numbers(&self, key: &str) -> BTreeSet<i32> {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
            .collect()
    }

    fn has_line(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    /// How many `Exec`s of the helper's pid come before the scenario's own: the spawn's exec
    /// of this test binary when the helper was started by `spawn`; none when it was watched
    /// once it ran, since that exec happened before the watch and is not delivered.
    fn start_execs(&self) -> u32 {
        match self.how {
            Start::Spawn => 1,
            Start::WatchWhenReady => 0,
        }
    }
}

/// Reads the stream to its end. When the helper's `Exit` is read, the helper must really be
/// dead: it is our unreaped child, so `waitid(WNOWAIT)` must see it exited.
async fn collect_checking_exit(events: &mut ProcEvents, root: Pid) -> Vec<ProcEvent> {
    let mut out = Vec::new();
    let res = tokio::time::timeout(DEADLINE, async {
        while let Some(ev) = events.next().await {
            if matches!(ev, ProcEvent::Exit { pid, .. } if pid == root) {
                assert!(
                    exited_unreaped(root),
                    "Exit of {root} delivered while the process has not exited: {ev:?}; events so far: {out:?}"
                );
            }
            out.push(ev);
        }
    })
    .await;
    assert!(
        res.is_ok(),
        "stream did not end within {DEADLINE:?}; events so far: {out:?}"
    );
    out
}

/// Runs the helper with `scenario`, started and watched with `Interest::ALL` as `how` says,
/// and collects everything.
async fn run_helper(scenario: &str, how: Start) -> Option<HelperRun> {
    let watcher = watcher()?;
    let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
    cmd.env(HELPER_ENV, scenario)
        .args([
            "--exact",
            &test_name!("helper"),
            "--nocapture",
            "--test-threads=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if how == Start::WatchWhenReady {
        cmd.env(WAIT_ENV, "1");
    }
    let mut started = start(&watcher, cmd, Interest::ALL, how, &format!("{MARK} ready"));
    let pid = started.pid();
    let mut stdout = started.child.stdout.take().unwrap();
    let mut stderr = started.child.stderr.take().unwrap();
    let out = tokio::spawn(async move {
        let mut s = String::new();
        stdout.read_to_string(&mut s).await.map(|_| s)
    });
    let err = tokio::spawn(async move {
        let mut s = String::new();
        stderr.read_to_string(&mut s).await.map(|_| s)
    });
    let events = collect_checking_exit(&mut started.events, pid).await;
    let status = tokio::time::timeout(DEADLINE, started.child.wait())
        .await
        .expect("the helper is reaped in time")
        .expect("wait for the helper");
    let stdout = tokio::time::timeout(DEADLINE, out)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let stderr = tokio::time::timeout(DEADLINE, err)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let lines = stdout
        .lines()
        // libtest prints "test helper ... " without a newline before the scenario runs, so
        // the first report line may share its line.
        .filter_map(|l| Some(l.split_once(MARK)?.1.strip_prefix(' ')?.to_owned()))
        .collect();
    Some(HelperRun {
        pid,
        how,
        watched_at: started.watched_at,
        events,
        status,
        lines,
        stderr,
    })
}

/// The checks every scenario shares. `children` are the helper's real child processes.
fn check_trace(run: &HelperRun, children: &BTreeSet<i32>) {
    let ctx = format!(
        "pid {}, status {:?}\nevents: {:?}\nreport: {:?}\nstderr: {}",
        run.pid, run.status, run.events, run.lines, run.stderr
    );
    let pid = run.pid;
    check_order(&run.events);
    check_after_watch(&run.events, run.watched_at);

    // Only the process itself and its real children are ever named, in any field.
    let mut named = BTreeSet::new();
    for ev in &run.events {
        named.insert(ev.pid().as_raw());
        match ev {
            ProcEvent::Fork { child, .. } => {
                named.insert(child.as_raw());
            }
            ProcEvent::Child { parent, .. } => {
                named.insert(parent.as_raw());
            }
            _ => {}
        }
    }
    let mut expected = children.clone();
    expected.insert(pid.as_raw());
    assert_eq!(
        named, expected,
        "pids named by events != the process and its children\n{ctx}"
    );
    let tids: BTreeSet<i32> = run
        .numbers("tid")
        .into_iter()
        .filter(|&t| t != pid.as_raw())
        .collect();
    assert!(
        tids.len() >= 2,
        "the helper reported too few threads\n{ctx}"
    );
    assert!(
        named.is_disjoint(&tids),
        "a thread id appears in the events\n{ctx}"
    );

    // `Child` exactly for the real children, each born of the process (never of a tid).
    let childs: Vec<(Pid, Pid)> = run
        .events
        .iter()
        .filter_map(|e| match *e {
            ProcEvent::Child { pid, parent, .. } => Some((pid, parent)),
            _ => None,
        })
        .collect();
    let child_pids: BTreeSet<i32> = childs.iter().map(|(c, _)| c.as_raw()).collect();
    assert_eq!(
        &child_pids, children,
        "Child events != real children\n{ctx}"
    );
    assert_eq!(
        childs.len(),
        children.len(),
        "duplicate Child events\n{ctx}"
    );
    assert!(
        childs.iter().all(|&(_, p)| p == pid),
        "a Child names a parent other than {pid}\n{ctx}"
    );

    // Forks of the process name exactly its children, as many as there are.
    let forks: u32 = run
        .events
        .iter()
        .filter_map(|e| match *e {
            ProcEvent::Fork {
                pid: p,
                child,
                count,
                ..
            } if p == pid => {
                assert!(
                    children.contains(&child.as_raw()),
                    "Fork of a non-child {child}\n{ctx}"
                );
                Some(count)
            }
            _ => None,
        })
        .sum();
    assert_eq!(forks as usize, children.len(), "Fork counts\n{ctx}");

    // Exactly one Exit of the process, its last event, with the status wait() reported.
    let per_pid = by_pid(&run.events);
    let mine = &per_pid[&pid];
    let exits: Vec<&ProcEvent> = mine
        .iter()
        .map(|(_, e)| e)
        .filter(|e| matches!(e, ProcEvent::Exit { .. }))
        .collect();
    assert_eq!(exits.len(), 1, "Exit events of {pid}\n{ctx}");
    match &mine.last().unwrap().1 {
        ProcEvent::Exit { status, .. } => assert_eq!(
            *status,
            Some(run.status),
            "the Exit status must be wait()'s status\n{ctx}"
        ),
        other => panic!("the process's last event is {other:?}, not its Exit\n{ctx}"),
    }

    // Every child: Child first, Exit last, success (they are /bin/true).
    for &c in children {
        let evs = &per_pid[&Pid::from_raw(c).unwrap()];
        assert!(
            matches!(evs[0].1, ProcEvent::Child { .. }),
            "{c}: {evs:?}\n{ctx}"
        );
        match &evs.last().unwrap().1 {
            ProcEvent::Exit {
                status: Some(s), ..
            } if s.success() => {}
            other => panic!("{c}: last event {other:?}, expected a successful Exit\n{ctx}"),
        }
    }
}

/// The sum of `Exec` counts about `pid`.
fn execs(events: &[ProcEvent], pid: Pid) -> u32 {
    events
        .iter()
        .filter_map(|e| match *e {
            ProcEvent::Exec { pid: p, count, .. } if p == pid => Some(count),
            _ => None,
        })
        .sum()
}

async fn churn_case(how: Start) {
    let run = require!(run_helper("churn", how).await);
    let children = run.numbers("child");
    assert_eq!(
        children.len(),
        3,
        "report: {:?}\nstderr: {}",
        run.lines,
        run.stderr
    );
    assert!(
        run.numbers("tid").len() >= 90,
        "the helper should have run ~96 threads: {:?}",
        run.lines
    );
    assert_eq!(run.status.code(), Some(5), "stderr: {}", run.stderr);
    check_trace(&run, &children);
    assert_eq!(
        execs(&run.events, run.pid),
        run.start_execs(),
        "{:?}",
        run.events
    );
}

#[tokio::test]
async fn thread_churn_is_invisible_and_exit_group_gives_one_exit() {
    churn_case(Start::Spawn).await;
}

#[tokio::test]
async fn thread_churn_is_invisible_and_exit_group_gives_one_exit_watched_when_ready() {
    churn_case(Start::WatchWhenReady).await;
}

/// Runs a [`leader_first`] scenario and checks its trace. `expected` is the status the kernel
/// gives such a process where that does not depend on the kernel version; in every case the
/// `Exit` must carry the status `wait` returns.
async fn leader_first_case(scenario: &str, expected: Option<ExitStatus>, how: Start) {
    let run = require!(run_helper(scenario, how).await);
    let ctx = format!(
        "wait() status {:?}\nreport: {:?}\nstderr: {}\nevents: {:?}",
        run.status, run.lines, run.stderr, run.events
    );
    assert!(
        run.has_line("leader-gone"),
        "the leader did not exit first\n{ctx}"
    );
    let last = run.numbers("last");
    assert_eq!(last.len(), 1, "the last thread did not report\n{ctx}");
    assert_ne!(last.first().copied(), Some(run.pid.as_raw()), "{ctx}");
    if let Some(expected) = expected {
        assert_eq!(
            run.status, expected,
            "wait() status (kernel semantics)\n{ctx}"
        );
    }
    // Also checks that the Exit came only once the process was dead (it was read while the
    // process was waitable), i.e. after its last thread and not at the leader's exit, and that
    // its status is wait()'s.
    check_trace(&run, &BTreeSet::new());
}

async fn leader_first_exit_group_9(how: Start) {
    let status = ExitStatus::from_raw(9 << 8);
    leader_first_case("leader_first_exit_group_9", Some(status), how).await;
}

#[tokio::test]
async fn leader_exits_first_then_last_thread_exit_group() {
    leader_first_exit_group_9(Start::Spawn).await;
}

#[tokio::test]
async fn leader_exits_first_then_last_thread_exit_group_watched_when_ready() {
    leader_first_exit_group_9(Start::WatchWhenReady).await;
}

async fn leader_first_all_exit_0(how: Start) {
    let status = ExitStatus::from_raw(0);
    leader_first_case("leader_first_all_exit_0", Some(status), how).await;
}

#[tokio::test]
async fn leader_exits_first_then_every_thread_exits_zero() {
    leader_first_all_exit_0(Start::Spawn).await;
}

#[tokio::test]
async fn leader_exits_first_then_every_thread_exits_zero_watched_when_ready() {
    leader_first_all_exit_0(Start::WatchWhenReady).await;
}

/// The leader leaves with `exit(6)`, the last thread with `exit(0)`, no `exit_group`.
///
/// Which code becomes the process's status changed in 2022: older kernels report the leader's
/// own `exit_code` (6); kernels whose `do_exit()` calls `synchronize_group_exit()` mark the
/// group exited with the code of the last thread to exit when `signal->quick_threads` drops to
/// 0 (this one does: `wait` says 0). Either way the stream must say what `wait` says.
#[tokio::test]
async fn leader_exits_first_with_6_then_last_thread_exits_0() {
    leader_first_case("leader_first_code_6", None, Start::Spawn).await;
}

/// [`leader_exits_first_with_6_then_last_thread_exits_0`], watched once it runs.
#[tokio::test]
async fn leader_exits_first_with_6_then_last_thread_exits_0_watched_when_ready() {
    leader_first_case("leader_first_code_6", None, Start::WatchWhenReady).await;
}

/// The mirror case: the leader leaves with `exit(0)`, the last thread with `exit(3)`.
#[tokio::test]
async fn leader_exits_first_with_0_then_last_thread_exits_3() {
    leader_first_case("leader_first_last_exit_3", None, Start::Spawn).await;
}

/// [`leader_exits_first_with_0_then_last_thread_exits_3`], watched once it runs.
#[tokio::test]
async fn leader_exits_first_with_0_then_last_thread_exits_3_watched_when_ready() {
    leader_first_case("leader_first_last_exit_3", None, Start::WatchWhenReady).await;
}

async fn thread_exec_case(how: Start) {
    let run = require!(run_helper("thread_exec", how).await);
    let ctx = format!(
        "report: {:?}\nstderr: {}\nevents: {:?}",
        run.lines, run.stderr, run.events
    );
    let pid = run.pid;
    let from = run.numbers("exec-from");
    assert_eq!(from.len(), 1, "{ctx}");
    assert_ne!(
        from.first().copied(),
        Some(pid.as_raw()),
        "the exec must come from a non-leader\n{ctx}"
    );
    assert_eq!(
        run.numbers("execd"),
        BTreeSet::from([pid.as_raw()]),
        "the exec'd program runs under the leader's pid\n{ctx}"
    );
    assert_eq!(run.status.code(), Some(4), "{ctx}");

    // The exec'd program forked exactly one child (/bin/true).
    let children: BTreeSet<i32> = run
        .events
        .iter()
        .filter_map(|e| match *e {
            ProcEvent::Child { pid, .. } => Some(pid.as_raw()),
            _ => None,
        })
        .collect();
    assert_eq!(
        children.len(),
        1,
        "the exec'd program's child must be tracked: the process is still alive after the exec\n{ctx}"
    );
    check_trace(&run, &children);

    // Both execs (the spawn's, then the thread's) are reported under the pid, before the
    // exec'd program's fork; only the thread's when the watch began after the first.
    assert_eq!(execs(&run.events, pid), run.start_execs() + 1, "{ctx}");
    let mine = &by_pid(&run.events)[&pid];
    let last_exec = mine
        .iter()
        .rposition(|(_, e)| matches!(e, ProcEvent::Exec { .. }))
        .unwrap();
    let fork = mine
        .iter()
        .position(|(_, e)| matches!(e, ProcEvent::Fork { .. }))
        .unwrap();
    assert!(
        last_exec < fork,
        "Exec must precede the exec'd program's Fork\n{ctx}"
    );
    let child = Pid::from_raw(*children.first().unwrap()).unwrap();
    assert_eq!(
        execs(&run.events, child),
        1,
        "the child execs /bin/true\n{ctx}"
    );
}

#[tokio::test]
async fn non_leader_exec_takes_over_the_pid_without_an_early_exit() {
    thread_exec_case(Start::Spawn).await;
}

#[tokio::test]
async fn non_leader_exec_takes_over_the_pid_without_an_early_exit_watched_when_ready() {
    thread_exec_case(Start::WatchWhenReady).await;
}

/// The non-leader `execve` happens just before the watch: the exec'd program says it is ready,
/// and the watch is made at once, while the kernel's messages about the exec — the old
/// leader's exit, then the exec — are still unread. The `/proc` read shows one thread; the old
/// leader's exit must not be taken for the process's, and the exec is not delivered (it
/// happened before the watch). Repeated, since whether the messages are still queued depends
/// on timing.
#[tokio::test]
async fn non_leader_exec_just_before_the_watch_is_not_an_exit() {
    for round in 0..10 {
        let Some(run) = run_helper("thread_exec_then_ready", Start::WatchWhenReady).await else {
            return;
        };
        let ctx = format!(
            "round {round}: pid {}, status {:?}\nevents: {:?}\nreport: {:?}\nstderr: {}",
            run.pid, run.status, run.events, run.lines, run.stderr
        );
        assert_eq!(run.status.code(), Some(4), "{ctx}");
        let children: BTreeSet<i32> = run
            .events
            .iter()
            .filter_map(|e| match *e {
                ProcEvent::Child { pid, .. } => Some(pid.as_raw()),
                _ => None,
            })
            .collect();
        assert_eq!(
            children.len(),
            1,
            "the process lives on after the exec and forks /bin/true\n{ctx}"
        );
        // The thread ids were reported before the ready line, which the start consumed, so
        // the trace is checked whole instead: the root forks once and exits with 4 (its exec
        // came before the watch), the child is announced, execs /bin/true and exits with 0.
        check_order(&run.events);
        check_after_watch(&run.events, run.watched_at);
        let child = Pid::from_raw(*children.first().unwrap()).unwrap();
        let shape: Vec<(Pid, &str, Option<i32>)> = run
            .events
            .iter()
            .map(|e| match e {
                ProcEvent::Fork { pid, child: c, .. } => (*pid, "fork", Some(c.as_raw())),
                ProcEvent::Child { pid, parent, .. } => (*pid, "child", Some(parent.as_raw())),
                ProcEvent::Exec { pid, .. } => (*pid, "exec", None),
                ProcEvent::Exit { pid, status, .. } => {
                    (*pid, "exit", status.and_then(|s| s.code()))
                }
                other => panic!("unexpected {other:?}\n{ctx}"),
            })
            .collect();
        let root = run.pid;
        assert_eq!(
            shape,
            vec![
                (root, "fork", Some(child.as_raw())),
                (child, "child", Some(root.as_raw())),
                (child, "exec", None),
                (child, "exit", Some(0)),
                (root, "exit", Some(4)),
            ],
            "{ctx}"
        );
    }
}
