//! Feeds arbitrary bytes to the inbound path (outer IP + ESP, and outer IP +
//! UDP/4500 + ESP for a tunnel with UDP encapsulation) and to the raw ESP
//! decapsulation of an SA. None may panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use policy_blob::*;
use viaduct::{Engine, InboundSa, Timestamp};

fn policy(udp: bool) -> Policy {
    let a = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
    let b = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2));
    let mut t = Tunnel::new(1, "fuzz", a, b, Aead::Aes128Gcm16)
        .with_local_ts(TrafficSelector::prefix(Prefix::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 24)))
        .with_remote_ts(TrafficSelector::prefix(Prefix::new(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 0)), 24)))
        .with_manual_keys(
            ManualSa { spi: Spi(0x1000), key: KeyMaterial::new(vec![1; 20]) },
            ManualSa { spi: Spi(0x2000), key: KeyMaterial::new(vec![2; 20]) },
        );
    t.udp_encap = udp;
    Policy::new("fuzz", "1").with_local(a).with_tunnel(t)
}

fuzz_target!(|data: &[u8]| {
    for udp in [false, true] {
        let mut engine = Engine::new(&policy(udp), Timestamp(0)).expect("valid policy");
        let mut pkt = data.to_vec();
        let _ = engine.inbound(&mut pkt, Timestamp(0));
    }
    let mut engine = Engine::new(&policy(false), Timestamp(0)).expect("valid policy");
    let mut out = vec![0u8; data.len() + 128];
    let _ = engine.outbound(data, &mut out, Timestamp(0));
    let mut sa = InboundSa::new(TunnelId(1), Spi(0x2000), Aead::ChaCha20Poly1305, &[3; 36], true, 1024, Lifetimes::default(), Timestamp(0))
        .expect("valid SA");
    let mut raw = data.to_vec();
    let _ = sa.decap(&mut raw, Timestamp(0));
});
