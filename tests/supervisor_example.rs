//! The `supervisor` example, run as a program: a failed service is restarted only once every
//! process of its old instance is gone, a service that keeps failing is given up after
//! `--max-restarts`, and `SIGTERM` leaves no process of any service behind.
//!
//! Runs the example's binary (`target/<profile>/examples/supervisor`), built first with this
//! test's profile and features.

mod support;

use std::path::Path;
use std::process::Stdio;
use support::{within, DEADLINE};

const MAX_RESTARTS: usize = 3;
const GRACE: &str = "0.5";

/// Processes with `marker` as one of their arguments, and their command lines (a zombie has
/// none, so only live processes are listed).
fn processes_with(marker: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if bytes.split(|&b| b == 0).any(|arg| arg == marker.as_bytes()) {
            found.push((pid, String::from_utf8_lossy(&bytes).replace('\0', " ")));
        }
    }
    found
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a valid pid");
    let _ = rustix::process::kill_process(pid, sig);
}

/// The supervisor; dropped, it kills whatever a failed run left: the supervisor, then every
/// service process.
struct Supervisor {
    child: tokio::process::Child,
    markers: Vec<String>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        for marker in &self.markers {
            for (pid, _) in processes_with(marker) {
                signal(pid as u32, rustix::process::Signal::KILL);
            }
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_restarts_only_after_its_whole_old_tree_is_gone() {
    let binary = support::example_binary("supervisor").await;
    let dir = std::env::temp_dir().join(format!("procwatch-supervisor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("services.log");
    let output = dir.join("supervisor.log");
    std::fs::File::create(&log).unwrap();

    // Each service's `sleep`s have a marker of this run as their argument, which the scripts
    // and the test look for as a whole argument (`grep -z`), not inside the scripts' text.
    let id = std::process::id();
    let flaky_marker = format!("1001.{id}");
    let steady_marker = format!("1002.{id}");
    let flaky_pattern = format!("^{}$", flaky_marker.replace('.', "[.]"));
    let log_path = log.display();
    // At each start: is anything of an earlier instance still alive? Its escapee's pid (the
    // last one logged) or any process with the marker; a zombie has an empty command line.
    // Then an escapee in a session of its own that only SIGKILL ends, and a failure.
    let flaky = format!(
        r#"flaky=
        prev=$(sed -n 's/^escapee //p' {log_path} | tail -n 1)
        alive=no
        if [ -n "$prev" ] && grep -qa . /proc/$prev/cmdline 2>/dev/null; then alive=yes; fi
        if grep -qaz '{flaky_pattern}' /proc/[0-9]*/cmdline 2>/dev/null; then alive=yes; fi
        echo "start $$ prev-alive $alive" >> {log_path}
        setsid sh -c 'trap "" TERM; sleep {flaky_marker}' &
        echo "escapee $!" >> {log_path}
        sleep 0.3
        exit 1"#
    );
    let steady = format!(
        r#"steady=
        echo "steady $$" >> {log_path}
        setsid sh -c 'trap "" TERM; sleep {steady_marker}' &
        sleep {steady_marker}"#
    );

    let child = tokio::process::Command::new(&binary)
        .args(["--max-restarts", &MAX_RESTARTS.to_string()])
        .args(["--backoff-ms", "50", "--grace-secs", GRACE])
        .args([&flaky, &steady])
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&output).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start the supervisor");
    let mut supervisor = Supervisor {
        child,
        markers: vec![flaky_marker.clone(), steady_marker.clone()],
    };
    let context = || {
        format!(
            "\n--- services' log:\n{}--- supervisor's output:\n{}",
            read(&log),
            read(&output)
        )
    };

    // The flaky service is given up once its last instance is gone.
    let gave_up = support::eventually(DEADLINE, || read(&output).contains("giving up")).await;
    assert!(gave_up, "the flaky service was never given up{}", context());
    let services = read(&log);
    let starts: Vec<&str> = services
        .lines()
        .filter(|l| l.starts_with("start "))
        .collect();
    assert_eq!(
        starts.len(),
        1 + MAX_RESTARTS,
        "one start and {MAX_RESTARTS} restarts{}",
        context()
    );
    for start in &starts {
        assert!(
            start.ends_with("prev-alive no"),
            "a new instance started while the old one still ran: {start:?}{}",
            context()
        );
    }
    assert!(
        processes_with(&flaky_marker).is_empty(),
        "the given-up service left processes: {:?}{}",
        processes_with(&flaky_marker),
        context()
    );
    let steady_starts = services
        .lines()
        .filter(|l| l.starts_with("steady "))
        .count();
    assert_eq!(steady_starts, 1, "the steady service runs on{}", context());
    assert_eq!(
        processes_with(&steady_marker).len(),
        2,
        "the steady service and its escapee run{}",
        context()
    );

    // SIGTERM: every service is shut down, escapees included, then the supervisor exits 0.
    let pid = supervisor.child.id().expect("running");
    signal(pid, rustix::process::Signal::TERM);
    let status = within(DEADLINE, "the supervisor's exit", supervisor.child.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}{}", context());
    for marker in [&flaky_marker, &steady_marker] {
        let left = processes_with(marker);
        assert!(
            left.is_empty(),
            "left after the supervisor exited: {left:?}{}",
            context()
        );
    }
    let out = read(&output);
    assert!(
        out.contains("SIGTERM: stopping every service"),
        "{}",
        context()
    );
    assert!(out.contains("every service stopped"), "{}", context());
    println!("{}", context());
    let _ = std::fs::remove_dir_all(&dir);
}
