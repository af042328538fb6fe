//! `SIGUSR1` dumps: a registry of the live recorders that have a dump directory (weak
//! references, so a registered communicator is still dropped as usual) and one background
//! thread that writes their dumps when the signal arrives. The signal handler itself (from
//! `signal-hook`) only wakes that thread; all I/O happens on the thread. The handler and the
//! thread are installed when the first communicator with `FERROCOLL_FR_DIR` is made.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::{lock, DumpReason, Recorder};

/// Recorders that dump on `SIGUSR1`.
static LIVE: Mutex<Vec<Weak<Recorder>>> = Mutex::new(Vec::new());

/// Whether the signal thread runs (set once, by the first registration).
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Adds `r` to the recorders dumped on `SIGUSR1` (forgetting dropped ones), and installs the
/// handler and its thread the first time.
pub(super) fn register(r: &Arc<Recorder>) {
    {
        let mut live = lock(&LIVE);
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(r));
    }
    INSTALLED.get_or_init(install);
}

/// The live registered recorders.
fn live() -> Vec<Arc<Recorder>> {
    lock(&LIVE).iter().filter_map(Weak::upgrade).collect()
}

/// Writes a `signal` dump of every live registered recorder into its directory; returns how
/// many were written. Failures are logged, never raised.
pub(super) fn dump_all() -> usize {
    let mut written = 0;
    for r in live() {
        let Some(dir) = &r.dir else { continue };
        match r.dump(dir, DumpReason::Signal, None) {
            Ok(path) => {
                written += 1;
                tracing::info!(rank = r.rank, "flight record written to {}", path.display());
            }
            Err(e) => tracing::warn!(rank = r.rank, "flight recorder dump failed: {e}"),
        }
    }
    written
}

/// Installs the `SIGUSR1` handler and starts the thread that dumps; `false` (and a warning)
/// when either cannot be had.
fn install() -> bool {
    let mut signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1]) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("flight recorder: no SIGUSR1 handler: {e}");
            return false;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("ferrocoll-fr".into())
        .spawn(move || {
            for _ in signals.forever() {
                dump_all();
            }
        });
    match spawned {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!("flight recorder: no signal thread: {e}");
            false
        }
    }
}
