//! `appliance build` and `appliance lock`: argument handling and progress
//! display around the `builder` crate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use builder::{BuildOptions, Progress};
use indicatif::{ProgressBar, ProgressStyle};

use crate::Outcome;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Raw GPT disk image (always written).
    Raw,
    /// qcow2 next to the raw image.
    Qcow2,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Profile file.
    profile: PathBuf,
    /// Output directory (default: out/<profile name>/). Replaced atomically.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Output formats, comma-separated (default: the profile's `image.formats`).
    #[arg(long, value_delimiter = ',')]
    format: Vec<Format>,
    /// Cache directory for packages and assembled parts.
    #[arg(long, env = "APPLIANCE_CACHE")]
    cache: Option<PathBuf>,
    /// Directory with the static gateway binaries (default: target/x86_64-unknown-linux-gnu/release beside this program).
    #[arg(long, env = "APPLIANCE_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Build exactly the packages the lock file pins, or fail; never change the lock
    /// (bit-for-bit rebuilds). Without it, a build moves the lock to Debian's current
    /// versions and prints each package that changed.
    #[arg(long)]
    locked: bool,
    /// Fetch pinned versions that Debian's archive has dropped from this snapshot
    /// archive (base URL under which the packages' pool/ paths exist, e.g.
    /// https://snapshot.debian.org/archive/debian/20261101T000000Z); repeat for
    /// several archives (debian, debian-security). Implies --locked.
    #[arg(long, value_name = "URL")]
    snapshot: Vec<String>,
    /// Use the package indices already downloaded; never refresh them.
    #[arg(long, conflicts_with = "refresh")]
    offline: bool,
    /// Refresh the package indices even if they are less than an hour old.
    #[arg(long)]
    refresh: bool,
    /// Sign manifest.json with this key (NAME.key from `appliance key generate`).
    #[arg(long, value_name = "NAME.key")]
    key: Option<PathBuf>,
    #[command(flatten)]
    pass: crate::sign_cmd::PassphraseArgs,
    /// Sign the UKI for UEFI Secure Boot with this RSA key (PEM; needs --secure-boot-cert).
    #[arg(long, value_name = "KEY.pem", requires = "secure_boot_cert")]
    secure_boot_key: Option<PathBuf>,
    /// The X.509 certificate (PEM) matching --secure-boot-key; enroll it in the firmware's db.
    #[arg(long, value_name = "CERT.pem", requires = "secure_boot_key")]
    secure_boot_cert: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// Profile file; the lock is written beside it (`NAME.lock`).
    profile: PathBuf,
    /// Cache directory (holds the private apt state).
    #[arg(long, env = "APPLIANCE_CACHE")]
    cache: Option<PathBuf>,
}

pub fn cache_dir(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match arg {
        Some(c) => Ok(c),
        None => components::cache::user_cache_dir()
            .context("no cache directory: set HOME, XDG_CACHE_HOME or --cache"),
    }
}

pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let dir = exe
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // target/{debug,release}/appliance → target/x86_64-unknown-linux-gnu/release
    let cross = dir.join("../x86_64-unknown-linux-gnu/release");
    if cross.join("gateway-init").exists() {
        cross
    } else {
        dir
    }
}

pub fn lock(args: LockArgs, json: bool) -> anyhow::Result<Outcome> {
    let cache = cache_dir(args.cache)?;
    let spinner = spinner(json, "resolving packages");
    let result = builder::lock_profile(&args.profile, &cache);
    spinner.finish_and_clear();
    let (path, lock, changes) = result?;
    if json {
        println!(
            "{}",
            serde_json::json!({"lock": path, "packages": lock.packages.len(), "sha256": lock.digest().to_hex(), "source_date_epoch": lock.source_date_epoch.0,
                "changes": changes.iter().map(|c| serde_json::json!({"package": c.name, "old": c.old, "new": c.new})).collect::<Vec<_>>()})
        );
    } else {
        if !changes.is_empty() {
            print_lock_moves(&path, false, &changes, true);
        }
        println!(
            "{}: {} packages, digest {}",
            path.display(),
            lock.packages.len(),
            lock.digest().to_hex()
        );
    }
    Ok(Outcome::Ok)
}

/// Tells the administrator which packages a lock moves to, one per line.
fn print_lock_moves(lock: &Path, created: bool, changes: &[components::LockChange], written: bool) {
    if created {
        println!(
            "{}: new lock file, pinning Debian's current versions (written once the build succeeds)",
            lock.display()
        );
        return;
    }
    let when = if written {
        ""
    } else {
        " (written once the build succeeds; --locked keeps the old pins)"
    };
    if changes.is_empty() {
        println!(
            "{}: the profile's package groups change; no package changes version{when}",
            lock.display()
        );
        return;
    }
    println!(
        "{}: {} package(s) move to Debian's current versions{when}:",
        lock.display(),
        changes.len()
    );
    for c in changes {
        println!("  {c}");
    }
}

fn spinner(hidden: bool, msg: &str) -> ProgressBar {
    let pb = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

pub fn build(args: BuildArgs, json: bool) -> anyhow::Result<Outcome> {
    let profile = match profiles::load_profile(&args.profile) {
        Ok(p) => p,
        Err(d) => {
            crate::profile_cmd::print_diagnostics(&d, json, &args.profile);
            return Ok(Outcome::Failed);
        }
    };
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("out").join(&profile.appliance.name));
    let opts = BuildOptions {
        profile: args.profile.clone(),
        out: out.clone(),
        qcow2: if args.format.is_empty() {
            None
        } else {
            Some(args.format.contains(&Format::Qcow2))
        },
        cache_dir: cache_dir(args.cache)?,
        bin_dir: args.bin_dir.unwrap_or_else(default_bin_dir),
        compression: None,
        lock: builder::LockPolicy {
            locked: args.locked,
            snapshots: args.snapshot.clone(),
            refresh: if args.offline {
                components::Refresh::Never
            } else if args.refresh {
                components::Refresh::Always
            } else {
                components::Refresh::default()
            },
        },
        // Keys are read (and the passphrase asked for) before the slow work.
        signing_key: match &args.key {
            Some(k) => Some(std::sync::Arc::new(crate::sign_cmd::read_signing_key(
                k, &args.pass,
            )?)),
            None => None,
        },
        secure_boot: match (&args.secure_boot_key, &args.secure_boot_cert) {
            (Some(k), Some(c)) => Some(std::sync::Arc::new(
                builder::secure_boot::CertSigner::load(k, c)?,
            )),
            _ => None,
        },
    };
    let pb = spinner(json, "building");
    let mut fetch_bar: Option<ProgressBar> = None;
    let result = builder::build(&opts, &mut |p| match p {
        Progress::Stage(s) => pb.set_message(s.to_string()),
        Progress::Refreshing => pb.set_message("refreshing Debian's package indices"),
        Progress::LockMoves {
            lock,
            created,
            changes,
        } => {
            if !json {
                pb.suspend(|| print_lock_moves(&lock, created, &changes, false));
            }
        }
        Progress::Reused(what) => pb.set_message(format!("reusing cached {what}")),
        Progress::Fetch(components::Event::Start { total, .. }) => {
            let bar = if json {
                ProgressBar::hidden()
            } else {
                ProgressBar::new(total as u64)
            };
            bar.set_style(
                ProgressStyle::with_template("  packages {pos}/{len} {wide_bar} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            fetch_bar = Some(bar);
        }
        Progress::Fetch(
            components::Event::Cached { name, .. } | components::Event::Stored { name, .. },
        ) => {
            if let Some(b) = &fetch_bar {
                b.inc(1);
                b.set_message(name);
            }
        }
        Progress::Fetch(components::Event::Downloading { count, bytes }) => pb.set_message(
            format!("downloading {count} packages ({} KiB)", bytes / 1024),
        ),
        Progress::Fetch(components::Event::Done) => {
            if let Some(b) = fetch_bar.take() {
                b.finish_and_clear();
            }
        }
    });
    pb.finish_and_clear();
    let built = result.with_context(|| format!("building {}", args.profile.display()))?;
    let m = &built.manifest;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "out": built.out,
                "lock": {
                    "path": built.lock,
                    "sha256": m.lock.sha256,
                    "written": built.lock_written.is_some(),
                    "changes": built.lock_written.iter().flatten().map(|c| serde_json::json!({"package": c.name, "old": c.old, "new": c.new})).collect::<Vec<_>>(),
                },
                "outputs": m.outputs,
                "disk": {"sha256": m.disk.sha256, "size": m.disk.size},
                "uki": {"sha256": m.uki.sha256, "authenticode_sha256": m.uki.authenticode_sha256, "size": m.uki.size},
                "initramfs": {"sha256": m.initramfs.sha256, "size": m.initramfs.size},
                "policy_sha256": m.policy.sha256,
                "pcrs": m.pcrs,
                "signed": opts.signing_key.is_some(),
                "updates": built.updates.as_ref().map(|u| serde_json::json!({"port": u.port, "tries": u.tries, "release_key": update_bundle::fingerprint(&u.release_key)})),
                "cards": built.cards,
                "durations": built.durations.iter().map(|(k, v)| (k.clone(), serde_json::json!((v * 1000.0).round() / 1000.0))).collect::<serde_json::Map<_, _>>(),
            })
        );
    } else {
        let total: f64 = built.durations.iter().map(|(_, s)| s).sum();
        println!(
            "built {} {} in {:.1}s → {}",
            m.profile.name,
            m.profile.version,
            total,
            built.out.display()
        );
        if built.lock_written.is_some() {
            println!("  lock         {} written", built.lock.display());
        }
        for (name, digest) in &m.outputs {
            println!("  {name:<12} sha256 {digest}");
        }
        println!(
            "  uki          {} bytes, authenticode {}",
            m.uki.size, m.uki.authenticode_sha256
        );
        println!(
            "  pcrs         4 {}  7 {}  12 {} (secure boot off)  11 {}",
            m.pcrs.pcr4, m.pcrs.pcr7_secure_boot_off, m.pcrs.pcr12, m.pcrs.pcr11
        );
        if let (Some(p4), Some(p7), Some(p12)) = (
            &m.pcrs.pcr4_secure_boot_on,
            &m.pcrs.pcr7_secure_boot_on,
            &m.pcrs.pcr12_secure_boot_on,
        ) {
            println!("               4 {p4}  7 {p7}  12 {p12} (secure boot on)");
        }
        if opts.signing_key.is_some() {
            println!(
                "  manifest.sig signed by {}",
                opts.signing_key
                    .as_ref()
                    .map(|k| k.public_key().fingerprint())
                    .unwrap_or_default()
            );
        } else {
            println!(
                "  manifest is unsigned: sign it with `appliance sign {} --key NAME.key`",
                built.out.display()
            );
        }
        for c in &built.cards {
            let what = format!(
                "card {} ({}{})",
                c.nic,
                c.driver.as_deref().unwrap_or("any driver"),
                c.pci
                    .as_deref()
                    .map(|p| format!(", {p}"))
                    .unwrap_or_default()
            );
            let where_ = match c.attach {
                "vfio" => format!("passed through by VFIO: its driver runs in {}'s VM", c.side),
                "macvtap" => "by macvtap: its driver stays in the gateway's kernel (trusted base)".to_string(),
                _ => "its driver runs in the gateway's kernel (trusted base), shared by both compartments".to_string(),
            };
            println!("  {:<12} {what} {where_}", c.side);
        }
        match &built.updates {
            Some(u) => {
                let fp = update_bundle::fingerprint(&u.release_key);
                println!(
                    "  updates      port {} on black, bundles signed by {fp} (boot tries {})",
                    u.port, u.tries
                );
                if let Some(k) = &opts.signing_key {
                    if k.public_key().fingerprint() != fp {
                        println!(
                            "  note         the release key ([signing] public_key) is not the key that signed this build: a key rotation; sign its successors with the new key"
                        );
                    }
                }
            }
            None => println!(
                "  updates      none: an A/B image takes updates when built with --key or [signing] public_key"
            ),
        }
    }
    Ok(Outcome::Ok)
}
