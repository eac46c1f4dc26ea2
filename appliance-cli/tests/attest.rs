//! `appliance enroll` and `appliance attest` against the gateway's own attestation
//! agent (`gateway::agent`) on a TPM we did not write: swtpm, manufactured by
//! `swtpm_setup --create-ek-cert` with a private local CA, as a TPM vendor would.
//!
//! The TPM's PCRs are brought into the state a boot of the build leaves: the
//! build's predicted firmware events (Secure Boot off) are extended and written as a
//! TCG event log (what the firmware would have logged), then the init's runtime
//! events (PCR 12). Then: enrolment, a good attestation (every check), and each
//! negative refused by name — a wrong nonce, a quote over PCR 16 relabelled as PCR 4,
//! an AK without `restricted` (at enrolment and in a record), the reference values of
//! another image, a tampered event log, a reference signed by another key. Tools we
//! did not write agree on the good quote: `tpm2_checkquote` and `tpm2_eventlog`.
//! The device identity key on real boots of one QEMU machine (OVMF, swtpm): made
//! by the release key's image, unusable under an image signed by another key, the
//! same again under the release key's image.
//!
//! Skips loudly only when swtpm, swtpm_setup or tpm2-tools are missing.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use attest_wire::proto::{self, QuoteRequest};
use attest_wire::runtime;
use common::{appliance, bin_dir, root, Run};
use gateway::tpm::{PcrIndex, StreamTransport};

fn ok(r: Run, what: &str) -> Run {
    assert!(r.code == Some(0), "{what} failed:\n{r}");
    r
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn tools() -> bool {
    for (t, p) in [
        ("swtpm", "swtpm"),
        ("swtpm_setup", "swtpm-tools"),
        ("tpm2_checkquote", "tpm2-tools"),
        ("tpm2_eventlog", "tpm2-tools"),
    ] {
        if !have(t) {
            eprintln!("SKIP: {t} not found (apt-get install -y {p}); attestation not tested");
            return false;
        }
    }
    true
}

/// A signed lab build, its release key and another key.
struct Build {
    dir: PathBuf,
    profile: PathBuf,
    out: PathBuf,
    public: PathBuf,
    other_public: PathBuf,
    pass: PathBuf,
}

fn build() -> &'static Build {
    static B: OnceLock<Build> = OnceLock::new();
    B.get_or_init(|| {
        let dir = common::fresh_fixture_dir("attest-fixture");
        let pass = dir.join("pass");
        std::fs::write(&pass, "attest test passphrase\n").unwrap();
        for name in ["release", "other"] {
            ok(
                appliance(&[
                    &"key",
                    &"generate",
                    &"--out",
                    &dir.join(name),
                    &"--passphrase-file",
                    &pass,
                ]),
                "key generate",
            );
        }
        let profile = testbed::lab::copy_lab_profile(&root(), &dir.join("prof")).unwrap();
        ok(appliance(&[&"lock", &profile]), "lock");
        let out = dir.join("out");
        ok(
            appliance(&[
                &"build",
                &profile,
                &"--out",
                &out,
                &"--format",
                &"raw",
                &"--bin-dir",
                &bin_dir(),
                &"--key",
                &dir.join("release.key"),
                &"--passphrase-file",
                &pass,
            ]),
            "build",
        );
        Build {
            profile,
            public: dir.join("release.pub"),
            other_public: dir.join("other.pub"),
            pass,
            out,
            dir,
        }
    })
}

/// A manufactured swtpm (EK certificate from a local CA) on a Unix socket.
struct Tpm {
    child: std::process::Child,
    socket: PathBuf,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Tpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tpm {
    fn new() -> Tpm {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path();
        // As the testbed manufactures its TPMs: swtpm_setup with a local CA.
        testbed::vm::manufacture_tpm(&w.join("state"), &w.join("ca"), &w.join("ca.pem"))
            .expect("swtpm_setup");
        let socket = w.join("tpm.sock");
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}.ctrl", socket.display()))
            .arg("--tpmstate")
            .arg(format!("dir={}", w.join("state").display()))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Tpm {
            child,
            ca: w.join("ca.pem"),
            socket,
            _dir: dir,
        }
    }

    fn transport(&self) -> StreamTransport<std::os::unix::net::UnixStream> {
        StreamTransport(std::os::unix::net::UnixStream::connect(&self.socket).unwrap())
    }
}

const EV_NO_ACTION: u32 = 3;

fn event_type(name: &str) -> u32 {
    (0u32..=0x12)
        .chain(0x8000_0001..=0x8000_0010)
        .chain(0x8000_00e0..=0x8000_00e2)
        .find(|t| signing::eventlog::event_type_name(*t) == name)
        .unwrap_or_else(|| panic!("event type {name}"))
}

/// Event data of the right structure for `ty` (what `tpm2_eventlog` parses; the
/// digests are the prediction's, not hashes of this data).
fn event_data(ty: u32, description: &str) -> Vec<u8> {
    match signing::eventlog::event_type_name(ty).as_str() {
        "EV_SEPARATOR" => vec![0; 4],
        // UEFI_IMAGE_LOAD_EVENT: location, length, link-time address, device path length.
        "EV_EFI_BOOT_SERVICES_APPLICATION" => vec![0; 32],
        // UEFI_VARIABLE_DATA: GUID, name length (chars), data length, name (UTF-16).
        "EV_EFI_VARIABLE_DRIVER_CONFIG" | "EV_EFI_VARIABLE_AUTHORITY" => {
            let mut v = vec![0u8; 16];
            v.extend_from_slice(&1u64.to_le_bytes());
            v.extend_from_slice(&0u64.to_le_bytes());
            v.extend_from_slice(&[b'X', 0]);
            v
        }
        _ => description.as_bytes().to_vec(),
    }
}

/// A TCG2 (crypto-agile, SHA-256 only) event log of `events` (pcr, type, digest, data).
fn tcg_log(events: &[(u32, u32, [u8; 32], Vec<u8>)]) -> Vec<u8> {
    let mut spec = b"Spec ID Event03\0".to_vec();
    spec.extend_from_slice(&0u32.to_le_bytes()); // platformClass
    spec.extend_from_slice(&[0, 2, 0, 2]); // minor, major, errata, uintnSize
    spec.extend_from_slice(&1u32.to_le_bytes());
    spec.extend_from_slice(&0x000Bu16.to_le_bytes());
    spec.extend_from_slice(&32u16.to_le_bytes());
    spec.push(0); // vendorInfoSize
    let mut log = Vec::new();
    log.extend_from_slice(&0u32.to_le_bytes());
    log.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
    log.extend_from_slice(&[0u8; 20]);
    log.extend_from_slice(&(spec.len() as u32).to_le_bytes());
    log.extend_from_slice(&spec);
    for (pcr, ty, d, data) in events {
        log.extend_from_slice(&pcr.to_le_bytes());
        log.extend_from_slice(&ty.to_le_bytes());
        log.extend_from_slice(&1u32.to_le_bytes());
        log.extend_from_slice(&0x000Bu16.to_le_bytes());
        log.extend_from_slice(d);
        log.extend_from_slice(&(data.len() as u32).to_le_bytes());
        log.extend_from_slice(data);
    }
    log
}

/// A gateway's attestation side: swtpm in the state a boot of `out` leaves, and
/// the agent behind a TCP port (as black's relay and the init would serve it).
struct Gateway {
    tpm: Tpm,
    port: u16,
    ctx: gateway::agent::AgentContext,
    reference: signing::measure::ReferenceValues,
    /// The directory standing for the gateway's ESP.
    esp: PathBuf,
}

/// The release key a build was signed with (its manifest's signer is the fixture's
/// `release.pub`).
fn release_key(_out: &Path) -> [u8; 32] {
    let pem = std::fs::read(&build().public).unwrap();
    *signing::PublicKey::from_pem(&pem, "release.pub")
        .unwrap()
        .raw()
}

fn boot(out: &Path) -> Gateway {
    let tpm = Tpm::new();
    let reference: signing::measure::ReferenceValues =
        serde_json::from_slice(&std::fs::read(out.join("reference-values.json")).unwrap()).unwrap();
    let p = &reference.prediction;
    let mut events = Vec::new();
    for pred in [&p.pcr4, &p.pcr7_secure_boot_off, &p.pcr11, &p.pcr12] {
        for e in &pred.events {
            let mut d = [0u8; 32];
            hex::decode_to_slice(&e.sha256, &mut d).unwrap();
            let ty = event_type(&e.event_type);
            events.push((pred.pcr, ty, d, event_data(ty, &e.description)));
        }
    }
    // The firmware extends in boot order; within one PCR the order is the prediction's.
    let mut t = tpm.transport();
    for (pcr, _, d, _) in &events {
        gateway::tpm::extend_pcr(
            &mut t,
            PcrIndex::new(*pcr as u8).unwrap(),
            &gateway::digest::Sha256Digest(*d),
        )
        .unwrap();
    }
    let mut runtime_events: Vec<runtime::Event> = reference
        .runtime
        .iter()
        .map(|e| runtime::Event {
            pcr: e.pcr as u8,
            text: e.text.clone(),
        })
        .collect();
    for e in &runtime_events {
        gateway::tpm::extend_pcr(
            &mut t,
            PcrIndex::new(e.pcr).unwrap(),
            &gateway::digest::Sha256Digest(e.digest()),
        )
        .unwrap();
    }
    // The device identity, as the init makes it at boot: the build's UKI on the ESP
    // carries the PCR policy its release key signed for this PCR 11.
    let esp = tpm._dir.path().join("esp");
    std::fs::create_dir_all(esp.join("EFI/Linux")).unwrap();
    std::fs::copy(out.join("uki.efi"), esp.join("EFI/Linux/gw-a_0.1.0.efi")).unwrap();
    let mut log = gateway::console::Logger::new(Vec::new());
    let outcome = gateway::identity::at_boot(&mut t, Some(&esp), &mut log);
    let gateway::identity::Outcome::Ready(id) = &outcome else {
        panic!("no identity from the build's signed PCR policy: {outcome:?}")
    };
    let identity = Some(id.clone());
    runtime_events.push(outcome.event());
    drop(t);
    let log_path = tpm._dir.path().join("binary_bios_measurements");
    std::fs::write(&log_path, tcg_log(&events)).unwrap();
    let ctx = gateway::agent::AgentContext {
        tpm: vec![tpm.socket.clone()],
        event_log: log_path,
        runtime_log: runtime::to_bytes(&runtime_events),
        identity,
        release_key: Some(release_key(out)),
    };
    let esp_access = gateway::update::EspAccess::Dir(esp.clone());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = ctx.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let ctx = served.clone();
            // One stream at a time, as the init serves them.
            let mut note = |_: &str| {};
            match update_bundle::wire::read_request(&mut s) {
                Ok((proto::ENDPOINT_ATTEST, 0)) => {
                    gateway::agent::serve_quote(&mut s, &ctx, &mut note)
                }
                Ok((proto::ENDPOINT_ENROLL, 0)) => {
                    gateway::agent::serve_enroll(&mut s, &ctx, &mut note)
                }
                Ok((proto::ENDPOINT_PROVISION, 0)) => {
                    gateway::agent::serve_provision(&mut s, &ctx, &esp_access, &mut note)
                }
                _ => {
                    let _ = s.write_all(b"refused: unknown endpoint\n");
                }
            }
        }
    });
    Gateway {
        tpm,
        port,
        ctx,
        reference,
        esp,
    }
}

fn target(g: &Gateway) -> String {
    format!("127.0.0.1:{}", g.port)
}

fn enroll(g: &Gateway, fleet: &Path) -> Run {
    appliance(&[
        &"enroll",
        &target(g),
        &"--ek-ca",
        &g.tpm.ca,
        &"--out",
        &fleet,
    ])
}

fn attest_cli(g: &Gateway, fleet: &Path, reference: &Path, key: &Path) -> Run {
    appliance(&[
        &"attest",
        &target(g),
        &"--device",
        &fleet,
        &"--reference",
        &reference,
        &"--pubkey",
        &key,
        &"--json",
    ])
}

fn failed_checks(r: &Run) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r}"));
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Asks the agent directly (library) for evidence.
fn evidence(g: &Gateway, req: &QuoteRequest) -> proto::Evidence {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    attest::client::request_quote(&mut s, req).unwrap()
}

#[test]
fn enrol_then_attest_with_every_check_and_each_negative_refused_by_name() {
    if !tools() {
        return;
    }
    let b = build();
    let g = boot(&b.out);
    let fleet = b.dir.join("fleet").join("gw-a");
    let _ = std::fs::remove_dir_all(&fleet);

    // Enrolment: the EK chain, the AK's attributes, credential activation.
    let e = ok(enroll(&g, &fleet), "enroll");
    assert!(e.stdout.contains("enrolled gw-a (127.0.0.1:"), "{e}");
    assert!(e.stdout.contains("swtpm-localca"), "{e}");
    for f in ["device.json", "ak.pub", "ek-cert.der"] {
        assert!(fleet.join(f).is_file(), "no {f}");
    }
    // Enrolling with another CA is refused, naming the chain.
    let other_ca = b.dir.join("other-ca.pem");
    let other = Tpm::new();
    std::fs::copy(&other.ca, &other_ca).unwrap();
    let r = appliance(&[
        &"enroll",
        &target(&g),
        &"--ek-ca",
        &other_ca,
        &"--out",
        &b.dir.join("fleet/x"),
    ]);
    assert!(
        r.code != Some(0) && r.stderr.contains("ek-certificate"),
        "{r}"
    );

    // A good attestation: every check holds, exit 0; a second one too (the clock moves on).
    let reference = b.out.join("reference-values.json");
    for _ in 0..2 {
        let r = attest_cli(&g, &fleet, &reference, &b.public);
        assert!((r.code == Some(0)), "{r}");
        assert!(failed_checks(&r).is_empty(), "{r}");
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let names: Vec<&str> = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "reference-signature",
                "ak-enrolled",
                "ak-attributes",
                "quote-signature",
                "pcr-selection",
                "nonce",
                "pcr-digest",
                "event-log",
                "reference",
                "identity",
                "clock"
            ]
        );
        assert_eq!(v["matched"], "secure boot off");
    }
    let text = ok(
        appliance(&[
            &"attest",
            &target(&g),
            &"--device",
            &fleet,
            &"--reference",
            &reference,
            &"--pubkey",
            &b.public,
        ]),
        "attest (text)",
    );
    assert!(
        text.stdout.contains("attested: every check holds"),
        "{text}"
    );

    // A reference signed by another key.
    let r = attest_cli(&g, &fleet, &reference, &b.other_public);
    assert_eq!(r.code, Some(1), "{r}");
    assert_eq!(
        failed_checks(&r),
        ["reference-signature", "reference"],
        "{r}"
    );

    // The reference values of another image: same key, other PCR 11 and plan.
    let other_out = b.dir.join("other-image");
    let _ = std::fs::remove_dir_all(&other_out);
    std::fs::create_dir_all(&other_out).unwrap();
    let mut rv = g.reference.clone();
    for set in &mut rv.accepted {
        set.pcrs.insert(11, "11".repeat(32));
    }
    rv.runtime[0] = signing::measure::RuntimeEvent::new(
        12,
        &format!("appliance-init plan sha256:{}", "ab".repeat(32)),
    );
    let rv_bytes = rv.to_json();
    std::fs::write(other_out.join("reference-values.json"), &rv_bytes).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.out.join("manifest.json")).unwrap()).unwrap();
    m["outputs"]["reference-values.json"] = serde_json::Value::String(hex::encode(
        <sha2::Sha256 as sha2::Digest>::digest(&rv_bytes),
    ));
    std::fs::write(
        other_out.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    ok(
        appliance(&[
            &"sign",
            &other_out,
            &"--key",
            &b.dir.join("release.key"),
            &"--passphrase-file",
            &b.pass,
        ]),
        "sign the other reference",
    );
    let r = attest_cli(
        &g,
        &fleet,
        &other_out.join("reference-values.json"),
        &b.public,
    );
    assert_eq!(r.code, Some(1), "{r}");
    assert_eq!(failed_checks(&r), ["reference"], "{r}");

    // Library level: the same device record and reference, evidence altered.
    let device = attest::fleet::Device::load(&fleet).unwrap();
    let signer =
        signing::PublicKey::from_pem(&std::fs::read(&b.public).unwrap(), "release.pub").unwrap();
    let rf = attest::reference::load(&reference, &signer);
    let req = QuoteRequest {
        nonce: [7; 32],
        pcrs: attest::quote::DEFAULT_PCRS,
        target: target(&g),
    };
    let good = evidence(&g, &req);
    let failed = |ev: &proto::Evidence,
                  req: &QuoteRequest,
                  dev: &attest::fleet::Device|
     -> Vec<&'static str> {
        attest::quote::check(ev, req, dev, &rf)
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect()
    };
    let mut fresh = device.clone();
    fresh.last_clock = None;
    assert!(
        failed(&good, &req, &fresh).is_empty(),
        "{:?}",
        attest::quote::check(&good, &req, &fresh, &rf)
    );

    // A wrong nonce: evidence for one request presented for another.
    let other_req = QuoteRequest {
        nonce: [8; 32],
        ..req.clone()
    };
    assert_eq!(failed(&good, &other_req, &fresh), ["nonce", "identity"]);
    // Another address dialled (a relay forwarding elsewhere).
    let moved = QuoteRequest {
        target: "198.51.100.9:7443".into(),
        ..req.clone()
    };
    assert_eq!(failed(&good, &moved, &fresh), ["nonce", "identity"]);

    // A quote over PCR 16 (extended with PCR 4's golden events) relabelled as PCR 4.
    {
        let mut t = g.tpm.transport();
        for e in &g.reference.prediction.pcr4.events {
            let mut d = [0u8; 32];
            hex::decode_to_slice(&e.sha256, &mut d).unwrap();
            gateway::tpm::extend_pcr(
                &mut t,
                PcrIndex::new(16).unwrap(),
                &gateway::digest::Sha256Digest(d),
            )
            .unwrap();
        }
    }
    let relabel_req = QuoteRequest {
        pcrs: (attest::quote::DEFAULT_PCRS & !(1 << 4)) | 1 << 16,
        ..req.clone()
    };
    let mut relabelled = evidence(&g, &relabel_req);
    // The unsigned values, reordered as if PCR 16's value were PCR 4's.
    let idx16 = attest_wire::tpms::pcrs_of(relabel_req.pcrs)
        .iter()
        .position(|p| *p == 16)
        .unwrap();
    let v16 = relabelled.pcr_values.remove(idx16);
    relabelled.pcr_values.insert(4, v16);
    let f = failed(&relabelled, &req, &fresh);
    assert!(f.contains(&"pcr-selection"), "{f:?}");

    // A tampered event log: one digest byte of the last event.
    let mut tampered = good.clone();
    let last = &g.reference.prediction.pcr11.events.last().unwrap().sha256;
    let last = hex::decode(last).unwrap();
    let at = tampered
        .event_log
        .windows(32)
        .rposition(|w| w == &last[..])
        .unwrap();
    tampered.event_log[at + 31] ^= 1;
    assert_eq!(failed(&tampered, &req, &fresh), ["event-log"]);
    // A tampered runtime log (another policy) — the digest no longer replays.
    let mut rt = good.clone();
    rt.runtime_log = runtime::to_bytes(&[
        runtime::Event::plan(&"00".repeat(32)),
        runtime::Event::policy(&"00".repeat(32)),
    ]);
    assert_eq!(
        failed(&rt, &req, &fresh),
        ["event-log", "reference", "identity"]
    );

    // An AK without `restricted` in the record: refused by name.
    let mut weak = fresh.clone();
    let mut ak = attest_wire::tpms::Public::parse_tpm2b(&weak.ak_public_bytes()).unwrap();
    ak.attributes &= !attest_wire::tpms::attr::RESTRICTED;
    weak.ak_public = hex::encode(ak.to_tpm2b());
    weak.ak_name = hex::encode(ak.name().unwrap());
    let f = failed(&good, &req, &weak);
    assert!(f.contains(&"ak-attributes"), "{f:?}");

    // Tools we did not write agree on the good quote.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("ak.pub"), device.ak_public_bytes()).unwrap();
    std::fs::write(d.path().join("quote.msg"), &good.quote).unwrap();
    std::fs::write(d.path().join("quote.sig"), &good.signature).unwrap();
    let binding = proto::binding(
        &req.nonce,
        &hex::decode(&device.ak_name).unwrap(),
        &req.target,
    );
    let cq = Command::new("tpm2_checkquote")
        .current_dir(d.path())
        .args([
            "-u",
            "ak.pub",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-g",
            "sha256",
            "-q",
            &hex::encode(binding),
        ])
        .output()
        .unwrap();
    assert!(
        cq.status.success(),
        "tpm2_checkquote: {}",
        String::from_utf8_lossy(&cq.stderr)
    );
    std::fs::write(d.path().join("eventlog.bin"), &good.event_log).unwrap();
    let el = Command::new("tpm2_eventlog")
        .arg("--eventlog-version=2")
        .arg(d.path().join("eventlog.bin"))
        .output()
        .unwrap();
    assert!(
        el.status.success(),
        "tpm2_eventlog: {}",
        String::from_utf8_lossy(&el.stderr)
    );
    let yaml = String::from_utf8_lossy(&el.stdout);
    let quoted: std::collections::BTreeMap<u8, [u8; 32]> = attest_wire::tpms::pcrs_of(req.pcrs)
        .into_iter()
        .zip(good.pcr_values.iter().copied())
        .collect();
    // tpm2_eventlog's replay ("pcrs: sha256: N : 0x…"), then the init's events on top.
    let theirs = attest::export::tpm2_eventlog_pcrs(&yaml);
    assert!(
        !theirs.is_empty(),
        "no replay in:
{yaml}"
    );
    let runtime_events = runtime::parse(&good.runtime_log).unwrap();
    let after = runtime::replay(&theirs, &runtime_events);
    for pcr in [4u8, 7, 11, 12] {
        let want = after.get(&pcr).or(theirs.get(&pcr)).copied();
        assert_eq!(
            want,
            Some(quoted[&pcr]),
            "PCR {pcr}: tpm2_eventlog's replay differs:\n{yaml}"
        );
    }
    let _ = &g.ctx;
}

#[test]
fn enrolment_refuses_an_ak_without_restricted_before_sending_a_credential() {
    if !tools() {
        return;
    }
    let tpm = Tpm::new();
    // A gateway that presents the TPM's real EK and certificate, but a weak AK.
    let mut t = tpm.transport();
    let ek = gateway::tpmkey::ek_public(&mut t).unwrap();
    let cert = gateway::tpmkey::ek_certificate(&mut t).unwrap().unwrap();
    let mut ak = gateway::tpmkey::ensure_ak(&mut t).unwrap();
    drop(t);
    ak.attributes &= !attest_wire::tpms::attr::RESTRICTED;
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let server = std::thread::spawn(move || {
        let _ = update_bundle::wire::read_request(&mut b).unwrap();
        let _ = proto::Frame::read(&mut b).unwrap();
        proto::Identity {
            ek_public: ek.to_tpm2b(),
            ek_cert: cert,
            ak_public: ak.to_tpm2b(),
            identity: None,
        }
        .to_frame()
        .write(&mut b)
        .unwrap();
        // Nothing more may arrive: the verifier stops before MakeCredential.
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut b, &mut rest);
        rest
    });
    let pem = std::fs::read(&tpm.ca).unwrap();
    let cas = attest::ekcert::parse_pem_bundle(&pem).unwrap();
    let err = attest::client::enroll(&mut a, "weak", "test", &cas, 1_800_000_000).unwrap_err();
    drop(a);
    assert!(
        err.starts_with("ak-attributes: ") && err.contains("restricted"),
        "{err}"
    );
    assert!(
        server.join().unwrap().is_empty(),
        "a credential was sent for a weak AK"
    );
}

/// The Python with Keylime installed: `KEYLIME_PYTHON`, else the virtual
/// environment `scripts/test` makes (`target/keylime-venv`).
fn keylime_python() -> Option<PathBuf> {
    let p = std::env::var_os("KEYLIME_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/keylime-venv/bin/python"));
    let ok = Command::new(&p)
        .args(["-c", "import keylime"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIP: no Python with keylime at {} (scripts/test makes it: python3 -m venv target/keylime-venv; pip install keylime==7.14.3 and its dependencies)",
            p.display()
        );
    }
    ok.then_some(p)
}

#[test]
fn keylime_accepts_our_quote_with_the_exported_policy_and_refuses_tampered_ones() {
    if !tools() {
        return;
    }
    let Some(python) = keylime_python() else {
        return;
    };
    let b = build();
    let g = boot(&b.out);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("tpm_policy.json");
    ok(
        appliance(&[
            &"reference",
            &"export",
            &"--format",
            &"keylime",
            &"--pubkey",
            &b.public,
            &b.out,
            &"-o",
            &policy,
        ]),
        "reference export",
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
    assert_eq!(v["mask"], "0x1890", "{v}");
    assert_eq!(v["11"].as_array().unwrap().len(), 1, "{v}");
    // Another key's signature is refused.
    let r = appliance(&[
        &"reference",
        &"export",
        &"--format",
        &"keylime",
        &"--pubkey",
        &b.other_public,
        &b.out,
    ]);
    assert!(
        r.code == Some(1) && r.stderr.contains("does not verify"),
        "{r}"
    );

    let req = QuoteRequest {
        nonce: [3; 32],
        pcrs: attest::quote::DEFAULT_PCRS,
        target: target(&g),
    };
    let ev = evidence(&g, &req);
    let ak = attest_wire::tpms::Public::parse_tpm2b(&ev.ak_public).unwrap();
    let binding = proto::binding(&req.nonce, &ak.name().unwrap(), &req.target);
    let q = dir.path().join("quote");
    std::fs::create_dir_all(&q).unwrap();
    let write = |values: &[[u8; 32]]| {
        std::fs::write(q.join("ak.pub"), &ev.ak_public).unwrap();
        std::fs::write(q.join("quote.msg"), &ev.quote).unwrap();
        std::fs::write(q.join("quote.sig"), &ev.signature).unwrap();
        std::fs::write(
            q.join("quote.pcrs"),
            attest::export::tpm2_tools_pcrs(req.pcrs, values),
        )
        .unwrap();
    };
    let keylime = |policy: &Path| {
        let out = Command::new(&python)
            .arg(root().join("scripts/keylime-check-quote.py"))
            .arg(&q)
            .arg(hex::encode(binding))
            .arg(policy)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    write(&ev.pcr_values);
    let (code, out) = keylime(&policy);
    assert_eq!(
        code,
        Some(0),
        "Keylime refused our quote with our policy:\n{out}"
    );
    assert!(out.contains("PASS"), "{out}");
    // `tpm2_checkquote` reads the same PCR file.
    let cq = Command::new("tpm2_checkquote")
        .current_dir(&q)
        .args([
            "-u",
            "ak.pub",
            "-m",
            "quote.msg",
            "-s",
            "quote.sig",
            "-f",
            "quote.pcrs",
            "-g",
            "sha256",
            "-q",
            &hex::encode(binding),
        ])
        .output()
        .unwrap();
    assert!(
        cq.status.success(),
        "tpm2_checkquote -f: {}",
        String::from_utf8_lossy(&cq.stderr)
    );

    // A policy for another image (PCR 11 differs): refused.
    let mut other = v.clone();
    other["11"] = serde_json::json!(["11".repeat(32)]);
    let other_policy = dir.path().join("other.json");
    std::fs::write(&other_policy, serde_json::to_vec(&other).unwrap()).unwrap();
    let (code, out) = keylime(&other_policy);
    assert_eq!(
        code,
        Some(1),
        "Keylime accepted another image's policy:\n{out}"
    );
    // A tampered PCR value next to the quote: refused.
    let mut values = ev.pcr_values.clone();
    values[9][0] ^= 1;
    write(&values);
    let (code, out) = keylime(&policy);
    assert_eq!(
        code,
        Some(1),
        "Keylime accepted a tampered PCR value:\n{out}"
    );
}

/// Records what a client writes (to look for the secret on the wire, and to replay
/// it).
struct Tee<'a> {
    inner: &'a mut std::net::TcpStream,
    written: Vec<u8>,
}

impl std::io::Read for Tee<'_> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        std::io::Read::read(self.inner, b)
    }
}

impl std::io::Write for Tee<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.written.extend_from_slice(b);
        self.inner.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[test]
fn a_provisioned_psk_is_sealed_to_this_tpm_and_never_crosses_in_clear() {
    if !tools() {
        return;
    }
    let b = build();
    let g = boot(&b.out);
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet/gw-a");
    let e = ok(enroll(&g, &fleet), "enroll");
    let device = attest::fleet::Device::load(&fleet).unwrap();
    assert!(
        device.identity.is_some(),
        "enrolment recorded no identity key"
    );
    assert!(fleet.join("identity.pem").is_file());
    // What a peer pins, as a profile line that profile validation accepts.
    let point: String = device
        .identity_point()
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        e.stdout
            .contains(&format!("public_key = \"ecdsa-p256:{point}\"")),
        "{e}"
    );
    // `tpm:identity` is the key itself: never provisioned.
    let r = appliance(&[
        &"provision",
        &target(&g),
        &"--device",
        &fleet,
        &"--secret",
        &"identity=hex:00112233445566778899aabbccddeeff",
        &"--key",
        &b.dir.join("release.key"),
        &"--passphrase-file",
        &b.pass,
    ]);
    assert_ne!(r.code, Some(0), "{r}");
    assert!(r.stderr.contains("is the device identity key"), "{r}");

    // A 48-byte PSK: two credentials.
    let psk = b"provisioned-psk-0123456789abcdef-not-in-any-img".to_vec();
    let psk_file = dir.path().join("psk");
    std::fs::write(&psk_file, &psk).unwrap();
    let r = ok(
        appliance(&[
            &"provision",
            &target(&g),
            &"--device",
            &fleet,
            &"--secret",
            &format!("gw-psk=@{}", psk_file.display()),
            &"--key",
            &b.dir.join("release.key"),
            &"--passphrase-file",
            &b.pass,
        ]),
        "provision",
    );
    assert!(r.stdout.contains("sealed gw-psk (47 bytes)"), "{r}");
    let sealed_path = g.esp.join("appliance/secrets/gw-psk.sealed");
    let sealed = std::fs::read(&sealed_path).unwrap();
    assert!(
        !sealed.windows(psk.len()).any(|w| w == &psk[..]),
        "the PSK is in clear on the ESP"
    );
    // The gateway unseals it under this boot's policy.
    let id = g.ctx.identity.as_ref().unwrap();
    {
        let mut t = g.tpm.transport();
        let got = gateway::secrets::unseal(&mut t, id, &sealed).unwrap();
        assert_eq!(&got[..], &psk[..]);
    }

    // On the wire: never in clear; a replay of the whole session is refused (new nonce).
    let mut s = std::net::TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    let mut tee = Tee {
        inner: &mut s,
        written: Vec::new(),
    };
    let key = signing::SigningKey::from_encrypted_pem(
        &std::fs::read(b.dir.join("release.key")).unwrap(),
        b"attest test passphrase",
        "release.key",
    )
    .unwrap();
    let secrets = vec![("gw-psk".to_string(), zeroize::Zeroizing::new(psk.clone()))];
    attest::client::provision(&mut tee, &device, &secrets, &|d| key.sign(d)).unwrap();
    let written = tee.written;
    assert!(
        !written.windows(psk.len()).any(|w| w == &psk[..]),
        "the PSK crossed in clear"
    );
    let before = std::fs::read(&sealed_path).unwrap();
    let mut replay = std::net::TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    replay.write_all(&written).unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut replay, &mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("not signed by this image's release key"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&sealed_path).unwrap(),
        before,
        "a replay changed the sealed secret"
    );

    // Signed by another key: refused, nothing stored.
    let other = signing::SigningKey::generate().unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    let e = attest::client::provision(
        &mut s,
        &device,
        &[(
            "other-psk".to_string(),
            zeroize::Zeroizing::new(vec![7; 32]),
        )],
        &|d| other.sign(d),
    )
    .unwrap_err();
    assert!(e.contains("not signed by this image's release key"), "{e}");
    assert!(!g.esp.join("appliance/secrets/other-psk.sealed").exists());

    // Another image (PCR 11 moves): the sealed PSK no longer unseals.
    let mut t = g.tpm.transport();
    gateway::tpm::extend_pcr(
        &mut t,
        PcrIndex::new(11).unwrap(),
        &gateway::digest::Sha256Digest([9; 32]),
    )
    .unwrap();
    assert!(gateway::secrets::unseal(&mut t, id, &sealed).is_err());
}

/// Item 5 on real boots (QEMU, OVMF, swtpm; Secure Boot off, as a machine whose
/// firmware does not enforce it): one machine, one TPM, three boots. The image
/// signed by the release key makes the identity key; an image of the same profile
/// signed by another key boots on the same TPM and finds the key unusable (PCR 15
/// says so), without replacing it; the release key's image boots again and has the
/// very same key.
#[test]
fn the_identity_key_outlives_a_boot_of_an_image_signed_by_another_key_unusable_there() {
    use std::time::Duration;
    use testbed::vm::{Vm, VmConfig};
    if !tools() {
        return;
    }
    let b = build();
    // The same profile, built and signed with the other key.
    let other_out = b.dir.join("out-other");
    if !other_out.join("disk.img").exists() {
        ok(
            appliance(&[
                &"build",
                &b.profile,
                &"--out",
                &other_out,
                &"--format",
                &"raw",
                &"--bin-dir",
                &bin_dir(),
                &"--key",
                &b.dir.join("other.key"),
                &"--passphrase-file",
                &b.pass,
            ]),
            "build (other key)",
        );
    }
    let work = tempfile::tempdir().unwrap();
    let disk = |from: &Path, name: &str| {
        let d = work.path().join(name);
        let st = Command::new("cp")
            .arg("--sparse=always")
            .arg(from.join("disk.img"))
            .arg(&d)
            .status()
            .unwrap();
        assert!(st.success());
        d
    };
    let ours = disk(&b.out, "release.img");
    let theirs = disk(&other_out, "other.img");
    // One machine: the same name and working directory keep its UEFI variables and
    // its TPM from one start to the next (`writable`).
    let boot = |disk: &Path, story: &str| -> Vec<String> {
        let mut cfg = VmConfig::new("gw-a", &work.path().join("machine"), disk);
        cfg.writable = true;
        let mut vm = Vm::start(&cfg).unwrap_or_else(|e| panic!("{e} (scripts/test installs it)"));
        vm.wait_for("`appliance: ready gw-a`", Duration::from_secs(240), |l| {
            l.contains("appliance: ready gw-a ")
        })
        .unwrap_or_else(|e| panic!("{story}: {e}"));
        eprintln!(
            "{story}: ready after {:.1} s (TCG)",
            vm.elapsed().as_secs_f64()
        );
        vm.send_line("poweroff").unwrap();
        assert!(
            vm.wait_exit(Duration::from_secs(90)).is_some(),
            "{story}: no power-off within 90 s:\n{}",
            vm.tail(40)
        );
        vm.lines().to_vec()
    };
    let point = |lines: &[String], story: &str| -> String {
        let found: Vec<&str> = lines
            .iter()
            .filter_map(|l| {
                l.split("identity: ECDSA P-256 key in the TPM (0x81000a13), public point ")
                    .nth(1)
            })
            .collect();
        assert_eq!(found.len(), 1, "{story}: identity lines {found:?}");
        let p = found[0].trim().to_owned();
        assert_eq!(p.len(), 130, "{story}: an uncompressed P-256 point: {p}");
        assert!(p.starts_with("04"), "{story}: {p}");
        let event = "measured pcr 15 appliance-identity key sha256:";
        assert!(
            lines.iter().any(|l| l.contains(event)),
            "{story}: no PCR 15 event for the key"
        );
        p
    };

    // 1. The release key's image, first boot: the key is made in the TPM.
    let first = boot(&ours, "first boot (release key)");
    let made = point(&first, "first boot");

    // 2. The other key's image on the same machine: the key is there, but answers
    //    to the release key's PCR policies only. Unusable, said in PCR 15, kept.
    let other = boot(&theirs, "boot of the image signed by another key");
    assert!(
        !other.iter().any(|l| l.contains("public point ")),
        "the identity key was usable under an image signed by another key"
    );
    for want in [
        "measured pcr 15 appliance-identity unusable other-release-key",
        "identity: none this boot: the identity key in this TPM answers to another release key's PCR policies; it stays unusable (it is never replaced)",
    ] {
        assert!(
            other.iter().any(|l| l.contains(want)),
            "no console line {want:?}:\n{}",
            testbed::vm::console_tail(other.iter().map(String::as_str), 60)
        );
    }

    // 3. The release key's image again: the very same key, usable.
    let again = boot(&ours, "boot of the release key's image again");
    assert_eq!(
        point(&again, "third boot"),
        made,
        "the identity key changed after a boot of another key's image"
    );
}
