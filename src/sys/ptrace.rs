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

/// `waitpid(-1, __WALL | WUNTRACED)`, blocking or not: the next tracee (or child) with
/// news, and its wait status; `None` if none has any and `block` is false. Only for the
/// tracer process, whose only waitable processes are its tracees and its doorbell.
pub(crate) fn wait_any(block: bool) -> io::Result<Option<(i32, i32)>> {
    let mut status: libc::c_int = 0;
    let flags = libc::__WALL | libc::WUNTRACED | if block { 0 } else { libc::WNOHANG };
    // SAFETY: the kernel writes one `c_int` through the pointer, which points at a local.
    let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
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

/// Forks the tracer's doorbell: a child of the tracer process that waits until `sock` is
/// readable (a command came, or the watcher hung up), then stops itself with `SIGSTOP`, which
/// the tracer's `waitpid` reports like a tracee's stop. The tracer can so sleep in `waitpid`
/// alone, and still hear its commands at once; it resumes the doorbell with `SIGCONT` once it
/// has read them (see [`ring_again`]). The doorbell is killed when the tracer ends.
pub(crate) fn fork_doorbell(sock: &OwnedFd) -> io::Result<i32> {
    let tracer = rustix::process::getpid().as_raw_nonzero().get();
    let fd = sock.as_raw_fd();
    // SAFETY: the tracer process is single-threaded; the child makes raw syscalls on locals
    // only and never returns from this function.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        return Ok(pid);
    }
    // SAFETY: `prctl`, `getppid`, `poll`, `kill`, `getpid` and `_exit` on locals.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != tracer {
            libc::_exit(0);
        }
        let name = b"procwatch-bell\0";
        libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0);
        let me = libc::getpid();
        loop {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut pfd, 1, -1) == 1 {
                libc::kill(me, libc::SIGSTOP);
            }
        }
    }
}

/// Lets the doorbell watch the socket again, once the tracer has read what it rang for.
pub(crate) fn ring_again(doorbell: i32) {
    // SAFETY: integer arguments only. The doorbell is the caller's unreaped child, so its pid
    // names it.
    unsafe { libc::kill(doorbell, libc::SIGCONT) };
}

/// Kills the doorbell and reaps it.
pub(crate) fn end_doorbell(doorbell: i32) {
    // SAFETY: integer arguments, and a null status pointer the kernel does not write. The
    // doorbell is the caller's unreaped child, so its pid names it.
    unsafe {
        libc::kill(doorbell, libc::SIGKILL);
        while libc::waitpid(doorbell, std::ptr::null_mut(), 0) == -1
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}

extern "C" fn on_tick(_: libc::c_int) {}

/// Makes `SIGALRM` interrupt the tracer's blocking calls (`EINTR`, no restart), so that
/// [`tick_every`] can wake it for its deadlines.
pub(crate) fn interruptible_by_ticks() -> io::Result<()> {
    // SAFETY: installs a handler that does nothing, and unblocks one signal, on locals.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_tick as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut act.sa_mask);
        act.sa_flags = 0;
        if libc::sigaction(libc::SIGALRM, &act, std::ptr::null_mut()) == -1 {
            return Err(io::Error::last_os_error());
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    Ok(())
}

/// Sends the process `SIGALRM` every `every` (`ITIMER_REAL`), or no more with `None`.
pub(crate) fn tick_every(every: Option<std::time::Duration>) {
    let every = every.unwrap_or_default();
    let tv = libc::timeval {
        tv_sec: every.as_secs() as libc::time_t,
        tv_usec: every.subsec_micros() as libc::suseconds_t,
    };
    let timer = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: reads the local `itimerval`; no old value is asked for.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
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
