//! The block-scaled fp8 codec (E4M3 or E5M2): the [`ChunkCodec`] face of the kernels of
//! `crate::fp8::block`, whose documentation gives the layout, the error bound and the
//! handling of non-finite values. Layout of `n` elements: `ceil(n / block)` little-endian f32
//! scales, then `n` codes.

use super::codec::ChunkCodec;
use crate::error::Result;
use crate::fp8::block::BlockScaled;

/// The block-scaled fp8 codec.
#[derive(Clone, Copy, Debug)]
pub(super) struct BlockFp8(BlockScaled);

impl BlockFp8 {
    /// E4M3 with `block` elements per scale (`block ≥ 1`).
    pub(super) fn e4m3(block: usize) -> BlockFp8 {
        BlockFp8(BlockScaled::e4m3(block))
    }

    /// E5M2 with `block` elements per scale (`block ≥ 1`).
    pub(super) fn e5m2(block: usize) -> BlockFp8 {
        BlockFp8(BlockScaled::e5m2(block))
    }
}

impl ChunkCodec for BlockFp8 {
    fn encoded_len(&self, n: usize) -> usize {
        self.0.encoded_len(n)
    }

    fn needs_error_feedback(&self) -> bool {
        true
    }

    fn align(&self) -> usize {
        self.0.block()
    }

    fn encode(&self, src: &[f32], dst: &mut [u8]) {
        self.0.encode(src, dst)
    }

    fn encode_feedback(&self, x: &mut [f32], out: &mut [u8], _tmp: &mut [f32]) -> Result<()> {
        self.0.encode_feedback(x, out);
        Ok(())
    }

    fn encode_feedback_add(&self, src: &[f32], res: &mut [f32], out: &mut [u8]) -> Result<()> {
        self.0.encode_feedback_add(src, res, out);
        Ok(())
    }

    fn decode(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        self.0.decode(src, dst);
        Ok(())
    }

    fn decode_add(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        self.0.decode_add(src, dst);
        Ok(())
    }
}
