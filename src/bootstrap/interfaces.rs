//! Interfaces: the local IPv4 address a rank listens on for its peers
//! (`FERROCOLL_SOCKET_IFNAME`, else the one that routes to the store, else the first
//! non-loopback address), and the list of this host's interfaces.

use std::net::{SocketAddr, UdpSocket};

use super::StoreError;
use crate::config::Config;
use crate::error::{Error, Result};

/// The local IP to listen on: the interface named by `FERROCOLL_SOCKET_IFNAME`, else the one
/// that routes to the store, else (a file store) the first non-loopback IPv4 address, else
/// loopback.
pub(super) fn listen_ip(cfg: &Config, route: Option<SocketAddr>) -> Result<std::net::IpAddr> {
    if let Some(ifname) = &cfg.socket_ifname {
        return interface_ipv4(ifname).ok_or_else(|| Error::Config {
            var: "FERROCOLL_SOCKET_IFNAME".into(),
            value: ifname.clone(),
            reason: "no such interface with an IPv4 address".into(),
        });
    }
    let Some(store) = route else {
        let ip = ipv4_interfaces()
            .into_iter()
            .map(|(_, ip)| ip)
            .find(|ip| !ip.is_loopback())
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST);
        return Ok(ip.into());
    };
    let probe = UdpSocket::bind(if store.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .map_err(StoreError::Io)?;
    probe.connect(store).map_err(StoreError::Io)?;
    Ok(probe.local_addr().map_err(StoreError::Io)?.ip())
}

fn interface_ipv4(name: &str) -> Option<std::net::IpAddr> {
    ipv4_interfaces()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, ip)| ip.into())
}

/// The IPv4 addresses of this host's interfaces, as (interface name, address), in the order
/// the system lists them.
pub(crate) fn ipv4_interfaces() -> Vec<(String, std::net::Ipv4Addr)> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs;
        // ifa_name is a NUL-terminated string, ifa_addr (if non-null) a sockaddr whose family
        // says its real type.
        unsafe {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null() && (*ifa.ifa_addr).sa_family as i32 == libc::AF_INET {
                let n = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                found.push((
                    n.into_owned(),
                    std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                ));
            }
            cur = ifa.ifa_next;
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}
