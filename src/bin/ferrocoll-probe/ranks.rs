//! Facts about the ranks (pid, host) gathered to every rank, and reductions of measurements.

use ferrocoll::Communicator;
use serde::Serialize;

use crate::Res;

const HOST_BYTES: usize = 64;

/// Where one rank runs.
#[derive(Clone, Debug, Serialize)]
pub struct RankInfo {
    /// The rank.
    pub rank: usize,
    /// Its process id.
    pub pid: u32,
    /// Its host name.
    pub host: String,
}

/// This machine's host name (from the kernel, else `$HOSTNAME`, else `localhost`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Every rank's pid and host, on every rank.
pub fn gather(comm: &Communicator) -> Res<Vec<RankInfo>> {
    let mut mine = vec![0u8; 8 + HOST_BYTES];
    mine[..8].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
    let host = hostname();
    let hb = host.as_bytes();
    let n = hb.len().min(HOST_BYTES);
    mine[8..8 + n].copy_from_slice(&hb[..n]);
    let all = gather_bytes(comm, &mine)?;
    Ok(all
        .chunks(mine.len())
        .enumerate()
        .map(|(rank, rec)| {
            let mut pid = [0u8; 8];
            pid.copy_from_slice(&rec[..8]);
            let name = &rec[8..];
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            RankInfo {
                rank,
                pid: u64::from_le_bytes(pid) as u32,
                host: String::from_utf8_lossy(&name[..end]).into_owned(),
            }
        })
        .collect())
}

// The probe's own bookkeeping (barriers, combining times, gathering facts) goes through rank 0
// over send/recv, which no `--algo` setting affects: a forced algorithm applies to the
// collective being measured only.

/// Every rank's `mine` (all the same length), in rank order, on every rank.
fn gather_bytes(comm: &Communicator, mine: &[u8]) -> Res<Vec<u8>> {
    let (n, me) = (comm.world_size(), comm.rank());
    let mut all = vec![0u8; mine.len() * n];
    all[me * mine.len()..(me + 1) * mine.len()].copy_from_slice(mine);
    if n == 1 {
        return Ok(all);
    }
    if me == 0 {
        for (r, chunk) in all.chunks_mut(mine.len()).enumerate().skip(1) {
            comm.recv(chunk, r)?;
        }
        for r in 1..n {
            comm.send(&all, r)?;
        }
    } else {
        comm.send(mine, 0)?;
        comm.recv(&mut all, 0)?;
    }
    Ok(all)
}

/// Element-wise reduction of `vals` over the ranks with `f` (folded in rank order at rank 0),
/// the result on every rank.
pub fn reduce_f64(comm: &Communicator, vals: &mut [f64], f: impl Fn(f64, f64) -> f64) -> Res<()> {
    let (n, me) = (comm.world_size(), comm.rank());
    if n == 1 {
        return Ok(());
    }
    if me == 0 {
        let mut buf = vec![0f64; vals.len()];
        for r in 1..n {
            comm.recv(&mut buf, r)?;
            for (a, b) in vals.iter_mut().zip(&buf) {
                *a = f(*a, *b);
            }
        }
        for r in 1..n {
            comm.send(vals, r)?;
        }
    } else {
        comm.send(vals, 0)?;
        comm.recv(vals, 0)?;
    }
    Ok(())
}

/// No rank returns before every rank has called it.
pub fn barrier(comm: &Communicator) -> Res<()> {
    reduce_f64(comm, &mut [0.0], |a, _| a)
}

/// Combines one value per rank as nccl-tests' `-a`: 0 rank 0's, 1 the average, 2 the
/// minimum, 3 the maximum. Every rank gets the result.
pub fn combine(comm: &Communicator, v: f64, mode: u8) -> Res<f64> {
    let mut b = [v];
    match mode {
        0 => reduce_f64(comm, &mut b, |a, _| a)?,
        1 => {
            reduce_f64(comm, &mut b, |a, x| a + x)?;
            b[0] /= comm.world_size() as f64;
        }
        2 => reduce_f64(comm, &mut b, f64::min)?,
        _ => reduce_f64(comm, &mut b, f64::max)?,
    }
    Ok(b[0])
}

/// Sum over the ranks (exact below 2^53).
pub fn total(comm: &Communicator, v: u64) -> Res<u64> {
    let mut b = [v as f64];
    reduce_f64(comm, &mut b, |a, x| a + x)?;
    Ok(b[0] as u64)
}
