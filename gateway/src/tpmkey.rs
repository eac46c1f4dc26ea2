//! TPM keys for attestation: the endorsement key (EK), the attestation key (AK) under
//! it, quotes and credential activation — hand-marshalled commands (TPM 2.0 Library,
//! Part 3) over the same [`Transport`] as the PCR and NV commands.
//!
//! - The **EK** is recreated when needed with `TPM2_CreatePrimary` in the endorsement
//!   hierarchy from the TCG default RSA-2048 template (`attest_wire::tpms::ek_rsa_template`):
//!   the TPM derives the same key from its endorsement seed every time, the key its
//!   manufacturer certified. It is flushed after each use.
//! - The **AK** is a restricted RSASSA-SHA256 signing key created under the EK
//!   (`TPM2_Create` and `TPM2_Load`, authorised by a policy session satisfying the EK's
//!   policy, PolicySecret(endorsement)) and made persistent at [`AK_HANDLE`] with
//!   `TPM2_EvictControl`, so it is the same key at every boot. An object at that
//!   handle whose public area does not match the AK template is never used: the agent
//!   says so and quotes nothing.
//! - **Quotes**: `TPM2_Quote` with the AK over a SHA-256 PCR selection; the PCR values
//!   are read before and the quote's signed digest must equal their hash (else the
//!   PCRs moved meanwhile and it is tried again).
//! - **Credential activation**: `TPM2_ActivateCredential` with the AK (password
//!   session) and the EK (policy session).
//!
//! Sessions: the owner and endorsement hierarchies are used with empty passwords (as
//! after a TPM clear; the key-use ledger assumes the same). Policy sessions are
//! unbound and unsalted and carry no authValue, so their HMAC is empty.
//!
//! Nothing here panics on any TPM response.

use crate::error::{Error, Result};
use crate::tpm::{
    finish, header, Transport, TPM_RH_OWNER, TPM_RS_PW, TPM_ST_NO_SESSIONS, TPM_ST_SESSIONS,
};
use attest_wire::tpms::{self, Attest, Attested, PcrSelection, Public, Reader};

/// The AK's persistent handle (owner range; the appliance's own).
pub const AK_HANDLE: u32 = 0x8100_0A12;
/// `TPM_RH_ENDORSEMENT`.
pub const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
/// `TPM_RH_NULL`.
pub const TPM_RH_NULL: u32 = 0x4000_0007;
/// The NV index of the RSA-2048 EK certificate (TCG EK Credential Profile).
pub const EK_CERT_INDEX: u32 = 0x01C0_0002;
/// Largest EK certificate read.
const MAX_EK_CERT: u16 = 4096;

const CC_EVICT_CONTROL: u32 = 0x0000_0120;
const CC_CREATE_PRIMARY: u32 = 0x0000_0131;
const CC_ACTIVATE_CREDENTIAL: u32 = 0x0000_0147;
const CC_POLICY_SECRET: u32 = 0x0000_0151;
const CC_CREATE: u32 = 0x0000_0153;
const CC_LOAD: u32 = 0x0000_0157;
const CC_QUOTE: u32 = 0x0000_0158;
const CC_FLUSH_CONTEXT: u32 = 0x0000_0165;
const CC_READ_PUBLIC: u32 = 0x0000_0173;
const CC_START_AUTH_SESSION: u32 = 0x0000_0176;
const TPM_SE_POLICY: u8 = 0x01;

/// How a handle is authorised.
#[derive(Clone, Copy, Debug)]
enum Auth {
    /// Password session, empty password.
    Password,
    /// A policy session (handle), already satisfied.
    Policy(u32),
}

fn auth_area(c: &mut Vec<u8>, auths: &[Auth]) {
    let mut a = Vec::with_capacity(9 * auths.len());
    for s in auths {
        let h = match s {
            Auth::Password => TPM_RS_PW,
            Auth::Policy(h) => *h,
        };
        a.extend_from_slice(&h.to_be_bytes());
        a.extend_from_slice(&0u16.to_be_bytes()); // nonceCaller: empty
        a.push(0); // sessionAttributes: continueSession clear (a policy session ends here)
        a.extend_from_slice(&0u16.to_be_bytes()); // hmac: empty
    }
    c.extend_from_slice(&(a.len() as u32).to_be_bytes());
    c.extend_from_slice(&a);
}

fn malformed(command: &str, e: tpms::Error) -> Error {
    Error::TpmMalformed(format!("{command}: {e}"))
}

/// A response: its handle (if the command returns one), its parameters.
struct Response<'a> {
    handle: Option<u32>,
    params: Reader<'a>,
}

/// Checks the header; splits handle, parameters and the session area.
fn response<'a>(
    buf: &'a [u8],
    command: &'static str,
    sessions: bool,
    returns_handle: bool,
) -> Result<Response<'a>> {
    let m = |e| malformed(command, e);
    let mut r = Reader::new(buf, "response");
    let tag = r.u16("tag").map_err(m)?;
    let size = r.u32("responseSize").map_err(m)?;
    let rc = r.u32("responseCode").map_err(m)?;
    if usize::try_from(size).ok() != Some(buf.len()) {
        return Err(Error::TpmMalformed(format!(
            "{command}: responseSize {size} but {} bytes received",
            buf.len()
        )));
    }
    if rc != 0 {
        return Err(Error::TpmResponseCode { command, rc });
    }
    let want = if sessions {
        TPM_ST_SESSIONS
    } else {
        TPM_ST_NO_SESSIONS
    };
    if tag != want {
        return Err(Error::TpmMalformed(format!("{command}: tag {tag:#06x}")));
    }
    let handle = if returns_handle {
        Some(r.u32("handle").map_err(m)?)
    } else {
        None
    };
    let params = if sessions {
        let n = r.u32("parameterSize").map_err(m)? as usize;
        let p = r.take(n, "parameters").map_err(m)?;
        // The session area: nonceTPM, attributes, hmac per session; not checked (no
        // session here carries a key), only its shape.
        while r.position() < buf.len() {
            r.tpm2b("nonceTPM").map_err(m)?;
            r.u8("sessionAttributes").map_err(m)?;
            r.tpm2b("hmac").map_err(m)?;
        }
        Reader::new(p, "parameters")
    } else {
        Reader::new(r.rest(), "parameters")
    };
    Ok(Response { handle, params })
}

/// Random bytes for session nonces.
fn nonce16() -> [u8; 16] {
    let mut n = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut n);
    }
    n
}

fn flush(t: &mut dyn Transport, handle: u32) -> Result<()> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_NO_SESSIONS, CC_FLUSH_CONTEXT);
    c.extend_from_slice(&handle.to_be_bytes());
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    response(&resp, "FlushContext", false, false)?;
    Ok(())
}

/// Flushes `handle` when dropped (errors ignored: a transient object left behind is
/// freed at the next TPM reset, and `/dev/tpmrm0` flushes a closed client's objects).
struct Loaded<'t> {
    t: &'t mut dyn Transport,
    handle: u32,
}

impl Drop for Loaded<'_> {
    fn drop(&mut self) {
        let _ = flush(self.t, self.handle);
    }
}

fn create_primary_ek(t: &mut dyn Transport) -> Result<(u32, Public)> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_CREATE_PRIMARY);
    c.extend_from_slice(&TPM_RH_ENDORSEMENT.to_be_bytes());
    auth_area(&mut c, &[Auth::Password]);
    c.extend_from_slice(&[0, 4, 0, 0, 0, 0]); // TPM2B_SENSITIVE_CREATE: empty auth, no data
    c.extend_from_slice(&tpms::ek_rsa_template().to_tpm2b());
    c.extend_from_slice(&0u16.to_be_bytes()); // outsideInfo
    c.extend_from_slice(&0u32.to_be_bytes()); // creationPCR: none
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    let mut r = response(&resp, "CreatePrimary", true, true)?;
    let m = |e| malformed("CreatePrimary", e);
    let public = Public::parse(r.params.tpm2b("outPublic").map_err(m)?).map_err(m)?;
    let handle = r.handle.unwrap_or(0);
    if !tpms::matches_template(&public, &tpms::ek_rsa_template()) {
        let _ = flush(t, handle);
        return Err(Error::TpmMalformed(
            "CreatePrimary: the EK does not match the template asked for".into(),
        ));
    }
    Ok((handle, public))
}

/// A policy session satisfying the EK's policy: PolicySecret(TPM_RH_ENDORSEMENT).
fn ek_policy_session(t: &mut dyn Transport) -> Result<u32> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_NO_SESSIONS, CC_START_AUTH_SESSION);
    c.extend_from_slice(&TPM_RH_NULL.to_be_bytes()); // tpmKey: unsalted
    c.extend_from_slice(&TPM_RH_NULL.to_be_bytes()); // bind: unbound
    tpms::put_tpm2b(&mut c, &nonce16());
    c.extend_from_slice(&0u16.to_be_bytes()); // encryptedSalt
    c.push(TPM_SE_POLICY);
    c.extend_from_slice(&tpms::ALG_NULL.to_be_bytes()); // symmetric: none
    c.extend_from_slice(&tpms::ALG_SHA256.to_be_bytes());
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    let r = response(&resp, "StartAuthSession", false, true)?;
    let session = r.handle.unwrap_or(0);
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_POLICY_SECRET);
    c.extend_from_slice(&TPM_RH_ENDORSEMENT.to_be_bytes());
    c.extend_from_slice(&session.to_be_bytes());
    auth_area(&mut c, &[Auth::Password]);
    c.extend_from_slice(&0u16.to_be_bytes()); // nonceTPM
    c.extend_from_slice(&0u16.to_be_bytes()); // cpHashA
    c.extend_from_slice(&0u16.to_be_bytes()); // policyRef
    c.extend_from_slice(&0u32.to_be_bytes()); // expiration
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    if let Err(e) = response(&resp, "PolicySecret", true, false) {
        let _ = flush(t, session);
        return Err(e);
    }
    Ok(session)
}

/// `TPM2_ReadPublic`: the public area at `handle`, or `None` if nothing is there.
pub fn read_public(t: &mut dyn Transport, handle: u32) -> Result<Option<Public>> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_NO_SESSIONS, CC_READ_PUBLIC);
    c.extend_from_slice(&handle.to_be_bytes());
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    let mut r = match response(&resp, "ReadPublic", false, false) {
        Err(Error::TpmResponseCode { rc, .. }) if crate::tpm::rc_is_no_handle(rc) => {
            return Ok(None)
        }
        other => other?,
    };
    let m = |e| malformed("ReadPublic", e);
    let public = Public::parse(r.params.tpm2b("outPublic").map_err(m)?).map_err(m)?;
    r.params.tpm2b("name").map_err(m)?;
    r.params.tpm2b("qualifiedName").map_err(m)?;
    r.params.end().map_err(m)?;
    Ok(Some(public))
}

/// The EK's public area (the key is recreated and flushed).
pub fn ek_public(t: &mut dyn Transport) -> Result<Public> {
    let (h, p) = create_primary_ek(t)?;
    flush(t, h)?;
    Ok(p)
}

/// The persistent AK's public area, creating and persisting it on first use.
///
/// # Errors
/// The TPM fails, or an object at [`AK_HANDLE`] is not an AK of our template (it is
/// left alone: the administrator decides; `tpm2_evictcontrol -C o -c 0x81000a12`
/// removes it).
pub fn ensure_ak(t: &mut dyn Transport) -> Result<Public> {
    if let Some(p) = read_public(t, AK_HANDLE)? {
        if tpms::matches_template(&p, &tpms::ak_rsa_template()) {
            return Ok(p);
        }
        return Err(Error::TpmMalformed(format!(
            "the object at {AK_HANDLE:#010x} is not this appliance's attestation key (attributes {}); remove it with `tpm2_evictcontrol -C o -c {AK_HANDLE:#010x}` to let the gateway create one",
            tpms::attr::names(p.attributes)
        )));
    }
    let (ek, _) = create_primary_ek(t)?;
    let ek = Loaded { t, handle: ek };
    // Create under the EK.
    let session = ek_policy_session(ek.t)?;
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_CREATE);
    c.extend_from_slice(&ek.handle.to_be_bytes());
    auth_area(&mut c, &[Auth::Policy(session)]);
    c.extend_from_slice(&[0, 4, 0, 0, 0, 0]);
    c.extend_from_slice(&tpms::ak_rsa_template().to_tpm2b());
    c.extend_from_slice(&0u16.to_be_bytes());
    c.extend_from_slice(&0u32.to_be_bytes());
    let resp = crate::tpm::transact_retrying(ek.t, &finish(c))?;
    let mut r = response(&resp, "Create", true, false)?;
    let m = |e| malformed("Create", e);
    let private = r.params.tpm2b("outPrivate").map_err(m)?.to_vec();
    let public = r.params.tpm2b("outPublic").map_err(m)?.to_vec();
    // Load it.
    let session = ek_policy_session(ek.t)?;
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_LOAD);
    c.extend_from_slice(&ek.handle.to_be_bytes());
    auth_area(&mut c, &[Auth::Policy(session)]);
    tpms::put_tpm2b(&mut c, &private);
    tpms::put_tpm2b(&mut c, &public);
    let resp = crate::tpm::transact_retrying(ek.t, &finish(c))?;
    let r = response(&resp, "Load", true, true)?;
    let ak = Loaded {
        t: &mut *ek.t,
        handle: r.handle.unwrap_or(0),
    };
    // Persist it.
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_EVICT_CONTROL);
    c.extend_from_slice(&TPM_RH_OWNER.to_be_bytes());
    c.extend_from_slice(&ak.handle.to_be_bytes());
    auth_area(&mut c, &[Auth::Password]);
    c.extend_from_slice(&AK_HANDLE.to_be_bytes());
    let resp = crate::tpm::transact_retrying(ak.t, &finish(c))?;
    response(&resp, "EvictControl", true, false)?;
    drop(ak);
    drop(ek);
    let p = Public::parse(&public).map_err(|e| malformed("Create", e))?;
    Ok(p)
}

/// A quote and the PCR values it covers.
#[derive(Debug, Clone)]
pub struct Quote {
    /// `TPMS_ATTEST` as signed.
    pub attest: Vec<u8>,
    /// `TPMT_SIGNATURE`.
    pub signature: Vec<u8>,
    /// Values of the quoted PCRs, ascending.
    pub values: Vec<[u8; 32]>,
}

fn quote_once(
    t: &mut dyn Transport,
    qualifying: &[u8; 32],
    mask: u32,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_QUOTE);
    c.extend_from_slice(&AK_HANDLE.to_be_bytes());
    auth_area(&mut c, &[Auth::Password]);
    tpms::put_tpm2b(&mut c, qualifying);
    c.extend_from_slice(&tpms::ALG_NULL.to_be_bytes()); // inScheme: the key's own
    c.extend_from_slice(&PcrSelection::sha256(mask).to_bytes());
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    let mut r = response(&resp, "Quote", true, false)?;
    let m = |e| malformed("Quote", e);
    let attest = r.params.tpm2b("quoted").map_err(m)?.to_vec();
    let signature = r.params.rest().to_vec();
    tpms::Signature::parse(&signature).map_err(m)?;
    Ok((attest, signature))
}

/// Quotes the SHA-256 PCRs in `mask` with the AK and `qualifying` as extra data.
/// The values are read first; the quote is retried (up to 4 times) until its signed
/// digest covers exactly those values.
pub fn quote(t: &mut dyn Transport, qualifying: &[u8; 32], mask: u32) -> Result<Quote> {
    let pcrs: Vec<crate::tpm::PcrIndex> = tpms::pcrs_of(mask)
        .into_iter()
        .filter_map(crate::tpm::PcrIndex::new)
        .collect();
    for _ in 0..4 {
        let values: Vec<[u8; 32]> = crate::tpm::read_pcrs(t, &pcrs)?
            .into_iter()
            .map(|(_, d)| d.0)
            .collect();
        let (attest, signature) = quote_once(t, qualifying, mask)?;
        let parsed = Attest::parse(&attest).map_err(|e| malformed("Quote", e))?;
        if let Attested::Quote { digest, .. } = &parsed.attested {
            if digest[..] == tpms::pcr_digest(&values)[..] {
                return Ok(Quote {
                    attest,
                    signature,
                    values,
                });
            }
        }
    }
    Err(Error::TpmMalformed(
        "the PCRs kept changing between reading and quoting them".into(),
    ))
}

/// `TPM2_ActivateCredential` with the AK and the EK: the secret the verifier sealed
/// to this TPM for this AK.
pub fn activate_credential(
    t: &mut dyn Transport,
    id_object: &[u8],
    encrypted_secret: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let (ek, _) = create_primary_ek(t)?;
    let ek = Loaded { t, handle: ek };
    let session = ek_policy_session(ek.t)?;
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_ACTIVATE_CREDENTIAL);
    c.extend_from_slice(&AK_HANDLE.to_be_bytes()); // activateHandle (ADMIN: password)
    c.extend_from_slice(&ek.handle.to_be_bytes()); // keyHandle (USER: EK policy)
    auth_area(&mut c, &[Auth::Password, Auth::Policy(session)]);
    // Both arrive marshalled as TPM2B (size included).
    c.extend_from_slice(id_object);
    c.extend_from_slice(encrypted_secret);
    let resp = crate::tpm::transact_retrying(ek.t, &finish(c))?;
    let mut r = response(&resp, "ActivateCredential", true, false)?;
    let m = |e| malformed("ActivateCredential", e);
    let secret = zeroize::Zeroizing::new(r.params.tpm2b("certInfo").map_err(m)?.to_vec());
    r.params.end().map_err(m)?;
    Ok(secret)
}

/// The EK certificate from NV (DER), if the TPM holds one.
pub fn ek_certificate(t: &mut dyn Transport) -> Result<Option<Vec<u8>>> {
    let resp =
        crate::tpm::transact_retrying(t, &crate::tpm::nv_read_public_command(EK_CERT_INDEX))?;
    let public = match crate::tpm::parse_nv_read_public_response(&resp) {
        Ok(p) => p,
        Err(Error::TpmResponseCode { rc, .. }) if crate::tpm::rc_is_no_handle(rc) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let size = public.data_size.min(MAX_EK_CERT);
    let mut out = Vec::with_capacity(usize::from(size));
    while out.len() < usize::from(size) {
        let offset = out.len() as u16;
        let n = (size - offset).min(crate::tpm::NV_CHUNK as u16);
        let mut c = Vec::new();
        header(&mut c, TPM_ST_SESSIONS, crate::tpm::TPM_CC_NV_READ);
        c.extend_from_slice(&TPM_RH_OWNER.to_be_bytes()); // authHandle: owner (ownerread)
        c.extend_from_slice(&EK_CERT_INDEX.to_be_bytes());
        auth_area(&mut c, &[Auth::Password]);
        c.extend_from_slice(&n.to_be_bytes());
        c.extend_from_slice(&offset.to_be_bytes());
        let resp = crate::tpm::transact_retrying(t, &finish(c))?;
        let mut r = response(&resp, "NV_Read", true, false)?;
        let m = |e| malformed("NV_Read", e);
        let data = r.params.tpm2b("data").map_err(m)?;
        if data.len() != usize::from(n) {
            return Err(Error::TpmMalformed(format!(
                "NV_Read returned {} bytes, asked for {n}",
                data.len()
            )));
        }
        out.extend_from_slice(data);
    }
    // The index may be larger than the certificate: keep the DER SEQUENCE only.
    if let [0x30, 0x82, hi, lo, ..] = out[..] {
        let len = 4 + (usize::from(hi) << 8 | usize::from(lo));
        out.truncate(len.min(out.len()));
    }
    Ok(Some(out))
}

const CC_CERTIFY: u32 = 0x0000_0148;
const CC_SIGN: u32 = 0x0000_015D;
const CC_LOAD_EXTERNAL: u32 = 0x0000_0167;
const CC_POLICY_AUTHORIZE: u32 = 0x0000_016A;
const CC_VERIFY_SIGNATURE: u32 = 0x0000_0177;
const CC_GET_RANDOM: u32 = 0x0000_017B;
const CC_POLICY_PCR: u32 = 0x0000_017F;
/// `TPM_ST_HASHCHECK`.
const ST_HASHCHECK: u16 = 0x8024;

/// An unbound, unsalted policy session.
pub fn start_policy_session(t: &mut dyn Transport) -> Result<u32> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_NO_SESSIONS, CC_START_AUTH_SESSION);
    c.extend_from_slice(&TPM_RH_NULL.to_be_bytes());
    c.extend_from_slice(&TPM_RH_NULL.to_be_bytes());
    tpms::put_tpm2b(&mut c, &nonce16());
    c.extend_from_slice(&0u16.to_be_bytes());
    c.push(TPM_SE_POLICY);
    c.extend_from_slice(&tpms::ALG_NULL.to_be_bytes());
    c.extend_from_slice(&tpms::ALG_SHA256.to_be_bytes());
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    Ok(response(&resp, "StartAuthSession", false, true)?
        .handle
        .unwrap_or(0))
}

/// Flushes a transient object or a session.
///
/// # Errors
/// The TPM refuses.
pub fn flush_handle(t: &mut dyn Transport, handle: u32) -> Result<()> {
    flush(t, handle)
}

/// `TPM2_GetRandom` of `n` bytes (at most 32 per command; several commands if needed).
pub fn get_random(t: &mut dyn Transport, n: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let want = (n - out.len()).min(32) as u16;
        let mut c = Vec::new();
        header(&mut c, TPM_ST_NO_SESSIONS, CC_GET_RANDOM);
        c.extend_from_slice(&want.to_be_bytes());
        let resp = crate::tpm::transact_retrying(t, &finish(c))?;
        let mut r = response(&resp, "GetRandom", false, false)?;
        let b = r
            .params
            .tpm2b("randomBytes")
            .map_err(|e| malformed("GetRandom", e))?;
        if b.is_empty() {
            return Err(Error::TpmMalformed("GetRandom returned nothing".into()));
        }
        out.extend_from_slice(&b[..b.len().min(usize::from(want))]);
    }
    Ok(out)
}

/// `TPM2_LoadExternal` of a public key in the owner hierarchy (so that a verification
/// ticket made with it is good for PolicyAuthorize); returns its transient handle.
pub fn load_external(t: &mut dyn Transport, public: &Public) -> Result<u32> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_NO_SESSIONS, CC_LOAD_EXTERNAL);
    c.extend_from_slice(&0u16.to_be_bytes()); // inPrivate: none
    c.extend_from_slice(&public.to_tpm2b());
    c.extend_from_slice(&TPM_RH_OWNER.to_be_bytes());
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    let mut r = response(&resp, "LoadExternal", false, true)?;
    let name = r
        .params
        .tpm2b("name")
        .map_err(|e| malformed("LoadExternal", e))?
        .to_vec();
    let handle = r.handle.unwrap_or(0);
    if public.name().ok().as_deref() != Some(&name[..]) {
        let _ = flush(t, handle);
        return Err(Error::TpmMalformed(
            "LoadExternal: the TPM names the key otherwise than we do".into(),
        ));
    }
    Ok(handle)
}

/// `TPM2_VerifySignature`: the `TPMT_TK_VERIFIED` ticket (marshalled) for `digest`
/// signed (`TPMT_SIGNATURE`, marshalled) by the loaded key `key`.
pub fn verify_signature(
    t: &mut dyn Transport,
    key: u32,
    digest: &[u8; 32],
    signature: &[u8],
) -> Result<Vec<u8>> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_NO_SESSIONS, CC_VERIFY_SIGNATURE);
    c.extend_from_slice(&key.to_be_bytes());
    tpms::put_tpm2b(&mut c, digest);
    c.extend_from_slice(signature);
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    let mut r = response(&resp, "VerifySignature", false, false)?;
    let ticket = r.params.rest().to_vec();
    let mut tr = Reader::new(&ticket, "TPMT_TK_VERIFIED");
    let m = |e| malformed("VerifySignature", e);
    tr.u16("tag").map_err(m)?;
    tr.u32("hierarchy").map_err(m)?;
    tr.tpm2b("digest").map_err(m)?;
    tr.end().map_err(m)?;
    Ok(ticket)
}

fn policy_command(
    t: &mut dyn Transport,
    cc: u32,
    session: u32,
    params: &[u8],
    what: &'static str,
) -> Result<()> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_NO_SESSIONS, cc);
    c.extend_from_slice(&session.to_be_bytes());
    c.extend_from_slice(params);
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    response(&resp, what, false, false)?;
    Ok(())
}

/// `TPM2_PolicyPCR` over the current values of the SHA-256 PCRs in `mask`.
pub fn policy_pcr(t: &mut dyn Transport, session: u32, mask: u32) -> Result<()> {
    let mut p = 0u16.to_be_bytes().to_vec(); // pcrDigest: empty, the TPM's current values
    p.extend_from_slice(&PcrSelection::sha256(mask).to_bytes());
    policy_command(t, CC_POLICY_PCR, session, &p, "PolicyPCR")
}

/// `TPM2_PolicyAuthorize`: the session's digest must be `approved`, which `key_name`
/// signed (`ticket` from [`verify_signature`]); empty policyRef.
pub fn policy_authorize(
    t: &mut dyn Transport,
    session: u32,
    approved: &[u8; 32],
    key_name: &[u8],
    ticket: &[u8],
) -> Result<()> {
    let mut p = Vec::new();
    tpms::put_tpm2b(&mut p, approved);
    p.extend_from_slice(&0u16.to_be_bytes()); // policyRef
    tpms::put_tpm2b(&mut p, key_name);
    p.extend_from_slice(ticket);
    policy_command(t, CC_POLICY_AUTHORIZE, session, &p, "PolicyAuthorize")
}

/// `TPM2_CreatePrimary` in the owner hierarchy from `template`; returns the transient
/// handle and the public area.
pub fn create_primary_owner(t: &mut dyn Transport, template: &Public) -> Result<(u32, Public)> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_CREATE_PRIMARY);
    c.extend_from_slice(&TPM_RH_OWNER.to_be_bytes());
    auth_area(&mut c, &[Auth::Password]);
    c.extend_from_slice(&[0, 4, 0, 0, 0, 0]);
    c.extend_from_slice(&template.to_tpm2b());
    c.extend_from_slice(&0u16.to_be_bytes());
    c.extend_from_slice(&0u32.to_be_bytes());
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    let mut r = response(&resp, "CreatePrimary", true, true)?;
    let m = |e| malformed("CreatePrimary", e);
    let public = Public::parse(r.params.tpm2b("outPublic").map_err(m)?).map_err(m)?;
    Ok((r.handle.unwrap_or(0), public))
}

/// `TPM2_EvictControl` (owner): makes the transient `object` persistent at `persistent`.
pub fn persist(t: &mut dyn Transport, object: u32, persistent: u32) -> Result<()> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_EVICT_CONTROL);
    c.extend_from_slice(&TPM_RH_OWNER.to_be_bytes());
    c.extend_from_slice(&object.to_be_bytes());
    auth_area(&mut c, &[Auth::Password]);
    c.extend_from_slice(&persistent.to_be_bytes());
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    response(&resp, "EvictControl", true, false)?;
    Ok(())
}

/// `TPM2_Sign` of `digest` with the ECDSA key `key`, authorised by the satisfied policy
/// `session` (ended by the command); returns the marshalled `TPMT_SIGNATURE`.
pub fn sign_with_policy(
    t: &mut dyn Transport,
    key: u32,
    session: u32,
    digest: &[u8; 32],
) -> Result<Vec<u8>> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_SIGN);
    c.extend_from_slice(&key.to_be_bytes());
    auth_area(&mut c, &[Auth::Policy(session)]);
    tpms::put_tpm2b(&mut c, digest);
    c.extend_from_slice(&tpms::ALG_ECDSA.to_be_bytes());
    c.extend_from_slice(&tpms::ALG_SHA256.to_be_bytes());
    c.extend_from_slice(&ST_HASHCHECK.to_be_bytes());
    c.extend_from_slice(&TPM_RH_NULL.to_be_bytes());
    c.extend_from_slice(&0u16.to_be_bytes());
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    let mut r = response(&resp, "Sign", true, false)?;
    let sig = r.params.rest().to_vec();
    tpms::Signature::parse(&sig).map_err(|e| malformed("Sign", e))?;
    Ok(sig)
}

/// `TPM2_Certify` of `object` (ADMIN role, empty authValue) by the AK with
/// `qualifying`: the `TPMS_ATTEST` and its `TPMT_SIGNATURE`.
pub fn certify(
    t: &mut dyn Transport,
    object: u32,
    qualifying: &[u8; 32],
) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_CERTIFY);
    c.extend_from_slice(&object.to_be_bytes());
    c.extend_from_slice(&AK_HANDLE.to_be_bytes());
    auth_area(&mut c, &[Auth::Password, Auth::Password]);
    tpms::put_tpm2b(&mut c, qualifying);
    c.extend_from_slice(&tpms::ALG_NULL.to_be_bytes());
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    let mut r = response(&resp, "Certify", true, false)?;
    let m = |e| malformed("Certify", e);
    let attest = r.params.tpm2b("certifyInfo").map_err(m)?.to_vec();
    let sig = r.params.rest().to_vec();
    tpms::Signature::parse(&sig).map_err(m)?;
    Ok((attest, sig))
}

const CC_UNSEAL: u32 = 0x0000_015E;

/// The storage root key's template (TCG "SRK" template, ECC NIST P-256): a restricted
/// decryption key that `TPM2_CreatePrimary` derives from the owner seed, the same key
/// at every boot.
pub fn srk_template() -> Public {
    Public {
        name_alg: tpms::ALG_SHA256,
        attributes: tpms::attr::FIXED_TPM
            | tpms::attr::FIXED_PARENT
            | tpms::attr::SENSITIVE_DATA_ORIGIN
            | tpms::attr::USER_WITH_AUTH
            | tpms::attr::NO_DA
            | tpms::attr::RESTRICTED
            | tpms::attr::DECRYPT,
        auth_policy: Vec::new(),
        params: tpms::KeyParams::Ecc {
            symmetric: (tpms::ALG_AES, 128, tpms::ALG_CFB),
            scheme: (tpms::ALG_NULL, 0),
            curve: tpms::ECC_NIST_P256,
            kdf: (tpms::ALG_NULL, 0),
            x: Vec::new(),
            y: Vec::new(),
        },
    }
}

/// `TPM2_Create` of a sealed data object holding `data` under the loaded `parent`
/// (the SRK, empty authValue) with `auth_policy` and no userWithAuth: only a policy
/// session satisfying that policy unseals it. Returns (TPM2B_PRIVATE, TPM2B_PUBLIC),
/// marshalled with their sizes.
pub fn create_sealed(
    t: &mut dyn Transport,
    parent: u32,
    auth_policy: &[u8; 32],
    data: &[u8],
) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut sensitive = Vec::new();
    sensitive.extend_from_slice(&0u16.to_be_bytes()); // userAuth: empty
    tpms::put_tpm2b(&mut sensitive, data);
    // TPMT_PUBLIC of a KEYEDHASH object with scheme NULL (sealed data).
    let mut public = Vec::new();
    public.extend_from_slice(&0x0008u16.to_be_bytes()); // TPM_ALG_KEYEDHASH
    public.extend_from_slice(&tpms::ALG_SHA256.to_be_bytes());
    public.extend_from_slice(
        &(tpms::attr::FIXED_TPM | tpms::attr::FIXED_PARENT | tpms::attr::NO_DA).to_be_bytes(),
    );
    tpms::put_tpm2b(&mut public, auth_policy);
    public.extend_from_slice(&tpms::ALG_NULL.to_be_bytes()); // scheme
    public.extend_from_slice(&0u16.to_be_bytes()); // unique: empty
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_CREATE);
    c.extend_from_slice(&parent.to_be_bytes());
    auth_area(&mut c, &[Auth::Password]);
    tpms::put_tpm2b(&mut c, &sensitive);
    tpms::put_tpm2b(&mut c, &public);
    c.extend_from_slice(&0u16.to_be_bytes());
    c.extend_from_slice(&0u32.to_be_bytes());
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    let mut r = response(&resp, "Create", true, false)?;
    let m = |e| malformed("Create", e);
    let mut private = Vec::new();
    tpms::put_tpm2b(&mut private, r.params.tpm2b("outPrivate").map_err(m)?);
    let mut public = Vec::new();
    tpms::put_tpm2b(&mut public, r.params.tpm2b("outPublic").map_err(m)?);
    Ok((private, public))
}

/// `TPM2_Load` of an object made by [`create_sealed`] under `parent` (empty authValue);
/// `private` and `public` marshalled with their sizes. Returns the transient handle.
pub fn load_under(
    t: &mut dyn Transport,
    parent: u32,
    private: &[u8],
    public: &[u8],
) -> Result<u32> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_LOAD);
    c.extend_from_slice(&parent.to_be_bytes());
    auth_area(&mut c, &[Auth::Password]);
    c.extend_from_slice(private);
    c.extend_from_slice(public);
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    Ok(response(&resp, "Load", true, true)?.handle.unwrap_or(0))
}

/// `TPM2_Unseal` of the loaded `object`, authorised by the satisfied policy `session`.
pub fn unseal(
    t: &mut dyn Transport,
    object: u32,
    session: u32,
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut c = Vec::new();
    header(&mut c, TPM_ST_SESSIONS, CC_UNSEAL);
    c.extend_from_slice(&object.to_be_bytes());
    auth_area(&mut c, &[Auth::Policy(session)]);
    let resp = crate::tpm::transact_retrying(t, &finish(c))?;
    let mut r = response(&resp, "Unseal", true, false)?;
    let m = |e| malformed("Unseal", e);
    let data = zeroize::Zeroizing::new(r.params.tpm2b("outData").map_err(m)?.to_vec());
    r.params.end().map_err(m)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn responses_never_panic(b in prop::collection::vec(any::<u8>(), 0..400), s in any::<bool>(), h in any::<bool>()) {
            let _ = response(&b, "x", s, h);
        }
    }
}
