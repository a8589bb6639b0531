//! Arbitrary bytes as one proc-connector datagram, through the wire decoder alone.
//!
//! Beyond "no panic", `check_decode` asserts what the decoder promises for any input: each
//! message it reports consumed at least a netlink header, a bad length ends the datagram, and
//! every decoded event survives being encoded again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use procwatch::bench_support;

fuzz_target!(|datagram: &[u8]| {
    bench_support::check_decode(datagram);
});
