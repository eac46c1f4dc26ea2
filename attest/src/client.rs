//! The verifier's side of the management channel: a quote request, and enrolment
//! (EK certificate chain, AK attributes, credential activation), over any stream
//! (the CLI connects TCP to the gateway's black address; tests use a socket pair).

use std::io::{Read, Write};

use attest_wire::proto::{self, Challenge, Evidence, Frame, Identity, Proof, QuoteRequest};
use attest_wire::tpms::{self, Public};
use subtle::ConstantTimeEq;

use crate::ekcert::EkCertificate;
use crate::fleet::{Device, FORMAT};

/// Sends the management request's first bytes.
fn hello<S: Write>(s: &mut S, endpoint: u8) -> Result<(), String> {
    s.write_all(&update_bundle::wire::request(endpoint, 0))
        .map_err(|e| format!("sending the request: {e}"))
}

/// A fresh random nonce.
///
/// # Errors
/// The system's random source fails.
pub fn nonce() -> Result<[u8; 32], String> {
    let mut n = [0u8; 32];
    aws_lc_rs::rand::fill(&mut n).map_err(|_| "no random bytes".to_string())?;
    Ok(n)
}

/// Asks for a quote; returns the gateway's evidence (unchecked: see [`crate::quote::check`]).
///
/// # Errors
/// The stream fails, or the gateway answers an error (its words).
pub fn request_quote<S: Read + Write>(s: &mut S, req: &QuoteRequest) -> Result<Evidence, String> {
    hello(s, proto::ENDPOINT_ATTEST)?;
    req.to_frame()
        .write(s)
        .map_err(|e| format!("sending the quote request: {e}"))?;
    let f = Frame::read(s).map_err(|e| format!("the gateway's answer: {e}"))?;
    Evidence::from_frame(&f).map_err(|e| e.to_string())
}

/// What enrolment proved.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The record to write.
    pub device: Device,
    /// The EK certificate (DER).
    pub ek_cert: Vec<u8>,
    /// The checked certificate.
    pub certificate: EkCertificate,
}

/// Enrols the gateway at the other end of `s`: reads its EK, EK certificate and AK;
/// checks the certificate chain to `ca_certs` (DER; every one a trust anchor) at
/// `now_unix`, that the certificate's key is the EK, and the AK's attributes (before
/// anything is sent); then proves by credential activation that the AK is in the TPM
/// that holds this EK.
///
/// # Errors
/// The first check that fails, by name and in words.
pub fn enroll<S: Read + Write>(
    s: &mut S,
    name: &str,
    target: &str,
    ca_certs: &[Vec<u8>],
    now_unix: i64,
) -> Result<Enrolled, String> {
    hello(s, proto::ENDPOINT_ENROLL)?;
    Frame::new()
        .write(s)
        .map_err(|e| format!("sending the enrolment request: {e}"))?;
    let f = Frame::read(s).map_err(|e| format!("the gateway's answer: {e}"))?;
    let id = Identity::from_frame(&f).map_err(|e| e.to_string())?;
    let ek = Public::parse_tpm2b(&id.ek_public).map_err(|e| format!("ek: {e}"))?;
    if !tpms::matches_template(&ek, &tpms::ek_rsa_template()) {
        return Err("ek: the EK is not the TCG default RSA-2048 EK (template L-1)".into());
    }
    let (modulus, exponent) = ek.rsa().ok_or("ek: not an RSA key")?;
    if id.ek_cert.is_empty() {
        return Err(
            "ek-certificate: the TPM holds no EK certificate (NV 0x01c00002); its EK cannot be checked against a manufacturer"
                .into(),
        );
    }
    let cert = crate::ekcert::verify_ek_certificate(&id.ek_cert, ca_certs, now_unix)
        .map_err(|e| format!("ek-certificate: {e}"))?;
    if cert.rsa_modulus != modulus || cert.rsa_exponent != exponent {
        return Err("ek-certificate: the certificate is for another key than the TPM's EK".into());
    }
    let ak = Public::parse_tpm2b(&id.ak_public).map_err(|e| format!("ak-attributes: {e}"))?;
    let v = ak.ak_violations();
    if !v.is_empty() {
        return Err(format!("ak-attributes: {}", v.join("; ")));
    }
    let ak_name = ak.name().map_err(|e| format!("ak-attributes: {e}"))?;
    let secret = zeroize::Zeroizing::new(nonce()?);
    let c = crate::credential::make_credential(modulus, exponent, &ak_name, &secret[..])
        .map_err(|e| format!("credential: {e}"))?;
    Challenge {
        id_object: c.id_object,
        encrypted_secret: c.encrypted_secret,
    }
    .to_frame()
    .write(s)
    .map_err(|e| format!("sending the credential: {e}"))?;
    let f = Frame::read(s).map_err(|e| format!("the gateway's answer: {e}"))?;
    let p = Proof::from_frame(&f).map_err(|e| format!("credential-activation: {e}"))?;
    let want = proto::proof(&secret[..], &ak_name);
    if !bool::from(p.0.ct_eq(&want)) {
        return Err(
            "credential-activation: the answer does not prove the AK is in the TPM that holds this EK"
                .into(),
        );
    }
    // The identity key, if the gateway has one: certified by the AK just proven.
    let identity = match &id.identity {
        None => None,
        Some(ci) => {
            let p = crate::identity::check_certified(ci, &ak, &proto::enrol_binding(&ak_name))
                .map_err(|e| format!("identity: {e}"))?;
            Some(crate::identity::point_hex(&p).ok_or("identity: not a P-256 point")?)
        }
    };
    let tpm = [
        cert.manufacturer.as_deref(),
        cert.model.as_deref(),
        cert.version.as_deref(),
    ]
    .iter()
    .map(|v| v.unwrap_or("?"))
    .collect::<Vec<_>>()
    .join(" ");
    Ok(Enrolled {
        device: Device {
            format: FORMAT,
            name: name.to_owned(),
            enrolled_at: target.to_owned(),
            ek_public: hex::encode(&id.ek_public),
            ek_chain: cert.chain.clone(),
            tpm,
            ak_public: hex::encode(&id.ak_public),
            ak_name: hex::encode(&ak_name),
            last_clock: None,
            identity,
        },
        ek_cert: id.ek_cert,
        certificate: cert,
    })
}

/// Provisions `secrets` (name, bytes) to the enrolled `device` at the other end of
/// `s`: each secret in parts of at most 32 bytes, each part a credential for the
/// device's EK bound to its AK's name, signed with `sign` (the release key) over the
/// device's fresh nonce. Returns the gateway's words.
///
/// # Errors
/// A malformed secret or record, the stream failing, or the gateway's refusal.
pub fn provision<S: Read + Write>(
    s: &mut S,
    device: &Device,
    secrets: &[(String, zeroize::Zeroizing<Vec<u8>>)],
    sign: &dyn Fn(&[u8; 32]) -> [u8; 64],
) -> Result<String, String> {
    let ek = Public::parse_tpm2b(&hex::decode(&device.ek_public).map_err(|e| e.to_string())?)
        .map_err(|e| format!("the enrolled EK: {e}"))?;
    let (modulus, exponent) = ek.rsa().ok_or("the enrolled EK is not RSA")?;
    let ak = device.ak()?;
    let ak_name = ak.name().map_err(|e| e.to_string())?;
    for (name, secret) in secrets {
        if name == proto::DEVICE_IDENTITY {
            return Err(format!(
                "secret name {name:?}: `tpm:{name}` is the device identity key, generated in the TPM at the first boot and never provisioned"
            ));
        }
        if !proto::secret_name_ok(name) {
            return Err(format!(
                "secret name {name:?}: 1-63 of a-z 0-9 - (not starting or ending with -), as in `tpm:<name>`"
            ));
        }
        if secret.is_empty() || secret.len() > proto::MAX_SECRET {
            return Err(format!(
                "secret {name}: {} bytes (1 to {})",
                secret.len(),
                proto::MAX_SECRET
            ));
        }
    }
    hello(s, proto::ENDPOINT_PROVISION)?;
    Frame::new()
        .write(s)
        .map_err(|e| format!("sending the provisioning request: {e}"))?;
    let f = Frame::read(s).map_err(|e| format!("the gateway's answer: {e}"))?;
    if let Some(e) = f.error_text() {
        return Err(format!("the gateway answered: {e}"));
    }
    let nonce: [u8; 32] = f
        .need(proto::tag::NONCE, "nonce")
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|_| "the gateway's nonce is not 32 bytes".to_string())?;
    for (name, secret) in secrets {
        let chunks: Vec<&[u8]> = secret.chunks(proto::SECRET_PART).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let c = crate::credential::make_credential(modulus, exponent, &ak_name, chunk)
                .map_err(|e| format!("secret {name}: {e}"))?;
            let mut part = proto::SecretPart {
                name: name.clone(),
                index: i as u8,
                count: chunks.len() as u8,
                id_object: c.id_object,
                encrypted_secret: c.encrypted_secret,
                signature: [0; 64],
            };
            part.signature = sign(&proto::provision_digest(&nonce, &ak_name, &part));
            part.to_frame()
                .write(s)
                .map_err(|e| format!("sending secret {name}: {e}"))?;
        }
    }
    Frame::new()
        .write(s)
        .map_err(|e| format!("ending the provisioning: {e}"))?;
    let f = Frame::read(s).map_err(|e| format!("the gateway's answer: {e}"))?;
    if let Some(e) = f.error_text() {
        return Err(format!("the gateway refused: {e}"));
    }
    let r = f
        .need(proto::tag::RESULT, "result")
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(r).into_owned())
}
