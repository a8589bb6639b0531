//! Running the built `procwatch` binary as a user would, with a timeout.

#![allow(dead_code)] // each test file uses part of it

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one run of the binary may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// What one run left behind.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `procwatch ARGS`, with `env` added to (and `NO_COLOR`/`CLICOLOR*` taken out of) the
/// environment, stdout and stderr piped; killed and failed after [`TIMEOUT`].
pub fn procwatch(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_procwatch"));
    cmd.args(args)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cannot start the procwatch binary");
    // Read both pipes on threads, so that a full pipe cannot stall the child.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let status = wait_or_kill(&mut child, &format!("procwatch {args:?}"));
    Run {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Waits for `child`; kills it and fails the test (naming `what`) after [`TIMEOUT`].
pub fn wait_or_kill(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
