//! The device identity key: an ECDSA P-256 key generated in the TPM at the first boot
//! of an image signed by a release key, persistent at
//! [`attest_wire::policy::IDENTITY_HANDLE`], never outside the TPM. Its policy is
//! PolicyAuthorize by the release key's PCR-policy key (see `attest_wire::policy`): it
//! signs only while PCR 11 is that of an image whose signed policy (`.pcrsig` in the
//! UKI) that key approved. A signed update keeps it; an image signed by another key, an
//! unsigned image or a changed UKI cannot use it.
//!
//! At boot ([`at_boot`]), before anything starts, the init:
//! 1. reads PCR 11 and looks on the ESP for a UKI whose `.pcrsig` approves exactly that
//!    value (the booted one);
//! 2. loads the PCR-policy key into the owner hierarchy and has the TPM verify the
//!    signature (`TPM2_VerifySignature` → a ticket);
//! 3. creates the identity key if there is none (`TPM2_CreatePrimary` in the owner
//!    hierarchy with 64 random bytes from the TPM as `unique`, then
//!    `TPM2_EvictControl`); a key there whose policy names another PCR-policy key is
//!    left alone and unusable;
//! 4. signs a self-test digest under the policy (PolicyPCR, PolicyAuthorize, Sign);
//! 5. extends PCR 15 with `appliance-identity key sha256:<SHA-256 of the public
//!    point>` — or `appliance-identity unusable <reason>` — and logs it.
//!
//! Why a TPM-resident ECDSA key rather than an Ed25519 key sealed to the TPM and
//! unsealed into the IKE process: the private key never exists outside the TPM, so
//! a compromise of any process (IKE's included) yields at most signatures while it
//! lasts, never the key; TPM 2.0 (swtpm 0.7, libtpms 0.9) has no Ed25519; IKE peers
//! (ours, strongSwan) verify ECDSA P-256 (RFC 7427).

use std::path::Path;
use std::sync::OnceLock;

use attest_wire::policy::{self, SignedPolicy, IDENTITY_HANDLE, POLICY_PCRS};
use attest_wire::runtime::{Event, PCR_IDENTITY};
use attest_wire::tpms::{self, Public};

use crate::console::Logger;
use crate::digest::Sha256Digest;
use crate::tpm::{self, PcrIndex, Transport};
use crate::tpmkey;

/// A usable identity key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its public area.
    pub public: Public,
    /// The signed policy of the booted image.
    pub policy: SignedPolicy,
    /// The PCR-policy key's name.
    pub policy_key_name: Vec<u8>,
    /// The TPM's ticket for the policy's signature.
    pub ticket: Vec<u8>,
}

/// What this boot found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The key signs.
    Ready(Box<Identity>),
    /// No identity this boot: a short reason word for PCR 15, and the whole story.
    Unusable(&'static str, String),
}

impl Outcome {
    /// The PCR 15 event for this outcome.
    pub fn event(&self) -> Event {
        let text = match self {
            Outcome::Ready(id) => format!(
                "appliance-identity key sha256:{}",
                policy::identity_fingerprint(&id.public)
                    .map(|f| f.iter().map(|b| format!("{b:02x}")).collect::<String>())
                    .unwrap_or_default()
            ),
            Outcome::Unusable(why, _) => format!("appliance-identity unusable {why}"),
        };
        Event {
            pcr: PCR_IDENTITY,
            text,
        }
    }
}

static BOOTED: OnceLock<Outcome> = OnceLock::new();

/// This boot's outcome, once [`at_boot`] ran.
pub fn booted() -> Option<&'static Outcome> {
    BOOTED.get()
}

/// The runtime events identity added this boot (for the agent's log).
pub fn events() -> Vec<Event> {
    booted().map(|o| vec![o.event()]).unwrap_or_default()
}

/// The signed policy approving PCR 11 = `pcr11`, from the UKIs on the ESP mounted at
/// `root` (`EFI/Linux/*.efi`, `EFI/BOOT/BOOTX64.EFI`).
pub fn signed_policy_on_esp(root: &Path, pcr11: &[u8; 32]) -> Option<SignedPolicy> {
    let want = policy::policy_pcr(POLICY_PCRS, &[*pcr11]);
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("EFI/Linux"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("efi")))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.push(root.join("EFI/BOOT/BOOTX64.EFI"));
    files.into_iter().find_map(|f| {
        let mut file = std::fs::File::open(&f).ok()?;
        let text = crate::esp::uki_section(&mut file, policy::SECTION)?;
        SignedPolicy::parse(&text)
            .ok()
            .filter(|p| p.pcrs == POLICY_PCRS && p.pol == want)
    })
}

/// The identity key under `policy`: verifies the policy's signature in the TPM,
/// creates and persists the key if there is none, and signs a self-test digest.
///
/// # Errors
/// (reason word, story): `policy-signature` (the TPM refuses the signature),
/// `other-release-key` (the key there belongs to another PCR-policy key), `tpm`.
pub fn setup(
    t: &mut dyn Transport,
    policy: &SignedPolicy,
) -> Result<Identity, (&'static str, String)> {
    let tpm_err = |what: &str| {
        let what = what.to_owned();
        move |e: crate::Error| ("tpm", format!("{what}: {e}"))
    };
    let key = policy.key();
    let key_name = key.name().map_err(|e| ("tpm", e.to_string()))?;
    let handle = tpmkey::load_external(t, &key).map_err(tpm_err("loading the PCR-policy key"))?;
    let mut sig = tpms::ALG_ECDSA.to_be_bytes().to_vec();
    sig.extend_from_slice(&tpms::ALG_SHA256.to_be_bytes());
    tpms::put_tpm2b(&mut sig, &policy.sig_r);
    tpms::put_tpm2b(&mut sig, &policy.sig_s);
    let ticket = tpmkey::verify_signature(t, handle, &policy::a_hash(&policy.pol), &sig);
    let _ = tpmkey::flush_handle(t, handle);
    let ticket = ticket.map_err(|e| {
        (
            "policy-signature",
            format!("the TPM refuses the PCR policy's signature: {e}"),
        )
    })?;
    let public = match tpmkey::read_public(t, IDENTITY_HANDLE)
        .map_err(tpm_err("reading the identity key"))?
    {
        Some(p) => {
            let template = policy::identity_template(&key_name, &[0; 64]);
            if !tpms::matches_template(&p, &template) {
                if p.auth_policy != template.auth_policy && p.attributes == template.attributes {
                    return Err((
                        "other-release-key",
                        "the identity key in this TPM answers to another release key's PCR policies; it stays unusable (it is never replaced)".into(),
                    ));
                }
                return Err((
                    "foreign-object",
                    format!("the object at {IDENTITY_HANDLE:#010x} is not an identity key of this appliance; it is left alone"),
                ));
            }
            p
        }
        None => {
            let unique: [u8; 64] = tpmkey::get_random(t, 64)
                .map_err(tpm_err("random bytes"))?
                .try_into()
                .map_err(|_| ("tpm", "random bytes: short".to_string()))?;
            let template = policy::identity_template(&key_name, &unique);
            let (h, p) = tpmkey::create_primary_owner(t, &template)
                .map_err(tpm_err("creating the identity key"))?;
            let persisted = tpmkey::persist(t, h, IDENTITY_HANDLE);
            let _ = tpmkey::flush_handle(t, h);
            persisted.map_err(tpm_err("persisting the identity key"))?;
            p
        }
    };
    let id = Identity {
        public,
        policy: policy.clone(),
        policy_key_name: key_name,
        ticket,
    };
    sign(t, &id, &Sha256Digest::of(b"appliance identity self-test").0).map_err(|e| {
        (
            "policy",
            format!("the identity key does not sign under this image's policy: {e}"),
        )
    })?;
    Ok(id)
}

/// Signs `digest` with the identity key: a policy session satisfying PolicyPCR(11)
/// and PolicyAuthorize with the boot's ticket, then `TPM2_Sign`. Returns (r, s).
///
/// # Errors
/// The TPM refuses (PCR 11 moved, the key is gone).
pub fn sign(
    t: &mut dyn Transport,
    id: &Identity,
    digest: &[u8; 32],
) -> crate::Result<(Vec<u8>, Vec<u8>)> {
    let session = tpmkey::start_policy_session(t)?;
    let r = (|| {
        tpmkey::policy_pcr(t, session, POLICY_PCRS)?;
        tpmkey::policy_authorize(t, session, &id.policy.pol, &id.policy_key_name, &id.ticket)?;
        tpmkey::sign_with_policy(t, IDENTITY_HANDLE, session, digest)
    })();
    let sig = match r {
        Ok(s) => s,
        Err(e) => {
            let _ = tpmkey::flush_handle(t, session);
            return Err(e);
        }
    };
    match tpms::Signature::parse(&sig) {
        Ok(tpms::Signature::Ecdsa(_, r, s)) => Ok((r, s)),
        _ => Err(crate::Error::TpmMalformed(
            "Sign: not an ECDSA signature".into(),
        )),
    }
}

/// Runs the identity steps at boot and extends PCR 15 with the outcome; records the
/// outcome for the agent. `esp_root`: the mounted ESP, or `None` when the image
/// takes no updates (no release key: no identity).
pub fn at_boot(t: &mut dyn Transport, esp_root: Option<&Path>, log: &mut Logger) -> Outcome {
    let outcome = match esp_root {
        None => Outcome::Unusable(
            "no-release-key",
            "this image names no release key: no device identity".into(),
        ),
        Some(root) => match PcrIndex::new(11).map(|p11| tpm::read_pcrs(t, &[p11])) {
            None => Outcome::Unusable("tpm", "no PCR 11".into()),
            Some(Err(e)) => Outcome::Unusable("tpm", format!("reading PCR 11: {e}")),
            Some(Ok(v)) => {
                let pcr11 = v.first().map(|(_, d)| d.0).unwrap_or([0; 32]);
                match signed_policy_on_esp(root, &pcr11) {
                    None => Outcome::Unusable(
                        "no-signed-policy",
                        "no UKI on the ESP carries a PCR policy signed for this boot's PCR 11 (an unsigned or changed image)".into(),
                    ),
                    Some(p) => match setup(t, &p) {
                        Ok(id) => Outcome::Ready(Box::new(id)),
                        Err((why, story)) => Outcome::Unusable(why, story),
                    },
                }
            }
        },
    };
    record(t, outcome, log)
}

/// Extends PCR 15 with `outcome`'s event, logs it, keeps it for the agent.
fn record(t: &mut dyn Transport, outcome: Outcome, log: &mut Logger) -> Outcome {
    let e = outcome.event();
    match PcrIndex::new(e.pcr) {
        Some(pcr) => match tpm::extend_pcr(t, pcr, &Sha256Digest(e.digest())) {
            Ok(()) => log.log(&format!("measured pcr {} {}", e.pcr, e.text)),
            Err(err) => log.log(&format!("error: identity: extending PCR 15: {err}")),
        },
        None => log.log("error: identity: no PCR 15"),
    }
    match &outcome {
        Outcome::Ready(id) => log.log(&format!(
            "identity: ECDSA P-256 key in the TPM ({IDENTITY_HANDLE:#010x}), public point {}",
            policy::identity_point(&id.public)
                .map(|p| p.iter().map(|b| format!("{b:02x}")).collect::<String>())
                .unwrap_or_default()
        )),
        Outcome::Unusable(_, story) => log.log(&format!("identity: none this boot: {story}")),
    }
    let _ = BOOTED.set(outcome.clone());
    outcome
}

/// The provisioned secrets the plan's IKE process needs: its device credentials
/// but the identity key (which is no sealed secret).
fn sealed_names(plan: &crate::plan::Plan) -> Vec<String> {
    plan.ike
        .as_ref()
        .map(|i| {
            i.credentials
                .iter()
                .map(|c| c.as_str().to_owned())
                .filter(|c| c != crate::plan::DEVICE_IDENTITY)
                .collect()
        })
        .unwrap_or_default()
}

/// [`at_boot`] in host test mode (`gateway-init --serve`): the TPM at `tpm` (swtpm's
/// socket), a directory standing for the ESP; then the plan's provisioned secrets
/// unsealed from it, as on the device.
pub fn at_boot_serve(tpm: &Path, esp_dir: &Path, plan: &crate::plan::Plan, log: &mut Logger) {
    let mut t = match crate::runtime::open_tpm(tpm) {
        Ok(t) => t,
        Err(e) => {
            log.log(&format!("error: identity: opening {}: {e}", tpm.display()));
            return;
        }
    };
    let root = plan.update.is_some().then_some(esp_dir);
    let outcome = at_boot(&mut *t, root, log);
    let names = sealed_names(plan);
    if let (Outcome::Ready(id), Some(root)) = (&outcome, root) {
        if !names.is_empty() {
            crate::secrets::unseal_all(&mut *t, id, root, &names, log);
        }
    }
}

/// [`at_boot`] on the device: the TPM among `tpm_devices`; the ESP the boot loader
/// names, mounted read-only while the signed policy is looked up, when the plan takes
/// updates (a release key); else no identity. Without a TPM nothing is extended.
pub fn at_boot_device(
    esp: &crate::esp::EspEnv,
    tpm_devices: &[std::path::PathBuf],
    plan: &crate::plan::Plan,
    log: &mut Logger,
) {
    let Some(dev) = tpm_devices.iter().find(|p| p.exists()) else {
        log.log("identity: no TPM, no device identity");
        return;
    };
    let mut t = match crate::runtime::open_tpm(dev) {
        Ok(t) => t,
        Err(e) => {
            log.log(&format!("error: identity: opening {}: {e}", dev.display()));
            return;
        }
    };
    if plan.update.is_none() {
        at_boot(&mut *t, None, log);
        return;
    }
    // The boot loader names the ESP in an EFI variable.
    crate::esp::mount_efivarfs(esp, log);
    let dev = match crate::esp::inspect(esp) {
        Ok(b) => b.esp,
        Err(e) => {
            log.log(&format!("warning: identity: the ESP: {e}"));
            None
        }
    };
    let Some(dev) = dev else {
        record(
            &mut *t,
            Outcome::Unusable(
                "no-esp",
                "the boot loader named no ESP (LoaderDevicePartUUID): the signed PCR policy cannot be read".into(),
            ),
            log,
        );
        return;
    };
    let names = sealed_names(plan);
    let done = crate::esp::with_mounted(esp, &dev, false, |root| {
        let outcome = at_boot(&mut *t, Some(root), log);
        // The provisioned secrets the plan names, unsealed under this boot's policy.
        match &outcome {
            Outcome::Ready(id) if !names.is_empty() => {
                crate::secrets::unseal_all(&mut *t, id, root, &names, log);
            }
            _ if !names.is_empty() => log.log(&format!(
                "secrets: {} cannot be unsealed without a device identity this boot",
                names.join(", ")
            )),
            _ => {}
        }
        outcome
    });
    if let Err(e) = done {
        record(
            &mut *t,
            Outcome::Unusable("no-esp", format!("the ESP: {e}")),
            log,
        );
    }
}
