//! Backends: where process events come from.
//!
//! # What a backend owes the registry
//!
//! A backend turns one kernel mechanism into [`Input`](crate::registry::Input) values and
//! feeds them to the shared registry. Every backend must:
//!
//! 1. **Start covered, attach without the lock.** Once
//!    [`ProcWatcher::build`](crate::Builder::build) returns, the source is armed.
//!    [`Backend::attach`] makes it cover one more pid (netlink covers every pid already; a
//!    ptrace backend would seize it) and reads the process's state, without the registry
//!    lock: `watch` has linked the stream's knote before the call, and the registry logs what
//!    is applied meanwhile and replays it on that state. Any event that happens after `watch`
//!    began reaches the registry; `watch` relies on this to promise that nothing after it
//!    returns is missed.
//! 2. **Keep per-process order.** Inputs about one process arrive in the order they happened.
//!    A backend that must report something about a new process before its parent's fork
//!    (ptrace: a child killed before its creator's event) sends `Birth` first; the registry
//!    holds the child in flux until the `Fork` claims it.
//! 3. **Report process exit once.** Either per thread (`ThreadStart`/`ThreadExit`, and the
//!    registry works out the last thread) or per process (`Exit`), never both for one process.
//! 4. **Never lose silently.** When the source drops messages, call `mark_lost`, then feed a
//!    `/proc` resync (see [`crate::procfs`]).
//! 5. **Drain at its own pace.** Never block on a consumer: the registry coalesces, so a backend
//!    only needs the registry lock for short sections that never wait.
//! 6. **Stop without blocking.** [`Backend::shutdown`] only signals; the backend's thread or
//!    task releases its own resources (fds, traced processes) when it sees the signal.
//! 7. **Stamp inputs on this process's clocks.** Every input carries a
//!    [`Stamp`](crate::registry::Stamp): `CLOCK_MONOTONIC` of this process's time namespace
//!    (what events' [`Timestamp`](crate::Timestamp)s are) and `CLOCK_BOOTTIME` (what `/proc`
//!    start times count in), as close as the source allows to when the event happened; 0
//!    when unknown. A stream's start and a thread set's read are compared with these.
//! 8. **Read command lines early, and only when asked.** While
//!    [`Shared::argv_wanted`](crate::shared::Shared::argv_wanted) holds, an `Input::Exec`
//!    of a process a stream with `Interest::ARGV` follows carries `/proc/<pid>/cmdline`, read
//!    as soon as the backend hears of the exec (while the process is stopped there, for a
//!    backend that stops it), without the registry lock held during the read.
//! 9. **Reap nothing that is not its own.** A backend never calls `waitpid(-1)` or
//!    `waitid(P_ALL)` without `WNOWAIT`: other code in the program (tokio, std) owns its
//!    children's exit statuses.

pub(crate) mod netlink;
pub(crate) mod ptrace;

use crate::registry::ProcSnapshot;
use crate::{BackendKind, Error, Pid};

/// The handle a watcher keeps on its running backend.
pub(crate) trait Backend: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// The process that traces watched processes, if the backend has one: `spawn` lets its
    /// held child be traced by it (`PR_SET_PTRACER`, for Yama's `ptrace_scope` 1).
    fn tracer(&self) -> Option<i32> {
        None
    }
    /// Makes the source cover `pid`, then says what the process is now: `None` if there is
    /// no such process (a thread id that is not its process's included). Called by `watch`
    /// without the registry lock (a backend's own thread may need it meanwhile), after the
    /// stream's knote is linked: every input applied from then on reaches the stream.
    /// [`ProcSnapshot::read_at`] must be taken before the state is read (see
    /// `registry/attach.rs` for how the two are put together). `ticket` is the registry's
    /// number for this attach (see `detach`). The error says what refused the attach; `watch`
    /// adds the pid and the backend.
    /// With `hold`, the stream wants its processes kept stopped at their `Child` and `Exec`
    /// events (`Interest::HOLD`): only a backend whose [`Backend::can_hold`] is true is asked.
    fn attach(&self, pid: Pid, ticket: u64, hold: bool) -> Result<Option<ProcSnapshot>, Error>;
    /// Whether the backend can keep a process stopped at an event (`Interest::HOLD`).
    fn can_hold(&self) -> bool {
        false
    }
    /// How many new tasks' first stops came before their creation events, and how many
    /// after, so far (a backend that stops tasks; for the test suite).
    #[cfg(any(test, feature = "bench-support"))]
    fn first_stops(&self) -> Option<(u64, u64)> {
        None
    }
    /// How many times the Netlink runtime task waited a batch window before reading (see
    /// `NetlinkOptions::batch_window`); `None` for other backends.
    #[cfg(any(test, feature = "bench-support"))]
    fn windowed_reads(&self) -> Option<u64> {
        None
    }
    /// How many rounds of the Netlink backstop thread found datagrams and read them;
    /// `None` for other backends.
    #[cfg(any(test, feature = "bench-support"))]
    fn backstop_reads(&self) -> Option<u64> {
        None
    }
    /// Holds these processes (and what they create from then on) at their next creation
    /// and exec events (`true`), or no more (`false`): a stream's `HOLD` interest changed.
    /// Returns once the change is in effect (like `attach`, it may wait for the backend's
    /// thread; never called from it).
    fn set_hold(&self, _changes: &[(Pid, bool)]) {}
    /// The number of streams that want command lines (`Interest::ARGV`, see
    /// [`Shared::argv_wanted`](crate::shared::Shared::argv_wanted)) went to or from 0: a
    /// backend that reads them somewhere else than where it checks that count (the Ptrace
    /// backend's tracer process) is told the current state. Called by `watch` before it
    /// attaches, so that the stream's first exec has its command line. With `wait`, it
    /// returns once a change is in effect, like `set_hold`; without (a stream's drop), it
    /// must not block. Never called from the backend's own thread.
    fn sync_argv(&self, _wait: bool) {}
    /// Lets held processes run: no stream holds them any more. Must not block.
    fn release(&self, _pids: &[Pid]) {}
    /// No stream follows these pids any more (their processes may live on): stop following
    /// them. Called after the registry lock is released, from whatever thread dropped the
    /// last stream; must not block. A `watch` of one of them may have begun meanwhile and
    /// called [`Backend::attach`] again: each pid comes with the registry's ticket at the time
    /// the detach was decided, and a backend ignores a detach whose ticket is below that of
    /// the latest attach of the pid.
    fn detach(&self, pids: &[(Pid, u64)]);
    /// Asks the backend to stop. Must not block; called from `Drop`.
    fn shutdown(&self);
}
