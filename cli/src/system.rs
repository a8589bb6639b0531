//! `--system`: every process on the host, in one stream
//! ([`ProcWatcher::watch_system`](procwatch::ProcWatcher::watch_system)).
//!
//! The stream gives a `Child` for each process born during the run; a process that was
//! already running shows up only when it does something, and is then recorded as `running`,
//! under its parent if that is in the tree already (its parent read from `/proc`), else as a
//! root. Pid 1 is the first root. The run ends on Ctrl-C (130) or SIGTERM (143); the summary
//! then shows only the processes born during the run, since the whole host would bury them.

use crate::model::Tree;
use crate::procfs::{read_comm, read_ppid, Cmdline};
use crate::report::Report;
use crate::text::plural;
use crate::{each_ready, frame_ticker, Fatal};
use futures_util::StreamExt;
use procwatch::{ErrorKind, Interest, Pid, ProcEvent, ProcWatcher};
use std::collections::{HashMap, HashSet};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Watches every process until Ctrl-C or SIGTERM; returns 130 or 143, as a shell reports a
/// command stopped by those signals.
pub async fn watch_system(
    watcher: &ProcWatcher,
    report: &mut Report,
    mut sigint: Signal,
) -> Result<u8, Fatal> {
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| Fatal::new(1, format!("cannot handle SIGTERM: {e}")))?;
    report.restart_clock();
    let mut events = watcher.watch_system(Interest::ALL).map_err(|e| {
        let hint = (e.kind() == ErrorKind::Unsupported).then_some(
            "--system needs the proc connector: run it as root (or with CAP_NET_ADMIN), \
             outside containers",
        );
        Fatal {
            hint,
            ..Fatal::new(1, format!("cannot watch every process: {e}"))
        }
    })?;
    let init = events.pid();
    report.begin(init, None, Cmdline::read(init), true);
    report.note("watching every process on the host (Ctrl-C to stop)");
    // The tree's records of the processes born during the run.
    let mut born = HashSet::new();
    let mut frames = frame_ticker();
    let code = loop {
        tokio::select! {
            _ = frames.tick(), if report.is_live_tree() => report.tick(),
            ev = events.next() => {
                let open = each_ready(&mut events, ev, |ev| {
                    introduce(report, &ev);
                    let child = match ev {
                        ProcEvent::Child { pid, .. } => Some(pid),
                        _ => None,
                    };
                    report.event(ev);
                    born.extend(child.and_then(|pid| report.tree().by_pid.get(&pid).copied()));
                });
                report.flush();
                // Every process on the host is gone: only in a pid namespace of our own.
                if !open {
                    break 0;
                }
            },
            Some(()) = sigint.recv() => {
                report.note("^C: stopped watching");
                break 130;
            }
            Some(()) = sigterm.recv() => {
                report.note("SIGTERM: stopped watching");
                break 143;
            }
        }
    };
    let seen = report.tree().procs.len();
    keep_only(report.tree_mut(), &born);
    report.note(&format!(
        "summary of the {} born during the run; {} already running left out",
        plural(born.len(), "process", "processes"),
        plural(seen - born.len(), "process", "processes"),
    ));
    report.finish(None);
    Ok(code)
}

/// Records, as already running, the process an event needs in the tree before it: the
/// parent of a `Child`, or the process of any other event, if it was never seen.
fn introduce(report: &mut Report, ev: &ProcEvent) {
    let pid = match *ev {
        ProcEvent::Child { parent, .. } => parent,
        ProcEvent::Lost { .. } => return,
        _ => ev.pid(),
    };
    if report.tree().by_pid.contains_key(&pid) {
        return;
    }
    match read_ppid(pid) {
        Some(ppid) => report.adopt(pid, ppid, Cmdline::read(pid)),
        None => {
            // Gone already (its exit is the event): a record of what is left, as a root,
            // still marked as running before the watch (so no lifetime is made up for it).
            let at = report.elapsed();
            let tree = report.tree_mut();
            let idx = tree.add(pid, None, read_comm(pid).into_iter().collect(), at);
            tree.procs[idx].pre_existing = true;
        }
    }
}

/// Cuts the tree down to the records in `keep`, each under its nearest kept parent or else
/// a root, in the order they were seen.
fn keep_only(tree: &mut Tree, keep: &HashSet<usize>) {
    let all = std::mem::take(&mut tree.procs);
    let mut moved: HashMap<usize, usize> = HashMap::new();
    for (old, mut proc) in all.into_iter().enumerate() {
        if !keep.contains(&old) {
            continue;
        }
        let idx = tree.procs.len();
        // A parent's record always comes before its children's.
        proc.parent = proc.parent.and_then(|p| moved.get(&p).copied());
        proc.depth = proc.parent.map_or(0, |p| tree.procs[p].depth + 1);
        proc.children.clear();
        if let Some(p) = proc.parent {
            tree.procs[p].children.push(idx);
        }
        moved.insert(old, idx);
        tree.procs.push(proc);
    }
    tree.by_pid = (tree.procs.iter().enumerate())
        .map(|(idx, p)| (p.pid, idx))
        .collect::<HashMap<Pid, usize>>();
    tree.alive = tree.still_running().count();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n).unwrap()
    }

    #[test]
    fn the_summary_keeps_the_born_under_their_nearest_born_parent() {
        let mut tree = Tree::default();
        let t = Duration::ZERO;
        let init = tree.add(pid(1), None, vec!["init".into()], t);
        let shell = tree.add(pid(10), Some(pid(1)), vec!["bash".into()], t);
        let make = tree.add(pid(20), Some(pid(10)), vec!["make".into()], t);
        let cc = tree.add(pid(21), Some(pid(20)), vec!["cc".into()], t);
        let other = tree.add(pid(30), Some(pid(1)), vec!["cron".into()], t);
        let job = tree.add(pid(31), Some(pid(30)), vec!["job".into()], t);
        assert_eq!((init, shell, other), (0, 1, 4));
        keep_only(&mut tree, &HashSet::from([make, cc, job]));
        let pids: Vec<i32> = tree.procs.iter().map(|p| p.pid.as_raw()).collect();
        assert_eq!(pids, [20, 21, 31]);
        assert_eq!(tree.procs[0].parent, None);
        assert_eq!(tree.procs[1].parent, Some(0));
        assert_eq!(tree.procs[1].depth, 1);
        assert_eq!(tree.procs[0].children, [1]);
        assert_eq!(tree.procs[2].parent, None);
        assert_eq!(tree.procs[2].depth, 0);
        assert_eq!(tree.by_pid[&pid(31)], 2);
        assert_eq!(tree.alive, 3);
    }
}
