//! Which threads of a tracked process are still alive.
//!
//! The proc connector reports thread creation and thread exit, not process exit. A process is
//! gone when its last thread is; the leader may exit first (`pthread_exit` in `main`), and a
//! non-leader thread that calls `execve` takes over the leader's pid while the old leader and
//! every other thread exit. This set is what turns per-thread messages into one process `Exit`.

use std::collections::HashSet;

/// The live threads of a process: `None` in the common case of a single, leader thread
/// (one pointer of memory), a boxed set otherwise.
#[derive(Debug)]
pub(crate) struct Threads(Option<Box<Group>>);

#[derive(Debug, Default)]
struct Group {
    leader_alive: bool,
    /// Live non-leader thread ids.
    others: HashSet<i32>,
}

impl Threads {
    /// A process with one thread, its leader.
    pub(crate) fn single() -> Threads {
        Threads(None)
    }

    /// A process with the thread ids `tids` (as listed in `/proc/<tgid>/task`), whose leader
    /// has already exited if `leader_gone`.
    pub(crate) fn from_tids(tgid: i32, tids: &[i32], leader_gone: bool) -> Threads {
        let others: HashSet<i32> = tids.iter().copied().filter(|&t| t != tgid).collect();
        if others.is_empty() && !leader_gone {
            return Threads::single();
        }
        Threads(Some(Box::new(Group {
            leader_alive: !leader_gone,
            others,
        })))
    }

    fn group(&mut self) -> &mut Group {
        self.0.get_or_insert_with(|| {
            Box::new(Group {
                leader_alive: true,
                others: HashSet::new(),
            })
        })
    }

    pub(crate) fn add(&mut self, tgid: i32, tid: i32) {
        if tid == tgid {
            if let Some(g) = &mut self.0 {
                g.leader_alive = true;
            }
        } else {
            self.group().others.insert(tid);
        }
    }

    /// Whether the process is known to have one thread, its leader (so the leader's exit is
    /// the process's).
    pub(crate) fn is_single(&self) -> bool {
        self.0.is_none()
    }

    /// After `execve` the process has exactly one thread, whose id is the pid.
    pub(crate) fn exec(&mut self) {
        self.0 = None;
    }

    /// Thread `tid` exited with wait status `code`. Returns the process's wait status when this
    /// was its last thread.
    pub(crate) fn exit(&mut self, tgid: i32, tid: i32, code: i32) -> Option<i32> {
        let Some(g) = &mut self.0 else {
            // One thread: the leader's exit is the process's; any other tid is one that exited
            // before we looked.
            return (tid == tgid).then_some(code);
        };
        if tid == tgid {
            if !g.leader_alive {
                return None; // a duplicate or a stale leader message
            }
            g.leader_alive = false;
        } else if !g.others.remove(&tid) {
            return None; // a thread we never counted (it exited before we looked)
        }
        if g.leader_alive || !g.others.is_empty() {
            return None;
        }
        // Since Linux 5.19 the thread that leaves last sets the group's exit code when no
        // `exit_group` did (`synchronize_group_exit`), and a group exit gives every thread the
        // group's code: either way the process's status is the last thread's code. (Older
        // kernels reported the leader's own code instead.)
        Some(code)
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        match &self.0 {
            None => 1,
            Some(g) => usize::from(g.leader_alive) + g.others.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_thread_exits_with_its_code() {
        let mut t = Threads::single();
        assert_eq!(t.exit(10, 10, 3 << 8), Some(3 << 8));
    }

    #[test]
    fn leader_first_then_last_thread() {
        let mut t = Threads::single();
        t.add(10, 11);
        t.add(10, 12);
        assert_eq!(t.exit(10, 10, 0), None);
        assert_eq!(t.exit(10, 11, 0), None);
        assert_eq!(t.exit(10, 12, 0), Some(0));
    }

    #[test]
    fn last_thread_code_is_the_status() {
        let mut t = Threads::single();
        t.add(10, 11);
        assert_eq!(t.exit(10, 10, 6 << 8), None);
        assert_eq!(t.exit(10, 11, 0), Some(0));
    }

    #[test]
    fn group_exit_code_wins() {
        let mut t = Threads::single();
        t.add(10, 11);
        assert_eq!(t.exit(10, 10, 0), None);
        assert_eq!(t.exit(10, 11, 7 << 8), Some(7 << 8));
    }

    #[test]
    fn unknown_and_duplicate_exits_are_ignored() {
        let mut t = Threads::single();
        t.add(10, 11);
        assert_eq!(t.exit(10, 99, 0), None);
        assert_eq!(t.exit(10, 11, 0), None);
        assert_eq!(t.exit(10, 11, 0), None);
        assert_eq!(t.count(), 1);
    }

    #[test]
    fn non_leader_exec_keeps_process_alive() {
        // Thread 11 calls execve: the old leader and thread 12 exit, then 11 becomes pid 10.
        let mut t = Threads::single();
        t.add(10, 11);
        t.add(10, 12);
        assert_eq!(t.exit(10, 10, 0), None);
        assert_eq!(t.exit(10, 12, 0), None);
        t.exec();
        assert_eq!(t.count(), 1);
        assert_eq!(t.exit(10, 10, 0), Some(0));
    }

    #[test]
    fn zombie_leader_from_proc() {
        let mut t = Threads::from_tids(10, &[10, 11], true);
        assert_eq!(t.count(), 1);
        assert_eq!(t.exit(10, 11, 0), Some(0));
    }

    #[test]
    fn one_pointer_for_a_single_thread() {
        assert_eq!(std::mem::size_of::<Threads>(), 8);
        let mut t = Threads::single();
        assert_eq!(t.exit(10, 99, 0), None);
        assert_eq!(t.exit(10, 10, 5), Some(5));
    }
}
