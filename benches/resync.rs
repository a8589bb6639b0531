//! Losses around a `/proc` resync with a small receive buffer.
//!
//! A resync scans every process in `/proc`. With a receive buffer as small as an ordinary
//! user's default (`net.core.rmem_max`, 212,992 bytes on most distributions), a fork storm
//! that overflows the socket once can overflow it again while the scan runs, unless the
//! socket is read during the scan. This bench makes `/proc` long (`IDLE` sleeping processes),
//! runs a fork storm watched with `TRACK` through such a buffer, and reads the stream on a
//! current-thread runtime that the consumer blocks for 20 ms every 1,000 events (a busy
//! program: meanwhile only the backstop thread drains the socket, which overflows). It counts
//! per round: the overflows the stream was told of (`Lost` counts), the processes
//! whose exit status was lost (`Exit` with `None`), and the processes announced.
//!
//! ```text
//! cargo bench --bench resync
//! ```

use futures::StreamExt;
use procwatch::{Interest, NetlinkOptions, ProcEvent, ProcWatcher};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Sleeping processes that make a `/proc` scan long.
const IDLE: usize = 3000;
const ROUNDS: usize = 7;
/// The receive buffer asked for (`PROCWATCH_BENCH_RCVBUF` overrides it).
const RCVBUF: usize = 212_992;
/// 4,000 short processes, 20 at a time.
const STORM: &str = "i=0; while [ $i -lt 200 ]; do j=0; while [ $j -lt 20 ]; do (exit 0) & \
                     j=$((j+1)); done; wait; i=$((i+1)); done";

struct Round {
    lost: u32,
    statusless: usize,
    children: usize,
    seconds: f64,
}

async fn round(w: &ProcWatcher) -> Round {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.args(["-c", STORM]).kill_on_drop(true);
    let start = Instant::now();
    let mut started = w.spawn(cmd, Interest::ALL).expect("spawn the storm");
    let mut r = Round {
        lost: 0,
        statusless: 0,
        children: 0,
        seconds: 0.0,
    };
    let read = async {
        let mut n = 0u32;
        while let Some(ev) = started.events.next().await {
            n += 1;
            if n.is_multiple_of(1000) {
                std::thread::sleep(Duration::from_millis(20));
            }
            match ev {
                ProcEvent::Lost { count, .. } => r.lost += count,
                ProcEvent::Exit { status: None, .. } => r.statusless += 1,
                ProcEvent::Child { .. } => r.children += 1,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .expect("the storm's stream ended");
    started.child.wait().await.expect("reap the storm");
    r.seconds = start.elapsed().as_secs_f64();
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let idle: Vec<Child> = (0..IDLE)
        .map(|_| {
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn()
                .expect("start an idle process")
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rcvbuf = std::env::var("PROCWATCH_BENCH_RCVBUF")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RCVBUF);
    let rows: Vec<Round> = rt.block_on(async {
        let w = ProcWatcher::builder()
            .netlink(NetlinkOptions::new().receive_buffer(rcvbuf))
            .build()
            .expect("a netlink watcher (run as root)");
        let mut rows = Vec::new();
        for i in 0..ROUNDS {
            let r = round(&w).await;
            println!(
                "round {i}: lost {:>3}  exit-status-lost {:>4}  children {:>4}  {:.2} s",
                r.lost, r.statusless, r.children, r.seconds
            );
            rows.push(r);
        }
        rows
    });
    for mut c in idle {
        let _ = c.kill();
        let _ = c.wait();
    }
    let col = |f: fn(&Round) -> f64| median(rows.iter().map(f).collect());
    println!(
        "median of {ROUNDS} rounds, {IDLE} idle processes, {rcvbuf}-byte buffer: lost {}, \
         exit-status-lost {}, children {}, {:.2} s",
        col(|r| r.lost as f64),
        col(|r| r.statusless as f64),
        col(|r| r.children as f64),
        col(|r| r.seconds)
    );
}
