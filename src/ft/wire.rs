//! The detector's datagrams (all integers little-endian):
//!
//! `"FCHB"`, version (u8, 2), kind (u8: 1 heartbeat, 2 revoke, 3 goodbye), the
//! communicator's token (u64), the sender's sequence number (u64), sender rank (u32),
//! revoking rank (u32), count (u32) and that many failed ranks (u32 each; only a revoke
//! carries any); then a tag (32 bytes) under the communicator's key, over all of it.
//!
//! A datagram that is short, long, of another version or communicator, without a valid tag,
//! or that names a rank outside the world is dropped (counted, and logged once per detector
//! with its address); so is one whose sequence number the receiver has seen (a replay, see
//! [`ReplayWindow`]). Even a valid datagram is never trusted beyond "a rank of this
//! communicator is alive / says it revoked".

use ferrocoll_transports::auth::{JobKey, PROOF_BYTES};

/// Magic of every datagram.
const MAGIC: [u8; 4] = *b"FCHB";
const VERSION: u8 = 2;
const HEADER: usize = 4 + 1 + 1 + 8 + 8 + 4 + 4 + 4;
/// What the tags of datagrams are bound to.
pub(crate) const LABEL: &[u8] = b"ferrocoll heartbeat";
/// Most failed ranks one datagram carries (a datagram stays under 64 KiB).
pub(crate) const MAX_FAILED: usize = 8192;

/// What a datagram says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// "I am alive."
    Heartbeat,
    /// "I revoked this communicator (first revoked by `by`); these ranks failed."
    Revoke { by: usize, failed: Vec<usize> },
    /// "I left this communicator cleanly (it was dropped): do not count me failed."
    Goodbye,
}

/// One datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Datagram {
    pub token: u64,
    /// The sender's sequence number: new for every datagram it sends.
    pub seq: u64,
    pub from: usize,
    pub kind: Kind,
}

impl Datagram {
    /// The datagram's bytes, tagged under `key`.
    pub(crate) fn encode(&self, key: &JobKey) -> Vec<u8> {
        let (k, by, failed): (u8, usize, &[usize]) = match &self.kind {
            Kind::Heartbeat => (1, 0, &[]),
            Kind::Revoke { by, failed } => (2, *by, failed),
            Kind::Goodbye => (3, 0, &[]),
        };
        let failed = &failed[..failed.len().min(MAX_FAILED)];
        let mut b = Vec::with_capacity(HEADER + 4 * failed.len() + PROOF_BYTES);
        b.extend_from_slice(&MAGIC);
        b.push(VERSION);
        b.push(k);
        b.extend_from_slice(&self.token.to_le_bytes());
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.extend_from_slice(&(self.from as u32).to_le_bytes());
        b.extend_from_slice(&(by as u32).to_le_bytes());
        b.extend_from_slice(&(failed.len() as u32).to_le_bytes());
        for &r in failed {
            b.extend_from_slice(&(r as u32).to_le_bytes());
        }
        let tag = key.tag(LABEL, &b);
        b.extend_from_slice(&tag);
        b
    }

    /// Decodes a datagram for a communicator of `world` ranks with key `key`; `Err` says
    /// why it was dropped.
    pub(crate) fn decode(b: &[u8], world: usize, key: &JobKey) -> Result<Datagram, &'static str> {
        if b.len() < HEADER + PROOF_BYTES || b[..4] != MAGIC {
            return Err("not a ferrocoll heartbeat");
        }
        if b[4] != VERSION {
            return Err("unknown heartbeat version");
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        let u64_at = |i: usize| {
            let mut t = [0u8; 8];
            t.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(t)
        };
        let (from, by, n) = (u32_at(22), u32_at(26), u32_at(30));
        if n > MAX_FAILED || b.len() != HEADER + 4 * n + PROOF_BYTES {
            return Err("bad length");
        }
        let (body, tag) = b.split_at(HEADER + 4 * n);
        if !key.verify_tag(LABEL, body, tag) {
            return Err("no valid tag of the communicator's key (another job, or forged)");
        }
        let failed: Vec<usize> = (0..n).map(|i| u32_at(HEADER + 4 * i)).collect();
        if from >= world || by >= world || failed.iter().any(|&r| r >= world) {
            return Err("rank out of range");
        }
        // Heartbeats and goodbyes carry neither a revoker nor failed ranks: one encoding each.
        let kind = match b[5] {
            1 if n == 0 && by == 0 => Kind::Heartbeat,
            2 => Kind::Revoke { by, failed },
            3 if n == 0 && by == 0 => Kind::Goodbye,
            _ => return Err("unknown kind"),
        };
        Ok(Datagram {
            token: u64_at(6),
            seq: u64_at(14),
            from,
            kind,
        })
    }
}

/// Which sequence numbers of one sender were seen: the highest, and the 64 before it as
/// bits (the anti-replay window of IPsec, RFC 4303 §3.4.3). A datagram is accepted once;
/// datagrams reordered within the window are still accepted.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReplayWindow {
    highest: u64,
    /// Bit `i`: `highest - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    /// Whether `seq` is new (and marks it seen). Sequence numbers start at 1.
    pub(crate) fn accept(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = seq;
            return true;
        }
        let back = self.highest - seq;
        if back >= 64 || self.seen & (1 << back) != 0 {
            return false;
        }
        self.seen |= 1 << back;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `heartbeat` fuzz target: a goodbye with a revoker field set decoded, and
    /// encoded back to other bytes. Only the one encoding is accepted now.
    #[test]
    fn a_heartbeat_or_goodbye_with_a_revoker_is_refused() {
        let k = JobKey::new(b"0123456789abcdef");
        for kind in [Kind::Heartbeat, Kind::Goodbye] {
            let d = Datagram {
                token: 7,
                seq: 1,
                from: 1,
                kind,
            };
            let mut b = d.encode(&k);
            b.truncate(b.len() - PROOF_BYTES);
            b[26] = 1;
            let tag = k.tag(LABEL, &b);
            b.extend_from_slice(&tag);
            assert_eq!(Datagram::decode(&b, 4, &k).err(), Some("unknown kind"));
        }
    }

    #[test]
    fn datagrams_round_trip_and_garbage_is_refused() {
        let k = JobKey::new(b"0123456789abcdef");
        let all = [
            Datagram {
                token: 7,
                seq: 1,
                from: 2,
                kind: Kind::Heartbeat,
            },
            Datagram {
                token: u64::MAX,
                seq: u64::MAX,
                from: 0,
                kind: Kind::Revoke {
                    by: 3,
                    failed: vec![1, 3],
                },
            },
            Datagram {
                token: 1,
                seq: 12,
                from: 3,
                kind: Kind::Goodbye,
            },
        ];
        for d in all.clone() {
            let b = d.encode(&k);
            assert_eq!(Datagram::decode(&b, 4, &k), Ok(d.clone()));
            // Every truncation and every extension is refused, never a panic.
            for cut in 0..b.len() {
                assert!(Datagram::decode(&b[..cut], 4, &k).is_err());
            }
            let mut long = b.clone();
            long.push(0);
            assert!(Datagram::decode(&long, 4, &k).is_err());
            // Ranks outside a smaller world are refused.
            assert!(Datagram::decode(&b, 1, &k).is_err() || d.from == 0);
            // Another key, or any flipped bit: no valid tag.
            let other = JobKey::new(b"0123456789abcdeX");
            assert!(Datagram::decode(&b, 4, &other).unwrap_err().contains("tag"));
            for i in 6..b.len() {
                let mut bad = b.clone();
                bad[i] ^= 0x10;
                assert!(Datagram::decode(&bad, 4, &k).is_err(), "byte {i}");
            }
        }
        let mut b = all[0].encode(&k);
        b[4] = 9;
        assert_eq!(
            Datagram::decode(&b, 4, &k),
            Err("unknown heartbeat version")
        );
        let mut d = all[0].encode(&k);
        d.truncate(d.len() - PROOF_BYTES);
        d[5] = 7;
        let t = k.tag(LABEL, &d);
        d.extend_from_slice(&t);
        assert_eq!(Datagram::decode(&d, 4, &k), Err("unknown kind"));
        let mut b = all[1].encode(&k);
        b[30..34].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Datagram::decode(&b, 4, &k), Err("bad length"));
    }

    #[test]
    fn the_replay_window_accepts_each_number_once_and_reordering_within_64() {
        let mut w = ReplayWindow::default();
        assert!(!w.accept(0));
        assert!(w.accept(1) && !w.accept(1));
        assert!(w.accept(5) && w.accept(3) && !w.accept(3) && w.accept(2));
        assert!(w.accept(200) && !w.accept(136) && w.accept(137) && !w.accept(5));
        assert!(!w.accept(200) && w.accept(u64::MAX) && !w.accept(u64::MAX));
    }
}
