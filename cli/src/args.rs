//! The command line: `procwatch [--json] [--pid N | --system] [--] <command> [args...]`.

use crate::filter::{Filter, Glob};
use clap::Parser;
use procwatch::Pid;
use std::ffi::OsString;
use std::path::PathBuf;

/// Watch a process tree's forks, execs and exits as they happen.
///
/// Events are printed to stderr as they happen, then a summary tree. The exit code is the
/// command's own (128+N if signal N killed it; 127 if it was not found, 126 if it could not
/// be executed, 2 for bad arguments). Older kernels need root or CAP_NET_ADMIN for the proc
/// connector; without it the Ptrace backend follows the command instead.
#[derive(Debug, Parser)]
#[command(name = "procwatch", version, about, long_about)]
pub struct Args {
    /// Print one JSON object per event on stdout; the command's stdout goes to stderr.
    #[arg(long)]
    pub json: bool,

    /// Instead of one line per event, show the processes still running as a tree (pid, time
    /// since it started, command line), redrawn in place on stderr at most ten times a
    /// second; the summary follows as usual. Only when stderr is a terminal: otherwise the
    /// line view is printed. The filters apply to the line view only. Not with --json.
    #[arg(long, conflicts_with = "json")]
    pub tree: bool,

    /// Watch this running process and its descendants (until they end, or Ctrl-C) instead of
    /// running a command.
    #[arg(long, value_name = "PID", value_parser = parse_pid, conflicts_with = "command")]
    pub pid: Option<Pid>,

    /// Watch every process on the host, like forkstat, until Ctrl-C (exit code 130) or
    /// SIGTERM (143). A process that existed before is shown once it does something, under
    /// its parent if that is known. The summary tree (and --trace) shows only the processes
    /// born during the run, with a line counting those left out. Needs the proc connector:
    /// root or CAP_NET_ADMIN.
    #[arg(long, conflicts_with_all = ["pid", "command"])]
    pub system: bool,

    /// When the run ends, write it to FILE as a trace-event JSON file, one span per process
    /// (open it in ui.perfetto.dev or chrome://tracing).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,

    /// The command to run and watch, with its arguments. Options end at the first argument
    /// that is not one of procwatch's own (or at `--`).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        required_unless_present_any = ["pid", "system"]
    )]
    pub command: Vec<OsString>,

    /// Show only execs: one line per program executed, with its pid, parent and argv.
    #[arg(
        long,
        help_heading = "Filters (combined with AND; the summary stays whole)"
    )]
    pub exec: bool,

    /// Show only processes that failed (non-zero exit) or were killed by a signal: their
    /// exit lines.
    #[arg(
        long,
        help_heading = "Filters (combined with AND; the summary stays whole)"
    )]
    pub failed: bool,

    /// Show only events of processes whose program name (the file name of `argv[0]`)
    /// matches PATTERN as a whole; `*` matches any characters, `?` one.
    #[arg(
        long,
        value_name = "PATTERN",
        value_parser = Glob::parse,
        help_heading = "Filters (combined with AND; the summary stays whole)"
    )]
    pub comm: Option<Glob>,

    /// Which kernel mechanism follows the processes: `netlink` (the proc connector: any
    /// process, reads each new program's argv a moment after its exec, so one that exits at
    /// once may show as `?`), `ptrace` (the command and its descendants only, each stopped
    /// briefly at every fork and exec: argv is read while it is stopped there, so always),
    /// or `auto` (netlink where the kernel allows it, else ptrace).
    #[arg(long, value_enum, value_name = "KIND", default_value_t = Backend::Auto)]
    pub backend: Backend,

    /// When the netlink backend reads each new program's command line: `early` (the moment
    /// it execs: procwatch wakes once per exec, which slows a command that does little but
    /// exec programs by up to about a tenth), or `batched` (with the other events, every
    /// 2 ms: next to no slowdown, but a program that exits within a few milliseconds of its
    /// exec shows as `?`). The ptrace backend always reads it while the process is stopped
    /// at its exec.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ArgvReads::Early)]
    pub argv: ArgvReads,

    /// Print a completion script for SHELL on stdout, and exit.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<clap_complete::Shell>,
}

/// The values of `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Auto,
    Netlink,
    Ptrace,
}

impl From<Backend> for procwatch::BackendKind {
    fn from(b: Backend) -> procwatch::BackendKind {
        match b {
            Backend::Auto => procwatch::BackendKind::Auto,
            Backend::Netlink => procwatch::BackendKind::Netlink,
            Backend::Ptrace => procwatch::BackendKind::Ptrace,
        }
    }
}

/// The values of `--argv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArgvReads {
    Early,
    Batched,
}

/// What to watch.
pub enum Target {
    /// Start this command (program and arguments) and watch it.
    Command(Vec<OsString>),
    /// Watch this running process.
    Pid(Pid),
    /// Watch every process on the host.
    System,
}

impl Args {
    /// Parses `args` (without the program name), or says in one line what is wrong with them.
    ///
    /// # Errors
    /// `Err(Parsed::Exit)` for `--help` and `--version` (already printed, exit 0) and
    /// `Err(Parsed::Usage)` with a one-line message for anything clap refused.
    pub fn parse_from_args(args: impl IntoIterator<Item = OsString>) -> Result<Args, Parsed> {
        let args = std::iter::once(OsString::from("procwatch")).chain(args);
        Args::try_parse_from(args).map_err(|err| match err.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                Parsed::Exit(err)
            }
            _ => Parsed::Usage(one_line(&err)),
        })
    }

    /// The filters of the live lines and the JSON lines.
    pub fn filter(&self) -> Filter {
        Filter {
            exec: self.exec,
            failed: self.failed,
            comm: self.comm.clone(),
        }
    }

    pub fn target(&self) -> Target {
        match self.pid {
            Some(pid) => Target::Pid(pid),
            None if self.system => Target::System,
            None => Target::Command(self.command.clone()),
        }
    }
}

/// Why the arguments did not give something to run.
pub enum Parsed {
    /// `--help` or `--version`: print it and exit 0.
    Exit(clap::Error),
    /// Bad arguments: this one-line message, then exit 2.
    Usage(String),
}

/// Clap's message up to its first blank line, on one line, without its `error: ` label.
fn one_line(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let text = text.trim_start();
    let message: Vec<&str> = (text.lines())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = message.join(" ");
    message
        .strip_prefix("error: ")
        .unwrap_or(&message)
        .to_owned()
}

fn parse_pid(text: &str) -> Result<Pid, String> {
    text.parse::<i32>()
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| format!("expected a positive process id, not '{text}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, Parsed> {
        Args::parse_from_args(list.iter().map(OsString::from))
    }

    fn command(list: &[&str]) -> (bool, Vec<String>) {
        match args(list).ok().map(|a| (a.json, a.target())) {
            Some((json, Target::Command(argv))) => (
                json,
                argv.iter().map(|a| a.to_string_lossy().into()).collect(),
            ),
            _ => panic!("{list:?} is not a command line"),
        }
    }

    fn usage_error(list: &[&str]) -> String {
        match args(list) {
            Err(Parsed::Usage(message)) => message,
            _ => panic!("{list:?} was not refused"),
        }
    }

    #[test]
    fn options_end_at_the_command() {
        assert_eq!(
            command(&["ls", "-l"]),
            (false, vec!["ls".into(), "-l".into()])
        );
        assert_eq!(
            command(&["--json", "--", "--x"]),
            (true, vec!["--x".into()])
        );
        assert_eq!(command(&["make", "--json"]).1, ["make", "--json"]);
        assert_eq!(command(&["sh", "-c", "exit 3"]).1, ["sh", "-c", "exit 3"]);
        assert!(matches!(args(&["--help", "x"]), Err(Parsed::Exit(_))));
        assert!(matches!(args(&["--version"]), Err(Parsed::Exit(_))));
        for pid in [&["--pid", "42"][..], &["--pid=42"]] {
            match args(pid).ok().map(|a| a.target()) {
                Some(Target::Pid(p)) => assert_eq!(p.as_raw(), 42),
                _ => panic!("{pid:?}"),
            }
        }
    }

    #[test]
    fn system_takes_no_command() {
        let parsed = args(&["--system", "--json", "--exec"]).ok().unwrap();
        assert!(matches!(parsed.target(), Target::System));
        assert!(parsed.json && parsed.exec);
        assert!(usage_error(&["--system", "make"]).contains("--system"));
    }

    #[test]
    fn trace_takes_a_file() {
        let parsed = args(&["--trace", "run.json", "--json", "ls"]).ok().unwrap();
        assert_eq!(parsed.trace, Some(PathBuf::from("run.json")));
        assert!(parsed.json);
        assert!(matches!(args(&["--trace"]), Err(Parsed::Usage(_))));
        assert_eq!(command(&["ls", "--trace", "x"]).1, ["ls", "--trace", "x"]);
    }

    #[test]
    fn tree_is_a_view_of_its_own() {
        let parsed = args(&["--tree", "make"]).ok().unwrap();
        assert!(parsed.tree && !parsed.json);
        assert_eq!(command(&["make", "--tree"]).1, ["make", "--tree"]);
        let message = usage_error(&["--tree", "--json", "make"]);
        assert!(
            message.contains("--tree") && message.contains("--json"),
            "{message}"
        );
    }

    #[test]
    fn bad_arguments_are_refused_in_one_line() {
        for list in [
            &[][..],
            &["--json"],
            &["--bogus", "ls"],
            &["--pid"],
            &["--pid", "0"],
            &["--pid", "-3"],
            &["--pid", "99999999999"],
            &["--pid", "1", "ls"],
            &["--pid", "1", "--pid", "2"],
            &["--json", "--tree", "ls"],
            &["--system", "ls"],
            &["--system", "--pid", "1"],
        ] {
            let message = usage_error(list);
            assert!(
                !message.is_empty() && !message.contains('\n'),
                "{list:?}: {message}"
            );
        }
        assert!(usage_error(&["--bogus", "ls"]).contains("--bogus"));
        assert!(usage_error(&["--pid", "0"]).contains("'0'"));
        assert!(usage_error(&[]).contains("COMMAND"));
    }
}
