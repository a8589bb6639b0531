//! The live tree of `--tree`: the processes still running, pstree-like, redrawn in place on a
//! terminal (stderr) at most [`FRAME_INTERVAL`] apart.

use crate::live::MAX_INDENT;
use crate::model::Tree;
use crate::style::{Style, DIM};
use crate::text::{format_duration, plural, truncate};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Shortest time between two frames: a storm of events gives at most ten redraws a second.
pub const FRAME_INTERVAL: Duration = Duration::from_millis(100);
/// Longest time a frame stays on screen unchanged, so that the elapsed times move on.
const IDLE_REDRAW: Duration = Duration::from_secs(1);

/// The frame on screen and whether it is out of date.
pub struct LiveTree {
    /// How many lines the frame on screen has (0: none drawn, or cleared).
    shown: usize,
    /// Whether the tree changed since the last frame.
    changed: bool,
    last_draw: Option<Instant>,
    style: Style,
}

impl LiveTree {
    /// A live tree drawn on stderr, if stderr is a terminal.
    pub fn for_stderr(colour: bool) -> Option<LiveTree> {
        std::io::stderr().is_terminal().then_some(LiveTree {
            shown: 0,
            changed: true,
            last_draw: None,
            style: Style { colour, width: 0 },
        })
    }

    /// Notes that the tree changed: the next tick draws it.
    pub fn changed(&mut self) {
        self.changed = true;
    }

    /// Draws a new frame if the tree changed since the last one (or the last one is a second
    /// old) and the last one is at least [`FRAME_INTERVAL`] old.
    pub fn tick(&mut self, tree: &Tree, now: Duration) {
        let age = self.last_draw.map(|at| at.elapsed());
        let due = match age {
            None => true,
            Some(age) => {
                age >= FRAME_INTERVAL && (self.changed || self.shown == 0 || age >= IDLE_REDRAW)
            }
        };
        if due {
            self.draw(tree, now);
        }
    }

    /// Replaces the frame on screen with the tree as it is now.
    pub fn draw(&mut self, tree: &Tree, now: Duration) {
        let (width, rows) = terminal_size().unwrap_or((80, 24));
        let lines = frame(tree, now, width, rows);
        let mut text = self.erase_sequence();
        for (n, line) in lines.iter().enumerate() {
            match n {
                0 => text += &self.style.paint(DIM, line),
                _ => text += line,
            }
            text.push('\n');
        }
        write_all(&text);
        self.shown = lines.len();
        self.changed = false;
        self.last_draw = Some(Instant::now());
    }

    /// Takes the frame off the screen (before a line of text, or at the end).
    pub fn clear(&mut self) {
        if self.shown > 0 {
            write_all(&self.erase_sequence());
            self.shown = 0;
        }
    }

    /// Moves the cursor up to the first line of the frame on screen and clears from there.
    fn erase_sequence(&self) -> String {
        match self.shown {
            0 => String::new(),
            n => format!("\x1b[{n}A\r\x1b[J"),
        }
    }
}

fn write_all(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// Columns and rows of the terminal on stderr (`TIOCGWINSZ`).
fn terminal_size() -> Option<(usize, usize)> {
    let size = rustix::termios::tcgetwinsize(std::io::stderr()).ok()?;
    let (cols, rows) = (usize::from(size.ws_col), usize::from(size.ws_row));
    (cols > 0 && rows > 0).then_some((cols, rows))
}

/// The lines of one frame for a terminal of `width` columns and `rows` rows: a title line,
/// then each running process (pid, time since it started, command line) indented under its
/// nearest running ancestor, depth first, oldest first; `… N more` when they do not fit.
///
/// Lines are cut one character short of `width` (a character in the last column makes some
/// terminals wrap) and the frame keeps one row free, so that it never scrolls the screen and
/// the cursor can always be moved back to its first line.
pub fn frame(tree: &Tree, now: Duration, width: usize, rows: usize) -> Vec<String> {
    let width = width.saturating_sub(1).max(1);
    let most = rows.saturating_sub(1).max(2);
    let cut = |mut line: String| {
        truncate(&mut line, width);
        line
    };
    let mut running = Vec::new();
    let roots = (0..tree.procs.len()).filter(|&i| tree.procs[i].parent.is_none());
    let mut stack: Vec<(usize, usize)> = roots.rev().map(|i| (i, 0)).collect();
    while let Some((idx, level)) = stack.pop() {
        let proc = &tree.procs[idx];
        let alive = proc.end.is_none();
        if alive {
            running.push((idx, level));
        }
        let below = level + usize::from(alive);
        stack.extend(proc.children.iter().rev().map(|&c| (c, below)));
    }
    let mut lines = vec![cut(format!(
        "{} running · {}",
        plural(running.len(), "process", "processes"),
        format_duration(now)
    ))];
    let room = if running.len() < most {
        most - 1
    } else {
        most - 2
    };
    // At most half the width goes to indentation.
    let deepest = MAX_INDENT.min(width / 4);
    for &(idx, level) in running.iter().take(room) {
        let proc = &tree.procs[idx];
        lines.push(cut(format!(
            "{:indent$}{} {} {}",
            "",
            proc.pid,
            format_duration(proc.lifetime(now)),
            proc.label(),
            indent = 2 * level.min(deepest),
        )));
    }
    if running.len() > room {
        lines.push(cut(format!("… {} more", running.len() - room)));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use procwatch::Pid;

    fn sample() -> Tree {
        let mut tree = Tree::default();
        let pid = |n| Pid::from_raw(n).unwrap();
        let at = Duration::from_millis(5);
        let argv = |text: &str| text.split(' ').map(String::from).collect::<Vec<_>>();
        tree.add(pid(100), None, argv("/bin/sh -c build-everything"), at);
        for n in 101..106 {
            tree.add(pid(n), Some(pid(100)), argv("sleep 0.3"), at);
        }
        tree.add(
            pid(200),
            Some(pid(101)),
            argv("cc -O2 a-rather-long-file-name.c"),
            at,
        );
        for proc in &mut tree.procs {
            proc.own_argv = true;
        }
        tree
    }

    #[test]
    fn a_frame_fits_a_narrow_short_terminal() {
        let tree = sample();
        let lines = frame(&tree, Duration::from_millis(300), 20, 5);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        for line in &lines {
            assert!(line.chars().count() < 20, "{line:?}");
        }
        assert!(lines[0].starts_with("7 processes"), "{lines:#?}");
        assert!(lines[1].starts_with("100 295.0ms sh"), "{lines:#?}");
        assert!(lines[2].starts_with("  101 "), "{lines:#?}");
        assert_eq!(lines[3], "… 5 more");
    }

    #[test]
    fn exited_processes_leave_the_frame_and_their_children_move_up() {
        let mut tree = sample();
        let at = Duration::from_millis(100);
        for idx in [1, 2, 3, 4] {
            tree.procs[idx].end = Some(crate::model::End { at, status: None });
        }
        let lines = frame(&tree, at, 80, 24);
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].starts_with("3 processes running"), "{lines:#?}");
        assert!(lines[1].starts_with("100 "), "{lines:#?}");
        // 200's parent 101 is gone: it shows under 100, beside 105.
        assert!(lines[2].starts_with("  200 95.0ms cc -O2"), "{lines:#?}");
        assert!(lines[3].starts_with("  105 "), "{lines:#?}");
        assert!(lines.iter().all(|l| !l.contains("more")));
    }
}
