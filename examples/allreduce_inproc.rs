//! Four ranks as threads of this process all-reduce a vector and print the result.
//!
//! `cargo run --example allreduce_inproc`

use ferrocoll::{ReduceOp, World};

fn main() -> ferrocoll::Result<()> {
    let results = World::new(4).run(|comm| -> ferrocoll::Result<Vec<f32>> {
        // Rank r contributes [r, r+1, r+2, r+3].
        let r = comm.rank() as f32;
        let mut grads = vec![r, r + 1.0, r + 2.0, r + 3.0];
        comm.all_reduce(&mut grads, ReduceOp::Sum)?;
        Ok(grads)
    })?;
    for (rank, grads) in results.into_iter().enumerate() {
        println!("rank {rank}: {:?}", grads?);
    }
    Ok(())
}
