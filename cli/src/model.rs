//! What the tool knows about the processes of a run: a tree of records, one per process seen,
//! and how each one ended.

use crate::procfs::{read_comm, Cmdline};
use crate::text::format_argv;
use procwatch::{Pid, ProcEvent};
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

/// The exit code a shell would give for `status`.
pub fn shell_exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        (None, None) => 1,
    }
}

/// One process seen during the run.
pub struct Proc {
    pub pid: Pid,
    /// Its parent's pid, where known.
    pub ppid: Option<Pid>,
    /// Index of its parent's record, if the parent is in the tree.
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    pub depth: usize,
    /// Its last known command line: inherited from the parent until it execs.
    pub argv: Vec<String>,
    /// Whether `argv` was read from this process itself (after an exec, or at the start).
    pub own_argv: bool,
    /// Whether it executed a program while we watched.
    pub execed: bool,
    /// When it executed programs while we watched, relative to the start of the run.
    pub exec_times: Vec<Duration>,
    /// When it appeared, relative to the start of the run.
    pub seen: Duration,
    /// Whether it was already running when we started watching.
    pub pre_existing: bool,
    pub end: Option<End>,
}

pub struct End {
    pub at: Duration,
    pub status: Option<ExitStatus>,
}

impl Proc {
    /// Takes what `/proc` said as its own command line (keeping the old one if it said
    /// nothing).
    pub fn set_cmdline(&mut self, cmdline: &Cmdline) {
        match cmdline {
            Cmdline::Argv(argv) => self.argv.clone_from(argv),
            Cmdline::Comm(name) => self.argv = vec![name.clone()],
            Cmdline::Gone => return,
        }
        self.own_argv = true;
    }

    pub fn lifetime(&self, now: Duration) -> Duration {
        self.end
            .as_ref()
            .map_or(now, |end| end.at)
            .saturating_sub(self.seen)
    }

    pub fn outcome(&self) -> Outcome {
        self.end
            .as_ref()
            .map_or(Outcome::Running, |end| Outcome::of(end.status))
    }

    /// Its program's base name, e.g. `cc1` for `/usr/lib/gcc/.../cc1`; `?` if it executed
    /// something we could not see in time.
    pub fn program(&self) -> &str {
        match self.argv.first() {
            Some(path) if self.own_argv || !self.execed => path.rsplit('/').next().unwrap_or(path),
            _ => "?",
        }
    }

    /// The short command line shown in the summary.
    pub fn label(&self) -> String {
        match (self.own_argv, self.execed) {
            (true, _) => format_argv(&self.argv, true),
            (false, true) => "? (gone before its argv was read)".into(),
            (false, false) => format!("{} (fork)", self.program()),
        }
    }
}

/// Every process seen, in order of appearance, plus a few counters.
#[derive(Default)]
pub struct Tree {
    pub procs: Vec<Proc>,
    /// The latest record of each pid. It stays after the exit: a parent's `Exit` may be read
    /// before the `Child` of a process it created, and a reused pid gets a new record.
    pub by_pid: HashMap<Pid, usize>,
    /// How many processes have not exited yet, and the most there were at once.
    pub alive: usize,
    pub peak_alive: usize,
    pub not_followed: u64,
    pub lost: u64,
}

impl Tree {
    pub fn add(&mut self, pid: Pid, ppid: Option<Pid>, argv: Vec<String>, at: Duration) -> usize {
        let parent = ppid.and_then(|p| self.by_pid.get(&p).copied());
        let depth = parent.map_or(0, |p| self.procs[p].depth + 1);
        let idx = self.procs.len();
        self.procs.push(Proc {
            pid,
            ppid,
            parent,
            children: Vec::new(),
            depth,
            argv,
            own_argv: false,
            execed: false,
            exec_times: Vec::new(),
            seen: at,
            pre_existing: false,
            end: None,
        });
        if let Some(p) = parent {
            self.procs[p].children.push(idx);
        }
        self.by_pid.insert(pid, idx);
        self.alive += 1;
        self.peak_alive = self.peak_alive.max(self.alive);
        idx
    }

    /// The record of `pid`, made up on the spot if it was never announced.
    pub fn get(&mut self, pid: Pid, at: Duration) -> usize {
        match self.by_pid.get(&pid) {
            Some(&idx) => idx,
            None => self.add(pid, None, read_comm(pid).into_iter().collect(), at),
        }
    }

    /// Records what `ev` says; returns the index of the record of the process it is about.
    pub fn apply(&mut self, ev: &ProcEvent, cmdline: Option<&Cmdline>, at: Duration) -> usize {
        match *ev {
            ProcEvent::Child { pid, parent, .. } => {
                let inherited = self
                    .by_pid
                    .get(&parent)
                    .map(|&p| self.procs[p].argv.clone());
                self.add(pid, Some(parent), inherited.unwrap_or_default(), at)
            }
            ProcEvent::Exec { pid, .. } => {
                let idx = self.get(pid, at);
                self.procs[idx].execed = true;
                self.procs[idx].exec_times.push(at);
                if let Some(cmdline) = cmdline {
                    self.procs[idx].set_cmdline(cmdline);
                }
                idx
            }
            ProcEvent::Exit { pid, status, .. } => {
                let idx = self.get(pid, at);
                if self.procs[idx].end.is_none() {
                    self.alive -= 1;
                }
                self.procs[idx].end = Some(End { at, status });
                idx
            }
            ProcEvent::TrackErr { pid, count, .. } => {
                self.not_followed += u64::from(count);
                self.get(pid, at)
            }
            ProcEvent::Lost { pid, count, .. } => {
                self.lost += u64::from(count);
                self.get(pid, at)
            }
            _ => self.get(ev.pid(), at),
        }
    }

    /// The processes still running, oldest first.
    pub fn still_running(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().filter(|p| p.end.is_none())
    }
}

/// How a process ended, as far as we know.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Exited(i32),
    Killed { signal: i32, core: bool },
    Unknown,
    Running,
}

impl Outcome {
    pub fn of(status: Option<ExitStatus>) -> Outcome {
        match status.map(|s| (s.code(), s.signal(), s.core_dumped())) {
            Some((Some(code), _, _)) => Outcome::Exited(code),
            Some((None, Some(signal), core)) => Outcome::Killed { signal, core },
            _ => Outcome::Unknown,
        }
    }

    /// As a live line says it: `exit 3`, `killed by SIGSEGV (core dumped)`.
    pub fn describe(self) -> String {
        match self {
            Outcome::Exited(code) => format!("exit {code}"),
            Outcome::Killed {
                signal,
                core: false,
            } => format!("killed by {}", signal_name(signal)),
            Outcome::Killed { signal, core: true } => {
                format!("killed by {} (core dumped)", signal_name(signal))
            }
            Outcome::Unknown => "status unknown".into(),
            Outcome::Running => "running".into(),
        }
    }

    /// As the summary's status column says it: `exit 3`, `SIGSEGV, core`.
    pub fn short(self) -> String {
        match self {
            Outcome::Killed { signal, core } => {
                format!(
                    "{}{}",
                    signal_name(signal),
                    if core { ", core" } else { "" }
                )
            }
            Outcome::Unknown => "unknown".into(),
            other => other.describe(),
        }
    }
}

/// `SIGKILL` for 9, `signal 42` for numbers without a common name.
pub fn signal_name(signal: i32) -> String {
    const NAMES: [(i32, &str); 24] = [
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    match NAMES.iter().find(|(n, _)| *n == signal) {
        Some((_, name)) => (*name).to_owned(),
        None => format!("signal {signal}"),
    }
}
