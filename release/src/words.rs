//! Policies and plans in words, item by item.
//!
//! Each thing an administrator recognises — an SPD entry, a tunnel, an IKE
//! peer and its proposals, a filter rule, a compartment, a service — becomes
//! an [`Item`]: a kind, a key that names it across builds, and labelled
//! fields in words (the profile's spelling, as `appliance policy show`
//! prints it). Two builds then compare item by item, field by field.
//!
//! Keys never appear in words: a lab key is a field's hidden part
//! ([`Field::secret`]), compared but not printed.

use std::fmt::Write as _;

use gateway_plan::{CompartmentPlan, Plan};
use policy_blob as blob;
use serde::Serialize;

/// What an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The policy's own settings (local addresses, IKE identity, filter default).
    PolicySettings,
    /// An SPD entry: its match is its key, its action the field.
    SpdEntry,
    /// A tunnel (SA pair).
    Tunnel,
    /// An IKE peer: addresses, identity, authentication, proposals.
    IkePeer,
    /// A filter rule.
    FilterRule,
    /// A static route of the router role (keyed by its destination).
    Route,
    /// An IDS signature (keyed by its sid).
    IdsSignature,
    /// The Viaduct and IKE process as the plan starts them.
    Viaduct,
    /// A personality compartment.
    Compartment,
    /// A service in a compartment.
    Service,
    /// How a boot is judged, and who may update the image.
    Boot,
}

impl Kind {
    /// Its name in text.
    pub fn words(self) -> &'static str {
        match self {
            Kind::PolicySettings => "policy",
            Kind::SpdEntry => "spd entry",
            Kind::Tunnel => "tunnel",
            Kind::IkePeer => "ike peer",
            Kind::FilterRule => "filter rule",
            Kind::Route => "route",
            Kind::IdsSignature => "ids signature",
            Kind::Viaduct => "viaduct",
            Kind::Compartment => "compartment",
            Kind::Service => "service",
            Kind::Boot => "boot",
        }
    }
}

/// One labelled value.
#[derive(Debug, Clone)]
pub struct Field {
    /// Its label.
    pub label: &'static str,
    /// Its value in words.
    pub text: String,
    /// Key material behind the value (compared, never shown).
    pub secret: Option<blob::KeyMaterial>,
}

impl Field {
    fn new(label: &'static str, text: impl Into<String>) -> Field {
        Field {
            label,
            text: text.into(),
            secret: None,
        }
    }
}

/// One item of a policy or a plan.
#[derive(Debug, Clone)]
pub struct Item {
    /// What it is.
    pub kind: Kind,
    /// What names it across builds.
    pub key: String,
    /// Its fields, in a fixed order.
    pub fields: Vec<Field>,
}

impl Item {
    fn new(kind: Kind, key: impl Into<String>) -> Item {
        Item {
            kind,
            key: key.into(),
            fields: Vec::new(),
        }
    }

    fn field(mut self, label: &'static str, text: impl Into<String>) -> Item {
        self.fields.push(Field::new(label, text));
        self
    }

    fn secret_field(
        mut self,
        label: &'static str,
        text: impl Into<String>,
        secret: Option<blob::KeyMaterial>,
    ) -> Item {
        self.fields.push(Field {
            label,
            text: text.into(),
            secret,
        });
        self
    }

    /// The whole item in words: `key: label value, label value`.
    pub fn words(&self) -> String {
        let fields: Vec<String> = self
            .fields
            .iter()
            .map(|f| format!("{} {}", f.label, f.text))
            .collect();
        if fields.is_empty() {
            self.key.clone()
        } else {
            format!("{}: {}", self.key, fields.join(", "))
        }
    }
}

/// A protocol number in words.
pub fn protocol(p: blob::Protocol) -> String {
    match p.0 {
        0 => "any protocol".into(),
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        n => format!("protocol {n}"),
    }
}

fn port_range(r: &blob::PortRange) -> Option<String> {
    if r.is_any() {
        None
    } else if r.start == r.end {
        Some(format!("port {}", r.start))
    } else {
        Some(format!("ports {}-{}", r.start, r.end))
    }
}

/// A selector in words: `10.1.0.0/24 -> 10.2.0.0/24 tcp dst port 443`.
pub fn selector(s: &blob::Selector) -> String {
    let mut out = format!("{} -> {} {}", s.src, s.dst, protocol(s.protocol));
    if let Some(p) = port_range(&s.src_ports) {
        let _ = write!(out, " src {p}");
    }
    if let Some(p) = port_range(&s.dst_ports) {
        let _ = write!(out, " dst {p}");
    }
    out
}

fn traffic_selectors(ts: &[blob::TrafficSelector]) -> String {
    if ts.is_empty() {
        return "none".into();
    }
    ts.iter()
        .map(|t| {
            let mut s = t.prefix.to_string();
            if t.protocol != blob::Protocol::ANY {
                let _ = write!(s, " {}", protocol(t.protocol));
            }
            if let Some(p) = port_range(&t.ports) {
                let _ = write!(s, " {p}");
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Seconds in the largest whole unit: `20m`, `1h`, `90s`.
pub fn duration(s: u64) -> String {
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Bytes in the largest whole binary unit: `4 MiB`, `1536 bytes`.
pub fn bytes(b: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if b >= size && b % size == 0 {
            return format!("{} {unit}", b / size);
        }
    }
    format!("{b} bytes")
}

fn limits(l: &blob::LifetimeLimits) -> String {
    let mut parts = Vec::new();
    if let Some(s) = l.seconds {
        parts.push(duration(s));
    }
    if let Some(b) = l.bytes {
        parts.push(bytes(b));
    }
    if let Some(p) = l.packets {
        parts.push(format!("{p} packets"));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" or ")
    }
}

fn tunnel_name(p: &blob::Policy, id: blob::TunnelId) -> String {
    p.tunnel(id)
        .map(|t| t.name.clone())
        .unwrap_or_else(|| format!("#{}", id.0))
}

fn credential_secret(c: &blob::Credential) -> Option<blob::KeyMaterial> {
    match c {
        blob::Credential::Lab(k) => Some(k.clone()),
        blob::Credential::Device(_) => None,
    }
}

/// A policy's items: its settings, SPD entries (keyed by name and match),
/// tunnels, IKE peers and filter rules (keyed by name, and by address
/// family where one profile rule became two).
pub fn policy_items(p: &blob::Policy) -> Vec<Item> {
    let mut items = Vec::new();
    let mut settings = Item::new(Kind::PolicySettings, "settings").field(
        "local addresses",
        p.local
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    if let Some(ike) = &p.ike {
        settings = settings.field("ike identity", ike.local_id.to_string());
        if let Some(k) = &ike.private_key {
            settings = settings.secret_field(
                "ike private key",
                policy::credential_text(k),
                credential_secret(k),
            );
        }
    }
    settings = settings.field(
        "filter default",
        format!(
            "{}{}",
            format!("{:?}", p.default_filter).to_lowercase(),
            if p.filter_default_log { ", logged" } else { "" }
        ),
    );
    if p.stateful() {
        settings = settings.field(
            "filter connection table",
            format!("{} flows", p.filter_max_flows),
        );
    }
    if let Some(l) = &p.learn {
        settings = settings
            .field(
                "learned routes allowed",
                l.allow
                    .iter()
                    .map(policy::range_text)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
            .field("learned routes max", l.max_routes.to_string())
            .field(
                "learned martians",
                if l.martians { "allowed" } else { "denied" },
            );
    }
    items.push(settings);
    for r in &p.routes {
        items.push(
            Item::new(Kind::Route, format!("{}/{}", r.prefix.addr, r.prefix.len)).field(
                "via",
                match r.via {
                    blob::RouteVia::Red => "red",
                    blob::RouteVia::Black => "black",
                },
            ),
        );
    }
    for sig in p.ids.iter().flat_map(|i| &i.signatures) {
        // Header, flow and dsize are compared through the signature's own
        // canonical encoding; the rest is shown.
        let whole = blob::Policy::new("", "")
            .with_ids(vec![sig.clone()])
            .digest()
            .to_hex();
        items.push(
            Item::new(Kind::IdsSignature, format!("sid {}", sig.sid))
                .field(
                    "does",
                    format!(
                        "{} {}",
                        policy::ids_action(sig.action),
                        policy::ids_proto(sig.proto)
                    ),
                )
                .field("rev", sig.rev.to_string())
                .field("message", sig.msg.clone())
                .field("contents", policy::ids_contents_text(sig))
                .field("definition", whole[..16].to_string()),
        );
    }
    for e in &p.spd {
        let action = match e.action {
            blob::SpdAction::Protect(id) => format!("protect in tunnel {}", tunnel_name(p, id)),
            blob::SpdAction::Bypass => "bypass (in clear)".into(),
            blob::SpdAction::Discard => "discard".into(),
        };
        items.push(
            Item::new(
                Kind::SpdEntry,
                format!("{} ({})", e.name, selector(&e.selector)),
            )
            .field("action", action),
        );
    }
    for t in &p.tunnels {
        let (keying, secret) = match &t.manual {
            Some(m) => {
                let mut k = m.outbound.key.expose().to_vec();
                k.extend_from_slice(m.inbound.key.expose());
                (
                    format!(
                        "manual keys (SPI out {}, in {})",
                        m.outbound.spi, m.inbound.spi
                    ),
                    Some(blob::KeyMaterial::new(k)),
                )
            }
            None => ("ike".to_string(), None),
        };
        items.push(
            Item::new(Kind::Tunnel, t.name.clone())
                .field("outer", format!("{} -> {}", t.local, t.remote))
                .field("local selectors", traffic_selectors(&t.local_ts))
                .field("remote selectors", traffic_selectors(&t.remote_ts))
                .field("cipher", t.aead.to_string())
                .field("esn", if t.esn { "on" } else { "off" })
                .field("replay window", t.replay_window.to_string())
                .field(
                    "encapsulation",
                    if t.udp_encap { "esp in udp" } else { "esp" },
                )
                .field("outer dscp", t.outer_dscp.to_string())
                .field(
                    "tfc padding",
                    if t.tfc_sizes.is_empty() {
                        "none".to_string()
                    } else {
                        t.tfc_sizes
                            .iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                )
                .field("rekey at", limits(&t.lifetimes.soft))
                .field("expires at", limits(&t.lifetimes.hard))
                .secret_field("keying", keying, secret),
        );
    }
    if let Some(ike) = &p.ike {
        for x in &ike.peers {
            let auth_secret = match &x.auth {
                blob::IkeAuth::Psk(c) => credential_secret(c),
                blob::IkeAuth::Ed25519 { .. } | blob::IkeAuth::EcdsaP256 { .. } => None,
            };
            items.push(
                Item::new(Kind::IkePeer, x.name.clone())
                    .field("outer", format!("{} -> {}", x.local, x.remote))
                    .field("remote id", x.remote_id.to_string())
                    .secret_field("auth", policy::auth_text(&x.auth), auth_secret)
                    .field(
                        "ike proposals",
                        x.ike_proposals
                            .iter()
                            .map(policy::ike_proposal_text)
                            .collect::<Vec<_>>()
                            .join(", "),
                    )
                    .field(
                        "esp proposals",
                        x.esp_proposals
                            .iter()
                            .map(|e| policy::esp_proposal_text(e, x.pfs))
                            .collect::<Vec<_>>()
                            .join(", "),
                    )
                    .field("ike rekey", duration(x.ike_rekey_seconds))
                    .field(
                        "dpd",
                        match x.dpd.delay_seconds {
                            0 => "off".to_string(),
                            d => format!(
                                "{} then {}",
                                duration(u64::from(d)),
                                policy::dpd_action_text(x.dpd.action)
                            ),
                        },
                    )
                    .field(
                        "tunnels",
                        x.tunnels
                            .iter()
                            .map(|id| tunnel_name(p, *id))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
            );
        }
    }
    for f in &p.filters {
        // A profile rule that names no prefix is one rule per address
        // family: its family tells them apart.
        let twice = p.filters.iter().filter(|g| g.name == f.name).count() > 1;
        let key = if twice {
            let family = if f.selector.src.addr.is_ipv4() {
                "ipv4"
            } else {
                "ipv6"
            };
            format!("{} ({family})", f.name)
        } else {
            f.name.clone()
        };
        let mut it = Item::new(Kind::FilterRule, key)
            .field(
                "direction",
                match f.direction {
                    blob::Direction::Outbound => "outbound (red -> black)",
                    blob::Direction::Inbound => "inbound (black -> red)",
                },
            )
            .field("match", selector(&f.selector));
        if !f.tcp_flags.is_any() {
            it = it.field("tcp flags", policy::tcp_flags_text(f.tcp_flags));
        }
        if !f.states.is_any() {
            it = it.field("state", f.states.names().join(", "));
        }
        if let Some(l) = &f.limit {
            it = it.field("limit", policy::limit_text(l));
        }
        if let Some(t) = &f.timeouts {
            it = it.field("timeouts", policy::timeouts_text(t));
        }
        if f.log {
            it = it.field("log", "yes");
        }
        items.push(it.field("action", format!("{:?}", f.action).to_lowercase()));
    }
    items
}

fn compartment(c: &CompartmentPlan) -> Item {
    let m = &c.nic_match;
    let nic_match = [
        m.pci.as_ref().map(|v| format!("pci {v}")),
        m.mac.as_ref().map(|v| format!("mac {v}")),
        m.driver.as_ref().map(|v| format!("driver {v}")),
        m.name.as_ref().map(|v| format!("name {v}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    Item::new(Kind::Compartment, c.side.as_str())
        .field("root", c.root.as_str())
        .field("uid base", c.uid_base.to_string())
        .field("memory limit", bytes(c.memory_max))
        .field("pids limit", c.pids_max.to_string())
        .field("nic", format!("{} ({nic_match})", c.nic))
        .field("setup", c.setup.as_str())
        .field(
            "socket families",
            c.socket_families
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )
}

/// A plan's items: the Viaduct (binaries, policy path, manual keys, device
/// credentials), each compartment and each service. The profile identity
/// and the policy digest are left out (reported on their own), as are the
/// kernel modules (the manifest's kernel part lists them).
pub fn plan_items(p: &Plan) -> Vec<Item> {
    let mut viaduct = Item::new(Kind::Viaduct, "viaduct")
        .field("binary", p.viaduct.as_str())
        .field("policy path", p.policy_path.as_str())
        .field("manual keys", p.manual_keys.len().to_string());
    match &p.ike {
        Some(ike) => {
            viaduct = viaduct.field("ike binary", ike.binary.as_str()).field(
                "device credentials",
                if ike.credentials.is_empty() {
                    "none".to_string()
                } else {
                    ike.credentials
                        .iter()
                        .map(|c| format!("tpm:{}", c.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            )
        }
        None => viaduct = viaduct.field("ike binary", "none"),
    }
    let viaduct = viaduct.field(
        "routes from black",
        match &p.fpm {
            Some(f) => format!("FPM socket 127.0.0.1:{} in black", f.port),
            None => "none".to_string(),
        },
    );
    let boot = Item::new(Kind::Boot, "boot and updates")
        .field(
            "judged",
            match &p.boot_assessment {
                Some(b) if b.tunnels > 0 => format!(
                    "good once ready with {} tunnel(s) keyed, within {}",
                    b.tunnels,
                    duration(u64::from(b.timeout_s))
                ),
                Some(b) => format!(
                    "good once ready, within {}",
                    duration(u64::from(b.timeout_s))
                ),
                None => "not judged (one slot)".to_string(),
            },
        )
        .field(
            "updates",
            match &p.update {
                Some(u) => format!(
                    "bundles signed by {} on port {}, {} boot tries",
                    update_bundle::fingerprint(&u.release_key),
                    u.port,
                    u.tries
                ),
                None => "none (no release key)".to_string(),
            },
        );
    let mut items = vec![viaduct, boot];
    for c in &p.compartments {
        items.push(compartment(c));
        for s in &c.services {
            items.push(
                Item::new(Kind::Service, format!("{} {}", c.side, s.name))
                    .field(
                        "restart",
                        match s.restart {
                            gateway_plan::Restart::Always => "always",
                            gateway_plan::Restart::OnFailure => "on failure",
                            gateway_plan::Restart::Never => "never",
                        },
                    )
                    .field(
                        "capabilities",
                        if s.caps.is_empty() {
                            "none".to_string()
                        } else {
                            s.caps
                                .iter()
                                .map(|c| c.name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                    )
                    .field("command", s.argv.join(" ")),
            );
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_the_largest_whole_one() {
        assert_eq!(duration(1200), "20m");
        assert_eq!(duration(3600), "1h");
        assert_eq!(duration(90), "90s");
        assert_eq!(bytes(4 << 20), "4 MiB");
        assert_eq!(bytes(1536), "1536 bytes");
        assert_eq!(bytes(3 << 10), "3 KiB");
    }

    #[test]
    fn a_selector_reads_as_the_profile_would_say_it() {
        use std::net::{IpAddr, Ipv4Addr};
        let net = |a, l| blob::Prefix::new(IpAddr::V4(Ipv4Addr::new(10, a, 0, 0)), l);
        let mut s = blob::Selector::between(net(1, 24), net(2, 24));
        assert_eq!(selector(&s), "10.1.0.0/24 -> 10.2.0.0/24 any protocol");
        s.protocol = blob::Protocol::TCP;
        s.dst_ports = blob::PortRange::single(23);
        assert_eq!(selector(&s), "10.1.0.0/24 -> 10.2.0.0/24 tcp dst port 23");
    }
}
