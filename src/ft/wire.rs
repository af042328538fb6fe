//! The detector's datagrams (all integers little-endian):
//!
//! `"FCHB"`, version (u8, 1), kind (u8: 1 heartbeat, 2 revoke, 3 goodbye), the
//! communicator's token (u64), sender rank (u32), revoking rank (u32), count (u32) and that
//! many failed ranks (u32 each; only a revoke carries any).
//!
//! A datagram that is short, long, of another version or communicator, or names a rank
//! outside the world is dropped (counted, and logged once per detector): a datagram is never
//! trusted beyond "a rank of this communicator is alive / says it revoked".

/// Magic of every datagram.
const MAGIC: [u8; 4] = *b"FCHB";
const VERSION: u8 = 1;
const HEADER: usize = 4 + 1 + 1 + 8 + 4 + 4 + 4;
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
    pub from: usize,
    pub kind: Kind,
}

impl Datagram {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (k, by, failed): (u8, usize, &[usize]) = match &self.kind {
            Kind::Heartbeat => (1, 0, &[]),
            Kind::Revoke { by, failed } => (2, *by, failed),
            Kind::Goodbye => (3, 0, &[]),
        };
        let failed = &failed[..failed.len().min(MAX_FAILED)];
        let mut b = Vec::with_capacity(HEADER + 4 * failed.len());
        b.extend_from_slice(&MAGIC);
        b.push(VERSION);
        b.push(k);
        b.extend_from_slice(&self.token.to_le_bytes());
        b.extend_from_slice(&(self.from as u32).to_le_bytes());
        b.extend_from_slice(&(by as u32).to_le_bytes());
        b.extend_from_slice(&(failed.len() as u32).to_le_bytes());
        for &r in failed {
            b.extend_from_slice(&(r as u32).to_le_bytes());
        }
        b
    }

    /// Decodes a datagram for a communicator of `world` ranks; `Err` says why it was dropped.
    pub(crate) fn decode(b: &[u8], world: usize) -> Result<Datagram, &'static str> {
        if b.len() < HEADER || b[..4] != MAGIC {
            return Err("not a ferrocoll heartbeat");
        }
        if b[4] != VERSION {
            return Err("unknown heartbeat version");
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[6..14]);
        let (from, by, n) = (u32_at(14), u32_at(18), u32_at(22));
        if n > MAX_FAILED || b.len() != HEADER + 4 * n {
            return Err("bad length");
        }
        let failed: Vec<usize> = (0..n).map(|i| u32_at(HEADER + 4 * i)).collect();
        if from >= world || by >= world || failed.iter().any(|&r| r >= world) {
            return Err("rank out of range");
        }
        let kind = match b[5] {
            1 if n == 0 => Kind::Heartbeat,
            2 => Kind::Revoke { by, failed },
            3 if n == 0 => Kind::Goodbye,
            _ => return Err("unknown kind"),
        };
        Ok(Datagram {
            token: u64::from_le_bytes(t),
            from,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_round_trip_and_garbage_is_refused() {
        let all = [
            Datagram {
                token: 7,
                from: 2,
                kind: Kind::Heartbeat,
            },
            Datagram {
                token: u64::MAX,
                from: 0,
                kind: Kind::Revoke {
                    by: 3,
                    failed: vec![1, 3],
                },
            },
            Datagram {
                token: 1,
                from: 3,
                kind: Kind::Goodbye,
            },
        ];
        for d in all.clone() {
            let b = d.encode();
            assert_eq!(Datagram::decode(&b, 4), Ok(d.clone()));
            // Every truncation and every extension is refused, never a panic.
            for cut in 0..b.len() {
                assert!(Datagram::decode(&b[..cut], 4).is_err());
            }
            let mut long = b.clone();
            long.push(0);
            assert!(Datagram::decode(&long, 4).is_err());
            // Ranks outside a smaller world are refused.
            assert!(Datagram::decode(&b, 1).is_err() || d.from == 0);
        }
        let mut b = all[0].encode();
        b[4] = 9;
        assert_eq!(Datagram::decode(&b, 4), Err("unknown heartbeat version"));
        let mut b = all[0].encode();
        b[5] = 7;
        assert_eq!(Datagram::decode(&b, 4), Err("unknown kind"));
        let mut b = all[1].encode();
        b[22..26].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Datagram::decode(&b, 4), Err("bad length"));
    }
}
