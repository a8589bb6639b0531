//! The events a stream yields.

use crate::Pid;
use std::fmt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// When the kernel reported an event: nanoseconds of `CLOCK_MONOTONIC`, the clock of
/// [`std::time::Instant`] on Linux and of the proc connector's own timestamps.
///
/// For a folded event (`count > 1`) it is the time of the latest one. For what a resync after
/// a loss learned, it is the time of the resync. [`Timestamp::UNKNOWN`] (0) stands for "not
/// known".
///
/// # Examples
///
/// ```
/// use procwatch::Timestamp;
///
/// let then = Timestamp::now();
/// let later = Timestamp::now();
/// assert!(later >= then);
/// assert!(then.elapsed() < std::time::Duration::from_secs(60));
/// ```
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// No time known.
    pub const UNKNOWN: Timestamp = Timestamp(0);

    /// A timestamp from `CLOCK_MONOTONIC` nanoseconds.
    pub const fn from_nanos(nanos: u64) -> Timestamp {
        Timestamp(nanos)
    }

    /// `CLOCK_MONOTONIC` nanoseconds (0 if unknown).
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Whether the time is known.
    pub const fn is_known(self) -> bool {
        self.0 != 0
    }

    /// The current time on the same clock.
    pub fn now() -> Timestamp {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        Timestamp((t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64)
    }

    /// How long ago this was (zero if unknown or in the future).
    pub fn elapsed(self) -> Duration {
        if !self.is_known() {
            return Duration::ZERO;
        }
        Duration::from_nanos(Timestamp::now().0.saturating_sub(self.0))
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later or either is unknown).
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        if !self.is_known() || !earlier.is_known() {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// The same moment as an [`Instant`], for use with tokio and std timers; `None` if unknown.
    pub fn to_instant(self) -> Option<Instant> {
        if !self.is_known() {
            return None;
        }
        Instant::now().checked_sub(self.elapsed())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_known() {
            write!(
                f,
                "Timestamp({}.{:09})",
                self.0 / 1_000_000_000,
                self.0 % 1_000_000_000
            )
        } else {
            f.write_str("Timestamp(unknown)")
        }
    }
}

/// A process's command line as the kernel shows it in `/proc/<pid>/cmdline`: the arguments
/// of its `execve(2)`, raw bytes, each ended by a NUL. Carried by [`ProcEvent::Exec`] on
/// streams that ask for [`Interest::ARGV`](crate::Interest::ARGV).
///
/// Cloning is cheap (one reference count): every stream that gets the same exec shares one
/// copy. At most [`Argv::MAX_BYTES`] bytes are kept; a longer command line is cut there
/// ([`Argv::is_truncated`]), its last argument possibly in the middle.
///
/// The bytes are what the process's memory holds at the read: a program that rewrites its
/// arguments (`setproctitle`) before the read shows the rewritten text, and a process may
/// have been started with no arguments at all (then [`Argv::is_empty`]).
///
/// # Examples
///
/// ```
/// use procwatch::Argv;
/// use std::ffi::OsStr;
///
/// let argv = Argv::from_bytes(b"printf\0%d\0two words\0");
/// assert_eq!(argv.len(), 3);
/// assert_eq!(argv.get(2), Some(OsStr::new("two words")));
/// assert_eq!(argv.program(), Some(OsStr::new("printf")));
/// assert_eq!(argv.to_string(), "printf %d 'two words'");
/// assert!(!argv.is_truncated());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Argv {
    /// The command line, each argument followed by a NUL, then one byte: 1 if it was cut at
    /// [`Argv::MAX_BYTES`], else 0: one allocation per command line.
    bytes: std::sync::Arc<[u8]>,
}

impl Argv {
    /// The most command-line bytes kept per exec (64 KiB, the final NUL included). A command
    /// line is at most about
    /// a quarter of the stack limit (2 MiB with the common 8 MiB); one that long is cut here,
    /// so that a stalled stream's pending execs stay small.
    pub const MAX_BYTES: usize = 64 * 1024;

    /// An `Argv` from the raw bytes of `/proc/<pid>/cmdline` (NUL-separated arguments; a
    /// missing final NUL is supplied), cut at [`Argv::MAX_BYTES`].
    pub fn from_bytes(raw: &[u8]) -> Argv {
        Argv::from_read(raw, false)
    }

    /// An `Argv` of these arguments (an argument with a NUL byte ends at it, as in
    /// `execve`).
    ///
    /// ```
    /// use procwatch::Argv;
    ///
    /// let argv = Argv::from_args(["sh", "-c", "echo hi"]);
    /// assert_eq!(argv.as_bytes(), b"sh\0-c\0echo hi\0");
    /// ```
    pub fn from_args<I, S>(args: I) -> Argv
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::os::unix::ffi::OsStrExt;
        let mut raw = Vec::new();
        for a in args {
            let a = a.as_ref().as_bytes();
            let end = a.iter().position(|&b| b == 0).unwrap_or(a.len());
            raw.extend_from_slice(&a[..end]);
            raw.push(0);
        }
        Argv::from_bytes(&raw)
    }

    /// What a read of `/proc/<pid>/cmdline` gave; `more` says the file went on past it.
    pub(crate) fn from_read(raw: &[u8], more: bool) -> Argv {
        let mut cut = more || raw.len() > Argv::MAX_BYTES;
        let mut raw = &raw[..raw.len().min(Argv::MAX_BYTES)];
        if raw.len() == Argv::MAX_BYTES && raw.last() != Some(&0) {
            // Room for the final NUL.
            raw = &raw[..Argv::MAX_BYTES - 1];
            cut = true;
        }
        let mut v = Vec::with_capacity(raw.len() + 2);
        v.extend_from_slice(raw);
        if v.last().is_some_and(|&b| b != 0) {
            v.push(0);
        }
        v.push(u8::from(cut));
        Argv { bytes: v.into() }
    }

    /// The raw command line: each argument followed by a NUL byte (empty if there are no
    /// arguments).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.bytes.len() - 1]
    }

    /// Whether the command line was longer than [`Argv::MAX_BYTES`] and was cut.
    pub fn is_truncated(&self) -> bool {
        self.bytes[self.bytes.len() - 1] != 0
    }

    /// The arguments, `argv[0]` first.
    pub fn iter(&self) -> ArgvIter<'_> {
        ArgvIter {
            rest: self.as_bytes(),
        }
    }

    /// How many arguments there are.
    pub fn len(&self) -> usize {
        self.as_bytes().iter().filter(|&&b| b == 0).count()
    }

    /// Whether there are no arguments (a program started with an empty `argv`).
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// Argument `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&std::ffi::OsStr> {
        self.iter().nth(i)
    }

    /// `argv[0]`, usually the program's name or path.
    pub fn program(&self) -> Option<&std::ffi::OsStr> {
        self.get(0)
    }

    /// The arguments as owned strings.
    pub fn to_vec(&self) -> Vec<std::ffi::OsString> {
        self.iter().map(|a| a.to_os_string()).collect()
    }
}

impl fmt::Debug for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        for a in self.iter() {
            l.entry(&a);
        }
        if self.is_truncated() {
            l.entry(&format_args!(".."));
        }
        l.finish()
    }
}

/// The arguments separated by spaces, each quoted for a POSIX shell where it needs to be
/// (bytes that are not UTF-8 are shown as U+FFFD), and `...` after a cut command line.
impl fmt::Display for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let a = a.to_string_lossy();
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+%@".contains(&b) || b >= 0x80);
            if plain {
                f.write_str(&a)?;
            } else {
                write!(f, "'{}'", a.replace('\'', "'\\''"))?;
            }
        }
        if self.is_truncated() {
            f.write_str(" ...")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a Argv {
    type Item = &'a std::ffi::OsStr;
    type IntoIter = ArgvIter<'a>;
    fn into_iter(self) -> ArgvIter<'a> {
        self.iter()
    }
}

/// The arguments of an [`Argv`] ([`Argv::iter`]).
#[derive(Debug, Clone)]
pub struct ArgvIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ArgvIter<'a> {
    type Item = &'a std::ffi::OsStr;
    fn next(&mut self) -> Option<&'a std::ffi::OsStr> {
        use std::os::unix::ffi::OsStrExt;
        if self.rest.is_empty() {
            return None;
        }
        let end = self.rest.iter().position(|&b| b == 0)?;
        let arg = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        Some(std::ffi::OsStr::from_bytes(arg))
    }
}

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
/// the number of tracked processes, not by the number of raw events). Up to four such runs of
/// different kinds keep their order; beyond that, older runs are merged by kind, so the counts
/// stay exact but the interleaving of forks and execs is lost.
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
    /// A tracked process came into being: `pid` is new, `parent` is its parent
    /// (`NOTE_CHILD`; the kqueue event's data is the parent pid). Only streams with
    /// [`Interest::TRACK`] see it.
    ///
    /// `parent` is the parent the kernel gave the new process, which is the process that
    /// created it except for `clone(CLONE_PARENT)`: then the kernel makes it a child of its
    /// creator's parent, and the `Netlink` backend names that process (it is never told the
    /// creator; see the crate docs' backend table).
    ///
    /// [`Interest::TRACK`]: crate::Interest::TRACK
    #[doc(alias = "NOTE_CHILD")]
    #[non_exhaustive]
    Child {
        /// The new process.
        pid: Pid,
        /// Its parent as the kernel records it (the creator, or for a `CLONE_PARENT` child
        /// under `Netlink`, the creator's parent).
        parent: Pid,
        /// When it was created.
        at: Timestamp,
    },
    /// `pid` created a new process `child` (`NOTE_FORK`). With `count > 1`, `pid` forked
    /// `count` times in a row and `child` is the last of them. As for [`ProcEvent::Child`],
    /// `pid` is the child's parent as the kernel records it: for a `CLONE_PARENT` child under
    /// `Netlink`, the creator's parent rather than the creator.
    #[doc(alias = "NOTE_FORK")]
    #[non_exhaustive]
    Fork {
        /// The process that forked.
        pid: Pid,
        /// The process it created (the last one when `count > 1`).
        child: Pid,
        /// How many forks this event stands for (at least 1).
        count: u32,
        /// When the (last) fork happened.
        at: Timestamp,
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
        /// When the (last) exec happened.
        at: Timestamp,
        /// The new program's command line, read right after the exec, on a stream with
        /// [`Interest::ARGV`](crate::Interest::ARGV); for `count > 1`, the latest exec's.
        ///
        /// `None` on a stream without `ARGV`, and where the backend could not read it:
        ///
        /// * with the Netlink backend, a process that had already exited (or become a
        ///   zombie, whose command line the kernel no longer shows) when the backend read
        ///   it, a moment after the exec message arrived; and a process that executed again
        ///   before that read while the later exec's message was already in (so the text
        ///   cannot be told to belong to this exec rather than the next). The Netlink
        ///   backend reads after the fact: it cannot tell an empty `argv` from a zombie, and
        ///   gives `None` for both. The Ptrace backend reads while the process is stopped at
        ///   its exec, so it always has it;
        /// * when a stream fell behind and one process executed more than once with other
        ///   events between (so the execs were not folded into one event): a stream keeps
        ///   one command line per process, so only the latest of those `Exec` events has it;
        /// * on a stream that added `ARGV` with
        ///   [`ProcEvents::set_interest`](crate::ProcEvents::set_interest), for execs the
        ///   backend saw before that.
        argv: Option<Argv>,
    },
    /// The whole process is gone (its last thread exited) (`NOTE_EXIT`). This is the last event
    /// about `pid` on this stream.
    ///
    /// `status` is what `waitpid(2)` would report. It is `None` only where the crate cannot
    /// know it: for a process that died while events were lost (see [`ProcEvent::Lost`]) and
    /// was already reaped when the crate looked, or whose pid already named a newer process
    /// when the crate learned of its end; and for a zombie found in `/proc` (by `watch` or a
    /// resync) whose status the kernel does not show this process — another user's, read
    /// without `CAP_SYS_PTRACE`.
    #[doc(alias = "NOTE_EXIT")]
    #[non_exhaustive]
    Exit {
        /// The process that exited.
        pid: Pid,
        /// Its exit status, where known.
        status: Option<ExitStatus>,
        /// When its last thread exited.
        at: Timestamp,
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
        /// When the (last) child was created.
        at: Timestamp,
    },
    /// The backend lost kernel messages (for netlink: the socket overflowed with `ENOBUFS`,
    /// or a tracked process is gone from `/proc` though its exit message never came).
    /// What the crate learned by rescanning `/proc` follows as ordinary events: `Exit` (status
    /// `None` unless still readable) for tracked processes that died in the gap, `Child` for
    /// live children that appeared in it. `pid` is the pid the stream was created for.
    #[non_exhaustive]
    Lost {
        /// The pid the stream was created for.
        pid: Pid,
        /// How many losses the backend saw since the last `Lost` event on this stream.
        count: u32,
        /// When the (last) loss was noticed.
        at: Timestamp,
    },
}

impl ProcEvent {
    /// When it happened (see [`Timestamp`]).
    pub fn at(&self) -> Timestamp {
        match *self {
            ProcEvent::Child { at, .. }
            | ProcEvent::Fork { at, .. }
            | ProcEvent::Exec { at, .. }
            | ProcEvent::Exit { at, .. }
            | ProcEvent::TrackErr { at, .. }
            | ProcEvent::Lost { at, .. } => at,
        }
    }

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
