//! How long stopping a whole tree takes: `Tree::kill(SIGKILL)` and then `Tree::wait_all`,
//! against the process-group kill that `command-group`-style code does (`killpg` and waiting
//! until no process of the group is left), on the same tree, in alternating rounds.
//!
//! The tree: a shell that starts `N` sleeping children and waits. The group kill reaches all
//! of them here (none escapes its process group); it is the floor a tree kill can be held
//! to. Also timed: `Tree::shutdown` of the same tree honouring `SIGTERM`, from the call to
//! its report.
//!
//! ```text
//! cargo bench --bench supervise            # both backends where available
//! ```

use procwatch::{BackendKind, ProcWatcher, Signal};
use std::time::{Duration, Instant};

const SIZES: [usize; 2] = [100, 1000];
const ROUNDS: usize = 5;

fn script(n: usize) -> String {
    format!("i=0; while [ $i -lt {n} ]; do sleep 1000 & i=$((i+1)); done; wait")
}

/// Processes whose process group is `pgid` and that are not zombies.
fn live_in_group(pgid: i32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        if f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) && f[0] != "Z" {
            n += 1;
        }
    }
    n
}

async fn until(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "the tree did not get there in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `Tree::kill(KILL)` + `wait_all`, in seconds.
async fn tree_kill(w: &ProcWatcher, n: usize) -> f64 {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", &script(n)]).kill_on_drop(true);
    let mut tree = w.spawn_tree(cmd).expect("spawn_tree");
    until(|| tree.pids().len() > n).await;
    let t = Instant::now();
    let report = tree.kill(Signal::KILL).expect("kill");
    assert!(report.failed.is_empty());
    tree.wait_all().await.expect("wait_all");
    t.elapsed().as_secs_f64()
}

/// `Tree::shutdown` with every member honouring `SIGTERM`, in seconds.
async fn tree_shutdown(w: &ProcWatcher, n: usize) -> f64 {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", &script(n)]).kill_on_drop(true);
    let mut tree = w.spawn_tree(cmd).expect("spawn_tree");
    until(|| tree.pids().len() > n).await;
    let t = Instant::now();
    let report = tree
        .shutdown(Duration::from_secs(30))
        .await
        .expect("shutdown");
    assert!(!report.forced);
    t.elapsed().as_secs_f64()
}

/// `killpg(SIGKILL)`, the root reaped, and no live process left in the group, in seconds.
async fn group_kill(n: usize) -> f64 {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", &script(n)])
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn");
    let pgid = child.id().expect("a pid") as i32;
    until(|| live_in_group(pgid) > n).await;
    let t = Instant::now();
    rustix::process::kill_process_group(
        rustix::process::Pid::from_raw(pgid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .expect("killpg");
    child.wait().await.expect("wait");
    until(|| live_in_group(pgid) == 0).await;
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // No `Reaper`: the sleeps of both kinds of tree are reaped by their shell or by init,
    // so both wait for the same thing.
    for kind in [BackendKind::Netlink, BackendKind::Ptrace] {
        let w = match ProcWatcher::builder().backend(kind).build() {
            Ok(w) => w,
            Err(e) => {
                println!("{}: skipped ({e})", kind.name());
                continue;
            }
        };
        for n in SIZES {
            let (mut tk, mut ts, mut gk) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                gk.push(group_kill(n).await);
                tk.push(tree_kill(&w, n).await);
                ts.push(tree_shutdown(&w, n).await);
            }
            let (tk, ts, gk) = (median(tk), median(ts), median(gk));
            println!(
                "{:8} {n:5} sleeps: killpg+wait {:7.1} ms | Tree::kill+wait_all {:7.1} ms ({:.2}x) | Tree::shutdown {:7.1} ms ({:.2}x)   medians of {ROUNDS}",
                kind.name(),
                gk * 1e3,
                tk * 1e3,
                tk / gk,
                ts * 1e3,
                ts / gk,
            );
        }
    }
}
