//! Mutual challenge–response with the job's secret, for every listener of a job.
//!
//! Both sides draw a fresh 32-byte nonce for each connection and prove that they hold the
//! secret by an HMAC-SHA256 over both nonces:
//!
//! ```text
//! client → server   client nonce Nc
//! server → client   server nonce Ns, HMAC(secret, label ‖ "server" ‖ Nc ‖ Ns)
//! client → server   HMAC(secret, label ‖ "client" ‖ Ns ‖ Nc)
//! ```
//!
//! - The secret never crosses the wire: only MACs of random values do.
//! - A replayed client proof fails: it covers the server's nonce, which is new for every
//!   connection. A replayed server proof fails the same way against the client's nonce.
//! - The two directions use different labels, so a server cannot be used as an oracle that
//!   computes a client's proof, and a proof for one listener (its `label`: the store, the TCP
//!   links) is no proof for another.
//! - The server proves itself first, so a client never talks to an impostor that could feed
//!   it forged addresses; the client's proof then authorises it.
//!
//! A job without a secret uses the empty key: the exchange still runs (one protocol for
//! every job) and anyone who speaks it passes. Such a job binds loopback only unless told
//! otherwise (see the README's security section).
//!
//! The cryptography is the `hmac` and `sha2` crates'; the comparison of MACs is theirs and in
//! constant time.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of a proof (an HMAC-SHA256).
pub const PROOF_BYTES: usize = 32;
/// Shortest secret accepted, in bytes, when a job has one.
pub const MIN_SECRET_BYTES: usize = 16;
/// Longest secret accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 4096;

/// A fresh nonce.
pub type Nonce = [u8; NONCE_BYTES];
/// A proof of the secret over two nonces.
pub type Proof = [u8; PROOF_BYTES];

/// The job's secret as an HMAC key (empty: the job has none). Cheap to clone.
#[derive(Clone, Default)]
pub struct JobKey(Arc<[u8]>);

impl std::fmt::Debug for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes: keys end up in logs through `{:?}` of their holders.
        if self.0.is_empty() {
            f.write_str("JobKey(none)")
        } else {
            write!(f, "JobKey({} bytes)", self.0.len())
        }
    }
}

impl JobKey {
    /// The key of a job with secret `secret`.
    pub fn new(secret: &[u8]) -> JobKey {
        JobKey(Arc::from(secret))
    }

    /// The key of a job without a secret (every proof passes).
    pub fn none() -> JobKey {
        JobKey::default()
    }

    /// Whether the job has a secret.
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    /// The proof that the side named `side` (`b"server"` or `b"client"`) of listener `label`
    /// holds the secret, over the nonces in the order that side sends them.
    pub fn proof(&self, label: &[u8], side: &[u8], first: &Nonce, second: &Nonce) -> Proof {
        self.mac(label, side, first, second)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `got` is the proof [`JobKey::proof`] computes (in constant time).
    pub fn verify(
        &self,
        label: &[u8],
        side: &[u8],
        first: &Nonce,
        second: &Nonce,
        got: &[u8],
    ) -> bool {
        self.mac(label, side, first, second)
            .verify_slice(got)
            .is_ok()
    }

    /// A MAC of the one-shot message `message` bound to `label`: for messages whose
    /// freshness comes from elsewhere (an address drawn anew for each job, under a key drawn
    /// anew for each job), such as the RDMA hellos and the failure detector's datagrams.
    pub fn tag(&self, label: &[u8], message: &[u8]) -> Proof {
        self.mac_parts(&[label, b"tag", message])
            .finalize()
            .into_bytes()
            .into()
    }

    /// A key derived from this one and `material` (HMAC-SHA256 under this key, bound to
    /// `label`): for a key that only holders of both may compute.
    pub fn derive(&self, label: &[u8], material: &[u8]) -> JobKey {
        JobKey::new(&self.tag(label, material))
    }

    /// Whether `got` is the tag [`JobKey::tag`] computes (in constant time).
    pub fn verify_tag(&self, label: &[u8], message: &[u8], got: &[u8]) -> bool {
        self.mac_parts(&[label, b"tag", message])
            .verify_slice(got)
            .is_ok()
    }

    fn mac(&self, label: &[u8], side: &[u8], first: &Nonce, second: &Nonce) -> Hmac<Sha256> {
        self.mac_parts(&[label, side, first, second])
    }

    fn mac_parts(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        // Length-prefixed, so that no two lists of parts feed the MAC the same bytes.
        for part in parts {
            m.update(&(part.len() as u32).to_le_bytes());
            m.update(part);
        }
        m
    }
}

/// A fresh nonce from the operating system's random source.
pub fn nonce() -> std::io::Result<Nonce> {
    let mut n = [0u8; NONCE_BYTES];
    getrandom::fill(&mut n).map_err(std::io::Error::other)?;
    Ok(n)
}

/// `n` random bytes from the operating system (job secrets, unique ids).
pub fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).map_err(std::io::Error::other)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: &[u8] = b"test listener";

    #[test]
    fn a_proof_verifies_only_with_the_same_key_label_side_and_nonces() {
        let (k, other) = (
            JobKey::new(b"0123456789abcdef"),
            JobKey::new(b"0123456789abcdeX"),
        );
        let (a, b) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(a, b);
        let p = k.proof(L, b"client", &a, &b);
        assert!(k.verify(L, b"client", &a, &b, &p));
        assert!(!other.verify(L, b"client", &a, &b, &p));
        assert!(!k.verify(L, b"server", &a, &b, &p));
        assert!(!k.verify(b"another", b"client", &a, &b, &p));
        assert!(!k.verify(L, b"client", &b, &a, &p));
        assert!(!k.verify(L, b"client", &a, &b, &p[..31]));
        // A replay against a fresh server nonce fails.
        let fresh = nonce().unwrap();
        assert!(!k.verify(L, b"client", &fresh, &b, &p));
    }

    #[test]
    fn label_and_side_cannot_be_shifted_into_each_other() {
        let k = JobKey::new(b"0123456789abcdef");
        let n = [7u8; NONCE_BYTES];
        assert_ne!(k.proof(b"ab", b"c", &n, &n), k.proof(b"a", b"bc", &n, &n));
    }

    #[test]
    fn a_tag_verifies_only_with_the_same_key_label_and_message() {
        let k = JobKey::new(b"0123456789abcdef");
        let t = k.tag(L, b"message");
        assert!(k.verify_tag(L, b"message", &t));
        assert!(!k.verify_tag(L, b"messagf", &t));
        assert!(!k.verify_tag(b"other", b"message", &t));
        assert!(!JobKey::new(b"0123456789abcdeX").verify_tag(L, b"message", &t));
        // A tag is never a proof, nor the other way round.
        let n = [0u8; NONCE_BYTES];
        assert_ne!(k.proof(L, b"tag", &n, &n), k.tag(L, &[0u8; 64]));
    }

    #[test]
    fn the_key_is_never_printed() {
        let k = JobKey::new(b"do not print me!");
        let s = format!("{k:?}");
        assert!(!s.contains("print"), "{s}");
        assert_eq!(format!("{:?}", JobKey::none()), "JobKey(none)");
        assert!(!JobKey::none().is_set() && k.is_set());
    }
}
