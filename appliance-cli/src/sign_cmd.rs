//! `appliance key`, `sign`, `verify`, `measure`: argument handling around the
//! `signing` crate.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use signing::keys::{PublicKey, SigningKey};
use signing::verify::{MANIFEST, SIGNATURE};
use zeroize::Zeroizing;

use crate::fsutil::{write_atomic, write_atomic_mode};

/// The boot loader's copy in an output directory.
const BOOT_LOADER_OUTPUT: &str = "bootx64.efi";
use crate::Outcome;

/// The environment variable read for the passphrase when no other source is given.
pub const PASSPHRASE_ENV: &str = "APPLIANCE_KEY_PASSPHRASE";

/// Where a passphrase comes from. Never from the command line itself.
#[derive(Debug, Clone, clap::Args)]
pub struct PassphraseArgs {
    /// Read the passphrase from the first line of this file.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Read the passphrase from this environment variable
    /// (default: APPLIANCE_KEY_PASSPHRASE if set, else a prompt on the terminal).
    #[arg(long, value_name = "VAR")]
    passphrase_env: Option<String>,
}

impl PassphraseArgs {
    /// Get the passphrase; `confirm` asks twice when prompting.
    pub fn read(&self, what: &str, confirm: bool) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        if let Some(f) = &self.passphrase_file {
            let text = Zeroizing::new(
                std::fs::read(f)
                    .with_context(|| format!("reading passphrase file {}", f.display()))?,
            );
            let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                bail!("passphrase file {}: first line is empty", f.display());
            }
            return Ok(Zeroizing::new(line.to_vec()));
        }
        let var = self
            .passphrase_env
            .clone()
            .or_else(|| std::env::var_os(PASSPHRASE_ENV).map(|_| PASSPHRASE_ENV.to_string()));
        if let Some(var) = var {
            let v = std::env::var_os(&var).with_context(|| {
                format!("environment variable {var} (named by --passphrase-env) is not set")
            })?;
            use std::os::unix::ffi::OsStringExt;
            let v = Zeroizing::new(v.into_vec());
            if v.is_empty() {
                bail!("environment variable {var} is empty");
            }
            return Ok(v);
        }
        if !std::io::stdin().is_terminal() {
            bail!("no passphrase for {what}: give --passphrase-file FILE, --passphrase-env VAR, or set {PASSPHRASE_ENV} (no terminal to prompt on)");
        }
        let p = Zeroizing::new(
            rpassword::prompt_password(format!("passphrase for {what}: "))
                .context("reading passphrase")?,
        );
        if confirm {
            let q = Zeroizing::new(
                rpassword::prompt_password("repeat passphrase: ").context("reading passphrase")?,
            );
            if *p != *q {
                bail!("the passphrases differ");
            }
        }
        if p.is_empty() {
            bail!("empty passphrase");
        }
        Ok(Zeroizing::new(p.as_bytes().to_vec()))
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCmd {
    /// Generate an Ed25519 signing key: NAME.key (encrypted PKCS#8 PEM, mode 0600) and NAME.pub.
    Generate {
        /// Base name of the two files.
        #[arg(long, value_name = "NAME")]
        out: PathBuf,
        #[command(flatten)]
        pass: PassphraseArgs,
    },
    /// Print a public key's fingerprint.
    Show {
        /// NAME.pub
        public_key: PathBuf,
    },
}

fn with_ext(base: &Path, ext: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

pub fn key(cmd: KeyCmd, json: bool) -> anyhow::Result<Outcome> {
    match cmd {
        KeyCmd::Generate { out, pass } => {
            let (kf, pf) = (with_ext(&out, "key"), with_ext(&out, "pub"));
            for f in [&kf, &pf] {
                if f.exists() {
                    bail!(
                        "{} exists; not overwriting a key (remove it first)",
                        f.display()
                    );
                }
            }
            let passphrase = pass.read(&kf.display().to_string(), true)?;
            let key = SigningKey::generate()?;
            let pem = key.to_encrypted_pem(&passphrase)?;
            write_atomic_mode(&kf, pem.as_bytes(), 0o600, false)?;
            let public = key.public_key();
            write_atomic_mode(&pf, public.to_pem().as_bytes(), 0o644, false)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"private_key": kf, "public_key": pf, "fingerprint": public.fingerprint()})
                );
            } else {
                println!("{}: private key (encrypted, mode 0600)", kf.display());
                println!("{}: public key", pf.display());
                println!("fingerprint {}", public.fingerprint());
            }
            Ok(Outcome::Ok)
        }
        KeyCmd::Show { public_key } => {
            let k = read_public_key(&public_key)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"public_key": public_key, "algorithm": "ed25519", "fingerprint": k.fingerprint()})
                );
            } else {
                println!("{} ed25519 {}", public_key.display(), k.fingerprint());
            }
            Ok(Outcome::Ok)
        }
    }
}

pub fn read_public_key(p: &Path) -> anyhow::Result<PublicKey> {
    let bytes = std::fs::read(p).with_context(|| format!("reading public key {}", p.display()))?;
    Ok(PublicKey::from_pem(&bytes, &p.display().to_string())?)
}

pub fn read_signing_key(p: &Path, pass: &PassphraseArgs) -> anyhow::Result<SigningKey> {
    let bytes = Zeroizing::new(
        std::fs::read(p).with_context(|| format!("reading signing key {}", p.display()))?,
    );
    let what = p.display().to_string();
    // Refuse the wrong kind of file before asking for a passphrase.
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        // Let the parser produce the precise error.
        return Ok(SigningKey::from_encrypted_pem(&bytes, b"-", &what)?);
    }
    let passphrase = pass.read(&what, false)?;
    Ok(SigningKey::from_encrypted_pem(&bytes, &passphrase, &what)?)
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Output directory of `appliance build`.
    outdir: PathBuf,
    /// Signing key (NAME.key).
    #[arg(long)]
    key: PathBuf,
    #[command(flatten)]
    pass: PassphraseArgs,
}

pub fn sign(args: SignArgs, json: bool) -> anyhow::Result<Outcome> {
    let mpath = args.outdir.join(MANIFEST);
    let manifest = std::fs::read(&mpath).with_context(|| format!("reading {}", mpath.display()))?;
    signing::Manifest::from_json(&manifest)
        .map_err(|e| anyhow::anyhow!("{}: {e}", mpath.display()))?;
    let key = read_signing_key(&args.key, &args.pass)?;
    let sig = key.sign(&manifest);
    let spath = args.outdir.join(SIGNATURE);
    write_atomic(&spath, &sig)?;
    let fp = key.public_key().fingerprint();
    if json {
        println!(
            "{}",
            serde_json::json!({"signature": spath, "fingerprint": fp})
        );
    } else {
        println!("{}: signed by {fp}", spath.display());
    }
    Ok(Outcome::Ok)
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Output directory of `appliance build`, or a disk image with manifest.json and manifest.sig beside it.
    target: PathBuf,
    /// Public key (NAME.pub) the manifest must be signed with.
    #[arg(long)]
    pubkey: PathBuf,
}

pub fn verify(args: VerifyArgs, json: bool) -> anyhow::Result<Outcome> {
    let key = read_public_key(&args.pubkey)?;
    if !args.target.exists() {
        bail!("{}: no such file or directory", args.target.display());
    }
    let report = signing::verify::verify(&args.target, &key)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"ok": report.ok(), "report": report})
            )?
        );
    } else {
        for c in &report.checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            let mut line = format!("{mark} {}", c.name);
            if !c.ok {
                if let (Some(e), Some(a)) = (&c.expected, &c.actual) {
                    line.push_str(&format!(": manifest {e}, image {a}"));
                }
                if !c.detail.is_empty() {
                    line.push_str(&format!(" ({})", c.detail));
                }
            }
            println!("{line}");
        }
        let failed: Vec<&str> = report.failures().map(|c| c.name.as_str()).collect();
        if failed.is_empty() {
            println!(
                "verified {}: {} checks passed, signed by {}",
                report.appliance.as_deref().unwrap_or("image"),
                report.checks.len(),
                report.key
            );
        } else {
            println!(
                "verification FAILED: {} differ: {}",
                failed.len(),
                failed.join(", ")
            );
        }
    }
    Ok(if report.ok() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

#[derive(Debug, clap::Args)]
pub struct MeasureArgs {
    /// Output directory of `appliance build` (or a UKI file).
    target: PathBuf,
    /// Also replay this TCG event log (binary_bios_measurements) and compare.
    #[arg(long, value_name = "FILE")]
    eventlog: Option<PathBuf>,
    /// The boot loader that starts the UKI (default: `bootx64.efi` of the
    /// output directory; none for a UKI file the firmware starts directly).
    #[arg(long, value_name = "FILE")]
    boot_loader: Option<PathBuf>,
}

pub fn measure(args: MeasureArgs, json: bool) -> anyhow::Result<Outcome> {
    let uki_path = if args.target.is_dir() {
        args.target.join("uki.efi")
    } else {
        args.target.clone()
    };
    let uki =
        std::fs::read(&uki_path).with_context(|| format!("reading {}", uki_path.display()))?;
    let loader_path = args.boot_loader.clone().or_else(|| {
        let p = args.target.join(BOOT_LOADER_OUTPUT);
        (args.target.is_dir() && p.exists()).then_some(p)
    });
    let loader = match &loader_path {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let vars = signing::secure_boot::inspect(&uki).ok().map(|(_, v)| v);
    let p = signing::measure::predict(&uki, loader.as_deref(), vars.as_ref())
        .with_context(|| uki_path.display().to_string())?;
    let mut outcome = Outcome::Ok;
    let mut replay = None;
    if let Some(log) = &args.eventlog {
        let bytes = std::fs::read(log).with_context(|| format!("reading {}", log.display()))?;
        let parsed = signing::eventlog::EventLog::parse(&bytes)
            .with_context(|| log.display().to_string())?;
        let pcrs = parsed
            .replay_sha256()
            .with_context(|| log.display().to_string())?;
        let get = |i: u32| pcrs.get(&i).map(hex::encode).unwrap_or_default();
        let off = get(4) == p.pcr4.sha256 && get(7) == p.pcr7_secure_boot_off.sha256;
        let on = p
            .pcr4_secure_boot_on
            .as_ref()
            .is_some_and(|x| x.sha256 == get(4))
            && p.pcr7_secure_boot_on
                .as_ref()
                .is_some_and(|x| x.sha256 == get(7));
        let off12 = get(12) == p.pcr12.sha256;
        let on12 = p
            .pcr12_secure_boot_on
            .as_ref()
            .is_some_and(|x| x.sha256 == get(12));
        let ok = ((off && off12) || (on && on12)) && get(11) == p.pcr11.sha256;
        if !ok {
            outcome = Outcome::Failed;
        }
        replay = Some((get(4), get(7), get(11), ok));
    }
    if json {
        let mut v = serde_json::to_value(&p)?;
        if let Some((a, b, c, ok)) = &replay {
            v["eventlog"] = serde_json::json!({"pcr4": a, "pcr7": b, "pcr11": c, "matches": ok});
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("# {}", p.platform);
        let show = |pcr: &signing::measure::PredictedPcr| {
            println!(
                "pcr {:<2} sha256 {}  ({})",
                pcr.pcr, pcr.sha256, pcr.condition
            );
            for e in &pcr.events {
                println!("    {:<34} {}  {}", e.event_type, e.sha256, e.description);
            }
        };
        show(&p.pcr4);
        show(&p.pcr7_secure_boot_off);
        if let Some(on) = &p.pcr4_secure_boot_on {
            show(on);
        }
        if let Some(on) = &p.pcr7_secure_boot_on {
            show(on);
        }
        show(&p.pcr11);
        show(&p.pcr12);
        if let Some(on) = &p.pcr12_secure_boot_on {
            show(on);
        }
        if let Some((a, b, c, ok)) = replay {
            println!(
                "event log replay: pcr 4 {a}, pcr 7 {b}, pcr 11 {c}: {}",
                if ok { "matches" } else { "DIFFERS" }
            );
        }
    }
    Ok(outcome)
}
