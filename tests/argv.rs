//! `Interest::ARGV`: an `Exec` carries the command line the backend read right after the
//! exec, exactly as the program got it (spaces, newlines, bytes that are not UTF-8), and only
//! on streams that ask for it. The Ptrace backend reads it while the process is stopped at
//! its exec, so every exec has it; the Netlink backend reads it on its drain path, so a
//! process still alive then has it, and one that is gone may not (measured and printed here,
//! not asserted). `ptrace_argv.rs` runs this file against the Ptrace backend.

#[macro_use]
mod support;

use procwatch::{Argv, BackendKind, Interest, Pid, ProcEvent, ProcWatcher};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::time::Duration;
use support::{backend_under_test, collect, next, sh, watcher, within, DEADLINE};
use tokio::io::AsyncWriteExt;

const WITH_ARGV: Interest = Interest::ALL.union(Interest::ARGV);

fn os(bytes: &[u8]) -> OsString {
    OsStr::from_bytes(bytes).to_os_string()
}

/// Every `Exec` of the trace: pid and command line.
fn execs(events: &[ProcEvent]) -> Vec<(Pid, Option<Argv>)> {
    events
        .iter()
        .filter_map(|e| match e {
            ProcEvent::Exec { pid, argv, .. } => Some((*pid, argv.clone())),
            _ => None,
        })
        .collect()
}

fn args(argv: &Option<Argv>) -> Option<Vec<OsString>> {
    argv.as_ref().map(|a| a.to_vec())
}

/// The awkward arguments every test passes: a space, a newline, a quote, bytes that are not
/// UTF-8, and an empty one.
fn awkward() -> Vec<OsString> {
    vec![
        os(b"two words"),
        os(b"line\nbreak"),
        os(b"it's"),
        os(b"\xff\xfe latin-1 \xe9"),
        os(b""),
    ]
}

/// A process still alive when its exec is reported has its exact command line on both
/// backends; the stream's own child status comes through, and so does a `tokio` child's
/// beside it.
#[tokio::test]
async fn a_live_process_has_its_exact_argv() {
    let w = require!(watcher());
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg("read x; exit 3")
        .arg("sh")
        .args(awkward());
    cmd.stdin(Stdio::piped()).kill_on_drop(true);
    let mut started = w.spawn(cmd, WITH_ARGV).expect("spawn");
    let pid = started.pid();
    let first = next(&mut started.events, DEADLINE).await;
    let mut expected = vec![os(b"sh"), os(b"-c"), os(b"read x; exit 3"), os(b"sh")];
    expected.extend(awkward());
    match &first {
        Some(ProcEvent::Exec { pid: p, argv, .. }) if *p == pid => {
            assert_eq!(args(argv), Some(expected), "{first:?}");
            let argv = argv.as_ref().unwrap();
            assert!(!argv.is_truncated());
            assert_eq!(argv.len(), 9);
            assert_eq!(argv.program(), Some(OsStr::new("sh")));
        }
        other => panic!("expected the exec of {pid} first, got {other:?}"),
    }
    // A tokio child beside the watched one keeps its own status.
    let mut beside = tokio::process::Command::new("sh");
    beside.args(["-c", "exit 5"]).kill_on_drop(true);
    let mut beside = beside.spawn().expect("spawn a child beside");
    let mut stdin = started.child.stdin.take().unwrap();
    within(DEADLINE, "write to the script", stdin.write_all(b"go\n"))
        .await
        .unwrap();
    let rest = collect(&mut started.events, DEADLINE).await;
    let status = within(DEADLINE, "the watched child", started.child.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(3));
    let status = within(DEADLINE, "the child beside", beside.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(5));
    assert!(
        rest.iter()
            .any(|e| matches!(e, ProcEvent::Exit { pid: p, status: Some(s), .. } if *p == pid && s.code() == Some(3))),
        "{rest:?}"
    );
}

/// Without `Interest::ARGV`, `argv` is `None`, even while another stream on the same pid asks
/// for it (and that one has it).
#[tokio::test]
async fn without_argv_interest_there_is_none() {
    let w = require!(watcher());
    let mut cmd = sh("read x; /bin/true plain; exit 0");
    cmd.stdin(Stdio::piped());
    let mut started = w.spawn(cmd, Interest::ALL).expect("spawn");
    let pid = started.pid();
    // The script's own exec comes first, and the second stream begins after it: `spawn`
    // returns before the program is executed, so a watch made at once may see it too.
    let first = next(&mut started.events, DEADLINE).await;
    assert!(matches!(first, Some(ProcEvent::Exec { .. })), "{first:?}");
    let mut other = w.watch(pid, WITH_ARGV).expect("second watch");
    let mut stdin = started.child.stdin.take().unwrap();
    within(DEADLINE, "write to the script", stdin.write_all(b"go\n"))
        .await
        .unwrap();
    let mut plain: Vec<ProcEvent> = first.into_iter().collect();
    plain.extend(collect(&mut started.events, DEADLINE).await);
    let asked = collect(&mut other, DEADLINE).await;
    within(DEADLINE, "the watched child", started.child.wait())
        .await
        .unwrap();
    let plain_execs = execs(&plain);
    assert!(plain_execs.len() >= 2, "{plain:?}");
    assert!(plain_execs.iter().all(|(_, a)| a.is_none()), "{plain:?}");
    // The second stream began after the script's own exec: it sees /bin/true's alone.
    let asked_execs = execs(&asked);
    assert_eq!(asked_execs.len(), 1, "{asked:?}");
    if backend_under_test() == BackendKind::Ptrace {
        let want = vec![os(b"/bin/true"), os(b"plain")];
        assert_eq!(args(&asked_execs[0].1), Some(want), "{asked:?}");
    }
}

/// Programs that exit as soon as they start, in a pipeline and a loop: with Ptrace every exec
/// has its exact command line; with Netlink, those that have one have the right one (the
/// share is printed).
#[tokio::test]
async fn programs_that_exit_at_once() {
    let w = require!(watcher());
    let n = 200;
    let script = format!(
        "echo x | /usr/bin/tr x y | /usr/bin/wc -c >/dev/null; \
         for i in $(seq {n}); do /bin/true \"$i\" 'a  b'; done; exit 0"
    );
    let mut started = w.spawn(sh(&script), WITH_ARGV).expect("spawn");
    let events = collect(&mut started.events, DEADLINE).await;
    let status = within(DEADLINE, "the watched child", started.child.wait())
        .await
        .unwrap();
    assert!(status.success());
    let all = execs(&events);
    let mut trues = 0;
    let mut with_argv = 0;
    let mut pipeline = Vec::new();
    for (pid, argv) in &all {
        let Some(a) = args(argv) else { continue };
        with_argv += 1;
        match a[0].as_bytes() {
            b"/bin/true" => {
                let i: u32 = a[1].to_str().unwrap().parse().unwrap();
                assert!((1..=n).contains(&i), "{pid}: {a:?}");
                assert_eq!(a[2], os(b"a  b"), "{pid}: {a:?}");
                assert_eq!(a.len(), 3, "{pid}: {a:?}");
                trues += 1;
            }
            b"/usr/bin/tr" => pipeline.push(a),
            b"/usr/bin/wc" => pipeline.push(a),
            b"sh" => assert_eq!(a[1], os(b"-c"), "{pid}: {a:?}"),
            b"seq" => assert_eq!(a, vec![os(b"seq"), os(n.to_string().as_bytes())]),
            _ => panic!("{pid}: an unexpected command line {a:?}"),
        }
    }
    eprintln!(
        "{} backend: {with_argv} of {} execs with argv ({trues} of {n} /bin/true)",
        backend_under_test(),
        all.len()
    );
    // 1 sh, 2 in the pipeline, 1 seq, n in the loop.
    assert_eq!(all.len(), n as usize + 4, "{all:?}");
    if backend_under_test() == BackendKind::Ptrace {
        assert_eq!(with_argv, all.len(), "{all:?}");
        assert_eq!(trues, n);
        pipeline.sort();
        assert_eq!(
            pipeline,
            vec![
                vec![os(b"/usr/bin/tr"), os(b"x"), os(b"y")],
                vec![os(b"/usr/bin/wc"), os(b"-c")],
            ]
        );
    }
}

/// `ARGV` added with `set_interest` applies to the execs after the call.
#[tokio::test]
async fn argv_added_later() {
    let w = require!(watcher());
    let mut cmd = sh("read x; sh -c 'read y' inner \"late arg\"; exit 0");
    cmd.stdin(Stdio::piped());
    let mut started = w.spawn(cmd, Interest::ALL).expect("spawn");
    let first = next(&mut started.events, DEADLINE).await;
    assert!(
        matches!(&first, Some(ProcEvent::Exec { argv: None, .. })),
        "{first:?}"
    );
    started.events.set_interest(WITH_ARGV);
    let mut stdin = started.child.stdin.take().unwrap();
    within(DEADLINE, "write to the script", stdin.write_all(b"go\n"))
        .await
        .unwrap();
    // The inner sh is alive (in `read`) when its exec is reported: both backends have it.
    let inner = loop {
        match next(&mut started.events, DEADLINE).await {
            Some(ProcEvent::Exec { argv, .. }) => break argv,
            Some(_) => continue,
            None => panic!("the stream ended before the inner exec"),
        }
    };
    let want = ["sh", "-c", "read y", "inner", "late arg"].map(OsString::from);
    assert_eq!(args(&inner), Some(want.to_vec()));
    within(DEADLINE, "write to the inner sh", stdin.write_all(b"go\n"))
        .await
        .unwrap();
    collect(&mut started.events, DEADLINE).await;
    within(DEADLINE, "the watched child", started.child.wait())
        .await
        .unwrap();
}

/// A command line longer than `Argv::MAX_BYTES` is cut there, and says so.
#[tokio::test]
async fn a_long_command_line_is_cut() {
    let w = require!(watcher());
    let long = "z".repeat(40_000);
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg("read x").arg("sh").arg(&long).arg(&long);
    cmd.stdin(Stdio::piped()).kill_on_drop(true);
    let mut started = w.spawn(cmd, WITH_ARGV).expect("spawn");
    let first = next(&mut started.events, DEADLINE).await;
    let Some(ProcEvent::Exec {
        argv: Some(argv), ..
    }) = &first
    else {
        panic!("expected an exec with its argv, got {first:?}");
    };
    assert!(argv.is_truncated());
    assert_eq!(argv.as_bytes().len(), Argv::MAX_BYTES);
    assert_eq!(argv.get(4).map(|a| a.len()), Some(40_000));
    assert!(argv.to_string().ends_with(" ..."));
    drop(started.child.stdin.take());
    collect(&mut started.events, DEADLINE).await;
    within(DEADLINE, "the watched child", started.child.wait())
        .await
        .unwrap();
}

/// The watcher stays usable for streams without ARGV after every ARGV stream is gone.
#[tokio::test]
async fn argv_streams_come_and_go() {
    let w: ProcWatcher = require!(watcher());
    for round in 0..3 {
        let interest = if round % 2 == 0 {
            WITH_ARGV
        } else {
            Interest::ALL
        };
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "read x", "sh", &format!("round {round}")]);
        cmd.stdin(Stdio::piped()).kill_on_drop(true);
        let mut started = w.spawn(cmd, interest).expect("spawn");
        let first = next(&mut started.events, DEADLINE).await;
        let Some(ProcEvent::Exec { argv, .. }) = &first else {
            panic!("{first:?}");
        };
        assert_eq!(argv.is_some(), round % 2 == 0, "{first:?}");
        drop(started.child.stdin.take());
        collect(&mut started.events, DEADLINE).await;
        within(DEADLINE, "the watched child", started.child.wait())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
