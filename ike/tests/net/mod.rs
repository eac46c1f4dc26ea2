//! The test network shared by the exchange and rekey tests: two
//! `ike::sa::Ike` engines in one process over a simulated network that can
//! drop, duplicate and delay (hence reorder) datagrams, with fixed entropy,
//! and a model of each side's data plane that checks make-before-break at
//! every step.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ike::crypto::{Aead, Group, PreSharedKey, Prf, Role, SigningKey};
use ike::sa::{
    Action, Auth, ChildFailure, ChildSaDelete, ChildSaInstall, Config, Datagram, Entropy, Event,
    Failure, Identity, Ike, IkeProposal, Path, Timestamp,
};
use ike::wire::{ExchangeType, Message, NotifyType, TrafficSelector};

// ------------------------------------------------------------ fixtures

/// SHA-256 in counter mode over a seed: a fixed, reproducible stream.
pub struct TestEntropy {
    pub seed: u64,
    pub counter: u64,
}

impl TestEntropy {
    pub fn new(seed: u64) -> Self {
        TestEntropy { seed, counter: 0 }
    }
}

impl Entropy for TestEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(32) {
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            ctx.update(&self.seed.to_be_bytes());
            ctx.update(&self.counter.to_be_bytes());
            self.counter += 1;
            let d = ctx.finish();
            chunk.copy_from_slice(&d.as_ref()[..chunk.len()]);
        }
    }
}

pub const I_ADDR: &str = "192.0.2.1:500";
pub const R_ADDR: &str = "192.0.2.2:500";

pub fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn range(start: &str, end: &str) -> TrafficSelector {
    TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: u16::MAX,
        start: start.parse().unwrap(),
        end: end.parse().unwrap(),
    }
}

pub fn fqdn(s: &str) -> Identity {
    Identity::Fqdn(s.to_owned())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    Psk,
    Ed25519,
    EcdsaP256,
}

pub fn signing_key(kind: AuthKind, who: u8) -> SigningKey {
    match kind {
        AuthKind::Ed25519 => SigningKey::ed25519_from_seed(&[0x40 + who; 32]).unwrap(),
        AuthKind::EcdsaP256 => SigningKey::ecdsa_p256_from_scalar(&[0x10 + who; 32]).unwrap(),
        AuthKind::Psk => unreachable!(),
    }
}

/// `who` 0: initiator (a.test), 1: responder (b.test).
pub fn auth(kind: AuthKind, who: u8) -> Auth {
    match kind {
        AuthKind::Psk => Auth::Psk(PreSharedKey::new(b"correct horse battery staple").unwrap()),
        _ => Auth::Signature {
            key: signing_key(kind, who),
            peer: signing_key(kind, 1 - who).public_key().unwrap(),
        },
    }
}

pub fn ike_proposal(aead: Aead, group: Group) -> IkeProposal {
    IkeProposal {
        aead,
        prf: Prf::HmacSha2_256,
        group,
    }
}

/// The initiator's and the responder's configurations: a.test
/// (10.1.0.0/24) and b.test (10.2.0.0/24).
pub fn configs(kind: AuthKind) -> (Config, Config) {
    let mut i = Config::new(
        sock(I_ADDR),
        sock(R_ADDR),
        fqdn("a.test"),
        fqdn("b.test"),
        auth(kind, 0),
    );
    i.local_ts = vec![range("10.1.0.0", "10.1.0.255")];
    i.remote_ts = vec![range("10.2.0.0", "10.2.0.255")];
    let mut r = Config::new(
        sock(R_ADDR),
        sock(I_ADDR),
        fqdn("b.test"),
        fqdn("a.test"),
        auth(kind, 1),
    );
    r.local_ts = vec![range("10.2.0.0", "10.2.0.255")];
    r.remote_ts = vec![range("10.1.0.0", "10.1.0.255")];
    // The establishment tests watch the first exchanges alone: no
    // liveness checks or IKE SA rekeys in their five minutes (CHILD SAs
    // are rekeyed after about an hour).
    for c in [&mut i, &mut r] {
        c.dpd_delay = None;
        c.ike_rekey_after = None;
    }
    (i, r)
}

pub fn no_timer(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| !matches!(a, Action::SetTimer(_)))
        .collect()
}

/// Only CHILD SA timers remain (the first rekey, some 54 to 60 minutes on).
pub fn only_rekey_timers(node: &Node) -> bool {
    node.ike
        .next_timer()
        .is_none_or(|t| t >= Timestamp::from_millis(50 * 60 * 1000))
}

// ------------------------------------------------------------- network

/// What a node's data plane holds: ESP SAs by our inbound SPI, and which
/// one it sends with (the most recently activated one).
#[derive(Default)]
pub struct DataPlane {
    /// inbound SPI → (outbound SPI, outbound key, inbound key, activation
    /// order: 0 while not sent on).
    pub sas: BTreeMap<u32, (u32, Vec<u8>, Vec<u8>, u64)>,
    pub activations: u64,
    /// Outbound SAs (by our inbound SPI) put in use because their
    /// predecessor reached its hard lifetime: the peer may not have them
    /// (nothing could be sent correctly then anyway).
    pub after_expiry: std::collections::BTreeSet<u32>,
    /// SAs (our inbound SPI) deleted at their hard lifetime.
    pub expired: std::collections::BTreeSet<u32>,
    /// New CHILD SAs (not a rekey) installed as the responder: used at
    /// once, as RFC 7296 allows, before the initiator has the response.
    pub fresh: std::collections::BTreeSet<u32>,
    /// inbound SPI → the tunnel it carries.
    pub tunnel_of: BTreeMap<u32, usize>,
}

impl DataPlane {
    pub fn apply(&mut self, a: &Action) {
        match a {
            Action::InstallChildSa(c) => {
                assert!(
                    !self.sas.contains_key(&c.inbound_spi.0),
                    "inbound SPI {} installed twice",
                    c.inbound_spi
                );
                if c.role() == ike::crypto::Role::Responder && c.replaces.is_none() {
                    self.fresh.insert(c.inbound_spi.0);
                }
                let order = if c.outbound_active {
                    self.activations += 1;
                    self.activations
                } else {
                    0
                };
                self.tunnel_of.insert(c.inbound_spi.0, c.tunnel);
                self.sas.insert(
                    c.inbound_spi.0,
                    (
                        c.outbound_spi.0,
                        c.outbound().key.expose_secret().to_vec(),
                        c.inbound().key.expose_secret().to_vec(),
                        order,
                    ),
                );
            }
            Action::UseOutbound(id) => {
                let sa = self.sas.get_mut(&id.inbound_spi.0).unwrap_or_else(|| {
                    panic!("UseOutbound for SPI {} not installed", id.inbound_spi)
                });
                assert_eq!(sa.0, id.outbound_spi.0);
                self.activations += 1;
                sa.3 = self.activations;
            }
            Action::DeleteChildSa(d) => {
                self.tunnel_of.remove(&d.inbound_spi.0);
                assert!(
                    self.sas.remove(&d.inbound_spi.0).is_some(),
                    "DeleteChildSa for SPI {} not installed",
                    d.inbound_spi
                );
            }
            _ => {}
        }
    }

    /// The SA we send with: (outbound SPI, key).
    pub fn sending(&self) -> Option<(u32, &[u8])> {
        self.sending_inbound().map(|i| {
            let s = &self.sas[&i];
            (s.0, &s.1[..])
        })
    }

    /// The inbound SPI of the pair we send with (in the tunnel of the SA
    /// made last, for one-tunnel tests).
    pub fn sending_inbound(&self) -> Option<u32> {
        self.sas
            .iter()
            .filter(|(_, s)| s.3 > 0)
            .max_by_key(|(_, s)| s.3)
            .map(|(i, _)| *i)
    }

    /// The inbound SPI of the pair we send with in `tunnel`.
    pub fn sending_inbound_in(&self, tunnel: usize) -> Option<u32> {
        self.sas
            .iter()
            .filter(|(i, s)| s.3 > 0 && self.tunnel_of.get(i) == Some(&tunnel))
            .max_by_key(|(_, s)| s.3)
            .map(|(i, _)| *i)
    }

    /// The SA we send with in `tunnel`: (outbound SPI, key).
    pub fn sending_in(&self, tunnel: usize) -> Option<(u32, &[u8])> {
        self.sending_inbound_in(tunnel).map(|i| {
            let s = &self.sas[&i];
            (s.0, &s.1[..])
        })
    }

    /// The tunnels it has SAs for.
    pub fn tunnels(&self) -> std::collections::BTreeSet<usize> {
        self.tunnel_of.values().copied().collect()
    }
}

pub struct Node {
    pub ike: Ike<TestEntropy>,
    pub ips: Vec<IpAddr>,
    pub installs: Vec<ChildSaInstall>,
    pub deletes: Vec<ChildSaDelete>,
    pub events: Vec<Event>,
    pub sent: Vec<Datagram>,
    pub timer: Option<Timestamp>,
    pub dp: DataPlane,
}

impl Node {
    pub fn new(config: Config, seed: u64) -> Node {
        let ips = vec![config.local.ip()];
        Node {
            ike: Ike::new(config, TestEntropy::new(seed), Timestamp::from_millis(0)).unwrap(),
            ips,
            installs: Vec::new(),
            deletes: Vec::new(),
            events: Vec::new(),
            sent: Vec::new(),
            timer: None,
            dp: DataPlane::default(),
        }
    }

    pub fn established(&self) -> Vec<&ike::sa::Established> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::IkeSaEstablished(x) => Some(x),
                _ => None,
            })
            .collect()
    }

    pub fn failures(&self) -> Vec<&Failure> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Failed { failure, .. } => Some(failure),
                _ => None,
            })
            .collect()
    }

    pub fn child_refusals(&self) -> Vec<&ChildFailure> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::ChildSaRefused { failure, .. } => Some(failure),
                _ => None,
            })
            .collect()
    }

    pub fn stateless(&self) -> Vec<NotifyType> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::InitAnsweredStatelessly { notify, .. } => Some(*notify),
                _ => None,
            })
            .collect()
    }

    pub fn sent_of(&self, exchange: ExchangeType) -> Vec<&Datagram> {
        self.sent
            .iter()
            .filter(|d| {
                Message::new_checked(&d.bytes[..])
                    .unwrap()
                    .header()
                    .exchange()
                    == exchange
            })
            .collect()
    }
}

/// What the network does with one datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    Deliver,
    Drop,
    Duplicate,
    Delay(Duration),
    /// Deliver a copy with these bytes XORed in (index modulo the length,
    /// value), or cut to `len % (length + 1)` bytes if `cut`; then the
    /// original.
    Mutate {
        flips: Vec<(usize, u8)>,
        cut: Option<usize>,
    },
}

/// A NAT in front of node 0: its private address is rewritten to
/// 198.51.100.1 with port 500 ↦ 40500 and 4500 ↦ 44500.
pub const NAT_PUBLIC: &str = "198.51.100.1";

pub const LATENCY: Duration = Duration::from_millis(10);

pub struct Net {
    pub nodes: Vec<Node>,
    pub in_flight: BTreeMap<(Timestamp, u64), (usize, Datagram)>,
    pub now: Timestamp,
    pub seq: u64,
    pub sent_count: usize,
    pub nat: bool,
}

impl Net {
    pub fn new(nodes: Vec<Node>) -> Net {
        Net {
            nodes,
            in_flight: BTreeMap::new(),
            now: Timestamp::from_millis(0),
            seq: 0,
            sent_count: 0,
            nat: false,
        }
    }

    pub fn pair(i: Config, r: Config) -> Net {
        Net::new(vec![Node::new(i, 1), Node::new(r, 2)])
    }

    pub fn i(&self) -> &Node {
        &self.nodes[0]
    }

    pub fn r(&self) -> &Node {
        &self.nodes[1]
    }

    pub fn enqueue(&mut self, from: usize, at: Timestamp, d: Datagram) {
        self.seq += 1;
        self.in_flight.insert((at, self.seq), (from, d));
    }

    pub fn absorb(
        &mut self,
        who: usize,
        actions: Vec<Action>,
        fate: &mut dyn FnMut(usize, &Datagram) -> Fate,
    ) {
        self.nodes[who].timer = None;
        let expired = actions.iter().any(|a| {
            matches!(
                a,
                Action::Event(Event::ChildSaDeleted {
                    reason: ike::sa::ChildDeleted::Expired,
                    ..
                })
            )
        });
        if expired {
            for a in &actions {
                match a {
                    Action::UseOutbound(id) => {
                        self.nodes[who].dp.after_expiry.insert(id.inbound_spi.0);
                    }
                    Action::DeleteChildSa(id) => {
                        self.nodes[who].dp.expired.insert(id.inbound_spi.0);
                    }
                    _ => {}
                }
            }
        }
        for a in actions {
            self.nodes[who].dp.apply(&a);
            match a {
                Action::Send(mut d) => {
                    self.nodes[who].sent.push(d.clone());
                    if self.nat && who == 0 {
                        d.path.local = SocketAddr::new(
                            NAT_PUBLIC.parse().unwrap(),
                            d.path.local.port() + 40000,
                        );
                    }
                    let n = self.sent_count;
                    self.sent_count += 1;
                    let at = self.now.saturating_add(LATENCY);
                    match fate(n, &d) {
                        Fate::Deliver => self.enqueue(who, at, d),
                        Fate::Drop => {}
                        Fate::Duplicate => {
                            self.enqueue(who, at, d.clone());
                            self.enqueue(who, at.saturating_add(Duration::from_millis(5)), d);
                        }
                        Fate::Delay(x) => self.enqueue(who, at.saturating_add(x), d),
                        Fate::Mutate { flips, cut } => {
                            let mut bad = d.clone();
                            for (i, x) in flips {
                                let n = bad.bytes.len();
                                bad.bytes[i % n] ^= x.max(1);
                            }
                            if let Some(len) = cut {
                                bad.bytes.truncate(len % (d.bytes.len() + 1));
                            }
                            self.enqueue(who, at, bad);
                            self.enqueue(who, at.saturating_add(Duration::from_millis(1)), d);
                        }
                    }
                }
                Action::InstallChildSa(c) => self.nodes[who].installs.push(*c),
                Action::DeleteChildSa(d) => self.nodes[who].deletes.push(d),
                Action::SetTimer(t) => self.nodes[who].timer = Some(t),
                Action::Event(e) => self.nodes[who].events.push(e),
                Action::UseOutbound(_) => {}
            }
        }
        self.check_no_loss();
    }

    /// Make before break: whatever SA a node sends with, the other node
    /// can receive on, with the same key (at every step, whatever the
    /// network did to IKE messages).
    pub fn check_no_loss(&self) {
        if self.nodes.len() != 2 {
            return;
        }
        for (a, b, tunnel) in [(0, 1), (1, 0)].into_iter().flat_map(|(a, b)| {
            self.nodes[a]
                .dp
                .tunnels()
                .into_iter()
                .map(move |t| (a, b, t))
        }) {
            let excused = self.nodes[a]
                .dp
                .sending_inbound_in(tunnel)
                .is_some_and(|i| {
                    self.nodes[a].dp.after_expiry.contains(&i)
                        || self.nodes[a].dp.fresh.contains(&i)
                });
            if excused {
                continue;
            }
            if let Some((spi, key)) = self.nodes[a].dp.sending_in(tunnel) {
                if self.nodes[b].dp.expired.contains(&spi) {
                    // The peer's copy reached its hard lifetime.
                    continue;
                }
                if let Some(peer) = self.nodes[b].dp.sas.get(&spi) {
                    assert_eq!(
                        &peer.2[..],
                        key,
                        "node {a} sends on {spi:#x} with a key node {b} does not have"
                    );
                } else if !self.nodes[b].dp.sas.is_empty() {
                    // The peer has SAs but not this one: a loss, unless the
                    // peer has torn the IKE SA down (it has none left).
                    let tail = |n: usize| {
                        let e = &self.nodes[n].events;
                        e[e.len().saturating_sub(12)..]
                            .iter()
                            .map(|e| format!("  {e:?}\n"))
                            .collect::<String>()
                    };
                    panic!(
                        "node {a} sends on SPI {spi:#x}, which node {b} has not installed (it has {:x?})\nnode 0:\n{}node 1:\n{}",
                        self.nodes[b].dp.sas.keys().collect::<Vec<_>>(),
                        tail(0),
                        tail(1)
                    );
                }
            }
        }
    }

    pub fn initiate(&mut self, fate: &mut dyn FnMut(usize, &Datagram) -> Fate) {
        let a = self.nodes[0].ike.initiate(self.now);
        self.absorb(0, a, fate);
    }

    pub fn deliver(&mut self, d: Datagram, fate: &mut dyn FnMut(usize, &Datagram) -> Fate) {
        let mut dest = d.path.remote;
        let public: IpAddr = NAT_PUBLIC.parse().unwrap();
        let to = if self.nat && dest.ip() == public {
            dest = SocketAddr::new(self.nodes[0].ips[0], dest.port() - 40000);
            Some(0)
        } else {
            self.nodes.iter().position(|n| n.ips.contains(&dest.ip()))
        };
        let Some(to) = to else { return };
        let path = Path {
            local: dest,
            remote: d.path.local,
        };
        let a = self.nodes[to].ike.handle(&d.bytes, path, self.now);
        self.absorb(to, a, fate);
    }

    /// Runs until nothing is in flight and no timer is set, or `limit`.
    pub fn run_with(&mut self, limit: Duration, fate: &mut dyn FnMut(usize, &Datagram) -> Fate) {
        let end = Timestamp::from_millis(0).saturating_add(limit);
        loop {
            let packet = self.in_flight.keys().next().map(|k| k.0);
            let timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.timer.map(|t| (t, i)))
                .min();
            let next = match (packet, timer) {
                (Some(p), Some((t, _))) => p.min(t),
                (Some(p), None) => p,
                (None, Some((t, _))) => t,
                (None, None) => return,
            };
            if next > end {
                return;
            }
            self.now = self.now.max(next);
            if packet == Some(next) {
                let key = *self.in_flight.keys().next().unwrap();
                let (_, d) = self.in_flight.remove(&key).unwrap();
                self.deliver(d, fate);
            } else if let Some((_, i)) = timer {
                let a = self.nodes[i].ike.tick(self.now);
                self.absorb(i, a, fate);
            }
        }
    }

    pub fn run(&mut self, fate: &mut dyn FnMut(usize, &Datagram) -> Fate) {
        self.initiate(fate);
        self.run_with(Duration::from_secs(300), fate);
    }

    pub fn run_clean(&mut self) {
        self.run(&mut |_, _| Fate::Deliver);
    }
}

pub fn exchange_of(d: &Datagram) -> ExchangeType {
    Message::new_checked(&d.bytes[..])
        .unwrap()
        .header()
        .exchange()
}

pub fn is_response(d: &Datagram) -> bool {
    Message::new_checked(&d.bytes[..])
        .unwrap()
        .header()
        .flags()
        .response
}

/// Both sides installed exactly one CHILD SA, and they match: SPIs crossed,
/// keys equal per direction, same AEAD, selectors mirrored.
pub fn assert_matching(net: &Net) {
    let (i, r) = (net.i(), net.r());
    assert_eq!(i.installs.len(), 1, "initiator installs: {:?}", i.events);
    assert_eq!(r.installs.len(), 1, "responder installs: {:?}", r.events);
    let (ci, cr) = (&i.installs[0], &r.installs[0]);
    assert_eq!(ci.role(), Role::Initiator);
    assert_eq!(cr.role(), Role::Responder);
    assert_eq!(ci.outbound().spi, cr.inbound().spi);
    assert_eq!(ci.inbound().spi, cr.outbound().spi);
    assert_ne!(ci.inbound().spi, ci.outbound().spi);
    assert_eq!(
        ci.outbound().key.expose_secret(),
        cr.inbound().key.expose_secret()
    );
    assert_eq!(
        ci.inbound().key.expose_secret(),
        cr.outbound().key.expose_secret()
    );
    assert_ne!(
        ci.inbound().key.expose_secret(),
        ci.outbound().key.expose_secret()
    );
    assert_eq!(ci.outbound().key.len(), ci.aead.keymat_len());
    assert_eq!(ci.aead, cr.aead);
    assert_eq!(ci.local_ts, cr.remote_ts);
    assert_eq!(ci.remote_ts, cr.local_ts);
    assert_eq!(ci.ike_sa, cr.ike_sa);
    assert_eq!(i.established().len(), 1);
    assert_eq!(r.established().len(), 1);
    assert!(i.failures().is_empty(), "{:?}", i.failures());
    // A forged or corrupted IKE_SA_INIT request may leave a half-open SA
    // on the responder that expires: not a failure of the pair.
    let r_failures: Vec<_> = r
        .failures()
        .into_iter()
        .filter(|f| !matches!(f, Failure::HalfOpenExpired { .. }))
        .collect();
    assert!(r_failures.is_empty(), "{r_failures:?}");
}

// ------------------------------------------------- established SAs

impl Net {
    /// Runs until the clock reaches `t` (absolute, from the start).
    pub fn run_until(&mut self, t: Duration, fate: &mut dyn FnMut(usize, &Datagram) -> Fate) {
        self.run_with(t, fate);
        self.now = self.now.max(Timestamp::from_millis(0).saturating_add(t));
    }

    /// Runs for `d` more.
    pub fn run_for(&mut self, d: Duration, fate: &mut dyn FnMut(usize, &Datagram) -> Fate) {
        let until = Duration::from_millis(self.now.as_millis()) + d;
        self.run_until(until, fate);
    }

    /// Calls the engine of `who` now and carries out what it says.
    pub fn act(
        &mut self,
        who: usize,
        f: impl FnOnce(&mut Ike<TestEntropy>, Timestamp) -> Vec<Action>,
        fate: &mut dyn FnMut(usize, &Datagram) -> Fate,
    ) {
        let now = self.now;
        let a = f(&mut self.nodes[who].ike, now);
        self.absorb(who, a, fate);
    }

    /// Our inbound SPI of the first CHILD SA in service at `who`.
    pub fn child_of(&self, who: usize) -> ike::wire::ChildSpi {
        self.nodes[who].ike.child_sas()[0].inbound_spi
    }

    /// Our SPI of the established IKE SA at `who`.
    pub fn ike_sa_of(&self, who: usize) -> ike::wire::IkeSpi {
        let est: Vec<_> = self.nodes[who]
            .ike
            .sas()
            .into_iter()
            .filter(|(_, _, p)| matches!(p, ike::sa::Phase::Established { .. }))
            .collect();
        assert_eq!(est.len(), 1, "node {who}: {:?}", self.nodes[who].ike.sas());
        est[0].0
    }

    /// Both sides hold exactly one established IKE SA with one CHILD SA in
    /// service, and their data planes exactly one matching ESP pair that
    /// each sends with; nothing failed.
    pub fn assert_settled(&self) {
        for who in 0..2 {
            let n = &self.nodes[who];
            let est: Vec<_> = n
                .ike
                .sas()
                .into_iter()
                .filter(|(_, _, p)| matches!(p, ike::sa::Phase::Established { .. }))
                .collect();
            assert_eq!(
                est.len(),
                1,
                "node {who} IKE SAs: {:?}\n{:#?}",
                n.ike.sas(),
                n.events
            );
            assert_eq!(
                n.ike.child_sas().len(),
                1,
                "node {who} CHILD SAs: {:?}\n{:#?}",
                n.ike.child_sas(),
                n.events
            );
            assert_eq!(
                n.dp.sas.len(),
                1,
                "node {who} data plane: {:x?}\n{:#?}",
                n.dp.sas.keys().collect::<Vec<_>>(),
                n.events
            );
            assert!(n.failures().is_empty(), "node {who}: {:?}", n.failures());
        }
        let (a, b) = (&self.nodes[0].dp, &self.nodes[1].dp);
        let (a_in, a_sa) = a.sas.iter().next().unwrap();
        let (b_in, b_sa) = b.sas.iter().next().unwrap();
        assert_eq!(a_sa.0, *b_in);
        assert_eq!(b_sa.0, *a_in);
        assert_eq!(a_sa.1, b_sa.2);
        assert_eq!(a_sa.2, b_sa.1);
        assert_eq!(a.sending().map(|s| s.0), Some(*b_in));
        assert_eq!(b.sending().map(|s| s.0), Some(*a_in));
        let ike_a = self.nodes[0].ike.child_sas()[0].ike_sa;
        let ike_b = self.nodes[1].ike.child_sas()[0].ike_sa;
        assert_eq!(ike_a, ike_b);
    }

    /// Runs a clean network second by second (at most `secs`) until a moment
    /// between two rekeys: on both sides one established IKE SA and, per
    /// tunnel, one CHILD SA in IKE and one in the data plane (an IKE rekey
    /// leaves the old IKE SA until its Delete is answered; a CHILD rekey the
    /// old inbound half for a while).
    pub fn run_until_quiet(&mut self, tunnels: usize, secs: u32) {
        for _ in 0..secs {
            let quiet = (0..2).all(|k| {
                let n = &self.nodes[k];
                let established = n
                    .ike
                    .sas()
                    .iter()
                    .filter(|(_, _, p)| matches!(p, ike::sa::Phase::Established { .. }))
                    .count();
                n.dp.sas.len() == tunnels && n.ike.child_sas().len() == tunnels && established == 1
            });
            if quiet {
                return;
            }
            self.run_for(Duration::from_secs(1), &mut |_, _| Fate::Deliver);
        }
    }

    /// Both sides hold exactly one established IKE SA and, for each of
    /// `tunnels` tunnels, one CHILD SA whose halves match the peer's in the
    /// same tunnel and are sent with; nothing failed.
    pub fn assert_settled_tunnels(&self, tunnels: usize) {
        for who in 0..2 {
            let n = &self.nodes[who];
            let est = n
                .ike
                .sas()
                .into_iter()
                .filter(|(_, _, p)| matches!(p, ike::sa::Phase::Established { .. }))
                .count();
            assert_eq!(
                est,
                1,
                "node {who} IKE SAs: {:?}\n{:#?}",
                n.ike.sas(),
                n.events
            );
            assert_eq!(
                n.ike.child_sas().len(),
                tunnels,
                "node {who} CHILD SAs: {:?}\n{:#?}",
                n.ike.child_sas(),
                n.events
            );
            assert_eq!(
                n.dp.tunnel_of.values().copied().collect::<Vec<_>>().len(),
                tunnels,
                "node {who} data plane: {:x?}",
                n.dp.tunnel_of
            );
            assert_eq!(n.dp.tunnels(), (0..tunnels).collect(), "node {who}");
            assert!(n.failures().is_empty(), "node {who}: {:?}", n.failures());
        }
        let (a, b) = (&self.nodes[0].dp, &self.nodes[1].dp);
        for t in 0..tunnels {
            let a_in = a
                .sending_inbound_in(t)
                .expect("node 0 sends in every tunnel");
            let b_in = b
                .sending_inbound_in(t)
                .expect("node 1 sends in every tunnel");
            let (a_sa, b_sa) = (&a.sas[&a_in], &b.sas[&b_in]);
            assert_eq!(a_sa.0, b_in, "tunnel {t}");
            assert_eq!(b_sa.0, a_in, "tunnel {t}");
            assert_eq!(a_sa.1, b_sa.2, "tunnel {t}");
            assert_eq!(a_sa.2, b_sa.1, "tunnel {t}");
        }
    }

    /// As [`Net::assert_settled`], but a rekey may be under way: each side
    /// has one CHILD SA in service, the two match, each data plane sends
    /// with it and holds it with the peer's keys; any other SA in a data
    /// plane is one not sent with (a replaced SA's lingering inbound half,
    /// or a successor not yet in use).
    pub fn assert_in_service(&self) {
        for who in 0..2 {
            let n = &self.nodes[who];
            assert_eq!(
                n.ike.child_sas().len(),
                1,
                "node {who}: {:?}\n{:#?}",
                n.ike.child_sas(),
                n.events
            );
            assert!(n.failures().is_empty(), "node {who}: {:?}", n.failures());
        }
        let (c0, c1) = (
            self.nodes[0].ike.child_sas()[0],
            self.nodes[1].ike.child_sas()[0],
        );
        assert_eq!(c0.inbound_spi, c1.outbound_spi);
        assert_eq!(c0.outbound_spi, c1.inbound_spi);
        assert_eq!(c0.ike_sa, c1.ike_sa);
        let (a, b) = (&self.nodes[0].dp, &self.nodes[1].dp);
        let sa0 = &a.sas[&c0.inbound_spi.0];
        let sa1 = &b.sas[&c1.inbound_spi.0];
        assert_eq!(sa0.1, sa1.2);
        assert_eq!(sa0.2, sa1.1);
        assert_eq!(a.sending().map(|s| s.0), Some(c0.outbound_spi.0));
        assert_eq!(b.sending().map(|s| s.0), Some(c1.outbound_spi.0));
    }

    /// The events of `who` that `f` picks.
    pub fn events_of<T>(&self, who: usize, f: impl Fn(&Event) -> Option<T>) -> Vec<T> {
        self.nodes[who].events.iter().filter_map(f).collect()
    }
}

/// A network fate from one byte of a property test's input: mostly delivered,
/// sometimes dropped, duplicated or delayed.
pub fn fate_of(code: u8) -> Fate {
    match code {
        0..=9 => Fate::Deliver,
        10 | 11 => Fate::Drop,
        12 => Fate::Duplicate,
        13 | 14 => Fate::Delay(Duration::from_millis(400)),
        _ => Fate::Delay(Duration::from_millis(1500)),
    }
}
