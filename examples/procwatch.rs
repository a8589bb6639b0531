//! `procwatch`: see a process tree's forks, execs and exits as they happen.
//!
//! Runs a command — or attaches to a process that is already running — and prints one line
//! per process event to stderr: which process was born of which, what program each one
//! executed (argv read from `/proc` at once), and how it ended. When the tree is gone it
//! prints a summary tree with every process, its exit status and its lifetime. The command's
//! own stdout is left alone, so `procwatch make | less` still pages make's output.
//!
//! ```text
//! cargo build --release --example procwatch
//! sudo target/release/examples/procwatch sh -c 'seq 100000 | sort -rn | head -2; (sleep 0.1; exit 3) & wait'
//! sudo target/release/examples/procwatch make -j2
//! sudo target/release/examples/procwatch --pid 1234
//! sudo target/release/examples/procwatch --json make -j2 | jq -c 'select(.event == "exec")'
//! ```
//!
//! (or, already root: `cargo run --release --example procwatch -- <command> [args...]`).
//!
//! * It uses the netlink proc connector, which works in the initial user and pid namespaces
//!   and, on older kernels, needs root (or `CAP_NET_ADMIN`).
//! * A command is started with [`ProcWatcher::spawn`], which holds it before `exec` until the
//!   watch is armed, so even its fastest children are seen. `--pid` uses
//!   [`ProcWatcher::watch`] on the process and on each of its descendants that is already
//!   running (shown as `running`); whatever they create from then on is tracked.
//! * Times are when each thing happened (the kernel's timestamps), relative to the start.
//! * The exit code is the command's own, or 128 + N if signal N killed it, like a shell's;
//!   127 if the command was not found. Bad arguments exit with 2, a watcher that cannot start
//!   with 1.
//! * Ctrl-C is passed on to the command as SIGINT and procwatch keeps reporting until the tree
//!   is gone. Once the command itself has exited (or with `--pid`), Ctrl-C stops watching.
//! * `--json` prints one JSON object per event on stdout instead, and sends the command's
//!   stdout to stderr so that stdout holds nothing but JSON lines.

use futures::StreamExt;
use procwatch::{
    Error, ErrorKind, Interest, Pid, ProcEvent, ProcEvents, ProcWatcher, Timestamp, TrackErrReason,
};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};

const USAGE: &str = "\
procwatch: watch a process tree's forks, execs and exits as they happen

Usage:
  procwatch [--json] [--] <command> [args...]   run a command and watch its whole tree
  procwatch [--json] --pid <pid>                watch a running process and its descendants

Options:
  --pid <pid>   watch an existing process (until it ends, or Ctrl-C) instead of running one
  --json        print one JSON object per event on stdout; the command's stdout goes to stderr
  -h, --help    print this help

Events are printed to stderr as they happen, then a summary tree. The exit code is the
command's own (128+N if signal N killed it). Older kernels need root or CAP_NET_ADMIN.
";

/// How wide lines may get when `COLUMNS` does not say; longer command lines are cut.
const LINE_WIDTH: usize = 120;
/// Fewest characters of a command line shown, however deep the process or narrow the line.
const MIN_ARGV_WIDTH: usize = 40;
/// Widest the process column of the summary gets: status and lifetime stay near the names.
const SUMMARY_WIDTH: usize = 80;
/// Width of the time, pid and ppid columns at the start of a live line, spaces included.
const PREFIX_WIDTH: usize = 11 + 1 + 7 + 1 + 7 + 2;
/// Deepest indentation shown, in tree levels; deeper processes line up at this depth.
const MAX_INDENT: usize = 12;
/// Fewest look-alike sibling processes that the summary folds into one line.
const MIN_GROUP: usize = 4;
/// How many of the processes still running to name when the command itself exits.
const SURVIVORS_SHOWN: usize = 3;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(std::env::args_os().skip(1)).await {
        Ok(code) => ExitCode::from(code),
        Err(fatal) => {
            eprintln!("procwatch: {}", fatal.message);
            if let Some(hint) = fatal.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(fatal.code)
        }
    }
}

/// Parses the arguments, starts the watcher and runs the chosen mode; returns the exit code.
async fn run(args: impl Iterator<Item = OsString>) -> Result<u8, Fatal> {
    let options = match parse_args(args).map_err(Fatal::usage)? {
        Cli::Help => {
            print!("{USAGE}");
            return Ok(0);
        }
        Cli::Run(options) => options,
    };
    let watcher = ProcWatcher::new().map_err(Fatal::watcher)?;
    // Registered before anything starts, so an early Ctrl-C cannot kill us and orphan the tree.
    let sigint = signal(SignalKind::interrupt())
        .map_err(|e| Fatal::new(1, format!("cannot handle SIGINT: {e}")))?;
    let mut report = Report::new(options.json);
    match options.target {
        Target::Command(argv) => run_command(&watcher, argv, &mut report, sigint).await,
        Target::Pid(pid) => watch_pid(&watcher, pid, &mut report, sigint).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Command line

/// What the command line asks for.
enum Cli {
    Help,
    Run(Options),
}

struct Options {
    json: bool,
    target: Target,
}

enum Target {
    /// Start this command (program and arguments) and watch it.
    Command(Vec<OsString>),
    /// Watch this running process.
    Pid(Pid),
}

/// Parses `[--json] [--pid N] [--] <command> [args...]`. Options end at the first argument
/// that is not one (or at `--`): everything from there on is the command, flags included.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Cli, String> {
    let mut args = args.into_iter();
    let mut json = false;
    let mut pid = None;
    let mut command = Vec::new();
    while let Some(arg) = args.next() {
        let value = match arg.to_str() {
            Some("--") => {
                command.extend(args.by_ref());
                break;
            }
            Some("-h" | "--help") => return Ok(Cli::Help),
            Some("--json") => {
                json = true;
                continue;
            }
            Some("--pid") => args
                .next()
                .ok_or("--pid needs a process id")?
                .to_string_lossy()
                .into_owned(),
            Some(flag) if flag.starts_with("--pid=") => flag["--pid=".len()..].to_owned(),
            Some(flag) if flag.starts_with('-') && flag != "-" => {
                return Err(format!("unknown option '{flag}'"));
            }
            _ => {
                command.push(arg);
                command.extend(args.by_ref());
                break;
            }
        };
        if pid.replace(parse_pid(&value)?).is_some() {
            return Err("--pid given twice".into());
        }
    }
    let target = match (pid, command.is_empty()) {
        (Some(pid), true) => Target::Pid(pid),
        (None, false) => Target::Command(command),
        (Some(_), false) => return Err("give either --pid or a command, not both".into()),
        (None, true) => return Err("no command given".into()),
    };
    Ok(Cli::Run(Options { json, target }))
}

fn parse_pid(text: &str) -> Result<Pid, String> {
    text.parse::<i32>()
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| format!("invalid pid '{text}': expected a positive number"))
}

/// Something that stops procwatch before or instead of a normal end.
struct Fatal {
    code: u8,
    message: String,
    hint: Option<&'static str>,
}

impl Fatal {
    fn new(code: u8, message: String) -> Fatal {
        Fatal {
            code,
            message,
            hint: None,
        }
    }

    /// Bad input on the command line: exit code 2.
    fn usage(message: String) -> Fatal {
        Fatal::new(2, format!("{message} (see 'procwatch --help')"))
    }

    /// The watcher could not start: the library's own words, and what usually helps.
    fn watcher(err: Error) -> Fatal {
        let hint = match err.kind() {
            ErrorKind::PermissionDenied => {
                Some("this kernel lets only root or CAP_NET_ADMIN use the proc connector: run it with sudo")
            }
            ErrorKind::Unsupported => Some(
                "the proc connector only works in the initial user and pid namespaces \
                 (not inside most containers)",
            ),
            _ => None,
        };
        Fatal {
            hint,
            ..Fatal::new(1, format!("cannot start the process watcher: {err}"))
        }
    }

    /// The command could not be started; exit codes as a shell's (127 not found, 126 not
    /// executable).
    fn spawn(program: &OsString, err: Error) -> Fatal {
        let program = program.to_string_lossy();
        match err.raw_os_error() {
            Some(libc::ENOENT) => Fatal::new(127, format!("{program}: command not found")),
            Some(libc::EACCES) => Fatal::new(126, format!("{program}: permission denied")),
            _ => Fatal::new(1, format!("cannot run {program}: {err}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The two modes

/// Runs `argv` watched, reports until its whole tree is gone, and returns its exit code.
async fn run_command(
    watcher: &ProcWatcher,
    argv: Vec<OsString>,
    report: &mut Report,
    mut sigint: Signal,
) -> Result<u8, Fatal> {
    let cmd = command_for(&argv, report.is_json())?;
    report.restart_clock();
    let started = watcher
        .spawn(cmd, Interest::ALL)
        .map_err(|e| Fatal::spawn(&argv[0], e))?;
    let root = started.pid();
    let argv = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    report.begin(root, Some(Pid::this()), Cmdline::Argv(argv), false);

    let (mut child, mut events) = (started.child, started.events);
    let mut status = None;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(ev) => report.event(ev),
                None => break,
            },
            // Reap the command as soon as it exits, even while its descendants live on.
            waited = child.wait(), if status.is_none() => match waited {
                Ok(s) => status = Some(s),
                Err(e) => return Err(Fatal::new(1, format!("cannot wait for {root}: {e}"))),
            },
            Some(()) = sigint.recv() => {
                if status.is_some() {
                    report.note("^C: stopped watching");
                    break;
                }
                report.note(&format!("^C: passing SIGINT on to {root}"));
                interrupt(root);
            }
        }
    }
    let status = match status {
        Some(status) => status,
        None => (child.wait().await)
            .map_err(|e| Fatal::new(1, format!("cannot wait for {root}: {e}")))?,
    };
    report.finish(Some(status));
    Ok(shell_exit_code(status))
}

/// The command to start: `argv` with inherited stdio, except that with `--json` our stdout
/// carries JSON lines only and the command writes its own output to our stderr.
fn command_for(argv: &[OsString], json: bool) -> Result<tokio::process::Command, Fatal> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    if json {
        let stderr = std::io::stderr().as_fd().try_clone_to_owned();
        let stderr = stderr.map_err(|e| Fatal::new(1, format!("cannot duplicate stderr: {e}")))?;
        cmd.stdout(Stdio::from(stderr));
    }
    Ok(cmd)
}

/// Passes a Ctrl-C on to the command we started (which is not reaped yet, so its pid cannot
/// have been reused).
///
/// A Ctrl-C typed at the terminal has already reached it (it is in our process group), so it
/// may get SIGINT twice; ordinary programs treat that like once. Passing it on is what makes
/// `kill -INT <procwatch>` work.
fn interrupt(pid: Pid) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid.as_raw()) {
        // Fails only if it is gone already, and then there is nothing to interrupt.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    }
}

/// Watches the running process `pid` until its tree is gone (exit code 0) or Ctrl-C (130).
async fn watch_pid(
    watcher: &ProcWatcher,
    pid: Pid,
    report: &mut Report,
    mut sigint: Signal,
) -> Result<u8, Fatal> {
    report.restart_clock();
    // Listed before the watch (see `follow_running`).
    let earlier = existing_children(pid);
    let root = watcher
        .watch(pid, Interest::ALL)
        .map_err(|e| match e.kind() {
            ErrorKind::NoSuchProcess => Fatal::new(2, format!("no process with pid {pid}")),
            _ => Fatal::new(1, format!("cannot watch pid {pid}: {e}")),
        })?;
    report.begin(pid, read_ppid(pid), Cmdline::read(pid), true);
    let mut events = futures::stream::SelectAll::new();
    events.push(root);
    follow_running(watcher, report, &mut events, pid, earlier);
    let mut code = 0;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(ev) => report.event(ev),
                None => break,
            },
            Some(()) = sigint.recv() => {
                report.note("^C: stopped watching");
                code = 130; // as a shell reports an interrupted command
                break;
            }
        }
    }
    report.finish(None);
    Ok(code)
}

/// Watches every descendant of `root` that was already running (`children`: those of `root`,
/// listed before `root` was watched), each with a stream of its own merged into `events`.
///
/// A process's children are listed *before* it is watched: one it creates after the watch is
/// then reported by its stream alone, never twice. One it creates in the instant between the
/// listing and the watch is missed, like anything that happens before a `watch`.
fn follow_running(
    watcher: &ProcWatcher,
    report: &mut Report,
    events: &mut futures::stream::SelectAll<ProcEvents>,
    root: Pid,
    children: Vec<Pid>,
) {
    let mut pending: Vec<(Pid, Vec<Pid>)> = vec![(root, children)];
    while let Some((parent, children)) = pending.pop() {
        for child in children {
            if child == Pid::this() {
                continue; // `--pid` of one of our ancestors: we are not part of the show
            }
            let grandchildren = existing_children(child);
            // Gone meanwhile (or not ours to watch): nothing to follow.
            let Ok(stream) = watcher.watch(child, Interest::ALL) else {
                continue;
            };
            // Gone and its pid taken by another process before the watch: not the one listed.
            if read_ppid(child) != Some(parent) {
                continue;
            }
            report.adopt(child, parent, Cmdline::read(child));
            events.push(stream);
            pending.push((child, grandchildren));
        }
    }
}

/// The exit code a shell would give for `status`.
fn shell_exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => 128u8.wrapping_add(sig as u8),
        (None, None) => 1,
    }
}

// ---------------------------------------------------------------------------------------------
// What we know about the processes

/// One process seen during the run.
struct Proc {
    pid: Pid,
    /// Its parent's pid, where known.
    ppid: Option<Pid>,
    /// Index of its parent's record, if the parent is in the tree.
    parent: Option<usize>,
    children: Vec<usize>,
    depth: usize,
    /// Its last known command line: inherited from the parent until it execs.
    argv: Vec<String>,
    /// Whether `argv` was read from this process itself (after an exec, or at the start).
    own_argv: bool,
    /// Whether it executed a program while we watched.
    execed: bool,
    /// When it appeared, relative to the start of the run.
    seen: Duration,
    /// Whether it was already running when we started watching.
    pre_existing: bool,
    end: Option<End>,
}

struct End {
    at: Duration,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Takes what `/proc` said as its own command line (keeping the old one if it said
    /// nothing).
    fn set_cmdline(&mut self, cmdline: &Cmdline) {
        match cmdline {
            Cmdline::Argv(argv) => self.argv.clone_from(argv),
            Cmdline::Comm(name) => self.argv = vec![name.clone()],
            Cmdline::Gone => return,
        }
        self.own_argv = true;
    }

    fn lifetime(&self, now: Duration) -> Duration {
        self.end
            .as_ref()
            .map_or(now, |end| end.at)
            .saturating_sub(self.seen)
    }

    fn outcome(&self) -> Outcome {
        self.end
            .as_ref()
            .map_or(Outcome::Running, |end| Outcome::of(end.status))
    }

    /// Its program's base name, e.g. `cc1` for `/usr/lib/gcc/.../cc1`; `?` if it executed
    /// something we could not see in time.
    fn program(&self) -> &str {
        match self.argv.first() {
            Some(path) if self.own_argv || !self.execed => path.rsplit('/').next().unwrap_or(path),
            _ => "?",
        }
    }

    /// The short command line shown in the summary.
    fn label(&self) -> String {
        match (self.own_argv, self.execed) {
            (true, _) => format_argv(&self.argv, true),
            (false, true) => "? (gone before its argv was read)".into(),
            (false, false) => format!("{} (fork)", self.program()),
        }
    }
}

/// Every process seen, in order of appearance, plus a few counters.
#[derive(Default)]
struct Tree {
    procs: Vec<Proc>,
    /// The latest record of each pid. It stays after the exit: a parent's `Exit` may be read
    /// before the `Child` of a process it created, and a reused pid gets a new record.
    by_pid: HashMap<Pid, usize>,
    /// How many processes have not exited yet, and the most there were at once.
    alive: usize,
    peak_alive: usize,
    not_followed: u64,
    lost: u64,
}

impl Tree {
    fn add(&mut self, pid: Pid, ppid: Option<Pid>, argv: Vec<String>, at: Duration) -> usize {
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
    fn get(&mut self, pid: Pid, at: Duration) -> usize {
        match self.by_pid.get(&pid) {
            Some(&idx) => idx,
            None => self.add(pid, None, read_comm(pid).into_iter().collect(), at),
        }
    }

    /// Records what `ev` says; returns the index of the record of the process it is about.
    fn apply(&mut self, ev: &ProcEvent, cmdline: Option<&Cmdline>, at: Duration) -> usize {
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
    fn still_running(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().filter(|p| p.end.is_none())
    }
}

/// How a process ended, as far as we know.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Exited(i32),
    Killed { signal: i32, core: bool },
    Unknown,
    Running,
}

impl Outcome {
    fn of(status: Option<ExitStatus>) -> Outcome {
        match status.map(|s| (s.code(), s.signal(), s.core_dumped())) {
            Some((Some(code), _, _)) => Outcome::Exited(code),
            Some((None, Some(signal), core)) => Outcome::Killed { signal, core },
            _ => Outcome::Unknown,
        }
    }

    /// As a live line says it: `exit 3`, `killed by SIGSEGV (core dumped)`.
    fn describe(self) -> String {
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
    fn short(self) -> String {
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

    fn colour(self) -> &'static str {
        match self {
            Outcome::Exited(0) => GREEN,
            Outcome::Exited(_) => YELLOW,
            Outcome::Killed { .. } => RED,
            Outcome::Unknown => MAGENTA,
            Outcome::Running => CYAN,
        }
    }
}

/// `SIGKILL` for 9, `signal 42` for numbers without a common name.
fn signal_name(signal: i32) -> String {
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

// ---------------------------------------------------------------------------------------------
// Reading /proc

/// A process's command line as `/proc` showed it when we looked.
#[derive(Debug, Clone, PartialEq)]
enum Cmdline {
    Argv(Vec<String>),
    /// The argv was already gone (a zombie has none), but the short name (`comm`) was not.
    Comm(String),
    /// The process was gone, and its number free (or taken by someone else: pids are reused,
    /// though hardly within the microseconds between the event and our look).
    Gone,
}

impl Cmdline {
    fn read(pid: Pid) -> Cmdline {
        let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args = bytes.strip_suffix(b"\0").unwrap_or(&bytes);
        if args.is_empty() {
            return read_comm(pid).map_or(Cmdline::Gone, Cmdline::Comm);
        }
        let argv = args.split(|&b| b == 0);
        Cmdline::Argv(
            argv.map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        )
    }
}

/// The short name of `pid`'s program (`/proc/<pid>/comm`, at most 15 bytes).
fn read_comm(pid: Pid) -> Option<String> {
    let name = std::fs::read(format!("/proc/{pid}/comm")).ok()?;
    let name = name.strip_suffix(b"\n").unwrap_or(&name);
    Some(String::from_utf8_lossy(name).into_owned())
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
fn read_ppid(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold anything, even ") ", so cut at the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let ppid = after_comm.split_whitespace().nth(1)?.parse().ok()?;
    Pid::from_raw(ppid)
}

/// The children `pid` has now, from `/proc/<pid>/task/*/children`.
fn existing_children(pid: Pid) -> Vec<Pid> {
    let mut children = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
    for task in tasks.into_iter().flatten().flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            let pids = list.split_whitespace().filter_map(|p| p.parse().ok());
            children.extend(pids.filter_map(Pid::from_raw));
        }
    }
    children.sort();
    children
}

// ---------------------------------------------------------------------------------------------
// Output

/// What we know, and where it goes.
struct Report {
    /// Time zero, on the clock of the kernel's event timestamps.
    start: Timestamp,
    tree: Tree,
    sink: Sink,
}

enum Sink {
    /// Aligned lines on stderr, one per event, then a summary tree.
    Human(Style),
    /// One JSON object per event on stdout; `None` once stdout is closed (we keep watching).
    Json(Option<std::io::Stdout>),
}

impl Report {
    fn new(json: bool) -> Report {
        let sink = if json {
            Sink::Json(Some(std::io::stdout()))
        } else {
            Sink::Human(Style::for_stderr())
        };
        Report {
            start: Timestamp::now(),
            tree: Tree::default(),
            sink,
        }
    }

    fn is_json(&self) -> bool {
        matches!(self.sink, Sink::Json(_))
    }

    /// Makes "now" time zero.
    fn restart_clock(&mut self) {
        self.start = Timestamp::now();
    }

    /// Records the process at the root of the tree; `pre_existing` when we attached to it.
    fn begin(&mut self, pid: Pid, ppid: Option<Pid>, cmdline: Cmdline, pre_existing: bool) {
        let at = self.start.elapsed();
        let idx = self.tree.add(pid, ppid, Vec::new(), at);
        let root = &mut self.tree.procs[idx];
        root.set_cmdline(&cmdline);
        root.pre_existing = pre_existing;
        if !pre_existing {
            root.seen = Duration::ZERO; // we started it when the clock did
        }
        match &mut self.sink {
            Sink::Human(style) => {
                let header = format!("{:>11} {:>7} {:>7}  event", "time", "pid", "ppid");
                let mut text = style.paint(DIM, &header);
                if pre_existing {
                    text.push('\n');
                    text += &style.prefix(at, Some(pid), ppid, 0);
                    text += &style.paint(BOLD, "watching");
                    let width = style.argv_width(0, "watching ");
                    text += &format!(" {}", cmdline_text(&cmdline, width));
                }
                write_stderr(&text);
            }
            Sink::Json(out) => {
                let mut json = Json::new("start", at, pid);
                if let Some(ppid) = ppid {
                    json.num("parent", ppid);
                }
                json.cmdline(&cmdline);
                write_json(out, json.finish());
            }
        }
    }

    /// Records a descendant of the root that was already running when the watch began.
    fn adopt(&mut self, pid: Pid, parent: Pid, cmdline: Cmdline) {
        let at = self.start.elapsed();
        let idx = self.tree.add(pid, Some(parent), Vec::new(), at);
        let proc = &mut self.tree.procs[idx];
        proc.set_cmdline(&cmdline);
        proc.pre_existing = true;
        let depth = proc.depth;
        match &mut self.sink {
            Sink::Human(style) => {
                let width = style.argv_width(depth, "running ");
                let line = style.prefix(at, Some(pid), Some(parent), depth)
                    + &style.paint(BOLD, "running")
                    + " "
                    + &cmdline_text(&cmdline, width);
                write_stderr(&line);
            }
            Sink::Json(out) => {
                let mut json = Json::new("running", at, pid);
                json.num("parent", parent).cmdline(&cmdline);
                write_json(out, json.finish());
            }
        }
    }

    /// Records and prints one event.
    fn event(&mut self, ev: ProcEvent) {
        // The kernel's time of the event, not the time we read it: under load the two differ.
        let at = if ev.at().is_known() {
            ev.at().duration_since(self.start)
        } else {
            self.start.elapsed()
        };
        let cmdline = match ev {
            ProcEvent::Exec { pid, .. } => Some(self.exec_cmdline(pid)),
            _ => None,
        };
        let idx = self.tree.apply(&ev, cmdline.as_ref(), at);
        match &mut self.sink {
            Sink::Human(style) => {
                if let Some(line) = style.event_line(&self.tree, idx, &ev, cmdline.as_ref(), at) {
                    write_stderr(&line);
                }
            }
            Sink::Json(out) => {
                let line = json_event(&self.tree.procs[idx], &ev, cmdline.as_ref(), at);
                write_json(out, line);
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
    fn note_survivors(&self) {
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
    fn note(&self, text: &str) {
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
    fn finish(&mut self, status: Option<ExitStatus>) {
        let wall = self.start.elapsed();
        match &mut self.sink {
            Sink::Human(style) => write_stderr(&style.summary(&self.tree, wall, status)),
            Sink::Json(out) => write_json(out, json_summary(&self.tree, wall, status)),
        }
    }
}

fn write_stderr(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

fn write_json(out: &mut Option<std::io::Stdout>, line: String) {
    if let Some(stdout) = out {
        if writeln!(stdout, "{line}").is_err() {
            // The reader went away (`| head`): stop writing, keep the command running.
            *out = None;
        }
    }
}

// ---- human lines ----

const DIM: &str = "2";
const BOLD: &str = "1";
const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const BLUE: &str = "34";
const MAGENTA: &str = "35";
const CYAN: &str = "36";

/// Human output: colours (or not) and the layout of lines.
struct Style {
    colour: bool,
    /// How wide a line may get (`COLUMNS`, or [`LINE_WIDTH`]).
    width: usize,
}

impl Style {
    /// Colours only on a terminal, and not when `NO_COLOR` is set to anything.
    fn for_stderr() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let columns = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok());
        Style {
            colour: std::io::stderr().is_terminal() && !no_color,
            width: columns.filter(|&c| c >= 40).unwrap_or(LINE_WIDTH),
        }
    }

    /// Room left for a command line after the prefix, the indentation and `verb`.
    fn argv_width(&self, depth: usize, verb: &str) -> usize {
        let used = PREFIX_WIDTH + 2 * depth.min(MAX_INDENT) + verb.chars().count();
        self.width.saturating_sub(used).max(MIN_ARGV_WIDTH)
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// `+   0.412ms    1234    1200  ` and the indentation for `depth`.
    fn prefix(&self, at: Duration, pid: Option<Pid>, ppid: Option<Pid>, depth: usize) -> String {
        let show = |p: Option<Pid>| p.map_or_else(String::new, |p| p.to_string());
        format!(
            "{} {:>7} {:>7}  {:indent$}",
            self.paint(DIM, &format_clock(at)),
            show(pid),
            self.paint(DIM, &format!("{:>7}", show(ppid))),
            "",
            indent = 2 * depth.min(MAX_INDENT),
        )
    }

    /// The live line for `ev` (`None` for events not worth a line of their own).
    fn event_line(
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
                    self.paint(outcome.colour(), &outcome.describe()),
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
            ref other => format!("{other:?}"),
        };
        Some(self.prefix(at, Some(proc.pid), proc.ppid, proc.depth) + &what)
    }

    /// The summary tree and the totals line.
    fn summary(&self, tree: &Tree, wall: Duration, status: Option<ExitStatus>) -> String {
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
                self.paint(row.outcome.colour(), &status),
                row.lifetime,
            );
        }
        out.push('\n');
        out += &self.paint(BOLD, &totals_line(tree, wall, status));
        out
    }
}

/// `1 child`, `2 children`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `+   0.412ms` below ten seconds, `+  12.345s ` from there on: always 11 characters.
fn format_clock(at: Duration) -> String {
    if at < Duration::from_secs(10) {
        format!("+{:8.3}ms", at.as_secs_f64() * 1e3)
    } else {
        format!("+{:8.3}s ", at.as_secs_f64())
    }
}

/// A short, human-sized duration: `412µs`, `12.3ms`, `1.24s`, `3m05s`.
fn format_duration(d: Duration) -> String {
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
fn cmdline_text(cmdline: &Cmdline, width: usize) -> String {
    match cmdline {
        Cmdline::Argv(argv) => {
            let mut text = format_argv(argv, false);
            truncate(&mut text, width);
            text
        }
        Cmdline::Comm(name) => format!("{name} (gone)"),
        Cmdline::Gone => "(gone)".into(),
    }
}

/// Joins `argv` the way a shell would want it typed; `short` keeps only the program's base
/// name.
fn format_argv(argv: &[String], short: bool) -> String {
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

/// Appends `arg`, single-quoted when it has anything a shell would treat specially. Control
/// characters become escapes so that a line stays one line.
fn push_shell_quoted(out: &mut String, arg: &str) {
    let plain = |c: char| c.is_alphanumeric() || "-_./=:,+@%^".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        out.push_str(arg);
        return;
    }
    out.push('\'');
    for c in arg.chars() {
        match c {
            '\'' => out.push_str(r"'\''"),
            '\n' => out.push_str(r"\n"),
            '\t' => out.push_str(r"\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// Cuts `text` to at most `width` characters, ending with `…` if anything was cut.
fn truncate(text: &mut String, width: usize) {
    if text.chars().count() > width {
        let cut = text
            .char_indices()
            .nth(width.saturating_sub(1))
            .map_or(text.len(), |(i, _)| i);
        text.truncate(cut);
        text.push('…');
    }
}

/// One line of the summary tree, before alignment.
struct Row {
    left: String,
    outcome: Outcome,
    lifetime: String,
}

/// The summary tree, depth first, children in the order they were born.
fn summary_rows(tree: &Tree, now: Duration) -> Vec<Row> {
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
fn line_groups<'a>(tree: &Tree, siblings: &'a [usize]) -> Vec<&'a [usize]> {
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
struct Totals {
    processes: usize,
    failed: usize,
    killed: usize,
    unknown: usize,
    running: usize,
}

impl Totals {
    fn of(tree: &Tree) -> Totals {
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
fn totals_line(tree: &Tree, wall: Duration, status: Option<ExitStatus>) -> String {
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

// ---- JSON lines ----

/// One JSON object being written, field by field.
struct Json(String);

impl Json {
    /// `{"t_us":412,"event":"exec","pid":1234` — the fields every line has.
    fn new(event: &str, at: Duration, pid: Pid) -> Json {
        let mut json = Json(String::from("{"));
        json.num("t_us", at.as_micros());
        json.str("event", event);
        json.num("pid", pid);
        json
    }

    fn key(&mut self, key: &str) -> &mut String {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        push_json_string(&mut self.0, key);
        self.0.push(':');
        &mut self.0
    }

    fn num(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Json {
        let _ = write!(self.key(key), "{value}");
        self
    }

    fn str(&mut self, key: &str, value: &str) -> &mut Json {
        push_json_string(self.key(key), value);
        self
    }

    /// A literal: `null`, `true`, `false`.
    fn lit(&mut self, key: &str, value: &str) -> &mut Json {
        self.key(key).push_str(value);
        self
    }

    fn strs(&mut self, key: &str, values: &[String]) -> &mut Json {
        let out = self.key(key);
        out.push('[');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_string(out, value);
        }
        out.push(']');
        self
    }

    /// `"argv":[...]`, or `"argv":null` plus `"comm"` when only that was left.
    fn cmdline(&mut self, cmdline: &Cmdline) -> &mut Json {
        match cmdline {
            Cmdline::Argv(argv) => self.strs("argv", argv),
            Cmdline::Comm(name) => self.lit("argv", "null").str("comm", name),
            Cmdline::Gone => self.lit("argv", "null"),
        }
    }

    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Appends `text` as a JSON string: quotes, backslashes and control characters escaped
/// (U+2028 and U+2029 too, which JSON allows raw but JavaScript did not).
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The JSON line for `ev`; `proc` is the record of the process it is about.
fn json_event(proc: &Proc, ev: &ProcEvent, cmdline: Option<&Cmdline>, at: Duration) -> String {
    let kind = match ev {
        ProcEvent::Child { .. } => "child",
        ProcEvent::Fork { .. } => "fork",
        ProcEvent::Exec { .. } => "exec",
        ProcEvent::Exit { .. } => "exit",
        ProcEvent::TrackErr { .. } => "trackerr",
        ProcEvent::Lost { .. } => "lost",
        _ => "other",
    };
    let mut json = Json::new(kind, at, ev.pid());
    match *ev {
        ProcEvent::Child { parent, .. } => {
            json.num("parent", parent);
        }
        ProcEvent::Fork { child, count, .. } => {
            json.num("child", child).num("count", count);
        }
        ProcEvent::Exec { count, .. } => {
            json.num("count", count)
                .cmdline(cmdline.unwrap_or(&Cmdline::Gone));
        }
        ProcEvent::Exit { .. } => {
            match proc.outcome() {
                Outcome::Exited(code) => json.num("code", code).lit("signal", "null"),
                Outcome::Killed { signal, core } => (json.lit("code", "null"))
                    .num("signal", signal)
                    .str("signal_name", &signal_name(signal))
                    .lit("core", if core { "true" } else { "false" }),
                _ => json.lit("code", "null").lit("signal", "null"),
            };
            if !proc.pre_existing {
                json.num("lifetime_us", proc.lifetime(at).as_micros());
            }
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
            json.num("child", child)
                .str("reason", reason)
                .num("count", count);
        }
        ProcEvent::Lost { count, .. } => {
            json.num("count", count);
        }
        ref other => {
            json.str("debug", &format!("{other:?}"));
        }
    }
    json.finish()
}

/// The last JSON line: the totals, and the command's exit code.
fn json_summary(tree: &Tree, wall: Duration, status: Option<ExitStatus>) -> String {
    let totals = Totals::of(tree);
    let root = tree.procs.first().map_or(Pid::this(), |p| p.pid);
    let mut json = Json::new("summary", wall, root);
    json.num("processes", totals.processes)
        .num("failed", totals.failed)
        .num("killed", totals.killed)
        .num("unknown", totals.unknown)
        .num("running", totals.running)
        .num("not_followed", tree.not_followed)
        .num("lost", tree.lost)
        .num("peak_running", tree.peak_alive);
    match status {
        Some(status) => json.num("exit_code", shell_exit_code(status)),
        None => json.lit("exit_code", "null"),
    };
    json.finish()
}

#[cfg(test)]
mod tests {
    //! The pure parts; run with `cargo test --example procwatch`.

    use super::*;

    fn args(list: &[&str]) -> Result<Cli, String> {
        parse_args(list.iter().map(OsString::from))
    }

    fn command(list: &[&str]) -> (bool, Vec<String>) {
        match args(list) {
            Ok(Cli::Run(Options {
                json,
                target: Target::Command(argv),
            })) => (
                json,
                argv.iter().map(|a| a.to_string_lossy().into()).collect(),
            ),
            _ => panic!("{list:?} is not a command line"),
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
        assert!(matches!(args(&["--help", "x"]), Ok(Cli::Help)));
        for pid in [&["--pid", "42"][..], &["--pid=42"]] {
            match args(pid) {
                Ok(Cli::Run(Options {
                    target: Target::Pid(p),
                    ..
                })) => assert_eq!(p.as_raw(), 42),
                _ => panic!("{pid:?}"),
            }
        }
    }

    #[test]
    fn bad_arguments_are_refused() {
        let err = |list: &[&str]| args(list).err().unwrap_or_else(|| panic!("{list:?}"));
        assert_eq!(err(&[]), "no command given");
        assert_eq!(err(&["--json"]), "no command given");
        assert_eq!(err(&["--bogus", "ls"]), "unknown option '--bogus'");
        assert_eq!(err(&["--pid"]), "--pid needs a process id");
        assert!(err(&["--pid", "0"]).starts_with("invalid pid '0'"));
        assert!(err(&["--pid", "-3"]).starts_with("invalid pid '-3'"));
        assert!(err(&["--pid", "99999999999"]).starts_with("invalid pid"));
        assert_eq!(
            err(&["--pid", "1", "ls"]),
            "give either --pid or a command, not both"
        );
        assert_eq!(err(&["--pid", "1", "--pid", "2"]), "--pid given twice");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\te\u{1}f\u{7f}é\u{2028}");
        assert_eq!(
            out,
            r#""a\"b\\c\nd\te\u0001f"#.to_owned() + "\u{7f}é\\u2028\""
        );
        let mut json = Json::new(
            "exec",
            Duration::from_micros(1500),
            Pid::from_raw(7).unwrap(),
        );
        json.strs(
            "argv",
            &["x".into(), String::from_utf8_lossy(b"\xff").into()],
        );
        assert_eq!(
            json.finish(),
            "{\"t_us\":1500,\"event\":\"exec\",\"pid\":7,\"argv\":[\"x\",\"\u{fffd}\"]}"
        );
    }

    #[test]
    fn argv_is_quoted_like_a_shell_would_want_it() {
        let argv = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            format_argv(&argv(&["/bin/ls", "-l", "a b"]), false),
            "/bin/ls -l 'a b'"
        );
        assert_eq!(
            format_argv(&argv(&["/bin/ls", "it's", ""]), true),
            r"ls 'it'\''s' ''"
        );
        assert_eq!(format_argv(&argv(&["echo", "a\nb"]), false), r"echo 'a\nb'");
        let mut long = "x".repeat(50);
        truncate(&mut long, 10);
        assert_eq!(long, "xxxxxxxxx…");
    }

    #[test]
    fn statuses_read_like_a_shell_says_them() {
        let exited = ExitStatus::from_raw(3 << 8);
        let killed = ExitStatus::from_raw(libc::SIGKILL);
        let core = ExitStatus::from_raw(libc::SIGSEGV | 0x80);
        assert_eq!(shell_exit_code(exited), 3);
        assert_eq!(shell_exit_code(killed), 137);
        assert_eq!(Outcome::of(Some(killed)).describe(), "killed by SIGKILL");
        assert_eq!(
            Outcome::of(Some(core)).describe(),
            "killed by SIGSEGV (core dumped)"
        );
        assert_eq!(Outcome::of(None).describe(), "status unknown");
        assert_eq!(signal_name(40), "signal 40");
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
