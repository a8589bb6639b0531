//! The knote: one (stream, pid) pair and the events it holds for its stream.
//!
//! A knote stores *pending state*, not a queue of events: a `Child` flag, a short list of
//! `Fork`/`Exec`/`TrackErr` runs in program order (each run counts repeats), and the exit
//! status. Its size is fixed, so a stream's memory grows with the number of processes it
//! tracks, never with the number of raw events a stalled consumer has not read.

use crate::{Interest, Pid, ProcEvent, TrackErrReason};
use std::collections::VecDeque;
use std::process::ExitStatus;

/// How many distinct runs a knote keeps in order before folding older ones by kind. It is
/// larger than the number of run kinds (`Fork`, `Exec`, three `TrackErr` reasons), so folding
/// always frees a slot.
pub(crate) const MAX_RUNS: usize = 6;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum RunKind {
    Fork,
    Exec,
    TrackErr(TrackErrReason),
}

#[derive(Copy, Clone, Debug)]
struct Run {
    kind: RunKind,
    count: u32,
    /// The child pid for `Fork` and `TrackErr` runs (the latest one), 0 for `Exec`.
    other: i32,
}

const EMPTY_RUN: Run = Run {
    kind: RunKind::Exec,
    count: 0,
    other: 0,
};

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
    runs: [Run; MAX_RUNS],
    nruns: u8,
    /// `Some(status)` once the exit is recorded and not yet delivered.
    exit: Option<Option<ExitStatus>>,
    pub(crate) state: KnoteState,
    /// Whether the knote sits in its stream's ready list.
    pub(crate) queued: bool,
    /// Whether its exit sits in the ready list as an entry of its own, behind events that were
    /// queued after the knote's first entry (see `Stream::enqueue_exit`).
    pub(crate) exit_split: bool,
}

impl Knote {
    pub(crate) fn new(pid: Pid, child_of: Option<Pid>) -> Knote {
        Knote {
            pid,
            child_of,
            runs: [EMPTY_RUN; MAX_RUNS],
            nruns: 0,
            exit: None,
            state: KnoteState::Attached,
            queued: false,
            exit_split: false,
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.child_of.is_some() || self.nruns > 0 || self.exit.is_some()
    }

    /// Records one `Fork`/`Exec`/`TrackErr`, folding it into the latest run when it is of the
    /// same kind. When `MAX_RUNS` distinct runs are already waiting, older runs are folded by
    /// kind (their relative order is lost, their counts are not).
    pub(crate) fn record_run(&mut self, kind: RunKind, other: i32) {
        self.record_runs(kind, other, 1);
    }

    /// Records `count` events of one kind at once (see [`Knote::record_run`]).
    pub(crate) fn record_runs(&mut self, kind: RunKind, other: i32, count: u32) {
        let n = self.nruns as usize;
        if n > 0 && self.runs[n - 1].kind == kind {
            let last = &mut self.runs[n - 1];
            last.count = last.count.saturating_add(count);
            last.other = other;
            return;
        }
        if n == MAX_RUNS {
            self.fold_runs_by_kind();
            let n = self.nruns as usize;
            if n > 0 && self.runs[n - 1].kind == kind {
                let last = &mut self.runs[n - 1];
                last.count = last.count.saturating_add(count);
                last.other = other;
                return;
            }
            // There are fewer kinds than slots, so folding always frees one.
            debug_assert!((self.nruns as usize) < MAX_RUNS);
        }
        let n = self.nruns as usize;
        self.runs[n] = Run { kind, count, other };
        self.nruns += 1;
    }

    /// Merges runs of the same kind into the first run of that kind, keeping first-appearance
    /// order between kinds.
    fn fold_runs_by_kind(&mut self) {
        let n = self.nruns as usize;
        let mut out: [Run; MAX_RUNS] = [EMPTY_RUN; MAX_RUNS];
        let mut m = 0;
        for run in &self.runs[..n] {
            if let Some(r) = out[..m].iter_mut().find(|r| r.kind == run.kind) {
                r.count = r.count.saturating_add(run.count);
                r.other = run.other;
            } else {
                out[m] = *run;
                m += 1;
            }
        }
        self.runs = out;
        self.nruns = m as u8;
    }

    pub(crate) fn record_exit(&mut self, status: Option<ExitStatus>) {
        self.exit = Some(status);
    }

    /// Copies the runs and exit that were held for this pid before it was claimed.
    pub(crate) fn absorb(&mut self, held: &Knote) {
        for run in &held.runs[..held.nruns as usize] {
            self.record_runs(run.kind, run.other, run.count);
        }
        if let Some(status) = held.exit {
            self.exit = Some(status);
        }
    }

    pub(crate) fn exit_recorded(&self) -> Option<Option<ExitStatus>> {
        self.exit
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
            out.push_back(ProcEvent::Child { pid, parent });
        }
        for run in &self.runs[..self.nruns as usize] {
            let other = Pid::from_raw(run.other);
            match run.kind {
                RunKind::Fork if interest.contains(Interest::FORK) => {
                    if let Some(child) = other {
                        out.push_back(ProcEvent::Fork {
                            pid,
                            child,
                            count: run.count,
                        });
                    }
                }
                RunKind::Exec if interest.contains(Interest::EXEC) => {
                    out.push_back(ProcEvent::Exec {
                        pid,
                        count: run.count,
                    });
                }
                RunKind::TrackErr(reason) => {
                    if let Some(child) = other {
                        out.push_back(ProcEvent::TrackErr {
                            pid,
                            child,
                            reason,
                            count: run.count,
                        });
                    }
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
                out.push_back(ProcEvent::Exit { pid, status });
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

    fn drain(k: &mut Knote) -> Vec<ProcEvent> {
        let mut out = VecDeque::new();
        k.drain_into(Interest::ALL, &mut out, true);
        out.into()
    }

    #[test]
    fn keeps_program_order_and_counts() {
        let mut k = Knote::new(pid(10), Some(pid(1)));
        k.record_run(RunKind::Fork, 11);
        k.record_run(RunKind::Fork, 12);
        k.record_run(RunKind::Exec, 0);
        k.record_run(RunKind::Fork, 13);
        k.record_exit(None);
        let evs = drain(&mut k);
        assert_eq!(
            evs,
            vec![
                ProcEvent::Child {
                    pid: pid(10),
                    parent: pid(1)
                },
                ProcEvent::Fork {
                    pid: pid(10),
                    child: pid(12),
                    count: 2
                },
                ProcEvent::Exec {
                    pid: pid(10),
                    count: 1
                },
                ProcEvent::Fork {
                    pid: pid(10),
                    child: pid(13),
                    count: 1
                },
                ProcEvent::Exit {
                    pid: pid(10),
                    status: None
                },
            ]
        );
        assert!(!k.has_pending());
    }

    #[test]
    fn bounded_under_alternation() {
        let mut k = Knote::new(pid(10), None);
        for i in 0..10_000 {
            if i % 2 == 0 {
                k.record_run(RunKind::Fork, 100 + i);
            } else {
                k.record_run(RunKind::Exec, 0);
            }
        }
        let evs = drain(&mut k);
        assert!(evs.len() <= MAX_RUNS);
        let forks: u32 = evs
            .iter()
            .map(|e| match e {
                ProcEvent::Fork { count, .. } => *count,
                _ => 0,
            })
            .sum();
        let execs: u32 = evs
            .iter()
            .map(|e| match e {
                ProcEvent::Exec { count, .. } => *count,
                _ => 0,
            })
            .sum();
        assert_eq!((forks, execs), (5_000, 5_000));
    }

    #[test]
    fn interest_filters_at_delivery() {
        let mut k = Knote::new(pid(10), None);
        k.record_run(RunKind::Fork, 11);
        k.record_run(RunKind::Exec, 0);
        k.record_exit(None);
        let mut out = VecDeque::new();
        k.drain_into(Interest::EXEC, &mut out, true);
        assert_eq!(
            Vec::from(out),
            vec![ProcEvent::Exec {
                pid: pid(10),
                count: 1
            }]
        );
    }
}
