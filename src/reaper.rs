//! `Reaper`: this program as a child subreaper that reaps orphans and steals nothing.

use crate::orphans::{self, orphans, Subscriber};
use crate::{Error, ErrorKind, Pid};
use futures_core::stream::{FusedStream, Stream};
use std::fmt;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Makes this program the reaper of its orphaned descendants, without ever taking an exit
/// status that other code in the program waits for.
///
/// [`Reaper::install`] marks the program a child subreaper (`PR_SET_CHILD_SUBREAPER`; as PID
/// 1 it is one already): a process whose parent dies is then reparented to the nearest
/// living ancestor that is a subreaper, instead of to init. The reaper collects such orphans'
/// exit statuses and hands each one to every [`Reaper::exits`] stream.
///
/// # Which zombies it reaps
///
/// A zombie child of this program is reaped only when procwatch knows that this program did
/// not create it — that is, when it was followed, from its creation, as a member of a
/// [`Tree`](crate::Tree) other than the tree's root. Every other child is left to whoever
/// waits for it: a [`tokio::process::Child`], a [`std::process::Child`], a `WatchedChild`, a
/// tree's root, or code that calls `waitpid` itself. The reaper never calls `waitpid(-1)` or
/// `waitid(P_ALL)`; it reaps through a pidfd on each orphan, taken before it could have been
/// reaped, so a reused pid is never waited for.
///
/// An init, whose only children are the ones it starts through procwatch, can also reap
/// orphans procwatch never followed (processes that entered its pid namespace from outside,
/// say) with [`ReaperBuilder::reap_unknown`].
///
/// # When it reaps
///
/// On every `SIGCHLD` (through tokio's signal handling, so it coexists with tokio's own
/// child reaping and with handlers installed through tokio or `signal-hook`), and after
/// every batch of a tree's events. Each wakeup reaps every orphan that is ready, so
/// `SIGCHLD`s the kernel merged leave no zombie behind. A program that replaces tokio's
/// `SIGCHLD` handler with its own `sigaction` loses the signal wakeups; tree orphans are then
/// still reaped after the tree's events.
///
/// # Exits
///
/// [`Reaper::exits`] gives a stream of `(pid, status)` for the orphans reaped from then on
/// (nothing from before it was made). Each stream has a bounded queue
/// ([`Reaper::EXITS_CAPACITY`]); while one is full, reaping waits for its consumer (the
/// zombies, and their statuses, wait in the kernel meanwhile): a slow consumer is
/// backpressure, never loss. Drop a stream you no longer read.
///
/// # Dropping
///
/// Handles are cheap clones of one per-program reaper. When the last one is dropped, the
/// program stops being a subreaper (unless it is PID 1); orphans it adopted before then are
/// still reaped by trees that follow them.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use futures::StreamExt;
///
/// let reaper = procwatch::Reaper::install()?;
/// let mut exits = reaper.exits();
/// while let Some((pid, status)) = exits.next().await {
///     println!("orphan {pid} ended: {status}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Reaper {
    installed: Arc<Installed>,
}

/// One `install` (or `ReaperBuilder::install`) and what it changed.
struct Installed {
    reap_unknown: bool,
}

/// How many live `Installed` there are, and whether this program made itself a subreaper.
static INSTALLS: Mutex<(usize, bool)> = Mutex::new((0, false));

/// Options for a [`Reaper`].
#[derive(Debug, Clone, Default)]
pub struct ReaperBuilder {
    reap_unknown: bool,
}

impl ReaperBuilder {
    /// Also reap zombie children procwatch knows nothing about, except the ones the program
    /// started through procwatch ([`ProcWatcher::spawn`](crate::ProcWatcher::spawn),
    /// [`ProcWatcher::spawn_tree`](crate::ProcWatcher::spawn_tree), a Ptrace backend's
    /// tracer). For an init or a container entrypoint, whose only children are those: as PID
    /// 1 it adopts every orphan of its pid namespace, including those of processes that
    /// entered it from outside. **Any other child of the program is reaped too**, so a
    /// `std::process::Child` or `tokio::process::Child` started directly loses its status
    /// (`wait` fails with `ECHILD`). Off by default.
    pub fn reap_unknown(mut self, on: bool) -> ReaperBuilder {
        self.reap_unknown = on;
        self
    }

    /// Installs the reaper (see [`Reaper::install`]).
    ///
    /// # Errors
    ///
    /// As [`Reaper::install`].
    pub fn install(self) -> Result<Reaper, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::new(ErrorKind::InvalidInput, "reaper install")
                .with_detail("Reaper::install must be called within a tokio runtime"));
        }
        {
            let mut installs = INSTALLS.lock().unwrap_or_else(|e| e.into_inner());
            if Pid::this().as_raw() != 1 && !is_subreaper() {
                rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(
                    |e| {
                        Error::io("reaper install", e.into())
                            .with_detail("prctl(PR_SET_CHILD_SUBREAPER) failed")
                    },
                )?;
                installs.1 = true;
            }
            installs.0 += 1;
        }
        if self.reap_unknown {
            orphans().reap_unknown(true);
        }
        orphans::ensure_listener();
        // Orphans adopted before now (or while no listener ran) are looked at at once.
        orphans().wake.notify_one();
        Ok(Reaper {
            installed: Arc::new(Installed {
                reap_unknown: self.reap_unknown,
            }),
        })
    }
}

/// Whether this program is a child subreaper now.
pub(crate) fn is_subreaper() -> bool {
    rustix::process::child_subreaper().is_ok_and(|p| p.is_some())
}

impl Reaper {
    /// How many reaped statuses an [`Reaper::exits`] stream holds unread before reaping waits.
    pub const EXITS_CAPACITY: usize = orphans::SUBSCRIBER_CAPACITY;

    /// Makes this program a child subreaper and starts reaping orphans that procwatch knows
    /// were not created by the program (see the type's docs).
    ///
    /// Must be called within a tokio runtime (a task of it waits for `SIGCHLD`). Installing
    /// again gives another handle on the same reaper.
    ///
    /// # Errors
    ///
    /// * [`ErrorKind::InvalidInput`]: called outside a tokio runtime.
    /// * [`ErrorKind::Other`]: `prctl(PR_SET_CHILD_SUBREAPER)` failed
    ///   ([`Error::raw_os_error`] has the number).
    pub fn install() -> Result<Reaper, Error> {
        ReaperBuilder::default().install()
    }

    /// Options: see [`ReaperBuilder`].
    pub fn builder() -> ReaperBuilder {
        ReaperBuilder::default()
    }

    /// A stream of `(pid, status)` for every orphan reaped from now on, with the status
    /// `waitpid` gave. Every stream gets every status; it never ends.
    pub fn exits(&self) -> ReaperExits {
        ReaperExits {
            sub: orphans().subscribe(),
            _reaper: self.clone(),
        }
    }

    /// Reaps every orphan that is ready now, without waiting for a wakeup; returns how many.
    pub fn reap_now(&self) -> usize {
        orphans().sweep()
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.reap_unknown {
            orphans().reap_unknown(false);
        }
        let mut installs = INSTALLS.lock().unwrap_or_else(|e| e.into_inner());
        installs.0 = installs.0.saturating_sub(1);
        if installs.0 == 0 && installs.1 {
            let _ = rustix::process::set_child_subreaper(None);
            installs.1 = false;
        }
    }
}

impl fmt::Debug for Reaper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reaper")
            .field("reap_unknown", &self.installed.reap_unknown)
            .finish()
    }
}

/// The orphans a [`Reaper`] reaped: `(pid, status)`, from [`Reaper::exits`].
///
/// Keeps the reaper installed while it lives. Never ends.
pub struct ReaperExits {
    sub: Arc<Subscriber>,
    _reaper: Reaper,
}

impl Stream for ReaperExits {
    type Item = (Pid, ExitStatus);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut q = self.sub.inner.lock().unwrap_or_else(|e| e.into_inner());
        match q.queue.pop_front() {
            Some(item) => {
                let was_full = q.queue.len() + 1 >= Reaper::EXITS_CAPACITY;
                drop(q);
                if was_full {
                    orphans().made_room();
                }
                Poll::Ready(Some(item))
            }
            None => {
                q.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl FusedStream for ReaperExits {
    fn is_terminated(&self) -> bool {
        false
    }
}

impl fmt::Debug for ReaperExits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unread = self
            .sub
            .inner
            .lock()
            .map(|q| q.queue.len())
            .unwrap_or_default();
        f.debug_struct("ReaperExits")
            .field("unread", &unread)
            .finish()
    }
}
