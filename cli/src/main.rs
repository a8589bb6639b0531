//! `procwatch`: see a process tree's forks, execs and exits as they happen.
//!
//! Runs a command — or attaches to a process that is already running — and prints one line
//! per process event to stderr: which process was born of which, what program each one
//! executed (argv read from `/proc` at once), and how it ended. When the tree is gone it
//! prints a summary tree with every process, its exit status and its lifetime. The command's
//! own stdout is left alone, so `procwatch make | less` still pages make's output.
//!
//! * A command is started with [`ProcWatcher::spawn`], which holds it before `exec` until the
//!   watch is armed, so even its fastest children are seen. `--pid` uses
//!   [`ProcWatcher::watch`] on the process and on each of its descendants that is already
//!   running (shown as `running`); whatever they create from then on is tracked.
//! * `--system` uses [`ProcWatcher::watch_system`]: every process on the host, until Ctrl-C
//!   (exit code 130) or SIGTERM (143). A process that was already running is shown
//!   (`running`) once it does something; the summary keeps only the processes born during
//!   the run (see [`system`]).
//! * Times are when each thing happened (the kernel's timestamps), relative to the start.
//! * The exit code is the command's own, or 128 + N if signal N killed it, like a shell's;
//!   127 if the command was not found, 126 if it could not be executed. Bad arguments exit
//!   with 2, a watcher that cannot start with 1.
//! * Ctrl-C is passed on to the command as SIGINT and procwatch keeps reporting until the tree
//!   is gone. Once the command itself has exited (or with `--pid`), Ctrl-C stops watching.
//! * `--json` prints one JSON object per event on stdout instead (schema: `README.md` of this
//!   crate), and sends the command's stdout to stderr so that stdout holds nothing but JSON.
//! * `--trace FILE` writes the run, once it is over, as a trace-event JSON file (one span per
//!   process; see [`trace`]).
//! * `--exec`, `--failed` and `--comm PATTERN` choose which event lines are printed (see
//!   [`filter`]); the summary still shows the whole tree.
//! * `--tree` shows, in place of the event lines, the processes still running as a tree
//!   redrawn in place (see [`live_tree`]) when stderr is a terminal; otherwise the line view.
//!   It is refused with `--json` (a usage error).
//! * `--completions SHELL` prints a completion script (bash, zsh, fish, elvish, powershell).
//!
//! Modules: [`args`] (the command line), [`filter`] (which lines are shown), [`model`] (the
//! tree of processes seen), [`procfs`] (what is read from `/proc`), [`report`] (feeding the
//! tree and choosing the output), [`system`] (the `--system` mode), [`live`], [`live_tree`],
//! [`summary`], [`json`] and [`trace`] (the output formats), [`style`] and [`text`]
//! (colours, widths and quoting).

mod args;
mod filter;
mod json;
mod live;
mod live_tree;
mod model;
mod procfs;
mod report;
mod style;
mod summary;
mod system;
mod text;
mod trace;

use args::{Args, ArgvReads, Parsed, Target};
use futures_util::{FutureExt, Stream, StreamExt};
use model::shell_exit_code;
use procfs::{existing_children, read_ppid, Cmdline};
use procwatch::{
    ArgvPriority, Error, ErrorKind, Interest, NetlinkOptions, Pid, ProcEvent, ProcEvents,
    ProcWatcher,
};
use report::Report;
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsFd;
use std::process::{ExitCode, Stdio};
use tokio::signal::unix::{signal, Signal, SignalKind};

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
    let args = match Args::parse_from_args(args) {
        Ok(args) => args,
        Err(Parsed::Exit(shown)) => {
            // `--help` or `--version`: clap prints it, styled for stdout.
            let _ = shown.print();
            return Ok(0);
        }
        Err(Parsed::Usage(message)) => return Err(Fatal::usage(message)),
    };
    if let Some(shell) = args.completions {
        print_completions(shell);
        return Ok(0);
    }
    // Created now, so that a file we cannot write stops us before anything runs.
    let trace = (args.trace.as_deref())
        .map(trace::TraceFile::create)
        .transpose()
        .map_err(|message| Fatal::new(2, message))?;
    let watcher = ProcWatcher::builder()
        .backend(args.backend.into())
        .netlink(
            NetlinkOptions::new()
                .batch_window(BATCH_WINDOW)
                .batch_threshold(0)
                // Showing every program's command line is this tool's job: the thread that
                // reads them runs the moment an exec wakes it, where the system allows;
                // `--argv batched` leaves them to the 2 ms batches instead.
                .argv_thread(args.argv == ArgvReads::Early)
                .argv_priority(ArgvPriority::Realtime),
        )
        .build()
        .map_err(Fatal::watcher)?;
    // Registered before anything starts, so an early Ctrl-C cannot kill us and orphan the tree.
    let sigint = signal(SignalKind::interrupt())
        .map_err(|e| Fatal::new(1, format!("cannot handle SIGINT: {e}")))?;
    let mut report = Report::new(args.json, args.tree, args.filter());
    let code = match args.target() {
        Target::Command(argv) => run_command(&watcher, argv, &mut report, sigint).await,
        Target::Pid(pid) => watch_pid(&watcher, pid, &mut report, sigint).await,
        Target::System => system::watch_system(&watcher, &mut report, sigint).await,
    }?;
    if let Some(trace) = trace {
        // After the run: failing to write is exit code 1, in place of the command's.
        (trace.write(report.tree(), report.elapsed())).map_err(|message| Fatal::new(1, message))?;
    }
    Ok(code)
}

/// Writes the completion script for `shell` to stdout (a closed pipe is not an error).
fn print_completions(shell: clap_complete::Shell) {
    let mut script = Vec::new();
    let mut command = <Args as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "procwatch", &mut script);
    let _ = std::io::stdout().lock().write_all(&script);
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
        .spawn(cmd, Interest::ALL | Interest::ARGV)
        .map_err(|e| Fatal::spawn(&argv[0], e))?;
    let root = started.pid();
    let argv = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    report.begin(root, Some(Pid::this()), Cmdline::Argv(argv), false);

    let (mut child, mut events) = (started.child, started.events);
    let mut status = None;
    let mut frames = frame_ticker();
    loop {
        tokio::select! {
            _ = frames.tick(), if report.is_live_tree() => report.tick(),
            ev = events.next() => if !report_ready(report, &mut events, ev) {
                break;
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
        .watch(pid, Interest::ALL | Interest::ARGV)
        .map_err(|e| match e.kind() {
            ErrorKind::NoSuchProcess => Fatal::new(2, format!("no process with pid {pid}")),
            _ => Fatal::new(1, format!("cannot watch pid {pid}: {e}")),
        })?;
    report.begin(pid, read_ppid(pid), Cmdline::read(pid), true);
    let mut events = futures_util::stream::SelectAll::new();
    events.push(root);
    follow_running(watcher, report, &mut events, pid, earlier);
    report.flush();
    let mut code = 0;
    let mut frames = frame_ticker();
    loop {
        tokio::select! {
            _ = frames.tick(), if report.is_live_tree() => report.tick(),
            ev = events.next() => if !report_ready(report, &mut events, ev) {
                break;
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

/// How long the watcher lets the kernel's messages gather before it reads them, at every
/// rate: a person sees no difference (the times shown are the kernel's, so they stay exact),
/// one wakeup then reads all that came meanwhile, and the watched programs no longer pay for
/// a wakeup of ours per message. In a fork storm the command's CPU time falls to about a
/// third. Command lines do not wait for it: the backend's argv thread reads each one as its
/// exec happens.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);

/// Most events reported between two writes of their lines.
const BATCH: usize = 256;

/// Reports `first`, what `events` just yielded, and the events already waiting behind it (up
/// to [`BATCH`]), then writes their lines at once (see [`each_ready`]). False once `events`
/// has ended.
fn report_ready<S>(report: &mut Report, events: &mut S, first: Option<ProcEvent>) -> bool
where
    S: Stream<Item = ProcEvent> + Unpin,
{
    let open = each_ready(events, first, |ev| report.event(ev));
    report.flush();
    open
}

/// Hands `first` (what `events` just yielded) and the events already waiting behind it, up
/// to [`BATCH`], to `handle`: under a storm the caller then writes many lines at once, and
/// an event never waits for a later one. False once `events` has ended.
pub(crate) fn each_ready<S>(
    events: &mut S,
    first: Option<ProcEvent>,
    mut handle: impl FnMut(ProcEvent),
) -> bool
where
    S: Stream<Item = ProcEvent> + Unpin,
{
    let Some(first) = first else {
        return false;
    };
    handle(first);
    for _ in 1..BATCH {
        match events.next().now_or_never() {
            Some(Some(ev)) => handle(ev),
            Some(None) => return false,
            None => break,
        }
    }
    true
}

/// The clock of the live tree's frames (it skips the ticks it missed rather than catch up).
fn frame_ticker() -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(live_tree::FRAME_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticker
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
    events: &mut futures_util::stream::SelectAll<ProcEvents>,
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
            let Ok(stream) = watcher.watch(child, Interest::ALL | Interest::ARGV) else {
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
