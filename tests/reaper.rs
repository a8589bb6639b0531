//! `Reaper`: orphans of a tree are reaped once each, with their exact statuses, and handed
//! to every subscriber; the program's own `tokio` and `std` children keep their statuses,
//! whichever dies first.
//!
//! This test process makes itself a child subreaper (the reaper is per process). Built twice:
//! `ptrace_reaper.rs` runs it on the Ptrace backend.

mod support;

use futures::StreamExt;
use procwatch::{Pid, Reaper, ReaperExits};
use std::collections::HashMap;
use std::process::ExitStatus;
use std::time::Duration;
use support::{within, DEADLINE};

/// Ten bursts of 100 orphans: each `( ... & )` subshell starts `sh -c 'sleep; exit N'` and
/// exits at once, so that shell is reparented to this process, where it exits with
/// `N = (100 b + i) mod 250`.
const BURSTS: &str = r#"
for b in 1 2 3 4 5 6 7 8 9 10; do
  for i in $(seq 100); do
    ( sh -c "sleep 0.05; exit $(( (b * 100 + i) % 250 ))" & )
  done
  sleep 0.1
done
sleep 0.3
"#;

fn expected_codes() -> Vec<i32> {
    let mut v: Vec<i32> = (1..=10)
        .flat_map(|b| (1..=100).map(move |i| (b * 100 + i) % 250))
        .collect();
    v.sort();
    v
}

/// Reads `exits` until `want` of the pids in `of` have come, or the deadline.
async fn gather(
    exits: &mut ReaperExits,
    of: &std::collections::HashSet<Pid>,
    want: usize,
) -> Vec<(Pid, ExitStatus)> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, async {
        while got.len() < want {
            match exits.next().await {
                Some((pid, st)) if of.contains(&pid) => got.push((pid, st)),
                Some(_) => {}
                None => break,
            }
        }
    })
    .await;
    got
}

/// Runs the thousand orphans with the program's own children dying before the storm
/// (`own_first`) or after it, and checks everything.
async fn storm(own_first: bool) {
    let Some(w) = support::watcher() else { return };
    let reaper = Reaper::install().expect("install the reaper");
    let mut exits = reaper.exits();
    let (tokio_sleep, std_sleep) = if own_first { (0.0, 0.0) } else { (4.0, 4.0) };
    let mut own_tokio = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("sleep {tokio_sleep}; exit 3"))
        .spawn()
        .unwrap();
    let mut own_std = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("sleep {std_sleep}; exit 4"))
        .spawn()
        .unwrap();
    let own_pids = [
        Pid::from_raw(own_tokio.id().unwrap() as i32).unwrap(),
        Pid::from_raw(own_std.id() as i32).unwrap(),
    ];
    if own_first {
        // Both are zombies, unreaped, while the storm's orphans are reaped around them.
        assert!(
            support::eventually(DEADLINE, || own_pids
                .iter()
                .all(|&p| support::exited_unreaped(p)))
            .await
        );
    }
    let mut tree = w.spawn_tree(support::sh(BURSTS)).expect("spawn_tree");
    assert!(tree.mechanism().adoption == procwatch::Adoption::Subreaper);
    let report = within(DEADLINE, "the storm", tree.wait_all())
        .await
        .unwrap();
    // The orphans: the members whose parent was a subshell, not the root.
    let grandchildren = support::grandchildren(&report);
    let orphans: HashMap<Pid, Option<ExitStatus>> = report
        .processes
        .iter()
        .filter(|p| grandchildren.contains(&p.pid))
        .map(|p| (p.pid, p.status))
        .collect();
    assert_eq!(
        orphans.len(),
        1000,
        "{} orphans in the report",
        orphans.len()
    );
    let keys = orphans.keys().copied().collect();
    let got = gather(&mut exits, &keys, 1000).await;
    assert_eq!(got.len(), 1000, "reaped {} of 1000 orphans", got.len());
    let mut seen = std::collections::HashSet::new();
    for (pid, st) in &got {
        assert!(seen.insert(*pid), "{pid} reaped twice");
        assert_eq!(
            Some(*st),
            orphans[pid],
            "{pid}: the reaper and the backend disagree"
        );
    }
    let mut codes: Vec<i32> = got.iter().filter_map(|(_, s)| s.code()).collect();
    codes.sort();
    assert_eq!(codes, expected_codes());
    // No orphan is left a zombie.
    let zombies: Vec<Pid> = support::children_of_this_process()
        .into_iter()
        .filter(|(p, s)| *s == 'Z' && orphans.contains_key(p))
        .map(|(p, _)| p)
        .collect();
    assert!(zombies.is_empty(), "zombie orphans: {zombies:?}");
    // The program's own children kept their statuses.
    let st = within(DEADLINE, "tokio child", own_tokio.wait())
        .await
        .unwrap();
    assert_eq!(st.code(), Some(3));
    let st = within(DEADLINE, "std child", async {
        tokio::task::spawn_blocking(move || own_std.wait())
            .await
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(st.code(), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_orphans_own_children_dying_first() {
    storm(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_orphans_own_children_dying_after() {
    storm(false).await;
}

#[tokio::test(flavor = "current_thread")]
async fn every_subscriber_gets_every_orphan_and_a_late_one_nothing_old() {
    let Some(w) = support::watcher() else { return };
    let reaper = Reaper::install().unwrap();
    let mut a = reaper.exits();
    let mut b = Reaper::install().unwrap().exits();
    let script = "for i in 1 2 3 4 5; do ( sh -c \"exit $i\" & ); done; sleep 0.3";
    let mut tree = w.spawn_tree(support::sh(script)).unwrap();
    let report = within(DEADLINE, "tree", tree.wait_all()).await.unwrap();
    let orphans: std::collections::HashSet<Pid> = report
        .processes
        .iter()
        .filter(|p| p.parent.is_some() && p.parent != Some(tree.pid()))
        .map(|p| p.pid)
        .collect();
    assert_eq!(orphans.len(), 5);
    let from_a = gather(&mut a, &orphans, 5).await;
    let from_b = gather(&mut b, &orphans, 5).await;
    assert_eq!(from_a.len(), 5);
    assert_eq!(from_a, from_b);
    let mut late = reaper.exits();
    let nothing = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Some((pid, _)) = late.next().await {
                if orphans.contains(&pid) {
                    return pid;
                }
            }
        }
    })
    .await;
    assert!(nothing.is_err(), "a late subscriber got an old orphan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_whose_parent_dies_without_reaping_it_is_reaped_here() {
    let Some(w) = support::watcher() else { return };
    let reaper = Reaper::install().unwrap();
    let mut exits = reaper.exits();
    // The inner shell execs `sleep`, which never waits: its child stays a zombie until the
    // `sleep` ends, then comes to this process already dead.
    let script = "sh -c 'sh -c \"exit 3\" & exec sleep 0.5'; sleep 0.2";
    let mut tree = w.spawn_tree(support::sh(script)).unwrap();
    let report = within(DEADLINE, "tree", tree.wait_all()).await.unwrap();
    let zombie = report
        .processes
        .iter()
        .find(|p| p.status.and_then(|s| s.code()) == Some(3))
        .expect("the inner child")
        .pid;
    let got = within(DEADLINE, "the reparented zombie", async {
        loop {
            let (pid, st) = exits.next().await.unwrap();
            if pid == zombie {
                return st;
            }
        }
    })
    .await;
    assert_eq!(got.code(), Some(3));
}

#[cfg(feature = "bench-support")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_their_parents_reap_leave_nothing_in_the_table() {
    let Some(w) = support::watcher() else { return };
    let reaper = Reaper::install().unwrap();
    // 200 grandchildren, each reaped by its own parent shell.
    let script = "for i in $(seq 200); do sh -c 'sh -c \"exit 1\"; exit 0'; done";
    let mut tree = w.spawn_tree(support::sh(script)).unwrap();
    within(DEADLINE, "tree", tree.wait_all()).await.unwrap();
    // Entries go at the next sweep after their parents reaped them (any tree event or
    // `SIGCHLD` makes one; `reap_now` here). Other tests of this binary may hold some for a
    // moment; none stays.
    assert!(
        support::eventually(DEADLINE, || {
            reaper.reap_now();
            procwatch::bench_support::orphans_pending() == 0
        })
        .await,
        "{} entries left",
        procwatch::bench_support::orphans_pending()
    );
}
