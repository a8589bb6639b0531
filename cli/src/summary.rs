//! The summary at the end: the tree of every process seen, with its status and lifetime, and a
//! line of totals.

use crate::live::{MAX_INDENT, MIN_ARGV_WIDTH};
use crate::model::{shell_exit_code, Outcome, Tree};
use crate::style::{Style, BOLD, DIM};
use crate::text::{format_duration, plural, truncate};
use std::fmt::Write as _;
use std::process::ExitStatus;
use std::time::Duration;

/// Widest the process column of the summary gets: status and lifetime stay near the names.
const SUMMARY_WIDTH: usize = 80;
/// Fewest look-alike sibling processes that the summary folds into one line.
const MIN_GROUP: usize = 4;

impl Style {
    /// The summary tree and the totals line.
    pub fn summary(&self, tree: &Tree, wall: Duration, status: Option<ExitStatus>) -> String {
        let rows = summary_rows(tree, wall);
        let status_width = rows
            .iter()
            .map(|r| r.outcome.short().len())
            .max()
            .unwrap_or(0);
        let room = (self.width.saturating_sub(status_width + 2 + 2 + 9))
            .clamp(MIN_ARGV_WIDTH, SUMMARY_WIDTH);
        let longest = rows
            .iter()
            .map(|r| r.left.chars().count())
            .max()
            .unwrap_or(0);
        let width = longest.min(room);
        let mut out = self.paint(DIM, "── process tree ──");
        for row in &rows {
            let mut left = row.left.clone();
            truncate(&mut left, width);
            let pad = width - left.chars().count();
            let status = format!("{:<status_width$}", row.outcome.short());
            let _ = write!(
                out,
                "\n{left}{:pad$}  {}  {:>9}",
                "",
                self.paint(Style::of_outcome(row.outcome), &status),
                row.lifetime,
            );
        }
        out.push('\n');
        out += &self.paint(BOLD, &totals_line(tree, wall, status));
        out
    }
}

/// One line of the summary tree, before alignment.
pub struct Row {
    left: String,
    outcome: Outcome,
    lifetime: String,
}

/// The summary tree, depth first, children in the order they were born.
pub fn summary_rows(tree: &Tree, now: Duration) -> Vec<Row> {
    let roots: Vec<usize> = (0..tree.procs.len())
        .filter(|&idx| tree.procs[idx].parent.is_none())
        .collect();
    let mut rows = Vec::with_capacity(tree.procs.len());
    // (the processes of one line, the glyphs before it, the glyphs before its children's lines)
    let mut stack: Vec<(&[usize], String, String)> = (line_groups(tree, &roots).into_iter())
        .rev()
        .map(|group| (group, String::new(), String::new()))
        .collect();
    while let Some((group, glyphs, inner)) = stack.pop() {
        let proc = &tree.procs[group[0]];
        if let [_, .., last] = group {
            let longest = group.iter().map(|&i| tree.procs[i].lifetime(now)).max();
            rows.push(Row {
                left: format!(
                    "{glyphs}{}…{} ×{} {}",
                    proc.pid,
                    tree.procs[*last].pid,
                    group.len(),
                    proc.label()
                ),
                outcome: proc.outcome(),
                lifetime: format!("≤{}", format_duration(longest.unwrap_or_default())),
            });
            continue; // a group is made of leaves
        }
        let lifetime = format_duration(proc.lifetime(now));
        let at_least = proc.pre_existing || proc.end.is_none();
        rows.push(Row {
            left: format!("{glyphs}{} {}", proc.pid, proc.label()),
            outcome: proc.outcome(),
            lifetime: if at_least {
                format!("≥{lifetime}")
            } else {
                lifetime
            },
        });
        let deep = proc.depth >= MAX_INDENT;
        let groups = line_groups(tree, &proc.children);
        for (n, &group) in groups.iter().enumerate().rev() {
            let (branch, below) = match (deep, n + 1 == groups.len()) {
                (true, _) => ("", ""),
                (false, true) => ("└─ ", "   "),
                (false, false) => ("├─ ", "│  "),
            };
            stack.push((group, format!("{inner}{branch}"), format!("{inner}{below}")));
        }
    }
    rows
}

/// Splits sibling processes into summary lines: a run of at least [`MIN_GROUP`] childless
/// processes with the same command line and outcome shares one line, the rest get their own.
pub fn line_groups<'a>(tree: &Tree, siblings: &'a [usize]) -> Vec<&'a [usize]> {
    let key = |idx: usize| {
        let proc = &tree.procs[idx];
        (proc.children.is_empty(), proc.label(), proc.outcome())
    };
    let mut groups = Vec::with_capacity(siblings.len());
    let mut start = 0;
    while start < siblings.len() {
        let first = key(siblings[start]);
        let mut end = start + 1;
        while first.0 && end < siblings.len() && key(siblings[end]) == first {
            end += 1;
        }
        if end - start >= MIN_GROUP {
            groups.push(&siblings[start..end]);
        } else {
            groups.extend((start..end).map(|i| &siblings[i..=i]));
        }
        start = end;
    }
    groups
}

/// How the processes of a run ended, counted.
#[derive(Default)]
pub struct Totals {
    pub processes: usize,
    pub failed: usize,
    pub killed: usize,
    pub unknown: usize,
    pub running: usize,
}

impl Totals {
    pub fn of(tree: &Tree) -> Totals {
        let mut totals = Totals {
            processes: tree.procs.len(),
            ..Totals::default()
        };
        for proc in &tree.procs {
            match proc.outcome() {
                Outcome::Exited(0) => {}
                Outcome::Exited(_) => totals.failed += 1,
                Outcome::Killed { .. } => totals.killed += 1,
                Outcome::Unknown => totals.unknown += 1,
                Outcome::Running => totals.running += 1,
            }
        }
        totals
    }
}

/// `53 processes · 1 failed · 0 killed · at most 4 at once · wall 1.23s · exit code 2`.
pub fn totals_line(tree: &Tree, wall: Duration, status: Option<ExitStatus>) -> String {
    let totals = Totals::of(tree);
    let mut parts = vec![
        plural(totals.processes, "process", "processes"),
        format!("{} failed", totals.failed),
        format!("{} killed", totals.killed),
    ];
    if totals.unknown > 0 {
        parts.push(format!("{} status unknown", totals.unknown));
    }
    if totals.running > 0 {
        parts.push(format!("{} still running", totals.running));
    }
    if tree.not_followed > 0 {
        parts.push(format!("{} not followed", tree.not_followed));
    }
    if tree.lost > 0 {
        parts.push(format!("events lost {}×", tree.lost));
    }
    parts.push(format!("at most {} at once", tree.peak_alive));
    parts.push(format!("wall {}", format_duration(wall)));
    if let Some(status) = status {
        parts.push(format!("exit code {}", shell_exit_code(status)));
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwatch::Pid;

    #[test]
    fn look_alike_leaves_share_a_summary_line() {
        let mut tree = Tree::default();
        let pid = |n| Pid::from_raw(n).unwrap();
        let at = Duration::ZERO;
        tree.add(pid(1), None, vec!["sh".into()], at);
        tree.procs[0].own_argv = true;
        for n in 2..8 {
            let idx = tree.add(pid(n), Some(pid(1)), vec!["true".into()], at);
            tree.procs[idx].own_argv = true;
        }
        tree.add(pid(8), Some(pid(1)), vec!["sh".into()], at);
        let rows: Vec<String> = summary_rows(&tree, at)
            .into_iter()
            .map(|r| r.left)
            .collect();
        assert_eq!(rows, ["1 sh", "├─ 2…7 ×6 true", "└─ 8 sh (fork)"]);
    }
}
