//! `mini_init`: a small init for containers, in the spirit of `tini`, built on procwatch's
//! [`Tree`](procwatch::Tree) and [`Reaper`].
//!
//! ```text
//! mini_init [-g] [-t GRACE_SECS] [--] <command> [args...]
//! ```
//!
//! It runs one command and lives exactly as long as it does:
//!
//! * **Reaping.** As PID 1 of a container every orphan of the container is reparented to it;
//!   anywhere else it makes itself a child subreaper, so that the orphans of the command's
//!   tree come to it. Either way it reaps them: no zombie lingers.
//! * **Signals.** `HUP`, `INT`, `QUIT`, `TERM`, `USR1`, `USR2`, `WINCH` and `CONT` sent to it
//!   are passed on to the command, or with `-g` to the command's process group (the command
//!   leads a group of its own). A PID 1 needs handlers for this: the kernel drops signals
//!   whose disposition is the default for PID 1, so without them `docker stop` would wait
//!   for its timeout and then `SIGKILL` everything.
//! * **Cleanup.** When the command exits, whatever it left behind (a daemon that
//!   double-forked, a `setsid` escapee, a `nohup` job) gets `SIGTERM`, then after a grace
//!   period (`-t`, 5 s by default) `SIGKILL`, and mini_init waits until all of it is gone.
//!   procwatch followed every process the command created, whatever its session or process
//!   group, so nothing slips through.
//! * **Exit code.** The command's, or 128 + N if signal N killed it; 127 if it was not found,
//!   126 if it could not be executed, 2 for bad arguments, 1 if procwatch could not start.
//!   Errors are one line on stderr; a successful run prints nothing.
//!
//! When its stdin is a terminal that it holds in the foreground (`docker run -it`, or a
//! shell prompt), the command gets the terminal, so that an interactive shell works and
//! Ctrl-C reaches the command directly.
//!
//! ```text
//! cargo build --release --example mini_init
//! target/release/examples/mini_init -- sh -c 'setsid sleep 100 & sleep 1'
//! sudo unshare --pid --fork --mount-proc target/release/examples/mini_init -g -t 2 -- sh
//! ```
//!
//! In a Dockerfile: `ENTRYPOINT ["/usr/local/bin/mini_init", "--"]`.

use procwatch::{ProcWatcher, Reaper};
use rustix::process::{kill_process, kill_process_group, Pid, Signal};
use std::ffi::OsString;
use std::future::poll_fn;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};
use std::task::Poll;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "\
mini_init: run a command as a container's init (or as a subreaper), pass signals on to it,
reap orphans, and stop whatever the command leaves behind when it exits

Usage: mini_init [-g] [-t GRACE_SECS] [--] <command> [args...]

Options:
  -g             send forwarded signals to the command's whole process group
  -t GRACE_SECS  after the command exits, how long what it left behind has between SIGTERM
                 and SIGKILL (default 5; fractions allowed)
  -h, --help     print this help

Exit code: the command's, or 128 + N if signal N killed it; 127 command not found,
126 command not executable, 2 bad arguments, 1 mini_init could not start.
";

/// The signals passed on to the command.
const FORWARDED: [Signal; 8] = [
    Signal::HUP,
    Signal::INT,
    Signal::QUIT,
    Signal::TERM,
    Signal::USR1,
    Signal::USR2,
    Signal::WINCH,
    Signal::CONT,
];

/// What the command line asks for.
struct Options {
    group: bool,
    grace: Duration,
    command: Vec<OsString>,
}

/// Why mini_init stops before the command has run: the exit code and a one-line message.
struct Failure(u8, String);

// An init does little: it waits for signals and for one exit. A single-threaded runtime
// keeps it small and the order of what it does plain. A second worker would buy nothing:
// procwatch reads the kernel's events on a thread of its own whenever this one is busy (as
// it is while `spawn_tree` waits for the command to be watched).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let options = match parse(std::env::args_os().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("mini_init: {message} (see mini_init --help)");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(code) => ExitCode::from(code),
        Err(Failure(code, message)) => {
            eprintln!("mini_init: {message}");
            ExitCode::from(code)
        }
    }
}

/// Parses the arguments: `Ok(None)` asks for the help text, `Err` is a usage error.
fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Option<Options>, String> {
    let mut options = Options {
        group: false,
        grace: Duration::from_secs(5),
        command: Vec::new(),
    };
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(None),
            Some("-g") => options.group = true,
            Some("-t") => {
                let value = args.next().ok_or("-t needs a number of seconds")?;
                options.grace = value
                    .to_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    // Refuses negative, infinite and NaN values.
                    .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                    .ok_or_else(|| format!("-t needs a number of seconds, not {:?}", value))?;
            }
            Some("--") => break,
            Some(option) if option.starts_with('-') && option != "-" => {
                return Err(format!("unknown option {option}"))
            }
            // The first word that is not an option starts the command: its own options
            // (`sh -c ...`) are its business.
            _ => {
                options.command.push(arg);
                break;
            }
        }
    }
    options.command.extend(args);
    if options.command.is_empty() {
        return Err("no command given".into());
    }
    Ok(Some(options))
}

/// Runs the command to the end and returns mini_init's exit code.
async fn run(options: Options) -> Result<u8, Failure> {
    // Handlers first: a signal that arrives while the command is starting waits in its
    // stream and is passed on as soon as there is a command to pass it to.
    let mut signals = Vec::with_capacity(FORWARDED.len());
    for sig in FORWARDED {
        let stream = signal(SignalKind::from_raw(sig.as_raw()))
            .map_err(|e| Failure(1, format!("cannot handle {sig:?}: {e}")))?;
        signals.push((sig, stream));
    }

    // Make this process the reaper of the command's orphans (as PID 1 it is already).
    // `reap_unknown`: every child of an init is an orphan to reap, except the command
    // itself, whose status the tree keeps for us. Kept alive until the end of `run`.
    let _reaper = Reaper::builder()
        .reap_unknown(true)
        .install()
        .map_err(|e| Failure(1, format!("cannot become a subreaper: {e}")))?;
    let watcher = ProcWatcher::new().map_err(|e| Failure(1, format!("cannot watch: {e}")))?;

    let mut cmd = tokio::process::Command::new(&options.command[0]);
    cmd.args(&options.command[1..]);
    hand_over_terminal(&mut cmd);
    let mut tree = watcher
        .spawn_tree(cmd)
        .map_err(|e| spawn_failure(&options.command[0], e))?;

    // The root is our child and is not reaped until `wait` returns, so its pid (and its
    // process group) cannot be reused while signals are forwarded to it.
    let root = Pid::from_raw(tree.pid().as_raw()).expect("a pid is positive");
    let status = loop {
        tokio::select! {
            status = tree.wait() => break status,
            sig = next_signal(&mut signals) => {
                // An error can only mean the command (or its whole group) has just gone,
                // which the next turn of the loop notices.
                let _ = if options.group {
                    kill_process_group(root, sig)
                } else {
                    kill_process(root, sig)
                };
            }
        }
    };
    let status = status.map_err(|e| Failure(1, format!("lost the command: {e}")))?;

    // The command is gone: stop the rest of its tree, and wait until every member has
    // exited (orphans among them are reaped by the reaper). Signals that arrive meanwhile
    // are left unread: the tree is being stopped already.
    match tree.shutdown(options.grace).await {
        Ok(report) => {
            let left = report.still_running().count();
            if left > 0 {
                eprintln!("mini_init: {left} process(es) could not be stopped");
            }
        }
        Err(e) => eprintln!("mini_init: stopping what the command left: {e}"),
    }
    Ok(exit_code(status))
}

/// Waits for the next forwarded signal to arrive.
async fn next_signal(signals: &mut [(Signal, tokio::signal::unix::Signal)]) -> Signal {
    poll_fn(|cx| {
        for (sig, stream) in signals.iter_mut() {
            if stream.poll_recv(cx).is_ready() {
                return Poll::Ready(*sig);
            }
        }
        Poll::Pending
    })
    .await
}

/// A shell's convention: the exit code, or 128 + the number of the signal that killed it.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
        (None, None) => 1,
    }
}

/// Why the command could not be started, with a shell's exit codes: 127 for a program that
/// does not exist, 126 for one that exists but cannot be executed.
fn spawn_failure(program: &OsString, e: procwatch::Error) -> Failure {
    let program = program.to_string_lossy();
    let code = match e.raw_os_error() {
        Some(libc::ENOENT) => 127,
        Some(
            libc::EACCES
            | libc::EPERM
            | libc::ENOEXEC
            | libc::EISDIR
            | libc::ENOTDIR
            | libc::ELOOP
            | libc::ETXTBSY,
        ) => 126,
        _ => return Failure(1, format!("cannot start {program}: {e}")),
    };
    let why = io::Error::from_raw_os_error(e.raw_os_error().unwrap_or_default());
    Failure(code, format!("cannot run {program}: {why}"))
}

/// Gives the terminal on stdin to the command's process group, when mini_init holds it in
/// the foreground. The command runs in a process group of its own (procwatch starts every
/// tree that way), so without this an interactive program would be stopped by `SIGTTIN` at
/// its first read, and Ctrl-C would go to mini_init instead of to it.
fn hand_over_terminal(cmd: &mut tokio::process::Command) {
    // SAFETY: `tcgetpgrp` only reads the terminal's foreground group (-1 when stdin is no
    // terminal, which never equals a process group id), and `getpgrp` our own group. That
    // is 0 for the first process of a new pid namespace, whose group lives in the parent
    // namespace: not a number rustix's `Pid` can hold, so libc's call is used.
    let (foreground, ours) = unsafe { (libc::tcgetpgrp(libc::STDIN_FILENO), libc::getpgrp()) };
    if foreground != ours {
        return;
    }
    // SAFETY: the hook runs in the child between `fork` and `exec`, where it makes only
    // async-signal-safe calls on its own stack.
    unsafe {
        cmd.pre_exec(|| {
            // The child already leads its new process group here, a background one: the
            // kernel lets it take the terminal only while it blocks SIGTTOU.
            let mut ttou: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut ttou);
            libc::sigaddset(&mut ttou, libc::SIGTTOU);
            libc::sigprocmask(libc::SIG_BLOCK, &ttou, &mut old);
            // A failure leaves the terminal where it was; the command runs anyway.
            libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            Ok(())
        });
    }
}
