//! The raw profile model: exactly what the TOML says, with a source span on
//! every value, unknown keys rejected. Nothing here is checked beyond TOML
//! types; [`crate::validate`] turns it into the validated [`crate::Profile`].
//!
//! Every field is optional at this stage so that a base profile (a fragment
//! meant only for `extends`) can be read with the same model; missing
//! required fields are reported by validation, with the table they belong in.

use std::collections::BTreeMap;
use std::ops::Range;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

/// A value with its span in the source map's virtual byte space.
#[derive(Debug, Clone, PartialEq)]
pub struct Sp<T> {
    /// Virtual byte range of the value (see [`crate::source::SourceMap`]).
    pub span: Range<usize>,
    /// The value.
    pub value: T,
}

impl<T> std::ops::Deref for Sp<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_spanned::Spanned::<T>::deserialize(d)?;
        Ok(Sp {
            span: s.span(),
            value: s.into_inner(),
        })
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

/// An appliance profile (one file, after `extends` is resolved).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    /// Base profile this one extends: a path relative to this file. Tables
    /// merge deeply, later values win, lists are replaced (write
    /// `{ append = [...] }` to add to the base's list instead).
    pub extends: Option<Sp<String>>,
    /// Marks a base profile that is only meant to be extended; `profile check`
    /// then checks keys and types but not completeness.
    #[serde(rename = "abstract")]
    pub is_abstract: Option<Sp<bool>>,
    /// What the appliance is.
    pub appliance: Option<Sp<RawAppliance>>,
    /// The hardware target and its network cards.
    pub hardware: Option<Sp<RawHardware>>,
    /// Kernel package and drivers.
    pub kernel: Option<Sp<RawKernel>>,
    /// The two untrusted Linux personalities: `red` (private side) and `black` (internet side).
    pub personalities: Option<Sp<BTreeMap<String, Sp<RawPersonality>>>>,
    /// The Viaduct: the trusted component between red and black.
    pub viaduct: Option<Sp<RawViaduct>>,
    /// Declared links between parts (`red`, `black`, `viaduct`) and networks.
    /// The only path between red and black must pass through the Viaduct.
    pub links: Option<Sp<Vec<Sp<RawLink>>>>,
    /// Disk image layout.
    pub image: Option<Sp<RawImage>>,
    /// Signing of the image.
    pub signing: Option<Sp<RawSigning>>,
}

/// `[appliance]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAppliance {
    /// Name of the appliance: lowercase letters, digits and `-` (used in file names and on the console).
    pub name: Option<Sp<String>>,
    /// Version shown on the console and recorded in the manifest (e.g. `1.0.0`).
    pub version: Option<Sp<String>>,
    /// Security version for anti-rollback: a gateway refuses an update with a lower one.
    pub security_version: Option<Sp<u64>>,
    /// Free text for administrators.
    pub description: Option<Sp<String>>,
    /// Isolation runtime of the personalities: `compartment` (namespaces on
    /// one kernel, the default) or `microvm` (each personality a KVM guest
    /// with its own kernel, owning its NIC by VFIO).
    pub runtime: Option<Sp<String>>,
    /// A lab profile: may carry test keys (manual SAs, lab PSKs). Never for production.
    pub lab: Option<Sp<bool>>,
}

/// `[hardware]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHardware {
    /// Hardware target: `x86_64-uefi`.
    pub target: Option<Sp<String>>,
    /// Network cards by role name (e.g. `lan`, `wan`).
    pub nics: Option<Sp<BTreeMap<String, Sp<RawNic>>>>,
}

/// `[hardware.nics.<role>]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNic {
    /// Kernel driver of the card (e.g. `virtio_net`, `e1000e`, `igb`); it
    /// must be one of `kernel.drivers`.
    pub driver: Option<Sp<String>>,
    /// PCI address (`0000:00:02.0`, with the domain) that identifies the
    /// card; no two NICs share one.
    pub pci: Option<Sp<String>>,
    /// MAC address (`52:54:00:12:34:56`) that identifies the card; no two
    /// NICs share one.
    pub mac: Option<Sp<String>>,
    /// Name of the external network segment this card is plugged into (for the path check).
    pub network: Option<Sp<String>>,
    /// Runtime `microvm` only: how the card reaches its personality's
    /// virtual machine. `vfio` (the default) passes it through, its driver
    /// running in the guest's kernel; `macvtap` keeps its driver in the
    /// gateway's own kernel (in the trusted base) and gives the guest a
    /// macvtap queue.
    pub attach: Option<Sp<String>>,
}

/// `[kernel]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawKernel {
    /// Debian kernel package (e.g. `linux-image-amd64`).
    pub package: Option<Sp<String>>,
    /// Kernel modules to ship and load (names as `modprobe` knows them).
    /// Every NIC's driver must be one of them.
    #[schemars(example = drivers_example())]
    pub drivers: Option<Sp<Vec<Sp<String>>>>,
    /// Extra kernel command-line arguments, one word each. Words that
    /// would weaken what the image guarantees are refused, each with its
    /// reason: choosing the first program or root (`init=`, `rdinit=`,
    /// `root=`, `noinitrd`, `initrd=`, `--`, run levels, upper-case words
    /// that would reach the init as environment), security modules and
    /// lockdown (`lsm=`, `security=`, `apparmor=`, `selinux=`,
    /// `lockdown=`, `ima…`), second system-call ABIs (`syscall.x32`,
    /// `ia32_emulation`, `vsyscall=emulate|native`), mitigations and
    /// hardening turned off (`mitigations=off`, `nopti`, `nosmep`,
    /// `nokaslr`, `spectre_v2=off`, `init_on_free=0` …), module signing and
    /// microcode (`module.sig_enforce`, `dis_ucode_ldr`), IOMMU and cgroup
    /// isolation (`iommu=off|pt`, `intel_iommu=off`, `cgroup_disable=`),
    /// debug access (`kgdboc=`, `sysrq_always_enabled`, `debugfs=on`,
    /// `no_hash_pointers`), sysctls (`sysctl.…`) and quotes. Names compare
    /// with `-` and `_` alike, as the kernel's do.
    pub cmdline: Option<Sp<Vec<Sp<String>>>>,
}

fn drivers_example() -> [&'static str; 2] {
    ["virtio_net", "e1000e"]
}

/// `[personalities.<red|black>]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPersonality {
    /// Role of the NIC this personality owns (a key of `hardware.nics`).
    pub nic: Option<Sp<String>>,
    /// Debian packages installed in this personality's root filesystem.
    pub packages: Option<Sp<Vec<Sp<String>>>>,
    /// Addresses on the NIC, with prefix length (`10.1.0.1/24`).
    pub addresses: Option<Sp<Vec<Sp<String>>>>,
    /// Default gateway on the NIC's network.
    pub gateway: Option<Sp<String>>,
    /// Take the address by DHCP instead of `addresses` (black side only).
    pub dhcp: Option<Sp<bool>>,
    /// Services started in this personality.
    pub services: Option<Sp<Vec<Sp<RawService>>>>,
    /// Files the builder writes into this personality's root (a service's
    /// configuration, say), content inline.
    pub files: Option<Sp<Vec<Sp<RawFile>>>>,
    /// Memory limit of the compartment (e.g. `128MiB`).
    #[schemars(extend("format" = "size"), example = "128MiB")]
    pub memory_limit: Option<Sp<String>>,
    /// Maximum number of processes in the compartment.
    pub pids_limit: Option<Sp<u64>>,
}

/// `[[personalities.<name>.services]]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Service name, unique within the personality.
    pub name: Option<Sp<String>>,
    /// Program and arguments; the program is an absolute path.
    pub command: Option<Sp<Vec<Sp<String>>>>,
    /// Restart policy: `always` (default) or `never`.
    pub restart: Option<Sp<String>>,
    /// Capabilities the service keeps inside its compartment (e.g. `CAP_NET_ADMIN`).
    pub capabilities: Option<Sp<Vec<Sp<String>>>>,
}

/// `[[personalities.<name>.files]]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// Absolute path inside the personality's root (e.g. `/etc/frr/bgpd.conf`).
    pub path: Option<Sp<String>>,
    /// The file's content (a TOML string; `"""` for several lines).
    pub content: Option<Sp<String>>,
    /// Permission bits, at most `0o777` (default `0o444`).
    pub mode: Option<Sp<u64>>,
}

/// `[viaduct]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawViaduct {
    /// What the Viaduct does: one or more of `vpn`, `firewall`, `ids`, `router`.
    pub roles: Option<Sp<Vec<Sp<String>>>>,
    /// Never allowed: the Viaduct owns no NIC. (Declared only to explain the error.)
    #[schemars(skip)]
    pub nic: Option<Sp<toml::Value>>,
    /// IPsec policy (role `vpn`).
    pub ipsec: Option<Sp<RawIpsec>>,
    /// Extra security policy entries (BYPASS/DISCARD) for traffic not covered by a tunnel.
    pub spd: Option<Sp<Vec<Sp<RawSpdRule>>>>,
    /// Filter rules (role `firewall`, also allowed with `vpn`), first match wins.
    pub filter: Option<Sp<Vec<Sp<RawFilterRule>>>>,
    /// Named address sets for filter rules: `lan = ["10.1.0.0/24",
    /// "2001:db8:1::/48"]`, written `src = "@lan"` or `dst = "@lan"` in a
    /// rule (the rule then holds for each prefix of the set; with sets on
    /// both sides, for each pair of one address family). Names: lowercase
    /// letters, digits and `-`.
    pub sets: Option<Sp<RawSets>>,
    /// Action for traffic no filter rule matches: `accept` (default) or `drop`.
    pub filter_default: Option<Sp<String>>,
    /// The most connections the filter tracks at once (1 to 4,000,000;
    /// default 100,000, pf's state limit). Used when a filter rule names a
    /// `state`; a connection that would open past it is dropped and
    /// counted (`state_table_full`), never let through untracked.
    pub filter_max_flows: Option<Sp<u64>>,
    /// Log every packet the default decides (`true`), as a rule's `log`.
    pub filter_default_log: Option<Sp<bool>>,
    /// Intrusion-detection rules (role `ids`).
    pub ids: Option<Sp<RawIds>>,
    /// Routes (role `router`).
    pub routes: Option<Sp<Vec<Sp<RawRoute>>>>,
    /// Routes black's routing daemon (FRR, over FPM) may install (role
    /// `router`): the Viaduct sends cleartext to black for a learned
    /// destination only if the route falls in an allowed range.
    pub learned_routes: Option<Sp<RawLearnedRoutes>>,
}

/// `[viaduct.learned_routes]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLearnedRoutes {
    /// Prefix ranges a learned route must fall in, as FRR's prefix lists
    /// write them: `"203.0.113.0/24"` (that prefix only), `"203.0.113.0/24
    /// le 28"` (it and more specific ones down to /28), `"2001:db8::/32 ge
    /// 40 le 48"`. A range may not reach red's networks or a route via red.
    pub allow: Option<Sp<Vec<Sp<String>>>>,
    /// The most learned routes held at once (1 to 2,000,000; default
    /// 10,000); routes beyond are refused and counted.
    pub max: Option<Sp<u64>>,
    /// `deny` (default): a route inside special-purpose space (RFC 6890:
    /// private, shared, loopback, link-local, documentation, benchmarking,
    /// multicast, reserved; IPv6 outside 2000::/3) is refused even inside
    /// an allowed range; `allow`: admitted like any other (private
    /// networks routed by BGP).
    pub martians: Option<Sp<String>>,
}

/// `[viaduct.ipsec]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIpsec {
    /// This gateway's IKE identity (FQDN, e.g. `gw-a.example.net`).
    pub local_id: Option<Sp<String>>,
    /// This gateway's signing key, for peers with `method = "pubkey"`:
    /// `tpm:identity` (the device identity key: ECDSA P-256 generated in the
    /// TPM at the first boot of a signed A/B image, never leaving it),
    /// `tpm:<name>` (an Ed25519 seed provisioned on the device) or, in lab
    /// profiles only, `lab:<64 hex digits>` (an Ed25519 seed).
    pub private_key: Option<Sp<String>>,
    /// This gateway's public (outer) address: one of black's addresses.
    pub local_address: Option<Sp<String>>,
    /// Anti-replay window in packets (default 4096, at least 1024).
    pub replay_window: Option<Sp<u64>>,
    /// IPsec peers.
    pub peers: Option<Sp<Vec<Sp<RawPeer>>>>,
}

/// `[[viaduct.ipsec.peers]]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    /// Peer name, unique.
    pub name: Option<Sp<String>>,
    /// Peer's public (outer) address, of the same IP version as
    /// `local_address`.
    pub address: Option<Sp<String>>,
    /// Peer's IKE identity (never this gateway's own `local_id`).
    pub remote_id: Option<Sp<String>>,
    /// How the peer authenticates.
    pub auth: Option<Sp<RawAuth>>,
    /// IKE proposals, strongest first (e.g. `aes256gcm16-prfsha384-x25519`).
    pub ike_proposals: Option<Sp<Vec<Sp<String>>>>,
    /// ESP proposals, strongest first (e.g. `aes256gcm16`, `chacha20poly1305`).
    pub esp_proposals: Option<Sp<Vec<Sp<String>>>>,
    /// How ESP travels to this peer: `esp` (IP protocol 50, default) or
    /// `udp` (inside UDP, port 4500, RFC 3948: crosses NATs and lets the
    /// Viaduct hand the kernel batches of datagrams). With IKE, `esp` still
    /// floats to UDP when NAT detection finds a NAT; `udp` forces it (IKE on
    /// 4500, NAT-keepalives every 20 s) for paths that drop IP protocol 50.
    pub encapsulation: Option<Sp<String>>,
    /// DSCP (0-63) of the outer IP header of every ESP packet to this peer;
    /// default 0 (best effort). Nothing of an inner packet's DSCP or ECN
    /// bits is copied to the outer header, so no LAN host can write bits in
    /// clear on the internet (`ping -Q`, `IP_TOS`); the outer ECN field is
    /// always Not-ECT (RFC 6040 compatibility mode). Set a DSCP here (e.g.
    /// 46, EF) only if the path to the peer treats it specially; every
    /// packet of the tunnel carries it.
    pub outer_dscp: Option<Sp<u64>>,
    /// Traffic-flow-confidentiality padding (RFC 4303 §2.4): sizes in bytes,
    /// in increasing order, from 20 to 1400 (the red port's MTU). Each
    /// packet to this peer is padded inside the encryption to the first
    /// size that holds it, so the internet sees only which size class it
    /// fell in, not its length; a packet longer than the last size keeps
    /// its length (end the list with 1400 to hide every length). The peer
    /// strips the padding (the inner IP header gives the length; Linux and
    /// strongSwan accept it). Costs bandwidth, about (mean padded size /
    /// mean size - 1), and a little CPU per padded byte: `[1400]` makes
    /// every packet full-sized (an ACK of 52 bytes costs 1400);
    /// `[128, 256, 512, 1024, 1400]` leaks about 2 bits of length per
    /// packet for less. Not given or empty: no padding. Timing and the
    /// number of packets stay visible.
    pub tfc_padding: Option<Sp<Vec<Sp<u64>>>>,
    /// Lifetimes of the IKE and child SAs.
    pub lifetimes: Option<Sp<RawLifetimes>>,
    /// Dead-peer detection (RFC 7296 §2.4): how long the peer may stay silent
    /// before the gateway checks it is there, and what to do when it is not.
    pub dpd: Option<Sp<RawDpd>>,
    /// Tunnels (child SAs) to this peer.
    pub tunnels: Option<Sp<Vec<Sp<RawTunnel>>>>,
}

/// `[viaduct.ipsec.peers.auth]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `psk` or `pubkey` (signatures, RFC 7427: Ed25519 or ECDSA P-256).
    pub method: Option<Sp<String>>,
    /// PSK reference: `tpm:<name>` (sealed on the device) or, in lab profiles only, `lab:<hex>`.
    pub psk: Option<Sp<String>>,
    /// Peer's public key: `ed25519:<64 hex digits>`, or `ecdsa-p256:04<128
    /// hex digits>` (the uncompressed point; `appliance enroll` prints a
    /// gateway's device identity key this way).
    pub public_key: Option<Sp<String>>,
}

/// `[viaduct.ipsec.peers.lifetimes]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLifetimes {
    /// IKE SA lifetime (e.g. `24h`).
    #[schemars(extend("format" = "duration"), example = "24h")]
    pub ike: Option<Sp<String>>,
    /// Child SA lifetime (hard), e.g. `1h`.
    #[schemars(extend("format" = "duration"), example = "1h")]
    pub child: Option<Sp<String>>,
    /// Child SA rekey time (soft), before `child`; default 90 % of it.
    #[schemars(extend("format" = "duration"), example = "50m")]
    pub child_rekey: Option<Sp<String>>,
    /// Child SA byte limit (hard), e.g. `64GiB`; more than zero (leave it
    /// out for no byte limit). Rekeyed 10 % before it, and at least 1 MiB
    /// before it while that leaves half.
    #[schemars(extend("format" = "size"), example = "64GiB")]
    pub child_bytes: Option<Sp<String>>,
    /// Child SA packet limit (hard); more than zero (leave it out for no
    /// packet limit). Rekeyed 10 % before it, and at least 1024 packets
    /// before it while that leaves half.
    pub child_packets: Option<Sp<u64>>,
}

/// `[viaduct.ipsec.peers.dpd]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDpd {
    /// Silence after which an empty INFORMATIONAL asks whether the peer is
    /// alive: `1s` to `1h`, default `30s`; `off` for none (the tunnel then
    /// notices a dead peer only at its next rekey). A peer that answers none
    /// of the retransmissions (about 21 s) is dead: its SAs are deleted.
    #[schemars(extend("format" = "duration"), example = "30s")]
    pub delay: Option<Sp<String>>,
    /// When the peer is dead: `restart` (default: the gateway that initiates
    /// tries again, after a back-off from 5 s doubling to 60 s, with jitter)
    /// or `clear` (the tunnel stays down until the peer itself initiates).
    pub action: Option<Sp<String>>,
}

/// `[[viaduct.ipsec.peers.tunnels]]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTunnel {
    /// Tunnel name, unique across all peers.
    pub name: Option<Sp<String>>,
    /// Local traffic selectors: prefixes on the red side (`10.1.0.0/24`,
    /// optionally `10.1.0.0/24 tcp 443` or `... udp 1000-2000`).
    pub local_ts: Option<Sp<Vec<Sp<String>>>>,
    /// Remote traffic selectors: prefixes behind the peer.
    pub remote_ts: Option<Sp<Vec<Sp<String>>>>,
    /// Manually keyed SAs (lab profiles only) instead of IKE. A gateway installs these keys once, ever: its TPM records them, and a restart or a later boot with any of them stays closed until the keys are changed.
    pub manual: Option<Sp<RawManualSa>>,
}

/// `[viaduct.ipsec.peers.tunnels.manual]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawManualSa {
    /// ESP AEAD: `aes128gcm16`, `aes256gcm16` or `chacha20poly1305`.
    pub aead: Option<Sp<String>>,
    /// SPI of the outbound SA (≥ 256).
    pub spi_out: Option<Sp<u32>>,
    /// SPI of the inbound SA (≥ 256).
    pub spi_in: Option<Sp<u32>>,
    /// Outbound key material, hex: key followed by the 4-byte salt.
    pub key_out: Option<Sp<String>>,
    /// Inbound key material, hex: key followed by the 4-byte salt.
    pub key_in: Option<Sp<String>>,
}

/// A traffic selector as a table (used by SPD, filter, IDS rules).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSpdRule {
    /// Rule name, unique.
    pub name: Option<Sp<String>>,
    /// Source prefix (default: any).
    pub src: Option<Sp<String>>,
    /// Destination prefix (default: any).
    pub dst: Option<Sp<String>>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `any` or a protocol number.
    pub protocol: Option<Sp<String>>,
    /// Destination ports: `443` or `1000-2000`.
    pub dst_ports: Option<Sp<String>>,
    /// `bypass` or `discard`.
    pub action: Option<Sp<String>>,
}

/// `[viaduct.sets]`: set name → its prefixes.
pub type RawSets = BTreeMap<String, Sp<Vec<Sp<String>>>>;

/// `[[viaduct.filter]]`: rules on the packets between red and black
/// (after decryption inbound, before encryption outbound); the first rule
/// that matches decides, else `filter_default`. Rules are stateless unless
/// one names a `state`; then the Viaduct tracks connections and every rule
/// is checked knowing each packet's state (a rule without `state` applies
/// in every state). Fragments: a later
/// fragment carries no ports and no TCP flags, so a rule that names ports
/// or `tcp_flags` never matches one, and a later fragment that reaches
/// such a rule whose addresses and protocol fit it is dropped
/// (`unclassified_fragment`): its verdict would depend on what only the
/// first fragment shows. A rule without ports or flags placed before
/// decides for it, as for any packet. A first fragment must hold the whole
/// transport header (RFC 1858, RFC 7112) and a later one must not overlap
/// it, or it is dropped (`bad_fragment`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFilterRule {
    /// Rule name, unique.
    pub name: Option<Sp<String>>,
    /// `outbound` (red → black) or `inbound` (black → red).
    pub direction: Option<Sp<String>>,
    /// Source prefix, or `@name` of a set in `[viaduct.sets]` (default: any).
    pub src: Option<Sp<String>>,
    /// Destination prefix, or `@name` of a set (default: any).
    pub dst: Option<Sp<String>>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `any` or a protocol number.
    pub protocol: Option<Sp<String>>,
    /// Source ports: `443`, `1000-2000`, or a list `80,443,8000-8080`.
    pub src_ports: Option<Sp<String>>,
    /// Destination ports: `443`, `1000-2000`, or a list `80,443,8000-8080`.
    pub dst_ports: Option<Sp<String>>,
    /// ICMP message types (needs `protocol = "icmp"` or `"icmpv6"`):
    /// `echo-request`, `echo-reply`, `destination-unreachable`,
    /// `time-exceeded`, `parameter-problem`, `packet-too-big` (ICMPv6), or a
    /// type number.
    pub icmp_type: Option<Sp<Vec<Sp<String>>>>,
    /// A rate limit: `"20/s"`, `"100/minute burst 20"` (per `s`/`second`,
    /// `m`/`minute`, `h`/`hour`; the burst defaults to the rate). The rule
    /// matches at most that many packets (a token bucket, as nftables'
    /// `limit rate`); packets beyond it go on to the next rules. With
    /// `state = ["new"]` it limits how fast connections open.
    pub limit: Option<Sp<String>>,
    /// Timeouts in seconds of the connections this rule admits, by pf's
    /// names: `tcp_first`, `tcp_opening`, `tcp_established`,
    /// `tcp_closing`, `tcp_finwait`, `tcp_closed`, `udp_first`,
    /// `udp_single`, `udp_multiple`, `icmp_first`, `icmp_error`,
    /// `other_first`, `other_single`, `other_multiple` (1 s to 1 year);
    /// the others keep pf's defaults.
    pub timeouts: Option<Sp<BTreeMap<String, Sp<u64>>>>,
    /// Log every packet this rule decides (`true`): one line on the
    /// Viaduct's console (rule, verdict, connection state, protocol,
    /// addresses, ports or ICMP type and code, TCP flags; never payload).
    /// Each direction writes at most 20 log lines a second (bursts of 100);
    /// the lines it leaves out are counted (`filter log suppressed=`).
    pub log: Option<Sp<bool>>,
    /// TCP flags the packet must have (needs `protocol = "tcp"`): each of
    /// `fin`, `syn`, `rst`, `psh`, `ack`, `urg`, `ece`, `cwr` must be set,
    /// or clear when written `!syn`; flags not named may be either.
    /// `["ack"]` matches every segment of an established connection and a
    /// SYN-ACK answering our SYN, never a SYN that opens a connection:
    /// write it on rules that let replies in. Like ports, flags are not
    /// seen in a later fragment (see the fragment rule in `[[viaduct.filter]]`).
    pub tcp_flags: Option<Sp<Vec<Sp<String>>>>,
    /// Connection states the rule applies to: any of `new` (the packet may
    /// open a connection: a TCP SYN without ACK, a UDP datagram, an ICMP
    /// echo request, with none tracked for it), `established` (it belongs
    /// to a tracked connection, in the direction its side sends),
    /// `related` (an ICMP error quoting a tracked connection's datagram)
    /// and `invalid` (none of these: a stray SYN-ACK or reset, an unasked
    /// echo reply, a later fragment). Without `state` the rule applies
    /// whatever the state. Any rule with `state` makes the Viaduct track
    /// connections: every accepted packet that may open one opens one (pf
    /// timeouts: TCP 120 s until answered, 24 h established, 90 s after a
    /// reset; UDP 60 s; ICMP echo 20 s), and only a tracked connection's
    /// replies are `established`.
    pub state: Option<Sp<Vec<Sp<String>>>>,
    /// `accept` or `drop`.
    pub action: Option<Sp<String>>,
}

/// `[viaduct.ids]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIds {
    /// Rules in the IDS rule language (a Suricata/Snort subset, one rule per
    /// line; docs/design/ids.md), e.g. `alert tcp any any -> $HOME_NET 80
    /// (msg:"…"; content:"…"; sid:1000001;)`.
    pub rules: Option<Sp<String>>,
    /// Rule files, each a path relative to this profile and its SHA-256.
    pub rules_files: Option<Sp<Vec<Sp<RawRulesFile>>>>,
    /// Rule variables, e.g. `HOME_NET = "[10.1.0.0/24]"`. Defaults:
    /// Suricata's, with `HOME_NET` red's networks.
    pub vars: Option<Sp<BTreeMap<String, Sp<String>>>>,
    /// What a rule outside the supported subset does: `fail` (default: the
    /// profile is refused, naming it) or `skip` (left out and counted in the
    /// coverage report).
    pub unsupported: Option<Sp<String>>,
}

/// `[[viaduct.ids.rules_files]]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRulesFile {
    /// Path, relative to the profile file that names it.
    pub path: Option<Sp<String>>,
    /// Its SHA-256, 64 hex digits: the file is refused if it has changed.
    pub sha256: Option<Sp<String>>,
}

/// `[[viaduct.routes]]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Destination prefix, routed once. Longest prefix wins; no part of
    /// red's networks may end up routed via `black`, and a route into a
    /// tunnel stays within the tunnel's `remote_ts`.
    pub dst: Option<Sp<String>>,
    /// `black` (out of the internet side), `red`, or `tunnel:<name>`.
    pub via: Option<Sp<String>>,
}

/// `[[links]]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    /// Link name, unique.
    pub name: Option<Sp<String>>,
    /// The two ends: `red`, `black`, `viaduct`, or a network name.
    pub between: Option<Sp<Vec<Sp<String>>>>,
}

/// `[image]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawImage {
    /// Disk size (e.g. `512MiB`), a whole number of MiB.
    #[schemars(extend("format" = "size"), example = "512MiB")]
    pub size: Option<Sp<String>>,
    /// EFI system partition size (e.g. `128MiB`), a whole number of MiB and
    /// at least [`crate::validate::MIN_ESP`] (FAT32 needs 65525 clusters).
    #[schemars(
        description = esp_size_description(),
        extend("format" = "size"),
        example = "128MiB"
    )]
    pub esp_size: Option<Sp<String>>,
    /// Slots: `ab` (two boot slots for updates) or `single`.
    pub slots: Option<Sp<String>>,
    /// A/B: how many times systemd-boot tries an update before it goes back
    /// to the other slot (1-10, default 3).
    pub boot_tries: Option<Sp<i64>>,
    /// A/B: how long a boot has to become good (e.g. `5m`; 30 s to 1 h,
    /// default 5 minutes); past it the gateway reboots and the try counts.
    pub boot_timeout: Option<Sp<String>>,
    /// A/B: when a boot is good: `ready` (every compartment up, default) or
    /// `tunnels-up` (and every tunnel carries SAs).
    pub good_when: Option<Sp<String>>,
    /// Output formats: `raw` (always written) and optionally `qcow2`.
    pub formats: Option<Sp<Vec<Sp<String>>>>,
}

/// The reference's text for `image.esp_size`, with the minimum that
/// validation enforces.
fn esp_size_description() -> String {
    format!(
        "EFI system partition size (e.g. `128MiB`), a whole number of MiB and at least {} (FAT32 needs 65525 clusters). It holds systemd-boot and the UKI, and with `slots = \"ab\"` room for an update's UKI (a quarter larger than this one): about 64MiB for the shipped profiles; a build whose files do not fit names the size it needs.",
        crate::validate::MIN_ESP
    )
}

/// `[signing]`
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSigning {
    /// Private signing key file (relative to the profile); the key is never put in the image.
    pub key: Option<Sp<String>>,
    /// Public key file (PEM, Ed25519, as `appliance key generate` writes it): the release key an A/B image accepts update bundles from (built into its plan). Without it, the public half of `appliance build --key`.
    pub public_key: Option<Sp<String>>,
    /// Sign the UKI for UEFI Secure Boot.
    pub secure_boot: Option<Sp<bool>>,
}
