//! The data plane's check of an SA install: a compromised IKE process may
//! install only what a malicious peer could already negotiate — SAs for
//! tunnels the policy keys by IKE, with transforms that peer's proposals
//! allow, fresh SPIs and well-formed keys — and nothing else.

use policy_blob::{Policy, TunnelId};

use crate::SaInstall;

/// Why the data plane refused an install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    /// The policy has no such tunnel.
    #[error("the policy has no such tunnel")]
    UnknownTunnel,
    /// The tunnel is keyed manually, or by no IKE peer.
    #[error("the tunnel is not keyed by IKE")]
    NotIkeKeyed,
    /// The transform (AEAD, ESN) is not among the peer's ESP proposals.
    #[error("the transform is not one of the peer's ESP proposals")]
    Transform,
    /// A key is not the transform's key and salt length, or both
    /// directions have the same key.
    #[error("the key material does not fit the transform")]
    Key,
    /// An SPI below 256 (reserved, RFC 4303 §2.1).
    #[error("an SPI below 256 is reserved")]
    ReservedSpi,
    /// The inbound SPI is already installed.
    #[error("the inbound SPI is in use")]
    SpiInUse,
    /// UDP encapsulation to port 0, or without it where the policy forces
    /// it.
    #[error("the encapsulation contradicts the policy")]
    Encapsulation,
    /// No hard lifetime, or a soft one after it.
    #[error("the lifetimes are not ordered")]
    Lifetimes,
}

impl Refusal {
    /// Every refusal, in tag order.
    pub const ALL: [Refusal; 8] = [
        Refusal::UnknownTunnel,
        Refusal::NotIkeKeyed,
        Refusal::Transform,
        Refusal::Key,
        Refusal::ReservedSpi,
        Refusal::SpiInUse,
        Refusal::Encapsulation,
        Refusal::Lifetimes,
    ];

    pub(crate) fn tag(self) -> u8 {
        // `ALL` lists each variant once; the position is the tag.
        Refusal::ALL
            .iter()
            .position(|r| *r == self)
            .and_then(|p| u8::try_from(p + 1).ok())
            .unwrap_or(0)
    }

    pub(crate) fn from_tag(t: u8) -> Option<Refusal> {
        Refusal::ALL.get(usize::from(t).checked_sub(1)?).copied()
    }
}

/// Whether two keys are equal, in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `install` against `policy`; `in_use` says whether an inbound SPI
/// is installed already. On `Ok` the data plane may install it.
pub fn check_install(
    policy: &Policy,
    install: &SaInstall,
    in_use: impl Fn(u32) -> bool,
) -> Result<(), Refusal> {
    let tunnel = policy
        .tunnels
        .iter()
        .find(|t| t.id == install.tunnel)
        .ok_or(Refusal::UnknownTunnel)?;
    if tunnel.manual.is_some() {
        return Err(Refusal::NotIkeKeyed);
    }
    let peer = policy
        .ike
        .as_ref()
        .and_then(|ike| {
            ike.peers
                .iter()
                .find(|p| p.tunnels.contains(&TunnelId(install.tunnel.0)))
        })
        .ok_or(Refusal::NotIkeKeyed)?;
    if !peer
        .esp_proposals
        .iter()
        .any(|e| e.aead == install.aead && e.esn == install.esn)
    {
        return Err(Refusal::Transform);
    }
    let want = install.aead.key_len() + policy_blob::Aead::SALT_LEN;
    if install.key_out.len() != want
        || install.key_in.len() != want
        || same(&install.key_out, &install.key_in)
    {
        return Err(Refusal::Key);
    }
    if install.inbound_spi < 256 || install.outbound_spi < 256 {
        return Err(Refusal::ReservedSpi);
    }
    if in_use(install.inbound_spi) {
        return Err(Refusal::SpiInUse);
    }
    match install.udp_remote_port {
        Some(0) => return Err(Refusal::Encapsulation),
        None if tunnel.udp_encap => return Err(Refusal::Encapsulation),
        _ => {}
    }
    if install.hard_seconds == 0 || install.soft_seconds > install.hard_seconds {
        return Err(Refusal::Lifetimes);
    }
    Ok(())
}
