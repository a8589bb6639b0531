//! `--completions SHELL`: a completion script on stdout, or a usage error.

mod support;
use support::procwatch;

#[test]
fn completions_print_a_script_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let run = procwatch(&["--completions", shell], &[]);
        assert_eq!(run.code, Some(0), "{shell}: {}", run.stderr);
        assert_eq!(run.stderr, "", "{shell}");
        assert!(run.stdout.contains("procwatch"), "{shell}: {}", run.stdout);
        // Every long option is offered.
        for option in ["json", "pid", "exec", "failed", "comm", "completions"] {
            assert!(run.stdout.contains(option), "{shell}: no {option}");
        }
    }
}

#[test]
fn the_bash_script_is_valid_bash() {
    let run = procwatch(&["--completions", "bash"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stdout.contains("complete -F _procwatch"),
        "{}",
        run.stdout
    );
    let file =
        std::env::temp_dir().join(format!("procwatch-completions-{}.bash", std::process::id()));
    std::fs::write(&file, &run.stdout).unwrap();
    let checked = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .status();
    let _ = std::fs::remove_file(&file);
    // Without bash there is nothing to check it with.
    if let Ok(status) = checked {
        assert!(status.success(), "bash -n refused the script");
    }
}

#[test]
fn a_bad_shell_is_a_usage_error() {
    for args in [
        &["--completions", "tcsh"][..],
        &["--completions"],
        &["--completions", "bash", "true"],
        &["--completions", "bash", "--pid", "1"],
    ] {
        let run = procwatch(args, &[]);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {:?}", run.stderr);
        assert!(lines[0].starts_with("procwatch: "), "{}", lines[0]);
    }
    let run = procwatch(&["--completions", "tcsh"], &[]);
    assert!(
        run.stderr.contains("'tcsh'") && run.stderr.contains("bash"),
        "{}",
        run.stderr
    );
}
