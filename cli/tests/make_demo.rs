//! The README's first command, `procwatch -- make -j2 -C examples/make-demo`: the build runs
//! watched, every compiler pass is seen, and procwatch exits with make's code.

mod support;
use serde_json::Value;
use support::procwatch;

fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// `make` and `cc`, or `None` with a printed reason outside CI (under `CI=true` their
/// absence fails the test: the machines CI runs on have both).
fn toolchain() -> Option<()> {
    let missing: Vec<&str> = ["make", "cc"]
        .into_iter()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Some(());
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "CI must have {missing:?} for the README's make example"
    );
    eprintln!("SKIPPED: no {missing:?} on this machine");
    None
}

fn demo_dir() -> String {
    let cli = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = cli
        .parent()
        .expect("the workspace")
        .join("examples/make-demo");
    dir.to_string_lossy().into_owned()
}

#[test]
fn the_readme_s_make_build_is_watched_whole() {
    let Some(()) = toolchain() else { return };
    let out = std::env::temp_dir().join(format!("procwatch-make-demo-test-{}", std::process::id()));
    let out_arg = format!("OUT={}", out.display());
    let dir = demo_dir();
    let run = procwatch(&["--json", "--", "make", "-j2", "-C", &dir, &out_arg], &[]);
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // The program the build made ran, and said what it counted.
    assert!(
        run.stderr.contains("52 words, 38 distinct"),
        "{}",
        run.stderr
    );
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let execs: Vec<&Value> = lines.iter().filter(|l| l["event"] == "exec").collect();
    // One `cc` per source file and one to link; each compile runs `cc1` (or `cc1plus`, or
    // another compiler proper) and `as`, which are not checked by name.
    // A process gone before its argv was read still has its short name.
    let is_cc = |e: &&&Value| e["argv"][0] == "cc" || (e["argv"].is_null() && e["comm"] == "cc");
    let cc_execs = execs.iter().filter(is_cc).count();
    assert_eq!(cc_execs, 7, "{}", run.stdout);
    let summary = lines.last().expect("a summary line");
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["killed"], 0, "{summary}");
    assert_eq!(summary["exit_code"], 0);
    // make, 7 cc, at least a compiler pass and an assembler per compile, the linker's passes,
    // mkdir and the demo itself.
    assert!(
        summary["processes"].as_u64().unwrap() >= 1 + 7 + 12 + 3,
        "{summary}"
    );
}
