//! The fleet record of an enrolled device: `fleet/NAME/device.json` (what enrolment
//! proved: the EK, its certificate chain, the AK credential activation bound to it,
//! the identity key the AK certified) beside `ak.pub` (the AK's `TPM2B_PUBLIC`, as
//! `tpm2_checkquote -u` reads it), `ek-cert.der` and `identity.pem` (the identity key
//! as a PEM public key: what an IKE peer pins). Written atomically (temporary file,
//! then rename).

use std::path::{Path, PathBuf};

use attest_wire::tpms::{self, Public};
use serde::{Deserialize, Serialize};

/// The record's format.
pub const FORMAT: u32 = 1;
/// The record's file name.
pub const DEVICE: &str = "device.json";

/// A TPM clock reading from a good quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockRecord {
    /// TPM resets.
    pub reset_count: u32,
    /// Restarts since the last reset.
    pub restart_count: u32,
    /// Milliseconds.
    pub clock: u64,
}

impl From<&tpms::ClockInfo> for ClockRecord {
    fn from(c: &tpms::ClockInfo) -> Self {
        ClockRecord {
            reset_count: c.reset_count,
            restart_count: c.restart_count,
            clock: c.clock,
        }
    }
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// [`FORMAT`].
    pub format: u32,
    /// The name the administrator gave.
    pub name: String,
    /// Where it was enrolled (`host:port`).
    pub enrolled_at: String,
    /// The EK's `TPM2B_PUBLIC`, hex.
    pub ek_public: String,
    /// The EK certificate's subject chain, from the EK certificate to the anchor.
    pub ek_chain: Vec<String>,
    /// TPM manufacturer, model and version from the EK certificate.
    pub tpm: String,
    /// The AK's `TPM2B_PUBLIC`, hex.
    pub ak_public: String,
    /// The AK's name (`000b` ‖ SHA-256 of its public area), hex.
    pub ak_name: String,
    /// The last good quote's clock.
    pub last_clock: Option<ClockRecord>,
    /// The device identity key's public point (uncompressed, hex), certified by the
    /// AK at enrolment; absent when the gateway had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl Device {
    /// The AK's public area bytes (`TPM2B_PUBLIC`).
    pub fn ak_public_bytes(&self) -> Vec<u8> {
        hex::decode(&self.ak_public).unwrap_or_default()
    }

    /// The AK, parsed, its name checked against the record's.
    ///
    /// # Errors
    /// The record's AK does not parse or has another name.
    pub fn ak(&self) -> Result<Public, String> {
        let p = Public::parse_tpm2b(&self.ak_public_bytes())
            .map_err(|e| format!("the enrolled AK does not parse: {e}"))?;
        let name = p.name().map_err(|e| e.to_string())?;
        if hex::encode(name) != self.ak_name {
            return Err("the enrolled AK's name does not match its public area".into());
        }
        Ok(p)
    }

    /// Loads `dir/device.json`.
    ///
    /// # Errors
    /// A missing or malformed record, in words.
    pub fn load(dir: &Path) -> Result<Device, String> {
        let p = dir.join(DEVICE);
        let b = std::fs::read(&p).map_err(|e| {
            format!(
                "{}: {e} (enrol the device first: `appliance enroll HOST --ek-ca CA.pem --out {}`)",
                p.display(),
                dir.display()
            )
        })?;
        let d: Device = serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display()))?;
        if d.format != FORMAT {
            return Err(format!(
                "{}: format {} (expected {FORMAT})",
                p.display(),
                d.format
            ));
        }
        Ok(d)
    }

    /// Writes `dir/device.json` (and `ak.pub`) atomically, creating `dir`.
    ///
    /// # Errors
    /// The directory or a file cannot be written.
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        json.push(b'\n');
        write_atomic(&dir.join(DEVICE), &json)?;
        write_atomic(&dir.join("ak.pub"), &self.ak_public_bytes())?;
        if let Some(point) = self.identity_point() {
            write_atomic(
                &dir.join("identity.pem"),
                crate::identity::spki_pem(&point).as_bytes(),
            )?;
        }
        Ok(())
    }

    /// The enrolled identity point.
    pub fn identity_point(&self) -> Option<[u8; 65]> {
        let b = hex::decode(self.identity.as_deref()?).ok()?;
        b.try_into().ok()
    }
}

/// Writes `path` through a temporary file in the same directory and a rename.
///
/// # Errors
/// Writing, syncing or renaming fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|f| f.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    r.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}
