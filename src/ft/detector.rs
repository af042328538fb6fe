//! The detector thread: heartbeats out, heartbeats in, silence and vanished processes
//! become suspicions (see the module docs of `ft`).

use std::time::{Duration, Instant};

use super::wire::Kind;
use super::{lock, Health, K};

/// The heartbeat period for a timeout: a sixth of it, between 5 ms and 500 ms.
pub(super) fn tick(hb_timeout: Duration) -> Duration {
    (hb_timeout / 6).clamp(Duration::from_millis(5), Duration::from_millis(500))
}

/// The ranks `r` heartbeats to (`dir` = 1) or watches (`dir` = world − 1): its next or
/// previous `K` on the ring.
fn ring(r: usize, world: usize, dir: usize) -> impl Iterator<Item = usize> {
    (1..=K.min(world.saturating_sub(1))).map(move |i| (r + i * dir) % world)
}

fn send(h: &Health, to: usize, kind: &Kind) {
    if let Some(a) = h.addrs.get(to).copied().flatten() {
        let _ = h.socket.send_to(&h.datagram(kind.clone()), a);
    }
}

/// Tells every peer that this rank leaves cleanly (three times: datagrams can be lost).
pub(super) fn goodbye(h: &Health) {
    for _ in 0..3 {
        (0..h.world)
            .filter(|&r| r != h.rank)
            .for_each(|r| send(h, r, &Kind::Goodbye));
    }
}

/// The detector loop, until the communicator is dropped.
pub(super) fn run(h: &Health, local_pids: &[Option<i32>]) {
    let period = tick(h.hb_timeout);
    let start = Instant::now();
    let mut last_seen = vec![start; h.world];
    let mut next_beat = start;
    let mut dropped = 0u64;
    let mut buf = [0u8; 65536];
    let watched: Vec<usize> = ring(h.rank, h.world, h.world - 1).collect();
    while !h.stop.load(std::sync::atomic::Ordering::Acquire) {
        // Receive until the next heartbeat is due (the socket's read timeout is one period).
        match h.socket.recv_from(&mut buf) {
            // The wake-up a dropping communicator sends itself.
            Ok((0, _)) => {}
            Ok((n, from)) => match h.receive(&buf[..n]) {
                Ok(Some(d)) => {
                    last_seen[d.from] = Instant::now();
                    h.on_datagram(d);
                }
                Ok(None) => {}
                Err(why) => {
                    dropped += 1;
                    if dropped == 1 {
                        tracing::warn!(rank = h.rank, %from, "dropped a bad heartbeat: {why}");
                    }
                }
            },
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => {
                tracing::warn!(rank = h.rank, "heartbeat socket failed: {e}");
                std::thread::sleep(period);
            }
        }
        let now = Instant::now();
        if now < next_beat {
            continue;
        }
        next_beat = now + period;
        beat(h);
        let (finished, departed, suspects) = {
            let st = lock(&h.st);
            (st.finished, st.departed.clone(), st.suspects.clone())
        };
        if finished {
            continue;
        }
        let mut failed: Vec<usize> = watched
            .iter()
            .copied()
            .filter(|r| !departed.contains(r) && !suspects.contains(r))
            .filter(|&r| h.addrs[r].is_some() && now.duration_since(last_seen[r]) > h.hb_timeout)
            .collect();
        failed.extend(
            local_pids
                .iter()
                .enumerate()
                .filter(|&(r, p)| {
                    r != h.rank && !departed.contains(&r) && !suspects.contains(&r) && p.is_some()
                })
                .filter(|&(_, p)| p.is_some_and(|pid| pid > 0 && gone(pid)))
                .map(|(r, _)| r),
        );
        failed.sort_unstable();
        failed.dedup();
        if !failed.is_empty() {
            tracing::warn!(rank = h.rank, "ranks {failed:?} stopped answering");
            h.revoke(h.rank, &failed);
        }
    }
}

/// Whether a process on this host is gone (exited, or a zombie).
fn gone(pid: i32) -> bool {
    ferrocoll_transports::shm::process_gone(pid) && pid as u32 != std::process::id()
}

/// One heartbeat period's sends: heartbeats to the next ranks, or, once revoked, the revoke
/// to everyone not known failed (so a lost revoke datagram is resent).
fn beat(h: &Health) {
    if h.is_revoked() {
        let st = lock(&h.st);
        if st.finished {
            return;
        }
        let (by, suspects) = (
            st.revoked_by.as_ref().map_or(h.rank, |(b, _)| *b),
            st.suspects.clone(),
        );
        drop(st);
        h.flood(by, &suspects);
    } else {
        for r in ring(h.rank, h.world, 1) {
            send(h, r, &Kind::Heartbeat);
        }
    }
}
