//! The `virtio_net_hdr` that prefixes every frame on a TUN opened with
//! `IFF_VNET_HDR`: its layout ([`VnetHdr`], read and written little-endian)
//! and the values of its `flags` and `gso_type` fields.
//!
//! A frame is `[header][IP packet]`; the header says whether the packet is
//! complete (`GSO_NONE`), a super-packet to cut (`GSO_TCPV4`, `GSO_TCPV6`,
//! `GSO_UDP_L4`), and whether its L4 checksum is left to complete
//! (`NEEDS_CSUM`). This module only reads and writes the header; checking it
//! against the packet is the business of the layers above.

use super::error::OffloadError;

/// Length of `struct virtio_net_hdr` (without `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
/// `flags`: the L4 checksum is to be completed from `csum_start`.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `gso_type`: not a super-packet.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4 super-packet.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: TCP over IPv6 super-packet.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (USO) super-packet, either IP version.
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: TCP with ECN (CWR) segmentation; never negotiated here.
pub const GSO_ECN: u8 = 0x80;
/// The largest IP packet a frame carries.
pub(super) const MAX_IP: usize = 65535;

/// A `struct virtio_net_hdr` (include/uapi/linux/virtio_net.h), the 10-byte
/// prefix of every frame on a TUN with `IFF_VNET_HDR`. Fields are
/// little-endian on the wire (`__virtio16` of a modern TUN).
///
/// `hdr_len` is a hint only (the kernel may set it to the whole first
/// packet); [`gso_split`](super::gso_split) recomputes the header length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `GSO_*`, possibly with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (hint).
    pub hdr_len: u16,
    /// Payload bytes per segment (MSS, or UDP payload).
    pub gso_size: u16,
    /// Offset of the L4 header from the start of the IP packet.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The all-zero header: a complete packet, checksums done.
    pub const NONE: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Reads the header from the first 10 bytes of `b` (a whole frame may be
    /// passed). `Err(Truncated)` if `b` is shorter.
    pub fn parse(b: &[u8]) -> Result<VnetHdr, OffloadError> {
        let b = b.get(..VNET_HDR_LEN).ok_or(OffloadError::Truncated)?;
        let le = |at: usize| {
            b.get(at..at + 2)
                .map_or(0, |w| u16::from_le_bytes([w[0], w[1]]))
        };
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    /// The header's 10 bytes.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Writes the header into the first 10 bytes of `b`. `Err(Truncated)`
    /// (and nothing written) if `b` is shorter.
    pub fn emit(&self, b: &mut [u8]) -> Result<(), OffloadError> {
        b.get_mut(..VNET_HDR_LEN)
            .ok_or(OffloadError::Truncated)?
            .copy_from_slice(&self.to_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::error::OffloadError::Truncated;
    use proptest::prelude::*;

    #[test]
    fn header_parse_emit() {
        let h = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        let b = [1, 1, 54, 0, 0xa8, 0x05, 20, 0, 16, 0];
        assert_eq!(h.to_bytes(), b);
        let mut out = [0xffu8; 12];
        h.emit(&mut out).unwrap();
        assert_eq!(&out[..10], &b);
        assert_eq!(out[10..], [0xff, 0xff]);
        assert_eq!(VnetHdr::parse(&out).unwrap(), h);
        assert_eq!(VnetHdr::parse(&[0; 10]).unwrap(), VnetHdr::NONE);
        assert_eq!(VnetHdr::NONE, VnetHdr::default());
    }

    #[test]
    fn header_truncated() {
        for n in 0..VNET_HDR_LEN {
            assert_eq!(VnetHdr::parse(&[0u8; 16][..n]), Err(Truncated));
            let mut b = vec![0x55u8; n];
            assert_eq!(VnetHdr::NONE.emit(&mut b), Err(Truncated));
            assert!(b.iter().all(|&x| x == 0x55));
        }
    }

    proptest! {
        #[test]
        fn header_round_trip(b in any::<[u8; 10]>()) {
            let h = VnetHdr::parse(&b).unwrap();
            prop_assert_eq!(h.to_bytes(), b);
            let mut out = [0u8; 10];
            h.emit(&mut out).unwrap();
            prop_assert_eq!(VnetHdr::parse(&out).unwrap(), h);
        }
    }
}
