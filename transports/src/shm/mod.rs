//! Shared-memory links. Being written for issue 3.
