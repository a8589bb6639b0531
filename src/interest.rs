//! What a stream wants to hear about.

use std::fmt;
use std::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, Not, Sub, SubAssign};

/// The set of events a [`ProcEvents`](crate::ProcEvents) stream asks for, as bit flags
/// (kqueue's `fflags` for `EVFILT_PROC`).
///
/// Combine flags with `|`. [`Interest::TRACK`] is what makes a stream follow descendants: each
/// new process created by a tracked process becomes tracked too, with the same interest, and
/// is announced by a [`ProcEvent::Child`](crate::ProcEvent::Child).
///
/// # Examples
///
/// ```
/// use procwatch::Interest;
///
/// let all = Interest::FORK | Interest::EXEC | Interest::EXIT | Interest::TRACK;
/// assert_eq!(all, Interest::ALL);
/// assert!(all.contains(Interest::EXIT));
/// assert!(!(all - Interest::TRACK).contains(Interest::TRACK));
/// assert_eq!(!Interest::TRACK, Interest::FORK | Interest::EXEC | Interest::EXIT);
/// assert_eq!(format!("{:?}", Interest::FORK | Interest::EXIT), "FORK | EXIT");
/// assert_eq!(format!("{:?}", Interest::EXEC | Interest::ARGV), "EXEC | ARGV");
/// assert!(!Interest::ALL.contains(Interest::ARGV));
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Hash, Default)]
pub struct Interest(u8);

impl Interest {
    /// `Fork` events: a watched process created a new process (`NOTE_FORK`).
    #[doc(alias = "NOTE_FORK")]
    pub const FORK: Interest = Interest(1);
    /// `Exec` events: a watched process replaced its program image (`NOTE_EXEC`).
    #[doc(alias = "NOTE_EXEC")]
    pub const EXEC: Interest = Interest(2);
    /// `Exit` events: a watched process is gone, with its status (`NOTE_EXIT`).
    #[doc(alias = "NOTE_EXIT")]
    pub const EXIT: Interest = Interest(4);
    /// Follow every process a watched process creates, announcing each with `Child`
    /// (`NOTE_TRACK` / `NOTE_CHILD`); a child that cannot be followed yields `TrackErr`.
    #[doc(alias = "NOTE_TRACK")]
    pub const TRACK: Interest = Interest(8);
    /// `FORK | EXEC | EXIT | TRACK`: every event. (Not [`Interest::HOLD`], which changes how
    /// the watched processes run, nor [`Interest::ARGV`], which costs a `/proc` read per
    /// exec.)
    pub const ALL: Interest = Interest(15);
    /// Keep a process stopped at each `Child` and `Exec` event this stream delivers, until
    /// the stream's consumer polls for its next event (or drops the stream): the supervisor
    /// sees a new process, or a new program, before it runs a single instruction. Only the
    /// Ptrace backend can; a watch with `HOLD` on another fails with
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) (and
    /// [`ProcEvents::set_interest`](crate::ProcEvents::set_interest) ignores it there). See
    /// the crate docs, "Held events", for the deadlock to avoid.
    pub const HOLD: Interest = Interest(16);
    /// Make each [`ProcEvent::Exec`](crate::ProcEvent::Exec) carry the new program's command
    /// line ([`Argv`](crate::Argv)), read by the backend as soon as it hears of the exec: by
    /// the Ptrace backend while the process is stopped at its exec, so it is always there;
    /// by the Netlink backend before anything is queued, either on its drain path or, often
    /// first, by a thread of its own woken by the exec alone
    /// ([`NetlinkOptions::argv_priority`](crate::NetlinkOptions::argv_priority)), so a
    /// process that is already gone by then (it exited within a fraction of a millisecond
    /// while every core was busy) has none.
    ///
    /// It costs one read of `/proc/<pid>/cmdline` per exec of a followed process while some
    /// stream asks for it (none otherwise), so [`Interest::ALL`] does not include it. The
    /// Netlink backend's thread also reads it for execs of processes it does not know yet
    /// (a child whose fork it has not applied, or one that no stream follows), so on a host
    /// busy with other programs it reads more than its streams get. It only matters
    /// together with [`Interest::EXEC`].
    pub const ARGV: Interest = Interest(32);

    const NAMES: [(Interest, &'static str); 6] = [
        (Interest::FORK, "FORK"),
        (Interest::EXEC, "EXEC"),
        (Interest::EXIT, "EXIT"),
        (Interest::TRACK, "TRACK"),
        (Interest::HOLD, "HOLD"),
        (Interest::ARGV, "ARGV"),
    ];

    /// No flags at all.
    pub const fn empty() -> Interest {
        Interest(0)
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Interest) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags of both, like `self | other`, usable in a `const`.
    ///
    /// ```
    /// use procwatch::Interest;
    ///
    /// const WANTED: Interest = Interest::ALL.union(Interest::ARGV);
    /// assert_eq!(WANTED, Interest::ALL | Interest::ARGV);
    /// ```
    pub const fn union(self, other: Interest) -> Interest {
        Interest(self.0 | other.0)
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `self` and `other` have a flag in common.
    pub const fn intersects(self, other: Interest) -> bool {
        self.0 & other.0 != 0
    }

    /// The raw bits, for logging or storage.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The interest with these raw bits (as [`Interest::bits`] gave them), or `None` if a bit
    /// names no flag.
    ///
    /// ```
    /// use procwatch::Interest;
    ///
    /// let stored = (Interest::EXIT | Interest::TRACK).bits();
    /// assert_eq!(Interest::from_bits(stored), Some(Interest::EXIT | Interest::TRACK));
    /// assert_eq!(Interest::from_bits(0x80), None);
    /// ```
    pub const fn from_bits(bits: u8) -> Option<Interest> {
        if bits & !(Interest::ALL.0 | Interest::HOLD.0 | Interest::ARGV.0) == 0 {
            Some(Interest(bits))
        } else {
            None
        }
    }
}

impl BitAndAssign for Interest {
    fn bitand_assign(&mut self, rhs: Interest) {
        self.0 &= rhs.0;
    }
}

impl SubAssign for Interest {
    fn sub_assign(&mut self, rhs: Interest) {
        self.0 &= !rhs.0;
    }
}

/// The flags of [`Interest::ALL`] that are not set ([`Interest::HOLD`] and
/// [`Interest::ARGV`] are never in the result).
impl Not for Interest {
    type Output = Interest;
    fn not(self) -> Interest {
        Interest(!self.0 & Interest::ALL.0)
    }
}

impl BitOr for Interest {
    type Output = Interest;
    fn bitor(self, rhs: Interest) -> Interest {
        Interest(self.0 | rhs.0)
    }
}

impl BitOrAssign for Interest {
    fn bitor_assign(&mut self, rhs: Interest) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Interest {
    type Output = Interest;
    fn bitand(self, rhs: Interest) -> Interest {
        Interest(self.0 & rhs.0)
    }
}

impl Sub for Interest {
    type Output = Interest;
    fn sub(self, rhs: Interest) -> Interest {
        Interest(self.0 & !rhs.0)
    }
}

impl fmt::Debug for Interest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(empty)");
        }
        let mut first = true;
        for (flag, name) in Interest::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}
