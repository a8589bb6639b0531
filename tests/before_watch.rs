//! What the kernel emitted before `watch` was called is never delivered, and what it emits
//! after `watch` returned always is (guarantee 9 in the crate docs), however the process was
//! started and on either runtime flavour.
//!
//! The watched program starts, execs, and runs two short children, then says `ready` on a
//! pipe and waits for a line on another. The test reads the ready line with a blocking read
//! and, without awaiting anything (so on a current-thread runtime the drain task cannot run
//! and the socket still holds the messages about the program's start), reads the clock and
//! calls `watch`; then it releases the program, which forks one child that exits with 1 and
//! execs a last program that exits with 0. The stream must hold exactly that, every event
//! stamped after the clock was read.
//!
//! The program is started four ways: by `std::process::Command`, by
//! `tokio::process::Command`, in the background by a shell that prints its pid (so it is not
//! this process's child), and by a raw `clone3` from this process (reaped with a `waitpid` on
//! its pid alone). A `true` started by tokio runs beside each round and must still get its
//! own exit status.

#[macro_use]
mod support;

use procwatch::{Interest, Pid, ProcEvent, ProcWatcher, Timestamp};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::pipe::{pipe_with, PipeFlags};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use support::{
    check_after_watch, check_order, collect, read_line_blocking, watcher, within, write_blocking,
    DEADLINE,
};

/// Before `ready`: the program's own exec, two forks, and the children's execs and exits.
/// After the go line: one fork of a child that execs `/bin/false` (exit 1), then an exec of
/// `/bin/true` (exit 0). Everything but the external programs is a dash builtin.
const SCRIPT: &str = "/bin/true; /bin/true; echo ready; read x; /bin/false; exec /bin/true";
/// Rounds per test.
const ROUNDS: usize = 20;
/// How long the multi-thread variant leaves the socket alone between the ready line and
/// `watch`.
const PAUSE: Duration = Duration::from_millis(5);

/// How the program is started.
#[derive(Copy, Clone, Debug)]
enum Launch {
    StdCommand,
    TokioCommand,
    /// `sh -c 'program & echo $!'`: the program is the shell's child, not ours.
    ShellBackground,
    /// `clone3` from this process, then `execve` in the child.
    Clone3,
}

/// How the started program is waited for.
enum Reap {
    Std(std::process::Child),
    Tokio(tokio::process::Child),
    /// The shell that started the program in the background; the program itself is
    /// reparented and reaped by someone else.
    Shell(tokio::process::Child),
    /// A child created with `clone3`, reaped with `waitpid` on its pid.
    Raw(Pid),
}

/// A program started and blocked after its ready line, not yet watched.
struct Ready {
    pid: Pid,
    /// The write end of the program's stdin.
    go: OwnedFd,
    reap: Reap,
}

/// A close-on-exec pipe (the child gets its ends as stdin/stdout, which are not).
fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = pipe_with(PipeFlags::CLOEXEC).expect("pipe");
    assert!(r.as_raw_fd() > 2 && w.as_raw_fd() > 2, "stdio is open");
    (r, w)
}

/// Starts `/bin/sh -c SCRIPT` with a raw `clone3` (a plain fork: no flags, `SIGCHLD` on exit),
/// stdin and stdout on the given pipe ends.
fn clone3_sh(stdin: &OwnedFd, stdout: &OwnedFd) -> Pid {
    // Everything the child needs is built before the clone: between `clone3` and `execve` the
    // child only makes async-signal-safe calls (`dup2`, `execve`, `_exit`).
    let path = CString::new("/bin/sh").unwrap();
    let args = [
        CString::new("sh").unwrap(),
        CString::new("-c").unwrap(),
        CString::new(SCRIPT).unwrap(),
    ];
    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let env = CString::new("PATH=/usr/bin:/bin").unwrap();
    let envp = [env.as_ptr(), std::ptr::null()];
    let (stdin, stdout) = (stdin.as_raw_fd(), stdout.as_raw_fd());
    // SAFETY: clone3 without CLONE_VM and without a stack is a fork: the child runs on a copy
    // of this thread's stack and address space, and only makes async-signal-safe calls on
    // memory prepared above before it execs or exits.
    let rc = unsafe { support::raw_clone3(0, libc::SIGCHLD as u64) };
    if rc == 0 {
        // SAFETY: see above; `_exit` never returns.
        unsafe {
            if libc::dup2(stdin, 0) < 0 || libc::dup2(stdout, 1) < 0 {
                libc::_exit(126);
            }
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    assert!(rc > 0, "clone3: {}", std::io::Error::last_os_error());
    Pid::from_raw(rc as i32).expect("a positive pid")
}

/// Starts the program as `launch` says and returns once it said `ready`. Nothing is awaited.
fn launch_until_ready(launch: Launch) -> Ready {
    let (in_r, in_w) = pipe();
    let (out_r, out_w) = pipe();
    let (pid, reap) = match launch {
        Launch::StdCommand => {
            let child = std::process::Command::new("sh")
                .args(["-c", SCRIPT])
                .stdin(Stdio::from(in_r))
                .stdout(Stdio::from(out_w))
                .spawn()
                .expect("spawn sh with std");
            (Some(child.id() as i32), Reap::Std(child))
        }
        Launch::TokioCommand => {
            let child = tokio::process::Command::new("sh")
                .args(["-c", SCRIPT])
                .stdin(Stdio::from(in_r))
                .stdout(Stdio::from(out_w))
                .kill_on_drop(true)
                .spawn()
                .expect("spawn sh with tokio");
            (
                Some(child.id().expect("running") as i32),
                Reap::Tokio(child),
            )
        }
        Launch::ShellBackground => {
            // A non-interactive shell gives a background command /dev/null as stdin unless
            // it is redirected explicitly, hence the copy on fd 3.
            let outer = format!("exec 3<&0; sh -c '{SCRIPT}' <&3 3<&- & echo $!");
            let shell = tokio::process::Command::new("sh")
                .args(["-c", &outer])
                .stdin(Stdio::from(in_r))
                .stdout(Stdio::from(out_w))
                .kill_on_drop(true)
                .spawn()
                .expect("spawn the outer sh");
            // The pid comes from the outer sh's `echo $!`, below.
            (None, Reap::Shell(shell))
        }
        Launch::Clone3 => {
            let pid = clone3_sh(&in_r, &out_w);
            drop((in_r, out_w));
            (Some(pid.as_raw()), Reap::Raw(pid))
        }
    };
    // The background program may say `ready` before the outer sh prints its pid.
    let (mut pid, mut ready) = (pid.and_then(Pid::from_raw), false);
    while !ready || pid.is_none() {
        let line = read_line_blocking(&out_r, "the program's ready line");
        match (line.as_str(), pid) {
            ("ready", _) if !ready => ready = true,
            (_, None) => {
                let parsed = line.trim().parse().ok().and_then(Pid::from_raw);
                pid = Some(parsed.unwrap_or_else(|| panic!("a pid from the outer sh: {line:?}")));
            }
            _ => panic!("{launch:?}: unexpected line {line:?} from the program"),
        }
    }
    Ready {
        pid: pid.expect("checked above"),
        go: in_w,
        reap,
    }
}

/// Waits for a `clone3` child with `waitpid` on its pid (never `-1`: tokio's children are
/// not ours to reap), polling so that the wait has a deadline.
async fn waitpid_raw(pid: Pid) -> ExitStatus {
    within(DEADLINE, "waitpid on the clone3 child", async {
        loop {
            let mut status = 0;
            // SAFETY: waitpid on one pid, with a valid pointer for the status.
            let rc = unsafe { libc::waitpid(pid.as_raw(), &mut status, libc::WNOHANG) };
            match rc {
                0 => tokio::time::sleep(Duration::from_millis(5)).await,
                r if r == pid.as_raw() => return ExitStatus::from_raw(status),
                _ => panic!("waitpid({pid}): {}", std::io::Error::last_os_error()),
            }
        }
    })
    .await
}

/// Waits for the program (or, for the background launch, the shell that started it) and
/// returns the program's status where this process can know it.
async fn reap(reap: Reap) -> Option<ExitStatus> {
    match reap {
        Reap::Std(mut child) => Some(
            within(DEADLINE, "the std child exits", async {
                loop {
                    match child.try_wait().expect("try_wait") {
                        Some(status) => return status,
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            })
            .await,
        ),
        Reap::Tokio(mut child) => Some(
            within(DEADLINE, "the tokio child exits", child.wait())
                .await
                .expect("wait"),
        ),
        Reap::Shell(mut shell) => {
            let status = within(DEADLINE, "the outer sh exits", shell.wait())
                .await
                .expect("wait");
            assert!(status.success(), "the outer sh: {status}");
            None
        }
        Reap::Raw(pid) => Some(waitpid_raw(pid).await),
    }
}

/// One event reduced to what the expected trace pins down.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Child { parent: Pid },
    Fork { count: u32 },
    Exec { count: u32 },
    Exit { code: Option<i32> },
    Other,
}

fn seen(ev: &ProcEvent) -> Seen {
    match *ev {
        ProcEvent::Child { parent, .. } => Seen::Child { parent },
        ProcEvent::Fork { count, .. } => Seen::Fork { count },
        ProcEvent::Exec { count, .. } => Seen::Exec { count },
        ProcEvent::Exit { status, .. } => Seen::Exit {
            code: status.and_then(|s| s.code()),
        },
        _ => Seen::Other,
    }
}

/// Checks the trace of one round: nothing from before `watched_at`, the first fork after
/// the watch delivered, and exactly the program's life after its release.
fn check_round(root: Pid, watched_at: Timestamp, trace: &[ProcEvent], ctx: &str) {
    check_after_watch(trace, watched_at);
    check_order(trace);
    let forked: Vec<Pid> = trace
        .iter()
        .filter_map(|e| match *e {
            ProcEvent::Fork { pid, child, .. } if pid == root => Some(child),
            _ => None,
        })
        .collect();
    let [child] = forked[..] else {
        panic!("{ctx}: the root's one fork after the watch, got {forked:?}: {trace:?}");
    };
    let mut per_pid: BTreeMap<Pid, Vec<Seen>> = BTreeMap::new();
    for ev in trace {
        per_pid.entry(ev.pid()).or_default().push(seen(ev));
    }
    let want = BTreeMap::from([
        (
            root,
            vec![
                Seen::Fork { count: 1 },
                Seen::Exec { count: 1 },
                Seen::Exit { code: Some(0) },
            ],
        ),
        (
            child,
            vec![
                Seen::Child { parent: root },
                Seen::Exec { count: 1 },
                Seen::Exit { code: Some(1) },
            ],
        ),
    ]);
    assert_eq!(
        per_pid, want,
        "{ctx}: events per pid (root {root}, child {child}): {trace:?}"
    );
}

/// One round: a `true` beside, the program launched and watched once ready, released, its
/// trace and statuses checked.
async fn round(w: &ProcWatcher, launch: Launch, pause: Option<Duration>, n: usize) {
    let ctx = format!("{launch:?}, round {n}");
    let mut beside = tokio::process::Command::new("true")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn true");

    let ready = launch_until_ready(launch);
    if let Some(pause) = pause {
        std::thread::sleep(pause);
    }
    let watched_at = Timestamp::now();
    let mut events = w
        .watch(ready.pid, Interest::ALL)
        .unwrap_or_else(|e| panic!("{ctx}: watch the ready program: {e}"));
    write_blocking(&ready.go, b"go\n", "release the program");
    drop(ready.go);

    let trace = collect(&mut events, DEADLINE).await;
    let status = reap(ready.reap).await;
    let beside = within(DEADLINE, "true beside exits", beside.wait())
        .await
        .expect("wait for true beside");
    assert!(beside.success(), "{ctx}: the true beside: {beside}");
    if let Some(status) = status {
        assert_eq!(status.code(), Some(0), "{ctx}: the program's status");
    }
    check_round(ready.pid, watched_at, &trace, &ctx);
}

async fn rounds(launch: Launch, pause: Option<Duration>) {
    let w = require!(watcher());
    for n in 0..ROUNDS {
        round(&w, launch, pause, n).await;
    }
}

/// The three runtime variants for one launch: current-thread, multi-thread, and multi-thread
/// with the ready program left unwatched for [`PAUSE`].
macro_rules! launched_by {
    ($name:ident, $launch:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn current_thread() {
                rounds($launch, None).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn multi_thread() {
                rounds($launch, None).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn multi_thread_after_a_pause() {
                rounds($launch, Some(PAUSE)).await;
            }
        }
    };
}

launched_by!(std_command, Launch::StdCommand);
launched_by!(tokio_command, Launch::TokioCommand);
launched_by!(shell_background, Launch::ShellBackground);
launched_by!(clone3, Launch::Clone3);
