//! Memory per tracked process: the registry's heap bytes while it tracks N processes that a
//! stalled consumer has not read (each with a pending `Child`, `Exec` and `Exit`), counted by
//! a counting allocator.
//!
//! ```text
//! cargo bench --features bench-support --bench memory
//! ```

use procwatch::bench_support::ScriptedRegistry;
use procwatch::Interest;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn measure(n: i32, exited: bool) -> f64 {
    let before = LIVE.load(Ordering::Relaxed);
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
    let used = LIVE.load(Ordering::Relaxed) - before;
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
