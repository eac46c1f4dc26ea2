//! Appliance profiles: declarative TOML descriptions of a gateway.
//!
//! Two stages, as in ripgrep's low/high-level arguments:
//! 1. [`load`] reads a file and its `extends` chain into the [`raw`] model,
//!    keeping a source span on every value and rejecting unknown keys;
//! 2. [`validate`](validate::validate) checks every rule of the design and
//!    produces the validated [`Profile`], which is all builders ever see.
//!
//! Every problem is a [`Diagnostic`] naming file, line, column and field.
//! Nothing in this crate panics on any input (a property test feeds
//! arbitrary bytes to the loader).

#![forbid(unsafe_code)]

pub mod algo;
pub mod cmdline;
pub mod diag;
pub mod load;
pub mod model;
pub mod net;
pub mod raw;
pub mod reference;
mod shape;
pub mod source;
pub mod units;
pub mod validate;

use std::path::Path;

pub use diag::{Diagnostic, Diagnostics};
pub use model::*;
pub use validate::Checked;

/// Loads and validates a profile that must be complete (not abstract).
pub fn load_profile(path: &Path) -> Result<Profile, Diagnostics> {
    match check(path)? {
        Checked::Profile(p) => Ok(*p),
        Checked::Abstract => Err(Diagnostics(vec![Diagnostic::file_level(
            path.to_path_buf(),
            1,
            1,
            "this is an abstract base profile (`abstract = true`); build a profile that extends it",
        )])),
    }
}

/// Loads and validates a profile; abstract bases pass with keys and types checked.
pub fn check(path: &Path) -> Result<Checked, Diagnostics> {
    let loaded = load::load(path)?;
    validate::validate(path, &loaded.sources, &loaded.raw)
}

/// The JSON Schema of the profile format.
pub fn schema() -> serde_json::Value {
    let schema = schemars::schema_for!(raw::RawProfile);
    serde_json::to_value(&schema).unwrap_or_default()
}

/// Where `needle` first appears in the profile's source files (the profile
/// first, then its bases): `(file, line, column)`. Builders use it to point
/// at a value that is valid TOML but wrong for the chosen packages (a driver
/// the kernel does not have).
pub fn find_in_sources(
    profile: &Profile,
    needle: &str,
) -> Option<(std::path::PathBuf, usize, usize)> {
    for f in &profile.files {
        let text = source::strip_bom(std::fs::read_to_string(f).ok()?);
        if let Some(off) = text.find(needle) {
            let (line, col) = source::line_col(&text, off);
            return Some((f.clone(), line, col));
        }
    }
    None
}
