//! Process identifiers.

use std::fmt;
use std::num::NonZeroI32;

/// A process id (a thread-group id in Linux terms): always a positive number.
///
/// `Pid` is what every [`ProcEvent`](crate::ProcEvent) names. It is a plain number: after a
/// process is gone and reaped the kernel may hand the same number to a new, unrelated process.
/// A [`ProcEvents`](crate::ProcEvents) stream never mixes the two: once it delivered `Exit` for a
/// pid, nothing more about that number reaches it.
///
/// # Examples
///
/// ```
/// use procwatch::Pid;
///
/// let pid = Pid::from_raw(1).unwrap();
/// assert_eq!(pid.as_raw(), 1);
/// assert_eq!(pid.to_string(), "1");
/// assert!(Pid::from_raw(0).is_none());
/// assert!(Pid::from_raw(-5).is_none());
/// ```
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(NonZeroI32);

impl Pid {
    /// Wraps a raw pid. Returns `None` for 0 and negative numbers, which name no single process.
    pub const fn from_raw(raw: i32) -> Option<Pid> {
        if raw > 0 {
            match NonZeroI32::new(raw) {
                Some(v) => Some(Pid(v)),
                None => None,
            }
        } else {
            None
        }
    }

    /// The raw number, as the kernel and `/proc` spell it.
    pub const fn as_raw(self) -> i32 {
        self.0.get()
    }

    pub(crate) fn to_rustix(self) -> rustix::process::Pid {
        rustix::process::Pid::from_raw(self.as_raw()).expect("a Pid is positive")
    }

    /// The calling process's own pid (`getpid(2)`).
    pub fn this() -> Pid {
        Pid::from_raw(rustix::process::getpid().as_raw_nonzero().get())
            .expect("getpid returns a positive number")
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pid({})", self.0)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<Pid> for i32 {
    fn from(pid: Pid) -> i32 {
        pid.as_raw()
    }
}

impl From<Pid> for u32 {
    fn from(pid: Pid) -> u32 {
        pid.as_raw() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_positive() {
        assert!(Pid::from_raw(0).is_none());
        assert!(Pid::from_raw(-1).is_none());
        assert!(Pid::from_raw(i32::MIN).is_none());
        assert_eq!(Pid::from_raw(i32::MAX).unwrap().as_raw(), i32::MAX);
    }

    #[test]
    fn formats() {
        let p = Pid::from_raw(42).unwrap();
        assert_eq!(format!("{p}"), "42");
        assert_eq!(format!("{p:?}"), "Pid(42)");
        assert_eq!(Pid::this().as_raw() as u32, std::process::id());
    }
}
