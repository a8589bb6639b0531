//! Signal numbers, for killing and stopping trees.

use std::fmt;

/// A signal, as [`Tree::kill`](crate::Tree::kill) and
/// [`Tree::shutdown_with`](crate::Tree::shutdown_with) send it.
///
/// The constants name the signals a supervisor usually sends; [`Signal::from_raw`] takes any
/// number the kernel accepts (1 to 64, real-time signals included).
///
/// # Examples
///
/// ```
/// use procwatch::Signal;
///
/// assert_eq!(Signal::TERM.as_raw(), 15);
/// assert_eq!(Signal::from_raw(9), Some(Signal::KILL));
/// assert_eq!(Signal::KILL.to_string(), "SIGKILL");
/// assert_eq!(Signal::from_raw(0), None);
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(i32);

const NAMES: [(i32, &str); 31] = [
    (1, "SIGHUP"),
    (2, "SIGINT"),
    (3, "SIGQUIT"),
    (4, "SIGILL"),
    (5, "SIGTRAP"),
    (6, "SIGABRT"),
    (7, "SIGBUS"),
    (8, "SIGFPE"),
    (9, "SIGKILL"),
    (10, "SIGUSR1"),
    (11, "SIGSEGV"),
    (12, "SIGUSR2"),
    (13, "SIGPIPE"),
    (14, "SIGALRM"),
    (15, "SIGTERM"),
    (16, "SIGSTKFLT"),
    (17, "SIGCHLD"),
    (18, "SIGCONT"),
    (19, "SIGSTOP"),
    (20, "SIGTSTP"),
    (21, "SIGTTIN"),
    (22, "SIGTTOU"),
    (23, "SIGURG"),
    (24, "SIGXCPU"),
    (25, "SIGXFSZ"),
    (26, "SIGVTALRM"),
    (27, "SIGPROF"),
    (28, "SIGWINCH"),
    (29, "SIGIO"),
    (30, "SIGPWR"),
    (31, "SIGSYS"),
];

impl Signal {
    /// `SIGHUP` (1).
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// `SIGINT` (2).
    pub const INT: Signal = Signal(libc::SIGINT);
    /// `SIGQUIT` (3).
    pub const QUIT: Signal = Signal(libc::SIGQUIT);
    /// `SIGKILL` (9).
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// `SIGUSR1` (10).
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// `SIGUSR2` (12).
    pub const USR2: Signal = Signal(libc::SIGUSR2);
    /// `SIGTERM` (15).
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// `SIGCHLD` (17).
    pub const CHLD: Signal = Signal(libc::SIGCHLD);
    /// `SIGCONT` (18).
    pub const CONT: Signal = Signal(libc::SIGCONT);
    /// `SIGSTOP` (19).
    pub const STOP: Signal = Signal(libc::SIGSTOP);
    /// `SIGTSTP` (20).
    pub const TSTP: Signal = Signal(libc::SIGTSTP);
    /// `SIGWINCH` (28).
    pub const WINCH: Signal = Signal(libc::SIGWINCH);

    /// The signal with this number, if the kernel has one (1 to 64).
    pub const fn from_raw(number: i32) -> Option<Signal> {
        if number >= 1 && number <= 64 {
            Some(Signal(number))
        } else {
            None
        }
    }

    /// Its number.
    pub const fn as_raw(self) -> i32 {
        self.0
    }

    /// Its name (`"SIGTERM"`), for the 31 classic signals; `None` for real-time ones.
    pub fn name(self) -> Option<&'static str> {
        NAMES.iter().find(|(n, _)| *n == self.0).map(|(_, s)| *s)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "signal {}", self.0),
        }
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
