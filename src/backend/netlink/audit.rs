//! The audit: a check, made while the tracked processes are quiet, that every process the
//! registry still counts as alive is alive.
//!
//! A process whose exit message never reached the registry stays tracked for ever, and a
//! stream that follows it never ends: a supervisor waiting for the end of a tree waits for
//! good. The kernel says so when it drops messages (`ENOBUFS`); the audit covers what it
//! would not say — an exit dropped by a bug on this side, or by anything else between the
//! kernel and the registry.
//!
//! # Orders
//!
//! The kernel sends a process's exit message from `do_exit`, right *after* `exit_notify`
//! made it a zombie and let its parent reap it. So `/proc` can show a process as a zombie,
//! or not at all, a few microseconds before its exit message is in the socket. A single look
//! cannot tell a missed exit from one still on its way; two looks at least a second apart,
//! with the socket drained after each, can:
//!
//! 1. the registry's activity count ([`Registry::activity`]) has not moved since the last
//!    look: nothing happened to a tracked process for a second or more;
//! 2. `/proc` is read for every tracked process: those that exited, are gone, or whose number
//!    now names a later process are candidates;
//! 3. the socket is drained, and candidates the registry no longer tracks are dropped (their
//!    exit came meanwhile);
//! 4. a candidate that was already one at the previous look is confirmed: its exit was
//!    missed. The streams get `Lost`, and the `/proc` resync that follows every loss tells
//!    them its `Exit` (with the status, if it is still a zombie).
//!
//! A process that `/proc` will not show (`hidepid`), and that a pidfd cannot rule on, is
//! never a candidate. Looks back off from one second to a minute while they find nothing,
//! and come back to one second as soon as a tracked process does anything.
//!
//! [`Registry::activity`]: crate::registry::Registry::activity

use crate::procfs::{self, Recheck};
use crate::registry::same_start;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The quiet time before the first look, and between the two looks that confirm a miss.
pub(super) const AUDIT_FIRST: Duration = Duration::from_secs(1);
/// The longest time between looks that find nothing.
pub(super) const AUDIT_LONGEST: Duration = Duration::from_secs(64);

/// What `/proc` says of a tracked process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Running (or not visible to this reader): not a candidate.
    Alive,
    /// A zombie, gone, or another process under its number.
    Exited,
}

/// The audit's state between looks.
#[derive(Debug)]
pub(super) struct Audit {
    next_at: Instant,
    interval: Duration,
    activity: u64,
    /// Candidates of the previous look still tracked after it: pid and start time.
    suspects: HashMap<i32, u64>,
}

impl Audit {
    pub(super) fn new(now: Instant) -> Audit {
        Audit {
            next_at: now + AUDIT_FIRST,
            interval: AUDIT_FIRST,
            activity: 0,
            suspects: HashMap::new(),
        }
    }

    /// When the next look is due.
    pub(super) fn next_at(&self) -> Instant {
        self.next_at
    }

    /// Whether a look is to be taken now, given the registry's activity count: only once
    /// it has stood still since the previous call, and the look is due. Activity puts the
    /// look off by [`AUDIT_FIRST`] and shortens the back-off again.
    pub(super) fn quiet(&mut self, now: Instant, activity: u64) -> bool {
        if activity != self.activity {
            self.activity = activity;
            self.interval = AUDIT_FIRST;
            self.next_at = now + AUDIT_FIRST;
            return false;
        }
        now >= self.next_at
    }

    /// The tracked processes that `look` finds exited: the candidates of this look.
    pub(super) fn candidates(
        tracked: &[(i32, u64)],
        mut look: impl FnMut(i32, u64) -> Seen,
    ) -> Vec<(i32, u64)> {
        tracked
            .iter()
            .copied()
            .filter(|&(raw, start)| look(raw, start) == Seen::Exited)
            .collect()
    }

    /// Ends a look, given the candidates the registry still tracks once the socket was
    /// drained: returns those that were candidates at the previous look too (their exits
    /// were missed), and keeps the others for the next look, a second from now.
    pub(super) fn settle(&mut self, now: Instant, still: Vec<(i32, u64)>) -> Vec<i32> {
        let mut missed = Vec::new();
        let mut suspects = HashMap::with_capacity(still.len());
        for (raw, start) in still {
            if self.suspects.get(&raw) == Some(&start) {
                missed.push(raw);
            } else {
                suspects.insert(raw, start);
            }
        }
        self.suspects = suspects;
        self.interval = if self.suspects.is_empty() && missed.is_empty() {
            (self.interval * 2).min(AUDIT_LONGEST)
        } else {
            AUDIT_FIRST
        };
        self.next_at = now + self.interval;
        missed.sort_unstable();
        missed
    }
}

/// What `/proc` says now of process `raw`, tracked as started at `start_ns`.
pub(super) fn look(raw: i32, start_ns: u64) -> Seen {
    match procfs::recheck(raw) {
        Recheck::Listed(snap) if snap.zombie.is_none() && same_start(start_ns, snap.start_ns) => {
            Seen::Alive
        }
        Recheck::Listed(_) | Recheck::Gone => Seen::Exited,
        Recheck::Unverified => Seen::Alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_look_waits_for_a_quiet_second() {
        let t0 = Instant::now();
        let mut a = Audit::new(t0);
        assert!(!a.quiet(t0, 0), "not due yet");
        assert!(!a.quiet(t0 + s(1), 5), "activity puts it off");
        assert_eq!(a.next_at(), t0 + s(2));
        assert!(!a.quiet(t0 + s(1) + Duration::from_millis(500), 5));
        assert!(a.quiet(t0 + s(2), 5), "quiet for a second");
    }

    #[test]
    fn a_miss_takes_two_looks_and_a_late_exit_clears_a_suspect() {
        let t0 = Instant::now();
        let mut a = Audit::new(t0);
        let tracked = [(10, 1_000), (11, 2_000), (12, 3_000)];
        // 11 and 12 look exited; 11's exit message is still on its way.
        let seen = |raw: i32, _| if raw == 10 { Seen::Alive } else { Seen::Exited };
        let first = Audit::candidates(&tracked, seen);
        assert_eq!(first, vec![(11, 2_000), (12, 3_000)]);
        assert!(
            a.settle(t0 + s(1), first).is_empty(),
            "one look confirms nothing"
        );
        assert_eq!(a.next_at(), t0 + s(2));
        // Its message came: the registry no longer tracks 11. 12 is still tracked.
        let second = Audit::candidates(&[(10, 1_000), (12, 3_000)], seen);
        assert_eq!(a.settle(t0 + s(2), second), vec![12]);
        assert_eq!(a.next_at(), t0 + s(3), "looks again soon after a miss");
    }

    #[test]
    fn a_number_taken_again_is_not_the_suspect() {
        let t0 = Instant::now();
        let mut a = Audit::new(t0);
        assert!(a.settle(t0 + s(1), vec![(11, 2_000)]).is_empty());
        // 11 exited in time, and a later process under the same number is tracked now and
        // looks exited too: it is a new suspect, not a confirmed one.
        assert!(a.settle(t0 + s(2), vec![(11, 90_000_000)]).is_empty());
        assert_eq!(a.settle(t0 + s(3), vec![(11, 90_000_000)]), vec![11]);
    }

    #[test]
    fn looks_that_find_nothing_back_off_to_a_minute() {
        let t0 = Instant::now();
        let mut a = Audit::new(t0);
        let mut now = t0;
        let mut gaps = Vec::new();
        for _ in 0..9 {
            now = a.next_at();
            assert!(a.quiet(now, 0));
            let before = now;
            a.settle(now, Vec::new());
            gaps.push((a.next_at() - before).as_secs());
        }
        assert_eq!(gaps, vec![2, 4, 8, 16, 32, 64, 64, 64, 64]);
        // Activity brings it back to a second.
        assert!(!a.quiet(now, 1));
        assert_eq!(a.next_at(), now + s(1));
    }

    #[test]
    fn a_live_process_is_alive_and_a_reaped_one_exited() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("start sleep");
        let raw = child.id() as i32;
        let start = procfs::snapshot(crate::Pid::from_raw(raw).unwrap())
            .expect("read /proc")
            .expect("sleep is running")
            .start_ns;
        assert_eq!(look(raw, start), Seen::Alive);
        // Another process's start time under the same number.
        assert_eq!(look(raw, start + 10_000_000_000), Seen::Exited);
        child.kill().expect("kill sleep");
        // A zombie until reaped.
        let zombie = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            look(raw, start) == Seen::Exited
        });
        assert!(zombie, "the killed sleep never looked exited");
        let status = child.wait().expect("reap sleep");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert_eq!(look(raw, start), Seen::Exited);
    }
}
