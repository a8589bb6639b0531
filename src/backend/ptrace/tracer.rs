//! The tracer process: owns every `ptrace` call and every wait of the backend.
//!
//! It is a child of the watcher's process, forked by the backend's thread, and it is a
//! separate process on purpose: a process traced by a thread of its own parent's process is,
//! to the kernel, traced by its parent, and its parent's `waitpid` then reports (and takes)
//! its ptrace stops. A `tokio::process::Child` that is also watched would see a "stopped"
//! status as its exit. Traced from another process, the tracees' real parents see exactly
//! what they would without the watcher: the tracer's wait of a tracee that exited hands the
//! exit on to the real parent (`wait_task_zombie` in the kernel), and its stops are its own.
//! The tracer's only waitable processes are its tracees, so it may `waitpid(-1)`.
//!
//! # What can arrive in which order
//!
//! For each tracee, the kernel reports stops one at a time (a stopped tracee waits for the
//! tracer). Across tracees nothing is ordered, and in particular:
//!
//! * a new child's first stop (`PTRACE_EVENT_STOP`) can be reported before its creator's
//!   fork event, or after it (the kernel lists a new tracee ahead of its creator, and the
//!   child often stops first: about a third of the children of a fork storm here). A child
//!   whose first stop comes first is kept stopped until the creation event names it; then it
//!   is resumed. So nothing about a child reaches the watcher before its creation does.
//! * a tracee can be killed (`SIGKILL`) while it is kept stopped, before its creator's event:
//!   it is then announced (`Birth`) and its exit reported before its creation, and the
//!   registry holds both.
//! * a thread's creation event and a signal to the new thread can race the same way: a new
//!   thread is kept stopped like a process, and released as a thread (`Abandon`).
//! * the exit of a process is reported once, when the wait of its thread-group leader
//!   succeeds, which the kernel allows only once every thread is gone: that is the process
//!   exit, with the status its parent gets.
//! * a non-leader `execve` is reported as an exec event of the leader's pid, carrying the
//!   former thread id; the other threads exit (their waits are just bookkeeping) and the old
//!   leader disappears without a report.
//! * group-stops (`SIGSTOP`, `SIGTSTP`, ...) are left in place with `PTRACE_LISTEN`, and
//!   every other signal is delivered unchanged, so a traced program and its shell's job
//!   control behave as without the watcher.

use super::wire::{Kind, Record, DATAGRAM};
use crate::clock;
use crate::sys::ptrace as pt;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use std::collections::{HashMap as StdMap, HashSet as StdSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

/// Hashes a task id with one multiplication: the tracer looks tasks up at every stop, and
/// ids come from the kernel, not from someone choosing collisions.
#[derive(Default)]
struct TidHasher(u64);

impl Hasher for TidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_i32(&mut self, id: i32) {
        self.0 = (id as u32 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type HashMap<K, V> = StdMap<K, V, BuildHasherDefault<TidHasher>>;
type HashSet<K> = StdSet<K, BuildHasherDefault<TidHasher>>;

/// Above this many bytes of records not yet sent, the tracer stops taking new stops: the
/// tracees that stop wait, stopped, until the watcher has read (backpressure, not loss).
const OUT_LIMIT: usize = 4 * DATAGRAM;

/// One traced thread.
struct Task {
    tgid: i32,
    /// Whether its first stop has been seen (seized threads have none).
    started: bool,
    /// Interrupted so that it can be detached at its next stop.
    detaching: bool,
}

/// A new task kept stopped because its first stop came before its creation event.
struct Held {
    /// The wait status of that first stop.
    status: i32,
    /// Whether it is a process (a thread-group leader) rather than a thread.
    process: bool,
    /// Its process and that process's parent, read from `/proc` once something needs them
    /// (most held tasks are claimed by their creation event a moment later, unread).
    ids: Option<(i32, i32)>,
    since: Instant,
}

/// How long a new process is kept waiting for its creation event before it is reported as a
/// child of its parent process instead (see [`Tracer::expire_held`]).
const HELD_PATIENCE: Duration = Duration::from_secs(1);

/// One traced process.
struct Proc {
    /// The highest ticket it was attached with (see `Kind::Detach`).
    ticket: u64,
    threads: u32,
    /// Whether it ever had more than one thread.
    multi: bool,
    detaching: bool,
    /// Whether it is kept stopped at its creation and its execs until released (a stream
    /// with `Interest::HOLD` follows it); its children inherit this.
    hold: bool,
    /// The thread kept stopped at an event, and the wait status to resume it from.
    stopped_at: Option<(i32, i32)>,
}

impl Proc {
    fn new(ticket: u64, hold: bool) -> Proc {
        Proc {
            ticket,
            threads: 1,
            multi: false,
            detaching: false,
            hold,
            stopped_at: None,
        }
    }
}

/// A held child whose creator is kept stopped at its fork event until the child's first
/// stop: a process to hold is reported only once it is certainly stopped.
struct Awaited {
    /// The creator's thread, kept stopped (0 once the creator is gone).
    parent_tid: i32,
    parent: i32,
    /// Whether its `Fork` was reported already (its creator died first).
    reported: bool,
}

/// A stop status that resumes with `PTRACE_CONT` and no signal.
const TRAP_STATUS: i32 = (libc::SIGTRAP << 8) | 0x7f;

/// A process that died abruptly, whose exit is not reported yet (see [`Tracer::exited`]).
struct Dying {
    pid: i32,
    status: i32,
    until: Instant,
}

/// How long the exit of a process that died abruptly waits for a child it created as it died.
const DYING_PATIENCE: Duration = Duration::from_millis(20);

/// The tracer's state.
struct Tracer {
    sock: OwnedFd,
    options: libc::c_int,
    /// The doorbell process (see [`run`]).
    bell: i32,
    /// The `SIGALRM` interval set, if any.
    ticking: Option<Duration>,
    tasks: HashMap<i32, Task>,
    procs: HashMap<i32, Proc>,
    /// New tasks whose first stop came before their creation event: kept stopped.
    held: HashMap<i32, Held>,
    /// Held tasks that were killed before their creation event came.
    died_held: HashSet<i32>,
    /// Processes that died abruptly, oldest first, whose exits wait for orphans.
    dying: Vec<Dying>,
    /// New processes to hold whose first stop has not come yet.
    awaiting: HashMap<i32, Awaited>,
    out: Vec<u8>,
    /// Whether `out` holds a record that is waited for.
    urgent: bool,
    /// When `out` was last sent.
    last_flush: Instant,
    inbuf: Vec<u8>,
    /// New tasks' first stops seen before their creation events, and after.
    first_stops: [u64; 2],
    /// Whether a stream wants command lines (`Kind::ArgvFrom`): each exec stop then reads
    /// the process's, while it is stopped there, into this buffer.
    argv: Option<Vec<u8>>,
}

/// Runs the tracer on `sock` until told to stop or the watcher goes away; the return value is
/// the process's exit code. When it exits, the kernel detaches every tracee (or, with
/// `PTRACE_O_EXITKILL` in `options`, kills them).
///
/// The tracer sleeps in a blocking `waitpid` alone, as the smallest follower would, and
/// handles one stop or exit per call. Its commands are announced by its doorbell process,
/// whose stop that `waitpid` reports (`pt::fork_doorbell`); its deadlines by `SIGALRM`,
/// which interrupts the wait. What a stop produced is sent before the next wait if nothing
/// was sent for [`FLUSH_GAP`], or if it is waited for (an answer, a held process);
/// otherwise at the next tick, at most [`FLUSH_GAP`] later: each send wakes the watcher's
/// reader thread and the stream's consumer, which in a storm of events would cost the two
/// of them more CPU than the tracer itself.
pub(crate) fn run(sock: OwnedFd, options: libc::c_int) -> i32 {
    if rustix::io::ioctl_fionbio(&sock, true).is_err() || pt::interruptible_by_ticks().is_err() {
        return 2;
    }
    let Ok(bell) = pt::fork_doorbell(&sock) else {
        return 2;
    };
    let mut t = Tracer {
        sock,
        options,
        bell,
        ticking: None,
        urgent: false,
        last_flush: Instant::now(),
        tasks: HashMap::default(),
        procs: HashMap::default(),
        held: HashMap::default(),
        died_held: HashSet::default(),
        dying: Vec::new(),
        awaiting: HashMap::default(),
        out: Vec::with_capacity(DATAGRAM),
        inbuf: vec![0u8; DATAGRAM],
        first_stops: [0; 2],
        argv: None,
    };
    let code = t.serve();
    // Reaped here, not left to whoever would inherit it (a subreaper program's own reaper).
    pt::end_doorbell(t.bell);
    code
}

impl Tracer {
    /// The tracer's loop (see [`run`]); its return value is the exit code.
    fn serve(&mut self) -> i32 {
        let mut ticked = false;
        loop {
            self.expire_held();
            self.expire_dying();
            if !self.out.is_empty()
                && (self.urgent
                    || ticked
                    || self.out.len() >= DATAGRAM
                    || self.last_flush.elapsed() >= FLUSH_GAP)
            {
                if !self.flush() {
                    return 0;
                }
                if self.out.len() >= OUT_LIMIT {
                    // The watcher is behind: take no stop until it has read (backpressure, not
                    // loss); the tracees that stop meanwhile wait, stopped.
                    if !self.wait_for_watcher() {
                        return 0;
                    }
                    continue;
                }
            }
            self.tick_for_deadlines(ticked);
            ticked = false;
            match pt::wait_any(true) {
                Ok(Some((pid, status))) if pid == self.bell => {
                    if !self.doorbell(status) {
                        return 0;
                    }
                }
                Ok(Some((tid, status))) => self.handle(tid, status),
                Ok(None) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => ticked = true,
                Err(_) => return 3, // ECHILD: the doorbell is always there
            }
        }
    }
}

/// How long records may wait to be sent while events keep coming (see [`run`]).
const FLUSH_GAP: Duration = Duration::from_micros(500);

fn stamped(kind: Kind, a: i32, b: i32, c: i32) -> Record {
    let now = clock::now();
    Record {
        kind,
        a,
        b,
        c,
        mono: now.mono,
        boot: now.boot,
    }
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

impl Tracer {
    fn emit(&mut self, r: Record) {
        // An answer, and a process kept stopped, are waited for: they go out at once.
        self.urgent |= matches!(r.kind, Kind::Reply | Kind::Hold);
        r.put(&mut self.out);
    }

    /// Reports an exec of process `pid`, which is stopped at it, with its command line when a
    /// stream wants it (the process is stopped, so it is always there).
    fn emit_exec(&mut self, pid: i32) {
        let r = stamped(Kind::Exec, pid, 0, 0);
        let Some(buf) = &mut self.argv else {
            return self.emit(r);
        };
        let read = crate::procfs::read_cmdline_bytes(pid, buf);
        let argv = read.map(|more| (&buf[..buf.len().min(crate::Argv::MAX_BYTES)], more));
        super::wire::put_exec(&mut self.out, r, argv);
    }

    /// Sends what is queued, as far as the socket takes it. False if the watcher is gone.
    fn flush(&mut self) -> bool {
        let mut sent = 0;
        while sent < self.out.len() {
            let end = (sent + DATAGRAM).min(self.out.len());
            match rustix::net::send(&self.sock, &self.out[sent..end], SendFlags::NOSIGNAL) {
                Ok(_) => sent = end,
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => {}
                Err(_) => return false,
            }
        }
        self.out.drain(..sent);
        self.last_flush = Instant::now();
        self.urgent &= !self.out.is_empty();
        true
    }

    /// Reads and carries out the watcher's commands. False when told to stop, or when the
    /// watcher is gone.
    fn commands(&mut self) -> bool {
        let mut buf = std::mem::take(&mut self.inbuf);
        let go_on = self.read_commands(&mut buf);
        self.inbuf = buf;
        go_on
    }

    fn read_commands(&mut self, buf: &mut [u8]) -> bool {
        loop {
            let n = match rustix::net::recv(&self.sock, &mut *buf, RecvFlags::DONTWAIT) {
                Ok((0, _)) => return false,
                Ok((n, _)) => n,
                Err(Errno::AGAIN) => return true,
                Err(Errno::INTR) => continue,
                Err(_) => return false,
            };
            let records: Vec<Record> = Record::parse(&buf[..n]).collect();
            for r in records {
                match r.kind {
                    Kind::Attach => self.attach(r.a, r.b, r.mono, r.c != 0),
                    Kind::Detach => self.detach(r.a, r.mono),
                    Kind::Release => self.release(r.a),
                    Kind::HoldFrom => {
                        if let Some(p) = self.procs.get_mut(&r.a) {
                            p.hold = r.c != 0;
                        }
                    }
                    Kind::ArgvFrom => {
                        self.argv = (r.c != 0).then(|| self.argv.take().unwrap_or_default());
                    }
                    Kind::Stop => return false,
                    Kind::Clock => self.emit(stamped(Kind::Reply, 0, r.b, 0)),
                    Kind::Count => {
                        let mut answer = Record::new(Kind::Reply, 0).with(r.b, 0);
                        answer.mono = self.first_stops[0];
                        answer.boot = self.first_stops[1];
                        self.emit(answer);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Seizes process `pid` and every thread it has, and answers request `req`.
    fn attach(&mut self, pid: i32, req: i32, ticket: u64, hold: bool) {
        let answer = |t: &mut Tracer, err: i32| t.emit(Record::new(Kind::Reply, 0).with(req, err));
        if let Some(p) = self.procs.get_mut(&pid) {
            p.ticket = p.ticket.max(ticket);
            p.hold |= hold;
            if p.detaching {
                // Still traced: its threads stop for the detach and are resumed instead.
                p.detaching = false;
                for t in self.tasks.values_mut().filter(|t| t.tgid == pid) {
                    t.detaching = false;
                }
            }
            return answer(self, 0);
        }
        // Only a thread-group leader names a process.
        if !pt::thread_of(pid, pid) {
            return answer(self, libc::ESRCH);
        }
        let before = last_pid();
        if let Err(e) = self.seize_process(pid, ticket) {
            return answer(self, errno(&e));
        }
        if let Some(p) = self.procs.get_mut(&pid) {
            p.hold = hold;
        }
        self.catch_up(pid, before);
        answer(self, 0);
    }

    /// Seizes process `pid`: its leader, then its other threads until a listing shows none
    /// untraced.
    fn seize_process(&mut self, pid: i32, ticket: u64) -> std::io::Result<()> {
        pt::seize(pid, self.options)?;
        self.tasks.insert(
            pid,
            Task {
                tgid: pid,
                started: true,
                detaching: false,
            },
        );
        self.procs.insert(pid, Proc::new(ticket, false));
        while self.seize_threads(pid) {}
        Ok(())
    }

    /// Seizes the threads of `pid` that `/proc` lists and that are not traced yet; whether
    /// there were any. (A thread created by a traced one is traced already: its seize fails,
    /// and its creation event says so.)
    fn seize_threads(&mut self, pid: i32) -> bool {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        let mut added = false;
        for entry in dir.flatten() {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if self.tasks.contains_key(&tid) || self.held.contains_key(&tid) {
                continue;
            }
            if pt::seize(tid, self.options).is_ok() {
                self.tasks.insert(
                    tid,
                    Task {
                        tgid: pid,
                        started: true,
                        detaching: false,
                    },
                );
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.threads += 1;
                    p.multi = true;
                }
                added = true;
            }
        }
        added
    }

    /// Makes sure that nothing process `pid` created while it was being seized escaped. A
    /// thread already inside `clone` when it was seized creates its child untraced, and
    /// reports nothing. So each thread is stopped once (`PTRACE_INTERRUPT`: the stop comes
    /// after a `clone` in progress returns) and let go at once; threads that appeared
    /// meanwhile are seized; and if pids were handed out since `before` (`ns_last_pid`), those
    /// that name a child process of `pid` not traced yet are seized too, and reported as its
    /// forks, the same way, all the way down.
    fn catch_up(&mut self, pid: i32, before: Option<i64>) {
        loop {
            let tids: Vec<i32> = self
                .tasks
                .iter()
                .filter(|(_, t)| t.tgid == pid)
                .map(|(&tid, _)| tid)
                .collect();
            for &tid in &tids {
                // Fails only if the thread is gone.
                let _ = pt::interrupt(tid);
            }
            for tid in tids {
                self.wait_interrupted(tid);
            }
            if !self.seize_threads(pid) {
                break;
            }
        }
        let (Some(before), Some(after)) = (before, last_pid()) else {
            return;
        };
        if before == after {
            return;
        }
        for child in self.untraced_children(pid, before, after) {
            let then = last_pid();
            let hold = self.procs.get(&pid).is_some_and(|p| p.hold);
            if self.seize_process(child, 0).is_ok() {
                if let Some(p) = self.procs.get_mut(&child) {
                    p.hold = hold;
                }
                self.emit(stamped(Kind::Fork, pid, child, 0));
                self.catch_up(child, then);
            }
        }
    }

    /// Waits for thread `tid`'s next stop, which the interrupt guarantees (it may be another
    /// trap, such as an event, which then takes the interrupt's place), and lets it go on.
    fn wait_interrupted(&mut self, tid: i32) {
        let status = loop {
            match pt::wait_tracee(tid) {
                Ok(status) => break status,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(_) => return,
            }
        };
        let event = (status >> 16) & 0xff;
        if libc::WIFSTOPPED(status) && event == libc::PTRACE_EVENT_STOP {
            self.resume_first(tid, status);
        } else {
            self.handle(tid, status);
        }
    }

    /// Child processes of `pid` that are not traced, among the pids handed out after `before`
    /// up to `after` (all of `/proc` if that range is large or wrapped).
    fn untraced_children(&self, pid: i32, before: i64, after: i64) -> Vec<i32> {
        let candidates: Vec<i32> = if after > before && after - before <= 4096 {
            ((before + 1) as i32..=after as i32).collect()
        } else {
            std::fs::read_dir("/proc")
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        candidates
            .into_iter()
            .filter(|c| !self.tasks.contains_key(c) && !self.held.contains_key(c))
            .filter(|&c| ppid_of(c) == Some(pid) && pt::thread_of(c, c))
            .collect()
    }

    /// Stops tracing process `pid`: each of its threads is interrupted and detached at its
    /// next stop. Ignored if the process was attached again after the watcher decided it.
    fn detach(&mut self, pid: i32, ticket: u64) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if p.ticket > ticket {
            return;
        }
        p.detaching = true;
        let stopped = p.stopped_at.take().map(|(tid, _)| tid);
        if let Some(tid) = stopped {
            // Stopped already: an interrupt would only take effect after a resume.
            self.let_go(tid, 0);
        }
        for (&tid, t) in self.tasks.iter_mut().filter(|(_, t)| t.tgid == pid) {
            t.detaching = true;
            // Fails only if the thread is gone, and then its exit is waited for anyway.
            let _ = pt::interrupt(tid);
        }
    }

    /// Lets process `pid` run on from the event it is held at.
    fn release(&mut self, pid: i32) {
        let stopped = self.procs.get_mut(&pid).and_then(|p| p.stopped_at.take());
        if let Some((tid, status)) = stopped {
            self.resume_first(tid, status);
        }
    }

    /// Keeps held process `pid` stopped where thread `tid` is (resumed with `status`), and
    /// says so after the event just reported.
    fn keep_stopped(&mut self, pid: i32, tid: i32, status: i32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.stopped_at = Some((tid, status));
        }
        self.emit(stamped(Kind::Hold, pid, 0, 0));
    }

    /// The doorbell rang (it stopped): reads the commands and lets it watch again. A
    /// doorbell that died (killed by someone) is replaced. False when the tracer is to stop.
    fn doorbell(&mut self, status: i32) -> bool {
        if libc::WIFSTOPPED(status) {
            if !self.commands() {
                return false;
            }
            pt::ring_again(self.bell);
            return true;
        }
        match pt::fork_doorbell(&self.sock) {
            Ok(bell) => {
                self.bell = bell;
                true
            }
            Err(_) => false,
        }
    }

    /// While the watcher is behind: waits until the socket takes more, or a command comes,
    /// or a deadline is due. False when the tracer is to stop.
    fn wait_for_watcher(&mut self) -> bool {
        let mut fds = [PollFd::new(&self.sock, PollFlags::IN | PollFlags::OUT)];
        let tick = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 5_000_000,
        };
        let timeout = (!self.held.is_empty() || !self.dying.is_empty()).then_some(&tick);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(_) => return false,
        }
        let ready = fds[0].revents();
        if ready.contains(PollFlags::IN) && !self.commands() {
            return false;
        }
        // A hang-up with nothing left to read: the watcher is gone.
        !ready.contains(PollFlags::HUP) || ready.contains(PollFlags::IN)
    }

    /// Keeps `SIGALRM` ticking while something waits: every [`FLUSH_GAP`] while records
    /// wait to be sent or have just been, every 5 ms while an exit waits for orphans, every
    /// 100 ms while only new processes wait for their creation events. A faster tick starts
    /// at once; a slower one, or none, only once a tick has come (`ticked`), so that a busy
    /// tracer does not re-arm the timer at every event.
    fn tick_for_deadlines(&mut self, ticked: bool) {
        // Records sent within the last two gaps say that more are likely to come: the tick
        // stays, rather than being stopped and started again with each batch.
        let flowing = !self.out.is_empty() || self.last_flush.elapsed() < 2 * FLUSH_GAP;
        let want = if flowing {
            Some(FLUSH_GAP)
        } else if !self.dying.is_empty() {
            Some(Duration::from_millis(5))
        } else if !self.held.is_empty() {
            Some(Duration::from_millis(100))
        } else {
            None
        };
        let faster = match (want, self.ticking) {
            (Some(w), Some(now)) => w < now,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if want != self.ticking && (faster || ticked) {
            pt::tick_every(want);
            self.ticking = want;
        }
    }

    fn handle(&mut self, tid: i32, status: i32) {
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return self.exited(tid, status);
        }
        if !libc::WIFSTOPPED(status) {
            return;
        }
        let sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        let Some(task) = self.tasks.get_mut(&tid) else {
            // A new task whose creation event has not come yet: keep it stopped until then.
            self.first_stops[0] += 1;
            let process = pt::thread_of(tid, tid);
            self.held.insert(
                tid,
                Held {
                    status,
                    process,
                    ids: None,
                    since: Instant::now(),
                },
            );
            if process && !self.dying.is_empty() {
                let (_, ppid) = self.held_ids(tid);
                if let Some(creator) = self.dead_creator(ppid) {
                    return self.adopt_held(creator, tid);
                }
            }
            return;
        };
        if !task.started {
            task.started = true;
            self.first_stops[1] += 1;
            if let Some(a) = self.awaiting.remove(&tid) {
                // A process to hold, stopped now: report it, and let its creator go on.
                if !a.reported {
                    self.emit(stamped(Kind::Fork, a.parent, tid, 0));
                }
                self.keep_stopped(tid, tid, status);
                if a.parent_tid != 0 {
                    self.resume(a.parent_tid, 0);
                }
                return;
            }
            if event == libc::PTRACE_EVENT_STOP {
                return self.resume_first(tid, status);
            }
        }
        match event {
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                let go_on = match pt::event_msg(tid) {
                    Ok(child) => self.created(tid, child as i32, event),
                    Err(_) => true,
                };
                if go_on {
                    self.resume(tid, 0);
                }
            }
            libc::PTRACE_EVENT_EXEC => {
                let tgid = task.tgid;
                let former = pt::event_msg(tid).map(|m| m as i32).unwrap_or(tid);
                if former != tid && self.tasks.remove(&former).is_some() {
                    if let Some(p) = self.procs.get_mut(&tgid) {
                        p.threads = p.threads.saturating_sub(1);
                    }
                }
                self.emit_exec(tgid);
                if self.procs.get(&tgid).is_some_and(|p| p.hold) {
                    self.keep_stopped(tgid, tid, TRAP_STATUS);
                } else {
                    self.resume(tid, 0);
                }
            }
            libc::PTRACE_EVENT_STOP if is_stop_signal(sig) => self.group_stop(tid),
            libc::PTRACE_EVENT_STOP => self.resume(tid, 0),
            // A stop signal that a `SIGCONT` has followed while it was held up here: the
            // kernel would have discarded it, had it not been on its way already.
            0 if is_stop_signal(sig) && sigcont_pending(tid) => self.resume(tid, 0),
            0 => self.resume(tid, sig), // signal-delivery-stop: deliver it
            _ => self.resume(tid, 0),
        }
    }

    /// Resumes a new task at its first stop: in group-stop if its process is stopped.
    fn resume_first(&mut self, tid: i32, status: i32) {
        if is_stop_signal(libc::WSTOPSIG(status)) {
            self.group_stop(tid);
        } else {
            self.resume(tid, 0);
        }
    }

    /// Leaves a tracee in group-stop stopped, as it would be untraced.
    fn group_stop(&mut self, tid: i32) {
        if self.tasks.get(&tid).is_some_and(|t| t.detaching) {
            return self.let_go(tid, 0);
        }
        let _ = pt::listen(tid);
    }

    /// Resumes a tracee delivering `sig`, or lets it go if its process is being detached.
    fn resume(&mut self, tid: i32, sig: i32) {
        if self.tasks.get(&tid).is_some_and(|t| t.detaching) {
            return self.let_go(tid, sig);
        }
        // Fails only if the tracee was killed meanwhile; its exit comes next.
        let _ = pt::cont(tid, sig);
    }

    /// Detaches a stopped tracee, delivering `sig`.
    fn let_go(&mut self, tid: i32, sig: i32) {
        let _ = pt::detach(tid, sig);
        self.forget_task(tid);
    }

    fn forget_task(&mut self, tid: i32) {
        let Some(t) = self.tasks.remove(&tid) else {
            return;
        };
        let gone = match self.procs.get_mut(&t.tgid) {
            Some(p) => {
                p.threads = p.threads.saturating_sub(1);
                p.threads == 0
            }
            None => false,
        };
        if gone {
            self.procs.remove(&t.tgid);
        }
    }

    /// Thread `tid` created task `child` (a process, or a thread with `PTRACE_EVENT_CLONE`).
    /// Returns whether `tid` may go on now (not when a child to hold has yet to stop).
    fn created(&mut self, tid: i32, child: i32, event: i32) -> bool {
        let Some(tgid) = self.tasks.get(&tid).map(|t| t.tgid) else {
            return true;
        };
        let hold = self.procs.get(&tgid).is_some_and(|p| p.hold);
        let is_thread = event == libc::PTRACE_EVENT_CLONE && pt::thread_of(tgid, child);
        let held = self.held.remove(&child);
        let died = self.died_held.remove(&child);
        let owner = if is_thread { tgid } else { child };
        if !died {
            self.tasks.insert(
                child,
                Task {
                    tgid: owner,
                    started: held.is_some(),
                    detaching: false,
                },
            );
            if is_thread {
                if let Some(p) = self.procs.get_mut(&tgid) {
                    p.threads += 1;
                    p.multi = true;
                }
            } else {
                self.procs.insert(child, Proc::new(0, hold));
            }
        }
        if is_thread {
            if held.is_some() || died {
                self.emit(stamped(Kind::Abandon, child, 0, 0));
            }
        } else if hold && !died && held.is_none() {
            // Reported once it is certainly stopped (its first stop), its creator waiting.
            self.awaiting.insert(
                child,
                Awaited {
                    parent_tid: tid,
                    parent: tgid,
                    reported: false,
                },
            );
            return false;
        } else {
            self.emit(stamped(Kind::Fork, tgid, child, 0));
        }
        if let Some(h) = held {
            if hold && !is_thread {
                self.keep_stopped(child, child, h.status);
            } else {
                self.resume_first(child, h.status);
            }
        }
        true
    }

    /// Process `pid` died abruptly: the new processes it created whose creation event never
    /// came (it was killed between creating them and reporting it: a tracee with a fatal
    /// signal pending does not stop) are its children, and are let run; its new threads die
    /// with it. Held processes whose parent is not traced were reparented when `pid` died,
    /// and are its children too. (A process that exits normally reported every creation
    /// before its exit; a held process whose parent it was came from a `CLONE_PARENT`
    /// creator, whose event names it.)
    fn orphaned_by(&mut self, pid: i32) {
        let tids: Vec<i32> = self.held.keys().copied().collect();
        let mut mine = Vec::new();
        for tid in tids {
            let (tgid, ppid) = self.held_ids(tid);
            let reparented = !self.procs.contains_key(&ppid);
            if (tgid == tid && (ppid == pid || reparented)) || (tgid == pid && tid != pid) {
                mine.push((tid, tgid == tid));
            }
        }
        for (tid, process) in mine {
            if process {
                self.adopt_held(pid, tid);
            } else if self.held.remove(&tid).is_some() {
                let _ = pt::cont(tid, 0);
            }
        }
    }

    /// The process that died abruptly and created a new process whose parent is now `ppid`:
    /// `ppid` itself, or, when `ppid` is not traced (the new process was reparented when
    /// its creator died), the latest such death.
    fn dead_creator(&self, ppid: i32) -> Option<i32> {
        if let Some(d) = self.dying.iter().find(|d| d.pid == ppid) {
            return Some(d.pid);
        }
        if self.procs.contains_key(&ppid) {
            return None;
        }
        self.dying.last().map(|d| d.pid)
    }

    /// Reports the exits that waited long enough for orphans.
    fn expire_dying(&mut self) {
        if self.dying.is_empty() {
            return;
        }
        let now = Instant::now();
        while self.dying.first().is_some_and(|d| d.until <= now) {
            let d = self.dying.remove(0);
            self.emit(stamped(Kind::Exit, d.pid, 0, d.status));
        }
    }

    /// Reports held process `child` as created by `parent` and lets it run.
    fn adopt_held(&mut self, parent: i32, child: i32) {
        let Some(h) = self.held.remove(&child) else {
            return;
        };
        self.tasks.insert(
            child,
            Task {
                tgid: child,
                started: true,
                detaching: false,
            },
        );
        let hold = self.procs.get(&parent).is_some_and(|p| p.hold);
        self.procs.insert(child, Proc::new(0, hold));
        self.emit(stamped(Kind::Fork, parent, child, 0));
        if hold {
            self.keep_stopped(child, child, h.status);
        } else {
            self.resume_first(child, h.status);
        }
    }

    /// A new process whose creation event has not come within [`HELD_PATIENCE`] is reported
    /// as created by its parent process. (Its creator died before reporting it, and was not
    /// its parent: a `CLONE_PARENT` child, whose parent outlives the creator.)
    fn expire_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let late: Vec<i32> = self
            .held
            .iter()
            .filter(|(_, h)| h.process && h.since.elapsed() >= HELD_PATIENCE)
            .map(|(&tid, _)| tid)
            .collect();
        for tid in late {
            let (_, ppid) = self.held_ids(tid);
            self.adopt_held(ppid, tid);
        }
    }

    /// The process and parent process of held task `tid` (read once, from `/proc`).
    fn held_ids(&mut self, tid: i32) -> (i32, i32) {
        let Some(h) = self.held.get_mut(&tid) else {
            return (tid, 0);
        };
        *h.ids.get_or_insert_with(|| ids_of(tid))
    }

    /// Task `tid` is gone, with wait status `status`.
    fn exited(&mut self, tid: i32, status: i32) {
        if let Some(h) = self.held.remove(&tid) {
            // Killed while kept stopped: its creation event is still to come, so the watcher
            // is told of it first.
            self.died_held.insert(tid);
            if h.process {
                self.emit(stamped(Kind::Birth, tid, 0, 0));
            }
            self.emit(stamped(Kind::Exit, tid, 0, status));
            return;
        }
        if let Some(a) = self.awaiting.remove(&tid) {
            // A process to hold killed before its first stop: its creation comes first.
            if !a.reported {
                self.emit(stamped(Kind::Fork, a.parent, tid, 0));
            }
            if a.parent_tid != 0 {
                self.resume(a.parent_tid, 0);
            }
        }
        let Some(t) = self.tasks.get(&tid) else {
            return;
        };
        let tgid = t.tgid;
        if tgid != tid {
            return self.forget_task(tid);
        }
        // Children to hold that it created and had not seen stop yet: reported before its exit.
        let waiting: Vec<i32> = self
            .awaiting
            .iter()
            .filter(|(_, a)| a.parent == tgid && !a.reported)
            .map(|(&c, _)| c)
            .collect();
        for child in waiting {
            self.emit(stamped(Kind::Fork, tgid, child, 0));
            if let Some(a) = self.awaiting.get_mut(&child) {
                a.reported = true;
                a.parent_tid = 0;
            }
        }
        // The leader's wait succeeds only once every thread is gone: the process exit.
        // Killed by a signal, or by another thread's exit, while it was creating a process,
        // it did not stop to report that process (a fatal signal skips ptrace stops): the new
        // process still makes its first stop, a moment later. Such an exit waits a little for
        // it, so that its creation comes first.
        let abrupt = libc::WIFSIGNALED(status) || self.procs.get(&tgid).is_some_and(|p| p.multi);
        self.tasks.retain(|_, t| t.tgid != tgid);
        self.procs.remove(&tgid);
        if abrupt && !self.held.is_empty() {
            self.orphaned_by(tgid);
        }
        if abrupt {
            self.dying.push(Dying {
                pid: tgid,
                status,
                until: Instant::now() + DYING_PATIENCE,
            });
        } else {
            self.emit(stamped(Kind::Exit, tid, 0, status));
        }
    }
}

/// Whether a `SIGCONT` is pending for thread `tid` or its process (`/proc/<tid>/status`).
fn sigcont_pending(tid: i32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return false;
    };
    let bit = 1u64 << (libc::SIGCONT - 1);
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("SigPnd:")
                .or_else(|| l.strip_prefix("ShdPnd:"))
        })
        .filter_map(|v| u64::from_str_radix(v.trim(), 16).ok())
        .any(|mask| mask & bit != 0)
}

/// The last pid handed out in this pid namespace (`/proc/sys/kernel/ns_last_pid`).
fn last_pid() -> Option<i64> {
    std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The parent of process `pid`, from `/proc/<pid>/stat`.
fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The process (`Tgid`) and parent process (`PPid`) of task `tid`, from `/proc`; `tid`
/// itself and 0 where unreadable.
fn ids_of(tid: i32) -> (i32, i32) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return (tid, 0);
    };
    let field = |key: &str| -> Option<i32> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
    };
    (field("Tgid:").unwrap_or(tid), field("PPid:").unwrap_or(0))
}

impl Record {
    /// The same record with `b` and `c` set.
    pub(crate) fn with(mut self, b: i32, c: i32) -> Record {
        self.b = b;
        self.c = c;
        self
    }
}
