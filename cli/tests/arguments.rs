//! The command line: `--help`, `--version`, and usage errors (exit 2, one line).

mod support;
use support::procwatch;

#[test]
fn help_exits_0_and_describes_the_usage() {
    for flag in ["--help", "-h"] {
        let run = procwatch(&[flag], &[]);
        assert_eq!(run.code, Some(0), "{flag}: {}", run.stderr);
        assert!(run.stdout.contains("Usage: procwatch"), "{}", run.stdout);
        assert!(run.stdout.contains("--json") && run.stdout.contains("--pid"));
        for option in ["--exec", "--failed", "--comm", "--completions"] {
            assert!(run.stdout.contains(option), "{flag}: no {option}");
        }
    }
}

#[test]
fn version_exits_0_and_names_the_version() {
    let run = procwatch(&["--version"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout.trim(),
        format!("procwatch {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for args in [
        &[][..],
        &["--bogus", "true"],
        &["--pid"],
        &["--pid", "0"],
        &["--pid", "abc"],
        &["--pid", "1", "true"],
        &["--json"],
    ] {
        let run = procwatch(args, &[]);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {:?}", run.stderr);
        assert!(
            lines[0].starts_with("procwatch: "),
            "{args:?}: {}",
            lines[0]
        );
    }
}

#[test]
fn options_after_the_command_belong_to_it() {
    let run = procwatch(&["sh", "-c", "exit 0", "--json"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.stdout, "", "no JSON without procwatch's own --json");
}
