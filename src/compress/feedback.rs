//! Error-feedback state, one entry per tensor under a key the caller chooses.

use std::collections::HashMap;

use super::Codec;
use crate::error::{Error, Result};

/// What one key's state was made for, and the state itself.
#[derive(Debug)]
pub(super) struct Entry {
    codec: Codec,
    len: usize,
    shape: Option<(usize, usize)>,
    world: usize,
    /// What this rank's encoding dropped (worker side), per element of the tensor.
    pub(super) worker: Vec<f32>,
    /// What re-encoding the reduced shard dropped (server side), at this rank's shard
    /// positions (the others stay 0).
    pub(super) server: Vec<f32>,
    /// PowerSGD's Q (cols × rank, row-major), warm-started from the previous step; empty
    /// until the first step.
    pub(super) q: Vec<f32>,
    /// `Some((chunk, rank))` when the worker residual is known to be +0 at every position of
    /// this rank's chunks under that cut (a quantised all-reduce consumed them and nothing
    /// wrote them since), so the next all-reduce need not read it there.
    pub(super) own_clear: Option<(usize, usize)>,
}

/// Error-feedback state of the compressed collectives: per key, the residuals a lossy codec
/// dropped (added to the next step's gradient) and PowerSGD's warm-start Q.
///
/// A key belongs to one tensor: using it with another length, shape, codec or world size is
/// an [`Error::FeedbackMismatch`] (call [`ErrorFeedback::reset`] first to reuse it). Each rank
/// keeps its own `ErrorFeedback`; ranks must pass the same keys in the same order.
#[derive(Debug)]
pub struct ErrorFeedback {
    enabled: bool,
    /// Elements per segment; `None`: the codec's default.
    pub(super) segment_elems: Option<usize>,
    entries: HashMap<String, Entry>,
}

impl Default for ErrorFeedback {
    fn default() -> Self {
        ErrorFeedback::new()
    }
}

impl ErrorFeedback {
    /// State with error feedback on (residuals are carried to the next step).
    pub fn new() -> ErrorFeedback {
        ErrorFeedback {
            enabled: true,
            segment_elems: None,
            entries: HashMap::new(),
        }
    }

    /// State with error feedback off: nothing is carried between steps (what a codec drops
    /// is lost; PowerSGD still warm-starts Q). For comparisons and ablations.
    pub fn disabled() -> ErrorFeedback {
        ErrorFeedback {
            enabled: false,
            ..ErrorFeedback::new()
        }
    }

    /// Cuts compressed collectives into segments of about `elems` elements (at least one
    /// scale block per rank), pipelined so that encoding overlaps the transfer. Default:
    /// 2¹⁸ elements for fp16, bf16 and fp8 (link-bound: a short pipeline tail), 2²⁰ for
    /// 1-bit and top-k (CPU-bound: fewer synchronisations); small values exercise the
    /// multi-segment paths in tests.
    pub fn segment_elems(mut self, elems: usize) -> ErrorFeedback {
        self.segment_elems = Some(elems.max(1));
        self
    }

    /// Whether residuals are carried between steps.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Forgets the state of `key`; returns whether it had any.
    pub fn reset(&mut self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Forgets every key.
    pub fn reset_all(&mut self) {
        self.entries.clear();
    }

    /// The worker-side residual of `key` (what this rank's last encoding dropped), if any.
    pub fn residual(&self, key: &str) -> Option<&[f32]> {
        self.entries.get(key).map(|e| e.worker.as_slice())
    }

    /// The state of `key` for this call, created on first use; a key made for another
    /// tensor is an error.
    pub(super) fn entry(
        &mut self,
        key: &str,
        codec: Codec,
        len: usize,
        shape: Option<(usize, usize)>,
        world: usize,
    ) -> Result<&mut Entry> {
        let e = self.entries.entry(key.to_owned()).or_insert_with(|| Entry {
            codec,
            len,
            shape,
            world,
            worker: Vec::new(),
            server: Vec::new(),
            q: Vec::new(),
            own_clear: None,
        });
        let mismatch = |what, expected: String, got: String| {
            Err(Error::FeedbackMismatch {
                key: key.to_owned(),
                what,
                expected,
                got,
            })
        };
        if e.len != len {
            return mismatch("length", e.len.to_string(), len.to_string());
        }
        if e.shape != shape {
            return mismatch("shape", format!("{:?}", e.shape), format!("{shape:?}"));
        }
        if e.codec != codec {
            return mismatch("codec", e.codec.to_string(), codec.to_string());
        }
        if e.world != world {
            return mismatch("world size", e.world.to_string(), world.to_string());
        }
        if self.enabled && codec.needs_error_feedback() && e.worker.len() != len {
            e.worker = vec![0.0; len];
            e.server = vec![0.0; len];
            e.own_clear = None;
        }
        Ok(e)
    }
}
