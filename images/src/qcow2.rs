//! raw → qcow2 conversion by running `qemu-img convert` (Debian package
//! `qemu-utils`).
//!
//! qcow2 has no timestamps or random identifiers in its header, and `qemu-img
//! convert` allocates clusters in guest order, so the same raw image gives the same
//! qcow2 bytes (tested). We pin the options that influence the layout (cluster size,
//! compat level, no compression, no preallocation) so a different qemu default cannot
//! change the output silently.

use std::path::Path;
use std::process::Command;

use crate::{Error, Result};

/// Options passed to `qemu-img convert -o`.
pub const QCOW2_OPTIONS: &str =
    "compat=1.1,cluster_size=65536,lazy_refcounts=off,preallocation=off";

/// Converts the raw disk image at `raw` to qcow2 at `out` (replaced).
pub fn convert_raw_to_qcow2(raw: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        std::fs::remove_file(out).map_err(Error::io("removing", out))?;
    }
    let output = Command::new("qemu-img")
        .args([
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            QCOW2_OPTIONS,
        ])
        .arg(raw)
        .arg(out)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::ToolMissing {
                tool: "qemu-img",
                package: "qemu-utils",
            },
            _ => Error::Io {
                action: "running qemu-img on",
                path: raw.to_owned(),
                source: e,
            },
        })?;
    if !output.status.success() {
        return Err(Error::ToolFailed {
            tool: "qemu-img",
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
