//! Stage 8, the manifest: the PCR values the image will measure (predicted
//! from the UKI and, with Secure Boot, the enrolled variables), the
//! reference values a verifier checks a quote against, the manifest that
//! names every input and output by digest, and its signature.

use std::collections::BTreeMap;

use super::commit::Staging;
use super::disk::{disk_guid, Written};
use super::fetch::Fetched;
use super::parts::Kernel;
use super::profile::{profile_digest, Resolved};
use super::render::Rendered;
use super::uki::Uki;
use super::{hexd, sha256};
use crate::manifest::{self, Manifest};
use crate::{BuildError, BuildOptions};

/// What the earlier stages produced, as the manifest names it.
pub(crate) struct Inputs<'a> {
    /// The profile, policy and binaries.
    pub input: &'a Resolved,
    /// The lock.
    pub fetched: &'a Fetched,
    /// The kernel part and its package.
    pub kernel: &'a Kernel,
    /// The plan.
    pub rendered: &'a Rendered,
    /// The initramfs's digest and size.
    pub initramfs: manifest::Digested,
    /// The UKI.
    pub uki: &'a Uki,
}

/// Writes the reference values, `manifest.json` and (with a signing key)
/// `manifest.sig` into `staging`; returns the manifest.
pub(crate) fn write(
    opts: &BuildOptions,
    i: Inputs<'_>,
    mut written: Written,
    staging: &Staging,
) -> Result<Manifest, BuildError> {
    let Inputs {
        input,
        fetched,
        kernel,
        rendered,
        initramfs,
        uki,
    } = i;
    let profile = &input.profile;
    let lock = fetched.lock();
    let prediction = signing::measure::predict(
        &uki.bytes,
        Some(&uki.boot_loader.bytes),
        opts.secure_boot.as_ref().map(|s| s.variables()).as_ref(),
    )
    .map_err(|e| BuildError::Binary(format!("PCR prediction: {e}")))?;
    let reference = signing::measure::ReferenceValues::new(
        &profile.appliance.name,
        &profile.appliance.version,
        profile.appliance.security_version,
        &hexd(&uki.authenticode),
        &prediction,
        attest_wire::runtime::boot_events(
            &rendered.plan_digest.to_hex(),
            &hexd(&input.policy_digest),
        )
        .iter()
        .map(|e| signing::measure::RuntimeEvent::new(u32::from(e.pcr), &e.text))
        .collect(),
    )
    .to_json();
    staging.write(signing::verify::REFERENCE_VALUES, &reference)?;
    written.outputs.insert(
        signing::verify::REFERENCE_VALUES.to_string(),
        hexd(&sha256(&reference)),
    );
    let b = &input.binaries;
    let manifest = Manifest {
        format: manifest::FORMAT,
        profile: manifest::ProfileInfo {
            name: profile.appliance.name.clone(),
            version: profile.appliance.version.clone(),
            security_version: profile.appliance.security_version,
            lab: profile.appliance.lab,
            sha256: hexd(&profile_digest(profile)?),
        },
        lock: manifest::LockInfo {
            sha256: lock.digest().to_hex(),
            source_date_epoch: lock.source_date_epoch.0,
        },
        policy: manifest::Digested {
            sha256: hexd(&input.policy_digest),
            size: input.policy_bytes.len() as u64,
        },
        plan: manifest::Digested {
            sha256: rendered.plan_digest.to_hex(),
            size: rendered.plan_bytes.len() as u64,
        },
        components: lock
            .groups
            .iter()
            .flat_map(|g| {
                g.packages
                    .iter()
                    .filter_map(|n| lock.package(n.as_str()))
                    .map(|p| manifest::Component {
                        group: g.name.clone(),
                        name: p.name.as_str().to_string(),
                        version: p.version.to_string(),
                        architecture: p.architecture.clone(),
                        sha256: p.sha256.to_hex(),
                    })
            })
            .collect(),
        kernel: manifest::KernelInfo {
            version: kernel.part.version.clone(),
            package: kernel.package.name.as_str().to_string(),
            image_sha256: hexd(&uki.kernel_sha256),
            modules: kernel.part.modules.clone(),
        },
        binaries: {
            let mut m = BTreeMap::new();
            m.insert("gateway-init".to_string(), hexd(&sha256(&b.init)));
            m.insert("viaduct".to_string(), hexd(&sha256(&b.viaduct)));
            if let Some(ike) = &b.ike {
                m.insert("viaduct-ike".to_string(), hexd(&sha256(ike)));
            }
            m
        },
        initramfs,
        uki: manifest::UkiInfo {
            sha256: hexd(&uki.sha256),
            authenticode_sha256: hexd(&uki.authenticode),
            size: uki.bytes.len() as u64,
            cmdline: uki.cmdline.clone(),
            sections: uki.sections.clone(),
        },
        boot_loader: Some(manifest::BootLoaderInfo {
            package: uki.boot_loader.package.clone(),
            path: images::ab::DEFAULT_BOOT_PATH.to_string(),
            sha256: hexd(&uki.boot_loader.sha256),
            authenticode_sha256: hexd(&uki.boot_loader.authenticode),
            uki_path: format!(
                "{}/{}",
                images::ab::LINUX_DIR,
                images::ab::uki_file_name(
                    &profile.appliance.name,
                    &profile.appliance.version,
                    None
                )
            ),
        }),
        esp: written.disk.esp,
        disk: manifest::DiskInfo {
            sha256: hexd(&written.disk.sha256),
            size: profile.image.size.0,
            guid: disk_guid(&written.layout),
            partitions: written.disk.partitions,
        },
        build_epoch: lock.source_date_epoch.0,
        pcrs: prediction.summary(),
        secure_boot: opts.secure_boot.as_ref().map(|s| s.signer()),
        outputs: written.outputs,
    };
    let json = manifest.to_json();
    staging.write(signing::verify::MANIFEST, &json)?;
    if let Some(key) = &opts.signing_key {
        staging.write(signing::verify::SIGNATURE, &key.sign(&json))?;
    }
    Ok(manifest)
}
