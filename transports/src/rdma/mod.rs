//! The `rdma` transport: the [`crate::rdma_core`] protocol over ibverbs RC queue pairs
//! through `rdma-sys`, feature `rdma`.
//!
//! - **Device, port, GID** from `FERROCOLL_IB_HCA` ([`hca`], NCCL's `NCCL_IB_HCA` syntax
//!   plus an optional GID index); the first device it selects with an active port.
//! - **No device**: `ibv_get_device_list` returns NULL with `ENOSYS` on a kernel without
//!   InfiniBand, or no devices; [`TransportFactory::availability`] then says why, `auto`
//!   skips `rdma` with one INFO line, and a forced `rdma` fails at set-up with
//!   [`SetupError::Unavailable`] carrying that reason (no waiting involved).
//! - **Connection through the store**: `prepare` opens the device and creates one RC queue
//!   pair per other rank; the address blob carries the port's LID, the GID and, for every
//!   rank, the number of the queue pair meant for it. `connect` takes the peers' blobs,
//!   brings each queue pair to RTS against the peer's queue pair for this rank, and runs the
//!   core's hello exchange (job token, ring addresses and keys) over them.
//! - **Limits**: written against the verbs API and built in CI, never run on hardware here
//!   (no RDMA device or soft-RoCE in the project's kernels). A hello sent before the peer's
//!   queue pair reached RTR is retried by the hardware (retry count 7, timeout 14: about
//!   half a second); ranks that reach `connect` further apart than that fail set-up with a
//!   completion error instead of waiting.

pub mod device;
pub mod hca;
mod verbs;

use std::time::Duration;

pub use verbs::Verbs;

use crate::link::{Endpoint, LinkCaps};
use crate::plugin::{
    AddressBlob, Availability, PreparedTransport, SetupCtx, SetupError, TransportFactory,
};
use crate::rdma_core::{RdmaEndpoint, RdmaParams};
use hca::HcaFilter;

/// The transport's name.
pub const NAME: &str = "rdma";
/// Version of the address blob.
pub const BLOB_VERSION: u8 = 1;
/// The environment variable selecting devices.
pub const HCA_ENV: &str = "FERROCOLL_IB_HCA";
/// Receive slots per peer.
pub const SLOTS: usize = 16;

/// `FERROCOLL_IB_HCA` as set (empty when unset).
fn hca_spec() -> String {
    std::env::var(HCA_ENV).unwrap_or_default()
}

/// Opens the device `FERROCOLL_IB_HCA` selects, or says why not.
fn open_device() -> Result<device::Device, String> {
    let spec = hca_spec();
    let filter = HcaFilter::parse(&spec).map_err(|e| format!("{HCA_ENV}={spec:?}: {e}"))?;
    device::open_first(&filter, &spec)
}

/// The `rdma` transport's factory.
#[derive(Debug, Default, Clone, Copy)]
pub struct RdmaFactory;

impl TransportFactory for RdmaFactory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn crosses_hosts(&self) -> bool {
        true
    }

    fn availability(&self) -> Availability {
        match open_device() {
            Ok(_) => Availability::Available,
            Err(why) => Availability::Unavailable(why),
        }
    }

    fn caps(&self) -> LinkCaps {
        LinkCaps {
            single_copy: true,
            streaming_stores: false,
            registered_memory: true,
            max_in_flight: None,
        }
    }

    fn prepare(&self, ctx: &SetupCtx) -> Result<Box<dyn PreparedTransport>, SetupError> {
        let unavailable = |why: String| SetupError::Unavailable {
            transport: NAME,
            why,
        };
        let dev = open_device().map_err(unavailable)?;
        let verbs = Verbs::new(dev, ctx.rank, ctx.world).map_err(|e| SetupError::Failed {
            transport: NAME,
            detail: e.to_string(),
        })?;
        let port = &verbs.device().port;
        let mut payload = Vec::with_capacity(18 + 4 * ctx.world);
        payload.extend_from_slice(&port.lid.to_le_bytes());
        payload.extend_from_slice(&port.gid);
        for p in 0..ctx.world {
            payload.extend_from_slice(&verbs.qpn(p).to_le_bytes());
        }
        tracing::info!(
            "rdma: rank {} on {} port {} GID index {}",
            ctx.rank,
            port.device,
            port.port,
            port.gid_index
        );
        Ok(Box::new(RdmaPrepared {
            blob: AddressBlob::new(NAME, BLOB_VERSION, &payload),
            verbs,
            ctx: ctx.clone(),
        }))
    }
}

/// A peer's blob: (LID, GID, its queue-pair number for `me`).
pub fn decode_blob(
    blob: &AddressBlob,
    peer: usize,
    me: usize,
    world: usize,
) -> Result<(u16, [u8; 16], u32), SetupError> {
    let b = blob.open(NAME, BLOB_VERSION, peer)?;
    let bad = |detail: String| SetupError::BadAddress {
        transport: NAME,
        peer,
        detail,
    };
    if b.len() != 18 + 4 * world {
        return Err(bad(format!(
            "address of {} bytes, {} expected for a world of {world}",
            b.len(),
            18 + 4 * world
        )));
    }
    let lid = u16::from_le_bytes([b[0], b[1]]);
    let mut gid = [0u8; 16];
    gid.copy_from_slice(&b[2..18]);
    let q = &b[18 + 4 * me..22 + 4 * me];
    let qpn = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
    if qpn == 0 {
        return Err(bad(format!("no queue pair for rank {me}")));
    }
    Ok((lid, gid, qpn))
}

struct RdmaPrepared {
    blob: AddressBlob,
    verbs: Verbs,
    ctx: SetupCtx,
}

impl PreparedTransport for RdmaPrepared {
    fn address(&self) -> AddressBlob {
        self.blob.clone()
    }

    fn connect(
        mut self: Box<Self>,
        peers: &[(usize, AddressBlob)],
    ) -> Result<Box<dyn Endpoint>, SetupError> {
        let ctx = self.ctx.clone();
        let mut ranks = Vec::with_capacity(peers.len());
        for (peer, blob) in peers {
            if *peer >= ctx.world || *peer == ctx.rank {
                return Err(SetupError::BadAddress {
                    transport: NAME,
                    peer: *peer,
                    detail: "not a peer".into(),
                });
            }
            let (lid, gid, qpn) = decode_blob(blob, *peer, ctx.rank, ctx.world)?;
            self.verbs
                .connect_peer(*peer, lid, gid, qpn)
                .map_err(|e| SetupError::Failed {
                    transport: NAME,
                    detail: e.to_string(),
                })?;
            ranks.push(*peer);
        }
        let params = RdmaParams::new(
            ctx.ring_bytes.max(SLOTS * 4096),
            SLOTS,
            ctx.timeout.max(Duration::from_millis(100)),
        );
        let ep = RdmaEndpoint::connect(
            NAME,
            self.verbs,
            ctx.rank,
            ctx.world,
            (ctx.token, &ctx.key),
            &ranks,
            params,
        )?;
        Ok(Box::new(ep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_device_rdma_is_unavailable_with_the_reason_quickly() {
        let t0 = std::time::Instant::now();
        let a = RdmaFactory.availability();
        assert!(t0.elapsed() < Duration::from_secs(2));
        if std::path::Path::new("/sys/class/infiniband").exists() {
            eprintln!("SKIPPED: this machine has RDMA devices");
            return;
        }
        let Availability::Unavailable(why) = a else {
            panic!("no device, yet available");
        };
        assert!(
            why.contains("no RDMA support") || why.contains("no RDMA devices"),
            "{why}"
        );
    }

    #[test]
    fn bad_blobs_are_refused_naming_the_peer() {
        let good = {
            let mut p = vec![0u8; 18];
            for q in [7u32, 0, 9] {
                p.extend_from_slice(&q.to_le_bytes());
            }
            AddressBlob::new(NAME, BLOB_VERSION, &p)
        };
        assert_eq!(decode_blob(&good, 0, 2, 3).unwrap().2, 9);
        let e = decode_blob(&good, 0, 1, 3).unwrap_err();
        assert!(e.to_string().contains("no queue pair for rank 1"), "{e}");
        let short = AddressBlob(good.0[..good.0.len() - 1].to_vec());
        assert!(matches!(
            decode_blob(&short, 4, 2, 3),
            Err(SetupError::BadAddress { peer: 4, .. })
        ));
        let v2 = AddressBlob::new(NAME, BLOB_VERSION + 1, &good.0[6..]);
        assert!(decode_blob(&v2, 1, 2, 3)
            .unwrap_err()
            .to_string()
            .contains("version"));
        let other = AddressBlob::new("ofi", 1, &good.0[6..]);
        assert!(decode_blob(&other, 1, 2, 3).is_err());
    }
}
