//! What the engine asks its caller to do ([`Action`]) and what it reports
//! ([`Event`]): datagrams to send, CHILD SAs to install or delete, the next
//! timer, and events for the log.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::crypto::{Aead, ChildSaKeys, EspKeyMaterial, Role};
use crate::wire::{ChildSpi, ExchangeType, IkeSpi, NotifyType, TrafficSelector};

use super::config::{ChildLifetimes, Identity, IkeProposal};
use super::failure::{ChildFailure, Dropped, Failure};

/// A point in time on the caller's monotonic clock, in milliseconds since an
/// arbitrary origin. The engine never reads a clock: every call takes `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// `ms` milliseconds after the clock's origin.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the clock's origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// The two endpoints of an IKE datagram, as the caller's socket sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    /// Our address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
}

/// The two SPIs naming an IKE SA (SPIr is zero until the responder chose it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IkeSaId {
    /// SPIi, chosen by the original initiator.
    pub initiator: IkeSpi,
    /// SPIr, chosen by the original responder.
    pub responder: IkeSpi,
}

impl fmt::Display for IkeSaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_i {}_r", self.initiator, self.responder)
    }
}

/// Whether a NAT sits between the peers, as NAT_DETECTION_* showed
/// (RFC 7296 §2.23). Both false when the peer sent no NAT detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NatStatus {
    /// Our address or port as the peer saw it differs from ours.
    pub local_behind_nat: bool,
    /// The peer's address or port differs from what it announced.
    pub remote_behind_nat: bool,
}

impl NatStatus {
    /// Whether either side is behind a NAT (IKE floats to port 4500 and ESP
    /// is encapsulated in UDP).
    pub fn any(self) -> bool {
        self.local_behind_nat || self.remote_behind_nat
    }
}

/// Something the caller must do, in order.
#[derive(Debug)]
pub enum Action {
    /// Send a datagram (the UDP payload; on port 4500 the caller prefixes
    /// the four-byte non-ESP marker, RFC 3948 §2.2).
    Send(Datagram),
    /// Install the two ESP SAs of a CHILD SA.
    InstallChildSa(Box<ChildSaInstall>),
    /// Remove the two ESP SAs of a CHILD SA installed earlier.
    DeleteChildSa(ChildSaDelete),
    /// Send the CHILD SA's traffic with this (installed) CHILD SA's
    /// outbound SA from now on, instead of the one it replaces. Comes for
    /// a CHILD SA installed with [`ChildSaInstall::outbound_active`] false:
    /// the responder of a rekey keeps sending on the old SA until the
    /// initiator, which may not have the new one yet, deletes the old one.
    UseOutbound(ChildSaId),
    /// Call [`super::Ike::tick`] at (or after) this time. Every call of
    /// [`super::Ike`] ends with one if any timer is pending, replacing the
    /// earlier one; a call that ends without one leaves no timer pending.
    /// A tick that comes early does nothing harmful.
    SetTimer(Timestamp),
    /// Something to log.
    Event(Event),
}

/// An established IKE SA as a `status` display shows it ([`super::Ike::status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeSaStatus {
    /// Its SPIs.
    pub ike_sa: IkeSaId,
    /// Our role as its original initiator or responder.
    pub role: Role,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// The negotiated transforms.
    pub proposal: IkeProposal,
    /// Time since it was established.
    pub age: Duration,
    /// Time until we rekey it (`None`: not ours to rekey).
    pub rekey_in: Option<Duration>,
    /// IKE and ESP travel in UDP 4500 (a NAT was found, or forced).
    pub udp_encapsulation: bool,
    /// Its CHILD SAs.
    pub children: Vec<ChildSaStatus>,
}

/// A CHILD SA in an [`IkeSaStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildSaStatus {
    /// Our SPI (the peer sends with it).
    pub inbound: ChildSpi,
    /// The peer's SPI (we send with it).
    pub outbound: ChildSpi,
    /// `installed`, `rekeying`, `rekeyed`, `deleting` or `retiring`.
    pub state: &'static str,
    /// Whether the data plane sends with it.
    pub outbound_active: bool,
    /// Time since it was installed.
    pub age: Duration,
    /// Time until we rekey it (`None`: not ours to do now).
    pub rekey_in: Option<Duration>,
    /// Time until its hard lifetime.
    pub expires_in: Duration,
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Send from this address and port, to the other.
    pub path: Path,
    /// The IKE message.
    pub bytes: Vec<u8>,
}

/// One direction of a CHILD SA: the SPI and the ESP key material
/// (key ‖ 4-byte salt).
#[derive(Debug)]
pub struct EspSa<'a> {
    /// The SPI in the ESP header of this direction's packets.
    pub spi: ChildSpi,
    /// The key material of this direction.
    pub key: &'a EspKeyMaterial,
}

/// Everything the data plane needs to install a CHILD SA (one ESP SA per
/// direction). The keys are reached through [`ChildSaInstall::outbound`] and
/// [`ChildSaInstall::inbound`]; they are zeroized when this value is dropped.
#[derive(Debug)]
pub struct ChildSaInstall {
    /// The IKE SA that negotiated it.
    pub ike_sa: IkeSaId,
    /// The tunnel it carries: 0 for the configuration's `local_ts` and
    /// `remote_ts`, `i` for `more_tunnels[i - 1]`.
    pub tunnel: usize,
    /// Our SPI: the peer sends with it, we receive.
    pub inbound_spi: ChildSpi,
    /// The peer's SPI: we send with it.
    pub outbound_spi: ChildSpi,
    /// The ESP transform.
    pub aead: Aead,
    /// Extended (64-bit) sequence numbers.
    pub esn: bool,
    /// Traffic we send through it (our side's selectors, narrowed).
    pub local_ts: Vec<TrafficSelector>,
    /// Traffic the peer sends through it.
    pub remote_ts: Vec<TrafficSelector>,
    /// Lifetimes from our configuration.
    pub lifetimes: ChildLifetimes,
    /// The tunnel endpoints (the outer addresses), and for UDP
    /// encapsulation the ports.
    pub path: Path,
    /// ESP in UDP (RFC 3948) on `path`'s ports: a NAT was detected.
    pub udp_encapsulation: bool,
    /// Whether to send with it at once. False for the responder of a
    /// rekey: install the inbound SA now, send on the old CHILD SA until
    /// [`Action::UseOutbound`] names this one.
    pub outbound_active: bool,
    /// The CHILD SA (by our inbound SPI) this one replaces, if it comes
    /// from a rekey.
    pub replaces: Option<ChildSpi>,
    pub(crate) keys: ChildSaKeys,
    pub(crate) role: Role,
}

impl ChildSaInstall {
    /// The SA we send with: the peer's SPI and our outbound key.
    pub fn outbound(&self) -> EspSa<'_> {
        EspSa {
            spi: self.outbound_spi,
            key: self.keys.for_role(self.role).0,
        }
    }

    /// The SA we receive with: our SPI and our inbound key.
    pub fn inbound(&self) -> EspSa<'_> {
        EspSa {
            spi: self.inbound_spi,
            key: self.keys.for_role(self.role).1,
        }
    }

    /// Our role in the exchange that created the CHILD SA.
    pub fn role(&self) -> Role {
        self.role
    }
}

/// A CHILD SA to remove.
pub type ChildSaDelete = ChildSaId;

/// A CHILD SA: its IKE SA and its two SPIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChildSaId {
    /// The IKE SA that negotiated it.
    pub ike_sa: IkeSaId,
    /// Our SPI.
    pub inbound_spi: ChildSpi,
    /// The peer's SPI.
    pub outbound_spi: ChildSpi,
}

/// What an established IKE SA is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Established {
    /// Its SPIs.
    pub ike_sa: IkeSaId,
    /// Our role.
    pub role: Role,
    /// The peer's authenticated identity.
    pub remote_id: Identity,
    /// The transforms negotiated.
    pub proposal: IkeProposal,
    /// Where IKE runs now (after any float to port 4500).
    pub path: Path,
    /// NAT detection's findings.
    pub nat: NatStatus,
}

/// Something to log. None of them carries a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The IKE SA is authenticated both ways.
    IkeSaEstablished(Established),
    /// The IKE SA is up, but its first CHILD SA was not created.
    ChildSaRefused {
        /// The IKE SA.
        ike_sa: IkeSaId,
        /// Our role.
        role: Role,
        /// Why.
        failure: ChildFailure,
    },
    /// An IKE SA (or its negotiation) failed and is gone.
    Failed {
        /// The IKE SA (SPIr zero if the responder never chose one).
        ike_sa: IkeSaId,
        /// Our role.
        role: Role,
        /// Why.
        failure: Failure,
    },
    /// The responder answered an IKE_SA_INIT request without keeping any
    /// state: a COOKIE demand or an error notification.
    InitAnsweredStatelessly {
        /// The requester.
        remote: SocketAddr,
        /// The initiator's SPI.
        initiator_spi: IkeSpi,
        /// What was sent.
        notify: NotifyType,
        /// For errors: why.
        failure: Option<Failure>,
    },
    /// The peer deleted the IKE SA (or told us it could not authenticate
    /// us after all), and its CHILD SAs went with it.
    Closed {
        /// The IKE SA.
        ike_sa: IkeSaId,
        /// Our role.
        role: Role,
        /// Why.
        reason: Closed,
    },
    /// A datagram was ignored.
    Dropped {
        /// Its sender.
        remote: SocketAddr,
        /// Why.
        reason: Dropped,
    },
    /// A CHILD SA was replaced by a new one (CREATE_CHILD_SA with
    /// REKEY_SA), by either side.
    ChildSaRekeyed {
        /// The CHILD SA replaced.
        old: ChildSaId,
        /// Its successor.
        new: ChildSaId,
        /// Whether we initiated the exchange.
        by_us: bool,
    },
    /// A CHILD SA was created in an established IKE SA (CREATE_CHILD_SA
    /// without REKEY_SA).
    ChildSaCreated {
        /// The new CHILD SA.
        child: ChildSaId,
        /// Whether we initiated the exchange.
        by_us: bool,
    },
    /// A CHILD SA is gone (its inbound half may linger for
    /// [`super::Config::rekeyed_delete_delay`]).
    ChildSaDeleted {
        /// The CHILD SA.
        child: ChildSaId,
        /// Why.
        reason: ChildDeleted,
    },
    /// Both sides rekeyed the same SA at once (RFC 7296 §2.8.1, §2.8.2);
    /// the SA made with the lowest of the four nonces is redundant.
    RekeyCollision {
        /// The IKE SA the exchanges ran on.
        ike_sa: IkeSaId,
        /// What was rekeyed twice.
        what: Rekeyed,
        /// Whether the SA our own exchange created survives.
        ours_survives: bool,
    },
    /// A rekey or create exchange we started did not create an SA; the SA
    /// it was to replace stays (a rekey is retried later).
    RekeyFailed {
        /// The IKE SA.
        ike_sa: IkeSaId,
        /// What we tried to rekey.
        what: Rekeyed,
        /// Why.
        failure: ChildFailure,
    },
    /// The IKE SA was replaced by a new one (CREATE_CHILD_SA with an IKE
    /// proposal), which took over its CHILD SAs.
    IkeSaRekeyed {
        /// The IKE SA replaced.
        old: IkeSaId,
        /// Its successor.
        new: IkeSaId,
        /// Whether we initiated the exchange.
        by_us: bool,
    },
    /// A request was sent again: the timer ran out before a response came.
    Retransmitted {
        /// The IKE SA.
        ike_sa: IkeSaId,
        /// The exchange.
        exchange: ExchangeType,
        /// How many times it has been sent now.
        sends: u32,
    },
}

/// What a rekey exchange was about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rekeyed {
    /// The CHILD SA with this inbound SPI of ours.
    Child(ChildSpi),
    /// A new CHILD SA (no predecessor).
    NewChild,
    /// The IKE SA.
    Ike,
}

impl fmt::Display for Rekeyed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rekeyed::Child(spi) => write!(f, "CHILD SA {spi}"),
            Rekeyed::NewChild => f.write_str("a new CHILD SA"),
            Rekeyed::Ike => f.write_str("the IKE SA"),
        }
    }
}

/// Why a CHILD SA was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildDeleted {
    /// It was replaced by a rekey and the replacement is in use.
    Rekeyed,
    /// It was redundant after a rekey collision.
    Redundant,
    /// The peer deleted it.
    ByPeer,
    /// We were asked to delete it.
    ByUs,
    /// It reached its hard lifetime without being replaced.
    Expired,
    /// Its IKE SA is gone (deleted, failed, or dead).
    IkeSaGone,
}

impl fmt::Display for ChildDeleted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChildDeleted::Rekeyed => "replaced by its rekeyed successor",
            ChildDeleted::Redundant => "redundant after a rekey collision",
            ChildDeleted::ByPeer => "deleted by the peer",
            ChildDeleted::ByUs => "deleted by us",
            ChildDeleted::Expired => "hard lifetime reached without a rekey",
            ChildDeleted::IkeSaGone => "its IKE SA is gone",
        })
    }
}

/// Why the peer closed an IKE SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// It sent a Delete payload for the IKE SA.
    DeletedByPeer,
    /// We deleted it (our Delete was answered, or went unanswered).
    DeletedByUs,
    /// It was replaced by a rekeyed IKE SA and then deleted.
    Rekeyed,
    /// It sent AUTHENTICATION_FAILED in an INFORMATIONAL exchange: it
    /// could not verify our AUTH (RFC 7296 §2.21.2).
    PeerRefusedOurAuthentication,
    /// It authenticated a new IKE SA with INITIAL_CONTACT: it started
    /// again and holds none of its earlier SAs (RFC 7296 §2.4).
    PeerRestarted,
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Closed::DeletedByPeer => "deleted by the peer",
            Closed::DeletedByUs => "deleted by us",
            Closed::Rekeyed => "replaced by its rekeyed successor",
            Closed::PeerRefusedOurAuthentication => {
                "the peer could not verify our authentication (AUTHENTICATION_FAILED)"
            }
            Closed::PeerRestarted => "the peer started again (INITIAL_CONTACT in a new IKE SA)",
        })
    }
}
