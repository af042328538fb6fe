//! Gradient compression inside the collective, with error feedback.
//!
//! When the links are slow, the fastest byte is the one not sent. A [`Codec`] says how an f32
//! gradient is compressed on the wire; the compressed collectives of
//! [`CompressedCollectives`] run on top of the public [`Communicator`](crate::Communicator)
//! API:
//!
//! - **quantising codecs** (fp16, bf16, fp8 e4m3/e5m2 with one f32 scale per block, 1-bit
//!   sign with one scale per block): a compressed reduce-scatter — every rank encodes its
//!   per-destination chunks, the encoded bytes are exchanged with one `all_to_all` on `u8`
//!   (the codec declares its encoded size up front, so every chunk has the same length), the
//!   owner decodes them and sums in f32 with its own chunk (not quantised) — then the owner
//!   encodes its reduced shard once and the bytes are all-gathered; every rank decodes the
//!   same bytes, so the result is bit-identical everywhere and each contribution is
//!   quantised at most twice;
//! - **top-k**: each rank's largest-magnitude fraction (values + indices) is all-gathered and
//!   every rank sums the sparse parts in rank order;
//! - **PowerSGD** (2-D gradients): all-reduces of the low-rank factors P and Q, Q warm-started
//!   from the previous step.
//!
//! The tensor is cut into segments; several segments' `all_to_all`/`all_gather` are in flight
//! while the next segment is encoded, so encoding overlaps the transfer.
//!
//! **Error feedback** ([`ErrorFeedback`]): what a lossy codec dropped is kept per tensor (a
//! key the caller passes) and added to the next step's gradient — on the sender (worker) and,
//! for the re-encoded reduced shard, on its owner (server), as in 1-bit Adam. Keys are never
//! shared by accident: a key used for another length, shape, codec or world is an
//! [`Error::FeedbackMismatch`].
//!
//! **Non-finite values.** Compression never turns a NaN or an infinity into an ordinary
//! number silently: block scales are taken over the finite elements (fp8), so a NaN stays NaN,
//! an infinity stays infinite (e5m2, fp16, bf16) or becomes NaN (e4m3, which has no
//! infinity), and the other elements of the block keep their precision; a 1-bit block whose
//! elements include a non-finite one decodes to non-finite values; top-k always sends
//! non-finite values (they rank above every finite magnitude); in PowerSGD a non-finite
//! element makes the whole matrix non-finite. Residuals of non-finite results are set to 0,
//! so one bad step does not poison the following ones.
//!
//! **Configuration.** `FERROCOLL_COMPRESSION=none|fp16|bf16|fp8|fp8e5m2|topk:0.01|onebit|
//! powersgd:4|auto` (see [`CompressionSetting`]); `fp8:64`, `fp8e5m2:64`, `onebit:64` set the
//! block size. `auto` is opt-in (compression is lossy) and picks a codec with
//! [`auto_codec`] from the slowest link between the communicator's hosts ([`auto_link`]; a
//! communicator on one host stays uncompressed).

mod bf16;
mod codec;
mod collective;
mod feedback;
mod fp16;
mod fp8;
mod onebit;
mod powersgd;
mod setting;
mod topk;

pub use codec::{chunk_codec, ChunkCodec};
pub use collective::CompressedCollectives;
pub use feedback::ErrorFeedback;
pub use powersgd::PowerSgd;
pub use setting::{auto_codec, auto_link, slowest_link, CompressionSetting, COMPRESSION_VAR};

use crate::error::{Error, Result};

/// Default elements per scale block of the fp8 and 1-bit codecs (DeepSeek-V3's fine-grained
/// scaling uses 128).
pub const DEFAULT_BLOCK: usize = 128;

/// How gradients are compressed on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Codec {
    /// No compression: a plain f32 all-reduce.
    None,
    /// IEEE half precision (2 bytes/element); beyond ±65504 becomes ±infinity.
    Fp16,
    /// bfloat16 (2 bytes/element), round to nearest even.
    Bf16,
    /// OCP fp8 E4M3 with one f32 scale per `block` elements (≈1 byte/element).
    Fp8E4M3 {
        /// Elements per scale.
        block: usize,
    },
    /// OCP fp8 E5M2 with one f32 scale per `block` elements (≈1 byte/element).
    Fp8E5M2 {
        /// Elements per scale.
        block: usize,
    },
    /// The `fraction` (0 < fraction ≤ 1) largest-magnitude elements, as values and indices
    /// (8 bytes per kept element).
    TopK {
        /// Fraction of the elements kept.
        fraction: f64,
    },
    /// The sign of each element (1 bit) and one f32 scale (mean magnitude) per `block`.
    OneBit {
        /// Elements per scale.
        block: usize,
    },
    /// PowerSGD: a rank-`rank` approximation P·Qᵀ of a 2-D gradient.
    PowerSgd {
        /// Rank of the approximation.
        rank: usize,
    },
}

impl Codec {
    /// Whether the codec drops information that error feedback should carry to the next
    /// step (every codec but `None`, `Fp16` and `Bf16`).
    pub fn needs_error_feedback(&self) -> bool {
        !matches!(self, Codec::None | Codec::Fp16 | Codec::Bf16)
    }

    /// Checks the parameters: blocks ≥ 1, 0 < fraction ≤ 1, rank ≥ 1.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: &str| {
            Err(Error::InvalidCodec {
                codec: self.to_string(),
                reason: reason.into(),
            })
        };
        match *self {
            Codec::Fp8E4M3 { block } | Codec::Fp8E5M2 { block } | Codec::OneBit { block }
                if block == 0 =>
            {
                bad("block size must be at least 1")
            }
            Codec::TopK { fraction } if fraction.is_nan() || fraction <= 0.0 || fraction > 1.0 => {
                bad("fraction k must be in (0, 1]")
            }
            Codec::PowerSgd { rank: 0 } => bad("rank must be at least 1"),
            _ => Ok(()),
        }
    }

    /// Bytes that `n` f32 elements take on the wire (uncompressed f32 for `None`). For
    /// PowerSGD use [`PowerSgd::encoded_len`], which needs the matrix shape.
    pub fn encoded_len(&self, n: usize) -> Result<usize> {
        match self {
            Codec::None => Ok(4 * n),
            Codec::PowerSgd { .. } => Err(Error::InvalidCodec {
                codec: self.to_string(),
                reason: "the encoded size depends on the matrix shape (PowerSgd::encoded_len)"
                    .into(),
            }),
            _ => Ok(chunk_codec(*self)?.encoded_len(n)),
        }
    }
}

impl std::fmt::Display for Codec {
    /// The `FERROCOLL_COMPRESSION` spelling (blocks other than the default are shown).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let block = |f: &mut std::fmt::Formatter<'_>, name: &str, b: usize| {
            if b == DEFAULT_BLOCK {
                write!(f, "{name}")
            } else {
                write!(f, "{name}:{b}")
            }
        };
        match *self {
            Codec::None => write!(f, "none"),
            Codec::Fp16 => write!(f, "fp16"),
            Codec::Bf16 => write!(f, "bf16"),
            Codec::Fp8E4M3 { block: b } => block(f, "fp8", b),
            Codec::Fp8E5M2 { block: b } => block(f, "fp8e5m2", b),
            Codec::TopK { fraction } => write!(f, "topk:{fraction}"),
            Codec::OneBit { block: b } => block(f, "onebit", b),
            Codec::PowerSgd { rank } => write!(f, "powersgd:{rank}"),
        }
    }
}

impl std::str::FromStr for Codec {
    type Err = Error;

    /// Parses `none|fp16|bf16|fp8[:BLOCK]|fp8e4m3[:BLOCK]|fp8e5m2[:BLOCK]|topk:FRACTION|
    /// onebit[:BLOCK]|powersgd:RANK` (not `auto`: see [`CompressionSetting`]).
    fn from_str(s: &str) -> Result<Codec> {
        let s = s.trim().to_ascii_lowercase();
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s.as_str(), None),
        };
        let bad = |reason: String| Error::InvalidCodec {
            codec: s.clone(),
            reason,
        };
        let block = || -> Result<usize> {
            arg.map_or(Ok(DEFAULT_BLOCK), |a| {
                a.parse()
                    .map_err(|_| bad(format!("block size {a:?} is not a whole number")))
            })
        };
        let codec = match (name, arg) {
            ("none", None) => Codec::None,
            ("fp16", None) => Codec::Fp16,
            ("bf16", None) => Codec::Bf16,
            ("fp8" | "fp8e4m3", _) => Codec::Fp8E4M3 { block: block()? },
            ("fp8e5m2", _) => Codec::Fp8E5M2 { block: block()? },
            ("onebit", _) => Codec::OneBit { block: block()? },
            ("topk", Some(a)) => Codec::TopK {
                fraction: a
                    .parse()
                    .map_err(|_| bad(format!("fraction {a:?} is not a number")))?,
            },
            ("powersgd", Some(a)) => Codec::PowerSgd {
                rank: a
                    .parse()
                    .map_err(|_| bad(format!("rank {a:?} is not a whole number")))?,
            },
            ("topk", None) => return Err(bad("top-k needs a fraction, e.g. topk:0.01".into())),
            ("powersgd", None) => return Err(bad("PowerSGD needs a rank, e.g. powersgd:4".into())),
            _ => {
                return Err(bad(
                    "expected none, fp16, bf16, fp8, fp8e5m2, topk:F, onebit, powersgd:R".into(),
                ))
            }
        };
        codec.validate()?;
        Ok(codec)
    }
}
