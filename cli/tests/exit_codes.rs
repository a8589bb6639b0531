//! The exit code is the command's, as a shell would give it.

mod support;
use support::procwatch;

#[test]
fn the_command_s_exit_code_is_passed_through() {
    let run = procwatch(&["--", "sh", "-c", "exit 7"], &[]);
    assert_eq!(run.code, Some(7), "{}", run.stderr);
    let run = procwatch(&["true"], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn a_killed_command_gives_128_plus_the_signal() {
    let run = procwatch(&["--", "sh", "-c", "kill -9 $$"], &[]);
    assert_eq!(run.code, Some(128 + 9), "{}", run.stderr);
    assert!(run.stderr.contains("killed by SIGKILL"), "{}", run.stderr);
}

#[test]
fn a_missing_program_gives_127() {
    let run = procwatch(&["--", "/nonexistent/procwatch-test-program"], &[]);
    assert_eq!(run.code, Some(127), "{}", run.stderr);
    assert!(run.stderr.contains("command not found"), "{}", run.stderr);
}

#[test]
fn a_program_that_cannot_be_executed_gives_126() {
    let dir = std::env::temp_dir().join(format!("procwatch-cli-126-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    // No execute bit for anyone: even root may not execute it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = procwatch(&["--", script.to_str().unwrap()], &[]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.code, Some(126), "{}", run.stderr);
    assert!(run.stderr.contains("permission denied"), "{}", run.stderr);
}
