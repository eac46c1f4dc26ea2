//! Secret byte strings: zeroized on drop, never printed, never cloned.

use std::fmt;

use zeroize::Zeroize;

/// Secret bytes of a length fixed at construction.
///
/// The buffer is allocated once at its final size, so no reallocation leaves a copy
/// behind; it is zeroized on drop. `Debug` prints only the length.
pub(crate) struct SecretBytes(Box<[u8]>);

impl SecretBytes {
    /// `len` zero bytes, to be filled in place.
    pub(crate) fn zeroed(len: usize) -> Self {
        Self(vec![0u8; len].into_boxed_slice())
    }

    /// A copy of `bytes`.
    pub(crate) fn from_slice(bytes: &[u8]) -> Self {
        Self(Box::from(bytes))
    }

    /// The concatenation of `parts`.
    pub(crate) fn concat(parts: &[&[u8]]) -> Self {
        let len = parts.iter().map(|p| p.len()).sum();
        let mut out = Self::zeroed(len);
        let mut at = 0;
        for p in parts {
            out.0[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        out
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn as_mut_bytes(&mut self) -> &mut [u8] {
        &mut self.0
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[redacted; {} bytes]", self.0.len())
    }
}

/// Defines a public secret newtype over [`SecretBytes`] with a redacted `Debug` and an
/// explicitly named accessor.
macro_rules! secret_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        pub struct $name(pub(crate) $crate::crypto::secret::SecretBytes);

        impl $name {
            /// The secret bytes. Named so that every use is visible in review: hand them
            /// only to the component that installs or logs keys on purpose.
            pub fn expose_secret(&self) -> &[u8] {
                self.0.as_bytes()
            }

            /// Length in bytes.
            pub fn len(&self) -> usize {
                self.0.len()
            }

            /// Whether the secret is empty.
            pub fn is_empty(&self) -> bool {
                self.0.len() == 0
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, concat!(stringify!($name), "([redacted; {} bytes])"), self.0.len())
            }
        }
    };
}
pub(crate) use secret_newtype;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretBytes::from_slice(b"hunter2");
        assert_eq!(format!("{s:?}"), "[redacted; 7 bytes]");
    }

    #[test]
    fn concat_joins_parts() {
        let s = SecretBytes::concat(&[b"ab", b"", b"cde"]);
        assert_eq!(s.as_bytes(), b"abcde");
    }
}
