//! `--trace FILE`: the file is a trace-event object with one span per process of the run.

mod support;
use serde_json::Value;
use std::path::PathBuf;
use support::procwatch;

/// A fresh path for a trace file of this test.
fn trace_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("procwatch-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn load(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).expect("the trace file");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The trace's events, checked against the schema: `ph`, `name`, `ts`, `pid`, `tid` on every
/// event, with their JSON types; `dur` on spans; every span within `run_us`.
fn checked_events(trace: &Value, run_us: u64) -> Vec<Value> {
    assert_eq!(trace["displayTimeUnit"], "ms", "{trace}");
    let events = trace["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .clone();
    for event in &events {
        let ph = event["ph"].as_str().expect("ph");
        assert!(ph == "X" || ph == "M", "{event}");
        assert!(event["name"].is_string(), "{event}");
        assert!(event["ts"].is_u64(), "{event}");
        assert!(event["pid"].is_i64() && event["tid"].is_i64(), "{event}");
        assert!(event["args"].is_object(), "{event}");
        if ph == "X" {
            let (ts, dur) = (event["ts"].as_u64().unwrap(), event["dur"].as_u64());
            let dur = dur.unwrap_or_else(|| panic!("no dur >= 0: {event}"));
            assert!(ts + dur <= run_us, "past the run's {run_us} µs: {event}");
            let args = &event["args"];
            assert_eq!(args["pid"], event["tid"], "{event}");
            assert!(
                args["parent"].is_i64() || args["parent"].is_null(),
                "{event}"
            );
            assert!(args["argv"]
                .as_array()
                .unwrap()
                .iter()
                .all(Value::is_string));
            assert!(args["exec_at_us"]
                .as_array()
                .unwrap()
                .iter()
                .all(Value::is_u64));
            assert!(args["status"].is_string() || args["status"].is_null());
        }
    }
    events
}

fn spans(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["ph"] == "X").collect()
}

#[test]
fn one_span_per_process_of_the_run() {
    let path = trace_path("tree.json");
    let script = "(exit 3) & (sleep 0.05; exit 4) & wait";
    let run = procwatch(
        &[
            "--json",
            "--trace",
            path.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<Value> = (run.stdout.lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "summary");
    let root = lines[0]["pid"].as_i64().unwrap();
    // Every process `--json` saw: the root and each `child`.
    let mut pids: Vec<i64> = (lines.iter())
        .filter(|l| l["event"] == "start" || l["event"] == "child")
        .map(|l| l["pid"].as_i64().unwrap())
        .collect();
    pids.sort();

    let events = checked_events(&load(&path), summary["t_us"].as_u64().unwrap());
    let spans = spans(&events);
    assert_eq!(Some(spans.len() as u64), summary["processes"].as_u64());
    // The shell, its two subshells and the sleep of the second one.
    assert_eq!(spans.len(), 4, "{events:?}");
    let mut tids: Vec<i64> = spans.iter().map(|s| s["tid"].as_i64().unwrap()).collect();
    tids.sort();
    assert_eq!(tids, pids);
    assert!(
        events.iter().all(|e| e["pid"] == root),
        "one group: the root"
    );

    let mut statuses: Vec<&str> = (spans.iter())
        .map(|s| s["args"]["status"].as_str().unwrap())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["exit 0", "exit 0", "exit 3", "exit 4"]);
    let root_span = spans.iter().find(|s| s["tid"] == root).unwrap();
    assert_eq!(root_span["ts"], 0);
    assert_eq!(root_span["name"], "sh");
    assert_eq!(
        root_span["args"]["argv"],
        serde_json::json!(["sh", "-c", script])
    );
    let sleep = spans.iter().find(|s| s["name"] == "sleep").expect("sleep");
    assert_eq!(sleep["args"]["argv"], serde_json::json!(["sleep", "0.05"]));
    let exec_at = sleep["args"]["exec_at_us"].as_array().unwrap();
    assert_eq!(exec_at.len(), 1, "{sleep}");
    assert!(sleep["dur"].as_u64().unwrap() >= 40_000, "{sleep}");

    // Every row is named.
    for tid in &tids {
        assert!(
            events
                .iter()
                .any(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["tid"] == *tid),
            "row {tid} has no name"
        );
    }
}

#[test]
fn the_live_view_and_a_trace_together() {
    let path = trace_path("live.json");
    let run = procwatch(
        &[
            "--trace",
            path.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "exit 5",
        ],
        &[],
    );
    assert_eq!(run.code, Some(5), "{}", run.stderr);
    assert!(run.stderr.contains("exit 5"), "{}", run.stderr);
    let events = checked_events(&load(&path), u64::MAX);
    let spans = spans(&events);
    assert_eq!(spans.len(), 1, "{events:?}");
    assert_eq!(spans[0]["args"]["status"], "exit 5");
}

#[test]
fn an_unwritable_trace_file_stops_the_run_before_it_starts() {
    let path = trace_path("no-such-dir").join("trace.json");
    let run = procwatch(
        &[
            "--trace",
            path.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo ran",
        ],
        &[],
    );
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        !run.stdout.contains("ran"),
        "the command ran: {}",
        run.stdout
    );
    let message = run.stderr.trim_end();
    assert!(!message.contains('\n'), "{message}");
    assert!(
        message.starts_with("procwatch: cannot write the trace to")
            && message.contains("trace.json"),
        "{message}"
    );
}

#[test]
fn a_running_tree_followed_with_pid_gives_a_span_per_process() {
    let path = trace_path("pid.json");
    // Started here, already running when procwatch attaches: the shell and two sleeps.
    let mut tree = std::process::Command::new("sh")
        .args(["-c", "sleep 0.4 & sleep 0.6 & wait"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    let pid = tree.id().to_string();
    let run = procwatch(&["--pid", &pid, "--trace", path.to_str().unwrap()], &[]);
    assert!(tree.wait().unwrap().success());
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let events = checked_events(&load(&path), u64::MAX);
    let spans = spans(&events);
    let mut names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["sh", "sleep", "sleep"], "{events:?}");
    let root = spans.iter().find(|s| s["name"] == "sh").unwrap();
    assert_eq!(root["tid"].as_i64(), Some(tree.id() as i64));
    for sleep in spans.iter().filter(|s| s["name"] == "sleep") {
        assert_eq!(sleep["args"]["status"], "exit 0", "{sleep}");
        assert_eq!(sleep["args"]["parent"].as_i64(), Some(tree.id() as i64));
    }
}
