//! Credentials the init hands over on a descriptor (`--credentials FD`):
//! the secrets behind the policy's `tpm:<name>` references, resolved on the
//! device (the attestation and identity work fills them from the TPM). The
//! descriptor is read to its end once at start and closed; the bytes live
//! in zeroizing buffers only.
//!
//! Format: records, each `name length (u8) | name | secret length (u16 BE)
//! | secret`. A malformed stream is refused whole.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

/// The secrets by name, and the device identity key's signer when the init
/// handed one over.
#[derive(Default)]
pub struct Credentials(BTreeMap<String, Zeroizing<Vec<u8>>>, Option<IdentitySigner>);

/// The device identity key: its public point and the signer that holds it.
#[derive(Clone)]
pub struct IdentitySigner {
    /// The uncompressed point `04 || x || y`.
    pub public: [u8; 65],
    /// Signs with it.
    pub signer: std::sync::Arc<dyn ike::crypto::ExternalSigner>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.keys())
            .entries(self.1.as_ref().map(|_| "identity (signer)"))
            .finish()
    }
}

/// Why the credential stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// It ends inside a record.
    #[error("the credential stream ends inside record {0}")]
    Truncated(usize),
    /// A name is empty, not `a-z 0-9 - _ .`, or given twice.
    #[error("credential record {0} has an empty, malformed or repeated name")]
    BadName(usize),
}

impl Credentials {
    /// Parses the stream.
    ///
    /// # Errors
    /// [`CredentialError`] for a truncated stream or a bad name.
    pub fn parse(mut b: &[u8]) -> Result<Credentials, CredentialError> {
        let mut out = BTreeMap::new();
        let mut i = 0;
        while let Some((&n, rest)) = b.split_first() {
            i += 1;
            let (name, rest) = rest
                .split_at_checked(usize::from(n))
                .ok_or(CredentialError::Truncated(i))?;
            let (len, rest) = rest
                .split_at_checked(2)
                .ok_or(CredentialError::Truncated(i))?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let (secret, rest) = rest
                .split_at_checked(len)
                .ok_or(CredentialError::Truncated(i))?;
            let name = std::str::from_utf8(name)
                .ok()
                .filter(|s| {
                    !s.is_empty()
                        && s.bytes().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(&c)
                        })
                })
                .ok_or(CredentialError::BadName(i))?;
            if out
                .insert(name.to_string(), Zeroizing::new(secret.to_vec()))
                .is_some()
            {
                return Err(CredentialError::BadName(i));
            }
            b = rest;
        }
        Ok(Credentials(out, None))
    }

    /// With the device identity key's signer.
    pub fn with_identity(mut self, identity: IdentitySigner) -> Self {
        self.1 = Some(identity);
        self
    }

    /// The device identity key's signer, if the init handed one over.
    pub fn identity(&self) -> Option<&IdentitySigner> {
        self.1.as_ref()
    }

    /// One record of the stream (for the init and tests).
    pub fn record(name: &str, secret: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(3 + name.len() + secret.len()));
        v.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        v.extend_from_slice(name.as_bytes().get(..255).unwrap_or(name.as_bytes()));
        v.extend_from_slice(
            &u16::try_from(secret.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        v.extend_from_slice(secret.get(..65535).unwrap_or(secret));
        v
    }

    /// The secret named `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(|v| &v[..])
    }

    /// The names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}
