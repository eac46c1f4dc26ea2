//! Internal consistency checks, run by [`Policy::decode`] and available to the
//! compiler. Nothing here panics.

use std::collections::HashSet;

use subtle::ConstantTimeEq;

use crate::error::BlobError;
use crate::model::*;

/// Smallest TFC padding size: the smallest IPv4 header.
pub const MIN_TFC_SIZE: u16 = 20;
/// Largest TFC padding size: with the largest ESP and outer headers the
/// packet still fits an IP length field.
pub const MAX_TFC_SIZE: u16 = 65_000;
/// Most TFC padding sizes of one tunnel (the Viaduct looks them up per packet).
pub const MAX_TFC_SIZES: usize = 64;
/// Largest DSCP (6 bits).
pub const MAX_DSCP: u8 = 63;

/// Most IKE peers of one gateway.
pub const MAX_IKE_PEERS: usize = 256;
/// Most IKE or ESP proposals of one peer.
pub const MAX_PROPOSALS: usize = 16;
/// Shortest IKE SA rekey time accepted (seconds).
pub const MIN_IKE_REKEY_SECONDS: u64 = 30;
/// Longest IKE SA rekey time accepted (30 days, in seconds).
pub const MAX_IKE_REKEY_SECONDS: u64 = 30 * 24 * 3600;

/// An identity IKE can send: an FQDN of 1 to 255 printable ASCII
/// characters, or an address.
fn check_identity(id: &IkeIdentity) -> Result<(), String> {
    match id {
        IkeIdentity::Fqdn(s) if s.is_empty() || s.len() > 255 => {
            Err("an FQDN is 1 to 255 characters".into())
        }
        IkeIdentity::Fqdn(s) if !s.bytes().all(|b| b.is_ascii_graphic()) => {
            Err("an FQDN is printable ASCII without spaces".into())
        }
        _ => Ok(()),
    }
}

/// A device credential name: 1 to 64 of `a-z 0-9 - _ .`.
fn check_credential_name(n: &str) -> Result<(), String> {
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "device credential name {:?}: 1 to 64 of a-z 0-9 - _ .",
            n.escape_debug().to_string()
        ))
    }
}

/// Smallest accepted anti-replay window (packets).
pub const MIN_REPLAY_WINDOW: u32 = 32;
/// Largest accepted anti-replay window (packets).
pub const MAX_REPLAY_WINDOW: u32 = 1 << 16;
const MAX_STR: usize = u16::MAX as usize;

fn check_str(what: &'static str, s: &str) -> Result<(), BlobError> {
    if s.len() > MAX_STR {
        return Err(BlobError::TooLong {
            what,
            len: s.len(),
            max: MAX_STR,
        });
    }
    Ok(())
}

fn check_prefix(p: &Prefix, context: &dyn Fn() -> String) -> Result<(), BlobError> {
    if p.len > p.max_len() {
        return Err(BlobError::PrefixLength {
            addr: p.addr,
            len: p.len,
            context: context(),
        });
    }
    if !p.host_bits_clear() {
        return Err(BlobError::PrefixHostBits {
            addr: p.addr,
            len: p.len,
            context: context(),
        });
    }
    Ok(())
}

fn check_ports(r: &PortRange, context: &dyn Fn() -> String) -> Result<(), BlobError> {
    if r.start > r.end {
        return Err(BlobError::PortRange {
            start: r.start,
            end: r.end,
            context: context(),
        });
    }
    Ok(())
}

fn check_selector(s: &Selector, context: &dyn Fn() -> String) -> Result<(), BlobError> {
    check_prefix(&s.src, context)?;
    check_prefix(&s.dst, context)?;
    if s.src.addr.is_ipv4() != s.dst.addr.is_ipv4() {
        return Err(BlobError::FamilyMismatch { context: context() });
    }
    check_ports(&s.src_ports, context)?;
    check_ports(&s.dst_ports, context)
}

fn check_limits(t: &Tunnel) -> Result<(), BlobError> {
    let (s, h) = (&t.lifetimes.soft, &t.lifetimes.hard);
    for (what, soft, hard) in [
        ("bytes", s.bytes, h.bytes),
        ("packets", s.packets, h.packets),
        ("seconds", s.seconds, h.seconds),
    ] {
        if let (Some(soft), Some(hard)) = (soft, hard) {
            if soft > hard {
                return Err(BlobError::SoftAfterHard {
                    tunnel: t.name.clone(),
                    what,
                });
            }
        }
    }
    Ok(())
}

fn check_tfc(t: &Tunnel) -> Result<(), BlobError> {
    let bad = |why: &'static str| BlobError::TfcSizes {
        tunnel: t.name.clone(),
        why,
    };
    if t.tfc_sizes.len() > MAX_TFC_SIZES {
        return Err(bad("more than 64 sizes"));
    }
    if t.tfc_sizes
        .iter()
        .any(|n| !(MIN_TFC_SIZE..=MAX_TFC_SIZE).contains(n))
    {
        return Err(bad("a size outside 20..=65000 bytes"));
    }
    if t.tfc_sizes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad("sizes not strictly increasing"));
    }
    Ok(())
}

fn check_sa(
    t: &Tunnel,
    sa: &ManualSa,
    direction: &'static str,
    seen_inbound: &mut HashSet<u32>,
) -> Result<(), BlobError> {
    if sa.spi.0 <= 255 {
        return Err(BlobError::BadSpi {
            tunnel: t.name.clone(),
            spi: sa.spi.0,
            why: "reserved (0..=255, RFC 4303 §2.1)",
        });
    }
    if direction == "inbound" && !seen_inbound.insert(sa.spi.0) {
        return Err(BlobError::BadSpi {
            tunnel: t.name.clone(),
            spi: sa.spi.0,
            why: "used by another inbound SA",
        });
    }
    if sa.key.len() != t.aead.key_material_len() {
        return Err(BlobError::KeyLength {
            tunnel: t.name.clone(),
            direction,
            aead: t.aead,
            expected: t.aead.key_material_len(),
            found: sa.key.len(),
        });
    }
    Ok(())
}

/// One manually keyed SA's cipher key, borrowed from the policy (no copy).
struct KeyRef<'a> {
    tunnel: &'a str,
    direction: &'static str,
    /// The cipher key without the salt: two SAs that share it share the key
    /// whatever their salts.
    key: &'a [u8],
}

/// Every manually keyed SA has its own cipher key: not the same for both
/// directions of a tunnel, not shared between tunnels. With one key twice,
/// two senders whose sequence numbers both start at 1 would seal different
/// packets under the same (key, nonce) whenever their salts are equal too,
/// and AES-GCM and ChaCha20-Poly1305 lose both confidentiality and
/// integrity on a repeated nonce; with different salts the key is still
/// used beyond its one SA. Keys are compared in constant time, in place
/// (no copy is made); keys of different lengths cannot be equal. Run after
/// the key lengths are checked.
fn check_key_reuse(tunnels: &[Tunnel]) -> Result<(), BlobError> {
    let keys: Vec<KeyRef<'_>> = tunnels
        .iter()
        .filter_map(|t| Some((t, t.manual.as_ref()?)))
        .flat_map(|(t, m)| {
            [("outbound", &m.outbound), ("inbound", &m.inbound)]
                .into_iter()
                .map(move |(direction, sa)| KeyRef {
                    tunnel: &t.name,
                    direction,
                    key: sa
                        .key
                        .expose()
                        .get(..t.aead.key_len())
                        .unwrap_or(sa.key.expose()),
                })
        })
        .collect();
    for (i, a) in keys.iter().enumerate() {
        for b in &keys[i + 1..] {
            if a.key.len() == b.key.len() && bool::from(a.key.ct_eq(b.key)) {
                return Err(BlobError::KeyReuse {
                    tunnel: b.tunnel.to_owned(),
                    direction: b.direction,
                    other_tunnel: a.tunnel.to_owned(),
                    other_direction: a.direction,
                });
            }
        }
    }
    Ok(())
}

/// The IDS section: at least one signature, each with an address and port
/// set that can match, a message that fits, and what the engine checks
/// ([`viaduct_ids::check_signatures`]: sids, contents, bounds).
fn check_ids(ids: &IdsPolicy) -> Result<(), BlobError> {
    if ids.signatures.is_empty() {
        return Err(BlobError::Ids("the section holds no signature".into()));
    }
    for sig in &ids.signatures {
        check_str("IDS message", &sig.msg)?;
        if sig.src.is_empty()
            || sig.dst.is_empty()
            || sig.src_ports.is_empty()
            || sig.dst_ports.is_empty()
        {
            return Err(BlobError::Ids(format!(
                "sid {}: an address or port set is empty (the signature could never match)",
                sig.sid
            )));
        }
    }
    viaduct_ids::check_signatures(&ids.signatures).map_err(|e| BlobError::Ids(e.to_string()))
}

impl Policy {
    /// Static routes: valid prefixes, each once; the learn section:
    /// ranges within their family, a bounded route count.
    fn check_routes(&self) -> Result<(), BlobError> {
        let bad = |p: &Prefix| p.len > p.max_len() || !p.host_bits_clear();
        for (i, r) in self.routes.iter().enumerate() {
            let what = || format!("route {i} ({}/{})", r.prefix.addr, r.prefix.len);
            if bad(&r.prefix) {
                return Err(BlobError::Route {
                    what: what(),
                    why: "prefix length beyond the family or host bits set",
                });
            }
            if self.routes[..i].iter().any(|o| o.prefix == r.prefix) {
                return Err(BlobError::Route {
                    what: what(),
                    why: "the prefix is routed twice",
                });
            }
        }
        if let Some(l) = &self.learn {
            if l.allow.is_empty() {
                return Err(BlobError::Route {
                    what: "learned routes".into(),
                    why: "no prefix range allowed",
                });
            }
            if !(1..=MAX_MAX_LEARNED_ROUTES).contains(&l.max_routes) {
                return Err(BlobError::Route {
                    what: format!("learned routes max {}", l.max_routes),
                    why: "between 1 and 2,000,000 routes",
                });
            }
            for a in &l.allow {
                if bad(&a.prefix)
                    || a.min_len < a.prefix.len
                    || a.min_len > a.max_len
                    || a.max_len > a.prefix.max_len()
                {
                    return Err(BlobError::Route {
                        what: format!(
                            "learned route range {}/{} ge {} le {}",
                            a.prefix.addr, a.prefix.len, a.min_len, a.max_len
                        ),
                        why:
                            "needs prefix length <= ge <= le <= the family's width and no host bits",
                    });
                }
            }
        }
        Ok(())
    }

    /// The IKE section: identities sendable, credentials well formed (lab
    /// keys of the right length, device names plain), proposals present,
    /// every peer's tunnels existing, between its addresses, without
    /// manual keys and keyed by no other peer, and every tunnel without
    /// manual keys keyed by a peer.
    fn check_ike(&self, ike: &IkeConfig) -> Result<(), BlobError> {
        let bad = |peer: &str, problem: String| {
            Err(BlobError::Ike {
                peer: peer.to_string(),
                problem,
            })
        };
        check_identity(&ike.local_id).or_else(|p| bad("", format!("our identity: {p}")))?;
        match &ike.private_key {
            Some(Credential::Lab(k)) if k.expose().len() != 32 => {
                return bad("", "a lab Ed25519 private key is a 32-byte seed".into())
            }
            Some(Credential::Device(name)) => {
                check_credential_name(name).or_else(|p| bad("", p))?
            }
            _ => {}
        }
        if ike.peers.len() > MAX_IKE_PEERS {
            return bad("", format!("at most {MAX_IKE_PEERS} peers"));
        }
        let mut names = HashSet::new();
        let mut keyed: HashSet<TunnelId> = HashSet::new();
        for p in &ike.peers {
            let name = p.name.as_str();
            check_str("IKE peer name", name)?;
            if name.is_empty() || !names.insert(name) {
                return bad(name, "peer names must be unique and not empty".into());
            }
            if !self.local.contains(&p.local) {
                return bad(name, format!("{} is not one of our addresses", p.local));
            }
            if p.local.is_ipv4() != p.remote.is_ipv4() {
                return bad(
                    name,
                    "our address and the peer's are of different families".into(),
                );
            }
            check_identity(&p.remote_id).or_else(|e| bad(name, format!("identity: {e}")))?;
            match &p.auth {
                IkeAuth::Psk(Credential::Lab(k)) if !(16..=1024).contains(&k.expose().len()) => {
                    return bad(name, "a lab PSK is 16 to 1024 bytes".into())
                }
                IkeAuth::Psk(Credential::Device(n)) if n == DEVICE_IDENTITY => {
                    return bad(
                        name,
                        format!("tpm:{DEVICE_IDENTITY} is the device identity key, not a PSK"),
                    )
                }
                IkeAuth::Psk(Credential::Device(n)) => {
                    check_credential_name(n).or_else(|e| bad(name, e))?
                }
                a if a.is_signature() && ike.private_key.is_none() => {
                    return bad(
                        name,
                        "signature authentication needs our private key".into(),
                    )
                }
                IkeAuth::EcdsaP256 { peer_public_key } if peer_public_key[0] != 4 => {
                    return bad(
                        name,
                        "an ECDSA P-256 peer key is an uncompressed point (04 || x || y)".into(),
                    )
                }
                _ => {}
            }
            if p.ike_proposals.is_empty() || p.ike_proposals.len() > MAX_PROPOSALS {
                return bad(name, format!("1 to {MAX_PROPOSALS} IKE proposals"));
            }
            if p.esp_proposals.is_empty() || p.esp_proposals.len() > MAX_PROPOSALS {
                return bad(name, format!("1 to {MAX_PROPOSALS} ESP proposals"));
            }
            if !(MIN_IKE_REKEY_SECONDS..=MAX_IKE_REKEY_SECONDS).contains(&p.ike_rekey_seconds) {
                return bad(
                    name,
                    format!("the IKE SA rekey time must be {MIN_IKE_REKEY_SECONDS} s to 30 days"),
                );
            }
            if p.dpd.delay_seconds > 3600 {
                return bad(
                    name,
                    "the DPD delay must be at most 3600 s (0: no liveness checks)".into(),
                );
            }
            if p.tunnels.is_empty() {
                return bad(name, "a peer keys at least one tunnel".into());
            }
            for id in &p.tunnels {
                let Some(t) = self.tunnels.iter().find(|t| t.id == *id) else {
                    return bad(name, format!("tunnel id {} does not exist", id.0));
                };
                if t.manual.is_some() {
                    return bad(name, format!("tunnel {:?} has manual keys", t.name));
                }
                if (t.local, t.remote) != (p.local, p.remote) {
                    return bad(
                        name,
                        format!("tunnel {:?} runs between other addresses", t.name),
                    );
                }
                if !keyed.insert(*id) {
                    return bad(name, format!("tunnel {:?} is keyed by two peers", t.name));
                }
            }
        }
        if let Some(t) = self
            .tunnels
            .iter()
            .find(|t| t.manual.is_none() && !keyed.contains(&t.id))
        {
            return bad(
                "",
                format!(
                    "tunnel {:?} has neither manual keys nor a peer to key it",
                    t.name
                ),
            );
        }
        Ok(())
    }

    /// Checks internal consistency: unique tunnel ids and names, SPD entries
    /// reference existing tunnels, inbound SPIs unique and not reserved, key
    /// lengths match the AEAD, no cipher key used by two SAs (both
    /// directions of a tunnel, or two tunnels), prefixes canonical, port ranges non-empty,
    /// outer DSCPs of 6 bits, TFC sizes increasing and in range, TCP flag
    /// matches only on TCP rules,
    /// tunnel addresses of one family with the local one among `local`,
    /// soft lifetimes not beyond hard ones, replay windows in range; the IKE
    /// section as [`Policy::check_ike`] says.
    pub fn validate(&self) -> Result<(), BlobError> {
        check_str("profile name", &self.profile_name)?;
        check_str("profile version", &self.profile_version)?;
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        let mut inbound_spis = HashSet::new();
        for t in &self.tunnels {
            check_str("tunnel name", &t.name)?;
            if !ids.insert(t.id) {
                return Err(BlobError::DuplicateTunnelId(t.id));
            }
            if !names.insert(t.name.as_str()) {
                return Err(BlobError::DuplicateName {
                    kind: "tunnel",
                    name: t.name.clone(),
                });
            }
            if t.local.is_ipv4() != t.remote.is_ipv4() {
                return Err(BlobError::FamilyMismatch {
                    context: format!("tunnel {:?} outer addresses", t.name),
                });
            }
            if !self.local.contains(&t.local) {
                return Err(BlobError::NotLocal {
                    tunnel: t.name.clone(),
                    addr: t.local,
                });
            }
            for (side, list) in [("local", &t.local_ts), ("remote", &t.remote_ts)] {
                if list.is_empty() {
                    return Err(BlobError::NoSelectors {
                        tunnel: t.name.clone(),
                        side,
                    });
                }
                for ts in list {
                    let ctx = || format!("tunnel {:?} {side} traffic selector", t.name);
                    check_prefix(&ts.prefix, &ctx)?;
                    check_ports(&ts.ports, &ctx)?;
                }
            }
            if !(MIN_REPLAY_WINDOW..=MAX_REPLAY_WINDOW).contains(&t.replay_window) {
                return Err(BlobError::ReplayWindow {
                    tunnel: t.name.clone(),
                    size: t.replay_window,
                    min: MIN_REPLAY_WINDOW,
                    max: MAX_REPLAY_WINDOW,
                });
            }
            check_limits(t)?;
            if t.outer_dscp > MAX_DSCP {
                return Err(BlobError::Dscp {
                    tunnel: t.name.clone(),
                    dscp: t.outer_dscp,
                });
            }
            check_tfc(t)?;
            if let Some(m) = &t.manual {
                check_sa(t, &m.outbound, "outbound", &mut inbound_spis)?;
                check_sa(t, &m.inbound, "inbound", &mut inbound_spis)?;
            }
        }
        check_key_reuse(&self.tunnels)?;
        // A name may appear once per address family: a profile rule that
        // names no prefix compiles to one entry for IPv4 and one for IPv6.
        let mut names = HashSet::new();
        for e in &self.spd {
            check_str("SPD entry name", &e.name)?;
            if !names.insert((e.name.as_str(), e.selector.src.addr.is_ipv4())) {
                return Err(BlobError::DuplicateName {
                    kind: "SPD entry",
                    name: e.name.clone(),
                });
            }
            check_selector(&e.selector, &|| format!("SPD entry {:?}", e.name))?;
            if let SpdAction::Protect(id) = e.action {
                if !ids.contains(&id) {
                    return Err(BlobError::UnknownTunnel {
                        entry: e.name.clone(),
                        tunnel: id,
                    });
                }
            }
        }
        // One profile rule compiles to consecutive rules of one name (an
        // address family each, a prefix of a set, a range of a port list):
        // a name may come back only right after itself.
        let mut names = HashSet::new();
        let mut previous: Option<&str> = None;
        for f in &self.filters {
            check_str("filter rule name", &f.name)?;
            let again = previous == Some(f.name.as_str());
            previous = Some(f.name.as_str());
            if !again && !names.insert(f.name.as_str()) {
                return Err(BlobError::DuplicateName {
                    kind: "filter rule",
                    name: f.name.clone(),
                });
            }
            check_selector(&f.selector, &|| format!("filter rule {:?}", f.name))?;
            let flags = f.tcp_flags;
            if flags.value & !flags.mask != 0 {
                return Err(BlobError::TcpFlags {
                    rule: f.name.clone(),
                    why: "requires flags it does not look at (value outside mask)",
                });
            }
            if !flags.is_any() && f.selector.protocol != Protocol::TCP {
                return Err(BlobError::TcpFlags {
                    rule: f.name.clone(),
                    why: "matches TCP flags but not protocol TCP (6)",
                });
            }
            if let Some(l) = &f.limit {
                if l.rate == 0 || l.burst == 0 || l.burst > 1_000_000 || l.rate > 1_000_000_000 {
                    return Err(BlobError::Conntrack {
                        what: format!("filter rule {:?}", f.name),
                        why: "a rate limit needs a rate of 1 to 1,000,000,000 and a burst of 1 to 1,000,000 packets",
                    });
                }
                if ![1, 60, 3600].contains(&l.per_seconds) {
                    return Err(BlobError::Conntrack {
                        what: format!("filter rule {:?}", f.name),
                        why: "a rate limit is per second, minute or hour",
                    });
                }
            }
            if let Some(t) = &f.timeouts {
                if t.iter().any(|v| *v == 0 || *v > MAX_FLOW_TIMEOUT) {
                    return Err(BlobError::Conntrack {
                        what: format!("filter rule {:?}", f.name),
                        why: "a timeout is 1 second to 1 year",
                    });
                }
            }
            if f.states.0 & !FilterStates::ALL_BITS != 0 {
                return Err(BlobError::Conntrack {
                    what: format!("filter rule {:?}", f.name),
                    why: "names an unknown connection state",
                });
            }
        }
        if !(1..=MAX_MAX_FLOWS).contains(&self.filter_max_flows) {
            return Err(BlobError::Conntrack {
                what: format!("filter_max_flows {}", self.filter_max_flows),
                why: "the connection table holds 1 to 4,000,000 flows",
            });
        }
        self.check_routes()?;
        if let Some(ids) = &self.ids {
            check_ids(ids)?;
        }
        if let Some(ike) = &self.ike {
            self.check_ike(ike)?;
        }
        let list_limit = u32::MAX as usize;
        for (what, len) in [
            ("local address list", self.local.len()),
            ("tunnel list", self.tunnels.len()),
            ("SPD", self.spd.len()),
            ("filter rule list", self.filters.len()),
        ] {
            if len > list_limit {
                return Err(BlobError::TooLong {
                    what,
                    len,
                    max: list_limit,
                });
            }
        }
        Ok(())
    }
}
