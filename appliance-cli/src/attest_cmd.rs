//! `appliance enroll` and `appliance attest`: a verifier talking to a gateway's
//! attestation agent through its management port (black relays the bytes).
//!
//! Enrolment checks the EK certificate chain, the AK's attributes and proves by
//! credential activation that the AK lives in that TPM, then records the device
//! (`fleet/NAME/device.json`, `ak.pub`, `ek-cert.der`). Attestation asks for a quote
//! over a fresh nonce and reports every check by name (`attest::quote`); it exits 0
//! only when all hold, and then records the TPM's clock for the next time.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use attest_wire::proto::QuoteRequest;

use crate::sign_cmd::read_public_key;
use crate::update_cmd::{connect, parse_target};
use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// The gateway's management address on its black side: HOST[:PORT]
    /// (default port 7443).
    #[arg(value_name = "HOST[:PORT]")]
    target: String,
    /// The CA certificates (PEM) the EK certificate must chain to: the TPM
    /// vendors' roots and intermediates (in the lab, swtpm's local CA). Every
    /// certificate in the file is a trust anchor.
    #[arg(long, value_name = "CA.pem")]
    ek_ca: PathBuf,
    /// The device's record directory (fleet/NAME); its last component is the
    /// device's name.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Seconds the exchange may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct AttestArgs {
    /// The gateway's management address on its black side: HOST[:PORT].
    #[arg(value_name = "HOST[:PORT]")]
    target: String,
    /// The device's record (from `appliance enroll`).
    #[arg(long, value_name = "DIR")]
    device: PathBuf,
    /// The image's reference values (OUTDIR/reference-values.json); the signed
    /// manifest beside it must name them.
    #[arg(long, value_name = "FILE")]
    reference: PathBuf,
    /// The release key that signed the image (NAME.pub).
    #[arg(long, value_name = "NAME.pub")]
    pubkey: PathBuf,
    /// Seconds the exchange may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Also write the evidence into DIR, in the formats tpm2-tools and Keylime
    /// read (ak.pub, quote.msg, quote.sig, quote.pcrs, eventlog.bin, runtime.log,
    /// request.json, qualifying.hex).
    #[arg(long, value_name = "DIR")]
    evidence: Option<PathBuf>,
}

fn open(target: &str, timeout: u64) -> anyhow::Result<(std::net::TcpStream, String)> {
    let (host, port) = parse_target(target)?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let (stream, _) = connect(target, &host, port, deadline, timeout)?;
    stream.set_read_timeout(Some(Duration::from_secs(timeout)))?;
    stream.set_write_timeout(Some(Duration::from_secs(timeout)))?;
    let dialled = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((stream, dialled))
}

pub fn enroll(args: EnrollArgs, json: bool) -> anyhow::Result<Outcome> {
    let pem = std::fs::read(&args.ek_ca)
        .with_context(|| format!("reading the EK CA file {}", args.ek_ca.display()))?;
    let cas = attest::ekcert::parse_pem_bundle(&pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.ek_ca.display()))?;
    if cas.is_empty() {
        bail!("{}: no certificate in the file", args.ek_ca.display());
    }
    let name = args
        .out
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--out {}: name the device's directory (e.g. fleet/gw-a)",
                args.out.display()
            )
        })?
        .to_owned();
    let (stream, dialled) = open(&args.target, args.timeout)?;
    let mut e = run_enroll(stream, &name, &dialled, &cas)?;
    if let Ok(old) = attest::fleet::Device::load(&args.out) {
        // Enrolling the same TPM again is fine; another TPM under the same name is not.
        if e.device.ek_public != old.ek_public {
            bail!(
                "{}: already enrolled with another TPM (its EK differs); remove the directory to enrol this device under that name",
                args.out.display()
            );
        }
        if e.device.ak_public == old.ak_public {
            e.device.last_clock = old.last_clock;
        }
    }
    finish(args, e, json)
}

fn run_enroll(
    mut stream: std::net::TcpStream,
    name: &str,
    dialled: &str,
    cas: &[Vec<u8>],
) -> anyhow::Result<attest::client::Enrolled> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    attest::client::enroll(&mut stream, name, dialled, cas, now)
        .map_err(|e| anyhow::anyhow!("{dialled}: enrolment refused: {e}"))
}

fn finish(args: EnrollArgs, e: attest::client::Enrolled, json: bool) -> anyhow::Result<Outcome> {
    e.device
        .save(&args.out)
        .map_err(|m| anyhow::anyhow!("{m}"))?;
    attest::fleet::write_atomic(&args.out.join("ek-cert.der"), &e.ek_cert)
        .map_err(|m| anyhow::anyhow!("{m}"))?;
    if json {
        let v = serde_json::json!({
            "device": e.device,
            "record": args.out,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut o = std::io::stdout().lock();
        writeln!(o, "enrolled {} ({})", e.device.name, e.device.enrolled_at)?;
        writeln!(o, "  TPM          {}", e.device.tpm)?;
        writeln!(o, "  EK chain     {}", e.device.ek_chain.join(" <- "))?;
        writeln!(
            o,
            "  AK           {} (restricted signing key, activated by credential)",
            e.device.ak_name
        )?;
        match e.device.identity_point() {
            Some(point) => {
                let hex = hex::encode(point);
                writeln!(
                    o,
                    "  identity     ECDSA P-256 in the TPM, certified by the AK ({})",
                    args.out.join("identity.pem").display()
                )?;
                writeln!(
                    o,
                    "  pin it       in a peer's profile: public_key = \"ecdsa-p256:{hex}\""
                )?;
                writeln!(
                    o,
                    "               (strongSwan: pubkeys = identity.pem); this gateway signs with private_key = \"tpm:identity\""
                )?;
            }
            None => writeln!(
                o,
                "  identity     none this boot (it needs an A/B image signed by a release key)"
            )?,
        }
        writeln!(
            o,
            "  record       {}",
            args.out.join(attest::fleet::DEVICE).display()
        )?;
    }
    Ok(Outcome::Ok)
}

pub fn attest(args: AttestArgs, json: bool) -> anyhow::Result<Outcome> {
    let key = read_public_key(&args.pubkey)?;
    let mut device =
        attest::fleet::Device::load(&args.device).map_err(|e| anyhow::anyhow!("{e}"))?;
    let reference = attest::reference::load(&args.reference, &key);
    let (mut stream, dialled) = open(&args.target, args.timeout)?;
    let request = QuoteRequest {
        nonce: attest::client::nonce().map_err(|e| anyhow::anyhow!("{e}"))?,
        pcrs: attest::quote::DEFAULT_PCRS,
        target: dialled.clone(),
    };
    let evidence = attest::client::request_quote(&mut stream, &request)
        .map_err(|e| anyhow::anyhow!("{dialled}: {e}"))?;
    if let Some(dir) = &args.evidence {
        attest::export::save_evidence(dir, &request, &evidence)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let report = attest::quote::check(&evidence, &request, &device, &reference);
    if report.ok() {
        device.last_clock = report.clock;
        device
            .save(&args.device)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if json {
        let v = serde_json::json!({
            "device": device.name,
            "target": dialled,
            "ok": report.ok(),
            "checks": report.checks,
            "pcrs": report.pcrs,
            "matched": report.matched,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let mut o = std::io::stdout().lock();
        writeln!(o, "attesting {} at {dialled}", device.name)?;
        for c in &report.checks {
            writeln!(
                o,
                "  {} {:<20} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            )?;
        }
        let failed = report.checks.iter().filter(|c| !c.ok).count();
        if failed == 0 {
            writeln!(o, "attested: every check holds")?;
        } else {
            writeln!(o, "not attested: {failed} check(s) failed")?;
        }
    }
    Ok(if report.ok() {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

#[derive(Debug, clap::Subcommand)]
pub enum ReferenceCmd {
    /// Write the reference values of one or more builds in another verifier's
    /// format (several builds during a rollout: the fleet accepts old and new).
    Export(ExportArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// Keylime's `tpm_policy` JSON (PCR → accepted values, and the mask).
    Keylime,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The format.
    #[arg(long, value_enum)]
    format: ExportFormat,
    /// The release key that signed the builds (NAME.pub): each build's reference
    /// values are taken only through its signed manifest.
    #[arg(long, value_name = "NAME.pub")]
    pubkey: PathBuf,
    /// Where to write (default: standard output); written atomically.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Build output directories (each with reference-values.json, manifest.json
    /// and manifest.sig).
    #[arg(value_name = "OUTDIR", required = true)]
    outdirs: Vec<PathBuf>,
}

pub fn reference(cmd: ReferenceCmd) -> anyhow::Result<Outcome> {
    let ReferenceCmd::Export(args) = cmd;
    let key = read_public_key(&args.pubkey)?;
    let mut refs = Vec::new();
    for d in &args.outdirs {
        let r = attest::reference::load(&d.join("reference-values.json"), &key)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        refs.push(r.values);
    }
    let v = match args.format {
        ExportFormat::Keylime => attest::export::keylime_tpm_policy(&refs),
    };
    let mut text = serde_json::to_string_pretty(&v)?;
    text.push('\n');
    match &args.output {
        None => std::io::stdout().write_all(text.as_bytes())?,
        Some(p) => {
            attest::fleet::write_atomic(p, text.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "wrote {} (Keylime tpm_policy for {} build(s))",
                p.display(),
                refs.len()
            );
        }
    }
    Ok(Outcome::Ok)
}

#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// The gateway's management address on its black side: HOST[:PORT].
    #[arg(value_name = "HOST[:PORT]")]
    target: String,
    /// The device's record (from `appliance enroll`): the secrets are encrypted to
    /// its TPM.
    #[arg(long, value_name = "DIR")]
    device: PathBuf,
    /// A secret: `NAME=@FILE` (the file's bytes, as they are) or `NAME=hex:HEX`;
    /// NAME as in the profile's `tpm:<NAME>`. May be given several times.
    #[arg(long = "secret", value_name = "NAME=@FILE", required = true)]
    secrets: Vec<String>,
    /// The release key (NAME.key) the image trusts: it signs what is provisioned.
    #[arg(long, value_name = "NAME.key")]
    key: PathBuf,
    #[command(flatten)]
    pass: crate::sign_cmd::PassphraseArgs,
    /// Seconds the exchange may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

fn read_secret(spec: &str) -> anyhow::Result<(String, zeroize::Zeroizing<Vec<u8>>)> {
    let (name, value) = spec
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--secret {spec:?}: give NAME=@FILE or NAME=hex:HEX"))?;
    let bytes = if let Some(path) = value.strip_prefix('@') {
        zeroize::Zeroizing::new(
            std::fs::read(path).with_context(|| format!("--secret {name}: reading {path}"))?,
        )
    } else if let Some(h) = value.strip_prefix("hex:") {
        zeroize::Zeroizing::new(
            hex::decode(h).map_err(|e| anyhow::anyhow!("--secret {name}: hex: {e}"))?,
        )
    } else {
        bail!("--secret {name}: the value must be @FILE or hex:HEX (never the secret itself on the command line)");
    };
    Ok((name.to_owned(), bytes))
}

pub fn provision(args: ProvisionArgs, json: bool) -> anyhow::Result<Outcome> {
    let device = attest::fleet::Device::load(&args.device).map_err(|e| anyhow::anyhow!("{e}"))?;
    let secrets = args
        .secrets
        .iter()
        .map(|s| read_secret(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key = crate::sign_cmd::read_signing_key(&args.key, &args.pass)?;
    let (mut stream, dialled) = open(&args.target, args.timeout)?;
    let sign = |d: &[u8; 32]| key.sign(d);
    let result = attest::client::provision(&mut stream, &device, &secrets, &sign)
        .map_err(|e| anyhow::anyhow!("{dialled}: {e}"))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "device": device.name,
                "target": dialled,
                "result": result,
            }))?
        );
    } else {
        println!("{}: {result}", device.name);
    }
    Ok(Outcome::Ok)
}
