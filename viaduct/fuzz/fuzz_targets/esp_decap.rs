//! Feeds arbitrary bytes to the inbound path (outer IP + ESP, and outer IP +
//! UDP/4500 + ESP for a tunnel with UDP encapsulation), to the outbound path
//! and to the raw ESP decapsulation of an SA. None may panic.
//!
//! The inbound engines are the right side of `viaduct_fuzz::policy` (known
//! keys), one per AEAD, with the outer family and encapsulation the input
//! claims, so the committed seeds (ESP packets sealed by the left engine,
//! `examples/gen_seeds.rs`) authenticate and reach the code behind the ICV
//! check before the fuzzer mutates them; one more engine has the other
//! encapsulation (encapsulation mismatch, cleartext UDP/4500).
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy_blob::{Aead, Lifetimes, Spi, TunnelId};
use viaduct::{InboundSa, Timestamp};
use viaduct_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let now = Timestamp(0);
    let v6 = data.first().map(|b| b >> 4) == Some(6);
    let in_udp = match data.first().map(|b| b >> 4) {
        Some(4) => data.get(9) == Some(&17),
        Some(6) => data.get(6) == Some(&17),
        _ => false,
    };
    let params = |aead: Aead, udp: bool| Params {
        aead,
        v6,
        udp,
        esn: true,
        tfc: Vec::new(),
        dscp: 0,
        lifetimes: false,
        small_window: false,
    };
    for (aead, udp) in [
        (Aead::Aes128Gcm16, in_udp),
        (Aead::Aes256Gcm16, in_udp),
        (Aead::ChaCha20Poly1305, in_udp),
        (Aead::Aes128Gcm16, !in_udp),
    ] {
        let mut e = engine(&policy(&params(aead, udp), Side::Right), now);
        let mut pkt = data.to_vec();
        let _ = e.inbound(&mut pkt, now);
    }
    let mut e = engine(
        &policy(&params(Aead::ChaCha20Poly1305, false), Side::Left),
        now,
    );
    let mut out = vec![0u8; data.len() + 2_000];
    let _ = e.outbound(data, &mut out, now);
    let mut sa = InboundSa::new(
        TunnelId(1),
        Spi(0x2000),
        Aead::ChaCha20Poly1305,
        &[3; 36],
        true,
        1024,
        Lifetimes::default(),
        now,
    )
    .expect("valid SA");
    let mut raw = data.to_vec();
    let _ = sa.decap(&mut raw, now);
});
