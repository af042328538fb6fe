//! What a rank publishes at rendezvous about the CPUs it may use: its core count (affinity
//! mask and cgroup quota) and its affinity mask, and the parsing of the CPU lists its peers
//! publish.

use super::StoreError;

/// The CPU cores this process may run on (affinity mask, cgroup quota), 0 when unknown.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

/// The CPUs this process's affinity mask allows, in increasing order; empty when it cannot
/// be read.
pub fn affinity_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is a plain bit array, for which all zeroes is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the kernel writes at most the size given into `set`,
    // which is exactly that large and lives for the call.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE, inside the set's bits.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Parses the CPU list a peer published (`"0,1,5"`; empty: unknown).
pub(super) fn parse_cpus(r: usize, text: &str) -> std::result::Result<Vec<usize>, StoreError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|c| {
            c.parse::<usize>()
                .ok()
                .filter(|&c| c < 1 << 20)
                .ok_or_else(|| {
                    StoreError::Protocol(format!("rank {r} published a bad CPU list {text:?}"))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_from_peers_parse_or_fail_with_a_protocol_error() {
        assert_eq!(parse_cpus(0, "0,1,5").unwrap(), vec![0, 1, 5]);
        assert_eq!(parse_cpus(0, " ").unwrap(), Vec::<usize>::new());
        for bad in ["0,x", "1,,2", "-1", "99999999"] {
            let e = parse_cpus(3, bad).unwrap_err().to_string();
            assert!(e.contains("rank 3 published a bad CPU list"), "{bad}: {e}");
        }
    }

    #[test]
    fn this_process_affinity_covers_its_available_cores() {
        let cpus = affinity_cpus();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]));
        // available_parallelism is the mask's size or less (a cgroup quota).
        assert!(available_cores() <= cpus.len());
    }
}
