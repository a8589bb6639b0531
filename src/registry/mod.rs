//! The registry: kqueue-style bookkeeping of who watches which process.
//!
//! It is pure: backends feed it [`Input`] values, streams take [`ProcEvent`]s out, and no
//! syscall happens here, so its ordering rules are unit-tested with scripted inputs.
//!
//! # Records and who locks them
//!
//! * A **knote** is one (stream, pid) pair. It lives in its stream's slab and holds the events
//!   that stream has not read yet as fixed-size pending state (see [`knote`]).
//! * A **proc entry** is one tracked pid: the knotes of every stream watching it, its thread
//!   set and its start time (to tell a reused pid from the process we track).
//! * A **stream** owns its knotes and a FIFO of the knotes that have something to deliver.
//! * A **held** record is a knote for a process whose creation the backend has not reported
//!   yet (a ptrace tracee's first stop can be seen before its parent's fork event). Its
//!   events are kept "in flux" until the parent's fork claims it, then handed to the parent's
//!   streams behind their `Child` event; an `Abandon` input discards it.
//!
//! The whole registry sits behind one mutex owned by the watcher (see `shared.rs`): every
//! critical section is one input, one batch, one step of a `watch`, one drop or one read of a
//! few events, and none of them waits for anything or makes a syscall (but for reading the
//! clock when a `watch` begins), so there is no lock
//! order to get wrong. A `watch` reads the process's state between two sections (see
//! `attach.rs`), so a backend's own thread may apply inputs meanwhile. Because a stream's
//! removal and a fork's hand-off both run under that lock, a hand-off either completes before
//! a stream is closed (and the close then tears the new knote down) or finds the stream gone
//! and attaches nothing; exactly one party frees each knote: the stream's close, or the read
//! that delivers its `Exit`.

mod attach;
mod knote;
mod links;
mod slab;
mod threads;

use crate::{Argv, ErrorKind, Interest, Pid, ProcEvent, Timestamp, TrackErrReason};
pub(crate) use attach::{Begin, Finish};
use knote::{Knote, KnoteState, RunEvent};
use links::Links;
use slab::Slab;
use std::collections::{HashMap, HashSet, VecDeque};
#[cfg(test)]
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker;
pub(crate) use threads::Threads;

/// Two start times closer than this name the same process (`/proc` has clock-tick resolution).
const START_TOLERANCE_NS: u64 = 30_000_000;
/// Clock skew allowed between a message's stamp and a start time before it counts as stale.
const STALE_SLACK_NS: u64 = 1_000_000;
/// How many exited processes are remembered, so that a resync or a late fork message does
/// not announce one again.
const GONE_CAP: usize = 8192;
/// How many unclaimed processes are held in flux at most.
const MAX_HELD: usize = 4096;

/// What a backend tells the registry. Pids are thread-group ids unless named `tid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// Process `parent` created process `child`, which started at `start_ns` (`CLOCK_BOOTTIME`
    /// nanoseconds, the clock of `/proc` start times; 0 when unknown).
    Fork {
        parent: Pid,
        child: Pid,
        start_ns: u64,
    },
    /// Process `tgid` created thread `tid`.
    ThreadStart { tgid: Pid, tid: i32 },
    /// Process `pid` called `execve` successfully; `argv` is its new command line, if the
    /// backend read it (only while some stream wants it: [`Registry::argv_wanted`]).
    Exec { pid: Pid, argv: Option<Argv> },
    /// Thread `tid` of process `tgid` exited with wait status `code`.
    ThreadExit { tgid: Pid, tid: i32, code: i32 },
    /// The whole process exited (for backends that see process exits directly, such as
    /// ptrace; the netlink backend reports threads instead).
    #[cfg_attr(not(test), allow(dead_code))]
    Exit {
        pid: Pid,
        status: Option<ExitStatus>,
    },
    /// Process `pid` exists but its creation has not been reported yet: hold its events.
    /// (A ptrace tracee's first stop can come before its parent's fork event.)
    #[cfg_attr(not(test), allow(dead_code))]
    Birth { pid: Pid },
    /// Process `pid`, held since `Birth`, will never be claimed: drop what was held.
    #[cfg_attr(not(test), allow(dead_code))]
    Abandon { pid: Pid },
    /// Process `pid` is stopped at the event just applied (its `Child`, or an `Exec`), and
    /// stays so until released: the streams with `Interest::HOLD` that got the event keep it
    /// stopped until their consumers have moved past it (see [`Registry::release`]).
    Hold { pid: Pid },
}

/// What `/proc` said about one process.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcSnapshot {
    /// The parent's pid (0 if none).
    pub(crate) ppid: i32,
    /// `CLOCK_BOOTTIME` nanoseconds at which it started (from `/proc`, clock-tick precision).
    pub(crate) start_ns: u64,
    /// `Some(status)` if the whole process is a zombie (status where readable).
    pub(crate) zombie: Option<Option<ExitStatus>>,
    /// Whether the thread-group leader has exited while other threads live.
    pub(crate) leader_gone: bool,
    /// Thread ids, when the process has more than one thread (else empty).
    pub(crate) tids: Vec<i32>,
    /// `CLOCK_MONOTONIC` nanoseconds taken just before the read (0 if unknown): every kernel
    /// message stamped earlier is already reflected in what was read.
    pub(crate) read_at: u64,
}

/// Every process `/proc` listed during a resync.
pub(crate) type SystemSnapshot = HashMap<i32, ProcSnapshot>;

/// What the backend learned beside the listing, for [`Registry::resync`].
#[derive(Debug, Default)]
pub(crate) struct ResyncHints {
    /// Tracked processes that exist but that the listing could not show (`/proc` mounted
    /// with `hidepid`, and another user's process): left as they are, neither taken for
    /// dead nor rebuilt.
    pub(crate) unverified: HashSet<i32>,
    /// Tracked processes whose leader's exit message the backend holds, to be applied right
    /// after the resync, with the message's boot-clock stamp: one with a single thread that
    /// the listing misses is left to that message, which has its exit status (unless the
    /// message is older than the process, and so about an earlier owner of the pid).
    pub(crate) exits_coming: HashMap<i32, u64>,
}

/// When an input happened, on both clocks the registry needs: `CLOCK_MONOTONIC` for the
/// events' [`Timestamp`]s, `CLOCK_BOOTTIME` to compare with `/proc` start times (which count
/// suspended time too). 0 means unknown.
#[derive(Debug, Copy, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) mono: u64,
    pub(crate) boot: u64,
}

impl Stamp {
    /// How far the boot clock is ahead of the monotonic one: the time spent suspended, plus,
    /// in a time namespace, the difference of its two offsets (which can make it negative:
    /// a namespace may move its monotonic clock further ahead than its boot clock).
    pub(crate) fn boot_ahead(self) -> i64 {
        (self.boot as i64).wrapping_sub(self.mono as i64)
    }
}

/// Names one stream; the generation makes a stale id harmless after the slot is reused.
#[derive(Debug, Copy, Clone, PartialEq, Eq, Hash)]
pub(crate) struct StreamId {
    idx: u32,
    gen: u32,
}

/// What a critical section hands back, to be done once the lock is released: wakers to wake,
/// and pids that no stream follows any more while their process may live on (the backend
/// stops following them: a ptrace backend detaches, a pidfd one closes its descriptor).
#[derive(Default)]
pub(crate) struct Actions {
    wakers: Vec<Waker>,
    /// Each pid with the registry's attach ticket at the time (see [`Registry::ticket`]).
    detached: Vec<(Pid, u64)>,
    /// Held processes that no stream holds any more: to be let run.
    released: Vec<Pid>,
    /// Processes to hold at their next events from now on (`true`), or no more (`false`):
    /// a stream's [`Interest::HOLD`] changed.
    hold_changes: Vec<(Pid, bool)>,
    /// Whether the number of streams that want command lines went from 0 (`Some(true)`)
    /// or to 0 (`Some(false)`).
    argv_changed: Option<bool>,
}

impl Actions {
    /// Wakes the collected wakers. Only for sections that detach nothing (inputs, reads);
    /// the others use [`Actions::run`].
    pub(crate) fn wake_all(&mut self) {
        debug_assert!(self.detached.is_empty(), "detached pids would be forgotten");
        debug_assert!(self.released.is_empty(), "released pids would be forgotten");
        debug_assert!(
            self.hold_changes.is_empty(),
            "hold changes would be forgotten"
        );
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }

    /// Wakes the collected wakers and tells `backend` which pids it no longer follows.
    pub(crate) fn run(&mut self, backend: &dyn crate::backend::Backend) {
        let detached = std::mem::take(&mut self.detached);
        let released = std::mem::take(&mut self.released);
        let hold_changes = std::mem::take(&mut self.hold_changes);
        let argv_changed = std::mem::take(&mut self.argv_changed);
        self.wake_all();
        if let Some(up) = argv_changed {
            // Only a count going up waits for the backend (`set_interest`); a drop never does.
            backend.sync_argv(up);
        }
        if !hold_changes.is_empty() {
            backend.set_hold(&hold_changes);
        }
        if !released.is_empty() {
            backend.release(&released);
        }
        if !detached.is_empty() {
            backend.detach(&detached);
        }
    }

    /// Takes the held processes to let run (for a backend applying its own inputs).
    pub(crate) fn take_released(&mut self) -> Vec<Pid> {
        std::mem::take(&mut self.released)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.wakers.len()
    }

    #[cfg(test)]
    pub(crate) fn take_detached(&mut self) -> Vec<Pid> {
        std::mem::take(&mut self.detached)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    }
}

/// What [`Registry::pop`] found.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub(crate) enum PopStatus {
    /// Events were appended.
    Ready,
    /// Nothing now; the waker is registered.
    Pending,
    /// The stream ended: all its processes delivered their exit, or the watcher shut down.
    Done,
}

struct Stream {
    gen: u32,
    root: Pid,
    /// When its `watch` began: inputs that happened earlier are not for this stream.
    since: Stamp,
    interest: Interest,
    max_tracked: usize,
    knotes: Slab<Knote>,
    /// Knotes with something to deliver, oldest first; `true` marks an exit-only entry.
    ready: VecDeque<(u32, bool)>,
    lost: u32,
    lost_at: Timestamp,
    waker: Option<Waker>,
}

impl Stream {
    /// Whether something that happened at `when` happened before this stream's watch began.
    /// Monotonic stamps are compared when both are known; otherwise boot-clock ones, with
    /// `when.boot` the latest time it may have happened (a `/proc` start time rounded up).
    fn predates(&self, when: Stamp) -> bool {
        if when.mono != 0 && self.since.mono != 0 {
            return when.mono < self.since.mono;
        }
        when.boot != 0 && self.since.boot != 0 && when.boot <= self.since.boot
    }

    fn wake(&mut self, wake: &mut Actions) {
        if let Some(w) = self.waker.take() {
            wake.wakers.push(w);
        }
    }

    /// Puts knote `kid` on the ready list if it has something and is not there yet.
    fn enqueue(&mut self, kid: u32, wake: &mut Actions) {
        let Some(k) = self.knotes.get_mut(kid) else {
            return;
        };
        if !k.queued && k.has_pending() {
            k.queued = true;
            self.ready.push_back((kid, false));
            self.wake(wake);
        }
    }

    /// Queues knote `kid` after its exit was recorded. If the knote already waits in the list
    /// with earlier events, its exit gets an entry of its own at the back: events queued in
    /// between (such as the `Child` of a process it forked just before exiting) then come
    /// before the parent's `Exit`, as they happened.
    fn enqueue_exit(&mut self, kid: u32, wake: &mut Actions) {
        let Some(k) = self.knotes.get_mut(kid) else {
            return;
        };
        if k.queued && !k.exit_split && k.exit_recorded().is_some() {
            k.exit_split = true;
            self.ready.push_back((kid, true));
            self.wake(wake);
        } else {
            self.enqueue(kid, wake);
        }
    }

    /// Frees an exited knote that has nothing left to deliver.
    fn reap(&mut self, kid: u32, wake: &mut Actions) {
        let free = matches!(self.knotes.get(kid),
            Some(k) if k.state == KnoteState::Exited && !k.queued && !k.exit_split && !k.has_pending());
        if free {
            self.knotes.remove(kid);
            if self.knotes.len() == 0 {
                self.wake(wake);
            }
        }
    }
}

struct ProcEntry {
    start_ns: u64,
    /// (stream slot, knote slot) of every stream watching this pid.
    knotes: Links,
    threads: Threads,
    /// `CLOCK_MONOTONIC` time of the `/proc` read the thread set was last rebuilt from (0 for
    /// an entry built from a fork message): a thread message stamped earlier is already
    /// reflected in it (see [`thread_input_is_stale`]).
    synced: u64,
    /// The `CLOCK_MONOTONIC` stamp of the fork message the entry was built from (0 for an
    /// entry found in `/proc`): messages about the process are compared with it on the clock
    /// they were stamped with, without the boot clock's offset (see [`predates_entry`]).
    born_mono: u64,
}

impl ProcEntry {
    /// Replaces the thread set with what a newer `/proc` read says.
    fn resync_threads(&mut self, pid: i32, snap: &ProcSnapshot) {
        self.threads = Threads::from_tids(pid, &snap.tids, snap.leader_gone);
        self.synced = snap.read_at;
    }
}

/// A process held in flux: its events, and the held parent it was born of, if any.
struct Held {
    knote: Knote,
    parent: Option<Pid>,
    start_ns: u64,
}

/// The per-pid table, the streams and the processes held in flux.
pub(crate) struct Registry {
    procs: HashMap<i32, ProcEntry>,
    streams: Slab<Stream>,
    next_gen: u32,
    held: HashMap<i32, Held>,
    /// Recently exited tracked processes (pid, start), oldest first, and their index.
    gone: HashMap<i32, u64>,
    gone_order: VecDeque<(i32, u64)>,
    /// Pids attached by `watch` while a resync's `/proc` listing was being taken: the listing
    /// may predate them, so that resync leaves them alone.
    scan_attached: Option<HashSet<i32>>,
    /// Pids whose entry waits for the `/proc` read of a `watch` in progress (see `attach.rs`).
    attaching: HashMap<i32, attach::Attaching>,
    /// Held processes (`Input::Hold`): how many streams hold each, on a knote or, once read,
    /// in the stream's own buffer, until [`Registry::release`].
    holds: HashMap<i32, u32>,
    /// How many attaches have begun: each `watch` gets the next number (its ticket), and a
    /// detach carries the number current when it was decided, so that a backend can tell a
    /// detach decided before an attach from one decided after it.
    tickets: u64,
    closed: bool,
    /// How many timed inputs were about a tracked process (see [`Registry::activity`]).
    activity: u64,
    /// How many streams want command lines with their execs (`EXEC | ARGV`), readable
    /// without the lock (see [`Registry::argv_wanted`]).
    argv_streams: Arc<AtomicUsize>,
}

/// Whether a stream with this interest wants command lines read.
fn wants_argv(interest: Interest) -> bool {
    interest.contains(Interest::EXEC | Interest::ARGV)
}

/// The resolution of `/proc` start times (`USER_HZ` clock ticks, 100 per second on Linux).
const PROC_TICK_NS: u64 = 10_000_000;

/// Whether a thread message stamped `at` is already reflected in the `/proc` read that the
/// thread set of `e` was rebuilt from. The kernel lists a new thread before it sends the
/// thread's creation message (`copy_process`), sends a thread's exit message only once the
/// thread is unlisted or, for a leader, a zombie (`exit_notify` comes first in `do_exit`), and
/// sends the exec message once the exec'ing thread leads the process (`de_thread` comes
/// first): a message stamped before the read changed nothing the read did not see.
fn thread_input_is_stale(e: &ProcEntry, at: Stamp) -> bool {
    at.mono != 0 && e.synced != 0 && at.mono < e.synced
}

/// Whether a message stamped `at` is older than the process now tracked in `e`, and so about
/// an earlier owner of its pid. For an entry built from a fork message, both stamps come from
/// the kernel's monotonic clock: the fork's is taken before the child first runs, so nothing
/// the child does is stamped earlier, and no slack is needed. An entry found in `/proc` only
/// has a start time on the boot clock, at clock-tick precision, and the message's boot stamp
/// depends on the offset between the clocks read by this process: that comparison allows
/// [`STALE_SLACK_NS`].
fn predates_entry(e: &ProcEntry, at: Stamp) -> bool {
    if e.born_mono != 0 && at.mono != 0 {
        at.mono < e.born_mono
    } else {
        at.boot != 0 && e.start_ns > at.boot.saturating_add(STALE_SLACK_NS)
    }
}

pub(crate) fn same_start(a: u64, b: u64) -> bool {
    a == 0 || b == 0 || a.abs_diff(b) <= START_TOLERANCE_NS
}

impl Registry {
    pub(crate) fn new() -> Registry {
        Registry {
            procs: HashMap::new(),
            streams: Slab::new(),
            next_gen: 0,
            held: HashMap::new(),
            gone: HashMap::new(),
            gone_order: VecDeque::new(),
            scan_attached: None,
            attaching: HashMap::new(),
            holds: HashMap::new(),
            tickets: 0,
            closed: false,
            activity: 0,
            argv_streams: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The count of streams that want command lines, to read without the lock: a backend
    /// reads `/proc/<pid>/cmdline` at an exec only while it is above 0.
    pub(crate) fn argv_wanted(&self) -> Arc<AtomicUsize> {
        self.argv_streams.clone()
    }

    fn count_argv_stream(&mut self, up: bool, actions: Option<&mut Actions>) {
        let before = if up {
            self.argv_streams.fetch_add(1, Ordering::SeqCst)
        } else {
            self.argv_streams.fetch_sub(1, Ordering::SeqCst)
        };
        let after = if up { before + 1 } else { before - 1 };
        if let (Some(a), true) = (actions, before == 0 || after == 0) {
            a.argv_changed = Some(up);
        }
    }

    /// Whether some stream that wants command lines follows `pid` (an exec of a process the
    /// backend has not yet reported the creation of is not covered: see the caller).
    pub(crate) fn wants_argv_of(&self, pid: Pid) -> bool {
        let Some(entry) = self.procs.get(&pid.as_raw()) else {
            return self.held.contains_key(&pid.as_raw());
        };
        entry.knotes.iter().any(|(sidx, _)| {
            self.streams
                .get(sidx)
                .is_some_and(|s| wants_argv(s.interest))
        })
    }

    /// Whether an exec of `pid` heard now may be wanted with its command line: a stream that
    /// asks for it follows the process, or the process is not known yet (a child whose fork
    /// has not been applied, or one of another tree that nobody follows).
    pub(crate) fn may_want_argv_of(&self, pid: Pid) -> bool {
        !self.procs.contains_key(&pid.as_raw()) || self.wants_argv_of(pid)
    }

    fn stream_mut(&mut self, id: StreamId) -> Option<&mut Stream> {
        self.streams.get_mut(id.idx).filter(|s| s.gen == id.gen)
    }

    /// Creates an empty stream for `root` (the pid it will be created for).
    pub(crate) fn add_stream(
        &mut self,
        root: Pid,
        interest: Interest,
        max_tracked: usize,
    ) -> Result<StreamId, ErrorKind> {
        if self.closed {
            return Err(ErrorKind::Closed);
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        if wants_argv(interest) {
            // The watch tells the backend before it attaches (see `ProcWatcher::watch`).
            self.count_argv_stream(true, None);
        }
        let idx = self.streams.insert(Stream {
            gen,
            root,
            since: Stamp::default(),
            interest,
            max_tracked: max_tracked.max(1),
            knotes: Slab::new(),
            ready: VecDeque::new(),
            lost: 0,
            lost_at: Timestamp::UNKNOWN,
            waker: None,
        });
        Ok(StreamId { idx, gen })
    }

    /// Closes stream `id`: unlinks and frees all its knotes. Later hand-offs find it gone.
    /// Pids no stream follows any more go to `actions` (detached).
    pub(crate) fn remove_stream(&mut self, id: StreamId, actions: &mut Actions) {
        if self.stream_mut(id).is_none() {
            return;
        }
        let stream = self.streams.remove(id.idx).expect("checked above");
        if wants_argv(stream.interest) {
            self.count_argv_stream(false, Some(actions));
        }
        for (_, k) in stream.knotes.iter() {
            if k.hold {
                self.release_one(k.pid, actions);
            }
            if k.state != KnoteState::Attached {
                continue;
            }
            let raw = k.pid.as_raw();
            if let Some(entry) = self.procs.get_mut(&raw) {
                if entry.knotes.remove_stream(id.idx) {
                    self.procs.remove(&raw);
                    self.attaching.remove(&raw);
                    actions.detached.push((k.pid, self.tickets));
                }
            }
        }
    }

    /// Changes what stream `id` wants from now on; pending events of kinds it dropped are
    /// not delivered. When [`Interest::HOLD`] comes or goes, the processes the stream follows
    /// go to `actions`: to be held at their next events from now on, or no more where no
    /// other stream following them holds.
    pub(crate) fn set_interest(&mut self, id: StreamId, interest: Interest, actions: &mut Actions) {
        let Some(s) = self.stream_mut(id) else {
            return;
        };
        let was = std::mem::replace(&mut s.interest, interest);
        if wants_argv(was) != wants_argv(interest) {
            self.count_argv_stream(wants_argv(interest), Some(actions));
        }
        let Some(s) = self.stream_mut(id) else {
            return;
        };
        let hold = interest.contains(Interest::HOLD);
        if was.contains(Interest::HOLD) == hold {
            return;
        }
        let pids: Vec<Pid> = s
            .knotes
            .iter()
            .filter(|(_, k)| k.state == KnoteState::Attached)
            .map(|(_, k)| k.pid)
            .collect();
        for pid in pids {
            let Some(entry) = self.procs.get(&pid.as_raw()) else {
                continue;
            };
            let held_by_another = entry.knotes.iter().any(|(sidx, _)| {
                sidx != id.idx
                    && self
                        .streams
                        .get(sidx)
                        .is_some_and(|o| o.interest.contains(Interest::HOLD))
            });
            if !held_by_another {
                actions.hold_changes.push((pid, hold));
            }
        }
    }

    /// The interest of stream `id`.
    pub(crate) fn interest(&mut self, id: StreamId) -> Option<Interest> {
        self.stream_mut(id).map(|s| s.interest)
    }

    /// Moves events of stream `id` into `out`, stopping once `max` have been moved; the
    /// events pending on one process move together, so a call can move a few more.
    /// Registers `waker` when there is nothing to deliver and the stream is not finished.
    #[cfg(any(test, feature = "bench-support"))]
    pub(crate) fn pop(
        &mut self,
        id: StreamId,
        out: &mut VecDeque<ProcEvent>,
        max: usize,
        waker: Option<&Waker>,
    ) -> PopStatus {
        let mut held = Vec::new();
        let status = self.pop_holding(id, out, max, waker, &mut held);
        debug_assert!(held.is_empty(), "a holding stream must use pop_holding");
        status
    }

    /// [`Registry::pop`] for a stream that may hold processes: the pids whose held event was
    /// moved into `out` go to `held`. Each is the last event about its process in `out` (a
    /// held process does nothing more until released), and the caller now owns the hold:
    /// it calls [`Registry::release`] once its consumer has moved past that event.
    pub(crate) fn pop_holding(
        &mut self,
        id: StreamId,
        out: &mut VecDeque<ProcEvent>,
        max: usize,
        waker: Option<&Waker>,
        held: &mut Vec<Pid>,
    ) -> PopStatus {
        let closed = self.closed;
        let Some(stream) = self.stream_mut(id) else {
            return PopStatus::Done;
        };
        let before = out.len();
        if stream.lost > 0 {
            out.push_back(ProcEvent::Lost {
                pid: stream.root,
                count: std::mem::take(&mut stream.lost),
                at: stream.lost_at,
            });
        }
        let interest = stream.interest;
        while out.len() - before < max {
            let Some((kid, exit_only)) = stream.ready.pop_front() else {
                break;
            };
            let Some(k) = stream.knotes.get_mut(kid) else {
                continue;
            };
            if exit_only {
                k.exit_split = false;
                k.drain_into(interest, out, true);
            } else {
                k.queued = false;
                let with_exit = !k.exit_split;
                k.drain_into(interest, out, with_exit);
                if std::mem::take(&mut k.hold) {
                    held.push(k.pid);
                }
            }
            if k.state == KnoteState::Exited && !k.queued && !k.exit_split {
                stream.knotes.remove(kid);
            }
        }
        if out.len() > before {
            return PopStatus::Ready;
        }
        if stream.knotes.len() == 0 || closed {
            return PopStatus::Done;
        }
        if let Some(w) = waker {
            if !stream.waker.as_ref().is_some_and(|old| old.will_wake(w)) {
                stream.waker = Some(w.clone());
            }
        }
        PopStatus::Pending
    }

    /// The consumer of a stream moved past the held events of `pids` (or dropped them):
    /// each process whose last holder this was goes to `actions`, to be let run.
    pub(crate) fn release(&mut self, pids: &[Pid], actions: &mut Actions) {
        for &pid in pids {
            self.release_one(pid, actions);
        }
    }

    fn release_one(&mut self, pid: Pid, actions: &mut Actions) {
        let raw = pid.as_raw();
        let Some(n) = self.holds.get_mut(&raw) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.holds.remove(&raw);
            actions.released.push(pid);
        }
    }

    /// `Input::Hold`: the streams with `HOLD` whose latest pending event about `pid` is the
    /// one it is stopped at hold it; with none, it is let run at once.
    fn hold(&mut self, pid: Pid, actions: &mut Actions) {
        let raw = pid.as_raw();
        let mut holders = 0;
        if let Some(entry) = self.procs.get(&raw) {
            for (sidx, kid) in entry.knotes.iter() {
                let Some(s) = self.streams.get_mut(sidx) else {
                    continue;
                };
                if !s.interest.contains(Interest::HOLD) {
                    continue;
                }
                if let Some(k) = s.knotes.get_mut(kid) {
                    if k.queued && !k.hold && k.ends_with_holdable() {
                        k.hold = true;
                        holders += 1;
                    }
                }
            }
        }
        if holders == 0 {
            actions.released.push(pid);
        } else {
            *self.holds.entry(raw).or_default() += holders;
        }
    }

    /// How many processes stream `id` tracks (live or with an undelivered exit).
    pub(crate) fn tracked_count(&mut self, id: StreamId) -> usize {
        self.stream_mut(id).map_or(0, |s| s.knotes.len())
    }

    /// The ticket of the latest attach begun (see the `tickets` field).
    pub(crate) fn ticket(&self) -> u64 {
        self.tickets
    }

    /// Whether some stream follows `pid`, or will once its creation is known.
    pub(crate) fn follows(&self, pid: Pid) -> bool {
        let raw = pid.as_raw();
        self.procs.contains_key(&raw) || self.held.contains_key(&raw)
    }

    /// Number of distinct pids tracked by any stream.
    pub(crate) fn tracked_pids(&self) -> usize {
        self.procs.len()
    }

    /// The pids tracked by any stream.
    pub(crate) fn tracked_pid_list(&self) -> Vec<i32> {
        self.procs.keys().copied().collect()
    }

    /// Every tracked process with its start time (`CLOCK_BOOTTIME` nanoseconds, 0 unknown).
    pub(crate) fn tracked_starts(&self) -> Vec<(i32, u64)> {
        self.procs.iter().map(|(&p, e)| (p, e.start_ns)).collect()
    }

    /// Whether process `raw`, started at `start_ns`, is still tracked (not known to exit).
    pub(crate) fn tracks(&self, raw: i32, start_ns: u64) -> bool {
        self.procs
            .get(&raw)
            .is_some_and(|e| same_start(e.start_ns, start_ns))
    }

    /// A count that moves whenever a timed input about a tracked process is applied: while
    /// it stands still, nothing happens to what the streams follow.
    pub(crate) fn activity(&self) -> u64 {
        self.activity
    }

    /// Marks the watcher shut down: streams deliver what they hold, then end.
    pub(crate) fn shutdown(&mut self, wake: &mut Actions) {
        self.closed = true;
        for (_, s) in self.streams.iter_mut() {
            s.wake(wake);
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The backend lost messages: every stream that tracks something gets `Lost`. A resync
    /// ([`Registry::resync`]) should follow.
    pub(crate) fn mark_lost(&mut self, now: Timestamp, wake: &mut Actions) {
        for (_, s) in self.streams.iter_mut() {
            if s.knotes.len() > 0 {
                s.lost = s.lost.saturating_add(1);
                s.lost_at = now;
                s.wake(wake);
            }
        }
    }

    /// Applies one input stamped with the time it happened. An input older than the start of
    /// the process now tracked under its pid is about that pid's previous owner, still queued
    /// when the number was reused: it is dropped.
    ///
    /// A stream only gets what happened after its `watch` began: an input stamped earlier
    /// (still queued in the kernel when the stream was attached) is not delivered to it. A
    /// process's `Exit` is decided by its thread set instead, whose own staleness rule (see
    /// [`thread_input_is_stale`]) keeps a queued message from ending a process the stream
    /// watches.
    pub(crate) fn apply_at(&mut self, input: Input, at: Stamp, wake: &mut Actions) {
        if at.boot != 0 || at.mono != 0 {
            let subject = match &input {
                Input::Fork { parent, .. } => *parent,
                Input::ThreadStart { tgid, .. } | Input::ThreadExit { tgid, .. } => *tgid,
                Input::Exec { pid, .. } | Input::Exit { pid, .. } => *pid,
                Input::Birth { .. } | Input::Abandon { .. } | Input::Hold { .. } => {
                    return self.dispatch(input, at, wake)
                }
            };
            if let Some(e) = self.procs.get(&subject.as_raw()) {
                if predates_entry(e, at) {
                    return;
                }
                self.activity = self.activity.wrapping_add(1);
            }
        }
        self.dispatch(input, at, wake)
    }

    /// Applies one backend input whose time is not known.
    #[cfg(test)]
    pub(crate) fn apply(&mut self, input: Input, wake: &mut Actions) {
        self.dispatch(input, Stamp::default(), wake)
    }

    fn dispatch(&mut self, input: Input, stamp: Stamp, wake: &mut Actions) {
        let at = Timestamp::from_nanos(stamp.mono);
        match input {
            Input::Fork {
                parent,
                child,
                start_ns,
            } => self.fork(parent, child, start_ns, true, at, stamp, wake),
            Input::ThreadStart { .. } | Input::ThreadExit { .. } | Input::Exit { .. } => {
                if !self.log_if_attaching(&input, stamp) {
                    self.apply_thread_input(input, stamp, wake);
                }
            }
            Input::Exec { pid, argv } => self.exec(pid, argv, at, stamp, wake),
            Input::Birth { pid } => {
                let raw = pid.as_raw();
                if !self.procs.contains_key(&raw) && self.held.len() < MAX_HELD {
                    self.held.entry(raw).or_insert_with(|| Held {
                        knote: Knote::new(pid, None, at),
                        parent: None,
                        start_ns: 0,
                    });
                }
            }
            Input::Abandon { pid } => {
                self.held.remove(&pid.as_raw());
            }
            Input::Hold { pid } => self.hold(pid, wake),
        }
    }

    fn exec(
        &mut self,
        pid: Pid,
        argv: Option<Argv>,
        at: Timestamp,
        stamp: Stamp,
        wake: &mut Actions,
    ) {
        let raw = pid.as_raw();
        let Some(entry) = self.procs.get_mut(&raw) else {
            if let Some(h) = self.held.get_mut(&raw) {
                h.knote.record_exec(at, argv);
            }
            return;
        };
        // The read the thread set comes from already shows the process after this exec. A
        // watch still reading it replays the exec on what it reads.
        let attaching = if self.attaching.is_empty() {
            None
        } else {
            self.attaching.get_mut(&raw)
        };
        match attaching {
            Some(a) if a.waiting => a.log(Input::Exec { pid, argv: None }, stamp),
            _ if !thread_input_is_stale(entry, stamp) => entry.threads.exec(),
            _ => {}
        }
        for (sidx, kid) in entry.knotes.iter() {
            let Some(s) = self.streams.get_mut(sidx) else {
                continue;
            };
            if s.interest.contains(Interest::EXEC) && !s.predates(stamp) {
                if let Some(k) = s.knotes.get_mut(kid) {
                    let argv = argv
                        .as_ref()
                        .filter(|_| s.interest.contains(Interest::ARGV));
                    k.record_exec(at, argv.cloned());
                }
                s.enqueue(kid, wake);
            }
        }
    }

    /// `parent` created `child`. With `fork_event`, the parent's streams with `FORK` hear of it;
    /// a resync discovers children without knowing how they were forked and passes `false`.
    /// `at` is the time the events carry; `when` decides which streams the fork is for (only
    /// those whose watch began before it; see [`Stream::predates`]).
    #[allow(clippy::too_many_arguments)]
    fn fork(
        &mut self,
        parent: Pid,
        child: Pid,
        start_ns: u64,
        fork_event: bool,
        at: Timestamp,
        when: Stamp,
        wake: &mut Actions,
    ) {
        let craw = child.as_raw();
        let born_at = at;
        let praw = parent.as_raw();
        // A process whose exit was already reported (found by a resync before this message
        // was read) only counts as a fork of its parent; it is not announced again.
        let reported = self.already_gone(craw, start_ns);
        // A fork names a new process: an entry already under this number is either the same
        // process (attached by a `watch` or a resync before this message was read) or a stale
        // one whose exit was lost, which is certainly gone now.
        let mut known = false;
        let waiting = if self.attaching.is_empty() {
            None
        } else {
            self.attaching.get_mut(&craw).filter(|a| a.waiting)
        };
        if let Some(a) = waiting {
            // A `watch` of this pid is reading it: which process the fork created is told at
            // the end of that read (see `attach.rs`). Until then it counts as this one, and
            // later messages older than it are dropped as about an earlier owner.
            a.claimed_start = start_ns;
            known = true;
            if let Some(e) = self.procs.get_mut(&craw) {
                if e.start_ns == 0 {
                    e.start_ns = start_ns;
                }
            }
        } else if let Some(old) = self.procs.get(&craw) {
            if same_start(old.start_ns, start_ns) {
                known = true;
            } else if start_ns != 0 && old.start_ns > start_ns.saturating_add(STALE_SLACK_NS) {
                // The tracked process started after this fork: the message created the pid's
                // previous owner, long gone, and was still queued when the number was reused
                // (and watched). The parent's streams hear of the fork; nothing is attached,
                // and the process under this number now is left alone.
                self.record_fork_only(parent, craw, at, when, wake);
                return;
            } else {
                self.exit(child, None, at, wake);
            }
        }
        let Some(pentry) = self.procs.get(&praw) else {
            if let Some(h) = self.held.get_mut(&praw) {
                // Born of a process that is itself still held: claim it along with its parent.
                if fork_event {
                    h.knote.record_run(RunEvent::fork(craw, at));
                }
                let held_child = self.held.entry(craw).or_insert_with(|| Held {
                    knote: Knote::new(child, None, born_at),
                    parent: None,
                    start_ns,
                });
                held_child.parent = Some(parent);
                if held_child.start_ns == 0 {
                    held_child.start_ns = start_ns;
                }
            }
            return;
        };
        let parents = pentry.knotes.clone();
        let already = match self.procs.get(&craw) {
            Some(e) if known => e.knotes.clone(),
            _ => Links::new(),
        };
        let mut attached = Links::new();
        for (sidx, pkid) in parents {
            let Some(s) = self.streams.get_mut(sidx) else {
                continue;
            };
            if s.predates(when) {
                // Forked before this stream's watch began: neither the fork nor the child is
                // for it (the child is not a process it saw being created).
                continue;
            }
            if fork_event && s.interest.contains(Interest::FORK) {
                if let Some(k) = s.knotes.get_mut(pkid) {
                    k.record_run(RunEvent::fork(craw, at));
                }
            }
            if s.interest.contains(Interest::TRACK) && !reported && !already.has_stream(sidx) {
                if s.knotes.len() >= s.max_tracked {
                    if let Some(k) = s.knotes.get_mut(pkid) {
                        k.record_run(RunEvent::track_err(craw, TrackErrReason::Limit, at));
                    }
                } else {
                    let kid = s.knotes.insert(Knote::new(child, Some(parent), born_at));
                    attached.push(sidx, kid);
                }
            }
            s.enqueue(pkid, wake);
        }
        let held = self.held.remove(&craw);
        // With nothing attached and the child tracked already (by every stream), only what
        // it created while held is left to hand over (below).
        if attached.is_empty() && !self.procs.contains_key(&craw) {
            if held.is_some() {
                // Nobody follows it, so nobody follows what it created while held either.
                self.drop_held_descendants(child);
            }
            return;
        }
        for (sidx, kid) in attached.iter() {
            let Some(s) = self.streams.get_mut(sidx) else {
                continue;
            };
            if let (Some(h), Some(k)) = (&held, s.knotes.get_mut(kid)) {
                k.absorb(&h.knote);
            }
            s.enqueue(kid, wake);
        }
        match self.procs.get_mut(&craw) {
            Some(e) => attached
                .into_iter()
                .for_each(|(sidx, kid)| e.knotes.push(sidx, kid)),
            None => {
                self.procs.insert(
                    craw,
                    ProcEntry {
                        start_ns,
                        knotes: attached,
                        threads: Threads::single(),
                        synced: 0,
                        born_mono: if fork_event { when.mono } else { 0 },
                    },
                );
            }
        }
        let Some(h) = held else {
            return;
        };
        // Hand the held process's own held children over too, now that it is tracked.
        let mut born: Vec<(u64, i32)> = self
            .held
            .iter()
            .filter(|(_, g)| g.parent == Some(child))
            .map(|(&raw, g)| (g.start_ns, raw))
            .collect();
        born.sort_unstable();
        for (start, raw) in born {
            if let Some(g) = Pid::from_raw(raw) {
                self.fork(child, g, start, false, at, when, wake);
            }
        }
        if let Some((status, exit_at)) = h.knote.exit_recorded() {
            self.exit(child, status, exit_at, wake);
        }
    }

    /// Records `parent`'s fork of `child` on the parent's streams that want forks (and whose
    /// watch began before it), without attaching the child anywhere.
    fn record_fork_only(
        &mut self,
        parent: Pid,
        child: i32,
        at: Timestamp,
        when: Stamp,
        wake: &mut Actions,
    ) {
        let Some(pentry) = self.procs.get(&parent.as_raw()) else {
            return;
        };
        for (sidx, pkid) in pentry.knotes.iter() {
            let Some(s) = self.streams.get_mut(sidx) else {
                continue;
            };
            if s.predates(when) || !s.interest.contains(Interest::FORK) {
                continue;
            }
            if let Some(k) = s.knotes.get_mut(pkid) {
                k.record_run(RunEvent::fork(child, at));
            }
            s.enqueue(pkid, wake);
        }
    }

    /// Discards the held records of every process `root` created while it was held, and of
    /// theirs, once `root` itself turned out not to be followed.
    fn drop_held_descendants(&mut self, root: Pid) {
        let mut parents = vec![root];
        while let Some(p) = parents.pop() {
            let kids: Vec<i32> = self
                .held
                .iter()
                .filter(|(_, h)| h.parent == Some(p))
                .map(|(&raw, _)| raw)
                .collect();
            for raw in kids {
                self.held.remove(&raw);
                parents.extend(Pid::from_raw(raw));
            }
        }
    }

    /// Whether `raw` names a tracked process that already exited (same start time): a zombie
    /// a resync lists again, or a fork message read after the resync reported it.
    fn already_gone(&self, raw: i32, start_ns: u64) -> bool {
        match self.gone.get(&raw) {
            Some(&s) => s != 0 && start_ns != 0 && same_start(s, start_ns),
            None => false,
        }
    }

    fn remember_gone(&mut self, raw: i32, start_ns: u64) {
        if self.gone_order.len() == GONE_CAP {
            if let Some((old, s)) = self.gone_order.pop_front() {
                if self.gone.get(&old) == Some(&s) {
                    self.gone.remove(&old);
                }
            }
        }
        self.gone.insert(raw, start_ns);
        self.gone_order.push_back((raw, start_ns));
    }

    /// The whole process `pid` is gone: unlink it everywhere and record its exit.
    fn exit(&mut self, pid: Pid, status: Option<ExitStatus>, at: Timestamp, wake: &mut Actions) {
        let raw = pid.as_raw();
        let Some(entry) = self.procs.remove(&raw) else {
            if let Some(h) = self.held.get_mut(&raw) {
                h.knote.record_exit(status, at);
            }
            return;
        };
        self.remember_gone(raw, entry.start_ns);
        for (sidx, kid) in entry.knotes {
            let Some(s) = self.streams.get_mut(sidx) else {
                continue;
            };
            let Some(k) = s.knotes.get_mut(kid) else {
                continue;
            };
            k.state = KnoteState::Exited;
            if s.interest.contains(Interest::EXIT) {
                k.record_exit(status, at);
            }
            s.enqueue_exit(kid, wake);
            s.reap(kid, wake);
        }
    }

    /// Marks the start of a resync's `/proc` listing: pids that `watch` attaches from now on
    /// are judged by their own, newer look at `/proc`, not by this listing.
    pub(crate) fn begin_scan(&mut self) {
        self.scan_attached = Some(HashSet::new());
    }

    /// Reconciles the table with a full `/proc` listing taken after a loss: tracked processes
    /// that are gone (or whose pid now names another process) exit, zombies exit with their
    /// status, and untracked children of tracked processes that started after `cutoff_boot`
    /// (the boot-clock time of the last event read before the loss; anything older was not
    /// lost) are attached with `Child`, whole new subtrees included.
    pub(crate) fn resync(
        &mut self,
        snapshot: &SystemSnapshot,
        hints: &ResyncHints,
        now: Stamp,
        cutoff_boot: u64,
        wake: &mut Actions,
    ) {
        let skip = self.scan_attached.take().unwrap_or_default();
        let at = Timestamp::from_nanos(now.mono);
        let tracked: Vec<(i32, u64)> = self.procs.iter().map(|(&p, e)| (p, e.start_ns)).collect();
        for (raw, start) in tracked {
            let Some(pid) = Pid::from_raw(raw) else {
                continue;
            };
            if skip.contains(&raw) {
                continue;
            }
            match snapshot.get(&raw) {
                None if hints.unverified.contains(&raw) => {}
                None if hints.exits_coming.get(&raw).is_some_and(|&at| {
                    self.procs.get(&raw).is_some_and(|e| {
                        e.threads.is_single() && at.saturating_add(STALE_SLACK_NS) >= e.start_ns
                    })
                }) => {}
                Some(sp) if same_start(start, sp.start_ns) => {
                    if let Some(status) = sp.zombie {
                        self.exit(pid, status, at, wake);
                    } else if let Some(e) = self.procs.get_mut(&raw) {
                        if e.start_ns == 0 {
                            e.start_ns = sp.start_ns;
                        }
                        e.resync_threads(raw, sp);
                    }
                }
                _ => self.exit(pid, None, at, wake),
            }
        }
        // Walk down from every tracked process through the listing's parent links, so a whole
        // subtree born in the gap is attached parent first, whatever its pids and start times.
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for (&raw, sp) in snapshot {
            if !self.procs.contains_key(&raw) && !skip.contains(&raw) {
                children.entry(sp.ppid).or_default().push(raw);
            }
        }
        let mut queue: VecDeque<i32> = self.procs.keys().copied().collect();
        while let Some(parent_raw) = queue.pop_front() {
            let Some(kids) = children.remove(&parent_raw) else {
                continue;
            };
            for raw in kids {
                let sp = &snapshot[&raw];
                let (Some(pid), Some(parent)) = (Pid::from_raw(raw), Pid::from_raw(parent_raw))
                else {
                    continue;
                };
                // Older than the loss: its creation was reported (or it predates the watch).
                // Already reported gone: an unreaped zombie this registry announced before.
                if sp.start_ns.saturating_add(START_TOLERANCE_NS) < cutoff_boot
                    || self.already_gone(raw, sp.start_ns)
                {
                    continue;
                }
                let born =
                    Timestamp::from_nanos(sp.start_ns.saturating_add_signed(-now.boot_ahead()));
                // `/proc` rounds start times down to the clock tick: the child started no
                // later than one tick after it. A stream whose watch began after that does
                // not get it; one whose watch began within that tick does.
                let latest = Stamp {
                    mono: 0,
                    boot: sp.start_ns.saturating_add(PROC_TICK_NS),
                };
                self.fork(parent, pid, sp.start_ns, false, born, latest, wake);
                if let Some(e) = self.procs.get_mut(&raw) {
                    e.resync_threads(raw, sp);
                    queue.push_back(raw);
                }
                if let Some(status) = sp.zombie {
                    self.exit(pid, status, at, wake);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
