//! Unit tests of the `ofi` transport's address handling.

use super::*;

#[test]
fn payload_round_trips_and_rejects_damage() {
    let p = encode_payload("tcp;ofi_rxm", &[1, 2, 3, 4]);
    assert_eq!(decode_payload(&p), Ok(("tcp;ofi_rxm", &[1u8, 2, 3, 4][..])));
    for cut in 0..p.len() {
        assert!(decode_payload(&p[..cut]).is_err(), "truncated at {cut}");
    }
    let mut long = p.clone();
    long.push(0);
    assert!(decode_payload(&long).unwrap_err().contains("trailing"));
}
