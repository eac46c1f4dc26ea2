//! Two IKE drivers, each with its own compiled-policy IKE section, joined
//! by a relay that plays both data planes: they establish, and every
//! install they send passes the data plane's check against its own policy
//! with keys that mirror the other side's.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};

use ike::sa::{Entropy, Timestamp};
use policy_blob::*;
use viaduct_channel::{check_install, IkeDatagram, SaInstall, ToDataPlane, ToIke};
use viaduct_ike::credentials::Credentials;
use viaduct_ike::driver::Driver;

struct Seeded(u64, u64);

impl Entropy for Seeded {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(32) {
            let mut c = stream(self.0, self.1);
            self.1 += 1;
            chunk.copy_from_slice(&c[..chunk.len()]);
            c.fill(0);
        }
    }
}

/// A fixed stream per (seed, counter): xorshift is enough for distinct,
/// reproducible test randomness.
fn stream(seed: u64, counter: u64) -> [u8; 32] {
    let mut x = seed ^ counter.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1234_5678;
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn v4(d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, d))
}

/// Gateway `me` (1 or 2) with its peer, a tunnel 10.me.0.0/24 ↔ 10.other.0.0/24,
/// authenticated with `auth`.
fn policy(me: u8, auth: IkeAuth, private_key: Option<Credential>) -> Policy {
    let other = 3 - me;
    let net =
        |n: u8| TrafficSelector::prefix(Prefix::new(IpAddr::V4(Ipv4Addr::new(10, n, 0, 0)), 24));
    let mut t = Tunnel::new(1, "t", v4(me), v4(other), Aead::Aes256Gcm16)
        .with_local_ts(net(me))
        .with_remote_ts(net(other));
    t.lifetimes.soft.seconds = Some(3000);
    t.lifetimes.hard.seconds = Some(3600);
    let mut p = Policy::new("gw", "1").with_local(v4(me)).with_tunnel(t);
    p.ike = Some(IkeConfig {
        local_id: IkeIdentity::Fqdn(format!("gw-{me}.test")),
        private_key,
        peers: vec![IkePeer {
            name: format!("gw-{other}"),
            local: v4(me),
            remote: v4(other),
            remote_id: IkeIdentity::Fqdn(format!("gw-{other}.test")),
            auth,
            ike_proposals: vec![IkeProposal {
                aead: Aead::Aes256Gcm16,
                prf: IkePrf::Sha256,
                group: KeGroup::X25519,
            }],
            esp_proposals: vec![EspProposal {
                aead: Aead::Aes256Gcm16,
                esn: true,
            }],
            pfs: Some(KeGroup::X25519),
            ike_rekey_seconds: 3600,
            dpd: Dpd::default(),
            tunnels: vec![TunnelId(1)],
        }],
    });
    p.validate().unwrap();
    p
}

/// Runs both drivers, relaying IKE datagrams, until quiet or 60 s; returns
/// each side's installs and log.
fn run(
    a: &Policy,
    b: &Policy,
    ca: &Credentials,
    cb: &Credentials,
) -> [(Vec<SaInstall>, Vec<String>); 2] {
    let now = Timestamp::from_millis(0);
    let (da, la) = Driver::new(a, ca, || Seeded(1, 0), now);
    let (db, lb) = Driver::new(b, cb, || Seeded(2, 0), now);
    let mut drivers = [da, db];
    let mut result = [(Vec::new(), la), (Vec::new(), lb)];
    let policies = [a, b];
    // (to, message)
    let mut queue: VecDeque<(usize, ToIke)> = VecDeque::new();
    let mut t = 0u64;
    while t < 60_000 {
        let now = Timestamp::from_millis(t);
        for i in 0..2 {
            let out = drivers[i].tick(now);
            deliver(i, out, &mut queue, &mut result, policies[i]);
        }
        while let Some((to, m)) = queue.pop_front() {
            let out = drivers[to].from_data_plane(m, now);
            deliver(to, out, &mut queue, &mut result, policies[to]);
        }
        t += 10;
    }
    result
}

fn deliver(
    from: usize,
    out: viaduct_ike::driver::Output,
    queue: &mut VecDeque<(usize, ToIke)>,
    result: &mut [(Vec<SaInstall>, Vec<String>); 2],
    policy: &Policy,
) {
    result[from].1.extend(out.log);
    for m in out.to_data_plane {
        match m {
            ToDataPlane::SendIke(d) => queue.push_back((
                1 - from,
                ToIke::IkeDatagram(IkeDatagram {
                    peer: 0,
                    local_port: d.remote_port,
                    remote_port: d.local_port,
                    bytes: d.bytes,
                }),
            )),
            ToDataPlane::InstallSa(i) => {
                let installed: Vec<u32> = result[from].0.iter().map(|x| x.inbound_spi).collect();
                check_install(policy, &i, |spi| installed.contains(&spi))
                    .unwrap_or_else(|r| panic!("side {from}: {r}: {i:?}"));
                result[from].0.push(*i);
            }
            _ => {}
        }
    }
}

fn assert_mirrored(r: &[(Vec<SaInstall>, Vec<String>); 2]) {
    let (a, b) = (&r[0].0, &r[1].0);
    assert_eq!(a.len(), 1, "{:?}", r[0].1);
    assert_eq!(b.len(), 1, "{:?}", r[1].1);
    assert_eq!(a[0].inbound_spi, b[0].outbound_spi);
    assert_eq!(a[0].outbound_spi, b[0].inbound_spi);
    assert_eq!(a[0].key_out, b[0].key_in);
    assert_eq!(a[0].key_in, b[0].key_out);
    assert!(a[0].esn && b[0].esn);
    assert_eq!((a[0].soft_seconds, a[0].hard_seconds), (3000, 3600));
    assert!(r[0]
        .1
        .iter()
        .any(|l| l.contains("IKE SA") && l.contains("established")));
}

#[test]
fn lab_psk_pair_establishes_with_checked_installs() {
    let psk = || {
        IkeAuth::Psk(Credential::Lab(KeyMaterial::new(
            b"a lab pre-shared key of 32 bytes".to_vec(),
        )))
    };
    let (a, b) = (policy(1, psk(), None), policy(2, psk(), None));
    let none = Credentials::default();
    let r = run(&a, &b, &none, &none);
    assert_mirrored(&r);
}

#[test]
fn ed25519_pair_with_device_keys_establishes() {
    use ike::crypto::SigningKey;
    let seed = |n: u8| [n; 32];
    let public = |n: u8| {
        let k = SigningKey::ed25519_from_seed(&seed(n)).unwrap();
        let raw = k.public_key().unwrap().raw().to_vec();
        <[u8; 32]>::try_from(raw).unwrap()
    };
    let dev = || Some(Credential::Device("ike-key".into()));
    let a = policy(
        1,
        IkeAuth::Ed25519 {
            peer_public_key: public(2),
        },
        dev(),
    );
    let b = policy(
        2,
        IkeAuth::Ed25519 {
            peer_public_key: public(1),
        },
        dev(),
    );
    let ca = Credentials::parse(&Credentials::record("ike-key", &seed(1))).unwrap();
    let cb = Credentials::parse(&Credentials::record("ike-key", &seed(2))).unwrap();
    let r = run(&a, &b, &ca, &cb);
    assert_mirrored(&r);
}

/// A software stand-in for the TPM's identity key (the real one is exercised
/// against swtpm by the gateway's tests).
struct SoftTpm(p256::ecdsa::SigningKey);

impl ike::crypto::ExternalSigner for SoftTpm {
    fn sign_p256_sha256(
        &self,
        digest: &[u8; 32],
    ) -> Result<([u8; 32], [u8; 32]), ike::crypto::Error> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let sig: p256::ecdsa::Signature = self.0.sign_prehash(digest).unwrap();
        let b = sig.to_bytes();
        Ok((b[..32].try_into().unwrap(), b[32..].try_into().unwrap()))
    }
}

fn identity(n: u8) -> viaduct_ike::credentials::IdentitySigner {
    let k = p256::ecdsa::SigningKey::from_slice(&[n; 32]).unwrap();
    let public = k
        .verifying_key()
        .to_encoded_point(false)
        .as_bytes()
        .try_into()
        .unwrap();
    viaduct_ike::credentials::IdentitySigner {
        public,
        signer: std::sync::Arc::new(SoftTpm(k)),
    }
}

#[test]
fn device_identity_pair_establishes_and_a_missing_signer_keeps_it_closed() {
    let dev = || Some(Credential::Device("identity".into()));
    let a = policy(
        1,
        IkeAuth::EcdsaP256 {
            peer_public_key: identity(2).public,
        },
        dev(),
    );
    let b = policy(
        2,
        IkeAuth::EcdsaP256 {
            peer_public_key: identity(1).public,
        },
        dev(),
    );
    let ca = Credentials::default().with_identity(identity(1));
    let cb = Credentials::default().with_identity(identity(2));
    let r = run(&a, &b, &ca, &cb);
    assert_mirrored(&r);
    assert!(
        r[0].1.iter().any(|l| l.contains(
            "signatures: ours ECDSA P-256 by the TPM identity key, the peer's ECDSA P-256 (pinned)"
        )),
        "{:?}",
        r[0].1
    );
    // Pinning another key: the initiator refuses the responder's AUTH and
    // installs nothing; the responder (whose CHILD SA IKE_AUTH set up) hears
    // AUTHENTICATION_FAILED and deletes it.
    let wrong = policy(
        1,
        IkeAuth::EcdsaP256 {
            peer_public_key: identity(3).public,
        },
        dev(),
    );
    let r = run(&wrong, &b, &ca, &cb);
    assert!(r[0].0.is_empty(), "{r:?}");
    assert!(r[0].1.iter().any(
        |l| l.contains("authentication of the peer fqdn:gw-2.test (digital signature) failed")
    ));
    assert!(r[1]
        .1
        .iter()
        .any(|l| l.contains("could not verify our authentication")));
    // No identity this boot: the tunnel stays closed and says why.
    let none = Credentials::default();
    let r = run(&a, &b, &none, &cb);
    assert!(r[0].0.is_empty() && r[1].0.is_empty());
    assert!(
        r[0].1
            .iter()
            .any(|l| l.contains("the device identity key is unusable this boot")),
        "{:?}",
        r[0].1
    );
}

#[test]
fn a_device_identity_and_an_ed25519_peer_sign_each_with_their_own_key() {
    use ike::crypto::SigningKey;
    let ed = SigningKey::ed25519_from_seed(&[5; 32]).unwrap();
    let ed_public = <[u8; 32]>::try_from(ed.public_key().unwrap().raw()).unwrap();
    let a = policy(
        1,
        IkeAuth::Ed25519 {
            peer_public_key: ed_public,
        },
        Some(Credential::Device("identity".into())),
    );
    let b = policy(
        2,
        IkeAuth::EcdsaP256 {
            peer_public_key: identity(1).public,
        },
        Some(Credential::Device("ike-key".into())),
    );
    let ca = Credentials::default().with_identity(identity(1));
    let cb = Credentials::parse(&Credentials::record("ike-key", &[5; 32])).unwrap();
    let r = run(&a, &b, &ca, &cb);
    assert_mirrored(&r);
    assert!(
        r[1].1
            .iter()
            .any(|l| l.contains("signatures: ours Ed25519, the peer's ECDSA P-256")),
        "{:?}",
        r[1].1
    );
}

#[test]
fn an_unprovisioned_credential_keeps_the_tunnel_closed_and_says_so() {
    let dev = || IkeAuth::Psk(Credential::Device("branch-psk".into()));
    let (a, b) = (policy(1, dev(), None), policy(2, dev(), None));
    let none = Credentials::default();
    let r = run(&a, &b, &none, &none);
    assert!(r[0].0.is_empty() && r[1].0.is_empty());
    assert_eq!(
        r[0].1,
        vec!["ike: peer gw-2: credential tpm:branch-psk is not provisioned on this device; the tunnel stays closed".to_string()]
    );
}

#[test]
fn credential_streams_are_checked() {
    let mut s = Credentials::record("a", b"x").to_vec();
    s.extend_from_slice(&Credentials::record("b-2.x_y", &[7; 300]));
    let c = Credentials::parse(&s).unwrap();
    assert_eq!(c.get("b-2.x_y"), Some(&[7u8; 300][..]));
    assert!(format!("{c:?}").contains("b-2.x_y") && !format!("{c:?}").contains("7, 7"));
    for n in 1..s.len() {
        if n == Credentials::record("a", b"x").len() {
            continue;
        }
        assert!(Credentials::parse(&s[..n]).is_err(), "{n}");
    }
    let mut twice = Credentials::record("a", b"x").to_vec();
    twice.extend_from_slice(&Credentials::record("a", b"y"));
    assert!(Credentials::parse(&twice).is_err());
    assert!(Credentials::parse(&Credentials::record("A", b"x")).is_err());
    assert!(Credentials::parse(&Credentials::record("", b"x")).is_err());
}

#[test]
fn the_initiator_starts_again_after_its_ike_sa_dies() {
    let psk = || {
        IkeAuth::Psk(Credential::Lab(KeyMaterial::new(
            b"a lab pre-shared key of 32 bytes".to_vec(),
        )))
    };
    let a = policy(1, psk(), None);
    let none = Credentials::default();
    // Gateway 1 (the lower address) initiates; nobody answers.
    let (mut d1, _) = Driver::new(&a, &none, || Seeded(1, 0), Timestamp::from_millis(0));
    // SPIi of each IKE_SA_INIT request (exchange type 34): a new SPI is a
    // new attempt, the same one a retransmission.
    let mut attempts: Vec<Vec<u8>> = Vec::new();
    let mut t = 0;
    while t < 120_000 {
        for m in d1.tick(Timestamp::from_millis(t)).to_data_plane {
            if let ToDataPlane::SendIke(d) = m {
                if d.bytes.get(18) == Some(&34) && !attempts.contains(&d.bytes[..8].to_vec()) {
                    attempts.push(d.bytes[..8].to_vec());
                }
            }
        }
        t += 100;
    }
    // Each attempt gives up after its retransmissions (about 20 s); the
    // next starts 5, then 10, 20 ... s later.
    assert!(attempts.len() >= 3, "{} attempts in 120 s", attempts.len());
}

/// DPD (3 s) with each action: the pair establishes, then the network goes
/// (nothing is delivered any more). The initiator finds the peer dead and
/// deletes its CHILD SA; with `restart` it tries again (new IKE_SA_INIT SPIs),
/// with `clear` it does not and says so.
#[test]
fn dpd_actions_restart_or_clear_after_the_peer_dies() {
    for action in [DpdAction::Restart, DpdAction::Clear] {
        let psk = || {
            IkeAuth::Psk(Credential::Lab(KeyMaterial::new(
                b"a lab pre-shared key of 32 bytes".to_vec(),
            )))
        };
        let (mut a, mut b) = (policy(1, psk(), None), policy(2, psk(), None));
        for p in [&mut a, &mut b] {
            p.ike.as_mut().unwrap().peers[0].dpd = Dpd {
                delay_seconds: 3,
                action,
            };
        }
        let none = Credentials::default();
        let now = Timestamp::from_millis(0);
        let (da, _) = Driver::new(&a, &none, || Seeded(1, 0), now);
        let (db, _) = Driver::new(&b, &none, || Seeded(2, 0), now);
        let mut drivers = [da, db];
        let mut result = [(Vec::new(), Vec::new()), (Vec::new(), Vec::new())];
        let policies = [&a, &b];
        let mut queue: VecDeque<(usize, ToIke)> = VecDeque::new();
        let (mut deletes, mut attempts_after) = (0, Vec::<Vec<u8>>::new());
        let cut = 2_000u64;
        let mut t = 0u64;
        while t < 150_000 {
            let now = Timestamp::from_millis(t);
            for i in 0..2 {
                let out = drivers[i].tick(now);
                if t >= cut && i == 0 {
                    for m in &out.to_data_plane {
                        match m {
                            ToDataPlane::DeleteSa { .. } => deletes += 1,
                            ToDataPlane::SendIke(d)
                                if d.bytes.get(18) == Some(&34)
                                    && !attempts_after.contains(&d.bytes[..8].to_vec()) =>
                            {
                                attempts_after.push(d.bytes[..8].to_vec())
                            }
                            _ => {}
                        }
                    }
                }
                if t < cut {
                    deliver(i, out, &mut queue, &mut result, policies[i]);
                } else {
                    result[i].1.extend(out.log);
                }
            }
            while let Some((to, m)) = queue.pop_front() {
                let out = drivers[to].from_data_plane(m, now);
                deliver(to, out, &mut queue, &mut result, policies[to]);
            }
            t += 10;
        }
        assert_eq!(
            result[0].0.len(),
            1,
            "{action:?}: established before the cut"
        );
        assert!(
            deletes >= 1,
            "{action:?}: the dead peer's CHILD SA stayed: {:?}",
            result[0].1
        );
        let said_clear = result[0].1.iter().any(|l| l.contains("DPD action clear"));
        match action {
            DpdAction::Restart => {
                assert!(!attempts_after.is_empty(), "restart: no new attempt");
                assert!(!said_clear);
            }
            DpdAction::Clear => {
                assert!(
                    attempts_after.is_empty(),
                    "clear: {} new attempts",
                    attempts_after.len()
                );
                assert!(said_clear, "{:?}", result[0].1);
                let status = drivers[0].status(Timestamp::from_millis(t));
                assert!(
                    status
                        .iter()
                        .any(|l| l.contains("DPD action clear): waiting for it")),
                    "{status:?}"
                );
            }
        }
    }
}

/// `policy` with a second tunnel to the same peer: 10.me.1.0/24 ↔
/// 10.other.1.0/24 (tunnel 2), keyed in the same IKE SA.
fn two_tunnel_policy(me: u8, auth: IkeAuth) -> Policy {
    let other = 3 - me;
    let mut p = policy(me, auth, None);
    let net =
        |n: u8| TrafficSelector::prefix(Prefix::new(IpAddr::V4(Ipv4Addr::new(10, n, 1, 0)), 24));
    let mut t = Tunnel::new(2, "t2", v4(me), v4(other), Aead::Aes256Gcm16)
        .with_local_ts(net(me))
        .with_remote_ts(net(other));
    t.lifetimes.soft.seconds = Some(3000);
    t.lifetimes.hard.seconds = Some(3600);
    p = p.with_tunnel(t);
    if let Some(ike) = &mut p.ike {
        ike.peers[0].tunnels.push(TunnelId(2));
    }
    p.validate().unwrap();
    p
}

#[test]
fn two_tunnels_to_one_peer_are_keyed_in_one_ike_sa() {
    let psk = || {
        IkeAuth::Psk(Credential::Lab(KeyMaterial::new(
            b"a lab pre-shared key of 32 bytes".to_vec(),
        )))
    };
    let (a, b) = (two_tunnel_policy(1, psk()), two_tunnel_policy(2, psk()));
    let none = Credentials::default();
    // `deliver` checks every install against its policy's rules for the
    // tunnel it names (selectors, peer, algorithm).
    let r = run(&a, &b, &none, &none);
    for (side, (installs, log)) in r.iter().enumerate() {
        let tunnels: Vec<u32> = installs.iter().map(|i| i.tunnel.0).collect();
        assert_eq!(tunnels, vec![1, 2], "side {side}: {log:?}");
        let established = log
            .iter()
            .filter(|l| l.contains("IKE SA") && l.contains("established"))
            .count();
        assert_eq!(established, 1, "one IKE SA: {log:?}");
    }
    for t in 0..2 {
        let (x, y) = (&r[0].0[t], &r[1].0[t]);
        assert_eq!(x.inbound_spi, y.outbound_spi);
        assert_eq!(x.outbound_spi, y.inbound_spi);
        assert_eq!(x.key_out, y.key_in);
    }
}

/// `encapsulation = "udp"` (the tunnel's `udp_encap`): IKE floats to 4500 and
/// the CHILD SAs are installed in UDP although no NAT is between the two.
#[test]
fn udp_encapsulation_in_the_policy_is_forced() {
    let psk = || {
        IkeAuth::Psk(Credential::Lab(KeyMaterial::new(
            b"a lab pre-shared key of 32 bytes".to_vec(),
        )))
    };
    let forced = |me: u8| {
        let mut p = policy(me, psk(), None);
        for t in &mut p.tunnels {
            t.udp_encap = true;
        }
        p.validate().unwrap();
        p
    };
    let (a, b) = (forced(1), forced(2));
    let none = Credentials::default();
    let r = run(&a, &b, &none, &none);
    assert_mirrored(&r);
    for (installs, log) in &r {
        assert_eq!(installs[0].udp_remote_port, Some(4500), "{log:?}");
    }
    // Without it, ESP travels as IP protocol 50.
    let (a, b) = (policy(1, psk(), None), policy(2, psk(), None));
    let r = run(&a, &b, &none, &none);
    assert!(r.iter().all(|(i, _)| i[0].udp_remote_port.is_none()));
}
