//! `--system`: every process on the host, until Ctrl-C.
//!
//! It needs the proc connector (root or CAP_NET_ADMIN, initial namespaces). Where that is
//! missing the test is skipped with a reason, except under `CI=true`, where it fails.

mod support;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{wait_or_kill, TIMEOUT};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// How long procwatch may take to stop after SIGINT.
const PROMPTLY: Duration = Duration::from_secs(3);

#[test]
fn system_json_shows_a_later_process_and_stops_on_sigint() {
    let mut procwatch = Command::new(env!("CARGO_BIN_EXE_procwatch"))
        .args(["--system", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the procwatch binary");
    let (tx, lines) = mpsc::channel::<String>();
    let out = procwatch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut err = procwatch.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });

    // The first line (pid 1's `start`) says the watch is armed.
    let mut seen: Vec<Value> = Vec::new();
    let parse = |line: String| -> Value {
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    match lines.recv_timeout(TIMEOUT) {
        Ok(line) => seen.push(parse(line)),
        Err(_) => {
            let status = wait_or_kill(&mut procwatch, "procwatch --system");
            let stderr = stderr.join().unwrap();
            if !in_ci() && status.code() == Some(1) && stderr.contains("cannot") {
                eprintln!("SKIPPED: procwatch --system cannot run here: {stderr}");
                return;
            }
            panic!("procwatch --system printed nothing ({status}): {stderr}");
        }
    }
    assert_eq!(seen[0]["event"], "start", "{}", seen[0]);
    assert_eq!(seen[0]["pid"], 1, "{}", seen[0]);

    // A process started now, marked by its $0 (it lives long enough for its argv to be read).
    let marker = format!("procwatch-system-test-{}", std::process::id());
    let mut marked = Command::new("sh")
        .args(["-c", "sleep 0.2; exit 3", &marker])
        .spawn()
        .expect("spawn sh");
    let pid = i64::from(marked.id());
    let status = wait_or_kill(&mut marked, "the marked sh");
    assert_eq!(status.code(), Some(3));
    let about = |seen: &[Value], kind: &str| -> Option<Value> {
        seen.iter()
            .find(|l| l["event"] == kind && l["pid"] == pid)
            .cloned()
    };
    let deadline = Instant::now() + TIMEOUT;
    while about(&seen, "exit").is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(parse(line)),
            Err(_) => {
                let _ = procwatch.kill();
                let _ = procwatch.wait();
                panic!("no exit of {pid} within {TIMEOUT:?}; {} lines", seen.len());
            }
        }
    }
    let child = about(&seen, "child").expect("the marked process's child line");
    assert_eq!(child["parent"], i64::from(std::process::id()), "{child}");
    let exec = about(&seen, "exec").expect("the marked process's exec line");
    assert_eq!(
        exec["argv"],
        serde_json::json!(["sh", "-c", "sleep 0.2; exit 3", marker]),
        "{exec}"
    );
    let exit = about(&seen, "exit").unwrap();
    assert_eq!(exit["code"], 3, "{exit}");

    // Ctrl-C: a prompt stop, with 130, and the summary as the last line.
    let sent = Instant::now();
    let target = rustix::process::Pid::from_raw(procwatch.id() as i32).unwrap();
    rustix::process::kill_process(target, rustix::process::Signal::INT).expect("send SIGINT");
    let status = wait_or_kill(&mut procwatch, "procwatch --system after SIGINT");
    let took = sent.elapsed();
    reader.join().unwrap();
    seen.extend(lines.try_iter().map(parse));
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(took < PROMPTLY, "took {took:?} to stop after SIGINT");
    let summary = seen.last().unwrap();
    assert_eq!(summary["event"], "summary", "{summary}");
    assert!(summary["processes"].as_u64().unwrap() >= 1, "{summary}");
    assert!(stderr.contains("born during the run"), "{stderr}");
}

#[test]
fn system_stops_on_sigterm_with_the_summary() {
    let mut procwatch = Command::new(env!("CARGO_BIN_EXE_procwatch"))
        .args(["--system"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the procwatch binary");
    // The human view writes its header and pid 1's line to stderr first.
    let mut err = BufReader::new(procwatch.stderr.take().unwrap());
    let (tx, first) = mpsc::channel::<String>();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        while err.read_line(&mut text).is_ok_and(|n| n > 0) {
            if text.contains("watching every process") {
                let _ = tx.send(String::new());
            }
        }
        text
    });
    if first.recv_timeout(TIMEOUT).is_err() {
        let status = wait_or_kill(&mut procwatch, "procwatch --system");
        let stderr = stderr.join().unwrap();
        if !in_ci() && status.code() == Some(1) && stderr.contains("cannot") {
            eprintln!("SKIPPED: procwatch --system cannot run here: {stderr}");
            return;
        }
        panic!("procwatch --system did not start ({status}): {stderr}");
    }
    let sent = Instant::now();
    let target = rustix::process::Pid::from_raw(procwatch.id() as i32).unwrap();
    rustix::process::kill_process(target, rustix::process::Signal::TERM).expect("send SIGTERM");
    let status = wait_or_kill(&mut procwatch, "procwatch --system after SIGTERM");
    let took = sent.elapsed();
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(took < PROMPTLY, "took {took:?} to stop after SIGTERM");
    assert!(stderr.contains("SIGTERM: stopped watching"), "{stderr}");
    assert!(stderr.contains("── process tree ──"), "{stderr}");
}
