//! Entry points for the crate's own benchmarks (`benches/`), fuzz targets (`fuzz/`) and wire
//! tests, compiled only with the `bench-support` feature. Not part of the API: hidden from the
//! docs, exempt from semver, and may change with any release.

use crate::backend::netlink::{self, wire};
use crate::registry::{Actions, Input, PopStatus, ProcSnapshot, Registry, Stamp, StreamId};
use crate::{Interest, Pid, ProcEvent};
use std::collections::{HashSet, VecDeque};

/// The registry, driven with scripted inputs and no kernel.
pub struct ScriptedRegistry {
    reg: Registry,
    wake: Actions,
}

/// A stream of a [`ScriptedRegistry`].
#[derive(Copy, Clone, Debug)]
pub struct ScriptedStream(StreamId);

impl Default for ScriptedRegistry {
    fn default() -> Self {
        ScriptedRegistry {
            reg: Registry::new(),
            wake: Actions::default(),
        }
    }
}

impl std::fmt::Debug for ScriptedRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptedRegistry")
    }
}

/// Scripted time: the same nanoseconds on both clocks.
fn stamp(ns: u64) -> Stamp {
    Stamp { mono: ns, boot: ns }
}

fn pid(raw: i32) -> Pid {
    Pid::from_raw(raw).expect("positive pid")
}

impl ScriptedRegistry {
    /// A stream watching `root` (taken as alive, started at `start_ns`).
    pub fn watch(&mut self, root: i32, interest: Interest, start_ns: u64) -> ScriptedStream {
        let id = self
            .reg
            .add_stream(pid(root), interest, usize::MAX)
            .expect("registry open");
        let snap = ProcSnapshot {
            ppid: 1,
            start_ns,
            ..ProcSnapshot::default()
        };
        self.reg
            .attach_root(id, pid(root), Some(&snap), Stamp::default(), &mut self.wake)
            .expect("attach");
        ScriptedStream(id)
    }

    /// `parent` forked `child` at `at_ns`.
    pub fn fork(&mut self, parent: i32, child: i32, at_ns: u64) {
        let input = Input::Fork {
            parent: pid(parent),
            child: pid(child),
            start_ns: at_ns,
        };
        self.reg.apply_at(input, stamp(at_ns), &mut self.wake);
    }

    /// `tgid` created thread `tid`.
    pub fn thread(&mut self, tgid: i32, tid: i32, at_ns: u64) {
        let input = Input::ThreadStart {
            tgid: pid(tgid),
            tid,
        };
        self.reg.apply_at(input, stamp(at_ns), &mut self.wake);
    }

    /// `pid` exec'd.
    pub fn exec(&mut self, p: i32, at_ns: u64) {
        self.reg.apply_at(
            Input::Exec {
                pid: pid(p),
                argv: None,
            },
            stamp(at_ns),
            &mut self.wake,
        );
    }

    /// Thread `tid` of `tgid` exited with wait status `code`.
    pub fn exit(&mut self, tgid: i32, tid: i32, code: i32, at_ns: u64) {
        let input = Input::ThreadExit {
            tgid: pid(tgid),
            tid,
            code,
        };
        self.reg.apply_at(input, stamp(at_ns), &mut self.wake);
    }

    /// Moves events of `stream` into `out` until at least `max` were moved or none is left;
    /// returns how many. A process's pending events move together, so this can exceed `max`.
    pub fn read(
        &mut self,
        stream: ScriptedStream,
        out: &mut VecDeque<ProcEvent>,
        max: usize,
    ) -> usize {
        let before = out.len();
        let _ = self.reg.pop(stream.0, out, max, None);
        self.wake.wake_all();
        out.len() - before
    }

    /// Whether `stream` has ended.
    pub fn ended(&mut self, stream: ScriptedStream) -> bool {
        let mut out = VecDeque::new();
        self.reg.pop(stream.0, &mut out, 0, None) == PopStatus::Done
    }

    /// Distinct pids tracked now.
    pub fn tracked(&self) -> usize {
        self.reg.tracked_pids()
    }

    /// Decodes one proc-connector datagram and applies its events in order, the way the
    /// netlink backend does: the same decoder, the same mapping to registry inputs, messages
    /// that do not decode skipped. The kernel's timestamp is used on both clocks (no time
    /// namespace offset). Returns how many inputs were applied.
    pub fn feed(&mut self, datagram: &[u8]) -> usize {
        let (reg, wake) = (&mut self.reg, &mut self.wake);
        let mut n = 0;
        wire::decode_datagram(datagram, |m| {
            if let Some((input, ts)) = m.ok().and_then(netlink::to_input) {
                reg.apply_at(input, stamp(ts), wake);
                n += 1;
            }
        });
        n
    }
}

/// Decodes one proc-connector datagram; returns how many events it held.
pub fn decode(datagram: &[u8]) -> usize {
    let mut n = 0;
    wire::decode_datagram(datagram, |m| n += usize::from(m.is_ok()));
    n
}

/// A proc-connector datagram as the kernel lays it out: `what` (1 fork, 2 exec, 0x80000000
/// exit), a timestamp, and the event's 32-bit fields.
pub fn datagram(what: u32, ts_ns: u64, fields: &[u32]) -> Vec<u8> {
    wire::encode_event(what, ts_ns, fields)
}

/// Like [`decode`], and panics if the decoder breaks one of its promises: every message it
/// reports used at least a header's worth of bytes (only a final error may use none), a
/// `BadLength` ends the datagram, and every decoded event, encoded again, decodes to itself.
/// The `decode` fuzz target and the decoder's property tests run this.
pub fn check_decode(datagram: &[u8]) -> usize {
    let mut all = Vec::new();
    wire::decode_datagram(datagram, |m| all.push(m));
    assert!(
        all.len() <= datagram.len() / 16 + 1,
        "{} results from {} bytes",
        all.len(),
        datagram.len()
    );
    if let Some(i) = all
        .iter()
        .position(|m| *m == Err(wire::DecodeError::BadLength))
    {
        assert_eq!(i + 1, all.len(), "decoding went on after a bad length");
    }
    let mut ok = 0;
    for msg in all.into_iter().flatten() {
        let mut again = Vec::new();
        wire::decode_datagram(&encode_msg(msg), |m| again.push(m));
        assert_eq!(again, [Ok(msg)], "re-encoding changed the message");
        ok += 1;
    }
    ok
}

/// A datagram that decodes to `msg` and nothing else.
fn encode_msg(msg: wire::ProcMsg) -> Vec<u8> {
    use wire::{encode_event_with_ack as enc, what, ProcMsg};
    match msg {
        ProcMsg::Ack { ack, err, ts_ns } => enc(what::NONE, ts_ns, ack, &[err]),
        ProcMsg::Fork {
            parent_pid,
            parent_tgid,
            child_pid,
            child_tgid,
            ts_ns,
        } => {
            let f = [parent_pid, parent_tgid, child_pid, child_tgid].map(|v| v as u32);
            enc(what::FORK, ts_ns, 0, &f)
        }
        ProcMsg::Exec { pid, tgid, ts_ns } => enc(what::EXEC, ts_ns, 0, &[pid as u32, tgid as u32]),
        ProcMsg::Exit {
            pid,
            tgid,
            code,
            ts_ns,
        } => enc(what::EXIT, ts_ns, 0, &[pid as u32, tgid as u32, code]),
        ProcMsg::Other { what } => enc(what, 0, 0, &[]),
    }
}

/// The pid that [`check_feed`] watches; seed datagrams for the `feed` fuzz target name it.
pub const FEED_ROOT: i32 = 100;

/// Feeds `datagram` to a fresh registry with a stream watching [`FEED_ROOT`] (every interest),
/// reads a little (one process's events), feeds the same datagram again (duplicates, reused
/// pids), reads the rest, and panics if the stream broke its promises: no event about a
/// process before its `Child` (the root excepted) or after its `Exit`, one `Child` per life,
/// counts of at least one, no `Lost` (nothing was lost), and an end exactly when every
/// process it announced has exited. Returns how many events were read. The `feed` fuzz target
/// runs this.
pub fn check_feed(datagram: &[u8]) -> usize {
    let mut reg = ScriptedRegistry::default();
    let stream = reg.watch(FEED_ROOT, Interest::ALL, 1);
    let mut out = VecDeque::new();
    reg.feed(datagram);
    reg.read(stream, &mut out, 1);
    reg.feed(datagram);
    while reg.read(stream, &mut out, 16) > 0 {}
    let alive = check_lives(pid(FEED_ROOT), &out);
    assert_eq!(
        reg.ended(stream),
        alive.is_empty(),
        "the stream ends when, and only when, all its processes have exited: {out:#?}"
    );
    out.len()
}

/// Panics unless `events`, read in this order from a stream watching `root`, describe
/// processes whose lives do not overlap under one pid: `Child` opens a life, `Exit` closes it,
/// and everything else names a process that is alive. Returns those still alive.
fn check_lives(root: Pid, events: &VecDeque<ProcEvent>) -> HashSet<Pid> {
    let mut alive = HashSet::from([root]);
    for (i, ev) in events.iter().enumerate() {
        let ok = match *ev {
            ProcEvent::Child { pid, .. } => alive.insert(pid),
            ProcEvent::Exit { pid, .. } => alive.remove(&pid),
            ProcEvent::Fork { pid, count, .. }
            | ProcEvent::Exec { pid, count, .. }
            | ProcEvent::TrackErr { pid, count, .. } => count >= 1 && alive.contains(&pid),
            ProcEvent::Lost { .. } => false,
        };
        assert!(ok, "event {i} breaks the stream's order: {events:#?}");
    }
    alive
}

/// For a watcher with a backend that stops new tasks (Ptrace): how many new tasks' first
/// stops the kernel reported before their creators' events, and how many after, so far.
/// `None` for other backends, or if the backend did not answer.
pub fn first_stops(watcher: &crate::ProcWatcher) -> Option<(u64, u64)> {
    watcher.backend_impl().first_stops()
}

/// How many times a Netlink watcher's runtime task waited its batch window before reading
/// (`NetlinkOptions::batch_window`, during a storm); `None` for other backends.
pub fn windowed_reads(watcher: &crate::ProcWatcher) -> Option<u64> {
    watcher.backend_impl().windowed_reads()
}

/// How many rounds of a Netlink watcher's backstop thread found datagrams the runtime task
/// had not read, and read them; `None` for other backends.
pub fn backstop_reads(watcher: &crate::ProcWatcher) -> Option<u64> {
    watcher.backend_impl().backstop_reads()
}

/// How many exited processes the program-wide orphan table still holds (each with a pidfd)
/// until it reaps them, or sees that someone else did: for the tests that check it empties.
pub fn orphans_pending() -> usize {
    crate::orphans::orphans().pending()
}
