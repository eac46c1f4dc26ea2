//! Compiler tests: determinism, SPD order, defaults, refusals, and the
//! blob's own integrity checks on what we produce.

use std::path::PathBuf;

use policy::{compile, compile_blob, PolicyError};
use policy_blob as blob;
use profiles::load_profile;

fn profile(rel: &str) -> profiles::Profile {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    load_profile(&p).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn same_profile_same_bytes() {
    for rel in [
        "profiles/lab/gw-a.toml",
        "profiles/vpn-gateway.toml",
        "profiles/firewall.toml",
    ] {
        let a = compile_blob(&profile(rel)).unwrap();
        let b = compile_blob(&profile(rel)).unwrap();
        assert_eq!(a, b, "{rel}");
        let decoded = blob::Policy::decode(&a).unwrap();
        assert_eq!(decoded.encode(), a, "{rel}: canonical");
    }
}

#[test]
fn lab_pair_is_keyed_by_ike_with_mirrored_peers() {
    let a = compile(&profile("profiles/lab/gw-a.toml")).unwrap();
    let b = compile(&profile("profiles/lab/gw-b.toml")).unwrap();
    assert!(a
        .tunnels
        .iter()
        .chain(&b.tunnels)
        .all(|t| t.manual.is_none()));
    let (ia, ib) = (a.ike.as_ref().unwrap(), b.ike.as_ref().unwrap());
    let (pa, pb) = (&ia.peers[0], &ib.peers[0]);
    assert_eq!((pa.local, pa.remote), (pb.remote, pb.local));
    assert_eq!(pa.remote_id, ib.local_id);
    assert_eq!(pb.remote_id, ia.local_id);
    assert!(matches!(
        &pa.auth,
        blob::IkeAuth::Psk(blob::Credential::Lab(_))
    ));
    // Two tunnels keyed in one IKE SA: all traffic, and TCP nested in it
    // (its SPD entry first: more specific).
    let ids: Vec<blob::TunnelId> = a.tunnels.iter().map(|t| t.id).collect();
    assert_eq!(pa.tunnels, ids);
    assert_eq!(pa.tunnels.len(), 2);
    assert_eq!(pb.tunnels.len(), 2);
    assert!(matches!(
        a.spd[0].action,
        blob::SpdAction::Protect(id) if id == a.tunnels[1].id
    ));
    assert_eq!(a.spd[0].selector.protocol, blob::Protocol::TCP);
    // Lab lifetimes: rekeyed by bytes.
    let l = a.tunnels[0].lifetimes;
    assert_eq!(l.hard.bytes, Some(4 << 20));
    // 4 MiB: rekeyed 1 MiB before the limit (10 % would leave a lab's
    // 10 Mbit/s a third of a second for the exchange).
    assert_eq!(l.soft.bytes, Some(3 << 20));
    assert!(a.manual_key_uses().is_empty());
}

#[test]
fn lab_pair_compiles_to_mirrored_manual_sas() {
    let a = compile(&profile("profiles/lab/manual/gw-a.toml")).unwrap();
    let b = compile(&profile("profiles/lab/manual/gw-b.toml")).unwrap();
    let (ta, tb) = (&a.tunnels[0], &b.tunnels[0]);
    assert_eq!(ta.local, tb.remote);
    assert_eq!(ta.remote, tb.local);
    let (ma, mb) = (ta.manual.as_ref().unwrap(), tb.manual.as_ref().unwrap());
    assert_eq!(ma.outbound.spi, mb.inbound.spi);
    assert_eq!(ma.outbound.key, mb.inbound.key);
    assert_eq!(ta.aead, blob::Aead::Aes256Gcm16);
    assert_eq!(ta.replay_window, 4096);
    // First SPD entry protects LAN A -> LAN B; the defaults discard.
    assert_eq!(a.spd[0].action, blob::SpdAction::Protect(ta.id));
    assert_eq!(a.spd[0].selector.src.to_string(), "10.1.0.0/24");
    assert_eq!(a.spd[0].selector.dst.to_string(), "10.2.0.0/24");
    let last = a.spd.last().unwrap();
    assert_eq!(last.action, blob::SpdAction::Discard);
    assert_eq!(
        a.local,
        vec!["198.51.100.1".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[test]
fn most_specific_entry_comes_first() {
    // vpn-gateway: tunnel 10.1.0.0/24 -> 10.20.0.0/16 (PROTECT) lies inside
    // the rule 10.1.0.0/24 -> 0.0.0.0/0 (DISCARD), written after it.
    let p = compile(&profile("profiles/vpn-gateway.toml")).unwrap();
    let names: Vec<&str> = p.spd.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "lan-to-branch",
            "no-clear-internet",
            "default-v4",
            "default-v6"
        ]
    );
    assert!(matches!(p.spd[0].action, blob::SpdAction::Protect(_)));
    assert_eq!(p.spd[1].action, blob::SpdAction::Discard);
    let t = &p.tunnels[0];
    assert!(t.manual.is_none(), "production tunnels are keyed by IKE");
    assert_eq!(t.lifetimes.hard.seconds, Some(3600));
    assert_eq!(t.lifetimes.soft.seconds, Some(3000));
    assert_eq!(t.lifetimes.hard.bytes, Some(64 << 30));
}

#[test]
fn firewall_forwards_in_clear_through_its_filter() {
    let p = compile(&profile("profiles/firewall.toml")).unwrap();
    assert!(p.tunnels.is_empty());
    assert!(p.spd.iter().all(|e| e.action == blob::SpdAction::Bypass));
    assert_eq!(p.default_filter, blob::FilterAction::Drop);
    // Stateful: tracked connections both ways (one rule per address family
    // where the profile names no prefix), then what the LAN may open.
    assert!(p.stateful());
    assert_eq!(p.filter_max_flows, 100_000);
    let tracked = blob::FilterStates(blob::FilterStates::ESTABLISHED | blob::FilterStates::RELATED);
    let names: Vec<(&str, blob::FilterStates)> = p
        .filters
        .iter()
        .map(|f| (f.name.as_str(), f.states))
        .collect();
    let new = blob::FilterStates(blob::FilterStates::NEW);
    assert_eq!(
        names,
        [
            ("tracked-in", tracked),
            ("tracked-in", tracked),
            ("tracked-out", tracked),
            ("tracked-out", tracked),
            ("web-out", new),
            ("tls-out", new),
            ("dns-out", new),
        ]
    );
    // Nothing inbound may open a connection.
    assert!(p
        .filters
        .iter()
        .filter(|f| f.direction == blob::Direction::Inbound)
        .all(|f| f.states == tracked));
    let text = policy::describe_text(&p);
    for want in [
        "proto 6 state new -> Accept",
        "state established,related -> Accept",
        "filter conntrack max 100000 flows",
        "filter default Drop log",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    // It logs what the default drops, and no rule's packets.
    assert!(p.filter_default_log);
    assert!(p.filters.iter().all(|f| !f.log));
}

/// `log = true` on a rule, `filter_default_log`: compiled into the blob,
/// shown by `policy show`, exported to nftables as `log`.
#[test]
fn logged_rules_compile_show_and_export() {
    let prof = profile("policy/tests/fixtures/firewall-logged.toml");
    let p = compile(&prof).unwrap();
    assert!(!p.filter_default_log);
    let logged: Vec<&str> = p
        .filters
        .iter()
        .filter(|f| f.log)
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(logged, ["ssh-in", "ssh-in"], "one per address family");
    let text = policy::describe_text(&p);
    assert!(text.contains("proto 6 log -> Drop"), "{text}");
    assert!(text.contains("filter default Drop\n"), "{text}");
    let back = blob::Policy::decode(&p.encode()).unwrap();
    assert_eq!(back, p);
    let nft = policy::nft::export(&p, "red", "black");
    assert!(
        nft.contains("log prefix \"viaduct ssh-in: \" counter drop"),
        "{nft}"
    );
}

/// Sets, port lists and ICMP types compile to consecutive rules of the
/// profile rule's name: one per prefix (pairs of one family when both sides
/// are sets), port range and type; the engine then enforces them.
#[test]
fn sets_port_lists_and_icmp_types_expand_in_order() {
    let p = compile(&profile("policy/tests/fixtures/firewall-sets.toml")).unwrap();
    let count = |name: &str| p.filters.iter().filter(|f| f.name == name).count();
    // 3 prefixes × 2 ports; (2 v4 × 1 v4) + (1 v6 × 1 v6); 2 v4 prefixes
    // (ICMP is IPv4's: the v6 prefix with protocol 1 stays, as written).
    assert_eq!(count("web-out"), 6);
    assert_eq!(count("dns-out"), 3);
    assert_eq!(count("ping-out"), 3);
    // Consecutive, in profile order.
    let names: Vec<&str> = p.filters.iter().map(|f| f.name.as_str()).collect();
    let mut runs = names.clone();
    runs.dedup();
    assert_eq!(
        runs,
        [
            "tracked-in",
            "tracked-out",
            "web-out",
            "dns-out",
            "ping-out"
        ]
    );
    let dns: Vec<String> = p
        .filters
        .iter()
        .filter(|f| f.name == "dns-out")
        .map(|f| format!("{} -> {}", f.selector.src, f.selector.dst))
        .collect();
    assert_eq!(
        dns,
        [
            "10.1.0.0/24 -> 198.51.100.53/32",
            "10.1.1.0/24 -> 198.51.100.53/32",
            "2001:db8:1::/48 -> 2001:db8:53::53/128",
        ]
    );
    assert!(p
        .filters
        .iter()
        .filter(|f| f.name == "ping-out")
        .all(|f| f.selector.src_ports == blob::PortRange::single(8)));
    let text = policy::describe_text(&p);
    assert!(text.contains("filter web-out"), "{text}");
    // The engine's verdicts on them: viaduct/tests/viaduct/engine.rs,
    // `sets_port_lists_and_icmp_types_are_enforced`.
}

/// The profile's timeout names and defaults are the policy blob's (and so
/// the Viaduct's), in the same order.
#[test]
fn profile_and_blob_agree_on_timeout_names_and_defaults() {
    let names: Vec<&str> = profiles::model::FLOW_TIMEOUTS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    let defaults: Vec<u32> = profiles::model::FLOW_TIMEOUTS
        .iter()
        .map(|(_, d)| *d)
        .collect();
    assert_eq!(names, blob::FLOW_TIMEOUT_NAMES);
    assert_eq!(defaults, blob::DEFAULT_FLOW_TIMEOUTS);
}

/// A rule's limit and timeouts reach the blob, `policy show` and the
/// nftables export.
#[test]
fn limits_and_timeouts_compile() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("p.toml");
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../profiles/firewall.toml");
    std::fs::write(
        &f,
        format!(
            "extends = \"{}\"\n\
             [[viaduct.filter]]\nname = \"ssh-in\"\ndirection = \"inbound\"\nprotocol = \"tcp\"\n\
             dst_ports = \"22\"\nstate = [\"new\"]\nlimit = \"10/minute burst 3\"\naction = \"accept\"\n\
             [viaduct.filter.timeouts]\ntcp_established = 3600\n",
            base.display()
        ),
    )
    .unwrap();
    let p = compile(&load_profile(&f).unwrap()).unwrap();
    let r = &p.filters[0];
    assert_eq!(
        r.limit,
        Some(blob::RateLimit {
            rate: 10,
            per_seconds: 60,
            burst: 3
        })
    );
    let mut want = blob::DEFAULT_FLOW_TIMEOUTS;
    want[2] = 3600;
    assert_eq!(r.timeouts, Some(want));
    let back = blob::Policy::decode(&p.encode()).unwrap();
    assert_eq!(back, p);
    let text = policy::describe_text(&p);
    assert!(
        text.contains("state new limit 10/minute burst 3 timeouts tcp_established=3600 -> Accept"),
        "{text}"
    );
    let nft = policy::nft::export(&p, "red", "black");
    assert!(
        nft.contains("limit rate 10/minute burst 3 packets"),
        "{nft}"
    );
    assert!(
        nft.contains("timeouts (tcp_established=3600) are not expressed"),
        "{nft}"
    );
}

/// The IDS role: the profile's rules become the Viaduct's signatures, with
/// `$HOME_NET` read as red's networks; the policy then keeps a connection
/// table (the signatures' `flow` conditions follow it), and the blob keeps
/// every field.
#[test]
fn ids_profile_compiles_its_signatures() {
    use viaduct_ids::Action::{Alert, Drop};
    let prof = profile("profiles/ids.toml");
    let p = compile(&prof).unwrap();
    let ids = p.ids.as_ref().expect("an IDS section");
    let sids: Vec<(u32, viaduct_ids::Action)> =
        ids.signatures.iter().map(|s| (s.sid, s.action)).collect();
    assert_eq!(sids, [(1000001, Alert), (1000002, Alert), (1000003, Drop)]);
    let red = prof.red.addresses[0].addr;
    let outside: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    // $HOME_NET is red's network, $EXTERNAL_NET everything else.
    let shellshock = &ids.signatures[0];
    assert_eq!(shellshock.contents[0].bytes, b"() {");
    assert_eq!(
        shellshock.flow.direction,
        Some(viaduct_ids::FlowDirection::ToServer)
    );
    assert!(shellshock.src.contains(red) && !shellshock.src.contains(outside));
    assert!(shellshock.dst.contains(outside) && !shellshock.dst.contains(red));
    assert!(shellshock.dst_ports.contains(80) && shellshock.dst_ports.contains(443));
    assert!(!shellshock.dst_ports.contains(81));
    let eicar = &ids.signatures[2];
    assert!(eicar.contents[0].bytes.starts_with(b"X5O!P%@AP[4\\PZX54"));
    assert!(eicar.src_ports.contains(80) && eicar.dst.contains(red));
    assert!(p.tracks_connections());
    let back = blob::Policy::decode(&p.encode()).unwrap();
    assert_eq!(back, p);
    let text = policy::describe_text(&p);
    assert!(text.contains("ids: 3 signatures (1 drop)"), "{text}");
    assert!(
        text.contains("sid 1000003 rev 1 drop tcp \"EICAR test file in a web download\""),
        "{text}"
    );
}

/// The router role: static routes to red and black (red's network among
/// them), cleartext bypassing the SPD, no learned routes unless asked.
#[test]
fn router_compiles_its_routes() {
    let p = compile(&profile("profiles/router.toml")).unwrap();
    assert!(p.routed());
    let routes: Vec<String> = p
        .routes
        .iter()
        .map(|r| format!("{}/{} {:?}", r.prefix.addr, r.prefix.len, r.via))
        .collect();
    assert_eq!(routes, ["0.0.0.0/0 Black", "10.1.0.0/24 Red"]);
    assert!(p.learn.is_none());
    assert!(p.spd.iter().all(|e| e.action == blob::SpdAction::Bypass));
    let text = policy::describe_text(&p);
    assert!(text.contains("route 0.0.0.0/0 -> black"), "{text}");
    assert!(text.contains("route 10.1.0.0/24 -> red"), "{text}");
    // Its ACLs: stateless, the LAN's sources only out, no LAN source and
    // no legacy port in, the rest let through.
    assert_eq!(p.default_filter, blob::FilterAction::Accept);
    assert!(!p.tracks_connections());
    let names: Vec<&str> = p.filters.iter().map(|f| f.name.as_str()).collect();
    let mut distinct = names.clone();
    distinct.dedup();
    assert_eq!(
        distinct,
        [
            "lan-out",
            "spoofed-out",
            "spoofed-in",
            "legacy-tcp-in",
            "legacy-udp-in"
        ]
    );
    for line in [
        "filter lan-out              Outbound 10.1.0.0/24 -> 0.0.0.0/0 proto 0 -> Accept",
        "filter spoofed-out          Outbound 0.0.0.0/0 -> 0.0.0.0/0 proto 0 -> Drop",
        "filter spoofed-in           Inbound 10.1.0.0/24 -> 0.0.0.0/0 proto 0 -> Drop",
        "filter legacy-tcp-in        Inbound 0.0.0.0/0 -> 0.0.0.0/0:445-445 proto 6 -> Drop",
        "filter legacy-udp-in        Inbound 0.0.0.0/0 -> 0.0.0.0/0:161-162 proto 17 -> Drop",
    ] {
        assert!(text.contains(line), "{line} not in {text}");
    }

    let p = compile(&profile("policy/tests/fixtures/router-learned.toml")).unwrap();
    let l = p.learn.as_ref().expect("learned routes");
    assert_eq!(l.max_routes, 5000);
    assert!(!l.martians);
    let ranges: Vec<String> = l
        .allow
        .iter()
        .map(|a| {
            format!(
                "{}/{} {}-{}",
                a.prefix.addr, a.prefix.len, a.min_len, a.max_len
            )
        })
        .collect();
    assert_eq!(
        ranges,
        ["1.0.0.0/8 8-24", "2a00::/12 32-48", "0.0.0.0/0 0-0"]
    );
    // Red's second network is routed to red explicitly; its LAN too.
    assert!(p
        .routes
        .iter()
        .any(|r| r.prefix.len == 16 && r.via == blob::RouteVia::Red));
    let text = policy::describe_text(&p);
    assert!(
        text.contains("learn 1.0.0.0/8 ge 8 le 24")
            && text.contains("learn max 5000 routes, martians denied"),
        "{text}"
    );
    assert_eq!(blob::Policy::decode(&p.encode()).unwrap(), p);
}

#[test]
fn ambiguous_spd_rule_is_refused() {
    match compile(&profile("policy/tests/fixtures/ambiguous-spd.toml")) {
        Err(PolicyError::Ambiguous { a, b }) => {
            let mut names = [a, b];
            names.sort();
            assert_eq!(names, ["clear-to-10-2-half".to_string(), "t1".to_string()]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn flipped_byte_and_other_version_are_rejected() {
    let bytes = compile_blob(&profile("profiles/lab/gw-a.toml")).unwrap();
    for i in [0, 5, 7, 12, bytes.len() / 2, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        let err = policy::load(std::path::Path::new("policy.bin"), &b).unwrap_err();
        assert!(err.to_string().starts_with("policy.bin: "), "{err}");
    }
    let mut v2 = bytes.clone();
    v2[6] = v2[6].wrapping_add(1); // version low byte
    let err = blob::Policy::decode(&v2).unwrap_err();
    assert!(err.to_string().contains("version"), "{err}");
}

#[test]
fn description_never_contains_keys() {
    let p = compile(&profile("profiles/lab/gw-a.toml")).unwrap();
    let text = policy::describe_text(&p) + &policy::describe(&p).to_string();
    assert!(
        !text.contains("1111111111") && !text.contains("2222222222"),
        "{text}"
    );
    assert!(text.contains("PROTECT tunnel 1"));
}

#[test]
fn udp_encapsulation_reaches_the_blob() {
    let plain = compile(&profile("profiles/lab/gw-a.toml")).unwrap();
    assert!(!plain.tunnels[0].udp_encap, "ESP (protocol 50) by default");
    let mut p = profile("profiles/lab/gw-a.toml");
    p.viaduct.ipsec.as_mut().unwrap().peers[0].encapsulation = profiles::model::Encapsulation::Udp;
    let udp = compile(&p).unwrap();
    assert!(udp.tunnels[0].udp_encap);
    let blob = compile_blob(&p).unwrap();
    let back = blob::Policy::decode(&blob).unwrap();
    assert!(back.tunnels[0].udp_encap);
    assert_ne!(
        blob,
        compile_blob(&profile("profiles/lab/gw-a.toml")).unwrap()
    );
}

#[test]
fn outer_dscp_and_tfc_padding_reach_the_blob() {
    let plain = compile(&profile("profiles/lab/gw-a.toml")).unwrap();
    assert_eq!(plain.tunnels[0].outer_dscp, 0, "DSCP 0 by default");
    assert!(
        plain.tunnels[0].tfc_sizes.is_empty(),
        "no padding by default"
    );
    let mut p = profile("profiles/lab/gw-a.toml");
    let peer = &mut p.viaduct.ipsec.as_mut().unwrap().peers[0];
    peer.outer_dscp = 46;
    peer.tfc_padding = vec![256, 1400];
    let blob = compile_blob(&p).unwrap();
    let back = blob::Policy::decode(&blob).unwrap();
    assert_eq!(back.tunnels[0].outer_dscp, 46);
    assert_eq!(back.tunnels[0].tfc_sizes, [256, 1400]);
    let text = policy::describe_text(&back);
    assert!(text.contains("dscp=46 tfc=256,1400"), "{text}");
}

#[test]
fn ike_keyed_tunnels_carry_their_peer_and_only_references() {
    let p = compile(&profile("profiles/vpn-gateway.toml")).unwrap();
    let ike = p.ike.as_ref().expect("an IKE section");
    assert_eq!(
        ike.local_id,
        blob::IkeIdentity::Fqdn("gw.example.net".into())
    );
    assert_eq!(ike.private_key, None);
    let peer = &ike.peers[0];
    assert_eq!(peer.name, "branch");
    assert_eq!(
        peer.remote_id,
        blob::IkeIdentity::Fqdn("branch.example.net".into())
    );
    assert_eq!(
        peer.auth,
        blob::IkeAuth::Psk(blob::Credential::Device("branch-psk".into()))
    );
    assert_eq!(peer.tunnels, vec![p.tunnels[0].id]);
    assert_eq!(peer.pfs, Some(blob::KeGroup::X25519));
    assert_eq!(peer.ike_rekey_seconds, 24 * 3600);
    assert_eq!(
        peer.ike_proposals[0],
        blob::IkeProposal {
            aead: blob::Aead::Aes256Gcm16,
            prf: blob::IkePrf::Sha384,
            group: blob::KeGroup::X25519
        }
    );
    assert_eq!(
        peer.esp_proposals,
        vec![
            blob::EspProposal {
                aead: blob::Aead::Aes256Gcm16,
                esn: true
            },
            blob::EspProposal {
                aead: blob::Aead::ChaCha20Poly1305,
                esn: true
            }
        ]
    );
    // The blob round-trips, and a production profile's blob holds the
    // credential's name, no secret.
    let bytes = compile_blob(&profile("profiles/vpn-gateway.toml")).unwrap();
    assert_eq!(blob::Policy::decode(&bytes).unwrap(), p);
    // Manually keyed lab tunnels need no IKE section.
    assert_eq!(
        compile(&profile("profiles/lab/manual/gw-a.toml"))
            .unwrap()
            .ike,
        None
    );
}

#[test]
fn ike_lab_credentials_and_signatures_reach_the_blob() {
    let mut p = profile("profiles/lab/gw-a.toml");
    let ipsec = p.viaduct.ipsec.as_mut().unwrap();
    ipsec.private_key = Some(profiles::model::PrivateKey::Lab {
        seed: profiles::model::LabKey::new(vec![0x42; 32]),
    });
    let peer = &mut ipsec.peers[0];
    peer.tunnels[0].manual = None;
    peer.auth = profiles::model::Auth::PublicKey { ed25519: [7; 32] };
    let c = compile(&p).unwrap();
    let ike = c.ike.as_ref().unwrap();
    assert_eq!(
        ike.private_key,
        Some(blob::Credential::Lab(blob::KeyMaterial::new(vec![
            0x42;
            32
        ])))
    );
    assert_eq!(
        ike.peers[0].auth,
        blob::IkeAuth::Ed25519 {
            peer_public_key: [7; 32]
        }
    );
    let bytes = compile_blob(&p).unwrap();
    assert_eq!(blob::Policy::decode(&bytes).unwrap(), c);
}

#[test]
fn the_device_identity_key_and_an_ecdsa_pin_reach_the_blob_and_the_text() {
    let mut p = profile("profiles/lab/gw-a.toml");
    let ipsec = p.viaduct.ipsec.as_mut().unwrap();
    ipsec.private_key = Some(profiles::model::PrivateKey::Tpm {
        name: "identity".into(),
    });
    let mut point = [0x11; 65];
    point[0] = 4;
    let peer = &mut ipsec.peers[0];
    peer.tunnels[0].manual = None;
    peer.auth = profiles::model::Auth::PublicKeyEcdsaP256 { ecdsa_p256: point };
    let c = compile(&p).unwrap();
    let ike = c.ike.as_ref().unwrap();
    assert_eq!(
        ike.private_key,
        Some(blob::Credential::Device(blob::DEVICE_IDENTITY.into()))
    );
    assert_eq!(
        ike.peers[0].auth,
        blob::IkeAuth::EcdsaP256 {
            peer_public_key: point
        }
    );
    let text = policy::describe_text(&c);
    assert!(
        text.contains("private_key tpm:identity (the device identity key, ECDSA P-256 in the TPM)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("ecdsa-p256 peer key 04{}", "11".repeat(64))),
        "{text}"
    );
    let bytes = compile_blob(&p).unwrap();
    assert_eq!(blob::Policy::decode(&bytes).unwrap(), c);
}

#[test]
fn ike_limits_of_the_engine_are_named() {
    let mut p = profile("profiles/vpn-gateway.toml");
    p.viaduct.ipsec.as_mut().unwrap().peers[0].remote_id = "ops@branch.example.net".into();
    match compile(&p) {
        Err(e @ PolicyError::Unsupported { .. }) => {
            let m = e.to_string();
            assert!(m.contains("remote_id") && m.contains("e-mail"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let mut p = profile("profiles/vpn-gateway.toml");
    p.viaduct.ipsec.as_mut().unwrap().peers[0].esp_proposals[1].pfs = None;
    match compile(&p) {
        Err(e @ PolicyError::Unsupported { .. }) => {
            assert!(e.to_string().contains("esp_proposals"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}
