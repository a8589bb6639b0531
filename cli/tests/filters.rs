//! `--exec`, `--failed` and `--comm`: which event lines are printed, live and as JSON.

mod support;
use serde_json::{json, Value};
use support::procwatch;

const EXECS: &str = "/bin/true; /bin/echo hi >/dev/null";
const FAILURES: &str = "(exit 3); (exit 0); sh -c \"kill -9 \\$\\$\"; true";

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The JSON lines before the closing `summary` (which every run has).
fn json_events(stdout: &str) -> Vec<Value> {
    let mut lines = json_lines(stdout);
    let summary = lines.pop().expect("no JSON lines");
    assert_eq!(summary["event"], "summary", "{stdout}");
    lines
}

/// The live lines: between the column titles and the summary tree.
fn live_lines(stderr: &str) -> Vec<&str> {
    let mut lines = stderr.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.trim_start().starts_with("time"), "{stderr}");
    lines
        .take_while(|l| !l.starts_with("── process tree"))
        // What the command itself wrote ("Killed" from a shell) is not ours.
        .filter(|l| l.starts_with('+'))
        .collect()
}

#[test]
fn exec_shows_each_exec_and_nothing_else() {
    let run = procwatch(&["--exec", "--", "sh", "-c", EXECS], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines = live_lines(&run.stderr);
    assert_eq!(lines.len(), 3, "{}", run.stderr);
    for line in &lines {
        assert!(line.contains(" exec "), "{line}");
    }
    assert!(
        lines[0].ends_with(&format!("exec sh -c '{EXECS}'")),
        "{}",
        lines[0]
    );
    // The summary still shows the whole tree.
    assert!(run.stderr.contains("3 processes"), "{}", run.stderr);
}

#[test]
fn exec_in_json_gives_only_exec_objects() {
    let run = procwatch(&["--json", "--exec", "--", "sh", "-c", EXECS], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = json_events(&run.stdout);
    assert_eq!(events.len(), 3, "{}", run.stdout);
    // The command's own argv is always known; a program that exits within a millisecond or
    // so of its exec may be gone before its argv is read (then `argv` is null).
    assert_eq!(events[0]["argv"], json!(["sh", "-c", EXECS]));
    let expected = [
        ("true", json!(["/bin/true"])),
        ("echo", json!(["/bin/echo", "hi"])),
    ];
    for (event, (comm, argv)) in events[1..].iter().zip(expected) {
        if event["argv"].is_null() {
            assert!(event["comm"].is_null() || event["comm"] == comm, "{event}");
        } else {
            assert_eq!(event["argv"], argv, "{event}");
        }
    }
    let root = events[0]["pid"].as_i64().unwrap();
    for event in &events {
        assert_eq!(event["event"], "exec", "{event}");
        assert_eq!(event["count"], 1, "{event}");
    }
    assert_ne!(events[1]["pid"], root);
    assert_ne!(events[2]["pid"], events[1]["pid"]);
}

#[test]
fn failed_shows_the_failed_and_killed_exits_only() {
    let run = procwatch(&["--failed", "--", "sh", "-c", FAILURES], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines = live_lines(&run.stderr);
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(lines[0].contains(" exit 3  sh after "), "{}", lines[0]);
    // (Its name may be `?`: it can be gone before its argv is read.)
    assert!(lines[1].contains(" killed by SIGKILL  "), "{}", lines[1]);
    // The summary still has every process, the successful ones included.
    assert!(run.stderr.contains("4 processes"), "{}", run.stderr);
}

#[test]
fn failed_in_json_gives_the_two_failures() {
    let run = procwatch(&["--json", "--failed", "--", "sh", "-c", FAILURES], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = json_events(&run.stdout);
    assert_eq!(events.len(), 2, "{}", run.stdout);
    for event in &events {
        assert_eq!(event["event"], "exit", "{event}");
    }
    assert_eq!(events[0]["code"], 3);
    assert!(events[0]["signal"].is_null());
    assert!(events[1]["code"].is_null());
    assert_eq!(events[1]["signal_name"], "SIGKILL");
}

#[test]
fn comm_selects_processes_by_program_name() {
    // Programs that live long enough for their argv to be read: a name never read cannot
    // match.
    let script = "/bin/sleep 0.05; /bin/echo hi >/dev/null; /bin/sleep 0.05";
    for pattern in ["sleep", "sl?ep", "*lee*"] {
        let run = procwatch(
            &["--json", "--comm", pattern, "--", "sh", "-c", script],
            &[],
        );
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let events = json_events(&run.stdout);
        let execs: Vec<&Value> = events.iter().filter(|e| e["event"] == "exec").collect();
        assert_eq!(execs.len(), 2, "{pattern}: {}", run.stdout);
        let exits = events.iter().filter(|e| e["event"] == "exit").count();
        assert_eq!(exits, 2, "{pattern}: {}", run.stdout);
        for event in &events {
            // Only the two runs of sleep: none of the shell's lines, nor echo's.
            assert!(event["pid"] == execs[0]["pid"] || event["pid"] == execs[1]["pid"]);
            assert!(
                matches!(event["event"].as_str(), Some("exec" | "exit")),
                "{event}"
            );
        }
    }
    // A part of a name is not a match, and a name that matches nothing shows nothing.
    for pattern in ["slee", "nothing*"] {
        let run = procwatch(
            &["--json", "--comm", pattern, "--", "sh", "-c", script],
            &[],
        );
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert_eq!(json_events(&run.stdout), [] as [Value; 0], "{pattern}");
    }
}

#[test]
fn filters_combine_with_and() {
    // The inner shell lives long enough for its name to be read.
    let script = "sh -c 'sleep 0.05; exit 5'; (exit 6); /bin/true";
    let run = procwatch(
        &[
            "--json", "--failed", "--comm", "sh", "--", "sh", "-c", script,
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = json_events(&run.stdout);
    let codes: Vec<&Value> = events.iter().map(|e| &e["code"]).collect();
    assert_eq!(codes, [&json!(5), &json!(6)], "{}", run.stdout);

    // An exec is never an exit: nothing passes both.
    let run = procwatch(
        &["--json", "--exec", "--failed", "--", "sh", "-c", script],
        &[],
    );
    assert_eq!(json_events(&run.stdout), [] as [Value; 0], "{}", run.stdout);
}

#[test]
fn an_empty_comm_pattern_is_a_usage_error() {
    let run = procwatch(&["--comm", "", "true"], &[]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}
