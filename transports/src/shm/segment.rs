//! The shared-memory segment: its file under `/dev/shm`, its layout, creation and attachment.
//!
//! Layout (all offsets computed from the local world size and ring capacity that every rank
//! is given, never read from the segment; the control block only confirms them):
//! ```text
//! 0                 Control (magic, version, local_n, ring_bytes, total_len, mapped, linked)
//! SLOTS_OFF         Slot per local rank (claimed flag, pid, pid namespace)
//! bells_off         BellWords per local rank, 128 bytes apart
//! rings_off         per directed pair (from, to), from != to: RingHeader (padded to a page)
//!                   then `ring_bytes` of data
//! ```
//! A freshly truncated file is all zeros, which is a valid initial state for every atomic
//! word, bell and ring header; the creator fills the control block and publishes the magic
//! word last with release ordering.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::ring::RingHeader;

use super::bell::BellWords;

/// Identifies a ferrocoll shared-memory segment ("FCOLLSHM").
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"FCOLLSHM");
/// Layout version; bump when the layout changes.
pub(crate) const VERSION: u32 = 1;
/// Most ranks that may share one host's segment.
pub(crate) const MAX_LOCAL: usize = 1024;
const PAGE: usize = 4096;
const SLOTS_OFF: usize = 256;

/// The control block at offset 0. Every field is atomic: other processes write the segment
/// while we read it.
#[repr(C)]
pub(crate) struct Control {
    /// [`MAGIC`] once the creator has initialised everything else.
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub local_n: AtomicU32,
    pub ring_bytes: AtomicU64,
    pub total_len: AtomicU64,
    /// Number of local ranks that have claimed their slot.
    pub mapped: AtomicU32,
    /// 1 while the file is still linked in the file system; whoever swaps it to 0 unlinks.
    pub linked: AtomicU32,
}

/// One local rank's registration.
#[repr(C)]
pub(crate) struct Slot {
    /// Set to 1 by the rank that owns this slot (catches a local rank opened twice).
    pub claimed: AtomicU32,
    /// The owner's process id (0: not yet known).
    pub pid: AtomicI32,
    /// Inode of the owner's pid namespace (0: unknown); pids are only comparable within one.
    pub pid_ns: AtomicU64,
    /// Address at which the owner mapped the segment (lets peers test cross-memory attach).
    pub base: AtomicU64,
}

/// Inode of this process's pid namespace, or 0 if it cannot be read.
pub(crate) fn own_pid_ns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// Whether process `pid` (> 0, in our pid namespace) is gone: it does not exist, or it is a
/// zombie (a dead child of this process that nobody reaped yet).
pub fn process_gone(pid: i32) -> bool {
    debug_assert!(pid > 0);
    // SAFETY: signal 0 sends nothing; it only asks whether `pid` exists. `pid` > 0 names one
    // process (0 and negative values would address process groups).
    let rc = unsafe { libc::kill(pid, 0) };
    if rc == -1 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // /proc/<pid>/stat is "pid (comm) S ...": the state follows the last ')'.
    std::fs::read(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let after = stat
            .iter()
            .rposition(|&b| b == b')')
            .map_or(&[][..], |i| &stat[i + 1..]);
        matches!(after, [b' ', b'Z' | b'X', ..])
    })
}

/// Where everything is in a segment for `n` local ranks and rings of `ring_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub n: usize,
    pub ring_bytes: usize,
    pub bells_off: usize,
    pub rings_off: usize,
    pub ring_hdr: usize,
    pub ring_stride: usize,
    pub total: usize,
}

fn round_up(x: usize, to: usize) -> Option<usize> {
    Some(x.checked_add(to - 1)? / to * to)
}

impl Layout {
    /// The layout for `n` ranks; `ring_bytes` must be a power of two of at least a page.
    pub fn new(n: usize, ring_bytes: usize) -> Option<Layout> {
        if n == 0 || n > MAX_LOCAL || !ring_bytes.is_power_of_two() || ring_bytes < PAGE {
            return None;
        }
        let slots_end = SLOTS_OFF + n * std::mem::size_of::<Slot>();
        let bells_off = round_up(slots_end, std::mem::align_of::<BellWords>())?;
        let bells_end = bells_off + n * std::mem::size_of::<BellWords>();
        let rings_off = round_up(bells_end, PAGE)?;
        let ring_hdr = round_up(std::mem::size_of::<RingHeader>(), PAGE)?;
        let ring_stride = ring_hdr.checked_add(ring_bytes)?;
        let pairs = n * (n - 1);
        let total = rings_off.checked_add(pairs.checked_mul(ring_stride)?)?;
        // mmap lengths and file sizes are signed 64-bit on the way in.
        if total > i64::MAX as usize / 2 {
            return None;
        }
        Some(Layout {
            n,
            ring_bytes,
            bells_off,
            rings_off,
            ring_hdr,
            ring_stride,
            total,
        })
    }

    /// Offset of the bell of local rank `i`.
    pub fn bell(&self, i: usize) -> usize {
        debug_assert!(i < self.n);
        self.bells_off + i * std::mem::size_of::<BellWords>()
    }

    /// Offsets of (header, data) of the ring carrying bytes from local rank `from` to `to`.
    pub fn ring(&self, from: usize, to: usize) -> (usize, usize) {
        debug_assert!(from < self.n && to < self.n && from != to);
        let idx = from * (self.n - 1) + if to < from { to } else { to - 1 };
        let hdr = self.rings_off + idx * self.ring_stride;
        (hdr, hdr + self.ring_hdr)
    }
}

/// A `MAP_SHARED` read-write mapping of a whole segment; unmapped on drop.
pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; every shared word in it is
// accessed through atomics, and ring data only under the SPSC protocol of `crate::ring`.
unsafe impl Send for Mapping {}
// SAFETY: as for Send.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map(file: &File, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping chosen by the kernel (null hint) of `len` bytes of an open
        // file descriptor; it aliases no Rust object. The file is at least `len` long (checked
        // or set by the callers), so touching any byte of it cannot SIGBUS.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Pointer to byte `off` of the mapping.
    pub fn at(&self, off: usize) -> *mut u8 {
        assert!(off < self.len, "offset {off} outside the segment");
        // SAFETY: off < len, so the result stays inside the mapped object.
        unsafe { self.ptr.add(off) }
    }

    /// The control block.
    pub fn control(&self) -> &Control {
        // SAFETY: offset 0 of a page-aligned mapping of at least one page holds the control
        // block; zeroed or initialised, all its fields are valid atomics.
        unsafe { &*(self.ptr as *const Control) }
    }

    /// The slot of local rank `i` (`i < layout.n`, checked).
    pub fn slot(&self, i: usize) -> &Slot {
        let off = SLOTS_OFF + i * std::mem::size_of::<Slot>();
        assert!(off + std::mem::size_of::<Slot>() <= self.len);
        // SAFETY: in bounds (asserted), 8-byte aligned (SLOTS_OFF and the slot size are
        // multiples of 8 in a page-aligned mapping); all fields are atomics.
        unsafe { &*(self.at(off) as *const Slot) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned, and nothing borrows the mapping
        // any more (every user holds an Arc to this value, and this is the last one).
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// Path of the segment for `job` on this host, shared by the ranks in `local_ranks`.
///
/// The job id is sanitised to `[A-Za-z0-9_.-]` (and shortened); the host hash mixes the host
/// name and the local rank set, so several simulated hosts on one machine get distinct files.
pub fn segment_path(job: &str, local_ranks: &[usize]) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    mix(hostname().as_bytes());
    for r in local_ranks {
        mix(&(*r as u64).to_le_bytes());
    }
    mix(job.as_bytes());
    let clean: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    PathBuf::from(format!("/dev/shm/ferrocoll-{clean}-{h:016x}"))
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its whole length, which we pass; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Creates the segment at `path` (the file must not exist), sizes and initialises it.
/// On failure nothing is left in the file system.
pub(crate) fn create(path: &Path, layout: &Layout) -> io::Result<Mapping> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                io::Error::new(
                    e.kind(),
                    format!(
                        "shared-memory segment {} already exists (a job with the same id is \
                         running, or one crashed while starting: remove the file)",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
    let map = reserve(&file, path, layout.total).and_then(|()| Mapping::map(&file, layout.total));
    let map = match map {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    };
    let c = map.control();
    c.version.store(VERSION, Ordering::Relaxed);
    c.local_n.store(layout.n as u32, Ordering::Relaxed);
    c.ring_bytes
        .store(layout.ring_bytes as u64, Ordering::Relaxed);
    c.total_len.store(layout.total as u64, Ordering::Relaxed);
    c.linked.store(1, Ordering::Relaxed);
    c.magic.store(MAGIC, Ordering::Release);
    Ok(map)
}

/// Sizes the new file to `len` bytes with every page allocated now: a sparse tmpfs file that
/// later runs out of space (a small `/dev/shm`, e.g. a container's 64 MiB) would kill the
/// process with SIGBUS in the middle of a transfer instead of failing here.
fn reserve(file: &File, path: &Path, len: usize) -> io::Result<()> {
    // SAFETY: fallocate on an open descriptor we own, with a range we chose; it touches no
    // memory of this process.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => file.set_len(len as u64),
        Some(libc::ENOSPC) => Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "no room for the {len}-byte shared-memory segment {}: enlarge /dev/shm \
                 (e.g. docker --shm-size) or use smaller rings",
                path.display()
            ),
        )),
        _ => Err(e),
    }
}

/// Opens the segment at `path` created by another rank, waiting until it exists and is
/// initialised or `deadline` passes. A file that is not a matching ferrocoll segment is an
/// immediate error.
pub(crate) fn attach(path: &Path, layout: &Layout, deadline: Instant) -> io::Result<Mapping> {
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(map) = try_attach(path, layout)? {
            return Ok(map);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "shared-memory segment {} was not created and initialised in time",
                    path.display()
                ),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// One attempt of [`attach`]: `Ok(None)` means "not there yet, retry".
fn try_attach(path: &Path, layout: &Layout) -> io::Result<Option<Mapping>> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if len == 0 {
        // The creator has not sized it yet.
        return Ok(None);
    }
    if len != layout.total as u64 {
        return Err(invalid(format!(
            "shared-memory segment {} has {len} bytes, expected {} (a stale file, or ranks \
             disagree on the ring size)",
            path.display(),
            layout.total
        )));
    }
    let map = Mapping::map(&file, layout.total)?;
    let c = map.control();
    match c.magic.load(Ordering::Acquire) {
        0 => return Ok(None),
        MAGIC => {}
        other => {
            return Err(invalid(format!(
                "{} is not a ferrocoll segment (magic {other:#x})",
                path.display()
            )))
        }
    }
    let found = (
        c.version.load(Ordering::Relaxed),
        c.local_n.load(Ordering::Relaxed) as usize,
        c.ring_bytes.load(Ordering::Relaxed),
        c.total_len.load(Ordering::Relaxed),
    );
    let want = (
        VERSION,
        layout.n,
        layout.ring_bytes as u64,
        layout.total as u64,
    );
    if found != want {
        return Err(invalid(format!(
            "shared-memory segment {} does not match this job: (version, local ranks, ring \
             bytes, length) = {found:?}, expected {want:?}",
            path.display()
        )));
    }
    Ok(Some(map))
}

/// Unlinks `path` if the segment still says it is linked (exactly one caller does it).
pub(crate) fn unlink_once(map: &Mapping, path: &Path) {
    if map.control().linked.swap(0, Ordering::AcqRel) == 1 {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!("could not unlink {}: {e}", path.display());
        }
    }
}
