//! Reading `/proc`: one process when a stream attaches to it, every process after a loss.
//!
//! Parsing is split from reading so it is tested on fixed text. Field numbers follow
//! `proc_pid_stat(5)`.

use crate::registry::{ProcSnapshot, SystemSnapshot};
use crate::Pid;
use std::fs;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

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
fn ns_per_tick() -> u64 {
    let hz = rustix::param::clock_ticks_per_second().max(1);
    1_000_000_000 / hz
}

/// How far `CLOCK_BOOTTIME` (which `/proc` start times count in) is ahead of
/// `CLOCK_MONOTONIC` (which the registry and the proc connector use): the time spent suspended.
pub(crate) fn boot_ahead_of_monotonic() -> u64 {
    use rustix::time::{clock_gettime, ClockId};
    let ns = |t: rustix::time::Timespec| (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64;
    let boot = ns(clock_gettime(ClockId::Boottime));
    let mono = ns(clock_gettime(ClockId::Monotonic));
    boot.saturating_sub(mono)
}

/// Turns a parsed stat (and the thread list, when needed) into what the registry keeps.
/// `boot_ahead` is [`boot_ahead_of_monotonic`], taken once per scan.
pub(crate) fn snapshot_from(
    pid: i32,
    stat: &Stat,
    boot_ahead: u64,
    tids: impl FnOnce() -> Vec<i32>,
) -> ProcSnapshot {
    // Never 0, which means "unknown": a process started before a suspend is placed at 1 ns.
    let start_ns = stat
        .start_ticks
        .saturating_mul(ns_per_tick())
        .saturating_sub(boot_ahead)
        .max(1);
    let leader_dead = matches!(stat.state, 'Z' | 'X' | 'x');
    let mut snap = ProcSnapshot {
        ppid: stat.ppid,
        start_ns,
        zombie: None,
        leader_gone: false,
        tids: Vec::new(),
    };
    if leader_dead && stat.num_threads <= 1 {
        snap.zombie = Some(stat.exit_code.map(ExitStatus::from_raw));
    } else if stat.num_threads > 1 {
        snap.leader_gone = leader_dead;
        snap.tids = tids();
        if snap.tids.is_empty() {
            snap.tids.push(pid);
        }
    }
    snap
}

/// The thread ids listed in `/proc/<pid>/task`.
pub(crate) fn task_ids(pid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// What `/proc` says about `pid` now: `Ok(None)` if there is no such process.
pub(crate) fn snapshot(pid: Pid) -> io::Result<Option<ProcSnapshot>> {
    let raw = pid.as_raw();
    let text = match fs::read_to_string(format!("/proc/{raw}/stat")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let Some(stat) = parse_stat(&text) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unparsable /proc/{raw}/stat"),
        ));
    };
    Ok(Some(snapshot_from(
        raw,
        &stat,
        boot_ahead_of_monotonic(),
        || task_ids(raw),
    )))
}

/// Every process `/proc` lists. Entries that vanish while it reads are skipped: a process
/// that is gone is simply not in the snapshot.
pub(crate) fn scan_all() -> io::Result<SystemSnapshot> {
    let mut all = SystemSnapshot::new();
    let boot_ahead = boot_ahead_of_monotonic();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(raw) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(text) = fs::read_to_string(format!("/proc/{raw}/stat")) else {
            continue;
        };
        if let Some(stat) = parse_stat(&text) {
            all.insert(raw, snapshot_from(raw, &stat, boot_ahead, || task_ids(raw)));
        }
    }
    Ok(all)
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
        let snap = snapshot_from(1234, &s, 0, Vec::new);
        assert_eq!(snap.zombie, Some(Some(ExitStatus::from_raw(256))));
    }

    #[test]
    fn zombie_leader_with_threads_is_alive() {
        let mut s = parse_stat(LINE).unwrap();
        s.state = 'Z';
        let snap = snapshot_from(1234, &s, 0, || vec![1234, 1235, 1236]);
        assert_eq!(snap.zombie, None);
        assert!(snap.leader_gone);
        assert_eq!(snap.tids.len(), 3);
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
