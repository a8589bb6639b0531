//! The netlink backend run by an ordinary user, where the kernel allows it (newer kernels let
//! any user of the initial namespaces subscribe to the proc connector; older ones refuse with
//! `EPERM`, which must come back as `PermissionDenied` with a hint, not as silence).
//!
//! The test re-executes itself as `nobody` with every capability dropped (`setpriv`); where
//! the kernel refuses that user, it checks the refusal's hint and runs the rest again as
//! `nobody` with `CAP_NET_ADMIN` alone. The helper reports what it saw:
//! * its own processes are tracked with `TRACK` and their exit codes come through;
//! * a zombie of another user (root's, made here) watched with `EXIT` gets its `Exit` at once,
//!   but with status `None`: the kernel shows such a zombie's status only to readers with
//!   ptrace access, and prints `0` to everyone else, which must not pass for "exited with 0".

mod support;

use futures::StreamExt;
use procwatch::{ErrorKind, Interest, Pid, ProcEvent, ProcWatcher};
use std::collections::HashMap;
use std::time::Duration;
use support::*;

const HELPER_ENV: &str = "PROCWATCH_UNPRIVILEGED_HELPER";

/// Not a test on its own: run as `nobody` by the test below (with `HELPER_ENV` set to the pid
/// of root's zombie), it prints one `RESULT=` line.
#[tokio::test]
async fn helper() {
    let Some(zombie) = std::env::var(HELPER_ENV).ok() else {
        return;
    };
    println!("RESULT={}", unprivileged_run(&zombie).await);
}

async fn unprivileged_run(zombie: &str) -> String {
    let zombie = match zombie.parse().ok().and_then(Pid::from_raw) {
        Some(p) => p,
        None => return format!("bad zombie pid {zombie:?}"),
    };
    let w = match ProcWatcher::builder()
        .backend(procwatch::BackendKind::Netlink)
        .build()
    {
        Ok(w) => w,
        Err(e) if e.kind() == ErrorKind::PermissionDenied => return format!("denied {e}"),
        Err(e) => return format!("error {:?} {e}", e.kind()),
    };

    // Another user's zombie: `Exit` at once, status unknown to us.
    let zombie_exit = match w.watch(zombie, Interest::EXIT) {
        Ok(mut events) => match tokio::time::timeout(DEADLINE, events.next()).await {
            Ok(Some(ProcEvent::Exit { pid, status, .. })) if pid == zombie => {
                format!("zombie-status={status:?}")
            }
            other => format!("zombie-event={other:?}"),
        },
        Err(e) => format!("zombie-watch-error={e}"),
    };

    // Our own tree: the root exits 7 after its child exited 5.
    let mut started = match w.spawn(sh("(exit 5) & wait; exit 7"), Interest::ALL) {
        Ok(s) => s,
        Err(e) => return format!("{zombie_exit} spawn-error={e}"),
    };
    let root = started.pid();
    let events =
        match tokio::time::timeout(DEADLINE, started.events.by_ref().collect::<Vec<_>>()).await {
            Ok(evs) => evs,
            Err(_) => return format!("{zombie_exit} tree-timeout"),
        };
    let _ = tokio::time::timeout(DEADLINE, started.child.wait()).await;
    let mut codes: HashMap<String, Option<i32>> = HashMap::new();
    let mut children = 0;
    for ev in &events {
        match ev {
            ProcEvent::Child { parent, .. } if *parent == root => children += 1,
            ProcEvent::Exit { pid, .. } => {
                let who = if *pid == root { "root" } else { "child" };
                codes.insert(who.into(), exit_code(ev));
            }
            _ => {}
        }
    }
    format!(
        "{zombie_exit} children={children} root-code={:?} child-code={:?}",
        codes.get("root").copied().flatten(),
        codes.get("child").copied().flatten()
    )
}

#[tokio::test]
async fn an_ordinary_user_tracks_its_own_tree_and_sees_no_fake_statuses() {
    let _host = require!(netlink_watcher());
    if !rustix::process::geteuid().is_root() {
        assert!(!in_ci(), "CI runs the tests as root");
        eprintln!("SKIPPED: needs root to re-run itself as another user");
        return;
    }
    let probe = tokio::time::timeout(DEADLINE, as_nobody(&["true"]).status()).await;
    if !matches!(&probe, Ok(Ok(s)) if s.success()) {
        let why = format!("cannot run a command as nobody with setpriv: {probe:?}");
        assert!(!in_ci(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    }

    // Root's zombie, exit code 3: reaped only at the end of the test.
    let mut zombie = std::process::Command::new("sh")
        .args(["-c", "exit 3"])
        .spawn()
        .expect("start the zombie-to-be");
    let zpid = Pid::from_raw(zombie.id() as i32).unwrap();
    assert!(
        eventually(DEADLINE, || exited_unreaped(zpid)).await,
        "{zpid} did not exit"
    );

    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().expect("a UTF-8 test binary path");
    let args = [exe, "--exact", "helper", "--nocapture", "--test-threads=1"];
    let mut helper = as_nobody(&args);
    helper.env(HELPER_ENV, zpid.to_string());
    let mut result = helper_result(helper, DEADLINE + Duration::from_secs(10)).await;
    eprintln!("as nobody: {result}");
    if let Some(err) = result.strip_prefix("denied ") {
        // A kernel that lets only root or CAP_NET_ADMIN subscribe: the refusal must say what
        // is missing. The rest is then checked as nobody with that one capability, which
        // gives no access to another user's zombie.
        assert!(
            err.contains("CAP_NET_ADMIN"),
            "a refusal must say what is missing: {err}"
        );
        let setpriv = setpriv_nobody(Some("net_admin"));
        let mut helper = tokio::process::Command::new(&setpriv[0]);
        helper
            .args(&setpriv[1..])
            .args(args)
            .env(HELPER_ENV, zpid.to_string())
            .kill_on_drop(true);
        result = helper_result(helper, DEADLINE + Duration::from_secs(10)).await;
        eprintln!("as nobody with CAP_NET_ADMIN: {result}");
    }
    let status = zombie.wait().expect("reap the zombie");
    assert_eq!(status.code(), Some(3));
    assert_eq!(
        result,
        "zombie-status=None children=1 root-code=Some(7) child-code=Some(5)"
    );
}
