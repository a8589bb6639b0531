//! A `Reaper::exits` stream nobody reads holds reaping back once its bounded queue is full
//! (the zombies wait in the kernel, statuses and all), and reaping resumes, losing nothing,
//! once it is read. In a process of its own: the stalled subscriber stalls the whole program.

mod support;

use futures::StreamExt;
use procwatch::Reaper;
use std::collections::HashSet;
use std::time::Duration;
use support::{within, DEADLINE};

const ORPHANS: usize = Reaper::EXITS_CAPACITY + 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_subscriber_is_backpressure_not_loss() {
    let Some(w) = support::watcher() else { return };
    let reaper = Reaper::install().unwrap();
    let mut stalled = reaper.exits();
    let mut reader = reaper.exits();
    // Each subshell backgrounds a builtin and exits: one orphan per iteration.
    let script = format!("for i in $(seq {ORPHANS}); do ( true & ); done");
    let mut tree = w.spawn_tree(support::sh(&script)).unwrap();
    let report = within(DEADLINE * 2, "the storm", tree.wait_all())
        .await
        .unwrap();
    let orphans = support::grandchildren(&report);
    assert_eq!(orphans.len(), ORPHANS);
    // The reader gets what the stalled queue had room for, then nothing more.
    let mut got = HashSet::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some((pid, _)) = reader.next().await {
            got.insert(pid);
        }
    })
    .await;
    assert_eq!(
        got.len(),
        Reaper::EXITS_CAPACITY,
        "reaping went on past a full queue"
    );
    let zombies = support::children_of_this_process()
        .into_iter()
        .filter(|(p, s)| *s == 'Z' && orphans.contains(p))
        .count();
    assert_eq!(
        zombies,
        ORPHANS - Reaper::EXITS_CAPACITY,
        "the rest wait as zombies"
    );
    // Reading the stalled stream lets reaping go on, to the last orphan.
    let drain = tokio::spawn(async move {
        let mut n = 0;
        while n < ORPHANS {
            stalled.next().await;
            n += 1;
        }
    });
    within(DEADLINE, "every orphan reaped", async {
        while got.len() < ORPHANS {
            let (pid, _) = reader.next().await.unwrap();
            assert!(got.insert(pid), "{pid} twice");
        }
    })
    .await;
    within(DEADLINE, "the stalled stream read", drain)
        .await
        .unwrap();
    assert_eq!(got, orphans);
}
