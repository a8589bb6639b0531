//! The proc connector ignores a subscription from outside the initial user and pid
//! namespaces without any error. The watcher must say `Unsupported` after a short wait,
//! never hand out streams that stay silent forever.

mod support;

use std::time::Duration;
use support::*;

const HELPER_ENV: &str = "PROCWATCH_NS_HELPER";

/// Not a test on its own: when re-executed inside the new namespaces (with `HELPER_ENV`
/// set), it tries to build a watcher there and prints what happened.
#[test]
fn helper() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let result = procwatch::ProcWatcher::builder()
        .backend(procwatch::BackendKind::Netlink)
        .netlink(procwatch::NetlinkOptions::new().listen_timeout(Duration::from_millis(500)))
        .build();
    match result {
        Ok(_) => println!("RESULT=built"),
        Err(e) => println!("RESULT={:?} {e}", e.kind()),
    }
}

#[tokio::test]
async fn subscription_from_a_user_namespace_is_unsupported_not_silent() {
    let _host = require!(netlink_watcher()); // the connector works outside a namespace
    let probe = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--pid", "--fork", "true"])
            .kill_on_drop(true)
            .status(),
    )
    .await
    .expect("the unshare probe hung");
    if !matches!(&probe, Ok(s) if s.success()) {
        let why = format!("cannot create user and pid namespaces here: {probe:?}");
        assert!(!in_ci(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "--pid", "--fork"])
        .arg(exe)
        .args(["--exact", "helper", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, "1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("the helper hung: a silent subscription was not detected")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT=").map(|(_, r)| r))
        .unwrap_or_else(|| {
            panic!(
                "no result from the helper: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(line.starts_with("Unsupported"), "{line}");
    assert!(
        line.contains("namespaces"),
        "the error should say why: {line}"
    );
}
