//! The channel's codec (round trips, no panics, truncation, trailing bytes)
//! and the data plane's install check, rule by rule.

use std::net::{IpAddr, Ipv4Addr};

use policy_blob::*;
use proptest::prelude::*;
use viaduct_channel::*;
use zeroize::Zeroizing;

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, d))
}

/// Tunnel 1 keyed by IKE peer "b" (ChaCha20 noesn, AES-128 esn), tunnel 2
/// manually keyed.
fn policy() -> Policy {
    let ike_tunnel = Tunnel::new(1, "ike", v4(1), v4(2), Aead::ChaCha20Poly1305)
        .with_local_ts(TrafficSelector::prefix(Prefix::new(
            "10.1.0.0".parse().unwrap(),
            24,
        )))
        .with_remote_ts(TrafficSelector::prefix(Prefix::new(
            "10.2.0.0".parse().unwrap(),
            24,
        )));
    let manual = Tunnel::new(2, "manual", v4(1), v4(2), Aead::Aes256Gcm16)
        .with_local_ts(TrafficSelector::prefix(Prefix::new(
            "10.1.1.0".parse().unwrap(),
            24,
        )))
        .with_remote_ts(TrafficSelector::prefix(Prefix::new(
            "10.2.1.0".parse().unwrap(),
            24,
        )))
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
    let mut p = Policy::new("t", "1")
        .with_local(v4(1))
        .with_tunnel(ike_tunnel)
        .with_tunnel(manual);
    p.ike = Some(IkeConfig {
        local_id: IkeIdentity::Fqdn("a.test".into()),
        private_key: None,
        peers: vec![IkePeer {
            name: "b".into(),
            local: v4(1),
            remote: v4(2),
            remote_id: IkeIdentity::Fqdn("b.test".into()),
            auth: IkeAuth::Psk(Credential::Device("b-psk".into())),
            ike_proposals: vec![IkeProposal {
                aead: Aead::Aes256Gcm16,
                prf: IkePrf::Sha256,
                group: KeGroup::X25519,
            }],
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
            pfs: None,
            ike_rekey_seconds: 3600,
            dpd: Dpd::default(),
            tunnels: vec![TunnelId(1)],
        }],
    });
    p.validate().unwrap();
    p
}

fn install() -> SaInstall {
    SaInstall {
        tunnel: TunnelId(1),
        inbound_spi: 0xc000_0001,
        outbound_spi: 0xd000_0001,
        aead: Aead::ChaCha20Poly1305,
        esn: false,
        key_out: Zeroizing::new(vec![0x11; 36]),
        key_in: Zeroizing::new(vec![0x22; 36]),
        udp_remote_port: Some(4500),
        outbound_active: false,
        soft_seconds: 3000,
        hard_seconds: 3600,
    }
}

#[test]
fn an_install_the_policy_allows_passes() {
    let p = policy();
    check_install(&p, &install(), |_| false).unwrap();
    let mut aes = install();
    aes.aead = Aead::Aes128Gcm16;
    aes.esn = true;
    aes.key_out = Zeroizing::new(vec![3; 20]);
    aes.key_in = Zeroizing::new(vec![4; 20]);
    aes.udp_remote_port = None;
    check_install(&p, &aes, |_| false).unwrap();
}

#[test]
fn every_rule_refuses_what_breaks_it() {
    let p = policy();
    let refused = |f: &dyn Fn(&mut SaInstall)| {
        let mut i = install();
        f(&mut i);
        check_install(&p, &i, |spi| spi == 0x0bad_0bad).unwrap_err()
    };
    assert_eq!(refused(&|i| i.tunnel = TunnelId(9)), Refusal::UnknownTunnel);
    assert_eq!(refused(&|i| i.tunnel = TunnelId(2)), Refusal::NotIkeKeyed);
    assert_eq!(refused(&|i| i.aead = Aead::Aes256Gcm16), Refusal::Transform);
    assert_eq!(refused(&|i| i.esn = true), Refusal::Transform);
    assert_eq!(
        refused(&|i| i.key_out = Zeroizing::new(vec![1; 35])),
        Refusal::Key
    );
    assert_eq!(
        refused(&|i| i.key_in = Zeroizing::new(vec![1; 37])),
        Refusal::Key
    );
    assert_eq!(
        refused(&|i| i.key_in = i.key_out.clone()),
        Refusal::Key,
        "the same key both ways would let a packet be reflected"
    );
    assert_eq!(refused(&|i| i.inbound_spi = 255), Refusal::ReservedSpi);
    assert_eq!(refused(&|i| i.outbound_spi = 1), Refusal::ReservedSpi);
    assert_eq!(refused(&|i| i.inbound_spi = 0x0bad_0bad), Refusal::SpiInUse);
    assert_eq!(
        refused(&|i| i.udp_remote_port = Some(0)),
        Refusal::Encapsulation
    );
    assert_eq!(refused(&|i| i.hard_seconds = 0), Refusal::Lifetimes);
    assert_eq!(refused(&|i| i.soft_seconds = 4000), Refusal::Lifetimes);
    // A policy that forces UDP encapsulation refuses plain ESP.
    let mut udp = policy();
    udp.tunnels[0].udp_encap = true;
    let mut plain = install();
    plain.udp_remote_port = None;
    assert_eq!(
        check_install(&udp, &plain, |_| false),
        Err(Refusal::Encapsulation)
    );
    // Without an IKE section nothing is IKE-keyed.
    let mut none = policy();
    none.ike = None;
    assert_eq!(
        check_install(&none, &install(), |_| false),
        Err(Refusal::NotIkeKeyed)
    );
}

#[test]
fn keys_never_show_in_debug() {
    let m = ToDataPlane::InstallSa(Box::new(install()));
    let s = format!("{m:?}");
    assert!(
        !s.contains("17, 17") && !s.contains("0x11") && s.contains("redacted"),
        "{s}"
    );
}

fn datagram() -> impl Strategy<Value = IkeDatagram> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(peer, local_port, remote_port, bytes)| IkeDatagram {
            peer,
            local_port,
            remote_port,
            bytes,
        })
}

fn to_data_plane() -> impl Strategy<Value = ToDataPlane> {
    prop_oneof![
        datagram().prop_map(ToDataPlane::SendIke),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            0usize..3,
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::option::of(any::<u16>()),
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(t, i, o, a, esn, ko, ki, udp, act, soft, hard)| {
                ToDataPlane::InstallSa(Box::new(SaInstall {
                    tunnel: TunnelId(t),
                    inbound_spi: i,
                    outbound_spi: o,
                    aead: [Aead::Aes128Gcm16, Aead::Aes256Gcm16, Aead::ChaCha20Poly1305][a],
                    esn,
                    key_out: Zeroizing::new(ko),
                    key_in: Zeroizing::new(ki),
                    udp_remote_port: udp,
                    outbound_active: act,
                    soft_seconds: soft,
                    hard_seconds: hard,
                }))
            }),
        (any::<u32>(), any::<u32>()).prop_map(|(t, s)| ToDataPlane::UseOutbound {
            tunnel: TunnelId(t),
            inbound_spi: s
        }),
        (any::<u32>(), any::<u32>()).prop_map(|(t, s)| ToDataPlane::DeleteSa {
            tunnel: TunnelId(t),
            inbound_spi: s
        }),
    ]
}

fn to_ike() -> impl Strategy<Value = ToIke> {
    prop_oneof![
        datagram().prop_map(ToIke::IkeDatagram),
        (any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(t, s, hard)| ToIke::SaLifetime {
            tunnel: TunnelId(t),
            inbound_spi: s,
            hard
        }),
        (any::<u32>(), any::<u32>(), 0usize..8).prop_map(|(t, s, r)| ToIke::Refused {
            tunnel: TunnelId(t),
            inbound_spi: s,
            refusal: Refusal::ALL[r]
        }),
    ]
}

proptest! {
    #[test]
    fn to_data_plane_round_trips_and_every_prefix_fails(m in to_data_plane()) {
        let b = m.encode();
        prop_assert_eq!(ToDataPlane::decode(&b), Ok(m));
        for n in 0..b.len() {
            prop_assert!(ToDataPlane::decode(&b[..n]).is_err());
        }
        let mut longer = b.to_vec();
        longer.push(0);
        prop_assert_eq!(ToDataPlane::decode(&longer), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn to_ike_round_trips_and_every_prefix_fails(m in to_ike()) {
        let b = m.encode();
        prop_assert_eq!(ToIke::decode(&b), Ok(m));
        for n in 0..b.len() {
            prop_assert!(ToIke::decode(&b[..n]).is_err());
        }
    }

    #[test]
    fn any_record_decodes_or_errs_and_what_decodes_re_encodes(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(m) = ToDataPlane::decode(&b) {
            prop_assert_eq!(&m.encode()[..], &b[..]);
        }
        if let Ok(m) = ToIke::decode(&b) {
            prop_assert_eq!(m.encode(), b);
        }
    }
}

#[test]
fn directions_do_not_mix_and_long_records_are_refused() {
    let up = ToIke::SaLifetime {
        tunnel: TunnelId(1),
        inbound_spi: 0x1234,
        hard: false,
    }
    .encode();
    assert!(ToDataPlane::decode(&up).is_err());
    let down = ToDataPlane::DeleteSa {
        tunnel: TunnelId(1),
        inbound_spi: 0x1234,
    }
    .encode();
    assert!(ToIke::decode(&down).is_err());
    let huge = vec![1u8; MAX_RECORD + 1];
    assert_eq!(
        ToDataPlane::decode(&huge),
        Err(DecodeError::TooLong(MAX_RECORD + 1))
    );
}

/// The fuzz seeds (`fuzz/seeds/records/`): one record of each kind, written
/// by this test when `WRITE_SEEDS=1`, else checked to decode.
#[test]
fn fuzz_seeds_decode() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/records");
    let records: Vec<(&str, Vec<u8>)> = vec![
        (
            "send-ike",
            ToDataPlane::SendIke(IkeDatagram {
                peer: 0,
                local_port: 500,
                remote_port: 500,
                bytes: vec![0x5a; 80],
            })
            .encode()
            .to_vec(),
        ),
        (
            "install",
            ToDataPlane::InstallSa(Box::new(install()))
                .encode()
                .to_vec(),
        ),
        (
            "use-outbound",
            ToDataPlane::UseOutbound {
                tunnel: TunnelId(1),
                inbound_spi: 0xc000_0001,
            }
            .encode()
            .to_vec(),
        ),
        (
            "delete",
            ToDataPlane::DeleteSa {
                tunnel: TunnelId(1),
                inbound_spi: 0xc000_0001,
            }
            .encode()
            .to_vec(),
        ),
        (
            "ike-datagram",
            ToIke::IkeDatagram(IkeDatagram {
                peer: 0,
                local_port: 4500,
                remote_port: 40500,
                bytes: vec![0xa5; 120],
            })
            .encode(),
        ),
        (
            "lifetime",
            ToIke::SaLifetime {
                tunnel: TunnelId(1),
                inbound_spi: 0xc000_0001,
                hard: false,
            }
            .encode(),
        ),
        (
            "refused",
            ToIke::Refused {
                tunnel: TunnelId(1),
                inbound_spi: 0xc000_0001,
                refusal: Refusal::Transform,
            }
            .encode(),
        ),
    ];
    if std::env::var_os("WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &records {
            std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
        }
    }
    for (name, bytes) in &records {
        let on_disk = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
        assert_eq!(&on_disk, bytes, "{name}: run with WRITE_SEEDS=1");
        assert!(ToDataPlane::decode(&on_disk).is_ok() || ToIke::decode(&on_disk).is_ok());
    }
}
