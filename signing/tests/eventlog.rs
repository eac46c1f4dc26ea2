//! The event-log parser against a real OVMF + swtpm log and against
//! `tpm2_eventlog` (tpm2-tools), and its robustness on arbitrary bytes.

use std::process::Command;

use proptest::prelude::*;
use signing::eventlog::{EventLog, EV_EFI_BOOT_SERVICES_APPLICATION, EV_SEPARATOR};
use signing::measure;

const LOG: &[u8] = include_bytes!("../testdata/ovmf-swtpm-sb-off.bin");
const PCR4: &str = "58e059e8b58a19afdd1e5612526d38c8aab601a795d09a20738af01020f5cb56";
const PCR7: &str = "65caf8dd1e0ea7a6347b635d2b379c93b9a1351edc2afc3ecda700e534eb3068";
const PCR11: &str = "f7732f17e013cb9beecf593e60dede08f07010096d9b81d3149f3548f368eff3";

#[test]
fn replays_to_the_pcrs_the_tpm_reported() {
    let log = EventLog::parse(LOG).unwrap();
    assert_eq!(log.algorithms.len(), 4, "sha1, sha256, sha384, sha512");
    let pcrs = log.replay_sha256().unwrap();
    assert_eq!(hex::encode(pcrs[&4]), PCR4);
    assert_eq!(hex::encode(pcrs[&7]), PCR7);
    assert_eq!(hex::encode(pcrs[&11]), PCR11);
    // PCR 4 as predicted: action, separator, two applications.
    let p4: Vec<_> = log.events_of(4).collect();
    assert_eq!(p4.len(), 4);
    assert_eq!(p4[0].describe(), measure::CALLING_BOOT_OPTION);
    assert_eq!(p4[1].event_type, EV_SEPARATOR);
    assert!(p4[2..]
        .iter()
        .all(|e| e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION));
    // PCR 11 names the sections systemd-stub measured.
    let names: Vec<String> = log.events_of(11).map(|e| e.describe()).collect();
    assert_eq!(names[0], ".linux");
    assert!(names.contains(&".cmdline".to_string()));
}

#[test]
fn secure_boot_off_pcr7_prediction_equals_the_log() {
    // PCR 7 does not depend on the image when Secure Boot is off, so any UKI
    // gives the same prediction. Build a minimal one from the stub.
    let stub = std::path::Path::new("/usr/lib/systemd/boot/efi/linuxx64.efi.stub");
    assert!(
        stub.exists(),
        "needs systemd-boot-efi (scripts/test installs it)"
    );
    let stub = std::fs::read(stub).unwrap();
    let mut b = images::pe::UkiBuilder::new(stub);
    b.linux(std::fs::read("/usr/lib/systemd/boot/efi/systemd-bootx64.efi").unwrap())
        .unwrap();
    b.cmdline(b"x".to_vec()).unwrap();
    let uki = b.build().unwrap();
    let p = measure::predict(&uki, None, None).unwrap();
    assert_eq!(p.pcr7_secure_boot_off.sha256, PCR7);
    let log = EventLog::parse(LOG).unwrap();
    let logged: Vec<String> = log
        .events_of(7)
        .map(|e| hex::encode(e.sha256().unwrap()))
        .collect();
    let predicted: Vec<String> = p
        .pcr7_secure_boot_off
        .events
        .iter()
        .map(|e| e.sha256.clone())
        .collect();
    assert_eq!(logged, predicted);
    // PCR 4's first two events do not depend on the image either.
    let logged4: Vec<String> = log
        .events_of(4)
        .map(|e| hex::encode(e.sha256().unwrap()))
        .collect();
    let predicted4: Vec<String> = p.pcr4.events.iter().map(|e| e.sha256.clone()).collect();
    assert_eq!(logged4[..2], predicted4[..2]);
}

#[test]
fn agrees_with_tpm2_eventlog() {
    let Ok(out) = Command::new("tpm2_eventlog")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/ovmf-swtpm-sb-off.bin"
        ))
        .output()
    else {
        panic!("tpm2_eventlog is needed: apt-get install tpm2-tools (scripts/test installs it)");
    };
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let ours = EventLog::parse(LOG).unwrap();
    let theirs = text.matches("- EventNum:").count();
    assert_eq!(
        theirs,
        ours.events.len() + 1,
        "tpm2_eventlog counts the header event too"
    );
    let sha256 = text
        .split("  sha256:\n")
        .nth(1)
        .unwrap()
        .split("  sha384:")
        .next()
        .unwrap();
    let pcrs = ours.replay_sha256().unwrap();
    let mut compared = 0;
    for line in sha256.lines() {
        let (idx, val) = line.split_once(':').unwrap();
        let idx: u32 = idx.trim().parse().unwrap();
        let val = val.trim().trim_start_matches("0x");
        assert_eq!(hex::encode(pcrs[&idx]), val, "PCR {idx}");
        compared += 1;
    }
    assert_eq!(compared, pcrs.len());
}

#[test]
fn truncations_are_errors_not_panics() {
    let full = EventLog::parse(LOG).unwrap().events.len();
    for n in 0..LOG.len() {
        // Cutting exactly at a record boundary gives a shorter valid log;
        // anywhere else an error.
        if let Ok(l) = EventLog::parse(&LOG[..n]) {
            assert!(l.events.len() < full);
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = EventLog::parse(&bytes).map(|l| l.replay_sha256());
    }

    #[test]
    fn mutated_log_never_panics(pos in 0usize..9065, val in any::<u8>()) {
        let mut b = LOG.to_vec();
        b[pos % LOG.len()] = val;
        let _ = EventLog::parse(&b).map(|l| {
            let _ = l.replay_sha256();
            l.events.iter().map(|e| e.describe().len()).sum::<usize>()
        });
    }
}
