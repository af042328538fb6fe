//! The TCP transport behind [`crate::plugin::TransportFactory`].
//!
//! `prepare` binds the listening socket on the job's interface; the address blob is its
//! `ip:port` as text. `connect` forms the mesh with the peers routed to TCP
//! ([`TcpEndpoint::connect_to`]: higher ranks dial, lower ranks accept, each connection
//! checked by the job key's handshake), then runs TLS on it when the job asks for it
//! ([`TcpEndpoint::with_tls`]).

use std::net::{SocketAddr, TcpListener};

use crate::link::{Endpoint, LinkCaps};
use crate::plugin::{
    AddressBlob, Availability, PreparedTransport, SetupCtx, SetupError, TransportFactory,
};
use crate::tcp::TcpEndpoint;

/// Address format version.
const VERSION: u8 = 1;

/// The TCP transport's factory.
pub struct TcpFactory;

impl TransportFactory for TcpFactory {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn crosses_hosts(&self) -> bool {
        true
    }

    fn availability(&self) -> Availability {
        Availability::Available
    }

    fn caps(&self) -> LinkCaps {
        LinkCaps::default()
    }

    fn prepare(&self, ctx: &SetupCtx) -> Result<Box<dyn PreparedTransport>, SetupError> {
        let listener =
            TcpListener::bind(SocketAddr::new(ctx.ip, 0)).map_err(|e| SetupError::Failed {
                transport: "tcp",
                detail: format!("cannot listen on {}: {e}", ctx.ip),
            })?;
        let addr = listener.local_addr().map_err(|e| SetupError::Failed {
            transport: "tcp",
            detail: format!("listening socket has no address: {e}"),
        })?;
        Ok(Box::new(PreparedTcp {
            ctx: ctx.clone(),
            listener,
            addr,
        }))
    }
}

struct PreparedTcp {
    ctx: SetupCtx,
    listener: TcpListener,
    addr: SocketAddr,
}

/// The listening address in a TCP blob.
pub fn decode_address(blob: &AddressBlob, peer: usize) -> Result<SocketAddr, SetupError> {
    let payload = blob.open("tcp", VERSION, peer)?;
    let text = std::str::from_utf8(payload).unwrap_or("");
    text.parse().map_err(|_| SetupError::BadAddress {
        transport: "tcp",
        peer,
        detail: format!(
            "not a socket address: {:?}",
            String::from_utf8_lossy(payload)
        ),
    })
}

impl PreparedTransport for PreparedTcp {
    fn address(&self) -> AddressBlob {
        AddressBlob::new("tcp", VERSION, self.addr.to_string().as_bytes())
    }

    fn connect(
        self: Box<Self>,
        peers: &[(usize, AddressBlob)],
    ) -> Result<Box<dyn Endpoint>, SetupError> {
        let ctx = &self.ctx;
        let unused = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0);
        let mut addrs = vec![unused; ctx.world];
        let mut wanted = vec![false; ctx.world];
        for (p, blob) in peers {
            if *p >= ctx.world || *p == ctx.rank {
                return Err(SetupError::BadAddress {
                    transport: "tcp",
                    peer: *p,
                    detail: format!("rank out of range for a world of {}", ctx.world),
                });
            }
            addrs[*p] = decode_address(blob, *p)?;
            wanted[*p] = true;
        }
        let ep = TcpEndpoint::connect_to(
            ctx.rank,
            ctx.world,
            self.listener,
            &addrs,
            &wanted,
            &ctx.key,
            ctx.timeout,
        )?;
        let ep = if ctx.tls {
            ep.with_tls(&ctx.key, ctx.timeout)?
        } else {
            ep
        };
        Ok(Box::new(ep))
    }
}
