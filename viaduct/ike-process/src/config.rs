//! From the compiled policy's IKE section to one [`ike::sa::Config`] per
//! peer, with credentials resolved.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ike::crypto::{Aead as IkeAead, Group, PinnedPublicKey, PreSharedKey, Prf, SigningKey};
use ike::sa::{Auth, ChildLifetimes, Config, EspProposal, Identity, IkeProposal};
use ike::wire::TrafficSelector;
use policy_blob as blob;

use crate::credentials::Credentials;

/// Why a peer's tunnel stays closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// A `tpm:` credential the init did not hand over.
    #[error("credential tpm:{0} is not provisioned on this device; the tunnel stays closed")]
    Unprovisioned(String),
    /// `private_key = "tpm:identity"`, and the init handed over no signer: this
    /// boot has no usable device identity key.
    #[error(
        "the device identity key is unusable this boot (the init's `identity:` line and PCR 15 \
         say why); the tunnel stays closed"
    )]
    NoIdentity,
    /// A credential of the wrong shape.
    #[error("credential {what}: {problem}")]
    BadCredential {
        /// Which.
        what: String,
        /// What is wrong.
        problem: String,
    },
    /// A peer keys more tunnels than one IKE SA carries.
    #[error("the peer keys {0} tunnels; at most {max} per peer", max = ike::sa::MAX_TUNNELS)]
    TooManyTunnels(usize),
    /// The engine refused the configuration.
    #[error("{0}")]
    Engine(String),
}

/// One peer, ready for an engine.
#[derive(Debug)]
pub struct Connection {
    /// Its index in the policy's IKE section (how the channel names it).
    pub peer: u16,
    /// Its name.
    pub name: String,
    /// The tunnels its CHILD SAs key, in the engine's order (the engine's
    /// tunnel `i` is `tunnels[i]`).
    pub tunnels: Vec<blob::TunnelId>,
    /// Whether we start the IKE SA: the gateway with the lower outer
    /// address initiates, the other answers, so the two never race.
    pub initiator: bool,
    /// A dead peer leaves the tunnel down (DPD action `clear`) instead of
    /// the initiator starting again.
    pub dpd_clear: bool,
    /// The engine's configuration.
    pub config: Config,
}

fn identity(id: &blob::IkeIdentity) -> Identity {
    match id {
        blob::IkeIdentity::Fqdn(s) => Identity::Fqdn(s.clone()),
        blob::IkeIdentity::Addr(a) => Identity::Addr(*a),
    }
}

fn aead(a: blob::Aead) -> IkeAead {
    match a {
        blob::Aead::Aes128Gcm16 => IkeAead::AesGcm16_128,
        blob::Aead::Aes256Gcm16 => IkeAead::AesGcm16_256,
        blob::Aead::ChaCha20Poly1305 => IkeAead::ChaCha20Poly1305,
    }
}

fn group(g: blob::KeGroup) -> Group {
    match g {
        blob::KeGroup::X25519 => Group::Curve25519,
        blob::KeGroup::Ecp256 => Group::Ecp256,
    }
}

/// The first and last address of a prefix.
fn range(p: &blob::Prefix) -> (IpAddr, IpAddr) {
    match p.addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let host = u32::MAX.checked_shr(u32::from(p.len)).unwrap_or(0);
            (
                IpAddr::V4((bits & !host).into()),
                IpAddr::V4((bits | host).into()),
            )
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let host = u128::MAX.checked_shr(u32::from(p.len)).unwrap_or(0);
            (
                IpAddr::V6((bits & !host).into()),
                IpAddr::V6((bits | host).into()),
            )
        }
    }
}

/// A policy traffic selector as IKE sends it.
pub fn selector(t: &blob::TrafficSelector) -> TrafficSelector {
    let (start, end) = range(&t.prefix);
    TrafficSelector {
        ip_protocol: t.protocol.0,
        start_port: t.ports.start,
        end_port: t.ports.end,
        start,
        end,
    }
}

fn credential(
    c: &blob::Credential,
    creds: &Credentials,
) -> Result<zeroize::Zeroizing<Vec<u8>>, PeerError> {
    match c {
        blob::Credential::Lab(k) => Ok(zeroize::Zeroizing::new(k.expose().to_vec())),
        blob::Credential::Device(name) => creds
            .get(name)
            .map(|b| zeroize::Zeroizing::new(b.to_vec()))
            .ok_or_else(|| PeerError::Unprovisioned(name.clone())),
    }
}

/// Our signing key: the device identity key through the init's signer
/// (`tpm:identity`), a provisioned Ed25519 seed (`tpm:<name>`) or a lab seed.
fn own_key(ike: &blob::IkeConfig, creds: &Credentials) -> Result<SigningKey, PeerError> {
    let own = ike
        .private_key
        .as_ref()
        .ok_or_else(|| PeerError::BadCredential {
            what: "private key".into(),
            problem: "none configured".into(),
        })?;
    if matches!(own, blob::Credential::Device(n) if n == blob::DEVICE_IDENTITY) {
        let id = creds.identity().ok_or(PeerError::NoIdentity)?;
        return SigningKey::external_p256(&id.public, id.signer.clone()).map_err(|e| {
            PeerError::BadCredential {
                what: "the device identity key".into(),
                problem: e.to_string(),
            }
        });
    }
    let seed = credential(own, creds)?;
    let seed: [u8; 32] = seed[..].try_into().map_err(|_| PeerError::BadCredential {
        what: "private key".into(),
        problem: "an Ed25519 seed is 32 bytes".into(),
    })?;
    SigningKey::ed25519_from_seed(&seed).map_err(|e| PeerError::BadCredential {
        what: "private key".into(),
        problem: e.to_string(),
    })
}

/// The connection of peer `index` of `ike`, in `policy`.
///
/// # Errors
/// [`PeerError`] if its credentials are missing or malformed, it keys no
/// tunnel or too many, or the engine refuses the result.
pub fn connection(
    policy: &blob::Policy,
    ike: &blob::IkeConfig,
    index: usize,
    creds: &Credentials,
) -> Result<Connection, PeerError> {
    let p = ike
        .peers
        .get(index)
        .ok_or_else(|| PeerError::Engine("no such peer".into()))?;
    if p.tunnels.is_empty() {
        return Err(PeerError::Engine("the peer keys no tunnel".into()));
    }
    if p.tunnels.len() > ike::sa::MAX_TUNNELS {
        return Err(PeerError::TooManyTunnels(p.tunnels.len()));
    }
    let tunnels = p
        .tunnels
        .iter()
        .map(|id| {
            policy.tunnels.iter().find(|t| t.id == *id).ok_or_else(|| {
                PeerError::Engine(format!("the peer's tunnel {} is not in the policy", id.0))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // One IKE SA's CHILD SAs share their lifetimes (the profile sets them per
    // peer); the first tunnel's are taken.
    let tunnel = tunnels[0];
    let auth = match &p.auth {
        blob::IkeAuth::Psk(c) => {
            let secret = credential(c, creds)?;
            Auth::Psk(
                PreSharedKey::new(&secret).map_err(|e| PeerError::BadCredential {
                    what: format!("PSK of peer {}", p.name),
                    problem: e.to_string(),
                })?,
            )
        }
        blob::IkeAuth::Ed25519 { peer_public_key } => Auth::Signature {
            key: own_key(ike, creds)?,
            peer: PinnedPublicKey::ed25519(peer_public_key).map_err(|e| {
                PeerError::BadCredential {
                    what: format!("public key of peer {}", p.name),
                    problem: e.to_string(),
                }
            })?,
        },
        blob::IkeAuth::EcdsaP256 { peer_public_key } => Auth::Signature {
            key: own_key(ike, creds)?,
            peer: PinnedPublicKey::ecdsa_p256(peer_public_key).map_err(|e| {
                PeerError::BadCredential {
                    what: format!("public key of peer {}", p.name),
                    problem: e.to_string(),
                }
            })?,
        },
    };
    let mut c = Config::new(
        SocketAddr::new(p.local, viaduct_channel::IKE_PORT),
        SocketAddr::new(p.remote, viaduct_channel::IKE_PORT),
        identity(&ike.local_id),
        identity(&p.remote_id),
        auth,
    );
    c.ike_proposals = p
        .ike_proposals
        .iter()
        .map(|x| IkeProposal {
            aead: aead(x.aead),
            prf: match x.prf {
                blob::IkePrf::Sha256 => Prf::HmacSha2_256,
                blob::IkePrf::Sha384 => Prf::HmacSha2_384,
                blob::IkePrf::Sha512 => Prf::HmacSha2_512,
            },
            group: group(x.group),
        })
        .collect();
    c.esp_proposals = p
        .esp_proposals
        .iter()
        .map(|e| EspProposal {
            aead: aead(e.aead),
            esn: e.esn,
        })
        .collect();
    c.pfs = p.pfs.map(group);
    c.local_ts = tunnel.local_ts.iter().map(selector).collect();
    c.remote_ts = tunnel.remote_ts.iter().map(selector).collect();
    c.more_tunnels = tunnels[1..]
        .iter()
        .map(|t| ike::sa::Selectors {
            local_ts: t.local_ts.iter().map(selector).collect(),
            remote_ts: t.remote_ts.iter().map(selector).collect(),
        })
        .collect();
    let hard = tunnel.lifetimes.hard.seconds.unwrap_or(4200).max(1);
    let soft = tunnel
        .lifetimes
        .soft
        .seconds
        .unwrap_or(hard - hard / 10)
        .clamp(1, hard);
    c.child_lifetimes = ChildLifetimes {
        rekey_after: Duration::from_secs(soft),
        expire_after: Duration::from_secs(hard),
    };
    c.ike_rekey_after = Some(Duration::from_secs(p.ike_rekey_seconds));
    // `encapsulation = "udp"` (set per peer): ESP in UDP even without a NAT.
    c.force_udp_encapsulation = tunnels.iter().any(|t| t.udp_encap);
    c.dpd_delay =
        (p.dpd.delay_seconds > 0).then(|| Duration::from_secs(u64::from(p.dpd.delay_seconds)));
    c.validate().map_err(|e| PeerError::Engine(e.to_string()))?;
    Ok(Connection {
        peer: u16::try_from(index).map_err(|_| PeerError::Engine("too many peers".into()))?,
        name: p.name.clone(),
        tunnels: p.tunnels.clone(),
        initiator: p.local < p.remote,
        dpd_clear: p.dpd.action == blob::DpdAction::Clear,
        config: c,
    })
}
