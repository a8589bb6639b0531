//! The proc-connector decoder and the registry behind it, fed kernel-shaped and malformed
//! datagrams through `procwatch::bench_support` (the code the fuzz targets in `fuzz/` run),
//! with no kernel and no process. Also keeps the fuzz seed corpus equal to the datagrams it
//! is generated from here.

use procwatch::bench_support::{self, ScriptedRegistry, FEED_ROOT};
use procwatch::{Interest, ProcEvent};
use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

const FORK: u32 = 1;
const EXEC: u32 = 2;
const EXIT: u32 = 0x8000_0000;
const ACK: u32 = 0;
const COMM: u32 = 0x200;

/// `parent` created task `child_pid` of process `child_tgid` (a thread when they differ).
fn fork(ts: u64, parent: i32, child_pid: i32, child_tgid: i32) -> Vec<u8> {
    let f = [parent, parent, child_pid, child_tgid, 0, 0].map(|v| v as u32);
    bench_support::datagram(FORK, ts, &f)
}

fn exec(ts: u64, pid: i32) -> Vec<u8> {
    bench_support::datagram(EXEC, ts, &[pid as u32, pid as u32, 0, 0, 0, 0])
}

/// Thread `tid` of process `tgid` exited with wait status `code`.
fn exit(ts: u64, tid: i32, tgid: i32, code: u32) -> Vec<u8> {
    let f = [tid as u32, tgid as u32, code, 17, 1, 1];
    bench_support::datagram(EXIT, ts, &f)
}

/// Everything a stream watching `FEED_ROOT` reads after `datagram` was fed to a fresh
/// registry: how many inputs were applied, the events in a short form, whether it ended.
fn feed(datagram: &[u8]) -> (usize, Vec<String>, bool) {
    let mut reg = ScriptedRegistry::default();
    let stream = reg.watch(FEED_ROOT, Interest::ALL, 1);
    let applied = reg.feed(datagram);
    let mut out = VecDeque::new();
    while reg.read(stream, &mut out, 64) > 0 {}
    let events = out.iter().map(short).collect();
    (applied, events, reg.ended(stream))
}

fn short(e: &ProcEvent) -> String {
    match e {
        ProcEvent::Child { pid, parent, .. } => format!("child {pid:?} of {parent:?}"),
        ProcEvent::Fork {
            pid, child, count, ..
        } => format!("fork {pid:?} -> {child:?} x{count}"),
        ProcEvent::Exec { pid, count, .. } => format!("exec {pid:?} x{count}"),
        ProcEvent::Exit { pid, status, .. } => {
            format!("exit {pid:?} {:?}", status.map(|s| s.into_raw()))
        }
        other => format!("{other:?}"),
    }
}

/// Named datagrams that seed both fuzz targets: the kernel's layout, pids around `FEED_ROOT`.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let r = FEED_ROOT;
    vec![
        (
            "seed-lifecycle",
            [fork(10, r, 101, 101), exec(11, 101), exit(12, 101, 101, 0)].concat(),
        ),
        (
            // A second thread; the leader leaves first, the last thread's status counts.
            "seed-threads",
            [
                fork(10, r, 101, 101),
                fork(11, 101, 102, 101),
                exit(12, 101, 101, 0),
                exit(13, 102, 101, 0x0900),
            ]
            .concat(),
        ),
        (
            // A grandchild, then the root itself exits: the stream ends.
            "seed-tree",
            [
                fork(10, r, 101, 101),
                fork(11, 101, 102, 102),
                exit(12, 102, 102, 0),
                exit(13, 101, 101, 0),
                exit(14, r, r, 0x000f),
            ]
            .concat(),
        ),
        (
            // A subscription ack, a comm change and an untracked process's exit.
            "seed-ack-other",
            [
                bench_support::datagram(ACK, 0, &[0, 0, 0, 0, 0, 0]),
                bench_support::datagram(COMM, 10, &[r as u32, r as u32, 0, 0, 0, 0]),
                exit(11, 4000, 4000, 0),
            ]
            .concat(),
        ),
    ]
}

#[test]
fn seeds_decode_and_feed_as_expected() {
    let want: [(usize, &[&str], bool); 4] = [
        (
            3,
            &[
                "fork Pid(100) -> Pid(101) x1",
                "child Pid(101) of Pid(100)",
                "exec Pid(101) x1",
                "exit Pid(101) Some(0)",
            ],
            false,
        ),
        (
            4,
            &[
                "fork Pid(100) -> Pid(101) x1",
                "child Pid(101) of Pid(100)",
                "exit Pid(101) Some(2304)",
            ],
            false,
        ),
        (
            5,
            &[
                "fork Pid(100) -> Pid(101) x1",
                "child Pid(101) of Pid(100)",
                "fork Pid(101) -> Pid(102) x1",
                "child Pid(102) of Pid(101)",
                "exit Pid(102) Some(0)",
                "exit Pid(101) Some(0)",
                "exit Pid(100) Some(15)",
            ],
            true,
        ),
        (3, &[], false),
    ];
    for ((name, d), (messages, events, ended)) in seeds().iter().zip(want) {
        assert_eq!(bench_support::check_decode(d), messages, "{name}");
        let (_, got, got_ended) = feed(d);
        assert_eq!(got, events, "{name}");
        assert_eq!(got_ended, ended, "{name}");
        assert!(bench_support::check_feed(d) >= events.len(), "{name}");
    }
}

#[test]
fn garbage_pids_reach_no_stream() {
    // Pids no process has (zero, negative), tids that were never counted, and events about
    // processes nobody watches: decoded, mapped and applied without effect.
    let r = FEED_ROOT;
    let d = [
        fork(10, 0, 0, 0),
        fork(11, -1, -5, -5),
        fork(12, r, i32::MIN, i32::MIN),
        fork(13, r, 0, r), // a thread with tid 0
        fork(14, r, -7, r),
        exec(15, 0),
        exec(16, i32::MIN),
        exit(17, -7, r, 0),      // the thread with a negative tid
        exit(18, 999, r, 0),     // a thread the registry never saw start
        exit(19, r, -1, 0),      // no process -1
        exit(20, 0, 0, 0),       // nor 0
        exit(21, 4000, 4000, 0), // an untracked process
        exec(22, 4000),
    ]
    .concat();
    assert_eq!(bench_support::check_decode(&d), 13);
    let (applied, events, ended) = feed(&d);
    // Only the inputs whose task ids are all positive are applied: the exit of thread 999
    // of the root, and the two about untracked process 4000.
    assert_eq!(applied, 3);
    assert_eq!(events, Vec::<String>::new());
    assert!(!ended, "the root is alive");
    // No odd thread was counted, so the root's own exit ends it, with its own status.
    let (_, events, ended) = feed(&[d, exit(30, r, r, 0x0100)].concat());
    assert_eq!(events, ["exit Pid(100) Some(256)"]);
    assert!(ended);
}

#[test]
fn malformed_messages_cost_only_themselves() {
    let good = exec(5, FEED_ROOT);
    // A foreign connector, a cn_msg length past its message, an unknown kind: each skipped.
    let mut foreign = exec(1, FEED_ROOT);
    foreign[16..20].copy_from_slice(&7u32.to_ne_bytes());
    let mut long = exec(2, FEED_ROOT);
    long[32..34].copy_from_slice(&u16::MAX.to_ne_bytes());
    let other = bench_support::datagram(0x1234_5678, 3, &[]);
    let d = [foreign, long, other, good.clone()].concat();
    assert_eq!(bench_support::check_decode(&d), 2);
    let (applied, events, _) = feed(&d);
    assert_eq!((applied, events), (1, vec!["exec Pid(100) x1".to_string()]));
    // A netlink length past the datagram ends it: what came before still counts.
    let mut cut = good.clone();
    cut[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
    let d = [good, cut].concat();
    assert_eq!(bench_support::check_decode(&d), 1);
    assert_eq!(feed(&d).0, 1);
}

#[test]
fn mutated_seeds_keep_the_stream_consistent() {
    // A few thousand cheap fuzz iterations in the ordinary test run: seed datagrams with
    // bytes overwritten, pids nudged and whole messages repeated, through both checkers.
    let mut x: u64 = 0x853c_49e6_748f_ea9b;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds = seeds();
    for _ in 0..5_000 {
        let (_, seed) = &seeds[(next() as usize) % seeds.len()];
        let mut d = seed.clone();
        if next().is_multiple_of(3) {
            d.extend_from_slice(&seeds[(next() as usize) % seeds.len()].1);
        }
        for _ in 0..1 + next() % 4 {
            let i = (next() as usize) % d.len();
            if next().is_multiple_of(2) {
                d[i] = next() as u8;
            } else {
                // Move a pid to a neighbour (the low byte of a 32-bit field, little or big
                // end): pids stay plausible, so the registry's paths are reached.
                d[i] = d[i].wrapping_add((next() % 3) as u8).wrapping_sub(1);
            }
        }
        bench_support::check_decode(&d);
        bench_support::check_feed(&d);
    }
}

#[test]
fn fuzz_seed_corpus_matches_its_generator() {
    // The committed seeds are these datagrams, byte for byte. To write them again:
    // PROCWATCH_WRITE_FUZZ_SEEDS=1 cargo test --test wire_robustness fuzz_seed
    // They are in host byte order, as the kernel writes: written on a little-endian machine.
    if cfg!(target_endian = "big") {
        return;
    }
    let write = std::env::var_os("PROCWATCH_WRITE_FUZZ_SEEDS").is_some();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in ["decode", "feed"] {
        let dir = corpus.join(target);
        for (name, bytes) in seeds() {
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            } else {
                let on_disk =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(
                    on_disk == bytes,
                    "{} differs from its generator",
                    path.display()
                );
            }
        }
    }
}
