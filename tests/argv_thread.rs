//! The Netlink backend's `procwatch-argv` thread, which reads each exec's command line as
//! soon as a socket of its own (hearing execs alone) wakes it: when it starts and stops,
//! how it asks to be scheduled (`NetlinkOptions::argv_priority`), and what that buys on a
//! machine whose cores are busy.

#[macro_use]
mod support;

use procwatch::{ArgvPriority, Interest, NetlinkOptions, ProcEvent, ProcWatcher};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{collect, connector_sockets, in_ci, netlink_watcher_with, sh, within, DEADLINE};

const WITH_ARGV: Interest = Interest::ALL.union(Interest::ARGV);

/// The tests here count this process's threads and sockets: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn watcher(priority: ArgvPriority) -> Option<ProcWatcher> {
    netlink_watcher_with(|b| b.netlink(NetlinkOptions::new().argv_priority(priority)))
}

/// The thread ids of this process's `procwatch-argv` threads.
fn argv_threads() -> Vec<i32> {
    let mut tids: Vec<i32> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim_end() == "procwatch-argv").then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect();
    tids.sort();
    tids
}

/// A thread's scheduling policy and, where the kernel shows it, its time slice (ns), from
/// its `sched` file under `/proc`.
fn sched_of(dir: &str) -> (u32, Option<u64>) {
    let text = std::fs::read_to_string(format!("{dir}/sched")).unwrap();
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    (field("policy").unwrap() as u32, field("se.slice"))
}

/// Whether the kernel takes a fair thread's time slice from `sched_setattr` (6.12).
fn kernel_has_custom_slices() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 12)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A shell that waits on its stdin, watched with `interest`; returns it and its stream.
fn waiting_shell(w: &ProcWatcher, interest: Interest) -> procwatch::WatchedChild {
    let mut cmd = sh("read x; exit 0");
    cmd.stdin(Stdio::piped());
    w.spawn(cmd, interest).expect("spawn")
}

async fn finish(mut started: procwatch::WatchedChild) {
    drop(started.child.stdin.take());
    collect(&mut started.events, DEADLINE).await;
    let status = within(DEADLINE, "the watched child", started.child.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// No thread before a stream asks for command lines; the thread and its socket from the
/// first that does (in place when `spawn` returns); the socket closed once none asks, the
/// thread gone with the watcher. A `tokio` child beside gets its own status.
#[tokio::test]
async fn the_thread_and_its_socket_follow_the_argv_streams() {
    let _serial = SERIAL.lock().await;
    let threads = argv_threads();
    let sockets = connector_sockets();
    let w = require!(watcher(ArgvPriority::default()));
    let mut beside = sh("exit 7").spawn().unwrap();
    assert_eq!(connector_sockets(), sockets + 1);

    finish(waiting_shell(&w, Interest::ALL)).await;
    assert_eq!(argv_threads(), threads, "no thread without ARGV");
    assert_eq!(connector_sockets(), sockets + 1);

    let started = waiting_shell(&w, WITH_ARGV);
    assert_eq!(argv_threads().len(), threads.len() + 1);
    assert_eq!(connector_sockets(), sockets + 2, "the exec socket");
    finish(started).await;
    until("the exec socket closed", || {
        connector_sockets() == sockets + 1
    })
    .await;
    assert_eq!(argv_threads().len(), threads.len() + 1, "the thread stays");

    // Asked again: the same thread opens a socket again.
    let started = waiting_shell(&w, WITH_ARGV);
    assert_eq!(connector_sockets(), sockets + 2);
    finish(started).await;

    drop(w);
    until("the thread gone with the watcher", || {
        argv_threads() == threads
    })
    .await;
    until("every socket closed", || connector_sockets() == sockets).await;
    let status = within(DEADLINE, "the tokio child beside", beside.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(7));
}

/// With `argv_thread(false)` no thread and no second socket ever start, and the drainer
/// still reads the command line of a program that lives a while. A `tokio` child beside
/// gets its own status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_thread_the_drainer_reads_command_lines() {
    let _serial = SERIAL.lock().await;
    let threads = argv_threads();
    let sockets = connector_sockets();
    let w = require!(netlink_watcher_with(|b| b.netlink(
        NetlinkOptions::new()
            .argv_thread(false)
            .batch_window(Duration::from_millis(2))
            .batch_threshold(0)
    )));
    let mut beside = sh("exit 7").spawn().unwrap();
    let mut started = w
        .spawn(sh("/bin/sleep 0.3; exit 5"), WITH_ARGV)
        .expect("spawn");
    assert_eq!(argv_threads(), threads, "no thread");
    assert_eq!(connector_sockets(), sockets + 1, "no exec socket");
    let events = collect(&mut started.events, DEADLINE).await;
    let status = within(DEADLINE, "the watched child", started.child.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(5));
    let sleep_argv: Vec<Vec<String>> = events
        .iter()
        .filter_map(|e| match e {
            ProcEvent::Exec { argv: Some(a), .. } => {
                Some(a.iter().map(|s| s.to_string_lossy().into_owned()).collect())
            }
            _ => None,
        })
        .filter(|a: &Vec<String>| a.first().is_some_and(|p| p == "/bin/sleep"))
        .collect();
    assert_eq!(
        sleep_argv,
        vec![vec!["/bin/sleep".to_string(), "0.3".to_string()]],
        "{events:?}"
    );
    assert_eq!(argv_threads(), threads, "still no thread");
    let theirs = within(DEADLINE, "the tokio child beside", beside.wait())
        .await
        .unwrap();
    assert_eq!(theirs.code(), Some(7));
}

/// Each `ArgvPriority` as `/proc/<tid>/sched` shows it: the shortest slice (0.1 ms) where
/// the kernel has them, `SCHED_FIFO` for `Realtime` when privileged (as root here), and the
/// process's own settings for `Inherit`.
#[tokio::test]
async fn the_thread_asks_for_the_priority_it_was_given() {
    let _serial = SERIAL.lock().await;
    let (own_policy, own_slice) = sched_of("/proc/thread-self");
    let root = rustix::process::geteuid().is_root();
    for priority in [
        ArgvPriority::ShortSlice,
        ArgvPriority::Realtime,
        ArgvPriority::Inherit,
    ] {
        let threads = argv_threads();
        let w = require!(watcher(priority));
        let started = waiting_shell(&w, WITH_ARGV);
        let tid = argv_threads()
            .into_iter()
            .find(|t| !threads.contains(t))
            .expect("a new argv thread");
        let (policy, slice) = sched_of(&format!("/proc/self/task/{tid}"));
        eprintln!("{priority:?}: policy {policy}, slice {slice:?}");
        match priority {
            ArgvPriority::ShortSlice => {
                assert_eq!(policy, own_policy);
                if kernel_has_custom_slices() {
                    assert_eq!(slice, Some(100_000));
                }
            }
            ArgvPriority::Realtime if root => assert_eq!(policy, 1, "SCHED_FIFO"),
            ArgvPriority::Realtime => {
                eprintln!("not root: Realtime falls back to the short slice");
                assert_eq!(policy, own_policy);
            }
            _ => assert_eq!((policy, slice), (own_policy, own_slice)),
        }
        finish(started).await;
        drop(w);
        until("the thread gone", || argv_threads() == threads).await;
    }
}

/// What the thread is for: 300 programs that exit within a millisecond of their exec, while
/// a busy loop runs on every core. With `Realtime` (root) every one keeps its command line
/// but a handful; the shares of the other two settings are printed.
#[tokio::test]
async fn programs_that_exit_at_once_keep_their_argv_on_busy_cores() {
    let _serial = SERIAL.lock().await;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut busy: Vec<_> = (0..cores)
        .map(|_| sh("while :; do :; done").spawn().unwrap())
        .collect();
    let n = 300;
    let script = format!("for i in $(seq {n}); do /bin/true \"$i\"; done");
    let mut results = Vec::new();
    for priority in [
        ArgvPriority::Realtime,
        ArgvPriority::ShortSlice,
        ArgvPriority::Inherit,
    ] {
        let w = require!(watcher(priority));
        let mut started = w.spawn(sh(&script), WITH_ARGV).expect("spawn");
        let events = collect(&mut started.events, Duration::from_secs(120)).await;
        within(DEADLINE, "the watched child", started.child.wait())
            .await
            .unwrap();
        let (mut trues, mut with_argv) = (0, 0);
        for e in &events {
            if let ProcEvent::Exec { argv, .. } = e {
                let Some(argv) = argv else {
                    trues += 1;
                    continue;
                };
                let first = argv.get(0).unwrap_or_default();
                if first == "/bin/true" {
                    trues += 1;
                    with_argv += 1;
                    let i: u32 = argv.get(1).unwrap().to_str().unwrap().parse().unwrap();
                    assert!((1..=n).contains(&i), "{argv:?}");
                }
            }
        }
        // Those without argv cannot be told apart from `seq`'s exec: one more than `n`.
        assert!(trues == n as usize + 1 || trues == n as usize, "{trues}");
        eprintln!("{priority:?}: {with_argv} of {n} /bin/true with argv, all cores busy");
        results.push((priority, with_argv));
    }
    for b in &mut busy {
        b.start_kill().unwrap();
    }
    for mut b in busy {
        let status = within(DEADLINE, "a busy loop", b.wait()).await.unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
    if rustix::process::geteuid().is_root() {
        let realtime = results[0].1;
        assert!(realtime >= n - 3, "Realtime: {realtime} of {n} with argv");
    } else if in_ci() {
        panic!("CI runs as root: Realtime must be measured");
    }
}

/// The same from the user's side: a shell started with `std::process` (not by the
/// watcher), watched by pid once it waits on its stdin, on a multi-thread runtime. Its 100
/// `/bin/true` keep their command lines with `Realtime` (root) but a handful.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_std_child_watched_by_pid_on_a_multi_thread_runtime() {
    use std::io::Write;
    let _serial = SERIAL.lock().await;
    let w = require!(watcher(ArgvPriority::Realtime));
    let n = 100;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "read x; for i in $(seq {n}); do /bin/true \"$i\"; done"
        ))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = procwatch::Pid::from_raw(child.id() as i32).unwrap();
    let mut events = w.watch(pid, WITH_ARGV).expect("watch");
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let all = collect(&mut events, DEADLINE).await;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let with_argv = all
        .iter()
        .filter(|e| match e {
            ProcEvent::Exec {
                argv: Some(argv), ..
            } => argv.get(0).is_some_and(|a| a == "/bin/true"),
            _ => false,
        })
        .count();
    eprintln!("{with_argv} of {n} /bin/true with argv (std child, multi-thread runtime)");
    if rustix::process::geteuid().is_root() {
        assert!(with_argv >= n - 3, "{with_argv} of {n}");
    }
}
