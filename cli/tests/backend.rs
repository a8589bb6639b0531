//! `--backend`: the mechanism the user picks; with `ptrace`, every exec's argv is known, even
//! of programs that exit at once.

mod support;
use serde_json::Value;
use support::procwatch;

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn execs(stdout: &str) -> Vec<Value> {
    lines(stdout)
        .into_iter()
        .filter(|l| l["event"] == "exec")
        .collect()
}

const LOOP: &str = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; \
                    do /bin/true \"$i\" 'two words'; done; exit 0";

#[test]
fn ptrace_knows_every_argv() {
    let run = procwatch(&["--json", "--backend", "ptrace", "sh", "-c", LOOP], &[]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let execs = execs(&run.stdout);
    let trues: Vec<&Value> = (execs.iter())
        .filter(|e| e["argv"][0] == "/bin/true")
        .collect();
    assert_eq!(trues.len(), 20, "{}", run.stdout);
    for (i, e) in trues.iter().enumerate() {
        let want = serde_json::json!(["/bin/true", (i + 1).to_string(), "two words"]);
        assert_eq!(e["argv"], want, "{e}");
    }
    assert!(execs.iter().all(|e| e["argv"].is_array()), "{}", run.stdout);
}

#[test]
fn netlink_and_auto_run_too() {
    for kind in ["netlink", "auto"] {
        let run = procwatch(&["--json", "--backend", kind, "sh", "-c", "exit 4"], &[]);
        if kind == "netlink" && run.code == Some(1) && std::env::var("CI").is_err() {
            eprintln!(
                "SKIPPED: the netlink backend is not available here: {}",
                run.stderr
            );
            continue;
        }
        assert_eq!(run.code, Some(4), "{kind}: {}", run.stderr);
        let execs = execs(&run.stdout);
        assert_eq!(execs.len(), 1, "{kind}: {}", run.stdout);
        assert_eq!(execs[0]["argv"], serde_json::json!(["sh", "-c", "exit 4"]));
    }
}

#[test]
fn an_unknown_backend_is_a_usage_error() {
    let run = procwatch(&["--backend", "kqueue", "true"], &[]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("--backend"), "{}", run.stderr);
}

/// `--argv`: `early` (the default) reads every command line of a loop of `/bin/true`, each
/// the moment it execs; `batched` leaves them to the 2 ms batches, and still has those of
/// programs that live longer (`sleep 0.3`). Nothing else changes: same exit code, same
/// execs.
#[test]
fn argv_early_and_batched() {
    let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; \
                  do /bin/true \"$i\"; done; /bin/sleep 0.3; exit 6";
    for when in ["early", "batched"] {
        let run = procwatch(
            &[
                "--json",
                "--backend",
                "netlink",
                "--argv",
                when,
                "sh",
                "-c",
                script,
            ],
            &[],
        );
        if run.code == Some(1) && std::env::var("CI").is_err() {
            eprintln!(
                "SKIPPED: the netlink backend is not available here: {}",
                run.stderr
            );
            return;
        }
        assert_eq!(run.code, Some(6), "{when}: {}", run.stderr);
        let execs = execs(&run.stdout);
        assert_eq!(execs.len(), 22, "{when}: {}", run.stdout);
        let sleep = serde_json::json!(["/bin/sleep", "0.3"]);
        assert!(
            execs.iter().any(|e| e["argv"] == sleep),
            "{when}: {}",
            run.stdout
        );
        if when == "early" {
            assert!(
                execs.iter().all(|e| e["argv"].is_array()),
                "{when}: {}",
                run.stdout
            );
        }
    }
    let bad = procwatch(&["--argv", "later", "true"], &[]);
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert_eq!(bad.stderr.lines().count(), 1, "{}", bad.stderr);
}
