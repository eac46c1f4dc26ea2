//! The configuration of one connection: plain values the caller builds
//! (later: from the policy blob), checked once by [`Config::validate`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::crypto::{Aead, Group, PinnedPublicKey, PreSharedKey, Prf, SigningKey};
use crate::wire::{AuthMethod, IdRepr, IdType, TrafficSelector};

use super::proposal::{describe_esp, describe_ike};
use super::Error;

/// An identity as sent in IDi/IDr (RFC 7296 §3.5).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// ID_FQDN: a host name; compared without regard to ASCII case.
    Fqdn(String),
    /// ID_IPV4_ADDR or ID_IPV6_ADDR.
    Addr(IpAddr),
    /// Any other type, as received from a peer (never configured).
    Other {
        /// ID Type.
        id_type: IdType,
        /// Identification Data.
        data: Vec<u8>,
    },
}

impl Identity {
    /// The identity an ID payload names.
    pub fn from_payload(id_type: IdType, data: &[u8]) -> Identity {
        match id_type {
            IdType::FQDN => match std::str::from_utf8(data) {
                Ok(s) if !s.is_empty() => Identity::Fqdn(s.to_owned()),
                _ => Identity::Other {
                    id_type,
                    data: data.to_vec(),
                },
            },
            IdType::IPV4_ADDR => match <[u8; 4]>::try_from(data) {
                Ok(a) => Identity::Addr(IpAddr::V4(Ipv4Addr::from(a))),
                Err(_) => Identity::Other {
                    id_type,
                    data: data.to_vec(),
                },
            },
            IdType::IPV6_ADDR => match <[u8; 16]>::try_from(data) {
                Ok(a) => Identity::Addr(IpAddr::V6(Ipv6Addr::from(a))),
                Err(_) => Identity::Other {
                    id_type,
                    data: data.to_vec(),
                },
            },
            _ => Identity::Other {
                id_type,
                data: data.to_vec(),
            },
        }
    }

    /// The ID payload content.
    pub fn to_repr(&self) -> IdRepr {
        match self {
            Identity::Fqdn(s) => IdRepr {
                id_type: IdType::FQDN,
                data: s.as_bytes().to_vec(),
            },
            Identity::Addr(IpAddr::V4(a)) => IdRepr {
                id_type: IdType::IPV4_ADDR,
                data: a.octets().to_vec(),
            },
            Identity::Addr(IpAddr::V6(a)) => IdRepr {
                id_type: IdType::IPV6_ADDR,
                data: a.octets().to_vec(),
            },
            Identity::Other { id_type, data } => IdRepr {
                id_type: *id_type,
                data: data.clone(),
            },
        }
    }

    /// Whether `received` is this (configured) identity. FQDNs compare
    /// without regard to ASCII case.
    pub fn matches(&self, received: &Identity) -> bool {
        match (self, received) {
            (Identity::Fqdn(a), Identity::Fqdn(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A peer's name may hold anything: escape it and bound it for
            // the log.
            Identity::Fqdn(s) => {
                let shown: String = s.chars().take(255).collect();
                write!(f, "fqdn:{}", shown.escape_debug())?;
                if shown.len() < s.len() {
                    f.write_str("...")?;
                }
                Ok(())
            }
            Identity::Addr(a) => write!(f, "addr:{a}"),
            Identity::Other { id_type, data } => {
                write!(f, "{id_type}:")?;
                for b in data.iter().take(64) {
                    write!(f, "{b:02x}")?;
                }
                if data.len() > 64 {
                    f.write_str("...")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

/// How both sides authenticate (the same method both ways).
pub enum Auth {
    /// A pre-shared key (AUTH method 2).
    Psk(PreSharedKey),
    /// Digital signatures (AUTH method 14, RFC 7427): our key, and the
    /// peer's public key pinned out of band (no CERT payload).
    Signature {
        /// Our private key.
        key: SigningKey,
        /// The peer's public key.
        peer: PinnedPublicKey,
    },
}

impl Auth {
    /// The AUTH method we send and expect.
    pub fn method(&self) -> AuthMethod {
        match self {
            Auth::Psk(_) => AuthMethod::SHARED_KEY_MIC,
            Auth::Signature { .. } => AuthMethod::DIGITAL_SIGNATURE,
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Psk(_) => f.write_str("Auth::Psk([redacted])"),
            Auth::Signature { key, peer } => f
                .debug_struct("Auth::Signature")
                .field("key", key)
                .field("peer", peer)
                .finish(),
        }
    }
}

/// One IKE SA proposal: an AEAD for the SK payload, a PRF and a key
/// exchange method (RFC 8247 choices).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IkeProposal {
    /// Encryption (AEAD; no integrity transform).
    pub aead: Aead,
    /// Pseudorandom function.
    pub prf: Prf,
    /// Key exchange method.
    pub group: Group,
}

impl fmt::Display for IkeProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe_ike(*self))
    }
}

/// One ESP proposal: an AEAD and whether sequence numbers are extended
/// (64-bit, RFC 4303 §2.2.1; peers such as strongSwan's kernel-libipsec
/// have only 32-bit ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EspProposal {
    /// Encryption (AEAD).
    pub aead: Aead,
    /// Extended sequence numbers.
    pub esn: bool,
}

impl fmt::Display for EspProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe_esp(*self))
    }
}

/// Lifetimes of a CHILD SA, passed to the data plane with the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChildLifetimes {
    /// When to rekey (soft lifetime).
    pub rekey_after: Duration,
    /// When the SA must no longer be used (hard lifetime).
    pub expire_after: Duration,
}

/// The initiator's retransmissions: the n-th timeout (from 0) is
/// `first_timeout × (backoff_tenths / 10)^n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Retransmit {
    /// The first timeout.
    pub first_timeout: Duration,
    /// The growth factor in tenths (18: ×1.8).
    pub backoff_tenths: u32,
    /// How many times a request is sent in all (first send included);
    /// when the timeout after the last send expires, the SA fails.
    pub sends: u32,
}

impl Retransmit {
    /// The timeout after the `n`-th send (0 for the first).
    pub fn timeout(&self, n: u32) -> Duration {
        let mut ms = u64::try_from(self.first_timeout.as_millis()).unwrap_or(u64::MAX);
        for _ in 0..n {
            ms = ms.saturating_mul(u64::from(self.backoff_tenths)) / 10;
            // An hour is plenty: keep the arithmetic far from overflow.
            ms = ms.min(3_600_000);
        }
        Duration::from_millis(ms)
    }
}

/// When the responder demands a COOKIE (RFC 7296 §2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CookiePolicy {
    /// Demand a cookie when this many half-open IKE SAs exist in all
    /// (strongSwan's `cookie_threshold`, default 30). 0: always.
    pub global_threshold: u32,
    /// Demand a cookie when this many half-open IKE SAs exist from the
    /// requester's address (strongSwan's `cookie_threshold_ip`, default 3).
    pub per_address_threshold: u32,
    /// How long a cookie secret is current; a cookie made with the
    /// previous secret is still accepted for as long again.
    pub secret_lifetime: Duration,
}

/// The connection: who we are, whom we talk to, how, and what for.
#[derive(Debug)]
pub struct Config {
    /// Our address and port (the initiator sends from here).
    pub local: SocketAddr,
    /// The peer's address and port (the initiator sends there).
    pub remote: SocketAddr,
    /// Our identity (IDi or IDr).
    pub local_id: Identity,
    /// The peer's identity; its ID payload must match.
    pub remote_id: Identity,
    /// Authentication, both ways.
    pub auth: Auth,
    /// IKE proposals, most preferred first. The responder chooses in this
    /// order.
    pub ike_proposals: Vec<IkeProposal>,
    /// ESP proposals for the CHILD SA, most preferred first.
    pub esp_proposals: Vec<EspProposal>,
    /// Traffic selectors of our side (TSi when initiating) for the first
    /// tunnel (tunnel 0), whose CHILD SA IKE_AUTH creates.
    pub local_ts: Vec<TrafficSelector>,
    /// Traffic selectors of the peer's side for tunnel 0.
    pub remote_ts: Vec<TrafficSelector>,
    /// Further tunnels with this peer (tunnels 1, 2, …): each its own CHILD
    /// SA in the same IKE SA, created with CREATE_CHILD_SA once the IKE SA
    /// is up (by the side that initiated it) and again whenever one is lost.
    pub more_tunnels: Vec<Selectors>,
    /// CHILD SA lifetimes.
    pub child_lifetimes: ChildLifetimes,
    /// Initiator retransmissions.
    pub retransmit: Retransmit,
    /// How long a responder keeps a half-open IKE SA (strongSwan's
    /// `half_open_timeout`, default 30 s), and how long it keeps the last
    /// response of a closed one for retransmitted requests.
    pub half_open_timeout: Duration,
    /// Responder COOKIE policy.
    pub cookies: CookiePolicy,
    /// Perfect forward secrecy for CHILD SAs created or rekeyed with
    /// CREATE_CHILD_SA: the key exchange method offered and demanded
    /// (strongSwan's `esp_proposals = …-x25519-…`), or `None` for keys
    /// from SK_d and the nonces alone. The first CHILD SA, created in
    /// IKE_AUTH, never has its own key exchange (RFC 7296 §1.2).
    pub pfs: Option<Group>,
    /// When to rekey the IKE SA (strongSwan's `rekey_time`, default 4 h);
    /// `None`: never (it lives as long as the peer keeps it).
    pub ike_rekey_after: Option<Duration>,
    /// Rekey times are drawn up to this share (in percent) earlier than
    /// configured, so that two peers with the same lifetimes rarely start
    /// at the same moment (strongSwan's `rand_time`, 10 % here).
    pub rekey_jitter_percent: u8,
    /// How long the inbound half of a replaced CHILD SA is kept after it
    /// was deleted, for packets still in flight (strongSwan's
    /// `delete_rekeyed_delay`, 5 s).
    pub rekeyed_delete_delay: Duration,
    /// Dead peer detection: an empty INFORMATIONAL request after this long
    /// without an authenticated message from the peer; if it goes
    /// unanswered through every retransmission, the IKE SA and its CHILD
    /// SAs are deleted. `None`: off.
    pub dpd_delay: Option<Duration>,
    /// Force UDP encapsulation (IKE on port 4500, ESP in UDP) even without a
    /// NAT, for paths that drop IP protocol 50 (strongSwan's `encap = yes`):
    /// our NAT detection pretends we are behind one.
    pub force_udp_encapsulation: bool,
}

/// The traffic selectors of one tunnel: our side's and the peer's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selectors {
    /// Our side (TSi when initiating).
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's side.
    pub remote_ts: Vec<TrafficSelector>,
}

/// At most this many tunnels (CHILD SAs in service at once) per connection.
pub const MAX_TUNNELS: usize = 16;

/// A selector for all traffic of one address.
pub fn host_selector(addr: IpAddr) -> TrafficSelector {
    TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: u16::MAX,
        start: addr,
        end: addr,
    }
}

impl Config {
    /// A configuration with this project's defaults: IKE proposals
    /// `aes256gcm16-prfsha256-x25519`, `chacha20poly1305-prfsha256-x25519`,
    /// `aes256gcm16-prfsha256-ecp256`; ESP `aes256gcm16-noesn`,
    /// `chacha20poly1305-noesn`; host-to-host selectors (the two addresses,
    /// any protocol); CHILD SA rekey after 1 h, expiry after 1 h 10 min;
    /// retransmissions after 1 s × 1.8ⁿ, 5 sends; half-open timeout 30 s;
    /// cookies above 30 half-open SAs or 3 from one address, secrets
    /// rotated every 2 min; no PFS for rekeyed CHILD SAs; IKE SA rekeyed
    /// after 4 h; rekey times up to 10 % early; a replaced CHILD SA's
    /// inbound half kept 5 s; dead peer detection after 30 s of silence.
    pub fn new(
        local: SocketAddr,
        remote: SocketAddr,
        local_id: Identity,
        remote_id: Identity,
        auth: Auth,
    ) -> Config {
        Config {
            local,
            remote,
            local_id,
            remote_id,
            auth,
            ike_proposals: vec![
                IkeProposal {
                    aead: Aead::AesGcm16_256,
                    prf: Prf::HmacSha2_256,
                    group: Group::Curve25519,
                },
                IkeProposal {
                    aead: Aead::ChaCha20Poly1305,
                    prf: Prf::HmacSha2_256,
                    group: Group::Curve25519,
                },
                IkeProposal {
                    aead: Aead::AesGcm16_256,
                    prf: Prf::HmacSha2_256,
                    group: Group::Ecp256,
                },
            ],
            esp_proposals: vec![
                EspProposal {
                    aead: Aead::AesGcm16_256,
                    esn: false,
                },
                EspProposal {
                    aead: Aead::ChaCha20Poly1305,
                    esn: false,
                },
            ],
            local_ts: vec![host_selector(local.ip())],
            remote_ts: vec![host_selector(remote.ip())],
            more_tunnels: Vec::new(),
            child_lifetimes: ChildLifetimes {
                rekey_after: Duration::from_secs(3600),
                expire_after: Duration::from_secs(4200),
            },
            retransmit: Retransmit {
                first_timeout: Duration::from_secs(1),
                backoff_tenths: 18,
                sends: 5,
            },
            half_open_timeout: Duration::from_secs(30),
            cookies: CookiePolicy {
                global_threshold: 30,
                per_address_threshold: 3,
                secret_lifetime: Duration::from_secs(120),
            },
            pfs: None,
            ike_rekey_after: Some(Duration::from_secs(4 * 3600)),
            rekey_jitter_percent: 10,
            rekeyed_delete_delay: Duration::from_secs(5),
            dpd_delay: Some(Duration::from_secs(30)),
            force_udp_encapsulation: false,
        }
    }

    /// How many tunnels (CHILD SAs kept up) the connection has.
    pub fn tunnel_count(&self) -> usize {
        1 + self.more_tunnels.len()
    }

    /// Tunnel `i`'s selectors, ours and the peer's.
    pub fn tunnel(&self, i: usize) -> Option<(&[TrafficSelector], &[TrafficSelector])> {
        match i {
            0 => Some((&self.local_ts, &self.remote_ts)),
            _ => self
                .more_tunnels
                .get(i - 1)
                .map(|t| (&t.local_ts[..], &t.remote_ts[..])),
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field and what is allowed.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &'static str, problem: String| Err(Error::Config { field, problem });
        for (field, id) in [("local_id", &self.local_id), ("remote_id", &self.remote_id)] {
            match id {
                Identity::Fqdn(s) if s.is_empty() || s.len() > 255 || !s.is_ascii() => {
                    return bad(field, "an FQDN must be 1 to 255 ASCII characters".into())
                }
                Identity::Other { .. } => {
                    return bad(
                        field,
                        "only FQDN and address identities can be configured".into(),
                    )
                }
                _ => {}
            }
        }
        if self.ike_proposals.is_empty() || self.ike_proposals.len() > 64 {
            return bad("ike_proposals", "1 to 64 proposals".into());
        }
        if self.esp_proposals.is_empty() || self.esp_proposals.len() > 64 {
            return bad("esp_proposals", "1 to 64 proposals".into());
        }
        if self.tunnel_count() > MAX_TUNNELS {
            return bad(
                "more_tunnels",
                format!("at most {MAX_TUNNELS} tunnels in all"),
            );
        }
        let mut all = vec![("local_ts", &self.local_ts), ("remote_ts", &self.remote_ts)];
        for t in &self.more_tunnels {
            all.push(("more_tunnels.local_ts", &t.local_ts));
            all.push(("more_tunnels.remote_ts", &t.remote_ts));
        }
        for (field, ts) in all {
            if ts.is_empty() || ts.len() > 64 {
                return bad(field, "1 to 64 traffic selectors".into());
            }
            for t in ts {
                if t.start.is_ipv4() != t.end.is_ipv4() || t.start > t.end {
                    return bad(
                        field,
                        format!(
                            "{}-{}: addresses of one family, start not above end",
                            t.start, t.end
                        ),
                    );
                }
                if t.start_port > t.end_port {
                    return bad(
                        field,
                        format!("ports {}-{}: start above end", t.start_port, t.end_port),
                    );
                }
            }
        }
        if self.child_lifetimes.rekey_after > self.child_lifetimes.expire_after {
            return bad(
                "child_lifetimes",
                "rekey_after must not be later than expire_after".into(),
            );
        }
        let r = self.retransmit;
        if r.sends == 0 || r.sends > 32 || r.first_timeout.is_zero() || r.backoff_tenths < 10 {
            return bad(
                "retransmit",
                "1 to 32 sends, a non-zero first timeout, a backoff of at least 10 tenths".into(),
            );
        }
        if self.rekey_jitter_percent > 50 {
            return bad("rekey_jitter_percent", "0 to 50 percent".into());
        }
        if self.child_lifetimes.rekey_after.is_zero()
            || self.ike_rekey_after.is_some_and(|d| d.is_zero())
            || self.dpd_delay.is_some_and(|d| d.is_zero())
        {
            return bad(
                "child_lifetimes",
                "rekey times and the DPD delay must be non-zero".into(),
            );
        }
        if self.half_open_timeout.is_zero() || self.cookies.secret_lifetime.is_zero() {
            return bad(
                "half_open_timeout",
                "the half-open timeout and the cookie secret lifetime must be non-zero".into(),
            );
        }
        Ok(())
    }
}
