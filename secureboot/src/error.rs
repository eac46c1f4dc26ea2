//! The crate's single error type.

/// Everything that can go wrong while signing, verifying or editing variable stores.
///
/// Every message names the input (key, certificate, PE image, signature, variable
/// store) and, where there is one, the field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// PEM input could not be read.
    #[error("{what} (PEM): {reason}")]
    Pem {
        /// Which input ("private key", "certificate").
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A DER structure is malformed.
    #[error("{what}: malformed DER at {field}: {reason}")]
    Der {
        /// Which input ("certificate", "private key", "Authenticode signature").
        what: &'static str,
        /// The ASN.1 field being read.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The private key is not an RSA key.
    #[error("private key is {found}; UEFI Secure Boot (Authenticode as verified by firmware) needs an RSA key")]
    NotRsa {
        /// The algorithm found.
        found: String,
    },
    /// The private key is RSA but could not be loaded or has an unsupported size.
    #[error("private key: {0}")]
    Key(String),
    /// The certificate is structurally valid but unusable.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The private key does not belong to the certificate.
    #[error(
        "private key does not match the certificate's public key (certificate subject {subject})"
    )]
    KeyMismatch {
        /// The certificate's subject common name (or "?" if it has none).
        subject: String,
    },
    /// The PE image could not be parsed.
    #[error("PE image: {0}")]
    Pe(#[from] images::Error),
    /// The PE image cannot be signed as it is.
    #[error("PE image: {0}")]
    Image(String),
    /// The PE image is already signed.
    #[error("PE image is already signed (certificate table at {offset:#x}, {size} bytes); this crate does not add or replace signatures — sign the unsigned image")]
    AlreadySigned {
        /// File offset of the certificate table.
        offset: u32,
        /// Size of the certificate table.
        size: u32,
    },
    /// The PE image carries no Authenticode signature.
    #[error("PE image has no Authenticode signature (certificate table directory entry is empty)")]
    NotSigned,
    /// The certificate table (WIN_CERTIFICATE entries) is malformed.
    #[error("PE certificate table: {0}")]
    CertificateTable(String),
    /// The PKCS#7 / Authenticode structure is well-formed DER but not what is expected.
    #[error("Authenticode signature: {field}: {reason}")]
    Signature {
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Verification failed.
    #[error("Authenticode verification failed: {0}")]
    Verify(String),
    /// A cryptographic operation failed unexpectedly.
    #[error("{0}")]
    Crypto(String),
    /// The firmware volume or variable store is malformed.
    #[error("variable store: {field}: {reason}")]
    VarStore {
        /// The header or field at fault.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The variables do not fit the variable store.
    #[error(
        "variable store is full: the variables need {needed} bytes, the store holds {available}"
    )]
    StoreFull {
        /// Bytes needed for all variable records.
        needed: usize,
        /// Bytes available for variable records.
        available: usize,
    },
    /// A variable cannot be stored as given.
    #[error("variable {name:?}: {reason}")]
    InvalidVariable {
        /// The variable name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An EFI_SIGNATURE_LIST is malformed.
    #[error("EFI signature list at offset {offset:#x}: {reason}")]
    SignatureList {
        /// Offset of the list inside the variable data.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A GUID string could not be parsed.
    #[error("invalid GUID {0:?}: expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")]
    Guid(String),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
