//! Cross-memory attach (`process_vm_readv`): the copy behind single-copy transfers
//! ([`crate::link::SingleCopy`]) between processes of a host (shm) and between threads of one
//! process (mem, where the kernel still checks every address: a bad one is an error, not a
//! stray read).

use std::io;

use crate::link::LinkError;

/// Copies `dst.len()` bytes at `addr` in process `pid` into `dst`.
pub(crate) fn read_remote(pid: i32, addr: u64, dst: &mut [u8]) -> io::Result<()> {
    let mut done = 0usize;
    while done < dst.len() {
        let local = libc::iovec {
            iov_base: dst[done..].as_mut_ptr().cast(),
            iov_len: dst.len() - done,
        };
        let remote = libc::iovec {
            iov_base: (addr as usize).wrapping_add(done) as *mut libc::c_void,
            iov_len: dst.len() - done,
        };
        // SAFETY: `local` describes the writable bytes of `dst` that remain; the kernel
        // checks `remote` against the other process's mappings (a bad address is EFAULT,
        // never a write outside `dst`).
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "process_vm_readv copied nothing",
            ));
        }
        done += n as usize;
    }
    Ok(())
}

/// The link error for a failed single-copy read from `peer`.
pub(crate) fn read_error(peer: usize, addr: u64, len: usize, e: io::Error) -> LinkError {
    match e.raw_os_error() {
        Some(libc::ESRCH) => LinkError::Closed { peer },
        Some(libc::EFAULT) => LinkError::Protocol {
            peer,
            detail: format!("announced buffer {addr:#x}+{len} is not readable in its memory"),
        },
        _ => LinkError::Io { peer, source: e },
    }
}
