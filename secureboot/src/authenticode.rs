//! Authenticode signing and verification of PE32+ (EFI) images, compatible with
//! `sbsign`/`sbverify`, `osslsigncode`, `pesign` and EDK2's `Pkcs7Verify`.
//!
//! # Signature layout
//! ```text
//! ContentInfo { signedData,
//!   SignedData { version 1, digestAlgorithms {sha256},
//!     contentInfo { SPC_INDIRECT_DATA_OBJID,
//!       SpcIndirectDataContent {
//!         data  { SPC_PE_IMAGE_DATA_OBJID,
//!                 SpcPeImageData { flags '' (empty BIT STRING),
//!                                  file [0] SpcLink.file [2] SpcString.unicode [0] "<<<Obsolete>>>" } },
//!         messageDigest DigestInfo { sha256, <Authenticode image hash> } } },
//!     certificates [0] { signer certificate },
//!     signerInfos { SignerInfo { version 1, issuerAndSerialNumber, sha256,
//!       authenticatedAttributes [0] { SpcSpOpusInfo {}, contentType = SPC_INDIRECT_DATA_OBJID,
//!                                     messageDigest = SHA-256(SpcIndirectDataContent content octets) },
//!       rsaEncryption, RSASSA-PKCS1-v1_5-SHA256(DER SET OF authenticatedAttributes) } } } }
//! ```
//! There is deliberately no signing-time attribute: with RSA PKCS#1 v1.5 (a
//! deterministic scheme) the same image, key and certificate always give the same
//! bytes.
//!
//! # Embedding
//! The image is zero-padded to a multiple of 8 bytes (the Authenticode hash covers the
//! padding, as with `sbsign`), then one `WIN_CERTIFICATE` (revision 0x0200, type
//! `WIN_CERT_TYPE_PKCS_SIGNED_DATA`) is appended: `dwLength` is 8 + the PKCS#7 size,
//! the entry is zero-padded to 8 bytes, and the Certificate Table data directory
//! (entry 4) gets its file offset and padded size. The PE checksum is recomputed.
//!
//! An image that already carries a signature is refused with
//! [`Error::AlreadySigned`]: this module neither adds a second signature nor
//! replaces an existing one.

use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use images::pe::{authenticode_sha256, pe_checksum, PeFile, CERTIFICATE_TABLE};
use sha2::{Digest, Sha256};

use crate::der::{
    self, alg_null, oid, seq, set_of, tlv, Reader, Tlv, TAG_BIT_STRING, TAG_INTEGER,
    TAG_OCTET_STRING, TAG_SEQUENCE, TAG_SET,
};
pub use crate::key::SigningKey;
pub use crate::x509::Certificate;
use crate::{Error, Result};

/// `WIN_CERTIFICATE.wRevision` for Authenticode.
pub const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// `WIN_CERTIFICATE.wCertificateType` for PKCS#7 SignedData.
pub const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

/// `"<<<Obsolete>>>"` as UTF-16BE, the `SpcLink` file name sbsign and osslsigncode write.
const OBSOLETE: &str = "<<<Obsolete>>>";

const WHAT: &str = "Authenticode signature";

/// The image zero-padded to a multiple of 8 bytes: the bytes [`sign`] hashes and
/// to which it appends the certificate table.
pub fn pad_image(image: &[u8]) -> Vec<u8> {
    let mut v = image.to_vec();
    v.resize(image.len().next_multiple_of(8), 0);
    v
}

/// File offset of the optional header (already validated by [`PeFile::parse`]).
fn optional_header_offset(image: &[u8]) -> Result<usize> {
    let e = image
        .get(0x3c..0x40)
        .ok_or_else(|| Error::Image("truncated DOS header".into()))?;
    Ok(u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as usize + 4 + 20)
}

/// Signs `image` and returns it with the signature embedded (see the module docs).
///
/// Fails if the key does not match the certificate, if the image is not a valid
/// PE32+ file, has no Certificate Table directory entry, or is already signed.
pub fn sign(image: &[u8], key: &SigningKey, cert: &Certificate) -> Result<Vec<u8>> {
    key.check_matches(cert)?;
    let pe = PeFile::parse(image)?;
    if let Some(d) = pe.certificate_table() {
        return Err(Error::AlreadySigned {
            offset: d.virtual_address,
            size: d.size,
        });
    }
    let ndirs = pe.optional.data_directories.len();
    if ndirs <= CERTIFICATE_TABLE {
        return Err(Error::Image(format!(
            "only {ndirs} data directories (NumberOfRvaAndSizes); the Certificate Table is entry {CERTIFICATE_TABLE}"
        )));
    }
    let mut out = pad_image(image);
    let digest = authenticode_sha256(&out)?;
    let blob = pkcs7_signed_data(&digest, key, cert)?;

    let cert_offset = out.len();
    let entry_len = 8 + blob.len();
    let padded_len = entry_len.next_multiple_of(8);
    let too_big = || Error::Image("signed image would exceed 4 GiB".into());
    let offset32 = u32::try_from(cert_offset).map_err(|_| too_big())?;
    let entry32 = u32::try_from(entry_len).map_err(|_| too_big())?;
    let padded32 = u32::try_from(padded_len).map_err(|_| too_big())?;
    u32::try_from(cert_offset + padded_len).map_err(|_| too_big())?;
    out.extend_from_slice(&entry32.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    out.extend_from_slice(&blob);
    out.resize(cert_offset + padded_len, 0);

    let o = optional_header_offset(&out)?;
    let d = o + 112 + 8 * CERTIFICATE_TABLE;
    out[d..d + 4].copy_from_slice(&offset32.to_le_bytes());
    out[d + 4..d + 8].copy_from_slice(&padded32.to_le_bytes());
    let sum = pe_checksum(&out)?;
    out[o + 64..o + 68].copy_from_slice(&sum.to_le_bytes());

    // Self-check: the embedded digest is the one verifiers will compute.
    if authenticode_sha256(&out)? != digest {
        return Err(Error::Image(
            "internal error: Authenticode hash changed after embedding the signature".into(),
        ));
    }
    Ok(out)
}

/// Builds the DER `ContentInfo` (PKCS#7 SignedData) for an Authenticode digest.
fn pkcs7_signed_data(digest: &[u8; 32], key: &SigningKey, cert: &Certificate) -> Result<Vec<u8>> {
    let sha256 = alg_null(oid::SHA256);

    // SpcPeImageData { flags: empty BIT STRING, file: [0] SpcLink { file [2] { unicode [0] } } }
    let obsolete: Vec<u8> = OBSOLETE
        .encode_utf16()
        .flat_map(|u| u.to_be_bytes())
        .collect();
    let spc_string = tlv(0x80, &obsolete);
    let spc_link = tlv(der::ctx(2), &spc_string);
    let pe_image_data = seq(&[&[TAG_BIT_STRING, 1, 0], &tlv(der::ctx(0), &spc_link)]);
    let spc_attr = seq(&[&der::oid(oid::SPC_PE_IMAGE_DATA), &pe_image_data]);
    let digest_info = seq(&[&sha256, &tlv(TAG_OCTET_STRING, digest)]);
    let idc_content = [spc_attr, digest_info].concat();
    let idc = tlv(TAG_SEQUENCE, &idc_content);
    // Authenticode: the PKCS#7 content digest covers the SEQUENCE's content octets only.
    let md: [u8; 32] = Sha256::digest(&idc_content).into();

    let attr = |t: &[u8], value: Vec<u8>| seq(&[&der::oid(t), &set_of(vec![value])]);
    let mut attrs = [
        attr(oid::CONTENT_TYPE, der::oid(oid::SPC_INDIRECT_DATA)),
        attr(oid::MESSAGE_DIGEST, tlv(TAG_OCTET_STRING, &md)),
        attr(oid::SPC_SP_OPUS_INFO, seq(&[])),
    ];
    attrs.sort_by(|a, b| der::der_set_order(a, b));
    let attrs_content = attrs.concat();
    // The signature covers the attributes encoded as a SET OF (tag 0x31) ...
    let signature = key.sign_pkcs1_sha256(&tlv(TAG_SET, &attrs_content))?;
    // ... while SignerInfo carries them as [0] IMPLICIT.
    let signer_info = seq(&[
        &der::small_int(1),
        &seq(&[cert.issuer_der(), &tlv(TAG_INTEGER, cert.serial())]),
        &sha256,
        &tlv(der::ctx(0), &attrs_content),
        &alg_null(oid::RSA_ENCRYPTION),
        &tlv(TAG_OCTET_STRING, &signature),
    ]);
    let signed_data = seq(&[
        &der::small_int(1),
        &set_of(vec![sha256.clone()]),
        &seq(&[&der::oid(oid::SPC_INDIRECT_DATA), &tlv(der::ctx(0), &idc)]),
        &tlv(der::ctx(0), cert.der()),
        &set_of(vec![signer_info]),
    ]);
    Ok(seq(&[
        &der::oid(oid::SIGNED_DATA),
        &tlv(der::ctx(0), &signed_data),
    ]))
}

/// The PKCS#7 SignedData blobs (DER `ContentInfo`) of every
/// `WIN_CERT_TYPE_PKCS_SIGNED_DATA` entry of the certificate table, in order.
/// An unsigned image gives an empty list.
///
/// The certificate table must lie at the very end of the file (as the PE
/// specification requires and as the Authenticode hash assumes) and every entry must
/// have revision 0x0200; other certificate types are skipped.
pub fn signatures(image: &[u8]) -> Result<Vec<Vec<u8>>> {
    let pe = PeFile::parse(image)?;
    let Some(dir) = pe.certificate_table() else {
        return Ok(Vec::new());
    };
    let start = dir.virtual_address as u64;
    let end = start + dir.size as u64;
    let len = image.len() as u64;
    if end > len {
        return Err(Error::CertificateTable(format!(
            "directory entry {start:#x}+{:#x} runs past the end of the file ({len:#x} bytes)",
            dir.size
        )));
    }
    if end != len {
        return Err(Error::CertificateTable(format!(
            "table {start:#x}..{end:#x} does not end at the end of the file ({len:#x} bytes); \
             data after it would not be covered by the signature"
        )));
    }
    let (start, end) = (start as usize, end as usize);
    let mut out = Vec::new();
    let mut off = start;
    while off < end {
        let h = image.get(off..off + 8).filter(|_| off + 8 <= end).ok_or_else(|| {
            Error::CertificateTable(format!(
                "WIN_CERTIFICATE header at {off:#x} is truncated by the end of the table at {end:#x}"
            ))
        })?;
        let dw_length = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let revision = u16::from_le_bytes([h[4], h[5]]);
        let cert_type = u16::from_le_bytes([h[6], h[7]]);
        if dw_length < 8 || off as u64 + dw_length as u64 > end as u64 {
            return Err(Error::CertificateTable(format!(
                "WIN_CERTIFICATE at {off:#x}: dwLength {dw_length} is outside 8..={}",
                end - off
            )));
        }
        if revision != WIN_CERT_REVISION_2_0 {
            return Err(Error::CertificateTable(format!(
                "WIN_CERTIFICATE at {off:#x}: wRevision {revision:#06x}, expected 0x0200"
            )));
        }
        if cert_type == WIN_CERT_TYPE_PKCS_SIGNED_DATA {
            out.push(image[off + 8..off + dw_length].to_vec());
        }
        off += dw_length.next_multiple_of(8);
    }
    Ok(out)
}

/// What an Authenticode signature says (see [`parse_signature`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureInfo {
    /// The Authenticode image hash (SHA-256) recorded in `SpcIndirectDataContent`.
    pub image_digest: [u8; 32],
    /// The `messageDigest` authenticated attribute.
    pub message_digest: [u8; 32],
    /// Dotted OIDs of the authenticated attributes, in encoded order.
    pub signed_attributes: Vec<String>,
    /// The signer's issuer Name (DER).
    pub issuer: Vec<u8>,
    /// The signer's serial number (INTEGER content octets).
    pub serial: Vec<u8>,
    /// DER certificates carried in `SignedData.certificates`.
    pub certificates: Vec<Vec<u8>>,
    /// The RSA signature value.
    pub signature: Vec<u8>,
    /// The complete DER `SpcIndirectDataContent` (what the signature is about).
    pub spc_indirect_data: Vec<u8>,
}

struct Parsed<'a> {
    idc_raw: &'a [u8],
    idc_content: &'a [u8],
    image_digest: [u8; 32],
    certificates: Vec<&'a [u8]>,
    issuer: &'a [u8],
    serial: &'a [u8],
    attrs: Tlv<'a>,
    attr_types: Vec<&'a [u8]>,
    content_type: Option<Tlv<'a>>,
    message_digest: Option<Tlv<'a>>,
    signature: &'a [u8],
}

fn bad(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Signature {
        field,
        reason: reason.into(),
    }
}

fn expect_oid(r: &mut Reader<'_>, want: &[u8], field: &'static str, name: &str) -> Result<()> {
    let o = r.oid(field)?;
    if o != want {
        return Err(bad(
            field,
            format!(
                "is {}, expected {name} ({})",
                der::oid_text(o),
                der::oid_text(want)
            ),
        ));
    }
    Ok(())
}

fn parse(blob: &[u8]) -> Result<Parsed<'_>> {
    let mut top = Reader::new(blob, WHAT);
    let ci_tlv = top.expect(TAG_SEQUENCE, "ContentInfo")?;
    // Some signers pad the blob to 8 bytes inside dwLength; allow zero padding only.
    if blob[ci_tlv.raw.len()..].iter().any(|&b| b != 0) {
        return Err(bad("ContentInfo", "non-zero bytes after the DER structure"));
    }
    let mut ci = top.inner(&ci_tlv);
    expect_oid(
        &mut ci,
        oid::SIGNED_DATA,
        "ContentInfo.contentType",
        "signedData",
    )?;
    let exp = ci.expect(der::ctx(0), "ContentInfo.content")?;
    ci.finish("ContentInfo")?;
    let mut e = ci.inner(&exp);
    let mut sd = e.sequence("SignedData")?;
    e.finish("ContentInfo.content")?;
    let version = sd.small_uint("SignedData.version")?;
    if version != 1 {
        return Err(bad(
            "SignedData.version",
            format!("is {version}, expected 1"),
        ));
    }
    let algs = sd.expect(TAG_SET, "SignedData.digestAlgorithms")?;
    let mut a = sd.inner(&algs);
    let mut has_sha256 = false;
    while !a.is_empty() {
        let mut alg = a.sequence("SignedData.digestAlgorithms")?;
        has_sha256 |= alg.oid("SignedData.digestAlgorithms")? == oid::SHA256;
    }
    if !has_sha256 {
        return Err(bad("SignedData.digestAlgorithms", "does not list sha256"));
    }

    let mut encap = sd.sequence("SignedData.contentInfo")?;
    expect_oid(
        &mut encap,
        oid::SPC_INDIRECT_DATA,
        "SignedData.contentInfo.contentType",
        "SPC_INDIRECT_DATA_OBJID",
    )?;
    let ex = encap.expect(der::ctx(0), "SignedData.contentInfo.content")?;
    encap.finish("SignedData.contentInfo")?;
    let mut exr = encap.inner(&ex);
    let idc_tlv = exr.expect(TAG_SEQUENCE, "SpcIndirectDataContent")?;
    exr.finish("SignedData.contentInfo.content")?;
    let mut idc = exr.inner(&idc_tlv);
    let mut data = idc.sequence("SpcIndirectDataContent.data")?;
    expect_oid(
        &mut data,
        oid::SPC_PE_IMAGE_DATA,
        "SpcIndirectDataContent.data.type",
        "SPC_PE_IMAGE_DATA_OBJID",
    )?;
    let mut di = idc.sequence("SpcIndirectDataContent.messageDigest")?;
    idc.finish("SpcIndirectDataContent")?;
    let mut dalg = di.sequence("SpcIndirectDataContent.messageDigest.digestAlgorithm")?;
    expect_oid(
        &mut dalg,
        oid::SHA256,
        "SpcIndirectDataContent.messageDigest.digestAlgorithm",
        "sha256",
    )?;
    let digest = di.expect(
        TAG_OCTET_STRING,
        "SpcIndirectDataContent.messageDigest.digest",
    )?;
    di.finish("SpcIndirectDataContent.messageDigest")?;
    let image_digest: [u8; 32] = digest.content.try_into().map_err(|_| {
        bad(
            "SpcIndirectDataContent.messageDigest.digest",
            format!("is {} bytes, expected 32 (SHA-256)", digest.content.len()),
        )
    })?;

    let mut certificates = Vec::new();
    if let Some(c) = sd.optional(der::ctx(0), "SignedData.certificates")? {
        let mut cr = sd.inner(&c);
        while !cr.is_empty() {
            certificates.push(cr.any("SignedData.certificates")?.raw);
        }
    }
    sd.optional(der::ctx(1), "SignedData.crls")?;
    let sis = sd.expect(TAG_SET, "SignedData.signerInfos")?;
    sd.finish("SignedData")?;
    let mut sir = sd.inner(&sis);
    let si_tlv = sir.expect(TAG_SEQUENCE, "SignerInfo")?;
    if !sir.is_empty() {
        return Err(bad(
            "SignedData.signerInfos",
            "more than one SignerInfo (Authenticode allows exactly one)",
        ));
    }
    let mut si = sir.inner(&si_tlv);
    let v = si.small_uint("SignerInfo.version")?;
    if v != 1 {
        return Err(bad("SignerInfo.version", format!("is {v}, expected 1")));
    }
    let mut ias = si.sequence("SignerInfo.issuerAndSerialNumber")?;
    let issuer = ias.expect(TAG_SEQUENCE, "SignerInfo.issuerAndSerialNumber.issuer")?;
    let serial = ias.expect(TAG_INTEGER, "SignerInfo.issuerAndSerialNumber.serialNumber")?;
    ias.finish("SignerInfo.issuerAndSerialNumber")?;
    let mut dalg = si.sequence("SignerInfo.digestAlgorithm")?;
    expect_oid(
        &mut dalg,
        oid::SHA256,
        "SignerInfo.digestAlgorithm",
        "sha256",
    )?;
    let attrs = si
        .optional(der::ctx(0), "SignerInfo.authenticatedAttributes")?
        .ok_or_else(|| {
            bad(
                "SignerInfo.authenticatedAttributes",
                "missing (Authenticode requires them)",
            )
        })?;
    let mut ealg = si.sequence("SignerInfo.digestEncryptionAlgorithm")?;
    let eo = ealg.oid("SignerInfo.digestEncryptionAlgorithm")?;
    if eo != oid::RSA_ENCRYPTION && eo != oid::SHA256_WITH_RSA {
        return Err(bad(
            "SignerInfo.digestEncryptionAlgorithm",
            format!(
                "is {}, expected rsaEncryption or sha256WithRSAEncryption",
                der::oid_text(eo)
            ),
        ));
    }
    let sig = si.expect(TAG_OCTET_STRING, "SignerInfo.encryptedDigest")?;
    si.optional(der::ctx(1), "SignerInfo.unauthenticatedAttributes")?;
    si.finish("SignerInfo")?;

    let mut attr_types = Vec::new();
    let mut content_type = None;
    let mut message_digest = None;
    let mut ar = si.inner(&attrs);
    while !ar.is_empty() {
        let mut at = ar.sequence("SignerInfo.authenticatedAttributes")?;
        let t = at.oid("Attribute.type")?;
        let values = at.expect(TAG_SET, "Attribute.values")?;
        at.finish("Attribute")?;
        if attr_types.contains(&t) {
            return Err(bad(
                "SignerInfo.authenticatedAttributes",
                format!("attribute {} appears twice", der::oid_text(t)),
            ));
        }
        attr_types.push(t);
        let mut vr = at.inner(&values);
        let value = vr.any("Attribute.values")?;
        let single = vr.is_empty();
        if t == oid::CONTENT_TYPE || t == oid::MESSAGE_DIGEST {
            if !single {
                return Err(bad(
                    "SignerInfo.authenticatedAttributes",
                    format!("attribute {} has more than one value", der::oid_text(t)),
                ));
            }
            if t == oid::CONTENT_TYPE {
                content_type = Some(value);
            } else {
                message_digest = Some(value);
            }
        }
    }
    Ok(Parsed {
        idc_raw: idc_tlv.raw,
        idc_content: idc_tlv.content,
        image_digest,
        certificates,
        issuer: issuer.raw,
        serial: serial.content,
        attrs,
        attr_types,
        content_type,
        message_digest,
        signature: sig.content,
    })
}

/// Parses one PKCS#7 blob (as returned by [`signatures`]) without verifying it.
pub fn parse_signature(blob: &[u8]) -> Result<SignatureInfo> {
    let p = parse(blob)?;
    let md = p
        .message_digest
        .filter(|v| v.tag == TAG_OCTET_STRING && v.content.len() == 32)
        .ok_or_else(|| {
            bad(
                "SignerInfo.authenticatedAttributes.messageDigest",
                "missing or not a 32-byte OCTET STRING",
            )
        })?;
    let mut message_digest = [0u8; 32];
    message_digest.copy_from_slice(md.content);
    Ok(SignatureInfo {
        image_digest: p.image_digest,
        message_digest,
        signed_attributes: p.attr_types.iter().map(|o| der::oid_text(o)).collect(),
        issuer: p.issuer.to_vec(),
        serial: p.serial.to_vec(),
        certificates: p.certificates.iter().map(|c| c.to_vec()).collect(),
        signature: p.signature.to_vec(),
        spc_indirect_data: p.idc_raw.to_vec(),
    })
}

/// Verifies one blob against an image digest and a certificate.
fn verify_blob(blob: &[u8], image_digest: &[u8; 32], cert: &Certificate) -> Result<()> {
    let p = parse(blob)?;
    if &p.image_digest != image_digest {
        return Err(Error::Verify(format!(
            "image hash mismatch: the signature covers {}, the image hashes to {} \
             (the image was modified after signing)",
            der::hex(&p.image_digest),
            der::hex(image_digest)
        )));
    }
    match p.content_type {
        Some(v) if v.tag == der::TAG_OID && v.content == oid::SPC_INDIRECT_DATA => {}
        _ => {
            return Err(Error::Verify(
                "authenticated attribute contentType is missing or is not SPC_INDIRECT_DATA_OBJID"
                    .into(),
            ))
        }
    }
    let md: [u8; 32] = Sha256::digest(p.idc_content).into();
    match p.message_digest {
        Some(v) if v.tag == TAG_OCTET_STRING && v.content == md => {}
        Some(_) => {
            return Err(Error::Verify(
                "authenticated attribute messageDigest does not match SpcIndirectDataContent"
                    .into(),
            ))
        }
        None => {
            return Err(Error::Verify(
                "authenticated attribute messageDigest is missing".into(),
            ))
        }
    }
    if p.issuer != cert.issuer_der() || der::strip_int(p.serial) != der::strip_int(cert.serial()) {
        return Err(Error::Verify(format!(
            "SignerInfo.issuerAndSerialNumber (issuer CN {:?}, serial {}) does not name the given \
             certificate (issuer CN {:?}, serial {})",
            crate::x509::name_common_name(p.issuer),
            der::hex(p.serial),
            cert.issuer_common_name(),
            der::hex(cert.serial())
        )));
    }
    let mut signed = p.attrs.raw.to_vec();
    signed[0] = TAG_SET;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, cert.rsa_public_key_der()?)
        .verify(&signed, p.signature)
        .map_err(|_| {
            Error::Verify(format!(
                "RSA signature over the authenticated attributes does not verify with the \
                 public key of certificate {:?}",
                cert.subject_common_name()
            ))
        })
}

/// Verifies `image`'s Authenticode signature against `cert` (the signer's own
/// certificate, not a CA): the recorded image hash equals
/// [`authenticode_sha256`] of the image, the `contentType` and `messageDigest`
/// authenticated attributes are right, the signer's issuer and serial number name
/// `cert`, and the RSA PKCS#1 v1.5 SHA-256 signature verifies with its public key.
///
/// Succeeds if any of the image's signatures verifies; otherwise returns the error of
/// the first one. Certificate chains, validity periods and key usages are not checked
/// (UEFI firmware does not check them either).
pub fn verify(image: &[u8], cert: &Certificate) -> Result<()> {
    let sigs = signatures(image)?;
    if sigs.is_empty() {
        return Err(Error::NotSigned);
    }
    let digest = authenticode_sha256(image)?;
    let mut first_err = None;
    for s in &sigs {
        match verify_blob(s, &digest, cert) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or(Error::NotSigned))
}
