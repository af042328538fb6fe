//! Shared helpers of the integration tests.
#![allow(dead_code)]

pub mod etcd;
pub mod harness;
pub mod logs;

use std::ffi::c_void;

use ferrocoll::verify::{count_wrong, expected, magnitudes, test_input};
use ferrocoll::{CollSpec, Collective};
use ferrocoll::{Communicator, DataType, RawCall, ReduceOp};

/// One collective call, identical on every rank.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub kind: Collective,
    pub dtype: DataType,
    pub op: ReduceOp,
    pub count: usize,
    pub root: usize,
    pub in_place: bool,
}

/// Runs `case` on this rank with deterministic data (seeded by `seed`) through the raw API
/// and returns (output bytes, wrong element count vs the reference).
pub fn run_case(c: &Communicator, case: &Case, seed: u64) -> ferrocoll::Result<(Vec<u8>, usize)> {
    let (p, r) = (c.world_size(), c.rank());
    let spec = CollSpec {
        kind: case.kind,
        world: p,
        count: case.count,
        root: case.root,
    };
    let es = case.dtype.size();
    let inputs: Vec<Vec<u8>> = (0..p)
        .map(|q| test_input(case.dtype, case.op, q, spec.input_len(), seed))
        .collect();
    let mine = &inputs[r];
    // In place: one buffer laid out as NCCL expects; out of place: two.
    let (mut buf, out_off) = if case.in_place {
        let len = spec.input_len().max(spec.output_len()) * es;
        let mut b = vec![0u8; len];
        match case.kind {
            Collective::AllGather | Collective::Gather => {
                b[r * case.count * es..(r + 1) * case.count * es].copy_from_slice(mine)
            }
            _ => b[..mine.len()].copy_from_slice(mine),
        }
        (b, 0)
    } else {
        let mut b = mine.clone();
        b.resize(mine.len() + spec.output_len() * es, 0x5A);
        (b, mine.len())
    };
    let base = buf.as_mut_ptr();
    let (input, output): (*const u8, *mut u8) = if case.in_place {
        match case.kind {
            Collective::AllGather | Collective::Gather => {
                (base.wrapping_add(r * case.count * es), base)
            }
            Collective::ReduceScatter | Collective::Scatter => {
                (base, base.wrapping_add(r * case.count * es))
            }
            _ => (base, base),
        }
    } else {
        (base, base.wrapping_add(out_off))
    };
    let call = RawCall {
        kind: case.kind,
        input: input as *const c_void,
        output: output as *mut c_void,
        count: case.count,
        dtype: case.dtype,
        op: case.op,
        root: case.root,
    };
    // SAFETY: `buf` holds input and output as the spec requires and lives across the call.
    unsafe { c.collective_raw(call)? };
    let out_start = output as usize - base as usize;
    let out = buf[out_start..out_start + spec.output_len() * es].to_vec();
    let want = expected(&spec, case.dtype, case.op, &inputs, r);
    let skip = case.kind == Collective::Barrier
        || (matches!(case.kind, Collective::Reduce | Collective::Gather) && r != case.root);
    let wrong = if skip {
        0
    } else {
        let bound = magnitudes(&spec, case.dtype, case.op, &inputs, r);
        count_wrong(case.dtype, case.op, p, &out, &want, &bound)
    };
    Ok((out, wrong))
}
