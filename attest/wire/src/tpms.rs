//! TPM 2.0 structures an attestation needs, marshalled and parsed by hand (TPM 2.0
//! Library, Part 2; all integers big-endian).
//!
//! - [`Public`]: `TPMT_PUBLIC` (RSA and ECC keys), its [`Public::name`] and the two
//!   templates the gateway uses: the TCG default RSA-2048 EK ([`ek_rsa_template`],
//!   EK Credential Profile template L-1) and the attestation key
//!   ([`ak_rsa_template`]: restricted RSASSA-SHA256 signing key).
//! - [`Attest`]: `TPMS_ATTEST` of a quote (`TPM_ST_ATTEST_QUOTE`) or a certification
//!   (`TPM_ST_ATTEST_CERTIFY`).
//! - [`Signature`]: `TPMT_SIGNATURE` (RSASSA, RSAPSS, ECDSA).
//! - [`PcrSelection`]: `TPML_PCR_SELECTION`, compared byte for byte (bank, size of
//!   select, bitmap): a verifier must compare the **signed** selection with the
//!   requested one, never the unsigned one that travels next to a quote.
//!
//! Invariants: every parser checks each length against the buffer and rejects trailing
//! bytes; nothing here panics on any input (see the proptests and the fuzz target).

use sha2::{Digest, Sha256};

/// `TPM_ALG_RSA`.
pub const ALG_RSA: u16 = 0x0001;
/// `TPM_ALG_SHA256`.
pub const ALG_SHA256: u16 = 0x000B;
/// `TPM_ALG_NULL`.
pub const ALG_NULL: u16 = 0x0010;
/// `TPM_ALG_AES`.
pub const ALG_AES: u16 = 0x0006;
/// `TPM_ALG_CFB`.
pub const ALG_CFB: u16 = 0x0043;
/// `TPM_ALG_RSASSA`.
pub const ALG_RSASSA: u16 = 0x0014;
/// `TPM_ALG_RSAPSS`.
pub const ALG_RSAPSS: u16 = 0x0016;
/// `TPM_ALG_ECDSA`.
pub const ALG_ECDSA: u16 = 0x0018;
/// `TPM_ALG_ECC`.
pub const ALG_ECC: u16 = 0x0023;
/// `TPM_ECC_NIST_P256`.
pub const ECC_NIST_P256: u16 = 0x0003;

/// `TPM_GENERATED_VALUE`: the magic of every `TPMS_ATTEST` the TPM signs.
pub const TPM_GENERATED: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_ST_ATTEST_CERTIFY`.
pub const ST_ATTEST_CERTIFY: u16 = 0x8017;

/// `TPMA_OBJECT` bits.
pub mod attr {
    /// fixedTPM: the key cannot leave this TPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// stClear.
    pub const ST_CLEAR: u32 = 1 << 2;
    /// fixedParent: the key cannot be duplicated to another parent.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// sensitiveDataOrigin: the TPM generated the private part.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// userWithAuth: the USER role may use the key with its authValue.
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// adminWithPolicy: the ADMIN role needs the policy.
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    /// noDA.
    pub const NO_DA: u32 = 1 << 10;
    /// encryptedDuplication.
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    /// restricted: signs only digests the TPM computed (quotes, certifications), or
    /// decrypts only TPM-formatted data.
    pub const RESTRICTED: u32 = 1 << 16;
    /// decrypt.
    pub const DECRYPT: u32 = 1 << 17;
    /// sign / encrypt.
    pub const SIGN: u32 = 1 << 18;

    /// Names of the bits set in `a`, for messages.
    pub fn names(a: u32) -> String {
        let all = [
            (FIXED_TPM, "fixedTPM"),
            (ST_CLEAR, "stClear"),
            (FIXED_PARENT, "fixedParent"),
            (SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
            (USER_WITH_AUTH, "userWithAuth"),
            (ADMIN_WITH_POLICY, "adminWithPolicy"),
            (NO_DA, "noDA"),
            (ENCRYPTED_DUPLICATION, "encryptedDuplication"),
            (RESTRICTED, "restricted"),
            (DECRYPT, "decrypt"),
            (SIGN, "sign"),
        ];
        let v: Vec<&str> = all
            .iter()
            .filter(|(b, _)| a & b != 0)
            .map(|(_, n)| *n)
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join("|")
        }
    }
}

/// The AK's attributes: fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth,
/// restricted, sign.
pub const AK_ATTRIBUTES: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::USER_WITH_AUTH
    | attr::RESTRICTED
    | attr::SIGN;

/// The TCG default EK's attributes (template L-1).
pub const EK_ATTRIBUTES: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::ADMIN_WITH_POLICY
    | attr::RESTRICTED
    | attr::DECRYPT;

/// The TCG default EK's policy: PolicySecret(TPM_RH_ENDORSEMENT).
pub const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];

/// A parse error: what, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Error {}

/// Result of this crate's parsers.
pub type Result<T> = std::result::Result<T, Error>;

fn err<T>(what: impl Into<String>) -> Result<T> {
    Err(Error(what.into()))
}

/// A bounds-checked big-endian reader.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `buf`, naming it `what` in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, at: 0, what }
    }
    /// `n` bytes.
    pub fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        match self.buf.get(self.at..self.at.saturating_add(n)) {
            Some(s) if self.at.checked_add(n).is_some() => {
                self.at += n;
                Ok(s)
            }
            _ => err(format!(
                "{}: {field} at byte {} needs {n} bytes, {} left",
                self.what,
                self.at,
                self.buf.len().saturating_sub(self.at)
            )),
        }
    }
    /// A byte.
    pub fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.take(1, field)?[0])
    }
    /// A u16.
    pub fn u16(&mut self, field: &str) -> Result<u16> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// A u32.
    pub fn u32(&mut self, field: &str) -> Result<u32> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A u64.
    pub fn u64(&mut self, field: &str) -> Result<u64> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    /// A `TPM2B_*`: u16 size, then that many bytes.
    pub fn tpm2b(&mut self, field: &str) -> Result<&'a [u8]> {
        let n = self.u16(field)?;
        self.take(usize::from(n), field)
    }
    /// Bytes left.
    pub fn rest(&mut self) -> &'a [u8] {
        let r = self.buf.get(self.at..).unwrap_or(&[]);
        self.at = self.buf.len();
        r
    }
    /// Position.
    pub fn position(&self) -> usize {
        self.at
    }
    /// Fails unless every byte was read.
    pub fn end(&self) -> Result<()> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            err(format!(
                "{}: {} trailing bytes after byte {}",
                self.what,
                self.buf.len() - self.at,
                self.at
            ))
        }
    }
}

/// Appends a `TPM2B_*`.
pub fn put_tpm2b(out: &mut Vec<u8>, b: &[u8]) {
    let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(&b[..usize::from(n)]);
}

/// The key-type specific part of a public area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyParams {
    /// An RSA key.
    Rsa {
        /// `TPMT_SYM_DEF_OBJECT`: (algorithm, key bits, mode); `(ALG_NULL, 0, 0)` if none.
        symmetric: (u16, u16, u16),
        /// `TPMT_RSA_SCHEME`: (scheme, hash); `(ALG_NULL, 0)` if none.
        scheme: (u16, u16),
        /// Key size.
        key_bits: u16,
        /// Public exponent (0 = 65537).
        exponent: u32,
        /// The modulus (`unique`).
        modulus: Vec<u8>,
    },
    /// An ECC key.
    Ecc {
        /// `TPMT_SYM_DEF_OBJECT`.
        symmetric: (u16, u16, u16),
        /// `TPMT_ECC_SCHEME`: (scheme, hash).
        scheme: (u16, u16),
        /// `TPMI_ECC_CURVE`.
        curve: u16,
        /// `TPMT_KDF_SCHEME`: (scheme, hash).
        kdf: (u16, u16),
        /// Public point x.
        x: Vec<u8>,
        /// Public point y.
        y: Vec<u8>,
    },
}

/// A `TPMT_PUBLIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// `nameAlg`.
    pub name_alg: u16,
    /// `objectAttributes`.
    pub attributes: u32,
    /// `authPolicy`.
    pub auth_policy: Vec<u8>,
    /// Type-specific parameters and the public key.
    pub params: KeyParams,
}

fn sym_def(r: &mut Reader<'_>) -> Result<(u16, u16, u16)> {
    let alg = r.u16("symmetric.algorithm")?;
    if alg == ALG_NULL {
        return Ok((ALG_NULL, 0, 0));
    }
    Ok((alg, r.u16("symmetric.keyBits")?, r.u16("symmetric.mode")?))
}

fn scheme(r: &mut Reader<'_>, field: &str) -> Result<(u16, u16)> {
    let s = r.u16(field)?;
    if s == ALG_NULL {
        return Ok((ALG_NULL, 0));
    }
    Ok((s, r.u16(field)?))
}

fn put_sym(out: &mut Vec<u8>, s: (u16, u16, u16)) {
    out.extend_from_slice(&s.0.to_be_bytes());
    if s.0 != ALG_NULL {
        out.extend_from_slice(&s.1.to_be_bytes());
        out.extend_from_slice(&s.2.to_be_bytes());
    }
}

fn put_scheme(out: &mut Vec<u8>, s: (u16, u16)) {
    out.extend_from_slice(&s.0.to_be_bytes());
    if s.0 != ALG_NULL {
        out.extend_from_slice(&s.1.to_be_bytes());
    }
}

impl Public {
    /// Parses a `TPMT_PUBLIC` (no size prefix), rejecting trailing bytes.
    pub fn parse(b: &[u8]) -> Result<Public> {
        let mut r = Reader::new(b, "TPMT_PUBLIC");
        let p = Self::read(&mut r)?;
        r.end()?;
        Ok(p)
    }

    /// Parses a `TPM2B_PUBLIC` (u16 size, then `TPMT_PUBLIC`), rejecting trailing bytes.
    pub fn parse_tpm2b(b: &[u8]) -> Result<Public> {
        let mut r = Reader::new(b, "TPM2B_PUBLIC");
        let inner = r.tpm2b("size")?;
        r.end()?;
        Self::parse(inner)
    }

    fn read(r: &mut Reader<'_>) -> Result<Public> {
        let ty = r.u16("type")?;
        let name_alg = r.u16("nameAlg")?;
        let attributes = r.u32("objectAttributes")?;
        let auth_policy = r.tpm2b("authPolicy")?.to_vec();
        let params = match ty {
            ALG_RSA => {
                let symmetric = sym_def(r)?;
                let scheme = scheme(r, "scheme")?;
                let key_bits = r.u16("keyBits")?;
                let exponent = r.u32("exponent")?;
                let modulus = r.tpm2b("unique.rsa")?.to_vec();
                KeyParams::Rsa {
                    symmetric,
                    scheme,
                    key_bits,
                    exponent,
                    modulus,
                }
            }
            ALG_ECC => {
                let symmetric = sym_def(r)?;
                let scheme = scheme(r, "scheme")?;
                let curve = r.u16("curveID")?;
                let kdf = self::scheme(r, "kdf")?;
                let x = r.tpm2b("unique.x")?.to_vec();
                let y = r.tpm2b("unique.y")?.to_vec();
                KeyParams::Ecc {
                    symmetric,
                    scheme,
                    curve,
                    kdf,
                    x,
                    y,
                }
            }
            other => {
                return err(format!(
                    "TPMT_PUBLIC: key type {other:#06x} (only RSA and ECC)"
                ))
            }
        };
        Ok(Public {
            name_alg,
            attributes,
            auth_policy,
            params,
        })
    }

    /// Marshals the `TPMT_PUBLIC` (no size prefix).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        match &self.params {
            KeyParams::Rsa { .. } => out.extend_from_slice(&ALG_RSA.to_be_bytes()),
            KeyParams::Ecc { .. } => out.extend_from_slice(&ALG_ECC.to_be_bytes()),
        }
        out.extend_from_slice(&self.name_alg.to_be_bytes());
        out.extend_from_slice(&self.attributes.to_be_bytes());
        put_tpm2b(&mut out, &self.auth_policy);
        match &self.params {
            KeyParams::Rsa {
                symmetric,
                scheme,
                key_bits,
                exponent,
                modulus,
            } => {
                put_sym(&mut out, *symmetric);
                put_scheme(&mut out, *scheme);
                out.extend_from_slice(&key_bits.to_be_bytes());
                out.extend_from_slice(&exponent.to_be_bytes());
                put_tpm2b(&mut out, modulus);
            }
            KeyParams::Ecc {
                symmetric,
                scheme,
                curve,
                kdf,
                x,
                y,
            } => {
                put_sym(&mut out, *symmetric);
                put_scheme(&mut out, *scheme);
                out.extend_from_slice(&curve.to_be_bytes());
                put_scheme(&mut out, *kdf);
                put_tpm2b(&mut out, x);
                put_tpm2b(&mut out, y);
            }
        }
        out
    }

    /// Marshals the `TPM2B_PUBLIC`.
    pub fn to_tpm2b(&self) -> Vec<u8> {
        let inner = self.to_bytes();
        let mut out = Vec::with_capacity(inner.len() + 2);
        put_tpm2b(&mut out, &inner);
        out
    }

    /// The object's name: `nameAlg ‖ H(TPMT_PUBLIC)` (SHA-256 only).
    ///
    /// # Errors
    /// Another name algorithm.
    pub fn name(&self) -> Result<Vec<u8>> {
        if self.name_alg != ALG_SHA256 {
            return err(format!(
                "name algorithm {:#06x} (only SHA-256)",
                self.name_alg
            ));
        }
        let mut n = ALG_SHA256.to_be_bytes().to_vec();
        n.extend_from_slice(&Sha256::digest(self.to_bytes()));
        Ok(n)
    }

    /// The RSA modulus and exponent (0 → 65537), if RSA.
    pub fn rsa(&self) -> Option<(&[u8], u32)> {
        match &self.params {
            KeyParams::Rsa {
                modulus, exponent, ..
            } => Some((modulus, if *exponent == 0 { 65537 } else { *exponent })),
            KeyParams::Ecc { .. } => None,
        }
    }

    /// Checks that this is an attestation key as the verifier requires: fixedTPM,
    /// fixedParent, sensitiveDataOrigin, restricted, sign, not decrypt; RSA 2048 with
    /// the fixed scheme RSASSA-SHA256, or ECC P-256 with ECDSA-SHA256; SHA-256 names.
    /// Returns every violation, in words.
    pub fn ak_violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (bit, name) in [
            (attr::FIXED_TPM, "fixedTPM"),
            (attr::FIXED_PARENT, "fixedParent"),
            (attr::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
            (attr::RESTRICTED, "restricted"),
            (attr::SIGN, "sign"),
        ] {
            if self.attributes & bit == 0 {
                v.push(format!("attribute {name} is not set"));
            }
        }
        if self.attributes & attr::DECRYPT != 0 {
            v.push("attribute decrypt is set (an AK only signs)".into());
        }
        if self.name_alg != ALG_SHA256 {
            v.push(format!(
                "name algorithm {:#06x}, not SHA-256",
                self.name_alg
            ));
        }
        match &self.params {
            KeyParams::Rsa {
                scheme, key_bits, ..
            } => {
                if *scheme != (ALG_RSASSA, ALG_SHA256) {
                    v.push(format!(
                        "signing scheme {:#06x}/{:#06x}, not a fixed RSASSA-SHA256",
                        scheme.0, scheme.1
                    ));
                }
                if *key_bits < 2048 {
                    v.push(format!("RSA key of {key_bits} bits (at least 2048)"));
                }
            }
            KeyParams::Ecc { scheme, curve, .. } => {
                if *scheme != (ALG_ECDSA, ALG_SHA256) {
                    v.push(format!(
                        "signing scheme {:#06x}/{:#06x}, not a fixed ECDSA-SHA256",
                        scheme.0, scheme.1
                    ));
                }
                if *curve != ECC_NIST_P256 {
                    v.push(format!("curve {curve:#06x}, not NIST P-256"));
                }
            }
        }
        v
    }
}

/// The TCG default RSA-2048 EK template (EK Credential Profile 2.x, template L-1):
/// what `TPM2_CreatePrimary` in the endorsement hierarchy turns into the EK whose
/// certificate the manufacturer issued.
pub fn ek_rsa_template() -> Public {
    Public {
        name_alg: ALG_SHA256,
        attributes: EK_ATTRIBUTES,
        auth_policy: EK_POLICY.to_vec(),
        params: KeyParams::Rsa {
            symmetric: (ALG_AES, 128, ALG_CFB),
            scheme: (ALG_NULL, 0),
            key_bits: 2048,
            exponent: 0,
            modulus: vec![0; 256],
        },
    }
}

/// The attestation key's template: RSA 2048, restricted, sign only, fixed scheme
/// RSASSA-SHA256, empty authorisation.
pub fn ak_rsa_template() -> Public {
    Public {
        name_alg: ALG_SHA256,
        attributes: AK_ATTRIBUTES,
        auth_policy: Vec::new(),
        params: KeyParams::Rsa {
            symmetric: (ALG_NULL, 0, 0),
            scheme: (ALG_RSASSA, ALG_SHA256),
            key_bits: 2048,
            exponent: 0,
            modulus: Vec::new(),
        },
    }
}

/// True if `got` (a key the TPM made) has the template's type, name algorithm,
/// attributes, policy and parameters (everything but the public key itself).
pub fn matches_template(got: &Public, template: &Public) -> bool {
    let strip = |p: &Public| {
        let mut p = p.clone();
        match &mut p.params {
            KeyParams::Rsa { modulus, .. } => modulus.clear(),
            KeyParams::Ecc { x, y, .. } => {
                x.clear();
                y.clear();
            }
        }
        p
    };
    strip(got) == strip(template)
}

/// A `TPML_PCR_SELECTION`, kept as marshalled so comparisons are exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// (hash algorithm, bitmap bytes) per bank, in order.
    pub banks: Vec<(u16, Vec<u8>)>,
}

impl PcrSelection {
    /// The SHA-256 bank, PCRs in `pcrs` (bit n of a u32), 3 bitmap bytes (24 PCRs).
    pub fn sha256(pcrs: u32) -> Self {
        let b = pcrs.to_le_bytes();
        PcrSelection {
            banks: vec![(ALG_SHA256, vec![b[0], b[1], b[2]])],
        }
    }

    /// Reads one from `r`.
    pub fn read(r: &mut Reader<'_>) -> Result<Self> {
        let count = r.u32("pcrSelect.count")?;
        if count > 16 {
            return err(format!("pcrSelect: {count} banks (at most 16)"));
        }
        let mut banks = Vec::new();
        for _ in 0..count {
            let hash = r.u16("pcrSelect.hash")?;
            let n = r.u8("pcrSelect.sizeofSelect")?;
            if n > 4 {
                return err(format!("pcrSelect: sizeofSelect {n} (at most 4)"));
            }
            banks.push((hash, r.take(usize::from(n), "pcrSelect.bitmap")?.to_vec()));
        }
        Ok(PcrSelection { banks })
    }

    /// Marshals it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.banks.len() as u32).to_be_bytes());
        for (h, bits) in &self.banks {
            out.extend_from_slice(&h.to_be_bytes());
            out.push(bits.len() as u8);
            out.extend_from_slice(bits);
        }
        out
    }

    /// The PCRs of the SHA-256 bank as a bitmask, if this is exactly one SHA-256 bank.
    pub fn sha256_mask(&self) -> Option<u32> {
        match self.banks.as_slice() {
            [(ALG_SHA256, bits)] => {
                let mut m = 0u32;
                for (i, b) in bits.iter().enumerate() {
                    m |= u32::from(*b) << (8 * i);
                }
                Some(m)
            }
            _ => None,
        }
    }
}

/// PCR indices in a mask, ascending.
pub fn pcrs_of(mask: u32) -> Vec<u8> {
    (0..32u8).filter(|i| mask & (1 << i) != 0).collect()
}

/// The PCR digest a quote signs: SHA-256 of the values concatenated in selection order.
pub fn pcr_digest(values: &[[u8; 32]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in values {
        h.update(v);
    }
    h.finalize().into()
}

/// What a `TPMS_ATTEST` attests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attested {
    /// `TPMS_QUOTE_INFO`.
    Quote {
        /// The signed PCR selection.
        selection: PcrSelection,
        /// The signed digest of the selected PCR values.
        digest: Vec<u8>,
    },
    /// `TPMS_CERTIFY_INFO`.
    Certify {
        /// The certified object's name.
        name: Vec<u8>,
        /// Its qualified name.
        qualified_name: Vec<u8>,
    },
}

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered (persisted periodically).
    pub clock: u64,
    /// TPM resets (power cycles, `TPM2_Startup(CLEAR)`) since the last `TPM2_Clear`.
    pub reset_count: u32,
    /// `TPM2_Shutdown(STATE)`/`TPM2_Startup(STATE)` cycles since the last reset.
    pub restart_count: u32,
    /// The clock was not set back since the last reading.
    pub safe: bool,
}

/// A `TPMS_ATTEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// `qualifiedSigner`.
    pub signer: Vec<u8>,
    /// `extraData` (the verifier's qualifying data).
    pub extra_data: Vec<u8>,
    /// `clockInfo`.
    pub clock: ClockInfo,
    /// `firmwareVersion`.
    pub firmware_version: u64,
    /// The attested content.
    pub attested: Attested,
}

impl Attest {
    /// Parses a `TPMS_ATTEST` (the bytes the TPM signed), rejecting trailing bytes.
    pub fn parse(b: &[u8]) -> Result<Attest> {
        let mut r = Reader::new(b, "TPMS_ATTEST");
        let magic = r.u32("magic")?;
        if magic != TPM_GENERATED {
            return err(format!(
                "TPMS_ATTEST: magic {magic:#010x}, not TPM_GENERATED_VALUE"
            ));
        }
        let ty = r.u16("type")?;
        let signer = r.tpm2b("qualifiedSigner")?.to_vec();
        let extra_data = r.tpm2b("extraData")?.to_vec();
        let clock = ClockInfo {
            clock: r.u64("clockInfo.clock")?,
            reset_count: r.u32("clockInfo.resetCount")?,
            restart_count: r.u32("clockInfo.restartCount")?,
            safe: match r.u8("clockInfo.safe")? {
                0 => false,
                1 => true,
                v => return err(format!("TPMS_ATTEST: clockInfo.safe = {v}")),
            },
        };
        let firmware_version = r.u64("firmwareVersion")?;
        let attested = match ty {
            ST_ATTEST_QUOTE => {
                let selection = PcrSelection::read(&mut r)?;
                let digest = r.tpm2b("pcrDigest")?.to_vec();
                Attested::Quote { selection, digest }
            }
            ST_ATTEST_CERTIFY => Attested::Certify {
                name: r.tpm2b("name")?.to_vec(),
                qualified_name: r.tpm2b("qualifiedName")?.to_vec(),
            },
            other => {
                return err(format!(
                    "TPMS_ATTEST: type {other:#06x} (only quotes {ST_ATTEST_QUOTE:#06x} and certifications {ST_ATTEST_CERTIFY:#06x})"
                ))
            }
        };
        r.end()?;
        Ok(Attest {
            signer,
            extra_data,
            clock,
            firmware_version,
            attested,
        })
    }
}

/// A `TPMT_SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// RSASSA-PKCS1-v1_5 (hash, signature).
    RsaSsa(u16, Vec<u8>),
    /// RSA-PSS (hash, signature).
    RsaPss(u16, Vec<u8>),
    /// ECDSA (hash, r, s).
    Ecdsa(u16, Vec<u8>, Vec<u8>),
}

impl Signature {
    /// Parses a `TPMT_SIGNATURE`, rejecting trailing bytes.
    pub fn parse(b: &[u8]) -> Result<Signature> {
        let mut r = Reader::new(b, "TPMT_SIGNATURE");
        let alg = r.u16("sigAlg")?;
        let s = match alg {
            ALG_RSASSA => Signature::RsaSsa(r.u16("hash")?, r.tpm2b("sig")?.to_vec()),
            ALG_RSAPSS => Signature::RsaPss(r.u16("hash")?, r.tpm2b("sig")?.to_vec()),
            ALG_ECDSA => Signature::Ecdsa(
                r.u16("hash")?,
                r.tpm2b("signatureR")?.to_vec(),
                r.tpm2b("signatureS")?.to_vec(),
            ),
            other => {
                return err(format!(
                    "TPMT_SIGNATURE: algorithm {other:#06x} (only RSASSA, RSAPSS, ECDSA)"
                ))
            }
        };
        r.end()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ak_template_round_trips_and_passes_its_own_check() {
        let t = ak_rsa_template();
        assert_eq!(Public::parse(&t.to_bytes()).unwrap(), t);
        assert_eq!(Public::parse_tpm2b(&t.to_tpm2b()).unwrap(), t);
        assert!(t.ak_violations().is_empty(), "{:?}", t.ak_violations());
        assert_eq!(AK_ATTRIBUTES, 0x0005_0072);
        assert_eq!(EK_ATTRIBUTES, 0x0003_00B2);
    }

    #[test]
    fn ak_violations_name_each_missing_attribute() {
        let mut t = ak_rsa_template();
        t.attributes &= !attr::RESTRICTED;
        t.attributes |= attr::DECRYPT;
        let v = t.ak_violations();
        assert!(v.iter().any(|m| m.contains("restricted")), "{v:?}");
        assert!(v.iter().any(|m| m.contains("decrypt")), "{v:?}");
    }

    #[test]
    fn selection_bitmaps_are_lsb_first() {
        let s = PcrSelection::sha256(0xff | (1 << 11));
        assert_eq!(s.to_bytes(), [0, 0, 0, 1, 0, 0x0B, 3, 0xff, 0x08, 0x00]);
        let s16 = PcrSelection::sha256(1 << 16);
        assert_eq!(s16.banks[0].1, [0, 0, 1]);
        assert_eq!(s16.sha256_mask(), Some(1 << 16));
        assert_eq!(pcrs_of(0x0000_0811), [0, 4, 11]);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(b in prop::collection::vec(any::<u8>(), 0..700)) {
            let _ = Public::parse(&b);
            let _ = Public::parse_tpm2b(&b);
            let _ = Attest::parse(&b);
            let _ = Signature::parse(&b);
        }
    }
}
