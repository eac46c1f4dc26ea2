//! The rtnetlink acknowledgement parser (`nic::parse_ack`) on arbitrary bytes: the
//! first four are the sequence number the init waits for (native endian), the rest
//! the kernel's reply.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let seq = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
    let _ = gateway::nic::parse_ack(&data[4..], seq);
});
