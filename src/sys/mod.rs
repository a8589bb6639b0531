//! Every `unsafe` line of the crate.
//!
//! # Safety
//!
//! The crate root denies `unsafe_code`; this module alone allows it, for these jobs:
//!
//! * the hook that holds a freshly forked child before `execve` until its watch is armed.
//!   That hook runs in the child between `fork` and `exec`, where only async-signal-safe
//!   operations are allowed: it makes raw `read`/`write`/`close`/`getpid` syscalls through
//!   rustix, allocates nothing, takes no lock, and touches only file descriptor numbers copied
//!   into the closure;
//! * registering the netlink socket with tokio's reactor, which requires the descriptor to
//!   stay open and the same for as long as the registration lives;
//! * two pidfd calls rustix lacks: `pidfd_send_signal` with any signal number, and the
//!   `PIDFD_GET_INFO` ioctl (a fixed-size struct the kernel fills in);
//! * `recvmmsg(2)` on the netlink socket, the classic BPF socket filter
//!   (`SO_ATTACH_FILTER`) of the socket that hears only execs, and the scheduling requests
//!   of the thread that reads it (`sched_getattr`/`sched_setattr`, `sched_setscheduler`):
//!   rustix has none of them.

#![allow(unsafe_code)]

pub(crate) mod ptrace;

use rustix::fd::{BorrowedFd, RawFd};
use rustix::io::Errno;
use std::io;

/// The parent's answer to a held child: run the program.
pub(crate) const HOLD_GO: u8 = 1;
/// The parent's answer to a held child: give up before `exec` (its watch failed).
pub(crate) const HOLD_ABORT: u8 = 0;

/// The descriptors the exec hook uses, as seen in the child (all inherited from the parent).
#[derive(Copy, Clone, Debug)]
pub(crate) struct HoldFds {
    /// Write end of the "here is my pid" pipe.
    pub(crate) report_w: RawFd,
    /// Read end of the "go ahead" pipe.
    pub(crate) release_r: RawFd,
    /// The parent-side ends, closed in the child so that the parent giving up shows as EOF.
    pub(crate) parent_ends: [RawFd; 2],
    /// A process to allow as this child's tracer (`PR_SET_PTRACER`), or 0.
    pub(crate) ptracer: i32,
}

/// Installs a `pre_exec` hook on `cmd` that reports the child's pid on `report_w` and then
/// blocks until one byte arrives on `release_r`: [`HOLD_GO`] lets it `exec`; anything else,
/// or EOF (the parent is gone), makes it fail before `exec` with `ECANCELED`, which `spawn`
/// then returns.
///
/// See `fork(2)`'s notes on async-signal-safety and `pipe(7)` for the EOF rule.
pub(crate) fn hold_before_exec(cmd: &mut tokio::process::Command, fds: HoldFds) {
    let hook = move || -> io::Result<()> {
        for fd in fds.parent_ends {
            // SAFETY: these numbers are the parent-side pipe ends inherited across fork; no
            // other code in the child uses them before exec, so closing them is sound.
            unsafe { rustix::io::close(fd) };
        }
        // SAFETY: `report_w` and `release_r` are open pipe ends inherited across fork and
        // stay open until exec closes them (they are close-on-exec).
        let (report, release) = unsafe {
            (
                BorrowedFd::borrow_raw(fds.report_w),
                BorrowedFd::borrow_raw(fds.release_r),
            )
        };
        if fds.ptracer > 0 {
            // Yama's `ptrace_scope` 1 lets only ancestors trace a process, unless the process
            // names its tracer. Without Yama this fails with `EINVAL`, and nothing is needed.
            // SAFETY: `prctl` with integer arguments is an async-signal-safe syscall.
            unsafe { libc::prctl(libc::PR_SET_PTRACER, fds.ptracer as libc::c_ulong, 0, 0, 0) };
        }
        let pid = rustix::process::getpid()
            .as_raw_nonzero()
            .get()
            .to_ne_bytes();
        loop {
            match rustix::io::write(report, &pid) {
                Ok(4) => break,
                Ok(_) => return Err(io::Error::from_raw_os_error(libc::EPIPE)),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let mut go = [0u8; 1];
        loop {
            match rustix::io::read(release, &mut go) {
                Ok(1) if go[0] == HOLD_GO => return Ok(()),
                Ok(_) => return Err(io::Error::from_raw_os_error(libc::ECANCELED)),
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    };
    // SAFETY: the hook obeys the async-signal-safety rules stated above.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Registers `sock` with the current tokio runtime's reactor for readability. `None` outside a
/// runtime, or in one built without I/O (tokio panics there; the panic is caught and the
/// caller does without the reactor).
pub(crate) fn register_readable(
    sock: &std::sync::Arc<rustix::fd::OwnedFd>,
) -> Option<tokio::io::unix::AsyncFd<std::sync::Arc<rustix::fd::OwnedFd>>> {
    tokio::runtime::Handle::try_current().ok()?;
    let sock = sock.clone();
    let registered = std::panic::catch_unwind(move || {
        // SAFETY: the `AsyncFd` owns a clone of the `Arc<OwnedFd>`, so the descriptor stays
        // open, and names the same socket, for as long as the registration lives.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE)
        }
    });
    match registered {
        Ok(Ok(afd)) => Some(afd),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "cannot register the netlink socket with tokio");
            None
        }
        Err(_) => {
            tracing::debug!("the tokio runtime has no I/O driver; draining from a thread");
            None
        }
    }
}

/// Sends signal `sig` (any number the kernel takes, real-time ones included) to the process
/// `pidfd` refers to: `pidfd_send_signal(2)`, which rustix offers only for named signals.
pub(crate) fn pidfd_signal(pidfd: BorrowedFd<'_>, sig: i32) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: a raw syscall with an open descriptor, an integer, a null `siginfo` pointer
    // (the kernel then fills it in as `kill(2)` would) and zero flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::INVAL))
    }
}

/// The first version of the kernel's `struct pidfd_info` (Linux 6.13+), enough for
/// `PIDFD_INFO_EXIT` (6.15+).
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

/// `PIDFD_GET_INFO`: `_IOWR(0xFF, 11, struct pidfd_info)` for the 64-byte first version.
const PIDFD_GET_INFO: libc::c_ulong = 0xC040_FF0B;
const PIDFD_INFO_EXIT: u64 = 1 << 3;

/// The `waitpid` status of the process `pidfd` refers to, once it has been reaped by
/// whichever process was its parent (`PIDFD_GET_INFO` with `PIDFD_INFO_EXIT`, Linux 6.15+).
/// `None` while it runs or is a zombie, or where the kernel lacks the call.
pub(crate) fn pidfd_exit_status(pidfd: BorrowedFd<'_>) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..PidfdInfo::default()
    };
    // SAFETY: the kernel writes at most the 64 bytes the request number encodes into `info`,
    // a `repr(C)` struct of that size that lives across the call.
    let r = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_INFO as _, &mut info) };
    (r == 0 && info.mask & PIDFD_INFO_EXIT != 0).then_some(info.exit_code)
}

#[cfg(test)]
mod pidfd_info_tests {
    #[test]
    fn a_reaped_process_status_comes_through_its_pidfd() {
        use rustix::fd::AsFd;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(7));
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut v = release
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        match super::pidfd_exit_status(fd.as_fd()) {
            Some(status) => assert_eq!(status, 7 << 8),
            None => assert!(
                (major, minor) < (6, 15),
                "Linux {release} has PIDFD_INFO_EXIT, and it gave nothing"
            ),
        }
    }

    #[test]
    fn the_info_struct_has_the_size_the_request_number_encodes() {
        assert_eq!(std::mem::size_of::<super::PidfdInfo>(), 64);
        assert_eq!((super::PIDFD_GET_INFO >> 16) & 0x3fff, 64);
    }
}

/// Room for one datagram in a [`recv_many`] call (the Netlink backend's reads). The proc connector's datagrams carry one
/// event each, under 100 bytes.
pub(crate) const SLOT: usize = 1024;
/// How many datagrams one [`recv_many`] call takes at most.
pub(crate) const SLOTS: usize = 64;

/// What one slot of a [`recv_many`] call holds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A datagram from the kernel, this many bytes long.
    Kernel(usize),
    /// A datagram some process sent to our port: not the kernel's, ignored.
    Foreign,
    /// A kernel datagram longer than [`SLOT`]: its end was cut off.
    Truncated,
}

/// Receives up to [`SLOTS`] datagrams with one `recvmmsg(2)`, without blocking: datagram `i`
/// lands at `buf[i * SLOT..]`, and `slots[i]` says what it is. Returns how many came; the
/// errors are those of `recv` (`EAGAIN` when there is none; `ENOBUFS` after an overflow,
/// reported once the datagrams queued before it are read).
pub(crate) fn recv_many(
    sock: &rustix::fd::OwnedFd,
    buf: &mut [u8],
    slots: &mut [Slot; SLOTS],
) -> Result<usize, rustix::io::Errno> {
    use rustix::fd::AsRawFd;
    assert!(
        buf.len() >= SLOT * SLOTS,
        "recv_many needs SLOTS x SLOT bytes"
    );
    // SAFETY: all-zero bytes are valid values of these plain C structs.
    let mut addrs: [libc::sockaddr_nl; SLOTS] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; SLOTS] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
    for (i, chunk) in buf.chunks_exact_mut(SLOT).take(SLOTS).enumerate() {
        iovs[i] = libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: SLOT,
        };
    }
    for (i, hdr) in hdrs.iter_mut().enumerate() {
        hdr.msg_hdr.msg_name = std::ptr::addr_of_mut!(addrs[i]).cast();
        hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as _;
        hdr.msg_hdr.msg_iov = std::ptr::addr_of_mut!(iovs[i]);
        hdr.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at an address and an iovec of this frame, each iovec at a
    // distinct `SLOT`-byte part of `buf`; all of them outlive the call.
    let n = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            SLOTS as _,
            libc::MSG_DONTWAIT as _,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(last_errno());
    }
    let n = n as usize;
    for i in 0..n {
        let hdr = &hdrs[i].msg_hdr;
        let named = hdr.msg_namelen as usize >= std::mem::size_of::<libc::sockaddr_nl>();
        slots[i] =
            if !named || addrs[i].nl_family as i32 != libc::AF_NETLINK || addrs[i].nl_pid != 0 {
                Slot::Foreign
            } else if hdr.msg_flags & libc::MSG_TRUNC != 0 {
                Slot::Truncated
            } else {
                Slot::Kernel((hdrs[i].msg_len as usize).min(SLOT))
            };
    }
    Ok(n)
}

/// `SO_ATTACH_FILTER` (26 on every architecture Linux runs on).
const SO_ATTACH_FILTER: i32 = 26;

/// Attaches to a proc-connector socket a classic BPF filter that keeps only the datagrams
/// whose event is of kind `what` (`proc_event.what`, one event per datagram). The kernel runs
/// it as it delivers each datagram, before it queues it and wakes a reader: so the socket's
/// reader wakes for those events alone. Netlink sockets honour socket filters on every
/// kernel; the proc connector's own filter (the longer subscription request) needs 6.6.
pub(crate) fn keep_only_proc_event(sock: &rustix::fd::OwnedFd, what: u32) -> Result<(), Errno> {
    use rustix::fd::AsRawFd;
    // Where `what` is: after the netlink header (16 bytes) and the connector's (20).
    const WHAT_AT: u32 = 16 + 20;
    let insn = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let mut prog = [
        // A filter loads words big-endian; the field is in the host's order.
        insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, WHAT_AT),
        insn(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            u32::from_be_bytes(what.to_ne_bytes()),
        ),
        // Keep the whole datagram...
        insn(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
        // ... or none of it (a datagram too short for the load ends here too).
        insn(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, four instructions that outlive the call; the kernel
    // copies them.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            std::ptr::addr_of!(fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// `struct sched_attr` as of Linux 3.14 (`SCHED_ATTR_SIZE_VER0`, 48 bytes).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// Asks for the calling thread the shortest time slice the fair scheduler grants (0.1 ms,
/// `sched_attr.sched_runtime`, Linux 6.12 and later): a thread with a shorter slice than
/// the running one may preempt it when it wakes, where otherwise it waits for that one's
/// slice to end (about a millisecond). Its policy and nice value are kept as they are.
/// Older kernels ignore the field or refuse it (the error is returned).
pub(crate) fn shortest_fair_slice() -> Result<(), Errno> {
    let mut attr = SchedAttr::default();
    let size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: `attr` is a `sched_attr` of the size given, which the kernel fills in.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            size,
            0,
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    if attr.policy != libc::SCHED_OTHER as u32 && attr.policy != libc::SCHED_BATCH as u32 {
        return Err(Errno::INVAL);
    }
    attr.size = size;
    attr.flags = 0;
    attr.runtime = 100_000;
    // SAFETY: as above; the kernel only reads it.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Moves the calling thread to `SCHED_FIFO` at the lowest real-time priority (1), above
/// every ordinary thread. Needs `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` of at least 1.
pub(crate) fn lowest_realtime_priority() -> Result<(), Errno> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `param` is a valid `sched_param` that outlives the call; pid 0 is this thread.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if r < 0 {
        return Err(last_errno());
    }
    Ok(())
}

fn last_errno() -> Errno {
    let e = std::io::Error::last_os_error();
    Errno::from_io_error(&e).unwrap_or(Errno::IO)
}

#[cfg(test)]
mod recv_many_tests {
    use super::*;
    use rustix::net::netlink::{self, SocketAddrNetlink};
    use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};

    fn usersock() -> rustix::fd::OwnedFd {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::USERSOCK),
        )
        .expect("a NETLINK_USERSOCK socket");
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0)).expect("bind");
        fd
    }

    /// Datagrams another process sends to our port are told apart from the kernel's; an
    /// empty socket says `EAGAIN`; more than `SLOTS` queued come in two calls, in order.
    #[test]
    fn foreign_datagrams_and_an_empty_socket() {
        let (ours, theirs) = (usersock(), usersock());
        let port = rustix::net::getsockname(&ours).expect("getsockname");
        let port = SocketAddrNetlink::try_from(port).expect("a netlink address");
        let mut buf = vec![0u8; SLOT * SLOTS];
        let mut slots = [Slot::Foreign; SLOTS];
        assert_eq!(
            recv_many(&ours, &mut buf, &mut slots),
            Err(rustix::io::Errno::AGAIN)
        );
        for i in 0..SLOTS + 3 {
            let msg = format!("datagram {i}");
            rustix::net::sendto(&theirs, msg.as_bytes(), SendFlags::empty(), &port)
                .expect("send to our port");
        }
        let first = recv_many(&ours, &mut buf, &mut slots).expect("the first ones");
        assert_eq!(first, SLOTS);
        assert!(slots.iter().all(|s| *s == Slot::Foreign));
        assert_eq!(&buf[SLOT * 5..][..10], b"datagram 5");
        let rest = recv_many(&ours, &mut buf, &mut slots).expect("the rest");
        assert_eq!(rest, 3);
        assert_eq!(&buf[SLOT * 2..][..11], b"datagram 66");
    }
}
