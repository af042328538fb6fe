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
        // Everything already received counts before judging: a local peer that said goodbye
        // and exited is gone by its pid, but its goodbye may still wait on the socket.
        h.drain(|r| last_seen[r] = Instant::now());
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

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, UdpSocket};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use ferrocoll_transports::auth::JobKey;

    use super::super::wire::{Datagram, Kind};
    use super::super::Health;
    use super::*;
    use crate::bootstrap::rendezvous::Control;

    /// A local peer says goodbye and exits: its pid is gone, and its goodbye waits on the
    /// socket behind a heartbeat. The detector must read the goodbye before judging the pid.
    #[test]
    fn a_goodbye_waiting_behind_a_heartbeat_is_read_before_the_pid_is_judged() {
        let bind = || UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let (mine, peer) = (bind(), bind());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let key = JobKey::new(b"a detector test's key");
        let control = Control {
            socket: mine.try_clone().unwrap(),
            rank: 0,
            world: 2,
            token: 7,
            key: key.clone(),
            addrs: vec![mine.local_addr().ok(), peer.local_addr().ok()],
            local_pids: vec![None, Some(child.id() as i32)],
        };
        for (seq, kind) in [(1, Kind::Heartbeat), (2, Kind::Goodbye)] {
            let d = Datagram {
                token: 7,
                seq,
                from: 1,
                kind,
            };
            peer.send_to(&d.encode(&key), mine.local_addr().unwrap())
                .unwrap();
        }
        // Runs a detector on `socket` for 300 ms: whether it revoked.
        let revokes = |socket: UdpSocket| {
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let h = Arc::new(Health::new(&control, socket, Duration::from_secs(60)));
            let (h2, pids) = (h.clone(), control.local_pids.clone());
            let t = std::thread::spawn(move || run(&h2, &pids));
            std::thread::sleep(Duration::from_millis(300));
            let revoked = h.is_revoked();
            h.stop.store(true, Ordering::Release);
            t.join().unwrap();
            revoked
        };
        assert!(
            !revokes(mine.try_clone().unwrap()),
            "a departed peer was declared failed"
        );
        // The same pid without a goodbye (a socket with nothing queued) is a failure.
        assert!(
            revokes(bind()),
            "a local peer whose process is gone was not declared failed"
        );
    }
}
