//! Stage 4, render: the per-build configuration — the runtime plan
//! ([`plan`]), what each personality's root gets besides its packages (the
//! network scripts, the DHCP hooks, accounts, red's dnsmasq configuration:
//! [`network`]), and `os-release` — from the templates in
//! `builder/templates/` ([`template`]). Nothing here reads a package: only
//! the profile, the policy, and what the parts stage found in the packages.

pub(crate) mod network;
pub(crate) mod plan;
pub(crate) mod template;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use gateway_plan::digest::Sha256Digest;
use profiles::{Personality, Profile, Side};

use super::hexd;
use super::parts::{Kernel, Roots};
use super::profile::Resolved;
use crate::BuildError;
pub use network::network_script;
use network::RootEntry;

/// A personality's network setup program, inside its root.
pub(crate) const NETWORK_SETUP: &str = "/etc/appliance/network";
/// The hooks of the DHCP client (`dhcp = true`), inside the personality's root.
pub(crate) const UDHCPC_SCRIPT: &str = "/etc/appliance/udhcpc.script";
/// Name of the DHCP client service added for `dhcp = true`.
pub(crate) const DHCP_SERVICE: &str = "dhcp";

/// The per-build configuration.
pub(crate) struct Rendered {
    /// The runtime plan's canonical encoding.
    pub plan_bytes: Vec<u8>,
    /// Its SHA-256 (pinned on the kernel command line).
    pub plan_digest: Sha256Digest,
    /// `/etc/os-release`.
    pub os_release: String,
    /// Red's `/etc/dnsmasq.conf`.
    pub dnsmasq: String,
    /// What each personality's root gets besides its packages, by path
    /// relative to the root.
    pub roots: BTreeMap<Side, BTreeMap<String, RootEntry>>,
}

/// Renders the configuration of `input`'s profile for the kernel's modules
/// and the personalities' packages.
pub(crate) fn render(
    input: &Resolved,
    kernel: &Kernel,
    roots: &Roots,
) -> Result<Rendered, BuildError> {
    let profile = &input.profile;
    let plan = plan::make_plan(
        profile,
        &input.policy_digest,
        &plan::manual_key_uses(&input.policy),
        plan::ike_credentials(&input.policy).as_deref(),
        &kernel.part.modules,
        input.release_key,
        input.policy.learn.is_some(),
    )?;
    let plan_bytes = plan.encode();
    let plan_digest = plan.digest();
    let os_release = template::render(
        "os-release",
        serde_json::json!({
            "name": profile.appliance.name, "version": profile.appliance.version,
            "security_version": profile.appliance.security_version, "policy_digest": hexd(&input.policy_digest),
        }),
    )?;
    let dnsmasq = network::dnsmasq_conf(profile)?;
    let mut personality_roots = BTreeMap::new();
    for side in [Side::Red, Side::Black] {
        let files = roots
            .personalities
            .shipped
            .get(&side)
            .cloned()
            .unwrap_or_default();
        personality_roots.insert(side, network::personality_root(profile, side, &files)?);
    }
    Ok(Rendered {
        plan_bytes,
        plan_digest,
        os_release,
        dnsmasq,
        roots: personality_roots,
    })
}

/// First host uid/gid of each personality's user namespace (65536 ids each).
pub(crate) fn uid_base(side: Side) -> u32 {
    match side {
        Side::Red => 100_000,
        Side::Black => 200_000,
    }
}

/// The profile's personality on `side`.
pub(crate) fn personality(profile: &Profile, side: Side) -> &Personality {
    match side {
        Side::Red => &profile.red,
        Side::Black => &profile.black,
    }
}

/// A gateway validator's complaint about the profile value at `field`
/// (a profile path such as `personalities.red.services[0].capabilities[1]`).
pub(crate) fn at(field: impl Into<String>) -> impl FnOnce(gateway_plan::Error) -> BuildError {
    let field = field.into();
    move |e| BuildError::Plan(format!("{field}: {e}"))
}
