//! Randomness, from the caller: the engine draws none of its own.

use crate::crypto::{Group, KeyExchange};
use crate::wire::{ChildSpi, IkeSpi};

/// A source of cryptographically secure random bytes, provided by the
/// caller (`getrandom` in production; a fixed sequence in tests, so that
/// SPIs, nonces and key exchange values repeat from run to run).
///
/// What the engine draws: IKE SPIs (8 bytes), ESP SPIs (4), nonces (32),
/// key exchange secrets (32), cookie secrets (32). The SK payload's IVs are
/// not drawn: they count from 0 under each fresh SK_e key
/// ([`crate::crypto::IvCounter`]), which is unique per IKE SA.
pub trait Entropy {
    /// Fills `buf` with random bytes. Must not fail: a source that cannot
    /// deliver must abort rather than return predictable bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// Length of the nonces we send (RFC 7296 §2.10: at least half the PRF key
/// size, which is at most 64 here).
pub(crate) const NONCE_LEN: usize = 32;

/// How often to draw a key exchange secret before giving up (an ECP-256
/// scalar is rejected with probability about 2⁻³², so twice already is
/// a broken source).
const KE_DRAWS: usize = 4;

pub(crate) fn array<const N: usize>(e: &mut dyn Entropy) -> [u8; N] {
    let mut b = [0u8; N];
    e.fill(&mut b);
    b
}

/// How often to draw an SPI before concluding that the source is broken
/// (a free SPI is found at the first draw but for a negligible chance).
const SPI_DRAWS: usize = 16;

/// A non-zero IKE SPI for which `taken` is false; `None` if the source
/// keeps returning used values.
pub(crate) fn ike_spi(e: &mut dyn Entropy, taken: impl Fn(IkeSpi) -> bool) -> Option<IkeSpi> {
    (0..SPI_DRAWS)
        .map(|_| IkeSpi(u64::from_be_bytes(array(e))))
        .find(|spi| spi.0 != 0 && !taken(*spi))
}

/// An ESP SPI of 256 or more (1 to 255 are reserved, RFC 4303 §2.1) for
/// which `taken` is false; `None` if the source keeps returning used values.
pub(crate) fn child_spi(e: &mut dyn Entropy, taken: impl Fn(ChildSpi) -> bool) -> Option<ChildSpi> {
    (0..SPI_DRAWS)
        .map(|_| ChildSpi(u32::from_be_bytes(array(e))))
        .find(|spi| spi.0 >= 256 && !taken(*spi))
}

/// A nonce.
pub(crate) fn nonce(e: &mut dyn Entropy) -> Vec<u8> {
    array::<NONCE_LEN>(e).to_vec()
}

/// A fresh key exchange for `group`.
pub(crate) fn key_exchange(
    e: &mut dyn Entropy,
    group: Group,
) -> Result<Box<dyn KeyExchange>, crate::crypto::Error> {
    let mut last = crate::crypto::Error::PrivateKeyRejected;
    for _ in 0..KE_DRAWS {
        let secret = zeroize::Zeroizing::new(array::<32>(e));
        match group.exchange(&secret) {
            Ok(k) => return Ok(k),
            Err(err) => last = err,
        }
    }
    Err(last)
}
