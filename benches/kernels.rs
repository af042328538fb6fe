//! Reduction kernel throughput (being written).
fn main() {}
