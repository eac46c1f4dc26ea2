//! `appliance secure-boot enroll`: write an OVMF variable store with our
//! certificate enrolled (see `signing::secure_boot` for what is enrolled).

use std::path::PathBuf;

use anyhow::{bail, Context};
use builder::secure_boot::OWNER;
use secureboot::{varstore, Certificate};
use signing::secure_boot::describe;

use crate::fsutil::write_atomic;
use crate::Outcome;

#[derive(Debug, clap::Subcommand)]
pub enum SecureBootCmd {
    /// Write a copy of an OVMF variable store with our certificate enrolled as PK, KEK and db.
    Enroll {
        /// Certificate (PEM) given to `build --secure-boot-cert`.
        #[arg(long)]
        cert: PathBuf,
        /// Empty variable store template.
        #[arg(long, default_value = "/usr/share/OVMF/OVMF_VARS_4M.fd")]
        template: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: SecureBootCmd, json: bool) -> anyhow::Result<Outcome> {
    match cmd {
        SecureBootCmd::Enroll {
            cert,
            template,
            out,
        } => {
            let c = Certificate::from_pem(
                &std::fs::read(&cert).with_context(|| format!("reading {}", cert.display()))?,
            )
            .with_context(|| format!("certificate {}", cert.display()))?;
            let t = match std::fs::read(&template) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    bail!("{}: not found (apt-get install ovmf)", template.display())
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", template.display())),
            };
            if varstore::VarStore::parse(&t)
                .ok()
                .and_then(|s| {
                    s.get("dbx", secureboot::guid::EFI_IMAGE_SECURITY_DATABASE)
                        .cloned()
                })
                .is_some()
            {
                eprintln!(
                    "note: {} has its own dbx; it is kept, and PCR 7 will differ from `appliance measure`, which assumes a template without dbx",
                    template.display()
                );
            }
            let vars = varstore::enroll(&t, c.der(), OWNER)
                .with_context(|| format!("enrolling into {}", template.display()))?;
            write_atomic(&out, &vars)?;
            let d = describe(&c);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"out": out, "certificate_sha256": d.certificate_sha256, "subject": d.subject})
                );
            } else {
                println!(
                    "{}: PK, KEK and db hold {} ({})",
                    out.display(),
                    d.subject,
                    d.certificate_sha256
                );
            }
            Ok(Outcome::Ok)
        }
    }
}
