//! Compressed collectives on top of the public [`Communicator`] API.
//!
//! Vocabulary. The tensor of `n` elements is cut into *segments* of `world` *chunks* of `c`
//! elements each (`c` a multiple of the codec's alignment, so scale blocks stay whole; the
//! chunks past the end of the tensor are zero padding). Chunk `j` of every segment belongs to
//! rank `j`. A chunk is encoded as consecutive *tiles* of a few thousand elements (multiples
//! of the alignment, each encoded on its own), `e` bytes per encoded chunk in all; every
//! stage below works tile by tile, so a tile's sum stays in the L1 cache from decoding to
//! re-encoding, and error feedback is fused with encoding (one pass over gradient and
//! residual).
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

/// Default elements per segment of a compressed all-reduce, by codec.
///
/// The casts and fp8 are link-bound on slow links: after the last segment's transfer the
/// pipeline still reduces, gathers and decodes one segment, so short segments shorten that
/// tail (2 emulated hosts, 1 Gbit, 64 MiB f32, `tests/netns/compression.sh`, alternating:
/// fp8 147–149 ms with 2¹⁸ elements against 157–166 ms with 2²⁰, fp16 282–285 against
/// 295–296). 1-bit and top-k move so few bytes that they are CPU-bound there, and each
/// segment costs two collective calls that both ranks must reach: 2²⁰ (2¹⁸ to 2²² measured,
/// no difference beyond this VM's noise).
pub(super) fn default_segment_elems(codec: Codec) -> usize {
    match codec {
        Codec::Fp16 | Codec::Bf16 | Codec::Fp8E4M3 { .. } | Codec::Fp8E5M2 { .. } => 1 << 18,
        _ => 1 << 20,
    }
}

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
        reason: "PowerSGD compresses one 2-D gradient matrix and this call has no shape (Rust: \
                 all_reduce_compressed_2d; C, Python, DDP: use a 1-D codec)"
            .into(),
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
        // Every position of the worker residual may be written below.
        entry.own_clear = None;
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
            cc.decode_add(&recv[j * e..(j + 1) * e], output)
                .map_err(|err| err.sent_by(j))?;
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
    let enabled = ef.is_enabled();
    let seg = ef
        .segment_elems
        .unwrap_or_else(|| default_segment_elems(codec));
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
        if m == self.x.len() {
            // A whole chunk: no padding, so the codec works on the caller's memory directly
            // (error feedback fused with the encoding, one pass).
            return match res {
                None => {
                    cc.encode(src, out);
                    Ok(())
                }
                Some(r) => cc.encode_feedback_add(src, r, out),
            };
        }
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

/// Elements per tile (rounded to the codec's alignment): the unit the quantised all-reduce
/// encodes, reduces and decodes, small enough that a tile's sum stays in the L1 cache between
/// decoding the other ranks' parts and encoding it.
const TILE: usize = 4096;

/// How a chunk of `c` elements is cut into tiles, each encoded on its own: tile `i` covers
/// elements `i·t ..` and its bytes follow those of tile `i − 1` (every tile but the last has
/// `t` elements; all are multiples of the codec's alignment, so scale blocks stay whole).
struct Tiles {
    c: usize,
    t: usize,
    /// Encoded bytes of a whole tile and of the last one.
    et: usize,
    elast: usize,
    /// Encoded bytes of a chunk (the sum over its tiles).
    e: usize,
}

impl Tiles {
    fn new(cc: &dyn ChunkCodec, c: usize) -> Tiles {
        let align = cc.align();
        let t = (TILE / align).max(1) * align;
        let t = t.min(c).max(1);
        let full = c / t;
        let last = c - full * t;
        let (et, elast) = (cc.encoded_len(t), cc.encoded_len(last));
        let e = full * et + if last > 0 { elast } else { 0 };
        Tiles { c, t, et, elast, e }
    }

    /// (element range, byte range) of every tile of the chunk.
    fn iter(&self) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + '_ {
        (0..self.c.div_ceil(self.t)).map(move |i| {
            let a = i * self.t;
            let len = self.t.min(self.c - a);
            let b = i * self.et;
            (
                a..a + len,
                b..b + if len == self.t { self.et } else { self.elast },
            )
        })
    }
}

/// Tile-sized work buffers, for tiles that reach past the end of the tensor (zero padding).
struct TileBufs {
    x: Vec<f32>,
    r: Vec<f32>,
}

impl TileBufs {
    /// Encodes `src` (+ `res`, with error feedback), zero-padded to `len` elements, into
    /// `out`; with `res`, stores what the encoding dropped back into it.
    fn encode(
        &mut self,
        cc: &dyn ChunkCodec,
        len: usize,
        src: &[f32],
        res: Option<&mut [f32]>,
        out: &mut [u8],
    ) -> Result<()> {
        let m = src.len();
        match res {
            None if m == len => cc.encode(src, out),
            Some(r) if m == len => cc.encode_feedback_add(src, r, out)?,
            res => {
                self.x.resize(len, 0.0);
                self.x[..m].copy_from_slice(src);
                self.x[m..].fill(0.0);
                match res {
                    None => cc.encode(&self.x, out),
                    Some(r) => {
                        self.r.resize(len, 0.0);
                        self.r[..m].copy_from_slice(r);
                        self.r[m..].fill(0.0);
                        cc.encode_feedback_add(&self.x, &mut self.r, out)?;
                        r.copy_from_slice(&self.r[..m]);
                    }
                }
            }
        }
        Ok(())
    }

    /// Decodes `len` elements from `bytes` and stores the first `dst.len()` of them.
    fn decode(
        &mut self,
        cc: &dyn ChunkCodec,
        len: usize,
        bytes: &[u8],
        dst: &mut [f32],
    ) -> Result<()> {
        if dst.len() == len {
            return cc.decode(bytes, dst);
        }
        self.x.resize(len, 0.0);
        cc.decode(bytes, &mut self.x)?;
        let m = dst.len();
        dst.copy_from_slice(&self.x[..m]);
        Ok(())
    }
}

/// The part of `range` (relative to the chunk starting at `base`, tile `er`) inside the
/// tensor: `base + er` clipped to `chunk`.
fn clip(chunk: &Range<usize>, er: &Range<usize>) -> Range<usize> {
    let a = (chunk.start + er.start).min(chunk.end);
    a..(chunk.start + er.end).min(chunk.end)
}

/// Compressed reduce-scatter then compressed all-gather, pipelined by segment; each chunk
/// is encoded, reduced and decoded tile by tile.
fn quantised_all_reduce(
    comm: &Communicator,
    grads: &mut [f32],
    cc: &dyn ChunkCodec,
    mut entry: Option<&mut Entry>,
    seg_elems: usize,
) -> Result<()> {
    let (w, me) = (comm.world_size(), comm.rank());
    let cut = Cut::new(grads.len(), w, cc.align(), seg_elems);
    let tiles = Tiles::new(cc, cut.c);
    // Whether this rank's own positions of the worker residual are known to be +0; cleared
    // until the call completes (an error midway leaves them partly consumed).
    let clear = entry
        .as_deref_mut()
        .is_some_and(|en| en.own_clear.take() == Some((cut.c, me)));
    let e = tiles.e;
    let mut bufs = TileBufs {
        x: Vec::new(),
        r: Vec::new(),
    };
    let mut acc = vec![0f32; tiles.t];
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut a2a: VecDeque<Bytes2> = VecDeque::new();
    let mut ag: VecDeque<Bytes2> = VecDeque::new();
    for t in 0..cut.nseg + 2 * LAG {
        if t < cut.nseg {
            let mut send = take(&mut pool, w * e);
            for j in (0..w).filter(|&j| j != me) {
                let chunk = cut.range(t, j);
                let out = &mut send[j * e..(j + 1) * e];
                for (er, br) in tiles.iter() {
                    let r = clip(&chunk, &er);
                    let res = entry.as_deref_mut().map(|en| &mut en.worker[r.clone()]);
                    bufs.encode(cc, er.len(), &grads[r], res, &mut out[br])?;
                }
            }
            let recv = take(&mut pool, w * e);
            a2a.push_back(comm.all_to_all_async::<u8, _, _>(send, recv)?);
        }
        if (LAG..cut.nseg + LAG).contains(&t) {
            let s = t - LAG;
            let (send, recv) = front(&mut a2a)?.wait()?;
            pool.push(send);
            let chunk = cut.range(s, me);
            let mut shard = take(&mut pool, e);
            for (er, br) in tiles.iter() {
                // This rank's own elements are summed exactly (gradient plus worker
                // residual, which it consumes), then the other ranks' decoded parts in rank
                // order, then the server residual as the sum is encoded.
                let r = clip(&chunk, &er);
                let (a, m) = (&mut acc[..er.len()], r.len());
                a[m..].fill(0.0);
                match entry.as_deref_mut() {
                    Some(_) if clear => {
                        // The worker residual is +0 here (the last all-reduce consumed it):
                        // adding it changes only −0 gradients, to +0.
                        for (a, g) in a.iter_mut().zip(&grads[r.clone()]) {
                            *a = *g + 0.0;
                        }
                    }
                    Some(en) => {
                        // The worker residual is consumed; it is written (zeroed) only where
                        // it is not already +0 (a plain all-reduce leaves it so).
                        let (res, mut any) = (&mut en.worker[r.clone()], 0u32);
                        let own = a.iter_mut().zip(&grads[r.clone()]);
                        for ((a, g), res) in own.zip(res.iter()) {
                            *a = *g + *res;
                            any |= res.to_bits();
                        }
                        if any != 0 {
                            res.fill(0.0);
                        }
                    }
                    None => a[..m].copy_from_slice(&grads[r.clone()]),
                }
                for j in (0..w).filter(|&j| j != me) {
                    cc.decode_add(&recv[j * e + br.start..j * e + br.end], a)
                        .map_err(|err| err.sent_by(j))?;
                }
                let res = entry.as_deref_mut().map(|en| &mut en.server[r]);
                // Only the elements inside the tensor: padding is encoded as zeros.
                bufs.encode(cc, er.len(), &a[..m], res, &mut shard[br])?;
            }
            pool.push(recv);
            let out = take(&mut pool, w * e);
            ag.push_back(comm.all_gather_async::<u8, _, _>(shard, out)?);
        }
        if (2 * LAG..cut.nseg + 2 * LAG).contains(&t) {
            let s = t - 2 * LAG;
            let (shard, out) = front(&mut ag)?.wait()?;
            for j in 0..w {
                let chunk = cut.range(s, j);
                for (er, br) in tiles.iter() {
                    let r = clip(&chunk, &er);
                    let bytes = &out[j * e + br.start..j * e + br.end];
                    bufs.decode(cc, er.len(), bytes, &mut grads[r])?;
                }
            }
            pool.push(shard);
            pool.push(out);
        }
    }
    if let Some(en) = entry {
        en.own_clear = Some((cut.c, me));
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
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut q: VecDeque<Bytes2> = VecDeque::new();
    for t in 0..nseg + LAG {
        if t < nseg {
            let r = range(t);
            let e = cc.encoded_len(r.len());
            let mut send = take(&mut pool, e);
            let g = &grads[r.clone()];
            if enabled {
                cc.encode_feedback_add(g, &mut entry.worker[r], &mut send)?;
            } else {
                cc.encode(g, &mut send);
            }
            let out = take(&mut pool, w * e);
            q.push_back(comm.all_gather_async::<u8, _, _>(send, out)?);
        }
        if t >= LAG {
            let r = range(t - LAG);
            let e = cc.encoded_len(r.len());
            let (send, out) = front(&mut q)?.wait()?;
            let g = &mut grads[r];
            // Zeroed just before the sparse parts are added, so the segment is in cache
            // for their scattered additions.
            g.fill(0.0);
            for j in 0..w {
                cc.decode_add(&out[j * e..(j + 1) * e], g)
                    .map_err(|err| err.sent_by(j))?;
            }
            pool.push(send);
            pool.push(out);
        }
    }
    Ok(())
}
