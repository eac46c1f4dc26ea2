//! UDP encapsulation of ESP (RFC 3948): the UDP header in front of ESP, the
//! non-ESP marker and the NAT-keepalive.
//!
//! Both ports are 4500. On IPv4 the UDP checksum is sent as zero (RFC 3948
//! §2.1); on IPv6 a zero checksum is not allowed (RFC 8200 §8.1), so it is
//! computed. Received checksums are not checked: the ESP ICV authenticates
//! every byte that matters, and a kernel that forwarded the datagram may
//! have left the field to "hardware" (RFC 3948 §3.1.2 lets receivers ignore
//! it).

use super::{checksum_sum, fold, pseudo_header_sum, WireError};

/// Source and destination port of ESP in UDP.
pub const NAT_T_PORT: u16 = 4500;
/// UDP header length.
pub const HEADER_LEN: usize = 8;
/// IP protocol number of UDP.
pub const PROTOCOL: u8 = 17;

/// What a UDP datagram to port 4500 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// ESP, starting at this offset of the outer datagram.
    Esp(usize),
    /// Starts with the four-byte non-ESP marker (IKE on port 4500).
    NonEsp,
    /// A NAT-keepalive (the single byte 0xFF).
    Keepalive,
}

/// Writes a UDP header for `payload_len` bytes at `buf[..8]` (ports 4500,
/// checksum 0).
pub fn emit(buf: &mut [u8], payload_len: usize) -> Result<(), WireError> {
    emit_ports(buf, NAT_T_PORT, NAT_T_PORT, payload_len)
}

/// Writes a UDP header from `src` to `dst` for `payload_len` bytes at
/// `buf[..8]` (checksum 0).
pub fn emit_ports(buf: &mut [u8], src: u16, dst: u16, payload_len: usize) -> Result<(), WireError> {
    let h = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
    let len = u16::try_from(HEADER_LEN + payload_len).map_err(|_| WireError::Malformed)?;
    h[0..2].copy_from_slice(&src.to_be_bytes());
    h[2..4].copy_from_slice(&dst.to_be_bytes());
    h[4..6].copy_from_slice(&len.to_be_bytes());
    h[6..8].copy_from_slice(&[0, 0]);
    Ok(())
}

/// Computes and stores the UDP checksum of `udp` (header + payload, the
/// checksum field zero) for the given addresses (4 or 16 bytes each).
pub fn fill_checksum(udp: &mut [u8], src: &[u8], dst: &[u8]) -> Result<(), WireError> {
    if udp.len() < HEADER_LEN {
        return Err(WireError::Truncated);
    }
    let len = u32::try_from(udp.len()).map_err(|_| WireError::Malformed)?;
    let sum = checksum_sum(udp, pseudo_header_sum(src, dst, PROTOCOL, len));
    let c = match !fold(sum) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Classifies the UDP datagram at `pkt[off..]` (the outer IP payload).
/// `Ok(None)`: not for port 4500. The UDP length must equal the IP payload
/// length.
pub fn classify(pkt: &[u8], off: usize) -> Result<Option<Payload>, WireError> {
    let udp = pkt.get(off..).ok_or(WireError::Truncated)?;
    let h = udp.get(..HEADER_LEN).ok_or(WireError::Truncated)?;
    let dport = u16::from_be_bytes([h[2], h[3]]);
    if dport != NAT_T_PORT {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if len != udp.len() {
        return Err(if len > udp.len() {
            WireError::Truncated
        } else {
            WireError::Malformed
        });
    }
    let body = &udp[HEADER_LEN..];
    Ok(Some(match body {
        [0xff] => Payload::Keepalive,
        [0, 0, 0, 0, ..] => Payload::NonEsp,
        _ => Payload::Esp(off + HEADER_LEN),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(body: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; 20 + HEADER_LEN];
        emit(&mut d[20..], body.len()).unwrap();
        d.extend_from_slice(body);
        d
    }

    #[test]
    fn header_fields() {
        let d = datagram(&[1, 2, 3, 4, 5]);
        assert_eq!(&d[20..28], &[0x11, 0x94, 0x11, 0x94, 0, 13, 0, 0]);
    }

    #[test]
    fn classify_esp_marker_keepalive() {
        assert_eq!(
            classify(&datagram(&[0, 0, 1, 0, 9, 9, 9, 9]), 20),
            Ok(Some(Payload::Esp(28)))
        );
        assert_eq!(
            classify(&datagram(&[0, 0, 0, 0, 9]), 20),
            Ok(Some(Payload::NonEsp))
        );
        assert_eq!(
            classify(&datagram(&[0xff]), 20),
            Ok(Some(Payload::Keepalive))
        );
        let mut other = datagram(&[1, 2, 3, 4]);
        other[23] = 53;
        assert_eq!(classify(&other, 20), Ok(None));
    }

    #[test]
    fn classify_length_mismatch_and_truncation() {
        let mut d = datagram(&[1, 2, 3, 4]);
        d.push(0);
        assert_eq!(classify(&d, 20), Err(WireError::Malformed));
        let d = datagram(&[1, 2, 3, 4]);
        assert_eq!(classify(&d[..30], 20), Err(WireError::Truncated));
        assert_eq!(classify(&d[..24], 20), Err(WireError::Truncated));
        assert_eq!(classify(&d, 40), Err(WireError::Truncated));
    }

    #[test]
    fn checksum_verifies() {
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut d = datagram(&[1, 2, 3, 4, 5, 6, 7]);
        fill_checksum(&mut d[20..], &src, &dst).unwrap();
        let len = (d.len() - 20) as u32;
        let sum = checksum_sum(&d[20..], pseudo_header_sum(&src, &dst, PROTOCOL, len));
        assert_eq!(fold(sum), 0xffff);
    }
}
