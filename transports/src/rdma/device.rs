//! Finding the RDMA device, port and GID to use (`FERROCOLL_IB_HCA`), and saying why there is
//! none.
//!
//! `ibv_get_device_list` returns NULL with `ENOSYS` on a kernel without InfiniBand support
//! (no `/sys/class/infiniband`), and an empty list on one without devices: both mean "verbs
//! are not available here", which `auto` reports at INFO and skips, and which a forced
//! `rdma` returns as [`crate::plugin::SetupError::Unavailable`] with this text.

use std::ffi::CStr;

use rdma_sys::{
    ___ibv_query_port, ibv_close_device, ibv_context, ibv_free_device_list, ibv_get_device_list,
    ibv_get_device_name, ibv_gid, ibv_open_device, ibv_port_attr, ibv_port_state, ibv_query_gid,
};

use super::hca::HcaFilter;

/// The port chosen on a device.
#[derive(Clone, Debug)]
pub struct PortChoice {
    /// Device name (`mlx5_0`).
    pub device: String,
    /// Port number (1-based).
    pub port: u8,
    /// GID index.
    pub gid_index: u8,
    /// The port's LID (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// The GID at `gid_index`.
    pub gid: [u8; 16],
    /// The port's active MTU (the `ibv_mtu` code).
    pub mtu: u32,
}

/// An open device context, closed on drop.
pub struct Device {
    /// The context (valid until drop).
    pub ctx: *mut ibv_context,
    /// What was chosen on it.
    pub port: PortChoice,
}

// SAFETY: a verbs context may be used from any thread (libibverbs is thread-safe); this
// wrapper hands it to one owner at a time.
unsafe impl Send for Device {}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: `ctx` came from ibv_open_device and is closed once, here.
        unsafe { ibv_close_device(self.ctx) };
    }
}

/// Why verbs cannot run here, or the first device and port that `filter` selects, opened.
pub fn open_first(filter: &HcaFilter, spec: &str) -> Result<Device, String> {
    let mut n: i32 = 0;
    // SAFETY: ibv_get_device_list writes the count to `n` and returns NULL or a NULL-terminated
    // array that we free below.
    let list = unsafe { ibv_get_device_list(&mut n) };
    if list.is_null() {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::ENOSYS) {
            format!("this kernel has no RDMA support (ibv_get_device_list: {e})")
        } else {
            format!("ibv_get_device_list failed: {e}")
        });
    }
    let mut names = Vec::new();
    let mut chosen: Option<Result<Device, String>> = None;
    for i in 0..n.max(0) as usize {
        // SAFETY: `list` holds `n` valid device pointers.
        let dev = unsafe { *list.add(i) };
        // SAFETY: a valid device has a NUL-terminated name.
        let name = unsafe { CStr::from_ptr(ibv_get_device_name(dev)) }
            .to_string_lossy()
            .into_owned();
        names.push(name.clone());
        if chosen.as_ref().is_some_and(Result::is_ok) {
            continue;
        }
        let Some(entry) = filter.select(&name) else {
            continue;
        };
        // SAFETY: `dev` is valid while the list is.
        let ctx = unsafe { ibv_open_device(dev) };
        if ctx.is_null() {
            chosen = Some(Err(format!(
                "ibv_open_device({name}): {}",
                std::io::Error::last_os_error()
            )));
            continue;
        }
        let want_port = entry.and_then(|e| e.port);
        let gid_index = entry.and_then(|e| e.gid_index).unwrap_or(0);
        chosen = Some(match find_port(ctx, &name, want_port, gid_index) {
            Ok(port) => Ok(Device { ctx, port }),
            Err(e) => {
                // SAFETY: opened above, not kept.
                unsafe { ibv_close_device(ctx) };
                Err(e)
            }
        });
    }
    // SAFETY: `list` came from ibv_get_device_list; devices opened from it stay valid.
    unsafe { ibv_free_device_list(list) };
    match chosen {
        Some(r) => r,
        None if names.is_empty() => Err("no RDMA devices (ibv_get_device_list found 0)".into()),
        None => Err(format!(
            "FERROCOLL_IB_HCA={spec:?} selects none of the devices {}",
            names.join(", ")
        )),
    }
}

/// The active port `want` (or the first active one) of an open device, with its GID.
fn find_port(
    ctx: *mut ibv_context,
    name: &str,
    want: Option<u8>,
    gid_index: u8,
) -> Result<PortChoice, String> {
    let ports: Vec<u8> = match want {
        Some(p) => vec![p],
        None => (1..=8).collect(),
    };
    for p in ports {
        // SAFETY: plain C struct, all-zero is a valid value.
        let mut attr: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: `ctx` is an open context; `attr` is writable and of the queried size.
        let rc = unsafe { ___ibv_query_port(ctx, p, &mut attr) };
        if rc != 0 {
            if want.is_some() {
                return Err(format!(
                    "{name}: port {p} does not exist (ibv_query_port: {rc})"
                ));
            }
            break;
        }
        if attr.state != ibv_port_state::IBV_PORT_ACTIVE {
            if want.is_some() {
                return Err(format!("{name}: port {p} is not active"));
            }
            continue;
        }
        // SAFETY: plain C union, all-zero is valid.
        let mut gid: ibv_gid = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `gid` is writable.
        let rc = unsafe { ibv_query_gid(ctx, p, i32::from(gid_index), &mut gid) };
        if rc != 0 {
            return Err(format!("{name}: port {p} has no GID index {gid_index}"));
        }
        return Ok(PortChoice {
            device: name.to_string(),
            port: p,
            gid_index,
            lid: attr.lid,
            // SAFETY: both union members are 16 plain bytes.
            gid: unsafe { gid.raw },
            mtu: attr.active_mtu,
        });
    }
    Err(format!("{name}: no active port"))
}
