//! The IDS rows of a firewall lab in which a gateway runs the shipped ids
//! profile (the firewall with IDS rules: `profiles/lab/firewall`'s gw-b),
//! after the firewall's own checks, which it passes like the other:
//!
//! 1. its LAN host fetches a file from the internet host with a Shellshock
//!    probe as its User-Agent: the transfer completes (an `alert` rule), the
//!    Viaduct's console has the alert as a JSON line (sid 1000001,
//!    `allowed`, the LAN host's address and port 80) and counts the match;
//! 2. its LAN host downloads a file holding the EICAR test string: the
//!    segment carrying it is dropped (a `drop` rule, sid 1000003, on the
//!    server's side of the connection) and the connection blocked, so the
//!    download never completes and the string never reaches the LAN; the
//!    alert line says `blocked`; `ids_drop` counts it;
//! 3. the other gateway, the firewall without IDS rules, lets the same
//!    download through whole: the drop is the IDS's.

use std::time::Instant;

use super::firewall::{counter, viaduct_counters, web_hosts, wget};
use super::{file_sha256, Report};
use crate::host::{io, Error};
use crate::lab::{Gateway, Lab};

/// The EICAR anti-virus test string (eicar.org): harmless, and what the
/// ids profile's `drop` rule looks for.
pub const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A User-Agent with a Shellshock probe (the profile's `alert` rule).
const SHELLSHOCK: &str = "() { :; }; /bin/id";

/// Bytes of filler before and after the test string: the download spans
/// many segments, the string one of the later ones.
const FILLER: usize = 96 * 1024;

/// The Viaduct's console lines from `from` on holding an IDS alert of `sid`.
fn alerts(lab: &Lab, g: &Gateway, from: usize, sid: u32) -> Vec<String> {
    let mut c = lab.console(g);
    c.poll();
    let want = format!("\"signature_id\":{sid},");
    c.lines()
        .iter()
        .skip(from)
        .filter(|l| l.contains("viaduct| {\"event_type\":\"alert\"") && l.contains(&want))
        .cloned()
        .collect()
}

fn console_len(lab: &Lab, g: &Gateway) -> usize {
    let mut c = lab.console(g);
    c.poll();
    c.len()
}

fn sum(lines: &[String], prefix: &str, key: &str) -> u64 {
    counter(lines, prefix, key).unwrap_or(0)
}

pub(super) fn checks(
    lab: &Lab,
    report: &mut Report,
    log: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let web = web_hosts(lab, "ids", 11)?;
    let (internet, want) = (web.internet, web.want.clone());
    let run = lab.run_dir();
    // The download with the test string in its middle.
    let mut eicar: Vec<u8> = (0..FILLER).map(|i| b'a' + (i % 26) as u8).collect();
    eicar.extend_from_slice(EICAR);
    eicar.extend((0..FILLER).map(|i| b'A' + (i % 26) as u8));
    let eicar_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&eicar));
    std::fs::write(run.join("www/eicar"), &eicar).map_err(io("writing the EICAR file"))?;

    for g in lab.gateways.iter().filter(|g| g.ids) {
        let lan = g.letter.to_ascii_uppercase();
        let name = format!(
            "LAN {lan} → internet host: a request with a Shellshock probe passes, alerted (sid 1000001) as a JSON line on {}'s console, counted",
            g.name
        );
        report.check(log, &name, || {
            let from = console_len(lab, g);
            let got = fetch(lab, g, Some(SHELLSHOCK), &format!("http://{internet}/data"))?;
            let ok = got.is_some();
            let got = got.unwrap_or_default();
            let counters = viaduct_counters(lab, g)?;
            let matches = sum(&counters, "out ids sid=1000001 ", "matches");
            let lines = alerts(lab, g, from, 1000001);
            let good = lines.iter().any(|l| {
                l.contains("\"action\":\"allowed\"")
                    && l.contains("\"direction\":\"red-to-black\"")
                    && l.contains(&format!("\"src_ip\":\"{}\"", g.host))
                    && l.contains("\"dest_port\":80,")
            });
            Ok((
                ok && got == want && good && matches >= 1,
                format!(
                    "{}; {} alert line(s){}; out ids sid=1000001 matches={matches}",
                    if ok && got == want {
                        "transfer complete, SHA-256 equal"
                    } else {
                        "TRANSFER FAILED"
                    },
                    lines.len(),
                    lines
                        .first()
                        .map(|l| format!(": {}", l.split("viaduct| ").nth(1).unwrap_or(l)))
                        .unwrap_or_default()
                ),
            ))
        })?;

        let name = format!(
            "LAN {lan} → internet host: a download holding the EICAR test string is dropped by the IDS (sid 1000003), its connection blocked, counted"
        );
        report.check(log, &name, || {
            let from = console_len(lab, g);
            let before = viaduct_counters(lab, g)?;
            let dest = run.join(format!("ids-eicar-{}", g.name));
            let t = Instant::now();
            let ok = wget(
                &mut lab.host_command(g, "busybox"),
                &format!("http://{internet}/eicar"),
                &dest.display().to_string(),
                8,
            )?;
            let secs = t.elapsed().as_secs_f64();
            let got = std::fs::read(&dest).unwrap_or_default();
            let _ = std::fs::remove_file(&dest);
            let reached = got.windows(EICAR.len()).any(|w| w == EICAR);
            let after = viaduct_counters(lab, g)?;
            let drops = sum(&after, "in drop ids_drop", "ids_drop")
                .saturating_sub(sum(&before, "in drop ids_drop", "ids_drop"));
            let lines = alerts(lab, g, from, 1000003);
            let blocked = lines.iter().any(|l| {
                l.contains("\"action\":\"blocked\"")
                    && l.contains("\"direction\":\"black-to-red\"")
                    && l.contains(&format!("\"dest_ip\":\"{}\"", g.host))
            });
            let later = sum(&after, "in drop ids_blocked", "ids_blocked");
            Ok((
                !ok && !reached && got.len() < eicar.len() && blocked && drops >= 1,
                format!(
                    "wget {} after {secs:.1} s with {} of {} bytes, the string {}; {} alert line(s), blocked: {blocked}; in drop ids_drop +{drops}, ids_blocked={later}",
                    if ok { "COMPLETED" } else { "failed" },
                    got.len(),
                    eicar.len(),
                    if reached { "REACHED the LAN" } else { "never reached the LAN" },
                    lines.len()
                ),
            ))
        })?;
    }

    for g in lab.gateways.iter().filter(|g| !g.ids) {
        let name = format!(
            "LAN {} → internet host: the same download through {} (the firewall, no IDS rules) arrives whole",
            g.letter.to_ascii_uppercase(),
            g.name
        );
        report.check(log, &name, || {
            let got = fetch(lab, g, None, &format!("http://{internet}/eicar"))?;
            let ok = got.is_some();
            let got = got.unwrap_or_default();
            Ok((
                ok && got == eicar_sha,
                if ok && got == eicar_sha {
                    "complete, SHA-256 equal".to_string()
                } else {
                    "DOWNLOAD FAILED".to_string()
                },
            ))
        })?;
    }
    Ok(())
}

/// Fetches `url` on `g`'s LAN host with `busybox wget` (60 s at most, with
/// `agent` as its User-Agent if given): the SHA-256 of what arrived, if the
/// transfer completed.
fn fetch(lab: &Lab, g: &Gateway, agent: Option<&str>, url: &str) -> Result<Option<String>, Error> {
    let dest = lab.run_dir().join(format!("ids-fetch-{}", g.name));
    let mut cmd = lab.host_command(g, "busybox");
    cmd.args(["timeout", "60", "busybox", "wget", "-q"]);
    if let Some(a) = agent {
        cmd.args(["-U", a]);
    }
    let out = crate::host::output(cmd.arg("-O").arg(&dest).arg(url))?;
    let got = if out.status.success() {
        Some(file_sha256(&dest)?)
    } else {
        None
    };
    let _ = std::fs::remove_file(&dest);
    Ok(got)
}
