//! Transport address blobs (transports/src/plugin.rs, tcp/factory.rs), as published in the
//! store: `AddressBlob::open` only accepts the transport and version asked for and returns
//! the rest, and a TCP address that decodes survives a round trip.
#![no_main]

use ferrocoll_transports::plugin::AddressBlob;
use ferrocoll_transports::tcp::factory::decode_address;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let blob = AddressBlob(data.to_vec());
    let claimed = blob.transport();
    for (name, version) in [("tcp", 1), ("shm", 1), ("ofi", 1), ("rdma", 1)] {
        if let Ok(payload) = blob.open(name, version, 3) {
            assert_eq!(claimed, Some(name));
            assert_eq!(AddressBlob::new(name, version, payload), blob);
        }
    }
    if let Ok(addr) = decode_address(&blob, 3) {
        let again = AddressBlob::new("tcp", 1, addr.to_string().as_bytes());
        assert_eq!(decode_address(&again, 3).ok(), Some(addr));
    }
});
