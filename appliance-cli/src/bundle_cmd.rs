//! `appliance bundle`: a signed build as one update bundle (the
//! `update-bundle` format: manifest.json, manifest.sig, uki.efi).
//!
//! Nothing is written unless `appliance verify` passes on the output
//! directory, and the bundle made is checked as a gateway will check it
//! (signature, manifest, UKI digest) before it is written, atomically. A
//! bundle holds no timestamps: the same build gives the same bytes.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use sha2::{Digest, Sha256};
use signing::keys::PublicKey;
use signing::verify::{Check, MANIFEST, SIGNATURE};
use update_bundle::{BundleError, Header, UkiCheck};

use crate::fsutil::write_atomic;
use crate::sign_cmd::read_public_key;
use crate::Outcome;

/// The UKI's file name in an output directory.
const UKI: &str = release::build::UKI;

#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// Output directory of `appliance build`, signed (manifest.sig).
    outdir: PathBuf,
    /// Public key (NAME.pub) the manifest must be signed with: the release
    /// key built into the gateways' running image. Without it the signature
    /// is left to the gateways (the UKI is still checked against the
    /// manifest).
    #[arg(long)]
    pubkey: Option<PathBuf>,
    /// The bundle to write (replaced atomically).
    #[arg(short, long, value_name = "NAME.bundle")]
    output: PathBuf,
}

/// A check of `appliance verify`, in a few words.
fn describe(c: &Check) -> String {
    let short = |s: &str| {
        if s.len() > 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            format!("{}…", &s[..16])
        } else {
            s.to_string()
        }
    };
    match (&c.expected, &c.actual) {
        (Some(e), Some(a)) => format!("{} (manifest {}, found {})", c.name, short(e), short(a)),
        _ if c.detail.is_empty() => c.name.clone(),
        _ => format!("{} ({})", c.name, c.detail),
    }
}

pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// A bundle's header, and the UKI after it: exactly as many bytes as the
/// header announces.
pub(crate) fn split_bundle(bytes: &[u8]) -> Result<(Header, &[u8]), String> {
    let mut rest = bytes;
    let h = Header::read(&mut rest).map_err(|e| e.to_string())?;
    if rest.len() as u64 != h.uki_len {
        return Err(format!(
            "the header announces a UKI of {} bytes, but {} bytes follow it (a cut or extended file)",
            h.uki_len,
            rest.len()
        ));
    }
    Ok((h, rest))
}

/// Without a key: the UKI against the (unverified) manifest.
fn unchecked_release(m: &signing::Manifest, uki: &[u8]) -> anyhow::Result<update_bundle::Release> {
    let digest: [u8; 32] = Sha256::digest(uki).into();
    let sha = hex::encode(digest);
    if sha != m.uki.sha256 || uki.len() as u64 != m.uki.size {
        bail!(
            "uki.efi sha256 {sha} differs from the manifest's {}",
            m.uki.sha256
        );
    }
    Ok(update_bundle::Release {
        name: m.profile.name.clone(),
        version: m.profile.version.clone(),
        security_version: m.profile.security_version,
        lab: m.profile.lab,
        uki_sha256: digest,
        uki_size: uki.len() as u64,
    })
}

/// What a gateway with `key` checks: the signature, the manifest, the UKI.
pub(crate) fn check_bundle(
    h: &Header,
    uki: &[u8],
    key: &PublicKey,
) -> Result<update_bundle::Release, BundleError> {
    let release = update_bundle::verify(h, key.raw())?;
    let mut check = UkiCheck::new();
    check.update(uki);
    check.finish(&release)?;
    Ok(release)
}

/// `appliance verify`'s checks with `key`; every failure listed.
fn verified(dir: &Path, key: &PublicKey, pubkey: &Path) -> anyhow::Result<()> {
    let report = signing::verify::verify(dir, key)?;
    if !report.ok() {
        let failed: Vec<String> = report.failures().map(describe).collect();
        bail!(
            "{}: not bundled: {} of {} checks against the signed manifest failed: {}; `appliance verify {} --pubkey {}` shows every check",
            dir.display(),
            failed.len(),
            report.checks.len(),
            failed.join("; "),
            dir.display(),
            pubkey.display()
        );
    }
    Ok(())
}

pub fn bundle(args: BundleArgs, json: bool) -> anyhow::Result<Outcome> {
    let key = args.pubkey.as_deref().map(read_public_key).transpose()?;
    let dir = &args.outdir;
    if !dir.is_dir() {
        bail!(
            "{}: not an output directory of `appliance build`",
            dir.display()
        );
    }
    let sig_path = dir.join(SIGNATURE);
    if std::fs::symlink_metadata(&sig_path).is_err() {
        bail!(
            "{}: missing: the build is not signed; sign it with `appliance sign {} --key NAME.key` (the release key whose NAME.pub the gateways carry), then bundle it",
            sig_path.display(),
            dir.display()
        );
    }
    if let Some((key, path)) = key.as_ref().zip(args.pubkey.as_ref()) {
        verified(dir, key, path)?;
    }
    let manifest_path = dir.join(MANIFEST);
    let manifest = read(&manifest_path)?;
    let parsed = signing::Manifest::from_json(&manifest)
        .map_err(|e| anyhow!("{}: {e}", manifest_path.display()))?;
    if !parsed.outputs.contains_key(UKI) {
        bail!(
            "{}: outputs names no {UKI}: not a build of `appliance build` with A/B updates",
            manifest_path.display()
        );
    }
    let sig = read(&sig_path)?;
    let signature: [u8; update_bundle::SIGNATURE_LEN] =
        sig.as_slice().try_into().map_err(|_| {
            anyhow!(
                "{}: {} bytes; an Ed25519 signature has {}",
                sig_path.display(),
                sig.len(),
                update_bundle::SIGNATURE_LEN
            )
        })?;
    let uki_path = dir.join(UKI);
    let uki = read(&uki_path)?;
    let bytes = update_bundle::encode(&manifest, &signature, &uki)
        .map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    // What a gateway will check, on what was read (the files could have
    // changed since `verify` read them).
    let release = split_bundle(&bytes)
        .map_err(|e| anyhow!(e))
        .and_then(|(h, rest)| match &key {
            Some(key) => check_bundle(&h, rest, key).map_err(anyhow::Error::from),
            None => unchecked_release(&parsed, rest),
        })
        .map_err(|e| {
            anyhow!(
                "{}: not bundled: the bundle made from it fails a gateway's checks: {e} (did the directory change while it was read?)",
                dir.display()
            )
        })?;
    write_atomic(&args.output, &bytes)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let fingerprint = key.as_ref().map(PublicKey::fingerprint);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "bundle": args.output,
                "appliance": release.name,
                "version": release.version,
                "security_version": release.security_version,
                "lab": release.lab,
                "size": bytes.len(),
                "sha256": sha256,
                "uki_sha256": hex::encode(release.uki_sha256),
                "release_key": fingerprint,
            }))?
        );
    } else {
        println!(
            "{}: {} {}, security version {}{}",
            args.output.display(),
            release.name,
            release.version,
            release.security_version,
            if release.lab { " (lab image)" } else { "" }
        );
        println!(
            "size {} bytes ({:.1} MiB), sha256 {sha256}",
            bytes.len(),
            bytes.len() as f64 / f64::from(1u32 << 20)
        );
        match &fingerprint {
            Some(f) => println!("signed by release key {f}"),
            None => println!(
                "signature not checked here (no --pubkey): each gateway checks it against its release key"
            ),
        }
    }
    Ok(Outcome::Ok)
}
