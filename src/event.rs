//! The events a stream yields.

use crate::Pid;
use std::process::ExitStatus;

/// One thing that happened to a watched process.
///
/// Every variant names the process it is about, returned by [`ProcEvent::pid`]. Per stream the
/// crate guarantees (see the crate docs for the full list):
///
/// * `Child(C)` comes before any other event about `C`;
/// * `Fork` and `Exec` about one pid come in program order, `Exit` is its last event;
/// * `Child` and `Exit` of one pid are two events, never merged.
///
/// `Fork` and `Exec` carry a `count`: when a consumer falls behind, repeated events of one kind
/// about one pid are folded into one event that says how many happened (memory stays bounded by
/// the number of tracked processes, not by the number of raw events).
///
/// # Examples
///
/// ```
/// use procwatch::ProcEvent;
///
/// fn describe(ev: &ProcEvent) -> String {
///     match ev {
///         ProcEvent::Child { pid, parent, .. } => format!("{pid} born of {parent}"),
///         ProcEvent::Exit { pid, status: Some(s), .. } => format!("{pid} exited: {s}"),
///         other => format!("{other:?}"),
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcEvent {
    /// A tracked process came into being: `pid` is new, `parent` created it (`NOTE_CHILD`; the
    /// kqueue event's data is the parent pid). Only streams with [`Interest::TRACK`] see it.
    ///
    /// [`Interest::TRACK`]: crate::Interest::TRACK
    #[doc(alias = "NOTE_CHILD")]
    #[non_exhaustive]
    Child {
        /// The new process.
        pid: Pid,
        /// The process that created it.
        parent: Pid,
    },
    /// `pid` created a new process `child` (`NOTE_FORK`). With `count > 1`, `pid` forked
    /// `count` times in a row and `child` is the last of them.
    #[doc(alias = "NOTE_FORK")]
    #[non_exhaustive]
    Fork {
        /// The process that forked.
        pid: Pid,
        /// The process it created (the last one when `count > 1`).
        child: Pid,
        /// How many forks this event stands for (at least 1).
        count: u32,
    },
    /// `pid` replaced its program image with `execve(2)` (`NOTE_EXEC`). With `count > 1`, it did
    /// so `count` times in a row.
    #[doc(alias = "NOTE_EXEC")]
    #[non_exhaustive]
    Exec {
        /// The process that executed a new program.
        pid: Pid,
        /// How many execs this event stands for (at least 1).
        count: u32,
    },
    /// The whole process is gone (its last thread exited) (`NOTE_EXIT`). This is the last event
    /// about `pid` on this stream.
    ///
    /// `status` is what `waitpid(2)` would report. It is `None` only where the crate cannot
    /// know it: for a process that died while events were lost (see [`ProcEvent::Lost`]) and
    /// was already reaped when the crate looked.
    #[doc(alias = "NOTE_EXIT")]
    #[non_exhaustive]
    Exit {
        /// The process that exited.
        pid: Pid,
        /// Its exit status, where known.
        status: Option<ExitStatus>,
    },
    /// A new child of `pid` could not be followed (`NOTE_TRACKERR`); `reason` says why. With
    /// `count > 1`, that many children in a row were not followed; `child` is the last.
    #[doc(alias = "NOTE_TRACKERR")]
    #[non_exhaustive]
    TrackErr {
        /// The tracked parent.
        pid: Pid,
        /// The child that is not followed (the last one when `count > 1`).
        child: Pid,
        /// Why it is not followed.
        reason: TrackErrReason,
        /// How many children this event stands for (at least 1).
        count: u32,
    },
    /// The backend lost kernel messages (for netlink: the socket overflowed with `ENOBUFS`).
    /// What the crate learned by rescanning `/proc` follows as ordinary events: `Exit` (status
    /// `None` unless still readable) for tracked processes that died in the gap, `Child` for
    /// live children that appeared in it. `pid` is the pid the stream was created for.
    #[non_exhaustive]
    Lost {
        /// The pid the stream was created for.
        pid: Pid,
        /// How many losses the backend saw since the last `Lost` event on this stream.
        count: u32,
    },
}

impl ProcEvent {
    /// The process the event is about (for `Lost`: the pid the stream was created for).
    pub fn pid(&self) -> Pid {
        match *self {
            ProcEvent::Child { pid, .. }
            | ProcEvent::Fork { pid, .. }
            | ProcEvent::Exec { pid, .. }
            | ProcEvent::Exit { pid, .. }
            | ProcEvent::TrackErr { pid, .. }
            | ProcEvent::Lost { pid, .. } => pid,
        }
    }
}

/// Why a child could not be followed ([`ProcEvent::TrackErr`]).
#[derive(Debug, Copy, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrackErrReason {
    /// The stream already tracks as many processes as its limit allows
    /// ([`Builder::max_tracked`](crate::Builder::max_tracked)).
    Limit,
    /// The backend has no right to follow that process.
    Permission,
    /// The backend ran out of a resource (memory, file descriptors) while attaching it.
    Resources,
}

impl std::fmt::Display for TrackErrReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrackErrReason::Limit => "tracked-process limit reached",
            TrackErrReason::Permission => "permission denied",
            TrackErrReason::Resources => "out of resources",
        })
    }
}
