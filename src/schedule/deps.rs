//! Dependencies between the steps of one rank, aware of in-place aliasing.

use super::{Buf, CollSpec, Collective, Region, Step};

/// Where a buffer lies: a memory space (0 and 1 for the caller's buffers, 2 for scratch) and
/// an element offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Place {
    /// Memory space.
    pub space: u8,
    /// Element offset of the buffer in its space.
    pub off: usize,
}

/// How a rank's input and output buffers relate in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Where the input lies.
    pub input: Place,
    /// Where the output lies.
    pub output: Place,
}

impl Layout {
    /// Input and output are different memory.
    pub const SEPARATE: Layout = Layout {
        input: Place { space: 0, off: 0 },
        output: Place { space: 1, off: 0 },
    };

    /// The in-place layout of a collective, NCCL's convention: all-gather's and gather's
    /// input is the rank's chunk of the output, reduce-scatter's and scatter's output is the
    /// rank's chunk of the input, and otherwise input and output are the same buffer. (The
    /// uneven collectives' in-place layouts are [`super::Uneven::in_place`].)
    pub fn in_place(spec: &CollSpec, rank: usize) -> Layout {
        let zero = Place { space: 0, off: 0 };
        let at = Place {
            space: 0,
            off: rank * spec.count,
        };
        match spec.kind {
            Collective::AllGather | Collective::Gather => Layout {
                input: at,
                output: zero,
            },
            Collective::ReduceScatter | Collective::Scatter => Layout {
                input: zero,
                output: at,
            },
            _ => Layout {
                input: zero,
                output: zero,
            },
        }
    }

    /// A region as (space, first element, end element) in absolute terms.
    pub fn locate(&self, r: Region) -> (u8, usize, usize) {
        let p = match r.buf {
            Buf::Input => self.input,
            Buf::Output => self.output,
            Buf::Scratch => Place { space: 2, off: 0 },
        };
        (p.space, p.off + r.off, p.off + r.end())
    }
}

type Span = (u8, usize, usize);

fn overlaps(a: Option<Span>, b: Option<Span>) -> bool {
    match (a, b) {
        (Some((sa, a0, a1)), Some((sb, b0, b1))) => sa == sb && a0 < b1 && b0 < a1,
        _ => false,
    }
}

/// For each step, the earlier steps it must wait for: those touching overlapping memory
/// where at least one of the two writes. (Stream order between sends, or receives, on the
/// same peer is kept by the executor itself and not listed.)
pub fn dependencies(steps: &[Step], layout: &Layout) -> Vec<Vec<u32>> {
    let span = |r: Option<Region>| r.filter(|r| r.len > 0).map(|r| layout.locate(r));
    let acc: Vec<(Option<Span>, [Option<Span>; 2])> = steps
        .iter()
        .map(|s| {
            let [r0, r1] = s.reads();
            (span(s.writes()), [span(r0), span(r1)])
        })
        .collect();
    let mut deps = vec![Vec::new(); steps.len()];
    for (i, (wi, ri)) in acc.iter().enumerate() {
        if wi.is_none() && ri.iter().all(Option::is_none) {
            continue;
        }
        for (j, (wj, rj)) in acc[..i].iter().enumerate() {
            let conflict = overlaps(*wi, *wj)
                || rj.iter().any(|r| overlaps(*wi, *r))
                || ri.iter().any(|r| overlaps(*r, *wj));
            if conflict {
                deps[i].push(j as u32);
            }
        }
    }
    deps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_place_aliasing_creates_war_dependency() {
        let steps = [
            Step::Send {
                peer: 1,
                src: Region::input(0, 4),
            },
            Step::Recv {
                peer: 1,
                dst: Region::output(2, 4),
                with: None,
            },
        ];
        assert_eq!(
            dependencies(&steps, &Layout::SEPARATE),
            vec![Vec::<u32>::new(), vec![]]
        );
        let spec = CollSpec {
            kind: Collective::AllReduce,
            world: 2,
            count: 8,
            root: 0,
        };
        assert_eq!(
            dependencies(&steps, &Layout::in_place(&spec, 0)),
            vec![vec![], vec![0]]
        );
    }

    #[test]
    fn reads_do_not_conflict() {
        let steps = [
            Step::Send {
                peer: 1,
                src: Region::input(0, 4),
            },
            Step::Send {
                peer: 2,
                src: Region::input(0, 4),
            },
            Step::Recv {
                peer: 1,
                dst: Region::output(0, 4),
                with: Some(Region::input(0, 4)),
            },
            Step::Send {
                peer: 2,
                src: Region::output(1, 1),
            },
        ];
        let d = dependencies(&steps, &Layout::SEPARATE);
        assert_eq!(d, vec![vec![], vec![], vec![], vec![2]]);
    }
}
