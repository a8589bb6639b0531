//! What the tracer process and the watcher say to each other over their socket pair
//! (`SOCK_SEQPACKET`: each datagram arrives whole, in order).
//!
//! Both directions use 32-byte little records, several per datagram: a kind, three integers,
//! and the two clock readings of when the tracer saw the event (see `registry::Stamp`). An
//! `Exec` record may be followed by the process's command line (see [`Reader`]), which may
//! run on into the next datagram.

use crate::Argv;

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
    /// Read the command line of every process at its exec stops if `c` is 1; no more if 0.
    ArgvFrom = 8,
    /// Count new tasks' first stops (request `b`); answered by a `Reply` whose `mono` is how
    /// many came before their creation events and `boot` how many after.
    Count = 6,
    /// The answer to request `b`: 0, or the errno in `c`.
    Reply = 10,
    /// Process `a` created process `b`.
    Fork = 11,
    /// Process `a` called `execve`. If `b` is above 0, its command line follows: `b - 1`
    /// bytes, then zeros up to a whole number of records; `c` is 1 if the command line went
    /// on past them.
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
            8 => Kind::ArgvFrom,
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

/// Appends an `Exec` record and the command line read at it (`None`: not read), as
/// [`Kind::Exec`] says.
pub(crate) fn put_exec(out: &mut Vec<u8>, mut r: Record, argv: Option<(&[u8], bool)>) {
    let Some((bytes, more)) = argv else {
        r.b = 0;
        r.c = 0;
        r.put(out);
        return;
    };
    r.b = bytes.len() as i32 + 1;
    r.c = more.into();
    r.put(out);
    out.extend_from_slice(bytes);
    out.resize(out.len() + padding(bytes.len()), 0);
}

fn padding(len: usize) -> usize {
    (RECORD - len % RECORD) % RECORD
}

/// Reads the tracer's records, datagram after datagram, joining each `Exec` record to the
/// command line that follows it.
#[derive(Default)]
pub(crate) struct Reader {
    /// An `Exec` record whose command line is not all in yet, and the bytes so far.
    pending: Option<(Record, Vec<u8>)>,
}

impl Reader {
    /// Feeds one datagram: `f` gets each record, with its command line for an `Exec` that
    /// has one, once it is whole. A torn or unknown record ends the datagram.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], mut f: impl FnMut(Record, Option<Argv>)) {
        loop {
            if let Some((r, got)) = &mut self.pending {
                let len = (r.b - 1) as usize;
                let whole = len + padding(len);
                let take = (whole - got.len()).min(bytes.len());
                got.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if got.len() < whole {
                    return;
                }
                let argv = Argv::from_read(&got[..len], r.c != 0);
                let r = *r;
                self.pending = None;
                f(r, Some(argv));
            }
            let Some(r) = bytes.get(..RECORD).and_then(|b| Record::parse(b).next()) else {
                return;
            };
            bytes = &bytes[RECORD..];
            if r.kind == Kind::Exec && r.b > 0 {
                let len = (r.b - 1) as usize;
                self.pending = Some((r, Vec::with_capacity(len + padding(len))));
            } else {
                f(r, None);
            }
        }
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

    #[test]
    fn command_lines_follow_their_exec_across_datagrams() {
        let mut bytes = Vec::new();
        Record::new(Kind::Fork, 1).with(2, 0).put(&mut bytes);
        let long: Vec<u8> = (0..100u8).map(|i| i % 7 + b'a').collect();
        put_exec(&mut bytes, Record::new(Kind::Exec, 2), Some((&long, true)));
        put_exec(&mut bytes, Record::new(Kind::Exec, 3), None);
        put_exec(
            &mut bytes,
            Record::new(Kind::Exec, 4),
            Some((b"sh\0-c\0\xff \n\0", false)),
        );
        put_exec(&mut bytes, Record::new(Kind::Exec, 5), Some((b"", false)));
        Record::new(Kind::Exit, 2).put(&mut bytes);
        assert_eq!(bytes.len() % RECORD, 0);
        // Whatever the cut between datagrams (at record boundaries, as the tracer sends).
        for cut in (0..=bytes.len()).step_by(RECORD) {
            let mut reader = Reader::default();
            let mut seen = Vec::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                reader.feed(part, |r, argv| seen.push((r.kind, r.a, argv)));
            }
            let argv = |b: &[u8], more| Some(Argv::from_read(b, more));
            assert_eq!(
                seen,
                vec![
                    (Kind::Fork, 1, None),
                    (Kind::Exec, 2, argv(&long, true)),
                    (Kind::Exec, 3, None),
                    (Kind::Exec, 4, argv(b"sh\0-c\0\xff \n\0", false)),
                    (Kind::Exec, 5, argv(b"", false)),
                    (Kind::Exit, 2, None),
                ],
                "cut at {cut}"
            );
        }
    }
}
