//! Two engines (initiator a.test, responder b.test; PSK, x25519, AES-GCM-256, fixed
//! entropy) exchanging over a network the fuzzer controls, with two tunnels (all
//! traffic between the LANs, and TCP nested in it: two CHILD SAs in one IKE SA) and
//! UDP encapsulation forced by the initiator (IKE floats to 4500, keepalives). Both
//! rekey (CHILD SAs with PFS every 5 s, hard lifetime 8 s; the IKE SA every 12 s; DPD
//! after 3 s). A datagram is delivered on the path it was sent on. The input
//! is a script of operations, one byte each plus arguments:
//! `op % 12`: 0 deliver the oldest queued datagram; 1 drop it; 2 duplicate it;
//! 3 deliver it with byte `a` XORed with `b` (two argument bytes); 4 deliver it
//! truncated to `a` bytes; 5 inject the next `a` input bytes as a datagram to the
//! responder (or, with `op & 0x10`, to the initiator); 6 advance the clock by `a` ×
//! 100 ms and tick both; 7 swap the two oldest datagrams; and on the side `op & 0x10`
//! picks: 8 rekey its first CHILD SA, 9 rekey its first IKE SA, 10 delete its first
//! CHILD SA, 11 delete its first IKE SA. Nothing may panic; whatever the order, an
//! installed CHILD SA on one side must have the same keys as its counterpart on the
//! other side if both installed one, and no side installs an inbound SPI twice.
#![no_main]

use std::collections::VecDeque;
use std::net::SocketAddr;

use ike::crypto::{Aead, Group, PreSharedKey, Prf};
use ike::sa::{
    Action, Auth, Config, Datagram, Entropy, Identity, Ike, IkeProposal, Path, Selectors, Timestamp,
};
use ike::wire::TrafficSelector;
use libfuzzer_sys::fuzz_target;

/// SHA-256 in counter mode over a seed: reproducible randomness.
struct Fixed(u64, u64);

impl Entropy for Fixed {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(32) {
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            ctx.update(&self.0.to_be_bytes());
            ctx.update(&self.1.to_be_bytes());
            self.1 += 1;
            let d = ctx.finish();
            chunk.copy_from_slice(&d.as_ref()[..chunk.len()]);
        }
    }
}

const I: &str = "192.0.2.1:500";
const R: &str = "192.0.2.2:500";

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn ts(start: &str, end: &str) -> TrafficSelector {
    TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: u16::MAX,
        start: start.parse().expect("address"),
        end: end.parse().expect("address"),
    }
}

fn config(local: &str, remote: &str, me: &str, peer: &str, mine: TrafficSelector, theirs: TrafficSelector) -> Config {
    let mut c = Config::new(
        sock(local),
        sock(remote),
        Identity::Fqdn(me.into()),
        Identity::Fqdn(peer.into()),
        Auth::Psk(PreSharedKey::new(b"correct horse battery staple").expect("psk")),
    );
    c.ike_proposals = vec![IkeProposal { aead: Aead::AesGcm16_256, prf: Prf::HmacSha2_256, group: Group::Curve25519 }];
    c.local_ts = vec![mine];
    c.remote_ts = vec![theirs];
    let tcp = |t: TrafficSelector| TrafficSelector { ip_protocol: 6, ..t };
    c.more_tunnels = vec![Selectors { local_ts: vec![tcp(mine)], remote_ts: vec![tcp(theirs)] }];
    c.pfs = Some(Group::Curve25519);
    c.child_lifetimes.rekey_after = std::time::Duration::from_secs(5);
    c.child_lifetimes.expire_after = std::time::Duration::from_secs(8);
    c.ike_rekey_after = Some(std::time::Duration::from_secs(12));
    c.dpd_delay = Some(std::time::Duration::from_secs(3));
    c
}

struct Side {
    ike: Ike<Fixed>,
    keys: Vec<(u32, Vec<u8>, u32, Vec<u8>)>,
}

fn run(side: &mut Side, actions: Vec<Action>, net: &mut VecDeque<(bool, Datagram)>, to_responder: bool) {
    for a in actions {
        match a {
            Action::Send(d) => {
                if net.len() < 64 {
                    net.push_back((to_responder, d));
                }
            }
            Action::InstallChildSa(i) => {
                let (o, inb) = (i.outbound(), i.inbound());
                assert!(
                    side.keys.iter().all(|k| k.2 != inb.spi.0),
                    "an inbound SPI installed twice"
                );
                side.keys.push((o.spi.0, o.key.expose_secret().to_vec(), inb.spi.0, inb.key.expose_secret().to_vec()));
            }
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut i_cfg = config(I, R, "a.test", "b.test", ts("10.1.0.0", "10.1.0.255"), ts("10.2.0.0", "10.2.0.255"));
    i_cfg.force_udp_encapsulation = true;
    let r_cfg = config(R, I, "b.test", "a.test", ts("10.2.0.0", "10.2.0.255"), ts("10.1.0.0", "10.1.0.255"));
    let mut now = Timestamp::from_millis(0);
    let Ok(i) = Ike::new(i_cfg, Fixed(1, 0), now) else { return };
    let Ok(r) = Ike::new(r_cfg, Fixed(2, 0), now) else { return };
    let mut a = Side { ike: i, keys: Vec::new() };
    let mut b = Side { ike: r, keys: Vec::new() };
    // (to the responder?, datagram)
    let mut net: VecDeque<(bool, Datagram)> = VecDeque::new();
    let first = a.ike.initiate(now);
    run(&mut a, first, &mut net, true);
    let path_to = |to_responder: bool| {
        if to_responder {
            Path { local: sock(R), remote: sock(I) }
        } else {
            Path { local: sock(I), remote: sock(R) }
        }
    };
    let mut d = data.iter().copied();
    let mut steps = 0;
    while let Some(op) = d.next() {
        steps += 1;
        if steps > 200 {
            break;
        }
        let mut arg = || d.next().unwrap_or(0);
        // On the path it was sent on (seen from the receiver), or for an
        // injected datagram the ports 500.
        let deliver = |bytes: Vec<u8>, sent: Option<Path>, to_r: bool, a: &mut Side, b: &mut Side, net: &mut VecDeque<(bool, Datagram)>, now| {
            let path = sent.map_or(path_to(to_r), |p| Path { local: p.remote, remote: p.local });
            if to_r {
                let acts = b.ike.handle(&bytes, path, now);
                run(b, acts, net, false);
            } else {
                let acts = a.ike.handle(&bytes, path, now);
                run(a, acts, net, true);
            }
        };
        let side_b = op & 0x10 != 0;
        match op % 12 {
            0 => {
                if let Some((to_r, dg)) = net.pop_front() {
                    deliver(dg.bytes, Some(dg.path), to_r, &mut a, &mut b, &mut net, now);
                }
            }
            1 => {
                net.pop_front();
            }
            2 => {
                if let Some(x) = net.front().cloned() {
                    if net.len() < 64 {
                        net.push_back(x);
                    }
                }
            }
            3 => {
                let (at, x) = (arg(), arg());
                if let Some((to_r, mut dg)) = net.pop_front() {
                    if !dg.bytes.is_empty() {
                        let n = dg.bytes.len();
                        dg.bytes[usize::from(at) % n] ^= x;
                    }
                    deliver(dg.bytes, Some(dg.path), to_r, &mut a, &mut b, &mut net, now);
                }
            }
            4 => {
                let n = arg();
                if let Some((to_r, mut dg)) = net.pop_front() {
                    dg.bytes.truncate(usize::from(n));
                    deliver(dg.bytes, Some(dg.path), to_r, &mut a, &mut b, &mut net, now);
                }
            }
            5 => {
                let n = usize::from(arg());
                let bytes: Vec<u8> = (0..n).map(|_| arg()).collect();
                deliver(bytes, None, !side_b, &mut a, &mut b, &mut net, now);
            }
            8..=11 => {
                let (s, to_r) = if side_b { (&mut b, false) } else { (&mut a, true) };
                let child = s.ike.child_sas().first().map(|c| c.inbound_spi);
                let ike_sa = s.ike.sas().first().map(|x| x.0);
                let acts = match (op % 12, child, ike_sa) {
                    (8, Some(c), _) => s.ike.rekey_child(c, now),
                    (9, _, Some(spi)) => s.ike.rekey_ike(spi, now),
                    (10, Some(c), _) => s.ike.delete_child(c, now),
                    (11, _, Some(spi)) => s.ike.delete_ike(spi, now),
                    _ => Vec::new(),
                };
                run(s, acts, &mut net, to_r);
            }
            6 => {
                now = Timestamp::from_millis(now.as_millis() + u64::from(arg()) * 100);
                let acts = a.ike.tick(now);
                run(&mut a, acts, &mut net, true);
                let acts = b.ike.tick(now);
                run(&mut b, acts, &mut net, false);
            }
            7 => {
                if net.len() >= 2 {
                    net.swap(0, 1);
                }
            }
            _ => {}
        }
    }
    // Matching keys wherever both sides installed the same SPI pair.
    for (o_spi, o_key, i_spi, i_key) in &a.keys {
        for (bo_spi, bo_key, bi_spi, bi_key) in &b.keys {
            if o_spi == bi_spi && i_spi == bo_spi {
                assert_eq!(o_key, bi_key, "initiator's outbound key differs from the responder's inbound");
                assert_eq!(i_key, bo_key, "initiator's inbound key differs from the responder's outbound");
            }
        }
    }
});
