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

pub use crate::config::compression::{Codec, CompressionSetting, COMPRESSION_VAR, DEFAULT_BLOCK};
pub use codec::{chunk_codec, ChunkCodec};
pub use collective::CompressedCollectives;
pub use feedback::ErrorFeedback;
pub use powersgd::PowerSgd;
pub use setting::{auto_codec, auto_link, slowest_link};

use crate::error::{Error, Result};

/// The codec's side of [`Codec`] (defined with the configuration, which reads it from
/// `FERROCOLL_COMPRESSION`).
impl Codec {
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
