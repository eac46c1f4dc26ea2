//! The attestation agent: answers a verifier through the management channel (black
//! relays the bytes; see [`crate::update`] for the socket and the child per stream).
//!
//! - **Quote** ([`attest_wire::proto::ENDPOINT_ATTEST`]): the verifier sends a nonce,
//!   a PCR mask and the address it dialled; the agent quotes those PCRs with the AK and
//!   `qualifyingData` = [`attest_wire::proto::binding`] (nonce, the AK's name, the
//!   address), and answers with the AK's public area, the quote, its signature, the PCR
//!   values, the firmware's event log and the init's runtime log.
//! - **Enrol** ([`attest_wire::proto::ENDPOINT_ENROLL`]): the agent answers with the
//!   EK's public area, the EK certificate from NV and the AK's public area; then it
//!   activates the verifier's credential (`TPM2_ActivateCredential`) and answers with
//!   [`attest_wire::proto::proof`] of the secret, never the secret.
//!
//! - **Provision** ([`attest_wire::proto::ENDPOINT_PROVISION`]): secrets encrypted to
//!   this TPM and signed by the release key, sealed under the identity's policy
//!   ([`crate::secrets`]).
//!
//! With a device identity this boot ([`crate::identity`]), every quote and enrolment
//! answer carries the identity key certified by the AK (`TPM2_Certify`).
//!
//! Black can delay, cut or replay a stream; it cannot forge an answer (the quote is
//! signed by a key that never leaves the TPM and names the verifier's nonce) and a
//! quote made for one request or one device does not verify for another.
//!
//! What the agent reads from the stream is bounded (frames of at most
//! [`attest_wire::proto::MAX_FRAME`] bytes, parsed without panics); only the TPM
//! decides what it signs.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use attest_wire::proto::{
    self, CertifiedIdentity, Challenge, Evidence, Frame, Identity, Proof, QuoteRequest,
};

use crate::tpm::Transport;
use crate::tpmkey;

/// Largest firmware event log sent.
pub const MAX_EVENT_LOG: usize = 4 << 20;

/// What the agent needs.
#[derive(Debug, Clone)]
pub struct AgentContext {
    /// Where the TPM may be.
    pub tpm: Vec<PathBuf>,
    /// The firmware's event log (securityfs), absent in host tests.
    pub event_log: PathBuf,
    /// The init's runtime log (what it extended into PCRs 12 and 15).
    pub runtime_log: Vec<u8>,
    /// This boot's device identity key (usable), certified by the AK in every answer;
    /// provisioned secrets are sealed under its policy.
    pub identity: Option<Box<crate::identity::Identity>>,
    /// The release key that signs provisioned secrets (the plan's).
    pub release_key: Option<[u8; 32]>,
}

fn open(ctx: &AgentContext) -> Result<Box<dyn Transport>, String> {
    let dev = ctx
        .tpm
        .iter()
        .find(|p| p.exists())
        .ok_or("this gateway has no TPM")?;
    crate::runtime::open_tpm(dev).map_err(|e| format!("opening the TPM: {e}"))
}

fn event_log(path: &Path) -> Result<Vec<u8>, String> {
    if path.as_os_str().is_empty() || !path.exists() {
        return Ok(Vec::new());
    }
    crate::boot::read_limited(path, MAX_EVENT_LOG, "reading the event log")
        .map_err(|e| e.to_string())
}

/// The identity key certified by the AK with `qualifying`, when this boot has one.
fn certified_identity(
    t: &mut dyn Transport,
    ctx: &AgentContext,
    qualifying: &[u8; 32],
) -> Result<Option<CertifiedIdentity>, String> {
    let Some(id) = &ctx.identity else {
        return Ok(None);
    };
    let (certify, signature) = tpmkey::certify(t, attest_wire::policy::IDENTITY_HANDLE, qualifying)
        .map_err(|e| format!("certifying the identity key: {e}"))?;
    Ok(Some(CertifiedIdentity {
        public: id.public.to_tpm2b(),
        certify,
        signature,
    }))
}

fn quote<S: Read + Write>(s: &mut S, ctx: &AgentContext) -> Result<Evidence, String> {
    let f = Frame::read(s).map_err(|e| e.to_string())?;
    let req = QuoteRequest::from_frame(&f).map_err(|e| e.to_string())?;
    let mut t = open(ctx)?;
    let ak = tpmkey::ensure_ak(&mut *t).map_err(|e| format!("the attestation key: {e}"))?;
    let name = ak.name().map_err(|e| e.to_string())?;
    let qualifying = proto::binding(&req.nonce, &name, &req.target);
    let q = tpmkey::quote(&mut *t, &qualifying, req.pcrs).map_err(|e| format!("quote: {e}"))?;
    let identity = certified_identity(&mut *t, ctx, &qualifying)?;
    Ok(Evidence {
        ak_public: ak.to_tpm2b(),
        quote: q.attest,
        signature: q.signature,
        pcr_values: q.values,
        event_log: event_log(&ctx.event_log)?,
        runtime_log: ctx.runtime_log.clone(),
        identity,
    })
}

/// Serves one quote request; `note` gets a line for the console.
pub fn serve_quote<S: Read + Write>(s: &mut S, ctx: &AgentContext, note: &mut dyn FnMut(&str)) {
    let frame = match quote(s, ctx) {
        Ok(e) => {
            note(&format!(
                "quoted {} PCR(s) for a verifier",
                e.pcr_values.len()
            ));
            e.to_frame()
        }
        Err(e) => {
            note(&format!("quote refused: {e}"));
            Frame::error(&e)
        }
    };
    let _ = frame.write(s);
}

fn enroll<S: Read + Write>(
    s: &mut S,
    ctx: &AgentContext,
    note: &mut dyn FnMut(&str),
) -> Result<Proof, String> {
    let hello = Frame::read(s).map_err(|e| e.to_string())?;
    if hello != Frame::new() {
        return Err("enrolment starts with an empty frame".into());
    }
    let mut t = open(ctx)?;
    let ak = tpmkey::ensure_ak(&mut *t).map_err(|e| format!("the attestation key: {e}"))?;
    let ek = tpmkey::ek_public(&mut *t).map_err(|e| format!("the EK: {e}"))?;
    let cert = tpmkey::ek_certificate(&mut *t)
        .map_err(|e| format!("reading the EK certificate: {e}"))?
        .unwrap_or_default();
    let ak_name = ak.name().map_err(|e| e.to_string())?;
    let identity = certified_identity(&mut *t, ctx, &proto::enrol_binding(&ak_name))?;
    Identity {
        ek_public: ek.to_tpm2b(),
        ek_cert: cert,
        ak_public: ak.to_tpm2b(),
        identity,
    }
    .to_frame()
    .write(s)
    .map_err(|e| format!("answering: {e}"))?;
    let f = Frame::read(s).map_err(|e| e.to_string())?;
    let c = Challenge::from_frame(&f).map_err(|e| e.to_string())?;
    let secret = tpmkey::activate_credential(&mut *t, &c.id_object, &c.encrypted_secret)
        .map_err(|e| format!("credential activation: {e}"))?;
    let name = ak.name().map_err(|e| e.to_string())?;
    note("credential activated for a verifier's enrolment");
    Ok(Proof(proto::proof(&secret, &name)))
}

/// Serves one enrolment.
pub fn serve_enroll<S: Read + Write>(s: &mut S, ctx: &AgentContext, note: &mut dyn FnMut(&str)) {
    let frame = match enroll(s, ctx, note) {
        Ok(p) => p.to_frame(),
        Err(e) => {
            note(&format!("enrolment refused: {e}"));
            Frame::error(&e)
        }
    };
    let _ = frame.write(s);
}

fn provision<S: Read + Write>(
    s: &mut S,
    ctx: &AgentContext,
    esp: &crate::update::EspAccess,
) -> Result<Vec<String>, String> {
    let hello = Frame::read(s).map_err(|e| e.to_string())?;
    if hello != Frame::new() {
        return Err("provisioning starts with an empty frame".into());
    }
    let key = ctx
        .release_key
        .as_ref()
        .ok_or("this image names no release key: it takes no provisioned secrets")?;
    let id = ctx
        .identity
        .as_ref()
        .ok_or("this boot has no device identity (its PCR policy): secrets cannot be sealed")?;
    let mut t = open(ctx)?;
    crate::secrets::receive(
        s,
        crate::secrets::ProvisionContext {
            tpm: &mut *t,
            identity: id,
            release_key: key,
        },
        &mut |name, file| esp.run(|root| crate::secrets::store(root, name, file)),
    )
}

/// Serves one provisioning stream: secrets sealed and stored on the ESP, used from
/// the next boot.
pub fn serve_provision<S: Read + Write>(
    s: &mut S,
    ctx: &AgentContext,
    esp: &crate::update::EspAccess,
    note: &mut dyn FnMut(&str),
) {
    let frame = match provision(s, ctx, esp) {
        Ok(names) => {
            let text = format!(
                "sealed {}; the IKE process gets them from the next boot",
                if names.is_empty() {
                    "nothing".to_owned()
                } else {
                    names.join(", ")
                }
            );
            note(&text);
            Frame::new().with(proto::tag::RESULT, text.as_bytes())
        }
        Err(e) => {
            note(&format!("provisioning refused: {e}"));
            Frame::error(&e)
        }
    };
    let _ = frame.write(s);
}
