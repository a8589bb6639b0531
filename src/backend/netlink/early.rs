//! Command lines read the moment the kernel reports an exec, by a thread that does nothing
//! else.
//!
//! The drainer reads an exec's command line as it decodes the exec ([`Drainer::read_argvs`]),
//! but the runtime task that runs it shares its thread with the consumer: while that thread
//! writes out the previous events, a program that exits within a millisecond of its exec is
//! gone before its exec is even read from the socket. So from the first time a stream asks
//! for command lines, a thread of its own (`procwatch-argv`) keeps, while any stream asks, a
//! second proc-connector socket that hears of execs alone (a socket filter drops the rest
//! before they are queued, so it wakes for nothing else), and reads each command line at
//! once. It asks the scheduler to let it run as soon as it wakes ([`ArgvPriority`]): on a
//! machine whose cores are all busy, a woken thread otherwise waits for the running one's
//! time slice to end, about a millisecond, by when such a program is gone.
//!
//! The two readers meet in [`EarlyArgv`], a short table keyed by the exec (its pid and the
//! kernel's stamp, the same in both sockets' copy of the message). Whoever comes to an exec
//! first reads its command line, and the other does not read it again:
//!
//! * the thread first: the drainer takes its read; if the thread is still reading, the
//!   drainer waits for it (microseconds; [`WAIT`] at most, then it reads itself);
//! * the drainer first: it leaves a mark, reads the file itself, and the thread skips that
//!   exec when it comes to it.
//!
//! Either order is correct; which one happens depends only on which thread the kernel runs
//! first. The thread reads the execs of processes the registry does not know yet too (a
//! child whose fork is still queued in the main socket): the ones nobody wants leave the
//! table unread after [`MAX_AGE`], or when it holds [`CAPACITY`] entries.
//!
//! [`Drainer::read_argvs`]: super::Drainer

use super::{socket, wire, ProcMsg};
use crate::loom::Arc;
use crate::shared::Shared;
use crate::{procfs, sys};
use crate::{Argv, ArgvPriority, BackendKind, Error, Pid};
use rustix::event::{eventfd, EventfdFlags, PollFd, PollFlags};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest the drainer waits for a read the thread has started.
const WAIT: Duration = Duration::from_millis(2);
/// Entries this much older than the newest (by the kernel's stamps, in ns) are dropped.
const MAX_AGE: u64 = 1_000_000_000;
/// The most entries kept; beyond, the oldest go first.
const CAPACITY: usize = 128;

/// Where the drainer and the `procwatch-argv` thread meet (see the module's doc).
#[derive(Default)]
pub(super) struct EarlyArgv {
    table: Mutex<Table>,
    read: Condvar,
    /// Whether the exec socket is open. While it is not, the drainer reads every command line
    /// itself and leaves no marks.
    active: AtomicBool,
}

#[derive(Default)]
struct Table {
    entries: VecDeque<Entry>,
    /// How many drainers wait on `read` (so that a read nobody waits for costs no wakeup).
    waiting: usize,
}

struct Entry {
    pid: i32,
    /// The kernel's stamp of the exec (`CLOCK_MONOTONIC`, initial time namespace).
    at: u64,
    state: State,
}

enum State {
    /// The thread is reading it.
    Reading,
    /// The thread read it (`None`: the process was gone already).
    Read(Option<Argv>),
    /// The drainer reads it itself.
    Taken,
}

impl EarlyArgv {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding it; if something did, the table is still consistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set_active(&self, active: bool) {
        if self.active.swap(active, Ordering::SeqCst) && !active {
            self.lock().entries.clear();
        }
    }

    /// The drainer's side: the command line the thread read for the exec of `pid` stamped
    /// `at`, or `None` if the caller is to read it itself (the thread then will not).
    pub(super) fn take(&self, pid: i32, at: u64) -> Option<Option<Argv>> {
        if !self.active.load(Ordering::SeqCst) {
            return None;
        }
        let deadline = Instant::now() + WAIT;
        let mut table = self.lock();
        loop {
            let Some(i) = table.find(pid, at) else {
                table.push(pid, at, State::Taken);
                return None;
            };
            match table.entries[i].state {
                State::Read(_) => {
                    let entry = table.entries.remove(i)?;
                    let State::Read(argv) = entry.state else {
                        unreachable!("matched just above")
                    };
                    return Some(argv);
                }
                State::Taken => return None,
                State::Reading => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        table.entries[i].state = State::Taken;
                        return None;
                    }
                    table.waiting += 1;
                    table = match self.read.wait_timeout(table, left) {
                        Ok((t, _)) => t,
                        Err(p) => p.into_inner().0,
                    };
                    table.waiting -= 1;
                }
            }
        }
    }

    /// The thread's side, for an exec heard on the exec socket: reads its command line into
    /// the table unless the drainer got there first or nobody can want it.
    pub(super) fn serve(&self, shared: &Shared, pid: i32, at: u64, buf: &mut Vec<u8>) {
        let Some(p) = Pid::from_raw(pid) else {
            return;
        };
        if !shared.lock().may_want_argv_of(p) {
            return;
        }
        {
            let mut table = self.lock();
            if let Some(i) = table.find(pid, at) {
                // The drainer read it: both have seen it now.
                table.entries.remove(i);
                return;
            }
            table.push(pid, at, State::Reading);
        }
        let argv = procfs::read_cmdline(pid, buf, true);
        let mut table = self.lock();
        if let Some(i) = table.find(pid, at) {
            if matches!(table.entries[i].state, State::Reading) {
                table.entries[i].state = State::Read(argv);
                if table.waiting > 0 {
                    drop(table);
                    self.read.notify_all();
                }
            }
        }
    }
}

impl Table {
    fn find(&self, pid: i32, at: u64) -> Option<usize> {
        // The one wanted is nearly always among the newest.
        self.entries
            .iter()
            .rposition(|e| e.pid == pid && e.at == at)
    }

    fn push(&mut self, pid: i32, at: u64, state: State) {
        let newest = self.entries.iter().map(|e| e.at).fold(at, u64::max);
        self.entries.retain(|e| {
            e.at.saturating_add(MAX_AGE) >= newest || matches!(e.state, State::Reading)
        });
        while self.entries.len() >= CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry { pid, at, state });
    }
}

/// The running `procwatch-argv` thread: how to wake it, and how to wait until it has seen
/// the latest change of whether command lines are wanted.
pub(super) struct ArgvThread {
    kick: OwnedFd,
    changes: std::sync::Arc<Changes>,
}

/// How many changes were asked of the thread, and up to which it applied them.
#[derive(Default)]
struct Changes {
    counts: Mutex<(u64, u64)>,
    applied: Condvar,
}

/// The longest [`ArgvThread::sync`] waits for the thread (which takes microseconds).
const SYNC_WAIT: Duration = Duration::from_secs(1);

impl ArgvThread {
    /// Starts the thread. `stop` is the backend's stop switch (an eventfd: readable once the
    /// watcher stops).
    pub(super) fn start(
        stop: OwnedFd,
        shared: Arc<Shared>,
        early: std::sync::Arc<EarlyArgv>,
        priority: ArgvPriority,
    ) -> Result<ArgvThread, Error> {
        let wrap = |op, e: std::io::Error| Error::io(op, e).with_backend(BackendKind::Netlink);
        let kick = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| wrap("netlink eventfd", e.into()))?;
        let kick_rx = rustix::io::fcntl_dupfd_cloexec(&kick, 0)
            .map_err(|e| wrap("netlink eventfd", e.into()))?;
        let changes = std::sync::Arc::<Changes>::default();
        let thread_changes = changes.clone();
        std::thread::Builder::new()
            .name("procwatch-argv".into())
            .spawn(move || {
                let mut reader = Reader {
                    stop,
                    kick: kick_rx,
                    shared,
                    early,
                    changes: thread_changes,
                    execs: None,
                };
                reader.run(priority);
            })
            .map_err(|e| wrap("netlink argv thread", e))?;
        Ok(ArgvThread { kick, changes })
    }

    /// Tells the thread to look again at whether command lines are wanted; with `wait`,
    /// returns once it has (so that an exec right after a `watch` is heard on its socket).
    pub(super) fn sync(&self, wait: bool) {
        let asked = {
            let mut counts = self
                .changes
                .counts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            counts.0 += 1;
            counts.0
        };
        // Fails only if the counter would overflow, and then a wakeup is pending anyway.
        let _ = rustix::io::write(&self.kick, &1u64.to_ne_bytes());
        if !wait {
            return;
        }
        let deadline = Instant::now() + SYNC_WAIT;
        let mut counts = self
            .changes
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while counts.1 < asked {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::debug!("the argv thread did not answer; going on without waiting");
                return;
            }
            counts = match self.changes.applied.wait_timeout(counts, left) {
                Ok((c, _)) => c,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// What the `procwatch-argv` thread holds.
struct Reader {
    stop: OwnedFd,
    kick: OwnedFd,
    shared: Arc<Shared>,
    early: std::sync::Arc<EarlyArgv>,
    changes: std::sync::Arc<Changes>,
    /// The exec socket, while command lines are wanted.
    execs: Option<ExecSocket>,
}

impl Reader {
    fn run(&mut self, priority: ArgvPriority) {
        ask_priority(priority);
        // After the exec socket could not be opened: not tried again until command lines
        // stop being wanted and are wanted again.
        let mut failed = false;
        loop {
            let asked = self.changes.counts.lock().map_or(0, |c| c.0);
            let wanted = self.shared.argv_wanted();
            if wanted && self.execs.is_none() && !failed {
                match ExecSocket::open() {
                    Ok(e) => self.execs = Some(e),
                    Err(e) => {
                        failed = true;
                        tracing::debug!(error = %e, "no exec socket; the drainer reads every command line");
                    }
                }
            } else if !wanted {
                self.execs = None;
                failed = false;
            }
            self.early.set_active(self.execs.is_some());
            if let Ok(mut counts) = self.changes.counts.lock() {
                counts.1 = counts.1.max(asked);
                self.changes.applied.notify_all();
            }
            let listen = if self.execs.is_some() {
                PollFlags::IN
            } else {
                PollFlags::empty()
            };
            let mut fds = [
                PollFd::new(&self.stop, PollFlags::IN),
                PollFd::new(&self.kick, PollFlags::IN),
                PollFd::new(self.execs.as_ref().map_or(&self.stop, |e| &e.fd), listen),
            ];
            match super::wait(&mut fds, None) {
                Ok(false) => {}
                Ok(true) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "argv thread poll failed; stopping");
                    break;
                }
            }
            if !fds[2].revents().is_empty() {
                if let Some(e) = &mut self.execs {
                    if !e.serve(&self.shared, &self.early) {
                        self.execs = None;
                        failed = true;
                    }
                }
            }
        }
    }
}

/// However the thread ends (told to stop, or a panic), the drainer stops looking for its
/// reads, and a `sync` waiting for it is let go.
impl Drop for Reader {
    fn drop(&mut self) {
        self.early.set_active(false);
        let mut counts = self
            .changes
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        counts.1 = u64::MAX;
        self.changes.applied.notify_all();
    }
}

fn ask_priority(priority: ArgvPriority) {
    let short = || match sys::shortest_fair_slice() {
        Ok(()) => {}
        Err(e) => tracing::debug!(error = %e, "the argv thread keeps the default time slice"),
    };
    match priority {
        ArgvPriority::Inherit => {}
        ArgvPriority::ShortSlice => short(),
        ArgvPriority::Realtime => {
            if let Err(e) = sys::lowest_realtime_priority() {
                tracing::debug!(error = %e, "the argv thread cannot run SCHED_FIFO; asking for a short slice");
                short();
            }
        }
    }
}

/// The `procwatch-argv` thread's socket that hears of execs alone
/// ([`socket::open_execs`]), and what reading it needs. Unsubscribed when dropped.
struct ExecSocket {
    fd: OwnedFd,
    /// Room for one `recvmmsg` ([`sys::recv_many`]).
    buf: Vec<u8>,
    /// The buffer command lines are read into.
    argv: Vec<u8>,
    /// The execs of one read, in order: pid and the kernel's stamp.
    heard: Vec<(i32, u64)>,
}

impl ExecSocket {
    fn open() -> Result<ExecSocket, Error> {
        Ok(ExecSocket {
            fd: socket::open_execs()?,
            buf: vec![0; sys::SLOT * sys::SLOTS],
            argv: Vec::new(),
            heard: Vec::new(),
        })
    }

    /// Reads every exec queued and each one's command line (see [`EarlyArgv::serve`]).
    /// Returns `false` if the socket failed and is to be given up.
    fn serve(&mut self, shared: &Shared, early: &EarlyArgv) -> bool {
        loop {
            let mut slots = [sys::Slot::Foreign; sys::SLOTS];
            let n = match sys::recv_many(&self.fd, &mut self.buf, &mut slots) {
                Ok(n) => n,
                Err(Errno::AGAIN) => return true,
                // Execs this socket missed are read by the drainer, as they would be anyway.
                Err(Errno::INTR) | Err(Errno::NOBUFS) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "exec socket failed; the drainer reads every command line");
                    return false;
                }
            };
            self.heard.clear();
            for (i, slot) in slots[..n].iter().enumerate() {
                if let sys::Slot::Kernel(len) = *slot {
                    wire::decode_datagram(&self.buf[i * sys::SLOT..][..len], |m| {
                        if let Ok(ProcMsg::Exec { tgid, ts_ns, .. }) = m {
                            self.heard.push((tgid, ts_ns));
                        }
                    });
                }
            }
            for &(pid, at) in &self.heard {
                early.serve(shared, pid, at, &mut self.argv);
            }
            if n < sys::SLOTS {
                return true;
            }
        }
    }
}

impl Drop for ExecSocket {
    fn drop(&mut self) {
        socket::ignore(&self.fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn argv(s: &str) -> Option<Argv> {
        Some(Argv::from_read(s.as_bytes(), false))
    }

    fn active() -> EarlyArgv {
        let e = EarlyArgv::default();
        e.set_active(true);
        e
    }

    fn put(e: &EarlyArgv, pid: i32, at: u64, state: State) {
        e.lock().push(pid, at, state);
    }

    fn has(e: &EarlyArgv, pid: i32, at: u64) -> bool {
        e.lock().find(pid, at).is_some()
    }

    /// Without the exec socket the drainer reads everything itself and marks nothing.
    #[test]
    fn inactive_it_leaves_no_marks() {
        let e = EarlyArgv::default();
        assert!(e.take(7, 100).is_none());
        assert!(e.lock().entries.is_empty());
    }

    /// The thread first: the drainer takes its read, once.
    #[test]
    fn the_drainer_takes_what_the_thread_read() {
        let e = active();
        put(&e, 7, 100, State::Read(argv("true\0")));
        assert_eq!(e.take(7, 100), Some(argv("true\0")));
        assert!(e.lock().entries.is_empty());
        // Another exec of the same pid is another key.
        put(&e, 7, 100, State::Read(argv("old\0")));
        assert_eq!(e.take(7, 200), None);
    }

    /// A process gone before the thread could read it: the drainer gets `Some(None)` and
    /// does not try again.
    #[test]
    fn a_gone_process_is_told_once() {
        let e = active();
        put(&e, 7, 100, State::Read(None));
        assert_eq!(e.take(7, 100), Some(None));
    }

    /// The drainer first: its mark makes the thread skip the exec and clear the mark.
    #[test]
    fn the_thread_skips_what_the_drainer_took() {
        let e = active();
        assert_eq!(e.take(7, 100), None);
        let shared = Shared::new();
        let mut buf = Vec::new();
        // Our own pid: the thread would read something if it did not skip.
        let me = std::process::id() as i32;
        assert_eq!(e.take(me, 100), None);
        e.serve(&shared, me, 100, &mut buf);
        assert!(!has(&e, me, 100), "the mark is cleared");
        assert!(has(&e, 7, 100));
    }

    /// The thread reads an exec nobody has taken yet (a process unknown to the registry).
    #[test]
    fn the_thread_reads_an_unknown_process() {
        let e = active();
        let shared = Shared::new();
        let me = std::process::id() as i32;
        e.serve(&shared, me, 100, &mut Vec::new());
        let got = e.take(me, 100).expect("the thread's read");
        let got = got.expect("this process is alive");
        assert!(!got.is_empty());
    }

    /// The drainer waits for a read the thread started, and gets it.
    #[test]
    fn the_drainer_waits_for_a_read_in_progress() {
        let e = Arc::new(active());
        put(&e, 7, 100, State::Reading);
        let thread = {
            let e = e.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_micros(300));
                let mut t = e.lock();
                let i = t.find(7, 100).unwrap();
                t.entries[i].state = State::Read(argv("late\0"));
                drop(t);
                e.read.notify_all();
            })
        };
        assert_eq!(e.take(7, 100), Some(argv("late\0")));
        thread.join().unwrap();
    }

    /// A read that does not finish within `WAIT` is given up: the drainer reads itself, and
    /// the thread's late result is dropped.
    #[test]
    fn a_stuck_read_is_given_up() {
        let e = active();
        put(&e, 7, 100, State::Reading);
        let t0 = Instant::now();
        assert_eq!(e.take(7, 100), None);
        assert!(t0.elapsed() >= WAIT);
        assert!(matches!(e.lock().entries[0].state, State::Taken));
    }

    /// Old entries and overflow are dropped; a read in progress is never dropped by age.
    #[test]
    fn the_table_stays_short() {
        let e = active();
        put(&e, 1, 0, State::Reading);
        put(&e, 2, 10, State::Read(None));
        put(&e, 3, 10 + MAX_AGE + 1, State::Taken);
        let pids: Vec<i32> = e.lock().entries.iter().map(|x| x.pid).collect();
        assert_eq!(pids, [1, 3]);
        for i in 0..2 * CAPACITY as i32 {
            put(&e, 100 + i, MAX_AGE + 20, State::Taken);
        }
        assert_eq!(e.lock().entries.len(), CAPACITY);
        assert_eq!(
            e.lock().entries.back().map(|x| x.pid),
            Some(100 + 2 * CAPACITY as i32 - 1)
        );
        e.set_active(false);
        assert!(e.lock().entries.is_empty());
    }
}
