//! Schedules: what each rank does in a collective, as plain data.
//!
//! An algorithm (see [`crate::algo`]) turns a [`CollSpec`] into one [`RankPlan`] per rank: a
//! program of [`Step`]s over element [`Region`]s of three buffers (the caller's input and
//! output, and a scratch area the engine owns). Nothing here does I/O.
//!
//! **Semantics** (shared by the executor, the simulator and the validator):
//! - Messages between two ranks form one FIFO stream per direction: the k-th `Send` from `a`
//!   to `b` is received by the k-th `Recv` of `b` from `a`, with the same length.
//! - Steps run as soon as they may, not one by one: a step waits only for earlier steps of
//!   its rank that touch overlapping memory with at least one write (read-after-write,
//!   write-after-read, write-after-write), and for earlier steps on the same stream. Sends
//!   and receives to different peers overlap; that is what makes pipelining work.
//! - [`segment`] splits every step into pieces of at most `seg` elements, so the dependencies
//!   above act per segment: the ring sends segment *k* of a chunk on as soon as segment *k*
//!   has arrived and been reduced, while later segments are still on the wire.
//! - Input may alias output (in-place calls); [`Layout`] tells where, so the dependency rules
//!   see the aliasing.

mod deps;
mod uneven;
#[cfg(test)]
mod validate;

pub use deps::{dependencies, Layout};
pub use uneven::{LayoutError, Uneven};
#[cfg(test)]
pub use validate::{simulate, simulate_with, validate, validate_with, Extra};

use std::fmt;

use crate::types::ReduceOp;

/// The collective operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Collective {
    /// Every rank ends with the reduction of all inputs.
    AllReduce = 1,
    /// Every rank ends with every rank's input, in rank order.
    AllGather = 2,
    /// Rank r ends with chunk r of the reduction of all inputs.
    ReduceScatter = 3,
    /// Every rank ends with the root's input.
    Broadcast = 4,
    /// The root ends with the reduction of all inputs.
    Reduce = 5,
    /// Rank r sends chunk j of its input to rank j, which stores it as its chunk r.
    AllToAll = 6,
    /// No rank leaves before every rank has entered.
    Barrier = 7,
    /// Point-to-point send/receive.
    SendRecv = 8,
    /// The root ends with every rank's input, in rank order.
    Gather = 9,
    /// Rank r ends with chunk r of the root's input.
    Scatter = 10,
    /// All-gather of blocks of per-rank sizes, placed at displacements ([`Uneven`]).
    AllGatherV = 11,
    /// Reduce-scatter into blocks of per-rank sizes, read at displacements ([`Uneven`]).
    ReduceScatterV = 12,
    /// All-to-all with per-peer send and receive sizes and displacements ([`Uneven`]).
    AllToAllV = 13,
}

impl Collective {
    /// Every collective kind.
    pub const ALL: [Collective; 13] = [
        Collective::AllReduce,
        Collective::AllGather,
        Collective::ReduceScatter,
        Collective::Broadcast,
        Collective::Reduce,
        Collective::AllToAll,
        Collective::Barrier,
        Collective::SendRecv,
        Collective::Gather,
        Collective::Scatter,
        Collective::AllGatherV,
        Collective::ReduceScatterV,
        Collective::AllToAllV,
    ];

    /// The collectives a [`CollSpec`] describes in full: every kind except point-to-point
    /// [`Collective::SendRecv`] and the [`Collective::UNEVEN`] ones (which also need an
    /// [`Uneven`] layout).
    pub const COLLECTIVES: [Collective; 9] = [
        Collective::AllReduce,
        Collective::AllGather,
        Collective::ReduceScatter,
        Collective::Broadcast,
        Collective::Reduce,
        Collective::AllToAll,
        Collective::Barrier,
        Collective::Gather,
        Collective::Scatter,
    ];

    /// The collectives with per-rank sizes: their shape is a [`CollSpec`] plus an
    /// [`Uneven`] layout.
    pub const UNEVEN: [Collective; 3] = [
        Collective::AllGatherV,
        Collective::ReduceScatterV,
        Collective::AllToAllV,
    ];

    /// snake_case name (`all_reduce`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Collective::AllReduce => "all_reduce",
            Collective::AllGather => "all_gather",
            Collective::ReduceScatter => "reduce_scatter",
            Collective::Broadcast => "broadcast",
            Collective::Reduce => "reduce",
            Collective::AllToAll => "all_to_all",
            Collective::Barrier => "barrier",
            Collective::SendRecv => "send_recv",
            Collective::Gather => "gather",
            Collective::Scatter => "scatter",
            Collective::AllGatherV => "all_gather_v",
            Collective::ReduceScatterV => "reduce_scatter_v",
            Collective::AllToAllV => "all_to_all_v",
        }
    }

    /// The kind for a wire code.
    pub fn from_code(code: u8) -> Option<Collective> {
        Collective::ALL.into_iter().find(|c| *c as u8 == code)
    }

    /// Whether the collective reduces (and so needs an operator).
    pub const fn reduces(self) -> bool {
        matches!(
            self,
            Collective::AllReduce
                | Collective::ReduceScatter
                | Collective::Reduce
                | Collective::ReduceScatterV
        )
    }

    /// Whether the collective has per-rank sizes ([`Collective::UNEVEN`]).
    pub const fn is_uneven(self) -> bool {
        matches!(
            self,
            Collective::AllGatherV | Collective::ReduceScatterV | Collective::AllToAllV
        )
    }

    /// Whether the collective has a root ([`CollSpec::root`]).
    pub const fn has_root(self) -> bool {
        matches!(
            self,
            Collective::Broadcast | Collective::Reduce | Collective::Gather | Collective::Scatter
        )
    }
}

impl fmt::Display for Collective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The shape of one collective call, identical on every rank.
///
/// `count` follows NCCL: elements of the all-reduce/broadcast/reduce buffer; elements *per
/// rank* for all-gather and gather (input count) and reduce-scatter and scatter (output
/// count); elements per peer for all-to-all; unused for barrier. For all-gather-v and
/// reduce-scatter-v it is the sum of the per-rank counts; for all-to-all-v, whose sizes
/// each rank knows only for itself, it is 0. The buffers of the uneven collectives are
/// described by their [`Uneven`] layout, not by [`CollSpec::input_len`] /
/// [`CollSpec::output_len`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CollSpec {
    /// Which collective.
    pub kind: Collective,
    /// Number of ranks.
    pub world: usize,
    /// Element count (see above).
    pub count: usize,
    /// Root rank for broadcast, reduce, gather and scatter (0 otherwise).
    pub root: usize,
}

impl CollSpec {
    /// Elements of the input buffer of every rank (the root's, for scatter; the sum of the
    /// counts for the uneven collectives, whose real lengths [`Uneven`] gives).
    pub fn input_len(&self) -> usize {
        match self.kind {
            Collective::AllReduce
            | Collective::AllGather
            | Collective::Broadcast
            | Collective::Reduce
            | Collective::Gather => self.count,
            Collective::ReduceScatter | Collective::AllToAll | Collective::Scatter => {
                self.count * self.world
            }
            Collective::Barrier => 0,
            Collective::SendRecv => self.count,
            Collective::AllGatherV | Collective::ReduceScatterV | Collective::AllToAllV => {
                self.count
            }
        }
    }

    /// Elements of the output buffer of every rank (the root's, for gather; the sum of the
    /// counts for the uneven collectives, whose real lengths [`Uneven`] gives).
    pub fn output_len(&self) -> usize {
        match self.kind {
            Collective::AllReduce
            | Collective::ReduceScatter
            | Collective::Broadcast
            | Collective::Reduce
            | Collective::Scatter => self.count,
            Collective::AllGather | Collective::AllToAll | Collective::Gather => {
                self.count * self.world
            }
            Collective::Barrier => 0,
            Collective::SendRecv => self.count,
            Collective::AllGatherV | Collective::ReduceScatterV | Collective::AllToAllV => {
                self.count
            }
        }
    }
}

/// Which buffer a region lies in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buf {
    /// The caller's input (read only).
    Input,
    /// The caller's output.
    Output,
    /// Engine-owned scratch, [`RankPlan::scratch`] elements.
    Scratch,
}

/// A run of elements in one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    /// The buffer.
    pub buf: Buf,
    /// First element.
    pub off: usize,
    /// Number of elements.
    pub len: usize,
}

impl Region {
    /// `len` elements of `buf` from `off`.
    pub const fn new(buf: Buf, off: usize, len: usize) -> Self {
        Region { buf, off, len }
    }
    /// Region of the input.
    pub const fn input(off: usize, len: usize) -> Self {
        Region::new(Buf::Input, off, len)
    }
    /// Region of the output.
    pub const fn output(off: usize, len: usize) -> Self {
        Region::new(Buf::Output, off, len)
    }
    /// Region of the scratch area.
    pub const fn scratch(off: usize, len: usize) -> Self {
        Region::new(Buf::Scratch, off, len)
    }
    /// One past the last element.
    pub const fn end(&self) -> usize {
        self.off + self.len
    }
    /// The sub-region `[from, from + len)` relative to this one.
    pub const fn sub(&self, from: usize, len: usize) -> Self {
        Region::new(self.buf, self.off + from, len)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = match self.buf {
            Buf::Input => "in",
            Buf::Output => "out",
            Buf::Scratch => "scr",
        };
        write!(f, "{b}[{}..{}]", self.off, self.end())
    }
}

/// One action of one rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send `src` to `peer`.
    Send {
        /// Destination rank.
        peer: usize,
        /// What to send.
        src: Region,
    },
    /// Receive from `peer` into `dst`: a copy when `with` is `None`, otherwise
    /// `dst = with ⊕ received` (`with` may be `dst` itself).
    Recv {
        /// Source rank.
        peer: usize,
        /// Where the result goes.
        dst: Region,
        /// Left operand of the reduction, if this receive reduces.
        with: Option<Region>,
    },
    /// Local copy `dst = src`.
    Copy {
        /// Source.
        src: Region,
        /// Destination (same length).
        dst: Region,
    },
    /// Local reduction `dst = a ⊕ b`.
    Reduce {
        /// Destination.
        dst: Region,
        /// Left operand.
        a: Region,
        /// Right operand.
        b: Region,
    },
    /// Local scaling `dst = dst / divisor` in the call's element type: the post-step that
    /// turns a sum into `Avg` (see [`finish`]). Algorithms do not emit it.
    Scale {
        /// The elements scaled in place.
        dst: Region,
        /// What they are divided by (the world size).
        divisor: usize,
    },
    /// Local multiplication `dst = src × s` by the call's premul-sum scalar `s`, in the
    /// call's element type: the pre-step of a premul-sum (see [`finish`]). Algorithms do not
    /// emit it.
    PreMul {
        /// The elements multiplied (the caller's input).
        src: Region,
        /// Where the products go (same length).
        dst: Region,
    },
}

impl Step {
    /// Number of elements the step moves or writes.
    pub fn len(&self) -> usize {
        match self {
            Step::Send { src, .. } => src.len,
            Step::Recv { dst, .. }
            | Step::Copy { dst, .. }
            | Step::Reduce { dst, .. }
            | Step::Scale { dst, .. }
            | Step::PreMul { dst, .. } => dst.len,
        }
    }

    /// Whether the step touches no elements (a header-only message, for barriers).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The region the step writes, if any.
    pub fn writes(&self) -> Option<Region> {
        match *self {
            Step::Send { .. } => None,
            Step::Recv { dst, .. }
            | Step::Copy { dst, .. }
            | Step::Reduce { dst, .. }
            | Step::Scale { dst, .. }
            | Step::PreMul { dst, .. } => Some(dst),
        }
    }

    /// The regions the step reads (at most two).
    pub fn reads(&self) -> [Option<Region>; 2] {
        match *self {
            Step::Send { src, .. } => [Some(src), None],
            Step::Recv { with, .. } => [with, None],
            Step::Copy { src, .. } => [Some(src), None],
            Step::Reduce { a, b, .. } => [Some(a), Some(b)],
            Step::Scale { dst, .. } => [Some(dst), None],
            Step::PreMul { src, .. } => [Some(src), None],
        }
    }

    /// The piece `[from, from + len)` of this step.
    fn piece(&self, from: usize, len: usize) -> Step {
        match *self {
            Step::Send { peer, src } => Step::Send {
                peer,
                src: src.sub(from, len),
            },
            Step::Recv { peer, dst, with } => Step::Recv {
                peer,
                dst: dst.sub(from, len),
                with: with.map(|w| w.sub(from, len)),
            },
            Step::Copy { src, dst } => Step::Copy {
                src: src.sub(from, len),
                dst: dst.sub(from, len),
            },
            Step::Reduce { dst, a, b } => Step::Reduce {
                dst: dst.sub(from, len),
                a: a.sub(from, len),
                b: b.sub(from, len),
            },
            Step::Scale { dst, divisor } => Step::Scale {
                dst: dst.sub(from, len),
                divisor,
            },
            Step::PreMul { src, dst } => Step::PreMul {
                src: src.sub(from, len),
                dst: dst.sub(from, len),
            },
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Send { peer, src } => write!(f, "send {src} -> {peer}"),
            Step::Recv {
                peer,
                dst,
                with: None,
            } => write!(f, "recv {dst} <- {peer}"),
            Step::Recv {
                peer,
                dst,
                with: Some(w),
            } => write!(f, "recv {dst} = {w} + <- {peer}"),
            Step::Copy { src, dst } => write!(f, "copy {dst} = {src}"),
            Step::Reduce { dst, a, b } => write!(f, "reduce {dst} = {a} + {b}"),
            Step::Scale { dst, divisor } => write!(f, "scale {dst} /= {divisor}"),
            Step::PreMul { src, dst } => write!(f, "premul {dst} = {src} * s"),
        }
    }
}

/// One rank's part of a collective.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RankPlan {
    /// The steps, in program order.
    pub steps: Vec<Step>,
    /// Scratch elements the steps use.
    pub scratch: usize,
}

impl RankPlan {
    /// The plan of a world of one rank: copy `n` input elements to the output (nothing when
    /// the call is in place, where the executor sees the same memory).
    pub fn local_copy(n: usize) -> RankPlan {
        RankPlan {
            steps: vec![Step::Copy {
                src: Region::input(0, n),
                dst: Region::output(0, n),
            }],
            scratch: 0,
        }
    }

    /// A text dump, one step per line, for debugging (`FERROCOLL_DEBUG=TRACE` logs it).
    pub fn dump(&self) -> String {
        let mut s = format!("scratch {} elements\n", self.scratch);
        for (i, st) in self.steps.iter().enumerate() {
            s += &format!("{i:4}: {st}\n");
        }
        s
    }
}

/// Elements of `rank`'s input buffer: the spec's, or the uneven layout's for the uneven
/// collectives.
pub fn input_len(spec: &CollSpec, uneven: Option<&Uneven>, rank: usize) -> usize {
    match uneven {
        Some(u) if spec.kind.is_uneven() => u.input_len(spec.kind, rank),
        _ => spec.input_len(),
    }
}

/// Elements of `rank`'s output buffer: the spec's, or the uneven layout's for the uneven
/// collectives.
pub fn output_len(spec: &CollSpec, uneven: Option<&Uneven>, rank: usize) -> usize {
    match uneven {
        Some(u) if spec.kind.is_uneven() => u.output_len(spec.kind, rank),
        _ => spec.output_len(),
    }
}

/// Where `rank`'s input and output lie: apart, or NCCL's in-place layout.
pub fn layout(spec: &CollSpec, uneven: Option<&Uneven>, rank: usize, in_place: bool) -> Layout {
    match (in_place, uneven) {
        (false, _) => Layout::SEPARATE,
        (true, Some(u)) if spec.kind.is_uneven() => u.in_place(spec.kind, rank),
        (true, _) => Layout::in_place(spec, rank),
    }
}

/// Adds the pre- and post-steps of a call to `plan`, the plan of `rank` for `spec` (with
/// its `uneven` layout, for the uneven collectives):
/// - with `premul` (a premul-sum), one [`Step::PreMul`] first that multiplies the whole
///   input into a new scratch area, and every read of the input redirected there, so the
///   algorithm sums the products and the caller's input is still never written;
/// - for [`ReduceOp::Avg`], one [`Step::Scale`] of the reduced output (every rank's, or only
///   the root's for [`Collective::Reduce`]) by the world size.
///
/// Every executed and simulated plan goes through this, so the plan, not the engine,
/// multiplies and divides.
pub fn finish(
    plan: &mut RankPlan,
    spec: &CollSpec,
    uneven: Option<&Uneven>,
    rank: usize,
    op: ReduceOp,
    premul: bool,
) {
    let n_in = input_len(spec, uneven, rank);
    if premul && spec.kind.reduces() && n_in > 0 {
        let base = plan.scratch;
        let moved = |r: Region| match r.buf {
            Buf::Input => Region::scratch(base + r.off, r.len),
            _ => r,
        };
        for st in &mut plan.steps {
            *st = match *st {
                Step::Send { peer, src } => Step::Send {
                    peer,
                    src: moved(src),
                },
                Step::Recv { peer, dst, with } => Step::Recv {
                    peer,
                    dst,
                    with: with.map(moved),
                },
                Step::Copy { src, dst } => Step::Copy {
                    src: moved(src),
                    dst,
                },
                Step::Reduce { dst, a, b } => Step::Reduce {
                    dst,
                    a: moved(a),
                    b: moved(b),
                },
                other => other,
            };
        }
        plan.steps.insert(
            0,
            Step::PreMul {
                src: Region::input(0, n_in),
                dst: Region::scratch(base, n_in),
            },
        );
        plan.scratch += n_in;
    }
    let holds_result = spec.kind != Collective::Reduce || rank == spec.root;
    let n_out = output_len(spec, uneven, rank);
    if op == ReduceOp::Avg && spec.kind.reduces() && holds_result && n_out > 0 {
        plan.steps.push(Step::Scale {
            dst: Region::output(0, n_out),
            divisor: spec.world,
        });
    }
}

/// Splits every step into pieces of at most `seg` elements (`seg > 0`), keeping program
/// order. Empty steps stay as they are (one header-only message).
pub fn segment(steps: &[Step], seg: usize) -> Vec<Step> {
    let seg = seg.max(1);
    let mut out = Vec::with_capacity(steps.len());
    for st in steps {
        let n = st.len();
        if n <= seg {
            out.push(*st);
            continue;
        }
        let mut from = 0;
        while from < n {
            let len = seg.min(n - from);
            out.push(st.piece(from, len));
            from += len;
        }
    }
    out
}

/// Splits `n` elements into `parts` nearly equal contiguous chunks (the first `n % parts`
/// get one more) and returns chunk `i` as (offset, length). Algorithms use this so that
/// counts not divisible by the world size work everywhere.
pub const fn chunk(n: usize, parts: usize, i: usize) -> (usize, usize) {
    let base = n / parts;
    let extra = n % parts;
    let off = i * base + if i < extra { i } else { extra };
    (off, base + if i < extra { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_exactly() {
        for n in [0usize, 1, 5, 16, 17, 100] {
            for parts in 1..9 {
                let mut next = 0;
                for i in 0..parts {
                    let (o, l) = chunk(n, parts, i);
                    assert_eq!(o, next);
                    next += l;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn segmentation_splits_in_order() {
        let s = [Step::Recv {
            peer: 1,
            dst: Region::output(10, 5),
            with: Some(Region::input(10, 5)),
        }];
        let p = segment(&s, 2);
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[2],
            Step::Recv {
                peer: 1,
                dst: Region::output(14, 1),
                with: Some(Region::input(14, 1))
            }
        );
        let e = [Step::Send {
            peer: 0,
            src: Region::input(0, 0),
        }];
        assert_eq!(segment(&e, 4), e.to_vec());
    }
}
