//! What watching costs: the same process workloads run unwatched, watched by procwatch
//! (`TRACK`, every event consumed by a tokio task), and — when installed — by `forkstat` and
//! `strace -f`, in alternating rounds. Prints the median wall-time ratio of each watcher over
//! the unwatched run, and procwatch's kernel-to-stream latency percentiles.
//!
//! ```text
//! cargo bench --bench overhead                 # all workloads, 7 rounds
//! cargo bench --bench overhead -- --rounds 3 --only forkexit
//! ```
//!
//! Needs root (the proc connector). `forkstat` and `strace` are optional peers
//! (`apt-get install forkstat strace`); a peer that is not installed is reported as skipped.
//! The `make` workload needs `cc` and `make`.
//!
//! The workloads are this binary itself, re-executed with `__workload <name> <args>`, so the
//! bench depends on nothing outside the repository.

use futures::StreamExt;
use procwatch::{Interest, ProcWatcher, Timestamp};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("__workload") {
        workload::run(&args[1..]);
        return;
    }
    let opts = Options::parse(&args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(bench(opts));
}

struct Options {
    rounds: usize,
    only: Option<String>,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let mut opts = Options {
            rounds: 7,
            only: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--rounds" => opts.rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(7),
                "--only" => opts.only = it.next().cloned(),
                _ => {} // `cargo bench` passes `--bench`
            }
        }
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
    Procwatch,
    Forkstat,
    Strace,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Unwatched => "unwatched",
            Mode::Procwatch => "procwatch",
            Mode::Forkstat => "forkstat",
            Mode::Strace => "strace -f",
        }
    }
}

/// One measured run.
struct Run {
    wall: Duration,
    /// Kernel-to-stream latencies of every event (procwatch only).
    latencies: Vec<Duration>,
    events: usize,
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

fn workloads() -> Vec<Workload> {
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
    if installed("make") && installed("cc") {
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

async fn run_once(mode: Mode, argv: &[String], watcher: &ProcWatcher) -> Run {
    let mut cmd = match mode {
        Mode::Strace => {
            let mut c = tokio::process::Command::new("strace");
            c.args(["-f", "-qq", "-e", "trace=none", "-o", "/dev/null"]);
            c.args(argv);
            c
        }
        _ => {
            let mut c = tokio::process::Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut peer = None;
    if mode == Mode::Forkstat {
        let child = tokio::process::Command::new("forkstat")
            .args(["-e", "fork,exec,exit"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start forkstat");
        // forkstat has no "ready" signal: give it time to subscribe.
        tokio::time::sleep(Duration::from_millis(500)).await;
        peer = Some(child);
    }
    let start = Instant::now();
    let run = if mode == Mode::Procwatch {
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
            latencies,
            events,
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
            latencies: Vec::new(),
            events: 0,
        }
    };
    if let Some(mut child) = peer {
        if let Some(pid) = child.id() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).unwrap(),
                rustix::process::Signal::INT,
            );
        }
        let _ = child.wait().await;
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

async fn bench(opts: Options) {
    let watcher = ProcWatcher::new().expect("procwatch needs root (the proc connector)");
    let mut modes = vec![Mode::Unwatched, Mode::Procwatch];
    let mut skipped = Vec::new();
    for (mode, program) in [(Mode::Forkstat, "forkstat"), (Mode::Strace, "strace")] {
        if installed(program) {
            modes.push(mode);
        } else {
            skipped.push(program);
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
        println!("peer {s}: skipped (not installed)");
    }
    println!();
    println!(
        "| workload | unwatched (median) | {} | procwatch latency p50 / p99 | events |",
        modes[1..]
            .iter()
            .map(|m| format!("{} ratio", m.name()))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---|{}---|---|", "---|".repeat(modes.len() - 1));
    for w in workloads() {
        if opts.only.as_deref().is_some_and(|o| o != w.name) {
            continue;
        }
        // Warm-up: page cache, binaries, the C compiler.
        let _ = run_once(Mode::Unwatched, &w.argv, &watcher).await;
        let mut walls: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let mut lat = Vec::new();
        let mut events = 0;
        for round in 0..opts.rounds {
            // Rotate the order each round so no mode always runs first or last.
            let mut order: Vec<usize> = (0..modes.len()).collect();
            order.rotate_left(round % modes.len());
            let mut this = vec![0.0; modes.len()];
            for &i in &order {
                let r = run_once(modes[i], &w.argv, &watcher).await;
                this[i] = r.wall.as_secs_f64();
                if modes[i] == Mode::Procwatch {
                    lat.extend(r.latencies);
                    events = r.events;
                }
            }
            for i in 0..modes.len() {
                walls[i].push(this[i]);
                ratios[i].push(this[i] / this[0]);
            }
        }
        lat.sort();
        let base = median(&mut walls[0]);
        let cells: Vec<String> = (1..modes.len())
            .map(|i| format!("{:.3}", median(&mut ratios[i])))
            .collect();
        println!(
            "| {} | {:.3} s | {} | {} / {} | {} |",
            w.what,
            base,
            cells.join(" | "),
            micros(percentile(&lat, 0.5)),
            micros(percentile(&lat, 0.99)),
            events
        );
        if let Some(dir) = w.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    if opts.only.as_deref().is_none_or(|o| o == "light") {
        light_latency(&watcher).await;
    }
}

/// Latency at a light load: one short process every 2 ms.
async fn light_latency(watcher: &ProcWatcher) {
    let argv = [
        self_exe(),
        "__workload".into(),
        "light".into(),
        "500".into(),
        "2".into(),
    ];
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let mut started = watcher.spawn(cmd, Interest::ALL).expect("spawn");
    let mut lat = Vec::new();
    while let Some(ev) = started.events.next().await {
        let at: Timestamp = ev.at();
        if at.is_known() {
            lat.push(at.elapsed());
        }
    }
    let _ = started.child.wait().await;
    lat.sort();
    println!();
    println!(
        "light load (1 fork+exit every 2 ms, {} events): kernel-to-stream latency p50 {} / p90 {} / p99 {} / max {}",
        lat.len(),
        micros(percentile(&lat, 0.5)),
        micros(percentile(&lat, 0.9)),
        micros(percentile(&lat, 0.99)),
        micros(lat.last().copied().unwrap_or_default()),
    );
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
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create project dir");
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
        dir
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write project file");
    }
}
