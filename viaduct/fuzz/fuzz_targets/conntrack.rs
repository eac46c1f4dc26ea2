//! Feeds sequences of arbitrary datagrams to the connection tracker: each
//! chunk is `[flags, dt, len_hi, len_lo, bytes…]` (flags: bit 0 inbound,
//! bit 1 accepted). Whatever the bytes (ICMP errors quoting anything, cut
//! quotes, fragments, every TCP flag combination), nothing may panic, the
//! table never holds more than its capacity, and only an accepted `new`
//! packet enters a flow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_blob::Direction;
use viaduct::conntrack::{CtState, Timeouts, Tracker};
use viaduct::wire::ip::five_tuple;
use viaduct::Timestamp;

fuzz_target!(|data: &[u8]| {
    let mut t = Tracker::new(
        8,
        Timeouts {
            tcp_first: 5,
            tcp_opening: 3,
            udp_first: 4,
            udp_single: 2,
            icmp_first: 3,
            ..Timeouts::default()
        },
    );
    let mut now = 0u64;
    let mut rest = data;
    while rest.len() >= 4 {
        let (flags, dt) = (rest[0], rest[1]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let end = (4 + len).min(rest.len());
        let pkt = &rest[4..end];
        rest = &rest[end..];
        now += u64::from(dt);
        let dir = if flags & 1 == 1 {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        let Ok(ft) = five_tuple(pkt) else {
            continue;
        };
        let inserted = t.counters().inserted;
        let c = t.classify(dir, pkt, &ft, Timestamp(now));
        if flags & 2 == 2 {
            t.commit(&c, 1, None, Timestamp(now));
            if t.counters().inserted > inserted {
                assert_eq!(c.state, CtState::New);
            }
        }
        assert!(t.len() <= t.capacity());
        let _ = t.flows(Timestamp(now));
    }
    t.expire(Timestamp(now));
    let _ = t.recheck(|v| (v.ports.0 % 2 == 0).then_some(2));
});
