//! TLS on the TCP links in a build without the `tls` feature: there is none.
//! [`TcpEndpoint::with_tls`] says so, and no link ever holds a [`Session`].

use std::time::Duration;

use mio::net::TcpStream;

use super::TcpEndpoint;
use crate::auth::JobKey;
use crate::link::LinkError;

/// Whether this build can run TLS on its TCP links.
pub const AVAILABLE: bool = false;

/// A TLS session: none can exist in this build.
pub enum Session {}

impl Session {
    /// Never called: no session exists.
    pub fn flush(&mut self, _: &mut TcpStream, _: &mut bool, _: usize) {
        match *self {}
    }

    /// Never called: no session exists.
    pub fn try_write(
        &mut self,
        _: &mut TcpStream,
        _: &mut bool,
        _: usize,
        _: &[u8],
    ) -> Result<usize, LinkError> {
        match *self {}
    }

    /// Never called: no session exists.
    pub fn read(
        &mut self,
        _: &mut TcpStream,
        _: &mut bool,
        _: usize,
        _: &mut [u8],
    ) -> Result<usize, LinkError> {
        match *self {}
    }

    /// Never called: no session exists.
    pub fn close(&mut self, _: &mut TcpStream, _: &mut bool, _: usize) {
        match *self {}
    }
}

impl TcpEndpoint {
    /// Refuses: this build has no TLS (build with the `tls` feature).
    pub fn with_tls(self, _key: &JobKey, _timeout: Duration) -> Result<TcpEndpoint, LinkError> {
        Err(LinkError::Protocol {
            peer: self.rank,
            detail: "TLS asked for (FERROCOLL_TLS=1), but this build has no TLS: build with \
                     the `tls` feature"
                .into(),
        })
    }
}
