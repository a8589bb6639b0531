//! `--trace FILE`: the run as a trace-event JSON file (the format of `chrome://tracing`, which
//! ui.perfetto.dev also opens), written once the run is over.
//!
//! The file is one object, `{"traceEvents": [...], "displayTimeUnit": "ms"}`. Every process
//! of the run is one complete span (`"ph": "X"`) from its creation to its exit (or to the end
//! of the run if it is still running), on a row of its own: `pid` is the root's pid for every
//! event, `tid` the process's own. Metadata events (`"ph": "M"`) name the group and each row.
//! Times are microseconds since the start of the run, as in `--json`.

use crate::model::{Outcome, Proc, Tree};
use serde::Serialize;
use serde_json::{json, Value};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file the trace goes to, created (and so checked) before the run starts.
pub struct TraceFile {
    path: PathBuf,
    file: File,
}

impl TraceFile {
    /// Creates (or empties) `path`.
    ///
    /// # Errors
    /// A one-line message if it cannot be created.
    pub fn create(path: &Path) -> Result<TraceFile, String> {
        match File::create(path) {
            Ok(file) => Ok(TraceFile {
                path: path.to_owned(),
                file,
            }),
            Err(e) => Err(format!("cannot write the trace to {}: {e}", path.display())),
        }
    }

    /// Writes the trace of `tree`; `end` is the end of the run.
    ///
    /// # Errors
    /// A one-line message if writing failed.
    pub fn write(self, tree: &Tree, end: Duration) -> Result<(), String> {
        let trace = Trace {
            trace_events: events(tree, end),
            display_time_unit: "ms",
        };
        let mut out = BufWriter::new(self.file);
        serde_json::to_writer(&mut out, &trace)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write the trace to {}: {e}", self.path.display()))
    }
}

/// The whole file.
#[derive(Serialize)]
struct Trace {
    #[serde(rename = "traceEvents")]
    trace_events: Vec<Event>,
    #[serde(rename = "displayTimeUnit")]
    display_time_unit: &'static str,
}

/// One trace event.
#[derive(Debug, Serialize)]
struct Event {
    name: String,
    /// `X` (a span with a duration) or `M` (metadata).
    ph: &'static str,
    /// Microseconds since the start of the run.
    ts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<u64>,
    pid: i32,
    tid: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'static str>,
    args: Value,
}

impl Event {
    fn metadata(name: &str, pid: i32, tid: i32, args: Value) -> Event {
        Event {
            name: name.into(),
            ph: "M",
            ts: 0,
            dur: None,
            pid,
            tid,
            cat: None,
            args,
        }
    }
}

/// The events for every process of `tree`: metadata first, then one span per process, in
/// order of appearance. The run ends at `end`, or at the latest exit if that was later.
fn events(tree: &Tree, end: Duration) -> Vec<Event> {
    let Some(root) = tree.procs.first() else {
        return Vec::new();
    };
    let group = root.pid.as_raw();
    let end = (tree.procs.iter())
        .filter_map(|p| p.end.as_ref().map(|e| e.at))
        .fold(end, Duration::max);
    let mut events = vec![Event::metadata(
        "process_name",
        group,
        group,
        json!({ "name": format!("procwatch: {}", root.program()) }),
    )];
    for (index, proc) in tree.procs.iter().enumerate() {
        let tid = proc.pid.as_raw();
        events.push(Event::metadata(
            "thread_name",
            group,
            tid,
            json!({ "name": proc.program() }),
        ));
        events.push(Event::metadata(
            "thread_sort_index",
            group,
            tid,
            json!({ "sort_index": index }),
        ));
    }
    events.extend(tree.procs.iter().map(|proc| span(proc, group, end)));
    events
}

/// The span of one process: from its creation to its exit, or to `end` if it still runs.
fn span(proc: &Proc, group: i32, end: Duration) -> Event {
    let start = proc.seen;
    let stop = proc.end.as_ref().map_or(end, |e| e.at).max(start);
    let status = match proc.outcome() {
        outcome @ (Outcome::Exited(_) | Outcome::Killed { .. }) => Some(outcome.describe()),
        Outcome::Unknown | Outcome::Running => None,
    };
    let exec_at: Vec<u64> = proc.exec_times.iter().copied().map(micros).collect();
    Event {
        name: proc.program().into(),
        ph: "X",
        ts: micros(start),
        dur: Some(micros(stop) - micros(start)),
        pid: group,
        tid: proc.pid.as_raw(),
        cat: Some("process"),
        args: json!({
            "pid": proc.pid.as_raw(),
            "parent": proc.ppid.map(|p| p.as_raw()),
            "argv": proc.argv,
            "exec_at_us": exec_at,
            "status": status,
        }),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::End;
    use procwatch::Pid;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn one_span_per_process_on_rows_of_their_own() {
        let (root, child, late) = (
            Pid::from_raw(10).unwrap(),
            Pid::from_raw(11).unwrap(),
            Pid::from_raw(12).unwrap(),
        );
        let mut tree = Tree::default();
        let r = tree.add(
            root,
            Some(Pid::from_raw(1).unwrap()),
            vec!["/bin/sh".into()],
            ms(0),
        );
        let c = tree.add(child, Some(root), vec!["/bin/sh".into()], ms(2));
        tree.procs[c].execed = true;
        tree.procs[c].exec_times.push(ms(3));
        tree.procs[c].set_cmdline(&crate::procfs::Cmdline::Argv(vec!["/bin/false".into()]));
        tree.procs[c].end = Some(End {
            at: ms(5),
            status: Some(ExitStatus::from_raw(1 << 8)),
        });
        tree.procs[r].end = Some(End {
            at: ms(6),
            status: Some(ExitStatus::from_raw(libc::SIGKILL)),
        });
        tree.add(late, Some(root), vec!["/bin/sh".into()], ms(4));

        let events = events(&tree, ms(9));
        let spans: Vec<&Event> = events.iter().filter(|e| e.ph == "X").collect();
        assert_eq!(spans.len(), 3);
        assert!(events.iter().all(|e| e.pid == 10));
        let value = |e: &Event| serde_json::to_value(e).unwrap();
        assert_eq!(
            value(spans[1]),
            json!({"name": "false", "ph": "X", "ts": 2000, "dur": 3000, "pid": 10, "tid": 11,
                   "cat": "process", "args": {"pid": 11, "parent": 10,
                   "argv": ["/bin/false"], "exec_at_us": [3000], "status": "exit 1"}})
        );
        assert_eq!(spans[0].args["status"], "killed by SIGKILL");
        assert_eq!(spans[0].args["parent"], 1);
        // Still running: to the end of the run, no status.
        assert_eq!((spans[2].ts, spans[2].dur), (4000, Some(5000)));
        assert!(spans[2].args["status"].is_null());
        let names: Vec<(i32, &Value)> = (events.iter())
            .filter(|e| e.name == "thread_name")
            .map(|e| (e.tid, &e.args["name"]))
            .collect();
        assert_eq!(
            names,
            [
                (10, &json!("sh")),
                (11, &json!("false")),
                (12, &json!("sh"))
            ]
        );
    }

    #[test]
    fn an_empty_run_has_no_events() {
        assert!(events(&Tree::default(), ms(1)).is_empty());
    }
}
