//! The `mini_init` example, tested from outside as a user runs it: exit codes, signals passed
//! on to the command, orphans reaped, and what the command leaves behind stopped. Every test
//! runs twice: with mini_init started directly, a child subreaper (`subreaper::*`), and as
//! PID 1 of a new pid namespace under `unshare --pid --fork` (`pid1::*`).
//!
//! `cargo test --test mini_init` builds no example, so the first test to need the binary
//! builds it (`cargo build --example mini_init`, with this test's profile and features).
//!
//! Inside the pid namespace pids differ from the ones seen here, so the checks avoid
//! translating them: the commands talk to the test through files in a scratch directory, and
//! their processes are found in this side's `/proc` by marker arguments (`sleep 1000.<n>`).

mod support;

use rustix::process::{kill_process, Pid as RawPid, Signal};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::{eventually, proc_stat, within, DEADLINE};
use tokio::process::Command;

/// How mini_init is run.
#[derive(Copy, Clone, Debug)]
enum Mode {
    /// Directly: it makes itself a child subreaper.
    Subreaper,
    /// As PID 1 of a new pid namespace (`unshare --pid --fork --mount-proc --kill-child`).
    Pid1,
}

/// Each test below, once per [`Mode`], in modules `subreaper` and `pid1`.
macro_rules! both_ways {
    ($($name:ident),* $(,)?) => {
        mod subreaper {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Mode::Subreaper).await;
                }
            )*
        }
        mod pid1 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if super::pid_namespaces().await {
                        super::$name(super::Mode::Pid1).await;
                    }
                }
            )*
        }
    };
}

both_ways!(
    the_exit_code_is_the_commands,
    a_command_killed_by_a_signal_gives_128_plus_its_number,
    a_missing_program_gives_127,
    a_program_that_cannot_be_executed_gives_126,
    bad_arguments_give_2,
    help_goes_to_stdout_with_0,
    a_signal_reaches_the_command_once,
    sigterm_ends_the_command,
    with_g_a_signal_reaches_the_whole_process_group,
    orphans_never_linger_as_zombies,
    a_setsid_escapee_is_gone_once_mini_init_exits,
    what_ignores_sigterm_is_killed_after_the_grace_period,
);

// ---- Fixtures ----

/// Whether this machine lets the test make pid namespaces. Where it does not, the test is
/// skipped with a printed reason, except under `CI=true`, where the CI machine (root) can.
async fn pid_namespaces() -> bool {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdin(Stdio::null())
        .output();
    let why = match within(DEADLINE, "the unshare probe", probe).await {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!(
            "`unshare --pid --fork --mount-proc true` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("cannot run unshare: {e}"),
    };
    assert!(!support::in_ci(), "no pid namespace under CI: {why}");
    eprintln!("SKIPPED: {why}");
    false
}

/// The example's binary, built once for the whole test run.
async fn binary() -> &'static Path {
    static BINARY: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    BINARY
        .get_or_init(|| support::example_binary("mini_init"))
        .await
}

/// A `mini_init` run.
struct Init {
    /// mini_init, or the `unshare` above it.
    child: tokio::process::Child,
    mode: Mode,
}

impl Init {
    /// Starts `mini_init args...` the way `mode` says, stdin closed, stdout and stderr piped.
    async fn start(mode: Mode, args: &[&str]) -> Init {
        let binary = binary().await;
        let mut cmd = match mode {
            Mode::Subreaper => Command::new(binary),
            Mode::Pid1 => {
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                    .arg(binary);
                c
            }
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("start mini_init");
        Init { child, mode }
    }

    /// mini_init's pid, as this test sees it.
    async fn pid(&self) -> i32 {
        let outer = self.child.id().expect("still running") as i32;
        match self.mode {
            Mode::Subreaper => outer,
            Mode::Pid1 => {
                let mut init = None;
                let found = eventually(DEADLINE, || {
                    init = children(outer).first().copied();
                    init.is_some()
                })
                .await;
                assert!(found, "unshare started no mini_init");
                init.unwrap()
            }
        }
    }

    /// Sends `sig` to mini_init.
    async fn signal(&self, sig: Signal) {
        let pid = RawPid::from_raw(self.pid().await).expect("a pid is positive");
        kill_process(pid, sig).expect("signal mini_init");
    }

    /// Whether mini_init (and the `unshare` above it) has exited.
    fn exited(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_some()
    }

    /// Waits for mini_init to exit and returns what it said.
    async fn finish(self) -> Output {
        within(DEADLINE, "mini_init's exit", self.child.wait_with_output())
            .await
            .expect("wait for mini_init")
    }
}

/// Runs `mini_init args...` to the end.
async fn run(mode: Mode, args: &[&str]) -> Output {
    Init::start(mode, args).await.finish().await
}

/// A directory of its own for one test, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str, mode: Mode) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "procwatch-mini_init-{}-{test}-{mode:?}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Scratch(dir)
    }

    /// The path of `name` in it, as a string for a script.
    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("a UTF-8 path").to_owned()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join(name)).unwrap_or_default()
    }

    fn touch(&self, name: &str) {
        std::fs::write(self.0.join(name), "").expect("create a file");
    }

    async fn wait_for(&self, name: &str) {
        let path = self.0.join(name);
        assert!(
            eventually(DEADLINE, || path.exists()).await,
            "{name} never appeared"
        );
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `sleep` argument no other process has: a marker to find the process by in `/proc`.
fn marker() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "1000.{}{:03}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The processes running `sleep <marker>`, with their start times.
fn sleeping(marker: &str) -> Vec<(i32, u64)> {
    let wanted = format!("sleep\0{marker}\0");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline == wanted.as_bytes() {
            if let Some((_, start)) = proc_stat(procwatch::Pid::from_raw(pid).unwrap()) {
                out.push((pid, start));
            }
        }
    }
    out
}

/// The children of process `pid`, from `/proc/<pid>/task/*/children`.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_ascii_whitespace()
                .filter_map(|s| s.parse::<i32>().ok()),
        );
    }
    out
}

/// The name and state letter of process `pid`, from `/proc/<pid>/stat`.
fn name_and_state(pid: i32) -> Option<(String, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let name = text[text.find('(')? + 1..text.rfind(')')?].to_owned();
    let state = text[text.rfind(')')? + 1..].trim_start().chars().next()?;
    Some((name, state))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// mini_init ended with `code` and said nothing.
fn assert_quiet_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
    assert_eq!(stderr(out), "", "a successful run prints nothing");
}

/// mini_init ended with `code` and one line on stderr, its own.
fn assert_error_exit(out: &Output, code: i32) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("mini_init: "), "{err:?}");
}

// ---- Exit codes ----

async fn the_exit_code_is_the_commands(mode: Mode) {
    assert_quiet_exit(&run(mode, &["sh", "-c", "exit 7"]).await, 7);
    assert_quiet_exit(&run(mode, &["--", "true"]).await, 0);
    // Options before the command; a grace period may have a fraction.
    assert_quiet_exit(
        &run(mode, &["-g", "-t", "0.25", "sh", "-c", "exit 5"]).await,
        5,
    );
}

async fn a_command_killed_by_a_signal_gives_128_plus_its_number(mode: Mode) {
    assert_quiet_exit(&run(mode, &["sh", "-c", "kill -9 $$"]).await, 128 + 9);
    assert_quiet_exit(&run(mode, &["sh", "-c", "kill -USR1 $$"]).await, 128 + 10);
}

async fn a_missing_program_gives_127(mode: Mode) {
    let out = run(mode, &["/nonexistent/mini-init-test-program"]).await;
    assert_error_exit(&out, 127);
    // Looked up in PATH.
    let out = run(mode, &["mini-init-test-no-such-program", "arg"]).await;
    assert_error_exit(&out, 127);
}

async fn a_program_that_cannot_be_executed_gives_126(mode: Mode) {
    let scratch = Scratch::new("noexec", mode);
    let file = scratch.file("not-executable");
    std::fs::write(&file, "#!/bin/sh\nexit 0\n").unwrap();
    // Mode 0644: not even root may execute a file with no execute bit at all.
    assert_error_exit(&run(mode, &[&file]).await, 126);
    // A directory.
    assert_error_exit(&run(mode, &[&scratch.file("")]).await, 126);
}

async fn bad_arguments_give_2(mode: Mode) {
    for args in [
        &[][..],
        &["--"],
        &["-g"],
        &["-x", "true"],
        &["--verbose", "true"],
        &["-t"],
        &["-t", "abc", "true"],
        &["-t", "-1", "true"],
        &["-t", "inf", "true"],
    ] {
        let out = run(mode, args).await;
        assert_error_exit(&out, 2);
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

async fn help_goes_to_stdout_with_0(mode: Mode) {
    for flag in ["-h", "--help"] {
        let out = run(mode, &[flag, "sh", "-c", "exit 3"]).await;
        assert_quiet_exit(&out, 0);
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: mini_init"));
    }
}

// ---- Signals ----

/// A command whose shell and a child shell (in its process group) each log `USR1` to `log`,
/// say they are ready (files `root-ready`, `child-ready`) and run until `go` exists. (With
/// `-g` their `sleep`s die of the signal, which the shells report on stderr: that goes to a
/// file, so that mini_init's own stderr stays empty.)
fn usr1_logger(scratch: &Scratch) -> String {
    let (log, go) = (scratch.file("log"), scratch.file("go"));
    let (root_ready, child_ready) = (scratch.file("root-ready"), scratch.file("child-ready"));
    let stderr = scratch.file("stderr");
    format!(
        "exec 2>{stderr}
         trap 'echo root >> {log}' USR1
         sh -c 'trap \"echo child >> {log}\" USR1; : > {child_ready}
                while [ ! -e {go} ]; do sleep 0.02; done' &
         : > {root_ready}
         while [ ! -e {go} ]; do sleep 0.02; done
         wait"
    )
}

/// Runs [`usr1_logger`] under `mini_init flags...`, sends mini_init one `USR1`, waits for
/// `lines` lines in the log (and a little more, for any extra) and returns them, sorted.
async fn usr1_lines(mode: Mode, flags: &[&str], lines: usize) -> Vec<String> {
    let scratch = Scratch::new(&format!("usr1{}", flags.len()), mode);
    let script = usr1_logger(&scratch);
    let mut args = flags.to_vec();
    args.extend(["sh", "-c", &script]);
    let init = Init::start(mode, &args).await;
    scratch.wait_for("root-ready").await;
    scratch.wait_for("child-ready").await;
    init.signal(Signal::USR1).await;
    assert!(
        eventually(DEADLINE, || scratch.read("log").lines().count() >= lines).await,
        "the signal did not arrive: {:?}",
        scratch.read("log")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    scratch.touch("go");
    assert_quiet_exit(&init.finish().await, 0);
    let mut got: Vec<String> = scratch.read("log").lines().map(String::from).collect();
    got.sort();
    got
}

async fn a_signal_reaches_the_command_once(mode: Mode) {
    // The command, once; not its child, which is no business of the signal's.
    assert_eq!(usr1_lines(mode, &[], 1).await, ["root"]);
}

async fn with_g_a_signal_reaches_the_whole_process_group(mode: Mode) {
    assert_eq!(usr1_lines(mode, &["-g"], 2).await, ["child", "root"]);
}

async fn sigterm_ends_the_command(mode: Mode) {
    let scratch = Scratch::new("term", mode);
    let script = format!(": > {}; exec sleep 100", scratch.file("ready"));
    let init = Init::start(mode, &["sh", "-c", &script]).await;
    scratch.wait_for("ready").await;
    init.signal(Signal::TERM).await;
    assert_quiet_exit(&init.finish().await, 128 + 15);

    // A command that handles it exits its own way.
    let script = format!(
        "trap 'exit 3' TERM; : > {}; while :; do sleep 0.02; done",
        scratch.file("trapped")
    );
    let init = Init::start(mode, &["sh", "-c", &script]).await;
    scratch.wait_for("trapped").await;
    init.signal(Signal::TERM).await;
    assert_quiet_exit(&init.finish().await, 3);
}

// ---- Orphans and escapees ----

async fn orphans_never_linger_as_zombies(mode: Mode) {
    // Thirty orphans, one every few tens of milliseconds: each subshell exits at once, so its
    // `sleep` is reparented to mini_init, and exits there 50 ms later.
    let script = "i=0; while [ $i -lt 30 ]; do (sleep 0.05 &); sleep 0.03; i=$((i+1)); done";
    let mut init = Init::start(mode, &["sh", "-c", script]).await;
    let pid = init.pid().await;
    let (adopted, longest) = watch_zombies(pid, || init.exited()).await;
    assert_quiet_exit(&init.finish().await, 0);
    assert!(
        adopted >= 5,
        "only {adopted} orphans came to mini_init: this proves nothing"
    );
    assert!(
        longest < Duration::from_millis(500),
        "a zombie lingered for {longest:?}"
    );
}

/// As PID 1, mini_init also reaps orphans that are not the command's: here those of a
/// process that entered its pid namespace from outside (`nsenter`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_pid1_orphans_from_outside_the_tree_are_reaped_too() {
    let mode = Mode::Pid1;
    if !pid_namespaces().await {
        return;
    }
    let scratch = Scratch::new("outsiders", mode);
    let script = format!(
        ": > {}; while [ ! -e {} ]; do sleep 0.02; done",
        scratch.file("ready"),
        scratch.file("go")
    );
    let init = Init::start(mode, &["sh", "-c", &script]).await;
    scratch.wait_for("ready").await;
    let pid = init.pid().await;
    // Each inner shell exits at once, leaving its `sleep` to the namespace's init.
    let mut outsider = Command::new("nsenter")
        .args(["--target", &pid.to_string(), "--pid", "--"])
        .args([
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6; do sh -c 'sleep 0.1 & exit 0'; sleep 0.05; done",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run nsenter");
    // Watch until 600 ms after the last orphan was made.
    let mut ended: Option<Instant> = None;
    let (adopted, longest) = watch_zombies(pid, || {
        if ended.is_none() && outsider.try_wait().expect("try_wait").is_some() {
            ended = Some(Instant::now());
        }
        ended.is_some_and(|t| t.elapsed() > Duration::from_millis(600))
    })
    .await;
    let status = within(DEADLINE, "nsenter", outsider.wait()).await.unwrap();
    assert!(status.success(), "nsenter failed: {status}");
    scratch.touch("go");
    assert_quiet_exit(&init.finish().await, 0);
    assert!(
        adopted >= 3,
        "only {adopted} orphans came to mini_init: this proves nothing"
    );
    assert!(
        longest < Duration::from_millis(500),
        "a zombie lingered for {longest:?}"
    );
}

/// Runs a command that starts `escapee` (a shell command ending in `sleep <marker>`) in a
/// session of its own and exits once `go` exists; checks that the escapee ran, then that
/// it is gone when mini_init has exited. Returns the time from `go` to mini_init's exit.
async fn escapee_run(mode: Mode, flags: &[&str], escapee: &str, marker: &str) -> Duration {
    let scratch = Scratch::new(&format!("escapee{}", flags.len()), mode);
    let go = scratch.file("go");
    let script = format!(
        "setsid {escapee} </dev/null >/dev/null 2>&1 &
         while [ ! -e {go} ]; do sleep 0.02; done; exit 0"
    );
    let mut args = flags.to_vec();
    args.extend(["sh", "-c", &script]);
    let init = Init::start(mode, &args).await;
    let mut running = Vec::new();
    assert!(
        eventually(DEADLINE, || {
            running = sleeping(marker);
            !running.is_empty()
        })
        .await,
        "the escapee never ran"
    );
    let released = Instant::now();
    scratch.touch("go");
    let out = init.finish().await;
    let took = released.elapsed();
    assert_quiet_exit(&out, 0);
    for (pid, start) in running {
        assert!(
            support::proc_gone(procwatch::Pid::from_raw(pid).unwrap(), start),
            "the escapee {pid} outlived mini_init: {:?}",
            name_and_state(pid)
        );
    }
    assert_eq!(sleeping(marker), [], "an escapee outlived mini_init");
    took
}

async fn a_setsid_escapee_is_gone_once_mini_init_exits(mode: Mode) {
    let m = marker();
    let took = escapee_run(mode, &[], &format!("sleep {m}"), &m).await;
    // It took SIGTERM: no need to wait out the grace period (5 s).
    assert!(took < Duration::from_secs(4), "{took:?}");
}

async fn what_ignores_sigterm_is_killed_after_the_grace_period(mode: Mode) {
    let m = marker();
    let escapee = format!("sh -c 'trap \"\" TERM; exec sleep {m}'");
    let took = escapee_run(mode, &["-t", "1"], &escapee, &m).await;
    assert!(
        took >= Duration::from_secs(1),
        "killed before the grace period: {took:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "-t 1 was not applied: {took:?}"
    );
}

/// Watches mini_init's children (process `pid`) until `done` says stop: returns how many
/// `sleep`s it adopted, and how long the longest-lived zombie among its children lasted.
async fn watch_zombies(pid: i32, mut done: impl FnMut() -> bool) -> (usize, Duration) {
    let mut adopted = HashSet::new();
    let mut zombies: HashMap<i32, (Instant, Instant)> = HashMap::new();
    let began = Instant::now();
    while !done() {
        assert!(
            began.elapsed() < DEADLINE,
            "still watching after {DEADLINE:?}"
        );
        for child in children(pid) {
            let Some((name, state)) = name_and_state(child) else {
                continue;
            };
            if name == "sleep" {
                adopted.insert(child);
            }
            if state == 'Z' {
                let now = Instant::now();
                zombies.entry(child).or_insert((now, now)).1 = now;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let longest = zombies
        .values()
        .map(|(first, last)| *last - *first)
        .max()
        .unwrap_or_default();
    println!(
        "{} orphans adopted, {} seen as zombies, the longest for {longest:?}",
        adopted.len(),
        zombies.len()
    );
    (adopted.len(), longest)
}
