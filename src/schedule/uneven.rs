//! The layout of the uneven collectives: per-rank element counts and the displacements of
//! their blocks, checked once when a call is made.
//!
//! - **All-gather-v**: rank `r` contributes `counts[r]` elements; every rank's output holds
//!   them at `displs[r]`. The same layout on every rank.
//! - **Reduce-scatter-v**: rank `r` ends with `counts[r]` elements, the reduction of every
//!   rank's input block `r`, which lies at `displs[r]`. The same layout on every rank.
//! - **All-to-all-v**: this rank sends `counts[j]` elements from `displs[j]` of its input to
//!   rank `j`, and receives `recv_counts[j]` elements from rank `j` at `recv_displs[j]` of its
//!   output (`MPI_Alltoallv`). Each rank knows only its own sizes; a sender's `counts[j]` must
//!   equal rank `j`'s `recv_counts` entry for the sender.
//!
//! Displacements are in elements. Without displacements the blocks are packed in rank order
//! (prefix sums). Non-empty blocks of one buffer may not overlap, and every block's end must
//! be addressable; empty blocks may lie anywhere addressable (they touch nothing).

use super::deps::Place;
use super::{Collective, Layout};

/// Why a layout is refused. The schedule layer sits below [`crate::error`], so this is its
/// own type; it converts into the [`crate::Error`] variant of the same name
/// (`CountsLength`, `BlockOutOfRange`, `BlocksOverlap`), which is what callers see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// An array without one entry per rank.
    #[error("{array} has {got} entries for a world of {world} ranks")]
    CountsLength {
        /// The array.
        array: &'static str,
        /// Entries given.
        got: usize,
        /// The world size.
        world: usize,
    },
    /// A block whose end overflows.
    #[error("block {index} of {array} ends out of range")]
    BlockOutOfRange {
        /// The array.
        array: &'static str,
        /// The rank whose block it is.
        index: usize,
    },
    /// Two non-empty blocks of one buffer overlap.
    #[error("the blocks of ranks {a} and {b} overlap ({array})")]
    BlocksOverlap {
        /// The displacements array.
        array: &'static str,
        /// The lower rank.
        a: usize,
        /// The higher rank.
        b: usize,
    },
}

type Result<T> = std::result::Result<T, LayoutError>;
use LayoutError as Error;

/// Per-rank counts and displacements of an uneven collective (see the module docs for what
/// each array means per collective). Built and checked by [`Uneven::blocks`] and
/// [`Uneven::all_to_all`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Uneven {
    counts: Vec<usize>,
    displs: Vec<usize>,
    recv_counts: Vec<usize>,
    recv_displs: Vec<usize>,
}

/// Checks one array of blocks: `world` entries, ends addressable, non-empty blocks
/// disjoint; returns the displacements (packed prefix sums when `displs` is `None`).
fn check_blocks(
    world: usize,
    counts_name: &'static str,
    counts: &[usize],
    displs_name: &'static str,
    displs: Option<&[usize]>,
) -> Result<Vec<usize>> {
    let length = |array: &'static str, got: usize| Error::CountsLength { array, got, world };
    if counts.len() != world {
        return Err(length(counts_name, counts.len()));
    }
    let displs = match displs {
        Some(d) if d.len() != world => return Err(length(displs_name, d.len())),
        Some(d) => d.to_vec(),
        None => {
            let mut next = 0usize;
            let mut v = Vec::with_capacity(world);
            for (i, &c) in counts.iter().enumerate() {
                v.push(next);
                next = next.checked_add(c).ok_or(Error::BlockOutOfRange {
                    array: counts_name,
                    index: i,
                })?;
            }
            v
        }
    };
    // Ends addressable in elements (bytes are checked with the element size per call).
    for (i, (&d, &c)) in displs.iter().zip(counts).enumerate() {
        if d.checked_add(c).is_none_or(|e| e > isize::MAX as usize) {
            return Err(Error::BlockOutOfRange {
                array: displs_name,
                index: i,
            });
        }
    }
    let mut blocks: Vec<usize> = (0..world).filter(|&i| counts[i] > 0).collect();
    blocks.sort_by_key(|&i| (displs[i], i));
    for w in blocks.windows(2) {
        let (a, b) = (w[0], w[1]);
        if displs[a] + counts[a] > displs[b] {
            return Err(Error::BlocksOverlap {
                array: displs_name,
                a: a.min(b),
                b: a.max(b),
            });
        }
    }
    Ok(displs)
}

/// One past the last element of the blocks `(counts, displs)` (0 when all are empty).
fn extent(counts: &[usize], displs: &[usize]) -> usize {
    counts
        .iter()
        .zip(displs)
        .filter(|(c, _)| **c > 0)
        .map(|(c, d)| c + d)
        .max()
        .unwrap_or(0)
}

impl Uneven {
    /// The layout of all-gather-v (`displs`: where each rank's block lies in the output) or
    /// reduce-scatter-v (`displs`: where each rank's block lies in the input) over `world`
    /// ranks; packed in rank order when `displs` is `None`.
    ///
    /// Errors: [`LayoutError::CountsLength`] when an array does not have `world` entries,
    /// [`LayoutError::BlockOutOfRange`] when a block's end overflows, [`LayoutError::BlocksOverlap`]
    /// when two non-empty blocks overlap.
    pub fn blocks(world: usize, counts: &[usize], displs: Option<&[usize]>) -> Result<Uneven> {
        let displs = check_blocks(world, "counts", counts, "displs", displs)?;
        Ok(Uneven {
            counts: counts.to_vec(),
            displs,
            recv_counts: Vec::new(),
            recv_displs: Vec::new(),
        })
    }

    /// The layout of this rank's all-to-all-v over `world` ranks: what it sends to each rank
    /// (`send_counts` elements at `send_displs` of its input) and receives from each rank
    /// (`recv_counts` elements at `recv_displs` of its output); packed in rank order where
    /// the displacements are `None`. Errors as [`Uneven::blocks`].
    pub fn all_to_all(
        world: usize,
        send_counts: &[usize],
        send_displs: Option<&[usize]>,
        recv_counts: &[usize],
        recv_displs: Option<&[usize]>,
    ) -> Result<Uneven> {
        let displs = check_blocks(
            world,
            "send_counts",
            send_counts,
            "send_displs",
            send_displs,
        )?;
        let rdispls = check_blocks(
            world,
            "recv_counts",
            recv_counts,
            "recv_displs",
            recv_displs,
        )?;
        Ok(Uneven {
            counts: send_counts.to_vec(),
            displs,
            recv_counts: recv_counts.to_vec(),
            recv_displs: rdispls,
        })
    }

    /// Number of ranks the layout describes.
    pub fn world(&self) -> usize {
        self.counts.len()
    }

    /// The per-rank counts (all-to-all-v: what this rank sends to each).
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }

    /// Where each block lies (all-to-all-v: in this rank's input).
    pub fn displs(&self) -> &[usize] {
        &self.displs
    }

    /// All-to-all-v: what this rank receives from each rank (empty otherwise).
    pub fn recv_counts(&self) -> &[usize] {
        &self.recv_counts
    }

    /// All-to-all-v: where each received block lies in the output (empty otherwise).
    pub fn recv_displs(&self) -> &[usize] {
        &self.recv_displs
    }

    /// The sum of the counts (all-to-all-v: of what this rank sends).
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// Elements of `rank`'s input buffer in collective `kind`.
    pub fn input_len(&self, kind: Collective, rank: usize) -> usize {
        match kind {
            Collective::AllGatherV => self.counts.get(rank).copied().unwrap_or(0),
            _ => extent(&self.counts, &self.displs),
        }
    }

    /// Elements of `rank`'s output buffer in collective `kind`.
    pub fn output_len(&self, kind: Collective, rank: usize) -> usize {
        match kind {
            Collective::AllGatherV => extent(&self.counts, &self.displs),
            Collective::ReduceScatterV => self.counts.get(rank).copied().unwrap_or(0),
            _ => extent(&self.recv_counts, &self.recv_displs),
        }
    }

    /// Whether this rank moves no element in collective `kind` (its call can be skipped).
    pub fn moves_nothing(&self, kind: Collective) -> bool {
        match kind {
            // Every pair exchanges a message, empty or not (see the direct algorithm): only
            // a world of one moves nothing when its own block is empty.
            Collective::AllToAllV => {
                self.counts.len() <= 1
                    && self.counts.iter().all(|&c| c == 0)
                    && self.recv_counts.iter().all(|&c| c == 0)
            }
            _ => self.total() == 0,
        }
    }

    /// The in-place layout of `rank`: all-gather-v's input is the rank's block of the output,
    /// reduce-scatter-v's output the rank's block of the input, and all-to-all-v's input and
    /// output are the same buffer.
    pub fn in_place(&self, kind: Collective, rank: usize) -> Layout {
        let zero = Place { space: 0, off: 0 };
        let at = Place {
            space: 0,
            off: self.displs.get(rank).copied().unwrap_or(0),
        };
        match kind {
            Collective::AllGatherV => Layout {
                input: at,
                output: zero,
            },
            Collective::ReduceScatterV => Layout {
                input: zero,
                output: at,
            },
            _ => Layout {
                input: zero,
                output: zero,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_blocks_are_prefix_sums() {
        let u = Uneven::blocks(3, &[2, 0, 5], None).unwrap();
        assert_eq!(u.displs(), &[0, 2, 2]);
        assert_eq!(u.output_len(Collective::AllGatherV, 1), 7);
        assert_eq!(u.input_len(Collective::AllGatherV, 2), 5);
        assert_eq!(u.input_len(Collective::ReduceScatterV, 0), 7);
        assert_eq!(u.output_len(Collective::ReduceScatterV, 0), 2);
        assert!(!u.moves_nothing(Collective::AllGatherV));
        assert!(Uneven::blocks(2, &[0, 0], None)
            .unwrap()
            .moves_nothing(Collective::ReduceScatterV));
    }

    #[test]
    fn bad_layouts_are_typed_errors() {
        let e = Uneven::blocks(3, &[1, 2], None).unwrap_err();
        assert!(matches!(
            e,
            Error::CountsLength {
                array: "counts",
                got: 2,
                world: 3
            }
        ));
        let e = Uneven::blocks(2, &[1, 2], Some(&[0])).unwrap_err();
        assert!(matches!(
            e,
            Error::CountsLength {
                array: "displs",
                ..
            }
        ));
        let e = Uneven::blocks(3, &[2, 2, 1], Some(&[0, 1, 8])).unwrap_err();
        assert!(matches!(e, Error::BlocksOverlap { a: 0, b: 1, .. }), "{e}");
        // Empty blocks overlap nothing.
        Uneven::blocks(3, &[2, 0, 1], Some(&[0, 1, 2])).unwrap();
        let e = Uneven::blocks(2, &[1, usize::MAX], None).unwrap_err();
        assert!(matches!(e, Error::BlockOutOfRange { index: 1, .. }), "{e}");
        let e = Uneven::blocks(2, &[1, 1], Some(&[0, usize::MAX])).unwrap_err();
        assert!(matches!(e, Error::BlockOutOfRange { index: 1, .. }), "{e}");
        let e = Uneven::all_to_all(2, &[1, 1], None, &[1, 1], Some(&[3, 3])).unwrap_err();
        assert!(
            matches!(
                e,
                Error::BlocksOverlap {
                    array: "recv_displs",
                    ..
                }
            ),
            "{e}"
        );
    }
}
