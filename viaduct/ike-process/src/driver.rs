//! [`Driver`]: the policy's peers, each with its [`ike::sa::Ike`] engine,
//! between the data plane's messages and the engines' actions. Sans-IO like
//! the engine: messages and time in, messages and log lines out.

use std::time::Duration;

use ike::sa::{Action, Entropy, Event, Ike, Path, Timestamp};
use policy_blob as blob;
use viaduct_channel::{IkeDatagram, SaInstall, ToDataPlane, ToIke};
use zeroize::Zeroizing;

use crate::config::{connection, Connection};
use crate::credentials::Credentials;

/// The first wait before an initiator tries again after its IKE SA failed
/// or closed; doubled each time up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

struct Peer<E: Entropy> {
    c: ConnectionMeta,
    ike: Ike<E>,
    timer: Option<Timestamp>,
    /// Initiators: when to initiate next (`None`: not now).
    retry_at: Option<Timestamp>,
    backoff: Duration,
    /// Randomness for the restart jitter.
    jitter: E,
    /// The peer was found dead and the DPD action is `clear`: no restart
    /// until it initiates.
    cleared: bool,
    /// The tunnel of each CHILD SA in the data plane, by our inbound SPI.
    spi_tunnel: std::collections::HashMap<u32, blob::TunnelId>,
}

impl<E: Entropy> Peer<E> {
    /// The tunnel of the CHILD SA with our inbound SPI `spi`.
    fn tunnel_of(&self, spi: u32) -> Option<blob::TunnelId> {
        self.spi_tunnel.get(&spi).copied()
    }

    fn owns(&self, tunnel: blob::TunnelId) -> bool {
        self.c.tunnels.contains(&tunnel)
    }
}

struct ConnectionMeta {
    peer: u16,
    name: String,
    /// The engine's tunnel `i` is `tunnels[i]`.
    tunnels: Vec<blob::TunnelId>,
    initiator: bool,
    dpd_clear: bool,
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
}

/// What a call produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages for the data plane, in order.
    pub to_data_plane: Vec<ToDataPlane>,
    /// Lines for the console log (never a key).
    pub log: Vec<String>,
}

/// The IKE side of the Viaduct.
pub struct Driver<E: Entropy> {
    peers: Vec<Peer<E>>,
}

impl<E: Entropy> Driver<E> {
    /// The peers of `policy` whose credentials resolve; each one that does
    /// not is logged and stays closed. `entropy` makes one source per peer.
    pub fn new(
        policy: &blob::Policy,
        creds: &Credentials,
        mut entropy: impl FnMut() -> E,
        now: Timestamp,
    ) -> (Driver<E>, Vec<String>) {
        let mut peers = Vec::new();
        let mut log = Vec::new();
        let Some(ike) = &policy.ike else {
            return (Driver { peers }, log);
        };
        for (i, p) in ike.peers.iter().enumerate() {
            let c: Connection = match connection(policy, ike, i, creds) {
                Ok(c) => c,
                Err(e) => {
                    log.push(format!("ike: peer {}: {e}", p.name));
                    continue;
                }
            };
            let meta = ConnectionMeta {
                peer: c.peer,
                name: c.name,
                tunnels: c.tunnels,
                initiator: c.initiator,
                dpd_clear: c.dpd_clear,
                local: c.config.local,
                remote: c.config.remote,
            };
            match Ike::new(c.config, entropy(), now) {
                Ok(engine) => peers.push(Peer {
                    retry_at: meta.initiator.then_some(now),
                    c: meta,
                    ike: engine,
                    timer: None,
                    backoff: FIRST_BACKOFF,
                    jitter: entropy(),
                    cleared: false,
                    spi_tunnel: std::collections::HashMap::new(),
                }),
                Err(e) => log.push(format!("ike: peer {}: {e}", p.name)),
            }
        }
        (Driver { peers }, log)
    }

    /// How many peers run.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// One line per peer without an IKE SA, per IKE SA and per CHILD SA:
    /// SPIs, roles, transforms, ages, time to the next rekey and to expiry
    /// (the console's `status`; no key material).
    pub fn status(&self, now: Timestamp) -> Vec<String> {
        fn secs(d: Duration) -> u64 {
            d.as_secs()
        }
        let mut lines = Vec::new();
        for p in &self.peers {
            let sas = p.ike.status(now);
            if sas.is_empty() {
                let state = match (p.c.initiator && !p.cleared, p.retry_at) {
                    (true, Some(t)) => {
                        format!(
                            "no IKE SA; next attempt in {} s",
                            secs(t.saturating_since(now))
                        )
                    }
                    (true, None) => "no IKE SA; connecting".to_owned(),
                    (false, _) if p.cleared => {
                        "no IKE SA; the peer was dead (DPD action clear): waiting for it".to_owned()
                    }
                    (false, _) => "no IKE SA; waiting for the peer".to_owned(),
                };
                lines.push(format!(
                    "status peer {} ({}): {state}",
                    p.c.name, p.c.remote
                ));
            }
            for sa in sas {
                let rekey = sa
                    .rekey_in
                    .map_or("-".to_owned(), |d| format!("{} s", secs(d)));
                lines.push(format!(
                    "status peer {} IKE SA {:016x}_i {:016x}_r {} with {}{} ({}): age {} s, rekey in {}",
                    p.c.name,
                    sa.ike_sa.initiator.0,
                    sa.ike_sa.responder.0,
                    match sa.role {
                        ike::crypto::Role::Initiator => "initiator",
                        ike::crypto::Role::Responder => "responder",
                    },
                    sa.remote,
                    if sa.udp_encapsulation { " in UDP" } else { "" },
                    sa.proposal,
                    secs(sa.age),
                    rekey,
                ));
                for c in sa.children {
                    lines.push(format!(
                        "status peer {} CHILD SA in {:08x} out {:08x} tunnel {} {}{}: age {} s, rekey in {}, expires in {} s",
                        p.c.name,
                        c.inbound.0,
                        c.outbound.0,
                        p.tunnel_of(c.inbound.0).map_or(0, |t| t.0),
                        c.state,
                        if c.outbound_active { "" } else { " (not sent on yet)" },
                        secs(c.age),
                        c.rekey_in.map_or("-".to_owned(), |d| format!("{} s", secs(d))),
                        secs(c.expires_in),
                    ));
                }
            }
        }
        lines
    }

    /// The earliest time [`Driver::tick`] has something to do.
    pub fn next_timer(&self) -> Option<Timestamp> {
        self.peers
            .iter()
            .flat_map(|p| [p.timer, p.retry_at])
            .flatten()
            .min()
    }

    /// Runs what is due: engine timers and initiations.
    pub fn tick(&mut self, now: Timestamp) -> Output {
        let mut out = Output::default();
        for p in &mut self.peers {
            if p.retry_at.is_some_and(|t| t <= now) {
                p.retry_at = None;
                let a = p.ike.initiate(now);
                absorb(p, a, now, &mut out);
            }
            if p.timer.is_some_and(|t| t <= now) {
                let a = p.ike.tick(now);
                absorb(p, a, now, &mut out);
            }
        }
        out
    }

    /// A message from the data plane.
    pub fn from_data_plane(&mut self, m: ToIke, now: Timestamp) -> Output {
        let mut out = Output::default();
        match m {
            ToIke::IkeDatagram(d) => {
                let Some(p) = self.peers.iter_mut().find(|p| p.c.peer == d.peer) else {
                    out.log
                        .push(format!("ike: a datagram for unknown peer {}", d.peer));
                    return out;
                };
                let path = Path {
                    local: std::net::SocketAddr::new(p.c.local.ip(), d.local_port),
                    remote: std::net::SocketAddr::new(p.c.remote.ip(), d.remote_port),
                };
                let a = p.ike.handle(&d.bytes, path, now);
                absorb(p, a, now, &mut out);
            }
            ToIke::SaLifetime {
                tunnel,
                inbound_spi,
                hard,
            } => {
                if let Some(p) = self.peers.iter_mut().find(|p| p.owns(tunnel)) {
                    if !hard {
                        let a = p.ike.rekey_child(ike::wire::ChildSpi(inbound_spi), now);
                        absorb(p, a, now, &mut out);
                    }
                }
            }
            ToIke::Refused {
                tunnel,
                inbound_spi,
                refusal,
            } => {
                out.log.push(format!(
                    "ike: the data plane refused CHILD SA {inbound_spi:08x} of tunnel {}: {refusal}",
                    tunnel.0
                ));
                if let Some(p) = self.peers.iter_mut().find(|p| p.owns(tunnel)) {
                    let a = p.ike.delete_child(ike::wire::ChildSpi(inbound_spi), now);
                    absorb(p, a, now, &mut out);
                }
            }
        }
        out
    }
}

fn aead(a: ike::crypto::Aead) -> Option<blob::Aead> {
    match a {
        ike::crypto::Aead::AesGcm16_128 => Some(blob::Aead::Aes128Gcm16),
        ike::crypto::Aead::AesGcm16_256 => Some(blob::Aead::Aes256Gcm16),
        ike::crypto::Aead::ChaCha20Poly1305 => Some(blob::Aead::ChaCha20Poly1305),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Carries out an engine's actions for peer `p`.
fn absorb<E: Entropy>(p: &mut Peer<E>, actions: Vec<Action>, now: Timestamp, out: &mut Output) {
    let name = p.c.name.clone();
    for a in actions {
        match a {
            Action::Send(d) => {
                if d.path.remote.ip() != p.c.remote.ip() {
                    out.log.push(format!(
                        "ike: peer {name}: not sending to {}, which is not the peer",
                        d.path.remote
                    ));
                    continue;
                }
                out.to_data_plane.push(ToDataPlane::SendIke(IkeDatagram {
                    peer: p.c.peer,
                    local_port: d.path.local.port(),
                    remote_port: d.path.remote.port(),
                    bytes: d.bytes,
                }));
            }
            Action::InstallChildSa(c) => {
                let Some(aead) = aead(c.aead) else {
                    continue;
                };
                let Some(tunnel) = p.c.tunnels.get(c.tunnel).copied() else {
                    continue;
                };
                p.spi_tunnel.insert(c.inbound_spi.0, tunnel);
                let secs = |d: Duration| d.as_secs().max(1);
                out.to_data_plane
                    .push(ToDataPlane::InstallSa(Box::new(SaInstall {
                        tunnel,
                        inbound_spi: c.inbound_spi.0,
                        outbound_spi: c.outbound_spi.0,
                        aead,
                        esn: c.esn,
                        key_out: Zeroizing::new(c.outbound().key.expose_secret().to_vec()),
                        key_in: Zeroizing::new(c.inbound().key.expose_secret().to_vec()),
                        udp_remote_port: c.udp_encapsulation.then(|| c.path.remote.port()),
                        outbound_active: c.outbound_active,
                        soft_seconds: secs(c.lifetimes.rekey_after),
                        hard_seconds: secs(c.lifetimes.expire_after),
                    })));
                out.log.push(format!(
                    "ike: peer {name}: CHILD SA in {:08x} out {:08x} of tunnel {} installed ({:?}{})",
                    c.inbound_spi.0,
                    c.outbound_spi.0,
                    tunnel.0,
                    c.aead,
                    if c.udp_encapsulation { ", UDP" } else { "" }
                ));
            }
            Action::UseOutbound(id) => {
                if let Some(tunnel) = p.tunnel_of(id.inbound_spi.0) {
                    out.to_data_plane.push(ToDataPlane::UseOutbound {
                        tunnel,
                        inbound_spi: id.inbound_spi.0,
                    });
                }
            }
            Action::DeleteChildSa(id) => {
                if let Some(tunnel) = p.spi_tunnel.remove(&id.inbound_spi.0) {
                    out.to_data_plane.push(ToDataPlane::DeleteSa {
                        tunnel,
                        inbound_spi: id.inbound_spi.0,
                    });
                }
            }
            Action::SetTimer(t) => p.timer = Some(t),
            Action::Event(e) => {
                match &e {
                    Event::IkeSaEstablished(_) => {
                        p.backoff = FIRST_BACKOFF;
                        p.cleared = false;
                    }
                    // A dead peer (its IKE SA's request went unanswered),
                    // DPD action `clear`: no restart; the tunnel waits for
                    // the peer.
                    Event::Failed {
                        failure: ike::sa::Failure::Timeout { exchange, .. },
                        ..
                    } if p.c.dpd_clear
                        && *exchange != ike::wire::ExchangeType::IKE_SA_INIT
                        && *exchange != ike::wire::ExchangeType::IKE_AUTH =>
                    {
                        p.retry_at = None;
                        p.cleared = true;
                        out.log.push(format!(
                            "ike: peer {name}: dead; DPD action clear: the tunnel stays down until the peer initiates"
                        ));
                    }
                    // Nothing but tombstones left (a closed SA lingers to
                    // answer retransmissions): start again after a pause.
                    Event::Failed { .. } | Event::Closed { .. }
                        if p.c.initiator
                            && p.ike
                                .sas()
                                .iter()
                                .all(|(_, _, phase)| *phase == ike::sa::Phase::Closing) =>
                    {
                        // Up to a quarter more, at random: peers that lost
                        // each other at once do not retry in step.
                        let mut r = [0u8; 4];
                        p.jitter.fill(&mut r);
                        let quarter = p.backoff.as_millis() as u64 / 4;
                        let extra = u64::from(u32::from_be_bytes(r)) % quarter.max(1);
                        p.retry_at =
                            Some(now.saturating_add(p.backoff + Duration::from_millis(extra)));
                        p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
                    }
                    Event::Dropped { .. } | Event::Retransmitted { .. } => {}
                    _ => {}
                }
                if let Event::IkeSaEstablished(x) = &e {
                    // Who and how first: the relay cuts long lines.
                    out.log.push(format!(
                        "ike: peer {name}: IKE SA established with {}, authenticated by {}; {} ({})",
                        x.remote_id,
                        auth_name(&p.ike.config().auth),
                        x.ike_sa,
                        x.proposal
                    ));
                } else if !matches!(e, Event::Dropped { .. }) {
                    out.log.push(format!("ike: peer {name}: {}", describe(&e)));
                }
            }
        }
    }
}

/// How both sides authenticate, for the log.
fn auth_name(a: &ike::sa::Auth) -> String {
    use ike::crypto::SignatureScheme as S;
    let scheme = |s: S| match s {
        S::Ed25519 => "Ed25519",
        S::EcdsaP256Sha256 => "ECDSA P-256",
    };
    match a {
        ike::sa::Auth::Psk(_) => "pre-shared key".into(),
        ike::sa::Auth::Signature { key, peer } => {
            let ours = if key.is_external() {
                format!("{} by the TPM identity key", scheme(key.scheme()))
            } else {
                scheme(key.scheme()).to_owned()
            };
            if !key.is_external() && key.scheme() == peer.scheme() {
                format!("{ours} signatures (pinned keys)")
            } else {
                format!(
                    "signatures: ours {ours}, the peer's {} (pinned)",
                    scheme(peer.scheme())
                )
            }
        }
    }
}

/// One line per event, for the console (no keys in any event).
pub fn describe(e: &Event) -> String {
    match e {
        Event::IkeSaEstablished(x) => format!(
            "IKE SA {} established with {} ({})",
            x.ike_sa, x.remote_id, x.proposal
        ),
        Event::ChildSaRefused { failure, .. } => format!("CHILD SA refused: {failure}"),
        Event::Failed { failure, .. } => format!("failed: {failure}"),
        Event::Closed { reason, .. } => format!("IKE SA closed: {reason}"),
        Event::ChildSaRekeyed { old, new, .. } => format!(
            "CHILD SA {:08x} replaced by {:08x}",
            old.inbound_spi.0, new.inbound_spi.0
        ),
        Event::ChildSaDeleted { child, reason } => {
            format!("CHILD SA {:08x} deleted: {reason}", child.inbound_spi.0)
        }
        Event::IkeSaRekeyed { old, new, .. } => format!("IKE SA {old} replaced by {new}"),
        other => format!("{other:?}"),
    }
}
