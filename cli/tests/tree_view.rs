//! `--tree`: a live tree redrawn in place on a terminal, the line view anywhere else.

mod support;
use std::io::Read;
use std::process::{Command, Stdio};
use support::procwatch;

/// Runs `command` under `script`, in a pseudo-terminal of 20 columns and 5 rows; returns its
/// exit code and everything the terminal received.
fn in_small_terminal(command: &str) -> (Option<i32>, String) {
    let inner = format!("stty cols 20 rows 5; {command}");
    let mut child = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start script (util-linux)");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let status = support::wait_or_kill(&mut child, &format!("script {inner:?}"));
    (status.code(), reader.join().unwrap())
}

/// Several processes that live ~0.3 s side by side, then exit code 3.
const SEVERAL: &str = "for i in 1 2 3 4 5 6; do sleep 0.3 & done; wait; exit 3";

#[test]
fn the_live_tree_is_redrawn_in_a_small_terminal() {
    let command = format!(
        "'{}' --tree -- sh -c '{SEVERAL}'",
        env!("CARGO_BIN_EXE_procwatch")
    );
    let (code, screen) = in_small_terminal(&command);
    assert!(!screen.contains("panicked"), "{screen}");
    assert_eq!(code, Some(3), "{screen}");
    // The cursor went back up over a frame: `ESC [ n A`.
    let cursor_up = screen.match_indices("\x1b[").any(|(i, _)| {
        let rest = &screen[i + 2..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with('A')
    });
    assert!(cursor_up, "{screen:?}");
    assert!(screen.contains("\x1b[J"), "{screen:?}");
    // The frame said what runs, and was cut to the terminal's size.
    assert!(screen.contains("more"), "{screen:?}");
    // Then the usual summary.
    assert!(screen.contains("process tree"), "{screen:?}");
    assert!(screen.contains("7 processes"), "{screen:?}");
    assert!(screen.contains("exit code 3"), "{screen:?}");
}

/// The lines of a run that do not depend on timing: the column titles, what was executed, and
/// the totals up to the wall time.
fn steady_lines(stderr: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for line in stderr.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words == ["time", "pid", "ppid", "event"] {
            lines.push(line.to_owned());
        } else if let Some((_, argv)) = line.split_once(" exec ") {
            lines.push(format!("exec {argv}"));
        } else if line.contains(" processes · ") {
            lines.push(line.split(" · wall").next().unwrap_or(line).to_owned());
        }
    }
    lines
}

#[test]
fn without_a_terminal_the_tree_is_the_line_view() {
    // Programs that live long enough for their argv to be read, whatever the load.
    let script = "sleep 0.05; sleep 0.06; exit 3";
    let tree = procwatch(&["--tree", "--", "sh", "-c", script], &[]);
    let plain = procwatch(&["--", "sh", "-c", script], &[]);
    assert_eq!(tree.code, Some(3), "{}", tree.stderr);
    assert_eq!(plain.code, Some(3), "{}", plain.stderr);
    assert!(!tree.stderr.contains('\x1b'), "{:?}", tree.stderr);
    let lines = steady_lines(&tree.stderr);
    assert_eq!(lines, steady_lines(&plain.stderr), "{}", tree.stderr);
    assert!(
        lines.contains(&"exec sleep 0.05".to_owned()),
        "{}",
        tree.stderr
    );
    assert!(
        lines.contains(&"exec sleep 0.06".to_owned()),
        "{}",
        tree.stderr
    );
}

#[test]
fn tree_and_json_together_are_a_usage_error() {
    let run = procwatch(&["--tree", "--json", "--", "true"], &[]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}
