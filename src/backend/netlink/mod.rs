//! The `Netlink` backend: the Linux proc connector (`NETLINK_CONNECTOR`, `CN_IDX_PROC`).
//!
//! A [`Drainer`] owns the receive side: it reads every queued datagram without blocking,
//! decodes them, and applies the whole batch to the registry under one short lock. It never
//! waits for a consumer: the registry folds what a slow stream has not read, so the socket
//! is emptied at the pace the kernel fills it. Two parties run it, whoever gets the lock:
//!
//! * **a task on the tokio runtime** the watcher was built in, woken by the runtime's reactor
//!   when the socket becomes readable. The consumer's tasks usually run on that same
//!   runtime, so an event costs one thread wakeup from kernel to stream. It reads at most
//!   [`TASK_BUDGET`] datagrams before yielding, and never scans `/proc` (it reads one file
//!   per exec, the command line, while a stream asks for it: see [`Drainer::read_argvs`]);
//! * **a backstop thread** (`procwatch-netlink`) that drains whatever the task has left —
//!   every 10 ms, backing off while it finds nothing to as long as the receive buffer can
//!   absorb a storm (100 ms with the default 64 MiB, which needs `CAP_NET_ADMIN`; 10 ms with
//!   a buffer capped by `net.core.rmem_max`) — so a blocked or shut-down
//!   runtime never makes the kernel drop messages; runs every `/proc` resync after a loss
//!   (woken by the task at once), so a runtime worker never blocks on a scan of `/proc`;
//!   and, when there is no runtime to run the task (or the task stopped), takes over
//!   entirely, sleeping in `poll(2)` on the socket.
//!
//! While a stream asks for command lines, a third thread (`procwatch-argv`, see [`early`])
//! keeps a second socket that hears of execs alone and reads each exec's command line the
//! moment it wakes; the drainer takes its reads, or reads itself the ones it gets to first.
//!
//! Kernel traps handled here and in the registry:
//! * a thread creation is reported like a fork, with `child_pid != child_tgid`;
//! * exits are per thread; the registry's thread set decides when the process is gone;
//! * after an `execve` from a non-leader thread, the exec is reported under the leader's pid;
//! * `ENOBUFS` means the socket overflowed: streams get `Lost`, then a `/proc` resync;
//! * messages can name a pid's previous owner (queued before it was reaped); their
//!   timestamps are compared with the tracked process's start time (with the fork message's
//!   own monotonic stamp, for a process seen being created);
//! * an exit the kernel sent but the registry never got leaves a stream waiting for ever;
//!   the backstop thread's [`audit`] looks in `/proc`, while the tracked processes are
//!   quiet, for tracked processes that are gone, and treats such a miss as a loss.

mod audit;
mod early;
pub(crate) mod socket;
pub(crate) mod wire;

use super::Backend;
use crate::loom::Arc;
use crate::registry::{Actions, Input, ProcSnapshot, ResyncHints, Stamp};
use crate::shared::Shared;
use crate::{clock, procfs, sys};
use crate::{BackendKind, Error, NetlinkOptions, Pid, Timestamp};
use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::RecvFlags;
use rustix::time::Timespec;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use wire::ProcMsg;

/// How often the backstop thread drains what the runtime task left (if anything), at first
/// and whenever it found something; see [`backstop_longest_period`] for how it backs off.
const BACKSTOP_PERIOD: Duration = Duration::from_millis(10);
/// The longest the backstop thread sleeps while the runtime task keeps up.
const BACKSTOP_LONGEST: Duration = Duration::from_millis(100);

/// The running backend: the stop switch of the backstop thread and the runtime task.
pub(crate) struct Netlink {
    stop: OwnedFd,
    task: Option<tokio::task::JoinHandle<()>>,
    /// `Shared2::reads`, for the tests.
    #[cfg_attr(not(any(test, feature = "bench-support")), allow(dead_code))]
    reads: std::sync::Arc<ReadCounts>,
    argv: ArgvSlot,
}

/// Who read the socket how often, for the tests.
#[derive(Default)]
struct ReadCounts {
    /// How many times the task waited a batch window before reading.
    windowed: std::sync::atomic::AtomicU64,
    /// How many backstop rounds found datagrams and read them.
    backstop: std::sync::atomic::AtomicU64,
}

/// The `procwatch-argv` thread ([`early`]), started the first time a stream asks for
/// command lines, and what it is started with.
struct ArgvSlot {
    thread: Mutex<Option<early::ArgvThread>>,
    shared: Arc<Shared>,
    early: std::sync::Arc<early::EarlyArgv>,
    priority: crate::ArgvPriority,
    /// `NetlinkOptions::argv_thread`: false leaves every command line to the drainer.
    enabled: bool,
}

/// What the drainer's two runners share.
struct Shared2 {
    drainer: Mutex<Drainer>,
    /// Whether the runtime task is alive and watching the socket.
    task_alive: AtomicBool,
    /// Notified each time the backstop thread lets go of the drainer. A task that found the
    /// drainer taken waits for this rather than dropping its readiness: a datagram that came
    /// after the backstop's last read would otherwise wait for the next backstop round.
    released: tokio::sync::Notify,
    /// An eventfd that wakes the backstop thread at once: a resync is due, or the task ended.
    kick: OwnedFd,
    /// Whether the proc connector is busy enough for the batch window ([`Rate`]), as the
    /// latest drain found: the task then waits the window before it reads.
    storm: std::sync::Arc<AtomicBool>,
    reads: std::sync::Arc<ReadCounts>,
    /// The batch window (zero: none).
    window: Duration,
    /// When the task last drained, in nanoseconds since `since`.
    task_read: std::sync::atomic::AtomicU64,
    since: std::time::Instant,
}

impl Shared2 {
    /// Notes that the task just drained the socket.
    fn task_read_now(&self) {
        let nanos = self.since.elapsed().as_nanos() as u64;
        self.task_read.store(nanos, Ordering::Relaxed);
    }

    /// Whether the task, reading in windows, drained within the last window and backstop
    /// period. What the backstop thread would find in the socket then is what the task is
    /// letting gather on purpose, and will read itself: taking it would move the task's
    /// work to this thread and wake the runtime's thread from here, at every backstop round
    /// of a busy spell. A runtime that stops reading is still relieved one period later.
    fn task_reads_in_windows(&self) -> bool {
        if self.window.is_zero() {
            return false;
        }
        let last = Duration::from_nanos(self.task_read.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last) < self.window + BACKSTOP_PERIOD
    }

    fn kick(&self) {
        // Fails only if the counter would overflow, and then a wakeup is pending anyway.
        let _ = rustix::io::write(&self.kick, &1u64.to_ne_bytes());
    }
}

impl Netlink {
    /// Opens and subscribes the socket, then starts the backstop thread and, inside a tokio
    /// runtime with I/O enabled, the runtime task.
    pub(crate) fn start(shared: Arc<Shared>, opts: &NetlinkOptions) -> Result<Netlink, Error> {
        let sock = std::sync::Arc::new(socket::open(opts.rcvbuf)?);
        let acked = socket::listen(&sock, opts.ack_timeout)?;
        let wrap = |op, e: Errno| Error::io(op, e.into()).with_backend(BackendKind::Netlink);
        let new_eventfd = || {
            eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
                .map_err(|e| wrap("netlink eventfd", e))
        };
        let stop = new_eventfd()?;
        let stop_rx =
            rustix::io::fcntl_dupfd_cloexec(&stop, 0).map_err(|e| wrap("netlink eventfd", e))?;
        let granted = socket::rcvbuf(&sock);
        tracing::debug!(rcvbuf = granted, "proc connector subscribed");
        let storm = std::sync::Arc::new(AtomicBool::new(false));
        let early = std::sync::Arc::<early::EarlyArgv>::default();
        let drainer = Drainer::new(
            sock.clone(),
            shared.clone(),
            acked,
            storm.clone(),
            early.clone(),
            opts.batch_threshold,
        );
        let argv = ArgvSlot {
            thread: Mutex::new(None),
            shared,
            early,
            priority: opts.argv_priority,
            enabled: opts.argv_thread,
        };
        let both = std::sync::Arc::new(Shared2 {
            drainer: Mutex::new(drainer),
            task_alive: AtomicBool::new(false),
            released: tokio::sync::Notify::new(),
            kick: new_eventfd()?,
            storm,
            reads: Default::default(),
            window: opts.batch_window,
            task_read: Default::default(),
            since: std::time::Instant::now(),
        });
        let task = spawn_task(&sock, &both, opts.batch_window);
        let reads = both.reads.clone();
        let backstop = both.clone();
        let longest = backstop_longest_period(granted);
        std::thread::Builder::new()
            .name("procwatch-netlink".into())
            .spawn(move || backstop_thread(&sock, &stop_rx, &backstop, longest))
            .map_err(|e| {
                if let Some(t) = &task {
                    t.abort();
                }
                Error::io("netlink dispatcher thread", e).with_backend(BackendKind::Netlink)
            })?;
        Ok(Netlink {
            stop,
            task,
            reads,
            argv,
        })
    }
}

impl Backend for Netlink {
    fn kind(&self) -> BackendKind {
        BackendKind::Netlink
    }

    #[cfg(any(test, feature = "bench-support"))]
    fn windowed_reads(&self) -> Option<u64> {
        Some(self.reads.windowed.load(Ordering::Relaxed))
    }

    #[cfg(any(test, feature = "bench-support"))]
    fn backstop_reads(&self) -> Option<u64> {
        Some(self.reads.backstop.load(Ordering::Relaxed))
    }

    /// The socket covers every process from the moment it is subscribed: attaching is only
    /// reading `/proc/<pid>`.
    fn attach(&self, pid: Pid, _ticket: u64, _hold: bool) -> Result<Option<ProcSnapshot>, Error> {
        procfs::snapshot(pid)
            .map_err(|io| Error::io("watch", io).with_detail(format!("cannot read /proc/{pid}")))
    }

    /// The socket hears of every process anyway; the registry drops what nobody follows.
    fn detach(&self, _pids: &[(Pid, u64)]) {}

    /// Tells the `procwatch-argv` thread (see [`early`]), which keeps its exec socket while
    /// command lines are wanted; starts it the first time they are.
    fn sync_argv(&self, wait: bool) {
        let mut thread = self.argv.thread.lock().unwrap_or_else(|p| p.into_inner());
        if thread.is_none() {
            if !self.argv.enabled || !self.argv.shared.argv_wanted() {
                return;
            }
            let started = rustix::io::fcntl_dupfd_cloexec(&self.stop, 0)
                .map_err(|e| Error::io("netlink eventfd", e.into()))
                .and_then(|stop| {
                    early::ArgvThread::start(
                        stop,
                        self.argv.shared.clone(),
                        self.argv.early.clone(),
                        self.argv.priority,
                    )
                });
            match started {
                Ok(t) => *thread = Some(t),
                Err(e) => {
                    tracing::debug!(error = %e, "no argv thread; the drainer reads every command line");
                    return;
                }
            }
        }
        if let Some(t) = &*thread {
            t.sync(wait);
        }
    }

    fn shutdown(&self) {
        // An eventfd write only fails if the counter would overflow: it is stopping anyway.
        let _ = rustix::io::write(&self.stop, &1u64.to_ne_bytes());
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Marks the runtime task dead however it ends (returns, panics, is aborted or dropped with
/// its runtime), and wakes the backstop thread so that it takes over the socket at once.
struct TaskAlive(std::sync::Arc<Shared2>);

impl Drop for TaskAlive {
    fn drop(&mut self) {
        self.0.task_alive.store(false, Ordering::SeqCst);
        self.0.kick();
    }
}

/// How many datagrams the runtime task reads per wakeup before it yields to the other tasks
/// of its runtime (and, if more are queued, comes straight back).
const TASK_BUDGET: usize = 1024;

/// Starts the runtime task, if there is a runtime with a reactor to register the socket in.
///
/// The task only reads and applies messages. The `/proc` resync after a loss reads many
/// files, so it runs on the backstop thread, never on a runtime worker.
fn spawn_task(
    sock: &std::sync::Arc<OwnedFd>,
    both: &std::sync::Arc<Shared2>,
    window: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let mut registered = Some(crate::sys::register_readable(sock)?);
    let sock = sock.clone();
    both.task_alive.store(true, Ordering::SeqCst);
    let alive = TaskAlive(both.clone());
    Some(handle.spawn(async move {
        let alive = alive;
        let both = &alive.0;
        loop {
            let afd = match &registered {
                Some(afd) => afd,
                None => match crate::sys::register_readable(&sock) {
                    Some(afd) => registered.insert(afd),
                    // The backstop thread goes on alone.
                    None => break,
                },
            };
            let Ok(ready) = afd.readable().await else {
                break;
            };
            let mut ready = Some(ready);
            if !window.is_zero() && both.storm.load(Ordering::Relaxed) {
                // Out of the reactor while we wait: each message would wake the thread
                // otherwise, even with nobody awaiting it. Registering again after the
                // drain finds the socket readable at once if something came meanwhile.
                ready = None;
                registered = None;
                both.reads.windowed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(window).await;
            }
            // Armed before the check, so a release between the two is not missed.
            let released = both.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let drained = match both.drainer.try_lock() {
                Ok(mut d) => {
                    let drained = d.drain(Some(TASK_BUDGET));
                    both.task_read_now();
                    // A failed resync is retried by the backstop on its own clock.
                    let resync_due = d.resync_cutoff.is_some() && d.resync_retry_at.is_none();
                    Some((drained, resync_due, d.stopping()))
                }
                Err(std::sync::TryLockError::WouldBlock) => None,
                // A panic while draining: the backstop thread ends the streams.
                Err(std::sync::TryLockError::Poisoned(_)) => break,
            };
            match drained {
                // The backstop thread is draining or resyncing. Keep the readiness (what
                // arrives after its last read is ours to read) and look again once it is done.
                None => released.await,
                Some((_, _, true)) => break,
                Some((drained, resync_due, false)) => {
                    if resync_due {
                        both.kick();
                    }
                    if drained.more {
                        // Still readable: let the runtime's other tasks run, then go on.
                        tokio::task::yield_now().await;
                    } else if let Some(mut ready) = ready {
                        // Read to `EAGAIN`. Readiness that arrived since `readable` returned
                        // is not cleared by this, so nothing is left behind.
                        ready.clear_ready();
                    }
                }
            }
        }
    }))
}

/// Whether the proc connector is busy enough for a batch window to pay: from the
/// threshold on ([`NetlinkOptions::batch_threshold`], 10,000 datagrams a second by default),
/// measured over [`Rate::PERIOD`], until the rate falls under half that. Below it every
/// message is read as it comes, so that a quiet watcher keeps its latency. A threshold of
/// zero is busy always.
///
/// [`NetlinkOptions::batch_threshold`]: crate::NetlinkOptions::batch_threshold
struct Rate {
    since: std::time::Instant,
    count: usize,
    busy: bool,
    /// Datagrams a second.
    threshold: f64,
}

impl Rate {
    const PERIOD: Duration = Duration::from_millis(10);

    fn new(now: std::time::Instant, threshold: u32) -> Rate {
        Rate {
            since: now,
            count: 0,
            busy: false,
            threshold: threshold.into(),
        }
    }

    /// Counts `datagrams` read at `now`.
    fn count(&mut self, datagrams: usize, now: std::time::Instant) {
        self.count += datagrams;
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= Rate::PERIOD {
            let rate = self.count as f64 / elapsed.as_secs_f64();
            let threshold = if self.busy {
                self.threshold / 2.0
            } else {
                self.threshold
            };
            self.busy = rate >= threshold;
            self.count = 0;
            self.since = now;
        }
    }

    /// Busy at `now`: the latest period was, and it is not long over.
    fn busy(&self, now: std::time::Instant) -> bool {
        self.threshold == 0.0
            || (self.busy && now.saturating_duration_since(self.since) < 2 * Rate::PERIOD)
    }
}

/// How long the backstop thread sleeps between rounds while the runtime task keeps up: it
/// starts at `BACKSTOP_PERIOD`, doubles each round that finds the socket empty (the task
/// read everything), and drops back as soon as a round finds something.
///
/// The longest sleep is what the granted receive buffer holds at 500,000 messages a second
/// (about 1 KiB of buffer accounting each), between 10 and 100 ms: 100 ms with the default
/// 64 MiB buffer, 10 ms with a small one. So an idle watcher wakes 10 times a second, not
/// 100, and a runtime that suddenly blocks during a storm still does not make the kernel drop.
fn backstop_longest_period(granted_rcvbuf: usize) -> Duration {
    const BYTES_PER_SECOND: u64 = 500_000 * 1024;
    let lasts = Duration::from_nanos(
        (granted_rcvbuf as u64).saturating_mul(1_000_000_000) / BYTES_PER_SECOND,
    );
    lasts.clamp(BACKSTOP_PERIOD, BACKSTOP_LONGEST)
}

/// The backstop: drains every few milliseconds while the runtime task lives, the whole
/// socket on its own otherwise, runs every resync, until told to stop. Then unsubscribes.
fn backstop_thread(sock: &OwnedFd, stop: &OwnedFd, both: &Shared2, longest: Duration) {
    // However the loop ends — told to stop, or a panic while draining or resyncing — the
    // streams end and a task waiting for the drainer is let go.
    let _closing = Closing { sock, both };
    let Some(shared) = both.drainer.lock().ok().map(|d| d.shared.clone()) else {
        return;
    };
    let mut audit = audit::Audit::new(std::time::Instant::now());
    let mut period = BACKSTOP_PERIOD;
    // Whether a resync waits for its retry: known from this thread's own resyncs (the task
    // kicks it when it finds a loss).
    let mut pending = false;
    loop {
        // The socket is this thread's to watch only when the task is gone.
        let task = both.task_alive.load(Ordering::SeqCst);
        let timeout = match (task, pending) {
            (true, false) => Some(period),
            (true, true) => Some(period.min(RESYNC_RETRY)),
            (false, true) => Some(RESYNC_RETRY),
            // Alone on the socket: up at the next audit look at the latest.
            (false, false) => Some(
                audit
                    .next_at()
                    .saturating_duration_since(std::time::Instant::now())
                    .max(BACKSTOP_PERIOD),
            ),
        };
        let ts = timeout.map(|t| Timespec {
            tv_sec: t.as_secs() as _,
            tv_nsec: t.subsec_nanos() as _,
        });
        let mut fds = [
            PollFd::new(stop, PollFlags::IN),
            PollFd::new(&both.kick, PollFlags::IN),
            PollFd::new(
                sock,
                if task {
                    PollFlags::empty()
                } else {
                    PollFlags::IN
                },
            ),
        ];
        match wait(&mut fds, ts.as_ref()) {
            Ok(false) => {}
            Ok(true) => break,
            Err(e) => {
                tracing::error!(error = %e, "procwatch netlink poll failed; stopping");
                break;
            }
        }
        let kicked = !fds[1].revents().is_empty();
        if !pending && !audit_look(&mut audit, both, &shared, &mut pending) {
            break;
        }
        if task && !pending && !kicked && both.task_reads_in_windows() {
            // Busy: look again soon, in case the runtime stops.
            period = BACKSTOP_PERIOD;
            continue;
        }
        let Ok(mut d) = both.drainer.lock() else {
            break;
        };
        #[cfg(test)]
        tests::maybe_panic();
        if d.stopping() {
            break;
        }
        let drained = d.drain(None);
        d.resync();
        pending = d.resync_cutoff.is_some();
        drop(d);
        both.released.notify_waiters();
        period = if drained.datagrams > 0 {
            both.reads.backstop.fetch_add(1, Ordering::Relaxed);
            BACKSTOP_PERIOD
        } else {
            (period * 2).min(longest)
        };
    }
}

/// Takes an audit look ([`audit`]) if one is due and the tracked processes are quiet; sets
/// `pending` if it found a missed exit and the resync it asked for is still to be done.
/// Returns false if the drainer is gone (poisoned) or stopping.
fn audit_look(
    audit: &mut audit::Audit,
    both: &Shared2,
    shared: &Shared,
    pending: &mut bool,
) -> bool {
    let now = std::time::Instant::now();
    if now < audit.next_at() {
        return true;
    }
    let tracked = {
        let r = shared.lock();
        if !audit.quiet(now, r.activity()) {
            return true;
        }
        r.tracked_starts()
    };
    if tracked.is_empty() {
        audit.settle(now, Vec::new());
        return true;
    }
    // Read outside every lock: a `/proc` read per tracked process.
    let candidates = audit::Audit::candidates(&tracked, audit::look);
    let Ok(mut d) = both.drainer.lock() else {
        return false;
    };
    if d.stopping() {
        return false;
    }
    // Whatever the kernel sent before those reads is applied before the registry is asked.
    d.drain(None);
    let still: Vec<(i32, u64)> = {
        let r = d.shared.lock();
        candidates
            .into_iter()
            .filter(|&(raw, start)| r.tracks(raw, start))
            .collect()
    };
    let missed = audit.settle(std::time::Instant::now(), still);
    if !missed.is_empty() {
        d.missed(&missed);
        d.resync();
        *pending = d.resync_cutoff.is_some();
    }
    drop(d);
    both.released.notify_waiters();
    true
}

/// Sleeps in `poll(2)` on `fds`, whose first two are a thread's stop switch and its kick
/// eventfd, until one is ready or `timeout` passes: `Ok(true)` once told to stop. A kick is
/// consumed, so that it wakes the thread once.
fn wait(fds: &mut [PollFd<'_>], timeout: Option<&Timespec>) -> Result<bool, Errno> {
    loop {
        match poll(fds, timeout) {
            Ok(_) => break,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    if !fds[0].revents().is_empty() {
        return Ok(true);
    }
    if !fds[1].revents().is_empty() {
        let mut count = [0u8; 8];
        let _ = rustix::io::read(&fds[1], &mut count);
    }
    Ok(false)
}

/// What the backstop thread does last, in a `Drop` so that it also runs on a panic:
/// unsubscribe, end every stream, release a task waiting for the drainer.
struct Closing<'a> {
    sock: &'a OwnedFd,
    both: &'a Shared2,
}

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        socket::ignore(self.sock);
        // After a panic while draining, the lock is poisoned: the streams must end anyway.
        let d = self.both.drainer.lock().unwrap_or_else(|e| e.into_inner());
        let mut wake = Actions::default();
        d.shared.lock().shutdown(&mut wake);
        drop(d);
        wake.wake_all();
        self.both.released.notify_waiters();
        if std::thread::panicking() {
            tracing::error!("procwatch netlink backstop panicked; the watcher's streams end");
        } else {
            tracing::debug!("procwatch netlink backstop stopped");
        }
    }
}

/// Maps one decoded message to a registry input, with its `CLOCK_MONOTONIC` stamp.
pub(crate) fn to_input(msg: ProcMsg) -> Option<(Input, u64)> {
    match msg {
        ProcMsg::Fork {
            parent_tgid,
            child_pid,
            child_tgid,
            ts_ns,
            ..
        } => {
            let at = ts_ns;
            if child_pid != child_tgid {
                // CLONE_THREAD: a new thread of `child_tgid`, not a new process. Task ids are
                // positive; anything else is not a message about a real thread.
                let tgid = Pid::from_raw(child_tgid)?;
                Pid::from_raw(child_pid)?;
                Some((
                    Input::ThreadStart {
                        tgid,
                        tid: child_pid,
                    },
                    at,
                ))
            } else {
                let parent = Pid::from_raw(parent_tgid)?;
                let child = Pid::from_raw(child_tgid)?;
                Some((
                    Input::Fork {
                        parent,
                        child,
                        start_ns: at,
                    },
                    at,
                ))
            }
        }
        ProcMsg::Exec { tgid, ts_ns, .. } => Some((
            Input::Exec {
                pid: Pid::from_raw(tgid)?,
                argv: None,
            },
            ts_ns,
        )),
        ProcMsg::Exit {
            pid,
            tgid,
            code,
            ts_ns,
        } => Some((
            Input::ThreadExit {
                tgid: Pid::from_raw(tgid)?,
                tid: Pid::from_raw(pid)?.as_raw(),
                code: code as i32,
            },
            ts_ns,
        )),
        ProcMsg::Ack { .. } | ProcMsg::Other { .. } => None,
    }
}

/// How many inputs are applied under one lock at most.
const BATCH: usize = 2048;

/// How long to wait before trying a failed `/proc` resync again.
const RESYNC_RETRY: Duration = Duration::from_millis(100);

/// What one [`Drainer::drain`] did.
#[derive(Debug, Default, Clone, Copy)]
struct Drained {
    /// Datagrams read.
    datagrams: usize,
    /// Whether it stopped at its budget with more possibly queued.
    more: bool,
}

/// The receive side of the socket and what decoding and resyncing need.
struct Drainer {
    sock: std::sync::Arc<OwnedFd>,
    shared: Arc<Shared>,
    buf: Vec<u8>,
    batch: Vec<(Input, Stamp)>,
    /// Added to the kernel's stamps: the monotonic offset of our time namespace (the kernel
    /// stamps events on the initial namespace's clock).
    mono_offset: i64,
    /// `CLOCK_BOOTTIME` minus `CLOCK_MONOTONIC`, refreshed at every drain.
    boot_ahead: i64,
    /// The boot-clock stamp of the latest event applied.
    last_boot: u64,
    /// After a loss whose resync has not succeeded yet: the boot-clock time before which
    /// nothing was lost.
    resync_cutoff: Option<u64>,
    /// After a failed resync: not to be tried again before then.
    resync_retry_at: Option<std::time::Instant>,
    /// Datagrams read while a resync scans `/proc`, applied after it (see [`Stash`]).
    stash: Stash,
    /// What [`Drainer::read_argvs`] keeps about the batch not applied yet.
    argvs: ArgvReads,
    /// How fast datagrams come, over every drain (the task's and the backstop's).
    rate: Rate,
    /// What `rate` last said, for those who do not hold the drainer (`Shared2::storm`).
    storm: std::sync::Arc<AtomicBool>,
    /// Command lines the `procwatch-argv` thread read first ([`early`]).
    early: std::sync::Arc<early::EarlyArgv>,
}

/// What the command-line reads of one batch need to know (cleared when it is applied).
#[derive(Default)]
struct ArgvReads {
    /// The buffer `/proc/<pid>/cmdline` is read into.
    buf: Vec<u8>,
    /// Processes created in the batch, and their parents: not in the registry yet.
    born: HashMap<i32, i32>,
    /// The latest exec of each process in the batch that got a command line: its index.
    read: HashMap<i32, usize>,
}

/// The receive buffer for one datagram (the kernel sends a few hundred bytes at most).
const MAX_DATAGRAM: usize = 64 * 1024;

/// The longest a [`Stash`] grows: as much as the default receive buffer holds in the kernel's
/// accounting (about 1 KiB a message), at the ~80 bytes a message takes here.
const STASH_CAP: usize = 8 << 20;

/// Datagrams read from the socket while a resync scans `/proc`.
///
/// A scan reads a few files per process on the system and can take tens of milliseconds.
/// Applying messages during it would change the table the scan is about to be compared
/// with; leaving them in the socket makes a small receive buffer (an unprivileged user's,
/// capped by `net.core.rmem_max`) overflow again under a storm: `Lost`, resync, `Lost`...
/// So the scan stops every few processes to move what the kernel queued into this buffer,
/// which is applied, in order, right after the resync: exactly what would have happened had
/// the socket been large enough. It holds at most [`STASH_CAP`] bytes, whatever the storm;
/// beyond that the kernel's buffer takes the rest, and an overflow there is a loss like any
/// other. An overflow reported while stashing is kept in its place in the order.
#[derive(Default)]
struct Stash {
    /// Records: a native-endian `u32` length, then that many bytes; length 0 marks a loss.
    bytes: Vec<u8>,
    /// Losses (`ENOBUFS`) seen while stashing.
    losses: usize,
}

impl Stash {
    fn push(&mut self, datagram: &[u8]) {
        self.reserve();
        self.bytes
            .extend_from_slice(&(datagram.len() as u32).to_ne_bytes());
        self.bytes.extend_from_slice(datagram);
    }

    fn push_loss(&mut self) {
        self.reserve();
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.losses += 1;
    }

    /// Takes the whole buffer at once, the first time: records are added only while it is
    /// not full, so it never grows past the cap plus one datagram.
    fn reserve(&mut self) {
        if self.bytes.capacity() == 0 {
            self.bytes.reserve_exact(STASH_CAP + 4 + MAX_DATAGRAM);
        }
    }

    fn is_full(&self) -> bool {
        self.bytes.len() >= STASH_CAP
    }

    /// The records in order: `Some(datagram)`, or `None` for a loss.
    fn records(&self) -> impl Iterator<Item = Option<&[u8]>> + '_ {
        let mut rest = &self.bytes[..];
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_ne_bytes(*len) as usize;
            let (datagram, tail) = tail.split_at(len.min(tail.len()));
            rest = tail;
            Some((len > 0).then_some(datagram))
        })
    }
}

impl Drainer {
    fn new(
        sock: std::sync::Arc<OwnedFd>,
        shared: Arc<Shared>,
        acked: socket::Acked,
        storm: std::sync::Arc<AtomicBool>,
        early: std::sync::Arc<early::EarlyArgv>,
        batch_threshold: u32,
    ) -> Drainer {
        let now = clock::now();
        Drainer {
            sock,
            shared,
            buf: vec![0; MAX_DATAGRAM],
            batch: Vec::with_capacity(BATCH),
            mono_offset: acked.monotonic_offset(clock::timens_monotonic_offset()),
            boot_ahead: now.boot_ahead(),
            last_boot: now.boot,
            resync_cutoff: None,
            resync_retry_at: None,
            stash: Stash::default(),
            argvs: ArgvReads::default(),
            rate: Rate::new(std::time::Instant::now(), batch_threshold),
            storm,
            early,
        }
    }

    fn stopping(&self) -> bool {
        self.shared.is_closed()
    }

    /// Reads until the socket is empty, or until `budget` datagrams have been read, applying
    /// inputs in batches. An overflow reported by the kernel tells every stream at once and
    /// schedules a resync.
    fn drain(&mut self, budget: Option<usize>) -> Drained {
        self.boot_ahead = clock::now().boot_ahead();
        let mut drained = Drained::default();
        loop {
            if budget.is_some_and(|b| drained.datagrams >= b) {
                drained.more = true;
                break;
            }
            let mut slots = [sys::Slot::Foreign; sys::SLOTS];
            match sys::recv_many(&self.sock, &mut self.buf, &mut slots) {
                Ok(n) => {
                    drained.datagrams += n;
                    for (i, slot) in slots[..n].iter().enumerate() {
                        match *slot {
                            sys::Slot::Kernel(len) => {
                                let from = self.batch.len();
                                decode_into(
                                    &mut self.batch,
                                    &self.buf[i * sys::SLOT..][..len],
                                    self.mono_offset,
                                    self.boot_ahead,
                                );
                                if self.shared.argv_wanted() {
                                    self.read_argvs(from);
                                }
                            }
                            sys::Slot::Foreign => {
                                tracing::debug!(
                                    "dropped a proc connector datagram not sent by the kernel"
                                );
                            }
                            // Never seen (one event per datagram): whatever it held is lost,
                            // and a resync tells what.
                            sys::Slot::Truncated => self.lost(),
                        }
                    }
                    if self.batch.len() >= BATCH {
                        self.flush();
                        if self.stopping() {
                            return drained;
                        }
                    }
                    // The task's reads: a short one emptied the socket, and what comes after
                    // it wakes the task again (each datagram queued is a new edge for the
                    // reactor). A second call would nearly always just say `EAGAIN`. An
                    // overflow the short read left pending is read with the next datagram, or
                    // by the backstop's next round.
                    if budget.is_some() && n < sys::SLOTS {
                        break;
                    }
                }
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(Errno::NOBUFS) => self.lost(),
                Err(e) => {
                    tracing::error!(error = %e, "procwatch netlink recv failed");
                    break;
                }
            }
        }
        self.flush();
        let now = std::time::Instant::now();
        self.rate.count(drained.datagrams, now);
        self.storm.store(self.rate.busy(now), Ordering::Relaxed);
        drained
    }

    /// Reads the command line of each exec in `self.batch[from..]` (just decoded) that a
    /// stream with `Interest::ARGV` may want, before anything else: a process that exits
    /// within a millisecond of its exec is often still there now, and gone by the time a
    /// consumer could look.
    ///
    /// Whether it is wanted is asked of the registry under its lock, but the file is read
    /// outside it. A process created earlier in the same batch is not in the registry yet:
    /// its exec is read if its creator (or the creator's creator...) is followed.
    ///
    /// A read can come after the process already executed again (its next exec message is
    /// then in the socket behind this one): when the next exec of the same process in the
    /// batch reads the same text, the earlier exec's is dropped (`None`), as it cannot be told
    /// to be its own.
    ///
    /// While the `procwatch-argv` thread keeps its exec socket, it may have read the file
    /// first: its read is taken rather than read again ([`early`]).
    fn read_argvs(&mut self, from: usize) {
        for i in from..self.batch.len() {
            let pid = match &self.batch[i].0 {
                Input::Fork { parent, child, .. } => {
                    self.argvs.born.insert(child.as_raw(), parent.as_raw());
                    continue;
                }
                Input::Exec { pid, .. } => *pid,
                _ => continue,
            };
            let mut lineage = [pid.as_raw(); 16];
            let mut n = 1;
            while n < lineage.len() {
                match self.argvs.born.get(&lineage[n - 1]) {
                    Some(&parent) => lineage[n] = parent,
                    None => break,
                }
                n += 1;
            }
            let wanted = {
                let reg = self.shared.lock();
                lineage[..n]
                    .iter()
                    .filter_map(|&p| Pid::from_raw(p))
                    .any(|p| reg.wants_argv_of(p))
            };
            if !wanted {
                continue;
            }
            // The kernel's own stamp, as the exec socket's copy of the message has it.
            let at = self.batch[i].1.mono.wrapping_sub(self.mono_offset as u64);
            let argv = match self.early.take(pid.as_raw(), at) {
                Some(argv) => argv,
                None => procfs::read_cmdline(pid.as_raw(), &mut self.argvs.buf, true),
            };
            if let (Some(new), Some(&earlier)) = (&argv, self.argvs.read.get(&pid.as_raw())) {
                if let Input::Exec { argv: old, .. } = &mut self.batch[earlier].0 {
                    if old.as_ref() == Some(new) {
                        *old = None;
                    }
                }
            }
            if argv.is_some() {
                self.argvs.read.insert(pid.as_raw(), i);
            }
            if let Input::Exec { argv: slot, .. } = &mut self.batch[i].0 {
                *slot = argv;
            }
        }
    }

    fn flush(&mut self) {
        self.argvs.born.clear();
        self.argvs.read.clear();
        if self.batch.is_empty() {
            return;
        }
        let mut wake = Actions::default();
        {
            let mut reg = self.shared.lock();
            for (input, at) in self.batch.drain(..) {
                self.last_boot = self.last_boot.max(at.boot);
                reg.apply_at(input, at, &mut wake);
            }
        }
        wake.wake_all();
    }

    /// The kernel dropped messages: apply what was read before the drop, tell every stream,
    /// and remember since when a resync must look.
    fn lost(&mut self) {
        tracing::warn!("proc connector overflowed (ENOBUFS); a /proc resync follows");
        self.mark_lost();
    }

    /// The audit found tracked processes gone whose exit never came ([`audit`]): every
    /// stream is told, as for a loss, and the resync gives them their exits.
    fn missed(&mut self, pids: &[i32]) {
        tracing::warn!(
            ?pids,
            "procwatch netlink: tracked processes are gone from /proc but their exit messages \
             never came; a /proc resync follows"
        );
        self.mark_lost();
    }

    /// Applies what was read, tells every stream of a loss, and remembers since when a
    /// resync must look.
    fn mark_lost(&mut self) {
        self.flush();
        let cutoff = self.last_boot;
        self.resync_cutoff = Some(self.resync_cutoff.map_or(cutoff, |c| c.min(cutoff)));
        let mut wake = Actions::default();
        self.shared
            .lock()
            .mark_lost(Timestamp::from_nanos(clock::now().mono), &mut wake);
        wake.wake_all();
    }

    /// Moves what the kernel has queued into the stash, without applying it (see [`Stash`]).
    fn stash_queued(&mut self) {
        while !self.stash.is_full() {
            match recv_from_kernel(&self.sock, &mut self.buf) {
                Ok(None) => {}
                Ok(Some(n)) => self.stash.push(&self.buf[..n]),
                Err(Errno::INTR) => {}
                Err(Errno::NOBUFS) => self.stash.push_loss(),
                // `EAGAIN`: nothing more queued. Anything else is for `drain` to report.
                Err(_) => return,
            }
        }
    }

    /// The processes whose leader's exit message is in the stash: a resync leaves a process
    /// that exited during its scan to that message, which has the exit status.
    fn leader_exits_stashed(&self) -> HashMap<i32, u64> {
        let mut leaders = HashMap::new();
        let mut batch = Vec::new();
        for datagram in self.stash.records().flatten() {
            decode_into(&mut batch, datagram, self.mono_offset, self.boot_ahead);
            for (input, at) in batch.drain(..) {
                if let Input::ThreadExit { tgid, tid, .. } = input {
                    if tid == tgid.as_raw() {
                        leaders.insert(tid, at.boot);
                    }
                }
            }
        }
        leaders
    }

    /// Applies what was stashed during a resync, in the order it was read.
    fn apply_stash(&mut self) {
        let stash = std::mem::take(&mut self.stash);
        if stash.losses > 0 {
            tracing::warn!(
                losses = stash.losses,
                "proc connector overflowed during a /proc resync"
            );
        }
        for record in stash.records() {
            match record {
                Some(datagram) => {
                    decode_into(&mut self.batch, datagram, self.mono_offset, self.boot_ahead);
                    if self.batch.len() >= BATCH {
                        self.flush();
                    }
                }
                None => self.lost(),
            }
        }
        self.flush();
    }

    /// Rebuilds what a loss hid from a `/proc` listing. On failure (out of file descriptors,
    /// say) it stays pending and is tried again shortly: an unreadable process is never taken
    /// for a dead one.
    ///
    /// The socket is read throughout (into the [`Stash`], applied afterwards), so the scan
    /// does not make a small receive buffer overflow again. Processes `/proc` will not show
    /// this reader (`hidepid`) are asked about through a pidfd instead: a tracked one that
    /// still exists stays tracked, one that exited or is gone gets its `Exit` (status `None`).
    fn resync(&mut self) {
        let Some(cutoff) = self.resync_cutoff else {
            return;
        };
        if self.stopping() {
            return;
        }
        let now = std::time::Instant::now();
        if self.resync_retry_at.is_some_and(|at| now < at) {
            return;
        }
        self.shared.lock().begin_scan();
        let listing = procfs::scan_all(&mut || {
            self.stash_queued();
            !self.stopping()
        });
        match listing {
            Ok(mut listing) => {
                // Tracked processes the listing did not show: gone, hidden from this reader
                // (`hidepid`), or started under a reused number after the listing passed it.
                let tracked = self.shared.lock().tracked_pid_list();
                let missing: Vec<i32> = tracked
                    .into_iter()
                    .filter(|raw| !listing.procs.contains_key(raw))
                    .collect();
                let mut hints = ResyncHints::default();
                for (n, raw) in missing.into_iter().enumerate() {
                    if n % procfs::SCAN_STRIDE == procfs::SCAN_STRIDE - 1 {
                        self.stash_queued();
                    }
                    match procfs::recheck(raw) {
                        procfs::Recheck::Listed(snap) => {
                            listing.procs.insert(raw, snap);
                        }
                        procfs::Recheck::Unverified => {
                            hints.unverified.insert(raw);
                        }
                        procfs::Recheck::Gone => {}
                    }
                }
                self.stash_queued();
                hints.exits_coming = self.leader_exits_stashed();
                let mut wake = Actions::default();
                self.shared
                    .lock()
                    .resync(&listing.procs, &hints, clock::now(), cutoff, &mut wake);
                wake.wake_all();
                self.resync_cutoff = None;
                if self.resync_retry_at.take().is_some() {
                    tracing::info!("/proc resync succeeded after retrying");
                }
                if !listing.unreadable.is_empty() {
                    tracing::debug!(
                        unreadable = listing.unreadable.len(),
                        unverified = hints.unverified.len(),
                        "/proc resync could not read some processes"
                    );
                }
                self.apply_stash();
            }
            Err(_) if self.stopping() => {
                // The watcher is shutting down: its streams end with what they hold.
                self.stash = Stash::default();
            }
            Err(e) => {
                // What was read meanwhile is not lost: it is applied now, the resync retried
                // later.
                self.apply_stash();
                if self.resync_retry_at.is_none() {
                    tracing::warn!(
                        error = %e,
                        "cannot list /proc for a resync; retrying every {RESYNC_RETRY:?}"
                    );
                } else {
                    tracing::debug!(error = %e, "/proc resync failed again");
                }
                self.resync_retry_at = Some(now + RESYNC_RETRY);
            }
        }
    }
}

/// Reads one datagram: `Ok(Some(len))` for one from the kernel (in `buf`), `Ok(None)` for one
/// from anyone else (only the kernel speaks on this group; anything else is not an event).
fn recv_from_kernel(sock: &OwnedFd, buf: &mut [u8]) -> Result<Option<usize>, Errno> {
    let cap = buf.len();
    let (n, _, from) = rustix::net::recvfrom(sock, buf, RecvFlags::DONTWAIT)?;
    let from_kernel = from
        .and_then(|a| SocketAddrNetlink::try_from(a).ok())
        .is_some_and(|a| a.pid() == 0);
    if !from_kernel {
        tracing::debug!("dropped a proc connector datagram not sent by the kernel");
        return Ok(None);
    }
    Ok(Some(n.min(cap)))
}

/// Decodes one datagram into registry inputs, stamped on this process's clocks: `offset` is
/// the time namespace's monotonic offset, `ahead` how far the boot clock is ahead.
fn decode_into(batch: &mut Vec<(Input, Stamp)>, datagram: &[u8], offset: i64, ahead: i64) {
    wire::decode_datagram(datagram, |m| match m {
        Ok(msg) => {
            if let Some((input, ts)) = to_input(msg) {
                #[cfg(test)]
                if tests::drops(&input) {
                    return;
                }
                let mono = ts.saturating_add_signed(offset);
                let stamp = Stamp {
                    mono,
                    boot: mono.saturating_add_signed(ahead),
                };
                batch.push((fix_start(input, stamp), stamp));
            }
        }
        Err(e) => tracing::debug!(?e, "undecodable proc connector message"),
    });
}

/// A fork's start time is its stamp on the boot clock (what `/proc` start times use).
fn fix_start(input: Input, at: Stamp) -> Input {
    match input {
        Input::Fork { parent, child, .. } => Input::Fork {
            parent,
            child,
            start_ns: at.boot,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use crate::registry::Input;
    use crate::{BackendKind, ErrorKind, Interest, Pid, ProcEvent, ProcWatcher};
    use futures::StreamExt;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// Makes the next backstop round panic while it holds the drainer (poisoning its lock):
    /// the worst place for a bug to strike.
    static INJECT_PANIC: AtomicBool = AtomicBool::new(false);

    /// Processes whose exit messages are dropped as they are decoded, as if they had never
    /// come (tests run side by side: each adds its own).
    static DROP_EXITS_OF: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

    pub(super) fn drops(input: &Input) -> bool {
        match input {
            Input::ThreadExit { tgid, .. } => DROP_EXITS_OF
                .lock()
                .is_ok_and(|d| d.contains(&tgid.as_raw())),
            _ => false,
        }
    }

    fn drop_exits_of(raw: i32) {
        DROP_EXITS_OF.lock().unwrap().push(raw);
    }

    fn read_exits_of(raw: i32) {
        DROP_EXITS_OF.lock().unwrap().retain(|&p| p != raw);
    }

    pub(super) fn maybe_panic() {
        if INJECT_PANIC.swap(false, Ordering::SeqCst) {
            panic!("injected panic on the backstop thread (expected by the test)");
        }
    }

    /// The batch window's rate: busy from 10,000 datagrams a second, until under 5,000; not
    /// busy once the latest busy period is long over.
    #[test]
    fn the_rate_turns_busy_and_back_with_hysteresis() {
        let t0 = std::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut rate = super::Rate::new(t0, crate::watcher::DEFAULT_BATCH_THRESHOLD);
        // 50 in 10 ms: 5,000 a second, quiet.
        rate.count(20, ms(4));
        rate.count(30, ms(10));
        assert!(!rate.busy(ms(10)));
        // 120 in 10 ms, in small drains: busy from the period's end.
        for i in 1..=12 {
            rate.count(10, ms(10 + i * 10 / 12));
            assert_eq!(rate.busy(ms(10 + i * 10 / 12)), i == 12, "drain {i}");
        }
        // 60 in 10 ms (6,000 a second): still busy; 40 in 10 ms: no more.
        rate.count(60, ms(30));
        assert!(rate.busy(ms(30)));
        rate.count(40, ms(40));
        assert!(!rate.busy(ms(40)));
        // Busy again, then silence: not busy 20 ms after its last period.
        rate.count(500, ms(50));
        assert!(rate.busy(ms(50)));
        assert!(rate.busy(ms(69)));
        assert!(!rate.busy(ms(70)));
        // The first drain after a long silence counts over the whole silence: quiet.
        rate.count(150, ms(1_000));
        assert!(!rate.busy(ms(1_000)));
    }

    /// A threshold of zero: busy from the start, and after any silence.
    #[test]
    fn a_zero_threshold_is_always_busy() {
        let t0 = std::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut rate = super::Rate::new(t0, 0);
        assert!(rate.busy(t0));
        rate.count(1, ms(20));
        assert!(rate.busy(ms(20)));
        assert!(rate.busy(ms(10_000)));
        rate.count(1, ms(10_000));
        assert!(rate.busy(ms(10_000)));
    }

    /// A lower threshold turns busy at a lower rate, with the same hysteresis.
    #[test]
    fn the_threshold_sets_the_rate() {
        let t0 = std::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut rate = super::Rate::new(t0, 1_000);
        // 10 in 10 ms: 1,000 a second, busy.
        rate.count(10, ms(10));
        assert!(rate.busy(ms(10)));
        // 6 in 10 ms: over half, still busy; 4: no more.
        rate.count(6, ms(20));
        assert!(rate.busy(ms(20)));
        rate.count(4, ms(30));
        assert!(!rate.busy(ms(30)));
    }

    #[test]
    fn a_stash_gives_back_datagrams_and_losses_in_order() {
        let mut stash = super::Stash::default();
        stash.push(b"one");
        stash.push_loss();
        stash.push(b"");
        stash.push(b"three");
        let records: Vec<Option<&[u8]>> = stash.records().collect();
        // An empty datagram reads back as a loss marker: the kernel never sends one, and
        // taking it for a loss errs on the side of a resync.
        assert_eq!(
            records,
            vec![Some(&b"one"[..]), None, None, Some(&b"three"[..])]
        );
        assert_eq!(stash.losses, 1);
        assert!(!stash.is_full());
    }

    /// A Netlink watcher, or `None` (with the reason printed) where the backend is refused
    /// and this is not CI.
    fn netlink() -> Option<ProcWatcher> {
        let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        match ProcWatcher::builder().backend(BackendKind::Netlink).build() {
            Ok(w) => Some(w),
            Err(e)
                if !in_ci
                    && matches!(
                        e.kind(),
                        ErrorKind::PermissionDenied | ErrorKind::Unsupported
                    ) =>
            {
                eprintln!("SKIPPED: the netlink backend is not available here: {e}");
                None
            }
            Err(e) => panic!("the netlink backend must work on this machine: {e}"),
        }
    }

    /// Every event of `events` until it ends (20 s at most).
    async fn to_the_end(events: &mut crate::ProcEvents) -> Vec<ProcEvent> {
        let mut seen = Vec::new();
        let all = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(ev) = events.next().await {
                seen.push(ev);
            }
        })
        .await;
        assert!(all.is_ok(), "the stream did not end; it had {seen:?}");
        seen
    }

    /// The kernel sends an exit that this side then loses (dropped as it is decoded): the
    /// audit finds the process gone, the stream gets `Lost`, then its `Exit`, and ends. Here
    /// the process is reaped (by tokio, which keeps its own status) before the audit looks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exit_never_read_is_found_once_the_process_is_reaped() {
        let Some(w) = netlink() else { return };
        let mut sleeper = tokio::process::Command::new("sleep")
            .arg("0.3")
            .kill_on_drop(true)
            .spawn()
            .expect("start sleep");
        let raw = sleeper.id().expect("running") as i32;
        drop_exits_of(raw);
        let mut events = w
            .watch(Pid::from_raw(raw).unwrap(), Interest::EXIT)
            .expect("watch sleep");
        let status = tokio::time::timeout(Duration::from_secs(20), sleeper.wait())
            .await
            .expect("sleep did not end")
            .expect("wait for sleep");
        assert!(status.success(), "tokio got sleep's own status: {status}");
        let seen = to_the_end(&mut events).await;
        read_exits_of(raw);
        assert!(
            matches!(seen.as_slice(), [ProcEvent::Lost { .. }, ProcEvent::Exit { pid, status: None, .. }]
                if pid.as_raw() == raw),
            "{seen:?}"
        );
    }

    /// The other order: the audit looks while the process whose exit was lost is still a
    /// zombie. The resync reads its status from `/proc`; its parent still reaps it after.
    #[tokio::test(flavor = "current_thread")]
    async fn an_exit_never_read_is_found_on_a_zombie_with_its_status() {
        let Some(w) = netlink() else { return };
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.3; exit 3"])
            .spawn()
            .expect("start sh");
        let raw = child.id() as i32;
        drop_exits_of(raw);
        let mut events = w
            .watch(Pid::from_raw(raw).unwrap(), Interest::EXIT)
            .expect("watch sh");
        let mut tokio_child = tokio::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .expect("start the tokio child");
        let seen = to_the_end(&mut events).await;
        read_exits_of(raw);
        let code = match seen.as_slice() {
            [ProcEvent::Lost { .. }, ProcEvent::Exit { pid, status, .. }]
                if pid.as_raw() == raw =>
            {
                status.and_then(|s| s.code())
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(code, Some(3), "{seen:?}");
        let status = child.wait().expect("reap sh");
        assert_eq!(status.code(), Some(3), "the parent still gets the status");
        let theirs = tokio::time::timeout(Duration::from_secs(20), tokio_child.wait())
            .await
            .expect("the tokio child did not end")
            .expect("wait for the tokio child");
        assert_eq!(theirs.code(), Some(7));
        assert_eq!(theirs.signal(), None);
    }

    /// A process that lives on quietly through several audit looks is not taken for gone:
    /// no `Lost`, and its own exit, with its status, at the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_live_process_survives_the_audit() {
        let Some(w) = netlink() else { return };
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "sleep 3.5; exit 4"])
            .kill_on_drop(true)
            .spawn()
            .expect("start sh");
        let raw = child.id().expect("running") as i32;
        let mut events = w
            .watch(Pid::from_raw(raw).unwrap(), Interest::EXIT)
            .expect("watch sh");
        let seen = to_the_end(&mut events).await;
        assert!(
            matches!(seen.as_slice(), [ProcEvent::Exit { status: Some(s), .. }] if s.code() == Some(4)),
            "{seen:?}"
        );
        let status = child.wait().await.expect("wait for sh");
        assert_eq!(status.code(), Some(4));
    }

    #[tokio::test]
    async fn a_panic_on_the_backstop_thread_ends_every_stream() {
        let Some(w) = netlink() else { return };
        let mut sleeper = tokio::process::Command::new("sleep")
            .arg("30")
            .kill_on_drop(true)
            .spawn()
            .expect("start sleep");
        let pid = Pid::from_raw(sleeper.id().expect("running") as i32).unwrap();
        // EXIT only: the exec of `sleep` may still be on its way, and sleep does not exit.
        let mut events = w.watch(pid, Interest::EXIT).expect("watch sleep");
        INJECT_PANIC.store(true, Ordering::SeqCst);
        // The backstop takes the drainer at least every 100 ms.
        let end = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("the stream did not end after the backstop thread panicked");
        assert_eq!(end, None, "sleep is still running");
        assert!(
            !INJECT_PANIC.load(Ordering::SeqCst),
            "the panic was injected"
        );
        let again = w
            .watch(pid, Interest::EXIT)
            .expect_err("the watcher is shut down");
        assert_eq!(again.kind(), ErrorKind::Closed);
        sleeper.kill().await.expect("kill sleep");
    }
}
