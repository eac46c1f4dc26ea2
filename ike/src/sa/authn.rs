//! AUTH payloads of IKE_AUTH (RFC 7296 §2.15): ours, and the check of the
//! peer's. Failures name the identity and the method, never the reason a
//! check failed.

use crate::crypto::{signed_octets, HashAlgorithm, IkeSaKeys, Prf, Role};
use crate::wire::{AuthMethod, AuthPayload, AuthRepr, IdRepr, NotifyRepr, NotifyType};

use super::config::{Auth, Config, Identity};
use super::failure::{AuthSide, Failure};

/// Our SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 §4): SHA2-256 (2) for
/// ECDSA P-256 and Identity (5) for Ed25519 (RFC 8420).
pub(crate) fn signature_hash_notify() -> NotifyRepr {
    let data = HashAlgorithm::SUPPORTED
        .iter()
        .flat_map(|h| h.value().to_be_bytes())
        .collect();
    NotifyRepr::new(NotifyType::SIGNATURE_HASH_ALGORITHMS, data)
}

/// The body of an ID payload as we send it (what `prf(SK_p, ...)` covers).
pub(crate) fn id_body(id: &IdRepr) -> Result<Vec<u8>, Failure> {
    let mut b = vec![0u8; id.buffer_len()];
    let n = id
        .emit(&mut b)
        .map_err(|e| Failure::internal("encoding our ID payload", e))?;
    b.truncate(n);
    Ok(b)
}

/// The octets the party playing `authenticated` signs or MACs.
pub(crate) fn octets(
    keys: &IkeSaKeys,
    authenticated: Role,
    real_message: &[u8],
    other_nonce: &[u8],
    id_body: &[u8],
) -> Vec<u8> {
    signed_octets(keys.sk_p(authenticated), real_message, other_nonce, id_body)
}

/// Our AUTH payload over `octets`. With signatures, the peer must have
/// announced the hash algorithm our key needs (`peer_hashes`).
pub(crate) fn ours(
    config: &Config,
    prf: Prf,
    octets: &[u8],
    peer_hashes: &[u16],
) -> Result<AuthRepr, Failure> {
    match &config.auth {
        Auth::Psk(psk) => Ok(AuthRepr {
            method: AuthMethod::SHARED_KEY_MIC,
            data: psk.auth(prf, octets),
        }),
        Auth::Signature { key, .. } => {
            let needed = key.scheme().hash_algorithm();
            if !peer_hashes.contains(&needed.value()) {
                return Err(Failure::PeerLacksSignatureHash { needed });
            }
            let data = key
                .sign_auth(octets)
                .map_err(|e| Failure::internal("signing our AUTH", e))?;
            Ok(AuthRepr {
                method: AuthMethod::DIGITAL_SIGNATURE,
                data,
            })
        }
    }
}

/// Checks the peer's AUTH payload over `octets`.
pub(crate) fn check_peer(
    config: &Config,
    prf: Prf,
    octets: &[u8],
    auth: &AuthPayload<'_>,
    peer: &Identity,
) -> Result<(), Failure> {
    let method = auth.method();
    let expected = config.auth.method();
    if method != expected {
        return Err(Failure::UnexpectedAuthMethod {
            identity: peer.clone(),
            expected,
            received: method,
        });
    }
    let checked = match &config.auth {
        Auth::Psk(psk) => psk.verify(prf, octets, auth.data()),
        Auth::Signature { peer: key, .. } => key.verify_auth(auth.data(), octets),
    };
    checked.map_err(|_| Failure::AuthenticationFailed {
        side: AuthSide::Peer,
        identity: peer.clone(),
        method,
    })
}

/// The peer's SIGNATURE_HASH_ALGORITHMS values, empty if it sent none.
pub(crate) fn peer_hashes(n: Option<&crate::wire::NotifyPayload<'_>>) -> Vec<u16> {
    n.and_then(|n| n.signature_hash_algorithms())
        .map(|it| it.collect())
        .unwrap_or_default()
}
