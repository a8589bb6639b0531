//! `ProcWatcher::spawn`: a command started already watched, with tokio's usual `Child`.

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
    stdin.write_all(b"hello\n").await.unwrap();
    drop(stdin);
    let mut out = String::new();
    started
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    let mut err = String::new();
    started
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
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
        started.child.wait().await.unwrap();
    }
}

#[tokio::test]
async fn a_missing_program_is_an_error_and_leaves_nothing_behind() {
    let w = require!(watcher());
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
    for kind in [BackendKind::Ptrace, BackendKind::Pidfd, BackendKind::Kqueue] {
        let err = ProcWatcher::builder().backend(kind).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{kind}: {err}");
        assert_eq!(err.backend(), Some(kind));
    }
    let err = ProcWatcher::builder().max_tracked(0).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let w = require!(watcher());
    assert_eq!(w.backend(), BackendKind::Netlink);
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
        "closed_stdio_helper",
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
    let _ = require!(watcher());
    let w = ProcWatcher::builder()
        .listen_timeout(std::time::Duration::MAX)
        .build()
        .unwrap();
    assert_eq!(w.backend(), procwatch::BackendKind::Netlink);
}
