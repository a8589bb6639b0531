//! The live view: one aligned line per event, as it happens.

use crate::model::Tree;
use crate::procfs::Cmdline;
use crate::style::{Style, BLUE, CYAN, DIM, RED};
use crate::text::{cmdline_text, format_clock, format_duration};
use procwatch::{Pid, ProcEvent};
use std::time::Duration;

/// Fewest characters of a command line shown, however deep the process or narrow the line.
pub const MIN_ARGV_WIDTH: usize = 40;
/// Width of the time, pid and ppid columns at the start of a live line, spaces included.
const PREFIX_WIDTH: usize = 11 + 1 + 7 + 1 + 7 + 2;
/// Deepest indentation shown, in tree levels; deeper processes line up at this depth.
pub const MAX_INDENT: usize = 12;

impl Style {
    /// The column titles.
    pub fn header(&self) -> String {
        let header = format!("{:>11} {:>7} {:>7}  event", "time", "pid", "ppid");
        self.paint(DIM, &header)
    }

    /// Room left for a command line after the prefix, the indentation and `verb`.
    pub fn argv_width(&self, depth: usize, verb: &str) -> usize {
        let used = PREFIX_WIDTH + 2 * depth.min(MAX_INDENT) + verb.chars().count();
        self.width.saturating_sub(used).max(MIN_ARGV_WIDTH)
    }

    /// `+   0.412ms    1234    1200  ` and the indentation for `depth`.
    pub fn prefix(
        &self,
        at: Duration,
        pid: Option<Pid>,
        ppid: Option<Pid>,
        depth: usize,
    ) -> String {
        use std::fmt::Write;
        let mut line = String::with_capacity(64 + 2 * MAX_INDENT);
        line += &self.paint(DIM, &format_clock(at));
        let _ = match pid {
            Some(pid) => write!(line, " {:>7} ", pid.as_raw()),
            None => write!(line, " {:7} ", ""),
        };
        let ppid = match ppid {
            Some(ppid) => format!("{:>7}", ppid.as_raw()),
            None => " ".repeat(7),
        };
        line += &self.paint(DIM, &ppid);
        let indent = 2 + 2 * depth.min(MAX_INDENT);
        line.extend(std::iter::repeat_n(' ', indent));
        line
    }

    /// The live line for `ev` (`None` for events not worth a line of their own).
    pub fn event_line(
        &self,
        tree: &Tree,
        idx: usize,
        ev: &ProcEvent,
        cmdline: Option<&Cmdline>,
        at: Duration,
    ) -> Option<String> {
        let proc = &tree.procs[idx];
        let what = match *ev {
            ProcEvent::Child { parent, .. } => {
                let name = match proc.parent {
                    Some(p) => tree.procs[p].program().to_owned(),
                    None => parent.to_string(),
                };
                format!("{} of {name}", self.paint(CYAN, "child"))
            }
            ProcEvent::Exec { count, .. } => {
                let verb = if count > 1 {
                    format!("exec ×{count}")
                } else {
                    "exec".into()
                };
                let width = self.argv_width(proc.depth, &verb) - 1;
                let args = cmdline.map_or_else(String::new, |c| cmdline_text(c, width));
                format!("{} {args}", self.paint(BLUE, &verb))
            }
            ProcEvent::Exit { .. } => {
                let outcome = proc.outcome();
                format!(
                    "{}  {} after {}",
                    self.paint(Style::of_outcome(outcome), &outcome.describe()),
                    proc.program(),
                    format_duration(proc.lifetime(at)),
                )
            }
            // Every child has a `Child` line of its own (or a `TrackErr` line saying why not),
            // so a fork line, folded or not, would only repeat it.
            ProcEvent::Fork { .. } => return None,
            ProcEvent::TrackErr {
                child,
                reason,
                count,
                ..
            } => {
                let many = if count > 1 {
                    format!(" and {} before it", count - 1)
                } else {
                    String::new()
                };
                let text = format!("cannot follow child {child}{many}: {reason}");
                self.paint(RED, &text)
            }
            ProcEvent::Lost { count, .. } => {
                let text = format!("lost kernel events ({count}×); resyncing from /proc");
                self.paint(RED, &text)
            }
            // An event this version does not know: nothing to say about it.
            _ => return None,
        };
        Some(self.prefix(at, Some(proc.pid), proc.ppid, proc.depth) + &what)
    }
}
