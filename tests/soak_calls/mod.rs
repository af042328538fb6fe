//! The calls of the soak (`tests/soak.rs`): drawing them from a seeded generator, running
//! them through the typed API (blocking or `*_async`, in place or not), and what each rank's
//! output must be.

use ferrocoll::verify::{expected, magnitudes};
use ferrocoll::{AlgoId, CollSpec, Collective, Communicator, DataType, Element, ReduceOp, Work};
use ferrocoll::{F8E4M3, F8E5M2};
use half::{bf16, f16};

/// Ranks of the soak job.
pub const WORLD: usize = 4;

/// Byte written into output buffers before a call: a wrong write is seen, and an output the
/// call must not touch (a non-root's `reduce_into`) must still hold it.
pub const SENTINEL: u8 = 0x5A;

/// Every call of the API, collectives and point-to-point.
pub const KINDS: [Collective; 10] = [
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
];

/// splitmix64: small, fast, and the same sequence on every rank from the same seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent` %.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

/// One drawn call, the same on every rank.
#[derive(Clone, Copy, Debug)]
pub struct Draw {
    pub kind: Collective,
    /// Index of the communicator (0: the tuner chooses; others force one algorithm).
    pub comm: usize,
    pub dtype: DataType,
    pub op: ReduceOp,
    pub count: usize,
    /// The root of broadcast and reduce; for send/recv, the distance to the peer (rank `r`
    /// sends to `r + root` and receives from `r - root`).
    pub root: usize,
    pub in_place: bool,
    pub asynchronous: bool,
    /// Seeds the call's input data.
    pub data: u64,
}

impl Draw {
    pub fn spec(&self, rank: usize) -> CollSpec {
        let root = match self.kind {
            Collective::SendRecv => (rank + WORLD - self.root) % WORLD,
            Collective::Broadcast
            | Collective::Reduce
            | Collective::Gather
            | Collective::Scatter => self.root,
            _ => 0,
        };
        CollSpec {
            kind: self.kind,
            world: WORLD,
            count: self.count,
            root,
        }
    }
}

/// Draws the next call; `algos[i]` is communicator `i`'s forced algorithm (`None`: auto).
pub fn draw(rng: &mut Rng, algos: &[Option<AlgoId>], max_bytes: usize) -> Draw {
    let kind = rng.pick(&KINDS);
    let fits: Vec<usize> = (0..algos.len())
        .filter(|&i| kind == Collective::SendRecv || algos[i].is_none_or(|a| a.supports(kind)))
        .collect();
    let comm = rng.pick(&fits);
    let dtype = rng.pick(&DataType::ALL);
    let op = rng.pick(&ReduceOp::ALL);
    let chunks = match kind {
        Collective::AllGather
        | Collective::ReduceScatter
        | Collective::AllToAll
        | Collective::Gather
        | Collective::Scatter => WORLD,
        _ => 1,
    };
    let most = (max_bytes / chunks / dtype.size()).max(1);
    // Log-uniform: as many calls of a few elements as of a few MiB.
    let bits = (usize::BITS - most.leading_zeros()) as usize;
    let e = rng.below(bits);
    let count = if kind == Collective::Barrier || rng.chance(3) {
        0
    } else {
        ((1usize << e) + rng.below(1 << e)).min(most)
    };
    let root = match kind {
        Collective::SendRecv => 1 + rng.below(WORLD - 1),
        _ => rng.below(WORLD),
    };
    Draw {
        kind,
        comm,
        dtype,
        op,
        count,
        root,
        in_place: rng.chance(50),
        asynchronous: rng.chance(40),
        data: rng.next(),
    }
}

/// `bytes` as elements of `T`.
fn to_vec<T: Element>(bytes: &[u8]) -> Vec<T> {
    let n = bytes.len() / size_of::<T>();
    let mut v = Vec::<T>::with_capacity(n);
    // SAFETY: `Element` types are plain old data (any bit pattern is a value, no padding);
    // the vector has room for `n` elements, all of whose bytes are written before `set_len`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            v.as_mut_ptr().cast::<u8>(),
            n * size_of::<T>(),
        );
        v.set_len(n);
    }
    v
}

/// The bytes of `v`.
pub fn to_bytes<T: Element>(v: &[T]) -> Vec<u8> {
    // SAFETY: `Element` types are plain old data without padding, so every byte of the slice
    // is initialised; the byte slice covers exactly the slice's memory and is copied at once.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), size_of_val(v)) }.to_vec()
}

/// `len` elements of [`SENTINEL`] bytes.
fn filled<T: Element>(len: usize) -> Vec<T> {
    to_vec(&vec![SENTINEL; len * size_of::<T>()])
}

/// What a started call gives: its output now, or a function that waits for it.
pub enum Run {
    Now(Vec<u8>),
    Later(Box<dyn FnOnce() -> ferrocoll::Result<Vec<u8>>>),
}

/// A [`Run::Later`] that waits for `w` and takes the output from its buffers with `out`.
fn later<B: 'static>(
    w: Work<B>,
    out: impl FnOnce(B) -> Vec<u8> + 'static,
) -> ferrocoll::Result<Run> {
    Ok(Run::Later(Box::new(move || w.wait().map(out))))
}

/// Starts `d` on `c` with this rank's input bytes `mine`, through the typed API: blocking
/// or `*_async`, in place or not. The output is the part that must equal [`want`].
fn start<T: Element>(c: &Communicator, d: &Draw, mine: &[u8]) -> ferrocoll::Result<Run> {
    use Collective::*;
    let (r, n, op, root) = (c.rank(), d.count, d.op, d.root);
    let input: Vec<T> = to_vec(mine);
    let now = |v: &[T]| Ok(Run::Now(to_bytes(v)));
    let chunk = move |v: &[T]| to_bytes(&v[r * n..(r + 1) * n]);
    match (d.kind, d.in_place, d.asynchronous) {
        (AllReduce, true, false) => {
            let mut b = input;
            c.all_reduce(&mut b, op)?;
            now(&b)
        }
        (AllReduce, true, true) => later(c.all_reduce_async(input, op)?, |b| to_bytes(&b)),
        (AllReduce, false, false) => {
            let mut o = filled(n);
            c.all_reduce_into(&input, &mut o, op)?;
            now(&o)
        }
        (AllReduce, false, true) => {
            let w = c.all_reduce_into_async(input, filled::<T>(n), op)?;
            later(w, |(_, o)| to_bytes(&o))
        }
        (AllGather, true, a) => {
            let mut b = filled::<T>(n * WORLD);
            b[r * n..(r + 1) * n].copy_from_slice(&input);
            if a {
                return later(c.all_gather_in_place_async(b)?, |b| to_bytes(&b));
            }
            c.all_gather_in_place(&mut b)?;
            now(&b)
        }
        (AllGather, false, false) => {
            let mut o = filled(n * WORLD);
            c.all_gather(&input, &mut o)?;
            now(&o)
        }
        (AllGather, false, true) => {
            let w = c.all_gather_async(input, filled::<T>(n * WORLD))?;
            later(w, |(_, o)| to_bytes(&o))
        }
        (ReduceScatter, true, false) => {
            let mut b = input;
            c.reduce_scatter_in_place(&mut b, op)?;
            Ok(Run::Now(chunk(&b)))
        }
        (ReduceScatter, true, true) => {
            later(c.reduce_scatter_in_place_async(input, op)?, move |b| {
                chunk(&b)
            })
        }
        (ReduceScatter, false, false) => {
            let mut o = filled(n);
            c.reduce_scatter(&input, &mut o, op)?;
            now(&o)
        }
        (ReduceScatter, false, true) => {
            let w = c.reduce_scatter_async(input, filled::<T>(n), op)?;
            later(w, |(_, o)| to_bytes(&o))
        }
        (Broadcast | Reduce, true, a) => {
            let mut b = input;
            match (d.kind, a) {
                (Broadcast, false) => c.broadcast(&mut b, root)?,
                (Broadcast, true) => return later(c.broadcast_async(b, root)?, |b| to_bytes(&b)),
                (_, false) => c.reduce(&mut b, op, root)?,
                (_, true) => return later(c.reduce_async(b, op, root)?, |b| to_bytes(&b)),
            }
            now(&b)
        }
        (Broadcast, false, a) => {
            // Only the root's input is read: the others pass none.
            let i = if r == root { input } else { Vec::new() };
            if a {
                let w = c.broadcast_into_async(i, filled::<T>(n), root)?;
                return later(w, |(_, o)| to_bytes(&o));
            }
            let mut o = filled(n);
            c.broadcast_into(&i, &mut o, root)?;
            now(&o)
        }
        (Reduce, false, a) => {
            // Only the root's output is written: the others pass none, or one that must
            // stay untouched.
            let o = filled::<T>(if r == root || d.data % 2 == 0 { n } else { 0 });
            if a {
                let w = c.reduce_into_async(input, o, op, root)?;
                return later(w, |(_, o)| to_bytes(&o));
            }
            let mut o = o;
            c.reduce_into(&input, &mut o, op, root)?;
            now(&o)
        }
        (AllToAll, true, false) => {
            let mut b = input;
            c.all_to_all_in_place(&mut b)?;
            now(&b)
        }
        (AllToAll, true, true) => later(c.all_to_all_in_place_async(input)?, |b| to_bytes(&b)),
        (AllToAll, false, false) => {
            let mut o = filled(n * WORLD);
            c.all_to_all(&input, &mut o)?;
            now(&o)
        }
        (AllToAll, false, true) => {
            let w = c.all_to_all_async(input, filled::<T>(n * WORLD))?;
            later(w, |(_, o)| to_bytes(&o))
        }
        (Barrier, _, false) => {
            c.barrier()?;
            Ok(Run::Now(Vec::new()))
        }
        (Barrier, _, true) => later(c.barrier_async()?, |()| Vec::new()),
        (SendRecv, _, a) => send_recv(c, root, input, a),
        // Gather and scatter have no in-place typed form: both layouts run out of place.
        (Gather, _, a) => {
            // Only the root's output is written: the others pass none.
            let o = filled::<T>(if r == root { n * WORLD } else { 0 });
            if a {
                let w = c.gather_async(input, o, root)?;
                return later(w, |(_, o)| to_bytes(&o));
            }
            let mut o = o;
            c.gather(&input, &mut o, root)?;
            now(&o)
        }
        (Scatter, _, a) => {
            // Only the root's input is read: the others pass none.
            let i = if r == root { input } else { Vec::new() };
            if a {
                let w = c.scatter_async(i, filled::<T>(n), root)?;
                return later(w, |(_, o)| to_bytes(&o));
            }
            let mut o = filled(n);
            c.scatter(&i, &mut o, root)?;
            now(&o)
        }
        // Not drawn (not in `KINDS`): their calls need a layout.
        (AllGatherV | ReduceScatterV | AllToAllV, _, _) => Err(ferrocoll::Error::LayoutMismatch {
            collective: d.kind,
            world: WORLD,
        }),
    }
}

/// Rank `r` sends `input` to `r + dist` and receives as much from `r - dist`. The calls of
/// one communicator run one at a time, in order, and a send that does not fit the link's
/// buffer waits for its receiver: so in each cycle of that permutation its smallest rank
/// (`r < gcd(dist, world)`) sends first and the others receive first (blocking or not), and
/// the chain never waits on itself whatever the message size.
fn send_recv<T: Element>(
    c: &Communicator,
    dist: usize,
    input: Vec<T>,
    asynchronous: bool,
) -> ferrocoll::Result<Run> {
    let r = c.rank();
    let (to, from) = ((r + dist) % WORLD, (r + WORLD - dist) % WORLD);
    let n = input.len();
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let send_first = r < gcd(dist, WORLD);
    if asynchronous {
        let (s, g) = if send_first {
            let s = c.send_async(input, to)?;
            (s, c.recv_async(filled::<T>(n), from)?)
        } else {
            let g = c.recv_async(filled::<T>(n), from)?;
            (c.send_async(input, to)?, g)
        };
        return Ok(Run::Later(Box::new(move || {
            let got = g.wait()?;
            s.wait()?;
            Ok(to_bytes(&got))
        })));
    }
    let mut got = filled::<T>(n);
    if send_first {
        c.send(&input, to)?;
        c.recv(&mut got, from)?;
    } else {
        c.recv(&mut got, from)?;
        c.send(&input, to)?;
    }
    Ok(Run::Now(to_bytes(&got)))
}

/// [`start`] for the element type of `d`.
pub fn start_any(c: &Communicator, d: &Draw, mine: &[u8]) -> ferrocoll::Result<Run> {
    match d.dtype {
        DataType::I8 => start::<i8>(c, d, mine),
        DataType::U8 => start::<u8>(c, d, mine),
        DataType::I32 => start::<i32>(c, d, mine),
        DataType::U32 => start::<u32>(c, d, mine),
        DataType::I64 => start::<i64>(c, d, mine),
        DataType::U64 => start::<u64>(c, d, mine),
        DataType::F16 => start::<f16>(c, d, mine),
        DataType::F32 => start::<f32>(c, d, mine),
        DataType::F64 => start::<f64>(c, d, mine),
        DataType::BF16 => start::<bf16>(c, d, mine),
        DataType::F8E4M3 => start::<F8E4M3>(c, d, mine),
        DataType::F8E5M2 => start::<F8E5M2>(c, d, mine),
    }
}

/// What rank `r`'s output of `d` must be, and the rounding bound of each element (empty:
/// bit for bit), from every rank's input.
pub fn want(d: &Draw, inputs: &[Vec<u8>], r: usize) -> (Vec<u8>, Vec<f64>) {
    let spec = d.spec(r);
    let es = d.dtype.size();
    match d.kind {
        // A non-root's buffer is left as it was; its separate output is untouched (or empty).
        Collective::Reduce if r != d.root && d.in_place => (inputs[r].clone(), Vec::new()),
        Collective::Reduce if r != d.root => {
            let n = if d.data % 2 == 0 { d.count } else { 0 };
            (vec![SENTINEL; n * es], Vec::new())
        }
        _ => (
            expected(&spec, d.dtype, d.op, inputs, r),
            magnitudes(&spec, d.dtype, d.op, inputs, r),
        ),
    }
}
