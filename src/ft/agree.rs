//! The agreement on the survivors of a revoked communicator (the argument is in the module
//! docs of `ft`): register, wait for every rank to register or be suspected (at most one
//! heartbeat timeout), propose by compare-and-set, adopt what the store holds.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{lock, Health};
use crate::bootstrap::{Store, StoreError};
use crate::error::Error;

/// The job-wide counter that names each new communicator's keys.
const GENERATION_KEY: &str = "fc/generation";
/// How often a waiting proposer looks at the store.
const POLL: Duration = Duration::from_millis(5);
/// How many heartbeat timeouts a proposer waits for a rank that neither registered nor is
/// suspected. A failed rank is suspected within one; a live rank is never suspected and
/// registers as soon as its agreement thread runs, which on a loaded host can take longer
/// than one timeout: leaving it out then would shrink the job by a healthy rank.
const REGISTER_WAIT: u32 = 5;

/// The outcome of one epoch: the ranks (of the revoked communicator) that go on, and the
/// store prefix under which they build the next communicator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The agreement round.
    pub epoch: u64,
    /// Surviving ranks, ascending (their order is the new rank order).
    pub members: Vec<usize>,
    /// Key prefix of the next communicator's rendezvous.
    pub prefix: String,
}

impl Decision {
    /// The decision as the store holds it (what [`Decision::decode`] reads).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let m: Vec<String> = self.members.iter().map(usize::to_string).collect();
        format!(
            "fc-decision-1\n{}\n{}\n{}",
            self.epoch,
            m.join(","),
            self.prefix
        )
        .into_bytes()
    }

    /// Decodes a decision of `epoch` for a communicator of `world` ranks; anything else is a
    /// store protocol error (the store is trusted, but never blindly).
    pub(crate) fn decode(v: &[u8], world: usize, epoch: u64) -> Result<Decision, StoreError> {
        let bad = |why: &str| {
            StoreError::Protocol(format!(
                "agreement decision {:?}: {why}",
                String::from_utf8_lossy(&v[..v.len().min(200)])
            ))
        };
        let text = std::str::from_utf8(v).map_err(|_| bad("not UTF-8"))?;
        let mut lines = text.split('\n');
        if lines.next() != Some("fc-decision-1") {
            return Err(bad("unknown format"));
        }
        let e: u64 = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| bad("no epoch"))?;
        if e != epoch {
            return Err(bad("another epoch"));
        }
        let members: Vec<usize> = lines
            .next()
            .unwrap_or("")
            .split(',')
            .map(|m| m.parse().map_err(|_| bad("bad member")))
            .collect::<Result<_, _>>()?;
        let ascending = members.windows(2).all(|w| w[0] < w[1]);
        if members.is_empty() || !ascending || members.iter().any(|&m| m >= world) {
            return Err(bad("members out of range or order"));
        }
        let prefix = lines.next().unwrap_or("").to_string();
        if !prefix.starts_with("fc/") || prefix.len() > 256 || lines.next().is_some() {
            return Err(bad("bad prefix"));
        }
        Ok(Decision {
            epoch,
            members,
            prefix,
        })
    }
}

/// A fresh job-wide key prefix for a new communicator (shrunk or grown).
pub(crate) fn fresh_prefix(store: &dyn Store) -> Result<String, StoreError> {
    Ok(format!("fc/g{}/", store.add(GENERATION_KEY, 1)?))
}

/// The agreement thread of one communicator: idle until it is revoked, then one epoch after
/// another until the next communicator is built, this rank is left out, or it is dropped.
pub(super) fn run(h: &Health, store: &dyn Store, prefix: &str) {
    let stopped = || h.stop.load(Ordering::Acquire);
    {
        let mut st = lock(&h.st);
        while st.revoked_by.is_none() {
            if stopped() {
                return;
            }
            st =
                h.cv.wait_timeout(st, Duration::from_secs(1))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
        }
    }
    loop {
        let epoch = h.epoch();
        let d = match agree_epoch(h, store, prefix, epoch) {
            Ok(d) => d,
            Err(e) => {
                if !stopped() {
                    let why =
                        std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
                    tracing::warn!(rank = h.rank, "agreement of epoch {epoch} failed: {e}{why}");
                    h.agreement_failed(e);
                }
                return;
            }
        };
        tracing::info!(rank = h.rank, "epoch {epoch}: survivors {:?}", d.members);
        let me_in = d.members.contains(&h.rank);
        let members = d.members.clone();
        h.decided(d);
        if !me_in {
            h.agreement_failed(Error::Excluded {
                rank: h.rank,
                epoch,
                survivors: members,
            });
            return;
        }
        // Watch the decided members until the next communicator exists: one that fails
        // now starts the next epoch.
        let mut st = lock(&h.st);
        loop {
            if stopped() || st.finished {
                return;
            }
            if members
                .iter()
                .any(|m| st.suspects.contains(m) && !st.departed.contains(m))
            {
                st.epoch += 1;
                break;
            }
            st =
                h.cv.wait_timeout(st, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
        }
    }
}

/// One epoch: register, wait, propose, adopt.
fn agree_epoch(h: &Health, store: &dyn Store, prefix: &str, epoch: u64) -> Result<Decision, Error> {
    let base = format!("{prefix}ft/{epoch}/");
    let decision_key = format!("{base}decision");
    let alive = |r: usize| format!("{base}alive/{r}");
    store.set(&alive(h.rank), b"1")?;
    let deadline = Instant::now() + h.hb_timeout * REGISTER_WAIT;
    let mut registered = BTreeSet::from([h.rank]);
    let unsettled = |registered: &BTreeSet<usize>| -> Vec<usize> {
        let st = lock(&h.st);
        (0..h.world)
            .filter(|r| {
                !registered.contains(r) && !st.suspects.contains(r) && !st.departed.contains(r)
            })
            .collect()
    };
    loop {
        if h.stop.load(Ordering::Acquire) {
            return Err(Error::Aborted);
        }
        if let Some(v) = peek(store, &decision_key)? {
            return Ok(Decision::decode(&v, h.world, epoch)?);
        }
        for r in unsettled(&registered) {
            if peek(store, &alive(r))?.is_some() {
                registered.insert(r);
            }
        }
        if unsettled(&registered).is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    let members: Vec<usize> = {
        let st = lock(&h.st);
        registered
            .iter()
            .copied()
            .filter(|r| !st.suspects.contains(r) && !st.departed.contains(r))
            .collect()
    };
    let proposal = Decision {
        epoch,
        members,
        prefix: fresh_prefix(store)?,
    };
    let v = store.compare_set(&decision_key, None, &proposal.encode())?;
    Ok(Decision::decode(&v, h.world, epoch)?)
}

/// The value of `key` if it is set now.
fn peek(store: &dyn Store, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    match store.get_timeout(key, Duration::ZERO) {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::Timeout { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip_and_bad_ones_are_refused() {
        let d = Decision {
            epoch: 3,
            members: vec![0, 2, 3],
            prefix: "fc/g7/".into(),
        };
        assert_eq!(Decision::decode(&d.encode(), 4, 3).unwrap(), d);
        assert!(
            Decision::decode(&d.encode(), 3, 3).is_err(),
            "member 3 of 3"
        );
        assert!(Decision::decode(&d.encode(), 4, 2).is_err(), "other epoch");
        for bad in [
            &b""[..],
            b"fc-decision-1",
            b"fc-decision-1\n3\n",
            b"fc-decision-1\n3\n2,1\nfc/g/",
            b"fc-decision-1\n3\n1,1\nfc/g/",
            b"fc-decision-1\n3\n1\nother/",
            b"fc-decision-1\n3\n1\nfc/g/\nmore",
            b"fc-decision-2\n3\n1\nfc/g/",
            b"\xff\xfe",
        ] {
            assert!(Decision::decode(bad, 4, 3).is_err(), "{bad:?}");
        }
    }
}
