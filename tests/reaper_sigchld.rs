//! `Reaper` beside a `SIGCHLD` handler of the program's own: installed before tokio's (which
//! then chains to it), and installed over tokio's with a raw `sigaction` (which silences
//! tokio's). Tree orphans are reaped either way, and the program's own children keep their
//! statuses. One test, in a process of its own: it changes the process's signal handling.
#![allow(unsafe_code)]

mod support;

use futures::StreamExt;
use procwatch::Reaper;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::{within, DEADLINE};

static USER_HANDLER_RAN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn user_handler(_: libc::c_int) {
    USER_HANDLER_RAN.fetch_add(1, Ordering::Relaxed);
}

/// Installs `user_handler` for `SIGCHLD` with a plain `sigaction`, replacing whatever was
/// there.
fn install_user_handler() {
    // SAFETY: a zeroed `sigaction` with a handler that only touches an atomic (async-signal
    // safe), `SA_RESTART`, and an empty mask.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = user_handler as *const () as usize;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGCHLD, &act, std::ptr::null_mut()),
            0
        );
    }
}

/// Runs a tree that leaves 50 orphans and checks that all 50 are reaped, and that the
/// program's own std and tokio children keep their statuses.
async fn orphans_are_reaped(reaper: &Reaper) {
    let Some(w) = support::watcher() else { return };
    let mut exits = reaper.exits();
    let mut own = std::process::Command::new("sh")
        .args(["-c", "exit 9"])
        .spawn()
        .unwrap();
    let mut own_tokio = tokio::process::Command::new("sh")
        .args(["-c", "sleep 0.2; exit 8"])
        .spawn()
        .unwrap();
    let script = "for i in $(seq 50); do ( sh -c \"sleep 0.05; exit $i\" & ); done; sleep 0.5";
    let mut tree = w.spawn_tree(support::sh(script)).unwrap();
    let report = within(DEADLINE, "tree", tree.wait_all()).await.unwrap();
    let orphans = support::grandchildren(&report);
    assert_eq!(orphans.len(), 50);
    let mut got = HashSet::new();
    within(DEADLINE, "50 orphans reaped", async {
        while got.len() < 50 {
            let (pid, _) = exits.next().await.unwrap();
            if orphans.contains(&pid) {
                assert!(got.insert(pid), "{pid} twice");
            }
        }
    })
    .await;
    let st = own.wait().unwrap();
    assert_eq!(
        st.code(),
        Some(9),
        "the program's own child kept its status"
    );
    let st = within(DEADLINE, "tokio child", own_tokio.wait())
        .await
        .unwrap();
    assert_eq!(
        st.code(),
        Some(8),
        "the program's own tokio child kept its status"
    );
}

#[test]
fn tree_orphans_are_reaped_beside_a_users_sigchld_handler() {
    // Before tokio: tokio's handler, registered later, runs this one too.
    install_user_handler();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let reaper = Reaper::install().unwrap();
        orphans_are_reaped(&reaper).await;
        assert!(USER_HANDLER_RAN.load(Ordering::Relaxed) > 0);
        // Over tokio's: no `SIGCHLD` reaches tokio any more; tree events still wake the
        // reaper.
        install_user_handler();
        let before = USER_HANDLER_RAN.load(Ordering::Relaxed);
        orphans_are_reaped(&reaper).await;
        assert!(USER_HANDLER_RAN.load(Ordering::Relaxed) > before);
    });
}
