//! What we know, and where it goes: the tree of the run, fed event by event, written as live
//! lines and a summary on stderr or as JSON lines on stdout.

use crate::filter::Filter;
use crate::json::{self, JsonOut};
use crate::live_tree::LiveTree;
use crate::model::{Proc, Tree};
use crate::procfs::Cmdline;
use crate::style::{Style, BOLD, DIM};
use crate::text::{cmdline_text, plural};
use procwatch::{Pid, ProcEvent, Timestamp};
use std::io::Write;
use std::process::ExitStatus;
use std::time::Duration;

/// How many of the processes still running to name when the command itself exits.
const SURVIVORS_SHOWN: usize = 3;

/// Queued output is written out once it reaches this many bytes, even within a batch.
const FLUSH_AT: usize = 64 * 1024;

pub struct Report {
    /// Time zero, on the clock of the kernel's event timestamps.
    start: Timestamp,
    tree: Tree,
    sink: Sink,
    /// Which event lines are printed (all of them are recorded).
    filter: Filter,
    /// With `--tree` on a terminal: the live tree, in place of the event lines.
    live: Option<LiveTree>,
    /// Event lines for stderr not written yet: [`Report::flush`] writes them at once, after
    /// each batch of events that were ready together.
    pending: Vec<u8>,
}

enum Sink {
    /// Aligned lines on stderr, one per event, then a summary tree.
    Human(Style),
    /// One JSON object per event on stdout.
    Json(JsonOut),
}

impl Report {
    /// `tree`: draw the live tree instead of the event lines if stderr is a terminal (never
    /// with `json`).
    pub fn new(json: bool, tree: bool, filter: Filter) -> Report {
        let mut live = None;
        let sink = if json {
            Sink::Json(JsonOut::stdout())
        } else {
            let style = Style::for_stderr();
            if tree {
                live = LiveTree::for_stderr(style.colour);
            }
            Sink::Human(style)
        };
        Report {
            start: Timestamp::now(),
            tree: Tree::default(),
            sink,
            filter,
            live,
            pending: Vec::new(),
        }
    }

    /// Writes the lines of the events reported since the last flush, in one write.
    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            let _ = std::io::stderr().lock().write_all(&self.pending);
            self.pending.clear();
        }
        if let Sink::Json(out) = &mut self.sink {
            out.flush();
        }
    }

    /// Queues one line for stderr, writing the queue out once it is large.
    fn queue_line(&mut self, line: &str) {
        push_line(&mut self.pending, line);
        if self.pending.len() >= FLUSH_AT {
            self.flush();
        }
    }

    /// Whether the live tree is drawn (then [`Report::tick`] wants calling every
    /// [`crate::live_tree::FRAME_INTERVAL`]).
    pub fn is_live_tree(&self) -> bool {
        self.live.is_some()
    }

    /// Redraws the live tree if it changed (at most once per frame interval).
    pub fn tick(&mut self) {
        let now = self.start.elapsed();
        if let Some(live) = &mut self.live {
            live.tick(&self.tree, now);
        }
    }

    pub fn is_json(&self) -> bool {
        matches!(self.sink, Sink::Json(_))
    }

    /// Everything recorded so far.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Everything recorded so far, to change before the summary (`--system` keeps only the
    /// processes born during the run).
    pub fn tree_mut(&mut self) -> &mut Tree {
        &mut self.tree
    }

    /// Time since the start of the run.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Makes "now" time zero.
    pub fn restart_clock(&mut self) {
        self.start = Timestamp::now();
    }

    /// Records the process at the root of the tree; `pre_existing` when we attached to it.
    ///
    /// A command we started is stamped at time zero (the clock restarted just before we
    /// started it), so its `start` line is never later than its first `exec`.
    pub fn begin(&mut self, pid: Pid, ppid: Option<Pid>, cmdline: Cmdline, pre_existing: bool) {
        let at = if pre_existing {
            self.start.elapsed()
        } else {
            Duration::ZERO
        };
        let idx = self.tree.add(pid, ppid, Vec::new(), at);
        let root = &mut self.tree.procs[idx];
        root.set_cmdline(&cmdline);
        root.pre_existing = pre_existing;
        let shown = self.filter.shows_found(root);
        if let Some(live) = &mut self.live {
            live.draw(&self.tree, at);
            return;
        }
        match &mut self.sink {
            Sink::Human(style) => {
                let mut text = style.header();
                if pre_existing && shown {
                    text.push('\n');
                    text += &style.prefix(at, Some(pid), ppid, 0);
                    text += &style.paint(BOLD, "watching");
                    let width = style.argv_width(0, "watching ");
                    text += &format!(" {}", cmdline_text(&cmdline, width));
                }
                push_line(&mut self.pending, &text);
            }
            Sink::Json(out) if shown => out.write(at, "start", pid, json::found(ppid, &cmdline)),
            Sink::Json(_) => {}
        }
        self.flush();
    }

    /// Records a descendant of the root that was already running when the watch began.
    pub fn adopt(&mut self, pid: Pid, parent: Pid, cmdline: Cmdline) {
        let at = self.start.elapsed();
        let idx = self.tree.add(pid, Some(parent), Vec::new(), at);
        let proc = &mut self.tree.procs[idx];
        proc.set_cmdline(&cmdline);
        proc.pre_existing = true;
        let depth = proc.depth;
        if let Some(live) = &mut self.live {
            live.changed();
            return;
        }
        if !self.filter.shows_found(proc) {
            return;
        }
        match &mut self.sink {
            Sink::Human(style) => {
                let width = style.argv_width(depth, "running ");
                let line = style.prefix(at, Some(pid), Some(parent), depth)
                    + &style.paint(BOLD, "running")
                    + " "
                    + &cmdline_text(&cmdline, width);
                self.queue_line(&line);
            }
            Sink::Json(out) => out.write(at, "running", pid, json::found(Some(parent), &cmdline)),
        }
    }

    /// Records one event and queues its line (see [`Report::flush`]).
    pub fn event(&mut self, ev: ProcEvent) {
        // The kernel's time of the event, not the time we read it: under load the two differ.
        let at = if ev.at().is_known() {
            ev.at().duration_since(self.start)
        } else {
            self.start.elapsed()
        };
        let cmdline = match &ev {
            // Read by the library right after the exec (Interest::ARGV); /proc only without.
            ProcEvent::Exec {
                argv: Some(argv), ..
            } if !argv.is_empty() => Some(Cmdline::Argv(
                argv.iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
            )),
            ProcEvent::Exec { pid, .. } => Some(self.exec_cmdline(*pid)),
            _ => None,
        };
        let idx = self.tree.apply(&ev, cmdline.as_ref(), at);
        match &mut self.sink {
            Sink::Human(style) if self.live.is_some() => {
                let live = self.live.as_mut().expect("checked just above");
                live.changed();
                // The tree shows forks, execs and exits; other lines (events not followed or
                // lost) are printed above it.
                if !matches!(
                    ev,
                    ProcEvent::Child { .. } | ProcEvent::Exec { .. } | ProcEvent::Exit { .. }
                ) {
                    if let Some(line) = style.event_line(&self.tree, idx, &ev, cmdline.as_ref(), at)
                    {
                        // Nothing is queued while the live tree is drawn: lines go out at once.
                        live.clear();
                        write_stderr(&line);
                    }
                }
            }
            _ if !self.filter.shows(&self.tree.procs[idx], &ev) => {}
            Sink::Human(style) => {
                if let Some(line) = style.event_line(&self.tree, idx, &ev, cmdline.as_ref(), at) {
                    push_line(&mut self.pending, &line);
                    if self.pending.len() >= FLUSH_AT {
                        self.flush();
                    }
                }
            }
            Sink::Json(out) => {
                let (kind, fields) = json::event(&self.tree.procs[idx], &ev, cmdline.as_ref(), at);
                out.write(at, kind, ev.pid(), fields);
            }
        }
        if idx == 0 && matches!(ev, ProcEvent::Exit { .. }) {
            self.note_survivors();
        }
    }

    /// What `pid` executed, read at once (it may be gone already).
    fn exec_cmdline(&self, pid: Pid) -> Cmdline {
        let read = Cmdline::read(pid);
        match (read, self.tree.procs.first()) {
            // The first exec of the command we started ran exactly the argv we gave it.
            (Cmdline::Comm(_) | Cmdline::Gone, Some(root))
                if root.pid == pid && !root.execed && !root.pre_existing =>
            {
                Cmdline::Argv(root.argv.clone())
            }
            (read, _) => read,
        }
    }

    /// Says which processes keep the tree alive after its root exited.
    fn note_survivors(&mut self) {
        let running: Vec<&Proc> = self.tree.still_running().collect();
        if running.is_empty() {
            return;
        }
        let mut names: Vec<String> = (running.iter().take(SURVIVORS_SHOWN))
            .map(|p| format!("{} {}", p.pid, p.program()))
            .collect();
        if running.len() > SURVIVORS_SHOWN {
            names.push(format!("{} more", running.len() - SURVIVORS_SHOWN));
        }
        self.note(&format!(
            "waiting for {} still running: {}",
            plural(running.len(), "process", "processes"),
            names.join(", ")
        ));
    }

    /// A remark of procwatch's own, between the event lines.
    pub fn note(&mut self, text: &str) {
        self.flush();
        if let Some(live) = &mut self.live {
            live.clear();
            live.changed();
        }
        match &self.sink {
            Sink::Human(style) => {
                let at = self.start.elapsed();
                let line = style.prefix(at, None, None, 0) + &style.paint(DIM, text);
                write_stderr(&line);
            }
            Sink::Json(_) => write_stderr(&format!("procwatch: {text}")),
        }
    }

    /// Prints the summary; `status` is the command's, as `wait` reported it.
    pub fn finish(&mut self, status: Option<ExitStatus>) {
        self.flush();
        let wall = self.start.elapsed();
        if let Some(live) = &mut self.live {
            live.clear();
        }
        match &mut self.sink {
            Sink::Human(style) => write_stderr(&style.summary(&self.tree, wall, status)),
            Sink::Json(out) => {
                let root = self.tree.procs.first().map_or(Pid::this(), |p| p.pid);
                out.write(wall, "summary", root, json::summary(&self.tree, status));
                out.flush();
            }
        }
    }
}

/// Writes `text` and a newline to stderr at once.
fn write_stderr(text: &str) {
    let mut line = Vec::with_capacity(text.len() + 1);
    push_line(&mut line, text);
    let _ = std::io::stderr().lock().write_all(&line);
}

fn push_line(buf: &mut Vec<u8>, text: &str) {
    buf.extend_from_slice(text.as_bytes());
    buf.push(b'\n');
}
