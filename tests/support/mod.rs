//! Shared fixtures for the integration tests.
#![allow(dead_code)]

use futures::StreamExt;
use procwatch::{
    BackendKind, Builder, ErrorKind, Interest, Pid, ProcEvent, ProcEvents, ProcWatcher,
    WatchedChild,
};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The default deadline for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Whether this run is CI, where a capability this machine has must never be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The backend the conformance tests run against: each conformance test file is built
/// twice (see `Cargo.toml`), and the target whose name starts with `ptrace_` runs against the
/// Ptrace backend, the other against Netlink.
pub fn backend_under_test() -> BackendKind {
    if env!("CARGO_CRATE_NAME").starts_with("ptrace_") {
        BackendKind::Ptrace
    } else {
        BackendKind::Netlink
    }
}

/// A watcher on the backend under test (see [`backend_under_test`]), or `None` (with a
/// printed reason) when this machine cannot provide one outside CI. Under `CI=true` a failure
/// is a test failure.
pub fn watcher() -> Option<ProcWatcher> {
    watcher_with(|b| b)
}

/// Like [`watcher`], with builder settings of the test's own.
pub fn watcher_with(configure: impl FnOnce(Builder) -> Builder) -> Option<ProcWatcher> {
    watcher_on(backend_under_test(), configure)
}

/// A Netlink watcher, for the tests of what only that backend does (resyncs, namespaces):
/// `None` when another backend is under test, or as [`watcher`] when this machine has none.
pub fn netlink_watcher_with(configure: impl FnOnce(Builder) -> Builder) -> Option<ProcWatcher> {
    if backend_under_test() != BackendKind::Netlink {
        eprintln!("SKIPPED: a Netlink-only test, and the backend under test is another");
        return None;
    }
    watcher_on(BackendKind::Netlink, configure)
}

/// [`netlink_watcher_with`] with the defaults.
pub fn netlink_watcher() -> Option<ProcWatcher> {
    netlink_watcher_with(|b| b)
}

/// Set (by `.ci/run`) where the suite runs as an unprivileged user in a user namespace of
/// its own: the proc connector refuses it there, so Netlink watchers are not asked for.
pub const NO_NETLINK_ENV: &str = "PROCWATCH_NO_NETLINK";

/// A watcher on `kind`, or `None` outside CI where this machine has none.
pub fn watcher_on(
    kind: BackendKind,
    configure: impl FnOnce(Builder) -> Builder,
) -> Option<ProcWatcher> {
    if kind == BackendKind::Netlink && std::env::var_os(NO_NETLINK_ENV).is_some() {
        eprintln!("SKIPPED: {NO_NETLINK_ENV} is set: the proc connector is refused here");
        return None;
    }
    let builder = ProcWatcher::builder().backend(kind);
    match configure(builder).build() {
        Ok(w) => {
            assert_eq!(w.backend(), kind);
            Some(w)
        }
        Err(e)
            if !in_ci()
                && matches!(
                    e.kind(),
                    ErrorKind::PermissionDenied | ErrorKind::Unsupported
                ) =>
        {
            eprintln!("SKIPPED: the {kind} backend is not available here: {e}");
            None
        }
        Err(e) => panic!("the {kind} backend must work on this machine: {e}"),
    }
}

/// Unwraps a fixture or returns from the test (outside CI only; see [`watcher`]).
#[macro_export]
macro_rules! require {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return,
        }
    };
}

/// The name the test harness knows test function `name` of the calling file by, for a test
/// that runs its own binary again with `--exact`: the file may be compiled as a module of
/// another test target (`tests/ptrace_*.rs`), whose test names then start with its path.
#[macro_export]
macro_rules! test_name {
    ($name:expr) => {
        match module_path!().split_once("::") {
            Some((_, module)) => format!("{}::{}", module, $name),
            None => String::from($name),
        }
    };
}

/// A `sh -c script` command.
pub fn sh(script: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c").arg(script);
    c.kill_on_drop(true);
    c
}

/// Spawns `sh -c script` watched with `interest`.
pub fn spawn_sh(w: &ProcWatcher, script: &str, interest: Interest) -> WatchedChild {
    w.spawn(sh(script), interest).expect("spawn watched sh")
}

/// Reads the stream until it ends, failing the test if that takes longer than `limit`.
pub async fn collect(events: &mut ProcEvents, limit: Duration) -> Vec<ProcEvent> {
    let mut out = Vec::new();
    let res = tokio::time::timeout(limit, async {
        while let Some(ev) = events.next().await {
            out.push(ev);
        }
    })
    .await;
    if res.is_err() {
        panic!(
            "stream did not end within {limit:?}; {} events so far, last few: {:?}",
            out.len(),
            &out[out.len().saturating_sub(10)..]
        );
    }
    out
}

/// Waits for the next event, failing the test after `limit`.
pub async fn next(events: &mut ProcEvents, limit: Duration) -> Option<ProcEvent> {
    tokio::time::timeout(limit, events.next())
        .await
        .unwrap_or_else(|_| panic!("no event within {limit:?}"))
}

/// Awaits `fut`, failing the test with `what` if that takes longer than `limit`: for every
/// wait on a process (its pipes, its exit) that has no deadline of its own.
pub async fn within<F: std::future::Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {limit:?}"))
}

/// Number of open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// How many proc connector sockets (`NETLINK_CONNECTOR`) this process has open: a watcher's
/// socket is closed only once the last of its backend's holders (the watcher, its streams, its
/// runtime task, whose abort the runtime carries out a moment later) is gone.
pub fn connector_sockets() -> usize {
    const NETLINK_CONNECTOR: &str = "11";
    let table = std::fs::read_to_string("/proc/self/net/netlink").unwrap_or_default();
    let inodes: HashSet<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.get(1) == Some(&NETLINK_CONNECTOR)).then(|| cols.last().map(|s| s.to_string()))?
        })
        .collect();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_owned();
            let inode = target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .to_owned();
            Some(inode)
        })
        .filter(|inode| inodes.contains(inode))
        .count()
}

/// Number of threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Waits until `f` holds, polling, up to `limit`. Returns whether it did.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// Per-pid view of a trace: each event's index, for order checks.
pub fn by_pid(events: &[ProcEvent]) -> HashMap<Pid, Vec<(usize, ProcEvent)>> {
    let mut m: HashMap<Pid, Vec<(usize, ProcEvent)>> = HashMap::new();
    for (i, ev) in events.iter().enumerate() {
        m.entry(ev.pid()).or_default().push((i, ev.clone()));
    }
    m
}

/// Checks the per-stream guarantees that hold for every trace: `Child` first and at most
/// once, `Exit` last and at most once, and no `Lost`.
pub fn check_order(events: &[ProcEvent]) {
    check_order_allowing_lost(events);
    assert!(
        !events.iter().any(|e| matches!(e, ProcEvent::Lost { .. })),
        "unexpected Lost in {events:?}"
    );
}

// ---- Process and memory probes (added with threads.rs, drop_safety.rs, stalled_consumer.rs,
// lost_resync.rs) ----

/// The state letter (field 3) and start time in clock ticks since boot (field 22) of
/// `/proc/<pid>/stat`, or `None` if there is no such process.
pub fn proc_stat(pid: Pid) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some((f.first()?.chars().next()?, f.get(22 - 3)?.parse().ok()?))
}

/// Whether the process that had `pid` and started at `start_ticks` is gone for good (reaped):
/// `/proc/<pid>` is absent, or the number now names a process started at another time.
pub fn proc_gone(pid: Pid, start_ticks: u64) -> bool {
    match proc_stat(pid) {
        None => true,
        Some((_, start)) => start != start_ticks,
    }
}

/// Whether our child `pid` has exited and is waiting to be reaped. Uses `waitid(WNOWAIT)`, so
/// the child is *not* reaped and tokio's `Child::wait` still gets its status.
pub fn exited_unreaped(pid: Pid) -> bool {
    let raw = rustix::process::Pid::from_raw(pid.as_raw()).expect("positive pid");
    let opts = rustix::process::WaitIdOptions::EXITED
        | rustix::process::WaitIdOptions::NOHANG
        | rustix::process::WaitIdOptions::NOWAIT;
    matches!(
        rustix::process::waitid(rustix::process::WaitId::Pid(raw), opts),
        Ok(Some(_))
    )
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

/// The names of this process's threads (for messages about leaked threads).
pub fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|s| s.trim_end().to_owned())
        .collect();
    names.sort();
    names
}

/// The per-pid half of [`check_order`], for traces that may contain `Lost`: `Child` first and
/// at most once, `Exit` last and at most once. `Lost` events (about the stream, not about a
/// process) are left out of the per-pid view.
pub fn check_order_allowing_lost(events: &[ProcEvent]) {
    let about_processes: Vec<ProcEvent> = events
        .iter()
        .filter(|e| !matches!(e, ProcEvent::Lost { .. }))
        .cloned()
        .collect();
    for (pid, evs) in by_pid(&about_processes) {
        let childs = evs
            .iter()
            .filter(|(_, e)| matches!(e, ProcEvent::Child { .. }))
            .count();
        let exits = evs
            .iter()
            .filter(|(_, e)| matches!(e, ProcEvent::Exit { .. }))
            .count();
        assert!(childs <= 1, "{pid}: {childs} Child events: {evs:?}");
        assert!(exits <= 1, "{pid}: {exits} Exit events: {evs:?}");
        if childs == 1 {
            assert!(
                matches!(evs[0].1, ProcEvent::Child { .. }),
                "{pid}: Child is not first: {evs:?}"
            );
        }
        if exits == 1 {
            assert!(
                matches!(evs.last().unwrap().1, ProcEvent::Exit { .. }),
                "{pid}: Exit is not last: {evs:?}"
            );
        }
    }
}

/// Aborts the whole test process, with a message, unless dropped within `limit`: the last
/// resort against a hang in synchronous code (a `Drop`) that no async timeout can interrupt.
/// It runs one thread (`test-watchdog`) while armed.
pub struct Watchdog {
    disarm: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn arm(limit: Duration, what: &'static str) -> Watchdog {
        let (disarm, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-watchdog".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                    eprintln!("WATCHDOG: {what} still running after {limit:?}; aborting");
                    std::process::abort();
                }
            })
            .expect("start the watchdog thread");
        Watchdog {
            disarm: Some(disarm),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.disarm.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- Added with fd_exhaustion.rs and resync_vanishing.rs ----

/// The processes whose parent is this test process, with their state letters: what a test
/// looks at to prove it left no zombie or stray process behind.
pub fn children_of_this_process() -> Vec<(Pid, char)> {
    children_of(std::process::id() as i32)
        .into_iter()
        .map(|(pid, state, _)| (pid, state))
        .collect()
}

/// The processes whose parent is process `parent`, with their state letters and names.
pub fn children_of(parent: i32) -> Vec<(Pid, char, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse().ok())
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // gone meanwhile
        };
        let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
            continue;
        };
        let name = text[open + 1..close].to_owned();
        let mut f = text[close + 1..].split_ascii_whitespace();
        let state = f.next().and_then(|s| s.chars().next());
        let ppid: Option<i32> = f.next().and_then(|p| p.parse().ok());
        if let (Some(state), Some(ppid)) = (state, ppid) {
            if ppid == parent {
                out.push((pid, state, name));
            }
        }
    }
    out.sort();
    out
}

/// The exit code in an `Exit` event's status, if the event is an `Exit` with a known status
/// of a process that exited normally.
pub fn exit_code(ev: &ProcEvent) -> Option<i32> {
    match ev {
        ProcEvent::Exit {
            status: Some(s), ..
        } => s.code(),
        _ => None,
    }
}

/// Counts every panic in this test process from now on — in the crate's threads and tasks
/// too, where a panic would otherwise only show as a missing event — and returns the counter.
/// The default hook still prints each one. Installing it again returns the same counter.
pub fn count_panics() -> &'static std::sync::atomic::AtomicUsize {
    static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            default(info);
        }));
    });
    &PANICS
}

/// `Child` events as a map from each new process to its parent.
pub fn parents_of(events: &[ProcEvent]) -> HashMap<Pid, Pid> {
    events
        .iter()
        .filter_map(|e| match *e {
            ProcEvent::Child { pid, parent, .. } => Some((pid, parent)),
            _ => None,
        })
        .collect()
}

/// A storm script started watched with `TRACK`. Its processes append lines to the file
/// named by `$LOG`; it lives until its stdin (kept here) is closed.
pub struct LoggedStorm {
    pub root: Pid,
    pub child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    log_path: std::path::PathBuf,
    released: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What a storm left: how its root ended, what a reader kept of each event, its log.
pub struct StormRun<T> {
    pub root: Pid,
    pub status: std::process::ExitStatus,
    pub seen: Vec<T>,
    pub log: String,
}

impl LoggedStorm {
    /// Starts `script` watched, with the log file named after `name` and `attempt`. A task
    /// reads the stream concurrently, as a supervisor would, keeping `keep(event, released)`
    /// of each event (`released`: whether [`LoggedStorm::finish`] had begun).
    pub fn start<T: Send + 'static>(
        w: &ProcWatcher,
        name: &str,
        attempt: usize,
        script: &str,
        mut keep: impl FnMut(ProcEvent, bool) -> T + Send + 'static,
    ) -> (LoggedStorm, tokio::task::JoinHandle<Vec<T>>) {
        use std::sync::atomic::Ordering;
        let log_path = std::env::temp_dir().join(format!(
            "procwatch-{name}-{}-{attempt}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&log_path);
        let mut cmd = sh(script);
        cmd.env("LOG", &log_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
        let mut started = w.spawn(cmd, Interest::ALL).expect("spawn the storm");
        let stdin = started.child.stdin.take().expect("piped stdin");
        let root = started.pid();
        let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = released.clone();
        let mut events = started.events;
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(ev) = events.next().await {
                out.push(keep(ev, flag.load(Ordering::SeqCst)));
            }
            out
        });
        let storm = LoggedStorm {
            root,
            child: started.child,
            stdin: Some(stdin),
            log_path,
            released,
        };
        (storm, reader)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Closes the root's stdin (its long-lived processes read it and exit on EOF), waits for
    /// the root and for the stream to end, and removes the log.
    pub async fn finish<T>(mut self, reader: tokio::task::JoinHandle<Vec<T>>) -> StormRun<T> {
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        drop(self.stdin.take());
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the storm finishes once its stdin is closed")
            .expect("wait for the storm");
        let seen = tokio::time::timeout(DEADLINE, reader)
            .await
            .expect("the stream ends: every tracked process gets its Exit")
            .expect("the reader task");
        let log = self.log();
        let _ = std::fs::remove_file(&self.log_path);
        StormRun {
            root: self.root,
            status,
            seen,
            log,
        }
    }
}

/// The uid and gid of `nobody`, which tests run parts of themselves as.
pub const NOBODY: &str = "65534";

/// `setpriv` and its arguments to run a command as `nobody` with no capability but `cap` (a
/// `setpriv` name such as `net_admin`), or none at all.
pub fn setpriv_nobody(cap: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = ["setpriv", "--reuid", NOBODY, "--regid", NOBODY]
        .map(String::from)
        .into();
    args.push("--clear-groups".into());
    match cap {
        None => args.extend(["--inh-caps=-all".into(), "--bounding-set=-all".into()]),
        Some(cap) => args.extend([
            format!("--inh-caps=-all,+{cap}"),
            format!("--ambient-caps=+{cap}"),
            format!("--bounding-set=-all,+{cap}"),
        ]),
    }
    args
}

/// A command that runs `args` as `nobody` with no capabilities at all (`setpriv`).
pub fn as_nobody(args: &[&str]) -> tokio::process::Command {
    let setpriv = setpriv_nobody(None);
    let mut c = tokio::process::Command::new(&setpriv[0]);
    c.args(&setpriv[1..]).args(args).kill_on_drop(true);
    c
}

/// Runs `cmd` and returns the text after `RESULT=` on its standard output: how a test's helper
/// (this test binary run again, as another user or in another namespace) reports.
pub async fn helper_result(mut cmd: tokio::process::Command, limit: Duration) -> String {
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .expect("the helper hung")
        .expect("run the helper");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT=").map(|(_, r)| r.to_owned()))
        .unwrap_or_else(|| {
            panic!(
                "no result from the helper (is the test binary readable by nobody?): \
                 {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

// ---- Blocking pipe I/O, and nothing older than the watch ----

/// Reads one line (without its newline) from the pipe `fd`, which must be in blocking mode,
/// one byte at a time so that nothing after the line is consumed. It never awaits: a test
/// that calls it and then `watch` leaves the runtime no chance to read the netlink socket in
/// between. Fails the test if no full line comes within [`DEADLINE`].
pub fn read_line_blocking(fd: impl rustix::fd::AsFd, what: &str) -> String {
    use rustix::event::{poll, PollFd, PollFlags};
    use rustix::io::Errno;
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: no full line within {DEADLINE:?}; got {:?}",
            String::from_utf8_lossy(&line)
        );
        let ts = rustix::time::Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => panic!("{what}: poll: {e}"),
        }
        if fds[0].revents().is_empty() {
            continue;
        }
        let mut byte = [0u8];
        match rustix::io::read(&fd, &mut byte) {
            Ok(0) => panic!(
                "{what}: end of file before a full line; got {:?}",
                String::from_utf8_lossy(&line)
            ),
            Ok(_) if byte[0] == b'\n' => return String::from_utf8_lossy(&line).into_owned(),
            Ok(_) => line.push(byte[0]),
            Err(Errno::INTR) | Err(Errno::AGAIN) => {}
            Err(e) => panic!("{what}: read: {e}"),
        }
    }
}

/// Writes all of `bytes` to the blocking pipe `fd` (a few bytes into an empty pipe never wait).
pub fn write_blocking(fd: impl rustix::fd::AsFd, bytes: &[u8], what: &str) {
    let mut done = 0;
    while done < bytes.len() {
        match rustix::io::write(&fd, &bytes[done..]) {
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("{what}: write: {e}"),
        }
    }
}

/// Checks that no event is older than `watched_at`, the time read just before the watch
/// began: what the kernel emitted before `watch` was called is never delivered (guarantee 9
/// in the crate docs), even if its message was still unread in the socket then.
pub fn check_after_watch(events: &[ProcEvent], watched_at: procwatch::Timestamp) {
    for ev in events {
        assert!(
            ev.at() >= watched_at,
            "an event from {:?} before the watch was delivered: {ev:?} (watch at {watched_at:?}); \
             all events: {events:?}",
            watched_at.duration_since(ev.at())
        );
    }
}

// ---- Added with the watch-when-ready runs of threads.rs, tree.rs, short_lived.rs ----

/// Reads lines from `fd` (see [`read_line_blocking`]) until one ends with `marker`.
pub fn read_until_ready(fd: impl rustix::fd::AsFd, marker: &str) {
    let mut before = Vec::new();
    loop {
        let line = read_line_blocking(&fd, "the program's ready line");
        if line.trim_end().ends_with(marker) {
            return;
        }
        before.push(line);
        assert!(
            before.len() < 1000,
            "no line ending in {marker:?}; the last lines were {:?}",
            &before[before.len() - 10..]
        );
    }
}

/// How a test starts the process it watches.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// [`ProcWatcher::spawn`]: watched from before the program's first instruction.
    Spawn,
    /// Started unwatched with tokio's `Command`. The program writes a line ending in a ready
    /// marker on its stdout and then waits for a line on its stdin before doing its work. The
    /// test reads the ready line with a blocking read, calls `watch` at once (nothing is
    /// awaited in between, so the netlink socket may still hold unread messages about the
    /// program's start), and then sends the line.
    WatchWhenReady,
}

/// A process started the way a [`Start`] says, and its stream.
pub struct Started {
    /// The process, as tokio manages it. With [`Start::WatchWhenReady`] its stdin is closed
    /// and `child.stdout` holds what the program writes after its ready line.
    pub child: tokio::process::Child,
    /// Its events.
    pub events: ProcEvents,
    /// `CLOCK_MONOTONIC` just before the watch began (the `spawn` or `watch` call): no event
    /// the stream yields may be older.
    pub watched_at: procwatch::Timestamp,
    pid: Pid,
}

impl Started {
    /// The process's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }
}

/// Starts `cmd` as `how` says and watches it with `interest`. For [`Start::WatchWhenReady`]
/// the program must follow the ready protocol described there, with `marker` at the end of its
/// ready line; its stdin and stdout are piped here, whatever `cmd` says. When this returns,
/// the program has been released.
pub fn start(
    w: &ProcWatcher,
    mut cmd: tokio::process::Command,
    interest: Interest,
    how: Start,
    marker: &str,
) -> Started {
    let watched_at = procwatch::Timestamp::now();
    if how == Start::Spawn {
        let started = w.spawn(cmd, interest).expect("spawn watched");
        let pid = started.pid();
        return Started {
            child: started.child,
            events: started.events,
            watched_at,
            pid,
        };
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start the program unwatched");
    let pid = Pid::from_raw(child.id().expect("running") as i32).expect("a valid pid");
    let stdout = child.stdout.take().expect("piped stdout");
    let stdout = stdout
        .into_owned_fd()
        .expect("the program's stdout, blocking");
    read_until_ready(&stdout, marker);
    let watched_at = procwatch::Timestamp::now();
    let events = w.watch(pid, interest).expect("watch the ready program");
    let go = child.stdin.take().expect("piped stdin");
    let go = go.into_owned_fd().expect("the program's stdin, blocking");
    write_blocking(&go, b"go\n", "release the program");
    drop(go);
    let stdout = tokio::process::ChildStdout::from_std(std::process::ChildStdout::from(stdout))
        .expect("the program's stdout, back on the runtime");
    child.stdout = Some(stdout);
    Started {
        child,
        events,
        watched_at,
        pid,
    }
}

/// Starts `sh -c script` as `how` says (see [`start`]), watched with `interest`. For
/// [`Start::WatchWhenReady`] the script is preceded by `echo ready; read x`, builtins that
/// create no process.
pub fn start_sh(w: &ProcWatcher, script: &str, interest: Interest, how: Start) -> Started {
    let script = match how {
        Start::Spawn => script.to_owned(),
        Start::WatchWhenReady => format!("echo ready; read x; {script}"),
    };
    start(w, sh(&script), interest, how, "ready")
}

// ---- Raw process creation, for tests that start processes the way other code would ----

/// The first version of the kernel's `struct clone_args` (`CLONE_ARGS_SIZE_VER0`, 64 bytes;
/// `clone3(2)`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// `clone3` with `flags` and `exit_signal`, without `CLONE_VM` or a stack: like `fork`, it
/// returns twice, 0 in the child and the child's pid in the parent (or -1 with `errno`).
///
/// # Safety
///
/// As for `fork` in a multithreaded program: until it execs or exits, the child may only
/// make async-signal-safe calls on memory prepared before the call.
pub unsafe fn raw_clone3(flags: u64, exit_signal: u64) -> libc::c_long {
    let args = CloneArgs {
        flags,
        exit_signal,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid `clone_args` of the size passed; without CLONE_VM and a stack
    // the call behaves like fork, and the caller keeps the child to what is safe after one.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>() as libc::size_t,
        )
    }
}

// ---- Added with supervise.rs and reaper.rs ----

/// The grandchildren of a tree's root in its report: in the reaper tests, the processes a
/// `( cmd & )` subshell leaves behind, orphaned when the subshell exits.
pub fn grandchildren(report: &procwatch::TreeReport) -> HashSet<Pid> {
    let children: HashSet<Pid> = report
        .processes
        .iter()
        .filter(|p| p.parent == Some(report.root))
        .map(|p| p.pid)
        .collect();
    report
        .processes
        .iter()
        .filter(|p| p.parent.is_some_and(|q| children.contains(&q)))
        .map(|p| p.pid)
        .collect()
}

// ---- Added with mini_init.rs and supervisor_example.rs ----

/// How long building an example may take, when a test finds it out of date.
pub const BUILD_DEADLINE: Duration = Duration::from_secs(900);

/// The binary of example `name`, built first (a no-op when it is up to date) with this test's
/// profile, features and target directory: `cargo test --test <one>` builds no example.
/// Outside cargo (`CARGO` unset), the binary must be there already.
pub async fn example_binary(name: &str) -> std::path::PathBuf {
    use std::path::Path;
    let exe = std::env::current_exe().expect("the test's own path");
    // `<target dir>/<profile>/deps/<this test>`
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the profile's directory");
    let binary = profile_dir.join("examples").join(name);
    let Some(cargo) = std::env::var_os("CARGO") else {
        assert!(
            binary.exists(),
            "not run by cargo, and {} is not built",
            binary.display()
        );
        return binary;
    };
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(name) => name,
    };
    let mut build = tokio::process::Command::new(cargo);
    build
        .args(["build", "--quiet", "--example", name, "--profile", profile])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(profile_dir.parent().expect("the target directory"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if cfg!(feature = "bench-support") {
        build.args(["--features", "bench-support"]);
    }
    let out = within(BUILD_DEADLINE, "building the example", build.output())
        .await
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build --example {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}
