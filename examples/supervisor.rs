//! `supervisor`: keeps a few services running, each one a process tree of its own.
//!
//! ```text
//! cargo build --release --example supervisor
//! target/release/examples/supervisor --max-restarts 3 --backoff-ms 200 --grace-secs 2 \
//!     'clock=while sleep 1; do date; done' \
//!     'flaky=sleep 2; exit 1'
//! ```
//!
//! With `RUST_LOG=debug`, the log also shows every process each service starts and how it
//! ended.
//!
//! Each `NAME=COMMAND` argument is a service; its command is run with `sh -c` as a
//! [`Tree`](procwatch::Tree): the shell and every process it starts, whatever session or
//! process group those move to. The policy, per service:
//!
//! * When the service's first process (the tree's root) exits, its status is logged and
//!   whatever it left running is shut down: `SIGTERM`, up to `--grace-secs` for the processes
//!   to go, then `SIGKILL`. A new instance starts only once every process of the old one is
//!   gone.
//! * A service that exits with code 0 has finished its work: it is not restarted.
//! * One that fails (a non-zero code, or killed by a signal) is restarted after a delay:
//!   `--backoff-ms` after its first failure, doubled after each further failure in a row, at
//!   most 30 s.
//! * A service that fails again after `--max-restarts` restarts in a row is given up. A run
//!   that lasted 10 s or more does not count as a failure in a row: the count starts again.
//!
//! Ctrl-C or `SIGTERM` shuts every service down the same way, and the supervisor exits with 0.
//! When no service is left running (each finished or was given up), it exits by itself: with
//! 0 if none was given up, 1 otherwise. Bad arguments exit with 2.
//!
//! The supervisor makes itself the child subreaper of its services ([`Reaper`]): a process
//! that double-forks away from its service is reaped here, not by init, once it ends.

use futures::StreamExt;
use procwatch::{ProcEvent, ProcWatcher, Reaper, Signal};
use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
supervisor: keep services running, each one a process tree of its own

Usage:
  supervisor [options] [--] NAME=COMMAND...

Each COMMAND runs with `sh -c`. A service that fails is restarted once all of its old
processes are gone; one that exits 0 is not. Ctrl-C or SIGTERM stops every service.

Options:
  --max-restarts N   give a service up when it fails again after N restarts in a row [5]
  --backoff-ms MS    delay before the first restart, doubled for each failure in a row [500]
  --grace-secs S     time between SIGTERM and SIGKILL when a service is stopped [5]
  -h, --help         print this help

Logs go to stderr; RUST_LOG=debug also shows every process of every service.
";

/// A run at least this long starts the count of failures in a row again.
const STABLE_RUN: Duration = Duration::from_secs(10);
/// The longest delay before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq)]
struct Policy {
    max_restarts: u32,
    backoff: Duration,
    grace: Duration,
}

#[derive(Debug, PartialEq)]
struct Service {
    name: String,
    command: String,
}

/// How the supervision of one service ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Finished,
    GaveUp,
    Stopped,
}

/// How one run of a service ended, once all of its processes are gone.
#[derive(Debug, PartialEq)]
enum Run {
    Succeeded,
    Failed,
    Stopped,
    /// Some of its processes could not be stopped: a new instance must not start.
    Lingering,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let (policy, services) = match parse_args(std::env::args().skip(1)) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("supervisor: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Both handlers before any service starts: an early Ctrl-C or SIGTERM then stops the
    // services instead of killing the supervisor and leaving them behind.
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            error!(error = %e, "cannot handle signals");
            return ExitCode::FAILURE;
        }
    };
    let _reaper = match Reaper::install() {
        Ok(reaper) => Some(reaper),
        Err(e) => {
            warn!(error = %e, "not a subreaper: orphaned service processes go to init");
            None
        }
    };
    let watcher = match ProcWatcher::new() {
        Ok(watcher) => Arc::new(watcher),
        Err(e) => {
            error!(error = %e, "cannot watch processes");
            return ExitCode::FAILURE;
        }
    };

    let (stop, stopping) = watch::channel(false);
    let mut running = JoinSet::new();
    for service in services {
        running.spawn(supervise(
            watcher.clone(),
            service,
            policy.clone(),
            stopping.clone(),
        ));
    }
    let mut gave_up = false;
    let why = loop {
        tokio::select! {
            _ = interrupt.recv() => break "Ctrl-C",
            _ = terminate.recv() => break "SIGTERM",
            done = running.join_next() => match done {
                Some(Ok(outcome)) => gave_up |= outcome == Outcome::GaveUp,
                Some(Err(e)) => {
                    // Its tree was killed when the task dropped it (`kill_on_drop`).
                    error!(error = %e, "a service's task failed");
                    gave_up = true;
                }
                None => {
                    info!(gave_up, "no service left to run");
                    return if gave_up { ExitCode::FAILURE } else { ExitCode::SUCCESS };
                }
            },
        }
    };
    info!("{why}: stopping every service");
    let _ = stop.send(true);
    while running.join_next().await.is_some() {}
    info!("every service stopped");
    ExitCode::SUCCESS
}

/// Runs `service` again and again, as the policy says, until it finishes, is given up, or
/// `stopping` turns true.
async fn supervise(
    watcher: Arc<ProcWatcher>,
    service: Service,
    policy: Policy,
    mut stopping: watch::Receiver<bool>,
) -> Outcome {
    let name = service.name.as_str();
    let mut restarts = 0;
    let mut failures = 0;
    loop {
        let began = Instant::now();
        match run(&watcher, &service, restarts, &policy, &mut stopping).await {
            Run::Succeeded => {
                info!(service = %name, restarts, "finished; not restarted");
                return Outcome::Finished;
            }
            Run::Stopped => return Outcome::Stopped,
            Run::Lingering => return Outcome::GaveUp,
            Run::Failed => {}
        }
        if began.elapsed() >= STABLE_RUN {
            failures = 0;
        }
        failures += 1;
        if failures > policy.max_restarts {
            error!(
                service = %name,
                restarts,
                failures,
                "too many failures in a row; giving up"
            );
            return Outcome::GaveUp;
        }
        let delay = backoff(policy.backoff, failures);
        restarts += 1;
        warn!(
            service = %name,
            restart = restarts,
            delay_ms = delay.as_millis() as u64,
            "restarting after {delay:?}"
        );
        tokio::select! {
            biased;
            _ = stopping.wait_for(|&stop| stop) => return Outcome::Stopped,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Starts one instance of `service` and follows it until its root exits (or `stopping` turns
/// true); then shuts down every process left and returns once all of them are gone.
async fn run(
    watcher: &ProcWatcher,
    service: &Service,
    restarts: u32,
    policy: &Policy,
    stopping: &mut watch::Receiver<bool>,
) -> Run {
    let name = service.name.as_str();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(&service.command).stdin(Stdio::null());
    // Should this task die, every process of the service dies with its tree.
    cmd.kill_on_drop(true);
    let mut tree = match watcher.spawn_tree(cmd) {
        Ok(tree) => tree,
        Err(e) => {
            error!(service = %name, error = %e, "cannot start");
            return Run::Failed;
        }
    };
    static MECHANISM: Once = Once::new();
    MECHANISM.call_once(|| info!("services are followed with: {}", tree.mechanism()));
    let root = tree.pid();
    info!(service = %name, pid = %root, restarts, "started");

    // Until the root exits (then `Tree::wait` reaps it) or the supervisor stops, log what
    // the tree does.
    let mut root_exit = tree.root_exit();
    let stopped = loop {
        tokio::select! {
            biased;
            _ = stopping.wait_for(|&stop| stop) => break true,
            _ = &mut root_exit => break false,
            Some(event) = tree.events().next() => log_event(name, &event),
        }
    };
    if stopped {
        info!(service = %name, pid = %root, "stopping");
    } else {
        match tree.wait().await {
            Ok(status) => info!(service = %name, pid = %root, status = %describe(status), "exited"),
            Err(e) => error!(service = %name, pid = %root, error = %e, "exited, status unknown"),
        }
    }

    // Returns once every process of the tree has exited: only then may a new one start.
    let report = match tree.shutdown(policy.grace).await {
        Ok(report) => report,
        Err(e) => {
            error!(
                service = %name,
                pid = %root,
                error = %e,
                "cannot tell whether every process is gone; not restarting"
            );
            return Run::Lingering;
        }
    };
    let lingering: Vec<String> = report.still_running().map(|p| p.pid.to_string()).collect();
    if !lingering.is_empty() {
        error!(
            service = %name,
            pid = %root,
            lingering = lingering.join(","),
            "cannot stop every process (not allowed to signal them); not restarting"
        );
        return Run::Lingering;
    }
    let killed = report.processes.iter().filter(|p| p.forced).count();
    info!(
        service = %name,
        pid = %root,
        status = %report.root_status().map_or("unknown".into(), describe),
        processes = report.processes.len(),
        killed,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "every process of this instance is gone"
    );
    match report.root_status() {
        _ if stopped => Run::Stopped,
        Some(status) if status.success() => Run::Succeeded,
        _ => Run::Failed,
    }
}

fn log_event(service: &str, event: &ProcEvent) {
    match event {
        ProcEvent::Child { pid, parent, .. } => {
            debug!(service = %service, %pid, %parent, "new process")
        }
        ProcEvent::Exit {
            pid,
            status: Some(status),
            ..
        } => debug!(service = %service, %pid, status = %describe(*status), "process exited"),
        ProcEvent::Exit { pid, .. } => {
            debug!(service = %service, %pid, "process exited, status unknown")
        }
        ProcEvent::TrackErr { .. } | ProcEvent::Lost { .. } => {
            warn!(service = %service, ?event, "a process may escape the service's shutdown")
        }
        _ => {}
    }
}

/// `exit 3`, `killed by SIGKILL`.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal().and_then(Signal::from_raw)) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by {signal}"),
        (None, None) => status.to_string(),
    }
}

/// `base` after the first failure in a row, doubled after each further one, at most
/// [`MAX_BACKOFF`].
fn backoff(base: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    base.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// The policy and the services, or `None` for `--help`.
fn parse_args(
    args: impl IntoIterator<Item = String>,
) -> Result<Option<(Policy, Vec<Service>)>, String> {
    let mut policy = Policy {
        max_restarts: 5,
        backoff: Duration::from_millis(500),
        grace: Duration::from_secs(5),
    };
    let mut services: Vec<Service> = Vec::new();
    let mut args = args.into_iter();
    let mut options = true;
    while let Some(arg) = args.next() {
        if options {
            match arg.as_str() {
                "-h" | "--help" => return Ok(None),
                "--" => options = false,
                "--max-restarts" => policy.max_restarts = value(&arg, args.next())?,
                "--backoff-ms" => policy.backoff = Duration::from_millis(value(&arg, args.next())?),
                "--grace-secs" => {
                    policy.grace = Duration::try_from_secs_f64(value(&arg, args.next())?)
                        .map_err(|e| format!("--grace-secs: {e}"))?
                }
                _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
                _ => {}
            }
            if arg.starts_with('-') {
                continue;
            }
        }
        let Some((name, command)) = arg.split_once('=') else {
            return Err(format!("{arg:?} is not NAME=COMMAND"));
        };
        if name.is_empty() || command.trim().is_empty() {
            return Err(format!("{arg:?}: a service needs a name and a command"));
        }
        if services.iter().any(|s| s.name == name) {
            return Err(format!("two services are named {name:?}"));
        }
        services.push(Service {
            name: name.to_owned(),
            command: command.to_owned(),
        });
    }
    if services.is_empty() {
        return Err("no service to run".to_owned());
    }
    Ok(Some((policy, services)))
}

fn value<T: FromStr>(option: &str, value: Option<String>) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("{option} needs a value"))?;
    value
        .parse()
        .map_err(|_| format!("{option}: {value:?} is not a valid number"))
}

#[cfg(test)]
mod tests {
    //! The pure parts; run with `cargo test --example supervisor`.

    use super::*;

    fn parse(list: &[&str]) -> Result<Option<(Policy, Vec<Service>)>, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn options_then_services() {
        let (policy, services) = parse(&[
            "--max-restarts",
            "2",
            "--grace-secs",
            "0.5",
            "--backoff-ms",
            "100",
            "a=sleep 1; exit 1",
            "--",
            "-b=echo x=y",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            policy,
            Policy {
                max_restarts: 2,
                backoff: Duration::from_millis(100),
                grace: Duration::from_millis(500),
            }
        );
        assert_eq!(
            services,
            [
                Service {
                    name: "a".into(),
                    command: "sleep 1; exit 1".into()
                },
                Service {
                    name: "-b".into(),
                    command: "echo x=y".into()
                },
            ]
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--max-restarts"]).is_err());
        assert!(parse(&["--max-restarts", "-1", "a=true"]).is_err());
        assert!(parse(&["--grace-secs", "-1", "a=true"]).is_err());
        assert!(parse(&["--frobnicate", "a=true"]).is_err());
        assert!(parse(&["true"]).is_err());
        assert!(parse(&["=true"]).is_err());
        assert!(parse(&["a="]).is_err());
        assert!(parse(&["a=true", "a=false"]).is_err());
        assert_eq!(parse(&["--help", "a=true"]), Ok(None));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_millis(500);
        assert_eq!(backoff(base, 1), base);
        assert_eq!(backoff(base, 2), base * 2);
        assert_eq!(backoff(base, 4), base * 8);
        assert_eq!(backoff(base, 7), MAX_BACKOFF);
        assert_eq!(backoff(base, u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn statuses_read_as_a_shell_would_say_them() {
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit 3");
        assert_eq!(describe(ExitStatus::from_raw(9)), "killed by SIGKILL");
    }
}
