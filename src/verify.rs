//! Checking a collective's results: deterministic test data for every rank and the
//! expected output of every collective in every element type and operator, from a
//! sequential reference, with the error each element may carry (reductions in low precision
//! depend on their order). `ferrocoll-probe` fills its buffers with [`test_input`] and counts
//! wrong elements with [`count_wrong`], like nccl-tests' data check; tests and tools that
//! run collectives through any interface can do the same.

pub use crate::reference::{
    count_wrong, expected, expected_uneven, magnitudes, magnitudes_uneven, premultiplied,
    test_input,
};
