//! The chunk-codec trait: encode a chunk of f32 into a number of bytes known up front, and
//! decode it back. One implementation per file; [`chunk_codec`] is the registry.

use super::Codec;
use crate::error::{Error, Result};

/// A codec that compresses a chunk of f32 on its own (every [`Codec`] except `None` and
/// `PowerSgd`, which compresses a whole matrix between two all-reduces).
///
/// Contract: `encode(src, dst)` fills exactly `dst.len() == encoded_len(src.len())` bytes;
/// `decode(src, dst)` accepts bytes of `encoded_len(dst.len())` and is a pure function of
/// them, so every rank decoding the same bytes gets bit-identical f32.
pub trait ChunkCodec: Send + Sync {
    /// Bytes that `n` elements take encoded (a function of `n` only).
    fn encoded_len(&self, n: usize) -> usize;

    /// Whether the codec drops information that error feedback should carry forward.
    fn needs_error_feedback(&self) -> bool;

    /// Chunk lengths that are a multiple of this keep scale blocks (and bit bytes) whole;
    /// the compressed collectives cut tensors at multiples of it.
    fn align(&self) -> usize {
        1
    }

    /// Encodes `src` into `dst` (`dst.len() == self.encoded_len(src.len())`).
    fn encode(&self, src: &[f32], dst: &mut [u8]);

    /// Decodes `src` into `dst` (`src.len() == self.encoded_len(dst.len())`). Fails only on
    /// bytes no encoder produces (top-k's indices out of range, repeated or out of order),
    /// with [`Error::CorruptPayload`](crate::Error::CorruptPayload).
    fn decode(&self, src: &[u8], dst: &mut [f32]) -> Result<()>;

    /// Encodes `x` into `out` (as [`ChunkCodec::encode`]) and replaces every `x[i]` by what
    /// the encoding dropped, `x[i] − decode(out)[i]`, or 0 where that is not finite (error
    /// feedback). `tmp` is scratch space of `x.len()` elements. Codecs override it to do the
    /// work in one pass.
    fn encode_feedback(&self, x: &mut [f32], out: &mut [u8], tmp: &mut [f32]) -> Result<()> {
        self.encode(x, out);
        self.decode(out, tmp)?;
        for (x, d) in x.iter_mut().zip(tmp.iter()) {
            *x = residual(*x, *d);
        }
        Ok(())
    }

    /// Error feedback fused with the gradient: `x = src + res` element by element, encoded
    /// into `out` (as [`ChunkCodec::encode`] of `x`), and `res` replaced by what the encoding
    /// dropped (as [`ChunkCodec::encode_feedback`] of `x`); bit-identical to those two steps.
    /// Codecs override it to do it in one pass over memory; the default allocates scratch.
    fn encode_feedback_add(&self, src: &[f32], res: &mut [f32], out: &mut [u8]) -> Result<()> {
        for (r, s) in res.iter_mut().zip(src) {
            *r += *s;
        }
        let mut tmp = vec![0f32; res.len()];
        self.encode_feedback(res, out, &mut tmp)
    }

    /// `dst += decode(src)`, element by element in f32.
    fn decode_add(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        let mut tmp = vec![0f32; dst.len()];
        self.decode(src, &mut tmp)?;
        for (d, t) in dst.iter_mut().zip(&tmp) {
            *d += t;
        }
        Ok(())
    }
}

/// The chunk codec of `codec` (validated first); `None` and `PowerSgd` have none.
pub fn chunk_codec(codec: Codec) -> Result<Box<dyn ChunkCodec>> {
    codec.validate()?;
    Ok(match codec {
        Codec::Fp16 => Box::new(super::fp16::Fp16),
        Codec::Bf16 => Box::new(super::bf16::Bf16),
        Codec::Fp8E4M3 { block } => Box::new(super::fp8::BlockFp8::e4m3(block)),
        Codec::Fp8E5M2 { block } => Box::new(super::fp8::BlockFp8::e5m2(block)),
        Codec::TopK { fraction } => Box::new(super::topk::TopK::new(fraction)),
        Codec::OneBit { block } => Box::new(super::onebit::OneBit::new(block)),
        Codec::None | Codec::PowerSgd { .. } => {
            return Err(Error::InvalidCodec {
                codec: codec.to_string(),
                reason: "not a chunk codec".into(),
            })
        }
    })
}

/// Little-endian f32 access to byte buffers and the error-feedback residual rule, shared
/// with the fp8 block kernels (which sit below `compress`).
pub(super) use crate::fp8::block::{get_f32, put_f32, residual};
