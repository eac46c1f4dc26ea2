//! The policy compiler: turns a validated [`profiles::Profile`] into the
//! canonical [`policy_blob::Policy`] that the Viaduct enforces.
//!
//! What it decides, so that the Viaduct does not have to:
//! - **SPD order.** Entries are sorted most specific first (longer prefixes,
//!   a named protocol, narrower ports), so the Viaduct's first match is the
//!   most specific match (RFC 4301 §4.4.1 "decorrelation" done at build time).
//!   Two entries whose selectors overlap without one containing the other and
//!   with different actions are ambiguous: compilation fails naming both.
//! - **Defaults.** A `vpn` Viaduct discards what no entry matches (RFC 4301:
//!   no match → DISCARD); a Viaduct without `vpn` forwards in clear (BYPASS)
//!   subject to its filter.
//! - **Lifetimes.** Soft limits are the profile's rekey time and 90 % of the
//!   byte and packet limits.
//!
//! Same profile → same blob, byte for byte: no clock, no randomness, no
//! hash-map iteration order.

#![forbid(unsafe_code)]

use std::net::IpAddr;

pub mod frr;
pub mod nft;

use policy_blob as blob;
use profiles::model as m;
use profiles::net::{PortRange, Prefix, TrafficSelector};

/// Why a profile's policy cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Two SPD entries overlap ambiguously.
    #[error("SPD entries `{a}` and `{b}` overlap with different actions and neither is more specific; make them disjoint or nest one inside the other")]
    Ambiguous {
        /// First entry.
        a: String,
        /// Second entry.
        b: String,
    },
    /// The IDS rules do not compile as validated.
    #[error("viaduct.ids: {0}")]
    Ids(String),
    /// Something the profile allows that the Viaduct or its IKE engine
    /// cannot do.
    #[error("{field}: {what}")]
    Unsupported {
        /// The profile field.
        field: String,
        /// What, and what to use instead.
        what: String,
    },
    /// The compiled policy failed the blob's own consistency check.
    #[error("compiled policy is inconsistent: {0}")]
    Blob(#[from] blob::BlobError),
    /// A blob could not be read.
    #[error("{path}: {source}")]
    Load {
        /// File.
        path: String,
        /// Why.
        source: blob::BlobError,
    },
}

/// The IDS rules as the Viaduct's signatures: each source read again with
/// the variables validation used. Validation refused the profile if a rule
/// was refused (unless `unsupported = "skip"`, which leaves it out), so a
/// refusal here means the profile changed under us.
fn ids_signatures(ids: &m::Ids) -> Result<Vec<viaduct_ids::Signature>, PolicyError> {
    let mut vars = ids_rules::Vars::suricata_defaults();
    for (name, value) in &ids.vars {
        vars.set(name, value);
    }
    let mut out = Vec::new();
    for src in &ids.sources {
        let set = ids_rules::parse(&src.text, &vars);
        if let Some(r) = set.refused.first() {
            if !ids.skip_unsupported {
                return Err(PolicyError::Ids(format!(
                    "{}: line {}: {}",
                    src.origin, r.line, r.reason
                )));
            }
        }
        out.extend(set.rules.iter().map(ids_rules::signature));
    }
    if out.len() != ids.compiled {
        return Err(PolicyError::Ids(format!(
            "{} rules compiled where validation counted {}",
            out.len(),
            ids.compiled
        )));
    }
    Ok(out)
}

/// Compiles the profile's Viaduct policy.
pub fn compile(p: &m::Profile) -> Result<blob::Policy, PolicyError> {
    let mut policy = blob::Policy::new(&p.appliance.name, &p.appliance.version)
        .with_security_version(p.appliance.security_version);
    if p.viaduct.roles.contains(&m::Role::Ids) {
        let ids = p
            .viaduct
            .ids
            .as_ref()
            .ok_or_else(|| PolicyError::Ids("role `ids` needs the section's rules".into()))?;
        policy = policy.with_ids(ids_signatures(ids)?);
    }

    let mut entries: Vec<blob::SpdEntry> = Vec::new();
    match &p.viaduct.ipsec {
        Some(ipsec) => {
            policy = policy.with_local(ipsec.local_address);
            let mut id = 0u32;
            let mut ike_peers = Vec::new();
            for peer in &ipsec.peers {
                let mut keyed = Vec::new();
                for t in &peer.tunnels {
                    id += 1;
                    if t.manual.is_none() {
                        keyed.push(blob::TunnelId(id));
                    }
                    let tunnel = tunnel(id, ipsec, peer, t);
                    for l in &t.local_ts {
                        for r in &t.remote_ts {
                            if let Some(sel) = ts_pair(l, r) {
                                entries.push(blob::SpdEntry {
                                    name: t.name.clone(),
                                    selector: sel,
                                    action: blob::SpdAction::Protect(blob::TunnelId(id)),
                                });
                            }
                        }
                    }
                    policy = policy.with_tunnel(tunnel);
                }
                if !keyed.is_empty() {
                    ike_peers.push(ike_peer(ipsec, peer, keyed)?);
                }
            }
            if !ike_peers.is_empty() {
                policy.ike = Some(blob::IkeConfig {
                    local_id: identity(&ipsec.local_id, "viaduct.ipsec.local_id")?,
                    private_key: ipsec.private_key.as_ref().map(|k| match k {
                        m::PrivateKey::Tpm { name } => blob::Credential::Device(name.clone()),
                        m::PrivateKey::Lab { seed } => {
                            blob::Credential::Lab(blob::KeyMaterial::from_slice(seed.expose()))
                        }
                    }),
                    peers: ike_peers,
                });
            }
        }
        None => {
            for a in &p.black.addresses {
                policy = policy.with_local(a.addr);
            }
        }
    }
    for r in &p.viaduct.spd {
        let action = match r.action {
            m::SpdAction::Bypass => blob::SpdAction::Bypass,
            m::SpdAction::Discard => blob::SpdAction::Discard,
        };
        for selector in selectors(&r.selector) {
            entries.push(blob::SpdEntry {
                name: r.name.clone(),
                selector,
                action,
            });
        }
    }
    check_ambiguity(&entries)?;
    entries.sort_by_key(specificity);
    let default = if p.viaduct.roles.contains(&m::Role::Vpn) {
        blob::SpdAction::Discard
    } else {
        blob::SpdAction::Bypass
    };
    entries.push(blob::SpdEntry {
        name: "default-v4".into(),
        selector: blob::Selector::any_v4(),
        action: default,
    });
    entries.push(blob::SpdEntry {
        name: "default-v6".into(),
        selector: blob::Selector::any_v6(),
        action: default,
    });
    policy.spd = entries;

    for f in &p.viaduct.filter {
        let direction = match f.direction {
            m::Direction::Outbound => blob::Direction::Outbound,
            m::Direction::Inbound => blob::Direction::Inbound,
        };
        let tcp_flags = blob::TcpFlags {
            mask: f.tcp_flags.mask,
            value: f.tcp_flags.value,
        };
        for selector in f.selectors.iter().flat_map(selectors) {
            policy = policy
                .with_tcp_filter(
                    f.name.clone(),
                    direction,
                    selector,
                    tcp_flags,
                    filter_action(f.action),
                )
                .with_states(blob::FilterStates(f.states.0));
            if let Some(l) = f.limit {
                policy = policy.with_limit(blob::RateLimit {
                    rate: l.rate,
                    per_seconds: l.per_seconds,
                    burst: l.burst,
                });
            }
            if let Some(t) = f.timeouts {
                policy = policy.with_timeouts(t);
            }
            if f.log {
                policy = policy.with_log();
            }
        }
    }
    policy = policy
        .with_default_filter(filter_action(p.viaduct.filter_default))
        .with_max_flows(p.viaduct.filter_max_flows);
    if p.viaduct.filter_default_log {
        policy = policy.with_default_log();
    }
    if p.viaduct.roles.contains(&m::Role::Router) {
        policy = routes(policy, p);
    }
    policy.validate()?;
    Ok(policy)
}

/// The router role's tables: the static routes to red and black (a route
/// into a tunnel is the SPD's: its PROTECT entries come first), red's own
/// networks to red unless routed explicitly, and what black may install.
fn routes(mut policy: blob::Policy, p: &m::Profile) -> blob::Policy {
    for r in &p.viaduct.routes {
        let via = match r.via {
            m::RouteVia::Red => blob::RouteVia::Red,
            m::RouteVia::Black => blob::RouteVia::Black,
            m::RouteVia::Tunnel(_) => continue,
        };
        policy = policy.with_route(prefix(&r.dst), via);
    }
    for a in &p.red.addresses {
        let net = prefix(&a.network());
        if !policy.routes.iter().any(|r| r.prefix == net) {
            policy = policy.with_route(net, blob::RouteVia::Red);
        }
    }
    if let Some(l) = &p.viaduct.learned_routes {
        policy = policy.with_learn(blob::LearnPolicy {
            allow: l
                .allow
                .iter()
                .map(|a| blob::PrefixRange {
                    prefix: prefix(&a.prefix),
                    min_len: a.ge,
                    max_len: a.le,
                })
                .collect(),
            max_routes: l.max,
            martians: l.martians,
        });
    }
    policy
}

/// Compiles and encodes: the exact bytes the image carries.
pub fn compile_blob(p: &m::Profile) -> Result<Vec<u8>, PolicyError> {
    Ok(compile(p)?.encode())
}

/// Decodes a blob file's bytes, naming the file in the error.
pub fn load(path: &std::path::Path, bytes: &[u8]) -> Result<blob::Policy, PolicyError> {
    blob::Policy::decode(bytes).map_err(|source| PolicyError::Load {
        path: path.display().to_string(),
        source,
    })
}

/// A rate limit as profiles write it: `20/second burst 40`.
pub fn limit_text(l: &blob::RateLimit) -> String {
    let unit = match l.per_seconds {
        1 => "second",
        60 => "minute",
        _ => "hour",
    };
    format!("{}/{unit} burst {}", l.rate, l.burst)
}

/// A rule's timeouts where they differ from the defaults:
/// `tcp_established=3600,udp_first=20`.
pub fn timeouts_text(t: &[u32; 14]) -> String {
    let set: Vec<String> = blob::FLOW_TIMEOUT_NAMES
        .iter()
        .zip(t.iter().zip(blob::DEFAULT_FLOW_TIMEOUTS))
        .filter(|(_, (v, d))| **v != *d)
        .map(|(n, (v, _))| format!("{n}={v}"))
        .collect();
    if set.is_empty() {
        "defaults".into()
    } else {
        set.join(",")
    }
}

fn filter_action(a: m::FilterAction) -> blob::FilterAction {
    match a {
        m::FilterAction::Accept => blob::FilterAction::Accept,
        m::FilterAction::Drop => blob::FilterAction::Drop,
    }
}

fn prefix(p: &Prefix) -> blob::Prefix {
    blob::Prefix::new(p.addr(), p.len())
}

fn ports(r: &PortRange) -> blob::PortRange {
    blob::PortRange {
        start: r.start,
        end: r.end,
    }
}

fn ts(t: &TrafficSelector) -> blob::TrafficSelector {
    blob::TrafficSelector {
        prefix: prefix(&t.prefix),
        protocol: blob::Protocol(t.protocol.unwrap_or(0)),
        ports: ports(&t.ports),
    }
}

/// The outbound selector for local selector `l` → remote selector `r`, if
/// any packet can match both (same family, compatible protocols).
fn ts_pair(l: &TrafficSelector, r: &TrafficSelector) -> Option<blob::Selector> {
    if l.prefix.is_ipv4() != r.prefix.is_ipv4() {
        return None;
    }
    let protocol = match (l.protocol, r.protocol) {
        (Some(a), Some(b)) if a != b => return None,
        (a, b) => a.or(b).unwrap_or(0),
    };
    Some(blob::Selector {
        src: prefix(&l.prefix),
        dst: prefix(&r.prefix),
        protocol: blob::Protocol(protocol),
        src_ports: ports(&l.ports),
        dst_ports: ports(&r.ports),
    })
}

/// A profile selector as blob selectors: one per address family when it
/// names no prefix at all, else one in the family of its prefix.
fn selectors(s: &m::Selector) -> Vec<blob::Selector> {
    let make = |src: blob::Prefix, dst: blob::Prefix| blob::Selector {
        src,
        dst,
        protocol: blob::Protocol(s.protocol.unwrap_or(0)),
        src_ports: ports(&s.src_ports),
        dst_ports: ports(&s.dst_ports),
    };
    let any = |a: &IpAddr| prefix(&Prefix::any_of(a));
    match (s.src, s.dst) {
        (Some(src), Some(dst)) => vec![make(prefix(&src), prefix(&dst))],
        (Some(src), None) => vec![make(prefix(&src), any(&src.addr()))],
        (None, Some(dst)) => vec![make(any(&dst.addr()), prefix(&dst))],
        (None, None) => vec![
            make(blob::Prefix::any_v4(), blob::Prefix::any_v4()),
            make(blob::Prefix::any_v6(), blob::Prefix::any_v6()),
        ],
    }
}

fn tunnel(id: u32, ipsec: &m::Ipsec, peer: &m::Peer, t: &m::Tunnel) -> blob::Tunnel {
    let esp = peer.esp_proposals.first();
    let aead = match &t.manual {
        Some(man) => aead(man.aead),
        None => esp.map(|e| aead(e.aead)).unwrap_or(blob::Aead::Aes256Gcm16),
    };
    let mut tun = blob::Tunnel::new(id, t.name.clone(), ipsec.local_address, peer.address, aead);
    tun.esn = esp.map(|e| e.esn).unwrap_or(true);
    tun.replay_window = ipsec.replay_window;
    tun.udp_encap = peer.encapsulation == m::Encapsulation::Udp;
    tun.outer_dscp = peer.outer_dscp;
    tun.tfc_sizes = peer.tfc_padding.clone();
    tun.local_ts = t.local_ts.iter().map(ts).collect();
    tun.remote_ts = t.remote_ts.iter().map(ts).collect();
    let l = &peer.lifetimes;
    tun.lifetimes = blob::Lifetimes {
        soft: blob::LifetimeLimits {
            bytes: l.child_bytes.map(|b| soft_limit(b.0, 1 << 20)),
            packets: l.child_packets.map(|p| soft_limit(p, 1024)),
            seconds: Some(l.child_rekey.0),
        },
        hard: blob::LifetimeLimits {
            bytes: l.child_bytes.map(|b| b.0),
            packets: l.child_packets,
            seconds: Some(l.child.0),
        },
    };
    if let Some(man) = &t.manual {
        tun = tun.with_manual_keys(
            blob::ManualSa {
                spi: blob::Spi(man.spi_out),
                key: blob::KeyMaterial::from_slice(man.key_out.expose()),
            },
            blob::ManualSa {
                spi: blob::Spi(man.spi_in),
                key: blob::KeyMaterial::from_slice(man.key_in.expose()),
            },
        );
    }
    tun
}

/// An IKE identity: an address, or an FQDN.
fn identity(s: &str, field: &str) -> Result<blob::IkeIdentity, PolicyError> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(blob::IkeIdentity::Addr(a));
    }
    if s.contains('@') {
        return Err(PolicyError::Unsupported {
            field: field.to_string(),
            what: format!("`{s}` is an e-mail style identity; the IKE engine sends FQDN and address identities: use one of those"),
        });
    }
    Ok(blob::IkeIdentity::Fqdn(s.to_string()))
}

/// The IKE section of one peer, keying the tunnels `keyed`.
fn ike_peer(
    ipsec: &m::Ipsec,
    peer: &m::Peer,
    keyed: Vec<blob::TunnelId>,
) -> Result<blob::IkePeer, PolicyError> {
    let field = format!("viaduct.ipsec.peers.{}", peer.name);
    let auth = match &peer.auth {
        m::Auth::PskTpm { name } => blob::IkeAuth::Psk(blob::Credential::Device(name.clone())),
        m::Auth::PskLab { key } => blob::IkeAuth::Psk(blob::Credential::Lab(
            blob::KeyMaterial::from_slice(key.expose()),
        )),
        m::Auth::PublicKey { ed25519 } => blob::IkeAuth::Ed25519 {
            peer_public_key: *ed25519,
        },
        m::Auth::PublicKeyEcdsaP256 { ecdsa_p256 } => blob::IkeAuth::EcdsaP256 {
            peer_public_key: *ecdsa_p256,
        },
    };
    let group = |g: profiles::algo::DhGroup| match g {
        profiles::algo::DhGroup::X25519 => blob::KeGroup::X25519,
    };
    let ike_proposals = peer
        .ike_proposals
        .iter()
        .map(|p| blob::IkeProposal {
            aead: aead(p.aead),
            prf: match p.prf {
                profiles::algo::Prf::Sha256 => blob::IkePrf::Sha256,
                profiles::algo::Prf::Sha384 => blob::IkePrf::Sha384,
                profiles::algo::Prf::Sha512 => blob::IkePrf::Sha512,
            },
            group: group(p.dh),
        })
        .collect();
    let pfs = peer.esp_proposals.first().and_then(|e| e.pfs);
    if peer.esp_proposals.iter().any(|e| e.pfs != pfs) {
        return Err(PolicyError::Unsupported {
            field: format!("{field}.esp_proposals"),
            what: "the ESP proposals mix key exchanges (PFS) and none; the IKE engine uses one for every CHILD SA of a peer: give all of them the same `-x25519` (or none)".into(),
        });
    }
    Ok(blob::IkePeer {
        name: peer.name.clone(),
        local: ipsec.local_address,
        remote: peer.address,
        remote_id: identity(&peer.remote_id, &format!("{field}.remote_id"))?,
        auth,
        ike_proposals,
        esp_proposals: peer
            .esp_proposals
            .iter()
            .map(|e| blob::EspProposal {
                aead: aead(e.aead),
                esn: e.esn,
            })
            .collect(),
        pfs: pfs.map(group),
        ike_rekey_seconds: peer.lifetimes.ike.0,
        dpd: blob::Dpd {
            delay_seconds: peer
                .dpd
                .delay
                .map_or(0, |d| u32::try_from(d.0).unwrap_or(u32::MAX)),
            action: match peer.dpd.action {
                profiles::model::DpdAction::Restart => blob::DpdAction::Restart,
                profiles::model::DpdAction::Clear => blob::DpdAction::Clear,
            },
        },
        tunnels: keyed,
    })
}

fn aead(a: profiles::algo::Aead) -> blob::Aead {
    match a {
        profiles::algo::Aead::Aes128Gcm16 => blob::Aead::Aes128Gcm16,
        profiles::algo::Aead::Aes256Gcm16 => blob::Aead::Aes256Gcm16,
        profiles::algo::Aead::Chacha20Poly1305 => blob::Aead::ChaCha20Poly1305,
    }
}

fn port_width(r: &blob::PortRange) -> u32 {
    u32::from(r.end) - u32::from(r.start)
}

/// Sort key: more specific first. If `a` strictly contains `b`, `b` sorts
/// before `a`; ties keep profile order (the sort is stable).
fn specificity(e: &blob::SpdEntry) -> (std::cmp::Reverse<u16>, bool, u32, u32) {
    let s = &e.selector;
    (
        std::cmp::Reverse(u16::from(s.src.len) + u16::from(s.dst.len)),
        s.protocol.0 == 0,
        port_width(&s.src_ports),
        port_width(&s.dst_ports),
    )
}

fn covers_prefix(a: &blob::Prefix, b: &blob::Prefix) -> bool {
    a.addr.is_ipv4() == b.addr.is_ipv4() && b.len >= a.len && a.contains(b.addr)
}

fn covers(a: &blob::Selector, b: &blob::Selector) -> bool {
    covers_prefix(&a.src, &b.src)
        && covers_prefix(&a.dst, &b.dst)
        && (a.protocol.0 == 0 || a.protocol == b.protocol)
        && a.src_ports.start <= b.src_ports.start
        && b.src_ports.end <= a.src_ports.end
        && a.dst_ports.start <= b.dst_ports.start
        && b.dst_ports.end <= a.dst_ports.end
}

fn overlaps(a: &blob::Selector, b: &blob::Selector) -> bool {
    let pre = |x: &blob::Prefix, y: &blob::Prefix| covers_prefix(x, y) || covers_prefix(y, x);
    let port = |x: &blob::PortRange, y: &blob::PortRange| x.start <= y.end && y.start <= x.end;
    pre(&a.src, &b.src)
        && pre(&a.dst, &b.dst)
        && (a.protocol.0 == 0 || b.protocol.0 == 0 || a.protocol == b.protocol)
        && port(&a.src_ports, &b.src_ports)
        && port(&a.dst_ports, &b.dst_ports)
}

fn check_ambiguity(entries: &[blob::SpdEntry]) -> Result<(), PolicyError> {
    for (i, a) in entries.iter().enumerate() {
        for b in &entries[i + 1..] {
            if a.action == b.action || !overlaps(&a.selector, &b.selector) {
                continue;
            }
            let nested = (covers(&a.selector, &b.selector) || covers(&b.selector, &a.selector))
                && a.selector != b.selector;
            if !nested {
                return Err(PolicyError::Ambiguous {
                    a: a.name.clone(),
                    b: b.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// A readable description of a policy (keys are never included), as JSON.
pub fn describe(p: &blob::Policy) -> serde_json::Value {
    use serde_json::json;
    let sel = |s: &blob::Selector| {
        json!({
            "src": s.src.to_string(), "dst": s.dst.to_string(), "protocol": s.protocol.0,
            "src_ports": format!("{}-{}", s.src_ports.start, s.src_ports.end),
            "dst_ports": format!("{}-{}", s.dst_ports.start, s.dst_ports.end),
        })
    };
    let limits = |l: &blob::LifetimeLimits| json!({"bytes": l.bytes, "packets": l.packets, "seconds": l.seconds});
    json!({
        "format_version": blob::FORMAT_VERSION,
        "digest": p.digest().to_hex(),
        "profile": p.profile_name,
        "version": p.profile_version,
        "security_version": p.security_version.0,
        "local": p.local.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "tunnels": p.tunnels.iter().map(|t| json!({
            "id": t.id.0, "name": t.name, "local": t.local.to_string(), "remote": t.remote.to_string(),
            "local_ts": t.local_ts.iter().map(|x| format!("{} proto {} ports {}-{}", x.prefix, x.protocol.0, x.ports.start, x.ports.end)).collect::<Vec<_>>(),
            "remote_ts": t.remote_ts.iter().map(|x| format!("{} proto {} ports {}-{}", x.prefix, x.protocol.0, x.ports.start, x.ports.end)).collect::<Vec<_>>(),
            "aead": t.aead.to_string(), "esn": t.esn, "replay_window": t.replay_window,
            "encapsulation": if t.udp_encap { "udp" } else { "esp" },
            "outer_dscp": t.outer_dscp,
            "tfc_padding": t.tfc_sizes,
            "lifetimes": {"soft": limits(&t.lifetimes.soft), "hard": limits(&t.lifetimes.hard)},
            "keying": match &t.manual { Some(m) => json!({"manual": {"spi_out": m.outbound.spi.to_string(), "spi_in": m.inbound.spi.to_string()}}), None => json!("ike") },
        })).collect::<Vec<_>>(),
        "spd": p.spd.iter().map(|e| json!({
            "name": e.name, "selector": sel(&e.selector),
            "action": match e.action { blob::SpdAction::Protect(id) => format!("protect tunnel {}", id.0), blob::SpdAction::Bypass => "bypass".into(), blob::SpdAction::Discard => "discard".into() },
        })).collect::<Vec<_>>(),
        "filter": p.filters.iter().map(|f| json!({
            "name": f.name, "direction": format!("{:?}", f.direction).to_lowercase(), "selector": sel(&f.selector),
            "tcp_flags": tcp_flags_text(f.tcp_flags),
            "state": f.states.names(),
            "limit": f.limit.map(|l| limit_text(&l)),
            "timeouts": f.timeouts.map(|t| timeouts_text(&t)),
            "log": f.log,
            "action": format!("{:?}", f.action).to_lowercase(),
        })).collect::<Vec<_>>(),
        "filter_default": format!("{:?}", p.default_filter).to_lowercase(),
        "filter_default_log": p.filter_default_log,
        "filter_stateful": p.stateful(),
        "filter_max_flows": p.filter_max_flows,
        "routes": p.routes.iter().map(|r| json!({"dst": format!("{}/{}", r.prefix.addr, r.prefix.len), "via": route_via(r.via)})).collect::<Vec<_>>(),
        "learned_routes": p.learn.as_ref().map(|l| json!({
            "allow": l.allow.iter().map(range_text).collect::<Vec<_>>(),
            "max": l.max_routes,
            "martians": if l.martians { "allow" } else { "deny" },
        })),
        "ids": p.ids.as_ref().map(|i| i.signatures.iter().map(|s| json!({
            "sid": s.sid,
            "rev": s.rev,
            "action": ids_action(s.action),
            "proto": ids_proto(s.proto),
            "contents": s.contents.len(),
            "msg": s.msg,
        })).collect::<Vec<_>>()),
        "ike": p.ike.as_ref().map(|ike| json!({
            "local_id": ike.local_id.to_string(),
            "private_key": ike.private_key.as_ref().map(credential_text),
            "peers": ike.peers.iter().map(|x| json!({
                "name": x.name, "local": x.local.to_string(), "remote": x.remote.to_string(),
                "remote_id": x.remote_id.to_string(),
                "auth": auth_text(&x.auth),
                "ike_proposals": x.ike_proposals.iter().map(ike_proposal_text).collect::<Vec<_>>(),
                "esp_proposals": x.esp_proposals.iter().map(|e| esp_proposal_text(e, x.pfs)).collect::<Vec<_>>(),
                "ike_rekey_seconds": x.ike_rekey_seconds,
                "dpd": json!({
                    "delay_seconds": x.dpd.delay_seconds,
                    "action": dpd_action_text(x.dpd.action),
                }),
                "tunnels": x.tunnels.iter().map(|t| t.0).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
    })
}

/// A dead-peer-detection action as the profile writes it.
pub fn dpd_action_text(a: blob::DpdAction) -> &'static str {
    match a {
        blob::DpdAction::Restart => "restart",
        blob::DpdAction::Clear => "clear",
    }
}

/// A credential as `policy show` prints it: a device reference by name, a
/// lab key by length only.
pub fn credential_text(c: &blob::Credential) -> String {
    match c {
        blob::Credential::Device(name) if name == blob::DEVICE_IDENTITY => {
            format!("tpm:{name} (the device identity key, ECDSA P-256 in the TPM)")
        }
        blob::Credential::Device(name) => format!("tpm:{name}"),
        blob::Credential::Lab(k) => format!("lab key ({} bytes, in the image)", k.expose().len()),
    }
}

/// A peer's authentication as `policy show` prints it (a lab key by length only).
pub fn auth_text(a: &blob::IkeAuth) -> String {
    match a {
        blob::IkeAuth::Psk(c) => format!("psk {}", credential_text(c)),
        blob::IkeAuth::Ed25519 { peer_public_key } => {
            format!("ed25519 peer key {}", blob::hex(peer_public_key))
        }
        blob::IkeAuth::EcdsaP256 { peer_public_key } => {
            format!("ecdsa-p256 peer key {}", blob::hex(peer_public_key))
        }
    }
}

fn group_text(g: blob::KeGroup) -> &'static str {
    match g {
        blob::KeGroup::X25519 => "x25519",
        blob::KeGroup::Ecp256 => "ecp256",
    }
}

/// An IKE proposal as the profile writes it: `aes256gcm16-prfsha256-x25519`.
pub fn ike_proposal_text(x: &blob::IkeProposal) -> String {
    let prf = match x.prf {
        blob::IkePrf::Sha256 => "prfsha256",
        blob::IkePrf::Sha384 => "prfsha384",
        blob::IkePrf::Sha512 => "prfsha512",
    };
    format!("{}-{prf}-{}", x.aead, group_text(x.group))
}

/// An ESP proposal as the profile writes it, with the PFS group: `aes256gcm16-x25519-esn`.
pub fn esp_proposal_text(e: &blob::EspProposal, pfs: Option<blob::KeGroup>) -> String {
    let mut s = e.aead.to_string();
    if let Some(g) = pfs {
        s.push('-');
        s.push_str(group_text(g));
    }
    s.push_str(if e.esn { "-esn" } else { "-noesn" });
    s
}

/// A TCP flags match as the profile writes it: `ack,!syn` (empty: any).
pub fn tcp_flags_text(f: blob::TcpFlags) -> String {
    m::TcpFlags::NAMES
        .iter()
        .filter(|(_, bit)| f.mask & bit != 0)
        .map(|(name, bit)| {
            if f.value & bit != 0 {
                (*name).to_string()
            } else {
                format!("!{name}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The same description as text, one line per entry.
pub fn describe_text(p: &blob::Policy) -> String {
    let d = describe(p);
    let mut out = format!(
        "policy blob v{} digest {}\nprofile {} {} (security version {})\nlocal {}\n",
        d["format_version"],
        p.digest().to_hex(),
        p.profile_name,
        p.profile_version,
        p.security_version.0,
        d["local"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    for t in &p.tunnels {
        let keying = match &t.manual {
            Some(m) => format!("manual spi out {} in {}", m.outbound.spi, m.inbound.spi),
            None => "ike".into(),
        };
        out.push_str(&format!(
            "tunnel {} {}: {} -> {} {} esn={} window={} encap={} dscp={} tfc={} {}\n",
            t.id.0,
            t.name,
            t.local,
            t.remote,
            t.aead,
            t.esn,
            t.replay_window,
            if t.udp_encap { "udp" } else { "esp" },
            t.outer_dscp,
            if t.tfc_sizes.is_empty() {
                "none".to_string()
            } else {
                t.tfc_sizes
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            },
            keying
        ));
    }
    if let Some(ike) = &p.ike {
        out.push_str(&format!(
            "ike local_id {}{}\n",
            ike.local_id,
            ike.private_key
                .as_ref()
                .map(|k| format!(" private_key {}", credential_text(k)))
                .unwrap_or_default()
        ));
        for x in &ike.peers {
            out.push_str(&format!(
                "ike peer {}: {} -> {} id {} auth {} ike [{}] esp [{}] rekey {}s dpd {} tunnels {}\n",
                x.name,
                x.local,
                x.remote,
                x.remote_id,
                auth_text(&x.auth),
                x.ike_proposals
                    .iter()
                    .map(ike_proposal_text)
                    .collect::<Vec<_>>()
                    .join(", "),
                x.esp_proposals
                    .iter()
                    .map(|e| esp_proposal_text(e, x.pfs))
                    .collect::<Vec<_>>()
                    .join(", "),
                x.ike_rekey_seconds,
                match x.dpd.delay_seconds {
                    0 => "off".to_owned(),
                    d => format!("{d}s {}", dpd_action_text(x.dpd.action)),
                },
                x.tunnels
                    .iter()
                    .map(|t| t.0.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
    }
    for (i, e) in p.spd.iter().enumerate() {
        let s = &e.selector;
        let action = match e.action {
            blob::SpdAction::Protect(id) => format!("PROTECT tunnel {}", id.0),
            blob::SpdAction::Bypass => "BYPASS".into(),
            blob::SpdAction::Discard => "DISCARD".into(),
        };
        out.push_str(&format!(
            "spd {i:>3} {:<20} {} -> {} proto {} -> {action}\n",
            e.name, s.src, s.dst, s.protocol.0
        ));
    }
    for f in &p.filters {
        let s = &f.selector;
        let ports = |r: &blob::PortRange| {
            if r.is_any() {
                String::new()
            } else {
                format!(":{}-{}", r.start, r.end)
            }
        };
        let flags = if f.tcp_flags.is_any() {
            String::new()
        } else {
            format!(" flags {}", tcp_flags_text(f.tcp_flags))
        };
        let mut states = if f.states.is_any() {
            String::new()
        } else {
            format!(" state {}", f.states.names().join(","))
        };
        if let Some(l) = &f.limit {
            states.push_str(&format!(" limit {}", limit_text(l)));
        }
        if let Some(t) = &f.timeouts {
            states.push_str(&format!(" timeouts {}", timeouts_text(t)));
        }
        if f.log {
            states.push_str(" log");
        }
        out.push_str(&format!(
            "filter {:<20} {:?} {}{} -> {}{} proto {}{flags}{states} -> {:?}\n",
            f.name,
            f.direction,
            s.src,
            ports(&s.src_ports),
            s.dst,
            ports(&s.dst_ports),
            s.protocol.0,
            f.action
        ));
    }
    out.push_str(&format!(
        "filter default {:?}{}\n",
        p.default_filter,
        if p.filter_default_log { " log" } else { "" }
    ));
    if p.stateful() {
        out.push_str(&format!(
            "filter conntrack max {} flows\n",
            p.filter_max_flows
        ));
    }
    for r in &p.routes {
        out.push_str(&format!(
            "route {}/{} -> {}\n",
            r.prefix.addr,
            r.prefix.len,
            route_via(r.via)
        ));
    }
    if let Some(l) = &p.learn {
        for a in &l.allow {
            out.push_str(&format!("learn {}\n", range_text(a)));
        }
        out.push_str(&format!(
            "learn max {} routes, martians {}\n",
            l.max_routes,
            if l.martians { "allowed" } else { "denied" }
        ));
    }
    if let Some(i) = &p.ids {
        let drops = i
            .signatures
            .iter()
            .filter(|s| s.action == viaduct_ids::Action::Drop)
            .count();
        out.push_str(&format!(
            "ids: {} signatures ({drops} drop)\n",
            i.signatures.len()
        ));
        for s in &i.signatures {
            out.push_str(&format!(
                "  sid {} rev {} {} {} {:?} ({} contents)\n",
                s.sid,
                s.rev,
                ids_action(s.action),
                ids_proto(s.proto),
                s.msg,
                s.contents.len()
            ));
        }
    }
    out
}

/// A signature's content chain in the rule language's words
/// (`content:"GET "; nocase; depth:4; content:!"x"; …`), bytes outside
/// printable ASCII (and `"`, `;`, `\\`, `|`) as `|hex|`.
pub fn ids_contents_text(s: &viaduct_ids::Signature) -> String {
    let mut out = Vec::new();
    for c in &s.contents {
        let mut t = String::from(if c.negated {
            "content:!\""
        } else {
            "content:\""
        });
        for &b in &c.bytes {
            if (0x20..0x7f).contains(&b) && !b"\";\\|".contains(&b) {
                t.push(b as char);
            } else {
                t.push_str(&format!("|{b:02x}|"));
            }
        }
        t.push('"');
        let mut mods = Vec::new();
        if c.nocase {
            mods.push("nocase".to_string());
        }
        for (name, v) in [
            ("offset", c.offset),
            ("depth", c.depth),
            ("within", c.within),
        ] {
            if let Some(v) = v {
                mods.push(format!("{name}:{v}"));
            }
        }
        if let Some(d) = c.distance {
            mods.push(format!("distance:{d}"));
        }
        if c.fast_pattern {
            mods.push("fast_pattern".to_string());
        }
        for m in mods {
            t.push_str("; ");
            t.push_str(&m);
        }
        out.push(t);
    }
    out.join("; ")
}

/// `alert` or `drop`.
pub fn ids_action(a: viaduct_ids::Action) -> &'static str {
    match a {
        viaduct_ids::Action::Alert => "alert",
        viaduct_ids::Action::Drop => "drop",
    }
}

/// `tcp`, `udp`, `icmp` or `ip`.
pub fn ids_proto(p: viaduct_ids::Proto) -> &'static str {
    match p {
        viaduct_ids::Proto::Tcp => "tcp",
        viaduct_ids::Proto::Udp => "udp",
        viaduct_ids::Proto::Icmp => "icmp",
        viaduct_ids::Proto::Ip => "ip",
    }
}

fn route_via(v: blob::RouteVia) -> &'static str {
    match v {
        blob::RouteVia::Red => "red",
        blob::RouteVia::Black => "black",
    }
}

/// `P ge N le M`, as FRR's prefix lists write a range.
pub fn range_text(a: &blob::PrefixRange) -> String {
    format!(
        "{}/{} ge {} le {}",
        a.prefix.addr, a.prefix.len, a.min_len, a.max_len
    )
}

/// Where a CHILD SA with a byte or packet limit of `hard` is rekeyed: 10 %
/// before the limit, and at least `floor` before it while that leaves half of
/// it. At line rate a small limit's last 10 % can pass in less time than an
/// exchange takes (a lab's 4 MiB at 10 Mbit/s: 0.3 s), and what the SA
/// carries after its hard limit is dropped.
fn soft_limit(hard: u64, floor: u64) -> u64 {
    hard - (hard / 10).max(floor.min(hard / 2))
}
