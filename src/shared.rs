//! State shared by the watcher, its streams and its backend.

use crate::loom::{Mutex, MutexGuard};
use crate::registry::Registry;

/// The registry behind its lock.
pub(crate) struct Shared {
    registry: Mutex<Registry>,
    /// How many streams want command lines (`Interest::ARGV`), kept by the registry.
    argv_streams: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        let registry = Registry::new();
        let argv_streams = registry.argv_wanted();
        Shared {
            registry: Mutex::new(registry),
            argv_streams,
        }
    }

    /// Whether some stream wants command lines read at execs (`Interest::ARGV`), without the
    /// lock: a backend checks this before anything else costs.
    pub(crate) fn argv_wanted(&self) -> bool {
        self.argv_streams.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    /// Locks the registry. A panic while it was held (a bug) does not make every later call
    /// panic too: the lock is taken over as it is, and the streams keep working on the state
    /// the panicking step left.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Registry> {
        match self.registry.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().is_closed()
    }
}

/// Model checks of the registry's concurrency under every interleaving loom can find:
/// `RUSTFLAGS="--cfg procwatch_loom" LOOM_MAX_PREEMPTIONS=3 cargo test --lib --release loom`.
#[cfg(all(test, procwatch_loom))]
mod loom_model {
    use super::Shared;
    use crate::loom::Arc;
    use crate::registry::{Actions, Input, PopStatus, ProcSnapshot, Stamp, StreamId};
    use crate::{Interest, Pid, ProcEvent, Timestamp};
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use std::collections::VecDeque;
    use std::task::{Wake, Waker};

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n).unwrap()
    }

    fn snap() -> ProcSnapshot {
        ProcSnapshot {
            ppid: 1,
            start_ns: 1,
            ..ProcSnapshot::default()
        }
    }

    struct Flag(AtomicUsize);
    impl Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A registry with one stream watching `p` with every interest.
    fn watching(p: i32) -> (Arc<Shared>, StreamId) {
        let shared = Arc::new(Shared::new());
        let id = {
            let mut reg = shared.lock();
            let id = reg.add_stream(pid(p), Interest::ALL, 100).unwrap();
            reg.attach_root(
                id,
                pid(p),
                Some(&snap()),
                Stamp::default(),
                &mut Actions::default(),
            )
            .unwrap();
            id
        };
        (shared, id)
    }

    /// The dispatcher's step: apply under the lock, wake after releasing it.
    fn dispatch(shared: &Shared, inputs: Vec<Input>) {
        let mut wake = Actions::default();
        {
            let mut reg = shared.lock();
            for i in inputs {
                reg.apply(i, &mut wake);
            }
        }
        wake.wake_all();
    }

    /// A fork hand-off races the close of one stream while another stream on the same pid
    /// stays open: the closed stream leaves nothing behind, the open one gets the child.
    #[test]
    fn hand_off_races_close() {
        loom::model(|| {
            let shared = Arc::new(Shared::new());
            let (a, b) = {
                let mut reg = shared.lock();
                let mut wake = Actions::default();
                let a = reg.add_stream(pid(10), Interest::ALL, 100).unwrap();
                reg.attach_root(a, pid(10), Some(&snap()), Stamp::default(), &mut wake)
                    .unwrap();
                let b = reg
                    .add_stream(pid(10), Interest::TRACK | Interest::EXIT, 100)
                    .unwrap();
                reg.attach_root(b, pid(10), Some(&snap()), Stamp::default(), &mut wake)
                    .unwrap();
                (a, b)
            };
            let s2 = shared.clone();
            let dispatcher = loom::thread::spawn(move || {
                dispatch(
                    &s2,
                    vec![Input::Fork {
                        parent: pid(10),
                        child: pid(11),
                        start_ns: 2,
                    }],
                );
                dispatch(
                    &s2,
                    vec![Input::ThreadExit {
                        tgid: pid(11),
                        tid: 11,
                        code: 0,
                    }],
                );
            });
            let s3 = shared.clone();
            let closer = loom::thread::spawn(move || {
                let mut actions = Actions::default();
                s3.lock().remove_stream(a, &mut actions);
                actions.take_detached()
            });
            dispatcher.join().unwrap();
            let detached = closer.join().unwrap();
            assert!(detached.is_empty(), "b still follows 10: {detached:?}");
            let mut reg = shared.lock();
            assert_eq!(reg.tracked_count(a), 0);
            assert_eq!(reg.tracked_pids(), 1, "only 10 stays tracked, by b");
            let mut out = VecDeque::new();
            assert_eq!(reg.pop(b, &mut out, 10, None), PopStatus::Ready);
            assert_eq!(
                Vec::from(out),
                vec![
                    ProcEvent::Child {
                        pid: pid(11),
                        parent: pid(10),
                        at: Timestamp::UNKNOWN,
                    },
                    ProcEvent::Exit {
                        pid: pid(11),
                        status: Some(std::os::unix::process::ExitStatusExt::from_raw(0)),
                        at: Timestamp::UNKNOWN,
                    },
                ]
            );
        });
    }

    /// A consumer that found nothing and registered its waker is always woken by an event
    /// applied concurrently: no lost wakeup.
    #[test]
    fn no_lost_wakeup() {
        loom::model(|| {
            let (shared, id) = watching(10);
            let s2 = shared.clone();
            let dispatcher = loom::thread::spawn(move || {
                dispatch(
                    &s2,
                    vec![Input::Exec {
                        pid: pid(10),
                        argv: None,
                    }],
                );
            });
            let flag = std::sync::Arc::new(Flag(AtomicUsize::new(0)));
            let waker = Waker::from(flag.clone());
            let mut out = VecDeque::new();
            let first = shared.lock().pop(id, &mut out, 10, Some(&waker));
            dispatcher.join().unwrap();
            match first {
                PopStatus::Ready => assert_eq!(out.len(), 1),
                PopStatus::Pending => {
                    assert_eq!(
                        flag.0.load(Ordering::SeqCst),
                        1,
                        "registered waker not woken"
                    );
                    assert_eq!(shared.lock().pop(id, &mut out, 10, None), PopStatus::Ready);
                }
                PopStatus::Done => panic!("stream ended while its process lives"),
            }
        });
    }

    /// Shutdown racing a watch and a read: the watch either succeeds before it or is refused,
    /// and a reader waiting on the stream is woken and then sees the end.
    #[test]
    fn shutdown_races_watch_and_read() {
        loom::model(|| {
            let (shared, id) = watching(10);
            let s2 = shared.clone();
            let closer = loom::thread::spawn(move || {
                let mut wake = Actions::default();
                s2.lock().shutdown(&mut wake);
                wake.wake_all();
            });
            let s3 = shared.clone();
            let watcher = loom::thread::spawn(move || {
                let mut reg = s3.lock();
                match reg.add_stream(pid(20), Interest::EXIT, 100) {
                    Ok(new) => reg
                        .attach_root(
                            new,
                            pid(20),
                            Some(&snap()),
                            Stamp::default(),
                            &mut Actions::default(),
                        )
                        .is_ok(),
                    Err(_) => false,
                }
            });
            let flag = std::sync::Arc::new(Flag(AtomicUsize::new(0)));
            let waker = Waker::from(flag.clone());
            let mut out = VecDeque::new();
            let first = shared.lock().pop(id, &mut out, 10, Some(&waker));
            closer.join().unwrap();
            let _ = watcher.join().unwrap();
            if first == PopStatus::Pending {
                assert_eq!(flag.0.load(Ordering::SeqCst), 1);
            }
            assert_eq!(shared.lock().pop(id, &mut out, 10, None), PopStatus::Done);
        });
    }
}
