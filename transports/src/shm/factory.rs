//! The shared-memory transport behind [`crate::plugin::TransportFactory`].
//!
//! Its address carries nothing: ranks on one host (the bootstrap compares host identities)
//! meet in the segment named after the job token, so the blob only says "shm, version 1".

use crate::link::{Endpoint, LinkCaps};
use crate::plugin::{
    AddressBlob, Availability, PreparedTransport, SetupCtx, SetupError, TransportFactory,
};
use crate::shm::{ShmEndpoint, ShmOptions};

/// Address format version.
const VERSION: u8 = 1;

/// The shared-memory transport's factory.
pub struct ShmFactory;

impl TransportFactory for ShmFactory {
    fn name(&self) -> &'static str {
        "shm"
    }

    fn crosses_hosts(&self) -> bool {
        false
    }

    fn availability(&self) -> Availability {
        if std::path::Path::new("/dev/shm").is_dir() {
            Availability::Available
        } else {
            Availability::Unavailable("/dev/shm is not mounted".into())
        }
    }

    fn caps(&self) -> LinkCaps {
        LinkCaps {
            single_copy: true,
            streaming_stores: true,
            registered_memory: false,
            max_in_flight: None,
        }
    }

    fn prepare(&self, ctx: &SetupCtx) -> Result<Box<dyn PreparedTransport>, SetupError> {
        Ok(Box::new(PreparedShm { ctx: ctx.clone() }))
    }
}

struct PreparedShm {
    ctx: SetupCtx,
}

impl PreparedTransport for PreparedShm {
    fn address(&self) -> AddressBlob {
        AddressBlob::new("shm", VERSION, &[])
    }

    fn connect(
        self: Box<Self>,
        peers: &[(usize, AddressBlob)],
    ) -> Result<Box<dyn Endpoint>, SetupError> {
        let ctx = &self.ctx;
        let mut local = vec![ctx.rank];
        for (p, blob) in peers {
            blob.open("shm", VERSION, *p)?;
            local.push(*p);
        }
        local.sort_unstable();
        local.dedup();
        let opts = ShmOptions {
            ring_bytes: ctx.ring_bytes,
            timeout: ctx.timeout,
            spin: std::time::Duration::ZERO,
            single_copy: ctx.single_copy,
        };
        let ep = ShmEndpoint::open_with(
            &format!("{:016x}", ctx.token),
            ctx.rank,
            ctx.world,
            &local,
            &opts,
        )?;
        Ok(Box::new(ep))
    }
}
