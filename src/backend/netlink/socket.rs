//! The proc connector socket: open, subscribe, receive.

use super::wire::{self, ProcMsg};
use crate::{BackendKind, Error, ErrorKind};
use rustix::event::{poll, PollFd, PollFlags};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use std::time::{Duration, Instant};

/// Receive buffer asked for with `SO_RCVBUFFORCE` (root) or `SO_RCVBUF` (capped by
/// `net.core.rmem_max`). A proc-connector message takes about 1 KiB of buffer accounting
/// (skb overhead), so this holds tens of thousands of pending messages.
pub(crate) const DEFAULT_RCVBUF: usize = 64 << 20;

/// The event kinds the crate subscribes to when the kernel can filter (6.6 and later).
const WANTED: u32 = wire::what::FORK | wire::what::EXEC | wire::what::EXIT;

fn err(op: &'static str, e: Errno) -> Error {
    Error::io(op, e.into()).with_backend(BackendKind::Netlink)
}

/// Says what is missing when the kernel refused for lack of privilege.
fn with_privilege_hint(error: Error, e: Errno) -> Error {
    if e == Errno::PERM || e == Errno::ACCESS {
        error.with_detail(
            "this kernel lets only root or CAP_NET_ADMIN subscribe to the proc connector \
             (newer kernels let any user of the initial namespaces); run as root or grant \
             the capability",
        )
    } else {
        error
    }
}

/// A new non-blocking `NETLINK_CONNECTOR` socket, not bound yet.
fn new_socket(op: &'static str) -> Result<OwnedFd, Error> {
    rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        Some(netlink::CONNECTOR),
    )
    .map_err(|e| err(op, e))
}

/// Opens a non-blocking `NETLINK_CONNECTOR` socket bound to the process-events group.
pub(crate) fn open(rcvbuf: usize) -> Result<OwnedFd, Error> {
    let fd = new_socket("netlink socket")?;
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, rcvbuf).is_err() {
        // Without CAP_NET_ADMIN the kernel caps this at net.core.rmem_max; take what it gives.
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, rcvbuf);
    }
    let addr = SocketAddrNetlink::new(0, wire::CN_IDX_PROC);
    rustix::net::bind(&fd, &addr).map_err(|e| {
        if (e == Errno::PERM || e == Errno::ACCESS) && in_child_user_namespace() {
            // No privilege inside the namespace helps: the check is made against the network
            // namespace's owner, which a user namespace created later does not own.
            return Error::new(ErrorKind::Unsupported, "netlink bind")
                .with_backend(BackendKind::Netlink)
                .with_detail(
                    "the kernel refuses proc-connector subscriptions from a process in a \
                     user namespace other than the initial one (a container or sandbox); \
                     it only serves the initial user and pid namespaces",
                )
                .with_source(std::io::Error::from(e));
        }
        with_privilege_hint(err("netlink bind", e), e)
    })?;
    Ok(fd)
}

/// Whether this process runs in a user namespace other than the initial one. The kernel gives
/// the initial user namespace a fixed inode number (`PROC_USER_INIT_INO`,
/// `include/linux/proc_ns.h`), which `/proc/self/ns/user` shows (`namespaces(7)`).
fn in_child_user_namespace() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/user").is_ok_and(|m| !is_initial_user_namespace(m.ino()))
}

fn is_initial_user_namespace(inode: u64) -> bool {
    const PROC_USER_INIT_INO: u64 = 0xEFFF_FFFD;
    inode == PROC_USER_INIT_INO
}

/// The receive buffer the kernel actually granted.
pub(crate) fn rcvbuf(fd: &OwnedFd) -> usize {
    rustix::net::sockopt::socket_recv_buffer_size(fd).unwrap_or(0)
}

fn send_op(fd: &OwnedFd, op: u32, events: Option<u32>, ack: u32) -> Result<(), Error> {
    let req = wire::mcast_request(op, events, ack, ack);
    let kernel = SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(fd, &req, SendFlags::empty(), &kernel)
        .map_err(|e| err("netlink listen", e))?;
    Ok(())
}

/// Waits until the kernel acknowledges the request sent with `ack`, or the deadline passes.
/// Other messages read meanwhile (events, other listeners' acks) are dropped: nothing is
/// watched yet.
fn wait_ack(fd: &OwnedFd, ack: u32, deadline: Instant) -> Result<Option<u64>, Error> {
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let left = deadline - now;
        let ts = rustix::time::Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(e) => return Err(err("netlink listen", e)),
        }
        loop {
            match rustix::net::recv(fd, &mut buf[..], RecvFlags::DONTWAIT) {
                Ok((n, _)) => {
                    let mut found = None;
                    wire::decode_datagram(&buf[..n], |m| {
                        if let Ok(ProcMsg::Ack { ack: a, err, ts_ns }) = m {
                            if a == ack.wrapping_add(1) {
                                found = Some((err, ts_ns));
                            }
                        }
                    });
                    match found {
                        Some((0, ts_ns)) => return Ok(Some(ts_ns)),
                        Some((code, _)) => {
                            let e = Errno::from_raw_os_error(code as i32);
                            return Err(with_privilege_hint(err("netlink listen", e), e));
                        }
                        None => {}
                    }
                }
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) | Err(Errno::NOBUFS) => continue,
                Err(e) => return Err(err("netlink listen", e)),
            }
        }
    }
}

/// Subscribes to process events and waits for the kernel's acknowledgement.
///
/// The kernel silently ignores a subscription from a process outside the initial user and
/// pid namespaces (a container), so a missing acknowledgement within `timeout` is reported
/// as [`ErrorKind::Unsupported`] rather than waiting forever for events that never come.
/// With a kernel-side filter (6.6+) the socket then receives only fork, exec and exit.
///
/// Returns when the kernel answered, on its clock and on ours, so that the two can be
/// compared (see [`Acked`]).
pub(crate) fn listen(fd: &OwnedFd, timeout: Duration) -> Result<Acked, Error> {
    let base = std::process::id().wrapping_mul(2654435761);
    let sent = crate::Timestamp::now().as_nanos();
    // The classic request is acknowledged by every kernel that supports the connector.
    send_op(fd, wire::PROC_CN_MCAST_LISTEN, None, base)?;
    // A timeout too large to add means "no deadline" in practice: cap it at a day.
    let deadline = Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
    let Some(kernel) = wait_ack(fd, base, deadline)? else {
        return Err(Error::new(ErrorKind::Unsupported, "netlink listen")
            .with_backend(BackendKind::Netlink)
            .with_detail(format!(
                "the kernel did not acknowledge the proc-connector subscription within {timeout:?}; \
                 it ignores listeners outside the initial user and pid namespaces"
            )));
    };
    let acked = Acked {
        sent,
        kernel,
        received: crate::Timestamp::now().as_nanos(),
    };
    // Narrow the subscription where the kernel can filter. Older kernels ignore the longer
    // request without an answer and keep the classic subscription, which is also correct.
    // Newer ones apply the filter; its acknowledgement is itself filtered out, so nobody
    // waits for it.
    send_op(
        fd,
        wire::PROC_CN_MCAST_LISTEN,
        Some(WANTED),
        base.wrapping_add(2),
    )?;
    Ok(acked)
}

/// When the kernel acknowledged the subscription: its stamp (`CLOCK_MONOTONIC` of the
/// initial time namespace, like every event's), between our own `CLOCK_MONOTONIC` readings
/// just before the request and just after the answer.
#[derive(Debug, Copy, Clone)]
pub(crate) struct Acked {
    pub(crate) sent: u64,
    pub(crate) kernel: u64,
    pub(crate) received: u64,
}

impl Acked {
    /// The offset to add to the kernel's stamps to read them on this process's clock.
    /// `from_file` is the time namespace's offset as `/proc/self/timens_offsets` gives it.
    /// That file shows the namespace this process's *children* get, which is its own unless
    /// it unshared a time namespace without entering it: so it is used only if it puts the
    /// kernel's answer between our two readings (with a millisecond to spare), and otherwise
    /// the answer itself gives the offset, to within half the round trip (microseconds).
    pub(crate) fn monotonic_offset(self, from_file: i64) -> i64 {
        const SLACK: i64 = 1_000_000;
        let (sent, kernel, received) = (self.sent as i64, self.kernel as i64, self.received as i64);
        let at = kernel.saturating_add(from_file);
        if kernel == 0 || (sent - SLACK <= at && at <= received + SLACK) {
            return from_file;
        }
        let mid = sent + (received - sent) / 2;
        tracing::debug!(
            from_file,
            measured = mid - kernel,
            "the time namespace offsets of /proc/self/timens_offsets are not this process's; \
             using the offset measured at the subscription"
        );
        mid - kernel
    }
}

/// Opens a second, subscribed socket that hears of execs alone: its reader wakes for an
/// exec and for nothing else (see `super::early`). A socket filter keeps only execs on any
/// kernel; 6.6 and later also stop sending the rest to it at all, with the filtered request.
///
/// It does not wait for the kernel's acknowledgement: the main socket already showed that
/// the kernel serves this process, and an exec missed in the first microseconds is read by
/// the drainer as usual.
pub(crate) fn open_execs() -> Result<OwnedFd, Error> {
    open_execs_with(true)
}

/// [`open_execs`], with the kernel-side filter asked for or not (the socket filter alone
/// is what kernels before 6.6 do; the tests check it on its own).
fn open_execs_with(kernel_side: bool) -> Result<OwnedFd, Error> {
    let fd = new_socket("netlink exec socket")?;
    // Before `bind`, so that nothing else is ever queued.
    crate::sys::keep_only_proc_event(&fd, wire::what::EXEC)
        .map_err(|e| err("netlink exec socket filter", e))?;
    rustix::net::bind(&fd, &SocketAddrNetlink::new(0, wire::CN_IDX_PROC))
        .map_err(|e| err("netlink exec socket bind", e))?;
    send_op(&fd, wire::PROC_CN_MCAST_LISTEN, None, 0)?;
    if kernel_side {
        send_op(&fd, wire::PROC_CN_MCAST_LISTEN, Some(wire::what::EXEC), 0)?;
    }
    Ok(fd)
}

/// Unsubscribes (best effort; closing the socket does the same).
pub(crate) fn ignore(fd: &OwnedFd) {
    let _ = send_op(fd, wire::PROC_CN_MCAST_IGNORE, None, 0);
}

#[cfg(test)]
mod tests {
    use super::{in_child_user_namespace, is_initial_user_namespace, open_execs_with, Acked};
    use super::{wire, ProcMsg};
    use rustix::event::{poll, PollFd, PollFlags};
    use rustix::io::Errno;
    use rustix::net::RecvFlags;

    /// The exec socket: of a thread's start and end and a child's fork, exec and exit, only
    /// the exec is queued, with the socket filter alone (kernels before 6.6) and with the
    /// kernel's own filter too.
    #[test]
    fn the_exec_socket_hears_execs_alone() {
        for kernel_side in [false, true] {
            let fd = match open_execs_with(kernel_side) {
                Ok(fd) => fd,
                Err(e) if !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
                    eprintln!("SKIPPED: no proc connector here: {e}");
                    return;
                }
                Err(e) => panic!("the exec socket: {e}"),
            };
            std::thread::spawn(|| ()).join().unwrap();
            let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
            let pid = child.id() as i32;
            assert!(child.wait().unwrap().success());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let mut heard = Vec::new();
            let mut buf = [0u8; 4096];
            while !heard.contains(&ProcMsg::Exec {
                pid,
                tgid: pid,
                ts_ns: 0,
            }) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "kernel_side {kernel_side}: no exec of {pid} within 5 s; heard {heard:?}"
                );
                let mut fds = [PollFd::new(&fd, PollFlags::IN)];
                let ts = rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                };
                poll(&mut fds, Some(&ts)).unwrap();
                loop {
                    match rustix::net::recv(&fd, &mut buf[..], RecvFlags::DONTWAIT) {
                        Ok((n, _)) => wire::decode_datagram(&buf[..n], |m| {
                            // The stamp is left out so that the exec can be looked for.
                            heard.push(match m.unwrap() {
                                ProcMsg::Exec { pid, tgid, .. } => ProcMsg::Exec {
                                    pid,
                                    tgid,
                                    ts_ns: 0,
                                },
                                other => other,
                            })
                        }),
                        Err(Errno::AGAIN) => break,
                        Err(e) => panic!("recv: {e}"),
                    }
                }
            }
            assert!(
                heard.iter().all(|m| matches!(m, ProcMsg::Exec { .. })),
                "kernel_side {kernel_side}: {heard:?}"
            );
        }
    }

    #[test]
    fn the_time_namespace_offset_is_checked_against_the_subscriptions_answer() {
        const S: i64 = 1_000_000_000;
        // The initial namespace: the kernel answered between our two readings.
        let here = Acked {
            sent: 990,
            kernel: 1_000,
            received: 1_010,
        };
        assert_eq!(here.monotonic_offset(0), 0);
        // A time namespace whose offset the file gives: trusted exactly.
        let shifted = Acked {
            sent: 5_000_000_990,
            kernel: 1_000,
            received: 5_000_001_010,
        };
        assert_eq!(shifted.monotonic_offset(5 * S), 5 * S);
        // The file shows the namespace of our children (unshared, not entered): measured.
        assert_eq!(here.monotonic_offset(5 * S), 0);
        let measured = Acked {
            sent: 7 * S as u64,
            kernel: 2 * S as u64 + 10,
            received: 7 * S as u64 + 20,
        };
        assert_eq!(measured.monotonic_offset(0), 5 * S);
        // No stamp on the answer: only the file can say.
        let unstamped = Acked {
            sent: 7 * S as u64,
            kernel: 0,
            received: 7 * S as u64 + 20,
        };
        assert_eq!(unstamped.monotonic_offset(3), 3);
    }

    #[test]
    fn the_initial_user_namespace_is_told_by_its_fixed_inode() {
        assert!(is_initial_user_namespace(0xEFFF_FFFD));
        assert!(!is_initial_user_namespace(4026532200));
        // The tests run in the initial user namespace (a child one is tested end to end in
        // tests/namespace.rs).
        assert!(!in_child_user_namespace());
    }
}
