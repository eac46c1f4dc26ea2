//! Codec and validation tests for the policy blob.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy_blob::*;
use proptest::prelude::*;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn sample() -> Policy {
    let t = Tunnel::new(
        7,
        "to-b",
        v4(198, 51, 100, 1),
        v4(198, 51, 100, 2),
        Aead::Aes256Gcm16,
    )
    .with_local_ts(TrafficSelector::prefix(Prefix::new(v4(10, 1, 0, 0), 24)))
    .with_remote_ts(TrafficSelector {
        prefix: Prefix::new(v4(10, 2, 0, 0), 24),
        protocol: Protocol::TCP,
        ports: PortRange {
            start: 80,
            end: 443,
        },
    })
    .with_manual_keys(
        ManualSa {
            spi: Spi(0x1000),
            key: KeyMaterial::new(vec![1; 36]),
        },
        ManualSa {
            spi: Spi(0x2000),
            key: KeyMaterial::new(vec![2; 36]),
        },
    );
    let mut t = t;
    t.lifetimes.soft.bytes = Some(1 << 30);
    t.lifetimes.hard.bytes = Some(1 << 31);
    t.lifetimes.hard.seconds = Some(3600);
    Policy::new("lab-a", "1.2.3")
        .with_security_version(3)
        .with_local(v4(198, 51, 100, 1))
        .with_tunnel(t)
        .with_spd(
            "lan-b",
            Selector::between(
                Prefix::new(v4(10, 1, 0, 0), 24),
                Prefix::new(v4(10, 2, 0, 0), 24),
            ),
            SpdAction::Protect(TunnelId(7)),
        )
        .with_spd("rest", Selector::any_v4(), SpdAction::Discard)
        .with_filter(
            "no-telnet",
            Direction::Outbound,
            Selector {
                dst_ports: PortRange::single(23),
                protocol: Protocol::TCP,
                ..Selector::any_v4()
            },
            FilterAction::Drop,
        )
        .with_default_filter(FilterAction::Accept)
}

#[test]
fn round_trip_sample() {
    let p = sample();
    p.validate().unwrap();
    let blob = p.encode();
    assert_eq!(&blob[..5], b"VDPOL");
    let q = Policy::decode(&blob).unwrap();
    assert_eq!(p, q);
    assert_eq!(q.encode(), blob);
    assert_eq!(Policy::blob_digest(&blob), Some(p.digest()));
}

#[test]
fn encoding_is_deterministic() {
    assert_eq!(sample().encode(), sample().encode());
    assert_eq!(sample().digest(), sample().digest());
    let mut other = sample();
    other.security_version = SecurityVersion(4);
    assert_ne!(sample().digest(), other.digest());
}

#[test]
fn rejects_other_version_naming_both() {
    // Version 1 (no outer DSCP, TFC sizes or TCP flags) included: its
    // filter rules meant something weaker, so it is not read with defaults.
    for other in [1u16, 2, FORMAT_VERSION + 1] {
        let mut blob = sample().encode();
        blob[5..7].copy_from_slice(&other.to_be_bytes());
        let e = Policy::decode(&blob).unwrap_err();
        assert_eq!(
            e,
            BlobError::UnsupportedVersion {
                found: other,
                expected: FORMAT_VERSION
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("version {other}"))
                && msg.contains(&format!("version {FORMAT_VERSION}")),
            "{msg}"
        );
    }
}

#[test]
fn format_2_carries_outer_dscp_tfc_sizes_and_tcp_flags() {
    const { assert!(FORMAT_VERSION >= 2) };
    let mut p = sample();
    p.tunnels[0].outer_dscp = 46;
    p.tunnels[0].tfc_sizes = vec![128, 512, 1400];
    p = p.with_tcp_filter(
        "replies-in",
        Direction::Inbound,
        Selector {
            protocol: Protocol::TCP,
            src_ports: PortRange::single(443),
            dst_ports: PortRange {
                start: 32768,
                end: 60999,
            },
            ..Selector::any_v4()
        },
        TcpFlags {
            mask: TcpFlags::ACK,
            value: TcpFlags::ACK,
        },
        FilterAction::Accept,
    );
    p.validate().unwrap();
    let blob = p.encode();
    let q = Policy::decode(&blob).unwrap();
    assert_eq!(q, p);
    assert_eq!(q.encode(), blob);
    // Each new field changes the digest.
    for change in [
        (|p: &mut Policy| p.tunnels[0].outer_dscp = 0) as fn(&mut Policy),
        |p| p.tunnels[0].tfc_sizes.pop().map(drop).unwrap_or(()),
        |p| p.filters[1].tcp_flags.value = 0,
    ] {
        let mut r = p.clone();
        change(&mut r);
        r.validate().unwrap();
        assert_ne!(r.digest(), p.digest());
    }
    // Defaults of a new tunnel: DSCP 0, no padding.
    let t = Tunnel::new(1, "t", v4(1, 1, 1, 1), v4(2, 2, 2, 2), Aead::Aes128Gcm16);
    assert_eq!((t.outer_dscp, t.tfc_sizes.len()), (0, 0));
}

#[test]
fn validate_dscp_tfc_sizes_and_tcp_flags() {
    let mut p = sample();
    p.tunnels[0].outer_dscp = 64;
    assert!(matches!(
        p.validate(),
        Err(BlobError::Dscp { dscp: 64, .. })
    ));
    for sizes in [
        vec![19u16],
        vec![65_001],
        vec![100, 100],
        vec![512, 128],
        (1..=65).map(|i| 100 + i).collect(),
    ] {
        let mut p = sample();
        p.tunnels[0].tfc_sizes = sizes.clone();
        assert!(
            matches!(p.validate(), Err(BlobError::TfcSizes { .. })),
            "{sizes:?}"
        );
    }
    let mut p = sample();
    p.tunnels[0].tfc_sizes = vec![20, 65_000];
    p.validate().unwrap();
    // Flags required but not looked at; flags on a rule that is not TCP.
    let mut p = sample();
    p.filters[0].tcp_flags = TcpFlags {
        mask: TcpFlags::ACK,
        value: TcpFlags::ACK | TcpFlags::SYN,
    };
    assert!(matches!(p.validate(), Err(BlobError::TcpFlags { .. })));
    let mut p = sample();
    p.filters[0].selector.protocol = Protocol::UDP;
    p.filters[0].tcp_flags = TcpFlags {
        mask: TcpFlags::SYN,
        value: 0,
    };
    assert!(matches!(p.validate(), Err(BlobError::TcpFlags { .. })));
    p.filters[0].selector.protocol = Protocol::TCP;
    p.validate().unwrap();
}

#[test]
fn tcp_flags_match() {
    let ack = TcpFlags {
        mask: TcpFlags::ACK,
        value: TcpFlags::ACK,
    };
    assert!(ack.matches(TcpFlags::ACK));
    assert!(ack.matches(TcpFlags::ACK | TcpFlags::SYN));
    assert!(!ack.matches(TcpFlags::SYN));
    assert!(!ack.matches(0));
    let not_syn = TcpFlags {
        mask: TcpFlags::SYN,
        value: 0,
    };
    assert!(not_syn.matches(TcpFlags::ACK) && !not_syn.matches(TcpFlags::SYN | TcpFlags::ACK));
    assert!(TcpFlags::ANY.matches(0xff) && TcpFlags::ANY.is_any());
}

#[test]
fn rejects_digest_mismatch() {
    let mut blob = sample().encode();
    let i = blob.len() / 2;
    blob[i] ^= 1;
    let e = Policy::decode(&blob).unwrap_err();
    assert_eq!(e, BlobError::DigestMismatch);
    assert_eq!(e.to_string(), "policy blob corrupted: digest mismatch");
}

#[test]
fn rejects_trailing_bytes() {
    let mut blob = sample().encode();
    blob.push(0);
    assert!(matches!(
        Policy::decode(&blob),
        Err(BlobError::TrailingBytes { count: 1, .. })
    ));
}

#[test]
fn rejects_bad_magic_and_truncation() {
    let blob = sample().encode();
    assert_eq!(Policy::decode(b"NOPE!\0\x01"), Err(BlobError::BadMagic));
    for n in 0..blob.len() {
        assert!(
            Policy::decode(&blob[..n]).is_err(),
            "prefix of {n} bytes accepted"
        );
    }
}

#[test]
fn key_debug_is_redacted() {
    let k = KeyMaterial::new(vec![0xAB; 20]);
    let s = format!("{:?}", sample());
    assert!(!s.contains("171") && !s.contains("0xab") && !s.contains("AB"));
    assert_eq!(format!("{k:?}"), "KeyMaterial(<20 bytes redacted>)");
}

#[test]
fn validate_unknown_tunnel() {
    let p = sample().with_spd("bad", Selector::any_v6(), SpdAction::Protect(TunnelId(99)));
    assert!(matches!(p.validate(), Err(BlobError::UnknownTunnel { .. })));
    // And decode refuses an encoded invalid policy.
    assert!(matches!(
        Policy::decode(&p.encode()),
        Err(BlobError::UnknownTunnel { .. })
    ));
}

#[test]
fn validate_duplicate_spi() {
    let mut p = sample();
    let mut t2 = p.tunnels[0].clone();
    t2.id = TunnelId(8);
    t2.name = "to-c".into();
    p.tunnels.push(t2);
    assert!(matches!(
        p.validate(),
        Err(BlobError::BadSpi { spi: 0x2000, .. })
    ));
}

#[test]
fn validate_reserved_spi() {
    let mut p = sample();
    p.tunnels[0].manual.as_mut().unwrap().outbound.spi = Spi(255);
    assert!(matches!(
        p.validate(),
        Err(BlobError::BadSpi { spi: 255, .. })
    ));
}

#[test]
fn validate_key_length() {
    let mut p = sample();
    p.tunnels[0].aead = Aead::Aes128Gcm16;
    let e = p.validate().unwrap_err();
    assert!(matches!(
        e,
        BlobError::KeyLength {
            expected: 20,
            found: 36,
            ..
        }
    ));
}

#[test]
fn validate_host_bits_and_prefix_len() {
    let mut p = sample();
    p.spd[0].selector.src = Prefix::new(v4(10, 1, 0, 1), 24);
    assert!(matches!(
        p.validate(),
        Err(BlobError::PrefixHostBits { .. })
    ));
    p.spd[0].selector.src = Prefix::new(v4(10, 1, 0, 0), 33);
    assert!(matches!(p.validate(), Err(BlobError::PrefixLength { .. })));
}

#[test]
fn validate_family_mix_ports_window_lifetimes_local() {
    let mut p = sample();
    p.spd[0].selector.dst = Prefix::any_v6();
    assert!(matches!(
        p.validate(),
        Err(BlobError::FamilyMismatch { .. })
    ));
    let mut p = sample();
    p.filters[0].selector.dst_ports = PortRange { start: 9, end: 8 };
    assert!(matches!(p.validate(), Err(BlobError::PortRange { .. })));
    let mut p = sample();
    p.tunnels[0].replay_window = 1;
    assert!(matches!(p.validate(), Err(BlobError::ReplayWindow { .. })));
    let mut p = sample();
    p.tunnels[0].lifetimes.soft.bytes = Some(u64::MAX);
    assert!(matches!(p.validate(), Err(BlobError::SoftAfterHard { .. })));
    let mut p = sample();
    p.local = vec![v4(198, 51, 100, 9)];
    assert!(matches!(p.validate(), Err(BlobError::NotLocal { .. })));
    let mut p = sample();
    p.tunnels[0].local_ts.clear();
    assert!(matches!(p.validate(), Err(BlobError::NoSelectors { .. })));
}

#[test]
fn prefix_contains() {
    let p = Prefix::new(v4(10, 1, 0, 0), 24);
    assert!(p.contains(v4(10, 1, 0, 200)));
    assert!(!p.contains(v4(10, 1, 1, 0)));
    assert!(!p.contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert!(Prefix::any_v6().contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    let h = Prefix::host(IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert!(h.contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    assert!(!h.contains(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn arb_prefix_v4() -> impl Strategy<Value = Prefix> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| {
        let m = if l == 0 { 0 } else { u32::MAX << (32 - l) };
        Prefix::new(IpAddr::V4(Ipv4Addr::from(a & m)), l)
    })
}

fn arb_ports() -> impl Strategy<Value = PortRange> {
    (any::<u16>(), any::<u16>()).prop_map(|(a, b)| PortRange {
        start: a.min(b),
        end: a.max(b),
    })
}

fn arb_selector() -> impl Strategy<Value = Selector> {
    (
        arb_prefix_v4(),
        arb_prefix_v4(),
        prop_oneof![Just(6u8), Just(17u8), any::<u8>()],
        arb_ports(),
        arb_ports(),
    )
        .prop_map(|(src, dst, p, sp, dp)| Selector {
            src,
            dst,
            protocol: Protocol(p),
            src_ports: sp,
            dst_ports: dp,
        })
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        "[a-z0-9-]{0,12}",
        "\\PC{0,8}",
        any::<u64>(),
        proptest::collection::vec(arb_ip(), 0..3),
        proptest::collection::vec(arb_selector(), 0..4),
        proptest::collection::vec(
            (
                arb_selector(),
                any::<bool>(),
                any::<bool>(),
                any::<u8>(),
                any::<u8>(),
                any::<bool>(),
            ),
            0..4,
        ),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, ver, sv, local, spd, filters, def, def_log)| {
            let mut p = Policy::new(name, ver).with_security_version(sv);
            p.local = local;
            for (i, s) in spd.into_iter().enumerate() {
                let action = if i % 2 == 0 {
                    SpdAction::Discard
                } else {
                    SpdAction::Bypass
                };
                p = p.with_spd(format!("e{i}"), s, action);
            }
            for (i, (s, inb, drop, mask, value, log)) in filters.into_iter().enumerate() {
                // TCP rules get a flags match (value within mask).
                let tcp_flags = if s.protocol == Protocol::TCP {
                    TcpFlags {
                        mask,
                        value: value & mask,
                    }
                } else {
                    TcpFlags::ANY
                };
                p = p.with_tcp_filter(
                    format!("f{i}"),
                    if inb {
                        Direction::Inbound
                    } else {
                        Direction::Outbound
                    },
                    s,
                    tcp_flags,
                    if drop {
                        FilterAction::Drop
                    } else {
                        FilterAction::Accept
                    },
                );
                if log {
                    p = p.with_log();
                }
            }
            if def_log {
                p = p.with_default_log();
            }
            // Routes to the SPD selectors' destinations (each once), and
            // ranges under their sources.
            let dsts: Vec<Prefix> = p.spd.iter().map(|e| e.selector.dst).collect();
            for (i, d) in dsts.iter().enumerate() {
                if !p.routes.iter().any(|r| r.prefix == *d) {
                    p = p.with_route(
                        *d,
                        if i % 2 == 0 {
                            RouteVia::Red
                        } else {
                            RouteVia::Black
                        },
                    );
                }
            }
            let srcs: Vec<Prefix> = p.spd.iter().map(|e| e.selector.src).collect();
            if !srcs.is_empty() {
                p = p.with_learn(LearnPolicy {
                    allow: srcs
                        .iter()
                        .map(|s| PrefixRange {
                            prefix: *s,
                            min_len: s.len,
                            max_len: s.max_len(),
                        })
                        .collect(),
                    max_routes: 1 + (sv % 1000) as u32,
                    martians: def_log,
                });
            }
            p.with_default_filter(if def {
                FilterAction::Drop
            } else {
                FilterAction::Accept
            })
        })
}

proptest! {
    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Policy::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutated_blob(i in any::<prop::sample::Index>(), v in any::<u8>()) {
        let mut blob = sample().encode();
        let idx = i.index(blob.len());
        let changed = blob[idx] != v;
        blob[idx] = v;
        let r = Policy::decode(&blob);
        if changed { prop_assert!(r.is_err()); }
    }

    #[test]
    fn decode_of_body_with_valid_digest_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        use sha2::{Digest as _, Sha256};
        let mut blob = b"VDPOL".to_vec();
        blob.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        blob.extend_from_slice(&(body.len() as u32).to_be_bytes());
        blob.extend_from_slice(&body);
        let d = Sha256::digest(&blob);
        blob.extend_from_slice(&d);
        if let Ok(p) = Policy::decode(&blob) {
            prop_assert_eq!(p.encode(), blob);
        }
    }

    #[test]
    fn parse_emit_round_trip(mut p in arb_policy()) {
        p.tunnels.clear();
        let blob = p.encode();
        let q = Policy::decode(&blob).unwrap();
        prop_assert_eq!(&q, &p);
        prop_assert_eq!(q.encode(), blob);
    }
}

/// A second tunnel to another peer with its own SPIs and keys (seeds 3, 4).
fn with_second_tunnel(mut p: Policy) -> Policy {
    let mut t2 = p.tunnels[0].clone();
    t2.id = TunnelId(8);
    t2.name = "to-c".into();
    t2.remote = v4(198, 51, 100, 3);
    let m = t2.manual.as_mut().unwrap();
    m.outbound = ManualSa {
        spi: Spi(0x3000),
        key: KeyMaterial::new(vec![3; 36]),
    };
    m.inbound = ManualSa {
        spi: Spi(0x4000),
        key: KeyMaterial::new(vec![4; 36]),
    };
    p.tunnels.push(t2);
    p
}

#[test]
fn same_key_for_both_directions_is_refused() {
    let mut p = sample();
    let m = p.tunnels[0].manual.as_mut().unwrap();
    m.inbound.key = m.outbound.key.clone();
    let e = p
        .validate()
        .expect_err("one key for both directions accepted");
    assert!(
        matches!(
            &e,
            BlobError::KeyReuse { tunnel, direction: "inbound", other_tunnel, other_direction: "outbound" }
                if tunnel == "to-b" && other_tunnel == "to-b"
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("to-b") && msg.contains("key"), "{msg}");
    // Neither key bytes nor their hex appear in the message.
    assert!(!msg.contains("0101"), "{msg}");
    assert!(Policy::decode(&p.encode()).is_err(), "decode accepts it");
}

#[test]
fn same_cipher_key_with_another_salt_is_refused() {
    // Key || salt differ only in the salt: the cipher key is still shared.
    let mut p = sample();
    let m = p.tunnels[0].manual.as_mut().unwrap();
    let mut other = m.outbound.key.expose().to_vec();
    let n = other.len();
    other[n - 1] ^= 0xff;
    m.inbound.key = KeyMaterial::new(other);
    assert!(
        matches!(p.validate(), Err(BlobError::KeyReuse { .. })),
        "same key, other salt accepted"
    );
}

#[test]
fn key_reused_across_tunnels_is_refused() {
    // Each direction of each pair: tunnel 2's outbound or inbound key equal
    // to tunnel 1's outbound or inbound key.
    for (mine_out, theirs_out) in [(true, true), (true, false), (false, true), (false, false)] {
        let mut p = with_second_tunnel(sample());
        p.validate().unwrap();
        let (a, b) = p.tunnels.split_at_mut(1);
        let m1 = a[0].manual.as_ref().unwrap();
        let src = if theirs_out {
            &m1.outbound.key
        } else {
            &m1.inbound.key
        };
        let m2 = b[0].manual.as_mut().unwrap();
        let dst = if mine_out {
            &mut m2.outbound.key
        } else {
            &mut m2.inbound.key
        };
        *dst = src.clone();
        let e = p
            .validate()
            .expect_err("key shared between tunnels accepted");
        assert!(matches!(e, BlobError::KeyReuse { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("to-b") && msg.contains("to-c"), "{msg}");
    }
}

#[test]
fn distinct_keys_of_two_tunnels_are_accepted() {
    let p = with_second_tunnel(sample());
    p.validate().unwrap();
    assert_eq!(Policy::decode(&p.encode()).unwrap(), p);
}

// ------------------------------------------------------------------ IKE

/// `sample()` with a second tunnel keyed by IKE from peer "b".
fn with_ike(auth: IkeAuth, private_key: Option<Credential>) -> Policy {
    let mut p = sample();
    let t = Tunnel::new(
        8,
        "to-b-ike",
        v4(198, 51, 100, 1),
        v4(198, 51, 100, 2),
        Aead::ChaCha20Poly1305,
    )
    .with_local_ts(TrafficSelector::prefix(Prefix::new(v4(10, 1, 1, 0), 24)))
    .with_remote_ts(TrafficSelector::prefix(Prefix::new(v4(10, 2, 1, 0), 24)));
    p = p.with_tunnel(t);
    p.ike = Some(IkeConfig {
        local_id: IkeIdentity::Fqdn("gw-a.example".into()),
        private_key,
        peers: vec![IkePeer {
            name: "b".into(),
            local: v4(198, 51, 100, 1),
            remote: v4(198, 51, 100, 2),
            remote_id: IkeIdentity::Addr(v4(198, 51, 100, 2)),
            auth,
            ike_proposals: vec![
                IkeProposal {
                    aead: Aead::Aes256Gcm16,
                    prf: IkePrf::Sha384,
                    group: KeGroup::X25519,
                },
                IkeProposal {
                    aead: Aead::ChaCha20Poly1305,
                    prf: IkePrf::Sha256,
                    group: KeGroup::Ecp256,
                },
            ],
            esp_proposals: vec![
                EspProposal {
                    aead: Aead::ChaCha20Poly1305,
                    esn: false,
                },
                EspProposal {
                    aead: Aead::Aes128Gcm16,
                    esn: true,
                },
            ],
            pfs: Some(KeGroup::X25519),
            ike_rekey_seconds: 4 * 3600,
            dpd: Dpd::default(),
            tunnels: vec![TunnelId(8)],
        }],
    });
    p
}

fn problem(p: &Policy) -> String {
    match p.validate() {
        Err(BlobError::Ike { peer, problem }) => format!("{peer}: {problem}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ike_section_round_trips_with_each_credential() {
    let cases = [
        with_ike(IkeAuth::Psk(Credential::Device("branch-psk".into())), None),
        with_ike(
            IkeAuth::Psk(Credential::Lab(KeyMaterial::new(vec![7; 32]))),
            None,
        ),
        with_ike(
            IkeAuth::Ed25519 {
                peer_public_key: [9; 32],
            },
            Some(Credential::Lab(KeyMaterial::new(vec![3; 32]))),
        ),
        with_ike(
            IkeAuth::Ed25519 {
                peer_public_key: [9; 32],
            },
            Some(Credential::Device("identity".into())),
        ),
        with_ike(
            IkeAuth::EcdsaP256 {
                peer_public_key: {
                    let mut k = [7; 65];
                    k[0] = 4;
                    k
                },
            },
            Some(Credential::Device(policy_blob::DEVICE_IDENTITY.into())),
        ),
    ];
    for p in cases {
        p.validate().unwrap();
        let blob = p.encode();
        let q = Policy::decode(&blob).unwrap();
        assert_eq!(p, q);
        assert_eq!(q.encode(), blob);
    }
}

#[test]
fn a_device_credential_is_a_name_and_never_the_secret() {
    let p = with_ike(IkeAuth::Psk(Credential::Device("branch-psk".into())), None);
    let blob = p.encode();
    // The name is in the blob; nothing else the peer entry holds is secret.
    assert!(blob.windows(10).any(|w| w == b"branch-psk"));
    for bad in ["", "Branch", "a b", "../psk", &"x".repeat(65)] {
        let p = with_ike(IkeAuth::Psk(Credential::Device(bad.to_string())), None);
        assert!(problem(&p).contains("device credential name"), "{bad:?}");
    }
}

#[test]
fn ike_section_is_checked() {
    let psk = || IkeAuth::Psk(Credential::Device("psk".into()));
    let ok = with_ike(psk(), None);
    ok.validate().unwrap();
    let change = |f: &dyn Fn(&mut IkeConfig)| {
        let mut p = ok.clone();
        f(p.ike.as_mut().unwrap());
        problem(&p)
    };
    assert!(change(&|c| c.local_id = IkeIdentity::Fqdn(String::new())).contains("our identity"));
    assert!(change(&|c| c.local_id = IkeIdentity::Fqdn("a b".into())).contains("printable"));
    assert!(change(&|c| c.peers[0].local = v4(192, 0, 2, 9)).contains("not one of our addresses"));
    assert!(
        change(&|c| c.peers[0].remote = "2001:db8::1".parse().unwrap())
            .contains("different families")
    );
    assert!(change(&|c| c.peers[0].ike_proposals.clear()).contains("IKE proposals"));
    assert!(change(&|c| c.peers[0].esp_proposals.clear()).contains("ESP proposals"));
    assert!(change(&|c| c.peers[0].ike_rekey_seconds = 5).contains("rekey time"));
    assert!(change(&|c| c.peers[0].dpd.delay_seconds = 3601).contains("DPD delay"));
    // Off, the largest delay, and `clear` are fine (and round-trip).
    for dpd in [
        Dpd {
            delay_seconds: 0,
            action: DpdAction::Restart,
        },
        Dpd {
            delay_seconds: 3600,
            action: DpdAction::Clear,
        },
    ] {
        let mut p = ok.clone();
        p.ike.as_mut().unwrap().peers[0].dpd = dpd;
        assert_eq!(Policy::decode(&p.encode()).unwrap(), p);
    }
    assert!(change(&|c| c.peers[0].tunnels = vec![TunnelId(99)]).contains("does not exist"));
    assert!(change(&|c| c.peers[0].tunnels = vec![TunnelId(7)]).contains("manual keys"));
    assert!(change(&|c| c.peers[0].tunnels.clear()).contains("at least one tunnel"));
    assert!(change(&|c| c.peers.push(c.peers[0].clone())).contains("unique"));
    assert!(change(&|c| {
        let mut twin = c.peers[0].clone();
        twin.name = "twin".into();
        c.peers.push(twin);
    })
    .contains("keyed by two peers"));
    assert!(change(
        &|c| c.peers[0].auth = IkeAuth::Psk(Credential::Lab(KeyMaterial::new(vec![1; 8])))
    )
    .contains("16 to 1024 bytes"));
    assert!(change(&|c| c.peers[0].auth = IkeAuth::Ed25519 {
        peer_public_key: [1; 32]
    })
    .contains("needs our private key"));
    assert!(change(&|c| c.peers[0].auth = IkeAuth::EcdsaP256 {
        peer_public_key: [4; 65]
    })
    .contains("needs our private key"));
    assert!(change(&|c| {
        c.private_key = Some(Credential::Device("identity".into()));
        c.peers[0].auth = IkeAuth::EcdsaP256 {
            peer_public_key: [2; 65],
        }
    })
    .contains("uncompressed point"));
    assert!(
        change(&|c| c.peers[0].auth = IkeAuth::Psk(Credential::Device("identity".into())))
            .contains("is the device identity key, not a PSK")
    );
    assert!(
        change(&|c| c.private_key = Some(Credential::Lab(KeyMaterial::new(vec![1; 31]))))
            .contains("32-byte seed")
    );
    // A tunnel without manual keys that no peer keys.
    assert!(change(&|c| c.peers.clear()).contains("neither manual keys nor a peer"));
    // A peer's tunnel must run between the peer's addresses.
    let mut p = ok.clone();
    p.local.push(v4(198, 51, 100, 7));
    p.tunnels[1].local = v4(198, 51, 100, 7);
    assert!(problem(&p).contains("between other addresses"));
}

#[test]
fn ike_section_tags_are_checked() {
    let blob = with_ike(IkeAuth::Psk(Credential::Device("psk".into())), None).encode();
    // Flip each byte of the body in turn: never a panic, and any blob that
    // decodes re-encodes to itself.
    for i in 11..blob.len() - 32 {
        let mut b = blob.clone();
        b[i] ^= 0x5a;
        let body_end = b.len() - 32;
        let digest = {
            use sha2::Digest as _;
            sha2::Sha256::digest(&b[..body_end])
        };
        b[body_end..].copy_from_slice(&digest);
        if let Ok(p) = Policy::decode(&b) {
            assert_eq!(p.encode(), b);
        }
    }
}
