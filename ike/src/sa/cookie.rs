//! Stateless cookies (RFC 7296 §2.6).
//!
//! ```text
//! Cookie = <VersionIDofSecret> | HMAC-SHA-256(<secret>, Ni | IPi | SPIi)
//! ```
//!
//! 4 + 32 = 36 bytes. The secret is drawn from the caller's [`Entropy`] and
//! replaced every [`CookiePolicy::secret_lifetime`]; a cookie made with the
//! previous secret is still accepted until the next replacement, so an
//! initiator caught by a rotation does not need a third round trip. The
//! cookie covers neither the KE payload nor the proposals: an initiator may
//! keep it across an INVALID_KE_PAYLOAD retry (§2.6.1's shorter exchange).
//! Rotation happens lazily, when a request is looked at; it needs no timer.

use std::net::IpAddr;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::Prf;
use crate::wire::IkeSpi;

use super::action::Timestamp;
use super::config::CookiePolicy;
use super::entropy::{array, Entropy};

const VERSION_LEN: usize = 4;

struct Secret {
    version: u32,
    key: Zeroizing<[u8; 32]>,
}

/// The current and previous cookie secrets.
pub(crate) struct CookieJar {
    current: Secret,
    previous: Option<Secret>,
    rotate_at: Timestamp,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar")
            .field("version", &self.current.version)
            .field("rotate_at", &self.rotate_at)
            .finish_non_exhaustive()
    }
}

impl CookieJar {
    pub(crate) fn new(e: &mut dyn Entropy, now: Timestamp, policy: &CookiePolicy) -> Self {
        CookieJar {
            current: Secret {
                version: 0,
                key: Zeroizing::new(array(e)),
            },
            previous: None,
            rotate_at: now.saturating_add(policy.secret_lifetime),
        }
    }

    /// Replaces the secrets that are due: after one lifetime the current
    /// one becomes the previous one; after two, both are replaced.
    pub(crate) fn rotate(&mut self, e: &mut dyn Entropy, now: Timestamp, policy: &CookiePolicy) {
        if now < self.rotate_at {
            return;
        }
        let stale = now >= self.rotate_at.saturating_add(policy.secret_lifetime);
        let next = Secret {
            version: self.current.version.wrapping_add(1),
            key: Zeroizing::new(array(e)),
        };
        let old = std::mem::replace(&mut self.current, next);
        self.previous = if stale { None } else { Some(old) };
        self.rotate_at = now.saturating_add(policy.secret_lifetime);
    }

    fn compute(secret: &Secret, ni: &[u8], ip: IpAddr, spi_i: IkeSpi) -> Vec<u8> {
        let ip_bytes: Vec<u8> = match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let mac = Prf::HmacSha2_256.prf(&secret.key[..], &[ni, &ip_bytes, &spi_i.to_bytes()]);
        let mut out = secret.version.to_be_bytes().to_vec();
        out.extend_from_slice(mac.expose_secret());
        out
    }

    /// The cookie for this request.
    pub(crate) fn make(&self, ni: &[u8], ip: IpAddr, spi_i: IkeSpi) -> Vec<u8> {
        Self::compute(&self.current, ni, ip, spi_i)
    }

    /// Whether `cookie` is one we made for this request with the current or
    /// the previous secret (compared in constant time).
    pub(crate) fn verify(&self, cookie: &[u8], ni: &[u8], ip: IpAddr, spi_i: IkeSpi) -> bool {
        let Some(version) = cookie
            .first_chunk::<VERSION_LEN>()
            .map(|v| u32::from_be_bytes(*v))
        else {
            return false;
        };
        let secret = if version == self.current.version {
            &self.current
        } else {
            match &self.previous {
                Some(p) if p.version == version => p,
                _ => return false,
            }
        };
        let expected = Self::compute(secret, ni, ip, spi_i);
        expected.len() == cookie.len() && bool::from(expected.ct_eq(cookie))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Counter(u8);
    impl Entropy for Counter {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }

    const POLICY: CookiePolicy = CookiePolicy {
        global_threshold: 0,
        per_address_threshold: 0,
        secret_lifetime: Duration::from_secs(60),
    };

    #[test]
    fn cookies_bind_the_request_and_survive_one_rotation() {
        let mut e = Counter(0);
        let t0 = Timestamp::from_millis(0);
        let mut jar = CookieJar::new(&mut e, t0, &POLICY);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let spi = IkeSpi(42);
        let c = jar.make(&[1; 32], ip, spi);
        assert_eq!(c.len(), 36);
        assert!(jar.verify(&c, &[1; 32], ip, spi));
        assert!(!jar.verify(&c, &[2; 32], ip, spi));
        assert!(!jar.verify(&c, &[1; 32], "192.0.2.8".parse().unwrap(), spi));
        assert!(!jar.verify(&c, &[1; 32], ip, IkeSpi(43)));
        assert!(!jar.verify(&c[..35], &[1; 32], ip, spi));
        assert!(!jar.verify(&[], &[1; 32], ip, spi));
        // Not yet due: nothing changes.
        jar.rotate(&mut e, Timestamp::from_millis(59_999), &POLICY);
        assert_eq!(jar.make(&[1; 32], ip, spi), c);
        // One rotation: the old cookie still passes, new ones differ.
        jar.rotate(&mut e, Timestamp::from_millis(60_000), &POLICY);
        assert!(jar.verify(&c, &[1; 32], ip, spi));
        let c2 = jar.make(&[1; 32], ip, spi);
        assert_ne!(c2, c);
        // Another: the first is gone.
        jar.rotate(&mut e, Timestamp::from_millis(120_000), &POLICY);
        assert!(!jar.verify(&c, &[1; 32], ip, spi));
        assert!(jar.verify(&c2, &[1; 32], ip, spi));
        // A long pause: both are replaced.
        jar.rotate(&mut e, Timestamp::from_millis(1_000_000), &POLICY);
        assert!(!jar.verify(&c2, &[1; 32], ip, spi));
    }
}
