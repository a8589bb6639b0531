//! The knote: one (stream, pid) pair and the events it holds for its stream.
//!
//! A knote stores *pending state*, not a queue of events: a `Child` flag, a short list of
//! `Fork`/`Exec`/`TrackErr` runs in program order (each run counts repeats), and the exit
//! status. Its size is fixed, so a stream's memory grows with the number of processes it
//! tracks, never with the number of raw events a stalled consumer has not read. For a stream
//! with `Interest::ARGV` it also keeps one command line: the latest exec's (at most
//! `Argv::MAX_BYTES`, shared with the other streams that got the same exec).

use crate::{Argv, Interest, Pid, ProcEvent, Timestamp, TrackErrReason};
use std::collections::VecDeque;
use std::process::ExitStatus;

/// How many distinct runs a knote keeps in order before folding older ones by kind. It is
/// larger than the number of run kinds (`Fork`, `Exec`, `TrackErr`), so folding always frees
/// a slot.
pub(crate) const MAX_RUNS: usize = 4;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum RunKind {
    Fork,
    Exec,
    TrackErr,
}

/// A run of events of one kind, in 16 bytes.
#[derive(Copy, Clone, Debug)]
struct Run {
    /// When the latest event of the run happened.
    at: Timestamp,
    /// The child pid for `Fork` and `TrackErr` runs (the latest one), 0 for `Exec`.
    other: i32,
    /// The kind (bits 30..32), the latest `TrackErr` reason (bits 28..30) and the count
    /// (bits 0..28, saturating at [`MAX_COUNT`]).
    packed: u32,
}

/// The largest count a run holds; more events of a run are still folded, not counted.
pub(crate) const MAX_COUNT: u32 = (1 << 28) - 1;

const EMPTY_RUN: Run = Run {
    at: Timestamp::UNKNOWN,
    other: 0,
    packed: 0,
};

impl Run {
    fn new(ev: RunEvent, count: u32) -> Run {
        let kind = match ev.kind {
            RunKind::Fork => 0,
            RunKind::Exec => 1,
            RunKind::TrackErr => 2,
        };
        let mut run = Run {
            at: ev.at,
            other: ev.other,
            packed: kind << 30,
        };
        run.set_reason(ev.reason);
        run.add(count);
        run
    }

    fn kind(&self) -> RunKind {
        match self.packed >> 30 {
            0 => RunKind::Fork,
            1 => RunKind::Exec,
            _ => RunKind::TrackErr,
        }
    }

    fn reason(&self) -> TrackErrReason {
        match (self.packed >> 28) & 3 {
            0 => TrackErrReason::Limit,
            1 => TrackErrReason::Permission,
            _ => TrackErrReason::Resources,
        }
    }

    fn set_reason(&mut self, reason: TrackErrReason) {
        let bits = match reason {
            TrackErrReason::Limit => 0,
            TrackErrReason::Permission => 1,
            TrackErrReason::Resources => 2,
        };
        self.packed = (self.packed & !(3 << 28)) | (bits << 28);
    }

    fn count(&self) -> u32 {
        self.packed & MAX_COUNT
    }

    fn add(&mut self, n: u32) {
        let count = self.count().saturating_add(n).min(MAX_COUNT);
        self.packed = (self.packed & !MAX_COUNT) | count;
    }

    /// Folds a later run (or event) of the same kind into this one.
    fn absorb(&mut self, at: Timestamp, other: i32, reason: TrackErrReason, count: u32) {
        self.add(count);
        self.at = at;
        self.other = other;
        self.set_reason(reason);
    }
}

/// One event to record in a run: what, about which child, why (for `TrackErr`), and when.
#[derive(Copy, Clone, Debug)]
pub(crate) struct RunEvent {
    pub(crate) kind: RunKind,
    pub(crate) other: i32,
    pub(crate) reason: TrackErrReason,
    pub(crate) at: Timestamp,
}

impl RunEvent {
    pub(crate) fn fork(child: i32, at: Timestamp) -> RunEvent {
        RunEvent {
            kind: RunKind::Fork,
            other: child,
            reason: TrackErrReason::Limit,
            at,
        }
    }

    pub(crate) fn exec(at: Timestamp) -> RunEvent {
        RunEvent {
            kind: RunKind::Exec,
            other: 0,
            reason: TrackErrReason::Limit,
            at,
        }
    }

    pub(crate) fn track_err(child: i32, reason: TrackErrReason, at: Timestamp) -> RunEvent {
        RunEvent {
            kind: RunKind::TrackErr,
            other: child,
            reason,
            at,
        }
    }
}

/// The lifecycle of a knote.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum KnoteState {
    /// Linked in the pid table: new events about its pid reach it.
    Attached,
    /// Its process is gone; it is unlinked and lives only until its pending events are read.
    Exited,
}

#[derive(Debug)]
pub(crate) struct Knote {
    pub(crate) pid: Pid,
    /// The parent for the pending `Child` event, if one is pending.
    child_of: Option<Pid>,
    /// When the process was born (for `Child`).
    born_at: Timestamp,
    runs: [Run; MAX_RUNS],
    nruns: u8,
    /// `Some(status)` once the exit is recorded and not yet delivered.
    exit: Option<Option<ExitStatus>>,
    exit_at: Timestamp,
    /// The command line of the latest exec recorded, for the last `Exec` run (one per knote,
    /// whatever the number of runs).
    argv: Option<Argv>,
    pub(crate) state: KnoteState,
    /// Whether the knote sits in its stream's ready list.
    pub(crate) queued: bool,
    /// Whether its exit sits in the ready list as an entry of its own, behind events that were
    /// queued after the knote's first entry (see `Stream::enqueue_exit`).
    pub(crate) exit_split: bool,
    /// Whether the process is kept stopped at the latest of its pending events until this
    /// stream's consumer has it (`Interest::HOLD`).
    pub(crate) hold: bool,
}

impl Knote {
    /// A knote for `pid`; with `child_of`, a `Child` event born at `born_at` is pending.
    pub(crate) fn new(pid: Pid, child_of: Option<Pid>, born_at: Timestamp) -> Knote {
        Knote {
            pid,
            child_of,
            born_at,
            runs: [EMPTY_RUN; MAX_RUNS],
            nruns: 0,
            exit: None,
            exit_at: Timestamp::UNKNOWN,
            argv: None,
            state: KnoteState::Attached,
            queued: false,
            exit_split: false,
            hold: false,
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.child_of.is_some() || self.nruns > 0 || self.exit.is_some()
    }

    /// Whether the latest event pending is one a process can be held at: its `Child`, or an
    /// `Exec`.
    pub(crate) fn ends_with_holdable(&self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.nruns {
            0 => self.child_of.is_some(),
            n => self.runs[n as usize - 1].kind() == RunKind::Exec,
        }
    }

    /// Records one `Fork`/`Exec`/`TrackErr`, folding it into the latest run when it is of the
    /// same kind. When `MAX_RUNS` distinct runs are already waiting, older runs are folded by
    /// kind (their relative order is lost, their counts are not).
    pub(crate) fn record_run(&mut self, ev: RunEvent) {
        self.record_runs(ev, 1);
    }

    /// Records one exec and the command line it was read with, which replaces the one kept
    /// for an earlier exec: it belongs to the last `Exec` run from now on.
    pub(crate) fn record_exec(&mut self, at: Timestamp, argv: Option<Argv>) {
        self.argv = argv;
        self.record_run(RunEvent::exec(at));
    }

    /// Records `count` events like `ev` at once (see [`Knote::record_run`]).
    pub(crate) fn record_runs(&mut self, ev: RunEvent, count: u32) {
        if self.join_last(ev, count) {
            return;
        }
        if self.nruns as usize == MAX_RUNS {
            self.fold_runs_by_kind();
            if self.join_last(ev, count) {
                return;
            }
            // There are fewer kinds than slots, so folding always frees one.
            debug_assert!((self.nruns as usize) < MAX_RUNS);
        }
        let n = self.nruns as usize;
        self.runs[n] = Run::new(ev, count);
        self.nruns += 1;
    }

    /// Folds `ev` into the latest run if it is of the same kind.
    fn join_last(&mut self, ev: RunEvent, count: u32) -> bool {
        let n = self.nruns as usize;
        if n == 0 || self.runs[n - 1].kind() != ev.kind {
            return false;
        }
        self.runs[n - 1].absorb(ev.at, ev.other, ev.reason, count);
        true
    }

    /// Merges runs of the same kind into the first run of that kind, keeping first-appearance
    /// order between kinds.
    fn fold_runs_by_kind(&mut self) {
        let n = self.nruns as usize;
        let mut out: [Run; MAX_RUNS] = [EMPTY_RUN; MAX_RUNS];
        let mut m = 0;
        for run in &self.runs[..n] {
            if let Some(r) = out[..m].iter_mut().find(|r| r.kind() == run.kind()) {
                r.absorb(run.at, run.other, run.reason(), run.count());
            } else {
                out[m] = *run;
                m += 1;
            }
        }
        self.runs = out;
        self.nruns = m as u8;
    }

    pub(crate) fn record_exit(&mut self, status: Option<ExitStatus>, at: Timestamp) {
        self.exit = Some(status);
        self.exit_at = at;
    }

    /// Copies the runs and exit that were held for this pid before it was claimed.
    pub(crate) fn absorb(&mut self, held: &Knote) {
        for run in &held.runs[..held.nruns as usize] {
            let ev = RunEvent {
                kind: run.kind(),
                other: run.other,
                reason: run.reason(),
                at: run.at,
            };
            self.record_runs(ev, run.count());
        }
        if held.runs[..held.nruns as usize]
            .iter()
            .any(|r| r.kind() == RunKind::Exec)
        {
            self.argv = held.argv.clone();
        }
        if let Some(status) = held.exit {
            self.record_exit(status, held.exit_at);
        }
    }

    pub(crate) fn exit_recorded(&self) -> Option<(Option<ExitStatus>, Timestamp)> {
        self.exit.map(|s| (s, self.exit_at))
    }

    /// Moves the pending state out as events, in the order the stream must see them: `Child`,
    /// then the runs in program order, then `Exit` (unless `with_exit` is false: then the exit
    /// stays pending for a later entry). Kinds the stream no longer wants are dropped here, so
    /// a changed interest takes effect at once.
    pub(crate) fn drain_into(
        &mut self,
        interest: Interest,
        out: &mut VecDeque<ProcEvent>,
        with_exit: bool,
    ) {
        let pid = self.pid;
        if let Some(parent) = self.child_of.take() {
            out.push_back(ProcEvent::Child {
                pid,
                parent,
                at: self.born_at,
            });
        }
        let last_exec = self.runs[..self.nruns as usize]
            .iter()
            .rposition(|r| r.kind() == RunKind::Exec);
        let mut argv = self
            .argv
            .take()
            .filter(|_| interest.contains(Interest::ARGV));
        for (i, run) in self.runs[..self.nruns as usize].iter().enumerate() {
            let other = Pid::from_raw(run.other);
            let (count, at) = (run.count(), run.at);
            match (run.kind(), other) {
                (RunKind::Fork, Some(child)) if interest.contains(Interest::FORK) => {
                    out.push_back(ProcEvent::Fork {
                        pid,
                        child,
                        count,
                        at,
                    });
                }
                (RunKind::Exec, _) if interest.contains(Interest::EXEC) => {
                    out.push_back(ProcEvent::Exec {
                        pid,
                        count,
                        at,
                        argv: if Some(i) == last_exec {
                            argv.take()
                        } else {
                            None
                        },
                    });
                }
                (RunKind::TrackErr, Some(child)) if interest.contains(Interest::TRACK) => {
                    out.push_back(ProcEvent::TrackErr {
                        pid,
                        child,
                        reason: run.reason(),
                        count,
                        at,
                    });
                }
                _ => {}
            }
        }
        self.nruns = 0;
        if !with_exit {
            return;
        }
        if let Some(status) = self.exit.take() {
            if interest.contains(Interest::EXIT) {
                out.push_back(ProcEvent::Exit {
                    pid,
                    status,
                    at: self.exit_at,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n).unwrap()
    }

    fn t(ns: u64) -> Timestamp {
        Timestamp::from_nanos(ns)
    }

    fn drain(k: &mut Knote) -> Vec<ProcEvent> {
        let mut out = VecDeque::new();
        k.drain_into(Interest::ALL, &mut out, true);
        out.into()
    }

    #[test]
    fn keeps_program_order_counts_and_latest_times() {
        let mut k = Knote::new(pid(10), Some(pid(1)), t(1));
        k.record_run(RunEvent::fork(11, t(2)));
        k.record_run(RunEvent::fork(12, t(3)));
        k.record_run(RunEvent::exec(t(4)));
        k.record_run(RunEvent::fork(13, t(5)));
        k.record_exit(None, t(6));
        let evs = drain(&mut k);
        let (p, parent) = (pid(10), pid(1));
        assert_eq!(
            evs,
            vec![
                ProcEvent::Child {
                    pid: p,
                    parent,
                    at: t(1)
                },
                ProcEvent::Fork {
                    pid: p,
                    child: pid(12),
                    count: 2,
                    at: t(3)
                },
                ProcEvent::Exec {
                    pid: p,
                    count: 1,
                    at: t(4),
                    argv: None
                },
                ProcEvent::Fork {
                    pid: p,
                    child: pid(13),
                    count: 1,
                    at: t(5)
                },
                ProcEvent::Exit {
                    pid: p,
                    status: None,
                    at: t(6)
                },
            ]
        );
        assert!(!k.has_pending());
    }

    #[test]
    fn bounded_under_alternation() {
        let mut k = Knote::new(pid(10), None, t(0));
        for i in 0..10_000 {
            if i % 3 == 0 {
                k.record_run(RunEvent::fork(100 + i, t(i as u64)));
            } else if i % 3 == 1 {
                k.record_run(RunEvent::exec(t(i as u64)));
            } else {
                k.record_run(RunEvent::track_err(
                    100 + i,
                    TrackErrReason::Limit,
                    t(i as u64),
                ));
            }
        }
        let evs = drain(&mut k);
        assert!(evs.len() <= MAX_RUNS);
        let count = |f: fn(&ProcEvent) -> Option<u32>| evs.iter().filter_map(f).sum::<u32>();
        let forks = count(|e| match e {
            ProcEvent::Fork { count, .. } => Some(*count),
            _ => None,
        });
        let execs = count(|e| match e {
            ProcEvent::Exec { count, .. } => Some(*count),
            _ => None,
        });
        let errs = count(|e| match e {
            ProcEvent::TrackErr { count, .. } => Some(*count),
            _ => None,
        });
        assert_eq!((forks, execs, errs), (3_334, 3_333, 3_333));
    }

    #[test]
    fn interest_filters_at_delivery() {
        let mut k = Knote::new(pid(10), None, t(0));
        k.record_run(RunEvent::fork(11, t(1)));
        k.record_run(RunEvent::exec(t(2)));
        k.record_exit(None, t(3));
        let mut out = VecDeque::new();
        k.drain_into(Interest::EXEC, &mut out, true);
        assert_eq!(
            Vec::from(out),
            vec![ProcEvent::Exec {
                pid: pid(10),
                count: 1,
                at: t(2),
                argv: None
            }]
        );
    }

    fn exec_argvs(evs: &[ProcEvent]) -> Vec<(u32, Option<Argv>)> {
        evs.iter()
            .filter_map(|e| match e {
                ProcEvent::Exec { count, argv, .. } => Some((*count, argv.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn coalesced_execs_keep_the_latest_argv() {
        let a = |s: &str| Some(Argv::from_args(s.split(' ')));
        let mut k = Knote::new(pid(10), None, t(0));
        k.record_exec(t(1), a("sh -c x"));
        k.record_exec(t(2), a("/bin/true one"));
        k.record_exec(t(3), a("/bin/true two"));
        let mut out = VecDeque::new();
        k.drain_into(Interest::EXEC | Interest::ARGV, &mut out, true);
        let evs = Vec::from(out);
        assert_eq!(exec_argvs(&evs), vec![(3, a("/bin/true two"))]);

        // Execs apart (a fork between): only the latest run has the command line.
        k.record_exec(t(4), a("first"));
        k.record_run(RunEvent::fork(11, t(5)));
        k.record_exec(t(6), a("second"));
        k.record_run(RunEvent::fork(12, t(7)));
        let mut out = VecDeque::new();
        k.drain_into(Interest::ALL | Interest::ARGV, &mut out, true);
        let evs = Vec::from(out);
        assert_eq!(exec_argvs(&evs), vec![(1, None), (1, a("second"))]);

        // Folded by kind past `MAX_RUNS`: the one `Exec` run has the latest.
        for i in 0..10u64 {
            k.record_exec(t(10 + 2 * i), a(&format!("run {i}")));
            k.record_run(RunEvent::fork(20 + i as i32, t(11 + 2 * i)));
        }
        let mut out = VecDeque::new();
        k.drain_into(Interest::ALL | Interest::ARGV, &mut out, true);
        let execs = exec_argvs(&Vec::from(out));
        let (last, earlier) = execs.split_last().unwrap();
        assert_eq!(last.1, a("run 9"));
        assert!(earlier.iter().all(|(_, argv)| argv.is_none()), "{execs:?}");
        assert_eq!(execs.iter().map(|(n, _)| n).sum::<u32>(), 10);

        // A stream without ARGV never sees it, and nothing stays behind.
        k.record_exec(t(40), a("hidden"));
        let mut out = VecDeque::new();
        k.drain_into(Interest::EXEC, &mut out, true);
        assert_eq!(exec_argvs(&Vec::from(out)), vec![(1, None)]);
        assert!(k.argv.is_none());
    }

    #[test]
    fn a_held_knote_hands_its_argv_over() {
        let mut held = Knote::new(pid(10), None, t(0));
        held.record_exec(t(1), Some(Argv::from_args(["held"])));
        let mut k = Knote::new(pid(10), Some(pid(1)), t(0));
        k.absorb(&held);
        let mut out = VecDeque::new();
        k.drain_into(Interest::ALL | Interest::ARGV, &mut out, true);
        let evs = Vec::from(out);
        assert_eq!(exec_argvs(&evs), vec![(1, Some(Argv::from_args(["held"])))]);
    }

    #[test]
    fn knote_stays_small() {
        // Part of the per-tracked-process memory budget (see benches/RESULTS.md): 112 bytes
        // before the command line slot, 120 with it (16 bytes, 8 of which were padding).
        assert!(
            std::mem::size_of::<Knote>() <= 120,
            "{}",
            std::mem::size_of::<Knote>()
        );
    }

    #[test]
    fn run_packs_kind_reason_and_a_saturating_count() {
        let mut r = Run::new(RunEvent::track_err(5, TrackErrReason::Resources, t(9)), 2);
        let seen = (r.kind(), r.reason(), r.count());
        assert_eq!(seen, (RunKind::TrackErr, TrackErrReason::Resources, 2));
        r.absorb(t(10), 6, TrackErrReason::Permission, MAX_COUNT);
        let seen = (r.kind(), r.reason(), r.count(), r.other);
        assert_eq!(
            seen,
            (RunKind::TrackErr, TrackErrReason::Permission, MAX_COUNT, 6)
        );
        let f = Run::new(RunEvent::fork(3, t(1)), 1);
        assert_eq!((f.kind(), f.count()), (RunKind::Fork, 1));
        assert_eq!(std::mem::size_of::<Run>(), 16);
    }
}
