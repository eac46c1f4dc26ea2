//! Stage 1, resolve the profile: load and validate it, compile its policy
//! blob, and read the static gateway binaries (checked before any slow work).

use std::path::Path;

use profiles::Profile;
use sha2::{Digest, Sha256};

use super::sha256;
use crate::{elf, BuildError, BuildOptions};

/// The static gateway binaries an image carries.
pub(crate) struct Binaries {
    /// The init (PID 1).
    pub init: Vec<u8>,
    /// The Viaduct.
    pub viaduct: Vec<u8>,
    /// The IKE process: only in images whose policy keys tunnels by IKE.
    pub ike: Option<Vec<u8>>,
}

/// A loaded profile and what is derived from it alone.
pub(crate) struct Resolved {
    /// The validated profile.
    pub profile: Profile,
    /// Its compiled policy.
    pub policy: policy_blob::Policy,
    /// The policy blob's bytes.
    pub policy_bytes: Vec<u8>,
    /// Their SHA-256.
    pub policy_digest: [u8; 32],
    /// The gateway binaries.
    pub binaries: Binaries,
    /// The release key built into the image (its plan's `update` line): the
    /// public half of the build's signing key, or the profile's
    /// `[signing] public_key`. `None`: the image accepts no updates.
    pub release_key: Option<[u8; 32]>,
}

/// Loads `opts.profile`, compiles the policy and reads the binaries from
/// `opts.bin_dir`.
pub(crate) fn resolve(opts: &BuildOptions) -> Result<Resolved, BuildError> {
    let profile = profiles::load_profile(&opts.profile)?;
    let release_key = release_key(opts, &profile)?;
    let policy = policy::compile(&profile)?;
    // The Viaduct reads learned routes from an FPM socket the init makes in
    // black's network namespace; a VM's routing daemon has no way to it yet.
    // Refused rather than built to learn nothing.
    if policy.learn.is_some() && profile.appliance.runtime == profiles::Runtime::Microvm {
        return Err(BuildError::NotYet {
            location: profiles::find_in_sources(&profile, "learned_routes")
                .map(|(f, l, c)| format!("{}:{l}:{c}: ", f.display()))
                .unwrap_or_default(),
            field: "viaduct.learned_routes",
            message: "runtime `microvm` cannot learn routes yet: black's routing daemon, in its VM, has no way to the Viaduct's FPM socket; use runtime `compartment`, or static routes",
        });
    }
    let policy_bytes = policy.encode();
    let policy_digest = sha256(&policy_bytes);
    // Gateway binaries: checked before any slow work.
    let init = read_static_binary(&opts.bin_dir.join("gateway-init"))?;
    let viaduct = read_static_binary(&opts.bin_dir.join("viaduct"))?;
    // The IKE process only in images whose policy keys tunnels by IKE.
    let ike = match policy.ike {
        Some(_) => Some(read_static_binary(&opts.bin_dir.join("viaduct-ike"))?),
        None => None,
    };
    Ok(Resolved {
        profile,
        policy,
        policy_bytes,
        policy_digest,
        binaries: Binaries { init, viaduct, ike },
        release_key,
    })
}

/// The release key: `[signing] public_key`, else `--key`'s public half.
fn release_key(opts: &BuildOptions, profile: &Profile) -> Result<Option<[u8; 32]>, BuildError> {
    let from_key = opts.signing_key.as_ref().map(|k| k.public_key());
    let from_profile = match profile.signing.as_ref().and_then(|s| s.public_key.as_ref()) {
        Some(path) => {
            let pem = std::fs::read(path).map_err(BuildError::io("reading", path))?;
            let what = format!("signing.public_key ({})", path.display());
            Some(
                signing::PublicKey::from_pem(&pem, &what)
                    .map_err(|e| BuildError::Plan(e.to_string()))?,
            )
        }
        None => None,
    };
    // `[signing] public_key` names the key the image accepts updates from;
    // it may differ from the key signing this build (a key rotation: the
    // build summary says so).
    Ok(from_profile.or(from_key).map(|k| *k.raw()))
}

/// SHA-256 over the SHA-256 of each source file of the profile, in order
/// (the profile first, then its bases): independent of where the files are.
pub(crate) fn profile_digest(p: &Profile) -> Result<[u8; 32], BuildError> {
    let mut h = Sha256::new();
    for f in &p.files {
        let bytes = std::fs::read(f).map_err(BuildError::io("reading", f))?;
        h.update(sha256(&bytes));
    }
    Ok(h.finalize().into())
}

/// A gateway binary (all are required), checked to be static.
fn read_static_binary(path: &Path) -> Result<Vec<u8>, BuildError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return Err(BuildError::Binary(format!(
                "{}: {e}; build the gateway binaries first: scripts/build-gateway-bins (or set --bin-dir)",
                path.display()
            )))
        }
    };
    elf::check_static(&bytes).map_err(|why| {
        BuildError::Binary(format!(
            "{name} ({}) cannot run on the gateway: {why}; build it with scripts/build-gateway-bins (static)",
            path.display()
        ))
    })?;
    Ok(bytes)
}
