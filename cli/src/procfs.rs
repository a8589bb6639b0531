//! What the tool reads from `/proc`: command lines, parents and children.

use procwatch::Pid;

/// A process's command line as `/proc` showed it when we looked.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmdline {
    Argv(Vec<String>),
    /// The argv was already gone (a zombie has none), but the short name (`comm`) was not.
    Comm(String),
    /// The process was gone, and its number free (or taken by someone else: pids are reused,
    /// though hardly within the microseconds between the event and our look).
    Gone,
}

impl Cmdline {
    /// Reads `/proc/<pid>/cmdline`, or `comm` when that is empty.
    pub fn read(pid: Pid) -> Cmdline {
        let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args = bytes.strip_suffix(b"\0").unwrap_or(&bytes);
        if args.is_empty() {
            return read_comm(pid).map_or(Cmdline::Gone, Cmdline::Comm);
        }
        let argv = args.split(|&b| b == 0);
        Cmdline::Argv(
            argv.map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        )
    }
}

/// The short name of `pid`'s program (`/proc/<pid>/comm`, at most 15 bytes).
pub fn read_comm(pid: Pid) -> Option<String> {
    let name = std::fs::read(format!("/proc/{pid}/comm")).ok()?;
    let name = name.strip_suffix(b"\n").unwrap_or(&name);
    Some(String::from_utf8_lossy(name).into_owned())
}

/// The parent of `pid`, from `/proc/<pid>/stat`.
pub fn read_ppid(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold anything, even ") ", so cut at the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let ppid = after_comm.split_whitespace().nth(1)?.parse().ok()?;
    Pid::from_raw(ppid)
}

/// The children `pid` has now, from `/proc/<pid>/task/*/children`.
pub fn existing_children(pid: Pid) -> Vec<Pid> {
    let mut children = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
    for task in tasks.into_iter().flatten().flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            let pids = list.split_whitespace().filter_map(|p| p.parse().ok());
            children.extend(pids.filter_map(Pid::from_raw));
        }
    }
    children.sort();
    children
}
