//! `ProcWatcher`, its builder, and backend selection.

use crate::backend::netlink::{self, Netlink};
use crate::backend::ptrace::Ptrace;
use crate::backend::Backend;
use crate::clock;
use crate::loom::Arc;
use crate::procfs;
use crate::registry::{Actions, Begin, Finish, StreamId};
use crate::shared::Shared;
use crate::stream::ProcEvents;
use crate::{Error, ErrorKind, Interest, Pid};
use std::fmt;
use std::time::{Duration, Instant};

/// Which kernel mechanism a watcher uses. See the crate docs for what each one can do.
#[derive(Debug, Copy, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum BackendKind {
    /// Pick the strongest backend available here; [`ProcWatcher::backend`] says which.
    #[default]
    Auto,
    /// The Linux proc connector (`NETLINK_CONNECTOR`, `CN_IDX_PROC`): any pid, system-wide,
    /// with exit statuses. Needs root or `CAP_NET_ADMIN` in the initial namespaces.
    Netlink,
    /// `ptrace(PTRACE_SEIZE)` from a tracer process: needs no privilege for the processes
    /// this program starts and their descendants; lossless, with exact exit statuses.
    Ptrace,
    /// `pidfd_open` plus `/proc` scans (not available in this version).
    Pidfd,
    /// kqueue `EVFILT_PROC` on the BSDs (not available in this version).
    Kqueue,
}

impl BackendKind {
    /// A short lowercase name: `"auto"`, `"netlink"`, `"ptrace"`, `"pidfd"`, `"kqueue"`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Netlink => "netlink",
            BackendKind::Ptrace => "ptrace",
            BackendKind::Pidfd => "pidfd",
            BackendKind::Kqueue => "kqueue",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How often `watch` reads a process whose threads keep changing during the read.
const MAX_READS: usize = 5;

/// How long `watch` waits for another `watch` of the same pid to finish.
const BUSY_WAIT: Duration = Duration::from_secs(2);

/// How many times `watch_system` lists `/proc` at most, looking for processes created while
/// it attached to the ones it had listed.
const MAX_SYSTEM_PASSES: usize = 8;

/// What [`ProcWatcher::attach_to`] did with a pid.
enum Attach {
    /// The stream follows the pid now.
    Attached,
    /// The stream followed it already.
    Already,
    /// The stream is at its limit of tracked processes.
    Full,
    /// Not attached, for a reason that may be gone if tried again (another watch of the pid
    /// held it too long, or its threads changed during every read).
    Transient(Error),
}

/// The default limit on processes tracked by one stream.
pub const DEFAULT_MAX_TRACKED: usize = 1 << 16;

/// Configures and builds a [`ProcWatcher`].
///
/// # Examples
///
/// ```no_run
/// use procwatch::{BackendKind, ProcWatcher};
///
/// let watcher = ProcWatcher::builder()
///     .backend(BackendKind::Netlink)
///     .max_tracked(10_000)
///     .build()?;
/// assert_eq!(watcher.backend(), BackendKind::Netlink);
/// # Ok::<(), procwatch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    backend: BackendKind,
    max_tracked: usize,
    netlink: NetlinkOptions,
    ptrace: PtraceOptions,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            backend: BackendKind::Auto,
            max_tracked: DEFAULT_MAX_TRACKED,
            netlink: NetlinkOptions::default(),
            ptrace: PtraceOptions::default(),
        }
    }
}

/// Settings of the `Netlink` backend, used when a [`Builder`] ends up starting it
/// ([`BackendKind::Netlink`], or [`BackendKind::Auto`] where the proc connector answers) and
/// ignored otherwise.
///
/// # Examples
///
/// ```no_run
/// use procwatch::{NetlinkOptions, ProcWatcher};
/// use std::time::{Duration, Instant};
///
/// let watcher = ProcWatcher::builder()
///     .netlink(
///         NetlinkOptions::new()
///             .receive_buffer(8 << 20)
///             .listen_timeout(Duration::from_millis(500)),
///     )
///     .build()?;
/// # Ok::<(), procwatch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct NetlinkOptions {
    pub(crate) rcvbuf: usize,
    pub(crate) ack_timeout: Duration,
    pub(crate) batch_window: Duration,
    pub(crate) batch_threshold: u32,
    pub(crate) argv_priority: ArgvPriority,
    pub(crate) argv_thread: bool,
}

/// The rate from which a [`NetlinkOptions::batch_window`] applies unless
/// [`NetlinkOptions::batch_threshold`] says otherwise: 10,000 datagrams a second.
pub(crate) const DEFAULT_BATCH_THRESHOLD: u32 = 10_000;

/// The longest [`NetlinkOptions::batch_window`] a watcher takes.
pub const MAX_BATCH_WINDOW: Duration = Duration::from_millis(100);

impl Default for NetlinkOptions {
    fn default() -> NetlinkOptions {
        NetlinkOptions {
            rcvbuf: netlink::socket::DEFAULT_RCVBUF,
            ack_timeout: Duration::from_secs(2),
            batch_window: Duration::ZERO,
            batch_threshold: DEFAULT_BATCH_THRESHOLD,
            argv_priority: ArgvPriority::default(),
            argv_thread: true,
        }
    }
}

impl NetlinkOptions {
    /// The defaults: a 64 MiB receive buffer, a 2 s wait for the subscription's
    /// acknowledgement.
    pub fn new() -> NetlinkOptions {
        NetlinkOptions::default()
    }

    /// The netlink socket's receive buffer in bytes (default 64 MiB, set with
    /// `SO_RCVBUFFORCE`, or `SO_RCVBUF` capped by `net.core.rmem_max` without privilege). A
    /// larger buffer rides out longer stalls of the process that drains the socket before the
    /// kernel drops messages.
    pub fn receive_buffer(mut self, bytes: usize) -> NetlinkOptions {
        self.rcvbuf = bytes;
        self
    }

    /// How long to wait for the kernel to acknowledge the proc-connector subscription before
    /// reporting [`ErrorKind::Unsupported`] (default 2 s).
    pub fn listen_timeout(mut self, timeout: Duration) -> NetlinkOptions {
        self.ack_timeout = timeout;
        self
    }

    /// Trades latency for CPU under a storm (default zero: every event as soon as the kernel
    /// sends it).
    ///
    /// While the proc connector sends [`batch_threshold`](NetlinkOptions::batch_threshold)
    /// messages a second or more (10,000 by default, measured over 10 ms; the spell ends when
    /// the rate falls under half that), the watcher, once the socket has
    /// something to read, waits `window` before it reads, and reads everything that arrived
    /// meanwhile in one go. While it waits the socket is out of the runtime's reactor, so the
    /// kernel's messages do not wake the thread one by one (registered, each one would, even
    /// with nobody awaiting it). At a lower rate nothing changes: each message is read as it
    /// comes.
    ///
    /// During a storm events then reach streams up to `window` (plus the timer's
    /// granularity, about a millisecond) later; their timestamps
    /// ([`ProcEvent::at`](crate::ProcEvent::at)) still say when they happened. Order, loss
    /// and resync are as without it. What reads `/proc` when an event arrives (a command
    /// line at `Exec`, say) reads it that much later, when a short-lived process may be gone
    /// (the command lines of [`Interest::ARGV`] are read by a thread of the backend's own,
    /// which the window does not delay; see [`NetlinkOptions::argv_priority`]).
    /// On a 2 × 20,000 fork+`_exit` storm a 2 ms window about halved the `procwatch`
    /// command's CPU time (see `benches/RESULTS.md`); the command uses 2 ms. At most
    /// [`MAX_BATCH_WINDOW`]; a longer one is refused by [`Builder::build`]. Without a tokio
    /// runtime (a watcher read from its own thread) it has no effect.
    pub fn batch_window(mut self, window: Duration) -> NetlinkOptions {
        self.batch_window = window;
        self
    }

    /// The rate, in messages a second, from which the
    /// [`batch_window`](NetlinkOptions::batch_window) applies (default 10,000). Zero applies it
    /// at every rate: the first message after a quiet spell waits the window too. Without a
    /// window it changes nothing.
    ///
    /// Every message a sleeping reader gets costs the process that caused it a wakeup, done
    /// by the kernel in that process's own time (and an inter-processor interrupt when the
    /// reader sleeps on another core). A window taken at every rate lets the messages of a
    /// window share one wakeup, so a watcher costs the watched programs less than a reader
    /// that takes each message as it comes, at the price of events that reach streams up to
    /// the window later. The `procwatch` command uses zero: over 15 rounds here (2 cores),
    /// with a 2 ms window at every rate it ran 2,000 fork+execs in 0.96 of the time they took
    /// beside a minimal C listener (one blocking `recv` per message), and a fork storm in
    /// 0.83–0.86 of it, where with the default threshold it took 1.005 and 0.90
    /// (`benches/RESULTS.md`).
    pub fn batch_threshold(mut self, per_second: u32) -> NetlinkOptions {
        self.batch_threshold = per_second;
        self
    }

    /// How the thread that reads command lines for [`Interest::ARGV`] asks to be scheduled
    /// (default [`ArgvPriority::ShortSlice`]).
    ///
    /// From the first time a stream asks for command lines, the backend runs a thread
    /// (`procwatch-argv`) with a second proc-connector socket that hears of execs alone:
    /// it wakes for each exec and reads the new program's `/proc/<pid>/cmdline` at once,
    /// beside the thread that reads every other event. A program that exits within a
    /// millisecond of its exec is often gone before a thread woken on a busy machine gets a
    /// core: an ordinary thread waits for the running one's time slice to end. Here (2
    /// cores), of 300 `/bin/true` run one after the other beside a busy loop on each core,
    /// 16-32 lost their command line with an ordinary thread and 13-35 with the shortest
    /// slice (which does not help against busy loops), none with [`ArgvPriority::Realtime`]
    /// (8 runs); of 300 shell pipelines (`/bin/true`, `tr`, `wc`; 902 execs), 157-171,
    /// 22-38 and 0-1 (`benches/RESULTS.md`). The thread does the
    /// same work whatever the setting; the setting only changes when it runs.
    pub fn argv_priority(mut self, priority: ArgvPriority) -> NetlinkOptions {
        self.argv_priority = priority;
        self
    }

    /// Whether the command lines of [`Interest::ARGV`] are read by the `procwatch-argv`
    /// thread the moment each exec happens (`true`, the default; see
    /// [`argv_priority`](NetlinkOptions::argv_priority)), or only by the thread that drains
    /// every event, right after it decodes the exec's message (`false`).
    ///
    /// The thread costs a wakeup per exec, and the process that execs pays for it: the
    /// kernel wakes the thread in that process's time, with an inter-processor interrupt
    /// when the thread sleeps on another core. Without it, command lines are read with
    /// everything else, in one wakeup per [`batch_window`](NetlinkOptions::batch_window),
    /// and a program that exits before that read shows no command line (`None`). Here (2
    /// cores, a virtual machine), under the `procwatch` command with a 2 ms window, 2,000
    /// fork+execs of `/bin/true` took 1.08–1.10 of their unwatched time with the thread
    /// and 1.02–1.09 without it, where a listener that never reads cost 1.01–1.02 (two runs
    /// of 15 rounds); without the thread, 2–12 of `make -j2`'s 128 execs and 735–762 of a
    /// shell pipeline's 902 had no command line, with it 0 and 0–1 (`benches/RESULTS.md`).
    pub fn argv_thread(mut self, enabled: bool) -> NetlinkOptions {
        self.argv_thread = enabled;
        self
    }
}

/// How the Netlink backend's `procwatch-argv` thread asks to be scheduled
/// ([`NetlinkOptions::argv_priority`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ArgvPriority {
    /// An ordinary thread with the shortest time slice the fair scheduler grants (Linux
    /// 6.12 and later; older kernels keep the default slice). It needs no privilege.
    #[default]
    ShortSlice,
    /// `SCHED_FIFO` at priority 1, the lowest real-time one: it runs the moment it wakes,
    /// ahead of every ordinary thread (the kernel's real-time throttling still caps it, at
    /// 95 % of a second by default). Needs `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` of at least 1; without
    /// either, the thread falls back to [`ShortSlice`](ArgvPriority::ShortSlice).
    Realtime,
    /// The thread is left as the process's other threads are.
    Inherit,
}

/// Settings of the `Ptrace` backend, used when a [`Builder`] ends up starting it
/// ([`BackendKind::Ptrace`], or [`BackendKind::Auto`] where the proc connector is refused)
/// and ignored otherwise.
///
/// # Examples
///
/// ```no_run
/// use procwatch::{BackendKind, ProcWatcher, PtraceOptions};
///
/// // A sandbox runner: whatever the watched tree still runs dies with the watcher.
/// let watcher = ProcWatcher::builder()
///     .backend(BackendKind::Ptrace)
///     .ptrace(PtraceOptions::new().kill_on_drop(true))
///     .build()?;
/// # Ok::<(), procwatch::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct PtraceOptions {
    pub(crate) kill_on_drop: bool,
}

impl PtraceOptions {
    /// The defaults: dropping the watcher detaches every traced process, which goes on
    /// running untouched.
    pub fn new() -> PtraceOptions {
        PtraceOptions::default()
    }

    /// Kill every process the watcher traces when the watcher goes away, however it goes
    /// (dropped, or this program killed): the kernel's `PTRACE_O_EXITKILL`. Off by default.
    pub fn kill_on_drop(mut self, kill: bool) -> PtraceOptions {
        self.kill_on_drop = kill;
        self
    }
}

impl Builder {
    /// Chooses the backend ([`BackendKind::Auto`] by default).
    pub fn backend(mut self, kind: BackendKind) -> Builder {
        self.backend = kind;
        self
    }

    /// How many processes one stream may track at once (default [`DEFAULT_MAX_TRACKED`]).
    /// A child beyond the limit is not followed and its parent's stream gets
    /// [`ProcEvent::TrackErr`](crate::ProcEvent::TrackErr) with
    /// [`TrackErrReason::Limit`](crate::TrackErrReason::Limit).
    pub fn max_tracked(mut self, limit: usize) -> Builder {
        self.max_tracked = limit;
        self
    }

    /// Settings of the `Netlink` backend (see [`NetlinkOptions`]); other backends ignore them.
    pub fn netlink(mut self, options: NetlinkOptions) -> Builder {
        self.netlink = options;
        self
    }

    /// Settings of the `Ptrace` backend (see [`PtraceOptions`]); other backends ignore them.
    pub fn ptrace(mut self, options: PtraceOptions) -> Builder {
        self.ptrace = options;
        self
    }

    /// Starts the backend. When this returns, the event source is armed.
    ///
    /// # Errors
    ///
    /// * [`ErrorKind::PermissionDenied`] — netlink without root / `CAP_NET_ADMIN`.
    /// * [`ErrorKind::Unsupported`] — the backend is not available here (a backend this version
    ///   does not provide, or a proc connector that ignores the subscription, as it does in a
    ///   non-initial pid namespace, or refuses it, as it does in a non-initial user
    ///   namespace).
    /// * [`ErrorKind::InvalidInput`] — `max_tracked(0)`, or a
    ///   [`NetlinkOptions::batch_window`] longer than [`MAX_BATCH_WINDOW`].
    /// * [`ErrorKind::Other`] — any other failure to set up the backend, for example running
    ///   out of file descriptors for its socket or eventfd (`EMFILE`, `ENFILE`;
    ///   [`Error::raw_os_error`] has the number).
    pub fn build(self) -> Result<ProcWatcher, Error> {
        if self.max_tracked == 0 {
            return Err(Error::new(ErrorKind::InvalidInput, "build watcher")
                .with_detail("max_tracked must be at least 1"));
        }
        if self.netlink.batch_window > MAX_BATCH_WINDOW {
            return Err(Error::new(ErrorKind::InvalidInput, "build watcher")
                .with_backend(BackendKind::Netlink)
                .with_detail(format!(
                    "a batch window of {:?} is longer than the {:?} allowed",
                    self.netlink.batch_window, MAX_BATCH_WINDOW
                )));
        }
        let shared = Arc::new(Shared::new());
        let backend: std::sync::Arc<dyn Backend> = match self.backend {
            BackendKind::Netlink => std::sync::Arc::new(Netlink::start(shared.clone(), &self.netlink)?),
            BackendKind::Ptrace => std::sync::Arc::new(Ptrace::start(shared.clone(), &self.ptrace)?),
            BackendKind::Auto if !in_initial_namespaces() => {
                // The proc connector ignores a subscription from any other namespace without
                // a word: asking would only wait out the acknowledgement's timeout.
                tracing::debug!("not in the initial user and pid namespaces: the ptrace backend");
                std::sync::Arc::new(Ptrace::start(shared.clone(), &self.ptrace)?)
            }
            BackendKind::Auto => match Netlink::start(shared.clone(), &self.netlink) {
                Ok(n) => std::sync::Arc::new(n),
                // Where the proc connector is refused or ignored (an unprivileged user, a
                // container's namespaces), the tracer needs no privilege.
                Err(e) if matches!(e.kind(), ErrorKind::PermissionDenied | ErrorKind::Unsupported) => {
                    tracing::debug!(netlink = %e, "falling back to the ptrace backend");
                    let p = Ptrace::start(shared.clone(), &self.ptrace).map_err(|p| {
                        p.with_detail(format!("and the Netlink backend failed too: {e}"))
                    })?;
                    std::sync::Arc::new(p)
                }
                Err(e) => return Err(e),
            },
            other => {
                return Err(Error::new(ErrorKind::Unsupported, "build watcher")
                    .with_backend(other)
                    .with_detail(
                        "this backend is not implemented in this version; use BackendKind::Netlink or BackendKind::Ptrace",
                    ))
            }
        };
        Ok(ProcWatcher {
            shared,
            backend,
            max_tracked: self.max_tracked,
        })
    }
}

/// Whether this process is in the initial user and pid namespaces, where the proc connector
/// answers: their `/proc/self/ns` entries have the kernel's fixed inode numbers there
/// (`PROC_USER_INIT_INO`, `PROC_PID_INIT_INO`). `true` when it cannot tell.
fn in_initial_namespaces() -> bool {
    let ino = |ns: &str| {
        rustix::fs::stat(format!("/proc/self/ns/{ns}"))
            .ok()
            .map(|st| st.st_ino)
    };
    let user = ino("user").is_none_or(|i| i == 0xEFFF_FFFD);
    let pid = ino("pid").is_none_or(|i| i == 0xEFFF_FFFC);
    user && pid
}

/// Watches processes and hands out [`ProcEvents`] streams.
///
/// One watcher runs one backend and can serve any number of streams. It is `Send + Sync`;
/// share it with an `Arc`. For netlink that is one socket, drained by a task on the tokio
/// runtime the watcher was created in (so an event reaches a stream with a single wakeup) and
/// by a backstop thread that keeps draining if that runtime is blocked or gone. For ptrace it
/// is a tracer process (a child of the program) and a thread that applies what it reports.
///
/// # Caveats
///
/// Dropping the watcher stops its backend without blocking: the netlink drain task is aborted
/// and the backstop thread unsubscribes and closes the socket moments later; the ptrace
/// tracer exits, and the kernel detaches every traced process (or kills them, with
/// [`PtraceOptions::kill_on_drop`]). Streams still alive then yield the events they already
/// hold and end.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use futures::StreamExt;
/// use procwatch::{Interest, ProcWatcher};
///
/// let watcher = ProcWatcher::new()?;
/// let mut cmd = tokio::process::Command::new("sh");
/// cmd.args(["-c", "ls | wc -l"]);
/// let mut started = watcher.spawn(cmd, Interest::ALL)?;
/// while let Some(ev) = started.events.next().await {
///     println!("{ev:?}");
/// }
/// let status = started.child.wait().await?;
/// # Ok(()) }
/// ```
pub struct ProcWatcher {
    pub(crate) shared: Arc<Shared>,
    backend: std::sync::Arc<dyn Backend>,
    max_tracked: usize,
}

impl ProcWatcher {
    #[cfg(any(test, feature = "bench-support"))]
    pub(crate) fn backend_impl(&self) -> &dyn Backend {
        &*self.backend
    }

    /// A watcher with the strongest backend available ([`BackendKind::Auto`]).
    ///
    /// # Errors
    ///
    /// See [`Builder::build`].
    pub fn new() -> Result<ProcWatcher, Error> {
        Builder::default().build()
    }

    /// A builder to choose the backend and limits.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The backend actually in use (never [`BackendKind::Auto`]).
    pub fn backend(&self) -> BackendKind {
        self.backend.kind()
    }

    /// The backend's tracer process, if it has one.
    pub(crate) fn tracer(&self) -> Option<i32> {
        self.backend.tracer()
    }

    /// Starts watching `pid` with `interest` and returns the stream of its events.
    ///
    /// When this returns, the source covers `pid`: every event about it (and, with
    /// [`Interest::TRACK`], about every process it creates from now on) reaches the stream,
    /// however fast it happens. Events the kernel emitted before the call never reach the
    /// stream, even those still unread in the kernel's queue when it was made, whichever way
    /// the process was started: the call notes when it began, and events are told apart by
    /// the kernel's own timestamps (see the crate docs, "Where a stream begins"). So a
    /// process started a moment ago does not show its `execve` from before the call, and
    /// children it created before the call are not tracked. On a zombie, with
    /// [`Interest::EXIT`], the stream yields `Exit` at once, with the status.
    ///
    /// The call blocks for as long as reading the process's state takes (a few small files
    /// in `/proc`; with the Ptrace backend, also the tracer seizing it and stopping each of
    /// its threads once), and, when another thread is watching the same pid at that moment,
    /// until that watch has read it too.
    ///
    /// # Errors
    ///
    /// * [`ErrorKind::NoSuchProcess`] — no process has this pid (including pids above
    ///   `pid_max`), or it is a zombie and `interest` lacks `EXIT`.
    /// * [`ErrorKind::InvalidInput`] — `interest` is empty.
    /// * [`ErrorKind::PermissionDenied`] — (Ptrace) the process may not be traced: another
    ///   tracer has it, ptrace is not allowed on it (the message names the rule), or it is the
    ///   watching program itself.
    /// * [`ErrorKind::Unsupported`] — [`Interest::HOLD`] on a backend that cannot hold.
    /// * [`ErrorKind::Closed`] — the watcher's backend has stopped.
    /// * [`ErrorKind::Other`] — `/proc/<pid>` could not be read for another reason, for
    ///   example because this process is out of file descriptors (`EMFILE`;
    ///   [`Error::raw_os_error`] has the number and the message says what to do); or the
    ///   process changed its threads too fast to be read, or another watch of the same pid
    ///   did not finish within 2 s (try again). Nothing is attached then; streams that
    ///   already exist are not affected.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn f(watcher: &procwatch::ProcWatcher) -> Result<(), procwatch::Error> {
    /// use procwatch::{Interest, Pid};
    /// let events = watcher.watch(Pid::this(), Interest::FORK | Interest::TRACK)?;
    /// # Ok(()) }
    /// ```
    pub fn watch(&self, pid: Pid, interest: Interest) -> Result<ProcEvents, Error> {
        let backend = self.backend();
        if interest.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "watch")
                .with_pid(pid)
                .with_backend(backend)
                .with_detail(
                    "the interest is empty; ask for at least one of FORK, EXEC, EXIT, TRACK",
                ));
        }
        let fail = |k: ErrorKind| Error::new(k, "watch").with_pid(pid).with_backend(backend);
        if interest.contains(Interest::HOLD) && !self.backend.can_hold() {
            return Err(fail(ErrorKind::Unsupported).with_detail(
                "Interest::HOLD needs a backend that can keep a process stopped (Ptrace); this \
                 one hears of events only after they happened",
            ));
        }
        let id = self
            .shared
            .lock()
            .add_stream(pid, interest, self.max_tracked)
            .map_err(fail)?;
        if interest.contains(Interest::EXEC | Interest::ARGV) {
            // Before the attach: the first exec after `watch` returns has its command line.
            self.backend.sync_argv(true);
        }
        let attached = match self.attach_to(id, pid, interest, "watch", false) {
            Ok(Attach::Attached) => Ok(()),
            Ok(Attach::Already) => unreachable!("a new stream follows nothing yet"),
            Ok(Attach::Full) => unreachable!("a new stream has room for its first process"),
            Ok(Attach::Transient(e)) | Err(e) => Err(e),
        };
        if let Err(e) = attached {
            let mut actions = Actions::default();
            self.shared.lock().remove_stream(id, &mut actions);
            actions.run(&*self.backend);
            return Err(e);
        }
        Ok(ProcEvents::new(
            self.shared.clone(),
            self.backend.clone(),
            id,
            pid,
        ))
    }

    /// Attaches the existing stream `id` to `pid`: the three steps of a `watch` (see
    /// `registry/attach.rs`), with the reads made again while the process's threads change
    /// under them, and a wait while another watch of the same pid is between its steps.
    ///
    /// On any outcome but [`Attach::Attached`] the stream is left as it was (no knote of
    /// `pid`); removing it is the caller's choice. With `skip_zombie`, a zombie is refused
    /// (`NoSuchProcess`) whatever the interest: a process that died before the attach.
    fn attach_to(
        &self,
        id: StreamId,
        pid: Pid,
        interest: Interest,
        op: &'static str,
        skip_zombie: bool,
    ) -> Result<Attach, Error> {
        let backend = self.backend();
        let fail = |k: ErrorKind| Error::new(k, op).with_pid(pid).with_backend(backend);
        // Another `watch` of the same pid may be between its two steps: wait for it (it only
        // reads a few files), up to a deadline.
        let busy_until = Instant::now() + BUSY_WAIT;
        let ticket = loop {
            let mut reg = self.shared.lock();
            // The watch begins now. Everything the kernel stamps from here on is applied after
            // this lock is released, so it reaches the stream's knote, linked here; anything
            // stamped earlier is not for the stream, even if it is still queued in the kernel.
            let since = clock::now();
            match reg.begin_attach(id, pid, since) {
                Ok(Begin::Begun) => break reg.ticket(),
                Ok(Begin::Already) => return Ok(Attach::Already),
                Ok(Begin::Full) => return Ok(Attach::Full),
                Ok(Begin::Busy) if Instant::now() < busy_until => {}
                Ok(Begin::Busy) => {
                    return Ok(Attach::Transient(fail(ErrorKind::Other).with_detail(
                        "another watch of this pid did not finish in time; try again",
                    )))
                }
                Err(k) => return Err(fail(k)),
            }
            drop(reg);
            std::thread::sleep(Duration::from_micros(50));
        };
        for _ in 0..MAX_READS {
            // Outside the lock: the backend may need it to apply what it sees meanwhile.
            let read = self
                .backend
                .attach(pid, ticket, interest.contains(Interest::HOLD));
            let mut wake = Actions::default();
            let mut reg = self.shared.lock();
            let finished = match &read {
                Ok(Some(snap)) if skip_zombie && snap.zombie.is_some() => {
                    reg.cancel_attach(id, pid, &mut wake);
                    Err(ErrorKind::NoSuchProcess)
                }
                Ok(snap) => reg.finish_attach(id, pid, snap.as_ref(), &mut wake),
                Err(_) => {
                    reg.cancel_attach(id, pid, &mut wake);
                    Err(ErrorKind::Other)
                }
            };
            drop(reg);
            wake.run(&*self.backend);
            return match (finished, read) {
                (Ok(Finish::Reread), _) => continue,
                (Ok(Finish::Done), _) => Ok(Attach::Attached),
                // Keep the OS error itself: its number is what tells "out of file
                // descriptors" from "permission denied".
                (_, Err(e)) => Err(e.with_pid(pid).with_backend(backend)),
                (Err(ErrorKind::NoSuchProcess), Ok(Some(_))) => Err(fail(ErrorKind::NoSuchProcess)
                    .with_detail(
                        "the process is a zombie; watch it with Interest::EXIT to get its exit \
                         status",
                    )),
                (Err(k), Ok(_)) => Err(fail(k)),
            };
        }
        // Read again and again, and never without threads changing during the read.
        let mut actions = Actions::default();
        self.shared.lock().cancel_attach(id, pid, &mut actions);
        actions.run(&*self.backend);
        Ok(Attach::Transient(fail(ErrorKind::Other).with_detail(
            "the process changed its threads too fast to be read; try again",
        )))
    }

    /// Starts watching every process on the host and returns one stream of their events:
    /// what `forkstat` shows, as a [`ProcEvents`].
    ///
    /// The call attaches the stream to each process `/proc` lists (kernel threads included),
    /// with `interest` plus [`Interest::TRACK`], then lists `/proc` again and attaches what
    /// it did not follow yet, until a listing shows nothing new. It returns once every process
    /// it listed is covered, as [`ProcWatcher::watch`] covers one: from then on, every event
    /// of a process that exists reaches the stream, and every process created later comes
    /// with its own `Child` event (`parent` is its creator, so a kernel thread's parent is
    /// `kthreadd`, pid 2), tracked like the others. Processes that existed when the call was
    /// made get no `Child`; their `Fork`, `Exec` and `Exit` come as they happen. Processes
    /// created while the call runs may come either way. Zombies (processes that already
    /// exited and wait to be reaped) are left out: their exit happened before the call.
    ///
    /// The stream's [`ProcEvents::pid`] is 1 (init), [`ProcEvents::tracked`] is about the
    /// number of processes on the host, and the stream ends only once every one of them is
    /// gone (which, outside a pid namespace, is never) or the watcher shuts down.
    /// [`ProcEvent::Lost`](crate::ProcEvent::Lost) names pid 1 too.
    ///
    /// # Cost
    ///
    /// The call blocks while it reads a few small files of `/proc` per process and takes the
    /// registry lock twice per process; the second listing finds only what was created
    /// meanwhile, and costs a lock per process. The stream holds one knote per process on
    /// the host, as a [`watch`](ProcWatcher::watch) with `TRACK` holds one per process of
    /// its tree; each event costs the registry what it costs for any tracked process (the
    /// proc connector sends every event on the host to the watcher anyway; the difference is
    /// that all of them now reach your stream, and wake its task).
    ///
    /// Measured on a 2-core virtual machine (Linux 6.18, release build, other builds
    /// running: load average 4 to 5) by `cost_of_a_system_stream` in `tests/system.rs`,
    /// eight runs, with 78 to 81 processes on the host: the call took 3.7 ms in the
    /// quietest runs (about 47 µs per process) and up to 17 ms in the busiest; the stream
    /// tracked as many processes as `/proc` listed, and the heap grew by 21 KB with it
    /// (250 to 270 bytes per tracked process). Events of 50 short processes started after
    /// the call (a `Child`, an `Exec` and an `Exit` each) reached the reader 26 to 160 µs
    /// after the kernel stamped them at the median (90th percentile 0.2 to 3 ms, the
    /// scheduler's share on a busy machine), no later than the same processes' events on
    /// streams of their own (`spawn`, median 75 to 240 µs) in the same runs. On a host with
    /// many thousands of processes, call it from `tokio::task::spawn_blocking`, as you
    /// would any walk of `/proc`.
    ///
    /// The stream counts toward [`Builder::max_tracked`] like any other: a host with more
    /// processes than the limit is refused, and a process created once the stream is full
    /// is not followed (its parent's [`ProcEvent::TrackErr`](crate::ProcEvent::TrackErr)
    /// says so).
    ///
    /// # Errors
    ///
    /// * [`ErrorKind::Unsupported`] — the backend cannot see other processes than its own
    ///   descendants (Ptrace), or `interest` has [`Interest::HOLD`].
    /// * [`ErrorKind::InvalidInput`] — the host has more processes than
    ///   [`Builder::max_tracked`] allows one stream.
    /// * [`ErrorKind::Closed`] — the watcher's backend has stopped.
    /// * [`ErrorKind::Other`] — `/proc` could not be read (for example, out of file
    ///   descriptors: [`Error::raw_os_error`] has the number), or a process kept changing
    ///   its threads too fast to be read through every listing. Nothing is attached then.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), procwatch::Error> {
    /// use futures::StreamExt;
    /// use procwatch::{BackendKind, Interest, ProcEvent, ProcWatcher};
    ///
    /// let watcher = ProcWatcher::builder().backend(BackendKind::Netlink).build()?;
    /// let mut events = watcher.watch_system(Interest::EXEC | Interest::EXIT)?;
    /// while let Some(ev) = events.next().await {
    ///     if let ProcEvent::Exec { pid, .. } = ev {
    ///         println!("{pid} executed a program");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    #[doc(alias = "forkstat")]
    pub fn watch_system(&self, interest: Interest) -> Result<ProcEvents, Error> {
        let backend = self.backend();
        let fail = |k: ErrorKind| Error::new(k, "watch the system").with_backend(backend);
        if backend != BackendKind::Netlink {
            return Err(fail(ErrorKind::Unsupported).with_detail(
                "ptrace can follow only this program's own descendants; a system-wide stream \
                 needs the Netlink backend (root or CAP_NET_ADMIN, in the initial namespaces)",
            ));
        }
        if interest.contains(Interest::HOLD) {
            return Err(fail(ErrorKind::Unsupported).with_detail(
                "Interest::HOLD cannot stop every process on the host; the Netlink backend \
                 hears of events only after they happened",
            ));
        }
        let interest = interest | Interest::TRACK;
        let init = Pid::from_raw(1).expect("1 is a valid pid");
        let id = self
            .shared
            .lock()
            .add_stream(init, interest, self.max_tracked)
            .map_err(fail)?;
        if interest.contains(Interest::EXEC | Interest::ARGV) {
            self.backend.sync_argv(true);
        }
        match self.attach_system(id, interest) {
            Ok(()) => Ok(ProcEvents::new(
                self.shared.clone(),
                self.backend.clone(),
                id,
                init,
            )),
            Err(e) => {
                let mut actions = Actions::default();
                self.shared.lock().remove_stream(id, &mut actions);
                actions.run(&*self.backend);
                Err(e)
            }
        }
    }

    /// Attaches stream `id` to every process `/proc` lists, in passes until one finds
    /// nothing the stream does not follow yet (see [`ProcWatcher::watch_system`]).
    fn attach_system(&self, id: StreamId, interest: Interest) -> Result<(), Error> {
        let backend = self.backend();
        let mut last_retry = None;
        for pass in 0..MAX_SYSTEM_PASSES {
            let pids = procfs::list_pids().map_err(|io| {
                Error::io("watch the system", io)
                    .with_backend(backend)
                    .with_detail("cannot list /proc")
            })?;
            let mut new = 0usize;
            last_retry = None;
            for pid in pids {
                match self.attach_to(id, pid, interest, "watch the system", true) {
                    Ok(Attach::Attached) => new += 1,
                    Ok(Attach::Already) => {}
                    Ok(Attach::Full) => {
                        return Err(Error::new(ErrorKind::InvalidInput, "watch the system")
                            .with_backend(backend)
                            .with_detail(format!(
                                "the host has more processes than one stream may track \
                                 ({}); raise Builder::max_tracked",
                                self.max_tracked
                            )))
                    }
                    // Gone since the listing, or a zombie: nothing to follow.
                    Err(e) if e.kind() == ErrorKind::NoSuchProcess => {}
                    Ok(Attach::Transient(e)) => last_retry = Some(e),
                    Err(e) => return Err(e),
                }
            }
            tracing::debug!(pass, new, "watch_system: attached");
            if new == 0 && last_retry.is_none() {
                return Ok(());
            }
        }
        match last_retry {
            Some(e) => Err(e),
            // Every listing found processes created since the one before: each listed one is
            // covered, and whatever they create from now on arrives by TRACK.
            None => Ok(()),
        }
    }

    /// How many distinct processes the watcher's streams track now.
    pub fn tracked(&self) -> usize {
        self.shared.lock().tracked_pids()
    }
}

impl Drop for ProcWatcher {
    fn drop(&mut self) {
        let mut wake = Actions::default();
        self.shared.lock().shutdown(&mut wake);
        wake.wake_all();
        self.backend.shutdown();
    }
}

impl fmt::Debug for ProcWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcWatcher")
            .field("backend", &self.backend())
            .field("max_tracked", &self.max_tracked)
            .finish()
    }
}
