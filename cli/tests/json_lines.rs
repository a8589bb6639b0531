//! `--json`: every line parses, and the lines match the processes of a known tree.

mod support;
use serde_json::Value;
use support::procwatch;

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn of_kind<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == kind).collect()
}

#[test]
fn json_lines_match_a_known_tree() {
    let script = "(exit 3) & (exit 4) & wait";
    let run = procwatch(&["--json", "--", "sh", "-c", script], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines = lines(&run.stdout);

    // Common fields on every line, and time that never goes back.
    let mut last = 0;
    for line in &lines {
        let t = line["t_us"].as_u64().expect("t_us");
        assert!(t >= last, "t_us went back: {line}");
        last = t;
        assert!(line["event"].is_string() && line["pid"].is_i64(), "{line}");
        assert_ne!(line["event"], "other", "{line}");
    }

    let start = &lines[0];
    assert_eq!(start["event"], "start");
    assert_eq!(start["t_us"], 0);
    assert_eq!(start["argv"], serde_json::json!(["sh", "-c", script]));
    let root = start["pid"].as_i64().unwrap();

    // The shell and its two subshells: two children, three exits.
    let children = of_kind(&lines, "child");
    assert_eq!(children.len(), 2, "{}", run.stdout);
    for child in &children {
        assert_eq!(child["parent"], root);
    }
    let exits = of_kind(&lines, "exit");
    assert_eq!(exits.len(), 3, "{}", run.stdout);
    let mut codes: Vec<i64> = exits.iter().map(|e| e["code"].as_i64().unwrap()).collect();
    codes.sort();
    assert_eq!(codes, [0, 3, 4]);
    for exit in &exits {
        assert!(exit["signal"].is_null() && exit["signal_name"].is_null());
        assert_eq!(exit["core"], false);
        assert!(exit["lifetime_us"].is_u64(), "{exit}");
    }
    let root_exit = exits
        .iter()
        .find(|e| e["pid"] == root)
        .expect("the root's exit");
    assert_eq!(root_exit["code"], 0);

    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["processes"], 3);
    assert_eq!(summary["failed"], 2);
    assert_eq!(summary["killed"], 0);
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(of_kind(&lines, "summary").len(), 1);
}

#[test]
fn a_killed_process_has_its_signal_in_the_json() {
    let run = procwatch(&["--json", "--", "sh", "-c", "kill -9 $$"], &[]);
    assert_eq!(run.code, Some(137), "{}", run.stderr);
    let lines = lines(&run.stdout);
    let exit = of_kind(&lines, "exit")[0];
    assert!(exit["code"].is_null(), "{exit}");
    assert_eq!(exit["signal"], 9);
    assert_eq!(exit["signal_name"], "SIGKILL");
    assert_eq!(lines.last().unwrap()["exit_code"], 137);
}

#[test]
fn the_command_s_stdout_goes_to_stderr() {
    let run = procwatch(&["--json", "--", "echo", "not json"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("not json"), "{}", run.stderr);
    lines(&run.stdout);
}
