//! Attaching a stream to a process whose state is read outside the registry lock.
//!
//! A `watch` happens in three steps:
//!
//! 1. [`Registry::begin_attach`], under the lock: the stream's knote is linked to the pid's
//!    entry at once, so every event about the pid from then on reaches it (forks, execs,
//!    children with `TRACK`). A pid nobody tracked yet gets an entry whose thread set is not
//!    known: it waits in [`Registry::attaching`].
//! 2. The backend reads the process's state (a `/proc` read, a ptrace seize), outside the
//!    lock: the backend's own thread may need the lock meanwhile to apply what it sees.
//! 3. [`Registry::finish_attach`], under the lock, with what was read. The first read of a
//!    waiting entry builds its thread set, then replays the thread messages applied while it
//!    was being made (a message stamped before the read is already in it; see
//!    `thread_input_is_stale`). A read of an entry that is built already only confirms that
//!    the process exists.
//!
//! While an entry waits, the thread messages about it (thread creation and exit, the thread
//! side of an `execve`, a whole-process exit) are logged instead of applied: the set they
//! would change does not exist yet. The log is bounded; a process that creates threads so
//! fast that it overflows during one read is read again ([`Finish::Reread`]).
//!
//! Only one `watch` of a pid is between its steps at a time; a second one waits
//! ([`Begin::Busy`]), so what a read finds always belongs to one watch. A tracked parent's
//! fork message may name a waiting pid meanwhile: its streams follow the pid at once, and
//! if the read then shows a process that started at another time, the message was about the
//! pid's previous owner, and those streams get that process's `Exit` instead.

use super::{
    thread_input_is_stale, Actions, Input, KnoteState, Links, ProcEntry, ProcSnapshot, Registry,
    Stamp, StreamId, Threads,
};
use crate::{ErrorKind, Interest, Pid, Timestamp};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use super::knote::Knote;

/// How many thread messages about one waiting entry are kept at most.
const MAX_LOG: usize = 1024;

/// A `watch` in progress on a pid. There is at most one per pid at a time: a second `watch` of
/// the same pid waits for the first to finish ([`Begin::Busy`]), so that what a read finds
/// always belongs to one watch.
#[derive(Debug)]
pub(crate) struct Attaching {
    /// The stream being attached.
    stream: StreamId,
    /// Whether the entry waits for the read: nobody tracked the pid before, so its thread
    /// set is not known.
    pub(super) waiting: bool,
    /// Thread messages applied while the entry waits, in order, with their stamps.
    log: Vec<(Input, Stamp)>,
    /// Whether the log filled up: the read must be made again.
    overflowed: bool,
    /// The start time named by the latest fork message that made the waiting pid a tracked
    /// parent's child meanwhile (0: none). If the read shows a process started at another
    /// time, the message was about the pid's previous owner.
    pub(super) claimed_start: u64,
}

impl Attaching {
    pub(super) fn log(&mut self, input: Input, at: Stamp) {
        if self.log.len() < MAX_LOG {
            self.log.push((input, at));
        } else {
            self.overflowed = true;
        }
    }
}

/// What [`Registry::begin_attach`] did.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub(crate) enum Begin {
    /// The stream's knote is linked; read the process and finish.
    Begun,
    /// Another `watch` of this pid is between its two steps: try again in a moment.
    Busy,
    /// The stream follows this pid already (a stream with several roots, whose `TRACK` took
    /// the process in before the attach came to it): nothing to do.
    Already,
    /// The stream tracks as many processes as its limit allows: nothing was linked.
    Full,
}

/// What [`Registry::finish_attach`] decided.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The stream is attached.
    Done,
    /// Read the process again and finish with that read: too many thread messages came
    /// during this one, or the pid turned out to name a process other than the one tracked
    /// under it.
    Reread,
}

impl Registry {
    /// Starts attaching stream `id` to `pid`: step 1 of a `watch` (see the module docs).
    /// `since` is when the watch began: inputs that happened earlier never reach the stream,
    /// even if they are applied after this call (a message still unread in the kernel's
    /// queue). A stream attached to several pids (`watch_system`) keeps the `since` of its
    /// first attach: what its processes do after that reaches it, whichever was attached
    /// first, so a fork made between two attaches is not lost to the later one.
    pub(crate) fn begin_attach(
        &mut self,
        id: StreamId,
        pid: Pid,
        since: Stamp,
    ) -> Result<Begin, ErrorKind> {
        if self.closed {
            return Err(ErrorKind::Closed);
        }
        let raw = pid.as_raw();
        if self.attaching.contains_key(&raw) {
            return Ok(Begin::Busy);
        }
        let followed = self
            .procs
            .get(&raw)
            .is_some_and(|e| e.knotes.has_stream(id.idx));
        let Some(stream) = self.stream_mut(id) else {
            return Err(ErrorKind::Closed);
        };
        if followed {
            return Ok(Begin::Already);
        }
        if stream.knotes.len() >= stream.max_tracked {
            return Ok(Begin::Full);
        }
        if stream.since == Stamp::default() {
            stream.since = since;
        }
        let kid = stream
            .knotes
            .insert(Knote::new(pid, None, Timestamp::UNKNOWN));
        let waiting = match self.procs.get_mut(&raw) {
            Some(entry) => {
                entry.knotes.push(id.idx, kid);
                false
            }
            None => {
                self.insert_unread(raw, Some((id.idx, kid)));
                // A resync whose listing is being taken may not show this process yet.
                if let Some(set) = &mut self.scan_attached {
                    set.insert(raw);
                }
                true
            }
        };
        self.attaching.insert(
            raw,
            Attaching {
                stream: id,
                waiting,
                log: Vec::new(),
                overflowed: false,
                claimed_start: 0,
            },
        );
        self.tickets += 1;
        Ok(Begin::Begun)
    }

    /// Finishes attaching stream `id` to `pid` with what the backend read of it (`None`: no
    /// such process): step 3 of a `watch` (see the module docs). On an error the stream's
    /// knote is gone again; the caller removes the stream.
    pub(crate) fn finish_attach(
        &mut self,
        id: StreamId,
        pid: Pid,
        snap: Option<&ProcSnapshot>,
        wake: &mut Actions,
    ) -> Result<Finish, ErrorKind> {
        let raw = pid.as_raw();
        let closed = self.closed;
        let wants_exit = match self.stream_mut(id) {
            Some(s) if !closed => s.interest.contains(Interest::EXIT),
            _ => {
                self.abandon_attach(id, raw, wake);
                return Err(ErrorKind::Closed);
            }
        };
        let snap = match snap {
            Some(s) if s.zombie.is_none() || wants_exit => s,
            _ => {
                self.abandon_attach(id, raw, wake);
                return Err(ErrorKind::NoSuchProcess);
            }
        };
        let rec = match self.attaching.get(&raw) {
            Some(r) if r.stream == id => self.attaching.remove(&raw),
            _ => None,
        };
        let Some(rec) = rec else {
            // Not begun (or finished already): nothing of this stream's to finish.
            return Err(ErrorKind::Closed);
        };
        let Some(entry) = self.procs.get(&raw) else {
            // The process exited while it was being read (its `Exit` is in the stream's knote,
            // with the `EXIT` interest): nothing is left to attach.
            return Ok(Finish::Done);
        };
        if rec.waiting {
            if rec.overflowed {
                self.attaching.insert(
                    raw,
                    Attaching {
                        log: Vec::new(),
                        overflowed: false,
                        ..rec
                    },
                );
                return Ok(Finish::Reread);
            }
            if rec.claimed_start != 0 && !super::same_start(rec.claimed_start, snap.start_ns) {
                // A tracked parent's fork message named this pid meanwhile, but it created the
                // pid's previous owner: the streams it added follow a process that is gone.
                // They get its `Exit`; this stream keeps the process the read found.
                self.retire_others(id, pid, wake);
            }
            self.build(pid, snap, rec.log, wake);
            return Ok(Finish::Done);
        }
        if !super::same_start(entry.start_ns, snap.start_ns) {
            // Tracked under this number is a previous owner whose exit message is still
            // queued: it is certainly gone. The stream is attached to the new process afresh,
            // with a read made after this.
            let since = self.stream_mut(id).map(|s| s.since).unwrap_or_default();
            self.attaching.insert(raw, rec);
            self.abandon_attach(id, raw, wake);
            self.exit(pid, None, Timestamp::UNKNOWN, wake);
            self.begin_attach(id, pid, since)?;
            return Ok(Finish::Reread);
        }
        // Built already (tracked by another stream): the read only confirms the process. A
        // zombie's exit message is on its way to every stream on the entry.
        Ok(Finish::Done)
    }

    /// Gives up attaching stream `id` to `pid` (the read failed, or the watch gave up): takes
    /// its knote back out. The caller then removes the stream.
    pub(crate) fn cancel_attach(&mut self, id: StreamId, pid: Pid, wake: &mut Actions) {
        self.abandon_attach(id, pid.as_raw(), wake);
    }

    /// Ends every stream on `pid`'s entry but `keep`'s with an unknown exit, leaving the entry
    /// to `keep` alone.
    fn retire_others(&mut self, keep: StreamId, pid: Pid, wake: &mut Actions) {
        let raw = pid.as_raw();
        let Some(entry) = self.procs.get_mut(&raw) else {
            return;
        };
        let mine = entry.knotes.iter().find(|&(sidx, _)| sidx == keep.idx);
        entry.knotes.remove_stream(keep.idx);
        self.exit(pid, None, Timestamp::UNKNOWN, wake);
        self.insert_unread(raw, mine);
    }

    /// An entry for `raw` whose start and threads are not read yet, with one knote.
    fn insert_unread(&mut self, raw: i32, knote: Option<(u32, u32)>) {
        let mut knotes = Links::new();
        if let Some((sidx, kid)) = knote {
            knotes.push(sidx, kid);
        }
        let entry = ProcEntry {
            start_ns: 0,
            knotes,
            threads: Threads::single(),
            synced: 0,
            born_mono: 0,
        };
        self.procs.insert(raw, entry);
    }

    /// Builds the thread set of a waiting entry from the first read, then replays what was
    /// logged while the read was made.
    fn build(
        &mut self,
        pid: Pid,
        snap: &ProcSnapshot,
        log: Vec<(Input, Stamp)>,
        wake: &mut Actions,
    ) {
        let raw = pid.as_raw();
        if let Some(e) = self.procs.get_mut(&raw) {
            e.start_ns = snap.start_ns;
            e.resync_threads(raw, snap);
        }
        if let Some(status) = snap.zombie {
            // A zombie's exit time is not recorded anywhere the crate can read.
            self.exit(pid, status, Timestamp::UNKNOWN, wake);
            return;
        }
        for (input, at) in log {
            self.apply_thread_input(input, at, wake);
        }
    }

    /// Applies a thread message (or a whole-process exit) to the entry's thread set, unless
    /// the read the set comes from already reflects it.
    pub(super) fn apply_thread_input(&mut self, input: Input, stamp: Stamp, wake: &mut Actions) {
        let at = Timestamp::from_nanos(stamp.mono);
        match input {
            Input::ThreadStart { tgid, tid } => {
                if let Some(e) = self.procs.get_mut(&tgid.as_raw()) {
                    // A thread created before the read is in it, or has exited since.
                    if !thread_input_is_stale(e, stamp) {
                        e.threads.add(tgid.as_raw(), tid);
                    }
                }
            }
            Input::Exec { pid, .. } => {
                if let Some(e) = self.procs.get_mut(&pid.as_raw()) {
                    if !thread_input_is_stale(e, stamp) {
                        e.threads.exec();
                    }
                }
            }
            Input::ThreadExit { tgid, tid, code } => {
                let raw = tgid.as_raw();
                let done = match self.procs.get_mut(&raw) {
                    // Already reflected in the read the thread set comes from: the kernel
                    // sends a thread's exit message after the thread is unlisted (or, for a
                    // leader, a zombie). A leader's exit from before the read on a set that
                    // has a live leader is the old leader of a non-leader `execve`, whose pid
                    // the exec'ing thread has taken over: it says nothing about the process.
                    Some(e) if thread_input_is_stale(e, stamp) => None,
                    Some(e) => e.threads.exit(raw, tid, code),
                    None => {
                        if tid == raw && self.held.contains_key(&raw) {
                            Some(code)
                        } else {
                            None
                        }
                    }
                };
                if let Some(code) = done {
                    self.exit(tgid, Some(ExitStatus::from_raw(code)), at, wake);
                }
            }
            Input::Exit { pid, status } => self.exit(pid, status, at, wake),
            Input::Fork { .. }
            | Input::Birth { .. }
            | Input::Abandon { .. }
            | Input::Hold { .. } => {}
        }
    }

    /// Logs a thread message about an entry that waits for its read; false if it does not.
    pub(super) fn log_if_attaching(&mut self, input: &Input, at: Stamp) -> bool {
        if self.attaching.is_empty() {
            return false;
        }
        let subject = match input {
            Input::ThreadStart { tgid, .. } | Input::ThreadExit { tgid, .. } => *tgid,
            Input::Exit { pid, .. } | Input::Exec { pid, .. } => *pid,
            _ => return false,
        };
        match self.attaching.get_mut(&subject.as_raw()) {
            Some(a) if a.waiting => {
                a.log(input.clone(), at);
                true
            }
            _ => false,
        }
    }

    /// Takes stream `id`'s knote for `raw` back out of an attach that failed, and the record
    /// of the attach with it.
    fn abandon_attach(&mut self, id: StreamId, raw: i32, wake: &mut Actions) {
        let rec = match self.attaching.get(&raw) {
            Some(r) if r.stream == id => self.attaching.remove(&raw),
            _ => None,
        };
        if let Some(s) = self.stream_mut(id) {
            let mine: Vec<u32> = s
                .knotes
                .iter()
                .filter(|(_, k)| k.pid.as_raw() == raw && k.state == KnoteState::Attached)
                .map(|(kid, _)| kid)
                .collect();
            for kid in mine {
                s.knotes.remove(kid);
            }
            if let Some(entry) = self.procs.get_mut(&raw) {
                if entry.knotes.remove_stream(id.idx) {
                    self.procs.remove(&raw);
                    if let Some(pid) = Pid::from_raw(raw) {
                        wake.detached.push((pid, self.tickets));
                    }
                }
            }
        }
        // Nobody will read it now, but a tracked parent's fork claimed the waiting entry
        // meanwhile: it becomes an entry built from messages alone, as a child's, with what
        // was logged about the process the fork created (not about an earlier owner).
        let Some(rec) = rec.filter(|r| r.waiting) else {
            return;
        };
        let Some(start) = self.procs.get(&raw).map(|e| e.start_ns) else {
            return;
        };
        for (input, at) in rec.log {
            if start == 0 || at.boot == 0 || at.boot.saturating_add(super::STALE_SLACK_NS) >= start
            {
                self.apply_thread_input(input, at, wake);
            }
        }
    }

    /// Begins and finishes an attach at once, with `snap` read under the lock: what scripted
    /// tests and benches do.
    #[cfg(any(test, feature = "bench-support"))]
    pub(crate) fn attach_root(
        &mut self,
        id: StreamId,
        pid: Pid,
        snap: Option<&ProcSnapshot>,
        since: Stamp,
        wake: &mut Actions,
    ) -> Result<(), ErrorKind> {
        if self.begin_attach(id, pid, since)? != Begin::Begun {
            return Err(ErrorKind::Other);
        }
        match self.finish_attach(id, pid, snap, wake)? {
            Finish::Done => Ok(()),
            Finish::Reread => self.finish_attach(id, pid, snap, wake).map(|_| ()),
        }
    }
}
