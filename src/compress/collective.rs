//! Compressed collectives on top of the public [`Communicator`] API.
//!
//! Vocabulary. The tensor of `n` elements is cut into *segments* of `world` *chunks* of `c`
//! elements each (`c` a multiple of the codec's alignment, so scale blocks stay whole; the
//! chunks past the end of the tensor are zero padding). Chunk `j` of every segment belongs to
//! rank `j`. `e = encoded_len(c)` bytes per encoded chunk.
//!
//! All-reduce with a quantising codec, per segment:
//! 1. *encode*: every rank encodes the chunks of the other ranks (plus its worker residual)
//!    into `world · e` bytes (its own slot unused) and starts an `all_to_all` of them;
//! 2. *reduce*: rank `j` takes its own chunk exactly (gradient plus residual), adds the
//!    decoded chunks of the other ranks in rank order in f32, adds its server residual,
//!    encodes the sum once and starts an `all_gather` of the `e` bytes;
//! 3. *decode*: every rank decodes every gathered chunk — the same bytes everywhere, so the
//!    result is bit-identical on every rank.
//!
//! The three stages run on different segments at once: while segment `s` is being encoded,
//! the `all_to_all` of `s − 1` and the `all_gather` of `s − 2` are in flight (the engine's
//! background thread drives them), so encoding overlaps the transfer. Every rank starts the
//! same operations in the same order, as the communicator requires.
//!
//! Top-k all-reduces by all-gathering each rank's sparse part per segment and summing the
//! parts in rank order on every rank; PowerSGD is in [`super::powersgd`].

use std::collections::VecDeque;
use std::ops::Range;

use super::codec::{chunk_codec, ChunkCodec};
use super::feedback::{Entry, ErrorFeedback};
use super::{powersgd, Codec};
use crate::comm::{Communicator, Work};
use crate::error::{Error, Result};
use crate::types::ReduceOp;

/// Default elements per segment of a compressed collective.
pub(super) const DEFAULT_SEGMENT_ELEMS: usize = 1 << 20;

/// Segments between two pipeline stages (how far the transfer runs ahead of encoding).
const LAG: usize = 1;

/// Compressed collectives of a [`Communicator`] (see the module docs of
/// [`crate::compress`]). Results are sums over the ranks, like `ReduceOp::Sum`; divide by
/// the world size for an average.
pub trait CompressedCollectives {
    /// Sums `grads` over the ranks through `codec`, in place; bit-identical on every rank.
    /// `key` names this tensor's error-feedback state in `ef`. `Codec::PowerSgd` needs a
    /// matrix: use [`CompressedCollectives::all_reduce_compressed_2d`].
    fn all_reduce_compressed(
        &self,
        grads: &mut [f32],
        ef: &mut ErrorFeedback,
        key: &str,
        codec: Codec,
    ) -> Result<()>;

    /// [`CompressedCollectives::all_reduce_compressed`] for a row-major matrix of `rows`
    /// rows (`grads.len()` a multiple of `rows`); PowerSGD compresses it as a matrix, the
    /// other codecs as a vector.
    fn all_reduce_compressed_2d(
        &self,
        grads: &mut [f32],
        rows: usize,
        ef: &mut ErrorFeedback,
        key: &str,
        codec: Codec,
    ) -> Result<()>;

    /// Compressed reduce-scatter: `input` holds `world` chunks of `output.len()` elements;
    /// chunk `j` of every rank is encoded (with worker error feedback), sent to rank `j`,
    /// decoded and summed in f32 into its `output`.
    fn reduce_scatter_compressed(
        &self,
        input: &[f32],
        output: &mut [f32],
        ef: &mut ErrorFeedback,
        key: &str,
        codec: Codec,
    ) -> Result<()>;

    /// Compressed all-gather: every rank's `input` is encoded once (no error feedback: the
    /// data is gathered, not summed) and every rank decodes all of them into `output`
    /// (`world · input.len()` elements), bit-identical on every rank.
    fn all_gather_compressed(&self, input: &[f32], output: &mut [f32], codec: Codec) -> Result<()>;
}

fn not_empty(what: &'static str, len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::BufferTooSmall {
            buffer: what,
            needed: 1,
            got: 0,
        });
    }
    Ok(())
}

fn needs_matrix(codec: Codec) -> Error {
    Error::InvalidCodec {
        codec: codec.to_string(),
        reason: "PowerSGD compresses 2-D gradients: use all_reduce_compressed_2d".into(),
    }
}

impl CompressedCollectives for Communicator {
    fn all_reduce_compressed(
        &self,
        grads: &mut [f32],
        ef: &mut ErrorFeedback,
        key: &str,
        codec: Codec,
    ) -> Result<()> {
        if let Codec::PowerSgd { .. } = codec {
            return Err(needs_matrix(codec));
        }
        all_reduce(self, grads, None, ef, key, codec)
    }

    fn all_reduce_compressed_2d(
        &self,
        grads: &mut [f32],
        rows: usize,
        ef: &mut ErrorFeedback,
        key: &str,
        codec: Codec,
    ) -> Result<()> {
        if rows == 0 || grads.len() % rows != 0 {
            return Err(Error::Indivisible {
                len: grads.len(),
                world: rows,
            });
        }
        all_reduce(
            self,
            grads,
            Some((rows, grads.len() / rows)),
            ef,
            key,
            codec,
        )
    }

    fn reduce_scatter_compressed(
        &self,
        input: &[f32],
        output: &mut [f32],
        ef: &mut ErrorFeedback,
        key: &str,
        codec: Codec,
    ) -> Result<()> {
        codec.validate()?;
        not_empty("output", output.len())?;
        let (w, m) = (self.world_size(), output.len());
        if input.len() != w * m {
            return Err(Error::Indivisible {
                len: input.len(),
                world: w,
            });
        }
        if codec == Codec::None {
            return self.reduce_scatter(input, output, ReduceOp::Sum);
        }
        if let Codec::PowerSgd { .. } = codec {
            return Err(needs_matrix(codec));
        }
        let cc = chunk_codec(codec)?;
        let use_ef = ef.is_enabled() && cc.needs_error_feedback();
        let entry = ef.entry(key, codec, input.len(), None, w)?;
        let e = cc.encoded_len(m);
        let mut send = vec![0u8; w * e];
        let mut scratch = Scratch::new(m);
        for j in 0..w {
            let r = j * m..(j + 1) * m;
            let res = use_ef.then(|| &mut entry.worker[r.clone()]);
            scratch.encode(&*cc, &input[r], res, &mut send[j * e..(j + 1) * e])?;
        }
        let mut recv = vec![0u8; w * e];
        self.all_to_all(&send, &mut recv)?;
        output.fill(0.0);
        for j in 0..w {
            cc.decode_add(&recv[j * e..(j + 1) * e], output)?;
        }
        Ok(())
    }

    fn all_gather_compressed(&self, input: &[f32], output: &mut [f32], codec: Codec) -> Result<()> {
        codec.validate()?;
        not_empty("input", input.len())?;
        let (w, m) = (self.world_size(), input.len());
        if output.len() < w * m {
            return Err(Error::BufferTooSmall {
                buffer: "output",
                needed: w * m,
                got: output.len(),
            });
        }
        if codec == Codec::None {
            return self.all_gather(input, output);
        }
        if let Codec::PowerSgd { .. } = codec {
            return Err(Error::InvalidCodec {
                codec: codec.to_string(),
                reason: "PowerSGD compresses sums of gradients, not gathered data".into(),
            });
        }
        let cc = chunk_codec(codec)?;
        let e = cc.encoded_len(m);
        let mut send = vec![0u8; e];
        cc.encode(input, &mut send);
        let mut recv = vec![0u8; w * e];
        self.all_gather(&send, &mut recv)?;
        for j in 0..w {
            cc.decode(&recv[j * e..(j + 1) * e], &mut output[j * m..(j + 1) * m])?;
        }
        Ok(())
    }
}

fn all_reduce(
    comm: &Communicator,
    grads: &mut [f32],
    shape: Option<(usize, usize)>,
    ef: &mut ErrorFeedback,
    key: &str,
    codec: Codec,
) -> Result<()> {
    codec.validate()?;
    not_empty("grads", grads.len())?;
    if codec == Codec::None {
        return comm.all_reduce(grads, ReduceOp::Sum);
    }
    if let (Codec::PowerSgd { rank }, Some((rows, cols))) = (codec, shape) {
        powersgd::PowerSgd::check(rows, cols, rank)?;
    }
    let (enabled, seg) = (ef.is_enabled(), ef.segment_elems);
    let entry = ef.entry(key, codec, grads.len(), shape, comm.world_size())?;
    match (codec, shape) {
        (Codec::PowerSgd { rank }, Some((rows, cols))) => {
            powersgd::all_reduce(comm, grads, rows, cols, rank, entry, enabled)
        }
        (Codec::PowerSgd { .. }, None) => Err(needs_matrix(codec)),
        (Codec::TopK { .. }, _) => {
            let cc = chunk_codec(codec)?;
            sparse_all_reduce(comm, grads, &*cc, entry, enabled, seg)
        }
        _ => {
            let cc = chunk_codec(codec)?;
            let use_ef = enabled && cc.needs_error_feedback();
            quantised_all_reduce(comm, grads, &*cc, use_ef.then_some(entry), seg)
        }
    }
}

/// Work buffers for encoding one chunk.
struct Scratch {
    x: Vec<f32>,
    d: Vec<f32>,
}

impl Scratch {
    fn new(c: usize) -> Scratch {
        Scratch {
            x: vec![0.0; c],
            d: vec![0.0; c],
        }
    }

    /// Encodes `src` (+ `res`), zero-padded to the chunk length, into `out`; with `res`,
    /// stores what the encoding dropped back into it.
    fn encode(
        &mut self,
        cc: &dyn ChunkCodec,
        src: &[f32],
        res: Option<&mut [f32]>,
        out: &mut [u8],
    ) -> Result<()> {
        let m = src.len();
        self.x[..m].copy_from_slice(src);
        self.x[m..].fill(0.0);
        match res {
            None => cc.encode(&self.x, out),
            Some(r) => {
                for (x, r) in self.x.iter_mut().zip(r.iter()) {
                    *x += r;
                }
                cc.encode_feedback(&mut self.x, out, &mut self.d)?;
                r.copy_from_slice(&self.x[..m]);
            }
        }
        Ok(())
    }
}

/// How a tensor is cut into segments and chunks.
struct Cut {
    n: usize,
    c: usize,
    seg: usize,
    nseg: usize,
}

impl Cut {
    fn new(n: usize, w: usize, align: usize, seg_elems: usize) -> Cut {
        let per = n.div_ceil(w).min(seg_elems.div_ceil(w)).max(1);
        let c = per.div_ceil(align) * align;
        let seg = w * c;
        Cut {
            n,
            c,
            seg,
            nseg: n.div_ceil(seg),
        }
    }

    /// Elements of chunk `j` of segment `s` inside the tensor (maybe empty).
    fn range(&self, s: usize, j: usize) -> Range<usize> {
        let a = (s * self.seg + j * self.c).min(self.n);
        a..(a + self.c).min(self.n)
    }
}

/// A reusable byte buffer of `len` zeroed-or-stale bytes (every byte is overwritten).
fn take(pool: &mut Vec<Vec<u8>>, len: usize) -> Vec<u8> {
    let mut b = pool.pop().unwrap_or_default();
    b.resize(len, 0);
    b
}

fn front<T>(q: &mut VecDeque<T>) -> Result<T> {
    q.pop_front()
        .ok_or_else(|| Error::Internal("compressed pipeline out of step".into()))
}

type Bytes2 = Work<(Vec<u8>, Vec<u8>)>;

/// Compressed reduce-scatter then compressed all-gather, pipelined by segment.
fn quantised_all_reduce(
    comm: &Communicator,
    grads: &mut [f32],
    cc: &dyn ChunkCodec,
    mut entry: Option<&mut Entry>,
    seg_elems: usize,
) -> Result<()> {
    let (w, me) = (comm.world_size(), comm.rank());
    let cut = Cut::new(grads.len(), w, cc.align(), seg_elems);
    let e = cc.encoded_len(cut.c);
    let mut scratch = Scratch::new(cut.c);
    let mut acc = vec![0f32; cut.c];
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut a2a: VecDeque<Bytes2> = VecDeque::new();
    let mut ag: VecDeque<Bytes2> = VecDeque::new();
    for t in 0..cut.nseg + 2 * LAG {
        if t < cut.nseg {
            let mut send = take(&mut pool, w * e);
            for j in (0..w).filter(|&j| j != me) {
                let r = cut.range(t, j);
                let res = entry.as_deref_mut().map(|en| &mut en.worker[r.clone()]);
                scratch.encode(cc, &grads[r], res, &mut send[j * e..(j + 1) * e])?;
            }
            let recv = take(&mut pool, w * e);
            a2a.push_back(comm.all_to_all_async::<u8, _, _>(send, recv)?);
        }
        if (LAG..cut.nseg + LAG).contains(&t) {
            let s = t - LAG;
            let (send, recv) = front(&mut a2a)?.wait()?;
            pool.push(send);
            // This rank's own chunk is summed exactly (gradient plus worker residual, which
            // it consumes), then the other ranks' decoded chunks in rank order.
            let r = cut.range(s, me);
            acc.fill(0.0);
            acc[..r.len()].copy_from_slice(&grads[r.clone()]);
            if let Some(en) = entry.as_deref_mut() {
                for (a, res) in acc.iter_mut().zip(&mut en.worker[r.clone()]) {
                    *a += *res;
                    *res = 0.0;
                }
            }
            for j in (0..w).filter(|&j| j != me) {
                cc.decode_add(&recv[j * e..(j + 1) * e], &mut acc)?;
            }
            pool.push(recv);
            let mut shard = take(&mut pool, e);
            let res = entry.as_deref_mut().map(|en| &mut en.server[r.clone()]);
            scratch.encode(cc, &acc[..r.len()], res, &mut shard)?;
            let out = take(&mut pool, w * e);
            ag.push_back(comm.all_gather_async::<u8, _, _>(shard, out)?);
        }
        if (2 * LAG..cut.nseg + 2 * LAG).contains(&t) {
            let s = t - 2 * LAG;
            let (shard, out) = front(&mut ag)?.wait()?;
            for j in 0..w {
                let r = cut.range(s, j);
                cc.decode(&out[j * e..(j + 1) * e], &mut scratch.d)?;
                grads[r.clone()].copy_from_slice(&scratch.d[..r.len()]);
            }
            pool.push(shard);
            pool.push(out);
        }
    }
    Ok(())
}

/// All-gather of every rank's sparse part per segment, summed in rank order on every rank.
fn sparse_all_reduce(
    comm: &Communicator,
    grads: &mut [f32],
    cc: &dyn ChunkCodec,
    entry: &mut Entry,
    enabled: bool,
    seg_elems: usize,
) -> Result<()> {
    let (n, w) = (grads.len(), comm.world_size());
    let nseg = n.div_ceil(seg_elems);
    let range = |s: usize| s * seg_elems..((s + 1) * seg_elems).min(n);
    let mut scratch = Scratch::new(seg_elems.min(n));
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut q: VecDeque<Bytes2> = VecDeque::new();
    for t in 0..nseg + LAG {
        if t < nseg {
            let r = range(t);
            let e = cc.encoded_len(r.len());
            scratch.x.truncate(r.len());
            scratch.d.truncate(r.len());
            let mut send = take(&mut pool, e);
            let res = enabled.then(|| &mut entry.worker[r.clone()]);
            scratch.encode(cc, &grads[r], res, &mut send)?;
            let out = take(&mut pool, w * e);
            q.push_back(comm.all_gather_async::<u8, _, _>(send, out)?);
        }
        if t >= LAG {
            let r = range(t - LAG);
            let e = cc.encoded_len(r.len());
            let (send, out) = front(&mut q)?.wait()?;
            let g = &mut grads[r];
            g.fill(0.0);
            for j in 0..w {
                cc.decode_add(&out[j * e..(j + 1) * e], g)?;
            }
            pool.push(send);
            pool.push(out);
        }
    }
    Ok(())
}
