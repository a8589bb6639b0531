//! The proc connector's wire format, decoded and encoded as pure functions over bytes.
//!
//! A datagram holds one or more netlink messages (`struct nlmsghdr`, 16 bytes, aligned to
//! 4). Each carries a connector message (`struct cn_msg`, 20 bytes) whose payload, for
//! `CN_IDX_PROC`/`CN_VAL_PROC`, is a `struct proc_event`: `what`, `cpu`, a monotonic
//! `timestamp_ns`, then a union whose layout depends on `what` (see `linux/cn_proc.h`).
//! Everything is in host byte order. Nothing here trusts a length field: a message that does
//! not fit what the buffer holds is reported as [`DecodeError`], never read past.

/// `NETLINK_CONNECTOR` multicast group and value of the process-events connector.
pub(crate) const CN_IDX_PROC: u32 = 1;
pub(crate) const CN_VAL_PROC: u32 = 1;

const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;
const PROC_EVENT_HDR: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

/// `enum proc_cn_event` values.
pub(crate) mod what {
    pub(crate) const NONE: u32 = 0;
    pub(crate) const FORK: u32 = 0x0000_0001;
    pub(crate) const EXEC: u32 = 0x0000_0002;
    pub(crate) const EXIT: u32 = 0x8000_0000;
}

/// `enum proc_cn_mcast_op`.
pub(crate) const PROC_CN_MCAST_LISTEN: u32 = 1;
pub(crate) const PROC_CN_MCAST_IGNORE: u32 = 2;

/// One decoded process event.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub(crate) enum ProcMsg {
    /// The kernel's answer to a multicast-op request; `ack` is the request's `ack` plus one,
    /// `ts_ns` when the kernel answered (`CLOCK_MONOTONIC` of the initial time namespace).
    Ack { ack: u32, err: u32, ts_ns: u64 },
    /// A task was created: a process when `child_pid == child_tgid`, else a thread.
    Fork {
        parent_pid: i32,
        parent_tgid: i32,
        child_pid: i32,
        child_tgid: i32,
        ts_ns: u64,
    },
    /// A task called `execve`; after a non-leader's exec, `pid == tgid` already.
    Exec { pid: i32, tgid: i32, ts_ns: u64 },
    /// A task (one thread) exited; `code` is in `waitpid` form.
    Exit {
        pid: i32,
        tgid: i32,
        code: u32,
        ts_ns: u64,
    },
    /// An event kind this crate does not use (uid, gid, sid, ptrace, comm, coredump).
    Other { what: u32 },
}

/// A message that could not be decoded; the rest of its datagram is skipped.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A header or payload is cut short by the end of the datagram.
    Truncated,
    /// A length field is smaller than its own header.
    BadLength,
    /// A netlink error or overrun message.
    Netlink(u16),
    /// A connector message for another connector than the process-events one.
    Foreign { idx: u32, val: u32 },
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn i32_at(b: &[u8], off: usize) -> Option<i32> {
    u32_at(b, off).map(|v| v as i32)
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Decodes every message of one datagram, calling `f` for each, in order. Stops at the first
/// message whose length cannot be trusted.
pub(crate) fn decode_datagram(buf: &[u8], mut f: impl FnMut(Result<ProcMsg, DecodeError>)) {
    let mut off = 0;
    while off < buf.len() {
        let msg = &buf[off..];
        let (Some(len), Some(ty)) = (u32_at(msg, 0), u16_at(msg, 4)) else {
            f(Err(DecodeError::Truncated));
            return;
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN {
            f(Err(DecodeError::BadLength));
            return;
        }
        if len > msg.len() {
            f(Err(DecodeError::Truncated));
            return;
        }
        match ty {
            NLMSG_NOOP => {}
            NLMSG_ERROR | NLMSG_OVERRUN => f(Err(DecodeError::Netlink(ty))),
            _ => f(decode_connector(&msg[NLMSG_HDRLEN..len])),
        }
        off = off.saturating_add((len + 3) & !3);
    }
}

/// Decodes one `cn_msg` and its `proc_event`.
pub(crate) fn decode_connector(cn: &[u8]) -> Result<ProcMsg, DecodeError> {
    let idx = u32_at(cn, 0).ok_or(DecodeError::Truncated)?;
    let val = u32_at(cn, 4).ok_or(DecodeError::Truncated)?;
    let ack = u32_at(cn, 12).ok_or(DecodeError::Truncated)?;
    let dlen = u16_at(cn, 16).ok_or(DecodeError::Truncated)? as usize;
    if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC) {
        return Err(DecodeError::Foreign { idx, val });
    }
    let data = cn
        .get(CN_MSG_LEN..CN_MSG_LEN + dlen)
        .ok_or(DecodeError::Truncated)?;
    let what = u32_at(data, 0).ok_or(DecodeError::Truncated)?;
    let ts_ns = u64_at(data, 8).ok_or(DecodeError::Truncated)?;
    let d = PROC_EVENT_HDR;
    let t = DecodeError::Truncated;
    Ok(match what {
        what::NONE => ProcMsg::Ack {
            ack,
            err: u32_at(data, d).ok_or(t)?,
            ts_ns,
        },
        what::FORK => ProcMsg::Fork {
            parent_pid: i32_at(data, d).ok_or(t)?,
            parent_tgid: i32_at(data, d + 4).ok_or(t)?,
            child_pid: i32_at(data, d + 8).ok_or(t)?,
            child_tgid: i32_at(data, d + 12).ok_or(t)?,
            ts_ns,
        },
        what::EXEC => ProcMsg::Exec {
            pid: i32_at(data, d).ok_or(t)?,
            tgid: i32_at(data, d + 4).ok_or(t)?,
            ts_ns,
        },
        what::EXIT => ProcMsg::Exit {
            pid: i32_at(data, d).ok_or(t)?,
            tgid: i32_at(data, d + 4).ok_or(t)?,
            code: u32_at(data, d + 8).ok_or(t)?,
            ts_ns,
        },
        other => ProcMsg::Other { what: other },
    })
}

/// Builds a multicast-op request (`PROC_CN_MCAST_LISTEN` or `_IGNORE`). With `events`, the
/// request carries a `struct proc_input` so the kernel (6.6 and later) sends this socket
/// only those event kinds; without, it is the classic 4-byte op that every kernel takes.
pub(crate) fn mcast_request(op: u32, events: Option<u32>, seq: u32, ack: u32) -> Vec<u8> {
    let payload_len = if events.is_some() { 8 } else { 4 };
    let total = NLMSG_HDRLEN + CN_MSG_LEN + payload_len;
    let mut b = Vec::with_capacity(total);
    // nlmsghdr
    b.extend_from_slice(&(total as u32).to_ne_bytes());
    b.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills in the sender
                                              // cn_msg
    b.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    b.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&ack.to_ne_bytes());
    b.extend_from_slice(&(payload_len as u16).to_ne_bytes());
    b.extend_from_slice(&0u16.to_ne_bytes());
    // payload
    b.extend_from_slice(&op.to_ne_bytes());
    if let Some(ev) = events {
        b.extend_from_slice(&ev.to_ne_bytes());
    }
    b
}

/// Encodes a proc_event datagram the way the kernel lays it out (for tests, benches and fuzz
/// targets).
#[cfg(any(test, feature = "bench-support"))]
pub(crate) fn encode_event_with_ack(what: u32, ts: u64, ack: u32, fields: &[u32]) -> Vec<u8> {
    let dlen = PROC_EVENT_HDR + fields.len() * 4;
    let total = NLMSG_HDRLEN + CN_MSG_LEN + dlen;
    let mut b = Vec::new();
    b.extend_from_slice(&(total as u32).to_ne_bytes());
    b.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    b.extend_from_slice(&[0; 10]);
    for v in [CN_IDX_PROC, CN_VAL_PROC, 7, ack] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    b.extend_from_slice(&(dlen as u16).to_ne_bytes());
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&what.to_ne_bytes());
    b.extend_from_slice(&1u32.to_ne_bytes());
    b.extend_from_slice(&ts.to_ne_bytes());
    for f in fields {
        b.extend_from_slice(&f.to_ne_bytes());
    }
    b
}

/// Encodes a proc_event datagram (for tests, benches and fuzz targets).
#[cfg(any(test, feature = "bench-support"))]
pub(crate) fn encode_event(what: u32, ts: u64, fields: &[u32]) -> Vec<u8> {
    encode_event_with_ack(what, ts, 0, fields)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn all(buf: &[u8]) -> Vec<Result<ProcMsg, DecodeError>> {
        let mut v = Vec::new();
        decode_datagram(buf, |m| v.push(m));
        v
    }

    #[test]
    fn decodes_fork_exec_exit_ack() {
        let mut buf = encode_event_with_ack(what::FORK, 5, 0, &[1, 1, 2, 2]);
        assert_eq!(
            all(&buf),
            vec![Ok(ProcMsg::Fork {
                parent_pid: 1,
                parent_tgid: 1,
                child_pid: 2,
                child_tgid: 2,
                ts_ns: 5
            })]
        );
        buf = encode_event_with_ack(what::EXEC, 6, 0, &[2, 2]);
        assert_eq!(
            all(&buf),
            vec![Ok(ProcMsg::Exec {
                pid: 2,
                tgid: 2,
                ts_ns: 6
            })]
        );
        buf = encode_event_with_ack(what::EXIT, 7, 0, &[3, 2, 0x0900, 17, 1, 1]);
        assert_eq!(
            all(&buf),
            vec![Ok(ProcMsg::Exit {
                pid: 3,
                tgid: 2,
                code: 0x900,
                ts_ns: 7
            })]
        );
        buf = encode_event_with_ack(what::NONE, 0, 43, &[0]);
        assert_eq!(
            all(&buf),
            vec![Ok(ProcMsg::Ack {
                ack: 43,
                err: 0,
                ts_ns: 0
            })]
        );
        buf = encode_event_with_ack(0x200, 0, 0, &[1, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(all(&buf), vec![Ok(ProcMsg::Other { what: 0x200 })]);
    }

    #[test]
    fn decodes_several_messages_in_one_datagram() {
        let mut buf = encode_event_with_ack(what::EXEC, 1, 0, &[2, 2]);
        buf.extend(encode_event_with_ack(what::EXEC, 2, 0, &[3, 3]));
        let v = all(&buf);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[1],
            Ok(ProcMsg::Exec {
                pid: 3,
                tgid: 3,
                ts_ns: 2
            })
        );
    }

    #[test]
    fn truncated_and_bogus_lengths_are_errors() {
        let buf = encode_event_with_ack(what::FORK, 5, 0, &[1, 1, 2, 2]);
        for cut in 0..buf.len() {
            let v = all(&buf[..cut]);
            if cut == 0 {
                assert!(v.is_empty());
            } else {
                assert!(v.iter().all(|m| m.is_err()), "cut {cut}: {v:?}");
            }
        }
        let mut bad = buf.clone();
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(all(&bad), vec![Err(DecodeError::BadLength)]);
        let mut big = buf.clone();
        big[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(all(&big), vec![Err(DecodeError::Truncated)]);
        // cn_msg.len claiming more than is there
        let mut cl = buf.clone();
        cl[32..34].copy_from_slice(&1000u16.to_ne_bytes());
        assert_eq!(all(&cl), vec![Err(DecodeError::Truncated)]);
        // another connector
        let mut foreign = buf;
        foreign[16..20].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(
            all(&foreign),
            vec![Err(DecodeError::Foreign { idx: 9, val: 1 })]
        );
    }

    /// The kernel's events of a short process tree, one of each kind, as one datagram (the
    /// kernel sends the union at its full 24 bytes; a few of these use fewer, which is legal).
    fn sample() -> Vec<Vec<u8>> {
        vec![
            encode_event_with_ack(what::FORK, 5, 0, &[100, 100, 101, 101, 0, 0]),
            encode_event_with_ack(what::FORK, 6, 0, &[101, 101, 102, 101]),
            encode_event_with_ack(what::EXEC, 7, 0, &[101, 101]),
            encode_event_with_ack(what::EXIT, 8, 0, &[102, 101, 0, 0, 100, 100]),
            encode_event_with_ack(what::NONE, 0, 43, &[0]),
            encode_event_with_ack(0x200, 9, 0, &[101, 101, 0, 0, 0, 0]),
            encode_event_with_ack(what::EXIT, 10, 0, &[101, 101, 0x0900, 17, 100, 100]),
        ]
    }

    /// A datagram of `msgs` (each already a whole, aligned netlink message).
    fn join(msgs: &[Vec<u8>]) -> Vec<u8> {
        msgs.concat()
    }

    /// One netlink message of type `ty` around `payload`, its length as given, padded to 4.
    fn nlmsg(ty: u16, len: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&len.to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(payload);
        b.resize(b.len().next_multiple_of(4), 0);
        b
    }

    fn exec(pid: i32, ts_ns: u64) -> (Vec<u8>, Result<ProcMsg, DecodeError>) {
        let msg = ProcMsg::Exec {
            pid,
            tgid: pid,
            ts_ns,
        };
        (
            encode_event_with_ack(what::EXEC, ts_ns, 0, &[pid as u32; 2]),
            Ok(msg),
        )
    }

    #[test]
    fn every_cut_of_a_multi_message_datagram() {
        let msgs = sample();
        let buf = join(&msgs);
        let whole = all(&buf);
        assert_eq!(whole.len(), msgs.len());
        assert!(whole.iter().all(Result::is_ok), "{whole:?}");
        // Message k occupies ends[k-1]..ends[k].
        let ends: Vec<usize> = msgs
            .iter()
            .scan(0, |end, m| {
                *end += m.len();
                Some(*end)
            })
            .collect();
        for cut in 0..=buf.len() {
            let complete = ends.iter().take_while(|&&e| e <= cut).count();
            let mut want = whole[..complete].to_vec();
            let started = complete.checked_sub(1).map_or(0, |k| ends[k]);
            if cut > started {
                want.push(Err(DecodeError::Truncated));
            }
            assert_eq!(all(&buf[..cut]), want, "cut at {cut}");
        }
    }

    #[test]
    fn a_short_nlmsg_len_costs_only_its_own_message() {
        // The netlink length is honest but too short for what the connector message claims:
        // that message is lost, the next one (found by the length) still decodes.
        let fork = encode_event_with_ack(what::FORK, 5, 0, &[1, 1, 2, 2]);
        let (next, next_msg) = exec(3, 6);
        for len in NLMSG_HDRLEN..fork.len() {
            let mut buf = fork[..len].to_vec();
            buf[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
            buf.resize(len.next_multiple_of(4), 0);
            buf.extend_from_slice(&next);
            assert_eq!(
                all(&buf),
                vec![Err(DecodeError::Truncated), next_msg],
                "nlmsg_len {len}"
            );
        }
    }

    #[test]
    fn nlmsg_len_beyond_the_datagram_ends_it() {
        let (first, first_msg) = exec(2, 1);
        let fork = encode_event_with_ack(what::FORK, 5, 0, &[1, 1, 2, 2]);
        let fits = fork.len() as u32;
        // Lengths past the end, up to those where adding the padding would overflow a 32-bit
        // usize: none may wrap around to something small.
        for len in [
            fits + 1,
            fits + 4,
            1 << 16,
            0x8000_0000,
            u32::MAX - 3,
            u32::MAX,
        ] {
            let mut second = fork.clone();
            second[0..4].copy_from_slice(&len.to_ne_bytes());
            let buf = join(&[first.clone(), second]);
            assert_eq!(
                all(&buf),
                vec![first_msg, Err(DecodeError::Truncated)],
                "nlmsg_len {len:#x}"
            );
        }
    }

    #[test]
    fn nlmsg_len_below_its_header_ends_the_datagram() {
        // Zero in particular: a decoder that trusted it would never advance.
        let (first, first_msg) = exec(2, 1);
        let (after, _) = exec(4, 2);
        for len in 0..NLMSG_HDRLEN as u32 {
            let mut second = first.clone();
            second[0..4].copy_from_slice(&len.to_ne_bytes());
            let buf = join(&[first.clone(), second, after.clone()]);
            assert_eq!(
                all(&buf),
                vec![first_msg, Err(DecodeError::BadLength)],
                "nlmsg_len {len}"
            );
        }
    }

    #[test]
    fn unaligned_nlmsg_len_is_padded_to_four() {
        // An exec message with one spare byte after its payload: 61 bytes, then 3 of padding.
        let (mut odd, odd_msg) = exec(2, 1);
        let len = odd.len() as u32 + 1;
        odd[0..4].copy_from_slice(&len.to_ne_bytes());
        odd.extend_from_slice(&[0xee; 4]);
        let (next, next_msg) = exec(3, 2);
        assert_eq!(all(&join(&[odd.clone(), next])), vec![odd_msg, next_msg]);
        // The last message of a datagram need not carry its padding.
        assert_eq!(all(&odd[..len as usize]), vec![odd_msg]);
    }

    #[test]
    fn cn_msg_len_beyond_its_message() {
        let fork = encode_event_with_ack(what::FORK, 5, 0, &[1, 1, 2, 2]);
        let room = (fork.len() - NLMSG_HDRLEN - CN_MSG_LEN) as u16;
        let (next, next_msg) = exec(3, 6);
        for dlen in [room + 1, room + 4, 0x1000, u16::MAX] {
            let mut buf = fork.clone();
            buf[32..34].copy_from_slice(&dlen.to_ne_bytes());
            buf.extend_from_slice(&next);
            assert_eq!(
                all(&buf),
                vec![Err(DecodeError::Truncated), next_msg],
                "cn_msg len {dlen}"
            );
        }
        // Bytes after the connector message, inside the netlink message, are ignored.
        let mut roomy = fork.clone();
        roomy[0..4].copy_from_slice(&(fork.len() as u32 + 8).to_ne_bytes());
        roomy.extend_from_slice(&[0xee; 8]);
        assert_eq!(all(&roomy), all(&fork));
    }

    #[test]
    fn payload_shorter_than_its_kind_needs() {
        // Each kind with one 32-bit field fewer than it reads, then with exactly enough.
        let kinds: [(u32, &[u32]); 4] = [
            (what::NONE, &[0]),
            (what::FORK, &[1, 1, 2, 2]),
            (what::EXEC, &[2, 2]),
            (what::EXIT, &[2, 2, 0]),
        ];
        for (w, fields) in kinds {
            let short = encode_event_with_ack(w, 5, 0, &fields[..fields.len() - 1]);
            assert_eq!(
                all(&short),
                vec![Err(DecodeError::Truncated)],
                "what {w:#x}"
            );
            let exact = all(&encode_event_with_ack(w, 5, 0, fields));
            assert!(matches!(exact[..], [Ok(_)]), "what {w:#x}: {exact:?}");
        }
        // A proc_event header (what, cpu, timestamp) cut short, whatever the kind.
        for w in [what::NONE, what::FORK, what::EXEC, what::EXIT, 0x200] {
            let full = encode_event_with_ack(w, 5, 0, &[]);
            for dlen in 0..PROC_EVENT_HDR {
                let len = NLMSG_HDRLEN + CN_MSG_LEN + dlen;
                let mut buf = full[..len].to_vec();
                buf[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
                buf[32..34].copy_from_slice(&(dlen as u16).to_ne_bytes());
                assert_eq!(
                    all(&buf),
                    vec![Err(DecodeError::Truncated)],
                    "what {w:#x}, {dlen} bytes"
                );
            }
        }
    }

    #[test]
    fn unknown_what_values_are_other() {
        // The kernel's other kinds (uid, gid, sid, ptrace, comm, coredump), bit combinations
        // of known kinds, and values no kernel sends. `Other` needs no union at all.
        for w in [
            0x4,
            0x40,
            0x80,
            0x100,
            0x200,
            0x4000_0000,
            what::FORK | what::EXEC,
            what::EXIT | what::FORK,
            0x10,
            u32::MAX,
        ] {
            let buf = encode_event_with_ack(w, 5, 0, &[]);
            assert_eq!(
                all(&buf),
                vec![Ok(ProcMsg::Other { what: w })],
                "what {w:#x}"
            );
        }
    }

    #[test]
    fn netlink_message_types() {
        let (ev, ev_msg) = exec(3, 6);
        // NOOP is skipped; ERROR and OVERRUN are reported and decoding goes on after them.
        let noop = nlmsg(NLMSG_NOOP, NLMSG_HDRLEN as u32, &[]);
        assert_eq!(all(&join(&[noop, ev.clone()])), vec![ev_msg]);
        let odd_noop = nlmsg(NLMSG_NOOP, NLMSG_HDRLEN as u32 + 1, &[7]);
        assert_eq!(all(&join(&[odd_noop, ev.clone()])), vec![ev_msg]);
        // struct nlmsgerr: an errno, then the header of the request it answers.
        let mut err = (-(libc::ENOBUFS)).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; NLMSG_HDRLEN]);
        for ty in [NLMSG_ERROR, NLMSG_OVERRUN] {
            let msg = nlmsg(ty, (NLMSG_HDRLEN + err.len()) as u32, &err);
            assert_eq!(
                all(&join(&[msg, ev.clone()])),
                vec![Err(DecodeError::Netlink(ty)), ev_msg],
                "type {ty}"
            );
        }
        // The kernel sends connector messages as NLMSG_DONE, but the decoder does not rely on
        // the type: any type other than the three above carries a connector message.
        for ty in [0, NLMSG_DONE, 5, 0x10, 0x1234, u16::MAX] {
            let mut buf = ev.clone();
            buf[4..6].copy_from_slice(&ty.to_ne_bytes());
            assert_eq!(all(&buf), vec![ev_msg], "type {ty}");
        }
    }

    #[test]
    fn foreign_connectors_are_skipped() {
        let fork = encode_event_with_ack(what::FORK, 5, 0, &[1, 1, 2, 2]);
        let (next, next_msg) = exec(3, 6);
        for (idx, val) in [
            (1, 2),
            (2, 1),
            (0, 0),
            (CN_VAL_PROC, u32::MAX),
            (u32::MAX, 1),
        ] {
            let mut buf = fork.clone();
            buf[16..20].copy_from_slice(&idx.to_ne_bytes());
            buf[20..24].copy_from_slice(&val.to_ne_bytes());
            let foreign = Err(DecodeError::Foreign { idx, val });
            buf.extend_from_slice(&next);
            assert_eq!(all(&buf), vec![foreign, next_msg], "({idx}, {val})");
            // Judged by its header alone: a payload it does not have does not matter.
            buf[32..34].copy_from_slice(&u16::MAX.to_ne_bytes());
            assert_eq!(all(&buf), vec![foreign, next_msg], "({idx}, {val}), long");
        }
        // Too short to hold the connector header's length field: truncated, foreign or not.
        let mut stub = nlmsg(NLMSG_DONE, (NLMSG_HDRLEN + 16) as u32, &[0; 16]);
        stub[16..20].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(all(&stub), vec![Err(DecodeError::Truncated)]);
    }

    /// A small deterministic generator (xorshift) instead of a property-test dependency.
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Decodes `buf`, checking what holds for any input (see `bench_support::check_decode`).
    fn checked(buf: &[u8]) -> Vec<Result<ProcMsg, DecodeError>> {
        crate::bench_support::check_decode(buf);
        all(buf)
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let seed = encode_event_with_ack(what::EXIT, 7, 0, &[3, 2, 0x0900, 17, 1, 1]);
        for _ in 0..50_000 {
            let len = (next() % 160) as usize;
            let mut buf: Vec<u8> = if next().is_multiple_of(2) {
                let mut s = seed.clone();
                s.resize(len.max(1), 0);
                s
            } else {
                (0..len).map(|_| next() as u8).collect()
            };
            for _ in 0..(next() % 4) {
                if !buf.is_empty() {
                    let i = (next() as usize) % buf.len();
                    buf[i] = next() as u8;
                }
            }
            checked(&buf);
        }
    }

    #[test]
    fn every_byte_of_a_valid_datagram_mutated() {
        // Changing one byte can only change the answer for the message holding it and those
        // after it: the messages before it decode as they did.
        let msgs = sample();
        let buf = join(&msgs);
        let whole = all(&buf);
        let mut owner = Vec::new();
        for (k, m) in msgs.iter().enumerate() {
            owner.extend(std::iter::repeat_n(k, m.len()));
        }
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for i in 0..buf.len() {
            let b = buf[i];
            let values = [
                0,
                0xff,
                b ^ 0x01,
                b ^ 0x80,
                b.wrapping_add(1),
                b.wrapping_sub(1),
                next() as u8,
            ];
            for v in values {
                let mut m = buf.clone();
                m[i] = v;
                let got = checked(&m);
                let k = owner[i];
                assert_eq!(got[..k], whole[..k], "byte {i} set to {v:#x}: {got:?}");
            }
        }
    }

    #[test]
    fn mutated_and_spliced_datagrams() {
        // Deeper than random bytes: whole valid messages reordered, repeated and cut, then a
        // few bytes overwritten (length fields more often than chance would pick them).
        let msgs = sample();
        let mut next = xorshift(0xd1b5_4a32_d192_ed03);
        for _ in 0..20_000 {
            let n = 1 + (next() % 6) as usize;
            let picked: Vec<Vec<u8>> = (0..n)
                .map(|_| msgs[(next() as usize) % msgs.len()].clone())
                .collect();
            let mut buf = join(&picked);
            let clean = all(&buf);
            assert_eq!(clean.len(), n);
            let mut first_touched = buf.len();
            for _ in 0..(next() % 4) {
                let i = match next() % 4 {
                    // a length field of some message: nlmsg_len or cn_msg len
                    0 => {
                        let k = (next() as usize) % n;
                        let start: usize = picked[..k].iter().map(Vec::len).sum();
                        start + if next().is_multiple_of(2) { 0 } else { 32 }
                    }
                    _ => (next() as usize) % buf.len(),
                };
                buf[i] = next() as u8;
                first_touched = first_touched.min(i);
            }
            if next().is_multiple_of(4) {
                let cut = (next() as usize) % (buf.len() + 1);
                buf.truncate(cut);
                first_touched = first_touched.min(cut);
            }
            let got = checked(&buf);
            // Messages wholly before the first change are untouched.
            let mut before = 0;
            let mut end = 0;
            for m in &picked {
                end += m.len();
                if end > first_touched {
                    break;
                }
                before += 1;
            }
            assert_eq!(got[..before], clean[..before], "{buf:?}");
        }
    }

    #[test]
    fn listen_request_layout() {
        let r = mcast_request(PROC_CN_MCAST_LISTEN, None, 9, 42);
        assert_eq!(r.len(), 40);
        assert_eq!(u32_at(&r, 0), Some(40));
        assert_eq!(u32_at(&r, 16), Some(CN_IDX_PROC));
        assert_eq!(u32_at(&r, 28), Some(42));
        assert_eq!(u16_at(&r, 32), Some(4));
        assert_eq!(u32_at(&r, 36), Some(PROC_CN_MCAST_LISTEN));
        let f = mcast_request(PROC_CN_MCAST_LISTEN, Some(what::FORK | what::EXIT), 9, 42);
        assert_eq!(f.len(), 44);
        assert_eq!(u32_at(&f, 40), Some(what::FORK | what::EXIT));
    }
}
