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

/// `CLOCK_BOOTTIME` now, in nanoseconds: the clock `/proc` start times count in.
pub(crate) fn boottime_now() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// The `CLOCK_MONOTONIC` offset of this process's time namespace, in nanoseconds
/// (`/proc/self/timens_offsets`, Linux 5.6+; 0 outside a time namespace). The kernel stamps
/// proc-connector events on the initial namespace's clock; adding this makes them comparable
/// with this process's own clock.
pub(crate) fn timens_monotonic_offset() -> i64 {
    let Ok(text) = fs::read_to_string("/proc/self/timens_offsets") else {
        return 0;
    };
    parse_timens_monotonic(&text)
}

fn parse_timens_monotonic(text: &str) -> i64 {
    text.lines()
        .find_map(|l| {
            let mut f = l.split_ascii_whitespace();
            if f.next()? != "monotonic" {
                return None;
            }
            let secs: i64 = f.next()?.parse().ok()?;
            let nanos: i64 = f.next()?.parse().ok()?;
            Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
        })
        .unwrap_or(0)
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

/// The thread ids listed in `/proc/<pid>/task`.
pub(crate) fn task_ids(pid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// Reads one process: `Ok(None)` if it does not exist (any more). Only "not found" means
/// gone; any other failure (out of file descriptors, permission) is an error, so that a
/// resync never mistakes an unreadable process for a dead one.
fn read_one(raw: i32) -> io::Result<Option<ProcSnapshot>> {
    for _ in 0..3 {
        let text = match fs::read_to_string(format!("/proc/{raw}/stat")) {
            Ok(t) => t,
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(stat) = parse_stat(&text) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unparsable /proc/{raw}/stat"),
            ));
        };
        if let Some(snap) = snapshot_from(raw, &stat, || task_ids(raw)) {
            return Ok(Some(snap));
        }
    }
    // Still racing with thread exits: the process is on its way out; say so.
    Ok(None)
}

/// The thread-group id of task `raw` (`Tgid:` in `/proc/<raw>/status`).
fn tgid_of(raw: i32) -> io::Result<Option<i32>> {
    let text = match fs::read_to_string(format!("/proc/{raw}/status")) {
        Ok(t) => t,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok()))
}

/// What `/proc` says about process `pid` now: `Ok(None)` if there is no such process — a
/// thread id that is not its process's id included (`/proc` answers for those too).
pub(crate) fn snapshot(pid: Pid) -> io::Result<Option<ProcSnapshot>> {
    let raw = pid.as_raw();
    if tgid_of(raw)? != Some(raw) {
        return Ok(None);
    }
    read_one(raw)
}

/// Every process `/proc` lists. Processes that vanish while it reads are simply not in the
/// listing; any other failure fails the whole listing.
pub(crate) fn scan_all() -> io::Result<SystemSnapshot> {
    let mut all = SystemSnapshot::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(raw) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(snap) = read_one(raw)? {
            all.insert(raw, snap);
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

    #[test]
    fn time_namespace_offsets() {
        let text = "monotonic           100         5\nboottime            -3         0\n";
        assert_eq!(parse_timens_monotonic(text), 100_000_000_005);
        assert_eq!(parse_timens_monotonic(""), 0);
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
