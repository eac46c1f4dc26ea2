//! Signed reference values: `reference-values.json` of a build, trusted only through
//! the build's signed manifest beside it (`manifest.json`, `manifest.sig`), which
//! names the file's SHA-256 among its outputs and the plan's and policy's digests.

use std::path::Path;

use sha2::{Digest, Sha256};
use signing::measure::{ReferenceValues, REFERENCE_FORMAT};
use signing::{Manifest, PublicKey};

/// Reference values whose signature was checked.
#[derive(Debug, Clone)]
pub struct Reference {
    /// The values.
    pub values: ReferenceValues,
    /// The signer's fingerprint.
    pub signer: String,
    /// The compiled policy's SHA-256 (hex), from the signed manifest.
    pub policy_sha256: String,
    /// The plan's SHA-256 (hex), from the signed manifest.
    pub plan_sha256: String,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Loads `path` and checks it against the signed manifest in the same directory.
///
/// # Errors
/// Every failure, in words: a missing file, a signature that does not verify with
/// `key`, a reference file the manifest does not name or names with another digest, a
/// reference format this verifier does not know.
pub fn load(path: &Path, key: &PublicKey) -> Result<Reference, String> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let bytes = read(path)?;
    let manifest_path = dir.join(signing::verify::MANIFEST);
    let manifest_bytes = read(&manifest_path)?;
    let sig = read(&dir.join(signing::verify::SIGNATURE))?;
    key.verify(&manifest_bytes, &sig).map_err(|_| {
        format!(
            "{}: the signature does not verify with {} (signed by another key, or altered)",
            manifest_path.display(),
            key.fingerprint()
        )
    })?;
    let manifest = Manifest::from_json(&manifest_bytes)
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default()
        .to_owned();
    let want = manifest.outputs.get(&file).ok_or_else(|| {
        format!(
            "{}: the signed manifest names no output {file:?}",
            manifest_path.display()
        )
    })?;
    let got = hex::encode(Sha256::digest(&bytes));
    if *want != got {
        return Err(format!(
            "{}: SHA-256 {got}, the signed manifest says {want}",
            path.display()
        ));
    }
    let values: ReferenceValues =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if values.format != REFERENCE_FORMAT {
        return Err(format!(
            "{}: reference format {} (this verifier reads {REFERENCE_FORMAT}; rebuild the image)",
            path.display(),
            values.format
        ));
    }
    Ok(Reference {
        values,
        signer: key.fingerprint(),
        policy_sha256: manifest.policy.sha256.clone(),
        plan_sha256: manifest.plan.sha256.clone(),
    })
}
