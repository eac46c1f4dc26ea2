//! The validated profile: what every builder downstream uses. Every value
//! here has passed validation, so builders do not re-check it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Serialize, Serializer};
use zeroize::Zeroize;

use crate::algo::{Aead, EspProposal, IkeProposal};
use crate::net::{IfAddr, PortRange, Prefix, TrafficSelector};
use crate::units::{ByteSize, Seconds};

/// A validated appliance profile.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// The profile file itself.
    pub path: PathBuf,
    /// Every file the profile was built from (itself first, then its bases).
    pub files: Vec<PathBuf>,
    /// `[appliance]`
    pub appliance: Appliance,
    /// `[hardware]`
    pub hardware: Hardware,
    /// `[kernel]`
    pub kernel: Kernel,
    /// The red (private-side) personality.
    pub red: Personality,
    /// The black (internet-side) personality.
    pub black: Personality,
    /// `[viaduct]`
    pub viaduct: Viaduct,
    /// `[[links]]`
    pub links: Vec<Link>,
    /// `[image]`
    pub image: Image,
    /// `[signing]`
    pub signing: Option<Signing>,
}

/// What the appliance is.
#[derive(Debug, Clone, Serialize)]
pub struct Appliance {
    /// Name (`[a-z0-9-]`).
    pub name: String,
    /// Version string.
    pub version: String,
    /// Anti-rollback counter.
    pub security_version: u64,
    /// Free text.
    pub description: Option<String>,
    /// Isolation runtime.
    pub runtime: Runtime,
    /// A lab profile (may carry test keys).
    pub lab: bool,
}

/// Isolation runtime of the personalities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// Namespace compartments on one kernel.
    Compartment,
    /// Each personality a KVM guest with its own kernel, owning its NIC.
    Microvm,
}

/// How a NIC reaches its personality's virtual machine (runtime `microvm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NicAttach {
    /// Passed through with VFIO: the driver runs in the guest's kernel.
    Vfio,
    /// A macvtap on the host: the NIC's driver stays in the host kernel.
    Macvtap,
}

/// Hardware target and NICs.
#[derive(Debug, Clone, Serialize)]
pub struct Hardware {
    /// Target name (`x86_64-uefi`).
    pub target: String,
    /// NICs, sorted by role.
    pub nics: Vec<Nic>,
}

/// A network card.
#[derive(Debug, Clone, Serialize)]
pub struct Nic {
    /// Role name (`lan`, `wan`).
    pub role: String,
    /// Kernel driver.
    pub driver: String,
    /// PCI address to match, if given.
    pub pci: Option<String>,
    /// MAC address to match (lowercase), if given.
    pub mac: Option<String>,
    /// Network segment it is plugged into.
    pub network: Option<String>,
    /// Which personality owns it.
    pub owner: Side,
    /// How it reaches its personality's VM (runtime `microvm`; `vfio`
    /// unless the profile asks for `macvtap`).
    pub attach: NicAttach,
}

/// Red or black.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// The private (LAN) side.
    Red,
    /// The internet side.
    Black,
}

impl Side {
    /// `red` or `black`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Red => "red",
            Side::Black => "black",
        }
    }
}

/// Kernel and drivers.
#[derive(Debug, Clone, Serialize)]
pub struct Kernel {
    /// Debian package.
    pub package: String,
    /// Modules (normalised: `-` → `_`), in profile order, no duplicates.
    pub drivers: Vec<String>,
    /// Extra command-line arguments.
    pub cmdline: Vec<String>,
}

/// One personality.
#[derive(Debug, Clone, Serialize)]
pub struct Personality {
    /// Red or black.
    pub side: Side,
    /// Role of the NIC it owns.
    pub nic: String,
    /// Debian packages of its root filesystem.
    pub packages: Vec<String>,
    /// Static addresses.
    pub addresses: Vec<IfAddr>,
    /// Default gateway.
    pub gateway: Option<IpAddr>,
    /// DHCP client instead of static addresses.
    pub dhcp: bool,
    /// Services.
    pub services: Vec<Service>,
    /// Files written into its root, by absolute path.
    pub files: Vec<RootFile>,
    /// Compartment memory limit.
    pub memory_limit: ByteSize,
    /// Compartment process limit.
    pub pids_limit: u64,
}

/// A service in a personality.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// Name.
    pub name: String,
    /// Program (absolute path) and arguments.
    pub command: Vec<String>,
    /// Restart policy.
    pub restart: Restart,
    /// Capabilities kept (`CAP_…`).
    pub capabilities: Vec<String>,
}

/// A file the builder writes into a personality's root.
#[derive(Debug, Clone, Serialize)]
pub struct RootFile {
    /// Absolute, normalised path (`/etc/frr/bgpd.conf`).
    pub path: String,
    /// Permission bits (at most `0o777`).
    pub mode: u32,
    /// Content.
    pub content: String,
}

/// Restart policy of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Restart whenever it exits.
    Always,
    /// Restart only after a failure (non-zero exit or signal).
    OnFailure,
    /// Never restart.
    Never,
}

/// Roles of the Viaduct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// IPsec gateway.
    Vpn,
    /// Packet filter.
    Firewall,
    /// Intrusion detection.
    Ids,
    /// Router with ACLs.
    Router,
}

/// The Viaduct's configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Viaduct {
    /// Roles.
    pub roles: BTreeSet<Role>,
    /// IPsec (present iff role `vpn`).
    pub ipsec: Option<Ipsec>,
    /// Extra SPD entries.
    pub spd: Vec<SpdRule>,
    /// Filter rules, first match wins.
    pub filter: Vec<FilterRule>,
    /// Named address sets the filter rules use.
    pub sets: BTreeMap<String, Vec<Prefix>>,
    /// Action when no filter rule matches.
    pub filter_default: FilterAction,
    /// The connection table's size (used when a rule names states).
    pub filter_max_flows: u32,
    /// Whether the packets the default decides are logged.
    pub filter_default_log: bool,
    /// IDS rules.
    pub ids: Option<Ids>,
    /// Routes.
    pub routes: Vec<Route>,
    /// Routes black may install, if any.
    pub learned_routes: Option<LearnedRoutes>,
}

/// `[viaduct.learned_routes]`.
#[derive(Debug, Clone, Serialize)]
pub struct LearnedRoutes {
    /// Ranges a learned route must fall in.
    pub allow: Vec<PrefixRange>,
    /// The most routes held at once.
    pub max: u32,
    /// Whether special-purpose prefixes may be admitted.
    pub martians: bool,
}

/// A prefix and the lengths admitted under it (FRR's `ge`/`le`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PrefixRange {
    /// The covering prefix.
    pub prefix: Prefix,
    /// Shortest length admitted.
    pub ge: u8,
    /// Longest length admitted.
    pub le: u8,
}

/// Default of `[viaduct.learned_routes] max`.
pub const DEFAULT_MAX_LEARNED_ROUTES: u32 = 10_000;
/// Upper bound of `[viaduct.learned_routes] max`.
pub const MAX_MAX_LEARNED_ROUTES: u64 = 2_000_000;

/// IPsec configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Ipsec {
    /// Local IKE identity.
    pub local_id: String,
    /// Our signing key (for peers authenticated by signature): a provisioned
    /// Ed25519 seed (`tpm:<name>`), the device identity key (`tpm:identity`,
    /// ECDSA P-256 in the TPM) or a lab seed.
    pub private_key: Option<PrivateKey>,
    /// Local outer address.
    pub local_address: IpAddr,
    /// Anti-replay window (packets).
    pub replay_window: u32,
    /// Peers.
    pub peers: Vec<Peer>,
}

/// How ESP packets travel between the gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encapsulation {
    /// IP protocol 50.
    Esp,
    /// Inside UDP, source and destination port 4500 (RFC 3948).
    Udp,
}

/// An IPsec peer.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    /// Name.
    pub name: String,
    /// Outer address.
    pub address: IpAddr,
    /// IKE identity.
    pub remote_id: String,
    /// Authentication.
    pub auth: Auth,
    /// IKE proposals, in preference order.
    pub ike_proposals: Vec<IkeProposal>,
    /// ESP proposals, in preference order.
    pub esp_proposals: Vec<EspProposal>,
    /// How ESP travels to this peer.
    pub encapsulation: Encapsulation,
    /// DSCP of the outer header of ESP packets to this peer (0..=63).
    pub outer_dscp: u8,
    /// TFC padding sizes, increasing (empty: no padding).
    pub tfc_padding: Vec<u16>,
    /// Lifetimes.
    pub lifetimes: Lifetimes,
    /// Dead-peer detection.
    pub dpd: Dpd,
    /// Tunnels.
    pub tunnels: Vec<Tunnel>,
}

/// Dead-peer detection of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Dpd {
    /// Silence before a liveness check; `None`: no checks.
    pub delay: Option<Seconds>,
    /// What to do when the peer is dead.
    pub action: DpdAction,
}

impl Default for Dpd {
    fn default() -> Self {
        Dpd {
            delay: Some(Seconds(30)),
            action: DpdAction::Restart,
        }
    }
}

/// What to do when a peer is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DpdAction {
    /// Start again (the initiating side), with back-off and jitter.
    Restart,
    /// Leave the tunnel down until the peer initiates.
    Clear,
}

/// This gateway's signing key.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum PrivateKey {
    /// Provisioned on the device under this name.
    Tpm {
        /// Its name.
        name: String,
    },
    /// A lab key in the profile: the 32-byte Ed25519 seed.
    Lab {
        /// The seed.
        seed: LabKey,
    },
}

/// Peer authentication.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Auth {
    /// Pre-shared key sealed in the TPM under this name.
    PskTpm {
        /// Name of the sealed object.
        name: String,
    },
    /// Lab pre-shared key carried in the profile (lab profiles only).
    PskLab {
        /// The key.
        key: LabKey,
    },
    /// EdDSA (Ed25519) public key of the peer.
    PublicKey {
        /// 32-byte Ed25519 key, hex.
        #[serde(serialize_with = "ser_hex")]
        ed25519: [u8; 32],
    },
    /// ECDSA P-256 public key of the peer (another gateway's device identity
    /// key, as `appliance enroll` prints it, or any ECDSA P-256 key).
    PublicKeyEcdsaP256 {
        /// The uncompressed point `04 || x || y`, hex.
        #[serde(serialize_with = "ser_hex")]
        ecdsa_p256: [u8; 65],
    },
}

fn ser_hex<S: Serializer, const N: usize>(b: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    s.serialize_str(&hex)
}

/// Secret key bytes from a lab profile; zeroised on drop, never printed.
/// Equality is constant-time.
#[derive(Clone)]
pub struct LabKey(Vec<u8>);

impl LabKey {
    /// Wraps key bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        LabKey(bytes)
    }
    /// The key bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    /// Whether the first `key_len` bytes (the cipher key, without the salt
    /// that follows it) equal `other`'s, compared in constant time and in
    /// place. Keys shorter than `key_len` compare whole.
    pub fn same_cipher_key(&self, other: &LabKey, key_len: usize) -> bool {
        use subtle::ConstantTimeEq;
        let a = self.0.get(..key_len).unwrap_or(&self.0);
        let b = other.0.get(..key_len).unwrap_or(&other.0);
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }
}

impl PartialEq for LabKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for LabKey {}

impl Drop for LabKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for LabKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LabKey(<{} bytes>)", self.0.len())
    }
}

impl Serialize for LabKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("<lab key, {} bytes>", self.0.len()))
    }
}

/// SA lifetimes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Lifetimes {
    /// IKE SA lifetime.
    pub ike: Seconds,
    /// Child SA hard lifetime.
    pub child: Seconds,
    /// Child SA soft lifetime (rekey).
    pub child_rekey: Seconds,
    /// Child SA hard byte limit.
    pub child_bytes: Option<ByteSize>,
    /// Child SA hard packet limit.
    pub child_packets: Option<u64>,
}

/// A tunnel (child SA).
#[derive(Debug, Clone, Serialize)]
pub struct Tunnel {
    /// Name (unique across peers).
    pub name: String,
    /// Local (red-side) selectors.
    pub local_ts: Vec<TrafficSelector>,
    /// Remote selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// Manual keying (lab).
    pub manual: Option<ManualSa>,
}

/// Manually keyed SA pair (lab only).
#[derive(Debug, Clone, Serialize)]
pub struct ManualSa {
    /// AEAD.
    pub aead: Aead,
    /// Outbound SPI.
    pub spi_out: u32,
    /// Inbound SPI.
    pub spi_in: u32,
    /// Outbound key || salt.
    pub key_out: LabKey,
    /// Inbound key || salt.
    pub key_in: LabKey,
}

/// Selector of an SPD or filter rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Selector {
    /// Source prefix (`None` = any).
    pub src: Option<Prefix>,
    /// Destination prefix (`None` = any).
    pub dst: Option<Prefix>,
    /// Protocol (`None` = any).
    pub protocol: Option<u8>,
    /// Source ports.
    pub src_ports: PortRange,
    /// Destination ports.
    pub dst_ports: PortRange,
}

/// An extra SPD entry.
#[derive(Debug, Clone, Serialize)]
pub struct SpdRule {
    /// Name.
    pub name: String,
    /// What it matches.
    pub selector: Selector,
    /// BYPASS or DISCARD.
    pub action: SpdAction,
}

/// SPD actions that can be written directly (PROTECT comes from tunnels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpdAction {
    /// Pass in clear.
    Bypass,
    /// Drop and count.
    Discard,
}

/// Filter direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Red → black.
    Outbound,
    /// Black → red.
    Inbound,
}

/// Filter action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilterAction {
    /// Let through.
    Accept,
    /// Drop and count.
    Drop,
}

/// A TCP flags match: `flags & mask == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TcpFlags {
    /// The flags looked at (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK
    /// 0x10, URG 0x20, ECE 0x40, CWR 0x80).
    pub mask: u8,
    /// Which of them must be set (the others in `mask` must be clear).
    pub value: u8,
}

impl TcpFlags {
    /// The flag names, in bit order.
    pub const NAMES: [(&'static str, u8); 8] = [
        ("fin", 0x01),
        ("syn", 0x02),
        ("rst", 0x04),
        ("psh", 0x08),
        ("ack", 0x10),
        ("urg", 0x20),
        ("ece", 0x40),
        ("cwr", 0x80),
    ];

    /// Whether there is no condition.
    pub fn is_any(&self) -> bool {
        self.mask == 0
    }
}

/// The connection states a filter rule applies to, a bit each (0: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ConnStates(pub u8);

impl ConnStates {
    /// The state names, in bit order (the policy blob's bits).
    pub const NAMES: [(&'static str, u8); 4] = [
        ("new", 0x01),
        ("established", 0x02),
        ("related", 0x04),
        ("invalid", 0x08),
    ];

    /// Whether there is no condition.
    pub fn is_any(&self) -> bool {
        self.0 == 0
    }
}

/// A filter rule's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuleLimit {
    /// Packets per period.
    pub rate: u32,
    /// The period: 1, 60 or 3600 seconds.
    pub per_seconds: u32,
    /// The bucket's size, in packets.
    pub burst: u32,
}

/// Connection timeouts by pf's names (with `_`) and their defaults in
/// seconds, in the order the policy blob holds them.
pub const FLOW_TIMEOUTS: [(&str, u32); 14] = [
    ("tcp_first", 120),
    ("tcp_opening", 30),
    ("tcp_established", 86_400),
    ("tcp_closing", 900),
    ("tcp_finwait", 45),
    ("tcp_closed", 90),
    ("udp_first", 60),
    ("udp_single", 30),
    ("udp_multiple", 60),
    ("icmp_first", 20),
    ("icmp_error", 10),
    ("other_first", 60),
    ("other_single", 30),
    ("other_multiple", 60),
];

/// Connection-table size when the profile names none (pf's state limit).
pub const DEFAULT_MAX_FLOWS: u32 = 100_000;

/// A filter rule.
#[derive(Debug, Clone, Serialize)]
pub struct FilterRule {
    /// Name.
    pub name: String,
    /// Direction.
    pub direction: Direction,
    /// What it matches: the packet matches the rule if it matches one of
    /// these (one per prefix of a set, port range of a list, ICMP type).
    pub selectors: Vec<Selector>,
    /// TCP flags it requires (mask 0: none).
    pub tcp_flags: TcpFlags,
    /// Connection states it applies to (none: any).
    pub states: ConnStates,
    /// Its rate limit.
    pub limit: Option<RuleLimit>,
    /// Timeouts of the connections it admits (all 14, in the order of
    /// [`FLOW_TIMEOUTS`]), when the rule sets any.
    pub timeouts: Option<[u32; 14]>,
    /// Whether the packets it decides are logged.
    pub log: bool,
    /// Action.
    pub action: FilterAction,
}

/// `[viaduct.ids]`: the IDS rules as validated (each source read with
/// [`Ids::vars`] by `ids_rules::parse`, which the policy compiler repeats).
#[derive(Debug, Clone, Serialize)]
pub struct Ids {
    /// Where the rules come from, in order: the inline text, then each file.
    pub sources: Vec<IdsSource>,
    /// The variables the rules are read with.
    pub vars: BTreeMap<String, String>,
    /// Whether unsupported rules are left out (`skip`) rather than refused.
    pub skip_unsupported: bool,
    /// Rules compiled, over all sources.
    pub compiled: usize,
    /// Rules left out (only with `skip`).
    pub skipped: usize,
    /// The coverage report (`N of M rules compiled; refused: …`).
    pub coverage: String,
}

/// One source of IDS rules.
#[derive(Debug, Clone, Serialize)]
pub struct IdsSource {
    /// `inline`, or the file's path as written.
    pub origin: String,
    /// SHA-256 of the text, hex.
    pub sha256: String,
    /// The text.
    #[serde(skip)]
    pub text: String,
}

/// A route.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// Destination.
    pub dst: Prefix,
    /// Next hop.
    pub via: RouteVia,
}

/// Where a route points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteVia {
    /// Out of the red side.
    Red,
    /// Out of the black side.
    Black,
    /// Into a tunnel.
    Tunnel(String),
}

/// A link end.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Node {
    /// The red personality.
    Red,
    /// The black personality.
    Black,
    /// The Viaduct.
    Viaduct,
    /// An external network segment.
    Network(String),
}

/// A declared link.
#[derive(Debug, Clone, Serialize)]
pub struct Link {
    /// Name.
    pub name: String,
    /// The two ends.
    pub between: [Node; 2],
}

/// Disk layout.
#[derive(Debug, Clone, Serialize)]
pub struct Image {
    /// Whole disk.
    pub size: ByteSize,
    /// EFI system partition.
    pub esp_size: ByteSize,
    /// Slot layout.
    pub slots: Slots,
    /// A/B: tries systemd-boot gives an update.
    pub boot_tries: u32,
    /// A/B: seconds a boot has to become good.
    pub boot_timeout_s: u32,
    /// A/B: when a boot is good.
    pub good_when: GoodWhen,
    /// Extra output formats (raw is always written).
    pub qcow2: bool,
}

/// When a boot of an A/B image counts as good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GoodWhen {
    /// Every compartment is up.
    Ready,
    /// Ready, and every tunnel carries SAs.
    TunnelsUp,
}

/// Boot slot layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Slots {
    /// Two slots, A and B.
    Ab,
    /// One slot.
    Single,
}

/// Signing configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Signing {
    /// Private key file (resolved against the profile's directory).
    pub key: Option<PathBuf>,
    /// Public key file.
    pub public_key: Option<PathBuf>,
    /// Sign for UEFI Secure Boot.
    pub secure_boot: bool,
}
