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
