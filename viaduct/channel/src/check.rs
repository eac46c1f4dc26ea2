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

/// What the check needs of the policy, without a key or a credential: the
/// data plane keeps this for the life of the process (the policy itself,
/// lab keys and all, is dropped once the engine is built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallRules {
    tunnels: Vec<TunnelRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TunnelRule {
    id: TunnelId,
    /// Keyed by IKE: no manual keys and a peer of the IKE section names it.
    ike: bool,
    /// The ESP transforms that peer may negotiate: (AEAD, ESN).
    esp: Vec<(policy_blob::Aead, bool)>,
    /// The policy forces ESP in UDP.
    udp_encap: bool,
}

impl InstallRules {
    /// The rules of `policy`.
    pub fn new(policy: &Policy) -> InstallRules {
        let tunnels = policy
            .tunnels
            .iter()
            .map(|t| {
                let peer = policy
                    .ike
                    .as_ref()
                    .and_then(|ike| ike.peers.iter().find(|p| p.tunnels.contains(&t.id)));
                TunnelRule {
                    id: t.id,
                    ike: t.manual.is_none() && peer.is_some(),
                    esp: peer
                        .map(|p| p.esp_proposals.iter().map(|e| (e.aead, e.esn)).collect())
                        .unwrap_or_default(),
                    udp_encap: t.udp_encap,
                }
            })
            .collect();
        InstallRules { tunnels }
    }

    /// Whether the tunnel is keyed by IKE.
    pub fn ike_keyed(&self, tunnel: TunnelId) -> bool {
        self.tunnels.iter().any(|t| t.id == tunnel && t.ike)
    }

    /// Checks `install`; `in_use` says whether an inbound SPI is installed
    /// already. On `Ok` the data plane may install it.
    ///
    /// # Errors
    /// The first rule the install breaks.
    pub fn check(&self, install: &SaInstall, in_use: impl Fn(u32) -> bool) -> Result<(), Refusal> {
        let tunnel = self
            .tunnels
            .iter()
            .find(|t| t.id == install.tunnel)
            .ok_or(Refusal::UnknownTunnel)?;
        if !tunnel.ike {
            return Err(Refusal::NotIkeKeyed);
        }
        if !tunnel
            .esp
            .iter()
            .any(|&(aead, esn)| aead == install.aead && esn == install.esn)
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
}

/// Checks `install` against `policy` ([`InstallRules::check`]); `in_use`
/// says whether an inbound SPI is installed already. On `Ok` the data plane
/// may install it.
///
/// # Errors
/// The first rule the install breaks.
pub fn check_install(
    policy: &Policy,
    install: &SaInstall,
    in_use: impl Fn(u32) -> bool,
) -> Result<(), Refusal> {
    InstallRules::new(policy).check(install, in_use)
}
