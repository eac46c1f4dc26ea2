//! Key exchange (Transform Type 4): group 31 = x25519 (RFC 8031) and group 19 = ECP-256
//! (RFC 5903), behind the [`KeyExchange`] trait so that tests can inject known values.
//!
//! Ephemeral secrets come from the caller as 32 bytes (this module draws no random
//! numbers). aws-lc-rs has no seeded key generation, but imports raw private keys, which
//! is what the known-answer tests use.
//!
//! Peer validation:
//! - x25519: the KE data must be exactly 32 bytes. Every 32-byte string is a valid input
//!   to X25519 (RFC 7748 §5; non-canonical values are reduced), but a low-order point
//!   gives an all-zero shared secret, which RFC 8031 §2 requires us to reject: aws-lc
//!   already fails on it, and [`X25519Exchange`] checks again in constant time.
//! - ECP-256: the KE data must be exactly 64 bytes, x || y (RFC 5903 §7). We pass aws-lc
//!   `0x04 || x || y`, so only the uncompressed form is possible; aws-lc rejects
//!   coordinates not below p and points not on the curve. The shared secret is the
//!   x coordinate of the product (RFC 5903 §7), 32 bytes.

use aws_lc_rs::agreement::{self, UnparsedPublicKey};
use subtle::ConstantTimeEq;

use super::secret::{secret_newtype, SecretBytes};
use super::Error;

/// A Diffie-Hellman group (Transform Type 4, "Key Exchange Method").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    /// 256-bit random ECP group, transform ID 19 (RFC 5903).
    Ecp256,
    /// Curve25519, transform ID 31 (RFC 8031).
    Curve25519,
}

impl Group {
    /// Every group offered.
    pub const ALL: [Group; 2] = [Group::Curve25519, Group::Ecp256];

    /// The IANA transform ID, also the KE payload's "Diffie-Hellman Group Num".
    pub const fn transform_id(self) -> u16 {
        match self {
            Group::Ecp256 => 19,
            Group::Curve25519 => 31,
        }
    }

    /// The group with this transform ID, if we offer it.
    pub const fn from_transform_id(id: u16) -> Option<Self> {
        match id {
            19 => Some(Group::Ecp256),
            31 => Some(Group::Curve25519),
            _ => None,
        }
    }

    /// Length of the KE payload's key exchange data (64 for ECP-256, 32 for x25519).
    pub const fn ke_data_len(self) -> usize {
        match self {
            Group::Ecp256 => 64,
            Group::Curve25519 => 32,
        }
    }

    /// Length of the shared secret g^ir (32 for both).
    pub const fn shared_secret_len(self) -> usize {
        32
    }

    /// A key exchange for this group from 32 caller-supplied random bytes.
    ///
    /// # Errors
    /// [`Error::PrivateKeyRejected`] for an ECP-256 scalar that is zero or not below the
    /// group order (probability about 2^-32 for random bytes): draw again.
    pub fn exchange(self, secret: &[u8; 32]) -> Result<Box<dyn KeyExchange>, Error> {
        Ok(match self {
            Group::Ecp256 => Box::new(Ecp256Exchange::from_secret(secret)?),
            Group::Curve25519 => Box::new(X25519Exchange::from_secret(secret)?),
        })
    }
}

secret_newtype!(
    /// The Diffie-Hellman shared secret g^ir; zeroized on drop.
    SharedSecret
);

impl SharedSecret {
    /// Wraps shared-secret bytes, e.g. from a test double of [`KeyExchange`].
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(SecretBytes::from_slice(bytes))
    }
}

/// One side of one key exchange.
///
/// The state machine holds a `Box<dyn KeyExchange>`, sends [`KeyExchange::public_value`]
/// in its KE payload and calls [`KeyExchange::agree`] with the peer's KE data, which
/// consumes the exchange: an ephemeral key is used once. Tests implement this trait to
/// inject known public values and shared secrets.
pub trait KeyExchange: Send + Sync {
    /// The group.
    fn group(&self) -> Group;

    /// Our KE data, [`Group::ke_data_len`] bytes.
    fn public_value(&self) -> &[u8];

    /// g^ir from the peer's KE data.
    ///
    /// # Errors
    /// [`Error::InvalidPeerPublicValue`] for KE data of the wrong length or not a valid
    /// public value; [`Error::ZeroSharedSecret`] for an all-zero x25519 result.
    fn agree(self: Box<Self>, peer_ke_data: &[u8]) -> Result<SharedSecret, Error>;
}

/// x25519 (group 31, RFC 8031).
pub struct X25519Exchange {
    private: agreement::PrivateKey,
    public: [u8; 32],
}

impl X25519Exchange {
    /// From 32 random bytes (clamped by X25519 itself, RFC 7748 §5).
    ///
    /// # Errors
    /// [`Error::PrivateKeyRejected`] if aws-lc refuses the key (it does not for any
    /// 32-byte string).
    pub fn from_secret(secret: &[u8; 32]) -> Result<Self, Error> {
        let private = agreement::PrivateKey::from_private_key(&agreement::X25519, secret)
            .map_err(|_| Error::PrivateKeyRejected)?;
        let public = private
            .compute_public_key()
            .map_err(|_| Error::PrivateKeyRejected)?;
        let public: [u8; 32] = public
            .as_ref()
            .try_into()
            .map_err(|_| Error::PrivateKeyRejected)?;
        Ok(Self { private, public })
    }
}

impl std::fmt::Debug for X25519Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X25519Exchange")
            .field("public", &HexBytes(&self.public))
            .finish_non_exhaustive()
    }
}

impl KeyExchange for X25519Exchange {
    fn group(&self) -> Group {
        Group::Curve25519
    }

    fn public_value(&self) -> &[u8] {
        &self.public
    }

    fn agree(self: Box<Self>, peer_ke_data: &[u8]) -> Result<SharedSecret, Error> {
        if peer_ke_data.len() != Group::Curve25519.ke_data_len() {
            return Err(Error::InvalidPeerPublicValue);
        }
        let peer = UnparsedPublicKey::new(&agreement::X25519, peer_ke_data);
        // aws-lc's X25519 fails on an all-zero result; that failure and the check below
        // both report the low-order point.
        let secret = agreement::agree(&self.private, peer, Error::ZeroSharedSecret, |s| {
            Ok(SecretBytes::from_slice(s))
        })?;
        if secret.len() != 32 || bool::from(secret.as_bytes().ct_eq(&[0u8; 32])) {
            return Err(Error::ZeroSharedSecret);
        }
        Ok(SharedSecret(secret))
    }
}

/// ECP-256 (group 19, RFC 5903).
pub struct Ecp256Exchange {
    private: agreement::PrivateKey,
    /// x || y (the SEC1 point without its 0x04 prefix).
    public: [u8; 64],
}

impl Ecp256Exchange {
    /// From a 32-byte big-endian scalar, which must be in [1, n-1].
    ///
    /// # Errors
    /// [`Error::PrivateKeyRejected`] if the scalar is zero or not below the group order.
    pub fn from_secret(secret: &[u8; 32]) -> Result<Self, Error> {
        let private = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, secret)
            .map_err(|_| Error::PrivateKeyRejected)?;
        let point = private
            .compute_public_key()
            .map_err(|_| Error::PrivateKeyRejected)?;
        let point = point.as_ref();
        if point.len() != 65 || point[0] != 0x04 {
            return Err(Error::PrivateKeyRejected);
        }
        let mut public = [0u8; 64];
        public.copy_from_slice(&point[1..]);
        Ok(Self { private, public })
    }
}

impl std::fmt::Debug for Ecp256Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ecp256Exchange")
            .field("public", &HexBytes(&self.public))
            .finish_non_exhaustive()
    }
}

impl KeyExchange for Ecp256Exchange {
    fn group(&self) -> Group {
        Group::Ecp256
    }

    fn public_value(&self) -> &[u8] {
        &self.public
    }

    fn agree(self: Box<Self>, peer_ke_data: &[u8]) -> Result<SharedSecret, Error> {
        if peer_ke_data.len() != Group::Ecp256.ke_data_len() {
            return Err(Error::InvalidPeerPublicValue);
        }
        let mut point = [0u8; 65];
        point[0] = 0x04;
        point[1..].copy_from_slice(peer_ke_data);
        let peer = UnparsedPublicKey::new(&agreement::ECDH_P256, &point[..]);
        let secret = agreement::agree(&self.private, peer, Error::InvalidPeerPublicValue, |s| {
            Ok(SecretBytes::from_slice(s))
        })?;
        if secret.len() != 32 {
            return Err(Error::Library);
        }
        Ok(SharedSecret(secret))
    }
}

/// Public values print as hex.
struct HexBytes<'a>(&'a [u8]);

impl std::fmt::Debug for HexBytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transform_ids_round_trip() {
        for g in Group::ALL {
            assert_eq!(Group::from_transform_id(g.transform_id()), Some(g));
        }
        assert_eq!(
            Group::from_transform_id(14),
            None,
            "MODP-2048 is not offered"
        );
    }

    #[test]
    fn both_sides_agree() {
        for g in Group::ALL {
            let a = g.exchange(&[0x11; 32]).unwrap();
            let b = g.exchange(&[0x22; 32]).unwrap();
            assert_eq!(a.public_value().len(), g.ke_data_len());
            let (pa, pb) = (a.public_value().to_vec(), b.public_value().to_vec());
            let sa = a.agree(&pb).unwrap();
            let sb = b.agree(&pa).unwrap();
            assert_eq!(sa.expose_secret(), sb.expose_secret());
            assert_eq!(sa.len(), g.shared_secret_len());
        }
    }

    #[test]
    fn wrong_lengths_are_rejected() {
        for g in Group::ALL {
            let peer = g.exchange(&[0x22; 32]).unwrap().public_value().to_vec();
            for bad in [
                &peer[..peer.len() - 1],
                &[peer.as_slice(), &[0]].concat()[..],
                &[],
            ] {
                let a = g.exchange(&[0x11; 32]).unwrap();
                assert_eq!(a.agree(bad).unwrap_err(), Error::InvalidPeerPublicValue);
            }
        }
    }

    #[test]
    fn ecp256_rejects_points_off_the_curve_and_bad_scalars() {
        let peer = Group::Ecp256.exchange(&[0x22; 32]).unwrap();
        let mut bad = peer.public_value().to_vec();
        bad[63] ^= 1; // y changed: not on the curve
        let a = Group::Ecp256.exchange(&[0x11; 32]).unwrap();
        assert_eq!(a.agree(&bad).unwrap_err(), Error::InvalidPeerPublicValue);
        // All zeros (what a compressed or infinity encoding would look like padded).
        let a = Group::Ecp256.exchange(&[0x11; 32]).unwrap();
        assert_eq!(
            a.agree(&[0u8; 64]).unwrap_err(),
            Error::InvalidPeerPublicValue
        );
        // x = p (not a field element), y arbitrary.
        let mut p = [0u8; 64];
        p[..32].copy_from_slice(&[
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff,
        ]);
        let a = Group::Ecp256.exchange(&[0x11; 32]).unwrap();
        assert_eq!(a.agree(&p).unwrap_err(), Error::InvalidPeerPublicValue);

        assert_eq!(
            Ecp256Exchange::from_secret(&[0u8; 32]).unwrap_err(),
            Error::PrivateKeyRejected
        );
        assert_eq!(
            Ecp256Exchange::from_secret(&[0xff; 32]).unwrap_err(),
            Error::PrivateKeyRejected
        );
        // n itself is rejected, n - 1 accepted.
        let n: [u8; 32] = [
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2,
            0xfc, 0x63, 0x25, 0x51,
        ];
        assert_eq!(
            Ecp256Exchange::from_secret(&n).unwrap_err(),
            Error::PrivateKeyRejected
        );
        let mut n_minus_1 = n;
        n_minus_1[31] -= 1;
        assert!(Ecp256Exchange::from_secret(&n_minus_1).is_ok());
    }

    #[test]
    fn x25519_rejects_low_order_points() {
        // u = 0 and u = 1 have low order: the shared secret would be all zeros.
        for u in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            let a = Group::Curve25519.exchange(&[0x11; 32]).unwrap();
            assert_eq!(a.agree(&u).unwrap_err(), Error::ZeroSharedSecret);
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let a = X25519Exchange::from_secret(&[0x11; 32]).unwrap();
        let s = format!("{a:?}");
        assert!(s.starts_with("X25519Exchange { public: "), "{s}");
        assert!(!s.contains("1111111111"), "{s}");
        let b = Box::new(X25519Exchange::from_secret(&[0x22; 32]).unwrap());
        let secret = Box::new(a).agree(b.public_value()).unwrap();
        assert_eq!(format!("{secret:?}"), "SharedSecret([redacted; 32 bytes])");
    }
}
