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
    /// The kernel's answer to a multicast-op request; `ack` is the request's `ack` plus one.
    Ack { ack: u32, err: u32 },
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

/// Encodes a proc_event datagram the way the kernel lays it out.
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

/// Encodes a proc_event datagram (for tests and benchmarks).
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
        assert_eq!(all(&buf), vec![Ok(ProcMsg::Ack { ack: 43, err: 0 })]);
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

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator (xorshift) instead of a property-test dependency.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seed = encode_event_with_ack(what::EXIT, 7, 0, &[3, 2, 0x0900, 17, 1, 1]);
        for _ in 0..50_000 {
            let len = (next() % 160) as usize;
            let mut buf: Vec<u8> = if next() % 2 == 0 {
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
            decode_datagram(&buf, |_| {});
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
