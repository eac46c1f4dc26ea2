//! Provisioned secrets (PSKs referenced as `tpm:<name>`): received encrypted to this
//! TPM, sealed by it under the same signed PCR policy as the identity key, stored
//! sealed on the ESP, unsealed at boot and handed to the IKE process.
//!
//! - **Receiving** ([`receive`], endpoint 4 of the management channel): the gateway
//!   sends a fresh nonce from the TPM; each part of a secret (at most 32 bytes) comes
//!   as a credential made for this TPM's EK and bound to its AK's name
//!   (`TPM2_MakeCredential`, so only this TPM recovers it with `TPM2_ActivateCredential`),
//!   signed by the release key over the nonce, the AK's name, the secret's name and the
//!   credential. Black relays only ciphertext; a part signed for another session,
//!   device or name is refused; nothing is sealed unless every part of a secret
//!   arrived and verified.
//! - **Sealing** ([`seal`]): a sealed data object under the storage root key (the
//!   TCG ECC SRK template, derived from the owner seed), its `authPolicy`
//!   PolicyAuthorize by the release key's PCR-policy key: it unseals only while PCR 11
//!   is that of an image the release key signed. Stored as
//!   `appliance/secrets/<name>.sealed` on the ESP (written to a temporary name,
//!   synced, renamed): useless off this TPM.
//! - **At boot** ([`unseal_all`]): each secret the plan names is unsealed (a policy
//!   session: PolicyPCR, PolicyAuthorize with the boot's ticket) and kept for the IKE
//!   process's credential descriptor. The bytes never reach the console or a log.
//!
//! Nothing here panics on any input.

use std::path::Path;
use std::sync::OnceLock;

use attest_wire::policy::{self, POLICY_PCRS};
use attest_wire::proto::{self, SecretPart};
use zeroize::Zeroizing;

use crate::identity::Identity;
use crate::tpm::Transport;
use crate::tpmkey;

/// Where sealed secrets live on the ESP.
pub const DIR: &str = "appliance/secrets";
/// A sealed file's first bytes.
const MAGIC: &[u8; 8] = b"APLSEAL1";

/// The sealed object (TPM2B_PRIVATE ‖ TPM2B_PUBLIC) of `secret`.
///
/// # Errors
/// The TPM refuses.
pub fn seal(t: &mut dyn Transport, id: &Identity, secret: &[u8]) -> crate::Result<Vec<u8>> {
    let (srk, _) = tpmkey::create_primary_owner(t, &tpmkey::srk_template())?;
    let sealed = tpmkey::create_sealed(
        t,
        srk,
        &policy::policy_authorize(&id.policy_key_name),
        secret,
    );
    let _ = tpmkey::flush_handle(t, srk);
    let (private, public) = sealed?;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&private);
    out.extend_from_slice(&public);
    Ok(out)
}

fn split(file: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = file.strip_prefix(MAGIC)?;
    let n = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    let (private, rest) = rest.split_at_checked(2 + n)?;
    let m = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    if rest.len() != 2 + m {
        return None;
    }
    Some((private, rest))
}

/// Unseals a file made by [`seal`] under this boot's policy.
///
/// # Errors
/// A malformed file, or the TPM refuses (another image, another TPM).
pub fn unseal(
    t: &mut dyn Transport,
    id: &Identity,
    file: &[u8],
) -> crate::Result<Zeroizing<Vec<u8>>> {
    let (private, public) =
        split(file).ok_or_else(|| crate::Error::TpmMalformed("not a sealed secret".into()))?;
    let (srk, _) = tpmkey::create_primary_owner(t, &tpmkey::srk_template())?;
    let object = tpmkey::load_under(t, srk, private, public);
    let _ = tpmkey::flush_handle(t, srk);
    let object = object?;
    let r = (|| {
        let session = tpmkey::start_policy_session(t)?;
        let r = tpmkey::policy_pcr(t, session, POLICY_PCRS)
            .and_then(|()| {
                tpmkey::policy_authorize(
                    t,
                    session,
                    &id.policy.pol,
                    &id.policy_key_name,
                    &id.ticket,
                )
            })
            .and_then(|()| tpmkey::unseal(t, object, session));
        if r.is_err() {
            let _ = tpmkey::flush_handle(t, session);
        }
        r
    })();
    let _ = tpmkey::flush_handle(t, object);
    r
}

/// Writes `file` as the sealed secret `name` under the ESP at `root`: a temporary
/// file, synced, renamed, the directory synced.
///
/// # Errors
/// Writing fails.
pub fn store(root: &Path, name: &str, file: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let dir = root.join(DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {DIR}: {e}"))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let done = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(file)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(format!("{name}.sealed")))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok::<(), std::io::Error>(())
    })();
    done.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {DIR}/{name}.sealed: {e}")
    })
}

static UNSEALED: OnceLock<Vec<(String, Zeroizing<Vec<u8>>)>> = OnceLock::new();

/// Unseals every secret in `names` found under the ESP at `root`; keeps them for
/// [`credential_stream`]. Logs names and outcomes, never bytes.
pub fn unseal_all(
    t: &mut dyn Transport,
    id: &Identity,
    root: &Path,
    names: &[String],
    log: &mut crate::console::Logger,
) {
    let mut out = Vec::new();
    for name in names {
        let path = root.join(DIR).join(format!("{name}.sealed"));
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log.log(&format!(
                    "secrets: {name} is not provisioned on this device"
                ));
            }
            Err(e) => log.log(&format!("error: secrets: reading {DIR}/{name}.sealed: {e}")),
            Ok(file) => match unseal(t, id, &file) {
                Ok(secret) => {
                    log.log(&format!(
                        "secrets: {name} unsealed ({} bytes) for the IKE process",
                        secret.len()
                    ));
                    out.push((name.clone(), secret));
                }
                Err(e) => log.log(&format!(
                    "error: secrets: {name} does not unseal under this image's policy: {e}"
                )),
            },
        }
    }
    let _ = UNSEALED.set(out);
}

/// The IKE process's credential stream (records `u8 name length, name, u16 secret
/// length, secret`) of the secrets unsealed at boot.
pub fn credential_stream() -> Zeroizing<Vec<u8>> {
    let mut s = Zeroizing::new(Vec::new());
    for (name, secret) in UNSEALED.get().map(Vec::as_slice).unwrap_or_default() {
        s.push(name.len() as u8);
        s.extend_from_slice(name.as_bytes());
        s.extend_from_slice(&(secret.len() as u16).to_be_bytes());
        s.extend_from_slice(secret);
    }
    s
}

/// The names of the secrets unsealed at boot.
pub fn unsealed_names() -> Vec<String> {
    UNSEALED
        .get()
        .map(|v| v.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default()
}

/// Writes one sealed secret (name, sealed file) where it is kept.
pub type Store<'a> = dyn FnMut(&str, &[u8]) -> Result<(), String> + 'a;

/// A secret being received: its name, its part count, the parts so far.
type Pending = (String, u8, Vec<Option<Zeroizing<Vec<u8>>>>);

/// What [`receive`] needs of the gateway.
pub struct ProvisionContext<'a> {
    /// The TPM.
    pub tpm: &'a mut dyn Transport,
    /// This boot's identity (the policy secrets are sealed under).
    pub identity: &'a Identity,
    /// The release key that signs provisioning.
    pub release_key: &'a [u8; 32],
}

/// Receives secrets from a provisioner on `s` (after the request's first bytes and
/// its empty hello frame) and seals them; `store` writes each sealed file (name,
/// bytes). Returns the names sealed.
///
/// # Errors
/// The first refusal, in words (nothing of that secret is stored).
pub fn receive<S: std::io::Read + std::io::Write>(
    s: &mut S,
    ctx: ProvisionContext<'_>,
    store: &mut Store<'_>,
) -> Result<Vec<String>, String> {
    let ak = tpmkey::read_public(ctx.tpm, tpmkey::AK_HANDLE)
        .map_err(|e| format!("the attestation key: {e}"))?
        .ok_or("this gateway has no attestation key yet: enrol it first")?;
    let ak_name = ak.name().map_err(|e| e.to_string())?;
    let nonce: [u8; 32] = tpmkey::get_random(ctx.tpm, 32)
        .map_err(|e| format!("a nonce: {e}"))?
        .try_into()
        .map_err(|_| "a nonce: short".to_string())?;
    proto::Frame::new()
        .with(proto::tag::NONCE, nonce.to_vec())
        .write(s)
        .map_err(|e| format!("sending the nonce: {e}"))?;
    let mut parts: Vec<Pending> = Vec::new();
    for _ in 0..(4 * proto::MAX_SECRET / proto::SECRET_PART) {
        let f = proto::Frame::read(s).map_err(|e| e.to_string())?;
        if f == proto::Frame::new() {
            break;
        }
        let p = SecretPart::from_frame(&f).map_err(|e| e.to_string())?;
        let digest = proto::provision_digest(&nonce, &ak_name, &p);
        if !update_bundle::release_signed(ctx.release_key, &digest, &p.signature) {
            return Err(format!(
                "secret {}: part {} is not signed by this image's release key {} for this session",
                p.name,
                p.index,
                update_bundle::fingerprint(ctx.release_key)
            ));
        }
        let chunk = tpmkey::activate_credential(ctx.tpm, &p.id_object, &p.encrypted_secret)
            .map_err(|e| format!("secret {}: part {}: {e}", p.name, p.index))?;
        let entry = match parts.iter_mut().position(|(n, _, _)| *n == p.name) {
            Some(i) => &mut parts[i],
            None => {
                parts.push((p.name.clone(), p.count, vec![None; usize::from(p.count)]));
                let last = parts.len() - 1;
                &mut parts[last]
            }
        };
        if entry.1 != p.count {
            return Err(format!("secret {}: parts disagree on their count", p.name));
        }
        entry.2[usize::from(p.index)] = Some(chunk);
    }
    let mut sealed = Vec::new();
    for (name, count, chunks) in &parts {
        let mut secret = Zeroizing::new(Vec::new());
        for (i, c) in chunks.iter().enumerate() {
            let c = c
                .as_ref()
                .ok_or_else(|| format!("secret {name}: part {i} of {count} is missing"))?;
            secret.extend_from_slice(c);
        }
        if secret.is_empty() {
            return Err(format!("secret {name} is empty"));
        }
        let file =
            seal(ctx.tpm, ctx.identity, &secret).map_err(|e| format!("sealing {name}: {e}"))?;
        store(name, &file)?;
        sealed.push(format!("{name} ({} bytes)", secret.len()));
    }
    Ok(sealed)
}
