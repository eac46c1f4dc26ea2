//! Arbitrary records into both decoders, and what the data plane does with
//! an install: never a panic; whatever decodes re-encodes to the same bytes;
//! `check_install` against a policy with an IKE-keyed tunnel never panics,
//! and accepts only installs within that policy.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use policy_blob::*;
use viaduct_channel::{check_install, ToDataPlane, ToIke};

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        let a = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        let b = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
        let t = Tunnel::new(1, "ike", a, b, Aead::ChaCha20Poly1305)
            .with_local_ts(TrafficSelector::prefix(Prefix::new(
                IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)),
                24,
            )))
            .with_remote_ts(TrafficSelector::prefix(Prefix::new(
                IpAddr::V4(Ipv4Addr::new(10, 2, 0, 0)),
                24,
            )));
        let mut p = Policy::new("fuzz", "1").with_local(a).with_tunnel(t);
        p.ike = Some(IkeConfig {
            local_id: IkeIdentity::Fqdn("a.test".into()),
            private_key: None,
            peers: vec![IkePeer {
                name: "b".into(),
                local: a,
                remote: b,
                remote_id: IkeIdentity::Fqdn("b.test".into()),
                auth: IkeAuth::Psk(Credential::Device("b".into())),
                ike_proposals: vec![IkeProposal {
                    aead: Aead::Aes256Gcm16,
                    prf: IkePrf::Sha256,
                    group: KeGroup::X25519,
                }],
                esp_proposals: vec![EspProposal {
                    aead: Aead::ChaCha20Poly1305,
                    esn: false,
                }],
                pfs: None,
                ike_rekey_seconds: 3600,
                dpd: Dpd::default(),
                tunnels: vec![TunnelId(1)],
            }],
        });
        p
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ToDataPlane::decode(data) {
        assert_eq!(&m.encode()[..], data, "not canonical");
        if let ToDataPlane::InstallSa(i) = &m {
            if check_install(policy(), i, |spi| spi == 0x1000).is_ok() {
                assert_eq!(i.tunnel, TunnelId(1));
                assert_eq!(i.aead, Aead::ChaCha20Poly1305);
                assert!(!i.esn);
                assert_eq!(i.key_out.len(), 36);
                assert_ne!(&i.key_out[..], &i.key_in[..]);
                assert!(i.inbound_spi >= 256 && i.inbound_spi != 0x1000);
                assert!(i.soft_seconds <= i.hard_seconds && i.hard_seconds > 0);
            }
        }
    }
    if let Ok(m) = ToIke::decode(data) {
        assert_eq!(m.encode(), data, "not canonical");
    }
});
