//! Key derivation: SKEYSEED and the IKE SA keys (RFC 7296 §2.14), the rekeyed IKE SA
//! (§2.18) and CHILD SA key material (§2.17).
//!
//! ```text
//! SKEYSEED = prf(Ni | Nr, g^ir)
//! {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)
//! rekey:    SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)      with the old SA's PRF
//! CHILD SA: KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr)
//!           = initiator->responder keys | responder->initiator keys
//! ```
//!
//! Lengths: SK_d, SK_pi, SK_pr are the PRF's key length; SK_ai and SK_ar are empty since
//! every encryption transform here is an AEAD; SK_ei, SK_er and each direction of CHILD SA
//! KEYMAT are [`Aead::keymat_len`] bytes (key || 4-byte salt, RFC 5282 §7.1, RFC 7634 §2 and
//! §4, RFC 4106 §8.1). Nonces are checked against RFC 7296 §2.10 and §3.9 by the public
//! functions; the derivations themselves are implemented once over an HMAC, so the NIST
//! CAVP vector (SHA-1, 8-byte nonces) runs through the same code in the tests.
//!
//! Rekeying follows RFC 7296 §2.18 literally: the old SA's PRF computes SKEYSEED, the new
//! SA's PRF runs `prf+`. libreswan does the same; strongSwan (`keymat_v2.c`) runs `prf+`
//! with the old SA's PRF too. The results differ only if a rekey changes the PRF, which
//! strongSwan does not propose by default; that case is untested against a peer.

use super::prf::{Mac, Prf};
use super::secret::{secret_newtype, SecretBytes};
use super::sk::{Aead, SkKey};
use super::{Error, SharedSecret};

/// The shortest nonce RFC 7296 §2.10 allows (128 bits).
pub const MIN_NONCE_LEN: usize = 16;
/// The longest Nonce Data RFC 7296 §3.9 allows.
pub const MAX_NONCE_LEN: usize = 256;

/// Checks a nonce against RFC 7296: 16 to 256 bytes, and at least half the PRF key size.
///
/// # Errors
/// [`Error::NonceLength`].
pub fn check_nonce(prf: Prf, nonce: &[u8]) -> Result<(), Error> {
    let min = MIN_NONCE_LEN.max(prf.key_len().div_ceil(2));
    if (min..=MAX_NONCE_LEN).contains(&nonce.len()) {
        Ok(())
    } else {
        Err(Error::NonceLength {
            len: nonce.len(),
            min,
            max: MAX_NONCE_LEN,
        })
    }
}

/// The original initiator or the original responder of an IKE SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sent the IKE_SA_INIT request (or, for a rekeyed SA, the rekeying request).
    Initiator,
    /// Answered it.
    Responder,
}

impl Role {
    /// The other role.
    pub const fn peer(self) -> Role {
        match self {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        }
    }
}

/// The two IKE SPIs of an IKE SA, as they appear in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IkeSpis {
    /// SPIi.
    pub initiator: [u8; 8],
    /// SPIr.
    pub responder: [u8; 8],
}

/// SKEYSEED, with the PRF that computed it; zeroized on drop.
pub struct Skeyseed {
    prf: Prf,
    bytes: SecretBytes,
}

impl Skeyseed {
    /// For a new IKE SA: `prf(Ni | Nr, g^ir)` (RFC 7296 §2.14).
    ///
    /// # Errors
    /// [`Error::NonceLength`] for a nonce RFC 7296 does not allow.
    pub fn initial(prf: Prf, g_ir: &SharedSecret, ni: &[u8], nr: &[u8]) -> Result<Self, Error> {
        check_nonce(prf, ni)?;
        check_nonce(prf, nr)?;
        Ok(Self {
            prf,
            bytes: initial_skeyseed(prf.mac(), g_ir.expose_secret(), ni, nr),
        })
    }

    /// For a rekeyed IKE SA: `prf(SK_d (old), g^ir (new) | Ni | Nr)` with the old SA's PRF
    /// (RFC 7296 §2.18), `Ni` and `Nr` being the CREATE_CHILD_SA nonces.
    ///
    /// # Errors
    /// [`Error::NonceLength`] for a nonce RFC 7296 does not allow.
    pub fn rekey(
        old_sk_d: &SkD,
        g_ir_new: &SharedSecret,
        ni: &[u8],
        nr: &[u8],
    ) -> Result<Self, Error> {
        let prf = old_sk_d.prf;
        check_nonce(prf, ni)?;
        check_nonce(prf, nr)?;
        Ok(Self {
            prf,
            bytes: rekey_skeyseed(
                prf.mac(),
                old_sk_d.expose_secret(),
                g_ir_new.expose_secret(),
                ni,
                nr,
            ),
        })
    }

    /// The PRF that computed it.
    pub fn prf(&self) -> Prf {
        self.prf
    }

    /// The secret bytes (for a key log); see [`SkD::expose_secret`].
    pub fn expose_secret(&self) -> &[u8] {
        self.bytes.as_bytes()
    }
}

impl std::fmt::Debug for Skeyseed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Skeyseed({:?}, [redacted; {} bytes])",
            self.prf,
            self.bytes.len()
        )
    }
}

/// A key used with a PRF: SK_d or SK_pi / SK_pr. Zeroized on drop.
macro_rules! prf_key {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        pub struct $name {
            prf: Prf,
            bytes: SecretBytes,
        }

        impl $name {
            /// The PRF this key is used with.
            pub fn prf(&self) -> Prf {
                self.prf
            }

            /// The secret bytes. Named so that every use is visible in review: hand them
            /// only to a key log on purpose.
            pub fn expose_secret(&self) -> &[u8] {
                self.bytes.as_bytes()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    concat!(stringify!($name), "({:?}, [redacted; {} bytes])"),
                    self.prf,
                    self.bytes.len()
                )
            }
        }
    };
}

prf_key!(
    /// SK_d: derives CHILD SA keys and the next IKE SA's SKEYSEED.
    SkD
);
prf_key!(
    /// SK_pi or SK_pr: authenticates the ID payload in AUTH (RFC 7296 §2.15).
    SkP
);

impl SkD {
    /// CHILD SA key material: `prf+(SK_d, [g^ir (new) |] Ni | Nr)` (RFC 7296 §2.17), split
    /// into initiator→responder, then responder→initiator, each [`Aead::keymat_len`] bytes
    /// for the ESP transform `esp`. `g_ir_new` is the optional PFS key exchange of a
    /// CREATE_CHILD_SA; `Ni`, `Nr` are the nonces of the exchange that creates the CHILD SA
    /// (IKE_SA_INIT's for the first one).
    ///
    /// # Errors
    /// [`Error::NonceLength`] for a nonce RFC 7296 does not allow.
    pub fn child_sa_keys(
        &self,
        esp: Aead,
        g_ir_new: Option<&SharedSecret>,
        ni: &[u8],
        nr: &[u8],
    ) -> Result<ChildSaKeys, Error> {
        check_nonce(self.prf, ni)?;
        check_nonce(self.prf, nr)?;
        let one = esp.keymat_len();
        let keymat = child_keymat(
            self.prf.mac(),
            self.expose_secret(),
            g_ir_new.map(SharedSecret::expose_secret),
            ni,
            nr,
            2 * one,
        )?;
        let mut parts = Splitter::new(&keymat);
        Ok(ChildSaKeys {
            esp,
            initiator_to_responder: EspKeyMaterial(parts.take(one)?),
            responder_to_initiator: EspKeyMaterial(parts.take(one)?),
        })
    }
}

secret_newtype!(
    /// One direction of a CHILD SA's ESP key material: key || 4-byte salt.
    EspKeyMaterial
);

/// The key material of a CHILD SA (one ESP SA per direction).
#[derive(Debug)]
pub struct ChildSaKeys {
    esp: Aead,
    initiator_to_responder: EspKeyMaterial,
    responder_to_initiator: EspKeyMaterial,
}

impl ChildSaKeys {
    /// The ESP transform the material is for.
    pub fn esp(&self) -> Aead {
        self.esp
    }

    /// Keys for the ESP SA carrying traffic from the initiator to the responder of the
    /// exchange that created the CHILD SA.
    pub fn initiator_to_responder(&self) -> &EspKeyMaterial {
        &self.initiator_to_responder
    }

    /// Keys for the ESP SA carrying traffic from the responder to the initiator.
    pub fn responder_to_initiator(&self) -> &EspKeyMaterial {
        &self.responder_to_initiator
    }

    /// (outbound, inbound) for the side playing `local`.
    pub fn for_role(&self, local: Role) -> (&EspKeyMaterial, &EspKeyMaterial) {
        match local {
            Role::Initiator => (&self.initiator_to_responder, &self.responder_to_initiator),
            Role::Responder => (&self.responder_to_initiator, &self.initiator_to_responder),
        }
    }
}

/// The keys of an IKE SA.
pub struct IkeSaKeys {
    prf: Prf,
    aead: Aead,
    sk_d: SkD,
    sk_ei: SkKey,
    sk_er: SkKey,
    sk_pi: SkP,
    sk_pr: SkP,
}

impl IkeSaKeys {
    /// The keys of a new IKE SA from IKE_SA_INIT: SKEYSEED then `prf+` (RFC 7296 §2.14).
    ///
    /// # Errors
    /// [`Error::NonceLength`] for a nonce RFC 7296 does not allow.
    pub fn initial(
        prf: Prf,
        aead: Aead,
        g_ir: &SharedSecret,
        ni: &[u8],
        nr: &[u8],
        spis: &IkeSpis,
    ) -> Result<Self, Error> {
        let skeyseed = Skeyseed::initial(prf, g_ir, ni, nr)?;
        Self::from_skeyseed(&skeyseed, prf, aead, ni, nr, spis)
    }

    /// The keys of the IKE SA that replaces `self` (RFC 7296 §2.18): SKEYSEED with the old
    /// SA's PRF and SK_d, then `prf+` with the new SA's PRF, the CREATE_CHILD_SA nonces and
    /// the new SPIs.
    ///
    /// # Errors
    /// [`Error::NonceLength`] for a nonce RFC 7296 does not allow.
    pub fn rekey(
        &self,
        prf: Prf,
        aead: Aead,
        g_ir_new: &SharedSecret,
        ni: &[u8],
        nr: &[u8],
        spis: &IkeSpis,
    ) -> Result<Self, Error> {
        let skeyseed = Skeyseed::rekey(&self.sk_d, g_ir_new, ni, nr)?;
        Self::from_skeyseed(&skeyseed, prf, aead, ni, nr, spis)
    }

    /// `{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr |
    /// SPIi | SPIr)` with `prf` (the SA's own PRF, which for a rekeyed SA may differ from
    /// the one that computed SKEYSEED).
    ///
    /// # Errors
    /// [`Error::NonceLength`] for a nonce RFC 7296 does not allow.
    pub fn from_skeyseed(
        skeyseed: &Skeyseed,
        prf: Prf,
        aead: Aead,
        ni: &[u8],
        nr: &[u8],
        spis: &IkeSpis,
    ) -> Result<Self, Error> {
        check_nonce(prf, ni)?;
        check_nonce(prf, nr)?;
        let (p, e) = (prf.key_len(), aead.keymat_len());
        let dkm = ike_sa_dkm(
            prf.mac(),
            skeyseed.expose_secret(),
            ni,
            nr,
            spis,
            3 * p + 2 * e,
        )?;
        let mut parts = Splitter::new(&dkm);
        let sk_d = parts.take(p)?;
        // SK_ai and SK_ar: empty for AEAD transforms (RFC 5282 §7.1, RFC 7634 §4).
        let sk_ei = parts.take(e)?;
        let sk_er = parts.take(e)?;
        let sk_pi = parts.take(p)?;
        let sk_pr = parts.take(p)?;
        Ok(Self {
            prf,
            aead,
            sk_d: SkD { prf, bytes: sk_d },
            sk_ei: SkKey::new(aead, sk_ei)?,
            sk_er: SkKey::new(aead, sk_er)?,
            sk_pi: SkP { prf, bytes: sk_pi },
            sk_pr: SkP { prf, bytes: sk_pr },
        })
    }

    /// The SA's PRF.
    pub fn prf(&self) -> Prf {
        self.prf
    }

    /// The SA's encryption transform.
    pub fn aead(&self) -> Aead {
        self.aead
    }

    /// SK_d.
    pub fn sk_d(&self) -> &SkD {
        &self.sk_d
    }

    /// SK_ei (`Initiator`) or SK_er (`Responder`): the key protecting what `sender` sends.
    pub fn sk_e(&self, sender: Role) -> &SkKey {
        match sender {
            Role::Initiator => &self.sk_ei,
            Role::Responder => &self.sk_er,
        }
    }

    /// SK_pi (`Initiator`) or SK_pr (`Responder`): the key for the ID of `authenticated`.
    pub fn sk_p(&self, authenticated: Role) -> &SkP {
        match authenticated {
            Role::Initiator => &self.sk_pi,
            Role::Responder => &self.sk_pr,
        }
    }

    /// The key to seal our messages with when we play `local`.
    pub fn sealing_key(&self, local: Role) -> &SkKey {
        self.sk_e(local)
    }

    /// The key to open the peer's messages with when we play `local`.
    pub fn opening_key(&self, local: Role) -> &SkKey {
        self.sk_e(local.peer())
    }

    /// CHILD SA key material from this SA's SK_d; see [`SkD::child_sa_keys`].
    ///
    /// # Errors
    /// [`Error::NonceLength`] for a nonce RFC 7296 does not allow.
    pub fn child_sa_keys(
        &self,
        esp: Aead,
        g_ir_new: Option<&SharedSecret>,
        ni: &[u8],
        nr: &[u8],
    ) -> Result<ChildSaKeys, Error> {
        self.sk_d.child_sa_keys(esp, g_ir_new, ni, nr)
    }
}

impl std::fmt::Debug for IkeSaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkeSaKeys")
            .field("prf", &self.prf)
            .field("aead", &self.aead)
            .finish_non_exhaustive()
    }
}

/// Takes consecutive pieces of derived key material.
struct Splitter<'a> {
    rest: &'a [u8],
}

impl<'a> Splitter<'a> {
    fn new(material: &'a SecretBytes) -> Self {
        Self {
            rest: material.as_bytes(),
        }
    }

    fn take(&mut self, len: usize) -> Result<SecretBytes, Error> {
        if len > self.rest.len() {
            return Err(Error::Library);
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(SecretBytes::from_slice(head))
    }
}

// The derivations, over any HMAC. The public functions above add the nonce checks.

/// `SKEYSEED = prf(Ni | Nr, g^ir)`.
pub(crate) fn initial_skeyseed(mac: Mac, g_ir: &[u8], ni: &[u8], nr: &[u8]) -> SecretBytes {
    let key = SecretBytes::concat(&[ni, nr]);
    mac.compute(key.as_bytes(), &[g_ir])
}

/// `SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)`.
pub(crate) fn rekey_skeyseed(
    mac: Mac,
    old_sk_d: &[u8],
    g_ir_new: &[u8],
    ni: &[u8],
    nr: &[u8],
) -> SecretBytes {
    mac.compute(old_sk_d, &[g_ir_new, ni, nr])
}

/// `prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)`.
pub(crate) fn ike_sa_dkm(
    mac: Mac,
    skeyseed: &[u8],
    ni: &[u8],
    nr: &[u8],
    spis: &IkeSpis,
    len: usize,
) -> Result<SecretBytes, Error> {
    mac.plus(skeyseed, &[ni, nr, &spis.initiator, &spis.responder], len)
}

/// `prf+(SK_d, [g^ir (new) |] Ni | Nr)`.
pub(crate) fn child_keymat(
    mac: Mac,
    sk_d: &[u8],
    g_ir_new: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    len: usize,
) -> Result<SecretBytes, Error> {
    match g_ir_new {
        Some(g) => mac.plus(sk_d, &[g, ni, nr], len),
        None => mac.plus(sk_d, &[ni, nr], len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPIS: IkeSpis = IkeSpis {
        initiator: [1, 2, 3, 4, 5, 6, 7, 8],
        responder: [9, 10, 11, 12, 13, 14, 15, 16],
    };

    #[test]
    fn nonce_lengths() {
        assert!(check_nonce(Prf::HmacSha2_256, &[0; 16]).is_ok());
        assert!(check_nonce(Prf::HmacSha2_256, &[0; 256]).is_ok());
        assert_eq!(
            check_nonce(Prf::HmacSha2_256, &[0; 15]).unwrap_err(),
            Error::NonceLength {
                len: 15,
                min: 16,
                max: 256
            }
        );
        assert!(check_nonce(Prf::HmacSha2_256, &[0; 257]).is_err());
        // Half of HMAC-SHA-512's 64-byte key.
        assert!(check_nonce(Prf::HmacSha2_512, &[0; 31]).is_err());
        assert!(check_nonce(Prf::HmacSha2_512, &[0; 32]).is_ok());
        assert!(check_nonce(Prf::HmacSha2_384, &[0; 23]).is_err());
        assert!(check_nonce(Prf::HmacSha2_384, &[0; 24]).is_ok());
    }

    #[test]
    fn split_matches_dkm_layout() {
        let g = SharedSecret::from_bytes(&[7; 32]);
        let (ni, nr) = ([1u8; 32], [2u8; 32]);
        for prf in Prf::ALL {
            for aead in Aead::ALL {
                let keys = IkeSaKeys::initial(prf, aead, &g, &ni, &nr, &SPIS).unwrap();
                let seed = Skeyseed::initial(prf, &g, &ni, &nr).unwrap();
                let (p, e) = (prf.key_len(), aead.keymat_len());
                let dkm = prf
                    .prf_plus(
                        seed.expose_secret(),
                        &[&ni, &nr, &SPIS.initiator, &SPIS.responder],
                        3 * p + 2 * e,
                    )
                    .unwrap();
                let dkm = dkm.expose_secret();
                assert_eq!(keys.sk_d().expose_secret(), &dkm[..p]);
                assert_eq!(keys.sk_e(Role::Initiator).expose_secret(), &dkm[p..p + e]);
                assert_eq!(
                    keys.sk_e(Role::Responder).expose_secret(),
                    &dkm[p + e..p + 2 * e]
                );
                assert_eq!(
                    keys.sk_p(Role::Initiator).expose_secret(),
                    &dkm[p + 2 * e..2 * p + 2 * e]
                );
                assert_eq!(
                    keys.sk_p(Role::Responder).expose_secret(),
                    &dkm[2 * p + 2 * e..]
                );
                assert_eq!(
                    keys.sealing_key(Role::Responder).expose_secret(),
                    keys.opening_key(Role::Initiator).expose_secret()
                );
            }
        }
    }

    #[test]
    fn rekey_uses_old_prf_for_skeyseed_and_new_prf_for_keys() {
        let g = SharedSecret::from_bytes(&[7; 32]);
        let g_new = SharedSecret::from_bytes(&[8; 32]);
        let (ni, nr) = ([1u8; 32], [2u8; 32]);
        let (ni2, nr2) = ([3u8; 64], [4u8; 64]);
        let old =
            IkeSaKeys::initial(Prf::HmacSha2_256, Aead::AesGcm16_128, &g, &ni, &nr, &SPIS).unwrap();
        let new_spis = IkeSpis {
            initiator: [0xa; 8],
            responder: [0xb; 8],
        };
        let new = old
            .rekey(
                Prf::HmacSha2_512,
                Aead::ChaCha20Poly1305,
                &g_new,
                &ni2,
                &nr2,
                &new_spis,
            )
            .unwrap();
        let seed = Prf::HmacSha2_256.prf(
            old.sk_d().expose_secret(),
            &[g_new.expose_secret(), &ni2, &nr2],
        );
        assert_eq!(seed.len(), 32);
        let dkm = Prf::HmacSha2_512
            .prf_plus(
                seed.expose_secret(),
                &[&ni2, &nr2, &new_spis.initiator, &new_spis.responder],
                64,
            )
            .unwrap();
        assert_eq!(new.sk_d().expose_secret(), dkm.expose_secret());
        assert_eq!(new.sk_d().prf(), Prf::HmacSha2_512);
        assert_eq!(new.sk_e(Role::Initiator).len(), 36);
    }

    #[test]
    fn child_keys_split_initiator_to_responder_first() {
        let g = SharedSecret::from_bytes(&[7; 32]);
        let (ni, nr) = ([1u8; 32], [2u8; 32]);
        let keys =
            IkeSaKeys::initial(Prf::HmacSha2_384, Aead::AesGcm16_256, &g, &ni, &nr, &SPIS).unwrap();
        for pfs in [None, Some(&g)] {
            let child = keys
                .child_sa_keys(Aead::AesGcm16_128, pfs, &ni, &nr)
                .unwrap();
            let seed: Vec<&[u8]> = match pfs {
                Some(g) => vec![g.expose_secret(), &ni, &nr],
                None => vec![&ni, &nr],
            };
            let keymat = Prf::HmacSha2_384
                .prf_plus(keys.sk_d().expose_secret(), &seed, 40)
                .unwrap();
            assert_eq!(
                child.initiator_to_responder().expose_secret(),
                &keymat.expose_secret()[..20]
            );
            assert_eq!(
                child.responder_to_initiator().expose_secret(),
                &keymat.expose_secret()[20..]
            );
            let (out, inb) = child.for_role(Role::Responder);
            assert_eq!(out.expose_secret(), &keymat.expose_secret()[20..]);
            assert_eq!(inb.expose_secret(), &keymat.expose_secret()[..20]);
        }
    }

    #[test]
    fn short_nonces_are_refused() {
        let g = SharedSecret::from_bytes(&[7; 32]);
        let err = IkeSaKeys::initial(
            Prf::HmacSha2_256,
            Aead::AesGcm16_128,
            &g,
            &[1; 8],
            &[2; 32],
            &SPIS,
        )
        .unwrap_err();
        assert!(matches!(err, Error::NonceLength { len: 8, .. }));
    }

    #[test]
    fn debug_is_redacted() {
        let g = SharedSecret::from_bytes(&[7; 32]);
        let keys = IkeSaKeys::initial(
            Prf::HmacSha2_256,
            Aead::AesGcm16_128,
            &g,
            &[1; 32],
            &[2; 32],
            &SPIS,
        )
        .unwrap();
        assert_eq!(
            format!("{keys:?}"),
            "IkeSaKeys { prf: HmacSha2_256, aead: AesGcm16_128, .. }"
        );
        assert_eq!(
            format!("{:?}", keys.sk_d()),
            "SkD(HmacSha2_256, [redacted; 32 bytes])"
        );
        let child = keys
            .child_sa_keys(Aead::ChaCha20Poly1305, None, &[1; 32], &[2; 32])
            .unwrap();
        let s = format!("{child:?}");
        assert!(s.contains("EspKeyMaterial([redacted; 36 bytes])"), "{s}");
    }
}
