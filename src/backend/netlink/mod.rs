//! The `Netlink` backend: the Linux proc connector (`NETLINK_CONNECTOR`, `CN_IDX_PROC`).
//!
//! One thread per watcher (`procwatch-netlink`) owns the socket. It sleeps in `poll(2)` on
//! the socket and a stop `eventfd`, then drains every queued datagram without blocking,
//! decodes them, and applies the whole batch to the registry under one short lock. It never
//! waits for a consumer: the registry folds what a slow stream has not read, so the socket
//! is emptied at the pace the kernel fills it.
//!
//! Kernel traps handled here and in the registry:
//! * a thread creation is reported like a fork, with `child_pid != child_tgid`;
//! * exits are per thread; the registry's thread set decides when the process is gone;
//! * after an `execve` from a non-leader thread, the exec is reported under the leader's pid;
//! * `ENOBUFS` means the socket overflowed: streams get `Lost`, then a `/proc` resync;
//! * messages can name a pid's previous owner (queued before it was reaped); their
//!   timestamps (`CLOCK_MONOTONIC`) are compared with the tracked process's start time.

pub(crate) mod socket;
pub(crate) mod wire;

use super::{procfs, Backend};
use crate::loom::Arc;
use crate::registry::{Input, Stamp, Wakeups};
use crate::shared::Shared;
use crate::{BackendKind, Error, Pid, Timestamp};
use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::RecvFlags;
use rustix::time::Timespec;
use std::time::Duration;
use wire::ProcMsg;

/// Options for the netlink backend.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) rcvbuf: usize,
    pub(crate) ack_timeout: Duration,
}

/// The running backend: the dispatcher thread holds the socket; this holds its stop switch.
pub(crate) struct Netlink {
    stop: OwnedFd,
}

impl Netlink {
    /// Opens and subscribes the socket, then starts the dispatcher thread.
    pub(crate) fn start(shared: Arc<Shared>, opts: &Options) -> Result<Netlink, Error> {
        let sock = socket::open(opts.rcvbuf)?;
        socket::listen(&sock, opts.ack_timeout)?;
        let wrap = |op, e: Errno| Error::io(op, e.into()).with_backend(BackendKind::Netlink);
        let stop = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| wrap("netlink eventfd", e))?;
        let stop_rx =
            rustix::io::fcntl_dupfd_cloexec(&stop, 0).map_err(|e| wrap("netlink eventfd", e))?;
        tracing::debug!(rcvbuf = socket::rcvbuf(&sock), "proc connector subscribed");
        std::thread::Builder::new()
            .name("procwatch-netlink".into())
            .spawn(move || Dispatcher::new(sock, stop_rx, shared).run())
            .map_err(|e| {
                Error::io("netlink dispatcher thread", e).with_backend(BackendKind::Netlink)
            })?;
        Ok(Netlink { stop })
    }
}

impl Backend for Netlink {
    fn kind(&self) -> BackendKind {
        BackendKind::Netlink
    }

    fn shutdown(&self) {
        // An eventfd write only fails if the counter would overflow: it is stopping anyway.
        let _ = rustix::io::write(&self.stop, &1u64.to_ne_bytes());
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.shutdown();
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
                // CLONE_THREAD: a new thread of `child_tgid`, not a new process.
                let tgid = Pid::from_raw(child_tgid)?;
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
                tid: pid,
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

struct Dispatcher {
    sock: OwnedFd,
    stop: OwnedFd,
    shared: Arc<Shared>,
    buf: Vec<u8>,
    batch: Vec<(Input, Stamp)>,
    /// Added to the kernel's stamps: the monotonic offset of our time namespace (the kernel
    /// stamps events on the initial namespace's clock).
    mono_offset: i64,
    /// `CLOCK_BOOTTIME` minus `CLOCK_MONOTONIC`, refreshed at every drain.
    boot_ahead: u64,
    /// The boot-clock stamp of the latest event applied.
    last_boot: u64,
    /// After a loss whose resync has not succeeded yet: the boot-clock time before which
    /// nothing was lost.
    resync_cutoff: Option<u64>,
}

impl Dispatcher {
    fn new(sock: OwnedFd, stop: OwnedFd, shared: Arc<Shared>) -> Dispatcher {
        let now = Stamp::now();
        Dispatcher {
            sock,
            stop,
            shared,
            buf: vec![0; 64 * 1024],
            batch: Vec::with_capacity(BATCH),
            mono_offset: procfs::timens_monotonic_offset(),
            boot_ahead: now.boot_ahead(),
            last_boot: now.boot,
            resync_cutoff: None,
        }
    }

    fn stopping(&self) -> bool {
        let mut fds = [PollFd::new(&self.stop, PollFlags::IN)];
        matches!(poll(&mut fds, Some(&Timespec::default())), Ok(n) if n > 0)
            || self.shared.is_closed()
    }

    fn run(mut self) {
        loop {
            let retry = self.resync_cutoff.map(|_| Timespec {
                tv_sec: 0,
                tv_nsec: RESYNC_RETRY.as_nanos() as _,
            });
            let mut fds = [
                PollFd::new(&self.sock, PollFlags::IN),
                PollFd::new(&self.stop, PollFlags::IN),
            ];
            match poll(&mut fds, retry.as_ref()) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "procwatch netlink poll failed; stopping");
                    break;
                }
            }
            if !fds[1].revents().is_empty() || self.shared.is_closed() {
                break;
            }
            self.drain();
            if self.resync_cutoff.is_some() {
                self.resync();
            }
        }
        socket::ignore(&self.sock);
        let mut wake = Wakeups::default();
        self.shared.lock().shutdown(&mut wake);
        wake.wake_all();
        tracing::debug!("procwatch netlink dispatcher stopped");
    }

    /// Reads until the socket is empty, applying inputs in batches. An overflow reported by
    /// the kernel tells every stream at once and schedules a resync.
    fn drain(&mut self) {
        self.boot_ahead = Stamp::now().boot_ahead();
        loop {
            match rustix::net::recvfrom(&self.sock, &mut self.buf[..], RecvFlags::DONTWAIT) {
                Ok((n, _, from)) => {
                    // Only the kernel speaks on this group; anything else is not an event.
                    let from_kernel = from
                        .and_then(|a| SocketAddrNetlink::try_from(a).ok())
                        .is_some_and(|a| a.pid() == 0);
                    if !from_kernel {
                        tracing::debug!("dropped a proc connector datagram not sent by the kernel");
                        continue;
                    }
                    let (batch, offset, ahead) =
                        (&mut self.batch, self.mono_offset, self.boot_ahead);
                    wire::decode_datagram(&self.buf[..n], |m| match m {
                        Ok(msg) => {
                            if let Some((input, ts)) = to_input(msg) {
                                let mono = ts.saturating_add_signed(offset);
                                let stamp = Stamp {
                                    mono,
                                    boot: mono.saturating_add(ahead),
                                };
                                batch.push((fix_start(input, stamp), stamp));
                            }
                        }
                        Err(e) => tracing::debug!(?e, "undecodable proc connector message"),
                    });
                    if self.batch.len() >= BATCH {
                        self.flush();
                        if self.stopping() {
                            return;
                        }
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
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut wake = Wakeups::default();
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
        self.flush();
        let cutoff = self.last_boot;
        tracing::warn!("proc connector overflowed (ENOBUFS); a /proc resync follows");
        self.resync_cutoff = Some(self.resync_cutoff.map_or(cutoff, |c| c.min(cutoff)));
        let mut wake = Wakeups::default();
        self.shared
            .lock()
            .mark_lost(Timestamp::from_nanos(Stamp::now().mono), &mut wake);
        wake.wake_all();
    }

    /// Rebuilds what a loss hid from a `/proc` listing. On failure (out of file descriptors,
    /// say) it stays pending and is tried again shortly: an unreadable process is never taken
    /// for a dead one.
    fn resync(&mut self) {
        let Some(cutoff) = self.resync_cutoff else {
            return;
        };
        if self.stopping() {
            return;
        }
        self.shared.lock().begin_scan();
        match procfs::scan_all() {
            Ok(snapshot) => {
                let mut wake = Wakeups::default();
                self.shared
                    .lock()
                    .resync(&snapshot, Stamp::now(), cutoff, &mut wake);
                wake.wake_all();
                self.resync_cutoff = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list /proc for a resync; retrying");
            }
        }
    }
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
