//! The clocks the crate compares: `CLOCK_MONOTONIC`, on which the kernel stamps its events and
//! [`Timestamp`]s count, and `CLOCK_BOOTTIME`, in which `/proc` gives start times (it also
//! counts time spent suspended). The registry takes times as plain values; reading the
//! clocks happens here.

use crate::registry::Stamp;
use crate::Timestamp;
use std::fs;

/// Both clocks read now, as one instant (see [`paired`]).
pub(crate) fn now() -> Stamp {
    paired(|| Timestamp::now().as_nanos(), boottime_now)
}

/// How far apart two reads of the monotonic clock around a read of the boot clock may be
/// for the pair to count as one instant.
const PAIR_WITHIN_NS: u64 = 20_000;
/// How many times [`paired`] reads before it settles for the closest pair it saw.
const PAIR_TRIES: usize = 8;

/// Reads the boot clock between two reads of the monotonic clock, and pairs it with their
/// midpoint, so that `boot - mono` (what [`Stamp::boot_ahead`] converts kernel stamps with)
/// is off by at most half the gap. Two reads one after the other are not enough: a thread
/// preempted between them (rare, but it can then be off its core for milliseconds on a busy
/// machine) pairs a boot time with a monotonic time that much older. Kernel events dated
/// with that offset are then compared wrongly with `/proc` start times: a message about a
/// process found in `/proc` can be taken for one about an earlier owner of its pid, and a
/// resync's cutoff moves. (A process seen being forked is compared on the monotonic clock
/// alone.) A pair wider than [`PAIR_WITHIN_NS`] is read again, up to [`PAIR_TRIES`] times,
/// keeping the narrowest.
fn paired(mut mono: impl FnMut() -> u64, mut boot: impl FnMut() -> u64) -> Stamp {
    let mut best: Option<(u64, Stamp)> = None;
    for _ in 0..PAIR_TRIES {
        let before = mono();
        let b = boot();
        let after = mono().max(before);
        let gap = after - before;
        let stamp = Stamp {
            mono: before + gap / 2,
            boot: b,
        };
        if gap <= PAIR_WITHIN_NS {
            return stamp;
        }
        if best.is_none_or(|(g, _)| gap < g) {
            best = Some((gap, stamp));
        }
    }
    best.map(|(_, s)| s).expect("at least one try")
}

/// `CLOCK_BOOTTIME` now, in nanoseconds: the clock `/proc` start times count in.
pub(crate) fn boottime_now() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// The `CLOCK_MONOTONIC` offset of this process's time namespace, in nanoseconds
/// (`/proc/self/timens_offsets`, Linux 5.6+; 0 outside a time namespace). The kernel stamps
/// proc-connector events on the initial namespace's clock; adding this makes them comparable
/// with this process's own clock.
pub(crate) fn timens_monotonic_offset() -> i64 {
    let Ok(text) = fs::read_to_string("/proc/self/timens_offsets") else {
        return 0;
    };
    parse_timens_monotonic(&text)
}

fn parse_timens_monotonic(text: &str) -> i64 {
    text.lines()
        .find_map(|l| {
            let mut f = l.split_ascii_whitespace();
            if f.next()? != "monotonic" {
                return None;
            }
            let secs: i64 = f.next()?.parse().ok()?;
            let nanos: i64 = f.next()?.parse().ok()?;
            Some(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scripted clocks: each call of `mono` and `boot` takes the next value.
    fn scripted(mono: &[u64], boot: &[u64]) -> Stamp {
        let (mut m, mut b) = (mono.iter().copied(), boot.iter().copied());
        paired(|| m.next().unwrap(), || b.next().unwrap())
    }

    #[test]
    fn a_close_pair_is_taken_at_once_with_the_midpoint() {
        let s = scripted(&[1_000, 1_100], &[51_050]);
        assert_eq!((s.mono, s.boot), (1_050, 51_050));
        assert_eq!(s.boot_ahead(), 50_000);
    }

    /// Preempted for 3 ms between the first two reads: that pair would put the boot clock
    /// 1.5 ms too far ahead. It is read again, and the close pair is taken.
    #[test]
    fn a_preempted_pair_is_read_again() {
        let s = scripted(
            &[1_000, 3_001_000, 3_002_000, 3_002_100],
            &[3_051_000, 3_052_050],
        );
        assert_eq!(s.boot_ahead(), 50_000);
    }

    /// Preempted every time: the narrowest pair, off by at most half its gap.
    #[test]
    fn always_preempted_keeps_the_narrowest_pair() {
        let mut mono = Vec::new();
        let mut boot = Vec::new();
        for i in 0..PAIR_TRIES as u64 {
            let start = i * 10_000_000;
            let gap = if i == 5 { 30_000 } else { 2_000_000 + i };
            mono.extend([start, start + gap]);
            // The boot read came right after the first monotonic read.
            boot.push(start + 50_000);
        }
        let s = scripted(&mono, &boot);
        assert_eq!(s.mono, 50_000_000 + 15_000);
        assert_eq!(s.boot_ahead(), 50_000 - 15_000);
    }

    /// A monotonic clock read as going back (it cannot, but a scripted one can) is no gap.
    #[test]
    fn a_backward_read_counts_as_no_gap() {
        let s = scripted(&[2_000, 1_000], &[52_000]);
        assert_eq!((s.mono, s.boot), (2_000, 52_000));
    }

    #[test]
    fn time_namespace_offsets() {
        let text = "monotonic           100         5\nboottime            -3         0\n";
        assert_eq!(parse_timens_monotonic(text), 100_000_000_005);
        assert_eq!(parse_timens_monotonic(""), 0);
    }
}
