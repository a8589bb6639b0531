//! `--exec`, `--failed` and `--comm`: which event lines the live view and `--json` print.
//!
//! Filters only choose lines; the tree behind them still records every process, so the
//! summary at the end stays whole. Lines that say the watch itself missed something
//! (`trackerr`, `lost`) are always printed: they tell that the filtered output may be short.

use crate::model::{Outcome, Proc};
use procwatch::ProcEvent;

/// The filters given on the command line, all of which a line must pass.
#[derive(Debug, Default)]
pub struct Filter {
    /// `--exec`: only `exec` lines.
    pub exec: bool,
    /// `--failed`: only the exits of processes that failed or were killed.
    pub failed: bool,
    /// `--comm`: only lines about processes whose program name matches.
    pub comm: Option<Glob>,
}

impl Filter {
    /// Whether the `start` or `running` line of `proc` is printed.
    pub fn shows_found(&self, proc: &Proc) -> bool {
        !self.exec && !self.failed && self.name_matches(proc)
    }

    /// Whether the line of `ev` is printed; `proc` is the record of its process, with `ev`
    /// already applied (so an exit's status and an exec's new argv are known).
    pub fn shows(&self, proc: &Proc, ev: &ProcEvent) -> bool {
        match ev {
            ProcEvent::TrackErr { .. } | ProcEvent::Lost { .. } => return true,
            ProcEvent::Exec { .. } => {}
            _ if self.exec => return false,
            _ => {}
        }
        if self.failed && !(matches!(ev, ProcEvent::Exit { .. }) && failed(proc.outcome())) {
            return false;
        }
        self.name_matches(proc)
    }

    fn name_matches(&self, proc: &Proc) -> bool {
        self.comm
            .as_ref()
            .is_none_or(|glob| glob.matches(proc.program()))
    }
}

/// A non-zero exit code, or death by a signal.
fn failed(outcome: Outcome) -> bool {
    match outcome {
        Outcome::Exited(code) => code != 0,
        Outcome::Killed { .. } => true,
        Outcome::Unknown | Outcome::Running => false,
    }
}

/// A shell-style pattern for a whole name: `*` stands for any characters (none included),
/// `?` for exactly one, every other character for itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Glob(Vec<char>);

impl Glob {
    /// The pattern `text`, refused if it is empty.
    pub fn parse(text: &str) -> Result<Glob, String> {
        if text.is_empty() {
            return Err("expected a program name or a pattern with * and ?, not ''".into());
        }
        Ok(Glob(text.chars().collect()))
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let pattern = &self.0;
        let (mut p, mut n) = (0, 0);
        // Where the last `*` was, and where in `name` it would next try to end.
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match pattern.get(p) {
                Some('*') => {
                    star = Some((p, n));
                    p += 1;
                }
                Some(&c) if c == '?' || c == name[n] => {
                    p += 1;
                    n += 1;
                }
                _ => match star {
                    // Let the last `*` take one more character, and try again after it.
                    Some((sp, sn)) => {
                        star = Some((sp, sn + 1));
                        p = sp + 1;
                        n = sn + 1;
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(pattern: &str, name: &str) -> bool {
        Glob::parse(pattern).unwrap().matches(name)
    }

    #[test]
    fn globs_match_whole_names() {
        assert!(glob("cc1", "cc1"));
        assert!(!glob("cc", "cc1"));
        assert!(!glob("cc1", "cc"));
        assert!(glob("cc*", "cc1plus"));
        assert!(glob("cc*", "cc"));
        assert!(glob("*", ""));
        assert!(glob("*sh", "bash"));
        assert!(!glob("*sh", "bash5"));
        assert!(glob("c?1", "cc1"));
        assert!(!glob("c?1", "c1"));
        assert!(glob("*a*b*", "xxaxxbxx"));
        assert!(!glob("*a*b", "xxbxxa"));
        assert!(glob("a*b*c", "abbbcbc"));
        assert!(glob("é?", "éü"));
        assert!(Glob::parse("").is_err());
    }
}
