//! The `ptrace` calls, and starting the tracer process.
//!
//! # Safety
//!
//! * `ptrace` requests here pass integers only (pids, option bits, signal numbers) or, for
//!   `PTRACE_GETEVENTMSG`, a pointer to a local `c_ulong` the kernel writes: none of them
//!   touches memory the caller does not own.
//! * [`fork_tracer`] forks a process that may have other threads. The child never returns
//!   into the caller's code: it runs `tracer` and leaves with `_exit`. Between `fork` and
//!   `tracer` it makes only raw syscalls. `tracer` itself must not take a lock that another
//!   thread of the parent could have held at the moment of the fork (no `std::io::stdout`,
//!   no `tracing`, no mutex shared with the parent); memory allocation is fine with glibc and
//!   musl, which make `malloc` safe across `fork`.

use rustix::fd::{AsRawFd, OwnedFd, RawFd};
use std::io;

/// The options every tracee gets: report forks, vforks, clones (threads and processes made
/// with another exit signal) and execs, following new children automatically; no syscall
/// stops.
pub(crate) const OPTIONS: libc::c_int = libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEEXEC;

/// `PTRACE_O_EXITKILL`: the kernel kills every tracee when the tracer goes away.
pub(crate) const OPTION_EXITKILL: libc::c_int = libc::PTRACE_O_EXITKILL;

fn check(ret: libc::c_long) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `PTRACE_SEIZE`: traces thread `tid` without stopping it.
pub(crate) fn seize(tid: i32, options: libc::c_int) -> io::Result<()> {
    // SAFETY: integer arguments only (see the module docs).
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            options as libc::c_long,
        )
    })
}

/// `PTRACE_CONT`, delivering `sig` (0 for none).
pub(crate) fn cont(tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_CONT,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            sig as libc::c_long,
        )
    })
}

/// `PTRACE_LISTEN`: lets a tracee in group-stop stay stopped, as an untraced one would,
/// while it can still report a `SIGCONT` or a new signal.
pub(crate) fn listen(tid: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_LISTEN,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            0 as libc::c_long,
        )
    })
}

/// `PTRACE_INTERRUPT`: makes a running tracee stop (a `PTRACE_EVENT_STOP`).
pub(crate) fn interrupt(tid: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_INTERRUPT,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            0 as libc::c_long,
        )
    })
}

/// `PTRACE_DETACH` of a stopped tracee, delivering `sig` (0 for none).
pub(crate) fn detach(tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_DETACH,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            sig as libc::c_long,
        )
    })
}

/// `PTRACE_GETEVENTMSG`: the new child's pid at a fork event, the former thread id at an
/// exec event.
pub(crate) fn event_msg(tid: i32) -> io::Result<u64> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: the kernel writes one `c_ulong` through the pointer, which points at a local.
    check(unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            &mut msg as *mut libc::c_ulong,
        )
    })?;
    Ok(msg as u64)
}

/// Non-blocking `waitpid(-1, __WALL)`: the next tracee (or child) with news, and its wait
/// status. Only for the tracer process, whose only waitable processes are its tracees.
pub(crate) fn wait_any_tracee() -> io::Result<Option<(i32, i32)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: the kernel writes one `c_int` through the pointer, which points at a local.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::WNOHANG) };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some((pid, status))),
    }
}

/// Blocking `waitpid(tid, __WALL)`: the next stop or the exit of tracee `tid`.
pub(crate) fn wait_tracee(tid: i32) -> io::Result<i32> {
    let mut status: libc::c_int = 0;
    // SAFETY: the kernel writes one `c_int` through the pointer, which points at a local.
    match unsafe { libc::waitpid(tid, &mut status, libc::__WALL) } {
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(status),
    }
}

/// Forks the tracer process. In the child, `tracer` runs with `sock` as its only open
/// descriptor, every signal blocked, `SIGCHLD` back to its default action, and a death signal
/// tied to the calling thread (the child is killed when that thread ends); the child then
/// exits with what `tracer` returns. In the parent, returns the child's pid.
pub(crate) fn fork_tracer(sock: &OwnedFd, tracer: impl FnOnce(RawFd) -> i32) -> io::Result<i32> {
    let parent = rustix::process::getpid();
    let keep = sock.as_raw_fd();
    // SAFETY: see the module docs: the child runs only `tracer` and raw syscalls, then
    // `_exit`s; it never returns into the caller.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(pid);
    }
    // The child.
    // SAFETY: `prctl`, `getppid`, `sigfillset`, `sigprocmask`, `sigaction`, `close_range` and
    // `_exit` are async-signal-safe syscalls on locals.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent.as_raw_nonzero().get() {
            libc::_exit(0);
        }
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGCHLD, &dfl, std::ptr::null_mut());
        if keep > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
        let name = b"procwatch-trace\0";
        libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0);
    }
    let code =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tracer(keep))).unwrap_or(101);
    // SAFETY: leaves the child at once, without running the parent's exit handlers.
    unsafe { libc::_exit(code) }
}

/// A `signalfd` that reads `SIGCHLD`, for the tracer process (which blocks every signal).
pub(crate) fn sigchld_fd() -> io::Result<OwnedFd> {
    // SAFETY: `sigemptyset`/`sigaddset` write the local set; `signalfd` creates a new
    // descriptor, whose ownership is taken right away.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(<OwnedFd as rustix::fd::FromRawFd>::from_raw_fd(fd))
    }
}

/// Takes ownership of the descriptor number the tracer process was handed.
pub(crate) fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: `fork_tracer` passes the one descriptor it kept open in the child, which
    // nothing else in the child owns.
    unsafe { <OwnedFd as rustix::fd::FromRawFd>::from_raw_fd(fd) }
}

/// `tgkill(tgid, tid, 0)`: whether thread `tid` belongs to process `tgid` (and exists).
pub(crate) fn thread_of(tgid: i32, tid: i32) -> bool {
    // SAFETY: integer arguments only; signal 0 only checks.
    unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, 0) == 0 }
}
