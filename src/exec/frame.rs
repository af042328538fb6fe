//! The wire header that opens every message: which collective it belongs to, so that ranks
//! which disagree about the call get [`crate::Error::Mismatch`] instead of corrupt data.

use std::fmt;

use crate::schedule::Collective;
use crate::types::{DataType, ReduceOp};

/// Bytes of an encoded frame header.
pub const FRAME_BYTES: usize = 48;

const MAGIC: u32 = u32::from_le_bytes(*b"FCF2");
/// Flag bit: single-copy message.
const FLAG_SINGLE_COPY: u8 = 1;

/// What a rank is doing: identical on every rank taking part in the same call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpHeader {
    /// The collective.
    pub kind: Collective,
    /// Element type.
    pub dtype: DataType,
    /// Operator (`Sum` where the collective does not reduce).
    pub op: ReduceOp,
    /// Root (sender rank for send/recv).
    pub root: u32,
    /// Element count as the caller gave it.
    pub count: u64,
    /// Sequence number: collectives are numbered per communicator, send/recv per peer pair.
    pub seq: u64,
}

impl fmt::Display for OpHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {}(count={}, {}",
            self.seq, self.kind, self.count, self.dtype
        )?;
        if self.kind.reduces() {
            write!(f, ", {}", self.op)?;
        }
        if self.kind.has_root() {
            write!(f, ", root={}", self.root)?;
        }
        f.write_str(")")
    }
}

/// One message header: the op, the payload length in bytes and, for a single-copy message
/// (see `ferrocoll_transports::link::SingleCopy`), the address the receiver reads the payload
/// from instead of a payload in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The call this message belongs to.
    pub op: OpHeader,
    /// Payload bytes that follow (or, for a single-copy message, that lie at `single_copy`).
    pub len: u64,
    /// Single-copy message: the payload's address in the sender's memory; nothing follows.
    pub single_copy: Option<u64>,
}

impl Frame {
    /// Little-endian encoding.
    pub fn encode(&self) -> [u8; FRAME_BYTES] {
        let mut b = [0u8; FRAME_BYTES];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4] = self.op.kind as u8;
        b[5] = self.op.dtype as u8;
        b[6] = self.op.op as u8;
        b[8..12].copy_from_slice(&self.op.root.to_le_bytes());
        b[12..20].copy_from_slice(&self.op.seq.to_le_bytes());
        b[20..28].copy_from_slice(&self.op.count.to_le_bytes());
        b[28..36].copy_from_slice(&self.len.to_le_bytes());
        if let Some(addr) = self.single_copy {
            b[36] = FLAG_SINGLE_COPY;
            b[40..48].copy_from_slice(&addr.to_le_bytes());
        }
        b
    }

    /// Decodes a header, refusing bad magic and unknown codes.
    pub fn decode(b: &[u8; FRAME_BYTES]) -> Result<Frame, String> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        if u32_at(0) != MAGIC {
            return Err(format!("bad frame magic {:#010x}", u32_at(0)));
        }
        let kind = Collective::from_code(b[4])
            .ok_or_else(|| format!("unknown collective code {}", b[4]))?;
        let dtype = DataType::from_code(b[5] as i64)
            .ok_or_else(|| format!("unknown dtype code {}", b[5]))?;
        let op =
            ReduceOp::from_code(b[6] as i64).ok_or_else(|| format!("unknown op code {}", b[6]))?;
        let single_copy = match b[36] {
            0 => None,
            FLAG_SINGLE_COPY => Some(u64_at(40)),
            f => return Err(format!("unknown frame flags {f:#04x}")),
        };
        Ok(Frame {
            op: OpHeader {
                kind,
                dtype,
                op,
                root: u32_at(8),
                seq: u64_at(12),
                count: u64_at(20),
            },
            len: u64_at(28),
            single_copy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let f = Frame {
            op: OpHeader {
                kind: Collective::Reduce,
                dtype: DataType::BF16,
                op: ReduceOp::Max,
                root: 3,
                count: 1 << 40,
                seq: 7,
            },
            len: 123,
            single_copy: None,
        };
        assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
        let d = Frame {
            single_copy: Some(0x7f00_dead_beef),
            ..f
        };
        assert_eq!(Frame::decode(&d.encode()).unwrap(), d);
        let mut flags = d.encode();
        flags[36] = 0x80;
        assert!(Frame::decode(&flags).unwrap_err().contains("flags"));
        assert!(Frame::decode(&[0u8; FRAME_BYTES]).is_err());
        let mut bad = f.encode();
        bad[5] = 99;
        assert!(Frame::decode(&bad).unwrap_err().contains("dtype"));
        assert_eq!(
            f.op.to_string(),
            "#7 reduce(count=1099511627776, bf16, max, root=3)"
        );
    }
}
