//! PCR prediction for a UKI booted by UEFI firmware (OVMF/edk2) with a TPM 2.0,
//! SHA-256 bank. What each PCR holds and why is written down in
//! `docs/measured-boot.md`; in short:
//!
//! * **PCR 4** (boot path): `EV_EFI_ACTION` "Calling EFI Application from Boot
//!   Option", `EV_SEPARATOR` (firmware → OS boundary, 4 zero bytes), then
//!   `EV_EFI_BOOT_SERVICES_APPLICATION` with the Authenticode digest of every
//!   image started through `LoadImage`: the UKI, then (Secure Boot off only)
//!   the kernel that systemd-stub 252 starts from the `.linux` section. With
//!   Secure Boot on the stub installs its own security override for the
//!   embedded kernel (already covered by the UKI's signature), which also
//!   bypasses the firmware's measurement of it.
//! * **PCR 7** (Secure Boot policy): `EV_EFI_VARIABLE_DRIVER_CONFIG` for
//!   `SecureBoot`, `PK`, `KEK`, `db`, `dbx` (each a `UEFI_VARIABLE_DATA`
//!   structure), `EV_SEPARATOR`, and with Secure Boot on one
//!   `EV_EFI_VARIABLE_AUTHORITY` naming the `db` entry that verified the UKI.
//! * **PCR 11** (UKI contents): systemd-stub's `EV_IPL` pairs (section name,
//!   section contents) for the measured sections in its order.
//! * **PCR 12** (kernel command line), when systemd-boot starts the UKI:
//!   systemd-boot 252 passes the UKI's own `.cmdline` as load options and
//!   measures them (`EV_IPL`, the UTF-16 string with its terminating NUL);
//!   with Secure Boot off systemd-stub takes those load options as the
//!   command line and measures them again, with Secure Boot on it ignores
//!   them (the signed `.cmdline` is used) and measures nothing here.
//!
//! With systemd-boot as the firmware's boot application, PCR 4 holds its
//! Authenticode digest before the UKI's: systemd-boot starts the UKI with
//! `LoadImage` (no shim, so no security override), and the firmware
//! measures it like any image.
//!
//! The prediction assumes the appliance's boot entry is the first one the
//! firmware starts (the disk is the first boot device). A boot entry that
//! returns before ours adds a "Returning from EFI Application" action to PCR 4.

use secureboot::guid::{EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};
use secureboot::varstore::{uefi_variable_data, EnrolledVariables};
use secureboot::Guid;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::eventlog::{
    event_type_name, extend, EV_EFI_ACTION, EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_VARIABLE_AUTHORITY, EV_EFI_VARIABLE_DRIVER_CONFIG, EV_IPL, EV_SEPARATOR,
};

/// The action string OVMF logs before starting a boot option.
pub const CALLING_BOOT_OPTION: &str = "Calling EFI Application from Boot Option";

/// One predicted event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictedEvent {
    /// Event type name (TCG spelling).
    pub event_type: String,
    /// What it is.
    pub description: String,
    /// SHA-256 digest extended.
    pub sha256: String,
}

/// A predicted PCR: its events and final value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictedPcr {
    /// PCR index.
    pub pcr: u32,
    /// Condition (e.g. "secure boot off").
    pub condition: String,
    /// Events in order.
    pub events: Vec<PredictedEvent>,
    /// Final value (hex).
    pub sha256: String,
}

impl PredictedPcr {
    fn new(pcr: u32, condition: &str, events: Vec<(u32, String, [u8; 32])>) -> Self {
        let mut v = [0u8; 32];
        let events = events
            .into_iter()
            .map(|(t, description, d)| {
                v = extend(&v, &d);
                PredictedEvent {
                    event_type: event_type_name(t),
                    description,
                    sha256: hex::encode(d),
                }
            })
            .collect();
        PredictedPcr {
            pcr,
            condition: condition.to_string(),
            events,
            sha256: hex::encode(v),
        }
    }
}

/// All predictions for one UKI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prediction {
    /// The assumptions this prediction rests on.
    pub platform: String,
    /// PCR 4, Secure Boot off.
    pub pcr4: PredictedPcr,
    /// PCR 4, Secure Boot on (signed UKIs): systemd-stub then starts the
    /// kernel past the firmware's security protocol, so only the UKI is measured.
    pub pcr4_secure_boot_on: Option<PredictedPcr>,
    /// PCR 7, Secure Boot off.
    pub pcr7_secure_boot_off: PredictedPcr,
    /// PCR 7, Secure Boot on with our certificate (when the UKI is signed).
    pub pcr7_secure_boot_on: Option<PredictedPcr>,
    /// PCR 11.
    pub pcr11: PredictedPcr,
    /// PCR 12, Secure Boot off.
    pub pcr12: PredictedPcr,
    /// PCR 12, Secure Boot on (signed UKIs).
    pub pcr12_secure_boot_on: Option<PredictedPcr>,
}

/// What the platform is assumed to be.
pub const PLATFORM: &str = "UEFI firmware (edk2/OVMF) with TPM 2.0, SHA-256 bank; the appliance disk is the first boot entry; systemd-boot and systemd-stub 252 (Debian 12)";

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// The UKI does not parse.
    #[error("UKI: {0}")]
    Uki(#[from] images::Error),
    /// The UKI has no `.linux` section.
    #[error("UKI has no .linux section")]
    NoLinux,
}

/// The command line systemd-boot 252 passes for a UKI: its `.cmdline`
/// with control characters turned into spaces and trailing spaces removed
/// (`mangle_stub_cmdline`), as the UTF-16 string it measures, NUL included.
pub fn boot_loader_options(cmdline: &[u8]) -> Vec<u8> {
    let text: String = String::from_utf8_lossy(cmdline)
        .trim_end_matches('\0')
        .chars()
        .map(|c| if (c as u32) < 0x20 { ' ' } else { c })
        .collect();
    let text = text.trim_end_matches(' ');
    let mut out: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    out.extend_from_slice(&[0, 0]);
    out
}

/// Predict PCRs 4, 7, 11 and 12 for booting `uki`, started by `boot_loader`
/// (systemd-boot) when given, else by the firmware directly. `secure_boot`
/// gives the enrolled variables for the Secure Boot-on prediction (signed
/// UKIs).
pub fn predict(
    uki: &[u8],
    boot_loader: Option<&[u8]>,
    secure_boot: Option<&EnrolledVariables>,
) -> Result<Prediction, MeasureError> {
    let pe = images::pe::PeFile::parse(uki)?;
    let uki_auth = images::pe::authenticode_sha256(uki)?;
    let linux = pe.section(".linux").ok_or(MeasureError::NoLinux)?;
    let kernel = pe.memory_data(linux);
    let kernel_auth = images::pe::authenticode_sha256(&kernel)?;
    let separator = sha256(&[0, 0, 0, 0]);

    let mut boot_path = vec![
        (
            EV_EFI_ACTION,
            CALLING_BOOT_OPTION.to_string(),
            sha256(CALLING_BOOT_OPTION.as_bytes()),
        ),
        (EV_SEPARATOR, "separator".into(), separator),
    ];
    if let Some(loader) = boot_loader {
        boot_path.push((
            EV_EFI_BOOT_SERVICES_APPLICATION,
            "systemd-boot (Authenticode digest)".into(),
            images::pe::authenticode_sha256(loader)?,
        ));
    }
    boot_path.push((
        EV_EFI_BOOT_SERVICES_APPLICATION,
        "UKI (Authenticode digest)".into(),
        uki_auth,
    ));
    let pcr4_secure_boot_on =
        secure_boot.map(|_| PredictedPcr::new(4, "secure boot on", boot_path.clone()));
    boot_path.push((
        EV_EFI_BOOT_SERVICES_APPLICATION,
        "kernel from the UKI's .linux section, started by systemd-stub (Authenticode digest)"
            .into(),
        kernel_auth,
    ));
    let pcr4 = PredictedPcr::new(4, "secure boot off", boot_path);

    let pcr7 = |on: Option<&EnrolledVariables>| {
        let empty = Vec::new();
        let (sb, pk, kek, db, dbx) = match on {
            Some(v) => (1u8, &v.pk, &v.kek, &v.db, &v.dbx),
            None => (0u8, &empty, &empty, &empty, &empty),
        };
        let var = |name: &str, guid: Guid, data: &[u8]| {
            (
                EV_EFI_VARIABLE_DRIVER_CONFIG,
                format!("{name} ({} bytes)", data.len()),
                sha256(&uefi_variable_data(name, guid, data)),
            )
        };
        let mut events = vec![
            var("SecureBoot", EFI_GLOBAL_VARIABLE, &[sb]),
            var("PK", EFI_GLOBAL_VARIABLE, pk),
            var("KEK", EFI_GLOBAL_VARIABLE, kek),
            var("db", EFI_IMAGE_SECURITY_DATABASE, db),
            var("dbx", EFI_IMAGE_SECURITY_DATABASE, dbx),
            (EV_SEPARATOR, "separator".into(), separator),
        ];
        if let Some(v) = on {
            events.push((
                EV_EFI_VARIABLE_AUTHORITY,
                "db entry that verified the UKI".into(),
                sha256(&uefi_variable_data(
                    "db",
                    EFI_IMAGE_SECURITY_DATABASE,
                    &v.authority,
                )),
            ));
        }
        PredictedPcr::new(
            7,
            if on.is_some() {
                "secure boot on"
            } else {
                "secure boot off"
            },
            events,
        )
    };

    let pcr11 = PredictedPcr::new(
        11,
        "any",
        images::pe::pcr11_measurements(&pe, images::pe::StubGeneration::Systemd252)
            .into_iter()
            .flat_map(|m| {
                [
                    (EV_IPL, format!("{} (name)", m.name), m.name_digest),
                    (EV_IPL, format!("{} (contents)", m.name), m.data_digest),
                ]
            })
            .collect(),
    );
    let mut cmdline_events = Vec::new();
    if boot_loader.is_some() {
        let cmdline = pe
            .section(".cmdline")
            .map(|s| pe.memory_data(s))
            .unwrap_or_default();
        let options = boot_loader_options(&cmdline);
        cmdline_events.push((
            EV_IPL,
            "command line passed by systemd-boot (the UKI's .cmdline, UTF-16)".into(),
            sha256(&options),
        ));
    }
    let pcr12_secure_boot_on =
        secure_boot.map(|_| PredictedPcr::new(12, "secure boot on", cmdline_events.clone()));
    if let Some(first) = cmdline_events.first().cloned() {
        cmdline_events.push((
            EV_IPL,
            "the same command line, taken and measured by systemd-stub (Secure Boot off)".into(),
            first.2,
        ));
    }
    let pcr12 = PredictedPcr::new(12, "secure boot off", cmdline_events);
    Ok(Prediction {
        platform: PLATFORM.to_string(),
        pcr4,
        pcr4_secure_boot_on,
        pcr7_secure_boot_off: pcr7(None),
        pcr7_secure_boot_on: secure_boot.map(|v| pcr7(Some(v))),
        pcr11,
        pcr12,
        pcr12_secure_boot_on,
    })
}

impl Prediction {
    /// The summary stored in the manifest.
    pub fn summary(&self) -> crate::manifest::PcrSummary {
        crate::manifest::PcrSummary {
            pcr4: self.pcr4.sha256.clone(),
            pcr4_secure_boot_on: self.pcr4_secure_boot_on.as_ref().map(|p| p.sha256.clone()),
            pcr7_secure_boot_off: self.pcr7_secure_boot_off.sha256.clone(),
            pcr7_secure_boot_on: self.pcr7_secure_boot_on.as_ref().map(|p| p.sha256.clone()),
            pcr11: self.pcr11.sha256.clone(),
            pcr12: self.pcr12.sha256.clone(),
            pcr12_secure_boot_on: self.pcr12_secure_boot_on.as_ref().map(|p| p.sha256.clone()),
        }
    }
}

/// The reference-values file (`reference-values.json`) for attestation: the
/// image's identity and the PCR values a verifier accepts, with the events
/// that make them up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceValues {
    /// Format version (1).
    pub format: u32,
    /// Appliance name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Anti-rollback counter: a verifier refuses lower values.
    pub security_version: u64,
    /// Authenticode digest of the UKI.
    pub uki_authenticode_sha256: String,
    /// Hash bank of the values.
    pub bank: String,
    /// The accepted PCR sets: one per Secure Boot state. PCR 12 is its value once
    /// the init has measured [`ReferenceValues::runtime`] on top of the firmware's events.
    pub accepted: Vec<AcceptedPcrs>,
    /// The full prediction of the firmware's and boot loader's events.
    pub prediction: Prediction,
    /// The events the gateway init extends before it starts anything (PCR 12: the
    /// plan's digest, then the compiled policy's), in order.
    pub runtime: Vec<RuntimeEvent>,
}

/// One event the init extends (its digest is SHA-256 of `text`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeEvent {
    /// The PCR.
    pub pcr: u32,
    /// The event text.
    pub text: String,
    /// SHA-256 of the text (the digest extended).
    pub sha256: String,
}

impl RuntimeEvent {
    /// An event for `text` in `pcr`.
    pub fn new(pcr: u32, text: &str) -> Self {
        RuntimeEvent {
            pcr,
            text: text.into(),
            sha256: hex::encode(sha256(text.as_bytes())),
        }
    }
}

/// The reference-values format this build writes.
pub const REFERENCE_FORMAT: u32 = 2;

/// One acceptable set of PCR values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedPcrs {
    /// Condition.
    pub condition: String,
    /// PCR index → hex value.
    pub pcrs: std::collections::BTreeMap<u32, String>,
}

impl ReferenceValues {
    /// Build from a prediction.
    pub fn new(
        name: &str,
        version: &str,
        security_version: u64,
        uki_authenticode: &str,
        p: &Prediction,
        runtime: Vec<RuntimeEvent>,
    ) -> Self {
        let after_runtime = |p12: &PredictedPcr| {
            let mut v = [0u8; 32];
            if hex::decode_to_slice(&p12.sha256, &mut v).is_err() {
                v = [0; 32];
            }
            for e in runtime.iter().filter(|e| e.pcr == 12) {
                v = extend(&v, &sha256(e.text.as_bytes()));
            }
            hex::encode(v)
        };
        let set =
            |cond: &str, p4: &PredictedPcr, p7: &PredictedPcr, p12: &PredictedPcr| AcceptedPcrs {
                condition: cond.into(),
                pcrs: [
                    (4, p4.sha256.clone()),
                    (7, p7.sha256.clone()),
                    (11, p.pcr11.sha256.clone()),
                    (12, after_runtime(p12)),
                ]
                .into_iter()
                .collect(),
            };
        let mut accepted = vec![set(
            "secure boot off",
            &p.pcr4,
            &p.pcr7_secure_boot_off,
            &p.pcr12,
        )];
        if let (Some(p4), Some(p7), Some(p12)) = (
            &p.pcr4_secure_boot_on,
            &p.pcr7_secure_boot_on,
            &p.pcr12_secure_boot_on,
        ) {
            accepted.push(set("secure boot on", p4, p7, p12));
        }
        ReferenceValues {
            format: REFERENCE_FORMAT,
            name: name.into(),
            version: version.into(),
            security_version,
            uki_authenticode_sha256: uki_authenticode.into(),
            bank: "sha256".into(),
            accepted,
            prediction: p.clone(),
            runtime,
        }
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("reference values serialise");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_boot_off_matches_ovmf_log() {
        // Digests of the first PCR 7 events in testdata/ovmf-swtpm-sb-off.bin
        // (also shown by `tpm2_eventlog`).
        assert_eq!(
            hex::encode(sha256(&uefi_variable_data(
                "SecureBoot",
                EFI_GLOBAL_VARIABLE,
                &[0]
            ))),
            "115aa827dbccfb44d216ad9ecfda56bdea620b860a94bed5b7a27bba1c4d02d8"
        );
        assert_eq!(
            hex::encode(sha256(&uefi_variable_data("PK", EFI_GLOBAL_VARIABLE, &[]))),
            "dea7b80ab53a3daaa24d5cc46c64e1fa9ffd03739f90aadbd8c0867c4a5b4890"
        );
        assert_eq!(
            hex::encode(sha256(CALLING_BOOT_OPTION.as_bytes())),
            "3d6772b4f84ed47595d72a2c4c5ffd15f5bb72c7507fe26f2aaee2c69d5633ba"
        );
    }
}
