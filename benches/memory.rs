//! Memory per tracked process: the registry's heap bytes while it tracks N processes that a
//! stalled consumer has not read (each with a pending `Child`, `Exec` and `Exit`), counted by
//! a counting allocator.
//!
//! ```text
//! cargo bench --features bench-support --bench memory
//! ```

#[path = "../tests/support/heap.rs"]
mod heap;

use procwatch::bench_support::ScriptedRegistry;
use procwatch::Interest;
use std::collections::VecDeque;

fn measure(n: i32, exited: bool) -> f64 {
    let before = heap::live();
    let mut reg = ScriptedRegistry::default();
    let stream = reg.watch(1000, Interest::ALL, 1);
    for i in 0..n {
        let pid = 1001 + i;
        let t = 10 + 3 * i as u64;
        reg.fork(1000, pid, t);
        reg.exec(pid, t + 1);
        if exited {
            reg.exit(pid, pid, 0, t + 2);
        }
    }
    let used = heap::live() - before;
    // Reading everything frees it again.
    let mut out = VecDeque::new();
    while reg.read(stream, &mut out, 4096) > 0 {
        out.clear();
    }
    drop(reg);
    used as f64 / n as f64
}

fn main() {
    println!("registry heap bytes per tracked process (stalled consumer, all events pending):");
    for n in [1_000, 10_000, 100_000] {
        println!(
            "  {n:>7} processes: alive with Child+Exec pending {:>6.1} B/process; \
             exited with Child+Exec+Exit pending {:>6.1} B/process",
            measure(n, false),
            measure(n, true)
        );
    }
}
