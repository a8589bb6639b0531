//! `Tree`: a command and every process it starts, owned — followed, signalled, stopped and
//! reaped as one.
//!
//! # What can arrive in which order
//!
//! A task of the tree reads its own stream (`TRACK | EXIT`) and keeps one record per member;
//! `kill` works from those records and from `/proc`. The kernel runs on meanwhile:
//!
//! * **`Child` read while the process runs**: a pidfd is opened and checked against the
//!   event's time (the pid's start time must not be later), so it names that process.
//! * **`Child` read after the process exited and was reaped** (its parent was quick): no
//!   pidfd can be had; the member needs no signal, and its `Exit` (next on the stream) gives
//!   its status. `kill` skips it (`supervise.rs`, the escape matrix, hits this).
//! * **A child exists before its `Child` is read**: `kill` finds it in `/proc` as a child of
//!   a member whose pidfd says it runs, pins it, checks its parent, and signals it; its
//!   `Child`, when read, completes that record. If it died meanwhile, a zombie, or one whose
//!   `Exit` was read already, is no new member.
//! * **A member exits before `kill` gets to it**: the signal through its pidfd fails with
//!   `ESRCH` (reaped) or reaches a zombie; either way it is not counted as a failure.
//! * **A child whose parent and itself were killed before the backend saw the creation**
//!   (Ptrace: a killed parent skips its fork stop, a killed child its first stop): only
//!   `kill`'s look at `/proc` knew it; it exits without an `Exit` on the stream, and the
//!   report takes its status from the pidfd once it is reaped, or says why not.
//! * **The pid of an exited member is reused** (by anything): the member's pidfd still
//!   names the old process, so nothing is signalled (`a_reused_pid_is_never_signalled`).
//! * **The cgroup**: the root joins it while held before `exec`, so every descendant starts
//!   inside; it is removed once the tree's stream ends with the cgroup empty, or later by a
//!   thread that waits (up to 30 s) for the last member to leave.

use crate::cgroup::Cgroup;
use crate::orphans::{self, orphans};
use crate::{
    BackendKind, Error, ErrorKind, Interest, Pid, ProcEvent, ProcEvents, ProcWatcher, Signal,
    Timestamp,
};
use futures_core::Stream;
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use rustix::process::{pidfd_open, PidfdFlags};
use std::collections::HashMap;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many passes one `kill` makes at most, each over the processes the previous ones
/// did not reach (children that appeared meanwhile).
const KILL_PASSES: usize = 16;
/// How often `shutdown` signals again, after `SIGKILL`, until the tree is empty.
const KILL_AGAIN: Duration = Duration::from_millis(50);
/// How long `shutdown` waits for a cgroup to freeze before it kills anyway.
const FREEZE_WAIT: Duration = Duration::from_millis(200);

/// A command started with [`ProcWatcher::spawn_tree`], and every process it creates, as
/// one unit a supervisor owns.
///
/// The tree is what was tracked from the start, not what a process group or session says:
/// a process that calls `setsid`, double-forks, runs under `nohup`, moves to a new process
/// group or is reparented (to this program, if it is a subreaper, or to init) is still a
/// member, so [`Tree::kill`] and [`Tree::shutdown`] reach it.
///
/// Each member is signalled through a pidfd opened when its `Child` event arrived (after
/// checking that the pid still names the process that event announced), so a pid that was
/// reused after a member died is never signalled. Members' exit statuses come from the
/// backend's `Exit` events, and where one could not say, from the pidfd (`PIDFD_GET_INFO`
/// with `PIDFD_INFO_EXIT`, Linux 6.15+) once the member was reaped.
///
/// The root is this program's own child: [`Tree::wait`] reaps it (as tokio does for any
/// child). Other members that end up as this program's children (orphans reparented to a
/// subreaper or to PID 1) are reaped by procwatch with their exact statuses, and reported on
/// any [`Reaper::exits`](crate::Reaper::exits) stream.
///
/// # Cost
///
/// A pidfd per live member (given up when its `Exit` is read), and a record of about 64
/// bytes per member it ever had, kept for the [`TreeReport`]: a tree that runs through a
/// million processes keeps about 64 MB.
///
/// # Dropping
///
/// Dropping a `Tree` kills nothing, unless its command was built with
/// [`kill_on_drop(true)`](tokio::process::Command::kill_on_drop) or
/// [`Tree::kill_on_drop`] set it: then every member gets `SIGKILL`, not only the root.
/// Either way the tree keeps being followed in the background until every member has
/// exited (so orphans among them are still reaped, and its cgroup removed), as long as the
/// tokio runtime and the [`ProcWatcher`] live.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use procwatch::ProcWatcher;
/// use std::time::Duration;
///
/// let watcher = ProcWatcher::new()?;
/// let mut cmd = tokio::process::Command::new("sh");
/// cmd.args(["-c", "setsid sleep 100 & sleep 100"]);
/// let mut tree = watcher.spawn_tree(cmd)?;
/// tokio::time::sleep(Duration::from_millis(100)).await;
/// println!("running: {:?}", tree.pids());
/// let report = tree.shutdown(Duration::from_secs(5)).await?;
/// for p in &report.processes {
///     println!("{} ended: {:?}", p.pid, p.status);
/// }
/// # Ok(()) }
/// ```
pub struct Tree {
    inner: Arc<Inner>,
    child: tokio::process::Child,
    events: ProcEvents,
    kill_on_drop: bool,
    mechanism: Mechanism,
}

/// Who receives a tree's orphans, as this program found it when the tree started.
#[derive(Debug, Copy, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Adoption {
    /// This program is PID 1 of its pid namespace: every orphan comes to it.
    Pid1,
    /// This program is a child subreaper (see [`Reaper`](crate::Reaper)): orphans of the tree
    /// come to it.
    Subreaper,
    /// Orphans go to another process (init, or a subreaper above this program), which reaps
    /// them; they are still members, and still reached by `kill` and `shutdown`.
    Elsewhere,
}

/// What a tree's guarantees rest on, on this host: [`Tree::mechanism`].
///
/// * Members are found by the watcher's backend ([`BackendKind::Netlink`] or
///   [`BackendKind::Ptrace`]), whatever their session, process group or parent. A member can
///   only be missed where the backend says so on the tree's stream: `TrackErr` (a limit or a
///   permission) or, under `Netlink`, `Lost` (a `/proc` resync does not find a child whose
///   parent died during the loss). [`TreeReport::untracked`] counts these.
/// * With a cgroup of its own (`cgroup` is `Some`), those are caught too: `SIGKILL` goes
///   through `cgroup.kill` to every process in it, and `shutdown` freezes it first, so no
///   member can fork while the kill is under way. Only a process that moves itself to
///   another cgroup (which takes write access there) leaves it.
/// * `adoption` says where orphans go: to this program (`Pid1`, `Subreaper`), which then
///   reaps them and knows their statuses first-hand, or elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mechanism {
    /// The watcher's backend.
    pub backend: BackendKind,
    /// Who receives the tree's orphans.
    pub adoption: Adoption,
    /// The tree's own cgroup v2 directory, where this program could create one.
    pub cgroup: Option<PathBuf>,
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let adoption = match self.adoption {
            Adoption::Pid1 => "PID 1",
            Adoption::Subreaper => "subreaper",
            Adoption::Elsewhere => "orphans reparented elsewhere",
        };
        write!(f, "{} backend, {adoption}, ", self.backend.name())?;
        match &self.cgroup {
            Some(p) => write!(f, "own cgroup {}", p.display()),
            None => f.write_str("no cgroup of its own"),
        }
    }
}

/// What one [`Tree::kill`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct KillReport {
    /// Members the signal was sent to (through their pidfds).
    pub signalled: Vec<Pid>,
    /// Members it could not be sent to, and why: `PermissionDenied` for a process of
    /// another user or a set-user-ID program this program may not signal; `Other` for a
    /// member procwatch holds no pidfd for (see the error's text).
    pub failed: Vec<(Pid, Error)>,
    /// Whether `SIGKILL` also went through the tree's `cgroup.kill`.
    pub cgroup: bool,
}

/// How one member of a tree ended, in a [`TreeReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessEnd {
    /// The process.
    pub pid: Pid,
    /// Its parent when it was created (`None` for the root, whose parent is this program).
    pub parent: Option<Pid>,
    /// Its exit status: `None` only where it could not be known, with the reason in
    /// `unknown`.
    pub status: Option<ExitStatus>,
    /// Why `status` is `None`.
    pub unknown: Option<&'static str>,
    /// Whether it was sent `SIGKILL` after the grace period ran out.
    pub forced: bool,
}

/// How a tree ended: from [`Tree::shutdown`] and [`Tree::wait_all`].
#[derive(Debug)]
#[non_exhaustive]
pub struct TreeReport {
    /// The root's pid.
    pub root: Pid,
    /// Every member, root first, then in the order they were created.
    pub processes: Vec<ProcessEnd>,
    /// Members that could not be signalled (see [`KillReport::failed`]).
    pub failed: Vec<(Pid, Error)>,
    /// Children the backend could not follow (`TrackErr`) or may have missed (`Lost`).
    pub untracked: usize,
    /// Whether the grace period ran out and `SIGKILL` was needed.
    pub forced: bool,
    /// From the call to the last member's exit.
    pub elapsed: Duration,
}

impl TreeReport {
    /// The root's exit status.
    pub fn root_status(&self) -> Option<ExitStatus> {
        self.processes.first().and_then(|p| p.status)
    }

    /// Members that are still running (they could not be signalled).
    pub fn still_running(&self) -> impl Iterator<Item = &ProcessEnd> {
        self.processes
            .iter()
            .filter(|p| p.unknown == Some(STILL_RUNNING))
    }
}

const STILL_RUNNING: &str = "still running: it could not be signalled";
/// Why a member has no pidfd: it was gone before its `Child` event was read (its `Exit`
/// follows). It needs no signal.
const REAPED_EARLY: &str = "it exited and was reaped before it could be pinned";

struct Inner {
    root: Pid,
    state: Mutex<State>,
    /// Notified after every batch of events, and when the tree's stream ends.
    changed: tokio::sync::Notify,
    cgroup: Option<Cgroup>,
}

#[derive(Default)]
struct State {
    members: Vec<Member>,
    /// The latest member with each pid (a pid can come back after a member died).
    index: HashMap<Pid, usize>,
    /// The tree's stream ended: every member it tracked has exited.
    ended: bool,
    /// Sent at once to every member that appears from now on (a shutdown is under way).
    stopping: Option<Signal>,
    untracked: usize,
    /// How many events of the tree's stream were applied (see [`Inner::ended`]).
    applied: u64,
}

struct Member {
    pid: Pid,
    parent: Option<Pid>,
    /// Whether the backend announced it (its `Child` event, or the root): a child `kill`
    /// found in `/proc` may never be, if it and its parent died before the backend saw it
    /// created (a Ptrace tracer hears of a child from its parent's fork stop or its own
    /// first stop, and `SIGKILL` can pre-empt both).
    reported: bool,
    pidfd: Option<Arc<OwnedFd>>,
    /// Why there is no pidfd.
    no_pidfd: Option<&'static str>,
    exited: bool,
    status: Option<ExitStatus>,
    forced: bool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pidfd on `pid`, checked to name the process created at `at` (not a later holder of
/// the number): its start time in `/proc` must not be later than that, give or take two
/// clock ticks.
fn pin(pid: Pid, at: Timestamp) -> Result<OwnedFd, &'static str> {
    let fd = match pidfd_open(pid.to_rustix(), PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(Errno::SRCH) => return Err(REAPED_EARLY),
        Err(Errno::MFILE) | Err(Errno::NFILE) => {
            return Err("out of file descriptors for its pidfd (raise RLIMIT_NOFILE)")
        }
        Err(_) => return Err("pidfd_open failed"),
    };
    if at.is_known() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        if let Some(stat) = stat.as_deref().and_then(crate::procfs::parse_stat) {
            let tick = crate::procfs::ns_per_tick();
            let mono_now = Timestamp::now().as_nanos();
            let boot_now = crate::clock::boottime_now();
            let at_boot = at.as_nanos() as i128 + boot_now as i128 - mono_now as i128;
            let started = (stat.start_ticks as i128) * tick as i128;
            if started > at_boot + 2 * tick as i128 {
                return Err("its pid was reused before it could be pinned");
            }
        }
    }
    Ok(fd)
}

/// Sends `sig` through `fd`: `Ok(true)` if sent, `Ok(false)` if the process is gone.
fn send(fd: &OwnedFd, sig: Signal) -> Result<bool, Errno> {
    match crate::sys::pidfd_signal(fd.as_fd(), sig.as_raw()) {
        Ok(()) => Ok(true),
        Err(Errno::SRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The children `/proc` lists for process `pid` (all its threads').
fn proc_children(pid: Pid) -> Vec<Pid> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                text.split_ascii_whitespace()
                    .filter_map(|s| s.parse().ok().and_then(Pid::from_raw)),
            );
        }
    }
    out
}

impl State {
    fn live(&self, pid: Pid) -> Option<&Member> {
        self.index
            .get(&pid)
            .map(|&i| &self.members[i])
            .filter(|m| !m.exited)
    }

    /// Marks exited the members whose pidfds say so though no `Exit` was read for them: a
    /// child found in `/proc` by `kill` whose events the stream no longer gives (it ended).
    fn settle(&mut self) {
        for m in self.members.iter_mut().filter(|m| !m.exited) {
            if let Some(fd) = &m.pidfd {
                if crate::procfs::exited(fd) == Some(true) {
                    m.exited = true;
                }
            }
        }
    }

    /// Whether every member is gone: its `Exit` read, or its pidfd (else `/proc`) says so.
    fn all_gone(&self) -> bool {
        self.members.iter().all(|m| {
            m.exited
                || match &m.pidfd {
                    Some(fd) => crate::procfs::exited(fd) == Some(true),
                    None => {
                        m.no_pidfd == Some(REAPED_EARLY)
                            || !std::path::Path::new(&format!("/proc/{}", m.pid)).exists()
                    }
                }
        })
    }

    fn push(&mut self, m: Member) -> usize {
        let i = self.members.len();
        self.index.insert(m.pid, i);
        self.members.push(m);
        i
    }

    /// Applies one event of the tree's own stream; returns a member that exited and whose
    /// orphan status may be this program's to reap.
    fn apply(&mut self, root: Pid, ev: ProcEvent) -> Option<(Pid, Arc<OwnedFd>)> {
        self.applied += 1;
        match ev {
            ProcEvent::Child {
                pid, parent, at, ..
            } => {
                if let Some(&i) = self.index.get(&pid) {
                    let m = &mut self.members[i];
                    if !m.exited {
                        // Found by a `kill`'s look at `/proc` before its event came.
                        m.parent = Some(parent);
                        m.reported = true;
                        return None;
                    }
                }
                let (pidfd, no_pidfd) = match pin(pid, at) {
                    Ok(fd) => (Some(Arc::new(fd)), None),
                    Err(why) => (None, Some(why)),
                };
                let mut forced = false;
                if let (Some(sig), Some(fd)) = (self.stopping, &pidfd) {
                    let _ = send(fd, sig);
                    if sig != Signal::KILL {
                        let _ = send(fd, Signal::CONT);
                    }
                    forced = sig == Signal::KILL;
                }
                self.push(Member {
                    pid,
                    parent: Some(parent),
                    reported: true,
                    pidfd,
                    no_pidfd,
                    exited: false,
                    status: None,
                    forced,
                });
                None
            }
            ProcEvent::Exit { pid, status, .. } => {
                let &i = self.index.get(&pid)?;
                let m = &mut self.members[i];
                // Counted as gone by its pidfd before this event came (see `State::settle`):
                // its status is still news.
                if m.exited && m.status.is_some() {
                    return None;
                }
                m.exited = true;
                m.status = status;
                if pid == root {
                    return None;
                }
                // With its status known, the record needs its pidfd no more: the orphan table
                // keeps it until the process is reaped. A tree that has run through thousands
                // of processes holds descriptors only for the ones alive.
                let fd = match status {
                    Some(_) => m.pidfd.take(),
                    None => m.pidfd.clone(),
                };
                fd.map(|fd| (pid, fd))
            }
            ProcEvent::TrackErr { count, .. } => {
                self.untracked += count as usize;
                None
            }
            ProcEvent::Lost { count, .. } => {
                self.untracked += count as usize;
                None
            }
            _ => None,
        }
    }
}

/// Reads the tree's own stream until it ends.
async fn follow(inner: Arc<Inner>, mut stream: ProcEvents) {
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await;
        let Some(first) = next else { break };
        let mut dead = Vec::new();
        {
            let mut st = lock(&inner.state);
            dead.extend(st.apply(inner.root, first));
            while let Ok(Some(ev)) = stream.try_next() {
                dead.extend(st.apply(inner.root, ev));
            }
        }
        if !dead.is_empty() {
            orphans().note_dead(dead);
        }
        inner.changed.notify_waiters();
    }
    lock(&inner.state).ended = true;
    inner.changed.notify_waiters();
    if let Some(cg) = &inner.cgroup {
        if !cg.populated() {
            cg.remove();
        }
    }
}

/// How long every member the tree knows must have been gone, with no event of its stream
/// applied meanwhile, before the tree counts as ended without its stream's end (see
/// [`Inner::ended`]).
const SILENT_END: Duration = Duration::from_millis(250);

impl Inner {
    /// Waits until every tracked member has exited: the tree's stream ended.
    ///
    /// A backstop, for a backend that misses an exit (a Ptrace tracer has been seen to lose
    /// one member's `Exit` when the whole tree is killed while one of its members forks as
    /// fast as it can; the stream then never ends): once every member the tree knows is gone
    /// by its pidfd and [`SILENT_END`] has passed without a new event, the tree counts as
    /// ended, and says so in a warning.
    async fn ended(&self) {
        let mut gone_since: Option<(Instant, u64)> = None;
        // Whether the last wait ran out without news: only then are the pidfds looked at,
        // not at every batch of events.
        let mut quiet = false;
        loop {
            let notified = self.changed.notified();
            {
                let mut st = lock(&self.state);
                if st.ended {
                    return;
                }
                gone_since = match gone_since {
                    _ if !quiet || !st.all_gone() => None,
                    Some((since, applied)) if applied == st.applied => {
                        if since.elapsed() >= SILENT_END {
                            tracing::warn!(
                                root = %self.root,
                                "every member of the tree is gone, but the backend did not \
                                 report each exit: counting the tree as ended"
                            );
                            st.settle();
                            st.ended = true;
                            drop(st);
                            self.changed.notify_waiters();
                            return;
                        }
                        Some((since, applied))
                    }
                    _ => Some((Instant::now(), st.applied)),
                };
            }
            // Woken by the tree's events, or to look again while all seem gone.
            quiet = tokio::time::timeout(SILENT_END / 2, notified)
                .await
                .is_err();
        }
    }
}

impl ProcWatcher {
    /// Starts `cmd` as a [`Tree`]: already watched with [`Interest::TRACK`] (race-free, as
    /// [`ProcWatcher::spawn`]), in a process group of its own, and — where this program may
    /// create one (root, or a delegated cgroup v2 subtree) — in a cgroup of its own, joined
    /// before it runs its program so that every descendant starts inside.
    ///
    /// [`Tree::events`] yields everything ([`Interest::ALL`]) about every member; the tree
    /// also follows its members itself, so reading that stream is optional.
    ///
    /// Must be called from within a tokio runtime; keep the watcher alive as long as the
    /// tree (dropping it ends the tree's following).
    ///
    /// # Errors
    ///
    /// As [`ProcWatcher::spawn`]: the program cannot be started (not found, not executable:
    /// [`Error::raw_os_error`] has the errno), the watch fails, or no tokio runtime.
    pub fn spawn_tree(&self, cmd: impl Into<tokio::process::Command>) -> Result<Tree, Error> {
        let backend = self.backend();
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::new(ErrorKind::InvalidInput, "spawn_tree")
                .with_backend(backend)
                .with_detail("ProcWatcher::spawn_tree must be called within a tokio runtime"));
        }
        let mut cmd: tokio::process::Command = cmd.into();
        let kill_on_drop = cmd.get_kill_on_drop();
        cmd.process_group(0);
        let cgroup = Cgroup::create();
        let joined = AtomicBool::new(false);
        let prepare = |pid: Pid| {
            if let Some(cg) = &cgroup {
                match cg.add(pid.as_raw()) {
                    Ok(()) => joined.store(true, Ordering::Relaxed),
                    Err(e) => {
                        tracing::debug!(%pid, error = %e, "could not move the tree's root into its cgroup")
                    }
                }
            }
        };
        let spawned = self.spawn_armed(
            cmd,
            &[Interest::ALL, Interest::TRACK | Interest::EXIT],
            &prepare,
        );
        let cgroup = match cgroup {
            Some(cg) if spawned.is_ok() && joined.load(Ordering::Relaxed) => Some(cg),
            // Dropping it removes it.
            Some(_) | None => None,
        };
        let (child, mut streams, root) = spawned?;
        let own = streams.pop().expect("two streams");
        let events = streams.pop().expect("two streams");
        let adoption = if Pid::this().as_raw() == 1 {
            Adoption::Pid1
        } else if crate::reaper::is_subreaper() {
            Adoption::Subreaper
        } else {
            Adoption::Elsewhere
        };
        let mechanism = Mechanism {
            backend,
            adoption,
            cgroup: cgroup.as_ref().map(|c| c.path().to_owned()),
        };
        let mut state = State::default();
        // Not reaped before `Tree::wait`: the pidfd names this very process.
        let root_fd = pidfd_open(root.to_rustix(), PidfdFlags::empty()).ok();
        state.push(Member {
            pid: root,
            parent: None,
            reported: true,
            no_pidfd: root_fd.is_none().then_some("pidfd_open failed"),
            pidfd: root_fd.map(Arc::new),
            exited: false,
            status: None,
            forced: false,
        });
        let inner = Arc::new(Inner {
            root,
            state: Mutex::new(state),
            changed: tokio::sync::Notify::new(),
            cgroup,
        });
        tokio::spawn(follow(inner.clone(), own));
        orphans::ensure_listener();
        Ok(Tree {
            inner,
            child,
            events,
            kill_on_drop,
            mechanism,
        })
    }
}

impl Tree {
    /// The root's pid.
    pub fn pid(&self) -> Pid {
        self.inner.root
    }

    /// Every event about every member ([`Interest::ALL`]).
    pub fn events(&mut self) -> &mut ProcEvents {
        &mut self.events
    }

    /// The members alive now, root first: every member whose `Child` event has been read
    /// and that has not exited (its pidfd says so even before its `Exit` is read).
    pub fn pids(&self) -> Vec<Pid> {
        let mut st = lock(&self.inner.state);
        if st.ended {
            st.settle();
        }
        st.members
            .iter()
            .filter(|m| !m.exited && m.no_pidfd != Some(REAPED_EARLY))
            .filter(|m| {
                m.pidfd
                    .as_deref()
                    .is_none_or(|fd| crate::procfs::exited(fd) != Some(true))
            })
            .map(|m| m.pid)
            .collect()
    }

    /// What this tree's guarantees rest on here (backend, subreaper, cgroup).
    pub fn mechanism(&self) -> &Mechanism {
        &self.mechanism
    }

    /// Whether dropping the tree kills every member (see the type's docs).
    pub fn kill_on_drop(&mut self, kill: bool) {
        self.kill_on_drop = kill;
    }

    /// The root process, as tokio manages it (its stdio pipes, `id`, `start_kill`).
    pub fn root(&mut self) -> &mut tokio::process::Child {
        &mut self.child
    }

    /// A future that completes when the root exits, with its status as the backend reported
    /// it (`None` only where it could not), without reaping it ([`Tree::wait`] does). It
    /// borrows nothing, so it can sit in a `tokio::select!` beside [`Tree::events`]:
    ///
    /// ```no_run
    /// # async fn f(mut tree: procwatch::Tree) {
    /// use futures::StreamExt;
    ///
    /// let mut root_exit = tree.root_exit();
    /// loop {
    ///     tokio::select! {
    ///         status = &mut root_exit => { println!("root: {status:?}"); break }
    ///         Some(ev) = tree.events().next() => println!("{ev:?}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn root_exit(&self) -> RootExit {
        let inner = self.inner.clone();
        RootExit(Box::pin(async move {
            loop {
                let notified = inner.changed.notified();
                {
                    let st = lock(&inner.state);
                    let root = &st.members[0];
                    if root.exited || st.ended {
                        return root.status;
                    }
                }
                notified.await;
            }
        }))
    }

    /// Waits for the root to exit and returns its status (reaping it). Other members may
    /// still run: see [`Tree::wait_all`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Other`] if waiting fails (the status was taken by other code calling
    /// `waitpid(-1)`).
    pub async fn wait(&mut self) -> Result<ExitStatus, Error> {
        let root = self.inner.root;
        self.child.wait().await.map_err(|e| {
            Error::io("tree wait", e)
                .with_pid(root)
                .with_detail("could not wait for the tree's root")
        })
    }

    /// Waits until every member has exited (the root reaped too), signalling nothing, and
    /// reports how each one ended.
    ///
    /// # Errors
    ///
    /// As [`Tree::wait`].
    pub async fn wait_all(&mut self) -> Result<TreeReport, Error> {
        let began = Instant::now();
        let root_status = self.wait().await?;
        self.inner.ended().await;
        Ok(self.report(Some(root_status), Vec::new(), false, began))
    }

    /// Sends `signal` to every live member of the tree, whatever its session, process group
    /// or parent, through pidfds (never to a reused pid), and reports what it reached.
    ///
    /// It makes passes until one finds nobody new: each pass signals the members known so far
    /// and the children `/proc` shows for them whose events have not been read yet, so a
    /// member forking while the signal goes out is reached in a later pass. For `SIGKILL`,
    /// which stops every fork at once, that reaches every member; for other signals, a
    /// member that keeps forking may outrun it (after 16 passes it stops). With a cgroup of
    /// its own, `SIGKILL` then also goes through `cgroup.kill`, which reaches every process
    /// in it at once, members procwatch does not know of included.
    ///
    /// The call does not wait for anything to exit: [`Tree::wait_all`] does, and
    /// [`Tree::shutdown`] does both.
    ///
    /// # Errors
    ///
    /// None so far: members that could not be signalled are listed in
    /// [`KillReport::failed`]; the `Result` is for what a future backend cannot do.
    pub fn kill(&self, signal: Signal) -> Result<KillReport, Error> {
        Ok(self.signal_all(signal, false))
    }

    /// What `kill` does; with `cont`, each member gets `SIGCONT` right after `signal`.
    /// Members are signalled newest first, the root last: a stopped member must get its
    /// `SIGCONT` before its parent dies, or the kernel, seeing its process group orphaned
    /// with a stopped member, sends it `SIGHUP` first (POSIX's orphaned-group rule).
    fn signal_all(&self, signal: Signal, cont: bool) -> KillReport {
        let mut report = KillReport::default();
        let mut done: std::collections::HashSet<usize> = Default::default();
        for _ in 0..KILL_PASSES {
            // Children of live members that `/proc` shows but no event has announced yet.
            // Only of members whose pidfds say they run: a pid whose member has exited may
            // name another process by now, whose children are none of the tree's.
            let live: Vec<Pid> = {
                let st = lock(&self.inner.state);
                st.members
                    .iter()
                    .filter(|m| !m.exited)
                    .filter(|m| {
                        m.pidfd
                            .as_deref()
                            .is_some_and(|fd| crate::procfs::exited(fd) == Some(false))
                    })
                    .map(|m| m.pid)
                    .collect()
            };
            let mut found = Vec::new();
            for parent in live {
                for pid in proc_children(parent) {
                    let known = lock(&self.inner.state).live(pid).is_some();
                    if known {
                        continue;
                    }
                    // The pidfd pins it; then its parent, read after, is checked.
                    let Ok(fd) = pidfd_open(pid.to_rustix(), PidfdFlags::empty()) else {
                        continue;
                    };
                    // A zombie's `Exit` may have been read already: it is no new member.
                    if crate::procfs::exited(&fd) != Some(false) {
                        continue;
                    }
                    let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .ok()
                        .as_deref()
                        .and_then(crate::procfs::parse_stat)
                        .map(|s| s.ppid);
                    if ppid == Some(parent.as_raw()) {
                        found.push((pid, parent, fd));
                    }
                }
            }
            let mut st = lock(&self.inner.state);
            for (pid, parent, fd) in found {
                if st.live(pid).is_none() {
                    st.push(Member {
                        pid,
                        parent: Some(parent),
                        reported: false,
                        pidfd: Some(Arc::new(fd)),
                        no_pidfd: None,
                        exited: false,
                        status: None,
                        forced: false,
                    });
                }
            }
            let mut reached = 0;
            let forcing = signal == Signal::KILL && st.stopping == Some(Signal::KILL);
            for (i, m) in st.members.iter_mut().enumerate().rev() {
                if m.exited || m.no_pidfd == Some(REAPED_EARLY) || !done.insert(i) {
                    continue;
                }
                reached += 1;
                let Some(fd) = &m.pidfd else {
                    let why = m.no_pidfd.unwrap_or("unknown");
                    report.failed.push((
                        m.pid,
                        Error::new(ErrorKind::Other, "tree kill")
                            .with_pid(m.pid)
                            .with_detail(format!("no pidfd on this member: {why}")),
                    ));
                    continue;
                };
                match send(fd, signal) {
                    Ok(true) => {
                        if cont {
                            let _ = send(fd, Signal::CONT);
                        }
                        report.signalled.push(m.pid);
                        m.forced |= forcing;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        let kind = if e == Errno::PERM {
                            ErrorKind::PermissionDenied
                        } else {
                            ErrorKind::Other
                        };
                        report.failed.push((
                            m.pid,
                            Error::new(kind, "tree kill")
                                .with_pid(m.pid)
                                .with_source(e.into())
                                .with_detail(format!(
                                    "could not send {signal}: a process of another user, or \
                                     one running a set-user-ID program, needs CAP_KILL"
                                )),
                        ));
                    }
                }
            }
            if reached == 0 {
                break;
            }
        }
        // Last, for what no pass could see: processes of the cgroup procwatch does not know
        // (a child the backend could not follow, or one it has not reported yet).
        if signal == Signal::KILL {
            if let Some(cg) = &self.inner.cgroup {
                match cg.kill() {
                    Ok(()) => report.cgroup = true,
                    // Removed: it was empty.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::debug!(error = %e, "cgroup.kill failed"),
                }
            }
        }
        report
    }

    /// Stops the whole tree: [`Signal::TERM`] to every member, then `SIGCONT` (so a stopped
    /// member sees it), up to `grace` for all to exit, then `SIGKILL` to what is left
    /// (after freezing the tree's cgroup, where it has one, so that nothing forks during the
    /// kill). Members that appear meanwhile get the same signals at once. Returns once every
    /// member has exited and the root is reaped, with every member's status.
    ///
    /// The same as [`Tree::shutdown_with`] with `SIGTERM`.
    ///
    /// # Errors
    ///
    /// As [`Tree::wait`]. Members that could not be signalled do not make it fail: they are
    /// in [`TreeReport::failed`], and if they still run, [`TreeReport::still_running`]
    /// lists them (the call does not wait for them).
    pub async fn shutdown(&mut self, grace: Duration) -> Result<TreeReport, Error> {
        self.shutdown_with(Signal::TERM, grace).await
    }

    /// [`Tree::shutdown`] with another first signal (`SIGINT`, `SIGHUP`, `SIGQUIT`, ...).
    ///
    /// # Errors
    ///
    /// As [`Tree::shutdown`].
    pub async fn shutdown_with(
        &mut self,
        signal: Signal,
        grace: Duration,
    ) -> Result<TreeReport, Error> {
        let began = Instant::now();
        lock(&self.inner.state).stopping = Some(signal);
        let cont = signal != Signal::KILL && signal != Signal::CONT;
        let mut failed = self.signal_all(signal, cont).failed;
        let in_time = tokio::time::timeout(grace, self.inner.ended())
            .await
            .is_ok();
        if !in_time {
            let frozen = self
                .inner
                .cgroup
                .as_ref()
                .is_some_and(|cg| cg.freeze(true, FREEZE_WAIT).unwrap_or(false));
            lock(&self.inner.state).stopping = Some(Signal::KILL);
            let mut cannot: Vec<Pid> = Vec::new();
            loop {
                let r = self.signal_all(Signal::KILL, false);
                for (pid, e) in r.failed {
                    if !cannot.contains(&pid) {
                        cannot.push(pid);
                        failed.push((pid, e));
                    }
                }
                if frozen {
                    if let Some(cg) = &self.inner.cgroup {
                        let _ = cg.freeze(false, Duration::ZERO);
                    }
                }
                if tokio::time::timeout(KILL_AGAIN, self.inner.ended())
                    .await
                    .is_ok()
                {
                    break;
                }
                let left = self.pids();
                if left.is_empty() {
                    // Every member is gone by its pidfd; their `Exit` events, with the
                    // statuses, may still be on their way from the backend (a busy tracer
                    // sends them later than `KILL_AGAIN`). The stream's end brings them, and
                    // `ended` does not wait past `SILENT_END` for an event that never comes.
                    self.inner.ended().await;
                    break;
                }
                // Done when nothing is left but members that cannot be signalled.
                if left.iter().all(|p| cannot.contains(p)) {
                    break;
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        failed.retain(|(p, _)| seen.insert(*p));
        // A root that could not be signalled still runs: not waited for.
        let root_alive = self.pids().first() == Some(&self.inner.root)
            && failed.iter().any(|(p, _)| *p == self.inner.root);
        let root_status = if root_alive {
            None
        } else {
            Some(self.wait().await?)
        };
        Ok(self.report(root_status, failed, !in_time, began))
    }

    fn report(
        &self,
        root_status: Option<ExitStatus>,
        failed: Vec<(Pid, Error)>,
        forced: bool,
        began: Instant,
    ) -> TreeReport {
        let mut st = lock(&self.inner.state);
        st.settle();
        let processes = st
            .members
            .iter()
            .map(|m| {
                let mut status = m.status;
                if m.pid == self.inner.root && m.parent.is_none() && root_status.is_some() {
                    status = root_status;
                }
                if status.is_none() {
                    status = m
                        .pidfd
                        .as_ref()
                        .and_then(|fd| crate::sys::pidfd_exit_status(fd.as_fd()))
                        .map(ExitStatus::from_raw);
                }
                let unknown = match status {
                    Some(_) => None,
                    None if !m.exited => Some(STILL_RUNNING),
                    None if m.pidfd.is_none() => {
                        Some("the backend did not report its status, and no pidfd on it was held")
                    }
                    None if !m.reported => Some(
                        "found in /proc during a kill, it died before the backend saw it \
                         created, and was not reaped yet (its status comes with the reap)",
                    ),
                    None => Some(
                        "the backend did not report its status (events were lost), and the \
                         kernel gave none through its pidfd (PIDFD_INFO_EXIT needs Linux 6.15 \
                         and a reaped process)",
                    ),
                };
                ProcessEnd {
                    pid: m.pid,
                    parent: m.parent,
                    status,
                    unknown,
                    forced: m.forced,
                }
            })
            .collect();
        TreeReport {
            root: self.inner.root,
            processes,
            failed,
            untracked: st.untracked,
            forced,
            elapsed: began.elapsed(),
        }
    }
}

/// The root's exit, from [`Tree::root_exit`]: resolves to its status as the backend
/// reported it.
pub struct RootExit(Pin<Box<dyn std::future::Future<Output = Option<ExitStatus>> + Send>>);

impl std::future::Future for RootExit {
    type Output = Option<ExitStatus>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<ExitStatus>> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for RootExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootExit")
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        if self.kill_on_drop && !lock(&self.inner.state).ended {
            lock(&self.inner.state).stopping = Some(Signal::KILL);
            let _ = self.kill(Signal::KILL);
        }
    }
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tree")
            .field("root", &self.inner.root)
            .field("live", &self.pids().len())
            .field("mechanism", &self.mechanism)
            .field("kill_on_drop", &self.kill_on_drop)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(pid: i32, parent: i32) -> ProcEvent {
        ProcEvent::Child {
            pid: Pid::from_raw(pid).unwrap(),
            parent: Pid::from_raw(parent).unwrap(),
            at: Timestamp::UNKNOWN,
        }
    }

    #[test]
    fn a_member_record_is_small() {
        // The docs promise about 64 bytes a member: the record and its index entry.
        assert!(std::mem::size_of::<Member>() <= 48);
        assert!(std::mem::size_of::<(Pid, usize)>() <= 16);
    }

    /// A member counted as gone by its pidfd before its `Exit` came (`State::settle`, when
    /// `shutdown` builds its report) still gets the status the late event brings, once.
    #[test]
    fn a_late_exit_still_gives_its_status() {
        let root = Pid::from_raw(1_000_000).unwrap();
        let pid = Pid::from_raw(2_000_000).unwrap();
        let exit = |code: i32| ProcEvent::Exit {
            pid,
            status: Some(ExitStatus::from_raw(code)),
            at: Timestamp::UNKNOWN,
        };
        let mut st = State::default();
        st.apply(root, member(2_000_000, 1_000_000));
        // What `settle` does when the pidfd says the process is gone.
        st.members[0].exited = true;
        st.apply(root, exit(9));
        assert_eq!(st.members[0].status, Some(ExitStatus::from_raw(9)));
        st.apply(root, exit(0));
        assert_eq!(st.members[0].status, Some(ExitStatus::from_raw(9)));
    }

    #[test]
    fn a_pid_that_comes_back_is_a_new_member() {
        let root = Pid::from_raw(1_000_000).unwrap();
        let mut st = State::default();
        // Pids far above pid_max: `pin` finds no such process, and says so.
        st.apply(root, member(2_000_000, 1_000_000));
        st.apply(
            root,
            ProcEvent::Exit {
                pid: Pid::from_raw(2_000_000).unwrap(),
                status: Some(ExitStatus::from_raw(0)),
                at: Timestamp::UNKNOWN,
            },
        );
        st.apply(root, member(2_000_000, 1_000_000));
        assert_eq!(st.members.len(), 2);
        assert!(st.members[0].exited);
        assert!(!st.members[1].exited);
        assert!(st.members[1].no_pidfd.is_some());
        assert_eq!(
            st.live(Pid::from_raw(2_000_000).unwrap()).unwrap().status,
            None
        );
    }
}
