//! A cgroup v2 of a tree's own, where the program may create one.
//!
//! `spawn_tree` creates `procwatch-tree-<pid>-<n>` below this program's own cgroup v2 (from
//! `/proc/self/cgroup`, under the `cgroup2` mount `/proc/self/mountinfo` names) and moves the
//! held child into it before it runs its program, so that every descendant starts inside.
//! That needs write access to the program's cgroup: root on a host, or a delegated subtree
//! (systemd's `Delegate=yes`, a container runtime's cgroup namespace). Where it fails, the
//! tree has no cgroup and says so ([`Mechanism::cgroup`](crate::Mechanism::cgroup)).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a dropped cgroup still in use is waited for, to be removed once empty.
const LINGER: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub(crate) struct Cgroup {
    path: PathBuf,
}

/// Where the unified (v2) hierarchy is mounted, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|line| {
        // "... mount_point options - fstype source super_options"
        let (left, right) = line.split_once(" - ")?;
        if right.split_ascii_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_ascii_whitespace().nth(4).map(unescape)
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let b = field.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from(
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

/// This program's cgroup v2 path, relative to the hierarchy's root.
fn own_cgroup() -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_start_matches('/').to_owned())
}

impl Cgroup {
    /// Creates a new, empty cgroup for a tree; `None` (with the reason logged) where this
    /// program may not.
    pub(crate) fn create() -> Option<Cgroup> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let mount = cgroup2_mount()?;
        let own = own_cgroup()?;
        // Deleted cgroups show as "/path (deleted)": nothing can be created below those.
        if own.ends_with(" (deleted)") {
            return None;
        }
        let name = format!(
            "procwatch-tree-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = mount.join(own).join(name);
        match fs::create_dir(&path) {
            Ok(()) => Some(Cgroup { path }),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "no cgroup of its own for the tree");
                None
            }
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(self.path.join(file))?;
        f.write_all(value.as_bytes())
    }

    /// Moves process `pid` (with its threads) into the cgroup.
    pub(crate) fn add(&self, pid: i32) -> io::Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// `SIGKILL` to every process in the cgroup and its descendants, at once (Linux 5.14+).
    pub(crate) fn kill(&self) -> io::Result<()> {
        self.write("cgroup.kill", "1")
    }

    /// Freezes (or thaws) the cgroup, and waits up to `wait` for the kernel to say it is
    /// frozen. A frozen process cannot fork; a fatal signal still kills it.
    pub(crate) fn freeze(&self, on: bool, wait: Duration) -> io::Result<bool> {
        self.write("cgroup.freeze", if on { "1" } else { "0" })?;
        let until = Instant::now() + wait;
        loop {
            let events = fs::read_to_string(self.path.join("cgroup.events"))?;
            let frozen = events.lines().any(|l| l == "frozen 1");
            if frozen == on || Instant::now() >= until {
                return Ok(frozen == on);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether any process is in the cgroup (or below it).
    pub(crate) fn populated(&self) -> bool {
        fs::read_to_string(self.path.join("cgroup.events"))
            .map(|e| e.lines().any(|l| l == "populated 1"))
            .unwrap_or(false)
    }

    /// Removes the cgroup, which must be empty; `false` if it could not be (still in use).
    pub(crate) fn remove(&self) -> bool {
        self.path.as_os_str().is_empty()
            || fs::remove_dir(&self.path).is_ok()
            || !self.path.exists()
    }
}

impl Drop for Cgroup {
    /// Removes the cgroup if it is empty by now; one still in use stays (the kernel refuses),
    /// and is logged.
    fn drop(&mut self) {
        if self.remove() {
            return;
        }
        // Members may still be exiting (a tree dropped with `kill_on_drop`): a thread waits a
        // while for the cgroup to empty.
        let path = std::mem::take(&mut self.path);
        let waited = std::thread::Builder::new()
            .name("procwatch-cgroup".into())
            .spawn(move || {
                let cg = Cgroup { path };
                let until = Instant::now() + LINGER;
                while Instant::now() < until {
                    if !cg.populated() && cg.remove() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                if cg.path.exists() {
                    tracing::debug!(path = %cg.path.display(), "the tree's cgroup is still in use; left in place");
                }
                // Its own drop must not wait again.
                std::mem::forget(cg);
            });
        if let Err(e) = waited {
            tracing::debug!(error = %e, "cannot wait for the tree's cgroup to empty");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/sys/fs/cgroup"), PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(unescape("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape("/a\\04"), PathBuf::from("/a\\04"));
    }
}
