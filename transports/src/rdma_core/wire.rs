//! What goes over the wire: the 32-bit immediate data of every write, the setup hello, and
//! the single-copy announcement record. All integers little-endian.

use crate::auth::JobKey;

/// Kinds of immediate data (bits 29..31).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Imm {
    /// Stream bytes in receive slot `slot`, `len` of them.
    Data { slot: u32, len: u32 },
    /// A single-copy announcement ([`Announce`]) in receive slot `slot`.
    Announce { slot: u32 },
    /// The peer consumed `n` more of our slots in its receive ring.
    Credit { n: u32 },
    /// The peer acknowledged `n` more of our single-copy announcements.
    Ack { n: u32 },
    /// The peer closed its side.
    Close,
}

/// Largest slot index + 1 that fits the encoding.
pub(crate) const MAX_SLOTS: usize = 1 << 8;
/// Largest slot length + 1 that fits the encoding.
pub(crate) const MAX_SLOT_BYTES: usize = 1 << 21;
/// Largest count of a credit or ack message.
pub(crate) const MAX_COUNT: u32 = (1 << 29) - 1;

impl Imm {
    pub(crate) fn encode(self) -> u32 {
        match self {
            Imm::Data { slot, len } => 1 << 29 | slot << 21 | len,
            Imm::Announce { slot } => 2 << 29 | slot << 21,
            Imm::Credit { n } => 3 << 29 | n,
            Imm::Ack { n } => 4 << 29 | n,
            Imm::Close => 5 << 29,
        }
    }

    pub(crate) fn decode(v: u32) -> Option<Imm> {
        let slot = (v >> 21) & 0xff;
        let low = v & ((1 << 29) - 1);
        Some(match v >> 29 {
            1 => Imm::Data {
                slot,
                len: v & (MAX_SLOT_BYTES as u32 - 1),
            },
            2 => Imm::Announce { slot },
            3 => Imm::Credit { n: low },
            4 => Imm::Ack { n: low },
            5 => Imm::Close,
            _ => return None,
        })
    }
}

/// First bytes of a hello.
pub(crate) const HELLO_MAGIC: [u8; 4] = *b"FCRD";
/// Protocol version of the RDMA core; both ends must agree.
pub(crate) const PROTOCOL_VERSION: u32 = 2;
/// Length of a hello's body (what the tag covers).
const HELLO_BODY: usize = 64;
/// Length of a hello: its body and the tag under the job key.
pub(crate) const HELLO_LEN: usize = HELLO_BODY + crate::auth::PROOF_BYTES;
/// What a hello's tag is bound to (with its sender and receiver).
const HELLO_LABEL: &[u8] = b"ferrocoll rdma hello";

/// The label of the tag on a hello from `from` to `to`.
fn hello_label(from: u32, to: u32) -> Vec<u8> {
    let mut l = HELLO_LABEL.to_vec();
    l.extend_from_slice(&from.to_le_bytes());
    l.extend_from_slice(&to.to_le_bytes());
    l
}

/// One side's hello to one peer: who it is, and where the peer may write. It carries a tag
/// under the job key bound to its sender and receiver: the remote keys it hands out grant
/// writes into this process's memory, so only a holder of the key may hand them out. Its
/// freshness comes from the key and the addresses, both drawn anew for every job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) token: u64,
    pub(crate) rank: u32,
    pub(crate) world: u32,
    pub(crate) slots: u32,
    pub(crate) slot_bytes: u32,
    /// The receive ring for the peer's stream (remote address, key).
    pub(crate) ring_addr: u64,
    pub(crate) ring_key: u64,
    /// The control word the peer's credit/ack/close writes land on.
    pub(crate) ctrl_addr: u64,
    pub(crate) ctrl_key: u64,
}

impl Hello {
    /// The hello for rank `to`, tagged under `key`.
    pub(crate) fn encode(&self, key: &JobKey, to: u32) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[0..4].copy_from_slice(&HELLO_MAGIC);
        b[4..8].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.token.to_le_bytes());
        b[16..20].copy_from_slice(&self.rank.to_le_bytes());
        b[20..24].copy_from_slice(&self.world.to_le_bytes());
        b[24..28].copy_from_slice(&self.slots.to_le_bytes());
        b[28..32].copy_from_slice(&self.slot_bytes.to_le_bytes());
        b[32..40].copy_from_slice(&self.ring_addr.to_le_bytes());
        b[40..48].copy_from_slice(&self.ring_key.to_le_bytes());
        b[48..56].copy_from_slice(&self.ctrl_addr.to_le_bytes());
        b[56..64].copy_from_slice(&self.ctrl_key.to_le_bytes());
        let tag = key.tag(&hello_label(self.rank, to), &b[..HELLO_BODY]);
        b[HELLO_BODY..].copy_from_slice(&tag);
        b
    }

    /// Parses a hello to rank `me` and checks it belongs to this job (`token`, `world`, a
    /// tag under `key`); returns it or what is wrong.
    pub(crate) fn decode(
        b: &[u8],
        token: u64,
        world: usize,
        key: &JobKey,
        me: u32,
    ) -> Result<Hello, String> {
        if b.len() != HELLO_LEN {
            return Err(format!("hello of {} bytes, expected {HELLO_LEN}", b.len()));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut t = [0u8; 8];
            t.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(t)
        };
        if b[0..4] != HELLO_MAGIC {
            return Err(format!("bad magic {:02x?}", &b[0..4]));
        }
        if u32_at(4) != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version {}, expected {PROTOCOL_VERSION}",
                u32_at(4)
            ));
        }
        let h = Hello {
            token: u64_at(8),
            rank: u32_at(16),
            world: u32_at(20),
            slots: u32_at(24),
            slot_bytes: u32_at(28),
            ring_addr: u64_at(32),
            ring_key: u64_at(40),
            ctrl_addr: u64_at(48),
            ctrl_key: u64_at(56),
        };
        if h.token != token {
            return Err("wrong job token (another job?)".into());
        }
        if !key.verify_tag(&hello_label(h.rank, me), &b[..HELLO_BODY], &b[HELLO_BODY..]) {
            return Err(format!(
                "a hello that says it is from rank {} without a valid tag of the job's key \
                 (another job's process, or a forged hello)",
                h.rank
            ));
        }
        if h.world as usize != world {
            return Err(format!("world size {}, expected {world}", h.world));
        }
        if h.slots == 0 || h.slots as usize > MAX_SLOTS {
            return Err(format!("{} receive slots", h.slots));
        }
        if h.slot_bytes == 0 || h.slot_bytes as usize >= MAX_SLOT_BYTES {
            return Err(format!("receive slots of {} bytes", h.slot_bytes));
        }
        Ok(h)
    }
}

/// Length of a single-copy announcement.
pub(crate) const ANNOUNCE_LEN: usize = 32;

/// A single-copy announcement: the sender's buffer, as the receiver may RDMA-read it.
/// `len == 0` means the sender could not register it (the receiver's read fails).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Announce {
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) remote_addr: u64,
    pub(crate) rkey: u64,
}

impl Announce {
    pub(crate) fn encode(&self) -> [u8; ANNOUNCE_LEN] {
        let mut b = [0u8; ANNOUNCE_LEN];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..24].copy_from_slice(&self.remote_addr.to_le_bytes());
        b[24..32].copy_from_slice(&self.rkey.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; ANNOUNCE_LEN]) -> Announce {
        let u64_at = |i: usize| {
            let mut t = [0u8; 8];
            t.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(t)
        };
        Announce {
            addr: u64_at(0),
            len: u64_at(8),
            remote_addr: u64_at(16),
            rkey: u64_at(24),
        }
    }

    /// Whether `[addr, addr + len)` lies inside the announced buffer.
    pub(crate) fn covers(&self, addr: u64, len: usize) -> bool {
        addr >= self.addr
            && addr
                .checked_add(len as u64)
                .is_some_and(|end| end <= self.addr.saturating_add(self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imm_round_trips() {
        for imm in [
            Imm::Data {
                slot: 255,
                len: MAX_SLOT_BYTES as u32 - 1,
            },
            Imm::Data { slot: 0, len: 1 },
            Imm::Announce { slot: 7 },
            Imm::Credit { n: MAX_COUNT },
            Imm::Ack { n: 3 },
            Imm::Close,
        ] {
            assert_eq!(Imm::decode(imm.encode()), Some(imm));
        }
        assert_eq!(Imm::decode(0), None);
        assert_eq!(Imm::decode(6 << 29), None);
    }

    #[test]
    fn hello_checks_job() {
        let h = Hello {
            token: 42,
            rank: 1,
            world: 3,
            slots: 16,
            slot_bytes: 1 << 16,
            ring_addr: 1,
            ring_key: 2,
            ctrl_addr: 3,
            ctrl_key: 4,
        };
        let k = JobKey::new(b"0123456789abcdef");
        let b = h.encode(&k, 2);
        assert_eq!(Hello::decode(&b, 42, 3, &k, 2), Ok(h));
        assert!(Hello::decode(&b, 43, 3, &k, 2)
            .unwrap_err()
            .contains("token"));
        assert!(Hello::decode(&b, 42, 4, &k, 2)
            .unwrap_err()
            .contains("world"));
        assert!(Hello::decode(&b[..10], 42, 3, &k, 2).is_err());
        let mut bad = b;
        bad[0] = b'X';
        assert!(Hello::decode(&bad, 42, 3, &k, 2)
            .unwrap_err()
            .contains("magic"));
        // Another key, another receiver, or a changed byte: no valid tag.
        let other = JobKey::new(b"0123456789abcdeX");
        assert!(Hello::decode(&b, 42, 3, &other, 2)
            .unwrap_err()
            .contains("tag"));
        assert!(Hello::decode(&b, 42, 3, &k, 0).unwrap_err().contains("tag"));
        let mut bad = b;
        bad[40] ^= 1; // the ring key
        assert!(Hello::decode(&bad, 42, 3, &k, 2)
            .unwrap_err()
            .contains("tag"));
    }

    #[test]
    fn announce_covers() {
        let a = Announce {
            addr: 1000,
            len: 100,
            remote_addr: 0,
            rkey: 0,
        };
        assert_eq!(Announce::decode(&a.encode()), a);
        assert!(a.covers(1000, 100));
        assert!(a.covers(1050, 50));
        assert!(!a.covers(1050, 51));
        assert!(!a.covers(999, 1));
        assert!(!a.covers(u64::MAX, 2));
    }
}
