//! `appliance testbed test`: the end-to-end checks on a running lab, each a row of
//! the report with pass/fail, its time and what was seen.
//!
//! 1. both gateways `ready`; their TPM PCRs 4, 7, 11 equal the prediction for their
//!    images (`appliance measure`); enrolled and attested; with `--provision
//!    NAME=@FILE`, each provisioned through black's management port (`appliance
//!    provision`, the lab's release key), rebooted, and back with the secrets
//!    unsealed for IKE; with `--identity`, each updated (signed A/B bundle through
//!    black) to its profile signing with its TPM identity key and pinning the
//!    peer's, back on the new version with the same key, its IKE SA authenticated
//!    by both keys;
//! 2. first packet through the tunnel (the lab pair keys it with IKEv2; the report
//!    gives the time from `ready` to the first ESP packet on the wire); ping LAN host
//!    A → B and B → A;
//! 3. a 10 MiB HTTP transfer B → A (busybox httpd/wget) with the SHA-256 compared;
//!    its lines carry a marker string; the CHILD SA is rekeyed during it (the lab
//!    profiles rekey every 3.6 MiB: new SPIs on the wire) and neither Viaduct drops
//!    a packet meanwhile;
//! 4. traffic from LAN A to an address no policy covers: nothing on the wire, and the
//!    Viaduct's `out drop total` grows by at least the packets sent;
//! 5. fault: `kill black` on gw-a's console while a transfer and a 5 Hz ping run: the
//!    init restarts black, the ping gap is the outage, the transfer completes intact,
//!    the wire during the outage holds nothing in clear;
//! 6. fault: `kill viaduct` on gw-a: the init starts a new Viaduct and IKE process,
//!    the tunnel comes back through a new IKE SA with new keys (SPIs never seen before);
//! 7. the whole capture of the internet: only ESP and IKE between the gateways (and
//!    ARP), no LAN address in clear, never the marker, no ESP (SPI, sequence) twice;
//! 8. with `--provision`: the secrets' bytes and hex in no capture, image, disk or
//!    console log;
//! 9. tear-down leaves no process, namespace, tap or run-time file.
//!
//! A firewall lab (both gateways forwarding in clear, `profiles/lab/firewall`)
//! runs 1 and 9 and, instead of 2–8, the checks of [`firewall`], and those
//! of [`ids`] for a gateway running the ids profile (gw-b there); a router
//! lab (`profiles/lab/router`), those of [`router`].

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::host::{self, io, Error};
use crate::lab::{epoch_ms, Gateway, Lab, State};
use crate::wire::{self, WireRules};

pub mod firewall;
pub mod ids;
pub mod router;

/// An address inside the lab's LAN space that no tunnel of the lab profiles covers:
/// LAN A's traffic to it must be discarded by gw-a's Viaduct.
pub const UNCOVERED: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);

/// Size of the transfers.
pub const TRANSFER_BYTES: usize = 10 * 1024 * 1024;

const HTTP_PORT: &str = "8080";

/// One row of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// How long the check took, in seconds.
    pub secs: f64,
    /// What was seen.
    pub detail: String,
}

/// The report of `testbed test`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// The checks in order.
    pub checks: Vec<Check>,
    /// Figures to track (name, value).
    pub figures: Vec<(String, String)>,
}

impl Report {
    /// True when every check passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The report as a text table.
    pub fn table(&self) -> String {
        let w = self
            .checks
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut s = format!("{:<w$}  result  time      detail\n", "check");
        for c in &self.checks {
            s.push_str(&format!(
                "{:<w$}  {:<6}  {:>6.1} s  {}\n",
                c.name,
                if c.passed { "pass" } else { "FAIL" },
                c.secs,
                c.detail.replace('\n', "\n    ")
            ));
        }
        if !self.figures.is_empty() {
            s.push_str("\nfigures\n");
            let fw = self.figures.iter().map(|f| f.0.len()).max().unwrap_or(0);
            for (k, v) in &self.figures {
                s.push_str(&format!("  {k:<fw$}  {v}\n"));
            }
        }
        s.push_str(&format!(
            "\n{} of {} checks passed\n",
            self.checks.iter().filter(|c| c.passed).count(),
            self.checks.len()
        ));
        s
    }

    /// Runs one check: `f` returns (passed, detail); an error is a failed check,
    /// except Ctrl-C, which ends the test.
    fn check(
        &mut self,
        log: &mut dyn FnMut(&str),
        name: &str,
        f: impl FnOnce() -> Result<(bool, String), Error>,
    ) -> Result<bool, Error> {
        let t = Instant::now();
        let (passed, detail) = match f() {
            Ok(r) => r,
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => (false, e.to_string()),
        };
        let c = Check {
            name: name.into(),
            passed,
            secs: t.elapsed().as_secs_f64(),
            detail,
        };
        log(&format!(
            "{} {name}: {}",
            if passed { "pass" } else { "FAIL" },
            c.detail.lines().next().unwrap_or("")
        ));
        self.checks.push(c);
        Ok(passed)
    }

    fn figure(&mut self, name: &str, value: String) {
        self.figures.push((name.into(), value));
    }
}

/// Runs the test: brings the lab up unless it is (then leaves it as it was), runs
/// the checks, tears down what it brought up unless `keep`. The report is also
/// written to `LAB/report.txt`. Ctrl-C tears down and returns [`Error::Interrupted`].
pub fn run(lab: &Lab, keep: bool, log: &mut dyn FnMut(&str)) -> Result<Report, Error> {
    let brought_up = !lab.is_up();
    let mut report = Report::default();
    let st = if brought_up {
        lab.up(log)?
    } else {
        log("the lab is up already: testing it as it is");
        lab.state()
            .ok_or_else(|| Error::State("the lab's run state is missing".into()))?
    };
    let result = checks(lab, &st, brought_up, &mut report, log);
    let interrupted = matches!(result, Err(Error::Interrupted));
    if (brought_up && !keep) || interrupted {
        log("tearing the lab down");
        let t = Instant::now();
        let left = lab.down()?;
        if !interrupted {
            report.checks.push(Check {
                name: "tear-down leaves nothing behind".into(),
                passed: left.is_empty(),
                secs: t.elapsed().as_secs_f64(),
                detail: if left.is_empty() {
                    "no process, namespace, tap or run-time file left".into()
                } else {
                    format!("left behind: {left:?}")
                },
            });
        }
    } else {
        log(&format!(
            "the lab stays up (`appliance testbed down --lab {}`)",
            lab.opts.dir.display()
        ));
    }
    result?;
    let path = lab.opts.dir.join("report.txt");
    let tmp = path.with_extension("txt.tmp");
    std::fs::write(&tmp, report.table())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(io(format!("writing {}", path.display())))?;
    Ok(report)
}

fn secs_between(from_ms: u64, to_ms: u64) -> f64 {
    to_ms.saturating_sub(from_ms) as f64 / 1000.0
}

fn epoch_secs(t: SystemTime) -> f64 {
    epoch_ms(t) as f64 / 1000.0
}

fn checks(
    lab: &Lab,
    st: &State,
    fresh: bool,
    report: &mut Report,
    log: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let (a, b) = (&lab.gateways[0], &lab.gateways[1]);
    let run = lab.run_dir();
    let marker = format!(
        "appliance-testbed-marker-{:016x}",
        epoch_ms(SystemTime::now()) ^ 0x5a5a_1234_9876_abcd
    );
    let rules = WireRules {
        gateways: lab.gateways.iter().map(|g| g.wan).collect(),
        gateway_macs: lab.gateways.iter().map(|g| g.wan_mac).collect(),
        lans: vec![(Ipv4Addr::new(10, 0, 0, 0), 8)],
        marker: marker.as_bytes().to_vec(),
        management: lab.gateways[0].wan_gateway.map(|v| (v, gateway_port())),
    };

    // 1. Ready and measured.
    for g in &lab.gateways {
        let started = st.started_ms.get(&g.name).copied();
        let ready = st.ready_ms.get(&g.name).copied();
        report.check(log, &format!("{} ready", g.name), || {
            Ok(match (started, ready) {
                (Some(s), Some(r)) => (
                    true,
                    format!(
                        "`appliance: ready` {:.1} s after QEMU start",
                        secs_between(s, r)
                    ),
                ),
                _ => (false, "no ready time recorded".into()),
            })
        })?;
        if let (Some(s), Some(r)) = (started, ready) {
            report.figure(
                &format!("{} QEMU start → ready", g.name),
                format!("{:.1} s (TCG)", secs_between(s, r)),
            );
        }
        report.check(log, &format!("{} PCRs = appliance measure", g.name), || {
            pcrs_match(lab, g)
        })?;
    }

    // 1b. Enrolled and attested, through black's management port.
    for g in &lab.gateways {
        // The lab's TPMs are new machines at every `up`: enrol them afresh. The
        // records and gw-a's evidence stay in LAB/ for a look afterwards.
        let fleet = lab.opts.dir.join("fleet").join(&g.name);
        let _ = std::fs::remove_dir_all(&fleet);
        report.check(
            log,
            &format!(
                "{} enrolled (EK certificate chain, AK, credential activation)",
                g.name
            ),
            || enroll(lab, g, &fleet),
        )?;
        let reference = lab.image_dir(g).join("reference-values.json");
        report.check(
            log,
            &format!("{} attested (every check of a fresh quote)", g.name),
            || {
                let evidence = lab.opts.dir.join("evidence").join(&g.name);
                let (code, v) = attest(lab, g, &fleet, &reference, Some(&evidence))?;
                let failed = failed_checks(&v);
                let names = v["checks"].as_array().map_or(0, Vec::len);
                // The lab images are signed: the gateway has its identity key, and
                // the quote's certification of it was checked.
                let identity = v["checks"].as_array().is_some_and(|a| {
                    a.iter().any(|c| {
                        c["name"] == "identity"
                            && c["detail"]
                                .as_str()
                                .is_some_and(|d| d.contains("certified by the AK"))
                    })
                });
                Ok((
                    code == Some(0) && failed.is_empty() && names == 11 && identity,
                    if failed.is_empty() {
                        format!(
                            "{names} checks hold ({}){}",
                            v["matched"].as_str().unwrap_or("no accepted set"),
                            if identity {
                                ", identity key certified"
                            } else {
                                ", NO identity key"
                            }
                        )
                    } else {
                        format!("failed: {}", failed.join(", "))
                    },
                ))
            },
        )?;
    }
    report.check(
        log,
        &format!("{} against {}'s reference values refused", a.name, b.name),
        || {
            let fleet = lab.opts.dir.join("fleet").join(&a.name);
            let (code, v) = attest(
                lab,
                a,
                &fleet,
                &lab.image_dir(b).join("reference-values.json"),
                None,
            )?;
            let failed = failed_checks(&v);
            Ok((
                code == Some(1) && failed == ["reference"],
                format!("exit {code:?}, failed: {}", failed.join(", ")),
            ))
        },
    )?;

    // A firewall lab (both gateways forwarding in clear): its own checks.
    if lab.gateways.iter().all(|g| g.clear) {
        if !lab.opts.provision.is_empty() || lab.opts.identity {
            return Err(Error::State(
                "--provision and --identity key tunnels; a firewall lab has none".into(),
            ));
        }
        if lab.gateways.iter().all(|g| g.router) {
            return router::checks(lab, report, log);
        }
        firewall::checks(lab, report, log)?;
        // A gateway running the ids profile (the firewall with IDS rules).
        if lab.gateways.iter().any(|g| g.ids) {
            ids::checks(lab, report, log)?;
        }
        return Ok(());
    }

    // 1c. Provisioned secrets (`testbed test --provision`): sealed in each TPM
    // through black's management port, then a reboot unseals them for IKE.
    if !lab.opts.provision.is_empty() {
        if !fresh {
            return Err(Error::State(
                "--provision needs a lab this test brings up (its gateways on writable disks): `appliance testbed down` first".into(),
            ));
        }
        provision_and_reboot(lab, report, log)?;
    }
    // 1d. The device identity keys (`testbed test --identity`): each gateway
    // updated to its profile pinning the other's enrolled key.
    if lab.opts.identity {
        if !fresh {
            return Err(Error::State(
                "--identity needs a lab this test brings up (its gateways on writable disks): `appliance testbed down` first".into(),
            ));
        }
        identity_update(lab, report, log)?;
    }

    // 2. First packet, then ping both ways.
    for (from, to) in [(a, b), (b, a)] {
        let started = st.started_ms.get(&from.name).copied().unwrap_or(0);
        let name = format!(
            "first packet LAN {} → LAN {}",
            from.letter.to_ascii_uppercase(),
            to.letter.to_ascii_uppercase()
        );
        report.check(log, &name, || {
            let t = Instant::now();
            loop {
                if ping(lab, from, to.host, 1, 1)?.0 {
                    let at = epoch_ms(SystemTime::now());
                    return Ok((
                        true,
                        format!(
                            "{} answered {:.1} s after {}'s QEMU start",
                            to.host,
                            secs_between(started, at),
                            from.name
                        ),
                    ));
                }
                if t.elapsed() > Duration::from_secs(60) {
                    return Ok((false, format!("{} never answered within 60 s", to.host)));
                }
                host::sleep(Duration::from_millis(200))?;
            }
        })?;
        if let Some(c) = report.checks.last().filter(|_| fresh) {
            if c.passed {
                let v = c
                    .detail
                    .split(" answered ")
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                report.figure(&format!("{} QEMU start → first packet", from.name), v);
            }
        }
    }
    if fresh {
        // When the tunnel was keyed: the first ESP packet on the wire, after the
        // later of the two `ready` lines.
        let ready = lab
            .gateways
            .iter()
            .filter_map(|g| st.ready_ms.get(&g.name).copied())
            .max();
        let first = capture_now(lab)
            .ok()
            .and_then(|b| {
                parse_capture(&b)
                    .ok()
                    .map(|c| wire::inspect(&c, &rules, None))
            })
            .and_then(|r| r.first_esp);
        if let (Some(r), Some(f)) = (ready, first) {
            report.figure(
                "both ready → first ESP packet (IKEv2 keyed)",
                format!("{:.1} s", (f - r as f64 / 1000.0).max(0.0)),
            );
        }
    }
    for (from, to) in [(a, b), (b, a)] {
        report.check(
            log,
            &format!(
                "ping LAN {} → LAN {} through the tunnel",
                from.letter.to_ascii_uppercase(),
                to.letter.to_ascii_uppercase()
            ),
            || {
                let (ok, out) = ping(lab, from, to.host, 5, 3)?;
                let summary = out
                    .lines()
                    .filter(|l| l.contains("packets transmitted") || l.contains("round-trip"))
                    .collect::<Vec<_>>()
                    .join("; ");
                Ok((ok && out.contains("5 packets received"), summary))
            },
        )?;
    }

    // 3. Transfer B → A with checksum.
    let www = run.join("www");
    std::fs::create_dir_all(&www).map_err(io(format!("creating {}", www.display())))?;
    let data = transfer_data(&marker);
    let want = hex::encode(Sha256::digest(&data));
    std::fs::write(www.join("data"), &data).map_err(io("writing the transfer file"))?;
    std::fs::write(www.join("ready"), b"ok").map_err(io("writing the transfer file"))?;
    let mut httpd = Spawned::new(
        lab.host_command(b, "busybox")
            .args(["httpd", "-f", "-p", HTTP_PORT, "-h"])
            .arg(&www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "busybox httpd on LAN host B",
    )?;
    wait_httpd(lab, b)?;
    let url = format!("http://{}:{HTTP_PORT}/data", b.host);
    let mut throughput = None;
    let drops_before = (viaduct_drops(lab, a).ok(), viaduct_drops(lab, b).ok());
    let transfer_from = epoch_secs(SystemTime::now());
    report.check(
        log,
        &format!(
            "TCP {} MiB LAN B → LAN A, SHA-256 equal",
            TRANSFER_BYTES / (1024 * 1024)
        ),
        || {
            let dest = run.join("download-1");
            let t = Instant::now();
            let out = host::output(
                lab.host_command(a, "busybox")
                    .args(["timeout", "180", "busybox", "wget", "-q", "-O"])
                    .arg(&dest)
                    .arg(&url),
            )?;
            let secs = t.elapsed().as_secs_f64();
            if !out.status.success() {
                return Ok((
                    false,
                    format!(
                        "wget failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ));
            }
            let got = file_sha256(&dest)?;
            let mbit = TRANSFER_BYTES as f64 * 8.0 / secs / 1e6;
            throughput = Some(mbit);
            let _ = std::fs::remove_file(&dest);
            Ok((
                got == want,
                format!("{secs:.1} s, {mbit:.1} Mbit/s, sha256 {}", &got[..16]),
            ))
        },
    )?;
    if let Some(m) = throughput {
        report.figure(
            "TCP throughput through the tunnel",
            format!("{m:.1} Mbit/s (two TCG gateways, single flow)"),
        );
    }
    let transfer_to = epoch_secs(SystemTime::now());
    report.check(
        log,
        "CHILD SA rekeyed during the transfer, no packet dropped",
        || {
            host::sleep(Duration::from_millis(300))?;
            let bytes = capture_now(lab)?;
            let cap = parse_capture(&bytes)?;
            let w = wire::inspect(&cap, &rules, Some((transfer_from, transfer_to)));
            let after = (viaduct_drops(lab, a).ok(), viaduct_drops(lab, b).ok());
            let same = drops_before.0.is_some() && drops_before == after;
            // One SPI per direction, plus two per rekey.
            Ok((
                w.clean() && w.spis >= 4 && same,
                format!(
                    "{} SPIs and {} IKE messages on the wire during the transfer; Viaduct \
                     drops gw-a {:?} → {:?}, gw-b {:?} → {:?}",
                    w.spis, w.ike, drops_before.0, after.0, drops_before.1, after.1
                ),
            ))
        },
    )?;

    // Several tunnels (the lab pair: all traffic, and TCP nested in it): each
    // carried its share — the pings one, the transfer's TCP the other.
    if a.tunnels.len() > 1 {
        report.check(
            log,
            "every tunnel of gw-a carried traffic (one CHILD SA each)",
            || tunnel_packets(lab, a),
        )?;
    }

    // 4. DISCARD: nothing on the wire, counted by gw-a's Viaduct.
    report.check(
        log,
        &format!("LAN A → {UNCOVERED} (no policy): not on the wire, counted"),
        || discard(lab, a, &rules),
    )?;

    // 5. Fault: black killed on gw-a during a transfer.
    fault(lab, a, b, &url, &want, &rules, report, log)?;
    httpd.stop();

    // 6. Fault: the Viaduct killed on gw-a; back through a new IKE SA, new keys.
    viaduct_restart(lab, a, b, &rules, report, log)?;

    // 6. The whole capture.
    report.check(
        log,
        "internet capture: only ESP and IKE between the gateways, no (SPI, sequence) twice",
        || {
            // Let tcpdump write the last frames.
            host::sleep(Duration::from_millis(500))?;
            let bytes = capture_now(lab)?;
            let cap = parse_capture(&bytes)?;
            let r = wire::inspect(&cap, &rules, None);
            Ok((
                r.clean() && r.esp > 1000,
                format!(
                    "{} frames: {} ESP under {} SPIs, {} IKE, {} ARP, {} lab router, {} management (attestation); {} violations{}; marker absent: {}",
                    r.frames,
                    r.esp,
                    r.spis,
                    r.ike,
                    r.arp,
                    r.lab,
                    r.management,
                    r.violations,
                    if r.examples.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.examples.join("; "))
                    },
                    r.examples.iter().all(|e| !e.contains("marker"))
                ),
            ))
        },
    )?;
    // 7. The provisioned secrets were never in clear anywhere the lab can see.
    if !lab.opts.provision.is_empty() {
        report.check(
            log,
            "provisioned secrets in no capture, image or console log",
            || secrets_nowhere(lab),
        )?;
    }
    Ok(())
}

fn pcrs_match(lab: &Lab, g: &Gateway) -> Result<(bool, String), Error> {
    let m_path = lab.image_dir(g).join("manifest.json");
    let bytes = std::fs::read(&m_path).map_err(io(format!("reading {}", m_path.display())))?;
    let m = signing::Manifest::from_json(&bytes)
        .map_err(|e| Error::State(format!("{}: {e}", m_path.display())))?;
    let p = &m.pcrs;
    let mut c = lab.console(g);
    c.poll();
    let booted = crate::vm::pcrs_from_console(&c.lines());
    let mut ok = true;
    let mut detail = Vec::new();
    for (n, want) in [
        (4, &p.pcr4),
        (7, &p.pcr7_secure_boot_off),
        (11, &p.pcr11),
        (12, &p.pcr12),
    ] {
        let got = booted.get(&n);
        let same = got == Some(want);
        ok &= same;
        detail.push(if same {
            format!("pcr {n} {}… equal", &want[..12])
        } else {
            format!(
                "pcr {n} predicted {want}, booted {}",
                got.map(String::as_str).unwrap_or("(not printed)")
            )
        });
    }
    Ok((ok, detail.join("; ")))
}

/// This program (`appliance`), run in the internet's namespace: the verifier
/// stands where any host on the internet stands, in front of black.
/// `appliance provision` of every `--provision` secret to both gateways (the lab's
/// release key signs), then both rebooted: each must come back with the secrets
/// unsealed for IKE, ready again.
fn provision_and_reboot(
    lab: &Lab,
    report: &mut Report,
    log: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let names: Vec<&str> = lab.opts.provision.iter().map(|(n, _)| n.as_str()).collect();
    let pass = lab.run_dir().join("release.pass");
    std::fs::write(&pass, crate::lab::LAB_KEY_PASSPHRASE)
        .map_err(io(format!("writing {}", pass.display())))?;
    let key = lab.keys_dir().join("release.key");
    for g in &lab.gateways {
        let fleet = lab.opts.dir.join("fleet").join(&g.name);
        let target = management(g);
        let secrets: Vec<String> = lab
            .opts
            .provision
            .iter()
            .map(|(n, f)| format!("{n}=@{}", f.display()))
            .collect();
        report.check(
            log,
            &format!(
                "{} provisioned {} (sealed in its TPM)",
                g.name,
                names.join(", ")
            ),
            || {
                let mut args: Vec<&std::ffi::OsStr> = vec![
                    "provision".as_ref(),
                    target.as_ref(),
                    "--device".as_ref(),
                    fleet.as_os_str(),
                    "--key".as_ref(),
                    key.as_os_str(),
                    "--passphrase-file".as_ref(),
                    pass.as_os_str(),
                ];
                for s in &secrets {
                    args.push("--secret".as_ref());
                    args.push(s.as_ref());
                }
                let (code, out, err) = verifier(lab, &args)?;
                Ok((
                    code == Some(0),
                    if code == Some(0) {
                        out.lines().last().unwrap_or("").trim().to_owned()
                    } else {
                        err.trim().to_owned()
                    },
                ))
            },
        )?;
    }
    let _ = std::fs::remove_file(&pass);
    let mut consoles = Vec::new();
    for g in &lab.gateways {
        let mut c = lab.console(g);
        c.poll();
        let from = c.len();
        c.send("reboot")?;
        consoles.push((g, c, from));
    }
    let mut marks = Vec::new();
    for (g, mut c, from) in consoles {
        report.check(
            log,
            &format!(
                "{} rebooted: {} unsealed for IKE, ready again",
                g.name,
                names.join(", ")
            ),
            || {
                let t = Instant::now();
                let mut at = from;
                for n in &names {
                    let want = format!("secrets: {n} unsealed");
                    let (i, _, _) = c.wait_for(
                        &format!("`{want}`"),
                        from,
                        lab.opts.ready_timeout,
                        |l| l.contains(&want),
                        |l| l.contains("does not unseal") || l.contains("appliance: closed"),
                    )?;
                    at = at.max(i);
                }
                c.wait_for(
                    "`appliance: ready`",
                    at,
                    lab.opts.ready_timeout,
                    |l| l.contains("appliance: ready"),
                    |l| l.contains("appliance: closed"),
                )?;
                Ok((
                    true,
                    format!("{:.1} s from `reboot`", t.elapsed().as_secs_f64()),
                ))
            },
        )?;
        marks.push((g, c, from));
    }
    // The IKE SA between them, keyed by what was provisioned.
    if let Some((g, mut c, from)) = marks.into_iter().next() {
        let peer = &lab.gateways[1].name;
        report.check(
            log,
            &format!(
                "IKE SA {} ↔ {peer} authenticated by the provisioned PSK",
                g.name
            ),
            || {
                let want =
                    format!("established with fqdn:{peer}.lab, authenticated by pre-shared key");
                let (_, l, _) = c.wait_for(
                    "an IKE SA on the provisioned PSK",
                    from,
                    Duration::from_secs(120),
                    |l| l.contains(&want),
                    |_| false,
                )?;
                Ok((
                    true,
                    l.split("viaduct-ike: ").last().unwrap_or(&l).to_owned(),
                ))
            },
        )?;
    }
    Ok(())
}

/// The profile `g` would have to sign its IKE SAs with its device identity key and
/// pin `peer_point` (the peer's enrolled identity), one version later: written to
/// `dir/NAME.toml` (with the lock beside it) from `g`'s own profile file, whose
/// peer's `auth` line is replaced. Returns (the profile, the new version).
fn identity_profile(
    g: &Gateway,
    peer_point: &str,
    dir: &Path,
) -> Result<(std::path::PathBuf, String), Error> {
    let text = std::fs::read_to_string(&g.profile)
        .map_err(io(format!("reading {}", g.profile.display())))?;
    let p = profiles::load_profile(&g.profile).map_err(|d| Error::State(d.to_string()))?;
    let version = {
        let mut parts: Vec<u64> = p
            .appliance
            .version
            .split('.')
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if let Some(last) = parts.last_mut() {
            *last += 1;
        }
        parts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    };
    let base = g.profile.parent().unwrap_or(Path::new("."));
    let mut out = String::new();
    let mut auths = 0;
    let mut ipsec_table = false;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("extends = \"") {
            let rel = rest.trim_end().trim_end_matches('"');
            out.push_str(&format!(
                "extends = {:?}\n",
                base.join(rel).display().to_string()
            ));
            continue;
        }
        if t.starts_with("auth = ") {
            auths += 1;
            out.push_str(&format!(
                "auth = {{ method = \"pubkey\", public_key = \"ecdsa-p256:{peer_point}\" }}\n"
            ));
            continue;
        }
        if t.starts_with("version = ") {
            continue;
        }
        if t == "[[viaduct.ipsec.peers]]" && !ipsec_table {
            out.push_str("[viaduct.ipsec]\nprivate_key = \"tpm:identity\"\n\n");
            ipsec_table = true;
        }
        out.push_str(line);
        out.push('\n');
        if t == "[appliance]" {
            out.push_str(&format!("version = \"{version}\"\n"));
        }
        if t == "[viaduct.ipsec]" {
            out.push_str("private_key = \"tpm:identity\"\n");
            ipsec_table = true;
        }
    }
    if auths != 1 || !out.contains(&format!("version = \"{version}\"")) {
        return Err(Error::State(format!(
            "{}: --identity rewrites the one peer's `auth` line and the version under [appliance] of the profile file itself; found {auths} auth lines",
            g.profile.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let path = dir.join(format!("{}.toml", g.name));
    std::fs::write(&path, out).map_err(io(format!("writing {}", path.display())))?;
    let lock = builder::lock_path_for(&g.profile);
    std::fs::copy(&lock, builder::lock_path_for(&path))
        .map_err(io(format!("copying {}", lock.display())))?;
    profiles::load_profile(&path).map_err(|d| Error::State(d.to_string()))?;
    Ok((path, version))
}

/// `--identity`: each gateway's profile rewritten to sign with its device identity
/// key and pin the peer's (as enrolled), built and signed with the lab's release
/// key, sent as an A/B update through black with a reboot; each must come back on
/// the new version with the same identity key, and the tunnel must be keyed by
/// identity signatures both ways.
fn identity_update(lab: &Lab, report: &mut Report, log: &mut dyn FnMut(&str)) -> Result<(), Error> {
    let fleet = lab.opts.dir.join("fleet");
    let point = |g: &Gateway| -> Result<String, Error> {
        let p = fleet.join(&g.name).join("device.json");
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&p).map_err(io(format!("reading {}", p.display())))?,
        )
        .map_err(|e| Error::State(format!("{}: {e}", p.display())))?;
        v["identity"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::State(format!("{}: enrolled without an identity key", g.name)))
    };
    let (a, b) = (&lab.gateways[0], &lab.gateways[1]);
    let points = [point(a)?, point(b)?];
    let dir = lab.opts.dir.join("identity");
    let mut pending = Vec::new();
    for (i, g) in lab.gateways.iter().enumerate() {
        let peer_point = &points[1 - i];
        let out = lab
            .opts
            .dir
            .join("images")
            .join(format!("{}-identity", g.name));
        let bundle = lab.run_dir().join(format!("{}-identity.bundle", g.name));
        let mut c = lab.console(g);
        c.poll();
        let from = c.len();
        let mut version = String::new();
        report.check(
            log,
            &format!(
                "{} updated to its profile pinning the peer's identity key",
                g.name
            ),
            || {
                let (profile, v) = identity_profile(g, peer_point, &dir)?;
                version = v.clone();
                lab.build_image(g, &profile, &out)?;
                let pubkey = lab.release_pub();
                let (code, _, err) = verifier(
                    lab,
                    &[
                        "bundle".as_ref(),
                        out.as_os_str(),
                        "--pubkey".as_ref(),
                        pubkey.as_os_str(),
                        "-o".as_ref(),
                        bundle.as_os_str(),
                    ],
                )?;
                if code != Some(0) {
                    return Ok((false, format!("appliance bundle: {}", err.trim())));
                }
                let target = management(g);
                let (code, out, err) = verifier(
                    lab,
                    &[
                        "update".as_ref(),
                        target.as_ref(),
                        bundle.as_os_str(),
                        "--reboot".as_ref(),
                    ],
                )?;
                Ok((
                    code == Some(0),
                    if code == Some(0) {
                        format!("{v}: {}", out.lines().last().unwrap_or("").trim())
                    } else {
                        format!("appliance update: {}", err.trim())
                    },
                ))
            },
        )?;
        let peer = &lab.gateways[1 - i].name;
        pending.push((g, c, from, version, points[i].clone(), peer.clone()));
    }
    for (g, mut c, from, version, own, peer) in pending {
        report.check(
            log,
            &format!(
                "{} rebooted into the update: the same identity key signs its IKE SAs",
                g.name
            ),
            || {
                let t = Instant::now();
                let closed = |l: &str| {
                    l.contains("appliance: closed") || l.contains("identity: none this boot")
                };
                let ready = format!("appliance: ready {} {version}", g.name);
                let (at, _, _) = c.wait_for(
                    &format!("`{ready}`"),
                    from,
                    lab.opts.ready_timeout,
                    |l| l.contains(&ready),
                    closed,
                )?;
                let same = format!("identity: ECDSA P-256 key in the TPM (0x81000a13), public point {own}");
                c.wait_for("the enrolled identity key", from, Duration::ZERO, |l| l.contains(&same), closed)?;
                let signed = format!(
                    "established with fqdn:{peer}.lab, authenticated by signatures: ours ECDSA P-256 by the TPM identity key, the peer's ECDSA P-256 (pinned)"
                );
                c.wait_for(
                    "an IKE SA authenticated by the identity keys",
                    at.saturating_sub(50).max(from),
                    Duration::from_secs(120),
                    |l| l.contains(&signed),
                    |_| false,
                )?;
                Ok((
                    true,
                    format!(
                        "{version} ready {:.1} s after the update; identity {}…; IKE SA with {peer} authenticated by both identity keys",
                        t.elapsed().as_secs_f64(),
                        own.get(..18).unwrap_or(&own)
                    ),
                ))
            },
        )?;
    }
    Ok(())
}

/// The provisioned secrets' bytes (and their hex) in no capture, image or console
/// log of the lab.
fn secrets_nowhere(lab: &Lab) -> Result<(bool, String), Error> {
    let mut places: Vec<(String, Vec<u8>)> = vec![("the capture".into(), capture_now(lab)?)];
    for g in &lab.gateways {
        for (what, path) in [
            ("console log", lab.console_log(g)),
            ("image", lab.image_dir(g).join("disk.img")),
            (
                "disk as it ran",
                lab.run_dir().join(format!("{}.disk.img", g.name)),
            ),
        ] {
            let b = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
            places.push((format!("{}'s {what}", g.name), b));
        }
    }
    let mut found = Vec::new();
    let mut checked = 0usize;
    for (name, file) in &lab.opts.provision {
        let secret = std::fs::read(file).map_err(io(format!("reading {}", file.display())))?;
        let hex_lower = hex::encode(&secret);
        let hex_upper = hex_lower.to_uppercase();
        for (place, bytes) in &places {
            checked += bytes.len();
            for (form, needle) in [
                ("bytes", secret.as_slice()),
                ("hex", hex_lower.as_bytes()),
                ("HEX", hex_upper.as_bytes()),
            ] {
                if !needle.is_empty() && memchr::memmem::find(bytes, needle).is_some() {
                    found.push(format!("{name} ({form}) in {place}"));
                }
            }
        }
    }
    Ok((
        found.is_empty(),
        if found.is_empty() {
            format!(
                "{} MiB searched: {}",
                checked / (1 << 20),
                places
                    .iter()
                    .map(|(p, _)| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!("found: {}", found.join("; "))
        },
    ))
}

fn verifier(lab: &Lab, args: &[&std::ffi::OsStr]) -> Result<(Option<i32>, String, String), Error> {
    let exe = std::env::current_exe().map_err(io("finding this program"))?;
    let out = host::in_netns(&lab.inet_ns(), &exe.to_string_lossy())
        .args(args)
        .output()
        .map_err(io(format!("running {}", exe.display())))?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn management(g: &Gateway) -> String {
    format!("{}:{}", g.wan, gateway_port())
}

fn gateway_port() -> u16 {
    7443
}

/// `appliance enroll` against `g`, retried for up to 60 s while black's relay
/// comes up.
fn enroll(lab: &Lab, g: &Gateway, fleet: &Path) -> Result<(bool, String), Error> {
    let t = Instant::now();
    loop {
        let target = management(g);
        let ca = lab.tpm_ca();
        let (code, out, err) = verifier(
            lab,
            &[
                "--json".as_ref(),
                "enroll".as_ref(),
                target.as_ref(),
                "--ek-ca".as_ref(),
                ca.as_os_str(),
                "--out".as_ref(),
                fleet.as_os_str(),
            ],
        )?;
        if code == Some(0) {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            return Ok((
                true,
                format!(
                    "AK {}…, TPM {}",
                    v["device"]["ak_name"]
                        .as_str()
                        .unwrap_or("?")
                        .get(..16)
                        .unwrap_or("?"),
                    v["device"]["tpm"].as_str().unwrap_or("?")
                ),
            ));
        }
        // With `--json` the error is on standard output (`{"error": …}`).
        let said = serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let why = format!("{} {}", err.trim(), said).trim().to_owned();
        if !why.contains("cannot connect") || t.elapsed() > Duration::from_secs(60) {
            return Ok((false, why));
        }
        host::sleep(Duration::from_secs(2))?;
    }
}

/// `appliance attest --json` against `g`: (exit code, the JSON report).
fn attest(
    lab: &Lab,
    g: &Gateway,
    fleet: &Path,
    reference: &Path,
    evidence: Option<&Path>,
) -> Result<(Option<i32>, serde_json::Value), Error> {
    let target = management(g);
    let key = lab.release_pub();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--json".as_ref(),
        "attest".as_ref(),
        target.as_ref(),
        "--device".as_ref(),
        fleet.as_os_str(),
        "--reference".as_ref(),
        reference.as_os_str(),
        "--pubkey".as_ref(),
        key.as_os_str(),
    ];
    if let Some(e) = evidence {
        args.extend::<[&std::ffi::OsStr; 2]>(["--evidence".as_ref(), e.as_os_str()]);
    }
    let (code, out, err) = verifier(lab, &args)?;
    let v = serde_json::from_str(&out)
        .map_err(|_| Error::State(format!("attest (exit {code:?}): {}", err.trim())))?;
    Ok((code, v))
}

fn failed_checks(v: &serde_json::Value) -> Vec<String> {
    v["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["ok"] == false)
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `busybox ping -c count -W wait` from `from`'s LAN host: (all answered, output).
fn ping(
    lab: &Lab,
    from: &Gateway,
    to: Ipv4Addr,
    count: u32,
    wait: u32,
) -> Result<(bool, String), Error> {
    let out = host::output(lab.host_command(from, "busybox").args([
        "ping",
        "-c",
        &count.to_string(),
        "-i",
        "0.2",
        "-W",
        &wait.to_string(),
        &to.to_string(),
    ]))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok((out.status.success(), text))
}

fn wait_httpd(lab: &Lab, b: &Gateway) -> Result<(), Error> {
    let t = Instant::now();
    loop {
        let out = host::output(lab.host_command(b, "busybox").args([
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://127.0.0.1:{HTTP_PORT}/ready"),
        ]))?;
        if out.status.success() {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(10) {
            return Err(Error::State(format!(
                "busybox httpd on LAN host B does not answer: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        host::sleep(Duration::from_millis(100))?;
    }
}

/// The transfer file: lines carrying the marker, then a counter, to 10 MiB.
fn transfer_data(marker: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(TRANSFER_BYTES);
    let mut i = 0u64;
    while v.len() < TRANSFER_BYTES {
        v.extend_from_slice(format!("{marker} line {i:010}\n").as_bytes());
        i += 1;
    }
    v.truncate(TRANSFER_BYTES);
    v
}

fn file_sha256(p: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(p).map_err(io(format!("reading {}", p.display())))?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// `kill viaduct` on `a`'s console: the init restarts the Viaduct and its IKE
/// process; the tunnel comes back through a new IKE SA, under SPIs never seen before
/// on the wire.
fn viaduct_restart(
    lab: &Lab,
    a: &Gateway,
    b: &Gateway,
    rules: &WireRules,
    report: &mut Report,
    log: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let before: std::collections::HashSet<Vec<u8>> = {
        let bytes = capture_now(lab)?;
        let cap = parse_capture(&bytes)?;
        esp_spis(&cap, rules)
    };
    let mut console = lab.console(a);
    console.poll();
    let from = console.len();
    let killed = SystemTime::now();
    console.send("kill viaduct")?;
    report.check(
        log,
        "fault: Viaduct killed on gw-a, tunnel back with new keys",
        || {
            let (i, _, _) = console.wait_for(
                "`appliance: viaduct exited`",
                from,
                Duration::from_secs(30),
                |l| l.starts_with("appliance: viaduct exited"),
                |_| false,
            )?;
            console.wait_for(
                "the new IKE process's CHILD SA",
                i,
                Duration::from_secs(90),
                |l| l.contains("viaduct-ike: ike: peer") && l.contains("CHILD SA in"),
                |_| false,
            )?;
            let t = Instant::now();
            loop {
                if ping(lab, a, b.host, 1, 2)?.0 {
                    break;
                }
                if t.elapsed() > Duration::from_secs(60) {
                    return Ok((
                        false,
                        "no ping answered within 60 s of the new CHILD SA".into(),
                    ));
                }
            }
            let back = SystemTime::now()
                .duration_since(killed)
                .unwrap_or_default()
                .as_secs_f64();
            host::sleep(Duration::from_millis(300))?;
            let bytes = capture_now(lab)?;
            let cap = parse_capture(&bytes)?;
            let after = esp_spis(&cap, rules);
            let fresh: Vec<_> = after.difference(&before).collect();
            Ok((
                fresh.len() >= 2,
                format!(
                    "tunnel back {back:.1} s after `kill viaduct`; {} new SPIs on the wire",
                    fresh.len()
                ),
            ))
        },
    )?;
    Ok(())
}

/// The ESP SPIs (plain ESP between the gateways) in a capture.
fn esp_spis(
    cap: &crate::pcap::Capture<'_>,
    rules: &WireRules,
) -> std::collections::HashSet<Vec<u8>> {
    let mut s = std::collections::HashSet::new();
    for f in &cap.frames {
        let Some(ip) = f.get(14..) else { continue };
        if f.get(12..14) != Some(&[0x08, 0x00]) || ip.len() < 28 || ip[9] != 50 {
            continue;
        }
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        if !rules.gateways.contains(&src) {
            continue;
        }
        let h = usize::from(ip[0] & 15) * 4;
        if let Some(spi) = ip.get(h..h + 4) {
            s.insert(spi.to_vec());
        }
    }
    s
}

/// Asks `g`'s Viaduct for `counters` until `read` finds what it needs in
/// the lines printed since (three requests at most).
///
/// The serial console under TCG now and then doubles a character of what
/// it relays (`ouut tunnel=…`); a line the check needs may then be
/// missing or unreadable in one dump, never in every dump.
fn read_counters<T>(
    lab: &Lab,
    g: &Gateway,
    what: &str,
    read: impl Fn(&[String]) -> Option<T>,
) -> Result<T, Error> {
    let mut last = String::new();
    for _ in 0..3 {
        let mut c = lab.console(g);
        c.poll();
        let from = c.len();
        c.send("counters")?;
        // The dump ends with black->red's IKE channel line; wait for it
        // (or for the limit), then read what arrived.
        let r = c.wait_for(
            &format!("{what} after `counters`"),
            from,
            Duration::from_secs(20),
            |l| read(&[l.to_owned()]).is_some() || l.contains("black->red ike-channel:"),
            |_| false,
        );
        if let Err(e) = r {
            if matches!(e, Error::Interrupted) {
                return Err(e);
            }
            last = e.to_string();
            continue;
        }
        host::sleep(Duration::from_millis(300))?;
        c.poll();
        let lines = c.lines()[from..].to_vec();
        if let Some(v) = read(&lines) {
            return Ok(v);
        }
        last = format!("no readable {what} in the dump:\n{}", lines.join("\n"));
    }
    Err(Error::State(format!(
        "{}: {last} (after three `counters`)",
        g.name
    )))
}

/// In the last console line containing `marker`: the number in the word
/// after it that starts with `key` (`key` empty: the word right after it).
fn counter_in(lines: &[String], marker: &str, key: &str) -> Option<u64> {
    let line = lines.iter().rev().find(|l| l.contains(marker))?;
    let rest = &line[line.find(marker)? + marker.len()..];
    let mut words = rest.split_whitespace();
    let word = if key.is_empty() {
        words.next()?
    } else {
        words.find_map(|w| w.strip_prefix(key))?
    };
    word.parse().ok()
}

/// The latest `out drop total=N` gw's Viaduct prints after `counters`.
fn viaduct_drops(lab: &Lab, g: &Gateway) -> Result<u64, Error> {
    read_counters(lab, g, "`viaduct| out drop total=…`", |lines| {
        counter_in(lines, "viaduct| out drop total=", "")
    })
}

/// Packets each tunnel of `g` sent under its current outbound SA (`counters`):
/// pass if every tunnel sent some.
fn tunnel_packets(lab: &Lab, g: &Gateway) -> Result<(bool, String), Error> {
    let counts = read_counters(
        lab,
        g,
        "`viaduct| out tunnel=…` of every tunnel",
        |lines| {
            g.tunnels
                .iter()
                .map(|name| counter_in(lines, &format!("viaduct| out tunnel={name} "), "packets="))
                .collect::<Option<Vec<u64>>>()
        },
    )?;
    let all = counts.iter().all(|&p| p > 0);
    let detail: Vec<String> = g
        .tunnels
        .iter()
        .zip(&counts)
        .map(|(name, p)| format!("{name}: {p} packets"))
        .collect();
    Ok((all, format!("{} (out, current SAs)", detail.join(", "))))
}

/// The capture of the internet so far (tcpdump writes it packet by packet).
fn capture_now(lab: &Lab) -> Result<Vec<u8>, Error> {
    std::fs::read(lab.pcap()).map_err(io(format!("reading {}", lab.pcap().display())))
}

fn parse_capture(bytes: &[u8]) -> Result<crate::pcap::Capture<'_>, Error> {
    crate::pcap::parse(bytes).map_err(|e| Error::State(e.to_string()))
}

fn discard(lab: &Lab, a: &Gateway, rules: &WireRules) -> Result<(bool, String), Error> {
    let before = viaduct_drops(lab, a)?;
    let from = epoch_secs(SystemTime::now());
    let sent = 5;
    let (answered, _) = ping(lab, a, UNCOVERED, sent, 1)?;
    host::sleep(Duration::from_millis(500))?;
    let to = epoch_secs(SystemTime::now());
    let after = viaduct_drops(lab, a)?;
    let bytes = capture_now(lab)?;
    let cap = parse_capture(&bytes)?;
    let w = wire::inspect(&cap, rules, Some((from, to)));
    let leaked = cap
        .frames
        .iter()
        .zip(&cap.times)
        .filter(|(_, t)| **t >= from && **t <= to)
        .filter(|(f, _)| f.len() >= 34 && f[12..14] == [8, 0] && f[30..34] == UNCOVERED.octets())
        .count();
    let counted = after.saturating_sub(before);
    Ok((
        !answered && w.esp == 0 && leaked == 0 && w.clean() && counted >= u64::from(sent),
        format!(
            "{sent} pings sent, {}answered; on the wire meanwhile: {} frames, {} ESP, {leaked} to {UNCOVERED}; Viaduct out drop total {before} → {after}",
            if answered { "" } else { "none " },
            w.frames,
            w.esp
        ),
    ))
}

/// A process the test started; killed when dropped.
struct Spawned {
    child: Child,
}

impl Spawned {
    fn new(cmd: &mut std::process::Command, what: &str) -> Result<Spawned, Error> {
        std::os::unix::process::CommandExt::process_group(cmd, 0);
        let child = cmd.spawn().map_err(io(format!("starting {what}")))?;
        Ok(Spawned { child })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}

#[allow(clippy::too_many_arguments)]
fn fault(
    lab: &Lab,
    a: &Gateway,
    b: &Gateway,
    url: &str,
    want: &str,
    rules: &WireRules,
    report: &mut Report,
    log: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let run = lab.run_dir();
    // A 5 Hz ping A → B, its replies timed as they arrive.
    let mut pinger = Spawned::new(
        lab.host_command(a, "busybox")
            .args(["ping", "-i", "0.2", &b.host.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
        "ping on LAN host A",
    )?;
    let replies: Arc<Mutex<Vec<(SystemTime, u64)>>> = Arc::default();
    if let Some(out) = pinger.child.stdout.take() {
        let replies = replies.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(seq) = line
                    .split("seq=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                {
                    if let Ok(mut v) = replies.lock() {
                        v.push((SystemTime::now(), seq));
                    }
                }
            }
        });
    }
    // The transfer, and the kill once it is under way.
    let dest = run.join("download-fault");
    let _ = std::fs::remove_file(&dest);
    let mut wget = Spawned::new(
        lab.host_command(a, "busybox")
            .args(["timeout", "180", "busybox", "wget", "-q", "-O"])
            .arg(&dest)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        "wget on LAN host A",
    )?;
    let t = Instant::now();
    let mut at_kill = 0;
    while t.elapsed() < Duration::from_secs(60) {
        at_kill = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        if at_kill >= 1024 * 1024 || wget.child.try_wait().ok().flatten().is_some() {
            break;
        }
        host::sleep(Duration::from_millis(20))?;
    }
    let mut console = lab.console(a);
    console.poll();
    let from = console.len();
    let killed = SystemTime::now();
    console.send("kill black")?;
    let mut restarted = None;
    report.check(
        log,
        "fault: black killed on gw-a, restarted by the init",
        || {
            // A compartment exits; a personality's VM (runtime `microvm`) stops.
            let (i, _, _) = console.wait_for(
                "`appliance: black exited` or `appliance: black: VM stopped`",
                from,
                Duration::from_secs(30),
                |l| {
                    l.starts_with("appliance: black exited")
                        || l.starts_with("appliance: black: VM stopped")
                },
                |_| false,
            )?;
            let (_, _, up) = console.wait_for(
                "`appliance: black: up` after the restart",
                i,
                Duration::from_secs(60),
                |l| l.starts_with("appliance: black: up"),
                |_| false,
            )?;
            restarted = Some(up);
            let secs = up.duration_since(killed).unwrap_or_default().as_secs_f64();
            Ok((
                true,
                format!("black exited and was up again {secs:.1} s after `kill black`"),
            ))
        },
    )?;
    // The transfer completes and is intact.
    report.check(
        log,
        "fault: the transfer resumes and completes intact",
        || {
            let t = Instant::now();
            let status = loop {
                if let Some(s) = wget.child.try_wait().map_err(io("waiting for wget"))? {
                    break s;
                }
                if t.elapsed() > Duration::from_secs(180) {
                    return Ok((false, "wget did not finish within 180 s".into()));
                }
                host::sleep(Duration::from_millis(100))?;
            };
            if !status.success() {
                let mut err = String::new();
                if let Some(mut e) = wget.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Ok((false, format!("wget failed ({status}): {}", err.trim())));
            }
            let got = file_sha256(&dest)?;
            let _ = std::fs::remove_file(&dest);
            Ok((
                got == want && (at_kill as usize) < TRANSFER_BYTES,
                format!(
                    "{} of {} bytes had arrived when black was killed; sha256 {}",
                    at_kill,
                    TRANSFER_BYTES,
                    if got == want { "equal" } else { "DIFFERS" }
                ),
            ))
        },
    )?;
    // The outage, from the ping: the longest silence after the kill.
    host::sleep(Duration::from_secs(1))?;
    pinger.stop();
    let replies = replies.lock().map(|v| v.clone()).unwrap_or_default();
    let mut outage = None;
    report.check(log, "fault: outage measured, tunnel back", || {
        let mut prev: Option<(SystemTime, u64)> = None;
        let mut worst: Option<(f64, SystemTime, SystemTime, u64)> = None;
        for &(t, seq) in &replies {
            if let Some((pt, pseq)) = prev {
                if t > killed {
                    let gap = t
                        .duration_since(pt.max(killed))
                        .unwrap_or_default()
                        .as_secs_f64();
                    if worst.is_none_or(|w| gap > w.0) {
                        worst = Some((gap, pt, t, seq.saturating_sub(pseq + 1)));
                    }
                }
            }
            prev = Some((t, seq));
        }
        let back = replies.iter().any(|(t, _)| *t > killed);
        match worst {
            Some((gap, last, first, lost)) if back => {
                outage = Some((last, first));
                Ok((
                    true,
                    format!(
                        "{gap:.1} s without replies ({lost} pings of 5 Hz lost); {} replies in all",
                        replies.len()
                    ),
                ))
            }
            _ => Ok((
                false,
                format!("no reply after the kill ({} replies before)", replies.len()),
            )),
        }
    })?;
    if let Some((last, first)) = outage {
        report.figure(
            "outage after `kill black` on gw-a",
            format!(
                "{:.1} s (ping gap); black back up after {:.1} s",
                first.duration_since(last).unwrap_or_default().as_secs_f64(),
                restarted
                    .and_then(|u| u.duration_since(killed).ok())
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(f64::NAN)
            ),
        );
    }
    report.check(
        log,
        "fault: nothing in clear on the wire during the outage",
        || {
            let (from, to) = match outage {
                Some((last, first)) => (epoch_secs(last), epoch_secs(first) + 1.0),
                None => (epoch_secs(killed), epoch_secs(SystemTime::now())),
            };
            let bytes = capture_now(lab)?;
            let cap = parse_capture(&bytes)?;
            let w = wire::inspect(&cap, rules, Some((from, to)));
            Ok((
                w.clean(),
                format!(
                    "{:.1} s window: {} frames, {} ESP, {} ARP, {} violations {}",
                    to - from,
                    w.frames,
                    w.esp,
                    w.arp,
                    w.violations,
                    w.examples.join("; ")
                ),
            ))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_data_has_the_size_and_the_marker() {
        let d = transfer_data("MARK");
        assert_eq!(d.len(), TRANSFER_BYTES);
        assert!(d.starts_with(b"MARK line 0000000000\n"));
    }

    #[test]
    fn counter_lines_are_read_and_a_mangled_one_is_not() {
        let lines: Vec<String> = [
            "appliance: viaduct| out tunnel=lan-a-to-lan-b spi=0x661d5a4b packets=12 bytes=1008",
            "appliance: viaduct| ouut tunnel=lan-a-to-lan-b-tcp spi=0x3b511a52 packets=149",
            "appliance: viaduct| out drop total=7",
            "appliance: viaduct| in drop total=x",
        ]
        .map(String::from)
        .to_vec();
        let m = |t: &str| format!("viaduct| out tunnel={t} ");
        assert_eq!(
            counter_in(&lines, &m("lan-a-to-lan-b"), "packets="),
            Some(12)
        );
        assert_eq!(
            counter_in(&lines, &m("lan-a-to-lan-b-tcp"), "packets="),
            None
        );
        assert_eq!(counter_in(&lines, "viaduct| out drop total=", ""), Some(7));
        assert_eq!(counter_in(&lines, "viaduct| in drop total=", ""), None);
        assert_eq!(counter_in(&lines, &m("lan-a-to-lan-b"), "nothing="), None);
    }

    #[test]
    fn report_table_and_verdict() {
        let mut r = Report::default();
        assert!(!r.passed(), "an empty report is not a pass");
        r.checks.push(Check {
            name: "a".into(),
            passed: true,
            secs: 1.0,
            detail: "fine".into(),
        });
        assert!(r.passed());
        r.checks.push(Check {
            name: "bbb".into(),
            passed: false,
            secs: 2.5,
            detail: "broken".into(),
        });
        assert!(!r.passed());
        let t = r.table();
        assert!(t.contains("bbb    FAIL       2.5 s  broken"), "{t}");
        assert!(t.contains("1 of 2 checks passed"), "{t}");
    }
}
