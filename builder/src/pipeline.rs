//! The build: its options, progress events and output, and [`build`], which
//! runs the stages of [`crate::stages`] in order. See the crate docs for the
//! invariants.

use std::path::PathBuf;
use std::time::Instant;

use components::LockChange;
use images::initramfs::Compression;
use images::Epoch;

use crate::manifest::{self, Manifest};
use crate::stages::{commit, disk, fetch, initramfs, manifest as manifest_stage, parts, profile};
use crate::stages::{render, uki};
use crate::{BuildError, LockPolicy};

/// What to build and where.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The profile file.
    pub profile: PathBuf,
    /// Output directory (replaced atomically).
    pub out: PathBuf,
    /// Write `disk.qcow2` too (overrides the profile's `formats` when `Some`).
    pub qcow2: Option<bool>,
    /// Cache root: `debs/` (packages by SHA-256), `parts/` (assembled parts), `apt/` (private apt state).
    pub cache_dir: PathBuf,
    /// Directory holding the static gateway binaries (`gateway-init` and `viaduct`).
    pub bin_dir: PathBuf,
    /// How the lock file is used (see [`crate::locking`]).
    pub lock: LockPolicy,
    /// How the initramfs segments are compressed (`None`: [`crate::COMPRESSION`];
    /// other settings exist for measuring boot times).
    pub compression: Option<Compression>,
    /// Sign `manifest.json` with this key (writes `manifest.sig`).
    pub signing_key: Option<std::sync::Arc<signing::SigningKey>>,
    /// Sign the UKI for UEFI Secure Boot.
    pub secure_boot: Option<std::sync::Arc<dyn SecureBootSigner>>,
}

/// Signs a UKI with Authenticode for UEFI Secure Boot and describes the
/// firmware state that accepts it (implemented by the CLI on top of the
/// `secureboot` crate, so this crate stays free of X.509 code).
pub trait SecureBootSigner: std::fmt::Debug + Send + Sync {
    /// The signed image.
    fn sign(&self, uki: &[u8]) -> Result<Vec<u8>, String>;
    /// The signer: certificate SHA-256 and subject.
    fn signer(&self) -> manifest::SecureBootInfo;
    /// The Secure Boot variables of firmware enrolled with our certificate.
    fn variables(&self) -> secureboot::varstore::EnrolledVariables;
}

/// Progress events for the front end.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A stage starts.
    Stage(&'static str),
    /// The package indices are being refreshed from Debian's archive.
    Refreshing,
    /// The build moves the lock file: `changes` lists each package whose
    /// version changes (empty when the lock file is new). The file is written
    /// once the image is in place.
    LockMoves {
        /// The lock file.
        lock: PathBuf,
        /// Whether there was no lock file before.
        created: bool,
        /// Each package that changes.
        changes: Vec<LockChange>,
    },
    /// Package fetching progress.
    Fetch(components::Event),
    /// A cached part was reused (name).
    Reused(String),
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The output directory.
    pub out: PathBuf,
    /// The manifest written there.
    pub manifest: Manifest,
    /// The lock file the build used.
    pub lock: PathBuf,
    /// `Some` when the build wrote the lock file: each package that changed
    /// (empty when the file is new).
    pub lock_written: Option<Vec<LockChange>>,
    /// Wall-clock seconds per stage (not part of any output file).
    pub durations: Vec<(String, f64)>,
    /// Where the image takes updates and who signs them (its plan's
    /// `update` line); `None`: it takes none.
    pub updates: Option<gateway_plan::UpdatePlan>,
    /// Where each personality's card is driven: what the trusted base
    /// holds of the cards' drivers.
    pub cards: Vec<Card>,
}

/// One personality's card and whose kernel drives it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Card {
    /// `red` or `black`.
    pub side: String,
    /// The card's name in the personality.
    pub nic: String,
    /// Its driver.
    pub driver: Option<String>,
    /// Its PCI address, if the profile gives one.
    pub pci: Option<String>,
    /// `compartment` (the gateway's kernel drives it for a compartment),
    /// `vfio` (passed through: the personality's VM drives it) or `macvtap`
    /// (the gateway's kernel drives it, the VM gets a macvtap queue).
    pub attach: &'static str,
}

impl Card {
    /// Whether its driver runs in the gateway's own kernel (the trusted base).
    pub fn driver_in_gateway_kernel(&self) -> bool {
        self.attach != "vfio"
    }
}

/// The cards of a plan.
fn cards(plan: &gateway_plan::Plan) -> Vec<Card> {
    plan.compartments
        .iter()
        .map(|c| Card {
            side: c.side.as_str().to_string(),
            nic: c.nic.as_str().to_string(),
            driver: c.nic_match.driver.clone(),
            pci: c.nic_match.pci.clone(),
            attach: match c.vm.as_ref().map(|v| v.nic) {
                None => "compartment",
                Some(gateway_plan::VmNic::Vfio) => "vfio",
                Some(gateway_plan::VmNic::Macvtap) => "macvtap",
            },
        })
        .collect()
}

pub(crate) struct Stages<'a> {
    durations: Vec<(String, f64)>,
    last: Instant,
    pub(crate) progress: &'a mut dyn FnMut(Progress),
}

impl Stages<'_> {
    fn start(&mut self, name: &'static str) {
        self.finish();
        self.durations.push((name.to_string(), 0.0));
        (self.progress)(Progress::Stage(name));
    }
    fn finish(&mut self) {
        let now = Instant::now();
        if let Some(last) = self.durations.last_mut() {
            last.1 += now.duration_since(self.last).as_secs_f64();
        }
        self.last = now;
    }
}

/// Builds the image. See the crate docs.
pub fn build(
    opts: &BuildOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<BuildOutput, BuildError> {
    let mut st = Stages {
        durations: Vec::new(),
        last: Instant::now(),
        progress,
    };
    st.start("profile");
    let input = profile::resolve(opts)?;
    st.start("lock");
    let locked = fetch::lock(opts, &input.profile, &mut st)?;
    st.start("fetch");
    let fetched = fetch::fetch(opts, &input.profile, locked, &mut st)?;
    let epoch = Epoch(fetched.lock().source_date_epoch.0);
    st.start("kernel");
    let kernel = parts::kernel(opts, &input, &fetched, &mut st)?;
    st.start("rootfs");
    let roots = parts::roots(opts, &input, &fetched, &kernel, &mut st)?;
    st.start("initramfs");
    let rendered = render::render(&input, &kernel, &roots)?;
    let initramfs = initramfs::assemble(opts, epoch, &input, &kernel, &roots, &rendered)?;
    let initramfs_digest = manifest::Digested {
        sha256: hex::encode(initramfs.sha256),
        size: initramfs.bytes.len() as u64,
    };
    st.start("uki");
    let uki = uki::build(opts, &input, &fetched, &kernel, &rendered, initramfs)?;
    st.start("disk");
    let staging = commit::Staging::beside(&opts.out)?;
    let mut written = disk::write(&input.profile, epoch, &uki, &staging)?;
    if disk::wants_qcow2(opts, &input.profile) {
        st.start("qcow2");
        disk::qcow2(&staging, &mut written)?;
    }
    st.start("manifest");
    let inputs = manifest_stage::Inputs {
        input: &input,
        fetched: &fetched,
        kernel: &kernel,
        rendered: &rendered,
        initramfs: initramfs_digest,
        uki: &uki,
    };
    let manifest = manifest_stage::write(opts, inputs, written, &staging)?;
    st.start("commit");
    commit::commit(opts, staging, &fetched)?;
    st.finish();
    let plan = gateway_plan::Plan::decode(&rendered.plan_bytes).ok();
    Ok(BuildOutput {
        out: opts.out.clone(),
        manifest,
        lock: fetched.resolved.path.clone(),
        lock_written: fetched.resolved.update.clone(),
        durations: st.durations,
        updates: plan.as_ref().and_then(|p| p.update),
        cards: plan.as_ref().map(cards).unwrap_or_default(),
    })
}
