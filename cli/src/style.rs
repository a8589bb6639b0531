//! Human output's looks: whether to colour, and how wide a line may get.

use crate::model::Outcome;
use anstyle::{AnsiColor, Effects};
use std::io::IsTerminal;
use std::os::fd::AsFd;

/// How wide lines may get when neither the terminal nor `COLUMNS` says; longer command lines
/// are cut.
const LINE_WIDTH: usize = 120;
/// Narrowest width taken from the terminal or `COLUMNS`; below it lines keep this width.
const NARROWEST: usize = 40;

pub const DIM: anstyle::Style = anstyle::Style::new().effects(Effects::DIMMED);
pub const BOLD: anstyle::Style = anstyle::Style::new().effects(Effects::BOLD);
pub const RED: anstyle::Style = AnsiColor::Red.on_default();
pub const GREEN: anstyle::Style = AnsiColor::Green.on_default();
pub const YELLOW: anstyle::Style = AnsiColor::Yellow.on_default();
pub const BLUE: anstyle::Style = AnsiColor::Blue.on_default();
pub const MAGENTA: anstyle::Style = AnsiColor::Magenta.on_default();
pub const CYAN: anstyle::Style = AnsiColor::Cyan.on_default();

/// Human output: colours (or not) and the width of lines.
pub struct Style {
    pub colour: bool,
    /// How wide a line may get.
    pub width: usize,
}

impl Style {
    /// For lines written to stderr: colours as `anstream` decides for it (only on a terminal;
    /// never with `NO_COLOR` set; `CLICOLOR_FORCE` forces them), the width of the terminal.
    pub fn for_stderr() -> Style {
        let choice = anstream::AutoStream::choice(&std::io::stderr());
        Style {
            colour: choice != anstream::ColorChoice::Never,
            width: line_width(),
        }
    }

    /// `text` in `style`, or plain `text` without colours.
    pub fn paint(&self, style: anstyle::Style, text: &str) -> String {
        if self.colour {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
    }

    /// The colour of a status: green for success, yellow for failure, red for a signal.
    pub fn of_outcome(outcome: Outcome) -> anstyle::Style {
        match outcome {
            Outcome::Exited(0) => GREEN,
            Outcome::Exited(_) => YELLOW,
            Outcome::Killed { .. } => RED,
            Outcome::Unknown => MAGENTA,
            Outcome::Running => CYAN,
        }
    }
}

/// The width of the terminal on stderr or stdout (`TIOCGWINSZ`), else `COLUMNS`, else
/// [`LINE_WIDTH`]; never below [`NARROWEST`].
fn line_width() -> usize {
    let ask = |fd: std::os::fd::BorrowedFd<'_>| {
        let size = rustix::termios::tcgetwinsize(fd).ok()?;
        Some(usize::from(size.ws_col)).filter(|&cols| cols > 0)
    };
    let stderr = std::io::stderr();
    let stdout = std::io::stdout();
    let from_tty = [stderr.as_fd(), stdout.as_fd()]
        .into_iter()
        .filter(|fd| fd.is_terminal())
        .find_map(ask);
    let from_env = || {
        std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<usize>().ok())
    };
    choose_width(from_tty, from_env)
}

/// The terminal's word first, `COLUMNS` only when there is no terminal to ask.
fn choose_width(terminal: Option<usize>, columns: impl FnOnce() -> Option<usize>) -> usize {
    terminal
        .or_else(columns)
        .filter(|&c| c > 0)
        .map_or(LINE_WIDTH, |c| c.max(NARROWEST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_terminal_width_wins_over_columns() {
        assert_eq!(choose_width(Some(200), || Some(80)), 200);
        assert_eq!(choose_width(None, || Some(80)), 80);
        assert_eq!(choose_width(None, || None), LINE_WIDTH);
        assert_eq!(choose_width(Some(10), || None), NARROWEST);
        assert_eq!(choose_width(None, || Some(0)), LINE_WIDTH);
    }

    #[test]
    fn plain_style_adds_no_escapes() {
        let plain = Style {
            colour: false,
            width: 80,
        };
        assert_eq!(plain.paint(RED, "x"), "x");
        let coloured = Style {
            colour: true,
            width: 80,
        };
        assert_eq!(coloured.paint(RED, "x"), "\x1b[31mx\x1b[0m");
    }
}
