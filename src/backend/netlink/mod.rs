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
use crate::registry::{Input, Wakeups};
use crate::shared::Shared;
use crate::{BackendKind, Error, Pid, Timestamp};
use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::RecvFlags;
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

struct Dispatcher {
    sock: OwnedFd,
    stop: OwnedFd,
    shared: Arc<Shared>,
    buf: Vec<u8>,
    batch: Vec<(Input, u64)>,
}

impl Dispatcher {
    fn new(sock: OwnedFd, stop: OwnedFd, shared: Arc<Shared>) -> Dispatcher {
        Dispatcher {
            sock,
            stop,
            shared,
            buf: vec![0; 64 * 1024],
            batch: Vec::with_capacity(BATCH),
        }
    }

    fn run(mut self) {
        loop {
            let mut fds = [
                PollFd::new(&self.sock, PollFlags::IN),
                PollFd::new(&self.stop, PollFlags::IN),
            ];
            match poll(&mut fds, None) {
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
            let lost = self.drain();
            if lost > 0 {
                self.resync(lost);
            }
        }
        socket::ignore(&self.sock);
        let mut wake = Wakeups::default();
        self.shared.lock().shutdown(&mut wake);
        wake.wake_all();
        tracing::debug!("procwatch netlink dispatcher stopped");
    }

    /// Reads until the socket is empty, applying inputs in batches. Returns how many times
    /// the kernel reported an overflow.
    fn drain(&mut self) -> u32 {
        let mut lost = 0;
        loop {
            match rustix::net::recv(&self.sock, &mut self.buf[..], RecvFlags::DONTWAIT) {
                Ok((n, _)) => {
                    let batch = &mut self.batch;
                    wire::decode_datagram(&self.buf[..n], |m| match m {
                        Ok(msg) => batch.extend(to_input(msg)),
                        Err(e) => tracing::debug!(?e, "undecodable proc connector message"),
                    });
                    if self.batch.len() >= BATCH {
                        self.flush();
                    }
                }
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(Errno::NOBUFS) => {
                    lost += 1;
                }
                Err(e) => {
                    tracing::error!(error = %e, "procwatch netlink recv failed");
                    break;
                }
            }
        }
        self.flush();
        lost
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut wake = Wakeups::default();
        {
            let mut reg = self.shared.lock();
            for (input, at) in self.batch.drain(..) {
                reg.apply_at(input, at, &mut wake);
            }
        }
        wake.wake_all();
    }

    /// After an overflow: tell every stream, then rebuild what was missed from `/proc`.
    fn resync(&mut self, mut lost: u32) {
        while lost > 0 {
            tracing::warn!(
                lost,
                "proc connector overflowed (ENOBUFS); resyncing from /proc"
            );
            let mut wake = Wakeups::default();
            self.shared.lock().mark_lost(Timestamp::now(), &mut wake);
            wake.wake_all();
            // Whatever arrived after the overflow is applied before the listing is taken.
            lost = self.drain();
            match procfs::scan_all() {
                Ok(snapshot) => {
                    self.shared
                        .lock()
                        .resync(&snapshot, Timestamp::now(), &mut wake);
                    wake.wake_all();
                }
                Err(e) => tracing::error!(error = %e, "cannot list /proc for a resync"),
            }
        }
    }
}
