//! End-to-end tests of the `appliance` binary: exit codes, the text users
//! read (insta snapshots) and the JSON machines read.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn appliance(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run appliance")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_shipped_profiles_succeeds() {
    let out = appliance(&[
        "profile",
        "check",
        "profiles/vpn-gateway.toml",
        "profiles/firewall.toml",
        "profiles/ids.toml",
        "profiles/router.toml",
        "profiles/base/gateway.toml",
        "profiles/lab/gw-a.toml",
        "profiles/lab/gw-b.toml",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    insta::assert_snapshot!(text(&out.stdout));
}

#[test]
fn check_reports_file_line_column_field_and_snippet() {
    let out = appliance(&["profile", "check", "profiles/model/tests/fixtures/nic-both.toml"]);
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(text(&out.stderr));
}

#[test]
fn check_fails_if_any_file_fails() {
    let out = appliance(&[
        "profile",
        "check",
        "profiles/lab/gw-a.toml",
        "profiles/model/tests/fixtures/weak-algorithm.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("ok: profiles/lab/gw-a.toml"));
    insta::assert_snapshot!(text(&out.stderr));
}

#[test]
fn check_json_is_machine_readable() {
    let out = appliance(&[
        "--json",
        "profile",
        "check",
        "profiles/model/tests/fixtures/unknown-field.toml",
        "profiles/router.toml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["ok"], false);
    let d = &v["files"][0]["diagnostics"][0];
    assert_eq!(d["field"], "appliance.colour");
    assert_eq!(d["line"], 3);
    assert_eq!(d["column"], 1);
    assert_eq!(v["files"][1]["ok"], true);
    assert_eq!(v["files"][1]["name"], "router");
}

#[test]
fn show_prints_the_resolved_profile() {
    let out = appliance(&["--json", "profile", "show", "profiles/vpn-gateway.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["appliance"]["name"], "vpn-gateway");
    // Inherited from the base profile.
    assert_eq!(v["red"]["services"][0]["name"], "dnsmasq");
    assert_eq!(
        v["viaduct"]["ipsec"]["peers"][0]["tunnels"][0]["remote_ts"][0]["prefix"],
        "10.20.0.0/16"
    );
}

#[test]
fn show_of_abstract_base_is_an_error() {
    let out = appliance(&["profile", "show", "profiles/base/gateway.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("abstract base profile"));
}

#[test]
fn schema_is_json_schema() {
    let out = appliance(&["profile", "schema"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["title"], "RawProfile");
    assert!(v["$schema"].as_str().unwrap().contains("json-schema.org"));
}

#[test]
fn completions_and_manpage() {
    let out = appliance(&["completions", "bash"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("_appliance"));
    let out = appliance(&["manpage"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(".TH appliance"));
}

#[test]
fn usage_errors_exit_2() {
    let out = appliance(&["profile", "check"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn policy_compile_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gw-a.policy");
    let o = appliance(&[
        "--json",
        "policy",
        "compile",
        "profiles/lab/gw-a.toml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(v["bytes"], bytes.len());
    let o = appliance(&["policy", "show", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let shown = text(&o.stdout);
    assert!(
        shown.contains("tunnel 1 lan-a-to-lan-b: 198.51.100.1 -> 198.51.100.2 aes256gcm16"),
        "{shown}"
    );
    assert!(shown.contains(v["digest"].as_str().unwrap()));
    // A flipped byte: a clear error naming the file, exit 1.
    let mut b = bytes.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    let bad = dir.path().join("bad.policy");
    std::fs::write(&bad, &b).unwrap();
    let o = appliance(&["policy", "show", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("bad.policy"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn policy_compile_of_unsupported_role_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ids.policy");
    let o = appliance(&[
        "policy",
        "compile",
        "profiles/ids.toml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("role `ids` is not supported"),
        "{}",
        text(&o.stderr)
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temporary file left behind"
    );
}
