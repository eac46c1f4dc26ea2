//! The IKEv2 PRFs (RFC 4868: HMAC-SHA2) and `prf+` (RFC 7296 §2.13).
//!
//! Everything is implemented once over an HMAC algorithm ([`Mac`]); [`Prf`] is the set the
//! protocol offers. SHA-1 exists only in tests, to run the NIST CAVP IKEv2 KDF vector,
//! which is published for SHA-1 only.

use aws_lc_rs::hmac;

use super::secret::{secret_newtype, SecretBytes};
use super::Error;

/// `prf+` produces at most 255 blocks: its counter is one octet (RFC 7296 §2.13).
pub const PRF_PLUS_MAX_BLOCKS: usize = 255;

/// An IKEv2 pseudorandom function (Transform Type 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prf {
    /// PRF_HMAC_SHA2_256, transform ID 5 (RFC 4868).
    HmacSha2_256,
    /// PRF_HMAC_SHA2_384, transform ID 6 (RFC 4868).
    HmacSha2_384,
    /// PRF_HMAC_SHA2_512, transform ID 7 (RFC 4868).
    HmacSha2_512,
}

impl Prf {
    /// Every PRF offered, strongest last.
    pub const ALL: [Prf; 3] = [Prf::HmacSha2_256, Prf::HmacSha2_384, Prf::HmacSha2_512];

    /// The IANA transform ID.
    pub const fn transform_id(self) -> u16 {
        match self {
            Prf::HmacSha2_256 => 5,
            Prf::HmacSha2_384 => 6,
            Prf::HmacSha2_512 => 7,
        }
    }

    /// The PRF with this transform ID, if we offer it.
    pub const fn from_transform_id(id: u16) -> Option<Self> {
        match id {
            5 => Some(Prf::HmacSha2_256),
            6 => Some(Prf::HmacSha2_384),
            7 => Some(Prf::HmacSha2_512),
            _ => None,
        }
    }

    /// Output length in bytes (32, 48, 64).
    pub const fn output_len(self) -> usize {
        match self {
            Prf::HmacSha2_256 => 32,
            Prf::HmacSha2_384 => 48,
            Prf::HmacSha2_512 => 64,
        }
    }

    /// The preferred key length, which is the length of SK_d, SK_pi and SK_pr
    /// (RFC 7296 §2.14): for HMAC-SHA2 the output length (RFC 4868 §2.1.2).
    pub const fn key_len(self) -> usize {
        self.output_len()
    }

    /// `prf(key, data[0] | data[1] | ...)`.
    pub fn prf(self, key: &[u8], data: &[&[u8]]) -> PrfOutput {
        PrfOutput(self.mac().compute(key, data))
    }

    /// `prf+(key, seed[0] | seed[1] | ...)`, truncated to `len` bytes.
    ///
    /// # Errors
    /// [`Error::PrfPlusTooLong`] if `len` exceeds 255 blocks.
    pub fn prf_plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Result<PrfOutput, Error> {
        self.mac().plus(key, seed, len).map(PrfOutput)
    }

    /// The largest `len` [`Prf::prf_plus`] accepts.
    pub const fn prf_plus_max_len(self) -> usize {
        PRF_PLUS_MAX_BLOCKS * self.output_len()
    }

    pub(crate) fn mac(self) -> Mac {
        Mac(match self {
            Prf::HmacSha2_256 => hmac::HMAC_SHA256,
            Prf::HmacSha2_384 => hmac::HMAC_SHA384,
            Prf::HmacSha2_512 => hmac::HMAC_SHA512,
        })
    }
}

secret_newtype!(
    /// The output of [`Prf::prf`] or [`Prf::prf_plus`]; zeroized on drop.
    PrfOutput
);

/// An HMAC algorithm: the one implementation behind every PRF computation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mac(hmac::Algorithm);

impl Mac {
    /// HMAC-SHA-1, for the NIST CAVP IKEv2 KDF vector only. Not an IKE PRF here.
    #[cfg(test)]
    pub(crate) const SHA1_FOR_TESTS: Mac = Mac(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY);

    pub(crate) fn output_len(self) -> usize {
        self.0.tag_len()
    }

    /// `HMAC(key, data[0] | data[1] | ...)`.
    pub(crate) fn compute(self, key: &[u8], data: &[&[u8]]) -> SecretBytes {
        let key = hmac::Key::new(self.0, key);
        let mut ctx = hmac::Context::with_key(&key);
        for d in data {
            ctx.update(d);
        }
        SecretBytes::from_slice(ctx.sign().as_ref())
    }

    /// `prf+` (RFC 7296 §2.13):
    /// `T1 = prf(K, S | 0x01)`, `Tn = prf(K, Tn-1 | S | n)`, output `T1 | T2 | ...`
    /// truncated to `len`.
    pub(crate) fn plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Result<SecretBytes, Error> {
        let h = self.output_len();
        let max = PRF_PLUS_MAX_BLOCKS * h;
        if len > max {
            return Err(Error::PrfPlusTooLong {
                requested: len,
                max,
            });
        }
        let key = hmac::Key::new(self.0, key);
        let mut out = SecretBytes::zeroed(len);
        let buf = out.as_mut_bytes();
        let mut at = 0;
        let mut counter: u8 = 1;
        while at < len {
            let mut ctx = hmac::Context::with_key(&key);
            // Every block but the last is whole, so the previous one is `h` bytes.
            if at >= h {
                ctx.update(&buf[at - h..at]);
            }
            for s in seed {
                ctx.update(s);
            }
            ctx.update(&[counter]);
            let tag = ctx.sign();
            let take = h.min(len - at);
            buf[at..at + take].copy_from_slice(&tag.as_ref()[..take]);
            at += take;
            // At most 255 blocks (checked above): the counter never wraps to 0.
            counter = counter.wrapping_add(1);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transform_ids_round_trip() {
        for prf in Prf::ALL {
            assert_eq!(Prf::from_transform_id(prf.transform_id()), Some(prf));
        }
        assert_eq!(Prf::from_transform_id(2), None, "HMAC-SHA1 is not offered");
        assert_eq!(
            Prf::from_transform_id(4),
            None,
            "AES128-XCBC is not offered"
        );
    }

    #[test]
    fn prf_plus_255_blocks_is_the_limit() {
        for prf in Prf::ALL {
            let max = prf.prf_plus_max_len();
            assert_eq!(max, 255 * prf.output_len());
            assert_eq!(prf.prf_plus(b"k", &[b"s"], max).unwrap().len(), max);
            assert_eq!(
                prf.prf_plus(b"k", &[b"s"], max + 1).unwrap_err(),
                Error::PrfPlusTooLong {
                    requested: max + 1,
                    max
                }
            );
            assert_eq!(
                prf.prf_plus(b"k", &[b"s"], usize::MAX).unwrap_err(),
                Error::PrfPlusTooLong {
                    requested: usize::MAX,
                    max
                }
            );
        }
    }

    #[test]
    fn prf_plus_is_a_prefix_of_longer_output() {
        let prf = Prf::HmacSha2_256;
        let long = prf.prf_plus(b"key", &[b"se", b"ed"], 100).unwrap();
        for len in [0, 1, 31, 32, 33, 64, 99] {
            let short = prf.prf_plus(b"key", &[b"seed"], len).unwrap();
            assert_eq!(short.expose_secret(), &long.expose_secret()[..len]);
        }
    }

    #[test]
    fn prf_plus_first_block_is_prf_with_counter_one() {
        let prf = Prf::HmacSha2_384;
        let t1 = prf.prf(b"key", &[b"seed", &[1]]);
        let t2 = prf.prf(b"key", &[t1.expose_secret(), b"seed", &[2]]);
        let plus = prf.prf_plus(b"key", &[b"seed"], 96).unwrap();
        assert_eq!(&plus.expose_secret()[..48], t1.expose_secret());
        assert_eq!(&plus.expose_secret()[48..], t2.expose_secret());
    }
}
