//! Validation: raw model → [`Profile`]. Every rule reports a [`Diagnostic`]
//! at the span of the value at fault, with the dotted field path. All
//! problems are collected (not just the first); a rule that depends on a
//! broken value is skipped so that one mistake gives one error.
//!
//! [`validate`] runs the checks in a fixed order (`build`); the order is the
//! order of errors at one place. One module per part of a profile:
//! - `appliance`, `kernel`, `image` (with `[signing]`): the tables of the
//!   same names;
//! - `hardware`: the NICs, which personality owns each, their drivers, the
//!   target;
//! - `personality`: red and black (their services in `services`), and that
//!   their subnets are disjoint;
//! - `viaduct`: roles and the sections they need; its packet rules in
//!   `rules`, `[viaduct.ipsec]` in `ipsec` (each peer in `peer`, identities
//!   and keys in `credentials`, proposals, DPD and lifetimes in `ike`,
//!   tunnels and manual SAs in `tunnel`), its routes in `routes`;
//! - `links`: the graph between red, black and the Viaduct.
//!
//! `checker` holds what they all use (the run's state with its located
//! errors, required values, names, uniqueness); it imports none of them,
//! and no part imports this module.

use std::ops::Range;
use std::path::Path;

use crate::diag::{Diagnostic, Diagnostics};
use crate::model::*;
use crate::raw::*;
use crate::source::SourceMap;

mod appliance;
mod checker;
mod credentials;
mod files;
mod hardware;
mod ids;
mod ike;
mod image;
mod ipsec;
mod kernel;
mod links;
mod peer;
mod personality;
mod routes;
mod rules;
mod runtime;
mod services;
mod tunnel;
mod viaduct;

pub use image::MIN_ESP;
pub use ipsec::DEFAULT_REPLAY_WINDOW;
pub use peer::{MAX_TFC_PADDING, MAX_TUNNELS_PER_PEER, MIN_TFC_PADDING};
pub use personality::addresses;

use appliance::appliance;
use checker::V;
use hardware::{nic_drivers, nic_ownership, nics, target};
use image::{image, signing};
use kernel::kernel;
use links::links;
use personality::{disjoint_subnets, personalities_of};
use runtime::runtime;
use viaduct::viaduct;

/// Outcome of checking one profile file.
#[derive(Debug)]
pub enum Checked {
    /// A complete, valid profile.
    Profile(Box<Profile>),
    /// An abstract base: keys and types are valid; completeness not checked.
    Abstract,
}

/// Validates a loaded profile.
pub fn validate(
    path: &Path,
    sources: &SourceMap,
    raw: &RawProfile,
) -> Result<Checked, Diagnostics> {
    if raw.is_abstract.as_ref().is_some_and(|a| a.value) {
        return Ok(Checked::Abstract);
    }
    let mut v = V {
        sources,
        diags: Vec::new(),
        lab: false,
    };
    let whole = 0..0;
    let profile = build(&mut v, path, raw, &whole);
    let mut diags = Diagnostics(v.diags);
    diags.sort();
    match profile {
        Some(p) if diags.0.is_empty() => Ok(Checked::Profile(Box::new(p))),
        _ if diags.0.is_empty() => {
            // Every `None` above comes with a diagnostic; keep the invariant
            // visible instead of returning an empty error list.
            Err(Diagnostics(vec![Diagnostic::spanned(
                sources,
                &whole,
                "(profile)",
                "the profile is incomplete",
            )]))
        }
        _ => Err(diags),
    }
}

/// The checks in their order: the tables a profile needs, each table on
/// its own, then the NICs, the personalities and what is between them, the
/// Viaduct, the links and the target. A check that needs a part with an
/// error is skipped.
fn build(v: &mut V<'_>, path: &Path, raw: &RawProfile, whole: &Range<usize>) -> Option<Profile> {
    let appliance = v
        .req(&raw.appliance, whole, "", "appliance")
        .map(|a| appliance(v, a));
    let hardware = v.req(&raw.hardware, whole, "", "hardware");
    let kernel = v
        .req(&raw.kernel, whole, "", "kernel")
        .map(|k| kernel(v, k));
    let personalities = v.req(&raw.personalities, whole, "", "personalities");
    let viaduct_raw = v.req(&raw.viaduct, whole, "", "viaduct");
    let image = v.req(&raw.image, whole, "", "image").map(|i| image(v, i));
    let signing = raw.signing.as_ref().map(|s| signing(path, s));

    let nics = hardware.map(|h| nics(v, h));
    let (red, black) = match personalities {
        Some(p) => personalities_of(v, p, nics.as_ref()),
        None => (None, None),
    };
    let mut nic_list = Vec::new();
    if let (Some(hw), Some(nics)) = (hardware, &nics) {
        nic_list = nic_ownership(v, hw, nics, red.as_ref(), black.as_ref(), personalities);
    }
    if let (Some(hw), Some(nics), Some(k)) = (hardware, &nics, &raw.kernel) {
        nic_drivers(v, hw, nics, k, personalities);
    }
    if let (Some(r), Some(b)) = (&red, &black) {
        disjoint_subnets(v, r, b, personalities);
    }
    let via =
        viaduct_raw.and_then(|vr| viaduct(v, vr, red.as_ref(), black.as_ref(), personalities));
    let links = links(v, raw, nics.as_ref(), red.as_ref(), black.as_ref());

    let target = target(v, hardware);
    if let Some(Some(a)) = &appliance {
        let memory = [&red, &black].map(|p| p.as_ref().map(|(_, p)| (p.side, p.memory_limit)));
        runtime(
            v,
            a.runtime,
            hardware.and_then(|h| h.nics.as_ref()),
            &nic_list,
            personalities,
            memory,
        );
    }

    let mut files: Vec<_> = sources_paths(v.sources);
    files.dedup();
    Some(Profile {
        path: path.to_path_buf(),
        files,
        appliance: appliance??,
        hardware: Hardware {
            target,
            nics: nic_list,
        },
        kernel: kernel??,
        red: red?.1,
        black: black?.1,
        viaduct: via?,
        links: links?,
        image: image??,
        signing,
    })
}

fn sources_paths(s: &SourceMap) -> Vec<std::path::PathBuf> {
    s.files().iter().map(|f| f.path.clone()).collect()
}
