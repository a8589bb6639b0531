//! Scripted tests of the registry's ordering rules: backend inputs in, stream events out.

use super::*;
use crate::Timestamp;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc as StdArc;
use std::task::{Wake, Waker};

fn pid(n: i32) -> Pid {
    Pid::from_raw(n).unwrap()
}

fn alive() -> ProcSnapshot {
    listed(1, 1_000, None)
}

/// A process as a `/proc` listing shows it: parent, start time, and exit code if a zombie.
fn listed(ppid: i32, start_ns: u64, zombie: Option<i32>) -> ProcSnapshot {
    ProcSnapshot {
        ppid,
        start_ns,
        zombie: zombie.map(status),
        ..ProcSnapshot::default()
    }
}

fn status(code: i32) -> Option<ExitStatus> {
    Some(ExitStatus::from_raw(code << 8))
}

struct Counter(AtomicUsize);
impl Wake for Counter {
    fn wake(self: StdArc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A registry with helpers to script inputs and read streams.
struct Script {
    reg: Registry,
    wake: Actions,
}

impl Script {
    fn new() -> Script {
        Script {
            reg: Registry::new(),
            wake: Actions::default(),
        }
    }

    fn watch(&mut self, p: i32, interest: Interest) -> StreamId {
        self.watch_limit(p, interest, 1 << 16)
    }

    fn watch_limit(&mut self, p: i32, interest: Interest, limit: usize) -> StreamId {
        let id = self.reg.add_stream(pid(p), interest, limit).unwrap();
        self.reg
            .attach_root(id, pid(p), Some(&alive()), Stamp::default(), &mut self.wake)
            .unwrap();
        id
    }

    fn fork(&mut self, parent: i32, child: i32) {
        self.input(Input::Fork {
            parent: pid(parent),
            child: pid(child),
            start_ns: 2_000,
        });
    }

    fn exit(&mut self, p: i32, code: i32) {
        self.input(Input::ThreadExit {
            tgid: pid(p),
            tid: p,
            code: code << 8,
        });
    }

    fn exec(&mut self, p: i32) {
        self.input(Input::Exec {
            pid: pid(p),
            argv: None,
        });
    }

    fn input(&mut self, input: Input) {
        self.reg.apply(input, &mut self.wake);
    }

    /// Everything the stream has now, and whether it then ended.
    fn read(&mut self, id: StreamId) -> (Vec<ProcEvent>, bool) {
        let mut out = VecDeque::new();
        loop {
            let done = match self.reg.pop(id, &mut out, 1000, None) {
                PopStatus::Ready => continue,
                PopStatus::Pending => false,
                PopStatus::Done => true,
            };
            return (out.into_iter().map(untimed).collect(), done);
        }
    }
}

const T0: Timestamp = Timestamp::UNKNOWN;

/// Scripted time: the same nanoseconds on both clocks.
fn st(ns: u64) -> Stamp {
    Stamp { mono: ns, boot: ns }
}

fn child(p: i32, parent: i32) -> ProcEvent {
    ProcEvent::Child {
        pid: pid(p),
        parent: pid(parent),
        at: T0,
    }
}

fn exit(p: i32, code: i32) -> ProcEvent {
    ProcEvent::Exit {
        pid: pid(p),
        status: status(code),
        at: T0,
    }
}

fn exit_unknown(p: i32) -> ProcEvent {
    ProcEvent::Exit {
        pid: pid(p),
        status: None,
        at: T0,
    }
}

fn fork(p: i32, c: i32, count: u32) -> ProcEvent {
    ProcEvent::Fork {
        pid: pid(p),
        child: pid(c),
        count,
        at: T0,
    }
}

fn exec(p: i32, count: u32) -> ProcEvent {
    ProcEvent::Exec {
        pid: pid(p),
        count,
        at: T0,
        argv: None,
    }
}

fn lost(p: i32, count: u32) -> ProcEvent {
    ProcEvent::Lost {
        pid: pid(p),
        count,
        at: T0,
    }
}

/// The event with its time blanked, for comparisons with scripted expectations.
fn untimed(mut ev: ProcEvent) -> ProcEvent {
    match &mut ev {
        ProcEvent::Child { at, .. }
        | ProcEvent::Fork { at, .. }
        | ProcEvent::Exec { at, .. }
        | ProcEvent::Exit { at, .. }
        | ProcEvent::TrackErr { at, .. }
        | ProcEvent::Lost { at, .. } => *at = T0,
    }
    ev
}

#[test]
fn child_then_exit_of_a_short_lived_grandchild() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    s.fork(11, 12);
    s.exit(12, 7);
    s.exit(11, 0);
    s.exit(10, 0);
    let (evs, done) = s.read(id);
    assert_eq!(
        evs,
        vec![
            fork(10, 11, 1),
            child(11, 10),
            fork(11, 12, 1),
            child(12, 11),
            exit(12, 7),
            exit(11, 0),
            exit(10, 0),
        ]
    );
    assert!(done);
    assert_eq!(s.reg.tracked_pids(), 0);
}

#[test]
fn a_parents_exit_comes_after_the_child_it_forked_before_exiting() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.exec(10); // 10 is queued with an Exec the consumer has not read
    s.fork(10, 11);
    s.exit(10, 0);
    s.exit(11, 9);
    assert_eq!(
        s.read(id),
        (
            vec![
                exec(10, 1),
                fork(10, 11, 1),
                child(11, 10),
                exit(10, 0),
                exit(11, 9),
            ],
            true
        )
    );
}

#[test]
fn events_read_as_they_come_keep_causal_order() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    assert_eq!(s.read(id).0, vec![fork(10, 11, 1), child(11, 10)]);
    s.exec(11);
    s.exit(11, 1);
    assert_eq!(s.read(id).0, vec![exec(11, 1), exit(11, 1)]);
    s.exit(10, 0);
    assert_eq!(s.read(id), (vec![exit(10, 0)], true));
}

#[test]
fn events_carry_the_kernel_time_of_what_they_report() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    let t = Timestamp::from_nanos;
    let fork_in = Input::Fork {
        parent: pid(10),
        child: pid(11),
        start_ns: 5_000,
    };
    s.reg.apply_at(fork_in, st(5_000), &mut s.wake);
    s.reg.apply_at(
        Input::Exec {
            pid: pid(11),
            argv: None,
        },
        st(6_000),
        &mut s.wake,
    );
    s.reg.apply_at(
        Input::Exec {
            pid: pid(11),
            argv: None,
        },
        st(7_000),
        &mut s.wake,
    );
    let exit_in = Input::ThreadExit {
        tgid: pid(11),
        tid: 11,
        code: 0,
    };
    s.reg.apply_at(exit_in, st(8_000), &mut s.wake);
    let mut out = VecDeque::new();
    s.reg.pop(id, &mut out, 100, None);
    let times: Vec<Timestamp> = out.iter().map(|e| e.at()).collect();
    // Fork(10), Child(11), Exec(11) x2 (the later time), Exit(11).
    assert_eq!(times, vec![t(5_000), t(5_000), t(7_000), t(8_000)]);
}

#[test]
fn threads_are_not_processes() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.input(Input::ThreadStart {
        tgid: pid(10),
        tid: 20,
    });
    s.input(Input::ThreadStart {
        tgid: pid(10),
        tid: 21,
    });
    // The leader leaves first; the process lives on in its threads.
    s.exit(10, 0);
    s.input(Input::ThreadExit {
        tgid: pid(10),
        tid: 20,
        code: 0,
    });
    assert_eq!(s.read(id), (vec![], false));
    s.input(Input::ThreadExit {
        tgid: pid(10),
        tid: 21,
        code: 0,
    });
    assert_eq!(s.read(id), (vec![exit(10, 0)], true));
}

#[test]
fn non_leader_exec_is_an_exec_not_an_exit() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.input(Input::ThreadStart {
        tgid: pid(10),
        tid: 20,
    });
    // Thread 20 calls execve: the old leader exits, then the exec comes under pid 10.
    s.exit(10, 0);
    s.exec(10);
    assert_eq!(s.read(id), (vec![exec(10, 1)], false));
    s.exit(10, 4);
    assert_eq!(s.read(id), (vec![exit(10, 4)], true));
}

#[test]
fn two_streams_each_get_every_event() {
    let mut s = Script::new();
    let a = s.watch(10, Interest::ALL);
    let b = s.watch(10, Interest::EXIT | Interest::TRACK);
    s.fork(10, 11);
    s.exit(11, 2);
    s.exit(10, 0);
    assert_eq!(
        s.read(a),
        (
            vec![fork(10, 11, 1), child(11, 10), exit(11, 2), exit(10, 0)],
            true
        )
    );
    // Without FORK, 10 has nothing pending at the fork, so 11's knote is queued first.
    assert_eq!(
        s.read(b),
        (vec![child(11, 10), exit(11, 2), exit(10, 0)], true)
    );
}

#[test]
fn a_stalled_stream_folds_repeats_and_stays_bounded() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::FORK | Interest::EXEC | Interest::EXIT);
    for i in 0..100_000 {
        s.fork(10, 1000 + (i % 50_000));
    }
    s.exec(10);
    s.exec(10);
    s.fork(10, 7);
    let (evs, done) = s.read(id);
    assert_eq!(
        evs,
        vec![
            fork(10, 1000 + 49_999, 100_000),
            exec(10, 2),
            fork(10, 7, 1),
        ]
    );
    assert!(!done);
}

#[test]
fn exit_is_last_and_a_reused_pid_is_not_mixed_in() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    s.exit(11, 0);
    // Pid 11 is reused by an unrelated process: nothing about it reaches the stream.
    s.exec(11);
    s.exit(11, 9);
    let (evs, _) = s.read(id);
    assert_eq!(evs, vec![fork(10, 11, 1), child(11, 10), exit(11, 0)]);
}

#[test]
fn stale_messages_about_a_pids_previous_owner_are_dropped() {
    let mut s = Script::new();
    let id = s.reg.add_stream(pid(10), Interest::ALL, 100).unwrap();
    let snap = ProcSnapshot {
        start_ns: 5_000_000_000,
        ..ProcSnapshot::default()
    };
    s.reg
        .attach_root(id, pid(10), Some(&snap), Stamp::default(), &mut s.wake)
        .unwrap();
    // An exit of the previous pid-10 process, stamped before this one started.
    s.reg.apply_at(
        Input::ThreadExit {
            tgid: pid(10),
            tid: 10,
            code: 0,
        },
        st(1_000_000_000),
        &mut s.wake,
    );
    assert_eq!(s.read(id), (vec![], false));
    s.reg.apply_at(
        Input::ThreadExit {
            tgid: pid(10),
            tid: 10,
            code: 0,
        },
        st(6_000_000_000),
        &mut s.wake,
    );
    assert_eq!(s.read(id), (vec![exit(10, 0)], true));
}

/// A fork decoded while the boot clock's offset was read wrong (the reading thread preempted
/// between its two clock reads) dates the child milliseconds late on the boot clock. The
/// child's exit, decoded with the right offset, still ends it: a process born of a fork
/// message is compared on the monotonic clock both messages were stamped with.
#[test]
fn a_wrong_boot_offset_at_a_fork_does_not_lose_the_childs_exit() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    let late = 5_000_000;
    let fork_at = Stamp {
        mono: 2_000_000,
        boot: 2_000_000 + late,
    };
    let fork_in = Input::Fork {
        parent: pid(10),
        child: pid(11),
        start_ns: fork_at.boot,
    };
    s.reg.apply_at(fork_in, fork_at, &mut s.wake);
    // 200 µs later, on the right offset (0 here).
    let exit_in = Input::ThreadExit {
        tgid: pid(11),
        tid: 11,
        code: 0,
    };
    s.reg.apply_at(exit_in, st(2_200_000), &mut s.wake);
    let (evs, _) = s.read(id);
    assert_eq!(evs, vec![fork(10, 11, 1), child(11, 10), exit(11, 0)]);
    // A message stamped before that fork is about an earlier owner of the pid: once pid 11
    // is born again, such a message is dropped, whatever the boot clock says.
    s.reg.apply_at(
        Input::Fork {
            parent: pid(10),
            child: pid(11),
            start_ns: 900_000_000,
        },
        st(900_000_000),
        &mut s.wake,
    );
    let stale = Stamp {
        mono: 800_000_000,
        boot: 910_000_000,
    };
    s.reg.apply_at(
        Input::ThreadExit {
            tgid: pid(11),
            tid: 11,
            code: 0,
        },
        stale,
        &mut s.wake,
    );
    assert_eq!(s.read(id).0, vec![fork(10, 11, 1), child(11, 10)]);
}

#[test]
fn zombie_root_with_exit_interest_exits_at_once() {
    let mut s = Script::new();
    let id = s.reg.add_stream(pid(10), Interest::EXIT, 100).unwrap();
    let zombie = ProcSnapshot {
        zombie: Some(status(3)),
        ..alive()
    };
    s.reg
        .attach_root(id, pid(10), Some(&zombie), Stamp::default(), &mut s.wake)
        .unwrap();
    assert_eq!(s.read(id), (vec![exit(10, 3)], true));

    let id = s.reg.add_stream(pid(10), Interest::FORK, 100).unwrap();
    assert_eq!(
        s.reg
            .attach_root(id, pid(10), Some(&zombie), Stamp::default(), &mut s.wake),
        Err(ErrorKind::NoSuchProcess)
    );
    assert_eq!(
        s.reg
            .attach_root(id, pid(10), None, Stamp::default(), &mut s.wake),
        Err(ErrorKind::NoSuchProcess)
    );
}

#[test]
fn limit_gives_track_err() {
    let mut s = Script::new();
    let id = s.watch_limit(10, Interest::TRACK | Interest::EXIT, 2);
    s.fork(10, 11);
    s.fork(10, 12);
    s.fork(10, 13);
    let (evs, _) = s.read(id);
    assert_eq!(
        evs,
        vec![
            child(11, 10),
            ProcEvent::TrackErr {
                pid: pid(10),
                child: pid(13),
                reason: TrackErrReason::Limit,
                count: 2,
                at: T0,
            },
        ]
    );
    // Once 11 has exited and been read, there is room again.
    s.exit(11, 0);
    assert_eq!(s.read(id).0, vec![exit(11, 0)]);
    s.fork(10, 14);
    assert_eq!(s.read(id).0, vec![child(14, 10)]);
}

#[test]
fn set_interest_applies_to_one_stream_only() {
    let mut s = Script::new();
    let a = s.watch(10, Interest::ALL);
    let b = s.watch(10, Interest::ALL);
    s.reg.set_interest(a, Interest::EXIT, &mut s.wake);
    s.fork(10, 11);
    s.exec(10);
    s.exit(10, 0);
    assert_eq!(s.read(a), (vec![exit(10, 0)], true));
    // b keeps ALL: 10's Fork and Exec come together from its knote, then 11's Child, then 10's
    // Exit, which has an entry of its own behind the Child (guarantee 9 of the crate docs: a
    // parent's Exit comes after the Child of every process it created before exiting).
    assert_eq!(
        s.read(b),
        (
            vec![fork(10, 11, 1), exec(10, 1), child(11, 10), exit(10, 0)],
            false
        ),
        "child 11 is still tracked on b"
    );
    s.exit(11, 3);
    assert_eq!(s.read(b), (vec![exit(11, 3)], true));
    assert_eq!(s.reg.tracked_pids(), 0);
}

#[test]
fn two_streams_on_one_pid_change_to_different_masks() {
    let mut s = Script::new();
    let a = s.watch(10, Interest::ALL);
    let b = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    let both = vec![fork(10, 11, 1), child(11, 10)];
    assert_eq!(s.read(a), (both.clone(), false));
    assert_eq!(s.read(b), (both, false));
    // Each stream now tracks 10 and 11. They change to disjoint masks.
    s.reg
        .set_interest(a, Interest::EXEC | Interest::EXIT, &mut s.wake);
    s.reg
        .set_interest(b, Interest::FORK | Interest::TRACK, &mut s.wake);
    assert_eq!(s.reg.interest(a), Some(Interest::EXEC | Interest::EXIT));
    assert_eq!(s.reg.interest(b), Some(Interest::FORK | Interest::TRACK));
    s.exec(10);
    s.exec(11);
    s.fork(11, 12);
    s.fork(10, 13);
    s.exit(12, 2);
    s.exit(11, 1);
    s.exit(13, 3);
    s.exit(10, 0);
    // a: the execs and the exits of the processes it already tracked; no Fork, and no Child
    // for 12 or 13 (without TRACK new children are not followed).
    assert_eq!(
        s.read(a),
        (
            vec![exec(10, 1), exec(11, 1), exit(11, 1), exit(10, 0)],
            true
        )
    );
    // b: forks and the new children, no Exec, no Exit at all; it still ends once every process
    // it tracked is gone.
    assert_eq!(
        s.read(b),
        (
            vec![
                fork(11, 12, 1),
                child(12, 11),
                fork(10, 13, 1),
                child(13, 10)
            ],
            true
        )
    );
    assert_eq!(s.reg.tracked_pids(), 0);
}

#[test]
fn dropping_a_stream_unlinks_everything_and_spares_the_other() {
    let mut s = Script::new();
    let a = s.watch(10, Interest::ALL);
    let b = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    s.fork(11, 12);
    s.reg.remove_stream(a, &mut s.wake);
    assert_eq!(s.reg.tracked_pids(), 3, "stream b still tracks 10, 11, 12");
    s.reg.remove_stream(b, &mut s.wake);
    assert_eq!(s.reg.tracked_pids(), 0);
    // A hand-off after the close finds no stream and attaches nothing.
    s.fork(10, 13);
    assert_eq!(s.reg.tracked_pids(), 0);
    assert_eq!(s.read(a), (vec![], true));
    assert_eq!(
        s.reg
            .attach_root(a, pid(10), Some(&alive()), Stamp::default(), &mut s.wake),
        Err(ErrorKind::Closed)
    );
}

#[test]
fn stale_stream_id_is_harmless_after_slot_reuse() {
    let mut s = Script::new();
    let a = s.watch(10, Interest::ALL);
    s.reg.remove_stream(a, &mut s.wake);
    let b = s.watch(20, Interest::ALL);
    s.reg.remove_stream(a, &mut s.wake);
    assert_eq!(s.reg.tracked_count(b), 1);
}

#[test]
fn child_held_in_flux_until_its_parents_fork_arrives() {
    // A ptrace-like order: the child's own events come before the parent's fork event.
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.input(Input::Birth { pid: pid(11) });
    s.exec(11);
    s.fork(11, 12); // the held child forks before it is claimed
    s.input(Input::Exit {
        pid: pid(12),
        status: status(5),
    });
    s.input(Input::Exit {
        pid: pid(11),
        status: status(1),
    });
    assert_eq!(
        s.read(id),
        (vec![], false),
        "nothing is visible while in flux"
    );
    s.fork(10, 11);
    let (evs, done) = s.read(id);
    assert_eq!(
        evs,
        vec![
            fork(10, 11, 1),
            child(11, 10),
            exec(11, 1),
            fork(11, 12, 1),
            child(12, 11),
            exit(12, 5),
            exit(11, 1),
        ]
    );
    assert!(!done, "10 is still alive");
    assert_eq!(s.reg.tracked_pids(), 1);
}

#[test]
fn a_held_child_nobody_follows_takes_its_own_held_children_with_it() {
    // 10 is watched without TRACK: when the fork of the held 11 arrives, nobody attaches 11,
    // so what 11 created while held (12, and 12's 13) is dropped with it.
    let mut s = Script::new();
    let id = s.watch(10, Interest::FORK | Interest::EXIT);
    s.input(Input::Birth { pid: pid(11) });
    s.fork(11, 12);
    s.fork(12, 13);
    assert_eq!(s.reg.held.len(), 3);
    s.fork(10, 11);
    assert!(s.reg.held.is_empty(), "left held: {:?}", s.reg.held.keys());
    assert_eq!(s.read(id), (vec![fork(10, 11, 1)], false));
    assert_eq!(s.reg.tracked_pids(), 1);
}

#[test]
fn an_empty_interest_pauses_the_stream_until_its_processes_are_gone() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    s.reg.set_interest(id, Interest::empty(), &mut s.wake);
    // 11 is tracked already: its Child still comes (it announces the process, and anything
    // about 11 that a later interest lets through must come after it). Beyond that nothing
    // is delivered, no new child is tracked, no exit is shown.
    s.exec(11);
    s.fork(10, 12);
    s.exit(12, 0);
    assert_eq!(s.read(id), (vec![child(11, 10)], false));
    // A loss still concerns the stream.
    s.reg.mark_lost(T0, &mut s.wake);
    assert_eq!(s.read(id), (vec![lost(10, 1)], false));
    s.exit(11, 0);
    assert_eq!(s.read(id), (vec![], false), "10 still lives");
    s.exit(10, 0);
    assert_eq!(s.read(id), (vec![], true), "ends once 10 and 11 are gone");
    assert_eq!(s.reg.tracked_pids(), 0);
}

#[test]
fn a_pending_track_err_is_dropped_with_the_track_interest() {
    let mut s = Script::new();
    let id = s.watch_limit(10, Interest::TRACK | Interest::FORK, 1);
    s.fork(10, 11); // over the limit: a TrackErr waits on 10's knote, behind the Fork
    s.reg.set_interest(id, Interest::FORK, &mut s.wake);
    assert_eq!(s.read(id), (vec![fork(10, 11, 1)], false));
}

#[test]
fn held_child_of_an_untracked_parent_is_dropped_and_abandon_frees() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.input(Input::Birth { pid: pid(31) });
    s.fork(30, 31); // parent 30 is not tracked: stays held until abandoned
    s.input(Input::Abandon { pid: pid(31) });
    s.input(Input::Birth { pid: pid(41) });
    s.input(Input::Exit {
        pid: pid(41),
        status: status(0),
    });
    s.input(Input::Abandon { pid: pid(41) });
    assert!(s.reg.held.is_empty());
    assert_eq!(s.read(id), (vec![], false));
}

#[test]
fn lost_then_resync_reports_the_gap() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    s.fork(10, 12);
    let _ = s.read(id);
    s.reg.mark_lost(T0, &mut s.wake);
    // In the gap: 11 died and was reaped, 12 is a zombie, 10 forked 13 which forked 14,
    // and pid 15 is unrelated.
    let mut snap = SystemSnapshot::new();
    snap.insert(10, listed(1, 1_000, None));
    snap.insert(12, listed(10, 2_000, Some(6)));
    snap.insert(13, listed(10, 3_000, None));
    snap.insert(14, listed(13, 4_000, None));
    snap.insert(15, listed(1, 4_000, None));
    s.reg.resync(
        &snap,
        &ResyncHints::default(),
        Stamp::default(),
        0,
        &mut s.wake,
    );
    let (evs, done) = s.read(id);
    assert!(!done, "10, 13 and 14 are alive: {evs:?}");
    // The resync walks hash maps, so the order between different pids is not fixed; what is:
    // Lost first, each of these exactly once and nothing else (no Exit for the live 10, nothing
    // about the unrelated 15), and the new subtree parent first.
    assert_eq!(evs.len(), 5, "{evs:?}");
    assert_eq!(evs[0], lost(10, 1), "{evs:?}");
    let mut rest: Vec<String> = evs[1..].iter().map(|e| format!("{e:?}")).collect();
    rest.sort();
    let mut want: Vec<String> = [exit_unknown(11), exit(12, 6), child(13, 10), child(14, 13)]
        .iter()
        .map(|e| format!("{e:?}"))
        .collect();
    want.sort();
    assert_eq!(rest, want, "{evs:?}");
    let at = |ev: ProcEvent| evs.iter().position(|e| *e == ev).unwrap();
    assert!(at(child(13, 10)) < at(child(14, 13)), "{evs:?}");
    assert!(
        !evs.iter()
            .any(|e| matches!(e, ProcEvent::Exit { pid: p, .. } if *p == pid(10))),
        "the live 10 gets no Exit: {evs:?}"
    );
    assert_eq!(s.reg.tracked_pids(), 3, "10, 13 and 14");
    // The fork message of 13, read after the resync, does not announce it twice.
    s.input(Input::Fork {
        parent: pid(10),
        child: pid(13),
        start_ns: 3_000,
    });
    assert_eq!(s.read(id).0, vec![fork(10, 13, 1)]);
}

#[test]
fn resync_sees_a_reused_pid_as_an_exit() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    let _ = s.read(id);
    s.reg.mark_lost(T0, &mut s.wake);
    let mut snap = SystemSnapshot::new();
    snap.insert(10, listed(1, 1_000, None));
    // Pid 11 now names a process that started 10 s later under another parent.
    snap.insert(11, listed(1, 10_000_000_000, None));
    s.reg.resync(
        &snap,
        &ResyncHints::default(),
        Stamp::default(),
        0,
        &mut s.wake,
    );
    let (evs, _) = s.read(id);
    assert_eq!(evs, vec![lost(10, 1), exit_unknown(11)]);
}

#[test]
fn wakers_fire_on_events_end_and_shutdown() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    let counter = StdArc::new(Counter(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let mut out = VecDeque::new();
    assert_eq!(
        s.reg.pop(id, &mut out, 10, Some(&waker)),
        PopStatus::Pending
    );
    let mut wake = Actions::default();
    s.reg.apply(
        Input::Exec {
            pid: pid(10),
            argv: None,
        },
        &mut wake,
    );
    assert_eq!(wake.len(), 1);
    wake.wake_all();
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    assert_eq!(s.reg.pop(id, &mut out, 10, Some(&waker)), PopStatus::Ready);
    assert_eq!(
        s.reg.pop(id, &mut out, 10, Some(&waker)),
        PopStatus::Pending
    );
    s.reg.shutdown(&mut wake);
    assert_eq!(wake.len(), 1);
    assert_eq!(s.reg.pop(id, &mut out, 10, Some(&waker)), PopStatus::Done);
    assert_eq!(
        s.reg.add_stream(pid(10), Interest::ALL, 1),
        Err(ErrorKind::Closed)
    );
}

#[test]
fn a_fork_arriving_after_watch_of_the_child_still_gives_child() {
    // Stream b watches 11 directly; the fork of 11 by 10 is read afterwards.
    let mut s = Script::new();
    let a = s.watch(10, Interest::ALL);
    let b = s.reg.add_stream(pid(11), Interest::ALL, 100).unwrap();
    let snap = ProcSnapshot {
        start_ns: 2_000,
        ..alive()
    };
    s.reg
        .attach_root(b, pid(11), Some(&snap), Stamp::default(), &mut s.wake)
        .unwrap();
    s.fork(10, 11);
    assert_eq!(s.read(a).0, vec![fork(10, 11, 1), child(11, 10)]);
    s.exit(11, 0);
    assert_eq!(s.read(a).0, vec![exit(11, 0)]);
    assert_eq!(s.read(b), (vec![exit(11, 0)], true));
}

#[test]
fn a_reported_zombie_is_not_announced_again_by_later_resyncs_or_late_forks() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    s.exit(11, 0); // 11 is now an unreaped zombie of 10
    let _ = s.read(id);
    let mut snap = SystemSnapshot::new();
    snap.insert(10, listed(1, 1_000, None));
    snap.insert(11, listed(10, 2_000, Some(0)));
    for _ in 0..3 {
        s.reg.mark_lost(T0, &mut s.wake);
        s.reg.resync(
            &snap,
            &ResyncHints::default(),
            Stamp::default(),
            0,
            &mut s.wake,
        );
        assert_eq!(s.read(id).0, vec![lost(10, 1)]);
    }
    // A fork message for it read late (queued during a scan) does not bring it back either.
    s.fork(10, 11);
    assert_eq!(s.read(id).0, vec![fork(10, 11, 1)]);
    // A new process reusing the number is a different process.
    s.input(Input::Fork {
        parent: pid(10),
        child: pid(11),
        start_ns: 9_000_000_000,
    });
    assert_eq!(s.read(id).0, vec![fork(10, 11, 1), child(11, 10)]);
}

#[test]
fn per_process_records_stay_small() {
    // The per-tracked-process memory budget (benches/memory.rs measures the whole of it).
    // 48 bytes: start time, links, thread set, when the thread set was read, and the stamp
    // of the fork message it was built from.
    assert!(std::mem::size_of::<ProcEntry>() <= 48);
    // Per stream, not per process: 144 bytes with the time its watch began.
    assert!(std::mem::size_of::<Stream>() <= 144);
}

#[test]
fn a_watch_during_a_resync_listing_is_not_judged_by_that_listing() {
    let mut s = Script::new();
    let a = s.watch(10, Interest::ALL);
    s.reg.mark_lost(T0, &mut s.wake);
    s.reg.begin_scan();
    // The listing is taken now; then a new process is watched before it is applied.
    let mut snap = SystemSnapshot::new();
    snap.insert(10, listed(1, 1_000, None));
    let b = s.watch(20, Interest::ALL);
    s.reg.resync(
        &snap,
        &ResyncHints::default(),
        Stamp::default(),
        0,
        &mut s.wake,
    );
    assert_eq!(
        s.read(b),
        (vec![], false),
        "20 is alive and was not in the older listing"
    );
    assert_eq!(s.read(a), (vec![lost(10, 1)], false));
    // The next resync, with a listing taken after the watch, does judge it.
    s.reg.mark_lost(T0, &mut s.wake);
    s.reg.begin_scan();
    s.reg.resync(
        &snap,
        &ResyncHints::default(),
        Stamp::default(),
        0,
        &mut s.wake,
    );
    assert_eq!(s.read(b), (vec![lost(20, 1), exit_unknown(20)], true));
}

#[test]
fn a_resync_attaches_only_children_born_after_the_last_event_read() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.reg.mark_lost(T0, &mut s.wake);
    let mut snap = SystemSnapshot::new();
    snap.insert(10, listed(1, 1_000, None));
    snap.insert(11, listed(10, 5_000_000_000, None)); // older than the loss: not lost
    snap.insert(12, listed(10, 9_000_000_000, Some(0))); // an old zombie: not lost either
    snap.insert(13, listed(10, 20_000_000_000, None)); // born in the gap
    s.reg.resync(
        &snap,
        &ResyncHints::default(),
        Stamp::default(),
        15_000_000_000,
        &mut s.wake,
    );
    assert_eq!(s.read(id), (vec![lost(10, 1), child(13, 10)], false));
}

#[test]
fn a_resync_walks_new_subtrees_by_parent_links_not_start_order() {
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.reg.mark_lost(T0, &mut s.wake);
    let mut snap = SystemSnapshot::new();
    snap.insert(10, listed(1, 1_000, None));
    // Same clock tick; the grandchild got a lower pid after a wrap and sorts first.
    snap.insert(300, listed(10, 2_000, None));
    snap.insert(200, listed(300, 2_000, None));
    snap.insert(100, listed(200, 1_999, None));
    s.reg.resync(
        &snap,
        &ResyncHints::default(),
        Stamp::default(),
        0,
        &mut s.wake,
    );
    let (evs, _) = s.read(id);
    assert_eq!(
        evs,
        vec![
            lost(10, 1),
            child(300, 10),
            child(200, 300),
            child(100, 200)
        ]
    );
}

#[test]
fn watching_a_reused_pid_retires_the_stale_entry() {
    let mut s = Script::new();
    let old = s.watch(10, Interest::ALL);
    // 10 died and its number was reused; its exit message is still queued when the new
    // process is watched.
    let new = s.reg.add_stream(pid(10), Interest::ALL, 100).unwrap();
    let fresh = listed(1, 9_000_000_000, None);
    s.reg
        .attach_root(new, pid(10), Some(&fresh), Stamp::default(), &mut s.wake)
        .unwrap();
    assert_eq!(s.read(old), (vec![exit_unknown(10)], true));
    s.reg.apply_at(
        Input::ThreadExit {
            tgid: pid(10),
            tid: 10,
            code: 0,
        },
        st(8_000_000_000),
        &mut s.wake,
    );
    assert_eq!(
        s.read(new),
        (vec![], false),
        "the old exit is not the new process's"
    );
}

// Where a stream begins: nothing from before its `watch`, everything after.

/// A process as `/proc` showed it at `read_at` (both clocks).
fn read_at(read_at: u64, tids: &[i32]) -> ProcSnapshot {
    ProcSnapshot {
        ppid: 1,
        start_ns: 1_000,
        tids: tids.to_vec(),
        read_at,
        ..ProcSnapshot::default()
    }
}

impl Script {
    /// Watches `p` as `watch` does: the watch begins at `since`, `/proc` is read just after.
    fn watch_since(&mut self, p: i32, since: u64, snap: &ProcSnapshot) -> StreamId {
        let id = self.reg.add_stream(pid(p), Interest::ALL, 1 << 16).unwrap();
        self.reg
            .attach_root(id, pid(p), Some(snap), st(since), &mut self.wake)
            .unwrap();
        id
    }

    fn input_at(&mut self, input: Input, at: u64) {
        self.reg.apply_at(input, st(at), &mut self.wake);
    }

    /// Thread `tid` of process `p` exits with wait status `code`, at `at`.
    fn thread_exit_at(&mut self, p: i32, tid: i32, code: i32, at: u64) {
        let tgid = pid(p);
        self.input_at(Input::ThreadExit { tgid, tid, code }, at);
    }
}

#[test]
fn inputs_stamped_before_the_watch_do_not_reach_the_stream() {
    let mut s = Script::new();
    let id = s.watch_since(10, 5_000, &read_at(5_001, &[]));
    // Still queued when the watch began: the exec that started the program, a fork, and the
    // exit of the child it forked.
    s.input_at(
        Input::Exec {
            pid: pid(10),
            argv: None,
        },
        4_000,
    );
    let fork_11 = Input::Fork {
        parent: pid(10),
        child: pid(11),
        start_ns: 4_500,
    };
    s.input_at(fork_11, 4_500);
    s.thread_exit_at(11, 11, 0, 4_900);
    assert_eq!(s.read(id), (vec![], false));
    assert_eq!(
        s.reg.tracked_count(id),
        1,
        "11 was created before the watch"
    );
    // What comes after the watch began is delivered, from its first nanosecond.
    s.input_at(
        Input::Exec {
            pid: pid(10),
            argv: None,
        },
        5_000,
    );
    let fork_12 = Input::Fork {
        parent: pid(10),
        child: pid(12),
        start_ns: 6_000,
    };
    s.input_at(fork_12, 6_000);
    s.thread_exit_at(12, 12, 3 << 8, 7_000);
    s.thread_exit_at(10, 10, 0, 8_000);
    assert_eq!(
        s.read(id),
        (
            vec![
                exec(10, 1),
                fork(10, 12, 1),
                child(12, 10),
                exit(12, 3),
                exit(10, 0)
            ],
            true
        )
    );
}

#[test]
fn an_older_stream_still_gets_what_a_newer_one_on_the_same_pid_does_not() {
    let mut s = Script::new();
    let old = s.watch_since(10, 1_000, &read_at(1_001, &[]));
    let new = s.watch_since(10, 5_000, &read_at(5_001, &[]));
    s.input_at(
        Input::Fork {
            parent: pid(10),
            child: pid(11),
            start_ns: 3_000,
        },
        3_000,
    );
    s.input_at(
        Input::Exec {
            pid: pid(11),
            argv: None,
        },
        4_000,
    );
    s.input_at(
        Input::Exec {
            pid: pid(10),
            argv: None,
        },
        6_000,
    );
    assert_eq!(
        s.read(old).0,
        vec![fork(10, 11, 1), exec(10, 1), child(11, 10), exec(11, 1)]
    );
    assert_eq!(s.read(new).0, vec![exec(10, 1)]);
    // The child the new stream never saw created is not its to end with.
    s.thread_exit_at(11, 11, 0, 7_000);
    assert_eq!(s.read(new), (vec![], false));
    assert_eq!(s.read(old), (vec![exit(11, 0)], false));
}

#[test]
fn a_non_leader_execs_old_leader_exit_from_before_the_watch_is_not_an_exit() {
    // Thread 11 of process 10 called execve just before the watch: the kernel queued the old
    // leader's exit (tid 10) and the exec; `/proc` already shows one thread, the new leader.
    let mut s = Script::new();
    let id = s.watch_since(10, 5_000, &read_at(5_001, &[]));
    s.thread_exit_at(10, 11, 0, 4_000);
    s.thread_exit_at(10, 10, 0, 4_100);
    s.input_at(
        Input::Exec {
            pid: pid(10),
            argv: None,
        },
        4_200,
    );
    assert_eq!(s.read(id), (vec![], false), "the process lives on");
    // Its program forks a thread and exits for real.
    s.input_at(
        Input::ThreadStart {
            tgid: pid(10),
            tid: 12,
        },
        6_000,
    );
    s.thread_exit_at(10, 10, 0, 7_000);
    assert_eq!(s.read(id), (vec![], false), "thread 12 still runs");
    s.thread_exit_at(10, 12, 4 << 8, 8_000);
    assert_eq!(s.read(id), (vec![exit(10, 4)], true));
}

#[test]
fn a_zombie_watched_with_its_exit_still_queued_exits_once() {
    // The kernel sent the exit message once the process was a zombie; the watch read it as one
    // and gave its `Exit` at once. The queued message then finds nothing to end.
    let mut s = Script::new();
    let id = s.reg.add_stream(pid(10), Interest::ALL, 100).unwrap();
    let mut zombie = read_at(5_001, &[]);
    zombie.zombie = Some(status(9));
    s.reg
        .attach_root(id, pid(10), Some(&zombie), st(5_000), &mut s.wake)
        .unwrap();
    s.thread_exit_at(10, 10, 9 << 8, 4_000);
    assert_eq!(s.read(id), (vec![exit(10, 9)], true));
    assert_eq!(s.reg.tracked_pids(), 0);
}

#[test]
fn a_watch_during_a_resync_of_a_tracked_pid_leaves_it_to_the_resync() {
    // Stream a tracks 10 with threads 10 and 11; the exit of 11 is lost. During the resync's
    // scan, a second watch of 10 joins the entry: the resync must still rebuild its thread
    // set (only pids it could not have listed are left alone), or 10 would never exit.
    let mut s = Script::new();
    let a = s.watch_since(10, 1_000, &read_at(1_001, &[10, 11]));
    s.reg.mark_lost(T0, &mut s.wake);
    s.reg.begin_scan();
    let mut listed_then = listed(1, 1_000, None);
    listed_then.read_at = 2_500;
    let mut snap = SystemSnapshot::new();
    snap.insert(10, listed_then);
    let b = s.watch_since(10, 3_000, &read_at(3_001, &[]));
    s.reg
        .resync(&snap, &ResyncHints::default(), st(3_500), 500, &mut s.wake);
    s.thread_exit_at(10, 10, 0, 4_000);
    assert_eq!(s.read(a), (vec![lost(10, 1), exit(10, 0)], true));
    assert_eq!(s.read(b), (vec![exit(10, 0)], true));
}

#[test]
fn a_queued_fork_of_a_pids_previous_owner_leaves_the_new_one_alone() {
    // The fork message that created the previous owner of pid 20 is still queued when 20,
    // reused, is watched: it is not about the watched process and must not end its stream.
    let mut s = Script::new();
    let mut snap = read_at(60_000_001, &[]);
    snap.start_ns = 50_000_000;
    let b = s.watch_since(20, 60_000_000, &snap);
    let old_fork = Input::Fork {
        parent: pid(7),
        child: pid(20),
        start_ns: 1_000,
    };
    s.input_at(old_fork, 1_000);
    assert_eq!(s.read(b), (vec![], false));
    assert_eq!(s.reg.tracked_count(b), 1);
}

#[test]
fn thread_messages_from_before_the_read_do_not_change_the_thread_set() {
    let mut s = Script::new();
    // `/proc` listed threads 10 and 12; thread 11 came and went before the read, thread 12
    // was created before it.
    let id = s.watch_since(10, 5_000, &read_at(5_001, &[10, 12]));
    for (input, at) in [
        (
            Input::ThreadStart {
                tgid: pid(10),
                tid: 11,
            },
            1_000,
        ),
        (
            Input::ThreadStart {
                tgid: pid(10),
                tid: 12,
            },
            2_000,
        ),
        (
            Input::ThreadExit {
                tgid: pid(10),
                tid: 11,
                code: 0,
            },
            3_000,
        ),
    ] {
        s.input_at(input, at);
    }
    // 11 is not waited for (it would never exit again), 12 is.
    s.thread_exit_at(10, 10, 0, 6_000);
    assert_eq!(s.read(id), (vec![], false));
    s.thread_exit_at(10, 12, 2 << 8, 7_000);
    assert_eq!(s.read(id), (vec![exit(10, 2)], true));
}

#[test]
fn a_resync_attaches_a_child_only_to_streams_watching_before_it_started() {
    let mut s = Script::new();
    let tick = PROC_TICK_NS;
    let old = s.watch_since(10, 1_000, &read_at(1_001, &[]));
    let new = s.watch_since(10, 100 * tick, &read_at(100 * tick + 1, &[]));
    s.reg.mark_lost(T0, &mut s.wake);
    let mut snap = SystemSnapshot::new();
    snap.insert(10, listed(1, 1_000, None));
    // 11 started two ticks before the new watch began, 12 within the tick before it (it may
    // have started after it: /proc cannot tell), 13 after it.
    snap.insert(11, listed(10, 98 * tick, None));
    snap.insert(12, listed(10, 100 * tick - tick / 2, None));
    snap.insert(13, listed(10, 101 * tick, None));
    s.reg.resync(
        &snap,
        &ResyncHints::default(),
        st(200 * tick),
        2_000,
        &mut s.wake,
    );
    let children = |evs: Vec<ProcEvent>| -> Vec<ProcEvent> {
        let mut c: Vec<_> = evs
            .into_iter()
            .filter(|e| matches!(e, ProcEvent::Child { .. }))
            .collect();
        c.sort_by_key(|e| e.pid());
        c
    };
    assert_eq!(
        children(s.read(old).0),
        vec![child(11, 10), child(12, 10), child(13, 10)]
    );
    assert_eq!(children(s.read(new).0), vec![child(12, 10), child(13, 10)]);
}

#[test]
fn a_resync_rebuilds_the_thread_set_as_of_its_read() {
    // After a loss, thread 10 of the tracked process called... nothing: a non-leader thread
    // (11) called execve in the gap. The resync reads one thread; the old leader's exit,
    // still queued behind the loss, must not end the process.
    let mut s = Script::new();
    let id = s.watch_since(10, 1_000, &read_at(1_001, &[10, 11]));
    s.reg.mark_lost(T0, &mut s.wake);
    let mut snap = SystemSnapshot::new();
    let mut now = listed(1, 1_000, None);
    now.read_at = 5_000;
    snap.insert(10, now);
    s.reg.resync(
        &snap,
        &ResyncHints::default(),
        st(5_000),
        2_000,
        &mut s.wake,
    );
    s.thread_exit_at(10, 10, 0, 4_000);
    s.input_at(
        Input::Exec {
            pid: pid(10),
            argv: None,
        },
        4_100,
    );
    let (evs, done) = s.read(id);
    assert!(!done, "{evs:?}");
    assert_eq!(
        evs.into_iter().map(untimed).collect::<Vec<_>>(),
        vec![lost(10, 1), exec(10, 1)]
    );
}

#[test]
fn a_resync_leaves_tracked_processes_it_could_not_read_alone() {
    // `/proc` mounted with `hidepid`: 11 (another user's, say after a setuid exec) exists but
    // is not in the listing; 12 is gone.
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    s.fork(10, 12);
    s.read(id);
    s.reg.mark_lost(T0, &mut s.wake);
    let mut snap = SystemSnapshot::new();
    snap.insert(10, alive());
    let hints = ResyncHints {
        unverified: [11].into(),
        ..ResyncHints::default()
    };
    s.reg
        .resync(&snap, &hints, Stamp::default(), 0, &mut s.wake);
    assert_eq!(s.read(id), (vec![lost(10, 1), exit_unknown(12)], false));
    assert_eq!(s.reg.tracked_count(id), 2);
    s.exit(11, 0);
    assert_eq!(s.read(id), (vec![exit(11, 0)], false));
}

#[test]
fn the_boot_clock_may_be_behind_the_monotonic_one_in_a_time_namespace() {
    // `unshare --time --monotonic 1000`: the monotonic clock 1,000 s ahead, the boot clock not.
    let s = 1_000_000_000u64;
    let inside = Stamp {
        mono: 1_100 * s,
        boot: 150 * s,
    };
    assert_eq!(inside.boot_ahead(), -(950 * s as i64));
    let outside = Stamp {
        mono: 100 * s,
        boot: 150 * s,
    };
    assert_eq!(outside.boot_ahead(), 50 * s as i64);
}

// Attaching with the state read outside the lock (`attach.rs`).

impl Script {
    /// Steps 1 and 3 of a `watch` apart: begins at `since`, so that inputs can come between.
    fn begin(&mut self, p: i32, interest: Interest, since: u64) -> StreamId {
        let id = self.reg.add_stream(pid(p), interest, 1 << 16).unwrap();
        let begun = self.reg.begin_attach(id, pid(p), st(since));
        assert_eq!(begun, Ok(Begin::Begun));
        id
    }

    fn finish(
        &mut self,
        id: StreamId,
        p: i32,
        snap: Option<&ProcSnapshot>,
    ) -> Result<Finish, ErrorKind> {
        self.reg.finish_attach(id, pid(p), snap, &mut self.wake)
    }
}

#[test]
fn thread_messages_during_the_read_are_replayed_on_it() {
    let mut s = Script::new();
    let id = s.begin(10, Interest::ALL, 1_000);
    // While /proc is read (at 1_200, showing thread 10 alone): thread 11 came and went before
    // the read, thread 12 came after it.
    s.input_at(
        Input::ThreadStart {
            tgid: pid(10),
            tid: 11,
        },
        1_100,
    );
    s.thread_exit_at(10, 11, 0, 1_150);
    s.input_at(
        Input::ThreadStart {
            tgid: pid(10),
            tid: 12,
        },
        1_300,
    );
    assert_eq!(
        s.finish(id, 10, Some(&read_at(1_200, &[]))),
        Ok(Finish::Done)
    );
    s.thread_exit_at(10, 10, 0, 2_000);
    assert_eq!(s.read(id), (vec![], false), "thread 12 still runs");
    s.thread_exit_at(10, 12, 5 << 8, 2_100);
    assert_eq!(s.read(id), (vec![exit(10, 5)], true));
}

#[test]
fn an_exit_during_the_read_comes_after_it() {
    let mut s = Script::new();
    let id = s.begin(10, Interest::ALL, 1_000);
    s.thread_exit_at(10, 10, 3 << 8, 1_300);
    assert_eq!(
        s.finish(id, 10, Some(&read_at(1_200, &[]))),
        Ok(Finish::Done)
    );
    assert_eq!(s.read(id), (vec![exit(10, 3)], true));
    assert_eq!(s.reg.tracked_pids(), 0);
}

#[test]
fn forks_during_the_read_are_delivered_and_followed_those_before_the_watch_are_not() {
    let mut s = Script::new();
    let id = s.begin(10, Interest::ALL, 1_000);
    let fork_at = |child: i32, at: u64| Input::Fork {
        parent: pid(10),
        child: pid(child),
        start_ns: at,
    };
    s.input_at(fork_at(19, 900), 900);
    s.input_at(fork_at(20, 1_100), 1_100);
    assert_eq!(
        s.finish(id, 10, Some(&read_at(1_200, &[]))),
        Ok(Finish::Done)
    );
    assert_eq!(s.read(id), (vec![fork(10, 20, 1), child(20, 10)], false));
    assert_eq!(s.reg.tracked_count(id), 2);
}

#[test]
fn a_failed_read_takes_the_knote_back_and_leaves_nothing() {
    let mut s = Script::new();
    let id = s.begin(10, Interest::ALL, 1_000);
    assert_eq!(s.finish(id, 10, None), Err(ErrorKind::NoSuchProcess));
    s.reg.remove_stream(id, &mut s.wake);
    assert_eq!(s.reg.tracked_pids(), 0);
    assert!(s.reg.attaching.is_empty());
    // A zombie without EXIT: the same.
    let id = s.begin(11, Interest::FORK, 1_000);
    let mut zombie = read_at(1_200, &[]);
    zombie.zombie = Some(status(0));
    assert_eq!(
        s.finish(id, 11, Some(&zombie)),
        Err(ErrorKind::NoSuchProcess)
    );
    s.reg.remove_stream(id, &mut s.wake);
    assert_eq!(s.reg.tracked_pids(), 0);
    assert!(s.reg.attaching.is_empty());
}

#[test]
fn a_second_watch_of_a_pid_being_read_waits_for_the_first() {
    let mut s = Script::new();
    let a = s.begin(10, Interest::ALL, 1_000);
    let b = s.reg.add_stream(pid(10), Interest::ALL, 1 << 16).unwrap();
    assert_eq!(s.reg.begin_attach(b, pid(10), st(1_050)), Ok(Begin::Busy));
    assert_eq!(
        s.reg.tracked_count(b),
        0,
        "nothing is linked while it waits"
    );
    s.input_at(
        Input::ThreadStart {
            tgid: pid(10),
            tid: 11,
        },
        1_300,
    );
    assert_eq!(
        s.finish(a, 10, Some(&read_at(1_200, &[]))),
        Ok(Finish::Done)
    );
    assert_eq!(s.reg.begin_attach(b, pid(10), st(1_400)), Ok(Begin::Begun));
    assert_eq!(
        s.finish(b, 10, Some(&read_at(1_450, &[10, 11]))),
        Ok(Finish::Done)
    );
    assert!(s.reg.attaching.is_empty());
    s.thread_exit_at(10, 10, 0, 2_000);
    s.thread_exit_at(10, 11, 0, 2_100);
    assert_eq!(s.read(a), (vec![exit(10, 0)], true));
    assert_eq!(s.read(b), (vec![exit(10, 0)], true));
}

#[test]
fn a_fork_of_a_pids_previous_owner_claiming_it_during_a_read_is_retired() {
    // 7 is tracked with TRACK. The previous owner of 20 was forked by 7 at 1_000 and exited at
    // 2_000; both messages are still queued when 20, now naming a process started at
    // 50_000_000, is watched, and are applied while it is read.
    let mut s = Script::new();
    let parent = s.watch_since(7, 100, &read_at(101, &[]));
    let w = s.begin(20, Interest::ALL, 60_000_000);
    let old_fork = Input::Fork {
        parent: pid(7),
        child: pid(20),
        start_ns: 1_000,
    };
    s.input_at(old_fork, 1_000);
    s.thread_exit_at(20, 20, 0, 2_000);
    let mut snap = read_at(60_000_100, &[]);
    snap.start_ns = 50_000_000;
    assert_eq!(s.finish(w, 20, Some(&snap)), Ok(Finish::Done));
    // 7's stream saw its old child come and go; it does not follow the new process.
    assert_eq!(
        s.read(parent),
        (vec![fork(7, 20, 1), child(20, 7), exit_unknown(20)], false)
    );
    s.input_at(
        Input::Exec {
            pid: pid(20),
            argv: None,
        },
        61_000_000,
    );
    assert_eq!(s.read(parent), (vec![], false));
    assert_eq!(s.read(w), (vec![exec(20, 1)], false));
    s.thread_exit_at(20, 20, 0, 62_000_000);
    assert_eq!(s.read(w), (vec![exit(20, 0)], true));
}

#[test]
fn a_failed_read_of_a_claimed_pid_keeps_only_what_the_new_process_did() {
    // The previous owner's exit (2_000) is queued; tracked 7 forks a new 20 at 50_000_000
    // while a watch of 20 reads it, and that read fails.
    let mut s = Script::new();
    let parent = s.watch_since(7, 100, &read_at(101, &[]));
    let w = s.begin(20, Interest::ALL, 49_000_000);
    s.thread_exit_at(20, 20, 0, 2_000);
    let new_fork = Input::Fork {
        parent: pid(7),
        child: pid(20),
        start_ns: 50_000_000,
    };
    s.input_at(new_fork, 50_000_000);
    s.reg.cancel_attach(w, pid(20), &mut s.wake);
    s.reg.remove_stream(w, &mut s.wake);
    assert!(s.reg.attaching.is_empty());
    assert_eq!(
        s.read(parent),
        (vec![fork(7, 20, 1), child(20, 7)], false),
        "the new 20 lives"
    );
    s.thread_exit_at(20, 20, 4 << 8, 51_000_000);
    assert_eq!(s.read(parent), (vec![exit(20, 4)], false));
}

#[test]
fn a_read_showing_a_new_owner_of_a_tracked_pid_retires_the_old_and_reads_again() {
    let mut s = Script::new();
    let old = s.watch_since(10, 1_000, &read_at(1_001, &[]));
    let new = s.begin(10, Interest::ALL, 50_000_000);
    let mut fresh = read_at(50_000_100, &[]);
    fresh.start_ns = 40_000_000;
    assert_eq!(s.finish(new, 10, Some(&fresh)), Ok(Finish::Reread));
    assert_eq!(s.read(old), (vec![exit_unknown(10)], true));
    assert_eq!(s.finish(new, 10, Some(&fresh)), Ok(Finish::Done));
    s.thread_exit_at(10, 10, 0, 60_000_000);
    assert_eq!(s.read(new), (vec![exit(10, 0)], true));
}

#[test]
fn a_thread_storm_during_the_read_asks_for_another_read() {
    let mut s = Script::new();
    let id = s.begin(10, Interest::ALL, 1_000);
    for t in 0..2_000 {
        s.input_at(
            Input::ThreadStart {
                tgid: pid(10),
                tid: 100 + t,
            },
            1_100,
        );
    }
    assert_eq!(
        s.finish(id, 10, Some(&read_at(1_050, &[]))),
        Ok(Finish::Reread)
    );
    // The second read lists every thread; nothing came during it.
    let tids: Vec<i32> = std::iter::once(10).chain(100..2_100).collect();
    assert_eq!(
        s.finish(id, 10, Some(&read_at(1_200, &tids))),
        Ok(Finish::Done)
    );
    assert_eq!(s.reg.tracked_pids(), 1);
}

#[test]
fn a_pid_claimed_by_a_parents_fork_during_a_failed_read_stays_with_the_parent() {
    let mut s = Script::new();
    let parent = s.watch_since(10, 1_000, &read_at(1_001, &[]));
    let id = s.begin(20, Interest::ALL, 2_000);
    s.input_at(
        Input::Fork {
            parent: pid(10),
            child: pid(20),
            start_ns: 2_100,
        },
        2_100,
    );
    // The read fails (as if it had raced with something); the parent's stream keeps 20.
    assert_eq!(s.finish(id, 20, None), Err(ErrorKind::NoSuchProcess));
    s.reg.remove_stream(id, &mut s.wake);
    assert!(s.reg.attaching.is_empty());
    s.thread_exit_at(20, 20, 0, 3_000);
    assert_eq!(
        s.read(parent),
        (vec![fork(10, 20, 1), child(20, 10), exit(20, 0)], false)
    );
}

#[test]
fn the_backend_is_told_of_pids_no_stream_follows_any_more() {
    let mut s = Script::new();
    let a = s.watch(10, Interest::ALL);
    let b = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    s.fork(10, 12);
    s.exit(12, 0);
    s.reg.remove_stream(a, &mut s.wake);
    assert_eq!(s.wake.take_detached(), vec![], "b still follows 10 and 11");
    s.reg.remove_stream(b, &mut s.wake);
    let mut detached = s.wake.take_detached();
    detached.sort();
    // 12 has exited: there is nothing left to stop following.
    assert_eq!(detached, vec![pid(10), pid(11)]);
    assert_eq!(s.reg.tracked_pids(), 0);
    // A watch whose read found no process hands back what it began to follow.
    let c = s.begin(20, Interest::ALL, 1_000);
    assert_eq!(s.finish(c, 20, None), Err(ErrorKind::NoSuchProcess));
    assert_eq!(s.wake.take_detached(), vec![pid(20)]);
}

#[test]
fn a_resync_leaves_a_missing_process_to_the_exit_message_it_holds() {
    // 11 (one thread) and 12 (two threads) exited while the listing was taken; the backend
    // holds the leaders' exit messages. 11's status comes from its message; 12's message may
    // not be its last thread's, so the resync ends it itself.
    let mut s = Script::new();
    let id = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    s.fork(10, 12);
    s.input(Input::ThreadStart {
        tgid: pid(12),
        tid: 13,
    });
    s.read(id);
    s.reg.mark_lost(T0, &mut s.wake);
    let mut snap = SystemSnapshot::new();
    snap.insert(10, alive());
    let hints = ResyncHints {
        exits_coming: [(11, 5_000), (12, 5_000)].into(),
        ..ResyncHints::default()
    };
    s.reg
        .resync(&snap, &hints, Stamp::default(), 0, &mut s.wake);
    assert_eq!(s.read(id), (vec![lost(10, 1), exit_unknown(12)], false));
    s.exit(11, 7);
    s.exit(12, 0);
    assert_eq!(s.read(id), (vec![exit(11, 7)], false));
}

impl Script {
    /// Like [`Script::read`] for a holding stream: the events, and the pids it now holds.
    fn read_holding(&mut self, id: StreamId) -> (Vec<ProcEvent>, Vec<Pid>) {
        let mut out = VecDeque::new();
        let mut held = Vec::new();
        while self.reg.pop_holding(id, &mut out, 1000, None, &mut held) == PopStatus::Ready {}
        (out.into_iter().map(untimed).collect(), held)
    }

    fn released(&mut self) -> Vec<Pid> {
        self.wake.take_released()
    }
}

#[test]
fn a_held_child_is_released_once_every_holding_stream_moved_past_it() {
    let mut s = Script::new();
    let a = s.watch(10, Interest::ALL | Interest::HOLD);
    let b = s.watch(10, Interest::ALL | Interest::HOLD);
    let plain = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    s.input(Input::Hold { pid: pid(11) });
    assert_eq!(s.released(), vec![], "two streams hold it");
    // The plain stream reads it without holding anything.
    let (evs, _) = s.read(plain);
    assert_eq!(evs, vec![fork(10, 11, 1), child(11, 10)]);
    // `a` reads it: the hold moves to `a`'s consumer, and is given back.
    let (evs, held) = s.read_holding(a);
    assert_eq!(evs, vec![fork(10, 11, 1), child(11, 10)]);
    assert_eq!(held, vec![pid(11)]);
    s.reg.release(&held, &mut s.wake);
    assert_eq!(s.released(), vec![], "b still holds it");
    // `b` is dropped before reading it: its hold goes with it.
    s.reg.remove_stream(b, &mut s.wake);
    assert_eq!(s.released(), vec![pid(11)]);
    // Released once only, whatever comes after.
    s.reg.release(&[pid(11)], &mut s.wake);
    assert_eq!(s.released(), vec![]);
}

#[test]
fn a_hold_nobody_takes_is_released_at_once() {
    let mut s = Script::new();
    let plain = s.watch(10, Interest::ALL);
    let no_exec = s.watch(10, Interest::TRACK | Interest::HOLD);
    s.exec(10);
    s.input(Input::Hold { pid: pid(10) });
    // Neither stream delivers this `Exec` with a hold: one does not hold, the other does
    // not want execs.
    assert_eq!(s.released(), vec![pid(10)]);
    assert_eq!(s.read(plain).0, vec![exec(10, 1)]);
    assert_eq!(s.read_holding(no_exec), (vec![], vec![]));
    // A process nobody tracks (a child nobody follows) is let go too.
    s.input(Input::Hold { pid: pid(99) });
    assert_eq!(s.released(), vec![pid(99)]);
}

#[test]
fn an_exec_hold_is_taken_by_the_stream_that_delivers_the_exec() {
    let mut s = Script::new();
    let a = s.watch(10, Interest::ALL | Interest::HOLD);
    s.exec(10);
    s.input(Input::Hold { pid: pid(10) });
    assert_eq!(s.released(), vec![]);
    let (evs, held) = s.read_holding(a);
    assert_eq!(evs, vec![exec(10, 1)]);
    assert_eq!(held, vec![pid(10)]);
    // Read again with nothing new: no second hold.
    assert_eq!(s.read_holding(a), (vec![], vec![]));
    s.reg.release(&held, &mut s.wake);
    assert_eq!(s.released(), vec![pid(10)]);
}

impl Script {
    fn hold_changes(&mut self) -> Vec<(Pid, bool)> {
        std::mem::take(&mut self.wake.hold_changes)
    }
}

#[test]
fn hold_coming_or_going_tells_the_backend_which_processes_to_hold() {
    let mut s = Script::new();
    let a = s.watch(10, Interest::ALL);
    s.fork(10, 11);
    let b = s.watch(11, Interest::ALL);
    // `a` starts holding: both its processes, from now on.
    s.reg
        .set_interest(a, Interest::ALL | Interest::HOLD, &mut s.wake);
    let mut changes = s.hold_changes();
    changes.sort();
    assert_eq!(changes, vec![(pid(10), true), (pid(11), true)]);
    // Setting it again changes nothing.
    s.reg
        .set_interest(a, Interest::ALL | Interest::HOLD, &mut s.wake);
    assert_eq!(s.hold_changes(), vec![]);
    // `b` holds 11 too; `a` stops holding: 10 is held by no one, 11 still by `b`.
    s.reg
        .set_interest(b, Interest::ALL | Interest::HOLD, &mut s.wake);
    assert_eq!(s.hold_changes(), vec![], "11 is held already");
    s.reg.set_interest(a, Interest::ALL, &mut s.wake);
    assert_eq!(s.hold_changes(), vec![(pid(10), false)]);
    s.reg.set_interest(b, Interest::EXIT, &mut s.wake);
    assert_eq!(s.hold_changes(), vec![(pid(11), false)]);
}

/// One stream attached to several processes, as `watch_system` makes it: each attach links
/// one more root; the stream keeps the start of its first attach, takes in once what `TRACK`
/// brought, refuses a process beyond its limit, and ends only when the last one is gone.
#[test]
fn one_stream_with_many_roots() {
    let mut s = Script::new();
    let id = s
        .reg
        .add_stream(pid(1), Interest::ALL | Interest::TRACK, 3)
        .unwrap();
    let attach = |s: &mut Script, p: i32, since: u64| {
        let begun = s.reg.begin_attach(id, pid(p), st(since));
        if begun == Ok(Begin::Begun) {
            let mut snap = read_at(since + 1, &[]);
            snap.start_ns = 0;
            assert_eq!(s.finish(id, p, Some(&snap)), Ok(Finish::Done));
        }
        begun
    };
    assert_eq!(attach(&mut s, 1, 1_000), Ok(Begin::Begun));
    assert_eq!(attach(&mut s, 2, 3_000), Ok(Begin::Begun));
    // Forked by 1 between the two attaches, and applied after the second: not lost.
    s.input_at(
        Input::Fork {
            parent: pid(1),
            child: pid(5),
            start_ns: 0,
        },
        2_000,
    );
    assert_eq!(s.reg.tracked_count(id), 3);
    // The listing shows 5 too: the stream follows it already.
    assert_eq!(attach(&mut s, 5, 4_000), Ok(Begin::Already));
    // Full: a listed process is refused, a child is a TrackErr on its parent.
    assert_eq!(attach(&mut s, 7, 5_000), Ok(Begin::Full));
    s.input_at(
        Input::Fork {
            parent: pid(2),
            child: pid(8),
            start_ns: 0,
        },
        6_000,
    );
    let (events, done) = s.read(id);
    assert!(!done);
    assert_eq!(events.len(), 4, "{events:?}");
    assert_eq!(events[..3], [fork(1, 5, 1), child(5, 1), fork(2, 8, 1)]);
    assert!(
        matches!(events[3], ProcEvent::TrackErr { pid: p, child: c, reason: TrackErrReason::Limit, .. } if p == pid(2) && c == pid(8)),
        "{events:?}"
    );
    for (p, at) in [(1, 7_000), (5, 7_100)] {
        s.thread_exit_at(p, p, 0, at);
        let (events, done) = s.read(id);
        assert_eq!((events, done), (vec![exit(p, 0)], false));
    }
    s.thread_exit_at(2, 2, 0, 7_200);
    assert_eq!(s.read(id), (vec![exit(2, 0)], true));
}
