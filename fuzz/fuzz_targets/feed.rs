//! Arbitrary bytes as one proc-connector datagram, decoded and applied to the registry the
//! way the netlink backend applies them, with a stream watching `bench_support::FEED_ROOT`.
//!
//! The datagram is fed twice, with a short read in between, then the stream is read to the
//! end; `check_feed` asserts that whatever pids, threads and orders the bytes name, the
//! stream stays consistent (no event about a process outside its life, an end only when
//! everything announced has exited) and nothing panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use procwatch::bench_support;

fuzz_target!(|datagram: &[u8]| {
    bench_support::check_feed(datagram);
});
