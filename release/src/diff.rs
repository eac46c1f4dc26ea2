//! `appliance diff OLD NEW`: what an update from one build to another
//! changes, as an administrator reads it before rolling it out.
//!
//! [`Diff::between`] compares two [`Build`]s: identity and security version,
//! packages, kernel, gateway binaries, kernel command line, the policy and
//! the plan item by item in words, each predicted PCR, and what survives of
//! secrets sealed on the device. [`Diff::to_text`] is the short report;
//! the struct serialises to the same report as JSON. Differences are the
//! report, not errors; only unreadable or changed builds are
//! ([`crate::ReleaseError`], from [`Build::open`]).
//!
//! The statements about sealed secrets are facts of these two builds and of
//! what the gateway does: a build signed with a release key carries a signed
//! PCR policy (`.pcrsig`: PCR 11 of that UKI, signed by the release key's
//! PCR-policy key), under which the device identity key signs and provisioned
//! secrets unseal; an unsigned build carries none. What survives is computed
//! from the builds: whether both policies are signed by the same PCR-policy
//! key and each approves its own UKI, which predicted PCRs keep their value,
//! whether the same release key and Secure Boot signer sign both, and which
//! manual keys the key-use ledger has already seen.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use signing::keys::PublicKey;
use signing::manifest::{Component, Manifest, PcrSummary, SecureBootInfo};

use crate::build::Build;
use crate::words::{self, Item, Kind};
use crate::ReleaseError;

/// An old and a new value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair<T> {
    /// In the old build.
    pub old: T,
    /// In the new build.
    pub new: T,
}

impl<T: PartialEq> Pair<T> {
    fn of(old: T, new: T) -> Self {
        Pair { old, new }
    }

    /// Whether the value changes.
    pub fn changes(&self) -> bool {
        self.old != self.new
    }
}

/// How something changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the new build.
    Added,
    /// Only in the old build.
    Removed,
    /// In both, different.
    Changed,
    /// A package in both with the same version but another `.deb`.
    Rebuilt,
}

impl Change {
    fn mark(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Changed | Change::Rebuilt => '~',
        }
    }
}

/// One build's identity.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    /// Output directory.
    pub dir: PathBuf,
    /// Appliance name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Anti-rollback counter.
    pub security_version: u64,
    /// A lab image (may carry test keys).
    pub lab: bool,
    /// Fingerprint of the key its manifest signature was verified with
    /// (`None`: not checked).
    pub signed_by: Option<String>,
}

impl Identity {
    fn of(b: &Build) -> Identity {
        let p = &b.manifest.profile;
        Identity {
            dir: b.dir.clone(),
            name: p.name.clone(),
            version: p.version.clone(),
            security_version: p.security_version,
            lab: p.lab,
            signed_by: b.signer.clone(),
        }
    }
}

/// What a gateway running `old` does with a bundle of `new`: the release
/// key in old's plan must have signed new's manifest, and new must take
/// updates itself.
fn update_warnings(old: &Build, new: &Build) -> Vec<String> {
    let mut w = Vec::new();
    match (&old.plan.update, &new.signer) {
        // An A/B image built without a release key.
        (None, _) if old.plan.boot_assessment.is_some() => w.push(
            "the old image takes no updates (no release key in its plan): gateways running \
             it can only be flashed"
                .to_string(),
        ),
        (Some(u), Some(signer)) if update_bundle::fingerprint(&u.release_key) != *signer => {
            w.push(format!(
                "gateways running the old image accept bundles signed by {}; the new \
                 manifest is signed by {signer}: they refuse its bundle",
                update_bundle::fingerprint(&u.release_key)
            ))
        }
        _ => {}
    }
    if new.plan.update.is_none() && old.plan.update.is_some() {
        w.push(
            "the new image takes no updates (no release key in its plan): after it, gateways \
             can only be flashed"
                .to_string(),
        );
    }
    if let (Some(o), Some(n)) = (&old.plan.update, &new.plan.update) {
        if o.release_key != n.release_key {
            w.push(format!(
                "the new image takes updates signed by {} (the old one: {}): a key rotation; \
                 the update after this one must be signed by the new key",
                update_bundle::fingerprint(&n.release_key),
                update_bundle::fingerprint(&o.release_key)
            ));
        }
    }
    w
}

/// Which way the security version moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher: an update.
    Up,
    /// The same.
    Same,
    /// Lower: a rollback.
    Down,
}

/// The security version, old and new.
#[derive(Debug, Clone, Serialize)]
pub struct SecurityVersion {
    /// Old.
    pub old: u64,
    /// New.
    pub new: u64,
    /// Which way it moves.
    pub direction: Direction,
}

/// A package added, removed, or in another version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageChange {
    /// Package name.
    pub name: String,
    /// Lock group (`red`, `black`, `kernel`, …).
    pub group: String,
    /// How it changes.
    pub change: Change,
    /// Old version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// New version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

/// The kernel, old and new.
#[derive(Debug, Clone, Serialize)]
pub struct KernelChange {
    /// `uname -r`.
    pub version: Pair<String>,
    /// The package it comes from.
    pub package: Pair<String>,
    /// SHA-256 of the kernel image.
    pub image_sha256: Pair<String>,
    /// Module files only in the new build.
    pub modules_added: Vec<String>,
    /// Module files only in the old build.
    pub modules_removed: Vec<String>,
}

impl KernelChange {
    /// Whether anything about the kernel changes.
    pub fn changes(&self) -> bool {
        self.version.changes()
            || self.package.changes()
            || self.image_sha256.changes()
            || !self.modules_added.is_empty()
            || !self.modules_removed.is_empty()
    }
}

/// A gateway binary (`gateway-init`, `viaduct`, `viaduct-ike`) that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BinaryChange {
    /// Its name.
    pub name: String,
    /// How.
    pub change: Change,
}

/// Words of the kernel command line added and removed (the plan's digest,
/// `appliance.plan=`, left out: the plan is compared on its own).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CmdlineChange {
    /// Only in the new command line.
    pub added: Vec<String>,
    /// Only in the old one.
    pub removed: Vec<String>,
}

/// One field of an item that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// Its label.
    pub field: String,
    /// Old value in words (absent: the old item has no such field).
    pub old: Option<String>,
    /// New value in words.
    pub new: Option<String>,
}

/// An item of a policy or plan that is added, removed or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemChange {
    /// What it is.
    pub kind: Kind,
    /// What names it (a name; for SPD entries the name and the match).
    pub key: String,
    /// How it changes.
    pub change: Change,
    /// The old item in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// The new item in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
    /// For a changed item: the fields that change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
}

/// The policy, old and new.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyChange {
    /// The blobs' SHA-256 (it covers the version fields, so it changes with
    /// every version).
    pub sha256: Pair<String>,
    /// Settings, SPD entries, tunnels, IKE peers (proposals), filter rules.
    pub changes: Vec<ItemChange>,
    /// Whether the SPD entries both builds have come in another order (the
    /// first match wins).
    pub spd_order_changes: bool,
    /// Whether the filter rules both builds have come in another order.
    pub filter_order_changes: bool,
}

/// The runtime plan, old and new.
#[derive(Debug, Clone, Serialize)]
pub struct PlanChange {
    /// The plans' SHA-256 (pinned on the kernel command line, so in PCR 11).
    pub sha256: Pair<String>,
    /// The Viaduct, compartments and services.
    pub changes: Vec<ItemChange>,
}

/// Whether a predicted PCR keeps its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PcrStatus {
    /// Same value.
    Unchanged,
    /// Another value.
    Changes,
    /// Predicted for the old build only (the new UKI is not Secure Boot-signed).
    OnlyOld,
    /// Predicted for the new build only.
    OnlyNew,
}

/// One predicted PCR, old and new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PcrChange {
    /// PCR index.
    pub pcr: u32,
    /// The firmware state it is predicted for: `off`, `on` (Secure Boot) or
    /// `either`.
    pub secure_boot: &'static str,
    /// The manifest's field (`pcrs.<field>`).
    pub manifest_field: &'static str,
    /// Old value (hex SHA-256).
    pub old: Option<String>,
    /// New value.
    pub new: Option<String>,
    /// Whether it moves.
    pub status: PcrStatus,
}

/// Manual keys and the key-use ledger.
#[derive(Debug, Clone, Serialize)]
pub struct ManualKeys {
    /// Manual keys the old plan names.
    pub old: usize,
    /// Manual keys the new plan names.
    pub new: usize,
    /// Keys of the new plan the old plan names too: a device that started
    /// the old image's Viaduct has them in its key-use ledger.
    pub reused: usize,
}

/// What survives of secrets on the device (see the module docs).
#[derive(Debug, Clone, Serialize)]
pub struct Sealed {
    /// Whether each UKI has a signed PCR policy (`.pcrsig`) approving its own PCR 11.
    pub signed_pcr_policy: Pair<bool>,
    /// Each UKI's PCR-policy key (SHA-256 of its point), if it has a `.pcrsig`.
    pub pcr_public_key: Pair<Option<String>>,
    /// Fingerprints of the keys the manifests' signatures were verified with.
    pub release_key: Pair<Option<String>>,
    /// Whether the same release key signs both (`None`: not checked).
    pub same_release_key: Option<bool>,
    /// Each UKI's Secure Boot signer (`subject (sha256:<certificate>)`).
    pub secure_boot_signer: Pair<Option<String>>,
    /// PCRs that keep their value with Secure Boot off.
    pub pcrs_kept_secure_boot_off: Vec<u32>,
    /// PCRs that keep their value with Secure Boot on (both UKIs signed).
    pub pcrs_kept_secure_boot_on: Vec<u32>,
    /// Manual keys and the key-use ledger.
    pub manual_keys: ManualKeys,
    /// Device credentials (`tpm:<name>`) the new plan names and the old does not.
    pub device_credentials_added: Vec<String>,
    /// The above in words.
    pub statements: Vec<String>,
}

/// What an update from one build to another changes.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// The build deployed now.
    pub old: Identity,
    /// The build to roll out.
    pub new: Identity,
    /// Whether both manifests' signatures were verified.
    pub authenticated: bool,
    /// What needs attention before rolling out, most important first.
    pub warnings: Vec<String>,
    /// The security version.
    pub security_version: SecurityVersion,
    /// Packages added, removed, in another version or rebuilt.
    pub packages: Vec<PackageChange>,
    /// The kernel.
    pub kernel: KernelChange,
    /// Gateway binaries that change.
    pub binaries: Vec<BinaryChange>,
    /// The kernel command line.
    pub cmdline: CmdlineChange,
    /// The policy.
    pub policy: PolicyChange,
    /// The plan.
    pub plan: PlanChange,
    /// Each predicted PCR.
    pub pcrs: Vec<PcrChange>,
    /// Sealed secrets.
    pub sealed: Sealed,
}

impl Diff {
    /// Reads both output directories ([`Build::open`]) and compares them.
    /// With `old_key`, the old manifest must be signed by it, and the new
    /// one by `new_key`, or by `old_key` when `new_key` is `None`.
    pub fn open(
        old: &Path,
        new: &Path,
        old_key: Option<&PublicKey>,
        new_key: Option<&PublicKey>,
    ) -> Result<Diff, ReleaseError> {
        let old = Build::open(old, old_key)?;
        let new = Build::open(new, new_key.or(old_key))?;
        Ok(Diff::between(&old, &new))
    }

    /// Compares two builds.
    pub fn between(old: &Build, new: &Build) -> Diff {
        let (om, nm) = (&old.manifest, &new.manifest);
        let security_version = SecurityVersion {
            old: om.profile.security_version,
            new: nm.profile.security_version,
            direction: match nm
                .profile
                .security_version
                .cmp(&om.profile.security_version)
            {
                std::cmp::Ordering::Greater => Direction::Up,
                std::cmp::Ordering::Equal => Direction::Same,
                std::cmp::Ordering::Less => Direction::Down,
            },
        };
        let packages = compare_packages(&om.components, &nm.components);
        let kernel = compare_kernel(om, nm);
        let binaries = compare_binaries(&om.binaries, &nm.binaries);
        let cmdline = compare_cmdline(&om.uki.cmdline, &nm.uki.cmdline);
        let (old_items, new_items) = (
            words::policy_items(&old.policy),
            words::policy_items(&new.policy),
        );
        let policy = PolicyChange {
            sha256: Pair::of(om.policy.sha256.clone(), nm.policy.sha256.clone()),
            changes: compare_items(&old_items, &new_items),
            spd_order_changes: order_changes(&old_items, &new_items, Kind::SpdEntry),
            filter_order_changes: order_changes(&old_items, &new_items, Kind::FilterRule),
        };
        let plan = PlanChange {
            sha256: Pair::of(om.plan.sha256.clone(), nm.plan.sha256.clone()),
            changes: compare_items(&words::plan_items(&old.plan), &words::plan_items(&new.plan)),
        };
        let pcrs = compare_pcrs(&om.pcrs, &nm.pcrs);
        let sealed = sealed(old, new, &pcrs);
        let mut diff = Diff {
            old: Identity::of(old),
            new: Identity::of(new),
            authenticated: old.signer.is_some() && new.signer.is_some(),
            warnings: Vec::new(),
            security_version,
            packages,
            kernel,
            binaries,
            cmdline,
            policy,
            plan,
            pcrs,
            sealed,
        };
        diff.warnings = diff.warnings(om, nm);
        diff.warnings.extend(update_warnings(old, new));
        diff
    }

    /// What of the image changes, in words (`packages`, `policy`, …).
    fn changed_parts(&self) -> Vec<&'static str> {
        let mut parts = Vec::new();
        if !self.packages.is_empty() {
            parts.push("packages");
        }
        if self.kernel.changes() {
            parts.push("kernel");
        }
        if !self.binaries.is_empty() {
            parts.push("gateway binaries");
        }
        if !self.cmdline.added.is_empty() || !self.cmdline.removed.is_empty() {
            parts.push("command line");
        }
        if !self.policy.changes.is_empty()
            || self.policy.spd_order_changes
            || self.policy.filter_order_changes
        {
            parts.push("policy");
        }
        if !self.plan.changes.is_empty() {
            parts.push("plan");
        }
        parts
    }

    fn warnings(&self, om: &Manifest, nm: &Manifest) -> Vec<String> {
        let mut w = Vec::new();
        if self.old.name != self.new.name {
            w.push(format!(
                "different appliances: {} → {}; this is not an update of the same profile",
                self.old.name, self.new.name
            ));
        }
        let sv = &self.security_version;
        match sv.direction {
            Direction::Down => w.push(format!(
                "security version goes DOWN ({} → {}): a rollback; a gateway whose \
                 anti-rollback floor is above {} refuses the bundle and never boots the \
                 image: roll it out only on purpose",
                sv.old, sv.new, sv.new
            )),
            Direction::Same if om.uki.sha256 != nm.uki.sha256 => {
                let parts = self.changed_parts();
                let what = if parts.is_empty() {
                    "the image changes".to_string()
                } else {
                    format!("{} change", parts.join(", "))
                };
                w.push(format!(
                    "security version stays {} although {what}: whoever compares \
                     security versions cannot tell the two images apart; raise \
                     security_version for a security fix",
                    sv.new
                ));
            }
            _ => {}
        }
        if self.new.lab && !self.old.lab {
            w.push("the new image is a lab image: it may carry test keys in the clear".into());
        }
        match (&om.secure_boot, &nm.secure_boot) {
            (Some(_), None) => w.push(
                "the new UKI is not Secure Boot-signed: a device that enforces Secure Boot \
                 refuses it"
                    .into(),
            ),
            (Some(o), Some(n)) if o.certificate_sha256 != n.certificate_sha256 => w.push(format!(
                "the Secure Boot signer changes ({} → {}): a device that enforces Secure Boot \
                 with only the old certificate enrolled refuses the new UKI; enroll the new \
                 certificate first",
                o.subject, n.subject
            )),
            _ => {}
        }
        if let (Some(o), Some(n)) = (&self.old.signed_by, &self.new.signed_by) {
            if o != n {
                w.push(format!(
                    "the release key changes ({o} → {n}): whatever trusts the old key must be \
                     given the new one"
                ));
            }
        }
        let mk = &self.sealed.manual_keys;
        if mk.reused > 0 {
            w.push(format!(
                "{} of the new image's manual keys {} used by the old image: a device that \
                 ran it has {} in its key-use ledger and will not start the Viaduct (the \
                 gateway stays closed); give those tunnels new keys",
                mk.reused,
                if mk.reused == 1 { "was" } else { "were" },
                if mk.reused == 1 { "it" } else { "them" },
            ));
        }
        if !self.sealed.device_credentials_added.is_empty() {
            w.push(format!(
                "the new plan names device credentials the old one does not ({}): the tunnels \
                 that need them stay closed until the device holds them",
                self.sealed.device_credentials_added.join(", ")
            ));
        }
        w
    }

    /// The report as short text (one trailing newline).
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let (old, new) = (&self.old, &self.new);
        let name = if old.name == new.name {
            old.name.clone()
        } else {
            format!("{} → {}", old.name, new.name)
        };
        let _ = writeln!(
            o,
            "{name} {} → {}, security version {} → {} ({})",
            old.version,
            new.version,
            self.security_version.old,
            self.security_version.new,
            match self.security_version.direction {
                Direction::Up => "up",
                Direction::Same => "same",
                Direction::Down => "DOWN",
            }
        );
        let _ = writeln!(o, "old: {}", old.dir.display());
        let _ = writeln!(o, "new: {}", new.dir.display());
        match (&old.signed_by, &new.signed_by) {
            (Some(a), Some(b)) if a == b => {
                let _ = writeln!(o, "signatures: both manifests verified, release key {a}");
            }
            (Some(a), Some(b)) => {
                let _ = writeln!(
                    o,
                    "signatures: both manifests verified, old by {a}, new by {b}"
                );
            }
            _ => {
                let _ = writeln!(
                    o,
                    "signatures: NOT CHECKED (no --pubkey): the files are taken as they are"
                );
            }
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(o, "\nwarnings:");
            for w in &self.warnings {
                let _ = writeln!(o, "  ! {w}");
            }
        }
        o.push('\n');
        self.packages_text(&mut o);
        self.kernel_text(&mut o);
        if self.binaries.is_empty() {
            let _ = writeln!(o, "gateway binaries: unchanged");
        } else {
            let b: Vec<String> = self
                .binaries
                .iter()
                .map(|b| format!("{} {}", b.change.mark(), b.name))
                .collect();
            let _ = writeln!(o, "gateway binaries: {}", b.join(", "));
        }
        let c = &self.cmdline;
        if c.added.is_empty() && c.removed.is_empty() {
            let _ = writeln!(o, "command line: unchanged (besides the plan digest)");
        } else {
            let words: Vec<String> = c
                .removed
                .iter()
                .map(|w| format!("- {w}"))
                .chain(c.added.iter().map(|w| format!("+ {w}")))
                .collect();
            let _ = writeln!(o, "command line: {}", words.join(", "));
        }
        let p = &self.policy;
        if !p.sha256.changes() {
            let _ = writeln!(o, "policy: unchanged");
        } else if p.changes.is_empty() && !p.spd_order_changes && !p.filter_order_changes {
            let _ = writeln!(o, "policy: same rules (only its version fields differ)");
        } else {
            let _ = writeln!(o, "policy:");
            items_text(&mut o, &p.changes);
            if p.spd_order_changes {
                let _ = writeln!(o, "  ~ spd order changes (the first match wins)");
            }
            if p.filter_order_changes {
                let _ = writeln!(o, "  ~ filter rule order changes (the first match wins)");
            }
        }
        let p = &self.plan;
        if !p.sha256.changes() {
            let _ = writeln!(o, "plan: unchanged");
        } else if p.changes.is_empty() {
            let _ = writeln!(
                o,
                "plan: same (only its version fields and the policy digest differ)"
            );
        } else {
            let _ = writeln!(o, "plan:");
            items_text(&mut o, &p.changes);
        }
        let _ = writeln!(o, "\npredicted PCRs:");
        for pcr in &self.pcrs {
            let short = |v: &Option<String>| {
                v.as_deref()
                    .map(|h| format!("{}…", &h[..h.len().min(16)]))
                    .unwrap_or_else(|| "-".into())
            };
            let status = match pcr.status {
                PcrStatus::Unchanged => format!("unchanged  {}", short(&pcr.new)),
                PcrStatus::Changes => {
                    format!("changes    {} → {}", short(&pcr.old), short(&pcr.new))
                }
                PcrStatus::OnlyOld => {
                    format!("not predicted for the new build (was {})", short(&pcr.old))
                }
                PcrStatus::OnlyNew => {
                    format!("predicted for the new build only: {}", short(&pcr.new))
                }
            };
            let sb = match pcr.secure_boot {
                "either" => "",
                "on" => "secure boot on",
                _ => "secure boot off",
            };
            let _ = writeln!(o, "  PCR {:<2}  {sb:<15}  {status}", pcr.pcr);
        }
        let _ = writeln!(o, "\nsealed secrets:");
        for s in &self.sealed.statements {
            let _ = writeln!(o, "  - {s}");
        }
        o
    }

    fn packages_text(&self, o: &mut String) {
        if self.packages.is_empty() {
            let _ = writeln!(o, "packages: unchanged");
            return;
        }
        let count = |c: Change| self.packages.iter().filter(|p| p.change == c).count();
        let _ = writeln!(
            o,
            "packages: {} changed, {} added, {} removed{}",
            count(Change::Changed),
            count(Change::Added),
            count(Change::Removed),
            match count(Change::Rebuilt) {
                0 => String::new(),
                n => format!(", {n} rebuilt (same version, another .deb)"),
            }
        );
        for p in &self.packages {
            let v = match (&p.old, &p.new) {
                (Some(a), Some(b)) if a != b => format!("{a} → {b}"),
                (Some(a), Some(_)) => format!("{a} (rebuilt)"),
                (Some(a), None) | (None, Some(a)) => a.clone(),
                (None, None) => String::new(),
            };
            let _ = writeln!(o, "  {} {} ({}) {v}", p.change.mark(), p.name, p.group);
        }
    }

    fn kernel_text(&self, o: &mut String) {
        let k = &self.kernel;
        if !k.changes() {
            let _ = writeln!(o, "kernel: {} unchanged", k.version.new);
            return;
        }
        let mut parts = Vec::new();
        if k.version.changes() {
            parts.push(format!("{} → {}", k.version.old, k.version.new));
        } else {
            parts.push(k.version.new.clone());
        }
        if k.package.changes() {
            parts.push(format!("package {} → {}", k.package.old, k.package.new));
        }
        if k.image_sha256.changes() {
            parts.push("image changes".into());
        }
        let base = |m: &String| m.rsplit('/').next().unwrap_or(m).to_string();
        if !k.modules_added.is_empty() {
            let m: Vec<String> = k.modules_added.iter().map(base).collect();
            parts.push(format!("modules + {}", m.join(", ")));
        }
        if !k.modules_removed.is_empty() {
            let m: Vec<String> = k.modules_removed.iter().map(base).collect();
            parts.push(format!("modules - {}", m.join(", ")));
        }
        let _ = writeln!(o, "kernel: {}", parts.join("; "));
    }
}

fn items_text(o: &mut String, changes: &[ItemChange]) {
    for c in changes {
        let what = format!("{} {}", c.kind.words(), c.key);
        match c.change {
            Change::Changed | Change::Rebuilt => {
                let fields: Vec<String> = c
                    .fields
                    .iter()
                    .map(|f| {
                        format!(
                            "{} {} → {}",
                            f.field,
                            f.old.as_deref().unwrap_or("(none)"),
                            f.new.as_deref().unwrap_or("(none)")
                        )
                    })
                    .collect();
                let _ = writeln!(o, "  ~ {what}: {}", fields.join("; "));
            }
            Change::Added | Change::Removed => {
                let words = c
                    .new
                    .as_ref()
                    .or(c.old.as_ref())
                    .cloned()
                    .unwrap_or_default();
                let fields = words
                    .strip_prefix(&c.key)
                    .and_then(|r| r.strip_prefix(": "))
                    .map(|f| format!(": {f}"))
                    .unwrap_or_default();
                let _ = writeln!(o, "  {} {what}{fields}", c.change.mark());
            }
        }
    }
}

/// Packages by (group, name): added, removed, another version, or the same
/// version from another `.deb` (rebuilt). Sorted by name, then group.
pub fn compare_packages(old: &[Component], new: &[Component]) -> Vec<PackageChange> {
    let index = |cs: &[Component]| -> BTreeMap<(String, String), (String, String)> {
        cs.iter()
            .map(|c| {
                (
                    (c.name.clone(), c.group.clone()),
                    (c.version.clone(), c.sha256.clone()),
                )
            })
            .collect()
    };
    let (o, n) = (index(old), index(new));
    let keys: BTreeSet<&(String, String)> = o.keys().chain(n.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        let (change, ov, nv) = match (o.get(k), n.get(k)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) if a.0 == b.0 => (Change::Rebuilt, Some(&a.0), Some(&b.0)),
            (Some(a), Some(b)) => (Change::Changed, Some(&a.0), Some(&b.0)),
            (Some(a), None) => (Change::Removed, Some(&a.0), None),
            (None, Some(b)) => (Change::Added, None, Some(&b.0)),
            (None, None) => continue,
        };
        out.push(PackageChange {
            name: k.0.clone(),
            group: k.1.clone(),
            change,
            old: ov.cloned(),
            new: nv.cloned(),
        });
    }
    out
}

fn compare_kernel(om: &Manifest, nm: &Manifest) -> KernelChange {
    let (o, n) = (&om.kernel, &nm.kernel);
    let os: BTreeSet<&String> = o.modules.iter().collect();
    let ns: BTreeSet<&String> = n.modules.iter().collect();
    KernelChange {
        version: Pair::of(o.version.clone(), n.version.clone()),
        package: Pair::of(o.package.clone(), n.package.clone()),
        image_sha256: Pair::of(o.image_sha256.clone(), n.image_sha256.clone()),
        modules_added: ns.difference(&os).map(|s| (*s).clone()).collect(),
        modules_removed: os.difference(&ns).map(|s| (*s).clone()).collect(),
    }
}

fn compare_binaries(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<BinaryChange> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let change = match (old.get(name), new.get(name)) {
                (Some(a), Some(b)) if a == b => return None,
                (Some(_), Some(_)) => Change::Changed,
                (Some(_), None) => Change::Removed,
                (None, _) => Change::Added,
            };
            Some(BinaryChange {
                name: name.clone(),
                change,
            })
        })
        .collect()
}

fn compare_cmdline(old: &str, new: &str) -> CmdlineChange {
    let words = |s: &str| -> BTreeSet<String> {
        s.split_whitespace()
            .filter(|w| !w.starts_with("appliance.plan="))
            .map(str::to_string)
            .collect()
    };
    let (o, n) = (words(old), words(new));
    CmdlineChange {
        added: n.difference(&o).cloned().collect(),
        removed: o.difference(&n).cloned().collect(),
    }
}

/// Items keyed by (kind, key); a key that repeats within one build gets
/// `#2`, `#3`, … in order.
fn keyed(items: &[Item]) -> Vec<((Kind, String), &Item)> {
    let mut seen: BTreeMap<(Kind, &str), usize> = BTreeMap::new();
    items
        .iter()
        .map(|it| {
            let n = seen.entry((it.kind, it.key.as_str())).or_insert(0);
            *n += 1;
            let key = if *n == 1 {
                it.key.clone()
            } else {
                format!("{} #{n}", it.key)
            };
            ((it.kind, key), it)
        })
        .collect()
}

/// Items compared by kind and key, field by field; in kind order, then
/// removed, changed and added items in their builds' order.
pub fn compare_items(old: &[Item], new: &[Item]) -> Vec<ItemChange> {
    let (o, n) = (keyed(old), keyed(new));
    let om: BTreeMap<&(Kind, String), &Item> = o.iter().map(|(k, v)| (k, *v)).collect();
    let nm: BTreeMap<&(Kind, String), &Item> = n.iter().map(|(k, v)| (k, *v)).collect();
    let mut out = Vec::new();
    for ((kind, key), it) in &o {
        match nm.get(&(*kind, key.clone())) {
            None => out.push(ItemChange {
                kind: *kind,
                key: key.clone(),
                change: Change::Removed,
                old: Some(it.words()),
                new: None,
                fields: Vec::new(),
            }),
            Some(new_it) => {
                let fields = compare_fields(it, new_it);
                if !fields.is_empty() {
                    out.push(ItemChange {
                        kind: *kind,
                        key: key.clone(),
                        change: Change::Changed,
                        old: Some(it.words()),
                        new: Some(new_it.words()),
                        fields,
                    });
                }
            }
        }
    }
    for ((kind, key), it) in &n {
        if !om.contains_key(&(*kind, key.clone())) {
            out.push(ItemChange {
                kind: *kind,
                key: key.clone(),
                change: Change::Added,
                old: None,
                new: Some(it.words()),
                fields: Vec::new(),
            });
        }
    }
    out.sort_by_key(|c| {
        (
            c.kind,
            c.change != Change::Removed,
            c.change == Change::Added,
        )
    });
    out
}

fn compare_fields(old: &Item, new: &Item) -> Vec<FieldChange> {
    let mut out = Vec::new();
    for f in &old.fields {
        match new.fields.iter().find(|g| g.label == f.label) {
            None => out.push(FieldChange {
                field: f.label.into(),
                old: Some(f.text.clone()),
                new: None,
            }),
            Some(g) if g.text != f.text => out.push(FieldChange {
                field: f.label.into(),
                old: Some(f.text.clone()),
                new: Some(g.text.clone()),
            }),
            Some(g) if g.secret != f.secret => out.push(FieldChange {
                field: f.label.into(),
                old: Some(f.text.clone()),
                new: Some(format!("{} (another key)", g.text)),
            }),
            Some(_) => {}
        }
    }
    for g in &new.fields {
        if !old.fields.iter().any(|f| f.label == g.label) {
            out.push(FieldChange {
                field: g.label.into(),
                old: None,
                new: Some(g.text.clone()),
            });
        }
    }
    out
}

/// Whether the items of `kind` that both builds have come in another order.
fn order_changes(old: &[Item], new: &[Item], kind: Kind) -> bool {
    let (o, n) = (keyed(old), keyed(new));
    let ok: BTreeSet<&String> = o
        .iter()
        .filter(|((k, _), _)| *k == kind)
        .map(|((_, key), _)| key)
        .collect();
    let nk: BTreeSet<&String> = n
        .iter()
        .filter(|((k, _), _)| *k == kind)
        .map(|((_, key), _)| key)
        .collect();
    let common = |v: &[((Kind, String), &Item)], other: &BTreeSet<&String>| -> Vec<String> {
        v.iter()
            .filter(|((k, key), _)| *k == kind && other.contains(key))
            .map(|((_, key), _)| key.clone())
            .collect()
    };
    common(&o, &nk) != common(&n, &ok)
}

/// Each predicted PCR of the manifests, in PCR order.
pub fn compare_pcrs(old: &PcrSummary, new: &PcrSummary) -> Vec<PcrChange> {
    let rows = [
        (4, "off", "pcr4", Some(&old.pcr4), Some(&new.pcr4)),
        (
            4,
            "on",
            "pcr4_secure_boot_on",
            old.pcr4_secure_boot_on.as_ref(),
            new.pcr4_secure_boot_on.as_ref(),
        ),
        (
            7,
            "off",
            "pcr7_secure_boot_off",
            Some(&old.pcr7_secure_boot_off),
            Some(&new.pcr7_secure_boot_off),
        ),
        (
            7,
            "on",
            "pcr7_secure_boot_on",
            old.pcr7_secure_boot_on.as_ref(),
            new.pcr7_secure_boot_on.as_ref(),
        ),
        (11, "either", "pcr11", Some(&old.pcr11), Some(&new.pcr11)),
        (12, "off", "pcr12", Some(&old.pcr12), Some(&new.pcr12)),
        (
            12,
            "on",
            "pcr12_secure_boot_on",
            old.pcr12_secure_boot_on.as_ref(),
            new.pcr12_secure_boot_on.as_ref(),
        ),
    ];
    rows.into_iter()
        .filter(|r| r.3.is_some() || r.4.is_some())
        .map(|(pcr, secure_boot, manifest_field, o, n)| PcrChange {
            pcr,
            secure_boot,
            manifest_field,
            old: o.cloned(),
            new: n.cloned(),
            status: match (o, n) {
                (Some(a), Some(b)) if a == b => PcrStatus::Unchanged,
                (Some(_), Some(_)) => PcrStatus::Changes,
                (Some(_), None) => PcrStatus::OnlyOld,
                (None, _) => PcrStatus::OnlyNew,
            },
        })
        .collect()
}

/// PCRs that keep their value in the firmware state `secure_boot` (PCR 11
/// counts in both); empty when the state is not predicted for both builds.
fn kept(pcrs: &[PcrChange], secure_boot: &str) -> (Vec<u32>, Vec<u32>, bool) {
    let rows: Vec<&PcrChange> = pcrs
        .iter()
        .filter(|p| p.secure_boot == secure_boot || p.secure_boot == "either")
        .collect();
    let complete = rows
        .iter()
        .filter(|p| p.secure_boot == secure_boot)
        .all(|p| p.old.is_some() && p.new.is_some())
        && rows.iter().any(|p| p.secure_boot == secure_boot);
    let kept = rows
        .iter()
        .filter(|p| p.status == PcrStatus::Unchanged)
        .map(|p| p.pcr)
        .collect();
    let moved = rows
        .iter()
        .filter(|p| p.status == PcrStatus::Changes)
        .map(|p| p.pcr)
        .collect();
    (kept, moved, complete)
}

fn list(pcrs: &[u32]) -> String {
    pcrs.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn signer(s: &Option<SecureBootInfo>) -> Option<String> {
    s.as_ref()
        .map(|s| format!("{} (sha256:{})", s.subject, s.certificate_sha256))
}

fn sealed(old: &Build, new: &Build, pcrs: &[PcrChange]) -> Sealed {
    let (om, nm) = (&old.manifest, &new.manifest);
    let mut st = Vec::new();

    let signed_pcr_policy = Pair::of(old.pcr_signature, new.pcr_signature);
    let pcr_public_key = Pair::of(old.pcr_public_key.clone(), new.pcr_public_key.clone());
    if !signed_pcr_policy.old
        && !signed_pcr_policy.new
        && pcr_public_key.old.is_none()
        && pcr_public_key.new.is_none()
    {
        st.push(
            "these images seal nothing to the TPM: neither UKI carries a signed PCR policy \
             (.pcrsig; unsigned builds): no device identity key, no sealed secret"
                .to_string(),
        );
    } else {
        let has = |b: bool| if b { "has one" } else { "has none" };
        let same = pcr_public_key.old.is_some() && !pcr_public_key.changes();
        let kept = same && signed_pcr_policy.old && signed_pcr_policy.new;
        st.push(format!(
            "signed PCR policy: the old UKI {}, the new UKI {}; the device identity key and \
             the provisioned secrets {} (they answer to the PCR-policy key {})",
            has(signed_pcr_policy.old),
            has(signed_pcr_policy.new),
            if kept {
                "survive the update: both are signed by the same PCR-policy key"
            } else {
                "do not survive: the new image's policy is missing or signed by another key"
            },
            pcr_public_key.old.as_deref().map_or_else(
                || "none".to_owned(),
                |k| format!("sha256:{}…", &k[..16.min(k.len())])
            )
        ));
    }

    let (kept_off, moved_off, off_ok) = kept(pcrs, "off");
    let (kept_on, moved_on, on_ok) = kept(pcrs, "on");
    let state = |kept: &[u32], moved: &[u32], ok: bool| {
        if !ok {
            return "not predicted for both builds".to_string();
        }
        let mut parts = Vec::new();
        if !kept.is_empty() {
            parts.push(format!("PCR {} kept", list(kept)));
        }
        if !moved.is_empty() {
            parts.push(format!("PCR {} change", list(moved)));
        }
        parts.join(", ")
    };
    st.push(format!(
        "a secret sealed to the old image's PCR values would unseal under the new one only \
         if its PCRs are kept: Secure Boot off: {}; Secure Boot on: {}",
        state(&kept_off, &moved_off, off_ok),
        state(&kept_on, &moved_on, on_ok)
    ));

    let release_key = Pair::of(old.signer.clone(), new.signer.clone());
    let same_release_key = match (&release_key.old, &release_key.new) {
        (Some(a), Some(b)) => Some(a == b),
        _ => None,
    };
    let release = match (same_release_key, &release_key.old, &release_key.new) {
        (Some(true), Some(k), _) => format!(
            "release key unchanged: both manifests, with their predicted PCRs, are signed \
             by {k}"
        ),
        (Some(false), Some(a), Some(b)) => format!(
            "release key changes: old manifest signed by {a}, new by {b}; whatever trusts \
             the old key must be given the new one"
        ),
        _ => "release key: unknown, the signatures were not checked (give --pubkey)".into(),
    };
    st.push(release);

    let secure_boot_signer = Pair::of(signer(&om.secure_boot), signer(&nm.secure_boot));
    st.push(match (&om.secure_boot, &nm.secure_boot) {
        (None, None) => "Secure Boot: neither UKI is signed".to_string(),
        (Some(o), Some(n)) if o.certificate_sha256 == n.certificate_sha256 => format!(
            "Secure Boot signer unchanged ({}): a device that enforces Secure Boot with it \
             enrolled boots the new UKI",
            o.subject
        ),
        (Some(o), Some(n)) => format!(
            "Secure Boot signer changes ({} → {}): a device that enforces Secure Boot with \
             only the old certificate enrolled refuses the new UKI",
            o.subject, n.subject
        ),
        (Some(o), None) => format!(
            "Secure Boot: the old UKI is signed ({}), the new one is not: a device that \
             enforces Secure Boot refuses it",
            o.subject
        ),
        (None, Some(n)) => format!(
            "Secure Boot: the new UKI is signed ({}), the old one was not",
            n.subject
        ),
    });

    let ok: BTreeSet<_> = old.plan.manual_keys.iter().collect();
    let nk: BTreeSet<_> = new.plan.manual_keys.iter().collect();
    let manual_keys = ManualKeys {
        old: ok.len(),
        new: nk.len(),
        reused: ok.intersection(&nk).count(),
    };
    if manual_keys.reused > 0 {
        st.push(format!(
            "key-use ledger (a TPM NV index without a PCR policy, kept across updates): {} of \
             the new image's {} manual keys {} already recorded on a device that ran the old \
             image, and it refuses {}",
            manual_keys.reused,
            manual_keys.new,
            if manual_keys.reused == 1 { "is" } else { "are" },
            if manual_keys.reused == 1 {
                "it"
            } else {
                "them"
            },
        ));
    } else if manual_keys.new > 0 {
        st.push(format!(
            "key-use ledger (a TPM NV index without a PCR policy, kept across updates): the new \
             image's {} manual keys are not in the old image, so the ledger accepts them",
            manual_keys.new
        ));
    } else {
        st.push(
            "key-use ledger (a TPM NV index without a PCR policy) is kept across updates; the \
             new image has no manual keys"
                .to_string(),
        );
    }

    let creds = |b: &Build| -> BTreeSet<String> {
        b.plan
            .ike
            .iter()
            .flat_map(|i| i.credentials.iter().map(|c| format!("tpm:{}", c.as_str())))
            .collect()
    };
    let (oc, nc) = (creds(old), creds(new));
    let device_credentials_added: Vec<String> = nc.difference(&oc).cloned().collect();
    if !nc.is_empty() {
        st.push(format!(
            "device credentials the new plan names: {}{}",
            nc.iter().cloned().collect::<Vec<_>>().join(", "),
            if device_credentials_added.is_empty() {
                " (the same as the old plan)".to_string()
            } else {
                format!(" (new: {})", device_credentials_added.join(", "))
            }
        ));
    }

    Sealed {
        signed_pcr_policy,
        pcr_public_key,
        release_key,
        same_release_key,
        secure_boot_signer,
        pcrs_kept_secure_boot_off: if off_ok { kept_off } else { Vec::new() },
        pcrs_kept_secure_boot_on: if on_ok { kept_on } else { Vec::new() },
        manual_keys,
        device_credentials_added,
        statements: st,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use gateway_plan as gp;
    use policy_blob as blob;
    use signing::manifest as m;

    use super::*;

    fn component(group: &str, name: &str, version: &str, sha: &str) -> Component {
        Component {
            group: group.into(),
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
            sha256: sha.into(),
        }
    }

    fn pcrs(tag: &str, secure_boot: bool) -> PcrSummary {
        let v = |pcr: &str| format!("{pcr}{tag}");
        PcrSummary {
            pcr4: v("4"),
            pcr4_secure_boot_on: secure_boot.then(|| v("4sb")),
            pcr7_secure_boot_off: "7off".into(),
            pcr7_secure_boot_on: secure_boot.then(|| "7on".to_string()),
            pcr11: v("11"),
            pcr12: "12off".into(),
            pcr12_secure_boot_on: secure_boot.then(|| "12on".to_string()),
        }
    }

    fn manifest(version: &str, security_version: u64) -> Manifest {
        let d = |s: &str| m::Digested {
            sha256: s.into(),
            size: 1,
        };
        Manifest {
            format: m::FORMAT,
            profile: m::ProfileInfo {
                name: "gw-a".into(),
                version: version.into(),
                security_version,
                lab: true,
                sha256: "p".into(),
            },
            lock: m::LockInfo {
                sha256: "l".into(),
                source_date_epoch: 1,
            },
            policy: d(&format!("policy-{version}")),
            plan: d(&format!("plan-{version}")),
            components: vec![component("red", "dnsmasq-base", "2.89-1", "a")],
            kernel: m::KernelInfo {
                version: "6.1.0-26-amd64".into(),
                package: "linux-image-6.1.0-26-amd64".into(),
                image_sha256: "k".into(),
                modules: vec!["kernel/drivers/net/tun.ko".into()],
            },
            binaries: [("viaduct".to_string(), "v".to_string())].into(),
            initramfs: d("i"),
            uki: m::UkiInfo {
                sha256: format!("uki-{version}"),
                authenticode_sha256: "a".into(),
                size: 1,
                cmdline: format!("console=ttyS0 appliance.plan=plan-{version}"),
                sections: Vec::new(),
            },
            boot_loader: None,
            esp: m::EspInfo {
                sha256: "e".into(),
                size: 1,
                files: BTreeMap::new(),
            },
            disk: m::DiskInfo {
                sha256: "d".into(),
                size: 1,
                guid: "g".into(),
                partitions: Vec::new(),
            },
            build_epoch: 1,
            pcrs: pcrs(version, false),
            secure_boot: None,
            outputs: BTreeMap::new(),
        }
    }

    fn plan() -> gp::Plan {
        let path = |p: &str| gp::InitramfsPath::new(p).unwrap();
        gp::Plan {
            profile_name: gp::ProfileName::new("gw-a").unwrap(),
            profile_version: gp::ProfileVersion::new("1").unwrap(),
            security_version: gp::SecurityVersion(1),
            policy_path: path("/etc/appliance/policy.bin"),
            policy_sha256: gp::digest::Sha256Digest([0; 32]),
            manual_keys: Vec::new(),
            modules: Vec::new(),
            compartments: vec![gp::CompartmentPlan {
                side: gp::Side::Red,
                root: path("/personalities/red"),
                uid_base: 100_000,
                memory_max: 256 << 20,
                pids_max: 256,
                nic: gp::ShortName::new("nic", "lan").unwrap(),
                nic_match: gp::NicMatch {
                    pci: Some("0000:00:02.0".into()),
                    ..Default::default()
                },
                setup: path("/etc/appliance/network"),
                socket_families: vec![gp::SocketFamily::Unix, gp::SocketFamily::Inet],
                services: vec![gp::ServicePlan {
                    name: gp::ShortName::new("service", "dnsmasq").unwrap(),
                    restart: gp::Restart::Always,
                    caps: vec![gp::Capability::from_name("CAP_NET_ADMIN").unwrap()],
                    argv: vec!["/usr/sbin/dnsmasq".into(), "-k".into()],
                }],
                vm: None,
            }],
            viaduct: path("/usr/sbin/viaduct"),
            ike: None,
            boot_assessment: None,
            update: None,
            fpm: None,
        }
    }

    fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn net(b: u8) -> blob::Prefix {
        blob::Prefix::new(ip(10, b, 0, 0), 24)
    }

    /// A lab policy: one manually keyed tunnel 10.1/24 <-> 10.2/24, its SPD
    /// entry, and one filter rule.
    fn policy(aead: blob::Aead, key: u8) -> blob::Policy {
        let sa = |spi: u32, k: u8| blob::ManualSa {
            spi: blob::Spi(spi),
            key: blob::KeyMaterial::new(vec![k; aead.key_material_len()]),
        };
        let tunnel = blob::Tunnel::new(
            1,
            "lan-a-to-lan-b",
            ip(198, 51, 100, 1),
            ip(198, 51, 100, 2),
            aead,
        )
        .with_local_ts(blob::TrafficSelector::prefix(net(1)))
        .with_remote_ts(blob::TrafficSelector::prefix(net(2)))
        .with_manual_keys(sa(0x1001, key), sa(0x1002, key.wrapping_add(1)));
        blob::Policy::new("gw-a", "1")
            .with_local(ip(198, 51, 100, 1))
            .with_tunnel(tunnel)
            .with_spd(
                "lan-a-to-lan-b",
                blob::Selector::between(net(1), net(2)),
                blob::SpdAction::Protect(blob::TunnelId(1)),
            )
            .with_filter(
                "icmp-in",
                blob::Direction::Inbound,
                blob::Selector {
                    protocol: blob::Protocol::ICMP,
                    ..blob::Selector::between(net(2), net(1))
                },
                blob::FilterAction::Accept,
            )
    }

    fn build(m: Manifest, policy: blob::Policy, plan: gp::Plan, signer: Option<&str>) -> Build {
        Build {
            dir: PathBuf::from(format!("out/{}", m.profile.version)),
            manifest: m,
            signer: signer.map(str::to_string),
            plan,
            policy,
            pcr_public_key: None,
            pcr_signature: false,
        }
    }

    #[test]
    fn packages_are_added_removed_changed_or_rebuilt() {
        let old = [
            component("red", "dnsmasq-base", "2.89-1", "a"),
            component("red", "iproute2", "6.1.0-3", "b"),
            component("black", "busybox-static", "1:1.35.0-4", "c"),
            component("black", "gone", "1", "d"),
        ];
        let new = [
            component("red", "dnsmasq-base", "2.90-1", "e"),
            component("red", "iproute2", "6.1.0-3", "b"),
            component("black", "busybox-static", "1:1.35.0-4", "f"),
            component("black", "fresh", "2", "g"),
        ];
        let got: Vec<(String, Change, Option<String>, Option<String>)> =
            compare_packages(&old, &new)
                .into_iter()
                .map(|p| (p.name, p.change, p.old, p.new))
                .collect();
        let s = |x: &str| Some(x.to_string());
        assert_eq!(
            got,
            vec![
                (
                    "busybox-static".into(),
                    Change::Rebuilt,
                    s("1:1.35.0-4"),
                    s("1:1.35.0-4")
                ),
                (
                    "dnsmasq-base".into(),
                    Change::Changed,
                    s("2.89-1"),
                    s("2.90-1")
                ),
                ("fresh".into(), Change::Added, None, s("2")),
                ("gone".into(), Change::Removed, s("1"), None),
            ]
        );
        assert!(compare_packages(&old, &old).is_empty());
    }

    #[test]
    fn each_pcr_is_compared_and_secure_boot_rows_only_when_predicted() {
        let rows = compare_pcrs(&pcrs("a", true), &pcrs("b", true));
        let got: Vec<(u32, &str, PcrStatus)> = rows
            .iter()
            .map(|r| (r.pcr, r.secure_boot, r.status))
            .collect();
        assert_eq!(
            got,
            vec![
                (4, "off", PcrStatus::Changes),
                (4, "on", PcrStatus::Changes),
                (7, "off", PcrStatus::Unchanged),
                (7, "on", PcrStatus::Unchanged),
                (11, "either", PcrStatus::Changes),
                (12, "off", PcrStatus::Unchanged),
                (12, "on", PcrStatus::Unchanged),
            ]
        );
        assert_eq!(rows[0].old.as_deref(), Some("4a"));
        assert_eq!(rows[0].new.as_deref(), Some("4b"));
        assert_eq!(rows[4].manifest_field, "pcr11");
        // The new UKI is not Secure Boot-signed: its rows are the old build's only.
        let rows = compare_pcrs(&pcrs("a", true), &pcrs("a", false));
        assert_eq!(rows[1].status, PcrStatus::OnlyOld);
        assert_eq!(rows[1].new, None);
        assert_eq!(rows[0].status, PcrStatus::Unchanged);
        // Neither: no Secure Boot rows at all.
        assert_eq!(compare_pcrs(&pcrs("a", false), &pcrs("b", false)).len(), 4);
    }

    #[test]
    fn policy_rules_compare_in_words_and_keys_are_never_shown() {
        let old = words::policy_items(&policy(blob::Aead::Aes256Gcm16, 7));
        let mut p = policy(blob::Aead::ChaCha20Poly1305, 9);
        p = p.with_tcp_filter(
            "no-telnet-out",
            blob::Direction::Outbound,
            blob::Selector {
                protocol: blob::Protocol::TCP,
                dst_ports: blob::PortRange::single(23),
                ..blob::Selector::any_v4()
            },
            blob::TcpFlags {
                mask: blob::TcpFlags::SYN,
                value: blob::TcpFlags::SYN,
            },
            blob::FilterAction::Drop,
        );
        p.spd[0].action = blob::SpdAction::Discard;
        let new = words::policy_items(&p);
        let changes = compare_items(&old, &new);
        let summary: Vec<(Kind, &str, Change)> = changes
            .iter()
            .map(|c| (c.kind, c.key.as_str(), c.change))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    Kind::SpdEntry,
                    "lan-a-to-lan-b (10.1.0.0/24 -> 10.2.0.0/24 any protocol)",
                    Change::Changed
                ),
                (Kind::Tunnel, "lan-a-to-lan-b", Change::Changed),
                (Kind::FilterRule, "no-telnet-out", Change::Added),
            ]
        );
        assert_eq!(
            changes[0].fields,
            vec![FieldChange {
                field: "action".into(),
                old: Some("protect in tunnel lan-a-to-lan-b".into()),
                new: Some("discard".into()),
            }]
        );
        let tunnel: Vec<&str> = changes[1].fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(tunnel, ["cipher", "keying"]);
        assert_eq!(changes[1].fields[0].old.as_deref(), Some("aes256gcm16"));
        assert_eq!(
            changes[1].fields[0].new.as_deref(),
            Some("chacha20poly1305")
        );
        // Same SPIs, other keys: said, not shown.
        assert_eq!(
            changes[1].fields[1].new.as_deref(),
            Some("manual keys (SPI out 0x00001001, in 0x00001002) (another key)")
        );
        assert_eq!(
            changes[2].new.as_deref(),
            Some(
                "no-telnet-out: direction outbound (red -> black), match 0.0.0.0/0 -> 0.0.0.0/0 \
                 tcp dst port 23, tcp flags syn, action drop"
            )
        );
        let json = serde_json::to_string(&changes).unwrap();
        for secret in ["070707", "090909", "[7,", "[9,"] {
            assert!(!json.contains(secret), "a key shows in {json}");
        }
        assert!(compare_items(&old, &old).is_empty());
    }

    /// IDS signatures compare by sid: a new one is added, one whose content
    /// changed says how, one whose header alone changed says its
    /// definition changed.
    #[test]
    fn ids_signatures_compare_by_sid() {
        use viaduct_ids::{ContentMatch, Proto, Signature};
        let sig = |sid, bytes: &[u8]| {
            let mut s = Signature::any(sid, Proto::Tcp, vec![ContentMatch::new(bytes)]);
            s.msg = format!("m{sid}");
            s
        };
        let a = policy(blob::Aead::Aes256Gcm16, 7).with_ids(vec![sig(1, b"GET"), sig(2, b"x")]);
        let mut b = a.clone();
        let ids = b.ids.as_mut().unwrap();
        ids.signatures[0].contents[0] = ContentMatch {
            nocase: true,
            ..ContentMatch::new(b"G\"T|")
        };
        ids.signatures[1].dst_ports = viaduct_ids::PortMatch::from_ranges(vec![(80, 80)]);
        ids.signatures.push(sig(3, b"y"));
        let changes = compare_items(&words::policy_items(&a), &words::policy_items(&b));
        let summary: Vec<(Kind, &str, Change)> = changes
            .iter()
            .map(|c| (c.kind, c.key.as_str(), c.change))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Kind::IdsSignature, "sid 1", Change::Changed),
                (Kind::IdsSignature, "sid 2", Change::Changed),
                (Kind::IdsSignature, "sid 3", Change::Added),
            ]
        );
        let contents = changes[0]
            .fields
            .iter()
            .find(|f| f.field == "contents")
            .unwrap();
        assert_eq!(contents.old.as_deref(), Some("content:\"GET\""));
        assert_eq!(
            contents.new.as_deref(),
            Some("content:\"G|22|T|7c|\"; nocase")
        );
        let header: Vec<&str> = changes[1].fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(header, ["definition"]);
    }

    #[test]
    fn reordered_rules_are_an_order_change_not_an_item_change() {
        let mut a = policy(blob::Aead::Aes256Gcm16, 7);
        a = a.with_filter(
            "all-out",
            blob::Direction::Outbound,
            blob::Selector::any_v4(),
            blob::FilterAction::Accept,
        );
        let mut b = a.clone();
        b.filters.reverse();
        let (old, new) = (words::policy_items(&a), words::policy_items(&b));
        assert!(compare_items(&old, &new).is_empty());
        assert!(order_changes(&old, &new, Kind::FilterRule));
        assert!(!order_changes(&old, &new, Kind::SpdEntry));
        assert!(!order_changes(&old, &old, Kind::FilterRule));
    }

    #[test]
    fn plan_items_compare_by_compartment_and_service() {
        let old = plan();
        let mut new = plan();
        new.compartments[0].memory_max = 512 << 20;
        new.compartments[0].services[0]
            .argv
            .push("--no-resolv".into());
        let changes = compare_items(&words::plan_items(&old), &words::plan_items(&new));
        let got: Vec<(String, Vec<FieldChange>)> = changes
            .into_iter()
            .map(|c| (format!("{} {}", c.kind.words(), c.key), c.fields))
            .collect();
        let f = |field: &str, old: &str, new: &str| FieldChange {
            field: field.into(),
            old: Some(old.into()),
            new: Some(new.into()),
        };
        assert_eq!(
            got,
            vec![
                (
                    "compartment red".to_string(),
                    vec![f("memory limit", "256 MiB", "512 MiB")]
                ),
                (
                    "service red dnsmasq".to_string(),
                    vec![f(
                        "command",
                        "/usr/sbin/dnsmasq -k",
                        "/usr/sbin/dnsmasq -k --no-resolv"
                    )]
                ),
            ]
        );
        // Learning routes from black is a change of the Viaduct's.
        let mut learns = plan();
        learns.fpm = Some(gp::FpmPlan { port: 2620 });
        let changes = compare_items(&words::plan_items(&old), &words::plan_items(&learns));
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].fields,
            vec![f(
                "routes from black",
                "none",
                "FPM socket 127.0.0.1:2620 in black"
            )]
        );
    }

    /// Another release key (or none) is a change an administrator must see:
    /// the next update has to be signed by the new key.
    #[test]
    fn a_changed_release_key_and_boot_judgement_are_reported() {
        let mut old = plan();
        old.update = Some(gp::UpdatePlan {
            port: 7443,
            tries: 3,
            release_key: [1; 32],
        });
        let mut new = old.clone();
        new.update = Some(gp::UpdatePlan {
            port: 7443,
            tries: 3,
            release_key: [2; 32],
        });
        new.boot_assessment = Some(gp::BootAssessment {
            timeout_s: 300,
            tunnels: 2,
        });
        let changes = compare_items(&words::plan_items(&old), &words::plan_items(&new));
        assert_eq!(changes.len(), 1, "{changes:?}");
        let c = &changes[0];
        assert_eq!(
            format!("{} {}", c.kind.words(), c.key),
            "boot boot and updates"
        );
        let fields: Vec<&str> = c.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["judged", "updates"]);
        let updates = &c.fields[1];
        assert!(updates
            .old
            .as_deref()
            .is_some_and(|o| o.contains(&update_bundle::fingerprint(&[1; 32]))));
        assert!(updates
            .new
            .as_deref()
            .is_some_and(|n| n.contains(&update_bundle::fingerprint(&[2; 32]))));
        assert_eq!(
            c.fields[0].new.as_deref(),
            Some("good once ready with 2 tunnel(s) keyed, within 5m")
        );
        new.update = None;
        let changes = compare_items(&words::plan_items(&old), &words::plan_items(&new));
        assert!(changes[0]
            .fields
            .iter()
            .any(|f| f.new.as_deref() == Some("none (no release key)")));
    }

    /// Whether gateways running the old image will take the new one: its
    /// manifest must be signed by the old plan's release key.
    #[test]
    fn the_old_images_release_key_decides_whether_the_update_is_taken() {
        let with_key = |k: u8| {
            let mut p = plan();
            p.update = Some(gp::UpdatePlan {
                port: 7443,
                tries: 3,
                release_key: [k; 32],
            });
            p
        };
        let pol = || policy(blob::Aead::Aes256Gcm16, 7);
        let (k1, k2) = (
            update_bundle::fingerprint(&[1; 32]),
            update_bundle::fingerprint(&[2; 32]),
        );
        // Same key throughout: nothing to say.
        let old = build(manifest("1", 1), pol(), with_key(1), Some(&k1));
        let new = build(manifest("2", 2), pol(), with_key(1), Some(&k1));
        let d = Diff::between(&old, &new);
        assert!(
            !d.warnings
                .iter()
                .any(|w| w.contains("bundle") || w.contains("updates")),
            "{:?}",
            d.warnings
        );
        // Signed by another key than the old image accepts: refused.
        let new = build(manifest("2", 2), pol(), with_key(2), Some(&k2));
        let d = Diff::between(&old, &new);
        assert!(
            d.warnings.iter().any(|w| w.contains(&format!(
                "gateways running the old image accept bundles signed by {k1}; the new manifest is signed by {k2}: they refuse its bundle"
            ))),
            "{:?}",
            d.warnings
        );
        // A rotation: signed by the old key, carrying the new one.
        let new = build(manifest("2", 2), pol(), with_key(2), Some(&k1));
        let d = Diff::between(&old, &new);
        assert!(
            d.warnings
                .iter()
                .any(|w| w.contains("a key rotation") && !w.contains("refuse")),
            "{:?}",
            d.warnings
        );
        assert!(!d.warnings.iter().any(|w| w.contains("they refuse")));
        // No release key on either side.
        let new = build(manifest("2", 2), pol(), plan(), Some(&k1));
        let d = Diff::between(&old, &new);
        assert!(d
            .warnings
            .iter()
            .any(|w| w.contains("the new image takes no updates")));
        let mut ab = plan();
        ab.boot_assessment = Some(gp::BootAssessment {
            timeout_s: 300,
            tunnels: 0,
        });
        let d = Diff::between(&build(manifest("1", 1), pol(), ab, Some(&k1)), &new);
        assert!(d
            .warnings
            .iter()
            .any(|w| w.contains("the old image takes no updates")));
    }

    #[test]
    fn a_security_version_going_down_is_the_first_warning() {
        let old = build(
            manifest("2", 5),
            policy(blob::Aead::Aes256Gcm16, 7),
            plan(),
            None,
        );
        let new = build(
            manifest("1", 4),
            policy(blob::Aead::Aes256Gcm16, 7),
            plan(),
            None,
        );
        let d = Diff::between(&old, &new);
        assert_eq!(d.security_version.direction, Direction::Down);
        assert!(d.warnings[0].contains("DOWN (5 → 4)"), "{:?}", d.warnings);
        assert!(!d.authenticated);
        let text = d.to_text();
        assert!(
            text.starts_with("gw-a 2 → 1, security version 5 → 4 (DOWN)\n"),
            "{text}"
        );
        assert!(text.contains("signatures: NOT CHECKED"), "{text}");
        assert!(text.contains("release key: unknown"), "{text}");
    }

    #[test]
    fn an_unchanged_security_version_with_other_packages_is_flagged() {
        let old = build(
            manifest("1", 3),
            policy(blob::Aead::Aes256Gcm16, 7),
            plan(),
            None,
        );
        let mut nm = manifest("1.1", 3);
        nm.components = vec![component("red", "dnsmasq-base", "2.90-1", "b")];
        let new = build(nm, policy(blob::Aead::Aes256Gcm16, 7), plan(), None);
        let d = Diff::between(&old, &new);
        assert_eq!(d.security_version.direction, Direction::Same);
        assert!(
            d.warnings
                .iter()
                .any(|w| w.starts_with("security version stays 3 although packages change")),
            "{:?}",
            d.warnings
        );
        assert!(d
            .to_text()
            .contains("  ~ dnsmasq-base (red) 2.89-1 → 2.90-1\n"));
    }

    #[test]
    fn sealed_secrets_name_the_release_key_kept_pcrs_and_reused_manual_keys() {
        let key = gp::keyuse::KeyUse([1; 16]);
        let mut op = plan();
        op.manual_keys = vec![key];
        let mut np = plan();
        np.manual_keys = vec![key, gp::keyuse::KeyUse([2; 16])];
        let mut om = manifest("1", 1);
        let mut nm = manifest("2", 2);
        let sb = |cert: &str| m::SecureBootInfo {
            certificate_sha256: cert.into(),
            subject: format!("CN={cert}"),
        };
        om.secure_boot = Some(sb("one"));
        nm.secure_boot = Some(sb("two"));
        om.pcrs = pcrs("1", true);
        nm.pcrs = pcrs("2", true);
        let p = policy(blob::Aead::Aes256Gcm16, 7);
        let old = build(om, p.clone(), op, Some("sha256:k"));
        let new = build(nm, p, np, Some("sha256:k"));
        let d = Diff::between(&old, &new);
        assert!(d.authenticated);
        let s = &d.sealed;
        assert_eq!(s.same_release_key, Some(true));
        assert_eq!(s.pcrs_kept_secure_boot_off, vec![7, 12]);
        assert_eq!(s.pcrs_kept_secure_boot_on, vec![7, 12]);
        assert_eq!(s.manual_keys.reused, 1);
        assert_eq!(s.manual_keys.new, 2);
        let text = d.to_text();
        for want in [
            "signatures: both manifests verified, release key sha256:k\n",
            "these images seal nothing to the TPM",
            "Secure Boot off: PCR 7, 12 kept, PCR 4, 11 change; Secure Boot on: PCR 7, 12 kept, PCR 4, 11 change",
            "release key unchanged: both manifests, with their predicted PCRs, are signed by sha256:k",
            "Secure Boot signer changes (CN=one → CN=two)",
            "1 of the new image's 2 manual keys is already recorded",
            "  ! 1 of the new image's manual keys was used by the old image",
            "  PCR 7   secure boot on   unchanged  7on…\n",
        ] {
            assert!(text.contains(want), "no {want:?} in:\n{text}");
        }
        // A release key change is a warning.
        let other = build(
            manifest("3", 3),
            policy(blob::Aead::Aes256Gcm16, 7),
            plan(),
            Some("sha256:j"),
        );
        let d = Diff::between(&old, &other);
        assert_eq!(d.sealed.same_release_key, Some(false));
        assert!(d
            .warnings
            .iter()
            .any(|w| w.starts_with("the release key changes")));
        assert!(d
            .warnings
            .iter()
            .any(|w| w.starts_with("the new UKI is not Secure Boot-signed")));
        assert!(d.sealed.pcrs_kept_secure_boot_on.is_empty());
    }

    /// The text an administrator reads, whole: a rollback of a lab image
    /// with a newer package, another cipher, a new filter rule, a bigger
    /// compartment, a reused manual key and another Secure Boot signer.
    #[test]
    fn the_text_report_reads_as_an_administrator_needs_it() {
        let key = gp::keyuse::KeyUse([1; 16]);
        let mut op = plan();
        op.manual_keys = vec![key];
        let mut np = op.clone();
        np.compartments[0].memory_max = 512 << 20;
        let mut om = manifest("1.1", 2);
        let mut nm = manifest("1.0", 1);
        nm.components = vec![component("red", "dnsmasq-base", "2.90-1", "b")];
        nm.kernel
            .modules
            .push("kernel/drivers/net/e1000e.ko".into());
        nm.binaries.insert("viaduct".into(), "w".into());
        nm.uki.cmdline = "console=ttyS0 quiet appliance.plan=x".into();
        om.secure_boot = Some(m::SecureBootInfo {
            certificate_sha256: "aa".into(),
            subject: "CN=release 2024".into(),
        });
        nm.secure_boot = Some(m::SecureBootInfo {
            certificate_sha256: "bb".into(),
            subject: "CN=release 2025".into(),
        });
        om.pcrs = pcrs("1111111111111111111111", true);
        nm.pcrs = pcrs("2222222222222222222222", true);
        // Another signer certificate: another PCR 7 with Secure Boot on.
        nm.pcrs.pcr7_secure_boot_on = Some("7on-release-2025".into());
        let mut np_policy = policy(blob::Aead::ChaCha20Poly1305, 7);
        np_policy = np_policy.with_filter(
            "icmp-out",
            blob::Direction::Outbound,
            blob::Selector {
                protocol: blob::Protocol::ICMP,
                ..blob::Selector::between(net(1), net(2))
            },
            blob::FilterAction::Drop,
        );
        let old = build(om, policy(blob::Aead::Aes256Gcm16, 7), op, Some("sha256:k"));
        let new = build(nm, np_policy, np, Some("sha256:k"));
        insta::assert_snapshot!(Diff::between(&old, &new).to_text());
    }

    #[test]
    fn an_identical_build_reports_no_change() {
        let b = build(
            manifest("1", 1),
            policy(blob::Aead::Aes256Gcm16, 7),
            plan(),
            None,
        );
        let d = Diff::between(&b, &b);
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        assert!(d.packages.is_empty() && d.binaries.is_empty() && !d.kernel.changes());
        assert!(d.policy.changes.is_empty() && d.plan.changes.is_empty());
        assert!(d.pcrs.iter().all(|p| p.status == PcrStatus::Unchanged));
        let text = d.to_text();
        for want in [
            "packages: unchanged\n",
            "kernel: 6.1.0-26-amd64 unchanged\n",
            "policy: unchanged\n",
            "plan: unchanged\n",
        ] {
            assert!(text.contains(want), "no {want:?} in:\n{text}");
        }
    }
}
