//! An authenticated IKE SA ([`EstablishedSa`]) and the tombstone of one
//! that failed or was deleted ([`Closing`]).
//!
//! # Two windows
//!
//! An established IKE SA is both a responder and a requester (RFC 7296
//! §2.3, window size 1 each way):
//!
//! - **The peer's requests** arrive with the message ID `peer_next`; the
//!   response to the last one is cached and sent again, byte for byte,
//!   for a retransmitted request, which is not processed twice.
//! - **Our requests** go one at a time ([`Outstanding`]), retransmitted
//!   on the timer; what is to be done next waits in a queue ([`Want`]):
//!   rekeying a CHILD SA or the IKE SA, deleting CHILD SAs or the IKE
//!   SA, a liveness check. A request that goes unanswered through every
//!   retransmission means the peer is gone: the IKE SA and its CHILD SAs
//!   are deleted ([`Failure::Timeout`]).
//!
//! # What the timer drives
//!
//! Each CHILD SA is rekeyed at its soft lifetime (drawn up to
//! [`super::Config::rekey_jitter_percent`] early) and deleted at its hard
//! lifetime if no successor took over; the IKE SA is rekeyed at
//! [`super::Config::ike_rekey_after`]; an empty INFORMATIONAL request
//! goes out after [`super::Config::dpd_delay`] without word from the
//! peer; the inbound half of a replaced CHILD SA lingers for
//! [`super::Config::rekeyed_delete_delay`].
//!
//! Rekeying itself (CREATE_CHILD_SA in both roles, collisions) is in
//! `rekey.rs`; deletes and liveness checks are here.

use std::collections::VecDeque;

/// How often a side behind a NAT sends a NAT-keepalive (RFC 3948 §4 suggests
/// 20 s; strongSwan's `keep_alive` default).
pub(crate) const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);

use crate::crypto::{IkeSaKeys, IvCounter, KeyExchange, Role};
use crate::wire::{
    Chain, ChildSpi, DeleteRepr, ExchangeType, IkeSpi, Message, NotifyRepr, NotifyType,
    PayloadRepr, ProtocolId, TrafficSelector,
};

use super::action::{
    Action, ChildDeleted, ChildSaId, Closed, Event, IkeSaId, NatStatus, Path, Timestamp,
};
use super::config::IkeProposal;
use super::engine::{Ctx, Outcome, Retx, State};
use super::failure::{Dropped, Failure};
use super::msg::{self, Collected};

/// The SPIs of an installed CHILD SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChildPair {
    pub(crate) inbound: ChildSpi,
    pub(crate) outbound: ChildSpi,
}

/// Where a CHILD SA stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChildState {
    /// Carrying traffic.
    Installed,
    /// Our CREATE_CHILD_SA rekeying it is outstanding.
    Rekeying,
    /// A successor exists; it goes when a Delete exchange for it completes
    /// (ours or the peer's), or at its hard lifetime.
    Rekeyed,
    /// Our Delete for it is queued or outstanding, for this reason.
    Deleting(ChildDeleted),
    /// Deleted; its inbound half lingers until then for packets in flight.
    Retiring(Timestamp),
}

/// A CHILD SA of this IKE SA, as far as IKE is concerned (the keys went to
/// the data plane and are not kept).
#[derive(Clone, Debug)]
pub(crate) struct Child {
    pub(crate) pair: ChildPair,
    /// The tunnel (index into the configuration's tunnels) it carries.
    pub(crate) tunnel: usize,
    /// Our side's selectors and the peer's, as narrowed.
    pub(crate) local_ts: Vec<TrafficSelector>,
    pub(crate) remote_ts: Vec<TrafficSelector>,
    /// When we start rekeying it (`None`: not ours to do now).
    pub(crate) rekey_at: Option<Timestamp>,
    /// Its hard lifetime.
    pub(crate) expire_at: Timestamp,
    pub(crate) state: ChildState,
    /// Whether the data plane has it (false once deleted there).
    pub(crate) in_data_plane: bool,
    /// Whether the data plane sends with it (false for the responder of its
    /// rekey until the predecessor is deleted).
    pub(crate) outbound_active: bool,
    /// The CHILD SA (our inbound SPI) that replaced it.
    pub(crate) successor: Option<ChildSpi>,
    /// A rekey collision (RFC 7296 §2.8.1): the peer rekeyed this CHILD SA
    /// while our own rekey of it was outstanding; the CHILD SA the peer's
    /// exchange made (our inbound SPI) and the lower nonce of that exchange.
    pub(crate) peer_rekey: Option<(ChildSpi, Vec<u8>)>,
    /// When it was installed.
    pub(crate) created: Timestamp,
}

impl Child {
    /// A CHILD SA created now: rekeyed at its soft lifetime less jitter.
    pub(crate) fn new(
        ctx: &mut Ctx<'_>,
        pair: ChildPair,
        tunnel: usize,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
        outbound_active: bool,
    ) -> Child {
        let l = ctx.config.child_lifetimes;
        Child {
            pair,
            tunnel,
            local_ts,
            remote_ts,
            rekey_at: Some(ctx.jittered(l.rekey_after)),
            expire_at: ctx.now.saturating_add(l.expire_after),
            state: ChildState::Installed,
            in_data_plane: true,
            outbound_active,
            successor: None,
            peer_rekey: None,
            created: ctx.now,
        }
    }

    /// It carries (or may carry) traffic: not being deleted.
    fn live(&self) -> bool {
        !matches!(
            self.state,
            ChildState::Deleting(_) | ChildState::Retiring(_)
        )
    }
}

/// Something we are to ask the peer, when no request of ours is
/// outstanding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// Rekey the CHILD SA with this inbound SPI.
    RekeyChild(ChildSpi),
    /// Create a CHILD SA (the last one was lost).
    NewChild,
    /// Rekey the IKE SA.
    RekeyIke,
    /// Delete the CHILD SA with this inbound SPI.
    DeleteChild(ChildSpi),
    /// Delete the IKE SA (and with it any CHILD SA it still has).
    DeleteIke,
    /// An empty INFORMATIONAL request: is the peer alive?
    Dpd,
}

/// Our CREATE_CHILD_SA for a CHILD SA.
pub(crate) struct ChildRequest {
    /// The CHILD SA rekeyed (our inbound SPI); `None`: a new CHILD SA.
    pub(crate) old: Option<ChildSpi>,
    /// The tunnel it is for.
    pub(crate) tunnel: usize,
    /// Our inbound SPI for the new one.
    pub(crate) spi: ChildSpi,
    pub(crate) ni: Vec<u8>,
    pub(crate) ke: Option<Box<dyn KeyExchange>>,
    pub(crate) local_ts: Vec<TrafficSelector>,
    pub(crate) remote_ts: Vec<TrafficSelector>,
}

/// Our CREATE_CHILD_SA for the IKE SA.
pub(crate) struct IkeRequest {
    /// Our SPI for the new IKE SA.
    pub(crate) spi: IkeSpi,
    pub(crate) ni: Vec<u8>,
    pub(crate) ke: Box<dyn KeyExchange>,
}

/// What our outstanding request is about.
pub(crate) enum Request {
    Child(Box<ChildRequest>),
    Ike(Box<IkeRequest>),
    /// Delete these CHILD SAs (our inbound SPIs).
    DeleteChildren(Vec<ChildSpi>),
    DeleteIke,
    Dpd,
}

/// Our request in flight.
pub(crate) struct Outstanding {
    pub(crate) message_id: u32,
    pub(crate) exchange: ExchangeType,
    pub(crate) bytes: Vec<u8>,
    pub(crate) retx: Retx,
    pub(crate) request: Request,
}

/// What is left of the IKE SA's own life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// In use.
    Live,
    /// Replaced by a rekeyed IKE SA that took its CHILD SAs; waiting for
    /// the peer's Delete (or sending ours), gone at the latest at `until`.
    Replaced { until: Timestamp },
    /// Our Delete of the IKE SA is queued or outstanding.
    Deleting,
}

/// The new IKE SA made by the peer's rekey that crossed ours (RFC 7296
/// §2.8.2), kept until our own exchange completes and the nonces decide.
pub(crate) struct PendingIke {
    pub(crate) sa: Box<EstablishedSa>,
    /// The lower nonce of the peer's exchange.
    pub(crate) lowest: Vec<u8>,
}

/// An authenticated IKE SA.
pub(crate) struct EstablishedSa {
    pub(crate) id: IkeSaId,
    /// Our role as the original initiator or responder: the I flag.
    pub(crate) role: Role,
    pub(crate) path: Path,
    pub(crate) keys: IkeSaKeys,
    pub(crate) iv: IvCounter,
    pub(crate) nat: NatStatus,
    pub(crate) proposal: IkeProposal,
    /// The message ID of the peer's next request.
    pub(crate) peer_next: u32,
    /// Our response to the peer's last request.
    pub(crate) last_response: Option<(u32, Vec<u8>)>,
    /// The message ID of our next request.
    pub(crate) next_id: u32,
    pub(crate) active: Option<Outstanding>,
    pub(crate) wanted: VecDeque<Want>,
    pub(crate) children: Vec<Child>,
    pub(crate) ike_rekey_at: Option<Timestamp>,
    /// When the peer last sent an authenticated message.
    pub(crate) last_heard: Timestamp,
    pub(crate) fate: Fate,
    pub(crate) pending_ike: Option<PendingIke>,
    /// The last CHILD SA was lost without our asking (hard lifetime,
    /// CHILD_SA_NOT_FOUND, the peer deleted it): the original initiator
    /// of the IKE SA creates a new one (the tunnel is wanted up, as
    /// strongSwan's `close_action = start`); the responder waits for it.
    pub(crate) recreate: bool,
    /// When to try creating it again after a failure.
    pub(crate) new_child_at: Option<Timestamp>,
    /// Tunnels whose new CHILD SA was refused, and when to ask again (the
    /// others are not held up meanwhile).
    pub(crate) child_retry: Vec<(usize, Timestamp)>,
    /// Behind a NAT (or forcing encapsulation): when to send the next
    /// NAT-keepalive (RFC 3948 §2.3) to hold the mapping open.
    pub(crate) keepalive_at: Option<Timestamp>,
    /// Both sides created a CHILD SA at once: the one the peer's exchange
    /// made (our inbound SPI) and the lower nonce of that exchange.
    pub(crate) new_child_collision: Option<(ChildSpi, Vec<u8>)>,
    /// When it was established.
    pub(crate) created: Timestamp,
}

impl EstablishedSa {
    /// An IKE SA just authenticated (message IDs after IKE_SA_INIT and
    /// IKE_AUTH) or just created by a rekey (`rekeyed`: IDs from 0).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        ctx: &mut Ctx<'_>,
        id: IkeSaId,
        role: Role,
        path: Path,
        keys: IkeSaKeys,
        iv: IvCounter,
        nat: NatStatus,
        proposal: IkeProposal,
        children: Vec<Child>,
        rekeyed: bool,
    ) -> Self {
        let (next_id, peer_next) = match (rekeyed, role) {
            (true, _) => (0, 0),
            // The initiator used 0 and 1; the responder answered them.
            (false, Role::Initiator) => (2, 0),
            (false, Role::Responder) => (0, 2),
        };
        let ike_rekey_at = ctx.config.ike_rekey_after.map(|d| ctx.jittered(d));
        let mut sa = EstablishedSa {
            id,
            role,
            path,
            keys,
            iv,
            nat,
            proposal,
            peer_next,
            last_response: None,
            next_id,
            active: None,
            wanted: VecDeque::new(),
            children,
            ike_rekey_at,
            last_heard: ctx.now,
            fate: Fate::Live,
            pending_ike: None,
            recreate: false,
            new_child_at: None,
            child_retry: Vec::new(),
            keepalive_at: nat
                .local_behind_nat
                .then(|| ctx.now.saturating_add(KEEPALIVE_INTERVAL)),
            new_child_collision: None,
            created: ctx.now,
        };
        // The initiator of a new IKE SA makes the CHILD SAs of the tunnels
        // IKE_AUTH did not (every tunnel but the first).
        sa.recreate = !rekeyed
            && role == Role::Initiator
            && ctx.config.tunnel_count() > 1
            && sa.missing_tunnel(ctx.config, ctx.now).is_some();
        sa
    }

    /// What a `status` display shows of it at `now`.
    pub(crate) fn status(&self, now: Timestamp) -> crate::sa::IkeSaStatus {
        let until = |t: Timestamp| t.saturating_since(now);
        crate::sa::IkeSaStatus {
            ike_sa: self.id,
            role: self.role,
            remote: self.path.remote,
            proposal: self.proposal,
            age: now.saturating_since(self.created),
            rekey_in: self.ike_rekey_at.map(until),
            udp_encapsulation: self.nat.any(),
            children: self
                .children
                .iter()
                .map(|c| crate::sa::ChildSaStatus {
                    inbound: c.pair.inbound,
                    outbound: c.pair.outbound,
                    state: match c.state {
                        ChildState::Installed => "installed",
                        ChildState::Rekeying => "rekeying",
                        ChildState::Rekeyed => "rekeyed",
                        ChildState::Deleting(_) => "deleting",
                        ChildState::Retiring(_) => "retiring",
                    },
                    outbound_active: c.outbound_active,
                    age: now.saturating_since(c.created),
                    rekey_in: c.rekey_at.map(until),
                    expires_in: until(c.expire_at),
                })
                .collect(),
        }
    }

    /// Records our response to the peer's request `message_id`.
    pub(crate) fn answered(&mut self, message_id: u32, bytes: Vec<u8>) {
        self.last_response = Some((message_id, bytes));
        self.peer_next = message_id.wrapping_add(1);
    }

    pub(crate) fn has_child(&self) -> bool {
        self.children.iter().any(Child::live)
    }

    /// The first of the configuration's tunnels without a CHILD SA in
    /// service, none being made for it, and not waiting to ask again after
    /// a refusal (at `now`).
    pub(crate) fn missing_tunnel(&self, config: &super::Config, now: Timestamp) -> Option<usize> {
        let requested = match self.active.as_ref().map(|a| &a.request) {
            Some(Request::Child(r)) if r.old.is_none() => Some(r.tunnel),
            _ => None,
        };
        (0..config.tunnel_count()).find(|t| {
            Some(*t) != requested
                && !self.children.iter().any(|c| c.tunnel == *t && c.live())
                && !self.child_retry.iter().any(|(r, at)| r == t && *at > now)
        })
    }

    /// The CHILD SAs that carry traffic, as (inbound, outbound) SPIs.
    pub(crate) fn live_children(&self) -> Vec<ChildSaId> {
        self.children
            .iter()
            .filter(|c| c.live())
            .map(|c| self.child_id(c.pair))
            .collect()
    }

    pub(crate) fn child_id(&self, pair: ChildPair) -> ChildSaId {
        ChildSaId {
            ike_sa: self.id,
            inbound_spi: pair.inbound,
            outbound_spi: pair.outbound,
        }
    }

    pub(crate) fn keep(self: Box<Self>) -> Outcome {
        Outcome::Keep(State::Established(self))
    }

    pub(crate) fn child(&self, inbound: ChildSpi) -> Option<&Child> {
        self.children.iter().find(|c| c.pair.inbound == inbound)
    }

    pub(crate) fn child_mut(&mut self, inbound: ChildSpi) -> Option<&mut Child> {
        self.children.iter_mut().find(|c| c.pair.inbound == inbound)
    }

    /// Asks for `w` unless it is already queued.
    pub(crate) fn want(&mut self, w: Want) {
        if !self.wanted.contains(&w) {
            self.wanted.push_back(w);
        }
    }

    // ------------------------------------------------------------ timers

    /// The earliest time something is due.
    pub(crate) fn deadline(&self, dpd: Option<std::time::Duration>) -> Option<Timestamp> {
        let mut d: Option<Timestamp> = None;
        let mut at = |t: Timestamp| d = Some(d.map_or(t, |x| x.min(t)));
        if let Some(a) = &self.active {
            at(a.retx.deadline());
        }
        for c in &self.children {
            match c.state {
                ChildState::Retiring(t) => at(t),
                ChildState::Installed => {
                    if let Some(t) = c.rekey_at {
                        at(t);
                    }
                    at(c.expire_at);
                }
                ChildState::Rekeying | ChildState::Rekeyed => at(c.expire_at),
                ChildState::Deleting(_) => {}
            }
        }
        match self.fate {
            Fate::Live => {
                if let Some(t) = self.ike_rekey_at {
                    at(t);
                }
                if let Some(t) = self.keepalive_at {
                    at(t);
                }
                if let Some(t) = self.new_child_at {
                    at(t);
                }
                if let Some(dpd) = dpd {
                    if self.active.is_none() && !self.wanted.contains(&Want::Dpd) {
                        at(self.last_heard.saturating_add(dpd));
                    }
                }
            }
            Fate::Replaced { until } => at(until),
            Fate::Deleting => {}
        }
        d
    }

    pub(crate) fn on_timer(mut self: Box<Self>, ctx: &mut Ctx<'_>) -> Outcome {
        let now = ctx.now;
        if let Fate::Replaced { until } = self.fate {
            if until <= now {
                // The peer never deleted it: it has no CHILD SA left.
                ctx.event(Event::Closed {
                    ike_sa: self.id,
                    role: self.role,
                    reason: Closed::Rekeyed,
                });
                return self.gone(ctx, ChildDeleted::IkeSaGone);
            }
        }
        if let Some(a) = &mut self.active {
            if a.retx.deadline() <= now {
                match a.retx.expire(ctx) {
                    Some(sends) => {
                        let (exchange, bytes) = (a.exchange, a.bytes.clone());
                        ctx.send(self.path, bytes);
                        ctx.event(Event::Retransmitted {
                            ike_sa: self.id,
                            exchange,
                            sends,
                        });
                    }
                    None => return self.dead(ctx),
                }
            }
        }
        self.child_timers(ctx);
        if self.fate == Fate::Live && self.keepalive_at.is_some_and(|t| t <= now) {
            // One byte 0xFF to the peer's port 4500, without the non-ESP
            // marker: NAT devices drop idle UDP mappings after tens of seconds.
            if self.path.local.port() == super::initiator::NAT_T_PORT {
                ctx.send(self.path, vec![0xff]);
            }
            self.keepalive_at = Some(now.saturating_add(KEEPALIVE_INTERVAL));
        }
        if self.fate == Fate::Live {
            if self.ike_rekey_at.is_some_and(|t| t <= now) {
                self.ike_rekey_at = None;
                self.want(Want::RekeyIke);
            }
            if self.new_child_at.is_some_and(|t| t <= now) {
                // The next refused tunnel's turn, if another waits.
                self.new_child_at = self
                    .child_retry
                    .iter()
                    .map(|(_, at)| *at)
                    .filter(|at| *at > now)
                    .min();
                self.want(Want::NewChild);
            }
            if let Some(dpd) = ctx.config.dpd_delay {
                if self.active.is_none()
                    && self.wanted.is_empty()
                    && self.last_heard.saturating_add(dpd) <= now
                {
                    self.want(Want::Dpd);
                }
            }
        }
        self.pump(ctx)
    }

    fn child_timers(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let mut i = 0;
        while let Some(c) = self.children.get(i) {
            let pair = c.pair;
            match c.state {
                ChildState::Retiring(t) if t <= now => {
                    let id = self.child_id(pair);
                    self.children.remove(i);
                    ctx.release_child_spi(pair.inbound);
                    ctx.push(Action::DeleteChildSa(id));
                    continue;
                }
                ChildState::Installed | ChildState::Rekeying | ChildState::Rekeyed
                    if c.expire_at <= now =>
                {
                    // Hard lifetime: the data plane stops using it now
                    // whatever happens; tell the peer.
                    self.retire_now(ctx, pair.inbound, ChildDeleted::Expired);
                    self.wanted.retain(|w| *w != Want::RekeyChild(pair.inbound));
                    self.want(Want::DeleteChild(pair.inbound));
                }
                ChildState::Installed if c.rekey_at.is_some_and(|t| t <= now) => {
                    if let Some(c) = self.children.get_mut(i) {
                        c.rekey_at = None;
                    }
                    if self.fate == Fate::Live {
                        self.want(Want::RekeyChild(pair.inbound));
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// The CHILD SA leaves service now: a successor's outbound takes over,
    /// the data plane deletes it, and IKE keeps it (state `Deleting`) only
    /// until the peer learns of it.
    pub(crate) fn retire_now(&mut self, ctx: &mut Ctx<'_>, inbound: ChildSpi, why: ChildDeleted) {
        let Some(c) = self.child_mut(inbound) else {
            return;
        };
        c.state = ChildState::Deleting(why);
        let was_in = std::mem::replace(&mut c.in_data_plane, false);
        let (pair, successor) = (c.pair, c.successor);
        if why == ChildDeleted::Expired {
            self.recreate = true;
        }
        if let Some(s) = successor {
            self.activate(ctx, s);
        }
        if was_in {
            let id = self.child_id(pair);
            ctx.push(Action::DeleteChildSa(id));
            ctx.event(Event::ChildSaDeleted {
                child: id,
                reason: why,
            });
        }
    }

    /// Queues our Delete for the CHILD SA (it stays in the data plane
    /// until the exchange completes).
    pub(crate) fn delete_later(&mut self, inbound: ChildSpi, why: ChildDeleted) {
        if let Some(c) = self.child_mut(inbound) {
            if c.live() {
                c.state = ChildState::Deleting(why);
            }
        }
        self.wanted.retain(|w| *w != Want::RekeyChild(inbound));
        self.want(Want::DeleteChild(inbound));
        if why == ChildDeleted::ByUs {
            self.recreate = false;
        }
    }

    /// The data plane sends with `inbound`'s CHILD SA from now on.
    pub(crate) fn activate(&mut self, ctx: &mut Ctx<'_>, inbound: ChildSpi) {
        let id = self.id;
        if let Some(c) = self.child_mut(inbound) {
            if !c.outbound_active && c.live() {
                c.outbound_active = true;
                ctx.push(Action::UseOutbound(ChildSaId {
                    ike_sa: id,
                    inbound_spi: c.pair.inbound,
                    outbound_spi: c.pair.outbound,
                }));
            }
        }
    }

    /// A Delete exchange for the CHILD SA completed (ours, or the peer's
    /// for reason `why`): a successor takes over sending; with one, the
    /// inbound half lingers for packets in flight; without, it goes now.
    pub(crate) fn deleted(&mut self, ctx: &mut Ctx<'_>, inbound: ChildSpi, why: ChildDeleted) {
        let until = ctx.now.saturating_add(ctx.config.rekeyed_delete_delay);
        let Some(c) = self.child_mut(inbound) else {
            return;
        };
        let why = match c.state {
            ChildState::Deleting(ours) => ours,
            _ if c.successor.is_some() => ChildDeleted::Rekeyed,
            _ => why,
        };
        let (pair, successor, in_dp) = (c.pair, c.successor, c.in_data_plane);
        if successor.is_some() && in_dp {
            c.state = ChildState::Retiring(until);
        } else {
            self.children.retain(|c| c.pair.inbound != inbound);
            ctx.release_child_spi(inbound);
        }
        if let Some(s) = successor {
            self.activate(ctx, s);
        }
        if in_dp {
            let id = self.child_id(pair);
            if successor.is_none() {
                ctx.push(Action::DeleteChildSa(id));
            }
            ctx.event(Event::ChildSaDeleted {
                child: id,
                reason: why,
            });
        }
    }

    /// Why our Delete of the IKE SA closed it: a rekey replaced it, or we
    /// were asked to.
    fn our_delete_reason(&self) -> Closed {
        if matches!(self.fate, Fate::Replaced { .. }) {
            Closed::Rekeyed
        } else {
            Closed::DeletedByUs
        }
    }

    /// Our request went unanswered: the peer is gone, and so is everything.
    fn dead(self: Box<Self>, ctx: &mut Ctx<'_>) -> Outcome {
        let (exchange, sends, was_delete) = match &self.active {
            Some(a) => (
                a.exchange,
                a.retx.sends(),
                matches!(a.request, Request::DeleteIke),
            ),
            None => (ExchangeType::INFORMATIONAL, 0, false),
        };
        if was_delete {
            ctx.event(Event::Closed {
                ike_sa: self.id,
                role: self.role,
                reason: self.our_delete_reason(),
            });
        } else {
            ctx.failed(self.id, self.role, Failure::Timeout { exchange, sends });
        }
        self.gone(ctx, ChildDeleted::IkeSaGone)
    }

    /// The peer authenticated a new IKE SA with INITIAL_CONTACT: it keeps
    /// nothing of this one. Removed, with its CHILD SAs, without a Delete.
    pub(crate) fn peer_restarted(self: Box<Self>, ctx: &mut Ctx<'_>) -> Outcome {
        ctx.event(Event::Closed {
            ike_sa: self.id,
            role: self.role,
            reason: Closed::PeerRestarted,
        });
        self.gone(ctx, ChildDeleted::IkeSaGone)
    }

    /// The IKE SA is removed: every CHILD SA it still has goes with it.
    fn gone(mut self: Box<Self>, ctx: &mut Ctx<'_>, why: ChildDeleted) -> Outcome {
        self.drop_children(ctx, why);
        Outcome::Remove
    }

    fn drop_children(&mut self, ctx: &mut Ctx<'_>, why: ChildDeleted) {
        for c in std::mem::take(&mut self.children) {
            let id = self.child_id(c.pair);
            ctx.release_child_spi(c.pair.inbound);
            if c.in_data_plane {
                ctx.push(Action::DeleteChildSa(id));
                if !matches!(c.state, ChildState::Retiring(_)) {
                    ctx.event(Event::ChildSaDeleted {
                        child: id,
                        reason: why,
                    });
                }
            }
        }
    }

    // ---------------------------------------------------- our requests

    /// Seals and sends our next request.
    pub(crate) fn send_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        inner: Vec<PayloadRepr>,
        request: Request,
    ) -> Result<(), Failure> {
        let message_id = self.next_id;
        let bytes = msg::sealed(
            &self.keys,
            self.role,
            &mut self.iv,
            msg::header(self.id, exchange, self.role, false, message_id),
            inner,
        )?;
        ctx.send(self.path, bytes.clone());
        self.next_id = message_id.wrapping_add(1);
        self.active = Some(Outstanding {
            message_id,
            exchange,
            bytes,
            retx: Retx::new(ctx),
            request,
        });
        Ok(())
    }

    /// Starts queued requests while none is outstanding.
    pub(crate) fn pump(mut self: Box<Self>, ctx: &mut Ctx<'_>) -> Outcome {
        if self.recreate
            && self.role == Role::Initiator
            && self.fate == Fate::Live
            && self.missing_tunnel(ctx.config, ctx.now).is_some()
        {
            self.want(Want::NewChild);
        }
        while self.active.is_none() {
            let Some(w) = self.wanted.pop_front() else {
                break;
            };
            let started = match w {
                Want::RekeyChild(spi) => self.start_child_rekey(ctx, spi),
                Want::NewChild => self.start_new_child(ctx),
                Want::RekeyIke => self.start_ike_rekey(ctx),
                Want::DeleteChild(spi) => self.start_delete_children(ctx, spi),
                Want::DeleteIke => self.send_request(
                    ctx,
                    ExchangeType::INFORMATIONAL,
                    vec![PayloadRepr::Delete(DeleteRepr::Ike)],
                    Request::DeleteIke,
                ),
                Want::Dpd => {
                    self.send_request(ctx, ExchangeType::INFORMATIONAL, vec![], Request::Dpd)
                }
            };
            if let Err(f) = started {
                ctx.failed(self.id, self.role, f);
                return self.gone(ctx, ChildDeleted::IkeSaGone);
            }
        }
        self.keep()
    }

    /// Deletes every CHILD SA queued for deletion in one request (the one
    /// named and any other waiting), skipping those already gone.
    fn start_delete_children(&mut self, ctx: &mut Ctx<'_>, first: ChildSpi) -> Result<(), Failure> {
        let mut spis = vec![first];
        self.wanted.retain(|w| match w {
            Want::DeleteChild(s) => {
                spis.push(*s);
                false
            }
            _ => true,
        });
        spis.retain(|s| {
            self.child(*s)
                .is_some_and(|c| matches!(c.state, ChildState::Deleting(_)))
        });
        spis.sort_unstable();
        spis.dedup();
        if spis.is_empty() {
            return Ok(());
        }
        self.send_request(
            ctx,
            ExchangeType::INFORMATIONAL,
            vec![PayloadRepr::Delete(DeleteRepr::Esp(spis.clone()))],
            Request::DeleteChildren(spis),
        )
    }

    // ------------------------------------------------------- messages

    pub(crate) fn on_message(
        mut self: Box<Self>,
        ctx: &mut Ctx<'_>,
        m: &Message<&[u8]>,
        path: Path,
    ) -> Outcome {
        let h = m.header();
        let unexpected = |why| Dropped::Unexpected {
            exchange: h.exchange(),
            message_id: h.message_id(),
            why,
        };
        if h.flags().response {
            let ours = self
                .active
                .as_ref()
                .is_some_and(|a| a.message_id == h.message_id() && a.exchange == h.exchange());
            if !ours {
                ctx.dropped(path.remote, unexpected("a response to no request of ours"));
                return self.keep();
            }
        } else {
            if let Some((id, bytes)) = &self.last_response {
                if *id == h.message_id() {
                    ctx.send(path, bytes.clone());
                    return self.keep();
                }
            }
            if h.message_id() != self.peer_next {
                ctx.dropped(path.remote, unexpected("message ID outside the window"));
                return self.keep();
            }
        }
        let (pt, first) = match msg::open(&self.keys, self.role, m) {
            Ok(o) => o,
            Err(reason) => {
                ctx.dropped(path.remote, reason);
                return self.keep();
            }
        };
        let chain = match Chain::new_checked_inner(first, &pt) {
            Ok(chain) => chain,
            Err(error) => {
                ctx.dropped(
                    path.remote,
                    Dropped::MalformedContent {
                        exchange: h.exchange(),
                        error,
                    },
                );
                return self.keep();
            }
        };
        let c = Collected::new(chain.payloads());
        self.last_heard = ctx.now;
        if self.nat.any() {
            // Behind a NAT the peer's port may change (RFC 7296 §2.23).
            self.path = path;
        }
        if h.flags().response {
            let Some(active) = self.active.take() else {
                return self.keep();
            };
            let c = match c {
                Ok(c) => c,
                Err(problem) => {
                    // A response we cannot read: as if the exchange failed.
                    ctx.failed(
                        self.id,
                        self.role,
                        Failure::Protocol {
                            exchange: active.exchange,
                            problem,
                        },
                    );
                    return self.gone(ctx, ChildDeleted::IkeSaGone);
                }
            };
            return self.on_response(ctx, active.request, &c);
        }
        let message_id = h.message_id();
        let exchange = h.exchange();
        let mut close = None;
        let answer: Vec<PayloadRepr> = match (exchange, c) {
            (_, Err(_)) => vec![PayloadRepr::Notify(NotifyRepr::new(
                NotifyType::INVALID_SYNTAX,
                vec![],
            ))],
            (ExchangeType::INFORMATIONAL, Ok(c)) => {
                if c.deletes.iter().any(|d| d.protocol_id() == ProtocolId::IKE) {
                    close = Some(if matches!(self.fate, Fate::Replaced { .. }) {
                        Closed::Rekeyed
                    } else {
                        Closed::DeletedByPeer
                    });
                    vec![]
                } else if c.notify(NotifyType::AUTHENTICATION_FAILED).is_some() {
                    close = Some(Closed::PeerRefusedOurAuthentication);
                    vec![]
                } else {
                    self.deletes_children(ctx, &c)
                }
            }
            (ExchangeType::CREATE_CHILD_SA, Ok(c)) => self.answer_create_child_sa(ctx, &c),
            (_, Ok(_)) => {
                ctx.dropped(
                    path.remote,
                    unexpected("not an exchange of an established IKE SA"),
                );
                return self.keep();
            }
        };
        let response = match msg::sealed(
            &self.keys,
            self.role,
            &mut self.iv,
            msg::header(self.id, exchange, self.role, true, message_id),
            answer,
        ) {
            Ok(r) => r,
            Err(f) => {
                ctx.failed(self.id, self.role, f);
                return self.gone(ctx, ChildDeleted::IkeSaGone);
            }
        };
        ctx.send(self.path, response.clone());
        if let Some(reason) = close {
            ctx.event(Event::Closed {
                ike_sa: self.id,
                role: self.role,
                reason,
            });
            let until = ctx.now.saturating_add(ctx.config.half_open_timeout);
            if let Some(p) = self.pending_ike.take() {
                // The peer deleted the old SA while our rekey crossed its
                // own: its new SA survives (RFC 7296 §2.8.2) and takes
                // the CHILD SAs.
                self.adopt_pending(ctx, p);
            }
            self.drop_children(ctx, ChildDeleted::IkeSaGone);
            return Outcome::Keep(State::Closing(Closing::new(
                Some((message_id, response)),
                until,
            )));
        }
        self.answered(message_id, response);
        self.pump(ctx)
    }

    fn on_response(
        mut self: Box<Self>,
        ctx: &mut Ctx<'_>,
        request: Request,
        c: &Collected<'_>,
    ) -> Outcome {
        match request {
            Request::Dpd => self.pump(ctx),
            Request::DeleteIke => {
                ctx.event(Event::Closed {
                    ike_sa: self.id,
                    role: self.role,
                    reason: self.our_delete_reason(),
                });
                self.gone(ctx, ChildDeleted::IkeSaGone)
            }
            Request::DeleteChildren(spis) => {
                for s in spis {
                    self.deleted(ctx, s, ChildDeleted::Rekeyed);
                }
                self.pump(ctx)
            }
            Request::Child(r) => {
                self.child_rekey_response(ctx, *r, c);
                self.pump(ctx)
            }
            Request::Ike(r) => self.ike_rekey_response(ctx, *r, c),
        }
    }

    /// The peer's Delete payloads for ESP SAs (RFC 7296 §1.4.1): each SPI
    /// names one of our outbound SAs; the answer names the inbound SAs of
    /// the pairs, except those we are deleting ourselves (the requests
    /// crossed: no Delete for them in the response).
    fn deletes_children(&mut self, ctx: &mut Ctx<'_>, c: &Collected<'_>) -> Vec<PayloadRepr> {
        let named: Vec<ChildSpi> = c
            .deletes
            .iter()
            .filter(|d| d.protocol_id() == ProtocolId::ESP)
            .flat_map(|d| d.spis())
            .collect();
        let had_child = self.has_child();
        let mut ours = Vec::new();
        for spi in named {
            let Some(child) = self.children.iter().find(|c| c.pair.outbound == spi) else {
                continue;
            };
            let (inbound, state) = (child.pair.inbound, child.state);
            match state {
                ChildState::Deleting(_) => {
                    // Crossed deletes (RFC 7296 §1.4.1): no Delete for it
                    // in our response.
                    self.deleted(ctx, inbound, ChildDeleted::ByPeer);
                    self.wanted.retain(|w| *w != Want::DeleteChild(inbound));
                }
                ChildState::Retiring(_) => {}
                _ => {
                    if !ours.contains(&inbound) {
                        ours.push(inbound);
                    }
                    if let Some(c) = self.child_mut(inbound) {
                        if let Some((peer_new, _)) = c.peer_rekey.take() {
                            // The peer's crossing rekey completed first and
                            // it deletes the old SA: its new SA takes over.
                            c.successor = Some(peer_new);
                        }
                    }
                    self.deleted(ctx, inbound, ChildDeleted::ByPeer);
                    self.wanted.retain(|w| *w != Want::RekeyChild(inbound));
                }
            }
        }
        if had_child && self.missing_tunnel(ctx.config, ctx.now).is_some() {
            self.recreate = true;
        }
        if ours.is_empty() {
            vec![]
        } else {
            vec![PayloadRepr::Delete(DeleteRepr::Esp(ours))]
        }
    }
}

/// A failed or deleted IKE SA, kept until `until` to answer a retransmitted
/// request with the same response.
pub(crate) struct Closing {
    last_response: Option<(u32, Vec<u8>)>,
    until: Timestamp,
}

impl Closing {
    pub(crate) fn new(last_response: Option<(u32, Vec<u8>)>, until: Timestamp) -> Self {
        Closing {
            last_response,
            until,
        }
    }

    pub(crate) fn deadline(&self) -> Timestamp {
        self.until
    }

    pub(crate) fn on_message(self, ctx: &mut Ctx<'_>, m: &Message<&[u8]>, path: Path) -> Outcome {
        let h = m.header();
        match &self.last_response {
            Some((id, bytes)) if !h.flags().response && *id == h.message_id() => {
                ctx.send(path, bytes.clone());
            }
            _ => ctx.dropped(
                path.remote,
                Dropped::Unexpected {
                    exchange: h.exchange(),
                    message_id: h.message_id(),
                    why: "the IKE SA is closed",
                },
            ),
        }
        Outcome::Keep(State::Closing(self))
    }
}
