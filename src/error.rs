//! The crate's error type.

use crate::{BackendKind, Pid};
use std::fmt;
use std::io;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Copy, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The pid names no process (never existed, already reaped, above `pid_max`), or names a
    /// zombie and the caller did not ask for [`Interest::EXIT`](crate::Interest::EXIT).
    NoSuchProcess,
    /// The backend needs a privilege the caller lacks (for netlink: `CAP_NET_ADMIN`).
    PermissionDenied,
    /// The backend does not work here (not built for this OS, or the kernel ignores it, as the
    /// proc connector does for a listener outside the initial namespaces).
    Unsupported,
    /// The watcher is shut down: its backend stopped and it takes no new watches.
    Closed,
    /// An argument is out of range (an empty interest, a zero limit).
    InvalidInput,
    /// Any other operating-system error; [`Error::raw_os_error`] has the number.
    ///
    /// Running out of file descriptors is one: `EMFILE` when this process reached its
    /// `RLIMIT_NOFILE`, `ENFILE` when the whole system is out of open files. The crate needs
    /// descriptors to create a watcher (a netlink socket, an eventfd), to attach a stream (it
    /// reads `/proc/<pid>`) and to spawn (pipes, an eventfd, a pidfd); streams that already
    /// exist keep receiving events without any. The error's text then says what to do.
    Other,
}

/// An error from procwatch: what failed, on which pid and backend, and why.
///
/// Expected races are not errors: a process that exits while the crate is attaching to it
/// shows up as an `Exit` event, not as a failure.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use procwatch::{ErrorKind, Interest, Pid, ProcWatcher};
///
/// let watcher = ProcWatcher::new()?;
/// let pid = Pid::from_raw(4_000_000).unwrap(); // above any pid_max
/// let err = watcher.watch(pid, Interest::EXIT).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::NoSuchProcess);
/// println!("{err}"); // "watch pid 4000000 (netlink backend): no such process ..."
/// # Ok(()) }
/// ```
pub struct Error {
    kind: ErrorKind,
    op: &'static str,
    pid: Option<Pid>,
    backend: Option<BackendKind>,
    detail: Option<String>,
    source: Option<io::Error>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, op: &'static str) -> Error {
        Error {
            kind,
            op,
            pid: None,
            backend: None,
            detail: None,
            source: None,
        }
    }

    pub(crate) fn io(op: &'static str, err: io::Error) -> Error {
        let kind = match err.kind() {
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            io::ErrorKind::NotFound => ErrorKind::NoSuchProcess,
            io::ErrorKind::Unsupported => ErrorKind::Unsupported,
            _ => match err.raw_os_error() {
                Some(libc::ESRCH) => ErrorKind::NoSuchProcess,
                Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::PermissionDenied,
                Some(libc::EPROTONOSUPPORT) | Some(libc::EAFNOSUPPORT) | Some(libc::ENOSYS) => {
                    ErrorKind::Unsupported
                }
                _ => ErrorKind::Other,
            },
        };
        Error::new(kind, op).with_source(err)
    }

    pub(crate) fn with_pid(mut self, pid: Pid) -> Error {
        self.pid = Some(pid);
        self
    }

    pub(crate) fn with_backend(mut self, backend: BackendKind) -> Error {
        self.backend = Some(backend);
        self
    }

    /// Adds a detail; a detail already there is kept, and the new one follows it.
    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Error {
        let detail = detail.into();
        self.detail = Some(match self.detail.take() {
            Some(old) => format!("{old}; {detail}"),
            None => detail,
        });
        self
    }

    pub(crate) fn with_source(mut self, source: io::Error) -> Error {
        self.source = Some(source);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The pid the failed operation was about, if any.
    pub fn pid(&self) -> Option<Pid> {
        self.pid
    }

    /// The backend that failed, if the failure came from one.
    pub fn backend(&self) -> Option<BackendKind> {
        self.backend
    }

    /// The operation that failed, e.g. `"watch"` or `"netlink listen"`.
    pub fn operation(&self) -> &'static str {
        self.op
    }

    /// The OS error number behind this error, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.as_ref().and_then(|e| e.raw_os_error())
    }

    /// What the caller can do about an error whose cause is a limit it controls.
    fn hint(&self) -> Option<&'static str> {
        match self.raw_os_error()? {
            libc::EMFILE => Some(
                "close descriptors the process no longer needs, or raise the limit \
                 (RLIMIT_NOFILE: setrlimit(2), `ulimit -n`, LimitNOFILE= for a systemd service)",
            ),
            libc::ENFILE => {
                Some("close files, or raise the system-wide limit (sysctl fs.file-max)")
            }
            _ => None,
        }
    }

    /// The short description of what went wrong, after the operation.
    fn summary(&self) -> &'static str {
        match self.kind {
            ErrorKind::NoSuchProcess => "no such process",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unsupported => "not supported here",
            ErrorKind::Closed => "the watcher is shut down",
            ErrorKind::InvalidInput => "invalid argument",
            ErrorKind::Other => match self.raw_os_error() {
                Some(libc::EMFILE) => "this process ran out of file descriptors",
                Some(libc::ENFILE) => "the system ran out of open files",
                _ => "operating-system error",
            },
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("op", &self.op);
        if let Some(pid) = self.pid {
            d.field("pid", &pid);
        }
        if let Some(b) = self.backend {
            d.field("backend", &b);
        }
        if let Some(detail) = &self.detail {
            d.field("detail", detail);
        }
        if let Some(src) = &self.source {
            d.field("source", src);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.op)?;
        if let Some(pid) = self.pid {
            write!(f, " pid {pid}")?;
        }
        if let Some(b) = self.backend {
            write!(f, " ({} backend)", b.name())?;
        }
        f.write_str(": ")?;
        f.write_str(self.summary())?;
        if let Some(detail) = &self.detail {
            write!(f, "; {detail}")?;
        }
        if let Some(src) = &self.source {
            write!(f, " ({src})")?;
        }
        if let Some(hint) = self.hint() {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        let kind = match err.kind {
            ErrorKind::NoSuchProcess => io::ErrorKind::NotFound,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::Unsupported => io::ErrorKind::Unsupported,
            ErrorKind::InvalidInput => io::ErrorKind::InvalidInput,
            ErrorKind::Closed => io::ErrorKind::BrokenPipe,
            ErrorKind::Other => match &err.source {
                Some(src) => src.kind(),
                None => io::ErrorKind::Other,
            },
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_pid_backend_and_cause() {
        let err = Error::io("watch", io::Error::from_raw_os_error(libc::ESRCH))
            .with_pid(Pid::from_raw(77).unwrap())
            .with_backend(BackendKind::Netlink);
        assert_eq!(err.kind(), ErrorKind::NoSuchProcess);
        let text = err.to_string();
        assert!(
            text.starts_with("watch pid 77 (netlink backend): no such process"),
            "{text}"
        );
        let io_err: io::Error = err.into();
        assert_eq!(io_err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn running_out_of_descriptors_says_so_and_what_to_do() {
        let err = Error::io("watch", io::Error::from_raw_os_error(libc::EMFILE))
            .with_pid(Pid::from_raw(77).unwrap())
            .with_backend(BackendKind::Netlink)
            .with_detail("cannot read /proc/77");
        assert_eq!(err.kind(), ErrorKind::Other);
        assert_eq!(err.raw_os_error(), Some(libc::EMFILE));
        let text = err.to_string();
        assert!(
            text.starts_with(
                "watch pid 77 (netlink backend): this process ran out of file descriptors; \
                 cannot read /proc/77 ("
            ),
            "{text}"
        );
        assert!(text.contains("RLIMIT_NOFILE"), "{text}");
        assert!(text.contains("raise the limit"), "{text}");

        let err = Error::io("netlink socket", io::Error::from_raw_os_error(libc::ENFILE));
        let text = err.to_string();
        assert!(
            text.starts_with("netlink socket: the system ran out of open files"),
            "{text}"
        );
        assert!(text.contains("fs.file-max"), "{text}");

        // Other errors get no hint.
        let text = Error::io("x", io::Error::from_raw_os_error(libc::EIO)).to_string();
        assert!(!text.contains("RLIMIT"), "{text}");
    }

    #[test]
    fn details_add_up() {
        let err = Error::new(ErrorKind::PermissionDenied, "netlink bind")
            .with_detail("the proc connector needs root or CAP_NET_ADMIN")
            .with_detail("no other backend is available in this version");
        assert_eq!(
            err.to_string(),
            "netlink bind: permission denied; the proc connector needs root or CAP_NET_ADMIN; \
             no other backend is available in this version"
        );
    }

    #[test]
    fn error_is_send_sync() {
        fn check<T: Send + Sync + std::error::Error + 'static>() {}
        check::<Error>();
    }
}
