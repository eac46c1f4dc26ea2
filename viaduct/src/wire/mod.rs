//! Zero-copy views of the wire formats the Viaduct reads and writes: IPv4,
//! IPv6, ESP and ESP-in-UDP, plus the five-tuple extraction used by selectors.
//!
//! Invariant: every `Packet::new_checked` validates the lengths that its
//! accessors rely on, so no accessor can panic on a value it returned.

pub mod esp;
pub mod ip;
pub mod udp;

pub use esp::EspPacket;
pub use ip::{FiveTuple, Ipv4Packet, Ipv6Packet};

/// Errors of the wire parsers (mapped to drop reasons by the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the fixed header or the declared length.
    Truncated,
    /// A field holds a value the format does not allow.
    Malformed,
    /// A fragment that hides or could rewrite its transport header: a first
    /// fragment too short to hold it (RFC 1858 tiny fragment; RFC 7112 for
    /// IPv6), a later fragment overlapping it (RFC 1858 §3.2), an IPv6
    /// later fragment whose protocol is in the first fragment only.
    Fragment,
}

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// RFC 1071 Internet checksum over `data`: the ones' complement of the
/// folded ones' complement sum, ready to store in a header field.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold(checksum_sum(data, 0))
}

/// Adds `data` to the partial ones' complement sum `init` (RFC 1071) and
/// returns the new partial sum; [`fold`] reduces it to 16 bits.
///
/// `data` is read as big-endian 16-bit words; an odd trailing byte is the
/// high byte of a word padded with zero. Partial sums of pieces add up
/// (`checksum_sum(b, checksum_sum(a, 0))` folds like the sum of `a ‖ b`) when
/// every piece but the last has an even length.
///
/// Any `init` is accepted (carries are folded back in); the result is below
/// 2^33, so callers may add a few results with plain `+`. Never panics.
pub fn checksum_sum(data: &[u8], init: u64) -> u64 {
    // 2^64 ≡ 1 (mod 0xffff), so a 64-bit ones' complement sum (end-around
    // carry) of 8-byte words folds to the 16-bit sum. The words are read in
    // native order and the byte order is fixed once at the end (swapping
    // the bytes of a 16-bit ones' complement sum is multiplying it by 2^8
    // mod 0xffff, RFC 1071 §2(B)). Two accumulators, with their carries
    // counted on the side, keep the additions off one dependency chain.
    let (mut a0, mut a1, mut c0, mut c1) = (0u64, 0u64, 0u64, 0u64);
    let mut blocks = data.chunks_exact(16);
    for b in &mut blocks {
        let v = <[u8; 16]>::try_from(b).map_or(0, u128::from_ne_bytes);
        let (s, c) = a0.overflowing_add(v as u64);
        a0 = s;
        c0 += u64::from(c);
        let (s, c) = a1.overflowing_add((v >> 64) as u64);
        a1 = s;
        c1 += u64::from(c);
    }
    // The tail, padded with zeros: an odd last byte is a word's high byte.
    let rest = blocks.remainder();
    let mut last = [0u8; 16];
    if let Some(dst) = last.get_mut(..rest.len()) {
        dst.copy_from_slice(rest);
    }
    let v = u128::from_ne_bytes(last);
    let mut acc = a0;
    for w in [a1, v as u64, (v >> 64) as u64, c0, c1] {
        let (s, c) = acc.overflowing_add(w);
        // On overflow s ≤ 2^64 − 2, so adding the carry cannot overflow.
        acc = s + u64::from(c);
    }
    let native = fold(acc);
    let be = if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    };
    let t = u64::from(be) + (init >> 32) + (init & 0xffff_ffff);
    (t >> 32) + (t & 0xffff_ffff)
}

/// Folds a partial sum from [`checksum_sum`] to 16 bits with end-around
/// carry. Not inverted: `!fold(s)` is the checksum to store. Only an
/// all-zero sum folds to 0.
pub fn fold(sum: u64) -> u16 {
    let mut s = (sum >> 32) + (sum & 0xffff_ffff);
    while s >> 16 != 0 {
        s = (s >> 16) + (s & 0xffff);
    }
    s as u16
}

/// Partial sum of the TCP/UDP pseudo header: IPv4 (RFC 793 §3.1, RFC 768)
/// when `src` and `dst` are 4-byte addresses, IPv6 (RFC 8200 §8.1) when they
/// are 16-byte addresses. `len` is the upper-layer length (header + data).
///
/// Both layouts sum to `src + dst + proto + len` in 16-bit words (the v6
/// 32-bit length as two words), so the one formula serves both. Never panics.
pub fn pseudo_header_sum(src: &[u8], dst: &[u8], proto: u8, len: u32) -> u64 {
    let fixed = u64::from(proto) + u64::from(len >> 16) + u64::from(len & 0xffff);
    checksum_sum(dst, checksum_sum(src, fixed))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte-pair implementation that `internet_checksum` replaced: the
    /// reference for the fast one (with an initial partial sum added).
    pub(crate) fn reference_sum(data: &[u8], init: u64) -> u16 {
        let mut sum: u64 = init;
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u64::from(*last) << 8;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// The reference checksum (`!` of the reference sum).
    pub(crate) fn reference_checksum(data: &[u8]) -> u16 {
        !reference_sum(data, 0)
    }

    #[test]
    fn rfc1071_example() {
        let b = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(checksum_sum(&b, 0)), 0xddf2);
        assert_eq!(internet_checksum(&b), 0x220d);
        assert_eq!(reference_checksum(&b), 0x220d);
    }

    #[test]
    fn ipv4_header_example() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(internet_checksum(&h), 0);
    }

    #[test]
    fn edge_lengths_and_values() {
        assert_eq!(internet_checksum(&[]), 0xffff);
        assert_eq!(fold(checksum_sum(&[0; 13], 0)), 0);
        assert_eq!(fold(checksum_sum(&[0xff; 16], 0)), 0xffff);
        assert_eq!(fold(checksum_sum(&[0xab], 0)), 0xab00);
        // Carries out of the top of the accumulator are not lost.
        assert_eq!(fold(checksum_sum(&[0xff; 64], u64::MAX)), 0xffff);
        assert_eq!(fold(checksum_sum(&[0, 1], u64::MAX)), 1);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        let ff = vec![0xffu8; 100_001];
        assert_eq!(internet_checksum(&ff), reference_checksum(&ff));
        for len in 0..40 {
            let d: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(internet_checksum(&d), reference_checksum(&d), "len {len}");
        }
    }

    #[test]
    fn pseudo_headers() {
        // IPv4 UDP 192.0.2.1 -> 192.0.2.2, length 12: words summed by hand.
        let s = [192, 0, 2, 1];
        let d = [192, 0, 2, 2];
        let by_hand = 0xc000u64 + 0x0201 + 0xc000 + 0x0202 + 17 + 12;
        assert_eq!(fold(pseudo_header_sum(&s, &d, 17, 12)), fold(by_hand));
        // IPv6: the explicit 40-byte pseudo header of RFC 8200 §8.1.
        let s6: Vec<u8> = (0..16).collect();
        let d6: Vec<u8> = (100..116).collect();
        let len = 0x0001_2345u32;
        let mut ph = Vec::new();
        ph.extend_from_slice(&s6);
        ph.extend_from_slice(&d6);
        ph.extend_from_slice(&len.to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 6]);
        assert_eq!(
            fold(pseudo_header_sum(&s6, &d6, 6, len)),
            reference_sum(&ph, 0)
        );
    }

    proptest! {
        #[test]
        fn fast_equals_reference(data in proptest::collection::vec(any::<u8>(), 0..3000),
                                 init in 0u64..(1 << 40)) {
            prop_assert_eq!(fold(checksum_sum(&data, init)), reference_sum(&data, init));
            prop_assert_eq!(internet_checksum(&data), reference_checksum(&data));
        }

        #[test]
        fn sums_of_pieces_add(a in proptest::collection::vec(any::<u8>(), 0..600),
                              b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut a = a;
            if a.len() % 2 == 1 {
                a.pop();
            }
            let whole: Vec<u8> = a.iter().chain(&b).copied().collect();
            let expect = fold(checksum_sum(&whole, 0));
            prop_assert_eq!(fold(checksum_sum(&a, 0) + checksum_sum(&b, 0)), expect);
            prop_assert_eq!(fold(checksum_sum(&b, checksum_sum(&a, 0))), expect);
        }

        #[test]
        fn large_init_is_safe(data in proptest::collection::vec(any::<u8>(), 0..200),
                              init in any::<u64>()) {
            let small = fold(init);
            prop_assert_eq!(fold(checksum_sum(&data, init)),
                            fold(checksum_sum(&data, u64::from(small))));
        }
    }
}
