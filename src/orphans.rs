//! What the program knows about the zombies it may reap, shared by every [`Tree`] and
//! [`Reaper`] in it: one table per process, as the subreaper flag and `SIGCHLD` are.
//!
//! A zombie child of this program is reaped here only when procwatch knows its status
//! belongs to no other code in the program:
//!
//! * **known adopted**: a process a tree followed from its creation by another process of
//!   the tree (so not created by this program) that has exited. If it is, or later becomes
//!   (its parent dies), a zombie child of this program, it is an orphan; if its parent reaps
//!   it first, the entry is dropped;
//! * **unknown** children, only when a [`Reaper`] was built with
//!   [`ReaperBuilder::reap_unknown`]: every zombie child except the ones this program
//!   started through procwatch (`spawn`, `spawn_tree`, a tracer), which are noted as **own**.
//!
//! Every reap goes through a pidfd taken while the process could not yet have been reaped,
//! so a reused pid is never waited for. Reaps happen in [`Orphans::sweep`], called after a
//! tree's events and on `SIGCHLD` (one listener task per program, see [`ensure_listener`]).
//!
//! # What can arrive in which order
//!
//! * A known-adopted process exits after its parent died: it is this program's child
//!   already, and the sweep after its `Exit` reaps it.
//! * It exits while its parent lives: the parent may reap it (the entry goes once a signal
//!   through its pidfd says `ESRCH`), or die first: the zombie is then reparented here, the
//!   kernel sends `SIGCHLD`, and the parent's `Exit` reaches the tree too; either wakes a
//!   sweep.
//! * It is traced (Ptrace backend): its zombie is reported to the tracer first, and this
//!   program can reap it only once the tracer let go of it; the kernel then sends `SIGCHLD`.
//! * `SIGCHLD` comes before the tree's task has read the `Exit`: the sweep does not know it
//!   yet and leaves it; the sweep after the `Exit` reaps it.
//!
//! [`Tree`]: crate::Tree
//! [`Reaper`]: crate::Reaper
//! [`ReaperBuilder::reap_unknown`]: crate::ReaperBuilder::reap_unknown

use crate::Pid;
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use rustix::process::{pidfd_open, waitid, PidfdFlags, WaitId, WaitIdOptions, WaitIdStatus};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::Waker;

/// How many reaped statuses a subscriber may have unread before reaping waits for it.
pub(crate) const SUBSCRIBER_CAPACITY: usize = 4096;

/// The program's table (see the module docs).
pub(crate) struct Orphans {
    table: Mutex<Table>,
    /// Wakes the listener task for a sweep (a subscriber made room).
    pub(crate) wake: tokio::sync::Notify,
}

#[derive(Default)]
struct Table {
    /// Exited processes this program did not create (see the module docs).
    dead: HashMap<Pid, Arc<OwnedFd>>,
    /// Children this program started through procwatch: their statuses are someone's.
    own: HashMap<Pid, OwnedFd>,
    subscribers: Vec<Weak<Subscriber>>,
    /// How many live reapers reap unknown children.
    unknown: usize,
    /// A sweep stopped because a subscriber's queue was full.
    stalled: bool,
}

/// One `exits()` stream's queue.
#[derive(Default)]
pub(crate) struct Subscriber {
    pub(crate) inner: Mutex<SubscriberQueue>,
}

#[derive(Default)]
pub(crate) struct SubscriberQueue {
    pub(crate) queue: VecDeque<(Pid, ExitStatus)>,
    pub(crate) waker: Option<Waker>,
}

/// The program's table.
pub(crate) fn orphans() -> &'static Orphans {
    static ORPHANS: OnceLock<Orphans> = OnceLock::new();
    ORPHANS.get_or_init(|| Orphans {
        table: Mutex::new(Table::default()),
        wake: tokio::sync::Notify::new(),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The status `waitid` reported, as `waitpid` would have encoded it.
pub(crate) fn to_exit_status(st: &WaitIdStatus) -> ExitStatus {
    if let Some(code) = st.exit_status() {
        ExitStatus::from_raw((code & 0xff) << 8)
    } else if let Some(sig) = st.terminating_signal() {
        ExitStatus::from_raw(sig | if st.dumped() { 0x80 } else { 0 })
    } else {
        ExitStatus::from_raw(0)
    }
}

/// Whether the process `fd` refers to has been reaped (by anyone): a signal 0 through a
/// pidfd fails with `ESRCH` only then (a zombie still takes it).
pub(crate) fn reaped(fd: &OwnedFd) -> bool {
    crate::sys::pidfd_signal(fd.as_fd(), 0) == Err(Errno::SRCH)
}

/// This program's children, from `/proc/self/task/*/children` (Linux 4.2+ with
/// `CONFIG_PROC_CHILDREN`), or from every process's parent in `/proc` where that is missing.
pub(crate) fn children_of_this_program() -> Vec<Pid> {
    let me = Pid::this().as_raw();
    let mut out = Vec::new();
    let mut have_children_files = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                have_children_files = true;
                out.extend(
                    text.split_ascii_whitespace()
                        .filter_map(|s| s.parse().ok().and_then(Pid::from_raw)),
                );
            }
        }
    }
    if !have_children_files {
        if let Ok(all) = std::fs::read_dir("/proc") {
            for e in all.flatten() {
                let Some(raw) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let stat = std::fs::read_to_string(e.path().join("stat")).ok();
                if stat
                    .as_deref()
                    .and_then(crate::procfs::parse_stat)
                    .is_some_and(|s| s.ppid == me)
                {
                    out.extend(Pid::from_raw(raw));
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

impl Orphans {
    /// `pid` is a child this program started through procwatch, not yet running its
    /// program (so not reaped): never reap it here.
    pub(crate) fn note_own(&self, pid: Pid) {
        if let Ok(fd) = pidfd_open(pid.to_rustix(), PidfdFlags::empty()) {
            let mut t = lock(&self.table);
            t.own.retain(|_, fd| !reaped(fd));
            t.own.insert(pid, fd);
        }
    }

    /// These processes, which this program did not create, have exited; each comes with a
    /// pidfd on it taken while it could not have been reaped yet. Sweeps.
    pub(crate) fn note_dead(&self, dead: Vec<(Pid, Arc<OwnedFd>)>) {
        lock(&self.table).dead.extend(dead);
        self.sweep();
    }

    /// How many exited processes wait in the table.
    #[cfg(any(test, feature = "bench-support"))]
    pub(crate) fn pending(&self) -> usize {
        lock(&self.table).dead.len()
    }

    /// Adds an `exits()` subscriber.
    pub(crate) fn subscribe(&self) -> Arc<Subscriber> {
        let sub = Arc::new(Subscriber::default());
        let mut t = lock(&self.table);
        t.subscribers.retain(|s| s.strong_count() > 0);
        t.subscribers.push(Arc::downgrade(&sub));
        sub
    }

    /// A reaper that reaps unknown children came (`true`) or went (`false`).
    pub(crate) fn reap_unknown(&self, on: bool) {
        let mut t = lock(&self.table);
        if on {
            t.unknown += 1;
        } else {
            t.unknown = t.unknown.saturating_sub(1);
        }
    }

    /// A subscriber took a status out of a full queue: a stalled sweep may go on.
    pub(crate) fn made_room(&self) {
        if lock(&self.table).stalled {
            self.wake.notify_one();
        }
    }

    /// Reaps every zombie child the table allows (see the module docs), and returns how many.
    pub(crate) fn sweep(&self) -> usize {
        let mut t = lock(&self.table);
        t.stalled = false;
        let mut reaped_now = 0;
        let pids: Vec<Pid> = t.dead.keys().copied().collect();
        for pid in pids {
            if !t.room() {
                t.stalled = true;
                return reaped_now;
            }
            let fd = t.dead[&pid].clone();
            match waitid(
                WaitId::PidFd(fd.as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Ok(Some(st)) => {
                    t.dead.remove(&pid);
                    t.publish(pid, to_exit_status(&st));
                    reaped_now += 1;
                }
                // Not this program's child (its parent lives), or its tracer still has it.
                Ok(None) | Err(Errno::CHILD) => {
                    if reaped(&fd) {
                        t.dead.remove(&pid);
                    }
                }
                Err(Errno::INTR) => {}
                Err(e) => {
                    tracing::debug!(%pid, error = %e, "waitid on an orphan's pidfd failed");
                    t.dead.remove(&pid);
                }
            }
        }
        if t.unknown > 0 {
            t.own.retain(|_, fd| !reaped(fd));
            for pid in children_of_this_program() {
                if t.own.contains_key(&pid) || t.dead.contains_key(&pid) {
                    continue;
                }
                if !t.room() {
                    t.stalled = true;
                    return reaped_now;
                }
                // The pidfd pins the process: what is reaped is what was looked at.
                let Ok(fd) = pidfd_open(pid.to_rustix(), PidfdFlags::empty()) else {
                    continue;
                };
                if let Ok(Some(st)) = waitid(
                    WaitId::PidFd(fd.as_fd()),
                    WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
                ) {
                    t.publish(pid, to_exit_status(&st));
                    reaped_now += 1;
                }
            }
        }
        reaped_now
    }
}

impl Table {
    /// Whether every subscriber can take one more status.
    fn room(&mut self) -> bool {
        self.subscribers.retain(|s| s.strong_count() > 0);
        self.subscribers.iter().all(|s| {
            s.upgrade()
                .is_none_or(|s| lock(&s.inner).queue.len() < SUBSCRIBER_CAPACITY)
        })
    }

    fn publish(&mut self, pid: Pid, status: ExitStatus) {
        tracing::trace!(%pid, ?status, "reaped an orphan");
        for sub in self.subscribers.iter().filter_map(Weak::upgrade) {
            let mut q = lock(&sub.inner);
            q.queue.push_back((pid, status));
            if let Some(w) = q.waker.take() {
                w.wake();
            }
        }
    }
}

/// Makes sure one task of the current tokio runtime sweeps on every `SIGCHLD` and when a
/// subscriber makes room. A runtime without the signal driver (built without I/O) gets no
/// `SIGCHLD` wakeups; sweeps then happen after trees' events only.
pub(crate) fn ensure_listener() {
    static LISTENER: Mutex<Option<tokio::task::JoinHandle<()>>> = Mutex::new(None);
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut slot = lock(&LISTENER);
    if slot.as_ref().is_some_and(|h| !h.is_finished()) {
        return;
    }
    // Registered here, in the caller's context, so that a failure is known at once.
    let sigchld = std::panic::catch_unwind(|| {
        let _guard = handle.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
    });
    let mut sigchld = match sigchld {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "no SIGCHLD wakeups for the orphan reaper");
            None
        }
        Err(_) => {
            tracing::debug!("the tokio runtime has no signal driver; no SIGCHLD wakeups");
            None
        }
    };
    *slot = Some(handle.spawn(async move {
        let table = orphans();
        loop {
            table.sweep();
            let notified = std::pin::pin!(table.wake.notified());
            let mut notified = notified;
            let signal_ended = std::future::poll_fn(|cx| {
                if let Some(sig) = sigchld.as_mut() {
                    if let std::task::Poll::Ready(got) = sig.poll_recv(cx) {
                        return std::task::Poll::Ready(got.is_none());
                    }
                }
                notified.as_mut().poll(cx).map(|()| false)
            })
            .await;
            if signal_ended {
                sigchld = None;
            }
        }
    }));
}
