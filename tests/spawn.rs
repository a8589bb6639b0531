//! `ProcWatcher::spawn`: a command started already watched, with tokio's usual `Child`.

#[macro_use]
mod support;

use procwatch::{ErrorKind, Interest, ProcEvent, ProcWatcher};
use std::process::Stdio;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn stdio_pipes_and_async_status_work_and_leave_no_zombie() {
    let w = require!(watcher());
    let mut cmd = sh("read line; echo \"got $line\"; echo oops >&2; exit 6");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut started = w.spawn(cmd, Interest::ALL).unwrap();
    let pid = started.pid();
    let mut stdin = started.child.stdin.take().unwrap();
    within(
        DEADLINE,
        "write the child's stdin",
        stdin.write_all(b"hello\n"),
    )
    .await
    .unwrap();
    drop(stdin);
    let mut stdout = started.child.stdout.take().unwrap();
    let mut stderr = started.child.stderr.take().unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    // Both at once: a child blocked on a full pipe that nobody reads would never exit.
    let (o, e) = within(
        DEADLINE,
        "read the child's stdout and stderr to the end",
        async {
            tokio::join!(
                stdout.read_to_string(&mut out),
                stderr.read_to_string(&mut err)
            )
        },
    )
    .await;
    o.unwrap();
    e.unwrap();
    assert_eq!(out, "got hello\n");
    assert_eq!(err, "oops\n");
    let status = tokio::time::timeout(DEADLINE, started.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(6));
    let events = collect(&mut started.events, DEADLINE).await;
    // The first thing the watched process does is exec the command; its exit is last.
    assert!(
        matches!(events.first(), Some(ProcEvent::Exec { pid: p, .. }) if *p == pid),
        "{events:?}"
    );
    match events.last() {
        Some(ProcEvent::Exit {
            pid: p,
            status: Some(s),
            ..
        }) => {
            assert_eq!(*p, pid);
            assert_eq!(s.code(), Some(6));
        }
        other => panic!("last event is not the exit: {other:?}"),
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "{pid} is left as a zombie"
    );
}

#[tokio::test]
async fn a_program_that_forks_at_once_misses_nothing() {
    let w = require!(watcher());
    // The very first instruction after exec forks; nothing may be missed however fast.
    for _ in 0..50 {
        let mut started = spawn_sh(&w, "true & true & wait", Interest::ALL);
        let events = collect(&mut started.events, DEADLINE).await;
        check_order(&events);
        let childs = events
            .iter()
            .filter(|e| matches!(e, ProcEvent::Child { .. }))
            .count();
        assert_eq!(childs, 2, "{events:?}");
        let status = within(DEADLINE, "wait for sh", started.child.wait())
            .await
            .unwrap();
        assert!(status.success(), "sh: {status}");
    }
}

#[tokio::test]
async fn a_missing_program_is_an_error_and_leaves_nothing_behind() {
    let w = require!(watcher());
    // A first spawn sets up what lives as long as the program (tokio's signal pipe, for
    // the `SIGCHLD` that the orphan table listens to): not a leak of the failed spawn.
    let mut warm = spawn_sh(&w, "exit 0", Interest::EXIT);
    let _ = collect(&mut warm.events, DEADLINE).await;
    within(DEADLINE, "wait for sh", warm.child.wait())
        .await
        .expect("wait");
    drop(warm);
    let before = fd_count();
    let cmd = tokio::process::Command::new("/nonexistent/program");
    let err = w.spawn(cmd, Interest::ALL).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other, "{err}");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    assert!(err.to_string().contains("spawn"), "{err}");
    assert_eq!(w.tracked(), 0, "the aborted child's watch was not released");
    assert!(
        eventually(DEADLINE, || fd_count() <= before).await,
        "fds leaked"
    );
}

#[test]
fn spawn_outside_a_runtime_is_a_clear_error() {
    let Some(w) = watcher() else { return };
    let err = w
        .spawn(tokio::process::Command::new("true"), Interest::EXIT)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

#[tokio::test]
async fn builder_refuses_backends_it_does_not_have() {
    use procwatch::BackendKind;
    for kind in [BackendKind::Pidfd, BackendKind::Kqueue] {
        let err = ProcWatcher::builder().backend(kind).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{kind}: {err}");
        assert_eq!(err.backend(), Some(kind));
    }
    let err = ProcWatcher::builder().max_tracked(0).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let w = require!(watcher());
    assert_eq!(w.backend(), backend_under_test());
    // Auto picks Netlink where the proc connector answers (root, here), Ptrace where it
    // refuses (a user namespace).
    let netlink = ProcWatcher::builder().backend(BackendKind::Netlink).build();
    let auto = ProcWatcher::new().expect("Auto");
    match netlink {
        Ok(_) => assert_eq!(auto.backend(), BackendKind::Netlink),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
            assert_eq!(auto.backend(), BackendKind::Ptrace);
        }
    }
}

const STDIO_HELPER_ENV: &str = "PROCWATCH_CLOSED_STDIO_HELPER";

/// Not a test on its own: re-executed with `STDIO_HELPER_ENV` set, it closes its own stdin
/// and stdout (as many daemons run) and then spawns a watched child with piped stdout.
#[test]
fn closed_stdio_helper() {
    if std::env::var_os(STDIO_HELPER_ENV).is_none() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(async {
        let w = ProcWatcher::new().map_err(|e| e.to_string())?;
        // Closed only now, so that the next descriptors opened (by `spawn`) take 0 and 1.
        // SAFETY: nothing in this process uses fds 0 and 1 from here on; the result goes to
        // stderr.
        unsafe {
            libc::close(0);
            libc::close(1);
        }
        let mut cmd = sh("read x || true; echo hi");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let started = tokio::time::timeout(DEADLINE, async { w.spawn(cmd, Interest::ALL) })
            .await
            .map_err(|_| "spawn hung".to_string())?
            .map_err(|e| e.to_string())?;
        let mut events = started.events;
        let out = tokio::time::timeout(DEADLINE, started.child.wait_with_output())
            .await
            .map_err(|_| "wait hung".to_string())?
            .map_err(|e| e.to_string())?;
        let evs = collect(&mut events, DEADLINE).await;
        let execs = evs
            .iter()
            .filter(|e| matches!(e, ProcEvent::Exec { .. }))
            .count();
        Ok::<_, String>((String::from_utf8_lossy(&out.stdout).into_owned(), execs))
    });
    match result {
        Ok((out, execs)) => eprintln!("RESULT=ok stdout={out:?} execs={execs}"),
        Err(e) => eprintln!("RESULT=err {e}"),
    }
}

#[tokio::test]
async fn spawn_works_when_the_callers_stdin_and_stdout_are_closed() {
    let _w = require!(watcher());
    let exe = std::env::current_exe().unwrap();
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args([
        "--exact",
        &test_name!("closed_stdio_helper"),
        "--nocapture",
        "--test-threads=1",
    ])
    .env(STDIO_HELPER_ENV, "1")
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("the helper hung")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find_map(|l| l.split_once("RESULT=").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no result from the helper: {err}"));
    assert_eq!(line, "ok stdout=\"hi\\n\" execs=1", "{err}");
}

#[tokio::test]
async fn watching_a_thread_id_is_no_such_process() {
    let w = require!(watcher());
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        tx.send(rustix::thread::gettid().as_raw_nonzero().get())
            .unwrap();
        let _ = stop_rx.recv();
    });
    let tid = procwatch::Pid::from_raw(rx.recv().unwrap()).unwrap();
    let err = w.watch(tid, Interest::ALL).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSuchProcess, "{err}");
    stop_tx.send(()).unwrap();
    t.join().unwrap();
}

#[tokio::test]
async fn an_unbounded_listen_timeout_is_fine() {
    let _ = require!(netlink_watcher());
    let w = ProcWatcher::builder()
        .netlink(procwatch::NetlinkOptions::new().listen_timeout(std::time::Duration::MAX))
        .build()
        .unwrap();
    assert_eq!(w.backend(), procwatch::BackendKind::Netlink);
}

// ---- Dropping a `WatchedChild` without waiting for it ----
//
// `WatchedChild::child` is a plain `tokio::process::Child` and keeps tokio's drop behaviour
// (see the caveats of `WatchedChild`): without `kill_on_drop` the process runs on; with it, it
// gets SIGKILL. Either way tokio reaps it: at once in the drop if it has already exited,
// otherwise in the background (its orphan queue, drained on SIGCHLD while the runtime runs).
// No zombie of a process the crate started is left behind.

/// The state letter of our child `pid`, if it is (still) a child of this process.
fn our_child(pid: procwatch::Pid) -> Option<char> {
    children_of_this_process()
        .into_iter()
        .find_map(|(p, state)| (p == pid).then_some(state))
}

/// Waits until the process that had `pid` and started at `start` is reaped, failing the test
/// with what it is instead.
async fn reaped_in_time(pid: procwatch::Pid, start: u64, what: &str) {
    let reaped = eventually(DEADLINE, || proc_gone(pid, start)).await;
    assert!(
        reaped,
        "{what}: {pid} is not reaped within {DEADLINE:?}: state {:?}, our child: {:?}",
        proc_stat(pid),
        our_child(pid)
    );
    assert_eq!(our_child(pid), None, "{what}: {pid} is still our child");
}

#[tokio::test]
async fn dropping_an_exited_watched_child_reaps_it_in_the_drop() {
    let w = require!(watcher());
    let started = spawn_sh(&w, "exit 3", Interest::ALL);
    let pid = started.pid();
    let (_, start) = proc_stat(pid).expect("our unreaped child is in /proc");
    // Exited, not reaped (WNOWAIT leaves the status for tokio).
    assert!(
        eventually(DEADLINE, || exited_unreaped(pid)).await,
        "sh did not exit: {:?}",
        proc_stat(pid)
    );
    assert_eq!(our_child(pid), Some('Z'));
    drop(started);
    // tokio's drop tries `try_wait` first: a child that has exited is reaped right there.
    assert!(
        proc_gone(pid, start),
        "{pid} is left as a zombie after the drop: {:?}",
        proc_stat(pid)
    );
    assert_eq!(our_child(pid), None);
}

#[tokio::test]
async fn dropping_a_quickly_exiting_watched_child_leaves_no_zombie() {
    let w = require!(watcher());
    for round in 0..20 {
        // Dropped at once: it may still run, be exiting, or be a zombie already.
        let started = spawn_sh(&w, "exit 3", Interest::ALL);
        let pid = started.pid();
        let (_, start) = proc_stat(pid).expect("our unreaped child is in /proc");
        drop(started);
        reaped_in_time(pid, start, &format!("round {round}")).await;
    }
}

#[tokio::test]
async fn dropping_a_running_watched_child_with_kill_on_drop_kills_and_reaps_it() {
    let w = require!(watcher());
    // support::sh sets kill_on_drop(true). The script would wait for its stdin for ever; the
    // stdin is kept open here, so only the kill can end it.
    let mut cmd = sh("read x; exit 0");
    cmd.stdin(Stdio::piped());
    let mut started = w.spawn(cmd, Interest::ALL).expect("spawn");
    let stdin = started.child.stdin.take().unwrap();
    let pid = started.pid();
    let (_, start) = proc_stat(pid).expect("our child is in /proc");
    // Wait until sh runs the script (its exec was seen), so the kill hits sh, not the hold.
    let ev = next(&mut started.events, DEADLINE).await;
    assert!(
        matches!(ev, Some(ProcEvent::Exec { pid: p, .. }) if p == pid),
        "{ev:?}"
    );
    drop(started);
    reaped_in_time(pid, start, "killed on drop").await;
    drop(stdin);
}

#[tokio::test]
async fn dropping_a_running_watched_child_without_kill_on_drop_lets_it_run_then_reaps_it() {
    let w = require!(watcher());
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", "read x; exit 4"]).stdin(Stdio::piped());
    let mut started = w.spawn(cmd, Interest::ALL).expect("spawn");
    let mut stdin = started.child.stdin.take().unwrap();
    let pid = started.pid();
    let (_, start) = proc_stat(pid).expect("our child is in /proc");
    // A second stream, to see its end after the WatchedChild (and its own stream) is gone.
    let mut watch = w.watch(pid, Interest::EXIT).expect("watch the child");
    drop(started);
    // Not killed: it runs on, still our child.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let state = our_child(pid);
    assert!(
        matches!(state, Some(s) if s != 'Z'),
        "{pid} should run on after the drop: {state:?}"
    );
    assert_eq!(watch.try_next(), Ok(None), "no Exit yet");
    // Let it finish: tokio reaps the orphan in the background.
    within(DEADLINE, "release the child", stdin.write_all(b"go\n"))
        .await
        .unwrap();
    let ev = next(&mut watch, DEADLINE).await;
    assert!(
        matches!(&ev, Some(ProcEvent::Exit { pid: p, status: Some(s), .. }) if *p == pid && s.code() == Some(4)),
        "{ev:?}"
    );
    assert_eq!(next(&mut watch, DEADLINE).await, None);
    reaped_in_time(pid, start, "orphaned and exited").await;
}
