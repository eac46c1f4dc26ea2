//! One output directory of `appliance build`, read for comparison.
//!
//! What is read, in order, and what each step trusts:
//! 1. `manifest.json`; with a public key, first `manifest.sig` over its exact
//!    bytes (Ed25519) — nothing else is read before the signature verifies;
//! 2. `uki.efi`, whose SHA-256 must equal the manifest's `uki.sha256`;
//! 3. from the UKI's `.initrd` section, unpacked as the kernel does (a later
//!    archive's file replaces an earlier one of the same path): the runtime
//!    plan at [`gateway_plan::PLAN_PATH`], which must hash to the manifest's
//!    `plan.sha256`, and the policy blob at the plan's `policy-path`, which
//!    must hash to the manifest's `policy.sha256` and to the plan's pin.
//!
//! So with a key, everything a [`Build`] holds is covered by the signature.
//! `disk.img` is not read (gigabytes); `appliance verify` checks it.
//!
//! The decompressed initramfs and the policy bytes (a lab policy holds its
//! keys in clear) are wiped once decoded.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use signing::keys::PublicKey;
use signing::manifest::Manifest;
use signing::verify::{MANIFEST, SIGNATURE};
use zeroize::Zeroizing;

use crate::ReleaseError;

/// The UKI's file name in an output directory.
pub const UKI: &str = "uki.efi";

/// A build, read and checked (see the module docs).
#[derive(Debug)]
pub struct Build {
    /// The output directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// The fingerprint of the key whose signature over the manifest was
    /// verified; `None` when no key was given (nothing was authenticated).
    pub signer: Option<String>,
    /// The runtime plan in the UKI.
    pub plan: gateway_plan::Plan,
    /// The policy blob in the UKI.
    pub policy: policy_blob::Policy,
    /// The UKI's signed PCR policy (`.pcrsig`): the fingerprint (SHA-256 of the
    /// uncompressed point) of the PCR-policy key that signed it, if any. The device
    /// identity key and the secrets sealed under it answer to that key.
    pub pcr_public_key: Option<String>,
    /// Whether the UKI's `.pcrsig` parses and approves this UKI's own predicted
    /// PCR 11.
    pub pcr_signature: bool,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn read(path: &Path) -> Result<Vec<u8>, ReleaseError> {
    std::fs::read(path).map_err(|source| ReleaseError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl Build {
    /// Reads and checks the output directory `dir`; with `key`, its manifest
    /// must be signed by that key.
    pub fn open(dir: &Path, key: Option<&PublicKey>) -> Result<Build, ReleaseError> {
        let manifest_path = dir.join(MANIFEST);
        let manifest_bytes = read(&manifest_path)?;
        let signer = match key {
            None => None,
            Some(key) => {
                let sig_path = dir.join(SIGNATURE);
                let sig = std::fs::read(&sig_path).map_err(|source| ReleaseError::Unsigned {
                    path: sig_path.clone(),
                    source,
                })?;
                key.verify(&manifest_bytes, &sig)
                    .map_err(|_| ReleaseError::Signature {
                        path: manifest_path.clone(),
                        signature: sig_path,
                        fingerprint: key.fingerprint(),
                    })?;
                Some(key.fingerprint())
            }
        };
        let manifest =
            Manifest::from_json(&manifest_bytes).map_err(|message| ReleaseError::Manifest {
                path: manifest_path,
                message,
            })?;

        let uki_path = dir.join(UKI);
        let uki = read(&uki_path)?;
        let uki_name = uki_path.display().to_string();
        pinned(&uki_name, &uki, &manifest.uki.sha256, "manifest.json")?;
        let pe = images::pe::PeFile::parse(&uki).map_err(|e| ReleaseError::Content {
            path: uki_name.clone(),
            message: format!("not a UKI: {e}"),
        })?;
        let signed = pe
            .section(attest_wire::policy::SECTION)
            .and_then(|s| attest_wire::policy::SignedPolicy::parse(&pe.memory_data(s)).ok());
        let pcr_public_key = signed.as_ref().map(|p| {
            let mut point = vec![4u8];
            point.extend_from_slice(&p.key_x);
            point.extend_from_slice(&p.key_y);
            sha256_hex(&point)
        });
        let pcr11 = hex::decode(&manifest.pcrs.pcr11).unwrap_or_default();
        let pcr_signature = signed.is_some_and(|p| {
            <[u8; 32]>::try_from(pcr11.as_slice()).is_ok_and(|v| {
                p.pol == attest_wire::policy::policy_pcr(attest_wire::policy::POLICY_PCRS, &[v])
            })
        });
        let initrd = pe
            .section(".initrd")
            .map(|s| Zeroizing::new(pe.memory_data(s)))
            .ok_or_else(|| ReleaseError::Content {
                path: uki_name.clone(),
                message: "the UKI has no .initrd section".into(),
            })?;
        let initramfs = Initramfs::unpack(&uki_name, &initrd)?;

        let plan_name = format!("{uki_name}:{}", gateway_plan::PLAN_PATH);
        let plan_bytes = initramfs.file(&plan_name, gateway_plan::PLAN_PATH)?;
        pinned(
            &plan_name,
            plan_bytes,
            &manifest.plan.sha256,
            "manifest.json",
        )?;
        let plan = gateway_plan::Plan::decode(plan_bytes).map_err(|e| ReleaseError::Content {
            path: plan_name.clone(),
            message: format!("the plan does not decode: {e}"),
        })?;

        let policy_path = plan.policy_path.as_str();
        let policy_name = format!("{uki_name}:{policy_path}");
        let policy_bytes = Zeroizing::new(initramfs.file(&policy_name, policy_path)?.to_vec());
        drop(initramfs);
        pinned(
            &policy_name,
            &policy_bytes,
            &manifest.policy.sha256,
            "manifest.json",
        )?;
        pinned(
            &policy_name,
            &policy_bytes,
            &plan.policy_sha256.to_hex(),
            "the plan",
        )?;
        let policy =
            policy_blob::Policy::decode(&policy_bytes).map_err(|e| ReleaseError::Content {
                path: policy_name,
                message: format!("the policy blob does not decode: {e}"),
            })?;
        Ok(Build {
            dir: dir.to_path_buf(),
            manifest,
            signer,
            plan,
            policy,
            pcr_public_key,
            pcr_signature,
        })
    }
}

/// Checks that `bytes` hash to `expected` (lower-case hex).
fn pinned(
    path: &str,
    bytes: &[u8],
    expected: &str,
    pinned_by: &'static str,
) -> Result<(), ReleaseError> {
    let actual = sha256_hex(bytes);
    if actual == expected.to_ascii_lowercase() {
        Ok(())
    } else {
        Err(ReleaseError::Digest {
            path: path.to_string(),
            pinned_by,
            expected: expected.to_string(),
            actual,
        })
    }
}

/// The decompressed archives of an initramfs (wiped on drop).
struct Initramfs {
    archives: Vec<Zeroizing<Vec<u8>>>,
}

impl Initramfs {
    fn unpack(uki_name: &str, initrd: &[u8]) -> Result<Initramfs, ReleaseError> {
        let segments = images::initramfs::segments(initrd).map_err(|e| ReleaseError::Content {
            path: uki_name.to_string(),
            message: format!("its initramfs does not unpack: {e}"),
        })?;
        Ok(Initramfs {
            archives: segments
                .into_iter()
                .map(|s| Zeroizing::new(s.archive))
                .collect(),
        })
    }

    /// The regular file at `path` as the kernel leaves it: the last archive
    /// that holds the path decides.
    fn file(&self, name: &str, path: &str) -> Result<&[u8], ReleaseError> {
        let want = path.trim_start_matches('/');
        let mut found: Option<images::cpio::CpioRecord<'_>> = None;
        for a in &self.archives {
            let records = images::cpio::parse_newc(a).map_err(|e| ReleaseError::Content {
                path: name.to_string(),
                message: format!("an initramfs archive does not parse: {e}"),
            })?;
            for r in records {
                let n = r.name.strip_prefix(b"./").unwrap_or(r.name);
                let n = n.strip_prefix(b"/").unwrap_or(n);
                if n == want.as_bytes() {
                    found = Some(r);
                }
            }
        }
        match found {
            Some(r) if r.is_file() => Ok(r.data),
            Some(_) => Err(ReleaseError::Content {
                path: name.to_string(),
                message: "not a regular file in the initramfs".into(),
            }),
            None => Err(ReleaseError::Content {
                path: name.to_string(),
                message: "missing from the initramfs".into(),
            }),
        }
    }
}
