//! What watching costs: the same process workloads run unwatched and watched by procwatch
//! (`TRACK`, every event consumed by a tokio task) with its Netlink backend and with its Ptrace
//! backend, by two minimal C peers built here with `cc` — a proc-connector listener
//! (`benches/peer/cn_listener.c`; run a second time with `-m`, subscribed but reading
//! nothing, so that the kernel's sending is measured without any reader's wakeup) and a
//! ptrace follower (`benches/peer/ptrace_follower.c`,
//! run twice: resuming every stop and nothing else, and also naming each child and writing a
//! record per event to a pipe another process drains, the least a follower that reports does)
//! — and, when installed, by `forkstat`, `strace -f` and `strace -f --seccomp-bpf`, in
//! alternating rounds. Prints the median wall-time ratio of each watcher over the unwatched
//! run and kernel-to-consumer latency percentiles; then the latency at a light load, procwatch
//! and the C listener alternating; then a consumer that stalls for a second in the middle of a
//! fork storm: loss, memory, order.
//!
//! ```text
//! cargo bench --bench overhead                 # everything, 5 rounds
//! cargo bench --bench overhead -- --ptrace     # the ptrace followers only, 7 rounds
//! cargo bench --bench overhead -- --netlink    # the proc-connector listeners only, 7 rounds
//! cargo bench --bench overhead -- --cli        # the procwatch command beside them, 7 rounds
//! cargo bench --bench overhead -- --rounds 3 --only forkexit
//! ```
//!
//! `--only` takes one of `forkexec`, `forkexit`, `tree`, `make`, `light`, `stall`;
//! `--no-strace` leaves the two `strace` runs out.
//!
//! The `procwatch` command (the workspace's `cli` package, built by the bench with `cargo
//! build --release`) runs as a user runs it, `procwatch [--json] -- <workload>`, three ways:
//! its event lines written to a file, to `/dev/null`, and `--json` lines to a file. The
//! ratio includes its own start and its summary. `PROCWATCH_CLI=<path>` measures that binary
//! instead; `PROCWATCH_CLI_OTHER=<path>` adds a run of that one too (lines to a file), so
//! that two builds are compared in the same rounds. `--cli` runs it beside the library's Netlink
//! backend, the C listener and `forkstat`; `--netlink` and the default run it too.
//!
//! `--netlink` and `--ptrace` each run about half of the watchers, so that a round takes
//! half the time: `--netlink` the proc-connector listeners (procwatch's Netlink backend, the
//! C listener, `forkstat`) and `strace -f`; `--ptrace` the ptrace followers (procwatch's
//! Ptrace backend, the C follower in both forms, `strace -f` and `strace -f --seccomp-bpf`).
//! Both run the
//! workloads unwatched too. The light-load and stalled-consumer parts are about the proc
//! connector, so `--ptrace` leaves them out. Without either, every watcher runs, in 5 rounds
//! rather than 7 so that the whole bench stays within about a quarter of an hour on a 2-core
//! machine (`--rounds N` sets the number either way).
//!
//! Needs root (the proc connector), except with `--ptrace`. The peers are optional: the C
//! peers need `cc`, the others `apt-get install forkstat strace` (`--seccomp-bpf` needs
//! strace 5.3 or later); a peer that is missing is reported as skipped. The `make` workload
//! needs `cc` and `make`.
//!
//! The workloads are this binary itself, re-executed with `__workload <name> <args>`, so the
//! bench depends on nothing outside the repository.

use futures::StreamExt;
use procwatch::{BackendKind, Interest, Pid, ProcEvent, ProcWatcher, Timestamp};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__workload") => return workload::run(&args[1..]),
        Some("__tokio_listener") => return tokio_listener::run(),
        _ => {}
    }
    let opts = Options::parse(&args);
    drop_cargo_library_path();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(bench(opts));
}

/// Takes out of `LD_LIBRARY_PATH` the directories `cargo bench` put there (the target
/// directory's, the toolchain's), before any thread starts, so that the workloads, the
/// watchers and the peers run as they do from a user's shell. With them, every dynamically
/// linked program the workloads exec searched five more directories for its libraries: the
/// unwatched fork+exec run took 2.2 s under `cargo bench` and 1.5 s from a shell.
fn drop_cargo_library_path() {
    let Some(value) = std::env::var_os("LD_LIBRARY_PATH") else {
        return;
    };
    if std::env::var_os("CARGO").is_none() {
        return;
    }
    // <target>/<profile>/deps/<this bench>
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf));
    let toolchains = std::env::var_os("RUSTUP_HOME").map(|h| PathBuf::from(h).join("toolchains"));
    let cargo_put = |dir: &Path| {
        [&target, &toolchains]
            .into_iter()
            .flatten()
            .any(|root| dir.starts_with(root))
    };
    let kept: Vec<PathBuf> = std::env::split_paths(&value)
        .filter(|dir| !cargo_put(dir))
        .collect();
    if kept.is_empty() {
        std::env::remove_var("LD_LIBRARY_PATH");
    } else if let Ok(joined) = std::env::join_paths(kept) {
        std::env::set_var("LD_LIBRARY_PATH", joined);
    }
}

struct Options {
    rounds: usize,
    only: Option<String>,
    set: ModeSet,
    /// `--no-strace`: leave both `strace` runs out (they take most of a round's time).
    no_strace: bool,
}

/// Rounds of each workload with `--netlink` or `--ptrace` (4 watchers), and with all 7.
const ROUNDS: usize = 7;
const ROUNDS_ALL: usize = 5;

impl Options {
    fn parse(args: &[String]) -> Options {
        let mut rounds = None;
        let mut opts = Options {
            rounds: ROUNDS,
            only: None,
            set: ModeSet::All,
            no_strace: false,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()),
                "--only" => opts.only = it.next().cloned(),
                "--netlink" => opts.set = ModeSet::Netlink,
                "--ptrace" => opts.set = ModeSet::Ptrace,
                "--cli" => opts.set = ModeSet::Cli,
                "--no-strace" => opts.no_strace = true,
                _ => {} // `cargo bench` passes `--bench`
            }
        }
        opts.rounds = rounds.unwrap_or(match opts.set {
            ModeSet::All => ROUNDS_ALL,
            ModeSet::Netlink | ModeSet::Ptrace | ModeSet::Cli => ROUNDS,
        });
        opts
    }
}

/// One workload: how to start it.
struct Workload {
    name: &'static str,
    what: &'static str,
    argv: Vec<String>,
    dir: Option<PathBuf>,
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Mode {
    Unwatched,
    ProcwatchNetlink,
    ProcwatchPtrace,
    CListener,
    /// The same listener with `-m`: subscribed, reading nothing, so never woken. What the
    /// kernel's sending alone costs a workload, the floor under every proc-connector reader.
    CListenerMute,
    /// `benches/peer/ptrace_follower.c`, which runs the workload as its child.
    CFollower,
    /// The same follower with `PTRACE_FOLLOWER_REPORT=1`: it also names each new child and
    /// writes a record per event into a pipe that another process drains.
    CFollowerReporting,
    Forkstat,
    Strace,
    /// `strace -f` with a seccomp filter that lets every system call through without a stop,
    /// so that only the process events stop the tracees.
    StraceSeccomp,
    /// The `procwatch` command as a user runs it, `procwatch -- <workload>`, its event lines
    /// (stderr) written to a file.
    CliLines,
    /// The same with its event lines going to `/dev/null`.
    CliNull,
    /// `procwatch --json -- <workload>`, its JSON lines (stdout) written to a file.
    CliJson,
    /// Another build of the command (`PROCWATCH_CLI_OTHER=<path>`), lines to a file: two
    /// builds compared in the same rounds.
    CliOther,
}

/// Which watchers the workloads run under (`--netlink`, `--ptrace`; all by default).
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum ModeSet {
    All,
    Netlink,
    Ptrace,
    /// `--cli`: the `procwatch` command, beside the library and the other proc-connector
    /// listeners.
    Cli,
}

/// How `strace` runs the workload: follow every process, trace no system call, print nothing.
const STRACE: [&str; 7] = ["strace", "-f", "-qq", "-e", "trace=none", "-o", "/dev/null"];

impl Mode {
    /// Every mode, in the order of the table's columns.
    const ALL: [Mode; 14] = [
        Mode::Unwatched,
        Mode::ProcwatchNetlink,
        Mode::ProcwatchPtrace,
        Mode::CListener,
        Mode::CListenerMute,
        Mode::CFollower,
        Mode::CFollowerReporting,
        Mode::Forkstat,
        Mode::Strace,
        Mode::StraceSeccomp,
        Mode::CliLines,
        Mode::CliNull,
        Mode::CliJson,
        Mode::CliOther,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Unwatched => "unwatched",
            Mode::ProcwatchNetlink => "procwatch (netlink)",
            Mode::ProcwatchPtrace => "procwatch (ptrace)",
            Mode::CListener => "C listener",
            Mode::CListenerMute => "C listener reading nothing",
            Mode::CFollower => "C ptrace follower",
            Mode::CFollowerReporting => "C ptrace follower, reporting",
            Mode::Forkstat => "forkstat",
            Mode::Strace => "strace -f",
            Mode::StraceSeccomp => "strace -f --seccomp-bpf",
            Mode::CliLines => "procwatch command, lines to a file",
            Mode::CliNull => "procwatch command, lines to /dev/null",
            Mode::CliJson => "procwatch command, --json to a file",
            Mode::CliOther => "other build of the command, lines to a file",
        }
    }

    /// Whether it runs under `set`: the proc-connector listeners and the ptrace followers
    /// each in their own set, the unwatched runs and `strace -f` in both.
    fn is_in(self, set: ModeSet) -> bool {
        let proc_connector = matches!(
            self,
            Mode::ProcwatchNetlink | Mode::CListener | Mode::CListenerMute | Mode::Forkstat
        ) || self.is_cli();
        let ptrace = matches!(
            self,
            Mode::ProcwatchPtrace
                | Mode::CFollower
                | Mode::CFollowerReporting
                | Mode::StraceSeccomp
        );
        match set {
            ModeSet::All => true,
            ModeSet::Netlink => !ptrace,
            ModeSet::Ptrace => !proc_connector,
            ModeSet::Cli => self == Mode::Unwatched || proc_connector,
        }
    }

    /// Whether it is the `procwatch` command.
    fn is_cli(self) -> bool {
        matches!(
            self,
            Mode::CliLines | Mode::CliNull | Mode::CliJson | Mode::CliOther
        )
    }

    /// The procwatch backend it watches with, if it is procwatch.
    fn backend(self) -> Option<BackendKind> {
        match self {
            Mode::ProcwatchNetlink => Some(BackendKind::Netlink),
            Mode::ProcwatchPtrace => Some(BackendKind::Ptrace),
            _ => None,
        }
    }

    /// Whether its runs measure kernel-to-consumer latency.
    fn has_latency(self) -> bool {
        self.backend().is_some() || self == Mode::CListener
    }

    /// The command that runs the workload `argv` in this mode: the workload itself, or a
    /// tracer with the workload as its arguments.
    fn command(self, argv: &[String], env: &Env) -> tokio::process::Command {
        let mut words: Vec<OsString> = match self {
            Mode::Strace => STRACE.iter().map(OsString::from).collect(),
            Mode::StraceSeccomp => STRACE
                .iter()
                .chain(&["--seccomp-bpf"])
                .map(OsString::from)
                .collect(),
            Mode::CFollower | Mode::CFollowerReporting => {
                vec![env.c_follower.clone().expect("C follower built").into()]
            }
            Mode::CliOther => vec![
                other_cli().expect("PROCWATCH_CLI_OTHER").into(),
                "--".into(),
            ],
            Mode::CliLines | Mode::CliNull | Mode::CliJson => {
                let program = env.cli.clone().expect("procwatch command built");
                let mut words = vec![program.into_os_string()];
                if self == Mode::CliJson {
                    words.push("--json".into());
                }
                words.push("--".into());
                words
            }
            _ => Vec::new(),
        };
        words.extend(argv.iter().map(OsString::from));
        let mut cmd = tokio::process::Command::new(&words[0]);
        cmd.args(&words[1..]);
        if self == Mode::CFollowerReporting {
            cmd.env("PTRACE_FOLLOWER_REPORT", "1");
        }
        cmd
    }

    /// Why this mode cannot run here, if it cannot.
    fn unavailable(self, env: &Env) -> Option<String> {
        let not_installed = |program: &str| (!installed(program)).then(|| "not installed".into());
        match self {
            Mode::Unwatched | Mode::ProcwatchNetlink | Mode::ProcwatchPtrace => None,
            Mode::CListener | Mode::CListenerMute => env.c_listener.as_ref().err().cloned(),
            Mode::CFollower | Mode::CFollowerReporting => env.c_follower.as_ref().err().cloned(),
            Mode::CliLines | Mode::CliNull | Mode::CliJson => env.cli.as_ref().err().cloned(),
            Mode::CliOther => match other_cli() {
                Some(p) if p.is_file() => None,
                Some(p) => Some(format!("PROCWATCH_CLI_OTHER={}: no such file", p.display())),
                None => Some("PROCWATCH_CLI_OTHER is not set".into()),
            },
            Mode::Forkstat => not_installed("forkstat"),
            Mode::Strace => not_installed("strace"),
            Mode::StraceSeccomp => not_installed("strace").or_else(|| {
                let probe = std::process::Command::new("strace")
                    .args(&STRACE[1..])
                    .args(["--seccomp-bpf", "/bin/true"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                (!probe.is_ok_and(|s| s.success()))
                    .then(|| "this strace has no --seccomp-bpf".into())
            }),
        }
    }
}

/// Latency percentiles of one run, kernel timestamp to the consumer's clock.
#[derive(Copy, Clone, Default)]
struct Latency {
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        Latency {
            p50: percentile(&samples, 0.5),
            p90: percentile(&samples, 0.9),
            p99: percentile(&samples, 0.99),
            max: samples.last().copied().unwrap_or_default(),
        }
    }

    /// The median of each percentile over several runs.
    fn median_of(runs: &[Latency]) -> Latency {
        let pick = |f: fn(&Latency) -> Duration| {
            let mut v: Vec<f64> = runs.iter().map(|l| f(l).as_secs_f64()).collect();
            let m = median(&mut v);
            if m.is_nan() {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(m)
            }
        };
        Latency {
            p50: pick(|l| l.p50),
            p90: pick(|l| l.p90),
            p99: pick(|l| l.p99),
            max: pick(|l| l.max),
        }
    }
}

/// One measured run.
struct Run {
    wall: Duration,
    /// Kernel-to-consumer latency (procwatch and the C listener).
    latency: Option<Latency>,
    events: usize,
    /// Socket overflows the C listener saw.
    overflows: u64,
}

/// What the C listener printed when it was stopped.
#[derive(Default)]
struct PeerReport {
    events: u64,
    overflows: u64,
    latency: Latency,
}

impl PeerReport {
    fn parse(line: &str) -> Option<PeerReport> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| -> Option<u64> {
            let i = words.iter().position(|w| *w == name)?;
            words.get(i + 1)?.parse().ok()
        };
        let ns = |name: &str| field(name).map(Duration::from_nanos);
        Some(PeerReport {
            events: field("events")?,
            overflows: field("overflows")?,
            latency: Latency {
                p50: ns("p50")?,
                p90: ns("p90")?,
                p99: ns("p99")?,
                max: ns("max")?,
            },
        })
    }
}

/// A listener process running beside the workload (the C listener or forkstat).
struct Peer {
    child: tokio::process::Child,
    stdout: Option<tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>>,
}

impl Peer {
    /// Starts a listener that speaks the C listener's protocol (`ready`, then a report line
    /// on `SIGINT`) and waits until the kernel acknowledged its subscription.
    async fn listener(program: &Path, args: &[&str]) -> Peer {
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start a listener");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
        assert!(
            matches!(ready, Ok(Ok(Some(ref l))) if l == "ready"),
            "the listener did not subscribe"
        );
        Peer {
            child,
            stdout: Some(lines),
        }
    }

    async fn forkstat() -> Peer {
        let child = tokio::process::Command::new("forkstat")
            .args(["-e", "fork,exec,exit"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start forkstat");
        // forkstat has no "ready" signal: give it time to subscribe.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Peer {
            child,
            stdout: None,
        }
    }

    /// Stops it with `SIGINT`; the C listener's report, if it is the C listener.
    async fn stop(mut self) -> Option<PeerReport> {
        // Let the last messages of the workload reach it first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(pid) = self.child.id() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).expect("a child's pid"),
                rustix::process::Signal::INT,
            );
        }
        let report = match self.stdout.as_mut() {
            Some(lines) => {
                let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
                match line {
                    Ok(Ok(Some(l))) => PeerReport::parse(&l),
                    _ => None,
                }
            }
            None => None,
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        report
    }
}

/// The C listener's receive buffer in the workload runs: procwatch's default.
const C_LISTENER_RCVBUF: &str = "67108864";

/// Builds the C peer `benches/peer/<name>.c` into a temporary file, if there is a C compiler.
fn build_c_peer(name: &str) -> Result<PathBuf, String> {
    if !installed("cc") {
        return Err("no `cc`".into());
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/peer/{name}.c"));
    let out = std::env::temp_dir().join(format!("procwatch-{name}-{}", std::process::id()));
    let status = std::process::Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .map_err(|e| format!("cc: {e}"))?;
    if status.success() {
        Ok(out)
    } else {
        Err(format!("cc failed on {}: {status}", src.display()))
    }
}

/// Builds the `procwatch` command (the workspace's `cli` package) with the profile of this
/// bench, and returns its path, next to this bench's own directory; or the binary that
/// `PROCWATCH_CLI` names, to measure another build of it (an older one, say).
/// The other build of the command, if `PROCWATCH_CLI_OTHER` names one.
fn other_cli() -> Option<PathBuf> {
    std::env::var_os("PROCWATCH_CLI_OTHER").map(PathBuf::from)
}

fn build_cli() -> Result<PathBuf, String> {
    if let Some(program) = std::env::var_os("PROCWATCH_CLI") {
        let program = PathBuf::from(program);
        return match program.is_file() {
            true => Ok(program),
            false => Err(format!("PROCWATCH_CLI={}: no such file", program.display())),
        };
    }
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "procwatch-cli",
            "--bin",
            "procwatch",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build of the procwatch command failed: {status}"
        ));
    }
    // This bench runs from `<target>/release/deps/`; the command is in `<target>/release/`.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let program = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("procwatch"))
        .filter(|p| p.is_file())
        .ok_or_else(|| format!("no procwatch command beside {}", exe.display()))?;
    Ok(program)
}

fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn self_exe() -> String {
    std::env::current_exe()
        .expect("current exe")
        .to_string_lossy()
        .into_owned()
}

/// The workloads that `wants` names (the `make` one only where `make` and `cc` are installed).
fn workloads(wants: impl Fn(&str) -> bool) -> Vec<Workload> {
    let exe = self_exe();
    let w = |args: &[&str]| {
        let mut v = vec![exe.clone(), "__workload".to_string()];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let mut list = vec![
        Workload {
            name: "forkexec",
            what: "2,000 x fork+exec /bin/true, sequential",
            argv: w(&["forkexec", "2000"]),
            dir: None,
        },
        Workload {
            name: "forkexit",
            what: "2 parents x 20,000 fork+_exit",
            argv: w(&["forkexit", "2", "20000"]),
            dir: None,
        },
        Workload {
            name: "tree",
            what: "tree, depth 6 x fanout 4",
            argv: w(&["tree", "6", "4"]),
            dir: None,
        },
    ];
    list.retain(|w| wants(w.name));
    // Writes the C project only when it will be built (and removed after).
    if wants("make") && installed("make") && installed("cc") {
        let dir = workload::c_project(40);
        list.push(Workload {
            name: "make",
            what: "make -j2 of 40 small C files",
            argv: vec![
                "make".into(),
                "-s".into(),
                "-B".into(),
                "-j2".into(),
                "-C".into(),
                dir.to_string_lossy().into_owned(),
            ],
            dir: Some(dir),
        });
    }
    list
}

async fn run_once(mode: Mode, argv: &[String], env: &Env) -> Run {
    let mut cmd = mode.command(argv, env);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    // What the command writes goes where a user would send it; the file is emptied each run.
    let out_file = || {
        let path = std::env::temp_dir().join(format!("procwatch-bench-{}.out", std::process::id()));
        Stdio::from(std::fs::File::create(path).expect("create the output file"))
    };
    match mode {
        Mode::CliLines | Mode::CliOther => drop(cmd.stderr(out_file())),
        Mode::CliJson => drop(cmd.stdout(out_file())),
        _ => {}
    }
    let peer = match mode {
        Mode::Forkstat => Some(Peer::forkstat().await),
        Mode::CListener => {
            let program = env.c_listener.as_ref().expect("C listener built");
            // The receive buffer procwatch uses by default, so that neither loses messages
            // and both latencies count every event.
            Some(Peer::listener(program, &["-b", C_LISTENER_RCVBUF]).await)
        }
        Mode::CListenerMute => {
            let program = env.c_listener.as_ref().expect("C listener built");
            // The same buffer: the messages of a run are queued, not dropped.
            Some(Peer::listener(program, &["-b", C_LISTENER_RCVBUF, "-m"]).await)
        }
        _ => None,
    };
    // Built before the clock starts, gone (with its threads) before the next run.
    let watcher = mode.backend().map(|backend| env.watcher(backend));
    let start = Instant::now();
    let mut run = if let Some(watcher) = &watcher {
        let mut started = watcher.spawn(cmd, Interest::ALL).expect("spawn watched");
        let mut events = started.events;
        let reader = tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut n = 0;
            while let Some(ev) = events.next().await {
                n += 1;
                if ev.at().is_known() {
                    lat.push(ev.at().elapsed());
                }
            }
            (lat, n)
        });
        let status = started.child.wait().await.expect("wait");
        let wall = start.elapsed();
        assert!(status.success(), "workload failed: {status}");
        let (latencies, events) = reader.await.expect("reader");
        Run {
            wall,
            latency: Some(Latency::of(latencies)),
            events,
            overflows: 0,
        }
    } else {
        let status = cmd.status().await.expect("run workload");
        assert!(
            status.success(),
            "workload failed under {}: {status}",
            mode.name()
        );
        Run {
            wall: start.elapsed(),
            latency: None,
            events: 0,
            overflows: 0,
        }
    };
    if let Some(peer) = peer {
        if let Some(report) = peer.stop().await {
            run.latency = Some(report.latency);
            run.events = report.events as usize;
            run.overflows = report.overflows;
        }
    }
    run
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// What every run needs.
struct Env {
    /// The backends of the library's runs. A watcher is built for each run that uses one and
    /// is gone before the next run starts: a subscribed proc-connector socket costs every
    /// process on the host something, so one left open would slow the other runs too.
    backends: Vec<BackendKind>,
    c_listener: Result<PathBuf, String>,
    c_follower: Result<PathBuf, String>,
    /// The `procwatch` command, built for the runs that use it.
    cli: Result<PathBuf, String>,
}

impl Env {
    /// A new watcher on `backend`, for one run.
    fn watcher(&self, backend: BackendKind) -> Scoped {
        assert!(self.backends.contains(&backend), "{backend} is not in use");
        Scoped::build(backend)
    }
}

/// A watcher for one run: dropping it waits until its threads have ended, so that its
/// socket no longer hears anything when the next run starts.
struct Scoped {
    watcher: Option<ProcWatcher>,
    threads: usize,
}

impl Scoped {
    fn build(backend: BackendKind) -> Scoped {
        let threads = threads();
        let watcher = ProcWatcher::builder()
            .backend(backend)
            .build()
            .unwrap_or_else(|e| match backend {
                BackendKind::Netlink => panic!("procwatch needs root (the proc connector): {e}"),
                _ => panic!("cannot start the {backend} backend: {e}"),
            });
        Scoped {
            watcher: Some(watcher),
            threads,
        }
    }
}

impl std::ops::Deref for Scoped {
    type Target = ProcWatcher;
    fn deref(&self) -> &ProcWatcher {
        self.watcher.as_ref().expect("not dropped")
    }
}

impl Drop for Scoped {
    fn drop(&mut self) {
        drop(self.watcher.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while threads() > self.threads && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// How many threads this process has.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

async fn bench(opts: Options) {
    let wants = |name: &str| opts.only.as_deref().is_none_or(|o| o == name);
    // The light-load and stalled-consumer parts watch with the proc connector.
    let light = wants("light") && matches!(opts.set, ModeSet::All | ModeSet::Netlink);
    let stall_too = wants("stall") && matches!(opts.set, ModeSet::All | ModeSet::Netlink);
    let mut backends: Vec<BackendKind> = Mode::ALL
        .iter()
        .filter(|m| m.is_in(opts.set))
        .filter_map(|m| m.backend())
        .collect();
    if (light || stall_too) && !backends.contains(&BackendKind::Netlink) {
        backends.push(BackendKind::Netlink);
    }
    // Each backend is tried once here, so that a missing permission stops the bench at once.
    for &backend in &backends {
        drop(Scoped::build(backend));
    }
    let env = Env {
        backends,
        c_listener: build_c_peer("cn_listener"),
        c_follower: build_c_peer("ptrace_follower"),
        cli: if Mode::ALL.iter().any(|m| m.is_cli() && m.is_in(opts.set)) {
            build_cli()
        } else {
            Err("not in this set".into())
        },
    };
    let mut modes = Vec::new();
    let mut skipped = Vec::new();
    for mode in Mode::ALL.into_iter().filter(|m| m.is_in(opts.set)) {
        if opts.no_strace && matches!(mode, Mode::Strace | Mode::StraceSeccomp) {
            continue;
        }
        match mode.unavailable(&env) {
            None => modes.push(mode),
            // Only asked for by name.
            Some(_) if mode == Mode::CliOther && other_cli().is_none() => {}
            Some(why) => skipped.push(format!("{} ({why})", mode.name())),
        }
    }
    println!(
        "procwatch overhead bench: {} rounds, {} cores, kernel {}",
        opts.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    for s in &skipped {
        println!("peer skipped: {s}");
    }
    let timed: Vec<usize> = (0..modes.len())
        .filter(|&i| modes[i].has_latency())
        .collect();
    let counted: Vec<usize> = (0..modes.len())
        .filter(|&i| modes[i].backend().is_some())
        .collect();
    let list: Vec<Workload> = workloads(wants);
    let mut notes = Vec::new();
    let mut against_c = Vec::new();
    if !list.is_empty() {
        println!();
        println!("Wall-time ratio over unwatched (median, with min-max over rounds); latency p50 / p99 (median over rounds).");
        println!();
        let headers = |which: &[usize], what: &str| {
            which
                .iter()
                .map(|&i| format!(" {} {what} |", modes[i].name()))
                .collect::<String>()
        };
        println!(
            "| workload | unwatched (median) |{}{}{}",
            headers(&(1..modes.len()).collect::<Vec<_>>(), "ratio"),
            headers(&timed, "latency"),
            headers(&counted, "events"),
        );
        println!(
            "|---|---|{}",
            "---|".repeat(modes.len() - 1 + timed.len() + counted.len())
        );
    }
    for w in list {
        // Warm-up: page cache, binaries, the C compiler.
        let _ = run_once(Mode::Unwatched, &w.argv, &env).await;
        let mut walls: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let mut lat: Vec<Vec<Latency>> = vec![Vec::new(); modes.len()];
        let mut events = vec![0; modes.len()];
        let mut c_overflows = 0;
        for round in 0..opts.rounds {
            // Rotate the order each round so no mode always runs first or last.
            let mut order: Vec<usize> = (0..modes.len()).collect();
            order.rotate_left(round % modes.len());
            let mut this = vec![0.0; modes.len()];
            for &i in &order {
                let r = run_once(modes[i], &w.argv, &env).await;
                this[i] = r.wall.as_secs_f64();
                if let Some(l) = r.latency {
                    lat[i].push(l);
                }
                events[i] = r.events;
                c_overflows += r.overflows;
            }
            for i in 0..modes.len() {
                walls[i].push(this[i]);
                ratios[i].push(this[i] / this[0]);
            }
        }
        let base = median(&mut walls[0].clone());
        let cells: Vec<String> = (1..modes.len())
            .map(|i| {
                let lo = ratios[i].iter().copied().fold(f64::INFINITY, f64::min);
                let hi = ratios[i].iter().copied().fold(0.0, f64::max);
                format!("{:.3} ({lo:.2}-{hi:.2})", median(&mut ratios[i]))
            })
            .collect();
        let lats: Vec<String> = timed
            .iter()
            .map(|&i| {
                let l = Latency::median_of(&lat[i]);
                format!("{} / {}", micros(l.p50), micros(l.p99))
            })
            .collect();
        let counts: Vec<String> = counted.iter().map(|&i| events[i].to_string()).collect();
        println!(
            "| {} | {:.3} s | {} |",
            w.what,
            base,
            [cells, lats, counts].concat().join(" | "),
        );
        // Each run against the C listener's run of the same round.
        if let Some(c) = modes.iter().position(|&m| m == Mode::CListener) {
            let against: Vec<String> = (1..modes.len())
                .filter(|&i| i != c)
                .map(|i| {
                    let mut r: Vec<f64> = (0..opts.rounds)
                        .map(|k| walls[i][k] / walls[c][k])
                        .collect();
                    format!("{} {:.3}", modes[i].name(), median(&mut r))
                })
                .collect();
            against_c.push(format!("{}: {}", w.what, against.join(", ")));
        }
        if c_overflows > 0 {
            notes.push(format!(
                "{}: the C listener's socket overflowed {c_overflows} times; its latency counts only what it received",
                w.what
            ));
        }
        if let Some(dir) = w.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    if !against_c.is_empty() {
        println!();
        println!("Over the C listener (median of each round's ratio to its C listener run):");
        println!();
        for line in &against_c {
            println!("- {line}");
        }
    }
    for n in &notes {
        println!("\nNote: {n}");
    }
    if light {
        light_latency(&env, opts.rounds).await;
    }
    if stall_too {
        stall(&env).await;
    }
    for path in [&env.c_listener, &env.c_follower].into_iter().flatten() {
        let _ = std::fs::remove_file(path);
    }
    if env.cli.is_ok() {
        let out = format!("procwatch-bench-{}.out", std::process::id());
        let _ = std::fs::remove_file(std::env::temp_dir().join(out));
    }
}

/// Latency at a light load (one short process every 2 ms), procwatch and the C listener in
/// alternating runs.
async fn light_latency(env: &Env, rounds: usize) {
    let argv = [
        self_exe(),
        "__workload".into(),
        "light".into(),
        "500".into(),
        "2".into(),
    ];
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut spinning = Vec::new();
    let mut bare_tokio = Vec::new();
    let exe = PathBuf::from(self_exe());
    let mut events = 0;
    for _ in 0..rounds {
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let watcher = env.watcher(BackendKind::Netlink);
        let mut started = watcher.spawn(cmd, Interest::ALL).expect("spawn");
        let mut lat = Vec::new();
        while let Some(ev) = started.events.next().await {
            let at: Timestamp = ev.at();
            if at.is_known() {
                lat.push(at.elapsed());
            }
        }
        let _ = started.child.wait().await;
        events = lat.len();
        ours.push(Latency::of(lat));
        if let Ok(program) = &env.c_listener {
            theirs.extend(under_listener(program, &[], &argv).await);
            spinning.extend(under_listener(program, &["-p"], &argv).await);
        }
        bare_tokio.extend(under_listener(&exe, &["__tokio_listener"], &argv).await);
    }
    println!();
    println!(
        "Light load (1 fork+exit every 2 ms, {events} events a run, {rounds} runs each, medians of the runs' percentiles):"
    );
    println!();
    println!("| listener | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    let row = |name: &str, l: Latency| {
        println!(
            "| {name} | {} | {} | {} | {} |",
            micros(l.p50),
            micros(l.p90),
            micros(l.p99),
            micros(l.max)
        );
    };
    row("procwatch (stream, tokio task)", Latency::median_of(&ours));
    row(
        "bare tokio listener (AsyncFd + recv, no tracking)",
        Latency::median_of(&bare_tokio),
    );
    if !theirs.is_empty() {
        row("C listener (blocking recv)", Latency::median_of(&theirs));
        row(
            "C listener spinning (never sleeps, burns a core)",
            Latency::median_of(&spinning),
        );
    }
}

/// Runs the workload `argv` while the listener `program args` listens; its latency report.
async fn under_listener(program: &Path, args: &[&str], argv: &[String]) -> Option<Latency> {
    let peer = Peer::listener(program, args).await;
    let status = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .await
        .expect("run the workload");
    assert!(status.success(), "workload failed: {status}");
    peer.stop().await.map(|r| r.latency)
}

/// `VmRSS` of this process, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// What a stalled procwatch consumer saw.
struct StallReport {
    check: Checker,
    /// Highest RSS growth over the run, from spawning the storm to its last event read.
    rss_peak_growth: u64,
}

/// Checks a stream's promises as it is read: one `Child` before anything else about a pid,
/// `Exit` last and once (until the pid names a new process), nothing lost.
#[derive(Default)]
struct Checker {
    seen: HashMap<Pid, bool>,
    events: usize,
    lost: usize,
    children: usize,
    exits: usize,
    order_errors: usize,
}

impl Checker {
    /// A checker whose table already has room (and resident pages) for `pids` entries, so
    /// that it does not count in the memory measured while it runs.
    fn with_room(pids: i32) -> Checker {
        let mut seen = HashMap::with_capacity(pids as usize);
        seen.extend((1..=pids).filter_map(Pid::from_raw).map(|p| (p, true)));
        seen.clear();
        Checker {
            seen,
            ..Checker::default()
        }
    }

    /// `true` in `seen` means born and not exited.
    fn feed(&mut self, ev: &ProcEvent) {
        self.events += 1;
        match ev {
            ProcEvent::Lost { .. } => self.lost += 1,
            ProcEvent::Child { pid, .. } => {
                self.children += 1;
                // A pid may come back after its `Exit`: the storm outnumbers `pid_max`.
                if self.seen.insert(*pid, true) == Some(true) {
                    self.order_errors += 1;
                }
            }
            ProcEvent::Exit { pid, .. } => {
                self.exits += 1;
                if self.seen.insert(*pid, false) != Some(true) {
                    self.order_errors += 1;
                }
            }
            other => {
                if self.seen.get(&other.pid()) != Some(&true) {
                    self.order_errors += 1;
                }
            }
        }
    }
}

/// Samples this process's RSS every 2 ms on a thread of its own; the highest value seen.
struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start() -> RssSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = rss();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss());
                std::thread::sleep(Duration::from_millis(2));
            }
            peak.max(rss())
        });
        RssSampler { stop, thread }
    }

    fn peak(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("rss sampler")
    }
}

/// How the consumer stalls.
#[derive(Copy, Clone)]
enum Stall {
    /// Its task sleeps for a second after the first event.
    Task,
    /// It blocks the whole runtime thread for a second (the drain task cannot run either).
    Runtime,
    /// It reads nothing until the storm is over: every process is pending at once.
    WholeStorm,
}

/// A consumer that stalls early in the 2 x 20,000 fork storm, with the watcher's default
/// settings.
async fn stalled_run(env: &Env, argv: &[String], stall: Stall) -> StallReport {
    let mut check = Checker::with_room(1 << 16);
    let watcher = env.watcher(BackendKind::Netlink);
    let sampler = RssSampler::start();
    // Let the sampler thread settle before the baseline.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = rss();
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let mut started = watcher.spawn(cmd, Interest::ALL).expect("spawn");
    check.seen.insert(started.pid(), true);
    if let Some(ev) = started.events.next().await {
        check.feed(&ev);
    }
    match stall {
        Stall::Task => tokio::time::sleep(Duration::from_secs(1)).await,
        Stall::Runtime => std::thread::sleep(Duration::from_secs(1)),
        Stall::WholeStorm => {
            let _ = started.child.wait().await;
        }
    }
    while let Some(ev) = started.events.next().await {
        check.feed(&ev);
    }
    let _ = started.child.wait().await;
    StallReport {
        check,
        rss_peak_growth: sampler.peak().saturating_sub(before),
    }
}

async fn stall(env: &Env) {
    let argv = vec![
        self_exe(),
        "__workload".into(),
        "forkexit".into(),
        "2".into(),
        "20000".into(),
    ];
    // The storm's own processes: the root, 2 parents, 40,000 children.
    let processes = 40_003;
    println!();
    println!(
        "Stalled consumer: 2 x 20,000 fork+_exit ({processes} processes, {} fork+exit messages at least), watcher defaults; the consumer stops reading after its first event:",
        2 * (processes - 1)
    );
    println!();
    println!("| listener | lost | delivered | order errors | memory |");
    println!("|---|---|---|---|---|");
    for (name, stall) in [
        ("procwatch: consumer task asleep 1 s", Stall::Task),
        ("procwatch: whole runtime blocked 1 s", Stall::Runtime),
        (
            "procwatch: nothing read until the storm is over",
            Stall::WholeStorm,
        ),
    ] {
        let r = stalled_run(env, &argv, stall).await;
        let c = &r.check;
        let per_process = match stall {
            Stall::WholeStorm => format!(
                " ({:.0} B per process)",
                r.rss_peak_growth as f64 / processes as f64
            ),
            _ => String::new(),
        };
        println!(
            "| {name} | {} `Lost` | {} events: {} `Child` (of {}), {} `Exit` (of {processes}) | {} | +{:.1} MiB peak RSS{per_process} |",
            c.lost,
            c.events,
            c.children,
            processes - 1,
            c.exits,
            c.order_errors,
            r.rss_peak_growth as f64 / (1024.0 * 1024.0),
        );
    }
    let program = match &env.c_listener {
        Ok(program) => program,
        Err(why) => {
            println!("| C listener | skipped ({why}) | | | |");
            return;
        }
    };
    for (name, args) in [
        (
            "C listener: default receive buffer, asleep 1 s",
            vec!["-s", "1000"],
        ),
        (
            "C listener: 64 MiB receive buffer, asleep 1 s",
            vec!["-s", "1000", "-b", "67108864"],
        ),
    ] {
        let peer = Peer::listener(program, &args).await;
        let status = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .status()
            .await
            .expect("run the storm");
        assert!(status.success(), "storm failed: {status}");
        // The listener may still be catching up after its stall.
        tokio::time::sleep(Duration::from_millis(500)).await;
        match peer.stop().await {
            Some(r) => {
                let expected = 2 * (processes - 1) as u64;
                let missing = expected.saturating_sub(r.events);
                println!(
                    "| {name} | {} overflows (ENOBUFS); at least {missing} of {expected} messages missing ({:.1}%) | {} messages (any process) | n/a | n/a |",
                    r.overflows,
                    100.0 * missing as f64 / expected as f64,
                    r.events
                );
            }
            None => println!("| {name} | no report | | | |"),
        }
    }
}

mod tokio_listener {
    //! The floor of any listener that lives in a tokio runtime: the proc connector read
    //! through the runtime's reactor (current-thread, like the bench itself) with no decoding
    //! beyond the timestamp and no tracking. Run as `__tokio_listener`; it speaks the C
    //! listener's protocol (`ready`, then a report line on `SIGINT`).

    use rustix::net::{netlink, AddressFamily, RecvFlags, SocketFlags, SocketType};
    use std::time::Duration;

    /// `struct proc_event` starts after `nlmsghdr` (16 bytes) and `cn_msg` (20 bytes):
    /// `what` (4), `cpu` (4), `timestamp_ns` (8).
    const WHAT: usize = 36;
    const TIMESTAMP: usize = 44;

    fn subscribe_request() -> [u8; 40] {
        let mut m = [0u8; 40];
        m[0..4].copy_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
        m[4..6].copy_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
        m[16..20].copy_from_slice(&1u32.to_ne_bytes()); // CN_IDX_PROC
        m[20..24].copy_from_slice(&1u32.to_ne_bytes()); // CN_VAL_PROC
        m[32..34].copy_from_slice(&4u16.to_ne_bytes()); // payload length
        m[36..40].copy_from_slice(&1u32.to_ne_bytes()); // PROC_CN_MCAST_LISTEN
        m
    }

    pub fn run() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(listen());
    }

    async fn listen() {
        let sock = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::CONNECTOR),
        )
        .expect("netlink socket");
        rustix::net::bind(&sock, &netlink::SocketAddrNetlink::new(0, 1)).expect("bind");
        rustix::net::send(&sock, &subscribe_request(), rustix::net::SendFlags::empty())
            .expect("subscribe");
        // SAFETY: the `AsyncFd` owns the socket, so the descriptor stays open and the same
        // for as long as it is registered.
        let afd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE)
        }
        .expect("register with the reactor");
        let mut buf = vec![0u8; 64 * 1024];
        let mut lat: Vec<Duration> = Vec::with_capacity(1 << 16);
        let (mut events, mut overflows, mut acked) = (0u64, 0u64, false);
        let stop = tokio::signal::ctrl_c();
        tokio::pin!(stop);
        loop {
            let mut ready = tokio::select! {
                r = afd.readable() => r.expect("readable"),
                _ = &mut stop => break,
            };
            loop {
                match rustix::net::recv(afd.get_ref(), &mut buf[..], RecvFlags::DONTWAIT) {
                    Ok((n, _)) if n >= TIMESTAMP + 8 => {
                        let now = procwatch::Timestamp::now();
                        let what = u32::from_ne_bytes(buf[WHAT..WHAT + 4].try_into().unwrap());
                        if what == 0 {
                            if !acked {
                                acked = true;
                                println!("ready");
                            }
                            continue;
                        }
                        let ts =
                            u64::from_ne_bytes(buf[TIMESTAMP..TIMESTAMP + 8].try_into().unwrap());
                        events += 1;
                        lat.push(now.duration_since(procwatch::Timestamp::from_nanos(ts)));
                    }
                    Ok(_) => {}
                    Err(rustix::io::Errno::NOBUFS) => overflows += 1,
                    Err(_) => break,
                }
            }
            ready.clear_ready();
        }
        let l = super::Latency::of(lat);
        println!(
            "events {events} overflows {overflows} p50 {} p90 {} p99 {} max {}",
            l.p50.as_nanos(),
            l.p90.as_nanos(),
            l.p99.as_nanos(),
            l.max.as_nanos()
        );
    }
}

mod workload {
    //! The workloads, run in a re-executed copy of this binary.

    use std::path::{Path, PathBuf};

    fn arg(args: &[String], i: usize, default: u32) -> u32 {
        args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    pub fn run(args: &[String]) {
        match args.first().map(String::as_str) {
            Some("forkexec") => forkexec(arg(args, 1, 2000)),
            Some("forkexit") => forkexit(arg(args, 1, 2), arg(args, 2, 20000)),
            Some("tree") => tree(arg(args, 1, 6), arg(args, 2, 4)),
            Some("light") => light(arg(args, 1, 500), arg(args, 2, 2)),
            // Not a workload: writes the `make` workload's project into a directory, for
            // measuring it with other tools (`benches/oncpu.sh`).
            Some("c-project") => {
                let dir = args.get(2).expect("c-project FILES DIR");
                c_project_in(Path::new(dir), arg(args, 1, 40));
            }
            other => panic!("unknown workload {other:?}"),
        }
    }

    /// `fork(2)` in this single-threaded workload process.
    fn fork() -> i32 {
        // SAFETY: the workload process is single-threaded (it is a fresh exec of this binary
        // that never starts threads), so the child may run arbitrary code.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
        pid
    }

    fn exit_now(code: i32) -> ! {
        // SAFETY: `_exit` ends the process without running destructors or atexit handlers,
        // which is what a forked child of this workload wants.
        unsafe { libc::_exit(code) }
    }

    fn reap(pid: i32) {
        let mut status = 0;
        // SAFETY: plain `waitpid` on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child failed"
        );
    }

    fn forkexec(n: u32) {
        let prog = c"/bin/true";
        let argv = [prog.as_ptr(), std::ptr::null()];
        for _ in 0..n {
            let pid = fork();
            if pid == 0 {
                // SAFETY: `argv` is a null-terminated array of valid C strings.
                unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
                exit_now(127);
            }
            reap(pid);
        }
    }

    fn forkexit(parents: u32, n: u32) {
        let mut kids = Vec::new();
        for _ in 0..parents {
            let pid = fork();
            if pid == 0 {
                for _ in 0..n {
                    let c = fork();
                    if c == 0 {
                        exit_now(0);
                    }
                    reap(c);
                }
                exit_now(0);
            }
            kids.push(pid);
        }
        kids.into_iter().for_each(reap);
    }

    fn tree(depth: u32, fanout: u32) {
        if depth == 0 {
            return;
        }
        let mut kids = Vec::new();
        for _ in 0..fanout {
            let pid = fork();
            if pid == 0 {
                tree(depth - 1, fanout);
                exit_now(0);
            }
            kids.push(pid);
        }
        kids.into_iter().for_each(reap);
    }

    fn light(n: u32, every_ms: u32) {
        for _ in 0..n {
            let pid = fork();
            if pid == 0 {
                exit_now(0);
            }
            reap(pid);
            std::thread::sleep(std::time::Duration::from_millis(every_ms.into()));
        }
    }

    /// Writes a small C project with `files` sources and a Makefile into a fresh temp dir.
    pub fn c_project(files: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("procwatch-bench-{}", std::process::id()));
        c_project_in(&dir, files);
        dir
    }

    /// Writes the project of [`c_project`] into `dir`, emptied first.
    fn c_project_in(dir: &Path, files: u32) {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("create project dir");
        let mut objs = Vec::new();
        let mut decls = String::new();
        let mut calls = String::new();
        for i in 0..files {
            let src = format!(
                "int f{i}(int x) {{\n    int s = 0;\n    for (int k = 0; k < x; k++) s += k * {i};\n    return s;\n}}\n"
            );
            write(&dir.join(format!("f{i}.c")), &src);
            objs.push(format!("f{i}.o"));
            decls += &format!("int f{i}(int);\n");
            calls += &format!("    s += f{i}(argc);\n");
        }
        write(
            &dir.join("main.c"),
            &format!("{decls}int main(int argc, char **argv) {{\n    (void)argv;\n    int s = 0;\n{calls}    return s == -1;\n}}\n"),
        );
        objs.push("main.o".into());
        write(
            &dir.join("Makefile"),
            &format!(
                "app: {objs}\n\tcc -o app {objs}\n\n%.o: %.c\n\tcc -O1 -c $< -o $@\n",
                objs = objs.join(" ")
            ),
        );
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write project file");
    }
}
