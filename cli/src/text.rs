//! Text for people: durations, clock columns, command lines quoted as a shell would take them.

use crate::procfs::Cmdline;
use std::fmt::Write as _;
use std::time::Duration;

/// `1 child`, `2 children`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `+   0.412ms` below ten seconds, `+  12.345s ` from there on: always 11 characters.
pub fn format_clock(at: Duration) -> String {
    // Whole numbers: cheaper than float formatting, and it runs once per event line.
    if at < Duration::from_secs(10) {
        let us = at.as_micros();
        format!("+{:4}.{:03}ms", us / 1000, us % 1000)
    } else {
        let ms = at.as_millis();
        format!("+{:4}.{:03}s ", ms / 1000, ms % 1000)
    }
}

/// A short, human-sized duration: `412µs`, `12.3ms`, `1.24s`, `3m05s`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{:.1}ms", secs * 1e3)
    } else if d < Duration::from_secs(60) {
        format!("{secs:.2}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// The live text for a command line: quoted argv, or what we could find instead.
pub fn cmdline_text(cmdline: &Cmdline, width: usize) -> String {
    match cmdline {
        Cmdline::Argv(argv) => {
            let mut text = format_argv(argv, false);
            truncate(&mut text, width);
            text
        }
        Cmdline::Comm(name) => {
            let mut text = String::new();
            push_shell_quoted(&mut text, name);
            text + " (gone)"
        }
        Cmdline::Gone => "(gone)".into(),
    }
}

/// Joins `argv` the way a shell would want it typed; `short` keeps only the program's base
/// name.
pub fn format_argv(argv: &[String], short: bool) -> String {
    let mut out = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let arg = match (i, short) {
            (0, true) => arg.rsplit('/').next().unwrap_or(arg),
            _ => arg,
        };
        push_shell_quoted(&mut out, arg);
    }
    out
}

/// Whether `c` would break a line or move the cursor if printed as it is.
fn is_unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Appends `arg` so that a POSIX shell reads it back as the same word and the line stays one
/// line: as it is when it has nothing special; in single quotes when it has spaces, quotes or
/// shell syntax; in `$'...'` (bash, zsh, ksh and POSIX.1-2024 sh) with escapes like `\n`,
/// `\x1b` and `\u0085` when it has control characters.
pub fn push_shell_quoted(out: &mut String, arg: &str) {
    let plain = |c: char| c.is_alphanumeric() || "-_./=:,+@%^".contains(c);
    if !arg.is_empty() && arg.chars().all(|c| plain(c) && !is_unprintable(c)) {
        out.push_str(arg);
        return;
    }
    if !arg.chars().any(is_unprintable) {
        out.push('\'');
        out.push_str(&arg.replace('\'', r"'\''"));
        out.push('\'');
        return;
    }
    out.push_str("$'");
    for c in arg.chars() {
        match c {
            '\'' => out.push_str(r"\'"),
            '\\' => out.push_str(r"\\"),
            '\n' => out.push_str(r"\n"),
            '\t' => out.push_str(r"\t"),
            '\r' => out.push_str(r"\r"),
            c if is_unprintable(c) && u32::from(c) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_unprintable(c) => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// Cuts `text` to at most `width` characters, ending with `…` if anything was cut.
pub fn truncate(text: &mut String, width: usize) {
    if text.chars().count() > width {
        let cut = text
            .char_indices()
            .nth(width.saturating_sub(1))
            .map_or(text.len(), |(i, _)| i);
        text.truncate(cut);
        text.push('…');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argv_is_quoted_like_a_shell_would_want_it() {
        assert_eq!(
            format_argv(&argv(&["/bin/ls", "-l", "a b"]), false),
            "/bin/ls -l 'a b'"
        );
        assert_eq!(
            format_argv(&argv(&["/bin/ls", "it's", ""]), true),
            r"ls 'it'\''s' ''"
        );
        let mut long = "x".repeat(50);
        truncate(&mut long, 10);
        assert_eq!(long, "xxxxxxxxx…");
    }

    #[test]
    fn control_characters_get_dollar_quotes() {
        assert_eq!(
            format_argv(&argv(&["echo", "a\nb"]), false),
            r"echo $'a\nb'"
        );
        assert_eq!(
            format_argv(&argv(&["printf", "it's\t\\\x1b[0m\r"]), false),
            r"printf $'it\'s\t\\\x1b[0m\r'"
        );
        assert_eq!(
            format_argv(&argv(&["x", "\u{7f}\u{85}\u{2028}é"]), false),
            r"x $'\x7f\u0085\u2028é'"
        );
        for arg in ["a\nb", "\u{1}", "x\u{2029}"] {
            assert!(!format_argv(&argv(&[arg]), false).contains(is_unprintable));
        }
    }

    #[test]
    fn clock_column_keeps_its_width() {
        for ms in [0, 412, 9_999, 10_000, 123_456, 9_999_999] {
            assert_eq!(
                format_clock(Duration::from_millis(ms)).chars().count(),
                11,
                "{ms}"
            );
        }
        assert_eq!(format_clock(Duration::from_micros(412)), "+   0.412ms");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m05s");
    }
}
