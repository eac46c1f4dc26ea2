//! TUN offloads, sans-IO: the `virtio_net_hdr` that prefixes every frame on a
//! TUN opened with `IFF_VNET_HDR`, segmentation of the kernel's TSO/USO
//! super-packets (read side) and userspace GRO into super-packets (write
//! side).
//!
//! Why: with `TUNSETOFFLOAD` the kernel hands the red reader whole TCP bursts
//! (up to 64 KiB, one `read`) with the checksum left to us, and accepts one
//! 64 KiB coalesced frame per `write` instead of ~45 packets. That removes
//! most per-packet syscalls and kernel work on the red side (see
//! `docs/design/viaduct-throughput.md` §1).
//!
//! Layout, lowest layer first; each module uses only those before it:
//!
//! 1. `error`: [`OffloadError`], why a frame could not be processed.
//! 2. `field`: bounds-checked big-endian reads and writes, and the IP, TCP
//!    and UDP numbers the layers above share.
//! 3. `vnet`: [`VnetHdr`], the 10-byte header (`parse`/`emit`,
//!    little-endian), and the values of its fields.
//! 4. `csum`: [`complete_csum`]: a `GSO_NONE` packet with `NEEDS_CSUM` gets
//!    its L4 checksum completed in place.
//! 5. `segment`: [`gso_split`]: a `TCPV4`/`TCPV6`/`UDP_L4` super-packet is
//!    validated as a whole, then cut into MTU-sized IP packets, one at a
//!    time, in a caller's scratch buffer; every segment has its IPv4 header
//!    checksum and its L4 checksum computed from scratch.
//!    [`split_udp_in_place`] does the same for ESP in UDP without copying.
//! 6. `coalesce`: [`Coalescer`]: TCP packets of one flow that arrive in
//!    order are merged into one `NEEDS_CSUM` + `TCPV4`/`TCPV6` frame;
//!    everything else is written unchanged behind an all-zero header, in
//!    per-flow order.
//!
//! Segmentation and coalescing are independent of each other (the tests
//! check one against the other). The tests share `testkit`, a reference
//! packet builder and checker that computes checksums its own way.
//!
//! Invariants: no `unsafe`; no allocation after [`Coalescer::new`]; no panic
//! on any input (every access is bounds-checked with `get`, errors are
//! values). The coalescer never emits `NEEDS_CSUM` for a packet whose IPv4
//! header and TCP checksums it has not verified: the kernel trusts
//! `NEEDS_CSUM` frames, so merging an unverified packet would launder a
//! corrupted one into a valid-looking segment.
#![forbid(unsafe_code)]

mod coalesce;
mod csum;
mod error;
mod field;
mod segment;
#[cfg(test)]
mod testkit;
mod vnet;

pub use coalesce::{Coalescer, CoalescerStats};
pub use csum::complete_csum;
pub use error::OffloadError;
pub use segment::{gso_split, split_udp_in_place};
pub use vnet::{
    VnetHdr, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4, VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VNET_HDR_LEN,
};

#[cfg(test)]
mod tests {
    use super::coalesce::FRAME_CAP;
    use super::testkit::good;
    use super::vnet::MAX_IP;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes: no panic, frames within bounds, segments
        /// counted.
        #[test]
        fn arbitrary_input_never_panics(hdr in any::<[u8; 10]>(),
                                        pkt in proptest::collection::vec(any::<u8>(), 0..300),
                                        valid in any::<bool>(),
                                        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6)) {
            let (mut pkt, mut h) = if valid {
                let (b, h) = good(pkt.len() % 2 == 0, pkt.len() % 3 == 0);
                (b, h)
            } else {
                (pkt, VnetHdr::parse(&hdr).unwrap())
            };
            for (i, v) in flips {
                match i % 4 {
                    0 if !pkt.is_empty() => { let n = pkt.len(); pkt[i % n] = v; }
                    1 => h.gso_size = u16::from(v),
                    2 => h.csum_start = u16::from(v),
                    _ => h.csum_offset = u16::from(v) % 20,
                }
            }
            let mut c = pkt.clone();
            let _ = complete_csum(&mut c, &h);
            let mut none = h;
            none.gso_type = GSO_NONE;
            let _ = complete_csum(&mut c, &none);
            let mut scratch = vec![0u8; MAX_IP];
            let mut segs = Vec::new();
            if let Ok(n) = gso_split(&pkt, &h, &mut scratch, |s| segs.push(s.to_vec())) {
                prop_assert_eq!(n, segs.len());
            }
            let mut co = Coalescer::new();
            let mut frames = 0usize;
            let mut out = |f: &[u8]| { assert!(f.len() <= FRAME_CAP); frames += 1; };
            co.push(&pkt, &mut out);
            co.push(&c, &mut out);
            for s in &segs {
                prop_assert!(s.len() <= MAX_IP + 40);
                co.push(s, &mut out);
            }
            co.flush(&mut out);
            prop_assert_eq!(co.stats().frames, frames as u64);
        }
    }
}
