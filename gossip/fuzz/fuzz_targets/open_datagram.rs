//! Feeds arbitrary bytes to the gossip datagram opener, sealed and open mode, and checks
//! that whatever opens is bounded by the size limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use murmur_gossip::{Keyring, Seal};

const LIMIT: usize = 65_507;

fuzz_target!(|datagram: &[u8]| {
    let sealed = Seal::new(Some(Keyring::from_cluster_key(b"fuzz")), "fuzz", LIMIT);
    let open = Seal::new(None, "fuzz", LIMIT);
    let mut out = Vec::new();
    for seal in [&sealed, &open] {
        if seal.open(datagram, &mut out).is_ok() {
            assert!(out.len() <= LIMIT);
        }
    }
});
