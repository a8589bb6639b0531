//! `Tree`: kill and shutdown reach every member, escapees included; reused pids are never
//! signalled; statuses are reported; the program's own children keep theirs.
//!
//! Built twice, as the conformance files are: `ptrace_supervise.rs` runs it on the Ptrace
//! backend. Orphans here go to whatever reaps for this test process (it is not a subreaper:
//! `reaper.rs` covers that).

mod support;

use procwatch::{Pid, Signal, Tree};
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};
use support::{proc_stat, within, DEADLINE};

/// Every way out of a process group a shell script has, each marked by its `sleep` length:
/// 1001 child, 1002 grandchild, 1003 `setsid`, 1004 double fork + `setsid` (orphaned),
/// 1005 `nohup`, 1006 a new process group (`set -m`), and a loop that keeps forking
/// short-lived orphans.
const ESCAPES: &str = r#"
sleep 1001 &
sh -c 'sleep 1002 & wait' &
setsid sleep 1003 &
sh -c 'setsid sh -c "sleep 1004 & exit 0" & exit 0' &
nohup sleep 1005 >/dev/null 2>&1 &
bash -c 'set -m; sleep 1006 & wait' &
sh -c 'while :; do (sleep 0.2 &); done' &
wait
"#;

fn cmdline(pid: Pid) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// The escapees' pids and start times, once all six run (by their `sleep` lengths).
async fn escapees(tree: &Tree) -> HashMap<u32, (Pid, u64)> {
    let mut found = HashMap::new();
    let ok = support::eventually(DEADLINE, || {
        for pid in tree.pids() {
            if let Some(n) = cmdline(pid)
                .strip_prefix("sleep 100")
                .and_then(|s| s.parse::<u32>().ok())
            {
                if let Some((_, start)) = proc_stat(pid) {
                    found.insert(1000 + n, (pid, start));
                }
            }
        }
        found.len() == 6
    })
    .await;
    assert!(ok, "the six escapees did not all start: {found:?}");
    found
}

fn alive(pid: Pid, start: u64) -> bool {
    matches!(proc_stat(pid), Some((state, s)) if s == start && state != 'Z')
}

fn field(pid: Pid, n: usize) -> i32 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = &text[text.rfind(')').map_or(0, |i| i + 1)..];
    rest.split_ascii_whitespace()
        .nth(n - 3)
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

/// The escapees really left: own session, own process group, another parent.
fn check_they_escaped(tree: &Tree, found: &HashMap<u32, (Pid, u64)>) {
    let root = tree.pid();
    let (root_pgrp, root_sid) = (field(root, 5), field(root, 6));
    assert_eq!(
        root_pgrp,
        root.as_raw(),
        "the root leads its own process group"
    );
    let setsid = found[&1003].0;
    assert_ne!(field(setsid, 6), root_sid, "sleep 1003 has its own session");
    let double = found[&1004].0;
    assert_ne!(field(double, 6), root_sid, "sleep 1004 has its own session");
    let members: Vec<i32> = tree.pids().iter().map(|p| p.as_raw()).collect();
    assert!(
        !members.contains(&field(double, 4)),
        "sleep 1004 was reparented out of the tree"
    );
    assert_ne!(
        field(found[&1006].0, 5),
        root_pgrp,
        "sleep 1006 has its own group"
    );
}

/// Every member has a status, or a reason for not having one; the only members allowed
/// none are children the kill found in `/proc` before the backend reported them.
fn check_statuses(report: &procwatch::TreeReport) {
    let mut unknown = 0;
    for p in &report.processes {
        if p.status.is_none() {
            assert!(p.unknown.is_some(), "no status and no reason: {p:?}");
            assert!(p.unknown.unwrap().starts_with("found in /proc"), "{p:?}");
            unknown += 1;
        }
    }
    println!(
        "{} members, {unknown} without a status, {} untracked",
        report.processes.len(),
        report.untracked
    );
}

fn tokio_child(code: i32) -> tokio::process::Child {
    tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("sleep 0.3; exit {code}"))
        .spawn()
        .expect("spawn a tokio child")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_reaches_every_escapee_and_reports_each_status() {
    let Some(w) = support::watcher() else { return };
    let mut own = tokio_child(3);
    let mut tree = w.spawn_tree(support::sh(ESCAPES)).expect("spawn_tree");
    let found = escapees(&tree).await;
    check_they_escaped(&tree, &found);
    let report = tree.kill(Signal::KILL).expect("kill");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    for (n, (pid, _)) in &found {
        assert!(
            report.signalled.contains(pid),
            "sleep {n} ({pid}) not signalled"
        );
    }
    let all = within(DEADLINE, "wait_all", tree.wait_all()).await.unwrap();
    for (n, (pid, start)) in &found {
        assert!(!alive(*pid, *start), "sleep {n} ({pid}) survived the kill");
        let end = all.processes.iter().rev().find(|p| p.pid == *pid).unwrap();
        assert_eq!(
            end.status.and_then(|s| s.signal()),
            Some(9),
            "sleep {n}: {end:?}"
        );
    }
    check_statuses(&all);
    // The root is signalled last: its `wait` may have returned (its children dead) first.
    let root = all.root_status().unwrap();
    assert!(
        root.signal() == Some(9) || root.code().is_some(),
        "{root:?}"
    );
    assert!(tree.pids().is_empty());
    let st = within(DEADLINE, "own child", own.wait()).await.unwrap();
    assert_eq!(
        st.code(),
        Some(3),
        "the program's own child kept its status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reaches_every_escapee_within_the_grace_period() {
    let Some(w) = support::watcher() else { return };
    let mut tree = w.spawn_tree(support::sh(ESCAPES)).expect("spawn_tree");
    let found = escapees(&tree).await;
    let report = within(DEADLINE, "shutdown", tree.shutdown(Duration::from_secs(10)))
        .await
        .expect("shutdown");
    assert!(!report.forced, "every member honours SIGTERM: {report:?}");
    assert!(report.elapsed < Duration::from_secs(10));
    for (n, (pid, start)) in &found {
        assert!(
            !alive(*pid, *start),
            "sleep {n} ({pid}) survived the shutdown"
        );
        let end = report
            .processes
            .iter()
            .rev()
            .find(|p| p.pid == *pid)
            .unwrap();
        assert_eq!(
            end.status.and_then(|s| s.signal()),
            Some(15),
            "sleep {n}: {end:?}"
        );
        assert!(!end.forced);
    }
    check_statuses(&report);
    assert!(
        report.processes.len() > 10,
        "the forking loop's children are listed too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_what_ignores_sigterm_after_the_grace_period() {
    let Some(w) = support::watcher() else { return };
    let script = "trap '' TERM; sh -c 'trap \"\" TERM; sleep 1000' & setsid sh -c 'trap \"\" TERM; sleep 1000' & wait; wait";
    let mut tree = w.spawn_tree(support::sh(script)).expect("spawn_tree");
    assert!(support::eventually(DEADLINE, || tree.pids().len() >= 5).await);
    let grace = Duration::from_millis(700);
    let began = Instant::now();
    let report = within(DEADLINE, "shutdown", tree.shutdown(grace))
        .await
        .unwrap();
    assert!(began.elapsed() >= grace);
    assert!(report.forced);
    // Every member ignores SIGTERM (the `sleep`s inherit their shells' ignored TERM), so
    // none took it, and both `sleep`s, which nothing else ends, were killed. Members are
    // signalled newest first: without a cgroup's `cgroup.kill` (one process at a time, as
    // with the Ptrace backend run by an unprivileged user), a shell can see its `sleep`
    // die and exit on its own before its SIGKILL lands, and the root after it.
    let took = |sig: i32| {
        let ends = report.processes.iter();
        ends.filter(move |p| p.status.and_then(|s| s.signal()) == Some(sig))
    };
    assert_eq!(took(15).count(), 0, "{report:?}");
    assert!(took(9).count() >= 2, "{report:?}");
    assert!(took(9).all(|p| p.forced), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_member_still_gets_sigterm() {
    let Some(w) = support::watcher() else { return };
    // The inner shell stops itself; only SIGCONT after SIGTERM lets its trap run.
    let script = "sh -c 'trap \"exit 7\" TERM; kill -STOP $$; sleep 1000' & wait";
    let mut tree = w.spawn_tree(support::sh(script)).expect("spawn_tree");
    let mut inner = None;
    assert!(
        support::eventually(DEADLINE, || {
            inner = tree
                .pids()
                .into_iter()
                .find(|&p| p != tree.pid() && matches!(proc_stat(p), Some(('T' | 't', _))));
            inner.is_some()
        })
        .await
    );
    let report = within(DEADLINE, "shutdown", tree.shutdown(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(!report.forced, "{report:?}");
    let end = report
        .processes
        .iter()
        .find(|p| Some(p.pid) == inner)
        .unwrap();
    assert_eq!(end.status.and_then(|s| s.code()), Some(7), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_forking_in_a_tight_loop_is_gone_after_shutdown() {
    let Some(w) = support::watcher() else { return };
    // Ignores SIGTERM, and forks as fast as it can (each child lives 50 ms).
    let script = "trap '' TERM; while :; do sh -c 'trap \"\" TERM; sleep 0.05' & done";
    let mut tree = w.spawn_tree(support::sh(script)).expect("spawn_tree");
    assert!(support::eventually(DEADLINE, || tree.pids().len() >= 20).await);
    let report = within(
        DEADLINE,
        "shutdown",
        tree.shutdown(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    assert!(report.forced);
    assert!(tree.pids().is_empty(), "{:?}", tree.pids());
    check_statuses(&report);
    // No member is left: nothing in `/proc` has the root as its parent, or a member's.
    let members: std::collections::HashSet<i32> =
        report.processes.iter().map(|p| p.pid.as_raw()).collect();
    for p in &report.processes {
        for (child, state, _) in support::children_of(p.pid.as_raw()) {
            assert!(
                state == 'Z' || !members.contains(&child.as_raw()),
                "{child} of {} still runs",
                p.pid
            );
        }
    }
}

/// Makes the next process forked get `pid`, where this process may write `ns_last_pid`;
/// otherwise forks until the number comes round (at most `pid_max` forks).
fn fork_onto(pid: Pid) -> Option<std::process::Child> {
    for _ in 0..5000 {
        if std::fs::write(
            "/proc/sys/kernel/ns_last_pid",
            (pid.as_raw() - 1).to_string(),
        )
        .is_ok()
        {
            let c = std::process::Command::new("sleep").arg("30").spawn().ok()?;
            if c.id() as i32 == pid.as_raw() {
                return Some(c);
            }
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        } else {
            break;
        }
    }
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    for _ in 0..max + 100 {
        let mut c = std::process::Command::new("sleep").arg("30").spawn().ok()?;
        if c.id() as i32 == pid.as_raw() {
            return Some(c);
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_pid_is_never_signalled() {
    let Some(w) = support::watcher() else { return };
    // A member that exits at once, reaped by its parent, which stays.
    let mut tree = w
        .spawn_tree(support::sh("sh -c 'exit 5'; sleep 1000"))
        .expect("spawn_tree");
    let dead = loop {
        let st = within(DEADLINE, "events", support::next(tree.events(), DEADLINE)).await;
        if let Some(procwatch::ProcEvent::Exit { pid, .. }) = st {
            break pid;
        }
    };
    assert!(
        proc_stat(dead).is_none()
            || support::eventually(DEADLINE, || proc_stat(dead).is_none()).await
    );
    let mut holder = fork_onto(dead).expect("get the dead member's pid again");
    let report = tree.kill(Signal::KILL).unwrap();
    assert!(!report.signalled.contains(&dead), "{report:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        holder.try_wait().unwrap(),
        None,
        "the pid's new holder was signalled"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    let all = within(DEADLINE, "wait_all", tree.wait_all()).await.unwrap();
    let first = all.processes.iter().find(|p| p.pid == dead).unwrap();
    assert_eq!(first.status.and_then(|s| s.code()), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_kill_on_drop_tree_kills_every_member() {
    let Some(w) = support::watcher() else { return };
    let tree = w.spawn_tree(support::sh(ESCAPES)).expect("spawn_tree");
    let found = escapees(&tree).await;
    drop(tree);
    for (n, (pid, start)) in found {
        assert!(
            support::eventually(DEADLINE, || !alive(pid, start)).await,
            "sleep {n} survived the drop"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_plain_tree_kills_nothing() {
    let Some(w) = support::watcher() else { return };
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", "sleep 1000 & exec sleep 1000"]);
    let tree = w.spawn_tree(cmd).expect("spawn_tree");
    assert!(support::eventually(DEADLINE, || tree.pids().len() == 2).await);
    let pids: Vec<(Pid, u64)> = tree
        .pids()
        .into_iter()
        .map(|p| (p, proc_stat(p).unwrap().1))
        .collect();
    drop(tree);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (pid, start) in &pids {
        assert!(alive(*pid, *start), "{pid} was killed by the drop");
    }
    for (pid, _) in pids {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid.as_raw()).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_gets_its_own_cgroup_where_the_program_may_make_one() {
    let Some(w) = support::watcher() else { return };
    let mut tree = w
        .spawn_tree(support::sh("sleep 1000 & setsid sleep 1000 & wait"))
        .expect("spawn_tree");
    let mech = tree.mechanism().clone();
    println!("mechanism: {mech}");
    assert_eq!(mech.backend, support::backend_under_test());
    let may =
        rustix::process::geteuid().is_root() && std::env::var_os(support::NO_NETLINK_ENV).is_none();
    if may {
        let cg = mech
            .cgroup
            .clone()
            .expect("root gets a cgroup for the tree");
        assert!(support::eventually(DEADLINE, || tree.pids().len() == 3).await);
        let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap();
        for pid in tree.pids() {
            assert!(
                procs.lines().any(|l| l == pid.to_string()),
                "{pid} is not in {}",
                cg.display()
            );
        }
        let report = tree.kill(Signal::KILL).unwrap();
        // Unless the pidfd signals killed them all and the cgroup is gone already.
        assert!(report.cgroup || !cg.exists(), "{report:?}");
        within(DEADLINE, "wait_all", tree.wait_all()).await.unwrap();
        assert!(
            support::eventually(DEADLINE, || !cg.exists()).await,
            "the cgroup is removed once the tree is gone"
        );
    } else {
        assert_eq!(mech.cgroup, None);
        tree.kill(Signal::KILL).unwrap();
        within(DEADLINE, "wait_all", tree.wait_all()).await.unwrap();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_a_current_thread_runtime() {
    let Some(w) = support::watcher() else { return };
    let mut tree = w
        .spawn_tree(support::sh(
            "sh -c 'exit 4' & setsid sh -c 'sleep 0.1; exit 6' & wait",
        ))
        .expect("spawn_tree");
    let report = within(DEADLINE, "wait_all", tree.wait_all()).await.unwrap();
    let mut codes: Vec<i32> = report
        .processes
        .iter()
        .filter_map(|p| p.status.and_then(|s| s.code()))
        .collect();
    codes.sort();
    // The root, `sleep 0.1`, and the two inner shells.
    assert_eq!(codes, vec![0, 0, 4, 6], "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_exit_sits_in_a_select_beside_the_events() {
    use futures::StreamExt;
    let Some(w) = support::watcher() else { return };
    let mut tree = w
        .spawn_tree(support::sh("setsid sleep 0.5 & exit 3"))
        .expect("spawn_tree");
    let mut root_exit = tree.root_exit();
    let mut children = 0;
    let status = within(DEADLINE, "root exit", async {
        loop {
            tokio::select! {
                status = &mut root_exit => break status,
                Some(ev) = tree.events().next() => {
                    if matches!(ev, procwatch::ProcEvent::Child { .. }) {
                        children += 1;
                    }
                }
            }
        }
    })
    .await;
    assert_eq!(status.and_then(|s| s.code()), Some(3));
    // The escapee still runs; `pids` says so, and not the root.
    assert_eq!(tree.pids().len(), 1, "{:?}", tree.pids());
    assert_eq!(tree.wait().await.unwrap().code(), Some(3));
    let report = within(DEADLINE, "wait_all", tree.wait_all()).await.unwrap();
    assert_eq!(report.processes.len(), 2);
    assert!(children <= 1);
}
