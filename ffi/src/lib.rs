//! C ABI for ferrocoll (NCCL-shaped). Placeholder: issue 6 fills this crate.
