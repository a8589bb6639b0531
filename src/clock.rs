//! The clocks the crate compares: `CLOCK_MONOTONIC`, on which the kernel stamps its events and
//! [`Timestamp`]s count, and `CLOCK_BOOTTIME`, in which `/proc` gives start times (it also
//! counts time spent suspended). The registry takes times as plain values; reading the
//! clocks happens here.

use crate::registry::Stamp;
use crate::Timestamp;
use std::fs;

/// Both clocks read now.
pub(crate) fn now() -> Stamp {
    Stamp {
        mono: Timestamp::now().as_nanos(),
        boot: boottime_now(),
    }
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

    #[test]
    fn time_namespace_offsets() {
        let text = "monotonic           100         5\nboottime            -3         0\n";
        assert_eq!(parse_timens_monotonic(text), 100_000_000_005);
        assert_eq!(parse_timens_monotonic(""), 0);
    }
}
