//! The policy data model: plain structs with public fields, built by the
//! compiler, encoded with [`Policy::encode`], decoded and validated with
//! [`Policy::decode`]. Nothing here panics.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use zeroize::Zeroize;

/// SHA-256 digest of an encoded policy (see the crate docs for what it covers).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Lower-case hex form.
    pub fn to_hex(&self) -> String {
        use fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Anti-rollback security version of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SecurityVersion(pub u64);

/// Identifier of a tunnel within a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TunnelId(pub u32);

impl fmt::Display for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// IPsec Security Parameter Index (RFC 4303 §2.1). Values 0..=255 are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Spi(pub u32);

impl fmt::Display for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// IP protocol number (IANA); 0 means "any" in selectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Protocol(pub u8);

impl Protocol {
    /// Matches every protocol.
    pub const ANY: Protocol = Protocol(0);
    /// ICMP.
    pub const ICMP: Protocol = Protocol(1);
    /// TCP.
    pub const TCP: Protocol = Protocol(6);
    /// UDP.
    pub const UDP: Protocol = Protocol(17);
    /// ICMPv6.
    pub const ICMPV6: Protocol = Protocol(58);

    /// Whether a packet with protocol `p` matches this selector protocol.
    pub fn matches(self, p: u8) -> bool {
        self.0 == 0 || self.0 == p
    }
}

/// An IP prefix (address with zero host bits + length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length in bits (≤ 32 for IPv4, ≤ 128 for IPv6).
    pub len: u8,
}

impl Prefix {
    /// A prefix; checked by [`Policy::validate`], not here.
    pub fn new(addr: IpAddr, len: u8) -> Self {
        Prefix { addr, len }
    }

    /// 0.0.0.0/0.
    pub fn any_v4() -> Self {
        Prefix::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    }

    /// ::/0.
    pub fn any_v6() -> Self {
        Prefix::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
    }

    /// A host prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Prefix::new(addr, len)
    }

    /// Address width of the family in bits.
    pub fn max_len(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// Whether `ip` lies inside the prefix (false for another family; false
    /// if the prefix length is invalid).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                v4_mask(self.len).is_some_and(|m| u32::from(a) & m == u32::from(n) & m)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                v6_mask(self.len).is_some_and(|m| u128::from(a) & m == u128::from(n) & m)
            }
            _ => false,
        }
    }

    /// Whether the address has no bits set beyond the prefix length.
    pub fn host_bits_clear(&self) -> bool {
        match self.addr {
            IpAddr::V4(n) => v4_mask(self.len).is_some_and(|m| u32::from(n) & !m == 0),
            IpAddr::V6(n) => v6_mask(self.len).is_some_and(|m| u128::from(n) & !m == 0),
        }
    }
}

fn v4_mask(len: u8) -> Option<u32> {
    match len {
        0 => Some(0),
        1..=32 => Some(u32::MAX << (32 - u32::from(len))),
        _ => None,
    }
}

fn v6_mask(len: u8) -> Option<u128> {
    match len {
        0 => Some(0),
        1..=128 => Some(u128::MAX << (128 - u32::from(len))),
        _ => None,
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Inclusive port range; `PortRange::ANY` is 0-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange {
        start: 0,
        end: u16::MAX,
    };

    /// A single port.
    pub fn single(p: u16) -> Self {
        PortRange { start: p, end: p }
    }

    /// Whether the range covers every port.
    pub fn is_any(&self) -> bool {
        *self == Self::ANY
    }

    /// Whether `port` is inside the range.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

/// An IPsec traffic selector (RFC 7296 §3.13.1 style): one side of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// Address prefix.
    pub prefix: Prefix,
    /// Protocol (0 = any).
    pub protocol: Protocol,
    /// Port range (TCP/UDP/SCTP; ignored for other protocols unless not ANY).
    pub ports: PortRange,
}

impl TrafficSelector {
    /// Selector for a whole prefix, any protocol, any port.
    pub fn prefix(prefix: Prefix) -> Self {
        TrafficSelector {
            prefix,
            protocol: Protocol::ANY,
            ports: PortRange::ANY,
        }
    }
}

/// ESP AEAD transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aead {
    /// AES-GCM with 128-bit key and 16-byte ICV (RFC 4106).
    Aes128Gcm16,
    /// AES-GCM with 256-bit key and 16-byte ICV (RFC 4106).
    Aes256Gcm16,
    /// ChaCha20-Poly1305 (RFC 7634).
    ChaCha20Poly1305,
}

impl Aead {
    /// Length of the cipher key in bytes (without salt).
    pub fn key_len(self) -> usize {
        match self {
            Aead::Aes128Gcm16 => 16,
            Aead::Aes256Gcm16 | Aead::ChaCha20Poly1305 => 32,
        }
    }

    /// Length of the salt appended to the key (RFC 4106 §8.1, RFC 7634 §4).
    pub const SALT_LEN: usize = 4;

    /// Length of the key material: key || salt.
    pub fn key_material_len(self) -> usize {
        self.key_len() + Self::SALT_LEN
    }
}

impl fmt::Display for Aead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Aead::Aes128Gcm16 => "aes128gcm16",
            Aead::Aes256Gcm16 => "aes256gcm16",
            Aead::ChaCha20Poly1305 => "chacha20poly1305",
        })
    }
}

/// Secret key material (key || salt). Zeroized on drop; `Debug` prints only
/// the length. Equality is constant-time.
#[derive(Clone, Default)]
pub struct KeyMaterial(Vec<u8>);

impl KeyMaterial {
    /// Takes ownership of the bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        KeyMaterial(bytes)
    }

    /// Copies the bytes.
    pub fn from_slice(bytes: &[u8]) -> Self {
        KeyMaterial(bytes.to_vec())
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PartialEq for KeyMaterial {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for KeyMaterial {}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial(<{} bytes redacted>)", self.0.len())
    }
}

/// One manually keyed SA (lab only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualSa {
    /// SPI carried in the ESP header.
    pub spi: Spi,
    /// Key || salt.
    pub key: KeyMaterial,
}

/// Manual keying for both directions of a tunnel (lab only; IKEv2 otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualKeys {
    /// SA used to send (the peer's inbound SA).
    pub outbound: ManualSa,
    /// SA used to receive (the peer's outbound SA).
    pub inbound: ManualSa,
}

/// Lifetime limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LifetimeLimits {
    /// Bytes of inner payload.
    pub bytes: Option<u64>,
    /// Packets.
    pub packets: Option<u64>,
    /// Seconds since the SA was installed.
    pub seconds: Option<u64>,
}

/// Soft (rekey warning) and hard (SA unusable) lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetimes {
    /// Soft limits: crossing one raises an event.
    pub soft: LifetimeLimits,
    /// Hard limits: crossing one makes the SA unusable.
    pub hard: LifetimeLimits,
}

/// An IPsec tunnel (a pair of SAs between two gateways).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// Unique id, referenced by SPD entries.
    pub id: TunnelId,
    /// Unique name, for logs.
    pub name: String,
    /// This gateway's outer address (must be in [`Policy::local`]).
    pub local: IpAddr,
    /// The peer's outer address.
    pub remote: IpAddr,
    /// Selectors for the inner addresses on our side.
    pub local_ts: Vec<TrafficSelector>,
    /// Selectors for the inner addresses on the peer's side.
    pub remote_ts: Vec<TrafficSelector>,
    /// ESP transform.
    pub aead: Aead,
    /// Extended (64-bit) sequence numbers.
    pub esn: bool,
    /// SA lifetimes.
    pub lifetimes: Lifetimes,
    /// Anti-replay window in packets.
    pub replay_window: u32,
    /// Manual keys (lab); `None` means keys come from IKEv2.
    pub manual: Option<ManualKeys>,
    /// UDP encapsulation (RFC 3948).
    pub udp_encap: bool,
    /// DSCP (0..=63) of the outer header of every ESP packet of this tunnel.
    /// Nothing of the inner packet's DSCP or ECN is copied out (RFC 4301
    /// §5.1.2.1 lets the policy decide; RFC 6040 compatibility mode sets
    /// the outer ECN to Not-ECT): red cannot write a bit of the outer
    /// header.
    pub outer_dscp: u8,
    /// Traffic-flow-confidentiality padding (RFC 4303 §2.4): inner packet
    /// sizes in bytes, strictly increasing. A packet is padded inside the
    /// encryption to the first size that holds it; longer packets are not
    /// padded. Empty: no padding.
    pub tfc_sizes: Vec<u16>,
}

/// A five-tuple selector on inner packets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    /// Source prefix.
    pub src: Prefix,
    /// Destination prefix.
    pub dst: Prefix,
    /// Protocol (0 = any).
    pub protocol: Protocol,
    /// Source ports.
    pub src_ports: PortRange,
    /// Destination ports.
    pub dst_ports: PortRange,
}

impl Selector {
    /// Selector matching every IPv4 packet.
    pub fn any_v4() -> Self {
        Selector::between(Prefix::any_v4(), Prefix::any_v4())
    }

    /// Selector matching every IPv6 packet.
    pub fn any_v6() -> Self {
        Selector::between(Prefix::any_v6(), Prefix::any_v6())
    }

    /// Any protocol and port between two prefixes.
    pub fn between(src: Prefix, dst: Prefix) -> Self {
        Selector {
            src,
            dst,
            protocol: Protocol::ANY,
            src_ports: PortRange::ANY,
            dst_ports: PortRange::ANY,
        }
    }
}

/// What the SPD does with a matching outbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpdAction {
    /// Encrypt into the tunnel.
    Protect(TunnelId),
    /// Forward in clear.
    Bypass,
    /// Drop.
    Discard,
}

/// One SPD entry (first match wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpdEntry {
    /// Name, for logs and counters.
    pub name: String,
    /// Matching inner packets.
    pub selector: Selector,
    /// What to do.
    pub action: SpdAction,
}

/// Direction of a filter rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Red → black (inner packet, before the SPD).
    Outbound,
    /// Black → red (inner packet, after decryption).
    Inbound,
}

/// Verdict of a filter rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterAction {
    /// Let the packet continue.
    Accept,
    /// Drop it.
    Drop,
}

/// A match on the TCP flags byte: `flags & mask == value` (nftables'
/// `tcp flags & (syn | ack) == ack`, iptables' `--tcp-flags SYN,ACK ACK`).
/// The flags in `mask` must be set where `value` has them and clear where
/// it does not; the others are not looked at. [`TcpFlags::ANY`] (mask 0)
/// matches every packet and does not need a TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags {
    /// The flags looked at.
    pub mask: u8,
    /// Their required values (a subset of `mask`).
    pub value: u8,
}

impl TcpFlags {
    /// No condition on the flags.
    pub const ANY: TcpFlags = TcpFlags { mask: 0, value: 0 };
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;

    /// Whether there is no condition.
    pub fn is_any(self) -> bool {
        self.mask == 0
    }

    /// Whether a TCP header's flags byte satisfies the match.
    pub fn matches(self, flags: u8) -> bool {
        flags & self.mask == self.value
    }
}

/// The connection-tracking states a filter rule applies to, a bit each
/// ([`FilterStates::NEW`] …); [`FilterStates::ANY`] (no bit): every packet,
/// whatever its state. A policy with any rule naming states tracks
/// connections (the Viaduct's `conntrack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FilterStates(pub u8);

impl FilterStates {
    /// No condition on the state.
    pub const ANY: FilterStates = FilterStates(0);
    /// The packet may open a flow (none tracked for it).
    pub const NEW: u8 = 0x01;
    /// It belongs to a tracked flow.
    pub const ESTABLISHED: u8 = 0x02;
    /// An ICMP error about a tracked flow.
    pub const RELATED: u8 = 0x04;
    /// Neither opens nor belongs to a flow.
    pub const INVALID: u8 = 0x08;
    /// Every defined bit.
    pub const ALL_BITS: u8 = 0x0f;
    /// The names, in bit order.
    pub const NAMES: [(&'static str, u8); 4] = [
        ("new", Self::NEW),
        ("established", Self::ESTABLISHED),
        ("related", Self::RELATED),
        ("invalid", Self::INVALID),
    ];

    /// Whether there is no condition.
    pub fn is_any(self) -> bool {
        self.0 == 0
    }

    /// Whether a packet in state `bit` (one of the constants) matches.
    pub fn matches(self, bit: u8) -> bool {
        self.0 == 0 || self.0 & bit != 0
    }

    /// The names of the states it holds, in bit order.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(_, b)| self.0 & b != 0)
            .map(|(n, _)| *n)
            .collect()
    }
}

/// A rule's rate limit (nftables' `limit rate`): the rule matches at most
/// `rate` packets per `per_seconds`, in bursts of up to `burst` (a token
/// bucket); the packets beyond it go on to the next rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Packets per period.
    pub rate: u32,
    /// The period: 1, 60 or 3600 seconds.
    pub per_seconds: u32,
    /// The bucket's size, in packets.
    pub burst: u32,
}

/// The names of the connection timeouts, in the order a rule's timeouts
/// hold them (pf's, with `_`).
pub const FLOW_TIMEOUT_NAMES: [&str; 14] = [
    "tcp_first",
    "tcp_opening",
    "tcp_established",
    "tcp_closing",
    "tcp_finwait",
    "tcp_closed",
    "udp_first",
    "udp_single",
    "udp_multiple",
    "icmp_first",
    "icmp_error",
    "other_first",
    "other_single",
    "other_multiple",
];

/// pf's default timeouts (`pfctl -s timeouts`), in seconds, in the order
/// of [`FLOW_TIMEOUT_NAMES`].
pub const DEFAULT_FLOW_TIMEOUTS: [u32; 14] =
    [120, 30, 86_400, 900, 45, 90, 60, 30, 60, 20, 10, 60, 30, 60];

/// The longest timeout a rule may give (one year).
pub const MAX_FLOW_TIMEOUT: u32 = 31_536_000;

/// Connection-table size when the profile names none: pf's default state
/// limit.
pub const DEFAULT_MAX_FLOWS: u32 = 100_000;
/// The largest connection table a policy may ask for.
pub const MAX_MAX_FLOWS: u32 = 4_000_000;

/// A filter rule (first match in order wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRule {
    /// Name, for logs.
    pub name: String,
    /// Direction it applies to.
    pub direction: Direction,
    /// Matching inner packets.
    pub selector: Selector,
    /// TCP flags the packet must have ([`TcpFlags::ANY`]: no condition);
    /// anything but ANY needs `selector.protocol` TCP.
    pub tcp_flags: TcpFlags,
    /// Connection-tracking states it applies to ([`FilterStates::ANY`]:
    /// any).
    pub states: FilterStates,
    /// Its rate limit, if any.
    pub limit: Option<RateLimit>,
    /// The timeouts of the flows it admits (all 14, in the order of
    /// [`FLOW_TIMEOUT_NAMES`]), if not the defaults.
    pub timeouts: Option<[u32; 14]>,
    /// Whether the packets it decides are logged.
    pub log: bool,
    /// Verdict.
    pub action: FilterAction,
}

/// Where a static route sends cleartext (role `router`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteVia {
    /// To the red personality (the private side).
    Red,
    /// To the black personality (the internet side).
    Black,
}

/// A static route of the router role: cleartext to `prefix` goes to `via`
/// (longest prefix wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    /// Destination.
    pub prefix: Prefix,
    /// Where it goes.
    pub via: RouteVia,
}

/// A prefix range that routes learned from black may fall in: `prefix`
/// itself or any more specific prefix of length `min_len..=max_len`
/// (FRR's `ip prefix-list … ge … le …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixRange {
    /// The covering prefix.
    pub prefix: Prefix,
    /// Shortest length admitted (≥ `prefix.len`).
    pub min_len: u8,
    /// Longest length admitted (≤ the family's width).
    pub max_len: u8,
}

impl PrefixRange {
    /// Whether the route `p` falls in the range.
    pub fn admits(&self, p: &Prefix) -> bool {
        (self.min_len..=self.max_len).contains(&p.len) && self.prefix.contains(p.addr)
    }
}

/// Which routes black's routing daemon may install in the Viaduct (role
/// `router`; read from FRR's forwarding table over FPM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnPolicy {
    /// A learned route is admitted only inside one of these.
    pub allow: Vec<PrefixRange>,
    /// The most learned routes held at once; beyond, new ones are refused.
    pub max_routes: u32,
    /// Whether special-purpose prefixes (RFC 6890: private, loopback,
    /// link-local, documentation, multicast, ...) may be admitted.
    pub martians: bool,
}

/// Default for [`LearnPolicy::max_routes`].
pub const DEFAULT_MAX_LEARNED_ROUTES: u32 = 10_000;
/// Upper bound of [`LearnPolicy::max_routes`].
pub const MAX_MAX_LEARNED_ROUTES: u32 = 2_000_000;

/// The IDS role's signatures (role `ids`): compiled from the profile's
/// rules on the build host; the Viaduct never reads rule text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdsPolicy {
    /// The signatures, in rule order (sids unique).
    pub signatures: Vec<viaduct_ids::Signature>,
}

/// The compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Profile it was compiled from.
    pub profile_name: String,
    /// Profile version string.
    pub profile_version: String,
    /// Anti-rollback version.
    pub security_version: SecurityVersion,
    /// This gateway's outer addresses.
    pub local: Vec<IpAddr>,
    /// Tunnels.
    pub tunnels: Vec<Tunnel>,
    /// Outbound SPD, first match wins.
    pub spd: Vec<SpdEntry>,
    /// Filter rules, first match wins.
    pub filters: Vec<FilterRule>,
    /// Verdict when no filter rule matches.
    pub default_filter: FilterAction,
    /// The connection table's size, when a rule names states.
    pub filter_max_flows: u32,
    /// Whether the packets the default decides are logged.
    pub filter_default_log: bool,
    /// Static routes (role `router`); empty with no `learn`: cleartext is
    /// not routed by the Viaduct.
    pub routes: Vec<StaticRoute>,
    /// Routes black may install (role `router`).
    pub learn: Option<LearnPolicy>,
    /// Payload inspection (role `ids`).
    pub ids: Option<IdsPolicy>,
    /// IKEv2, if any tunnel is keyed by it.
    pub ike: Option<IkeConfig>,
}

impl Policy {
    /// An empty policy (no tunnels, SPD discards everything by absence,
    /// default filter accept) for the builder-style API.
    pub fn new(profile_name: impl Into<String>, profile_version: impl Into<String>) -> Self {
        Policy {
            profile_name: profile_name.into(),
            profile_version: profile_version.into(),
            security_version: SecurityVersion(0),
            local: Vec::new(),
            tunnels: Vec::new(),
            spd: Vec::new(),
            filters: Vec::new(),
            default_filter: FilterAction::Accept,
            filter_max_flows: DEFAULT_MAX_FLOWS,
            filter_default_log: false,
            routes: Vec::new(),
            learn: None,
            ids: None,
            ike: None,
        }
    }

    /// Sets the security version.
    pub fn with_security_version(mut self, v: u64) -> Self {
        self.security_version = SecurityVersion(v);
        self
    }

    /// Adds a local outer address.
    pub fn with_local(mut self, addr: IpAddr) -> Self {
        self.local.push(addr);
        self
    }

    /// Adds a tunnel.
    pub fn with_tunnel(mut self, t: Tunnel) -> Self {
        self.tunnels.push(t);
        self
    }

    /// Appends an SPD entry (after the existing ones).
    pub fn with_spd(
        mut self,
        name: impl Into<String>,
        selector: Selector,
        action: SpdAction,
    ) -> Self {
        self.spd.push(SpdEntry {
            name: name.into(),
            selector,
            action,
        });
        self
    }

    /// Appends a filter rule.
    pub fn with_filter(
        mut self,
        name: impl Into<String>,
        direction: Direction,
        selector: Selector,
        action: FilterAction,
    ) -> Self {
        self.filters.push(FilterRule {
            name: name.into(),
            direction,
            selector,
            tcp_flags: TcpFlags::ANY,
            states: FilterStates::ANY,
            limit: None,
            timeouts: None,
            log: false,
            action,
        });
        self
    }

    /// Appends a filter rule that also matches TCP flags.
    pub fn with_tcp_filter(
        mut self,
        name: impl Into<String>,
        direction: Direction,
        selector: Selector,
        tcp_flags: TcpFlags,
        action: FilterAction,
    ) -> Self {
        self.filters.push(FilterRule {
            name: name.into(),
            direction,
            selector,
            tcp_flags,
            states: FilterStates::ANY,
            limit: None,
            timeouts: None,
            log: false,
            action,
        });
        self
    }

    /// Makes the last filter rule apply only to packets in `states`.
    pub fn with_states(mut self, states: FilterStates) -> Self {
        if let Some(f) = self.filters.last_mut() {
            f.states = states;
        }
        self
    }

    /// Gives the last filter rule a rate limit.
    pub fn with_limit(mut self, limit: RateLimit) -> Self {
        if let Some(f) = self.filters.last_mut() {
            f.limit = Some(limit);
        }
        self
    }

    /// Gives the last filter rule its own flow timeouts.
    pub fn with_timeouts(mut self, timeouts: [u32; 14]) -> Self {
        if let Some(f) = self.filters.last_mut() {
            f.timeouts = Some(timeouts);
        }
        self
    }

    /// Makes the last filter rule log the packets it decides.
    pub fn with_log(mut self) -> Self {
        if let Some(f) = self.filters.last_mut() {
            f.log = true;
        }
        self
    }

    /// Makes the default log the packets it decides.
    pub fn with_default_log(mut self) -> Self {
        self.filter_default_log = true;
        self
    }

    /// Appends a static route.
    pub fn with_route(mut self, prefix: Prefix, via: RouteVia) -> Self {
        self.routes.push(StaticRoute { prefix, via });
        self
    }

    /// Sets the IDS role's signatures.
    pub fn with_ids(mut self, signatures: Vec<viaduct_ids::Signature>) -> Self {
        self.ids = Some(IdsPolicy { signatures });
        self
    }

    /// Sets the routes black may install (role `router`).
    pub fn with_learn(mut self, learn: LearnPolicy) -> Self {
        self.learn = Some(learn);
        self
    }

    /// Whether the Viaduct routes cleartext (role `router`): a packet
    /// crosses in clear only where a route sends it.
    pub fn routed(&self) -> bool {
        !self.routes.is_empty() || self.learn.is_some()
    }

    /// Sets the connection table's size.
    pub fn with_max_flows(mut self, n: u32) -> Self {
        self.filter_max_flows = n;
        self
    }

    /// Whether a rule names connection-tracking states (the Viaduct then
    /// tracks connections).
    pub fn stateful(&self) -> bool {
        self.filters.iter().any(|f| !f.states.is_any())
    }

    /// Whether the Viaduct keeps a connection table: for stateful filter
    /// rules, and for the IDS (its `flow` conditions and its streams follow
    /// the tracked connections).
    pub fn tracks_connections(&self) -> bool {
        self.stateful() || self.ids.is_some()
    }

    /// Sets the default filter verdict.
    pub fn with_default_filter(mut self, action: FilterAction) -> Self {
        self.default_filter = action;
        self
    }

    /// Looks a tunnel up by id.
    pub fn tunnel(&self, id: TunnelId) -> Option<&Tunnel> {
        self.tunnels.iter().find(|t| t.id == id)
    }
}

impl Tunnel {
    /// A tunnel with defaults: ESN on, window 1024, no lifetimes, no manual
    /// keys, no UDP encapsulation, outer DSCP 0, no TFC padding.
    pub fn new(
        id: u32,
        name: impl Into<String>,
        local: IpAddr,
        remote: IpAddr,
        aead: Aead,
    ) -> Self {
        Tunnel {
            id: TunnelId(id),
            name: name.into(),
            local,
            remote,
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
            aead,
            esn: true,
            lifetimes: Lifetimes::default(),
            replay_window: 1024,
            manual: None,
            udp_encap: false,
            outer_dscp: 0,
            tfc_sizes: Vec::new(),
        }
    }

    /// Adds a local traffic selector.
    pub fn with_local_ts(mut self, ts: TrafficSelector) -> Self {
        self.local_ts.push(ts);
        self
    }

    /// Adds a remote traffic selector.
    pub fn with_remote_ts(mut self, ts: TrafficSelector) -> Self {
        self.remote_ts.push(ts);
        self
    }

    /// Sets manual keys.
    pub fn with_manual_keys(mut self, outbound: ManualSa, inbound: ManualSa) -> Self {
        self.manual = Some(ManualKeys { outbound, inbound });
        self
    }
}

// ------------------------------------------------------------------ IKEv2

/// IKEv2 configuration: who we are and how each peer's tunnels are keyed.
/// Tunnels without manual keys are keyed by the peer that names them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IkeConfig {
    /// Our identity (IDi/IDr).
    pub local_id: IkeIdentity,
    /// Our signing key, for peers authenticated by signature.
    pub private_key: Option<Credential>,
    /// The peers.
    pub peers: Vec<IkePeer>,
}

/// An IKE identity (RFC 7296 §3.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IkeIdentity {
    /// ID_FQDN.
    Fqdn(String),
    /// ID_IPV4_ADDR or ID_IPV6_ADDR.
    Addr(IpAddr),
}

impl Default for IkeIdentity {
    fn default() -> Self {
        IkeIdentity::Fqdn(String::new())
    }
}

impl fmt::Display for IkeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IkeIdentity::Fqdn(s) => write!(f, "{s}"),
            IkeIdentity::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Carried in the blob (lab images only).
    Lab(KeyMaterial),
    /// Provisioned on the device under this name (`tpm:<name>`): the init
    /// resolves it and hands it to IKE over a descriptor; the blob never
    /// holds it.
    Device(String),
}

/// How a peer and we authenticate (the same method both ways).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IkeAuth {
    /// A pre-shared key.
    Psk(Credential),
    /// The peer signs with Ed25519 (RFC 8420); we sign with
    /// [`IkeConfig::private_key`]. The peer's public key is pinned here.
    Ed25519 {
        /// The peer's public key.
        peer_public_key: [u8; 32],
    },
    /// The peer signs with ECDSA P-256 and SHA-256 (RFC 7427) — another
    /// gateway's device identity key, or strongSwan's ECDSA key; we sign with
    /// [`IkeConfig::private_key`]. The peer's key is pinned here as its
    /// uncompressed point `04 || x || y`.
    EcdsaP256 {
        /// The peer's public key.
        peer_public_key: [u8; 65],
    },
}

impl IkeAuth {
    /// Whether the peer authenticates by signature (and we by
    /// [`IkeConfig::private_key`]).
    pub fn is_signature(&self) -> bool {
        !matches!(self, IkeAuth::Psk(_))
    }
}

/// The name of [`Credential::Device`] that is not a provisioned secret but the
/// device identity key: an ECDSA P-256 key generated in the TPM at the first
/// boot, which never leaves it (`private_key = "tpm:identity"`). The init hands
/// the IKE process a signer for it, never the key; it is never a PSK.
pub const DEVICE_IDENTITY: &str = "identity";

/// PRF of an IKE proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IkePrf {
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-384.
    Sha384,
    /// HMAC-SHA-512.
    Sha512,
}

/// Key exchange method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeGroup {
    /// Curve25519 (RFC 8031).
    X25519,
    /// 256-bit random ECP group (RFC 5903).
    Ecp256,
}

/// An IKE SA proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IkeProposal {
    /// Encryption of the SK payload.
    pub aead: Aead,
    /// Pseudorandom function.
    pub prf: IkePrf,
    /// Key exchange.
    pub group: KeGroup,
}

/// An ESP proposal for the peer's CHILD SAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspProposal {
    /// The ESP transform.
    pub aead: Aead,
    /// Extended sequence numbers.
    pub esn: bool,
}

/// One IKE peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkePeer {
    /// Unique name, for logs and credentials.
    pub name: String,
    /// Our outer address (one of [`Policy::local`]).
    pub local: IpAddr,
    /// The peer's outer address.
    pub remote: IpAddr,
    /// The identity the peer must prove.
    pub remote_id: IkeIdentity,
    /// Authentication.
    pub auth: IkeAuth,
    /// IKE proposals, most preferred first.
    pub ike_proposals: Vec<IkeProposal>,
    /// ESP proposals, most preferred first.
    pub esp_proposals: Vec<EspProposal>,
    /// Key exchange for CHILD SAs created or rekeyed by CREATE_CHILD_SA.
    pub pfs: Option<KeGroup>,
    /// Rekey the IKE SA after this many seconds.
    pub ike_rekey_seconds: u64,
    /// Dead-peer detection.
    pub dpd: Dpd,
    /// The tunnels this peer's CHILD SAs key (their ids).
    pub tunnels: Vec<TunnelId>,
}

/// Dead-peer detection of an IKE peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dpd {
    /// Seconds of silence before a liveness check (1 to 3600); 0: none.
    pub delay_seconds: u32,
    /// What to do when the peer is dead.
    pub action: DpdAction,
}

impl Default for Dpd {
    fn default() -> Self {
        Dpd {
            delay_seconds: 30,
            action: DpdAction::Restart,
        }
    }
}

/// What to do when an IKE peer is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpdAction {
    /// The initiating side starts again, with back-off and jitter.
    Restart,
    /// The tunnel stays down until the peer initiates.
    Clear,
}
