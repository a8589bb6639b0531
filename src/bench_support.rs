//! Entry points for the crate's own benchmarks (`benches/`). Not part of the API: hidden from
//! the docs, exempt from semver, and may change with any release.

use crate::backend::netlink::wire;
use crate::registry::{Input, PopStatus, ProcSnapshot, Registry, Stamp, StreamId, Wakeups};
use crate::{Interest, Pid, ProcEvent};
use std::collections::VecDeque;

/// The registry, driven with scripted inputs and no kernel.
pub struct ScriptedRegistry {
    reg: Registry,
    wake: Wakeups,
}

/// A stream of a [`ScriptedRegistry`].
#[derive(Copy, Clone, Debug)]
pub struct ScriptedStream(StreamId);

impl Default for ScriptedRegistry {
    fn default() -> Self {
        ScriptedRegistry {
            reg: Registry::new(),
            wake: Wakeups::default(),
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
            .attach_root(id, pid(root), Some(&snap), &mut self.wake)
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
        self.reg
            .apply_at(Input::Exec { pid: pid(p) }, stamp(at_ns), &mut self.wake);
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

    /// Moves up to `max` events of `stream` into `out`; returns how many.
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
