//! NAT detection (RFC 7296 §2.23): NAT_DETECTION_SOURCE_IP and
//! NAT_DETECTION_DESTINATION_IP carry
//! `SHA-1(SPIi | SPIr | IP address | port)` of the sender's and the
//! receiver's endpoint, with the SPIs as they appear in the message's
//! header (SPIr zero in the IKE_SA_INIT request).
//!
//! SHA-1 is what the protocol specifies here; it serves as a checksum of
//! addresses, not as a signature, and nothing secret goes into it.

use std::net::{IpAddr, SocketAddr};

use aws_lc_rs::digest;

use crate::wire::{IkeSpi, NotifyPayload, NotifyRepr, NotifyType};

use super::action::{NatStatus, Path};

/// `SHA-1(SPIi | SPIr | IP | port)`.
pub(crate) fn hash(spi_i: IkeSpi, spi_r: IkeSpi, addr: SocketAddr) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_bytes());
    ctx.update(&spi_r.to_bytes());
    match addr.ip() {
        IpAddr::V4(a) => ctx.update(&a.octets()),
        IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    ctx.finish().as_ref().to_vec()
}

/// Our two NAT detection notifies for a message on `path` with these SPIs.
/// With `force` (UDP encapsulation forced, RFC 7296 §2.23: "an
/// implementation MAY … pretend to be behind a NAT") the source hash is that
/// of the unspecified address and port 0, which matches no real endpoint:
/// the peer finds us behind a NAT and both sides float to port 4500.
pub(crate) fn notifies(spi_i: IkeSpi, spi_r: IkeSpi, path: Path, force: bool) -> [NotifyRepr; 2] {
    let source = if force {
        let unspecified: IpAddr = match path.local.ip() {
            IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        SocketAddr::new(unspecified, 0)
    } else {
        path.local
    };
    [
        NotifyRepr::new(
            NotifyType::NAT_DETECTION_SOURCE_IP,
            hash(spi_i, spi_r, source),
        ),
        NotifyRepr::new(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            hash(spi_i, spi_r, path.remote),
        ),
    ]
}

/// What the peer's NAT detection notifies, received on `path` in a message
/// with these SPIs, say. A peer that sent none gets no NAT assumed. With
/// `force`, we count ourselves behind a NAT whatever the hashes say (and
/// so float to 4500, encapsulate ESP and send keepalives).
pub(crate) fn detect(
    notifies: &[NotifyPayload<'_>],
    spi_i: IkeSpi,
    spi_r: IkeSpi,
    path: Path,
    force: bool,
) -> NatStatus {
    let of = |ty: NotifyType| notifies.iter().filter(move |n| n.notify_type() == ty);
    let mut sources = of(NotifyType::NAT_DETECTION_SOURCE_IP).peekable();
    let mut destinations = of(NotifyType::NAT_DETECTION_DESTINATION_IP).peekable();
    let remote = hash(spi_i, spi_r, path.remote);
    let local = hash(spi_i, spi_r, path.local);
    NatStatus {
        // The peer may send several source hashes (one per address it has).
        remote_behind_nat: sources.peek().is_some() && !sources.any(|n| n.data() == remote),
        local_behind_nat: force
            || (destinations.peek().is_some() && !destinations.any(|n| n.data() == local)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_of_spis_address_and_port() {
        // sha1(0102030405060708 0000000000000000 c0000201 01f4), computed
        // independently with Python's hashlib.
        let h = hash(
            IkeSpi(0x0102_0304_0506_0708),
            IkeSpi(0),
            "192.0.2.1:500".parse().unwrap(),
        );
        assert_eq!(hex::encode(h), "644b4575455bd6fcc1efe2be8162a9218e448e5f");
    }
}
