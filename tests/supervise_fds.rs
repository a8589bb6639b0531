//! A tree holds file descriptors for its live members only: one that has run through
//! thousands of processes, under a low `RLIMIT_NOFILE`, still has every status and no
//! descriptor per dead member. In a process of its own, for the limit and the count.

mod support;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use support::{fd_count, within, DEADLINE};

const PROCESSES: usize = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_tree_holds_no_descriptor_per_dead_member() {
    let Some(w) = support::watcher() else { return };
    let limit = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(256),
            maximum: limit.maximum,
        },
    )
    .unwrap();
    let before = fd_count();
    // One after another: each is reaped by the shell before the next starts.
    let script = format!("for i in $(seq {PROCESSES}); do /bin/true; done");
    let mut tree = w.spawn_tree(support::sh(&script)).unwrap();
    let report = within(DEADLINE * 2, "the tree", tree.wait_all())
        .await
        .unwrap();
    // The root, `$(seq ...)`, and the `true`s.
    assert_eq!(report.processes.len(), PROCESSES + 2);
    assert!(
        report
            .processes
            .iter()
            .all(|p| p.status.is_some_and(|s| s.success())),
        "{:?}",
        report.processes.iter().find(|p| p.status.is_none())
    );
    let during = fd_count();
    assert!(
        during < before + 32,
        "{before} descriptors before, {during} after {PROCESSES} processes"
    );
    drop(tree);
    setrlimit(Resource::Nofile, limit).unwrap();
}
