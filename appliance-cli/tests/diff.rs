//! End-to-end tests of `appliance diff` through the real binary.
//!
//! Two images of the lab profile `gw-a` are built once per run from private
//! copies of `profiles/base/gateway.toml` and `profiles/lab/gw-a.toml`: the
//! old one as shipped (version 0.1.0, security version 1), the new one with
//! version 0.2.0, security version 2, ChaCha20-Poly1305 instead of AES-GCM
//! for the peer's ESP proposal and one filter rule more (role `firewall`). Both share one lock
//! (the same packages), one manifest key from `appliance key generate` and
//! one Secure Boot key and certificate from `openssl req`, so every PCR row
//! (4 and 7 with Secure Boot off and on, 11) is predicted for both.
//!
//! The tests check the JSON report (versions, the changed policy items,
//! each PCR equal to each build's own manifest prediction and to `appliance
//! measure`), the text report, and the errors: a changed manifest refused
//! under `--pubkey` naming it, another key, a changed `uki.efi`, a missing
//! directory.
//!
//! Needs the static gateway binaries (`scripts/build-gateway-bins`),
//! Debian's archive through the host's apt sources (or a warm package cache:
//! `APPLIANCE_CACHE` or the default user cache) and `openssl`.
//!
//! The builds live in `CARGO_TARGET_TMPDIR/diff-fixture.<pid>`; a run
//! removes the fixtures of earlier runs whose process is gone.

use std::path::{Path, PathBuf};

use std::sync::OnceLock;

use serde_json::Value;

mod common;
use common::{appliance, bin_dir, root, run, tmp_root, Run};

fn ok(r: Run, what: &str) -> Run {
    assert_eq!(r.code, Some(0), "{what} failed:\n{r}");
    r
}

/// Replaces `from` by `to` in a file, exactly once.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        text.matches(from).count(),
        1,
        "{} does not hold {from:?} once",
        path.display()
    );
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// The two signed builds.
struct Fixture {
    dir: PathBuf,
    old: PathBuf,
    new: PathBuf,
    public: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let bins = bin_dir();
        let dir = common::fresh_fixture_dir("diff-fixture");

        let pass = dir.join("pass");
        std::fs::write(&pass, "diff test passphrase\n").unwrap();
        let base = dir.join("release");
        ok(
            appliance(&[
                &"key",
                &"generate",
                &"--out",
                &base,
                &"--passphrase-file",
                &pass,
            ]),
            "key generate",
        );
        let (key, public) = (dir.join("release.key"), dir.join("release.pub"));
        let (sb_key, sb_crt) = (dir.join("sb.key"), dir.join("sb.crt"));
        ok(
            run(
                "openssl",
                &[
                    &"req",
                    &"-x509",
                    &"-newkey",
                    &"rsa:2048",
                    &"-nodes",
                    &"-subj",
                    &"/CN=diff-sb",
                    &"-days",
                    &"3650",
                    &"-keyout",
                    &sb_key,
                    &"-out",
                    &sb_crt,
                ],
            ),
            "openssl req",
        );

        let old_profile = testbed::lab::copy_lab_profile(&root(), &dir.join("old-prof")).unwrap();
        let new_profile = testbed::lab::copy_lab_profile(&root(), &dir.join("new-prof")).unwrap();
        let new_base = dir.join("new-prof/base/gateway.toml");
        edit(&new_base, "version = \"0.1.0\"", "version = \"0.2.0\"");
        edit(&new_base, "security_version = 1", "security_version = 2");
        edit(
            &new_profile,
            "esp_proposals = [\"aes256gcm16\"]",
            "esp_proposals = [\"chacha20poly1305\"]",
        );
        edit(
            &new_profile,
            "roles = [\"vpn\"]",
            "roles = [\"vpn\", \"firewall\"]",
        );
        let mut text = std::fs::read_to_string(&new_profile).unwrap();
        text.push_str(
            "\n[[viaduct.filter]]\nname = \"no-telnet-out\"\ndirection = \"outbound\"\n\
             dst = \"10.2.0.0/24\"\nprotocol = \"tcp\"\ndst_ports = \"23\"\naction = \"drop\"\n",
        );
        std::fs::write(&new_profile, text).unwrap();

        // One lock for both: the same packages, so only what the profiles
        // change differs.
        ok(appliance(&[&"lock", &old_profile]), "lock");
        std::fs::copy(
            dir.join("old-prof/lab/gw-a.lock"),
            dir.join("new-prof/lab/gw-a.lock"),
        )
        .unwrap();

        let build = |profile: &Path, out: &Path| {
            ok(
                appliance(&[
                    &"build",
                    &profile,
                    &"--out",
                    &out,
                    &"--format",
                    &"raw",
                    &"--bin-dir",
                    &bins,
                    &"--key",
                    &key,
                    &"--passphrase-file",
                    &pass,
                    &"--secure-boot-key",
                    &sb_key,
                    &"--secure-boot-cert",
                    &sb_crt,
                ]),
                "build",
            );
        };
        let (old, new) = (dir.join("old"), dir.join("new"));
        build(&old_profile, &old);
        build(&new_profile, &new);
        Fixture {
            dir,
            old,
            new,
            public,
        }
    })
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{r}"))
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// A copy of an output directory (`disk.img` linked, never read by `diff`).
fn copy_output(from: &Path) -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("diff-case.")
        .tempdir_in(tmp_root())
        .unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = t.path().join(e.file_name());
        if e.file_name() == "disk.img" {
            std::os::unix::fs::symlink(e.path(), &dst).unwrap();
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
    t
}

#[test]
fn diff_between_two_versions_reports_each_pcr_as_each_build_predicts_it() {
    let f = fixture();
    let r = ok(
        appliance(&[&"diff", &f.old, &f.new, &"--pubkey", &f.public, &"--json"]),
        "diff --json",
    );
    let d = json(&r);
    assert_eq!(d["old"]["version"], "0.1.0", "{r}");
    assert_eq!(d["new"]["version"], "0.2.0");
    assert_eq!(d["old"]["name"], "gw-a");
    assert_eq!(d["security_version"]["old"], 1);
    assert_eq!(d["security_version"]["new"], 2);
    assert_eq!(d["security_version"]["direction"], "up");
    assert_eq!(d["authenticated"], true);
    assert_eq!(d["sealed"]["same_release_key"], true);
    assert_eq!(d["warnings"], serde_json::json!([]), "{r}");
    // One lock: no package changes.
    assert_eq!(d["packages"], serde_json::json!([]), "{r}");

    // The policy: the new filter rule, the tunnels' cipher, the peer's ESP proposal.
    let changes = d["policy"]["changes"].as_array().unwrap();
    let find = |kind: &str, key: &str| {
        changes
            .iter()
            .find(|c| c["kind"] == kind && c["key"] == key)
            .unwrap_or_else(|| panic!("no {kind} {key} in {r}"))
    };
    let rule = find("filter_rule", "no-telnet-out");
    assert_eq!(rule["change"], "added");
    assert_eq!(
        rule["new"],
        "no-telnet-out: direction outbound (red -> black), match 0.0.0.0/0 -> 10.2.0.0/24 tcp dst port 23, action drop"
    );
    for tunnel in ["lan-a-to-lan-b", "lan-a-to-lan-b-tcp"] {
        let t = find("tunnel", tunnel);
        assert_eq!(t["change"], "changed");
        assert_eq!(
            t["fields"],
            serde_json::json!([{"field": "cipher", "old": "aes256gcm16", "new": "chacha20poly1305"}])
        );
    }
    let peer = find("ike_peer", "gw-b");
    assert_eq!(peer["fields"][0]["field"], "esp proposals");
    assert!(
        peer["fields"][0]["new"]
            .as_str()
            .unwrap()
            .starts_with("chacha20poly1305"),
        "{peer}"
    );
    assert_eq!(
        changes.len(),
        4,
        "only the rule, two tunnels, the peer change: {r}"
    );

    // Every PCR row equals each build's own prediction: its manifest, and
    // `appliance measure` of its UKI.
    let (om, nm) = (manifest(&f.old), manifest(&f.new));
    let measure = |dir: &Path| json(&ok(appliance(&[&"measure", &dir, &"--json"]), "measure"));
    let (omeas, nmeas) = (measure(&f.old), measure(&f.new));
    let pcrs = d["pcrs"].as_array().unwrap();
    let rows: Vec<(u64, &str)> = pcrs
        .iter()
        .map(|p| {
            (
                p["pcr"].as_u64().unwrap(),
                p["secure_boot"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (4, "off"),
            (4, "on"),
            (7, "off"),
            (7, "on"),
            (11, "either"),
            (12, "off"),
            (12, "on")
        ]
    );
    for p in pcrs {
        let field = p["manifest_field"].as_str().unwrap();
        assert_eq!(p["old"], om["pcrs"][field], "{field}");
        assert_eq!(p["new"], nm["pcrs"][field], "{field}");
        assert_eq!(
            p["old"], omeas[field]["sha256"],
            "measure of the old build, {field}"
        );
        assert_eq!(
            p["new"], nmeas[field]["sha256"],
            "measure of the new build, {field}"
        );
        let status = if p["old"] == p["new"] {
            "unchanged"
        } else {
            "changes"
        };
        assert_eq!(p["status"], status, "{field}");
    }
    // Same firmware variables and signer: PCR 7 is kept; the UKI differs:
    // PCR 4 and 11 move.
    assert_eq!(
        d["sealed"]["pcrs_kept_secure_boot_off"],
        serde_json::json!([7])
    );
    assert_eq!(
        d["sealed"]["pcrs_kept_secure_boot_on"],
        serde_json::json!([7])
    );
}

#[test]
fn diff_text_is_short_and_names_what_changes() {
    let f = fixture();
    let r = ok(
        appliance(&[&"diff", &f.old, &f.new, &"--pubkey", &f.public]),
        "diff",
    );
    let t = &r.stdout;
    assert!(
        t.starts_with("gw-a 0.1.0 → 0.2.0, security version 1 → 2 (up)\n"),
        "{r}"
    );
    for want in [
        "signatures: both manifests verified, release key sha256:",
        "packages: unchanged\n",
        "gateway binaries: unchanged\n",
        "policy:\n",
        "  + filter rule no-telnet-out: direction outbound (red -> black), match 0.0.0.0/0 -> 10.2.0.0/24 tcp dst port 23, action drop\n",
        "  ~ tunnel lan-a-to-lan-b: cipher aes256gcm16 → chacha20poly1305\n",
        "  ~ ike peer gw-b: esp proposals aes256gcm16",
        "plan: same (only its version fields and the policy digest differ)\n",
        "  PCR 7   secure boot off  unchanged  ",
        "  PCR 11                   changes    ",
        "signed PCR policy: the old UKI has one, the new UKI has one; the device identity key and the provisioned secrets survive the update: both are signed by the same PCR-policy key",
        "Secure Boot signer unchanged (CN=diff-sb)",
    ] {
        assert!(t.contains(want), "no {want:?} in:\n{r}");
    }
    assert!(!t.contains("warnings:"), "{r}");
    assert!(
        t.lines().count() <= 40,
        "not short: {} lines\n{r}",
        t.lines().count()
    );

    // Without a key nothing is authenticated, and the report says so first.
    let r = ok(
        appliance(&[&"diff", &f.old, &f.new]),
        "diff without --pubkey",
    );
    assert!(
        r.stdout
            .contains("signatures: NOT CHECKED (no --pubkey): the files are taken as they are\n"),
        "{r}"
    );
    assert!(r.stdout.contains("release key: unknown"), "{r}");
    let r = ok(
        appliance(&[&"diff", &f.old, &f.new, &"--json"]),
        "diff --json",
    );
    assert_eq!(json(&r)["authenticated"], false);
}

#[test]
fn diff_refuses_a_changed_manifest_under_pubkey_naming_it() {
    let f = fixture();
    let t = copy_output(&f.new);
    let m = t.path().join("manifest.json");
    edit(&m, "\"version\": \"0.2.0\"", "\"version\": \"0.2.1\"");
    let r = appliance(&[&"diff", &f.old, &t.path(), &"--pubkey", &f.public]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stdout.is_empty(), "{r}");
    let line = r.stderr.trim();
    assert_eq!(r.stderr.lines().count(), 1, "one error: {r}");
    assert!(
        line.starts_with(&format!("error: {}: the signature ", m.display()))
            && line.contains("does not verify with key sha256:"),
        "{r}"
    );
    // --json: the same error as JSON.
    let r = appliance(&[
        &"diff",
        &f.old,
        &t.path(),
        &"--pubkey",
        &f.public,
        &"--json",
    ]);
    assert_eq!(r.code, Some(1), "{r}");
    let e = json(&r)["error"].as_str().unwrap().to_string();
    assert!(e.starts_with(&m.display().to_string()), "{e}");
    // Without --pubkey the change goes through, and the report says nothing
    // was authenticated: never trusted silently.
    let r = ok(
        appliance(&[&"diff", &f.old, &t.path()]),
        "unauthenticated diff",
    );
    assert!(r.stdout.contains("0.1.0 → 0.2.1"), "{r}");
    assert!(r.stdout.contains("NOT CHECKED"), "{r}");

    // Another key: the old build is refused first, by name.
    let other = f.dir.join("other");
    let pass = f.dir.join("pass");
    ok(
        appliance(&[
            &"key",
            &"generate",
            &"--out",
            &other,
            &"--passphrase-file",
            &pass,
        ]),
        "key generate",
    );
    let r = appliance(&[
        &"diff",
        &f.old,
        &f.new,
        &"--pubkey",
        &f.dir.join("other.pub"),
    ]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains(&format!(
            "{}: the signature",
            f.old.join("manifest.json").display()
        )),
        "{r}"
    );
    // An unsigned build under --pubkey: refused, naming manifest.sig.
    let u = copy_output(&f.new);
    std::fs::remove_file(u.path().join("manifest.sig")).unwrap();
    let r = appliance(&[&"diff", &f.old, &u.path(), &"--pubkey", &f.public]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains(&format!(
            "{}: missing",
            u.path().join("manifest.sig").display()
        )),
        "{r}"
    );
}

#[test]
fn diff_refuses_a_changed_uki_and_a_missing_build() {
    let f = fixture();
    let t = copy_output(&f.new);
    let uki = t.path().join("uki.efi");
    let mut bytes = std::fs::read(&uki).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&uki, bytes).unwrap();
    let r = appliance(&[&"diff", &f.old, &t.path()]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr
            .starts_with(&format!("error: {}: SHA-256 ", uki.display()))
            && r.stderr.contains("but manifest.json says"),
        "{r}"
    );

    let missing = f.dir.join("no-such-build");
    let r = appliance(&[&"diff", &missing, &f.new]);
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.starts_with(&format!(
            "error: {}: ",
            missing.join("manifest.json").display()
        )),
        "{r}"
    );
}
