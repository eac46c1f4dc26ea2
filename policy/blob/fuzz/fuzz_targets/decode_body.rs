//! The policy decoder behind the digest: the input is a blob *body*, framed
//! with the magic, format version, length and a correct SHA-256, so every
//! input reaches the body decoder and the validator (arbitrary bytes almost
//! never pass the digest check, which is what `decode` mostly exercises).
//! Must never panic; whatever is accepted re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_blob::{Policy, FORMAT_VERSION, MAGIC};
use sha2::{Digest, Sha256};

fuzz_target!(|body: &[u8]| {
    let Ok(len) = u32::try_from(body.len()) else {
        return;
    };
    let mut blob = Vec::with_capacity(body.len() + 43);
    blob.extend_from_slice(MAGIC);
    blob.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    blob.extend_from_slice(&len.to_be_bytes());
    blob.extend_from_slice(body);
    let d = Sha256::digest(&blob);
    blob.extend_from_slice(&d);
    if let Ok(p) = Policy::decode(&blob) {
        assert_eq!(p.encode(), blob, "accepted blob is not canonical");
    }
});
