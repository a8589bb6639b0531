//! What only the Ptrace backend does, or must not do: change nothing about the processes it
//! traces (their exit statuses, signals, job control, their parents' waits), refuse a
//! process someone else traces with the reason, let go of everything when a stream or the
//! watcher goes, and work for a user without any privilege.
//!
//! The per-stream guarantees are checked by the conformance suite, built again against this
//! backend (the `ptrace_*` test targets).

mod support;

use futures::StreamExt;
use procwatch::{BackendKind, ErrorKind, Interest, Pid, ProcEvent, ProcWatcher, PtraceOptions};
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use support::*;

fn ptrace_watcher() -> Option<ProcWatcher> {
    watcher_on(BackendKind::Ptrace, |b| b)
}

/// `State` and `TracerPid` of `pid`, from `/proc/<pid>/status`.
fn state_and_tracer(pid: Pid) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_owned())
    };
    let state = field("State:")?.chars().next()?;
    let tracer = field("TracerPid:")?.parse().ok()?;
    Some((state, tracer))
}

/// Every process but kernel threads: pid, state, parent, tracer, what it waits in, and its
/// command line, for failure messages.
fn process_table() -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let read =
            |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
        let mut cmdline = read("cmdline").replace('\0', " ");
        if cmdline.is_empty() {
            // A kernel thread, or a zombie: only the latter has a parent other than 2.
            let comm = read("comm");
            let stat = read("stat");
            if stat.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')) {
                cmdline = format!("[{}] (zombie)", comm.trim());
            } else {
                continue;
            }
        }
        let status = read("status");
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        out += &format!(
            "{pid} {} ppid {} tracer {} wchan {} sigpnd {} shdpnd {}: {cmdline}\n",
            field("State:"),
            field("PPid:"),
            field("TracerPid:"),
            read("wchan"),
            field("SigPnd:"),
            field("ShdPnd:")
        );
    }
    out
}

/// [`check_order`] for storms big enough to wrap the pid space (`pid_max` is 32,768 here):
/// after a process's `Exit`, its number may come back as a new process, which starts with its
/// own `Child`. Per pid: a `Child` only first or right after an `Exit`, nothing else after
/// an `Exit`, at most one `Exit` per `Child`.
fn check_order_with_reuse(events: &[ProcEvent]) {
    let mut exited: HashMap<Pid, bool> = HashMap::new();
    for (i, ev) in events.iter().enumerate() {
        let pid = ev.pid();
        match ev {
            ProcEvent::Lost { .. } => panic!("#{i}: a lossless backend lost events: {ev:?}"),
            ProcEvent::Child { .. } => {
                let before = exited.insert(pid, false);
                assert!(
                    before.is_none_or(|gone| gone),
                    "#{i}: a second Child of live {pid}: {ev:?}"
                );
            }
            ProcEvent::Exit { .. } => {
                let before = exited.insert(pid, true);
                assert_ne!(before, Some(true), "#{i}: {pid} exited twice: {ev:?}");
            }
            _ => assert_ne!(
                exited.get(&pid),
                Some(&true),
                "#{i}: an event about {pid} after its Exit: {ev:?}"
            ),
        }
    }
}

/// How many `Child` and `Exit` events `evs` has.
fn children_and_exits(evs: &[ProcEvent]) -> (usize, usize) {
    let count = |f: fn(&ProcEvent) -> bool| evs.iter().filter(|e| f(e)).count();
    (
        count(|e| matches!(e, ProcEvent::Child { .. })),
        count(|e| matches!(e, ProcEvent::Exit { .. })),
    )
}

async fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    assert!(
        eventually(limit, &mut f).await,
        "{what}: not within {limit:?}"
    );
}

async fn wait_child(child: &mut tokio::process::Child, what: &str) -> ExitStatus {
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} did not exit in time"))
        .unwrap_or_else(|e| panic!("wait for {what}: {e}"))
}

/// Runs `script` in `sh` with its output captured, watched (all of its tree) or not, and
/// returns its output and status.
async fn run_script(w: Option<&ProcWatcher>, script: &str) -> (String, ExitStatus) {
    let mut cmd = sh(script);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let (child, events) = match w {
        Some(w) => {
            let started = w.spawn(cmd, Interest::ALL).expect("spawn watched");
            (started.child, Some(started.events))
        }
        None => (cmd.spawn().expect("spawn"), None),
    };
    let reader = tokio::spawn(async move {
        let mut evs = Vec::new();
        if let Some(mut e) = events {
            evs = collect(&mut e, DEADLINE).await;
        }
        evs
    });
    let out = match tokio::time::timeout(DEADLINE, child.wait_with_output()).await {
        Ok(out) => out.expect("run the script"),
        Err(_) => panic!(
            "`{script}` ({}) did not end in time; processes:\n{}",
            if w.is_some() { "watched" } else { "unwatched" },
            process_table()
        ),
    };
    let evs = reader.await.expect("reader");
    if w.is_some() {
        check_order(&evs);
        assert!(
            matches!(evs.last(), Some(ProcEvent::Exit { .. })),
            "the stream ends with the root's exit: {evs:?}"
        );
    }
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (text, out.status)
}

/// The program's own children keep their exact statuses, traced or not, std's and tokio's,
/// while the watcher traces a busy tree beside them (every stop of which sends this process
/// a `SIGCHLD`, on which tokio looks at its children).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_children_keep_their_exact_statuses() {
    let w = require!(ptrace_watcher());
    let mut busy = w
        .spawn(
            sh("for i in $(seq 200); do (exit 0) & done; wait"),
            Interest::ALL,
        )
        .expect("spawn a busy tree");
    for round in 0..20 {
        let mut traced_exit = tokio::process::Command::new("sh")
            .args(["-c", "sleep 0.01; exit 7"])
            .spawn()
            .expect("spawn");
        let mut traced_killed = tokio::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn");
        let mut untraced = tokio::process::Command::new("sh")
            .args(["-c", "exit 9"])
            .spawn()
            .expect("spawn");
        let mut std_traced = std::process::Command::new("sh")
            .args(["-c", "sleep 0.01; exit 3"])
            .spawn()
            .expect("spawn");
        let pid_of = |id: Option<u32>| Pid::from_raw(id.expect("running") as i32).unwrap();
        let mut s1 = w
            .watch(pid_of(traced_exit.id()), Interest::ALL)
            .expect("watch");
        let killed_pid = pid_of(traced_killed.id());
        let mut s2 = w.watch(killed_pid, Interest::ALL).expect("watch");
        let mut s3 = w
            .watch(pid_of(Some(std_traced.id())), Interest::ALL)
            .expect("watch");
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(killed_pid.as_raw()).unwrap(),
            rustix::process::Signal::TERM,
        )
        .expect("kill");
        assert_eq!(
            wait_child(&mut traced_exit, "traced sh").await.code(),
            Some(7),
            "round {round}"
        );
        assert_eq!(
            wait_child(&mut traced_killed, "traced sleep")
                .await
                .signal(),
            Some(libc::SIGTERM),
            "round {round}"
        );
        assert_eq!(
            wait_child(&mut untraced, "untraced sh").await.code(),
            Some(9),
            "round {round}"
        );
        let std_status = tokio::task::spawn_blocking(move || std_traced.wait())
            .await
            .unwrap()
            .expect("std wait");
        assert_eq!(std_status.code(), Some(3), "round {round}");
        // Each stream saw the same status.
        for (s, want) in [
            (&mut s1, 7 << 8),
            (&mut s2, libc::SIGTERM),
            (&mut s3, 3 << 8),
        ] {
            let evs = collect(s, DEADLINE).await;
            let last = evs.last().cloned();
            assert!(
                matches!(last, Some(ProcEvent::Exit { status: Some(st), .. }) if st.into_raw() == want),
                "round {round}: {evs:?}"
            );
        }
    }
    collect(&mut busy.events, DEADLINE).await;
    assert!(wait_child(&mut busy.child, "the busy tree").await.success());
}

/// A traced program sees its signals exactly once, and the output of signal handling and job
/// control is what it is without the watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_and_job_control_behave_as_untraced() {
    let w = require!(ptrace_watcher());
    let scripts = [
        // A handler runs once per signal.
        "trap 'echo got USR1' USR1; kill -USR1 $$; kill -USR1 $$; echo done",
        // A stopped job stays stopped, continues, and its status is its own. (`/proc` shows a
        // traced process in group-stop as `t`, "tracing stop", where an untraced one is `T`.)
        "sleep 2 & p=$!; kill -STOP $p; i=0; \
         until grep -q '^State:.[Tt]' /proc/$p/status || [ $i -gt 500 ]; do \
         sleep 0.01; i=$((i+1)); done; [ $i -le 500 ] && echo stopped; \
         kill -CONT $p; wait $p; echo rc=$?",
        // The terminal's stop signal (what a shell's job control sends), then CONT. (In an
        // orphaned process group, as under some CI runners, the kernel discards it and the
        // job just runs to its end: traced or not, the output says so the same way.)
        "sleep 2 & p=$!; kill -TSTP $p; i=0; \
         until grep -q '^State:.[Tt]' /proc/$p/status 2>/dev/null || [ $i -gt 300 ]; do \
         sleep 0.01; i=$((i+1)); done; [ $i -le 300 ] && echo stopped || echo not stopped; \
         kill -CONT $p 2>/dev/null; wait $p; echo rc=$?",
        // Stop and continue back to back, again and again: each `SIGCONT` undoes the stop
        // before it, even one that was still on its way through the tracer.
        "sleep 0.5 & p=$!; i=0; while [ $i -lt 300 ]; do kill -STOP $p; kill -CONT $p; \
         i=$((i+1)); done; wait $p; echo rc=$?",
        // A signal that kills, and one that is ignored.
        "trap '' TERM; kill -TERM $$; sh -c 'kill -KILL $$'; echo rc=$?",
        // SIGCHLD reaches the real parent, and its wait gets the child's code.
        "trap 'echo chld' CHLD; sh -c 'exit 4'; echo rc=$?",
    ];
    for script in scripts {
        let (plain, plain_status) = run_script(None, script).await;
        let (traced, traced_status) = run_script(Some(&w), script).await;
        assert_eq!(traced, plain, "output of `{script}`");
        assert_eq!(traced_status, plain_status, "status of `{script}`");
    }
}

/// A process that something else traces (here: another ptrace watcher) is refused, saying by
/// whom, and nothing is left attached.
#[tokio::test]
async fn a_process_traced_by_another_is_refused_with_the_reason() {
    let first = require!(ptrace_watcher());
    let second = ptrace_watcher().expect("a second watcher");
    let mut cmd = sh("read x; exit 0");
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let pid = Pid::from_raw(child.id().unwrap() as i32).unwrap();
    let _events = first.watch(pid, Interest::ALL).expect("the first watch");
    let err = second.watch(pid, Interest::ALL).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert_eq!(err.pid(), Some(pid));
    assert_eq!(err.backend(), Some(BackendKind::Ptrace));
    assert!(
        err.to_string().contains("already traced by process"),
        "{err}"
    );
    assert_eq!(second.tracked(), 0);
    // Watching itself is refused too.
    let err = second.watch(Pid::this(), Interest::ALL).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(
        err.to_string()
            .contains("cannot watch the program it runs in"),
        "{err}"
    );
    drop(child.stdin.take());
    assert!(wait_child(&mut child, "sh").await.success());
}

/// Dropping a stream detaches its processes (they run on, untraced); dropping the watcher
/// detaches the rest, a stopped process stays stopped and continues on `SIGCONT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_and_watchers_let_go_when_dropped() {
    let w = require!(ptrace_watcher());
    let mut a = sh("read x; exit 3");
    a.stdin(Stdio::piped());
    let mut a = w.spawn(a, Interest::ALL).expect("spawn a");
    let mut b = sh("read x; exit 4");
    b.stdin(Stdio::piped());
    let mut b = w.spawn(b, Interest::ALL).expect("spawn b");
    let tracer = state_and_tracer(a.pid()).unwrap().1;
    assert_ne!(tracer, 0, "a is traced");
    assert_eq!(state_and_tracer(b.pid()).unwrap().1, tracer, "b is traced");

    // The stream goes: a is let go.
    let a_pid = a.pid();
    drop(a.events);
    wait_for(DEADLINE, "a is detached", || {
        state_and_tracer(a_pid).is_some_and(|(_, t)| t == 0)
    })
    .await;
    assert_eq!(w.tracked(), 1);

    // b stopped, then the watcher goes: b is detached and stays stopped.
    let b_pid = rustix::process::Pid::from_raw(b.pid().as_raw()).unwrap();
    rustix::process::kill_process(b_pid, rustix::process::Signal::STOP).unwrap();
    wait_for(DEADLINE, "b stops", || {
        state_and_tracer(b.pid()).is_some_and(|(s, _)| s == 'T' || s == 't')
    })
    .await;
    drop(w);
    let rest = collect(&mut b.events, DEADLINE).await;
    assert!(
        !rest.iter().any(|e| matches!(e, ProcEvent::Exit { .. })),
        "{rest:?}"
    );
    wait_for(DEADLINE, "b is detached, still stopped", || {
        state_and_tracer(b.pid()) == Some(('T', 0))
    })
    .await;
    rustix::process::kill_process(b_pid, rustix::process::Signal::CONT).unwrap();

    // Both run on, untraced, and exit with their own codes.
    use tokio::io::AsyncWriteExt;
    for (c, code) in [(&mut a.child, 3), (&mut b.child, 4)] {
        let mut stdin = c.stdin.take().unwrap();
        stdin.write_all(b"go\n").await.unwrap();
        drop(stdin);
        assert_eq!(wait_child(c, "sh").await.code(), Some(code));
    }
}

/// With `kill_on_drop`, what the watcher traces dies with it.
#[tokio::test]
async fn kill_on_drop_kills_the_traced_tree() {
    let w = require!(watcher_on(BackendKind::Ptrace, |b| b
        .ptrace(PtraceOptions::new().kill_on_drop(true))));
    let mut started = w
        .spawn(sh("sleep 30 & wait"), Interest::ALL)
        .expect("spawn");
    let mut sleeper = None;
    while let Some(ev) = next(&mut started.events, DEADLINE).await {
        if let ProcEvent::Exec { pid, .. } = ev {
            if pid != started.pid() {
                sleeper = Some(pid);
                break;
            }
        }
    }
    let sleeper = sleeper.expect("the sleep child execs");
    // The watcher goes while its stream lives: dropping the stream first would detach the
    // processes (at once, by design), and then which of them the tracer still had when it
    // died would be a race.
    drop(w);
    drop(started.events);
    let status = wait_child(&mut started.child, "sh").await;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    wait_for(DEADLINE, "the sleeper is gone", || {
        state_and_tracer(sleeper).is_none_or(|(s, _)| s == 'Z')
    })
    .await;
}

const NOBODY_HELPER_ENV: &str = "PROCWATCH_PTRACE_NOBODY_HELPER";

/// Not a test on its own: run again by [`a_user_without_privilege_gets_the_ptrace_backend`]
/// as `nobody` in a new user namespace, where the proc connector is refused.
#[test]
fn nobody_helper() {
    if std::env::var(NOBODY_HELPER_ENV).is_err() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(async {
        let w = match ProcWatcher::new() {
            Ok(w) => w,
            Err(e) => return format!("no watcher: {e}"),
        };
        let backend = w.backend();
        let mut started = match w.spawn(
            sh("for i in 1 2 3; do (exit $i) & done; wait; exit 5"),
            Interest::ALL,
        ) {
            Ok(s) => s,
            Err(e) => return format!("backend={backend} spawn failed: {e}"),
        };
        let evs = collect(&mut started.events, DEADLINE).await;
        check_order(&evs);
        let (children, _) = children_and_exits(&evs);
        let mut codes: Vec<i32> = evs
            .iter()
            .filter_map(|e| match e {
                ProcEvent::Exit {
                    status: Some(s), ..
                } => s.code(),
                _ => None,
            })
            .collect();
        codes.sort_unstable();
        let status = started.child.wait().await.map(|s| s.code());
        format!("backend={backend} children={children} codes={codes:?} status={status:?}")
    });
    println!("RESULT={result}");
}

/// A user without any privilege, in a user namespace of its own (the proc connector refuses
/// it there): `ProcWatcher::new()` picks the Ptrace backend, and a watched tree is complete.
#[tokio::test]
async fn a_user_without_privilege_gets_the_ptrace_backend() {
    if std::env::var_os(NO_NETLINK_ENV).is_some() {
        eprintln!("SKIPPED: this run is the unprivileged one already");
        return;
    }
    let probe = as_nobody(&["unshare", "--user", "--map-root-user", "true"])
        .status()
        .await;
    if !matches!(&probe, Ok(s) if s.success()) {
        let why = format!("cannot run as nobody in a user namespace here: {probe:?}");
        assert!(!in_ci(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    let mut cmd = as_nobody(&[
        "unshare",
        "--user",
        "--map-root-user",
        exe,
        "--exact",
        "nobody_helper",
        "--nocapture",
    ]);
    cmd.env(NOBODY_HELPER_ENV, "1");
    let result = helper_result(cmd, DEADLINE * 2).await;
    assert_eq!(
        result,
        "backend=ptrace children=3 codes=[1, 2, 3, 5] status=Ok(Some(5))"
    );
}

/// The tracer's stream of events is not the only thing a stalled consumer leaves waiting:
/// nothing is lost, and the tree runs to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_storm_read_late_are_all_there() {
    let w = require!(ptrace_watcher());
    let mut started = w
        .spawn(
            sh("for i in $(seq 2000); do (exit 0) & done; wait"),
            Interest::ALL,
        )
        .expect("spawn");
    // Read nothing until the tree is done.
    let status = wait_child(&mut started.child, "the storm").await;
    assert!(status.success());
    let evs = collect(&mut started.events, DEADLINE).await;
    check_order_with_reuse(&evs);
    let (children, exits) = children_and_exits(&evs);
    // 2,000 subshells, and the one `$(seq 2000)` runs in.
    assert_eq!((children, exits), (2001, 2002));
    let _ = started.events.next().await;
}

/// `Interest::HOLD`: a new process stays in tracing stop, without having run, while its
/// `Child` is not handed out and until the consumer polls again; the same at an `Exec`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_keeps_a_process_stopped_until_the_consumer_moves_on() {
    let w = require!(ptrace_watcher());
    let dir = std::env::temp_dir().join(format!("procwatch-hold-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("made");
    let _ = std::fs::remove_file(&file);
    let script = format!("touch {}; exit 0", file.display());
    let mut started = w
        .spawn(sh(&script), Interest::ALL | Interest::HOLD)
        .expect("spawn");
    let root = started.pid();
    // The root is held at its exec, then (once polled again) forks the child that runs touch.
    let mut child = None;
    while let Some(ev) = next(&mut started.events, DEADLINE).await {
        if let ProcEvent::Child { pid, parent, .. } = ev {
            assert_eq!(parent, root);
            child = Some(pid);
            break;
        }
    }
    let child = child.expect("the root's child");
    // Not polled again yet: the child is stopped by its tracer and has run nothing.
    for _ in 0..3 {
        assert_eq!(
            state_and_tracer(child).map(|(s, _)| s),
            Some('t'),
            "the held child's state"
        );
        assert!(!file.exists(), "the held child ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Polled again: it runs up to its exec, where it is held again, before touch's first
    // instruction.
    let ev = next(&mut started.events, DEADLINE).await;
    assert!(
        matches!(ev, Some(ProcEvent::Exec { pid, .. }) if pid == child),
        "{ev:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(state_and_tracer(child).map(|(s, _)| s), Some('t'));
    assert!(!file.exists(), "touch ran while held at its exec");
    let rest = collect(&mut started.events, DEADLINE).await;
    assert!(file.exists(), "touch did not run once released: {rest:?}");
    assert!(wait_child(&mut started.child, "sh").await.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `HOLD` added to a stream after `watch` holds its processes, and the children they make,
/// from then on; taken away again, it holds nothing more, and what it held runs on once read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_can_be_added_and_taken_away_after_watch() {
    use tokio::io::AsyncWriteExt;
    let w = require!(ptrace_watcher());
    let dir = std::env::temp_dir().join(format!("procwatch-hold-later-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (first, second) = (dir.join("first"), dir.join("second"));
    let script = format!(
        "cd {}; read x; touch first; read x; touch second; exit 0",
        dir.display()
    );
    let mut cmd = sh(&script);
    cmd.stdin(Stdio::piped());
    let mut started = w.spawn(cmd, Interest::ALL).expect("spawn");
    let root = started.pid();
    let mut stdin = started.child.stdin.take().expect("stdin");
    assert!(matches!(
        next(&mut started.events, DEADLINE).await,
        Some(ProcEvent::Exec { pid, .. }) if pid == root
    ));
    // Holding from now on: the child that will run `touch first` stops at its creation.
    started.events.set_interest(Interest::ALL | Interest::HOLD);
    stdin.write_all(b"go\n").await.unwrap();
    let child = loop {
        match next(&mut started.events, DEADLINE).await {
            Some(ProcEvent::Child { pid, parent, .. }) if parent == root => break pid,
            Some(_) => {}
            None => panic!("the stream ended before the child came"),
        }
    };
    for _ in 0..3 {
        assert_eq!(state_and_tracer(child).map(|(s, _)| s), Some('t'));
        assert!(!first.exists(), "the held child ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Holding no more: once the consumer polls again the child runs, and is not stopped at
    // its exec.
    started.events.set_interest(Interest::ALL);
    let limit = tokio::time::Instant::now() + DEADLINE;
    while !first.exists() {
        assert!(tokio::time::Instant::now() < limit, "touch first never ran");
        let _ = tokio::time::timeout(Duration::from_millis(50), started.events.next()).await;
    }
    // The next child is not held at all, though nobody reads the stream.
    stdin.write_all(b"go\n").await.unwrap();
    wait_for(DEADLINE, "touch second, unread", || second.exists()).await;
    drop(stdin);
    assert!(wait_child(&mut started.child, "sh").await.success());
    let rest = collect(&mut started.events, DEADLINE).await;
    assert!(
        rest.iter()
            .any(|e| matches!(e, ProcEvent::Exit { pid, .. } if *pid == root)),
        "{rest:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A holding stream that stalls for a second in the middle of a 2 x 10,000 fork storm: the
/// new processes wait, stopped; nothing is lost, memory stays bounded, and once read the
/// storm completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_holding_stream_is_backpressure_not_loss() {
    let w = require!(ptrace_watcher());
    let storm = "for p in 1 2; do (i=0; while [ $i -lt 10000 ]; do (exit 0) & i=$((i+1)); done; wait) & done; wait";
    let mut started = w
        .spawn(sh(storm), Interest::ALL | Interest::HOLD)
        .expect("spawn");
    let mut seen = Vec::new();
    while seen.len() < 200 {
        seen.push(next(&mut started.events, DEADLINE).await.expect("events"));
    }
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            })
            .unwrap_or(0)
    };
    let me = std::process::id();
    let before = rss(me);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = rss(me);
    let stopped = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            state_and_tracer(Pid::from_raw(p as i32).unwrap()).is_some_and(|(s, _)| s == 't')
        })
        .count();
    eprintln!("after a 1 s stall: RSS {before} -> {during} kB, {stopped} processes held");
    assert!(
        during < before + 64 * 1024,
        "memory grew by {} kB in a 1 s stall",
        during - before
    );
    seen.extend(collect(&mut started.events, Duration::from_secs(300)).await);
    check_order_with_reuse(&seen);
    assert!(!seen.iter().any(|e| matches!(e, ProcEvent::Lost { .. })));
    let (children, exits) = children_and_exits(&seen);
    // 2 loop shells, 20,000 subshells; each loop shell's `$((...))` runs in-process.
    assert_eq!((children, exits), (20_002, 20_003));
    assert!(wait_child(&mut started.child, "the storm").await.success());
}

/// Dropping a holding stream in the middle of a storm: every held process runs on, nothing is
/// left stopped or traced, and the storm ends normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_holding_stream_mid_storm_leaves_nothing_stopped() {
    let w = require!(ptrace_watcher());
    let fds = fd_count();
    let mut started = w
        .spawn(
            sh("for i in $(seq 2000); do (exit 0) & done; wait"),
            Interest::ALL | Interest::HOLD,
        )
        .expect("spawn");
    let root = started.pid();
    for _ in 0..300 {
        next(&mut started.events, DEADLINE).await.expect("events");
    }
    drop(started.events);
    assert!(wait_child(&mut started.child, "the storm").await.success());
    wait_for(DEADLINE, "nothing traced by the watcher any more", || {
        w.tracked() == 0
    })
    .await;
    let leftovers: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            stat.contains(&format!(") t {} ", root)) || stat.contains(&format!(") Z {} ", root))
        })
        .collect();
    assert!(
        leftovers.is_empty(),
        "left stopped or unreaped: {leftovers:?}"
    );
    drop(w);
    wait_for(DEADLINE, "the watcher's descriptors are closed", || {
        fd_count() <= fds
    })
    .await;
}

/// The Netlink backend cannot hold: a watch asking for it is refused, saying why.
#[tokio::test]
async fn netlink_refuses_hold() {
    let Some(w) = watcher_on(BackendKind::Netlink, |b| b) else {
        return;
    };
    let err = w
        .watch(Pid::this(), Interest::EXIT | Interest::HOLD)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("HOLD"), "{err}");
    assert_eq!(w.tracked(), 0);
}

/// The kernel often reports a new child's first stop before its creator's fork event (it
/// lists a new tracee ahead of its creator). Seen here for real, by the tracer's own count:
/// such children are held until their creation is reported, so the stream still has every
/// `Child` before anything else about it, and every new child's first stop is accounted for,
/// before or after its creation. Once without `HOLD`, read as it comes; once with `HOLD`.
#[cfg(feature = "bench-support")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_stop_before_the_creators_event_is_held_until_then() {
    use procwatch::bench_support::first_stops;
    const FORKS: usize = 300;
    let script = format!("for i in $(seq {FORKS}); do (exit 0) & done; wait");
    for interest in [Interest::ALL, Interest::ALL | Interest::HOLD] {
        let w = require!(ptrace_watcher());
        let mut storms = 0;
        let (before, after) = loop {
            let mut started = w.spawn(sh(&script), interest).expect("spawn");
            let evs = collect(&mut started.events, DEADLINE).await;
            assert!(wait_child(&mut started.child, "the storm").await.success());
            storms += 1;
            check_order(&evs);
            // The subshells, and the one `$(seq …)` runs in; each exits, and so does the root.
            assert_eq!(
                children_and_exits(&evs),
                (FORKS + 1, FORKS + 2),
                "{interest:?}"
            );
            let (before, after) = first_stops(&w).expect("the tracer counts first stops");
            assert_eq!(
                before + after,
                (storms * (FORKS + 1)) as u64,
                "{interest:?}: every new child's first stop, before or after its creation"
            );
            if before > 0 || storms == 5 {
                break (before, after);
            }
        };
        eprintln!(
            "{interest:?}: {storms} storms; first stops before the creator's event: {before}, \
             after: {after}"
        );
        assert!(
            before > 0,
            "{interest:?}: no first stop came before its creator's event in {storms} storms"
        );
    }
}

/// The tracer's doorbell (`procwatch-bell`, the helper that wakes it for requests) killed by
/// someone: the tracer starts a new one, and requests still get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_doorbell_is_replaced() {
    let w = require!(ptrace_watcher());
    let child_named = |parent: i32, name: &str| {
        children_of(parent)
            .into_iter()
            .find(|(_, _, n)| n == name)
            .map(|(pid, _, _)| pid.as_raw())
    };
    let bell = || {
        let tracer = child_named(std::process::id() as i32, "procwatch-trace")?;
        child_named(tracer, "procwatch-bell")
    };
    let first = bell().expect("the doorbell runs");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(first).unwrap(),
        rustix::process::Signal::KILL,
    )
    .expect("kill the doorbell");
    let mut replaced = None;
    wait_for(DEADLINE, "a new doorbell", || {
        replaced = bell().filter(|&b| b != first);
        replaced.is_some()
    })
    .await;
    // Requests still reach the tracer: a spawn is an attach, answered.
    let mut started = w.spawn(sh("exit 3"), Interest::ALL).expect("spawn");
    let evs = collect(&mut started.events, DEADLINE).await;
    assert_eq!(
        wait_child(&mut started.child, "sh").await.code(),
        Some(3),
        "{evs:?}"
    );
    assert!(
        evs.iter().any(|e| matches!(e, ProcEvent::Exit { .. })),
        "{evs:?}"
    );
}

const SUBREAPER_HELPER_ENV: &str = "PROCWATCH_PTRACE_SUBREAPER_HELPER";

/// Not a test on its own: run again by [`a_dropped_watcher_leaves_a_subreaper_nothing`], in a
/// process of its own that is a child subreaper.
#[test]
fn subreaper_helper() {
    if std::env::var(SUBREAPER_HELPER_ENV).is_err() {
        return;
    }
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let w = ptrace_watcher().expect("a Ptrace watcher");
        let mut started = w.spawn(sh("exit 0"), Interest::ALL).expect("spawn");
        let _ = collect(&mut started.events, DEADLINE).await;
        assert!(wait_child(&mut started.child, "sh").await.success());
        drop(started);
        drop(w);
    });
    // The tracer is reaped by the watcher's thread, and the tracer reaps its doorbell: no
    // child is left for this subreaper, dead or alive.
    std::thread::sleep(Duration::from_millis(300));
    let left = children_of_this_process();
    println!("RESULT=children left: {left:?}");
}

/// A program that is a child subreaper (an init, a supervisor) and drops a Ptrace watcher
/// inherits nothing from it: no tracer and no doorbell, as zombies or alive.
#[tokio::test]
async fn a_dropped_watcher_leaves_a_subreaper_nothing() {
    let exe = std::env::current_exe().unwrap();
    let out = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "subreaper_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SUBREAPER_HELPER_ENV, "1")
        .output();
    let out = tokio::time::timeout(DEADLINE, out)
        .await
        .expect("the helper within the deadline")
        .expect("run the helper");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("RESULT=children left: []"), "{text}");
}
