//! Starting a command already watched.

use crate::sys::{self, HoldFds};
use crate::{Error, ErrorKind, Interest, Pid, ProcEvents, ProcWatcher};
use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use rustix::io::Errno;
use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::PidfdFlags;
use std::fmt;
use std::time::{Duration, Instant};

/// How long the arming side waits for the new child to report its pid.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process started by [`ProcWatcher::spawn`], and the stream that watched it from
/// before its first instruction of the new program.
///
/// `child` is an ordinary [`tokio::process::Child`]: its stdio pipes, `wait()`, `kill()` and
/// drop behaviour are tokio's. Waiting on it reaps only this child (tokio never calls
/// `waitpid(-1)`), so exit statuses of other processes in the program are never stolen.
///
/// # Caveats
///
/// Dropping `child` without waiting leaves the reaping to tokio: a child that has already
/// exited is reaped by the drop itself; one that still runs is killed first if the command
/// had `kill_on_drop(true)`, and reaped in the background once it exits, as long as a tokio
/// runtime keeps running. `events` is independent of `child`: dropping the stream only ends
/// the watch, and keeping it after dropping `child` still delivers the process's `Exit`.
pub struct WatchedChild {
    /// The process, as tokio manages it.
    pub child: tokio::process::Child,
    /// Its events (and its descendants', with [`Interest::TRACK`]).
    pub events: ProcEvents,
    pid: Pid,
}

impl WatchedChild {
    /// The child's pid (stays valid after it is reaped, unlike `Child::id`).
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

impl fmt::Debug for WatchedChild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedChild")
            .field("pid", &self.pid)
            .field("events", &self.events)
            .finish()
    }
}

/// A child whose watch is armed: its pid, its stream, and a pidfd on it where the kernel has
/// `pidfd_open` (Linux 5.3+).
type Armed = (Pid, Vec<ProcEvents>, Option<OwnedFd>);

fn os(op: &'static str, e: Errno) -> Error {
    Error::io(op, e.into())
}

impl ProcWatcher {
    /// Starts `cmd` already watched with `interest`: no event of the new process can be
    /// missed, however fast it forks, execs or exits.
    ///
    /// The child is held after `fork` and before `execve` (a `pre_exec` hook waits on a pipe)
    /// until its watch is armed; only then does it run its program. Stdio configuration,
    /// environment, working directory and everything else set on `cmd` apply as usual. The
    /// call blocks the current thread for about as long as `Command::spawn` itself does (a
    /// fork and an exec) plus the arming, typically well under a millisecond.
    ///
    /// The returned stream sees the `Exec` of `cmd`'s program first (with
    /// [`Interest::EXEC`]), then whatever the program does.
    ///
    /// Must be called from within a tokio runtime (tokio reaps the child).
    ///
    /// # Errors
    ///
    /// * The program cannot be started: [`ErrorKind::Other`] (program not found, not
    ///   executable; [`Error::raw_os_error`] has the errno) or [`ErrorKind::PermissionDenied`].
    /// * The watch fails (see [`ProcWatcher::watch`]); the held child is then released into a
    ///   failure before `exec` and reaped.
    /// * [`ErrorKind::InvalidInput`]: called outside a tokio runtime.
    /// * [`ErrorKind::Other`] with `EMFILE`/`ENFILE` in [`Error::raw_os_error`]: this process
    ///   (or the system) is out of file descriptors for the pipes, eventfd and pidfd that
    ///   `spawn` needs.
    ///
    /// In every case no process is left behind.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use futures::StreamExt;
    /// use procwatch::{Interest, ProcEvent, ProcWatcher};
    /// use std::process::Stdio;
    ///
    /// let watcher = ProcWatcher::new()?;
    /// let mut cmd = tokio::process::Command::new("sh");
    /// cmd.args(["-c", "echo hi; true & wait"]).stdout(Stdio::piped());
    /// let mut started = watcher.spawn(cmd, Interest::ALL)?;
    /// while let Some(ev) = started.events.next().await {
    ///     if let ProcEvent::Child { pid, parent, .. } = ev {
    ///         println!("{parent} started {pid}");
    ///     }
    /// }
    /// let out = started.child.wait_with_output().await?;
    /// assert_eq!(out.stdout, b"hi\n");
    /// # Ok(()) }
    /// ```
    pub fn spawn(
        &self,
        cmd: impl Into<tokio::process::Command>,
        interest: Interest,
    ) -> Result<WatchedChild, Error> {
        let backend = self.backend();
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::new(ErrorKind::InvalidInput, "spawn")
                .with_backend(backend)
                .with_detail("ProcWatcher::spawn must be called within a tokio runtime"));
        }
        if interest.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "spawn")
                .with_backend(backend)
                .with_detail(
                    "the interest is empty; ask for at least one of FORK, EXEC, EXIT, TRACK",
                ));
        }
        let (child, mut streams, pid) = self.spawn_armed(cmd.into(), &[interest], &|_| {})?;
        let events = streams.pop().expect("one stream per interest");
        Ok(WatchedChild { child, events, pid })
    }

    /// What `spawn` does, with one stream per entry of `interests`, and `prepare` called
    /// with the child's pid once its watches are armed, before it runs its program (while it
    /// is still held, so it has created nothing and cannot have exited).
    pub(crate) fn spawn_armed(
        &self,
        mut cmd: tokio::process::Command,
        interests: &[Interest],
        prepare: &(dyn Fn(Pid) + Sync),
    ) -> Result<(tokio::process::Child, Vec<ProcEvents>, Pid), Error> {
        let backend = self.backend();
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let (report_r, report_w) = hold_pipe().map_err(|e| e.with_backend(backend))?;
        let (release_r, release_w) = hold_pipe().map_err(|e| e.with_backend(backend))?;
        let done = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| os("spawn eventfd", e).with_backend(backend))?;
        sys::hold_before_exec(
            &mut cmd,
            HoldFds {
                report_w: report_w.as_raw_fd(),
                release_r: release_r.as_raw_fd(),
                parent_ends: [report_r.as_raw_fd(), release_w.as_raw_fd()],
                ptracer: self.tracer().unwrap_or(0),
            },
        );
        let (spawned, armed) = std::thread::scope(|scope| {
            let done = &done;
            let armer = std::thread::Builder::new()
                .name("procwatch-spawn".into())
                .spawn_scoped(scope, move || {
                    self.arm_child(report_r, release_w, done, interests, prepare)
                });
            let armer = match armer {
                Ok(h) => h,
                Err(e) => return (Err(e), None),
            };
            let spawned = cmd.spawn();
            let _ = rustix::io::write(done, &1u64.to_ne_bytes());
            let armed = armer.join().unwrap_or(None);
            (spawned, armed)
        });
        drop((report_w, release_r));
        match (spawned, armed) {
            (Ok(child), Some(Ok((pid, events, _)))) => Ok((child, events, pid)),
            (Ok(mut child), Some(Err(e))) => {
                // Cannot happen in practice (the child only execs once released), but never
                // leave a process behind.
                let _ = child.start_kill();
                Err(e)
            }
            (Ok(mut child), None) => {
                let _ = child.start_kill();
                let mut err = Error::new(ErrorKind::Other, "spawn")
                    .with_backend(backend)
                    .with_detail(format!("`{program}` started without reporting its pid"));
                if let Some(pid) = child.id().and_then(|p| Pid::from_raw(p as i32)) {
                    err = err.with_pid(pid);
                }
                Err(err)
            }
            (Err(spawn_err), Some(Err(watch_err))) => {
                tracing::debug!(%spawn_err, "child aborted before exec because its watch failed");
                Err(watch_err.with_detail(
                    "spawn stopped the new process before it ran the program, and reaped it",
                ))
            }
            (Err(spawn_err), armed) => {
                if let Some(Ok((_, _, pidfd))) = &armed {
                    // The child was released; `spawn` failed after that. If exec failed, std
                    // has reaped it already and this is a no-op; otherwise (the runtime
                    // failed to take the child over) it is killed and reaped here.
                    sys_reap_released(pidfd);
                }
                // The program's own failure to start (ENOENT, EACCES, ENOEXEC) is not about a
                // process id: keep `NoSuchProcess` for pids.
                let kind = match spawn_err.kind() {
                    std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                    _ => ErrorKind::Other,
                };
                Err(Error::new(kind, "spawn")
                    .with_backend(backend)
                    .with_detail(format!("could not start `{program}`"))
                    .with_source(spawn_err))
            }
        }
    }

    /// Runs beside `spawn`: reads the child's pid, arms its watch, then releases the child
    /// (or tells it to give up). Returns `None` if no child reported.
    fn arm_child(
        &self,
        report_r: OwnedFd,
        release_w: OwnedFd,
        done: &OwnedFd,
        interests: &[Interest],
        prepare: &(dyn Fn(Pid) + Sync),
    ) -> Option<Result<Armed, Error>> {
        // An explicit answer, not only EOF: a child forked at the same moment by another
        // thread holds a copy of `release_w` until it execs, which would delay the EOF.
        let answer = |byte: u8| {
            let _ = rustix::io::write(&release_w, &[byte]);
        };
        let Some(pid) = read_pid(&report_r, done) else {
            answer(sys::HOLD_ABORT);
            return None;
        };
        // A handle on this very process while it is certainly alive (it is waiting for us),
        // so that a failure after its release can never hit a reused pid.
        let pidfd = rustix::process::pidfd_open(pid.to_rustix(), PidfdFlags::empty()).ok();
        let mut streams = Vec::with_capacity(interests.len());
        for &interest in interests {
            match self.watch(pid, interest) {
                Ok(events) => streams.push(events),
                Err(e) => {
                    answer(sys::HOLD_ABORT);
                    return Some(Err(e));
                }
            }
        }
        // Its status is tokio's: a reaper must never take it.
        crate::orphans::orphans().note_own(pid);
        prepare(pid);
        answer(sys::HOLD_GO);
        Some(Ok((pid, streams, pidfd)))
    }
}

/// Reads the 4-byte pid the held child reports, until `done` says `spawn` returned first
/// (the fork failed) or a generous deadline passes.
fn read_pid(report_r: &OwnedFd, done: &OwnedFd) -> Option<Pid> {
    let deadline = Instant::now() + REPORT_TIMEOUT;
    let mut bytes = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let ts = rustix::time::Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut fds = [
            PollFd::new(report_r, PollFlags::IN),
            PollFd::new(done, PollFlags::IN),
        ];
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => return None,
        }
        if fds[0].revents().is_empty() {
            if !fds[1].revents().is_empty() {
                return None; // spawn returned before any child reported: the fork failed
            }
            continue;
        }
        match rustix::io::read(report_r, &mut bytes[got..]) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(Errno::INTR) | Err(Errno::AGAIN) => {}
            Err(_) => return None,
        }
    }
    Pid::from_raw(i32::from_ne_bytes(bytes))
}

/// A close-on-exec pipe whose ends are above the standard streams: `Command` installs the
/// child's stdio on fds 0–2 before the hook runs, which would overwrite a pipe end there (a
/// program whose own fd 0, 1 or 2 is closed gets new pipes on those numbers).
fn hold_pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    let (r, w) = pipe_with(PipeFlags::CLOEXEC).map_err(|e| os("spawn pipe", e))?;
    let above = |fd: OwnedFd| -> Result<OwnedFd, Error> {
        if fd.as_raw_fd() > 2 {
            return Ok(fd);
        }
        rustix::io::fcntl_dupfd_cloexec(&fd, 3).map_err(|e| os("spawn pipe", e))
    };
    Ok((above(r)?, above(w)?))
}

/// Kills and reaps a released child whose `spawn` failed afterwards. Both steps are no-ops
/// (`ESRCH`, `ECHILD`) if std already reaped it, which it does when `exec` fails.
fn sys_reap_released(pidfd: &Option<OwnedFd>) {
    let Some(fd) = pidfd else { return };
    let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
    let _ = rustix::process::waitid(
        rustix::process::WaitId::PidFd(fd.as_fd()),
        rustix::process::WaitIdOptions::EXITED,
    );
}
