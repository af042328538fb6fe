//! The `ofi` transport: the [`crate::rdma_core`] protocol over libfabric (OpenFabrics
//! Interfaces), feature `ofi`.
//!
//! One RDM endpoint per rank (provider from `FERROCOLL_OFI_PROVIDER`, default
//! [`DEFAULT_PROVIDER`]; `tcp`, `sockets` on plain networks, `verbs;ofi_rxm`, `efa`, `cxi`
//! on real fabrics), bound to the job's interface (`SetupCtx::ip`, passed to `fi_getinfo`
//! as the source node), one completion queue with a wait fd, one address vector. The
//! [`crate::plugin::AddressBlob`] (`"ofi"`, version [`BLOB_VERSION`]) carries the provider
//! name and the endpoint's `fi_getname` address; `connect` refuses a blob of another
//! provider, inserts the peers into the address vector and runs the core's hello exchange
//! (job token, ring addresses and keys) over `fi_send`/`fi_recv`.
//!
//! What `tcp;ofi_rxm` (libfabric 1.17) offers, as seen here: `fi_writedata` with 8 bytes of
//! remote CQ data (`cq_data_size` 8) and target completions flagged `FI_REMOTE_CQ_DATA`
//! without posted receives, `fi_read`, and ordered RMA (`FI_ORDER_RMA_WAW`). `fi_info`
//! reports an `mr_mode` of none of `FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED |
//! FI_MR_PROV_KEY` for it (requested keys, offset addressing); the hints offer all four and
//! the code handles whichever the provider grants, virtual or offset addressing
//! ([`crate::rdma_core::MemRegion::remote_base`]). The upper 32 bits of the remote CQ data
//! carry the writer's rank (RDM completions do not name the source without `FI_SOURCE`),
//! the lower 32 the core's immediate, so providers with less than 8 bytes of CQ data are
//! refused as unavailable.
//!
//! Binding: an own C shim (`shim.c`, compiled by `build.rs` with the `cc` crate) with
//! hand-written `extern "C"` declarations (`ffi.rs`). Most of libfabric's API is `static
//! inline` (calls through ops tables), so it needs C wrappers anyway; the shim also builds
//! the hints and opens the fabric/domain/CQ/AV/endpoint chain in one call, so the Rust side
//! declares about twenty functions and no libfabric struct. bindgen would add libclang to
//! every `ofi` build, and `ofi-libfabric-sys` does not build against 1.17.

mod fabric;
mod ffi;

use std::time::Duration;

pub use fabric::OfiFabric;

use crate::link::{Endpoint, LinkCaps};
use crate::plugin::{
    AddressBlob, Availability, PreparedTransport, SetupCtx, SetupError, TransportFactory,
};
use crate::rdma_core::{RdmaEndpoint, RdmaParams};

/// The transport's name.
pub const NAME: &str = "ofi";
/// Version of the address blob.
pub const BLOB_VERSION: u8 = 1;
/// The provider used when `FERROCOLL_OFI_PROVIDER` is not set.
pub const DEFAULT_PROVIDER: &str = "tcp;ofi_rxm";
/// The environment variable naming the provider.
pub const PROVIDER_ENV: &str = "FERROCOLL_OFI_PROVIDER";
/// Receive slots per peer.
pub const SLOTS: usize = 16;

/// The provider this process uses.
pub fn provider() -> String {
    std::env::var(PROVIDER_ENV)
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_PROVIDER.to_string())
}

/// Encodes the blob's payload: provider name and endpoint address, each with its length.
fn encode_payload(prov: &str, addr: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(3 + prov.len() + addr.len());
    b.push(prov.len().min(255) as u8);
    b.extend_from_slice(&prov.as_bytes()[..prov.len().min(255)]);
    b.extend_from_slice(&(addr.len().min(65535) as u16).to_le_bytes());
    b.extend_from_slice(&addr[..addr.len().min(65535)]);
    b
}

/// Decodes a blob's payload into (provider, address), or what is wrong.
fn decode_payload(b: &[u8]) -> Result<(&str, &[u8]), String> {
    let n = *b.first().ok_or("empty payload")? as usize;
    let prov = b.get(1..1 + n).ok_or("truncated provider name")?;
    let prov = std::str::from_utf8(prov).map_err(|_| "provider name is not UTF-8")?;
    let l = b.get(1 + n..3 + n).ok_or("truncated address length")?;
    let len = u16::from_le_bytes([l[0], l[1]]) as usize;
    let addr = b.get(3 + n..3 + n + len).ok_or("truncated address")?;
    if b.len() != 3 + n + len {
        return Err(format!("{} trailing bytes", b.len() - 3 - n - len));
    }
    if addr.is_empty() {
        return Err("empty address".into());
    }
    Ok((prov, addr))
}

/// The `ofi` transport's factory.
#[derive(Debug, Default, Clone, Copy)]
pub struct OfiFactory;

impl OfiFactory {
    fn unavailable(prov: &str, why: String) -> SetupError {
        SetupError::Unavailable {
            transport: NAME,
            why: format!("libfabric provider {prov:?}: {why}"),
        }
    }
}

impl TransportFactory for OfiFactory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn crosses_hosts(&self) -> bool {
        true
    }

    /// Only over a hardware provider (`efa`, `cxi`, `verbs;ofi_rxm`, `psm3`, …): libfabric's
    /// socket providers (`tcp`, `sockets`, `udp`, `shm`, with or without a utility layer)
    /// emulate a fabric over the same sockets as the `tcp` transport, so `auto` keeps TCP
    /// there; naming `ofi` in `FERROCOLL_TRANSPORT` still uses them.
    fn auto_between_hosts(&self) -> bool {
        let p = provider();
        let core = p.split(';').next().unwrap_or("").trim();
        !matches!(core, "tcp" | "sockets" | "udp" | "shm")
    }

    fn availability(&self) -> Availability {
        let prov = provider();
        let Ok(c) = std::ffi::CString::new(prov.clone()) else {
            return Availability::Unavailable(format!("provider name {prov:?} has a NUL byte"));
        };
        let mut attr = ffi::FcAttr::zeroed();
        // SAFETY: valid C string and out-struct.
        let ret = unsafe { ffi::fc_probe(c.as_ptr(), std::ptr::null(), &mut attr) };
        if ret != 0 {
            return Availability::Unavailable(format!(
                "libfabric provider {prov:?} with RMA: {}",
                ffi::strerror(i64::from(ret))
            ));
        }
        if attr.cq_data_size < 8 {
            return Availability::Unavailable(format!(
                "libfabric provider {prov:?} carries {} bytes of remote CQ data, 8 needed",
                attr.cq_data_size
            ));
        }
        Availability::Available
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
        Ok(Box::new(self.prepare_ofi(ctx)?))
    }
}

impl OfiFactory {
    /// [`TransportFactory::prepare`] returning the concrete type.
    pub fn prepare_ofi(&self, ctx: &SetupCtx) -> Result<OfiPrepared, SetupError> {
        let prov = provider();
        let node = (!ctx.ip.is_unspecified()).then(|| ctx.ip.to_string());
        let fabric = OfiFabric::open(&prov, node.as_deref(), ctx.rank, ctx.world)
            .map_err(|e| Self::unavailable(&prov, e.message))?;
        let addr = fabric
            .name()
            .map_err(|e| Self::unavailable(&prov, e.message))?;
        let name = fabric.attr().prov_name();
        tracing::debug!(
            "ofi: rank {} on provider {name} (mr_mode {:#x}, cq data {} bytes)",
            ctx.rank,
            fabric.attr().mr_mode,
            fabric.attr().cq_data_size
        );
        let blob = AddressBlob::new(NAME, BLOB_VERSION, &encode_payload(&name, &addr));
        Ok(OfiPrepared {
            fabric,
            ctx: ctx.clone(),
            prov: name,
            blob,
        })
    }
}

/// A prepared `ofi` endpoint waiting for its peers' addresses.
pub struct OfiPrepared {
    fabric: OfiFabric,
    ctx: SetupCtx,
    prov: String,
    blob: AddressBlob,
}

impl OfiPrepared {
    /// Like [`PreparedTransport::connect`], returning the concrete endpoint (tests read its
    /// cache counters).
    pub fn connect_rdma(
        mut self,
        peers: &[(usize, AddressBlob)],
    ) -> Result<RdmaEndpoint<OfiFabric>, SetupError> {
        let ours = decode_payload(self.blob.open(NAME, BLOB_VERSION, self.ctx.rank)?)
            .map(|(_, a)| a.len())
            .unwrap_or(0);
        let mut ranks = Vec::with_capacity(peers.len());
        for (peer, blob) in peers {
            let bad = |detail: String| SetupError::BadAddress {
                transport: NAME,
                peer: *peer,
                detail,
            };
            if *peer >= self.ctx.world || *peer == self.ctx.rank {
                return Err(bad(format!("rank {peer} is not a peer")));
            }
            let (prov, addr) =
                decode_payload(blob.open(NAME, BLOB_VERSION, *peer)?).map_err(bad)?;
            if prov != self.prov {
                return Err(bad(format!(
                    "peer uses libfabric provider {prov:?}, this rank {:?}",
                    self.prov
                )));
            }
            if addr.len() != ours {
                return Err(bad(format!(
                    "address of {} bytes, this provider's are {ours}",
                    addr.len()
                )));
            }
            self.fabric
                .insert_peer(*peer, addr)
                .map_err(|e| bad(e.message))?;
            ranks.push(*peer);
        }
        let params = RdmaParams::new(
            self.ctx.ring_bytes.max(SLOTS * 4096),
            SLOTS,
            self.ctx.timeout.max(Duration::from_millis(100)),
        );
        RdmaEndpoint::connect(
            NAME,
            self.fabric,
            self.ctx.rank,
            self.ctx.world,
            (self.ctx.token, &self.ctx.key),
            &ranks,
            params,
        )
    }
}

impl PreparedTransport for OfiPrepared {
    fn address(&self) -> AddressBlob {
        self.blob.clone()
    }

    fn connect(
        self: Box<Self>,
        peers: &[(usize, AddressBlob)],
    ) -> Result<Box<dyn Endpoint>, SetupError> {
        Ok(Box::new(self.connect_rdma(peers)?))
    }
}

#[cfg(test)]
mod tests;
