//! `ProcWatcher`, its builder, and backend selection.

use crate::backend::netlink::{self, Netlink};
use crate::backend::ptrace::Ptrace;
use crate::backend::Backend;
use crate::clock;
use crate::loom::Arc;
use crate::registry::{Actions, Begin, Finish};
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
}

impl Default for NetlinkOptions {
    fn default() -> NetlinkOptions {
        NetlinkOptions {
            rcvbuf: netlink::socket::DEFAULT_RCVBUF,
            ack_timeout: Duration::from_secs(2),
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
    /// * [`ErrorKind::InvalidInput`] — `max_tracked(0)`.
    /// * [`ErrorKind::Other`] — any other failure to set up the backend, for example running
    ///   out of file descriptors for its socket or eventfd (`EMFILE`, `ENFILE`;
    ///   [`Error::raw_os_error`] has the number).
    pub fn build(self) -> Result<ProcWatcher, Error> {
        if self.max_tracked == 0 {
            return Err(Error::new(ErrorKind::InvalidInput, "build watcher")
                .with_detail("max_tracked must be at least 1"));
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
        // Another `watch` of the same pid may be between its two steps: wait for it (it only
        // reads a few files), up to a deadline.
        let busy_until = Instant::now() + BUSY_WAIT;
        let ticket = loop {
            let mut reg = self.shared.lock();
            // The watch begins now. Everything the kernel stamps from here on is applied after
            // this lock is released, so it reaches the stream's knote, linked here; anything
            // stamped earlier is not for the stream, even if it is still queued in the kernel.
            let since = clock::now();
            let begun = reg.begin_attach(id, pid, since);
            let error = match begun {
                Ok(Begin::Begun) => break reg.ticket(),
                Ok(Begin::Busy) if Instant::now() < busy_until => None,
                Ok(Begin::Busy) => Some(
                    fail(ErrorKind::Other)
                        .with_detail("another watch of this pid did not finish in time; try again"),
                ),
                Err(k) => Some(fail(k)),
            };
            if let Some(e) = error {
                let mut actions = Actions::default();
                reg.remove_stream(id, &mut actions);
                drop(reg);
                actions.run(&*self.backend);
                return Err(e);
            }
            drop(reg);
            std::thread::sleep(Duration::from_micros(50));
        };
        let mut result = None;
        for _ in 0..MAX_READS {
            // Outside the lock: the backend may need it to apply what it sees meanwhile.
            let read = self
                .backend
                .attach(pid, ticket, interest.contains(Interest::HOLD));
            let mut wake = Actions::default();
            let mut reg = self.shared.lock();
            let finished = match &read {
                Ok(snap) => reg.finish_attach(id, pid, snap.as_ref(), &mut wake),
                Err(_) => {
                    reg.cancel_attach(id, pid, &mut wake);
                    Err(ErrorKind::Other)
                }
            };
            let outcome = match (finished, read) {
                (Ok(Finish::Reread), _) => None,
                (Ok(Finish::Done), _) => Some(Ok(())),
                // Keep the OS error itself: its number is what tells "out of file
                // descriptors" from "permission denied".
                (_, Err(e)) => Some(Err(e.with_pid(pid).with_backend(backend))),
                (Err(ErrorKind::NoSuchProcess), Ok(Some(_))) => Some(Err(fail(
                    ErrorKind::NoSuchProcess,
                )
                .with_detail(
                    "the process is a zombie; watch it with Interest::EXIT to get its exit status",
                ))),
                (Err(k), Ok(_)) => Some(Err(fail(k))),
            };
            if outcome.as_ref().is_some_and(|o| o.is_err()) {
                reg.remove_stream(id, &mut wake);
            }
            drop(reg);
            wake.run(&*self.backend);
            if outcome.is_some() {
                result = outcome;
                break;
            }
        }
        let result = result.unwrap_or_else(|| {
            // Read again and again, and never without threads changing during the read.
            let mut actions = Actions::default();
            let mut reg = self.shared.lock();
            reg.cancel_attach(id, pid, &mut actions);
            reg.remove_stream(id, &mut actions);
            drop(reg);
            actions.run(&*self.backend);
            Err(fail(ErrorKind::Other)
                .with_detail("the process changed its threads too fast to be read; try again"))
        });
        result.map(|()| ProcEvents::new(self.shared.clone(), self.backend.clone(), id, pid))
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
