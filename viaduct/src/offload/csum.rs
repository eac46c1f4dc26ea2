//! Checksum completion for a single packet (docs §1.5): the kernel hands a
//! `GSO_NONE` packet with `NEEDS_CSUM` over with its L4 checksum left to the
//! reader (only the pseudo-header sum in the field), as it would to a NIC
//! with checksum offload. Super-packets get their checksums computed segment
//! by segment instead (see `segment`).

use super::error::OffloadError::{self, Unsupported};
use super::field::{rd16, wr16, UDP_CSUM_OFFSET};
use super::vnet::{VnetHdr, GSO_NONE, VIRTIO_NET_HDR_F_NEEDS_CSUM};
use crate::wire::{checksum_sum, fold};

/// Completes the L4 checksum of a `GSO_NONE` packet in place (RFC 1071;
/// docs §1.5). With `NEEDS_CSUM`, the field at `csum_start + csum_offset`
/// holds the folded pseudo-header sum (not inverted); the checksum covers
/// `pkt[csum_start..]`. Without `NEEDS_CSUM`: `Ok(())`, nothing changed.
///
/// A result of 0 is stored as 0xFFFF when `csum_offset` is 6 (UDP, where 0
/// means "no checksum"); both encode zero in ones' complement, so this is
/// also safe for the other protocols with a checksum at offset 6.
///
/// Errors: `Unsupported` for a super-packet (use
/// [`gso_split`](super::gso_split)); `Truncated` if the field lies outside
/// `pkt`. `pkt` is unchanged on error.
pub fn complete_csum(pkt: &mut [u8], h: &VnetHdr) -> Result<(), OffloadError> {
    if h.gso_type != GSO_NONE {
        return Err(Unsupported("gso_type"));
    }
    if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let cs = usize::from(h.csum_start);
    let co = cs + usize::from(h.csum_offset);
    // The field lies inside `pkt`, hence so does `csum_start`: nothing can
    // fail after the field is zeroed.
    let init = rd16(pkt, co)?;
    wr16(pkt, co, 0)?;
    let l4 = pkt.get(cs..).unwrap_or_default();
    let mut c = !fold(checksum_sum(l4, u64::from(init)));
    if c == 0 && usize::from(h.csum_offset) == UDP_CSUM_OFFSET {
        c = 0xffff;
    }
    wr16(pkt, co, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::error::OffloadError::Truncated;
    use crate::offload::testkit::{pattern, pseudo_bytes, verifies, Pkt};
    use crate::offload::vnet::GSO_TCPV4;
    use crate::wire::tests::reference_sum;
    use proptest::prelude::*;

    /// The packet as the kernel hands it over: check field = folded pseudo
    /// sum, header GSO_NONE + NEEDS_CSUM.
    fn partial(p: &Pkt) -> (Vec<u8>, VnetHdr) {
        let (b, mut h) = p.build_super(1);
        h.gso_type = GSO_NONE;
        h.gso_size = 0;
        (b, h)
    }

    #[test]
    fn complete_csum_tcp_and_udp() {
        for (v6, udp) in [(false, false), (true, false), (false, true), (true, true)] {
            for len in [0, 1, 2, 3, 100, 1401] {
                let p = Pkt {
                    payload: pattern(len, len as u64),
                    opts: if udp {
                        vec![]
                    } else {
                        vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]
                    },
                    ..Pkt::new(v6, udp)
                };
                let (mut b, h) = partial(&p);
                complete_csum(&mut b, &h).unwrap();
                assert!(verifies(&b), "v6={v6} udp={udp} len={len}");
                assert_eq!(b, p.build());
            }
        }
    }

    #[test]
    fn complete_csum_udp_zero_becomes_ffff() {
        for v6 in [false, true] {
            let mut p = Pkt {
                payload: pattern(64, 9),
                ..Pkt::new(v6, true)
            };
            // Choose the last payload word so that the checksum comes out 0.
            p.payload[62] = 0;
            p.payload[63] = 0;
            let l4 = p.l4();
            let s = reference_sum(
                &[pseudo_bytes(&p.src, &p.dst, 17, l4.len()), l4].concat(),
                0,
            );
            p.payload[62..64].copy_from_slice(&(!s).to_be_bytes());
            let (mut b, h) = partial(&p);
            complete_csum(&mut b, &h).unwrap();
            let cs = if v6 { 40 } else { 20 };
            assert_eq!(&b[cs + 6..cs + 8], &[0xff, 0xff]);
            assert!(verifies(&b));
            assert_eq!(b, p.build());
            // TCP with a checksum of 0 keeps 0 (also valid).
            let mut t = Pkt {
                payload: pattern(64, 9),
                ..Pkt::new(v6, false)
            };
            t.payload[62] = 0;
            t.payload[63] = 0;
            let l4 = t.l4();
            let s = reference_sum(&[pseudo_bytes(&t.src, &t.dst, 6, l4.len()), l4].concat(), 0);
            t.payload[62..64].copy_from_slice(&(!s).to_be_bytes());
            let (mut b, h) = partial(&t);
            complete_csum(&mut b, &h).unwrap();
            assert_eq!(&b[cs + 16..cs + 18], &[0, 0]);
            assert!(verifies(&b));
        }
    }

    #[test]
    fn complete_csum_without_needs_csum_is_a_no_op() {
        let p = Pkt::tcp4(100);
        let (b, mut h) = partial(&p);
        h.flags = 0;
        let mut c = b.clone();
        complete_csum(&mut c, &h).unwrap();
        assert_eq!(c, b);
        complete_csum(&mut c, &VnetHdr::NONE).unwrap();
        assert_eq!(c, b);
    }

    #[test]
    fn complete_csum_errors_leave_packet_alone() {
        let p = Pkt::tcp4(10);
        let (b, h) = partial(&p);
        let mut c = b.clone();
        let mut gso = h;
        gso.gso_type = GSO_TCPV4;
        assert_eq!(complete_csum(&mut c, &gso), Err(Unsupported("gso_type")));
        let mut far = h;
        far.csum_offset = (b.len() - 21) as u16; // field would end one past the end
        assert_eq!(complete_csum(&mut c, &far), Err(Truncated));
        far.csum_start = u16::MAX;
        far.csum_offset = u16::MAX;
        assert_eq!(complete_csum(&mut c, &far), Err(Truncated));
        assert_eq!(c, b);
        let mut empty: [u8; 0] = [];
        assert_eq!(complete_csum(&mut empty, &h), Err(Truncated));
    }

    proptest! {
        #[test]
        fn complete_csum_matches_reference(v6 in any::<bool>(), udp in any::<bool>(),
                                           len in 0usize..3000, seed in any::<u64>()) {
            let p = Pkt { payload: pattern(len, seed), ..Pkt::new(v6, udp) };
            let (mut b, h) = partial(&p);
            complete_csum(&mut b, &h).unwrap();
            prop_assert_eq!(b, p.build());
        }
    }
}
