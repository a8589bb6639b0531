//! A member this program may not signal — it ran a set-user-ID program that made itself
//! root for good — is reported by `kill` as `PermissionDenied`, and `shutdown` returns with
//! it listed as still running instead of waiting forever.
//!
//! The tree's owner is this test binary run again as `nobody` (with `CAP_NET_ADMIN`, for the
//! proc connector: under Ptrace a traced process's set-user-ID bit is ignored); the member is
//! a set-user-ID root copy of this binary that calls `setresuid(0, 0, 0)`.
#![allow(unsafe_code)]

mod support;

use procwatch::{BackendKind, ErrorKind, ProcWatcher, Signal};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use support::{helper_result, in_ci, setpriv_nobody, DEADLINE};

const ROLE_ENV: &str = "PROCWATCH_EPERM_ROLE";
/// The member's `sleep`, told apart from every other process by its length.
const MARKER: &str = "1000.4711";

/// Not a test on its own: the member. Becomes root for good, then sleeps.
#[test]
fn eperm_member() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("member") {
        return;
    }
    // SAFETY: a plain syscall wrapper; the set-user-ID bit made the effective uid 0.
    let r = unsafe { libc::setresuid(0, 0, 0) };
    assert_eq!(r, 0, "setresuid: {}", std::io::Error::last_os_error());
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new("sleep").arg(MARKER).exec();
    panic!("exec sleep: {e}");
}

/// Not a test on its own: the tree's owner, as `nobody`.
#[test]
fn eperm_owner() {
    if std::env::var(ROLE_ENV).as_deref() != Ok("owner") {
        return;
    }
    let member = std::env::var("PROCWATCH_EPERM_MEMBER").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(async {
        let w = match ProcWatcher::builder().backend(BackendKind::Netlink).build() {
            Ok(w) => w,
            Err(e) => return format!("no netlink watcher: {e}"),
        };
        let script = format!(
            "{member} --exact eperm_member --nocapture --test-threads=1 >/dev/null 2>&1 & wait"
        );
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", &script]).env(ROLE_ENV, "member");
        let mut tree = w.spawn_tree(cmd).expect("spawn_tree");
        let root_owned = |pid: procwatch::Pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("Uid:\t0\t0\t0"))
        };
        let mut target = None;
        let found = support::eventually(DEADLINE, || {
            target = tree.pids().into_iter().find(|&p| root_owned(p));
            target.is_some()
        })
        .await;
        if !found {
            return "the member never became root".into();
        }
        let target = target.unwrap();
        let kill = tree.kill(Signal::TERM).expect("kill");
        let denied: Vec<_> = kill
            .failed
            .iter()
            .filter(|(p, e)| *p == target && e.kind() == ErrorKind::PermissionDenied)
            .collect();
        let shutdown = tokio::time::timeout(DEADLINE, tree.shutdown(Duration::from_millis(200)))
            .await
            .expect("shutdown returned")
            .expect("shutdown");
        let still: Vec<_> = shutdown.still_running().map(|p| p.pid).collect();
        format!(
            "denied={} still_running={} root_status={:?} message_names_pid={}",
            denied.len(),
            still == vec![target],
            shutdown
                .root_status()
                .map(|s| s.code().is_some() || s.signal().is_some()),
            denied
                .first()
                .is_some_and(|(_, e)| e.to_string().contains(&target.to_string()))
        )
    });
    println!("RESULT={result}");
}

use std::os::unix::process::ExitStatusExt;

#[tokio::test]
async fn a_member_that_may_not_be_signalled_is_reported_not_waited_for() {
    if !rustix::process::geteuid().is_root() || std::env::var_os(support::NO_NETLINK_ENV).is_some()
    {
        let why = "needs root to make a set-user-ID copy of the test binary";
        assert!(
            !in_ci() || std::env::var_os(support::NO_NETLINK_ENV).is_some(),
            "{why}"
        );
        eprintln!("SKIPPED: {why}");
        return;
    }
    let dir = std::env::temp_dir().join(format!("procwatch-eperm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let owner = dir.join("owner");
    let member = dir.join("member");
    std::fs::copy(&exe, &owner).unwrap();
    std::fs::copy(&exe, &member).unwrap();
    std::fs::set_permissions(&owner, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&member, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let setpriv = setpriv_nobody(Some("net_admin"));
    let mut cmd = tokio::process::Command::new(&setpriv[0]);
    cmd.args(&setpriv[1..])
        .arg(&owner)
        .args(["--exact", "eperm_owner", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, "owner")
        .env("PROCWATCH_EPERM_MEMBER", &member)
        .current_dir("/")
        .kill_on_drop(true);
    let result = helper_result(cmd, DEADLINE * 2).await;
    // The root-owned `sleep` is this test's to end.
    let _ = std::process::Command::new("pkill")
        .args(["-KILL", "-f", &format!("^sleep {MARKER}$")])
        .status();
    let _ = std::fs::remove_dir_all(&dir);
    if result.starts_with("no netlink watcher") && !in_ci() {
        eprintln!("SKIPPED: {result}");
        return;
    }
    assert_eq!(
        result,
        "denied=1 still_running=true root_status=Some(true) message_names_pid=true"
    );
}
