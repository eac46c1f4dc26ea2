//! The crate's single error type.

use crate::model::{Aead, TunnelId};

/// Everything that can be wrong with a policy blob or a policy value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// The IKE section is inconsistent.
    #[error("IKE peer {peer:?}: {problem}")]
    Ike {
        /// The peer (empty for the section's own fields).
        peer: String,
        /// What is wrong.
        problem: String,
    },
    /// The input does not start with the magic bytes.
    #[error("not a policy blob: bad magic (expected b\"VDPOL\"); pass the file produced by the policy compiler")]
    BadMagic,
    /// The blob was written in another format version.
    #[error("unsupported policy blob format version {found} (this Viaduct reads version {expected}); rebuild the policy with a matching compiler")]
    UnsupportedVersion {
        /// Version found in the blob.
        found: u16,
        /// Version this decoder reads.
        expected: u16,
    },
    /// The input ended before a field was complete.
    #[error(
        "policy blob truncated while reading {what}; the file is incomplete, rebuild or re-copy it"
    )]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// The digest appended to the body does not match.
    #[error("policy blob corrupted: digest mismatch")]
    DigestMismatch,
    /// Bytes follow the digest or the body's last field.
    #[error("policy blob has {count} unexpected trailing bytes after the {after}; the file is corrupted")]
    TrailingBytes {
        /// Number of bytes left over.
        count: usize,
        /// What they follow.
        after: &'static str,
    },
    /// An enum tag, flag or address family has an unknown value.
    #[error("policy blob has invalid {what} value {value}; the file is corrupted or from a newer compiler")]
    InvalidTag {
        /// The field.
        what: &'static str,
        /// The value found.
        value: u64,
    },
    /// A string is not UTF-8.
    #[error("policy blob has a {what} that is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        what: &'static str,
    },
    /// A string or list is longer than the format allows.
    #[error("{what} is too long ({len} > {max}); shorten it")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A prefix length exceeds the address width.
    #[error("prefix {addr}/{len} in {context}: length exceeds the address width")]
    PrefixLength {
        /// The address.
        addr: std::net::IpAddr,
        /// The prefix length.
        len: u8,
        /// Where it appears.
        context: String,
    },
    /// A prefix has bits set beyond its length.
    #[error("prefix {addr}/{len} in {context} has host bits set; write the network address")]
    PrefixHostBits {
        /// The address.
        addr: std::net::IpAddr,
        /// The prefix length.
        len: u8,
        /// Where it appears.
        context: String,
    },
    /// A port range has start > end.
    #[error("port range {start}-{end} in {context} is empty; the start must not exceed the end")]
    PortRange {
        /// First port.
        start: u16,
        /// Last port.
        end: u16,
        /// Where it appears.
        context: String,
    },
    /// Addresses of different families are mixed where one family is required.
    #[error("{context} mixes IPv4 and IPv6 addresses; use one family")]
    FamilyMismatch {
        /// Where.
        context: String,
    },
    /// Two tunnels share an id.
    #[error("tunnel id {0} is used more than once; tunnel ids must be unique")]
    DuplicateTunnelId(TunnelId),
    /// Two items share a name.
    #[error("{kind} name {name:?} is used more than once; names must be unique")]
    DuplicateName {
        /// Kind of item.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// An SPD entry references an unknown tunnel.
    #[error("SPD entry {entry:?} protects with tunnel id {tunnel}, which does not exist; define the tunnel or fix the id")]
    UnknownTunnel {
        /// The SPD entry.
        entry: String,
        /// The tunnel id.
        tunnel: TunnelId,
    },
    /// An SPI is reserved or used twice.
    #[error("tunnel {tunnel:?}: SPI {spi:#010x} is {why}; choose another SPI")]
    BadSpi {
        /// The tunnel.
        tunnel: String,
        /// The SPI.
        spi: u32,
        /// Why it is rejected.
        why: &'static str,
    },
    /// Key material length does not match the AEAD.
    #[error("tunnel {tunnel:?}: {direction} key material is {found} bytes but {aead} needs {expected} (key || 4-byte salt)")]
    KeyLength {
        /// The tunnel.
        tunnel: String,
        /// "inbound" / "outbound".
        direction: &'static str,
        /// The AEAD.
        aead: Aead,
        /// Required length.
        expected: usize,
        /// Length found.
        found: usize,
    },
    /// A tunnel's local address is not one of the gateway's.
    #[error("tunnel {tunnel:?}: local address {addr} is not among the gateway's local addresses")]
    NotLocal {
        /// The tunnel.
        tunnel: String,
        /// The address.
        addr: std::net::IpAddr,
    },
    /// Replay window outside the supported range.
    #[error("tunnel {tunnel:?}: replay window {size} is outside {min}..={max} packets")]
    ReplayWindow {
        /// The tunnel.
        tunnel: String,
        /// Requested size.
        size: u32,
        /// Minimum.
        min: u32,
        /// Maximum.
        max: u32,
    },
    /// A soft lifetime exceeds its hard lifetime.
    #[error("tunnel {tunnel:?}: soft {what} lifetime exceeds the hard one; soft must come first")]
    SoftAfterHard {
        /// The tunnel.
        tunnel: String,
        /// bytes / packets / seconds.
        what: &'static str,
    },
    /// A tunnel has no traffic selector on one side.
    #[error("tunnel {tunnel:?} has no {side} traffic selectors; add at least one")]
    NoSelectors {
        /// The tunnel.
        tunnel: String,
        /// local / remote.
        side: &'static str,
    },
    /// Two manually keyed SAs share a cipher key.
    #[error("tunnel {tunnel:?}: the {direction} SA's key is also the {other_direction} SA's key of tunnel {other_tunnel:?}; every SA needs its own key (one key twice repeats AEAD nonces)")]
    KeyReuse {
        /// The tunnel of the second SA found.
        tunnel: String,
        /// Its direction: "inbound" / "outbound".
        direction: &'static str,
        /// The tunnel of the first SA with that key (may be the same tunnel).
        other_tunnel: String,
        /// Its direction.
        other_direction: &'static str,
    },
    /// An outer DSCP does not fit its 6 bits.
    #[error("tunnel {tunnel:?}: outer DSCP {dscp} is not a DSCP (0..=63)")]
    Dscp {
        /// The tunnel.
        tunnel: String,
        /// The value.
        dscp: u8,
    },
    /// TFC padding sizes that the Viaduct cannot use.
    #[error("tunnel {tunnel:?}: TFC padding sizes: {why}")]
    TfcSizes {
        /// The tunnel.
        tunnel: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A TCP flags match that cannot be right.
    #[error("filter rule {rule:?} {why}")]
    TcpFlags {
        /// The rule.
        rule: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A static route or the learn section is invalid.
    #[error("{what}: {why}")]
    Route {
        /// Which route or setting.
        what: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A filter rule's states or the connection table's size are out of range.
    #[error("{what}: {why}")]
    Conntrack {
        /// Which rule or setting.
        what: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A value has more than one encoding and this one is not the canonical.
    #[error("policy blob has {what} in a non-canonical form (unsorted, overlapping or adjacent); the file is corrupted or was not written by the compiler")]
    NotCanonical {
        /// The field.
        what: &'static str,
    },
    /// The IDS section is invalid.
    #[error("IDS signatures: {0}")]
    Ids(String),
}
