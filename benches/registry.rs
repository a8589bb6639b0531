//! The registry and the wire decoder alone, with scripted inputs and no kernel: how many
//! events per second one core can dispatch.
//!
//! ```text
//! cargo bench --features bench-support --bench registry
//! ```

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use procwatch::bench_support::{self, ScriptedRegistry};
use procwatch::Interest;
use std::collections::VecDeque;
use std::hint::black_box;

const ROOT: i32 = 1000;

/// A short-lived child per iteration: fork, exec, exit, each read by the consumer.
fn lifecycle_read_as_it_comes(c: &mut Criterion) {
    let mut g = c.benchmark_group("registry");
    g.throughput(Throughput::Elements(3));
    g.bench_function("fork+exec+exit, read each time", |b| {
        let mut reg = ScriptedRegistry::default();
        let stream = reg.watch(ROOT, Interest::ALL, 1);
        let mut out = VecDeque::with_capacity(64);
        let mut pid = ROOT + 1;
        let mut t = 10u64;
        b.iter(|| {
            pid = if pid >= 4_000_000 { ROOT + 1 } else { pid + 1 };
            t += 3;
            reg.fork(ROOT, pid, t);
            reg.exec(pid, t + 1);
            reg.exit(pid, pid, 0, t + 2);
            reg.read(stream, &mut out, 64);
            black_box(out.len());
            out.clear();
        });
    });
    g.finish();
}

/// A stalled consumer: 10,000 lifecycles applied, then one read of everything.
fn lifecycle_stalled(c: &mut Criterion) {
    const N: i32 = 10_000;
    let mut g = c.benchmark_group("registry");
    g.throughput(Throughput::Elements(3 * N as u64));
    g.bench_function("10k fork+exec+exit, stalled consumer", |b| {
        b.iter_batched(
            || {
                let mut reg = ScriptedRegistry::default();
                let stream = reg.watch(ROOT, Interest::ALL, 1);
                (reg, stream, VecDeque::with_capacity(4 * N as usize))
            },
            |(mut reg, stream, mut out)| {
                for i in 0..N {
                    let pid = ROOT + 1 + i;
                    let t = 10 + 3 * i as u64;
                    reg.fork(ROOT, pid, t);
                    reg.exec(pid, t + 1);
                    reg.exit(pid, pid, 0, t + 2);
                }
                while reg.read(stream, &mut out, 4096) > 0 {}
                black_box(out.len())
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

/// Messages about processes nobody watches: the cost of filtering the whole system's events.
fn untracked_traffic(c: &mut Criterion) {
    let mut g = c.benchmark_group("registry");
    g.throughput(Throughput::Elements(3));
    g.bench_function("fork+exec+exit of untracked processes", |b| {
        let mut reg = ScriptedRegistry::default();
        let _stream = reg.watch(ROOT, Interest::ALL, 1);
        let mut pid = 5000;
        b.iter(|| {
            pid = if pid >= 4_000_000 { 5000 } else { pid + 1 };
            reg.fork(1, pid, 10);
            reg.exec(pid, 11);
            reg.exit(pid, pid, 0, 12);
        });
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let fork = bench_support::datagram(1, 123, &[10, 10, 11, 11]);
    let exit = bench_support::datagram(0x8000_0000, 124, &[11, 11, 0, 17, 10, 10]);
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(2));
    g.bench_function("decode fork + exit datagrams", |b| {
        b.iter(|| {
            bench_support::decode(black_box(&fork)) + bench_support::decode(black_box(&exit))
        });
    });
    g.finish();
}

criterion_group!(
    benches,
    lifecycle_read_as_it_comes,
    lifecycle_stalled,
    untracked_traffic,
    decode
);
criterion_main!(benches);
