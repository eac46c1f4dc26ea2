//! The channel between the Viaduct's data plane (`viaduct`) and its IKE
//! process (`viaduct-ike`): one message per `SOCK_SEQPACKET` record, in both
//! directions, and the data plane's check of every SA the IKE process asks
//! it to install ([`check_install`]).
//!
//! # What crosses, and which way
//!
//! - **IKE → data plane** ([`ToDataPlane`]): an IKE message to send to a
//!   peer, a CHILD SA to install (SPIs, transform, keys, encapsulation), the
//!   switch of a tunnel's outbound SA to a newer one, a CHILD SA to delete.
//! - **Data plane → IKE** ([`ToIke`]): an IKE message a peer sent, an SA's
//!   soft or hard lifetime reached, an install refused. No key, no packet
//!   of the tunnels, nothing from red ever travels this way.
//!
//! Peers are named by their index in the policy's IKE section, never by an
//! address: the data plane builds every outer header from the policy's
//! addresses, so the IKE process cannot make it send to anyone else, nor
//! learn anything but what the peers sent.
//!
//! # Encoding
//!
//! A tag byte, then the fields in order, big-endian, with u16-length-
//! prefixed byte strings; nothing may trail. [`ToDataPlane::decode`] and
//! [`ToIke::decode`] never panic and allocate no more than the record
//! holds. Key material is zeroized when the message is dropped and never
//! printed by `Debug`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod check;
mod codec;

pub use check::{check_install, InstallRules, Refusal};
pub use codec::{DecodeError, MAX_RECORD};

use policy_blob::{Aead, TunnelId};
use zeroize::Zeroizing;

/// The IKE ports (RFC 7296 §2.23): 500, and 4500 after NAT detection.
pub const IKE_PORT: u16 = 500;
/// The NAT-T port (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;

/// An IKE message and the UDP ports it travels between (the addresses are
/// the policy's: our `local` and the peer's `remote`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeDatagram {
    /// The peer, by its index in the policy's IKE section.
    pub peer: u16,
    /// Our UDP port: 500 or 4500.
    pub local_port: u16,
    /// The peer's UDP port (behind a NAT, any).
    pub remote_port: u16,
    /// The IKE message (on port 4500 without the non-ESP marker).
    pub bytes: Vec<u8>,
}

/// A CHILD SA for the data plane: both directions of one tunnel.
#[derive(Clone, PartialEq, Eq)]
pub struct SaInstall {
    /// The tunnel it carries.
    pub tunnel: TunnelId,
    /// Our SPI: the peer sends with it.
    pub inbound_spi: u32,
    /// The peer's SPI: we send with it.
    pub outbound_spi: u32,
    /// The transform.
    pub aead: Aead,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Key material we send with (key ‖ salt).
    pub key_out: Zeroizing<Vec<u8>>,
    /// Key material we receive with (key ‖ salt).
    pub key_in: Zeroizing<Vec<u8>>,
    /// ESP inside UDP (RFC 3948) to this port of the peer's, if a NAT was
    /// detected or the policy asks for it.
    pub udp_remote_port: Option<u16>,
    /// Send with it at once, or only after [`ToDataPlane::UseOutbound`].
    pub outbound_active: bool,
    /// Soft lifetime (seconds): report [`ToIke::SaLifetime`] then.
    pub soft_seconds: u64,
    /// Hard lifetime (seconds): the SA is unusable after it.
    pub hard_seconds: u64,
}

impl std::fmt::Debug for SaInstall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaInstall")
            .field("tunnel", &self.tunnel)
            .field("inbound_spi", &format_args!("{:08x}", self.inbound_spi))
            .field("outbound_spi", &format_args!("{:08x}", self.outbound_spi))
            .field("aead", &self.aead)
            .field("esn", &self.esn)
            .field("keys", &"<redacted>")
            .field("udp_remote_port", &self.udp_remote_port)
            .field("outbound_active", &self.outbound_active)
            .field("soft_seconds", &self.soft_seconds)
            .field("hard_seconds", &self.hard_seconds)
            .finish()
    }
}

/// From the IKE process to the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToDataPlane {
    /// Send an IKE message to a peer.
    SendIke(IkeDatagram),
    /// Install a CHILD SA (checked by [`check_install`] first).
    InstallSa(Box<SaInstall>),
    /// Send the tunnel's traffic with this installed CHILD SA from now on.
    UseOutbound {
        /// The tunnel.
        tunnel: TunnelId,
        /// The CHILD SA, by our inbound SPI.
        inbound_spi: u32,
    },
    /// Remove a CHILD SA (both directions).
    DeleteSa {
        /// The tunnel.
        tunnel: TunnelId,
        /// The CHILD SA, by our inbound SPI.
        inbound_spi: u32,
    },
}

/// From the data plane to the IKE process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToIke {
    /// An IKE message from a peer.
    IkeDatagram(IkeDatagram),
    /// A CHILD SA reached a lifetime (soft: rekey it; hard: it is gone).
    SaLifetime {
        /// The tunnel.
        tunnel: TunnelId,
        /// The CHILD SA, by our inbound SPI.
        inbound_spi: u32,
        /// The hard limit (else the soft one).
        hard: bool,
    },
    /// An install was refused (the SA is not in the data plane).
    Refused {
        /// The tunnel named.
        tunnel: TunnelId,
        /// The inbound SPI named.
        inbound_spi: u32,
        /// Why.
        refusal: Refusal,
    },
}
