//! The registration cache: large user buffers are registered once and reused.
//!
//! Registering memory is expensive (pinning, a system call, a key exchange), and collectives
//! send from and receive into the same buffers call after call. So, as NCCL's net_ib does,
//! registrations are kept: an entry covers whole pages (`[page_floor(addr),
//! page_ceil(addr + len))`), a lookup finds an entry covering the requested range (linear
//! search: a job holds a handful of large buffers), and a reference count keeps an entry
//! alive while a transfer uses it. Unlike NCCL, an unreferenced entry is not deregistered at
//! once: it stays cached until the cache's byte bound is exceeded, then the least recently
//! used unreferenced entries go first. A new registration that covers unreferenced cached
//! entries replaces them (they are deregistered), so growing buffers do not pile up.
//!
//! Caveat (as for every such cache without memory hooks): memory freed and re-mapped at the
//! same address keeps its old registration. For software providers (libfabric tcp,
//! sockets) a registration names virtual addresses and stays correct; for hardware ones
//! (verbs) the pages pinned are the old ones, so a user must not free a buffer it will
//! pass again at the same address without [`RegCache::flush_unused`].
//!
//! [`CacheStats`] counts registrations, hits, evictions: a benchmark shows with them that a
//! loop on the same buffers registers nothing after the first call.

/// Page granularity of cached registrations.
pub const PAGE: usize = 4096;

/// Counters of a [`RegCache`], for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Registrations made (cache misses that registered).
    pub registrations: u64,
    /// Lookups served by an existing entry.
    pub hits: u64,
    /// Entries deregistered to stay within the byte bound or replaced by a covering one.
    pub evictions: u64,
    /// Entries now cached.
    pub entries: usize,
    /// Bytes they cover.
    pub bytes: usize,
}

/// A reference to a cached registration, returned by [`RegCache::acquire`]; give it back
/// with [`RegCache::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegRef {
    id: u64,
    /// First byte covered by the registration (page-aligned).
    pub start: usize,
    /// Bytes covered (whole pages).
    pub len: usize,
    /// The registration's remote key.
    pub rkey: u64,
    /// Its local descriptor.
    pub desc: usize,
    /// The remote address of `start` (see [`super::MemRegion::remote_base`]).
    pub remote_base: u64,
}

impl RegRef {
    /// The address a peer uses for local address `addr` (inside this registration).
    pub fn remote_addr(&self, addr: usize) -> u64 {
        self.remote_base + (addr - self.start) as u64
    }
}

struct Entry<M> {
    id: u64,
    start: usize,
    len: usize,
    refs: usize,
    last_use: u64,
    rkey: u64,
    desc: usize,
    remote_base: u64,
    mr: M,
}

/// The cache; `M` is the fabric's registration handle. See the module docs.
pub struct RegCache<M> {
    entries: Vec<Entry<M>>,
    max_bytes: usize,
    clock: u64,
    next_id: u64,
    stats: CacheStats,
}

/// The page-aligned range covering `[addr, addr + len)` (at least one page).
pub fn page_range(addr: usize, len: usize) -> (usize, usize) {
    let start = addr & !(PAGE - 1);
    let end = addr.saturating_add(len.max(1)).saturating_add(PAGE - 1) & !(PAGE - 1);
    (start, end - start)
}

impl<M> RegCache<M> {
    /// An empty cache keeping at most `max_bytes` of unreferenced registrations.
    pub fn new(max_bytes: usize) -> RegCache<M> {
        RegCache {
            entries: Vec::new(),
            max_bytes,
            clock: 0,
            next_id: 1,
            stats: CacheStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entries.len(),
            bytes: self.entries.iter().map(|e| e.len).sum(),
            ..self.stats
        }
    }

    fn make_ref(e: &Entry<M>) -> RegRef {
        RegRef {
            id: e.id,
            start: e.start,
            len: e.len,
            rkey: e.rkey,
            desc: e.desc,
            remote_base: e.remote_base,
        }
    }

    /// A registration covering `[addr, addr + len)`, from the cache or made with `register`
    /// (called with the page-aligned start and length); evicted entries go to `deregister`.
    pub fn acquire<E>(
        &mut self,
        addr: usize,
        len: usize,
        register: impl FnOnce(usize, usize) -> Result<super::MemRegion<M>, E>,
        mut deregister: impl FnMut(M),
    ) -> Result<RegRef, E> {
        self.clock += 1;
        let (start, plen) = page_range(addr, len);
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.start <= start && start + plen <= e.start + e.len)
        {
            e.refs += 1;
            e.last_use = self.clock;
            self.stats.hits += 1;
            return Ok(Self::make_ref(e));
        }
        let r = register(start, plen)?;
        self.stats.registrations += 1;
        // Unreferenced entries inside the new one are superseded.
        let mut i = 0;
        while i < self.entries.len() {
            let e = &self.entries[i];
            if e.refs == 0 && start <= e.start && e.start + e.len <= start + plen {
                let e = self.entries.swap_remove(i);
                self.stats.evictions += 1;
                deregister(e.mr);
            } else {
                i += 1;
            }
        }
        let e = Entry {
            id: self.next_id,
            start,
            len: plen,
            refs: 1,
            last_use: self.clock,
            rkey: r.rkey,
            desc: r.desc,
            remote_base: r.remote_base,
            mr: r.mr,
        };
        self.next_id += 1;
        let out = Self::make_ref(&e);
        self.entries.push(e);
        self.evict(&mut deregister);
        Ok(out)
    }

    /// Gives back a reference from [`RegCache::acquire`]; entries over the bound are evicted.
    pub fn release(&mut self, r: RegRef, mut deregister: impl FnMut(M)) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == r.id) {
            e.refs = e.refs.saturating_sub(1);
        }
        self.evict(&mut deregister);
    }

    /// Deregisters unreferenced entries, least recently used first, while the cache covers
    /// more than its bound. Referenced entries are never evicted (the bound may be exceeded
    /// while they are in use).
    fn evict(&mut self, deregister: &mut impl FnMut(M)) {
        let mut bytes: usize = self.entries.iter().map(|e| e.len).sum();
        while bytes > self.max_bytes {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.refs == 0)
                .min_by_key(|(_, e)| e.last_use)
                .map(|(i, _)| i);
            let Some(i) = victim else { break };
            let e = self.entries.swap_remove(i);
            bytes -= e.len;
            self.stats.evictions += 1;
            deregister(e.mr);
        }
    }

    /// Deregisters every unreferenced entry (e.g. before freeing buffers).
    pub fn flush_unused(&mut self, mut deregister: impl FnMut(M)) {
        let mut i = 0;
        while i < self.entries.len() {
            if self.entries[i].refs == 0 {
                let e = self.entries.swap_remove(i);
                deregister(e.mr);
            } else {
                i += 1;
            }
        }
    }

    /// Deregisters everything (on close).
    pub fn clear(&mut self, mut deregister: impl FnMut(M)) {
        for e in self.entries.drain(..) {
            deregister(e.mr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MemRegion;
    use super::*;

    /// A fake registrar: handles are (start, len), keys count up.
    struct Fake {
        next_key: u64,
        live: Vec<(usize, usize)>,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                next_key: 100,
                live: Vec::new(),
            }
        }
    }

    fn acquire(c: &mut RegCache<(usize, usize)>, f: &mut Fake, addr: usize, len: usize) -> RegRef {
        let live = &mut f.live;
        let key = &mut f.next_key;
        let mut dead = Vec::new();
        let r = c
            .acquire::<()>(
                addr,
                len,
                |s, l| {
                    *key += 1;
                    live.push((s, l));
                    Ok(MemRegion {
                        mr: (s, l),
                        rkey: *key,
                        desc: 0,
                        remote_base: s as u64,
                    })
                },
                |m| dead.push(m),
            )
            .unwrap();
        f.live.retain(|m| !dead.contains(m));
        r
    }

    fn release(c: &mut RegCache<(usize, usize)>, f: &mut Fake, r: RegRef) {
        let mut dead = Vec::new();
        c.release(r, |m| dead.push(m));
        f.live.retain(|m| !dead.contains(m));
    }

    #[test]
    fn page_alignment() {
        assert_eq!(page_range(4096, 1), (4096, 4096));
        assert_eq!(page_range(4097, 4096), (4096, 8192));
        assert_eq!(page_range(8191, 2), (4096, 8192));
        assert_eq!(page_range(0, 0), (0, 4096));
        let mut c = RegCache::new(1 << 30);
        let mut f = Fake::new();
        let r = acquire(&mut c, &mut f, 0x10_0010, 100);
        assert_eq!((r.start, r.len), (0x10_0000, PAGE));
        assert_eq!(r.remote_addr(0x10_0010), 0x10_0010);
        // Another range inside the same page hits.
        let r2 = acquire(&mut c, &mut f, 0x10_0800, 0x700);
        assert_eq!(r2.rkey, r.rkey);
        assert_eq!(c.stats().registrations, 1);
        assert_eq!(c.stats().hits, 1);
    }

    #[test]
    fn refcounts_keep_entries_alive() {
        // Bound 0: every unreferenced entry is evicted at once.
        let mut c = RegCache::new(0);
        let mut f = Fake::new();
        let a = acquire(&mut c, &mut f, 0x1000, 10);
        let a2 = acquire(&mut c, &mut f, 0x1000, 10);
        release(&mut c, &mut f, a);
        assert_eq!(f.live.len(), 1, "still referenced once");
        release(&mut c, &mut f, a2);
        assert!(f.live.is_empty(), "last reference gone and over the bound");
        assert_eq!(c.stats().evictions, 1);
        assert_eq!(c.stats().entries, 0);
    }

    #[test]
    fn bounded_size_evicts_lru_unreferenced() {
        let mut c = RegCache::new(3 * PAGE);
        let mut f = Fake::new();
        let mut refs = Vec::new();
        for i in 0..3 {
            refs.push(acquire(&mut c, &mut f, 0x10_0000 * (i + 1), 1));
        }
        for r in refs {
            release(&mut c, &mut f, r);
        }
        // Touch the first so the second becomes least recently used.
        let r = acquire(&mut c, &mut f, 0x10_0000, 1);
        release(&mut c, &mut f, r);
        let r4 = acquire(&mut c, &mut f, 0x40_0000, 1);
        assert_eq!(c.stats().entries, 3);
        assert!(!f.live.contains(&(0x20_0000, PAGE)), "LRU entry evicted");
        assert!(f.live.contains(&(0x10_0000, PAGE)));
        assert!(f.live.contains(&(0x30_0000, PAGE)));
        // Everything referenced: the bound is exceeded rather than breaking a transfer.
        let r5 = acquire(&mut c, &mut f, 0x50_0000, 4 * PAGE);
        assert!(c.stats().bytes > 3 * PAGE);
        assert!(f.live.contains(&(0x40_0000, PAGE)), "referenced entry kept");
        release(&mut c, &mut f, r5);
        release(&mut c, &mut f, r4);
        assert!(c.stats().bytes <= 3 * PAGE);
    }

    #[test]
    fn region_spanning_a_cached_one_replaces_it() {
        let mut c = RegCache::new(1 << 30);
        let mut f = Fake::new();
        let small = acquire(&mut c, &mut f, 0x10_2000, PAGE);
        let held = acquire(&mut c, &mut f, 0x10_8000, PAGE);
        release(&mut c, &mut f, small);
        // Covers both cached pages: the unreferenced one is replaced, the held one stays.
        let big = acquire(&mut c, &mut f, 0x10_0000, 16 * PAGE);
        assert_eq!((big.start, big.len), (0x10_0000, 16 * PAGE));
        assert_eq!(c.stats().registrations, 3);
        assert!(!f.live.contains(&(0x10_2000, PAGE)));
        assert!(f.live.contains(&(0x10_8000, PAGE)));
        // Lookups inside it now hit the big one (or the held one, which also covers).
        let inner = acquire(&mut c, &mut f, 0x10_3000, 2 * PAGE);
        assert_eq!(inner.rkey, big.rkey);
        assert_eq!(c.stats().registrations, 3);
        release(&mut c, &mut f, held);
        release(&mut c, &mut f, inner);
        release(&mut c, &mut f, big);
        let mut dead = Vec::new();
        c.clear(|m| dead.push(m));
        assert_eq!(dead.len(), 2);
    }
}
