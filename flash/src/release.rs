//! The image to flash, authenticated: the manifest's signature, the bmap's
//! digest in the signed manifest, the image's size, and then every mapped
//! range of the image against the bmap's digests.

use std::path::{Path, PathBuf};

use images::bmap::ParsedBmap;
use sha2::{Digest, Sha256};
use signing::keys::PublicKey;
use signing::verify::{MANIFEST, SIGNATURE};

use crate::Error;

/// Name of the image in an output directory.
pub const DISK: &str = "disk.img";
/// Name of its block map.
pub const BMAP: &str = "disk.img.bmap";

/// An image whose block map is authenticated.
#[derive(Debug, Clone)]
pub struct Release {
    /// The image file.
    pub image: PathBuf,
    /// Its block map (authenticated).
    pub bmap: ParsedBmap,
    /// What it is (`gw-a 0.1.0, security version 1`), for messages.
    pub label: String,
    /// The signer's key fingerprint, when it came from a signed manifest.
    pub signer: Option<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn release(path: &Path, reason: impl Into<String>) -> Error {
    Error::Release {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl Release {
    /// Opens an output directory of `appliance build`: `manifest.sig` must
    /// verify over `manifest.json` with `key`; the manifest must name
    /// `disk.img.bmap` with the digest the file has, and the image's size;
    /// the bmap must parse and describe an image of that size, and
    /// `disk.img` must have it. The image's contents are checked against the
    /// map by [`crate::flash`] before anything is written.
    ///
    /// # Errors
    /// The first of these that fails, naming the file.
    pub fn open(outdir: &Path, key: &PublicKey) -> Result<Release, Error> {
        let mpath = outdir.join(MANIFEST);
        let spath = outdir.join(SIGNATURE);
        let manifest = std::fs::read(&mpath).map_err(io(&mpath))?;
        let sig = std::fs::read(&spath).map_err(io(&spath))?;
        if key.verify(&manifest, &sig).is_err() {
            return Err(Error::Signature {
                path: spath,
                key: key.fingerprint(),
            });
        }
        let m = signing::Manifest::from_json(&manifest).map_err(|e| release(&mpath, e))?;
        let bpath = outdir.join(BMAP);
        let want = m.outputs.get(BMAP).ok_or_else(|| {
            release(
                &mpath,
                format!(
                    "the manifest names no {BMAP} (built before block maps were written: rebuild)"
                ),
            )
        })?;
        let text = std::fs::read(&bpath).map_err(io(&bpath))?;
        let have = hex::encode(Sha256::digest(&text));
        if !bool::from(subtle_eq(have.as_bytes(), want.as_bytes())) {
            return Err(release(
                &bpath,
                format!("SHA-256 {have} differs from the signed manifest's {want}"),
            ));
        }
        let text = String::from_utf8(text).map_err(|_| release(&bpath, "not UTF-8"))?;
        let bmap = ParsedBmap::from_xml(&text).map_err(|e| release(&bpath, e.to_string()))?;
        if bmap.image_size != m.disk.size {
            return Err(release(
                &bpath,
                format!(
                    "describes an image of {} bytes, the manifest one of {}",
                    bmap.image_size, m.disk.size
                ),
            ));
        }
        let image = outdir.join(DISK);
        let label = format!(
            "{} {}, security version {}",
            m.profile.name, m.profile.version, m.profile.security_version
        );
        let r = Release::from_checked_parts(image, bmap, label)?;
        Ok(Release {
            signer: Some(key.fingerprint()),
            ..r
        })
    }

    /// An image and a block map the caller authenticated by other means
    /// (the block map's digest in a signed bundle, say). Checks the image's
    /// size against the map and that the map suits a GPT disk (512-byte
    /// multiples, 4096-byte blocks).
    ///
    /// # Errors
    /// The image is missing or its size differs.
    pub fn from_checked_parts(
        image: PathBuf,
        bmap: ParsedBmap,
        label: String,
    ) -> Result<Release, Error> {
        let len = std::fs::metadata(&image).map_err(io(&image))?.len();
        if len != bmap.image_size {
            return Err(release(
                &image,
                format!(
                    "holds {len} bytes, the signed block map says {}",
                    bmap.image_size
                ),
            ));
        }
        if bmap.block_size != images::bmap::BLOCK_SIZE || len % 512 != 0 || len < 8192 {
            return Err(release(
                &image,
                format!(
                    "a block size of {} and an image of {len} bytes do not make a GPT disk image",
                    bmap.block_size
                ),
            ));
        }
        Ok(Release {
            image,
            bmap,
            label,
            signer: None,
        })
    }
}

/// Constant-time equality of two digests in hex.
fn subtle_eq(a: &[u8], b: &[u8]) -> subtle::Choice {
    use subtle::ConstantTimeEq;
    if a.len() != b.len() {
        return subtle::Choice::from(0);
    }
    a.ct_eq(b)
}
