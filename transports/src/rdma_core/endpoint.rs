//! [`RdmaEndpoint`]: the links of one rank over one fabric, the setup handshake, and the
//! wait.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::core::{ctx, ctx_parts, Core, Op, Peer, Remote};
use super::dmabuf::DmaBuf;
use super::fabric::{Access, Completion, Fabric};
use super::link::{lock, RdmaLink};
use super::wire::{Hello, HELLO_LEN, MAX_SLOTS, MAX_SLOT_BYTES};
use crate::auth::JobKey;
use crate::link::{Endpoint, Link, LinkError};
use crate::plugin::SetupError;

/// Sizes of an endpoint's rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RdmaParams {
    /// Receive slots per peer (credits a sender starts with), at most 256.
    pub slots: usize,
    /// Bytes per slot (the largest single RDMA write of the stream), below 2 MiB.
    pub slot_bytes: usize,
    /// How long setup may take, and how long a transfer waits on a silent peer.
    pub timeout: Duration,
}

impl RdmaParams {
    /// `slots` slots sharing `ring_bytes` (clamped to what the wire format carries).
    pub fn new(ring_bytes: usize, slots: usize, timeout: Duration) -> RdmaParams {
        let slots = slots.clamp(2, MAX_SLOTS);
        let slot_bytes = (ring_bytes / slots).clamp(4096, MAX_SLOT_BYTES / 2);
        RdmaParams {
            slots,
            slot_bytes,
            timeout,
        }
    }
}

/// Spare receive buffers posted during setup beyond one per peer (messages from strangers
/// that speak the fabric are checked and dropped; their buffer is posted again).
const SPARE_RECVS: usize = 4;

/// One rank's links over a [`Fabric`]. See the module docs of [`super`].
pub struct RdmaEndpoint<F: Fabric> {
    rank: usize,
    world: usize,
    core: Arc<Mutex<Core<F>>>,
    links: Vec<Option<RdmaLink<F>>>,
    waker: Arc<dyn Fn() + Send + Sync>,
}

impl<F: Fabric> RdmaEndpoint<F> {
    /// Connects to `peers` over `fabric` (which already reaches each of them by rank): sends
    /// each a hello with the job token and where it may write, tagged under the job key, and
    /// waits for theirs (refusing any without a valid tag), within
    /// `params.timeout`. `transport` names the transport in errors.
    pub fn connect(
        transport: &'static str,
        fabric: F,
        rank: usize,
        world: usize,
        (token, key): (u64, &JobKey),
        peers: &[usize],
        params: RdmaParams,
    ) -> Result<RdmaEndpoint<F>, SetupError> {
        let failed = |detail: String| SetupError::Failed { transport, detail };
        let mut core = Core::new(fabric, world, params.timeout);
        let remote_write = Access {
            remote_read: false,
            remote_write: true,
        };
        let mut hellos = Vec::with_capacity(peers.len());
        for &peer in peers {
            if peer >= world || peer == rank {
                return Err(failed(format!("rank {peer} is not a peer of rank {rank}")));
            }
            let rx = DmaBuf::new(params.slots * params.slot_bytes);
            let ctrl_dst = DmaBuf::new(64);
            let ctrl_src = DmaBuf::new(64);
            let reg = |c: &mut Core<F>, b: &DmaBuf, a| {
                c.register_owned(b, a)
                    .map_err(|e| failed(format!("registering memory: {e}")))
            };
            let (ring_key, _, ring_base) = reg(&mut core, &rx, remote_write)?;
            let (ctrl_key, _, ctrl_base) = reg(&mut core, &ctrl_dst, remote_write)?;
            let (_, src_desc, _) = reg(&mut core, &ctrl_src, Access::default())?;
            hellos.push(Hello {
                token,
                rank: rank as u32,
                world: world as u32,
                slots: params.slots as u32,
                slot_bytes: params.slot_bytes as u32,
                ring_addr: ring_base,
                ring_key,
                ctrl_addr: ctrl_base,
                ctrl_key,
            });
            core.peers[peer] = Some(Peer {
                peer,
                remote: None,
                tx: None,
                tx_seq: 0,
                granted: 0,
                tx_busy: Vec::new(),
                pending_announce: VecDeque::new(),
                rx,
                slots: params.slots,
                slot_bytes: params.slot_bytes,
                rx_len: vec![None; params.slots],
                rx_head: 0,
                rx_off: 0,
                credited: 0,
                ctrl_src: (ctrl_src, src_desc),
                ctrl_dst,
                acks_to_send: 0,
                close_sent: false,
                posted: 0,
                acks_in: 0,
                held: VecDeque::new(),
                announced: VecDeque::new(),
                closed: false,
                peer_closed: false,
                fail: None,
                last_heard: Instant::now(),
                probe_inflight: false,
                ctrl_inflight: 0,
            });
        }
        handshake(&mut core, rank, peers, &hellos, (token, key), params).map_err(failed)?;
        let core = Arc::new(Mutex::new(core));
        let waker = lock(&core).fabric.waker();
        let links = (0..world)
            .map(|p| {
                peers.contains(&p).then(|| RdmaLink {
                    peer: p,
                    core: core.clone(),
                    in_flight: params.slots * params.slot_bytes,
                })
            })
            .collect();
        Ok(RdmaEndpoint {
            rank,
            world,
            core,
            links,
            waker,
        })
    }

    /// The registration cache's counters (registrations made, hits, evictions).
    pub fn cache_stats(&self) -> super::CacheStats {
        lock(&self.core).cache.stats()
    }
}

/// Exchanges hellos with every peer (see [`RdmaEndpoint::connect`]); fills in each peer's
/// [`Remote`] and send staging.
fn handshake<F: Fabric>(
    core: &mut Core<F>,
    rank: usize,
    peers: &[usize],
    hellos: &[Hello],
    (token, key): (u64, &JobKey),
    params: RdmaParams,
) -> Result<(), String> {
    let world = core.peers.len();
    let nrecv = peers.len() + SPARE_RECVS;
    let out = DmaBuf::new(peers.len() * HELLO_LEN);
    let inp = DmaBuf::new(nrecv * HELLO_LEN);
    let (_, out_desc, _) = core
        .register_owned(&out, Access::default())
        .map_err(|e| format!("registering memory: {e}"))?;
    let (_, in_desc, _) = core
        .register_owned(&inp, Access::default())
        .map_err(|e| format!("registering memory: {e}"))?;
    for (i, h) in hellos.iter().enumerate() {
        // SAFETY: `out` holds `peers.len()` hellos; nothing else writes it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                h.encode(key, peers[i] as u32).as_ptr(),
                out.at(i * HELLO_LEN),
                HELLO_LEN,
            )
        };
    }
    let deadline = Instant::now() + params.timeout;
    let post_recv = |core: &mut Core<F>, i: usize| -> Result<(), String> {
        loop {
            // SAFETY: `inp` is kept by the core (moved into `core.keep` below, before any
            // return) until after the fabric closes, and slot `i` is not read until its
            // completion.
            match unsafe {
                core.fabric.post_recv(
                    inp.at(i * HELLO_LEN),
                    HELLO_LEN,
                    in_desc,
                    ctx(Op::HelloRecv, usize::MAX >> 36, i as u32),
                )
            } {
                Ok(true) => return Ok(()),
                Ok(false) if Instant::now() < deadline => {
                    core.progress();
                }
                Ok(false) => return Err("receive queue full during setup".into()),
                Err(e) => return Err(format!("posting a receive: {e}")),
            }
        }
    };
    let res = (|| {
        for i in 0..nrecv {
            post_recv(core, i)?;
        }
        // Which hellos are still to send (and when to retry a failed one), which came.
        let mut to_send: Vec<Option<Instant>> = vec![Some(Instant::now()); peers.len()];
        let mut sent = vec![false; peers.len()];
        let mut got: Vec<Option<Hello>> = vec![None; peers.len()];
        let mut refused: Vec<String> = Vec::new();
        loop {
            for (i, &peer) in peers.iter().enumerate() {
                if to_send[i].is_some_and(|t| Instant::now() >= t) {
                    // SAFETY: `out` lives in the core until after the fabric closes.
                    match unsafe {
                        core.fabric.send(
                            peer,
                            out.at(i * HELLO_LEN),
                            HELLO_LEN,
                            out_desc,
                            ctx(Op::HelloSend, peer, i as u32),
                        )
                    } {
                        Ok(true) => to_send[i] = None,
                        Ok(false) => {}
                        Err(e) => return Err(format!("sending the hello to rank {peer}: {e}")),
                    }
                }
            }
            if sent.iter().all(|&s| s) && got.iter().all(Option::is_some) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(setup_timeout(peers, &got, &sent, &refused, params.timeout));
            }
            core.progress();
            let events = std::mem::take(&mut core.events);
            for ev in events {
                match ev {
                    Completion::Done { ctx: c, len } => match ctx_parts(c) {
                        (Some(Op::HelloSend), _, i) => sent[i as usize] = true,
                        (Some(Op::HelloRecv), _, i) => {
                            let i = i as usize;
                            let mut b = [0u8; HELLO_LEN];
                            let n = len.min(HELLO_LEN);
                            // SAFETY: receive slot `i` completed; it is ours until re-posted.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    inp.at(i * HELLO_LEN),
                                    b.as_mut_ptr(),
                                    n,
                                )
                            };
                            match Hello::decode(
                                &b[..if len == HELLO_LEN { HELLO_LEN } else { n }],
                                token,
                                world,
                                key,
                                rank as u32,
                            ) {
                                Ok(h) => match peers.iter().position(|&p| p == h.rank as usize) {
                                    Some(k) if got[k].is_none() => got[k] = Some(h),
                                    _ => refused.push(format!(
                                        "a hello from rank {} (not expected)",
                                        h.rank
                                    )),
                                },
                                Err(why) => {
                                    tracing::warn!("rdma setup: dropped a message that is not a hello of this job: {why}");
                                    refused.push(why);
                                }
                            }
                            post_recv(core, i)?;
                        }
                        _ => core.events.push(ev),
                    },
                    Completion::Failed { ctx: c, ref error } => match ctx_parts(c) {
                        (Some(Op::HelloSend), peer, i) => {
                            // The peer may not be listening yet: retry until the deadline.
                            tracing::debug!("rdma setup: hello to rank {peer}: {error}; retrying");
                            to_send[i as usize] = Some(Instant::now() + Duration::from_millis(50));
                        }
                        (Some(Op::HelloRecv), _, i) => post_recv(core, i as usize)?,
                        _ => core.events.push(ev),
                    },
                    Completion::Remote { .. } => {}
                }
            }
            core.nap(Duration::from_millis(5));
        }
        install_remotes(core, peers, &got)?;
        Ok(())
    })();
    core.keep.push(out);
    core.keep.push(inp);
    res
}

/// The error of a hello exchange that ran out of time: who did not answer, who was not
/// reached, and what was refused.
fn setup_timeout(
    peers: &[usize],
    got: &[Option<Hello>],
    sent: &[bool],
    refused: &[String],
    timeout: Duration,
) -> String {
    let missing: Vec<usize> = peers
        .iter()
        .enumerate()
        .filter(|(i, _)| got[*i].is_none())
        .map(|(_, &p)| p)
        .collect();
    let unsent: Vec<usize> = peers
        .iter()
        .enumerate()
        .filter(|(i, _)| !sent[*i])
        .map(|(_, &p)| p)
        .collect();
    let mut why = format!(
        "setup timed out after {timeout:?}: no hello from ranks {missing:?}, hello not \
         delivered to ranks {unsent:?}"
    );
    if !refused.is_empty() {
        why += &format!("; refused: {}", refused.join("; "));
    }
    why
}

/// Records each peer's rings from its hello (`got[i]` for `peers[i]`, all present) and
/// registers this side's send staging for it.
fn install_remotes<F: Fabric>(
    core: &mut Core<F>,
    peers: &[usize],
    got: &[Option<Hello>],
) -> Result<(), String> {
    for (i, &peer) in peers.iter().enumerate() {
        let h = got[i].expect("all hellos came");
        let p = core.peers[peer].as_mut().expect("peer state");
        let tx = DmaBuf::new(h.slots as usize * h.slot_bytes as usize);
        p.remote = Some(Remote {
            ring_addr: h.ring_addr,
            ring_key: h.ring_key,
            ctrl_addr: h.ctrl_addr,
            ctrl_key: h.ctrl_key,
            slots: h.slots as usize,
            slot_bytes: h.slot_bytes as usize,
        });
        p.granted = u64::from(h.slots);
        p.tx_busy = vec![false; h.slots as usize];
        let (_, desc, _) = core
            .register_owned(&tx, Access::default())
            .map_err(|e| format!("registering memory: {e}"))?;
        core.peers[peer].as_mut().expect("peer state").tx = Some((tx, desc));
    }
    Ok(())
}

impl<F: Fabric> Endpoint for RdmaEndpoint<F> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn link(&mut self, peer: usize) -> Option<&mut dyn Link> {
        self.links
            .get_mut(peer)?
            .as_mut()
            .map(|l| l as &mut dyn Link)
    }

    fn needs_progress(&mut self) -> bool {
        lock(&self.core).needs_progress()
    }

    fn activity_token(&self) -> u64 {
        lock(&self.core).activity.load(Ordering::SeqCst)
    }

    fn wait(&mut self, token: u64, timeout: Duration) -> Result<(), LinkError> {
        let mut c = lock(&self.core);
        if c.activity.load(Ordering::SeqCst) != token || c.progress() {
            return Ok(());
        }
        if let Err(e) = c.fabric.wait(timeout) {
            return Err(LinkError::Io {
                peer: self.rank,
                source: std::io::Error::other(e.to_string()),
            });
        }
        c.progress();
        Ok(())
    }

    fn counters(&self) -> crate::link::EndpointCounters {
        let s = self.cache_stats();
        crate::link::EndpointCounters {
            registrations: s.registrations,
            reg_hits: s.hits,
            reg_evictions: s.evictions,
        }
    }

    fn interrupter(&self) -> Arc<dyn Fn() + Send + Sync> {
        let activity = lock(&self.core).activity.clone();
        let waker = self.waker.clone();
        Arc::new(move || {
            activity.fetch_add(1, Ordering::SeqCst);
            waker();
        })
    }

    fn close_all(&mut self) {
        for l in self.links.iter_mut().flatten() {
            l.close();
        }
        (self.waker)();
    }
}

impl<F: Fabric> Drop for RdmaEndpoint<F> {
    fn drop(&mut self) {
        self.close_all();
        // Let the close messages leave before the fabric closes (bounded).
        let deadline = Instant::now() + Duration::from_millis(200);
        let mut c = lock(&self.core);
        while Instant::now() < deadline
            && c.peers
                .iter()
                .flatten()
                .any(|p| p.remote.is_some() && p.fail.is_none() && !p.close_sent)
        {
            c.progress();
            c.nap(Duration::from_millis(5));
        }
        c.progress();
    }
}
