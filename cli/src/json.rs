//! `--json`: one JSON object per line on stdout, in the schema `cli/README.md` documents.
//!
//! Every object is a [`Line`]: `t_us`, `event` and `pid`, then the fields of its event type,
//! each of them always present (`null` where unknown). Nothing is ever written as Rust
//! `Debug` text: an event type this version does not know is written as `"event":"other"`
//! with the common fields only.

use crate::model::{shell_exit_code, signal_name, Outcome, Proc, Tree};
use crate::procfs::Cmdline;
use crate::summary::Totals;
use procwatch::{Pid, ProcEvent, TrackErrReason};
use serde::Serialize;
use std::io::Write;
use std::process::ExitStatus;
use std::time::Duration;

/// One line of `--json` output.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    /// Microseconds since the start of the run; never smaller than the line before's.
    pub t_us: u64,
    /// `start`, `running`, `child`, `fork`, `exec`, `exit`, `trackerr`, `lost`, `summary` or
    /// `other`.
    pub event: &'static str,
    /// The process the line is about (for `summary`, the root of the tree).
    pub pid: i32,
    #[serde(flatten)]
    pub fields: Fields<'a>,
}

/// The fields that follow `t_us`, `event` and `pid`, by event type.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Fields<'a> {
    /// `start` (the root) and `running` (a descendant already running at `--pid`).
    Found {
        parent: Option<i32>,
        argv: Option<&'a [String]>,
        comm: Option<&'a str>,
    },
    Child {
        parent: i32,
    },
    Fork {
        child: i32,
        count: u32,
    },
    Exec {
        count: u32,
        argv: Option<&'a [String]>,
        comm: Option<&'a str>,
    },
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
        signal_name: Option<String>,
        core: bool,
        lifetime_us: Option<u64>,
    },
    TrackErr {
        child: i32,
        reason: &'static str,
        count: u32,
    },
    Lost {
        count: u32,
    },
    Summary {
        processes: usize,
        failed: usize,
        killed: usize,
        unknown: usize,
        running: usize,
        not_followed: u64,
        lost: u64,
        peak_running: usize,
        exit_code: Option<u8>,
    },
    /// An event type this version does not know.
    Other {},
}

/// `argv` and `comm` as the JSON says them: the argv, or `null` and the short name left.
fn cmdline_fields(cmdline: &Cmdline) -> (Option<&[String]>, Option<&str>) {
    match cmdline {
        Cmdline::Argv(argv) => (Some(argv), None),
        Cmdline::Comm(name) => (None, Some(name)),
        Cmdline::Gone => (None, None),
    }
}

/// The fields of a `start` or `running` line.
pub fn found(parent: Option<Pid>, cmdline: &Cmdline) -> Fields<'_> {
    let (argv, comm) = cmdline_fields(cmdline);
    Fields::Found {
        parent: parent.map(Pid::as_raw),
        argv,
        comm,
    }
}

/// The event type and fields for `ev`; `proc` is the record of the process it is about.
pub fn event<'a>(
    proc: &Proc,
    ev: &ProcEvent,
    cmdline: Option<&'a Cmdline>,
    at: Duration,
) -> (&'static str, Fields<'a>) {
    match *ev {
        ProcEvent::Child { parent, .. } => (
            "child",
            Fields::Child {
                parent: parent.as_raw(),
            },
        ),
        ProcEvent::Fork { child, count, .. } => (
            "fork",
            Fields::Fork {
                child: child.as_raw(),
                count,
            },
        ),
        ProcEvent::Exec { count, .. } => {
            let (argv, comm) = cmdline_fields(cmdline.unwrap_or(&Cmdline::Gone));
            ("exec", Fields::Exec { count, argv, comm })
        }
        ProcEvent::Exit { .. } => {
            let (code, signal, core) = match proc.outcome() {
                Outcome::Exited(code) => (Some(code), None, false),
                Outcome::Killed { signal, core } => (None, Some(signal), core),
                Outcome::Unknown | Outcome::Running => (None, None, false),
            };
            let lifetime = (!proc.pre_existing).then(|| micros(proc.lifetime(at)));
            let fields = Fields::Exit {
                code,
                signal,
                signal_name: signal.map(signal_name),
                core,
                lifetime_us: lifetime,
            };
            ("exit", fields)
        }
        ProcEvent::TrackErr {
            child,
            reason,
            count,
            ..
        } => {
            let reason = match reason {
                TrackErrReason::Limit => "limit",
                TrackErrReason::Permission => "permission",
                TrackErrReason::Resources => "resources",
                _ => "other",
            };
            let fields = Fields::TrackErr {
                child: child.as_raw(),
                reason,
                count,
            };
            ("trackerr", fields)
        }
        ProcEvent::Lost { count, .. } => ("lost", Fields::Lost { count }),
        _ => ("other", Fields::Other {}),
    }
}

/// The fields of the last line: the totals, and the command's exit code.
pub fn summary(tree: &Tree, status: Option<ExitStatus>) -> Fields<'static> {
    let totals = Totals::of(tree);
    Fields::Summary {
        processes: totals.processes,
        failed: totals.failed,
        killed: totals.killed,
        unknown: totals.unknown,
        running: totals.running,
        not_followed: tree.not_followed,
        lost: tree.lost,
        peak_running: tree.peak_alive,
        exit_code: status.map(shell_exit_code),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Where the lines go: stdout, until its reader goes away.
pub struct JsonOut {
    /// `None` once stdout is closed (we keep watching).
    out: Option<std::io::Stdout>,
    /// Lines not written yet (see [`JsonOut::flush`]).
    pending: Vec<u8>,
    /// `t_us` of the last line written.
    last_us: u64,
}

impl JsonOut {
    pub fn stdout() -> JsonOut {
        JsonOut {
            out: Some(std::io::stdout()),
            pending: Vec::new(),
            last_us: 0,
        }
    }

    /// Queues one line. Its time is `at`, or the previous line's if that was later: events
    /// of different processes may reach us a little out of the kernel's order, and a reader
    /// may rely on `t_us` never going back.
    pub fn write(&mut self, at: Duration, event: &'static str, pid: Pid, fields: Fields<'_>) {
        if self.out.is_none() {
            return;
        }
        self.line_into(at, event, pid, fields);
        if self.pending.len() >= 64 * 1024 {
            self.flush();
        }
    }

    /// Writes the queued lines to stdout in one write.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Some(stdout) = &mut self.out {
            let mut lock = stdout.lock();
            if lock
                .write_all(&self.pending)
                .and_then(|()| lock.flush())
                .is_err()
            {
                // The reader went away (`| head`): stop writing, keep the command running.
                self.out = None;
            }
        }
        self.pending.clear();
    }

    /// Appends one line, newline included, to the queue.
    fn line_into(&mut self, at: Duration, event: &'static str, pid: Pid, fields: Fields<'_>) {
        self.last_us = self.last_us.max(micros(at));
        let line = Line {
            t_us: self.last_us,
            event,
            pid: pid.as_raw(),
            fields,
        };
        // Plain data (numbers, strings, options) into a `Vec`: serializing it cannot fail.
        let _ = serde_json::to_writer(&mut self.pending, &line);
        self.pending.push(b'\n');
    }

    /// One line, as it would be written (without its newline).
    #[cfg(test)]
    fn line(&mut self, at: Duration, event: &'static str, pid: Pid, fields: Fields<'_>) -> String {
        self.line_into(at, event, pid, fields);
        let mut text = String::from_utf8(std::mem::take(&mut self.pending)).unwrap();
        text.pop();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(line: &str) -> Value {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn strings_are_escaped_and_fields_always_there() {
        let mut out = JsonOut {
            out: None,
            pending: Vec::new(),
            last_us: 0,
        };
        let pid = Pid::from_raw(7).unwrap();
        let cmdline = Cmdline::Argv(vec![
            "x\"\n\u{1}".into(),
            String::from_utf8_lossy(b"\xff").into(),
        ]);
        let line = out.line(
            Duration::from_micros(1500),
            "start",
            pid,
            found(None, &cmdline),
        );
        assert_eq!(
            parse(&line),
            json!({"t_us": 1500, "event": "start", "pid": 7, "parent": null,
                   "argv": ["x\"\n\u{1}", "\u{fffd}"], "comm": null})
        );
        assert!(line.starts_with(r#"{"t_us":1500,"event":"start","pid":7,"#));
        let gone = Cmdline::Comm("sh".into());
        let line = out.line(Duration::ZERO, "running", pid, found(Some(pid), &gone));
        assert_eq!(
            parse(&line),
            json!({"t_us": 1500, "event": "running", "pid": 7, "parent": 7,
                   "argv": null, "comm": "sh"})
        );
        let line = out.line(Duration::from_micros(2000), "other", pid, Fields::Other {});
        assert_eq!(
            parse(&line),
            json!({"t_us": 2000, "event": "other", "pid": 7})
        );
    }

    #[test]
    fn time_never_goes_back() {
        let mut out = JsonOut {
            out: None,
            pending: Vec::new(),
            last_us: 0,
        };
        let pid = Pid::from_raw(1).unwrap();
        let times: Vec<u64> = [5, 3, 9, 0, 12]
            .into_iter()
            .map(|us| {
                let line = out.line(
                    Duration::from_micros(us),
                    "lost",
                    pid,
                    Fields::Lost { count: 1 },
                );
                parse(&line)["t_us"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(times, [5, 5, 9, 9, 12]);
    }
}
