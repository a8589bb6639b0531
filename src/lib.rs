//! Process lifecycles you can `await`.
//!
//! procwatch turns the kernel's process events into tokio [`Stream`]s. A [`ProcWatcher`] hands
//! out one [`ProcEvents`] stream per [`watch`](ProcWatcher::watch); each yields [`ProcEvent`]s
//! — `Fork`, `Exec`, `Exit`, and with [`Interest::TRACK`] a `Child` for every descendant —
//! the way kqueue's `EVFILT_PROC` with `NOTE_TRACK` does on the BSDs. A child that is born
//! and dies before anybody reads anything still yields its `Child`, then its `Exit`.
//! [`watch_system`](ProcWatcher::watch_system) gives one stream about every process on the
//! host (Netlink backend).
//!
//! ```no_run
//! use futures::StreamExt;
//! use procwatch::{Interest, ProcEvent, ProcWatcher};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let watcher = ProcWatcher::new()?;
//!     let mut cmd = tokio::process::Command::new("sh");
//!     cmd.args(["-c", "for i in 1 2 3; do (exit $i) & done; wait"]);
//!     let mut started = watcher.spawn(cmd, Interest::ALL)?;
//!     while let Some(ev) = started.events.next().await {
//!         match ev {
//!             ProcEvent::Child { pid, parent, .. } => println!("{parent} -> {pid}"),
//!             ProcEvent::Exit { pid, status, .. } => println!("{pid} exited: {status:?}"),
//!             _ => {}
//!         }
//!     }
//!     println!("sh: {}", started.child.wait().await?);
//!     Ok(())
//! }
//! ```
//!
//! # Backends
//!
//! | [`BackendKind`] | source | who can use it | what it gives |
//! |---|---|---|---|
//! | `Netlink` | Linux proc connector (`NETLINK_CONNECTOR`, `CN_IDX_PROC`) | root or `CAP_NET_ADMIN` (newer kernels: any user), in the initial user and pid namespaces | any pid, system-wide; exit statuses; can lose under overload, then says so (`Lost`) and resyncs from `/proc`; sees a `CLONE_PARENT` child as its creator's parent's (not the creator's), so it is tracked only where that process is, and its creator's stream gets neither `Child` nor `TrackErr` |
//! | `Ptrace` | `PTRACE_SEIZE` with `TRACEFORK`/`VFORK`/`CLONE`/`EXEC`, from a tracer process the watcher forks | any user, for the processes it may trace: those started with [`ProcWatcher::spawn`] and their descendants (the held child names the tracer with `PR_SET_PTRACER`, which Yama's `ptrace_scope` 1 requires; not tested on a kernel with Yama); others where ptrace is allowed (same user and Yama `ptrace_scope` 0, or `CAP_SYS_PTRACE`, as root in a user namespace has for its processes); not the watching program itself | lossless (a slow consumer makes the tracees wait, it never drops); exact exit statuses; sees a `CLONE_PARENT` child as its creator's; can hold a process at its `Child` and `Exec` ([`Interest::HOLD`]); each traced process stops briefly at every fork, exec and signal (see [Caveats](#caveats)) |
//! | `Pidfd` | `pidfd_open` + `/proc` scans | planned | exact exits, best-effort forks |
//! | `Kqueue` | `EVFILT_PROC` | planned | BSD native |
//!
//! [`BackendKind::Auto`] (what [`ProcWatcher::new`] uses) picks the strongest available;
//! [`ProcWatcher::backend`] says which: `Netlink` where the proc connector answers (root, or
//! `CAP_NET_ADMIN`, in the initial namespaces), `Ptrace` where it refuses (an unprivileged
//! user) and, without asking the proc connector, in any other user or pid namespace (a
//! container), where the kernel would ignore the subscription without an answer.
//!
//! # Guarantees, per stream
//!
//! 1. `Child(C)` comes before any other event about `C`.
//! 2. `Fork`/`Exec` about one pid come in program order; `Exit` is its last event, at most
//!    once. After it, nothing about that pid reaches the stream, even if the number is reused.
//! 3. With `TRACK`, every process created by a tracked process gets exactly one `Child` and is
//!    tracked with the same interest, even if it exited before anyone read anything — or its
//!    parent gets `TrackErr` saying why not. Threads are not processes: creating one yields no
//!    event, and a process exits when its last thread does. (The one exception is a creation
//!    the backend is not told of: see `CLONE_PARENT` in the backend table and the Caveats.)
//! 4. `Child` and `Exit` of one pid are two events; neither overwrites the other.
//! 5. Memory is bounded by the number of tracked processes, never by the number of raw
//!    events: repeated `Fork`/`Exec` of one pid that a slow consumer has not read are folded
//!    into one event with a `count`. A stream tracks at most
//!    [`Builder::max_tracked`] processes; beyond it, `TrackErr`. (Folding keeps the order of
//!    the last four runs of different kinds; a process that alternates forks and execs faster
//!    than it is read has its older runs merged by kind: the counts stay exact, the
//!    interleaving between kinds is lost.)
//! 6. Loss is never silent: if the kernel drops messages, every affected stream gets `Lost`,
//!    then what a `/proc` rescan learned: `Exit` (status `None` if it could not be read) for
//!    tracked processes that died in the gap, `Child` for live children that appeared in it.
//!    The `Netlink` backend also checks, once tracked processes have been quiet for a second
//!    (then less and less often, down to once a minute), that those it still counts as alive
//!    are: one found gone twice, a second apart, had its exit missed, and is handled like a
//!    loss (`Lost`, then its `Exit`).
//! 7. A slow consumer never slows the backend, nor another stream.
//! 8. Several streams may watch one pid; each gets every event.
//! 9. [`ProcWatcher::watch`] returns only once the source covers the pid: any event after it
//!    returns is delivered (a fork straight after it is never missed), and no event the kernel
//!    emitted before it was called is (see below). A parent's `Exit` comes after the `Child`
//!    of every process it created before exiting. [`ProcWatcher::spawn`] goes further: the
//!    new process is held before it runs its program until its watch is armed, so the stream
//!    sees everything it does, its `execve` first.
//!
//! # Where a stream begins
//!
//! A `watch` notes the time it began (`CLOCK_MONOTONIC`, read under the registry lock before
//! it looks at `/proc/<pid>`). Every kernel message carries the kernel's own time on that
//! clock, and a stream takes only what happened from that moment on — even when the message
//! was still unread in the kernel's queue when the stream was created, and whichever way the
//! process was started (`std::process`, `tokio::process`, a shell, `clone3`):
//!
//! * a process started a moment before the `watch` does not show its `execve` from before
//!   it, and children it created before it are neither announced nor tracked (with `TRACK`,
//!   the stream follows what the process creates from the watch on);
//! * a stream watching a pid that another, older stream already tracks gets only what
//!   happened since its own watch; the older stream keeps getting everything;
//! * the process's thread set is taken from the same `/proc` read, and a thread message
//!   stamped before that read is recognised as already seen: the exit of the old leader of a
//!   non-leader `execve` done just before the watch is not taken for the process's exit;
//! * `Exit` is decided by the thread set, not by the stream's start: the kernel sends a
//!   process's exit message only once it is a zombie, so a process whose exit message was
//!   still queued at the watch is read as a zombie and gets its `Exit` at once (guarantee 9),
//!   and the queued message adds nothing;
//! * after a loss, children a resync finds are attached to a stream only if they may have
//!   started after its watch began: `/proc` gives start times to the clock tick (10 ms), so a
//!   child started within the tick before a watch counts as after it;
//! * events of a process started with [`ProcWatcher::spawn`] all come after its watch: it is
//!   held until then.
//!
//! In a time namespace the kernel's stamps are moved onto the namespace's clock first, so the
//! comparison holds there too.
//!
//! # Command lines
//!
//! A stream with [`Interest::ARGV`] (and `EXEC`) gets each program's command line on its
//! [`ProcEvent::Exec`] as an [`Argv`], read from `/proc/<pid>/cmdline` as soon as the backend
//! hears of the exec, before anything is queued for a consumer: the Ptrace backend reads it
//! while the process is stopped at its exec, so every exec has it. The Netlink backend keeps,
//! while a stream asks, a second proc-connector socket that hears of execs alone, and a
//! thread (`procwatch-argv`) that reads each command line the moment that socket wakes it;
//! the drain path reads the ones it gets to first. A program that exits within a fraction of
//! a millisecond of its exec may still be gone by then, mostly when every core is busy
//! (`argv: None`): with a busy loop on each core, a loop of 300 `/bin/true` lost 13–35 of them
//! with the thread's default scheduling and none with [`ArgvPriority::Realtime`], which the
//! `procwatch` command uses (see [`NetlinkOptions::argv_priority`]). It costs one small read
//! per exec of a followed process, and nothing while no stream asks, which is why
//! [`Interest::ALL`] leaves it out.
//!
//! # Held events
//!
//! With [`Interest::HOLD`] (Ptrace only), a process a stream tracks is kept stopped at each
//! `Child` and `Exec` that stream delivers, until the stream's consumer polls for its next
//! event or drops the stream: a supervisor can put a new process in a cgroup, read its
//! `/proc` entry, set limits or kill it before it runs one instruction of its own (or of its
//! new program). With several holding streams, the process runs on once all of them have
//! moved past the event. A stalled holding stream is backpressure: its processes wait, none
//! of their events is dropped, and memory stays bounded by the processes tracked. `HOLD` can
//! also be added or taken away later with [`ProcEvents::set_interest`]: from then on, the
//! stream's processes are held at their next events, or no more.
//!
//! **Do not wait for a held process while not polling its stream.** A consumer that, having
//! received a held process's `Child`, waits for that process (or for anything it should
//! produce: its output, its exit, a pipe it should close) before polling the stream again
//! waits forever: the process is stopped until the consumer polls. Poll the stream from its
//! own task, or act on the event and move on before waiting.
//!
//! # Supervision
//!
//! A supervisor, a CI runner or an init must *own* a tree: know every process in it, stop it
//! whatever its members did to get away, and collect every exit status without taking the
//! ones other code waits for. [`ProcWatcher::spawn_tree`] starts a command as a [`Tree`], and
//! [`Reaper`] makes the program the reaper of orphans.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use procwatch::{ProcWatcher, Reaper};
//! use std::time::Duration;
//!
//! let reaper = Reaper::install()?; // orphans of the tree come here, and are reaped
//! let watcher = ProcWatcher::new()?;
//! let mut tree = watcher.spawn_tree(tokio::process::Command::new("./run-tests.sh"))?;
//! let status = tree.wait().await?; // the root
//! let report = tree.shutdown(Duration::from_secs(5)).await?; // and whatever it left behind
//! println!("{status}; {} processes in all", report.processes.len());
//! # Ok(()) }
//! ```
//!
//! What a tree guarantees:
//!
//! 1. **Membership is what was tracked.** Every process the command creates, and every
//!    process those create, is a member from its creation: `setsid`, a double fork, `nohup`, a
//!    new process group or reparenting (to this program or to init) does not take it out.
//!    The only way out is what the backend says on the tree's stream (`TrackErr`, or `Lost`
//!    under Netlink) — and, where the tree has its own cgroup, not even that for `SIGKILL`.
//! 2. **No reused pid is signalled.** Members are signalled through pidfds opened when their
//!    `Child` event was read, after checking the pid still names the process that event
//!    announced (its start time), never through a number.
//! 3. **`kill` makes passes until nobody new**: each pass signals the members known so far
//!    and the children `/proc` shows for them that no event has announced yet. For `SIGKILL`
//!    that reaches every member (a process with `SIGKILL` pending cannot complete a fork);
//!    with a cgroup, `cgroup.kill` follows.
//! 4. **`shutdown` waits for every member, not only the root**: `SIGTERM` (or another
//!    signal) then `SIGCONT` to each member, newest first, so that a stopped member sees it and
//!    is not sent `SIGHUP` by the kernel first (a stopped process group whose last outside
//!    parent dies gets `SIGHUP`); members that appear meanwhile get the same at once; after the
//!    grace period, the cgroup is frozen (if any) and what is left gets `SIGKILL`, again until
//!    nothing is left. A member that could not be signalled (`EPERM`) is reported, not waited
//!    for.
//! 5. **Every member's status**: from the backend's `Exit`, else from `PIDFD_INFO_EXIT` on its
//!    pidfd (Linux 6.15+, once reaped); `None` only with the reason.
//! 6. **Nothing is stolen.** The root is reaped by [`Tree::wait`]. Orphans reparented to
//!    this program are reaped by procwatch only when it followed them from their creation by a
//!    process other than this program (see [`Reaper`]); a `tokio::process::Child` or
//!    `std::process::Child` of the program keeps its status whatever dies first. Nothing calls
//!    `waitpid(-1)`.
//!
//! What needs what:
//!
//! | piece | needs | without it |
//! |---|---|---|
//! | tracking every member | a backend: Netlink (root or `CAP_NET_ADMIN`, initial namespaces) or Ptrace (any user, its own processes) | — |
//! | orphans reaped here, first-hand statuses | [`Reaper::install`] (`PR_SET_CHILD_SUBREAPER`, no privilege) or being PID 1 | orphans go to init, which reaps them; statuses still come from the backend |
//! | a cgroup of the tree's own: `cgroup.kill`, freezing | write access to the program's cgroup v2 (root, or a delegated subtree such as systemd's `Delegate=yes`); Linux 5.14+ for `cgroup.kill` | `SIGKILL` through pidfds only; a process the backend missed can escape it |
//! | signalling members | the right to signal them (same user, or `CAP_KILL`) | `PermissionDenied` in the report |
//! | statuses through pidfds | Linux 6.15+ (`PIDFD_INFO_EXIT`) | the backend's status only |
//!
//! [`Tree::mechanism`] says which of these a tree got.
//!
//! How this differs from what such programs use today, measured on one Linux 6.18 machine
//! with a script that starts six kinds of escapee: a plain background child, a grandchild,
//! a `setsid` process, a double fork into a new session, a `nohup` job and a job in a new
//! process group (`set -m`). Each tool got `SIGTERM` (or its kill call), then we looked at
//! what still ran:
//!
//! | tool | how it signals | escapees still running afterwards |
//! |---|---|---|
//! | tini 0.19.0, `tini -s` | the direct child only | all six |
//! | tini 0.19.0, `tini -s -g` | the child's process group | `setsid`, double fork, new group |
//! | dumb-init 1.2.5 | the child's process group (it is no subreaper: orphans go to init) | `setsid`, double fork, new group |
//! | command-group 5.0.1 / process-wrap 10.0.1, group `kill` | the child's process group | `setsid`, double fork, new group |
//! | the same, dropped with kill-on-drop | the leader only | the other five |
//! | [`Tree::kill`], [`Tree::shutdown`] | every tracked member, through pidfds | none |
//!
//! As PID 1 of a pid namespace nothing survives tini or dumb-init either, but only because
//! the kernel kills every process of the namespace when its PID 1 exits (an escapee set to
//! log a `SIGTERM` logged none). The `mini_init` example (a tini-class init on `Tree` and
//! `Reaper`) leaves none as a subreaper too; the price is that it waits the grace period for
//! a member that ignores `SIGTERM`, where tini exits at once and leaves it running.
//!
//! # Caveats
//!
//! * Dropping a [`ProcEvents`] detaches it at once; dropping the [`ProcWatcher`] stops the
//!   backend and ends its streams once they have yielded what they hold. Neither blocks.
//! * `CLONE_PARENT` under `Netlink`: the kernel makes such a child a child of its creator's
//!   parent, and the proc connector's fork message names only that parent, never the creator.
//!   So `Fork` and `Child` name the kernel's parent (the creator's parent), the child is
//!   tracked only by streams that track that process, and a stream tracking only the creator
//!   gets nothing about it: no `Child`, no `TrackErr` (the backend cannot tell it happened).
//!   `tests/clone_parent.rs` pins this behaviour.
//! * A resync reads `/proc` as far as this process may. Where `/proc` is mounted with
//!   `hidepid` and the reader lacks `CAP_SYS_PTRACE`, other users' processes cannot be read:
//!   a tracked one (a child that ran a setuid program, say) is then asked about through a
//!   pidfd — gone or exited, it gets `Exit` with status `None`; still running, it stays
//!   tracked as it was — and children such processes created in the gap are not found.
//! * Children discovered by a resync after a loss are attached with `Child` but without the
//!   `Fork` on their parent (the kernel message that would have said so was lost). Only
//!   children that started after the last event read before the loss are attached; a child
//!   whose parent died in the gap was reparented and is not found.
//! * Pid reuse is told apart by start times, so a queued message about a pid's previous owner
//!   is not applied to the new one. Two windows remain. The kernel sends a process's exit
//!   message just after its parent may already reap it, so if the pid is reused within those
//!   microseconds (a full pid wrap-around at that instant), the new process could be taken as
//!   exited. And `/proc` gives a process's start time only to the clock tick (10 ms), so for
//!   a process attached from `/proc` (by `watch`, or by a resync), a message about the pid's
//!   previous owner sent within that tick before the new process started is taken as its own.
//! * Non-leader `execve`: the kernel reports the old leader's exit and the exec separately;
//!   if the old leader's exit message is delayed past the exec message (it would take a
//!   preemption of hundreds of microseconds at one exact point), the process may be reported
//!   as exited early. The same can happen to a `watch` whose `/proc` read falls in the
//!   microseconds between the exec'ing thread taking over the pid and the old leader's exit
//!   message, if that message is stamped after the watch began.
//! * The `Netlink` backend needs root or `CAP_NET_ADMIN` on older kernels (newer ones let any
//!   user subscribe), and does not work inside a container's user or pid namespace: the
//!   kernel either refuses the subscription (`EPERM` at `bind`, as some kernels do from a
//!   user namespace) or ignores it without an error; `build` fails with
//!   [`ErrorKind::Unsupported`] either way (in the second case after a short wait for the
//!   acknowledgement that never comes). Without `CAP_NET_ADMIN` the receive buffer is capped by
//!   `net.core.rmem_max`, so a storm overflows it sooner (then `Lost` and a resync). In a time
//!   namespace the kernel's timestamps are shifted onto the namespace's own clock; the offset
//!   `/proc/self/timens_offsets` gives is checked against the kernel's timestamp on its answer
//!   to the subscription, and measured from that answer where it does not fit (a program that
//!   unshared a time namespace for its children without entering it).
//! * Event times ([`Timestamp`]) are the kernel's; a process started by the kernel before
//!   the watch and read from `/proc` has a start time with clock-tick (10 ms) precision.
//! * `Ptrace`: the tracer is a child process of the program (`procwatch-trace` in `ps`),
//!   forked by the watcher's thread and killed with it, with a helper of its own
//!   (`procwatch-bell`) that wakes it for the watcher's requests. It is a process of its own
//!   so that the program's own children, when watched, keep reporting their exit to their parent
//!   exactly as without the watcher (a process traced by its own parent's process would show
//!   its tracing stops to that parent's `waitpid`). A process has one tracer at a time: one
//!   that a debugger or `strace` traces cannot be watched (`PermissionDenied` saying by
//!   whom), and while it is watched, a debugger cannot attach to it.
//! * `Ptrace`: behaviour is unchanged by watching, with these visible differences: a traced
//!   process in a group-stop (`SIGSTOP`, `SIGTSTP`) shows as `t` ("tracing stop") in
//!   `/proc/<pid>/stat` where an untraced one shows `T`; each fork, exec and signal costs the
//!   process a stop and a resume by the tracer; a set-user-ID program run by a traced process
//!   runs without its privilege unless the watcher has `CAP_SYS_PTRACE` (the kernel's rule for
//!   every tracer); and events come as the tracer sees the stops, with its clock's time.
//!   While events are sparse each reaches the stream at once; in a storm the tracer sends
//!   them in batches, at most 0.5 ms apart (each batch wakes the watcher's thread and the
//!   consumer, which per event would cost them more CPU than the tracer itself). A held
//!   process's event is never batched.
//! * `Ptrace`: a `watch` of a running process stops each of its threads once, to make sure a
//!   `clone` it was in the middle of is seen (the child is then reported as its fork). A
//!   process killed while creating a child does not stop to report it: its `Exit` then waits
//!   up to 20 ms for the child's first stop, which makes the child its `Child` first.
//! * `Ptrace` with [`PtraceOptions::kill_on_drop`]: every traced process is killed when the
//!   watcher goes, however it goes. Without it, they are detached and run on (a stopped one
//!   stays stopped, as it would untraced).

#![deny(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

mod backend;
#[cfg(any(test, feature = "bench-support"))]
#[doc(hidden)]
pub mod bench_support;
mod cgroup;
mod clock;
mod command;
mod error;
mod event;
mod interest;
mod loom;
mod orphans;
mod pid;
mod procfs;
mod reaper;
mod registry;
mod shared;
mod signal;
mod stream;
mod sys;
mod tree;
mod watcher;

pub use command::WatchedChild;
pub use error::{Error, ErrorKind};
pub use event::{Argv, ArgvIter, ProcEvent, Timestamp, TrackErrReason};
pub use interest::Interest;
pub use pid::Pid;
pub use reaper::{Reaper, ReaperBuilder, ReaperExits};
pub use signal::Signal;
pub use stream::{Finished, ProcEvents};
pub use tree::{Adoption, KillReport, Mechanism, ProcessEnd, RootExit, Tree, TreeReport};
pub use watcher::{
    ArgvPriority, BackendKind, Builder, NetlinkOptions, ProcWatcher, PtraceOptions,
    DEFAULT_MAX_TRACKED, MAX_BATCH_WINDOW,
};

#[doc(no_inline)]
pub use futures_core::Stream;
