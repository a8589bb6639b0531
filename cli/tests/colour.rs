//! Colour: off when the output is not a terminal and when `NO_COLOR` is set; on when forced.

mod support;
use support::procwatch;

const ESC: char = '\x1b';

#[test]
fn no_colour_into_a_pipe() {
    let run = procwatch(&["--", "sh", "-c", "exit 3"], &[]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(run.stderr.contains("exit 3"), "{}", run.stderr);
    assert!(!run.stderr.contains(ESC), "{:?}", run.stderr);
    assert!(!run.stdout.contains(ESC), "{:?}", run.stdout);
}

#[test]
fn forced_colour_shows_and_no_color_wins_over_it() {
    // CLICOLOR_FORCE proves that the pipe test above could see colour if there were any.
    let forced = procwatch(&["--", "sh", "-c", "exit 3"], &[("CLICOLOR_FORCE", "1")]);
    assert!(forced.stderr.contains(ESC), "{:?}", forced.stderr);
    let run = procwatch(
        &["--", "sh", "-c", "exit 3"],
        &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
    );
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(!run.stderr.contains(ESC), "{:?}", run.stderr);
}
