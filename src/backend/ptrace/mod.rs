//! The ptrace backend: a tracer process seizes each watched process and, through
//! `PTRACE_O_TRACEFORK`/`VFORK`/`CLONE`, every process it creates; a thread of the watcher's
//! process reads what the tracer reports and feeds the registry.
//!
//! Why the tracer is a process of its own, and which stops can come in which order, is
//! written at the top of [`tracer`]. The watcher side only sends commands (attach, detach,
//! stop) and applies records. Dropping the watcher closes the socket: the tracer exits and
//! the kernel detaches every tracee, stopped or not (each one continues, its pending signal
//! delivered; one in group-stop stays stopped, as it would untraced).

mod tracer;
mod wire;

use super::Backend;
use crate::loom::Arc;
use crate::registry::{Actions, Input, ProcSnapshot, Stamp};
use crate::shared::Shared;
use crate::sys::ptrace as pt;
use crate::{clock, procfs, BackendKind, Error, ErrorKind, Pid, PtraceOptions};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use wire::{Kind, Record, DATAGRAM};

/// How long `watch` waits for the tracer to answer an attach.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The running backend.
pub(crate) struct Ptrace {
    sock: std::sync::Arc<OwnedFd>,
    answers: std::sync::Arc<Answers>,
    tracer: i32,
    shared: Arc<Shared>,
    /// Whether the tracer was last told to read command lines (see `sync_argv`), and
    /// whether it has answered since.
    argv_sent: Mutex<(bool, bool)>,
}

/// Requests waiting for the tracer's answer, and how to read its clocks.
#[derive(Default)]
struct Answers {
    state: Mutex<AnswerState>,
    cond: Condvar,
    /// How far the tracer's `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` are ahead of this
    /// process's (see [`clock_offsets`]).
    mono_ahead: AtomicI64,
    boot_ahead: AtomicI64,
}

#[derive(Default)]
struct AnswerState {
    next: i32,
    /// Request number → the answer.
    done: HashMap<i32, Record>,
    /// The tracer is gone: no answer will come.
    dead: bool,
}

fn fail(op: &'static str, e: std::io::Error) -> Error {
    Error::io(op, e).with_backend(BackendKind::Ptrace)
}

impl Ptrace {
    /// Starts the tracer process and the thread that reads it.
    pub(crate) fn start(shared: Arc<Shared>, opts: &PtraceOptions) -> Result<Ptrace, Error> {
        let (mine, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| fail("ptrace socketpair", e.into()))?;
        let sock = std::sync::Arc::new(mine);
        let answers = std::sync::Arc::new(Answers::default());
        let mut options = pt::OPTIONS;
        if opts.kill_on_drop {
            options |= pt::OPTION_EXITKILL;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let reader_sock = sock.clone();
        let reader_answers = answers.clone();
        let reader_shared = shared.clone();
        // The tracer is forked by this thread and dies with it (its death signal), so it
        // never outlives the watcher, even if this process is killed.
        std::thread::Builder::new()
            .name("procwatch-ptrace".into())
            .spawn(move || {
                let forked = pt::fork_tracer(&theirs, |fd| tracer::run(pt::own_fd(fd), options));
                drop(theirs);
                let tracer = match forked {
                    Ok(pid) => pid,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                // The tracer's status is this thread's to take, never a reaper's.
                if let Some(pid) = crate::Pid::from_raw(tracer) {
                    crate::orphans::orphans().note_own(pid);
                }
                let pidfd = rustix::process::Pid::from_raw(tracer).and_then(|p| {
                    rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
                });
                let _ = tx.send(Ok(tracer));
                read_tracer(&reader_sock, &reader_shared, &reader_answers);
                reap_tracer(tracer, pidfd);
            })
            .map_err(|e| fail("ptrace reader thread", e))?;
        let tracer = rx
            .recv()
            .map_err(|_| {
                fail(
                    "ptrace tracer",
                    std::io::Error::other("the reader thread ended before starting the tracer"),
                )
            })?
            .map_err(|e| fail("fork the ptrace tracer", e))?;
        let backend = Ptrace {
            sock,
            answers,
            tracer,
            shared,
            argv_sent: Mutex::new((false, false)),
        };
        backend.measure_clocks()?;
        Ok(backend)
    }

    fn send(&self, r: Record) -> Result<(), Errno> {
        let mut bytes = Vec::with_capacity(wire::RECORD);
        r.put(&mut bytes);
        loop {
            match rustix::net::send(&*self.sock, &bytes, SendFlags::NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a request (`r`, whose `b` is set here) and waits for its answer.
    fn ask(&self, mut r: Record, op: &'static str) -> Result<Record, Error> {
        let closed = || {
            Error::new(ErrorKind::Closed, op)
                .with_backend(BackendKind::Ptrace)
                .with_detail("the tracer process is gone")
        };
        let req = {
            let mut st = self.answers.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.dead {
                return Err(closed());
            }
            st.next = st.next.wrapping_add(1);
            st.next
        };
        r.b = req;
        if self.send(r).is_err() {
            return Err(closed());
        }
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut st = self.answers.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(answer) = st.done.remove(&req) {
                return Ok(answer);
            }
            if st.dead {
                return Err(closed());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(ErrorKind::Other, op)
                    .with_backend(BackendKind::Ptrace)
                    .with_detail("the tracer process did not answer within 10 s; try again"));
            }
            st = self
                .answers
                .cond
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sends an attach and waits for its answer: 0 or an errno.
    fn ask_attach(&self, pid: Pid, ticket: u64, hold: bool) -> Result<i32, Error> {
        let mut r = Record::new(Kind::Attach, pid.as_raw());
        r.mono = ticket;
        r.c = i32::from(hold);
        Ok(self.ask(r, "watch")?.c)
    }

    /// Works out how far the tracer's clocks are ahead of this process's; see
    /// [`clock_offsets`].
    fn measure_clocks(&self) -> Result<(), Error> {
        let (mono, boot) = clock_offsets(self.tracer, || {
            let before = clock::now();
            let r = self.ask(Record::new(Kind::Clock, 0), "ptrace clock")?;
            let after = clock::now();
            Ok((
                before,
                Stamp {
                    mono: r.mono,
                    boot: r.boot,
                },
                after,
            ))
        })?;
        self.answers.mono_ahead.store(mono, Ordering::SeqCst);
        self.answers.boot_ahead.store(boot, Ordering::SeqCst);
        Ok(())
    }
}

/// How far the tracer's `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` are ahead of this process's,
/// in nanoseconds. The tracer stamps what it sees with its own clocks, and those are this
/// process's unless this process unshared a time namespace without entering it (as a
/// container runtime does for what it starts): its children, the tracer among them, are then
/// in the new namespace. Same namespace (`/proc/<pid>/ns/time`): exactly 0. Otherwise the
/// tracer's clocks are read between two readings of ours (`exchange`), five times, and the
/// tightest pair gives the offset, within half its width (tens of microseconds).
fn clock_offsets(
    tracer: i32,
    mut exchange: impl FnMut() -> Result<(Stamp, Stamp, Stamp), Error>,
) -> Result<(i64, i64), Error> {
    let ns = |pid: &str| std::fs::metadata(format!("/proc/{pid}/ns/time")).map(|m| m.ino());
    match (ns("self"), ns(&tracer.to_string())) {
        (Ok(a), Ok(b)) if a != b => {}
        _ => return Ok((0, 0)),
    }
    let mut best: Option<(u64, i64, i64)> = None;
    for _ in 0..5 {
        let (before, theirs, after) = exchange()?;
        let width = after.mono.saturating_sub(before.mono);
        let mid = |a: u64, b: u64| (a / 2 + b / 2) as i64;
        let mono = theirs.mono as i64 - mid(before.mono, after.mono);
        let boot = theirs.boot as i64 - mid(before.boot, after.boot);
        if best.is_none_or(|(w, _, _)| width < w) {
            best = Some((width, mono, boot));
        }
    }
    Ok(best.map_or((0, 0), |(_, m, b)| (m, b)))
}

fn read_proc(pid: Pid) -> Result<Option<ProcSnapshot>, Error> {
    procfs::snapshot(pid)
        .map_err(|io| Error::io("watch", io).with_detail(format!("cannot read /proc/{pid}")))
}

/// What `/proc/<pid>/status` says traces `pid` (0: nothing).
fn tracer_of(pid: Pid) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Why the kernel refused to let the tracer seize `pid`, in words.
fn refusal(pid: Pid, tracer: i32) -> String {
    let by = tracer_of(pid);
    if by != 0 && by != tracer {
        return format!(
            "it is already traced by process {by} (a debugger or strace?): a process has one \
             tracer at a time"
        );
    }
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    match yama.as_str() {
        "1" => "Yama's kernel.yama.ptrace_scope is 1, which lets the tracer process trace only \
                processes started with ProcWatcher::spawn (or that allowed it with \
                prctl(PR_SET_PTRACER)); run with CAP_SYS_PTRACE or ptrace_scope 0 to watch others"
            .into(),
        "2" | "3" => format!(
            "Yama's kernel.yama.ptrace_scope is {yama}, which allows ptrace only with \
             CAP_SYS_PTRACE (or not at all)"
        ),
        _ => "the kernel refused ptrace (another user's process, a setuid program, or a \
              security module); run with CAP_SYS_PTRACE to watch it"
            .into(),
    }
}

impl Backend for Ptrace {
    fn kind(&self) -> BackendKind {
        BackendKind::Ptrace
    }

    fn tracer(&self) -> Option<i32> {
        Some(self.tracer)
    }

    /// Asks the tracer to seize the process and all its threads, then reads its `/proc`
    /// entry: from the seize on, every creation and exec is reported.
    fn attach(&self, pid: Pid, ticket: u64, hold: bool) -> Result<Option<ProcSnapshot>, Error> {
        if pid == Pid::this() {
            // The kernel would let the tracer (this process's child) trace it, and then every
            // thread of the program, the watcher's own included, would stop at each fork.
            return Err(
                Error::new(ErrorKind::PermissionDenied, "watch").with_detail(
                    "the Ptrace backend cannot watch the program it runs in (its tracer would \
                 stop the program's own threads); watch its children, or use the Netlink \
                 backend",
                ),
            );
        }
        match self.ask_attach(pid, ticket, hold)? {
            0 => read_proc(pid),
            libc::ESRCH => Ok(None),
            libc::EPERM => match read_proc(pid)? {
                // A zombie cannot be seized, but its exit can be reported.
                Some(snap) if snap.zombie.is_some() => Ok(Some(snap)),
                None => Ok(None),
                Some(_) => Err(Error::new(ErrorKind::PermissionDenied, "watch")
                    .with_detail(refusal(pid, self.tracer))),
            },
            errno => Err(Error::io("watch", std::io::Error::from_raw_os_error(errno))
                .with_detail("the tracer could not seize the process")),
        }
    }

    fn can_hold(&self) -> bool {
        true
    }

    #[cfg(any(test, feature = "bench-support"))]
    fn first_stops(&self) -> Option<(u64, u64)> {
        let r = self.ask(Record::new(Kind::Count, 0), "count").ok()?;
        Some((r.mono, r.boot))
    }

    fn set_hold(&self, changes: &[(Pid, bool)]) {
        let records = changes
            .iter()
            .map(|&(pid, hold)| Record::new(Kind::HoldFrom, pid.as_raw()).with(0, hold.into()));
        send_records(&self.sock, records);
        // The tracer reads its commands in order: once it answers this one, the changes
        // above are in effect, and a process created after `set_interest` returns is held.
        // If it is gone, nothing is traced any more.
        let _ = self.ask(Record::new(Kind::Clock, 0), "set_interest");
    }

    fn sync_argv(&self, wait: bool) {
        // Under the lock, so that what is sent last is the latest state, whichever thread
        // changed the count last.
        let mut state = self.argv_sent.lock().unwrap_or_else(|e| e.into_inner());
        let want = self.shared.argv_wanted();
        if state.0 != want {
            *state = (want, false);
            send_records(
                &self.sock,
                std::iter::once(Record::new(Kind::ArgvFrom, 0).with(0, want.into())),
            );
        }
        if want && wait && !state.1 {
            // In effect once the tracer answers (it reads its commands in order). If it is
            // gone, nothing is traced any more.
            state.1 = self
                .ask(Record::new(Kind::Clock, 0), "set_interest")
                .is_ok();
        }
    }

    fn release(&self, pids: &[Pid]) {
        send_releases(&self.sock, pids);
    }

    fn detach(&self, pids: &[(Pid, u64)]) {
        for &(pid, ticket) in pids {
            let mut r = Record::new(Kind::Detach, pid.as_raw());
            r.mono = ticket;
            // Fails only once the tracer is gone, and then nothing is traced any more.
            let _ = self.send(r);
        }
    }

    fn shutdown(&self) {
        // The tracer and the reader both see the end of the socket: the tracer exits (the
        // kernel detaches every tracee), the reader ends the streams and reaps the tracer.
        let _ = rustix::net::shutdown(&*self.sock, rustix::net::Shutdown::Both);
    }
}

impl Drop for Ptrace {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Reads the tracer's records and applies them until the socket ends, then ends the streams
/// and fails the attaches still waiting.
fn read_tracer(sock: &OwnedFd, shared: &Shared, answers: &Answers) {
    let mut buf = vec![0u8; DATAGRAM];
    let mut reader = wire::Reader::default();
    let mut replies = Vec::new();
    let mut detach = Vec::new();
    let ours = |t: u64, ahead: &AtomicI64| -> u64 {
        if t == 0 {
            return 0;
        }
        t.saturating_add_signed(-ahead.load(Ordering::Relaxed))
    };
    loop {
        let n = match rustix::net::recv(sock, &mut buf, RecvFlags::empty()) {
            Ok((0, _)) => break,
            Ok((n, _)) => n,
            Err(Errno::INTR) => continue,
            Err(_) => break,
        };
        let mut wake = Actions::default();
        {
            let mut reg = shared.lock();
            reader.feed(&buf[..n], |r, argv| {
                if r.kind == Kind::Reply {
                    replies.push((r.b, r));
                    return;
                }
                let at = Stamp {
                    mono: ours(r.mono, &answers.mono_ahead),
                    boot: ours(r.boot, &answers.boot_ahead),
                };
                let Some(a) = Pid::from_raw(r.a) else {
                    return;
                };
                match r.kind {
                    Kind::Fork => {
                        let Some(child) = Pid::from_raw(r.b) else {
                            return;
                        };
                        let input = Input::Fork {
                            parent: a,
                            child,
                            start_ns: at.boot,
                        };
                        reg.apply_at(input, at, &mut wake);
                        if !reg.follows(child) {
                            detach.push((child, reg.ticket()));
                        }
                    }
                    Kind::Exec => reg.apply_at(Input::Exec { pid: a, argv }, at, &mut wake),
                    Kind::Exit => {
                        let status = Some(ExitStatus::from_raw(r.c));
                        reg.apply_at(Input::Exit { pid: a, status }, at, &mut wake);
                    }
                    Kind::Birth => reg.apply_at(Input::Birth { pid: a }, at, &mut wake),
                    Kind::Hold => reg.apply_at(Input::Hold { pid: a }, at, &mut wake),
                    Kind::Abandon => reg.apply_at(Input::Abandon { pid: a }, at, &mut wake),
                    _ => {}
                }
            });
        }
        let released = wake.take_released();
        wake.wake_all();
        send_releases(sock, &released);
        for (pid, ticket) in detach.drain(..) {
            let mut r = Record::new(Kind::Detach, pid.as_raw());
            r.mono = ticket;
            let mut bytes = Vec::with_capacity(wire::RECORD);
            r.put(&mut bytes);
            let _ = rustix::net::send(sock, &bytes, SendFlags::NOSIGNAL);
        }
        if !replies.is_empty() {
            let mut st = answers.state.lock().unwrap_or_else(|e| e.into_inner());
            st.done.extend(replies.drain(..));
            answers.cond.notify_all();
        }
    }
    {
        let mut st = answers.state.lock().unwrap_or_else(|e| e.into_inner());
        st.dead = true;
        answers.cond.notify_all();
    }
    let mut wake = Actions::default();
    shared.lock().shutdown(&mut wake);
    wake.wake_all();
}

/// Tells the tracer to let these held processes run.
fn send_releases(sock: &OwnedFd, pids: &[Pid]) {
    send_records(
        sock,
        pids.iter()
            .map(|&pid| Record::new(Kind::Release, pid.as_raw())),
    );
}

/// Sends commands that need no answer, as few datagrams as they fit in.
fn send_records(sock: &OwnedFd, records: impl Iterator<Item = Record>) {
    let mut bytes = Vec::new();
    for r in records {
        r.put(&mut bytes);
    }
    for chunk in bytes.chunks(DATAGRAM) {
        // Fails only once the tracer is gone, and then nothing is held any more.
        let _ = rustix::net::send(sock, chunk, SendFlags::NOSIGNAL);
    }
}

/// Waits for the tracer process to exit (it is this thread's child: nothing else of this
/// program waits for it, unless some code calls `waitpid(-1)`, and then there is nothing
/// left to do).
fn reap_tracer(tracer: i32, pidfd: Option<OwnedFd>) {
    use rustix::process::{waitid, WaitId, WaitIdOptions};
    match &pidfd {
        Some(fd) => {
            let _ = waitid(
                WaitId::PidFd(rustix::fd::AsFd::as_fd(fd)),
                WaitIdOptions::EXITED,
            );
        }
        None => {
            if let Some(p) = rustix::process::Pid::from_raw(tracer) {
                let _ = waitid(WaitId::Pid(p), WaitIdOptions::EXITED);
            }
        }
    }
}
