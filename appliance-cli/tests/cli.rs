//! End-to-end tests of the `appliance` binary: exit codes, the text users
//! read (insta snapshots) and the JSON machines read.

use std::path::{Path, PathBuf};
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

/// Regression: `profile check profiles/*.toml` picked up the profile crate's
/// own Cargo.toml. The shipped profiles' folder holds profiles and locks only.
#[test]
fn every_toml_in_the_profiles_folder_is_a_valid_profile() {
    let mut args = vec!["profile".to_string(), "check".to_string()];
    for sub in ["profiles", "profiles/base", "profiles/lab"] {
        let mut names: Vec<String> = std::fs::read_dir(root().join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .map(|n| format!("{sub}/{n}"))
            .collect();
        names.sort();
        args.extend(names);
    }
    assert_eq!(args.len(), 2 + 7, "{args:?}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = appliance(&args);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    for e in std::fs::read_dir(root().join("profiles")).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            n.ends_with(".toml")
                || n.ends_with(".lock")
                || ["base", "lab", "model"].contains(&n.as_str()),
            "profiles/{n} is neither a profile nor a lock"
        );
    }
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
    let out = appliance(&[
        "profile",
        "check",
        "profiles/model/tests/fixtures/nic-both.toml",
    ]);
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
    // Regression: the output ended without a newline.
    assert!(
        shown.ends_with('\n') && !shown.ends_with("\n\n"),
        "{shown:?}"
    );
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

/// `policy export --format nft`: from a profile and from its compiled blob
/// the same ruleset; a bad interface name is refused by its option, and no
/// file is written.
/// `--format frr`: the learned-route ranges as FRR prefix lists, written
/// atomically; a policy that learns nothing says so.
#[test]
fn policy_export_writes_frr_prefix_lists() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("learn.frr");
    let o = appliance(&[
        "policy",
        "export",
        "--format",
        "frr",
        "policy/tests/fixtures/router-learned.toml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("FRR prefix lists, 3 allowed ranges"));
    let t = std::fs::read_to_string(&out).unwrap();
    for want in [
        "ip prefix-list viaduct-learn seq 10 deny 10.0.0.0/8 le 32",
        "ip prefix-list viaduct-learn seq 80 permit 1.0.0.0/8 le 24",
        "ip prefix-list viaduct-learn seq 85 permit 0.0.0.0/0",
        "ipv6 prefix-list viaduct-learn6 seq 40 permit 2a00::/12 ge 32 le 48",
        "most 5000 learned routes",
    ] {
        assert!(t.contains(want), "{want:?} in\n{t}");
    }
    let o = appliance(&[
        "policy",
        "export",
        "--format",
        "frr",
        "profiles/firewall.toml",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("This policy learns no routes"));
}

#[test]
fn policy_export_writes_an_nftables_ruleset_from_a_profile_or_a_blob() {
    let dir = tempfile::tempdir().unwrap();
    let from_profile = appliance(&[
        "policy",
        "export",
        "--format",
        "nft",
        "profiles/firewall.toml",
    ]);
    assert!(
        from_profile.status.success(),
        "{}",
        text(&from_profile.stderr)
    );
    let ruleset = text(&from_profile.stdout);
    for want in [
        "table inet viaduct {",
        "type filter hook forward priority filter; policy drop;",
        "iifname \"black\" meta nfproto ipv4 ct state { established, related } counter accept comment \"tracked-in\"",
        "iifname \"red\" meta nfproto ipv4 ip saddr 10.1.0.0/24 meta l4proto 6 th dport 443 ct state { new } counter accept comment \"tls-out\"",
        "nf_conntrack_tcp_loose=0",
    ] {
        assert!(ruleset.contains(want), "{want:?} in\n{ruleset}");
    }
    let blob = dir.path().join("fw.policy");
    let o = appliance(&[
        "policy",
        "compile",
        "profiles/firewall.toml",
        "-o",
        blob.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = dir.path().join("fw.nft");
    let o = appliance(&[
        "policy",
        "export",
        "--format",
        "nft",
        blob.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), ruleset);
    // Interfaces of the caller's choosing; names Linux would refuse are
    // refused here.
    let o = appliance(&[
        "policy",
        "export",
        "--format",
        "nft",
        "profiles/firewall.toml",
        "--red-if",
        "lan0",
        "--black-if",
        "wan0",
    ]);
    assert!(text(&o.stdout).contains("iifname \"wan0\""));
    let bad = dir.path().join("bad.nft");
    for (opt, name) in [
        ("--red-if", "a b"),
        ("--black-if", "sixteen-chars-xx"),
        ("--red-if", "x\"y"),
    ] {
        let o = appliance(&[
            "policy",
            "export",
            "--format",
            "nft",
            "profiles/firewall.toml",
            opt,
            name,
            "-o",
            bad.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{opt} {name:?}");
        assert!(text(&o.stderr).contains(opt), "{}", text(&o.stderr));
        assert!(!bad.exists());
    }
}

#[test]
fn policy_compile_that_fails_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ambiguous.policy");
    let o = appliance(&[
        "policy",
        "compile",
        "policy/tests/fixtures/ambiguous-spd.toml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("overlap with different actions"),
        "{}",
        text(&o.stderr)
    );
    assert!(!out.exists());
}

/// The ids profile compiles: its signatures are in the blob, and `policy
/// show` lists them.
#[test]
fn policy_compile_of_the_ids_profile_carries_its_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ids.policy");
    let o = appliance(&[
        "policy",
        "compile",
        "profiles/ids.toml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = appliance(&["policy", "show", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let shown = text(&o.stdout);
    assert!(shown.contains("ids: 3 signatures (1 drop)"), "{shown}");
    assert!(
        shown.contains("sid 1000003 rev 1 drop tcp \"EICAR test file in a web download\""),
        "{shown}"
    );
}

/// The README's main job from an empty cache (no private apt state, no
/// parts; the content-addressed package store is shared so that CI does not
/// download everything again), then the life of its lock: a lock naming a
/// version Debian's archive no longer has fails with --locked (naming the
/// package once, and both ways forward), builds exactly with --snapshot (a
/// snapshot archive served over HTTP on loopback), and moves forward
/// visibly in a plain build.
#[test]
fn main_job_from_an_empty_cache_and_the_life_of_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let user = user_cache();
    std::fs::create_dir_all(user.join("debs")).unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(profiles.join("base")).unwrap();
    for f in ["vpn-gateway.toml", "vpn-gateway.lock", "base/gateway.toml"] {
        std::fs::copy(root().join("profiles").join(f), profiles.join(f)).unwrap();
    }
    let profile = profiles.join("vpn-gateway.toml");
    let lock_path = profiles.join("vpn-gateway.lock");
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::os::unix::fs::symlink(user.join("debs"), cache.join("debs")).unwrap();
    let build = |cache: &Path, out: &Path, more: &[&str]| {
        let mut args = vec![
            "build".to_string(),
            profile.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        args.extend(more.iter().map(|s| s.to_string()));
        Command::new(env!("CARGO_BIN_EXE_appliance"))
            .args(&args)
            .env("APPLIANCE_CACHE", cache)
            .current_dir(root())
            .output()
            .expect("run appliance")
    };

    // 1. The main job, from an empty cache, with the committed lock (which
    // the archive may have overtaken since it was committed).
    let out = dir.path().join("out");
    let o = build(&cache, &out, &[]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let lock_digest = |p: &Path| components::Lock::load(p).unwrap().digest().to_hex();
    assert_eq!(m["lock"]["sha256"], lock_digest(&lock_path));
    // The image diet: UKI ≤ 25 MB; the disk holds little more than its
    // three copies (the firmware's default path, slots A and B).
    let uki = m["uki"]["size"].as_u64().unwrap();
    eprintln!("FIGURE: vpn-gateway UKI {uki} bytes");
    assert!(uki <= 25_000_000, "UKI is {uki} bytes");
    let disk = std::fs::metadata(out.join("disk.img")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let written = disk.blocks() * 512;
    eprintln!("FIGURE: vpn-gateway disk.img {written} bytes written");
    assert!(
        written <= 3 * uki + (4 << 20),
        "{written} bytes written for a {uki}-byte UKI"
    );

    // 2. A lock naming a version the archive no longer has (a copy of the
    // current lock, busybox-static's version changed), with that package
    // not yet in the package store.
    let lock = components::Lock::load(&lock_path).unwrap();
    let bb = lock.package("busybox-static").unwrap().clone();
    let real = bb.version.to_string();
    let stale = std::fs::read_to_string(&lock_path)
        .unwrap()
        .replace(&format!("version = \"{real}\""), "version = \"9.9.9-1\"");
    assert!(stale.contains("9.9.9-1"));
    std::fs::write(&lock_path, &stale).unwrap();
    let cache2 = dir.path().join("cache2");
    std::fs::create_dir_all(cache2.join("debs")).unwrap();
    for shared in ["apt", "parts"] {
        std::os::unix::fs::symlink(cache.join(shared), cache2.join(shared)).unwrap();
    }
    for p in &lock.packages {
        if p.name.as_str() != "busybox-static" {
            let f = format!("{}.deb", p.sha256.to_hex());
            std::fs::hard_link(user.join("debs").join(&f), cache2.join("debs").join(&f)).unwrap();
        }
    }
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    let o = build(&cache2, &out, &["--locked"]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for needle in [
        "busybox-static 9.9.9-1",
        &real,
        "vpn-gateway.lock",
        "without --locked",
        "--snapshot https://snapshot.debian.org/archive/debian/",
    ] {
        assert!(err.contains(needle), "{needle:?} missing: {err}");
    }
    assert_eq!(err.matches("9.9.9-1").count(), 1, "said twice: {err}");
    assert!(
        !err.contains("::") && !err.contains("AptContext"),
        "internal names: {err}"
    );
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), stale);
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);

    // 3. --snapshot: the pinned bytes from a snapshot archive over HTTP.
    let snap = dir.path().join("snapshot");
    let at = snap.join(&bb.filename);
    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
    std::fs::copy(
        user.join("debs")
            .join(format!("{}.deb", bb.sha256.to_hex())),
        &at,
    )
    .unwrap();
    let server = serve(&snap);
    let empty = format!("http://{server}/empty-archive");
    let full = format!("http://{server}/");
    let o = build(&cache2, &out, &["--snapshot", &empty, "--snapshot", &full]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), stale);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["lock"]["sha256"], lock_digest(&lock_path));
    assert!(cache2
        .join("debs")
        .join(format!("{}.deb", bb.sha256.to_hex()))
        .exists());

    // 4. A plain build moves the lock forward, visibly, and records it.
    std::fs::remove_file(
        cache2
            .join("debs")
            .join(format!("{}.deb", bb.sha256.to_hex())),
    )
    .unwrap();
    let o = build(&cache2, &out, &[]);
    let said = text(&o.stdout);
    assert!(o.status.success(), "{said}{}", text(&o.stderr));
    assert!(
        said.contains(&format!("busybox-static 9.9.9-1 → {real}")),
        "{said}"
    );
    let moved = components::Lock::load(&lock_path).unwrap();
    assert_eq!(
        moved.package("busybox-static").unwrap().version.to_string(),
        real
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["lock"]["sha256"], moved.digest().to_hex());
}

fn user_cache() -> PathBuf {
    std::env::var_os("APPLIANCE_CACHE")
        .map(PathBuf::from)
        .or_else(components::cache::user_cache_dir)
        .expect("HOME is set")
}

/// A minimal HTTP/1.1 file server on loopback for `root`; returns its address.
fn serve(root: &Path) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut request = String::new();
                    if reader.read_line(&mut request).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let raw = request.split_whitespace().nth(1).unwrap_or("/");
                    let path = &percent_decode(raw);
                    let file = root.join(path.trim_start_matches('/'));
                    let head = request.starts_with("HEAD ");
                    let reply = match std::fs::read(&file) {
                        Ok(body) if !path.contains("..") && file.is_file() => {
                            let mut r = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                                body.len()
                            )
                            .into_bytes();
                            if !head {
                                r.extend(body);
                            }
                            r
                        }
                        _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                    };
                    if conn.write_all(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
