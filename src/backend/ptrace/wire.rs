//! What the tracer process and the watcher say to each other over their socket pair
//! (`SOCK_SEQPACKET`: each datagram arrives whole, in order).
//!
//! Both directions use 32-byte little records, several per datagram: a kind, three integers,
//! and the two clock readings of when the tracer saw the event (see `registry::Stamp`).

/// How many bytes one record takes.
pub(crate) const RECORD: usize = 32;
/// The largest datagram either side sends.
pub(crate) const DATAGRAM: usize = RECORD * 512;

/// One record.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) kind: Kind,
    pub(crate) a: i32,
    pub(crate) b: i32,
    pub(crate) c: i32,
    pub(crate) mono: u64,
    pub(crate) boot: u64,
}

/// What a record says. Watcher to tracer: `Attach`, `Detach`, `Stop`, `Clock`, `Release`.
/// Tracer to watcher: the rest.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    /// Trace process `a` (request number `b`, ticket `mono`; `c` = 1 to hold it, and what it
    /// creates, at creations and execs); answered by `Reply`.
    Attach = 1,
    /// Stop tracing process `a`, unless it was attached again with a ticket above `mono`.
    Detach = 2,
    /// Stop tracing everything and exit.
    Stop = 3,
    /// Read the tracer's clocks (request `b`); answered by a `Reply` stamped with them.
    Clock = 4,
    /// Let process `a` run on from the event it is held at.
    Release = 5,
    /// Hold process `a` (and what it creates from then on) at its next events if `c` is 1;
    /// no more if 0.
    HoldFrom = 7,
    /// Count new tasks' first stops (request `b`); answered by a `Reply` whose `mono` is how
    /// many came before their creation events and `boot` how many after.
    Count = 6,
    /// The answer to request `b`: 0, or the errno in `c`.
    Reply = 10,
    /// Process `a` created process `b`.
    Fork = 11,
    /// Process `a` called `execve`.
    Exec = 12,
    /// Process `a` is gone; `c` is its wait status.
    Exit = 13,
    /// Process `a` exists, and the event of its creation has not been seen yet; sent only
    /// when an event about `a` (its exit) must go out before that creation.
    Birth = 14,
    /// Process `a`, reported by `Birth`, will not be claimed by a creation event.
    Abandon = 15,
    /// Process `a` created a process it could not follow; `c` is the errno.
    TrackErr = 16,
    /// Process `a` is kept stopped at the event reported just before (its creation, or an
    /// exec) until released.
    Hold = 17,
}

impl Kind {
    fn from_u32(v: u32) -> Option<Kind> {
        Some(match v {
            1 => Kind::Attach,
            2 => Kind::Detach,
            3 => Kind::Stop,
            4 => Kind::Clock,
            5 => Kind::Release,
            6 => Kind::Count,
            7 => Kind::HoldFrom,
            10 => Kind::Reply,
            11 => Kind::Fork,
            12 => Kind::Exec,
            13 => Kind::Exit,
            14 => Kind::Birth,
            15 => Kind::Abandon,
            16 => Kind::TrackErr,
            17 => Kind::Hold,
            _ => return None,
        })
    }
}

impl Record {
    /// A record with only a kind and its first integer.
    pub(crate) fn new(kind: Kind, a: i32) -> Record {
        Record {
            kind,
            a,
            b: 0,
            c: 0,
            mono: 0,
            boot: 0,
        }
    }

    /// Appends the record's bytes to `out`.
    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.kind as u32).to_le_bytes());
        out.extend_from_slice(&self.a.to_le_bytes());
        out.extend_from_slice(&self.b.to_le_bytes());
        out.extend_from_slice(&self.c.to_le_bytes());
        out.extend_from_slice(&self.mono.to_le_bytes());
        out.extend_from_slice(&self.boot.to_le_bytes());
    }

    /// The records of one datagram; a torn or unknown record ends the list.
    pub(crate) fn parse(bytes: &[u8]) -> impl Iterator<Item = Record> + '_ {
        bytes.chunks_exact(RECORD).map_while(|r| {
            let u32_at = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().unwrap());
            let u64_at = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().unwrap());
            Some(Record {
                kind: Kind::from_u32(u32_at(0))?,
                a: u32_at(4) as i32,
                b: u32_at(8) as i32,
                c: u32_at(12) as i32,
                mono: u64_at(16),
                boot: u64_at(24),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let recs = [
            Record {
                kind: Kind::Fork,
                a: 10,
                b: 11,
                c: -3,
                mono: u64::MAX,
                boot: 7,
            },
            Record::new(Kind::Stop, 0),
        ];
        let mut bytes = Vec::new();
        for r in &recs {
            r.put(&mut bytes);
        }
        assert_eq!(bytes.len(), 2 * RECORD);
        assert_eq!(Record::parse(&bytes).collect::<Vec<_>>(), recs);
        // A torn tail and an unknown kind end the list.
        assert_eq!(Record::parse(&bytes[..RECORD + 5]).count(), 1);
        bytes[RECORD] = 99;
        assert_eq!(Record::parse(&bytes).count(), 1);
    }
}
