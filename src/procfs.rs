//! Reading `/proc`: one process when a stream attaches to it, every process after a loss.
//! Not a backend: what any backend (and `watch`) needs to know of a process the kernel has
//! not told it about.
//!
//! Parsing is split from reading so it is tested on fixed text. Field numbers follow
//! `proc_pid_stat(5)`.

use crate::registry::{ProcSnapshot, SystemSnapshot};
use crate::{Argv, Pid, Timestamp};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

/// Reads `/proc/<pid>/cmdline` (`proc_pid_cmdline(5)`) into `buf` (reused between calls),
/// at most [`Argv::MAX_BYTES`] of it: `None` if the process is gone or the read fails.
/// An empty file is a process without arguments, or one whose memory is gone (a zombie): with
/// `empty_is_gone`, the caller cannot tell them apart and gets `None`.
pub(crate) fn read_cmdline(raw: i32, buf: &mut Vec<u8>, empty_is_gone: bool) -> Option<Argv> {
    let more = read_cmdline_bytes(raw, buf)?;
    if buf.is_empty() && empty_is_gone {
        return None;
    }
    Some(Argv::from_read(buf, more))
}

/// Reads `/proc/<pid>/cmdline` into `buf`, one byte past [`Argv::MAX_BYTES`] at most:
/// whether there was more than that, or `None` if it could not be read.
///
/// The kernel fills a read as far as the command line goes, so a read that comes back short
/// is the end: an ordinary command line takes one `read`, not two (the read of an exec's
/// command line is on the path of every event that follows it).
pub(crate) fn read_cmdline_bytes(raw: i32, buf: &mut Vec<u8>) -> Option<bool> {
    use std::io::Read;
    let mut file = fs::File::open(format!("/proc/{raw}/cmdline")).ok()?;
    buf.clear();
    let limit = Argv::MAX_BYTES + 1;
    let mut chunk = 4096;
    while buf.len() < limit {
        let start = buf.len();
        let want = chunk.min(limit - start);
        buf.resize(start + want, 0);
        match file.read(&mut buf[start..]) {
            Ok(n) => {
                buf.truncate(start + n);
                if n < want {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
            Err(_) => return None,
        }
        chunk *= 2;
    }
    Some(buf.len() > Argv::MAX_BYTES)
}

/// The fields of `/proc/<pid>/stat` the crate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    /// Field 3: one of `RSDZTtWXxKPI`.
    pub(crate) state: char,
    /// Field 4.
    pub(crate) ppid: i32,
    /// Field 20.
    pub(crate) num_threads: i64,
    /// Field 22, in clock ticks since boot.
    pub(crate) start_ticks: u64,
    /// Field 52 (Linux 3.5+, readable with ptrace access): the `waitpid` status of a zombie.
    pub(crate) exit_code: Option<i32>,
}

/// Parses the text of `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the *last* `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `f[0]` is field 3.
    let field = |n: usize| f.get(n - 3).copied();
    Some(Stat {
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        num_threads: field(20)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
        exit_code: field(52).and_then(|v| v.parse().ok()),
    })
}

/// Nanoseconds per clock tick (`sysconf(_SC_CLK_TCK)`).
pub(crate) fn ns_per_tick() -> u64 {
    let hz = rustix::param::clock_ticks_per_second().max(1);
    1_000_000_000 / hz
}

/// Turns a parsed stat (and the thread list, when needed) into what the registry keeps. A
/// leader that is dead while `num_threads > 1` but whose listing shows no other thread lost a
/// race with its last thread's exit: `None` then asks the caller to read `stat` again.
pub(crate) fn snapshot_from(
    pid: i32,
    stat: &Stat,
    tids: impl FnOnce() -> Vec<i32>,
) -> Option<ProcSnapshot> {
    // Never 0, which means "unknown".
    let start_ns = stat.start_ticks.saturating_mul(ns_per_tick()).max(1);
    let leader_dead = matches!(stat.state, 'Z' | 'X' | 'x');
    let mut snap = ProcSnapshot {
        ppid: stat.ppid,
        start_ns,
        zombie: None,
        leader_gone: false,
        tids: Vec::new(),
        read_at: 0,
    };
    if leader_dead && stat.num_threads <= 1 {
        snap.zombie = Some(stat.exit_code.map(ExitStatus::from_raw));
    } else if stat.num_threads > 1 {
        snap.leader_gone = leader_dead;
        snap.tids = tids();
        let others = snap.tids.iter().any(|&t| t != pid);
        if leader_dead && !others {
            return None;
        }
        if snap.tids.is_empty() {
            snap.tids.push(pid);
        }
    }
    Some(snap)
}

/// Where the kernel mounts the process filesystem. The readers below take the root as a
/// parameter so that they can be tested on a directory that mimics it.
const PROC_ROOT: &str = "/proc";

/// The thread ids listed in `<root>/<pid>/task`: empty if the process is gone (its `task`
/// directory with it); any other failure is an error, never "no threads".
fn task_ids_in(root: &Path, pid: i32) -> io::Result<Vec<i32>> {
    let dir = match fs::read_dir(root.join(pid.to_string()).join("task")) {
        Ok(dir) => dir,
        Err(e) if gone(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Whether `/proc` refused to show a process to this reader: with `hidepid=1` (`noaccess`) a
/// process of another user is listed, but its files answer `EPERM`.
fn denied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

/// How often [`read_one_in`] reads a process again when what it read is in flux.
const READ_ATTEMPTS: usize = 3;

/// Reads one process below `root`: `Ok(None)` if it does not exist (any more). Only "not
/// found" means gone; any other failure (out of file descriptors, permission, a file that is
/// not what `/proc` would hold) is an error, so that a resync never mistakes an unreadable
/// process for a dead one.
fn read_one_in(root: &Path, raw: i32) -> io::Result<Option<ProcSnapshot>> {
    let dir = root.join(raw.to_string());
    let stat_path = dir.join("stat");
    let mut read_empty = false;
    for _ in 0..READ_ATTEMPTS {
        // Taken before the read: every message the kernel stamped earlier is reflected in
        // what the read returns (see `ProcSnapshot::read_at`).
        let read_at = Timestamp::now().as_nanos();
        let text = match fs::read_to_string(&stat_path) {
            Ok(t) => t,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        read_empty = text.is_empty();
        if read_empty {
            // The kernel answers a read about a reaped process with ESRCH, not with nothing.
            // Should nothing come back anyway, only a directory that is gone too means gone.
            match fs::symlink_metadata(&dir) {
                Err(e) if gone(&e) => return Ok(None),
                Err(e) => return Err(e),
                Ok(_) => continue,
            }
        }
        let Some(mut stat) = parse_stat(&text) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unparsable {}", stat_path.display()),
            ));
        };
        if matches!(stat.state, 'Z' | 'X' | 'x') {
            // Only a dead leader's field 52 means anything (everyone else's is 0).
            stat.exit_code = visible_exit_code(stat.exit_code, || may_read_exit_code(&dir));
        }
        // The thread list is read only when needed; a failure to read it is kept aside so
        // that it fails the read instead of passing for "no other threads".
        let mut task_err = None;
        let snap = snapshot_from(raw, &stat, || {
            task_ids_in(root, raw).unwrap_or_else(|e| {
                task_err = Some(e);
                Vec::new()
            })
        });
        if let Some(e) = task_err {
            return Err(e);
        }
        if let Some(mut snap) = snap {
            snap.read_at = read_at;
            return Ok(Some(snap));
        }
    }
    if read_empty {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} reads as empty", stat_path.display()),
        ));
    }
    // Still racing with thread exits: the process is on its way out; say so.
    Ok(None)
}

/// Field 52 as far as it can be believed. The kernel prints a zombie's status there only to
/// a reader with ptrace read access to it, and a plain `0` to anyone else, so a `0` means
/// "exited with 0" only when `readable` says this process has that access. Anything else is
/// a real status.
fn visible_exit_code(code: Option<i32>, readable: impl FnOnce() -> bool) -> Option<i32> {
    match code {
        Some(0) if !readable() => None,
        other => other,
    }
}

/// Whether this process may read the exit status of the process at `dir`, by the kernel's
/// rule for ptrace read access as it applies to a zombie (whose memory, and with it the
/// "dumpable" flag, is gone): `CAP_SYS_PTRACE` in effect, or our user and group equal to
/// the process's real, effective and saved ones (`ptrace(2)`, "Ptrace access mode
/// checking"). A security module could still refuse; then a `0` is taken for a real one.
fn may_read_exit_code(dir: &Path) -> bool {
    use rustix::thread::{capabilities, CapabilitySet};
    if capabilities(None).is_ok_and(|c| c.effective.contains(CapabilitySet::SYS_PTRACE)) {
        return true;
    }
    // The check uses the caller's filesystem ids, which follow the effective ones unless a
    // program changes them with setfsuid(2).
    let me = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    fs::read_to_string(dir.join("status")).is_ok_and(|text| same_ids(&text, me))
}

/// Whether the `Uid:` and `Gid:` lines of a `/proc/<pid>/status` text name `uid` and `gid`
/// as the real, effective and saved ids alike.
fn same_ids(status: &str, (uid, gid): (u32, u32)) -> bool {
    let ids = |key: &str, want: u32| {
        status.lines().any(|l| {
            l.strip_prefix(key).is_some_and(|rest| {
                let f: Vec<&str> = rest.split_ascii_whitespace().take(3).collect();
                f.len() == 3 && f.iter().all(|v| v.parse() == Ok(want))
            })
        })
    };
    ids("Uid:", uid) && ids("Gid:", gid)
}

/// The thread-group id of task `raw` (`Tgid:` in `<root>/<raw>/status`).
fn tgid_of_in(root: &Path, raw: i32) -> io::Result<Option<i32>> {
    let path = root.join(raw.to_string()).join("status");
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok()))
}

/// [`snapshot`] below `root`.
fn snapshot_in(root: &Path, pid: Pid) -> io::Result<Option<ProcSnapshot>> {
    let raw = pid.as_raw();
    if tgid_of_in(root, raw)? != Some(raw) {
        return Ok(None);
    }
    read_one_in(root, raw)
}

/// What `/proc` says about process `pid` now: `Ok(None)` if there is no such process — a
/// thread id that is not its process's id included (`/proc` answers for those too).
pub(crate) fn snapshot(pid: Pid) -> io::Result<Option<ProcSnapshot>> {
    snapshot_in(Path::new(PROC_ROOT), pid)
}

/// The process ids `/proc` lists now (its numeric entries: thread-group ids, never other
/// threads' ids), in the order the directory gives them.
pub(crate) fn list_pids() -> io::Result<Vec<Pid>> {
    list_pids_in(Path::new(PROC_ROOT))
}

fn list_pids_in(root: &Path) -> io::Result<Vec<Pid>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let raw = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok());
        pids.extend(raw.and_then(Pid::from_raw));
    }
    Ok(pids)
}

/// Every process `/proc` lists, as far as this reader may see them.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// The processes that could be read.
    pub(crate) procs: SystemSnapshot,
    /// Processes listed but not readable by this reader (`hidepid=1` hides other users'
    /// processes this way from a reader without `CAP_SYS_PTRACE`).
    pub(crate) unreadable: HashSet<i32>,
}

/// How many processes [`scan_all`] reads between two calls of its `between` hook.
pub(crate) const SCAN_STRIDE: usize = 8;

/// [`scan_all`] below `root`.
fn scan_all_in(root: &Path, between: &mut dyn FnMut() -> bool) -> io::Result<Listing> {
    let mut all = Listing::default();
    for (n, entry) in fs::read_dir(root)?.enumerate() {
        if n % SCAN_STRIDE == SCAN_STRIDE - 1 && !between() {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the /proc scan was stopped",
            ));
        }
        let entry = entry?;
        let Some(raw) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
            .filter(|&n| n > 0)
        else {
            continue; // `self`, `sys`, `meminfo`, ...
        };
        match read_one_in(root, raw) {
            Ok(Some(snap)) => {
                all.procs.insert(raw, snap);
            }
            Ok(None) => {}
            Err(e) if denied(&e) => {
                all.unreadable.insert(raw);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(all)
}

/// Every process `/proc` lists, calling `between` after every [`SCAN_STRIDE`] entries (the
/// netlink backend reads its socket there, so that a long scan does not make the kernel drop
/// messages); the scan stops with an `Interrupted` error when `between` returns false. Processes that vanish while it reads (between the listing and the read of their
/// `stat`, or of their `task` directory) are simply not in the result; processes this reader
/// may not read are listed as [`Listing::unreadable`]; any other failure (out of file
/// descriptors, say) fails the whole listing, and the caller tries again later.
pub(crate) fn scan_all(between: &mut dyn FnMut() -> bool) -> io::Result<Listing> {
    scan_all_in(Path::new(PROC_ROOT), between)
}

/// What a second look at a tracked process that a resync's listing did not show found.
#[derive(Debug)]
pub(crate) enum Recheck {
    /// `/proc` shows it now (the listing missed it, or the number names another process
    /// now: the caller compares start times).
    Listed(ProcSnapshot),
    /// It exists, but `/proc` will not show it to this reader, or the kernel could not say:
    /// never taken for dead.
    Unverified,
    /// No process has this number, or it has exited.
    Gone,
}

/// Looks again at process `raw`, which a resync's listing did not show: first in `/proc`,
/// then, where `/proc` hides it (`hidepid`) or is not readable, through a pidfd ([`probe`]).
pub(crate) fn recheck(raw: i32) -> Recheck {
    let Some(pid) = Pid::from_raw(raw) else {
        return Recheck::Gone;
    };
    if let Ok(Some(snap)) = snapshot(pid) {
        return Recheck::Listed(snap);
    }
    match probe(raw) {
        Some(Probe::Gone) | Some(Probe::Exited) => Recheck::Gone,
        Some(Probe::Running) | None => Recheck::Unverified,
    }
}

/// Whether the process a pidfd refers to has exited (is a zombie or reaped): the pidfd polls
/// readable then (`pidfd_open(2)`, "poll"). `None` if the poll fails.
pub(crate) fn exited(fd: &rustix::fd::OwnedFd) -> Option<bool> {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&zero))
        .ok()
        .map(|_| !fds[0].revents().is_empty())
}

/// What a pidfd says of a process that `/proc` would not show.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// No process has this id (or it names a thread, not a process).
    Gone,
    /// The process has exited (a zombie, not yet reaped).
    Exited,
    /// The process runs. Which process it is cannot be told without `/proc`.
    Running,
}

/// Asks the kernel directly whether process `raw` exists, for a process `/proc` hides from
/// this reader (`hidepid`): `pidfd_open(2)` works on any process, and its pidfd polls
/// readable once the process has exited (`pidfd_open(2)`, "poll"). `None` if the kernel cannot
/// tell (no `pidfd_open`, out of file descriptors).
pub(crate) fn probe(raw: i32) -> Option<Probe> {
    use rustix::io::Errno;
    let pid = rustix::process::Pid::from_raw(raw)?;
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        // ESRCH: no such process; ENOENT (EINVAL before Linux 6.9): the id is a thread's,
        // not a process's.
        Err(Errno::SRCH) | Err(Errno::NOENT) | Err(Errno::INVAL) => return Some(Probe::Gone),
        Err(_) => return None,
    };
    match exited(&fd)? {
        true => Some(Probe::Exited),
        false => Some(Probe::Running),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 98765 1000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 256";

    #[test]
    fn parses_fields_after_the_last_paren() {
        let s = parse_stat(LINE).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.num_threads, 3);
        assert_eq!(s.start_ticks, 98765);
        assert_eq!(s.exit_code, Some(256));
    }

    #[test]
    fn a_zero_status_counts_only_when_it_could_be_read() {
        // The kernel shows 0 for the status of a process the reader has no ptrace access to.
        assert_eq!(visible_exit_code(Some(0), || false), None);
        assert_eq!(visible_exit_code(Some(0), || true), Some(0));
        // Any other value is real, whoever reads it; missing stays missing.
        assert_eq!(visible_exit_code(Some(256), || false), Some(256));
        assert_eq!(visible_exit_code(Some(9), || false), Some(9));
        assert_eq!(visible_exit_code(None, || true), None);
    }

    #[test]
    fn exit_codes_are_readable_only_with_matching_real_effective_and_saved_ids() {
        let status = |uid: &str, gid: &str| {
            format!("Name:\tsh\nState:\tZ (zombie)\nUid:\t{uid}\nGid:\t{gid}\nGroups:\t\n")
        };
        let me = (1000, 1000);
        assert!(same_ids(
            &status("1000\t1000\t1000\t1000", "1000\t1000\t1000\t1000"),
            me
        ));
        // A set-group-id program: its effective group is not ours.
        assert!(!same_ids(
            &status("1000\t1000\t1000\t1000", "1000\t5\t5\t5"),
            me
        ));
        // Started by root, running as us (a saved uid of 0).
        assert!(!same_ids(
            &status("0\t1000\t0\t1000", "1000\t1000\t1000\t1000"),
            me
        ));
        assert!(!same_ids(&status("0\t0\t0\t0", "0\t0\t0\t0"), me));
        assert!(!same_ids("", me));
        assert!(!same_ids("Uid:\t1000\nGid:\t1000\n", me), "truncated lines");
    }

    #[test]
    fn short_or_garbled_lines_are_none() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("12 (x) S"), None);
        assert_eq!(parse_stat("12 x S 1"), None);
    }

    #[test]
    fn zombie_with_one_thread_is_a_zombie() {
        let mut s = parse_stat(LINE).unwrap();
        s.state = 'Z';
        s.num_threads = 1;
        let snap = snapshot_from(1234, &s, Vec::new).unwrap();
        assert_eq!(snap.zombie, Some(Some(ExitStatus::from_raw(256))));
    }

    #[test]
    fn zombie_leader_with_threads_is_alive() {
        let mut s = parse_stat(LINE).unwrap();
        s.state = 'Z';
        let snap = snapshot_from(1234, &s, || vec![1234, 1235, 1236]).unwrap();
        assert_eq!(snap.zombie, None);
        assert!(snap.leader_gone);
        assert_eq!(snap.tids.len(), 3);
    }

    #[test]
    fn dead_leader_without_listed_threads_asks_for_a_reread() {
        let mut s = parse_stat(LINE).unwrap();
        s.state = 'Z';
        assert!(snapshot_from(1234, &s, || vec![1234]).is_none());
        assert!(snapshot_from(1234, &s, Vec::new).is_none());
    }

    #[test]
    fn a_thread_id_is_not_a_process() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tx.send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
        });
        let tid = rx.recv().unwrap();
        assert!(snapshot(Pid::from_raw(tid).unwrap()).unwrap().is_none());
        t.join().unwrap();
    }

    /// A directory laid out like `/proc`, removed on drop.
    struct FakeProc {
        root: std::path::PathBuf,
    }

    impl FakeProc {
        fn new(name: &str) -> FakeProc {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let root = std::env::temp_dir().join(format!(
                "procwatch-fakeproc-{}-{name}-{n}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            FakeProc { root }
        }

        fn dir(&self, name: &str) -> std::path::PathBuf {
            let d = self.root.join(name);
            fs::create_dir_all(&d).unwrap();
            d
        }

        /// A `stat` line with the fields the crate reads; everything else is 0.
        fn stat_line(pid: i32, state: char, ppid: i32, threads: i64, exit_code: i32) -> String {
            let mut f = vec!["0".to_string(); 52 - 2];
            let mut set = |n: usize, v: String| f[n - 3] = v;
            set(3, state.to_string());
            set(4, ppid.to_string());
            set(20, threads.to_string());
            set(22, "4242".to_string());
            set(52, exit_code.to_string());
            format!("{pid} (fake proc) {}\n", f.join(" "))
        }

        /// A process directory with `stat`, `status` and, if `tids` is given, `task/<tid>`.
        fn process(&self, pid: i32, state: char, threads: i64, tids: Option<&[i32]>) {
            let d = self.dir(&pid.to_string());
            fs::write(d.join("stat"), Self::stat_line(pid, state, 1, threads, 0)).unwrap();
            fs::write(d.join("status"), format!("Name:\tfake\nTgid:\t{pid}\n")).unwrap();
            for &t in tids.unwrap_or(&[]) {
                fs::create_dir_all(d.join("task").join(t.to_string())).unwrap();
            }
        }

        fn scan(&self) -> io::Result<SystemSnapshot> {
            scan_all_in(&self.root, &mut || true).map(|l| l.procs)
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn pid(raw: i32) -> Pid {
        Pid::from_raw(raw).unwrap()
    }

    #[test]
    fn fake_proc_reads_like_proc() {
        let p = FakeProc::new("basic");
        p.process(100, 'S', 1, None);
        let all = p.scan().unwrap();
        assert_eq!(all.len(), 1);
        let snap = &all[&100];
        assert_eq!(snap.ppid, 1);
        assert_eq!(snap.start_ns, 4242 * ns_per_tick());
        assert_eq!(snap.zombie, None);
        assert!(snap.tids.is_empty());
        let one = snapshot_in(&p.root, pid(100)).unwrap().unwrap();
        assert_eq!((one.ppid, one.start_ns), (snap.ppid, snap.start_ns));
    }

    #[test]
    fn scan_skips_names_that_are_not_pids() {
        let p = FakeProc::new("names");
        p.process(7, 'R', 1, None);
        for name in [
            "self",
            "thread-self",
            "sys",
            "12ab",
            "-4",
            "0",
            "4294967296",
        ] {
            p.dir(name);
        }
        fs::write(p.root.join("meminfo"), "MemTotal: 1 kB\n").unwrap();
        let all = p.scan().unwrap();
        assert_eq!(all.keys().copied().collect::<Vec<_>>(), vec![7]);
    }

    #[test]
    fn a_process_whose_stat_vanished_is_absent() {
        // Listed, then reaped before its `stat` was read: the directory is there, `stat` not.
        let p = FakeProc::new("vanished");
        p.process(10, 'S', 1, None);
        p.dir("11");
        p.process(12, 'S', 1, None);
        fs::remove_file(p.root.join("12/stat")).unwrap();
        let all = p.scan().unwrap();
        assert_eq!(all.keys().copied().collect::<Vec<_>>(), vec![10]);
        assert!(read_one_in(&p.root, 11).unwrap().is_none());
        assert!(snapshot_in(&p.root, pid(11)).unwrap().is_none());
        // Not even a directory any more.
        assert!(read_one_in(&p.root, 13).unwrap().is_none());
        assert!(snapshot_in(&p.root, pid(13)).unwrap().is_none());
    }

    #[test]
    fn a_process_whose_task_dir_vanished() {
        let p = FakeProc::new("task");
        // Leader alive, several threads, `task/` gone between the `stat` and the listing: it
        // is reported with the one thread known for sure; its exit messages finish it later.
        p.process(20, 'S', 3, None);
        // Leader dead, threads said to live but none listed: it is on its way out.
        p.process(21, 'Z', 3, None);
        // Leader dead, another thread still listed: alive without its leader.
        p.process(22, 'Z', 2, Some(&[22, 23]));
        // The same with an empty `task/`.
        p.process(24, 'Z', 2, Some(&[]));
        fs::create_dir_all(p.root.join("24/task")).unwrap();
        let all = p.scan().unwrap();
        let mut listed: Vec<i32> = all.keys().copied().collect();
        listed.sort();
        assert_eq!(listed, vec![20, 22]);
        assert_eq!(all[&20].tids, vec![20]);
        assert!(!all[&20].leader_gone);
        assert_eq!(all[&20].zombie, None);
        let mut tids = all[&22].tids.clone();
        tids.sort();
        assert_eq!(tids, vec![22, 23]);
        assert!(all[&22].leader_gone);
        assert_eq!(all[&22].zombie, None);
    }

    #[test]
    fn a_zombie_is_listed_with_its_status() {
        let p = FakeProc::new("zombie");
        let d = p.dir("30");
        fs::write(d.join("stat"), FakeProc::stat_line(30, 'Z', 1, 1, 3 << 8)).unwrap();
        let all = p.scan().unwrap();
        assert_eq!(all[&30].zombie, Some(Some(ExitStatus::from_raw(3 << 8))));
    }

    #[test]
    fn an_empty_stat_is_not_taken_for_a_dead_process() {
        let p = FakeProc::new("empty");
        p.process(40, 'S', 1, None);
        fs::write(p.root.join("40/stat"), "").unwrap();
        let err = read_one_in(&p.root, 40).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("empty"), "{err}");
        let err = p.scan().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[test]
    fn a_garbled_stat_fails_the_scan() {
        let p = FakeProc::new("garbled");
        p.process(41, 'S', 1, None);
        fs::write(p.root.join("41/stat"), "41 (x) S 1").unwrap();
        let err = p.scan().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("unparsable"), "{err}");
    }

    #[test]
    fn an_unreadable_stat_fails_the_scan() {
        // As root, permissions do not stop reads; a `stat` that is a directory makes the read
        // fail with something other than "not found", like EACCES or EMFILE would.
        let p = FakeProc::new("unreadable");
        p.process(50, 'S', 1, None);
        p.dir("51/stat");
        let err = p.scan().unwrap_err();
        assert_ne!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(read_one_in(&p.root, 51).is_err());
        assert!(read_one_in(&p.root, 50).unwrap().is_some());
    }

    #[test]
    fn an_unreadable_task_dir_fails_the_scan() {
        // Several threads and a leader that is dead: only the thread list says whether the
        // process lives. Failing to read it must not make it look dead.
        let p = FakeProc::new("task-unreadable");
        p.process(60, 'Z', 2, None);
        fs::write(p.root.join("60/task"), "not a directory").unwrap();
        let err = p.scan().unwrap_err();
        assert_ne!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(snapshot_in(&p.root, pid(60)).is_err());
    }

    #[test]
    fn an_unreadable_status_fails_a_single_read() {
        let p = FakeProc::new("status");
        p.process(70, 'S', 1, None);
        fs::remove_file(p.root.join("70/status")).unwrap();
        p.dir("70/status");
        assert!(snapshot_in(&p.root, pid(70)).is_err());
        // A thread id: `/proc/<tid>` exists, with the process's `Tgid`.
        p.process(71, 'S', 2, Some(&[71, 72]));
        let d = p.dir("72");
        fs::write(d.join("stat"), FakeProc::stat_line(72, 'S', 1, 2, 0)).unwrap();
        fs::write(d.join("status"), "Tgid:\t71\n").unwrap();
        assert!(snapshot_in(&p.root, pid(72)).unwrap().is_none());
        assert!(snapshot_in(&p.root, pid(71)).unwrap().is_some());
    }

    #[test]
    fn scanning_proc_while_processes_come_and_go() {
        // The real /proc, while a shell forks short-lived processes: every scan succeeds (a
        // process vanishing mid-scan is not an error) and always lists what lived throughout.
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let sleeper_pid = sleeper.id() as i32;
        let mut storm = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 40 ]; do j=0; while [ $j -lt 20 ]; do \
                          true & j=$((j+1)); done; wait; i=$((i+1)); done",
            ])
            .spawn()
            .unwrap();
        let mut scans = 0;
        let mut hooks = 0;
        let start = std::time::Instant::now();
        loop {
            let listing = scan_all(&mut || {
                hooks += 1;
                true
            })
            .expect("a scan of /proc while processes vanish");
            let all = listing.procs;
            assert!(all.contains_key(&(std::process::id() as i32)));
            assert!(all.contains_key(&sleeper_pid));
            assert!(listing.unreadable.is_empty(), "root reads every process");
            assert!(hooks > 0, "the hook runs during a scan");
            scans += 1;
            if storm.try_wait().unwrap().is_some() && scans >= 5 {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "storm hung"
            );
        }
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }

    #[test]
    fn a_denied_read_is_neither_gone_nor_a_failure() {
        let e = io::Error::from_raw_os_error(libc::EPERM);
        assert!(denied(&e) && !gone(&e));
        assert!(denied(&io::Error::from_raw_os_error(libc::EACCES)));
        assert!(!denied(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(!denied(&io::Error::from_raw_os_error(libc::ENOENT)));
    }

    #[test]
    fn a_probe_tells_running_exited_and_gone_apart() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let raw = child.id() as i32;
        assert_eq!(probe(raw), Some(Probe::Running));
        child.kill().unwrap();
        // Killed but not reaped: a zombie, which the pidfd reports as exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while probe(raw) != Some(Probe::Exited) {
            assert!(std::time::Instant::now() < deadline, "{:?}", probe(raw));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert_eq!(probe(raw), Some(Probe::Gone));
        // A live thread's id is not a process.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_eq!(probe(tid), Some(Probe::Gone));
        drop(done_tx);
        t.join().unwrap();
    }

    #[test]
    fn reads_this_process() {
        let snap = snapshot(Pid::this()).unwrap().unwrap();
        assert!(snap.zombie.is_none());
        assert!(snap.start_ns > 0);
        assert!(snapshot(Pid::from_raw(i32::MAX).unwrap())
            .unwrap()
            .is_none());
    }
}
