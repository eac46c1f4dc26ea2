//! CREATE_CHILD_SA (RFC 7296 §1.3) in an established IKE SA, both roles:
//! rekeying a CHILD SA (REKEY_SA), creating one, rekeying the IKE SA.
//!
//! # Make before break
//!
//! - **CHILD SA** (§1.3.3, §2.8): the initiator installs the new CHILD SA
//!   when the response comes and sends with it at once, then deletes the
//!   old one. The responder installs the new one before it answers but
//!   keeps sending on the old one ([`super::ChildSaInstall::outbound_active`]
//!   false) until the initiator's Delete arrives — the initiator may not
//!   have the new SA yet when the response is lost or late. A deleted SA's
//!   inbound half lingers for [`super::Config::rekeyed_delete_delay`]. At
//!   no moment does either side send on an SA the other cannot receive.
//! - **IKE SA** (§2.18): the new IKE SA takes over every CHILD SA; the
//!   initiator of the rekey deletes the old IKE SA. Message IDs restart at
//!   0 and the initiator of the rekey is the new SA's original initiator.
//!
//! # Collisions
//!
//! - Both sides rekey the same CHILD SA (§2.8.1): each answers the other's
//!   request (the new SA is installed, not sent on), and when its own
//!   exchange completes compares the four nonces: the SA made with the
//!   lowest one is redundant and deleted by the side that initiated it; the
//!   other side deletes the old SA. Comparison is octet by octet, a prefix
//!   being lower (Rust's slice order).
//! - Both sides rekey the IKE SA (§2.8.2): the same rule over the two new
//!   IKE SAs; the CHILD SAs move to the survivor.
//! - A request for a CHILD SA we are deleting or already replaced, or any
//!   CREATE_CHILD_SA while our IKE rekey is outstanding (and an IKE rekey
//!   while our CHILD SA exchange or Delete is outstanding), is answered
//!   TEMPORARY_FAILURE (§2.25); the requester retries after a short random
//!   delay. A REKEY_SA naming a CHILD SA we do not have is answered
//!   CHILD_SA_NOT_FOUND, and its sender drops that SA.
//! - The peer deletes a CHILD SA while we are rekeying it: the delete is
//!   answered as usual; should our rekey still succeed, its new SA is
//!   deleted at once (the peer wanted the traffic gone).

use std::time::Duration;

use crate::crypto::{check_nonce, IkeSpis, IvCounter, Role, SharedSecret};
use crate::wire::{
    ChildSpi, ExchangeType, KeMethod, KeRepr, NonceRepr, NotifyRepr, NotifyTarget, NotifyType,
    PayloadRepr, ProtocolId, SelectorRepr, TrafficSelector, TsRepr,
};

use super::action::{Action, ChildDeleted, ChildSaInstall, Event, Rekeyed};
use super::config::EspProposal;
use super::engine::{Ctx, Outcome};
use super::entropy;
use super::established::{
    Child, ChildPair, ChildRequest, ChildState, EstablishedSa, Fate, IkeRequest, PendingIke,
    Request, Want,
};
use super::failure::{ChildFailure, Failure};
use super::msg::Collected;
use super::proposal::{self, IkeChoice, KeRule};
use super::ts;

/// At most this many CHILD SAs carry traffic in one IKE SA; a request for
/// another is answered NO_ADDITIONAL_SAS.
const MAX_CHILDREN: usize = 2 * super::config::MAX_TUNNELS + 2;

/// After a refusal other than TEMPORARY_FAILURE, an IKE SA rekey is tried
/// again this much later.
const IKE_REKEY_RETRY: Duration = Duration::from_secs(60);

fn ts_repr(ts: &[TrafficSelector]) -> TsRepr {
    TsRepr {
        selectors: ts.iter().map(|t| SelectorRepr::Range(*t)).collect(),
    }
}

fn notify(t: NotifyType) -> Vec<PayloadRepr> {
    vec![PayloadRepr::Notify(NotifyRepr::new(t, vec![]))]
}

fn invalid_ke(g: crate::crypto::Group) -> Vec<PayloadRepr> {
    vec![PayloadRepr::Notify(NotifyRepr::new(
        NotifyType::INVALID_KE_PAYLOAD,
        g.transform_id().to_be_bytes().to_vec(),
    ))]
}

fn ke_repr(ke: &dyn crate::crypto::KeyExchange) -> PayloadRepr {
    PayloadRepr::Ke(KeRepr {
        group: KeMethod(ke.group().transform_id()),
        data: ke.public_value().to_vec(),
    })
}

/// The lower of an exchange's two nonces.
fn lowest(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.min(b).to_vec()
}

/// What the initiator takes from a CHILD SA response.
struct ChildAnswer {
    esp: EspProposal,
    peer_spi: ChildSpi,
    nr: Vec<u8>,
    tsi: Vec<TrafficSelector>,
    tsr: Vec<TrafficSelector>,
}

impl EstablishedSa {
    // ------------------------------------------------ CHILD SA, ours

    /// Sends CREATE_CHILD_SA rekeying the CHILD SA `old` (our inbound SPI):
    /// N(REKEY_SA), SA, Ni, [KEi], TSi, TSr with its narrowed selectors.
    pub(crate) fn start_child_rekey(
        &mut self,
        ctx: &mut Ctx<'_>,
        old: ChildSpi,
    ) -> Result<(), Failure> {
        let Some(c) = self.child(old) else {
            return Ok(());
        };
        if c.state != ChildState::Installed || self.fate != Fate::Live {
            return Ok(());
        }
        if !c.outbound_active {
            // We answered the peer's rekey that made it, and the peer has
            // not yet deleted the predecessor: it may not have this SA
            // yet (our response may be lost). Later.
            let retry = ctx.retry_at();
            if let Some(c) = self.child_mut(old) {
                c.rekey_at = Some(retry);
            }
            return Ok(());
        }
        let (tunnel, local_ts, remote_ts) = (c.tunnel, c.local_ts.clone(), c.remote_ts.clone());
        self.send_child_request(ctx, Some(old), tunnel, local_ts, remote_ts)
    }

    /// Sends CREATE_CHILD_SA for a new CHILD SA with the configured
    /// selectors of the first tunnel that has none in service (its last one
    /// was lost, or it was never made), unless every tunnel has one again.
    pub(crate) fn start_new_child(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Failure> {
        let missing = self.missing_tunnel(ctx.config, ctx.now);
        let Some((tunnel, (local_ts, remote_ts))) =
            missing.and_then(|t| ctx.config.tunnel(t).map(|s| (t, s)))
        else {
            self.recreate = false;
            return Ok(());
        };
        if self.fate != Fate::Live {
            self.recreate = false;
            return Ok(());
        }
        let (local_ts, remote_ts) = (local_ts.to_vec(), remote_ts.to_vec());
        self.send_child_request(ctx, None, tunnel, local_ts, remote_ts)
    }

    fn send_child_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        old: Option<ChildSpi>,
        tunnel: usize,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
    ) -> Result<(), Failure> {
        let pfs = ctx.config.pfs;
        let ke = match pfs {
            Some(g) => Some(
                entropy::key_exchange(ctx.entropy, g)
                    .map_err(|e| Failure::internal("drawing a key exchange", e))?,
            ),
            None => None,
        };
        let spi = ctx.new_child_spi()?;
        let ni = entropy::nonce(ctx.entropy);
        let mut inner = Vec::new();
        if let Some(old) = old {
            inner.push(PayloadRepr::Notify(NotifyRepr {
                notify_type: NotifyType::REKEY_SA,
                target: NotifyTarget::Esp(old),
                data: vec![],
            }));
        }
        inner.push(PayloadRepr::Sa(proposal::esp_offer(
            &ctx.config.esp_proposals,
            spi,
            pfs,
        )));
        inner.push(PayloadRepr::Nonce(NonceRepr { data: ni.clone() }));
        if let Some(k) = &ke {
            inner.push(ke_repr(k.as_ref()));
        }
        inner.push(PayloadRepr::TsI(ts_repr(&local_ts)));
        inner.push(PayloadRepr::TsR(ts_repr(&remote_ts)));
        if let Some(c) = old.and_then(|o| self.child_mut(o)) {
            c.state = ChildState::Rekeying;
        }
        let request = Request::Child(Box::new(ChildRequest {
            old,
            tunnel,
            spi,
            ni,
            ke,
            local_ts,
            remote_ts,
        }));
        let sent = self.send_request(ctx, ExchangeType::CREATE_CHILD_SA, inner, request);
        if sent.is_err() {
            ctx.release_child_spi(spi);
        }
        sent
    }

    /// The old CHILD SA stays (its rekey failed): retried after a short
    /// random delay, or never if it was deleted meanwhile.
    fn child_rekey_failed(&mut self, ctx: &mut Ctx<'_>, r: &ChildRequest, failure: ChildFailure) {
        ctx.release_child_spi(r.spi);
        let retry = ctx.retry_at();
        let Some(old) = r.old else {
            // A new CHILD SA: tried again a minute later (or a moment, for
            // TEMPORARY_FAILURE).
            let at = match failure {
                ChildFailure::PeerRefused {
                    notify: NotifyType::TEMPORARY_FAILURE,
                } => retry,
                _ => ctx.now.saturating_add(IKE_REKEY_RETRY),
            };
            self.child_retry.retain(|(t, _)| *t != r.tunnel);
            self.child_retry.push((r.tunnel, at));
            self.new_child_at = Some(self.new_child_at.map_or(at, |n| n.min(at)));
            ctx.event(Event::RekeyFailed {
                ike_sa: self.id,
                what: Rekeyed::NewChild,
                failure,
            });
            return;
        };
        if let Some(c) = self.child_mut(old) {
            if c.state == ChildState::Rekeying {
                c.state = ChildState::Installed;
                c.rekey_at = Some(retry);
            }
            // A crossing rekey by the peer made a successor: it takes over
            // once the peer deletes the old SA.
            if let Some((peer_new, _)) = c.peer_rekey.take() {
                c.successor = Some(peer_new);
                c.state = ChildState::Rekeyed;
                c.rekey_at = None;
            }
        }
        ctx.event(Event::RekeyFailed {
            ike_sa: self.id,
            what: Rekeyed::Child(old),
            failure,
        });
    }

    /// The response to our CHILD SA rekey.
    pub(crate) fn child_rekey_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        mut r: ChildRequest,
        c: &Collected<'_>,
    ) {
        if c.sa.is_none() {
            let notify = c.error().unwrap_or(NotifyType::INVALID_SYNTAX);
            if let (NotifyType::CHILD_SA_NOT_FOUND, Some(old)) = (notify, r.old) {
                // The peer has no such SA: ours is useless (RFC 7296
                // §2.25); a new one replaces it.
                self.retire_now(ctx, old, ChildDeleted::ByPeer);
                self.deleted(ctx, old, ChildDeleted::ByPeer);
                self.recreate = true;
            }
            self.child_rekey_failed(ctx, &r, ChildFailure::PeerRefused { notify });
            return;
        }
        let answer = match self.check_child_answer(ctx, &r, c) {
            Ok(a) => a,
            Err(f) => return self.child_rekey_failed(ctx, &r, f),
        };
        let shared: Option<SharedSecret> = match (r.ke.take(), c.ke) {
            (Some(k), Some(ke)) => match k.agree(ke.data()) {
                Ok(s) => Some(s),
                Err(_) => {
                    return self.child_rekey_failed(
                        ctx,
                        &r,
                        ChildFailure::Protocol("the responder's KE data is invalid"),
                    )
                }
            },
            _ => None,
        };
        let keys =
            match self
                .keys
                .child_sa_keys(answer.esp.aead, shared.as_ref(), &r.ni, &answer.nr)
            {
                Ok(k) => k,
                Err(_) => {
                    return self.child_rekey_failed(
                        ctx,
                        &r,
                        ChildFailure::Protocol("CHILD SA keys could not be derived"),
                    )
                }
            };
        let pair = ChildPair {
            inbound: r.spi,
            outbound: answer.peer_spi,
        };
        let tunnel = r.tunnel;
        let install =
            |this: &mut Self, ctx: &mut Ctx<'_>, active: bool, replaces: Option<ChildSpi>| {
                ctx.push(Action::InstallChildSa(Box::new(ChildSaInstall {
                    ike_sa: this.id,
                    tunnel,
                    inbound_spi: pair.inbound,
                    outbound_spi: pair.outbound,
                    aead: answer.esp.aead,
                    esn: answer.esp.esn,
                    local_ts: answer.tsi.clone(),
                    remote_ts: answer.tsr.clone(),
                    lifetimes: ctx.config.child_lifetimes,
                    path: this.path,
                    udp_encapsulation: this.nat.any(),
                    outbound_active: active,
                    replaces,
                    keys,
                    role: Role::Initiator,
                })));
                let child = Child::new(
                    ctx,
                    pair,
                    tunnel,
                    answer.tsi.clone(),
                    answer.tsr.clone(),
                    active,
                );
                this.children.push(child);
            };
        let Some(old_spi) = r.old else {
            // Both sides created one at once: the nonces decide, as for a
            // rekey collision.
            let collision = self.new_child_collision.take();
            let ours_survives = collision
                .as_ref()
                .is_none_or(|(_, peer_lowest)| lowest(&r.ni, &answer.nr) >= *peer_lowest);
            if let Some((peer_new, _)) = &collision {
                ctx.event(Event::RekeyCollision {
                    ike_sa: self.id,
                    what: Rekeyed::NewChild,
                    ours_survives,
                });
                if ours_survives {
                    if let Some(p) = self.child_mut(*peer_new) {
                        p.rekey_at = None;
                    }
                }
            }
            install(self, ctx, ours_survives, None);
            // Other tunnels may still lack theirs.
            self.child_retry.retain(|(t, _)| *t != tunnel);
            self.recreate = self.missing_tunnel(ctx.config, ctx.now).is_some();
            if ours_survives {
                ctx.event(Event::ChildSaCreated {
                    child: self.child_id(pair),
                    by_us: true,
                });
            } else {
                self.delete_later(pair.inbound, ChildDeleted::Redundant);
            }
            return;
        };
        let old = self.child(old_spi).map(|c| (c.state, c.peer_rekey.clone()));
        let ours_lowest = lowest(&r.ni, &answer.nr);
        match old {
            Some((ChildState::Rekeying, Some((peer_new, peer_lowest)))) => {
                let ours_survives = ours_lowest >= peer_lowest;
                ctx.event(Event::RekeyCollision {
                    ike_sa: self.id,
                    what: Rekeyed::Child(old_spi),
                    ours_survives,
                });
                if ours_survives {
                    install(self, ctx, true, Some(old_spi));
                    self.replaced(ctx, old_spi, r.spi, true);
                    self.delete_later(old_spi, ChildDeleted::Rekeyed);
                    // The peer deletes the SA its exchange made.
                    if let Some(p) = self.child_mut(peer_new) {
                        p.rekey_at = None;
                    }
                } else {
                    install(self, ctx, false, Some(old_spi));
                    if let Some(n) = self.child_mut(r.spi) {
                        n.rekey_at = None;
                    }
                    self.delete_later(r.spi, ChildDeleted::Redundant);
                    // The peer deletes the old SA; its new one takes over.
                    self.replaced(ctx, old_spi, peer_new, false);
                }
            }
            Some((ChildState::Rekeying, None)) => {
                install(self, ctx, true, Some(old_spi));
                self.replaced(ctx, old_spi, r.spi, true);
                self.delete_later(old_spi, ChildDeleted::Rekeyed);
            }
            _ => {
                // The old SA went while we rekeyed it (the peer deleted it,
                // or it expired): the new one is not wanted either.
                install(self, ctx, false, Some(old_spi));
                self.delete_later(r.spi, ChildDeleted::ByPeer);
            }
        }
    }

    /// `old` is replaced by `new` (both our inbound SPIs).
    fn replaced(&mut self, ctx: &mut Ctx<'_>, old: ChildSpi, new: ChildSpi, by_us: bool) {
        let Some(o) = self.child_mut(old) else {
            return;
        };
        o.successor = Some(new);
        o.state = ChildState::Rekeyed;
        o.rekey_at = None;
        o.peer_rekey = None;
        let old_pair = o.pair;
        let Some(n) = self.child(new) else {
            return;
        };
        let new_pair = n.pair;
        ctx.event(Event::ChildSaRekeyed {
            old: self.child_id(old_pair),
            new: self.child_id(new_pair),
            by_us,
        });
    }

    /// Checks the responder's SA, nonce, KE and selectors.
    fn check_child_answer(
        &self,
        ctx: &Ctx<'_>,
        r: &ChildRequest,
        c: &Collected<'_>,
    ) -> Result<ChildAnswer, ChildFailure> {
        let config = ctx.config;
        let (Some(sa), Some(nonce), Some(tsi), Some(tsr)) = (c.sa, c.nonce, c.ts_i, c.ts_r) else {
            return Err(ChildFailure::Protocol(
                "the response lacks SA, Nonce, TSi or TSr",
            ));
        };
        let (esp, peer_spi) = proposal::check_esp_answer(&sa, &config.esp_proposals, config.pfs)
            .map_err(ChildFailure::Protocol)?;
        let nr = nonce.data().to_vec();
        check_nonce(self.proposal.prf, &nr)
            .map_err(|_| ChildFailure::Protocol("the responder's nonce is too short"))?;
        match (&r.ke, c.ke) {
            (None, None) => {}
            (Some(_), Some(ke)) if config.pfs.is_some_and(|g| ke.group().0 == g.transform_id()) => {
            }
            _ => {
                return Err(ChildFailure::Protocol(
                    "the response's KE payload is missing, unexpected or not in our group",
                ))
            }
        }
        let (tsi, tsr) = (ts::ranges(&tsi), ts::ranges(&tsr));
        if tsi.is_empty()
            || tsr.is_empty()
            || !ts::all_within(&tsi, &r.local_ts)
            || !ts::all_within(&tsr, &r.remote_ts)
        {
            return Err(ChildFailure::Protocol(
                "the responder's traffic selectors are not within ours",
            ));
        }
        Ok(ChildAnswer {
            esp,
            peer_spi,
            nr,
            tsi,
            tsr,
        })
    }

    // ------------------------------------------ CREATE_CHILD_SA, theirs

    /// The peer's CREATE_CHILD_SA request: an IKE SA rekey, a CHILD SA
    /// rekey, or a new CHILD SA. Returns the response's payloads.
    pub(crate) fn answer_create_child_sa(
        &mut self,
        ctx: &mut Ctx<'_>,
        c: &Collected<'_>,
    ) -> Vec<PayloadRepr> {
        if self.fate != Fate::Live {
            return notify(NotifyType::TEMPORARY_FAILURE);
        }
        let Some(sa) = c.sa else {
            return notify(NotifyType::INVALID_SYNTAX);
        };
        let is_ike = sa
            .proposals()
            .next()
            .is_some_and(|p| p.protocol().protocol_id() == ProtocolId::IKE);
        if is_ike {
            return self.answer_ike_rekey(ctx, c);
        }
        if matches!(
            self.active.as_ref().map(|a| &a.request),
            Some(Request::Ike(_))
        ) {
            return notify(NotifyType::TEMPORARY_FAILURE);
        }
        let old = match c.notify(NotifyType::REKEY_SA).map(|n| n.target()) {
            None => None,
            Some(NotifyTarget::Esp(spi)) => {
                let Some(old) = self.children.iter().find(|c| c.pair.outbound == spi) else {
                    return notify(NotifyType::CHILD_SA_NOT_FOUND);
                };
                match old.state {
                    ChildState::Installed | ChildState::Rekeying => Some(old.pair.inbound),
                    _ => return notify(NotifyType::TEMPORARY_FAILURE),
                }
            }
            Some(_) => return notify(NotifyType::CHILD_SA_NOT_FOUND),
        };
        if old.is_none()
            && self
                .children
                .iter()
                .filter(|c| c.state != ChildState::Rekeyed)
                .count()
                >= MAX_CHILDREN
        {
            return notify(NotifyType::NO_ADDITIONAL_SAS);
        }
        match self.answer_child(ctx, c, old) {
            Ok(payloads) => payloads,
            Err(failure) => {
                let n = failure.notify_type();
                ctx.event(Event::RekeyFailed {
                    ike_sa: self.id,
                    what: old.map_or(Rekeyed::NewChild, Rekeyed::Child),
                    failure,
                });
                notify(n)
            }
        }
    }

    fn answer_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        c: &Collected<'_>,
        old: Option<ChildSpi>,
    ) -> Result<Vec<PayloadRepr>, ChildFailure> {
        let config = ctx.config;
        let pfs = config.pfs;
        let (Some(sa), Some(nonce), Some(tsi), Some(tsr)) = (c.sa, c.nonce, c.ts_i, c.ts_r) else {
            return Err(ChildFailure::Protocol(
                "the request lacks SA, Nonce, TSi or TSr",
            ));
        };
        let (number, esp, peer_spi) =
            proposal::choose_esp(&sa, &config.esp_proposals, KeRule::Exactly(pfs))
                .map_err(ChildFailure::NoProposalChosen)?;
        let ni = nonce.data().to_vec();
        check_nonce(self.proposal.prf, &ni)
            .map_err(|_| ChildFailure::Protocol("the initiator's nonce is too short"))?;
        let (answered, tsi, tsr) = ts::answer(&tsi, &tsr, config)?;
        // A rekey stays with its predecessor's tunnel.
        let tunnel = old
            .and_then(|o| self.child(o))
            .map_or(answered, |c| c.tunnel);
        let (shared, our_ke) = match pfs {
            None => (None, None),
            Some(g) => {
                let Some(ke) = c.ke.filter(|k| k.group().0 == g.transform_id()) else {
                    // The proposal lists our group, the KE payload is in
                    // another or missing (§1.3).
                    return Ok(invalid_ke(g));
                };
                let ours = entropy::key_exchange(ctx.entropy, g)
                    .map_err(|_| ChildFailure::Protocol("no key exchange could be drawn"))?;
                let public = ke_repr(ours.as_ref());
                let shared = ours
                    .agree(ke.data())
                    .map_err(|_| ChildFailure::Protocol("the initiator's KE data is invalid"))?;
                (Some(shared), Some(public))
            }
        };
        let nr = entropy::nonce(ctx.entropy);
        let keys = self
            .keys
            .child_sa_keys(esp.aead, shared.as_ref(), &ni, &nr)
            .map_err(|_| ChildFailure::Protocol("CHILD SA keys could not be derived"))?;
        let our_spi = ctx
            .new_child_spi()
            .map_err(|_| ChildFailure::Protocol("no ESP SPI could be drawn"))?;
        let pair = ChildPair {
            inbound: our_spi,
            outbound: peer_spi,
        };
        // A new CHILD SA is used at once; a successor only once the
        // initiator has deleted its predecessor.
        let active = old.is_none();
        ctx.push(Action::InstallChildSa(Box::new(ChildSaInstall {
            ike_sa: self.id,
            tunnel,
            inbound_spi: our_spi,
            outbound_spi: peer_spi,
            aead: esp.aead,
            esn: esp.esn,
            local_ts: tsr.clone(),
            remote_ts: tsi.clone(),
            lifetimes: config.child_lifetimes,
            path: self.path,
            udp_encapsulation: self.nat.any(),
            outbound_active: active,
            replaces: old,
            keys,
            role: Role::Responder,
        })));
        let child = Child::new(ctx, pair, tunnel, tsr.clone(), tsi.clone(), active);
        self.children.push(child);
        match old {
            None => {
                self.child_retry.retain(|(t, _)| *t != tunnel);
                self.recreate = self.missing_tunnel(config, ctx.now).is_some();
                if !self.recreate {
                    self.new_child_at = None;
                }
                // Both sides made a CHILD SA for this tunnel at once.
                let ours_outstanding = matches!(
                    self.active.as_ref().map(|a| &a.request),
                    Some(Request::Child(r)) if r.old.is_none() && r.tunnel == tunnel
                );
                if ours_outstanding {
                    self.new_child_collision = Some((our_spi, lowest(&ni, &nr)));
                    if let Some(n) = self.child_mut(our_spi) {
                        n.rekey_at = None;
                    }
                }
                ctx.event(Event::ChildSaCreated {
                    child: self.child_id(pair),
                    by_us: false,
                })
            }
            Some(o) => {
                let rekeying = self
                    .child(o)
                    .is_some_and(|c| c.state == ChildState::Rekeying);
                if rekeying {
                    // Collision: decided when our own exchange completes.
                    if let Some(c) = self.child_mut(o) {
                        c.peer_rekey = Some((our_spi, lowest(&ni, &nr)));
                    }
                    if let Some(n) = self.child_mut(our_spi) {
                        n.rekey_at = None;
                    }
                } else {
                    self.replaced(ctx, o, our_spi, false);
                }
            }
        }
        let mut out = vec![
            PayloadRepr::Sa(proposal::esp_answer(number, esp, our_spi, pfs)),
            PayloadRepr::Nonce(NonceRepr { data: nr }),
        ];
        if let Some(k) = our_ke {
            out.push(k);
        }
        out.push(PayloadRepr::TsI(ts_repr(&tsi)));
        out.push(PayloadRepr::TsR(ts_repr(&tsr)));
        Ok(out)
    }

    // --------------------------------------------------- IKE SA rekey

    /// Sends CREATE_CHILD_SA rekeying the IKE SA: SA (our proposals with
    /// our new SPI), Ni, KEi in the current SA's group.
    pub(crate) fn start_ike_rekey(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Failure> {
        if self.fate != Fate::Live {
            return Ok(());
        }
        let spi = ctx.new_ike_spi()?;
        let ke = entropy::key_exchange(ctx.entropy, self.proposal.group)
            .map_err(|e| Failure::internal("drawing a key exchange", e))?;
        let ni = entropy::nonce(ctx.entropy);
        let inner = vec![
            PayloadRepr::Sa(proposal::ike_offer(&ctx.config.ike_proposals, Some(spi))),
            PayloadRepr::Nonce(NonceRepr { data: ni.clone() }),
            ke_repr(ke.as_ref()),
        ];
        self.send_request(
            ctx,
            ExchangeType::CREATE_CHILD_SA,
            inner,
            Request::Ike(Box::new(IkeRequest { spi, ni, ke })),
        )
    }

    fn ike_rekey_failed(&mut self, ctx: &mut Ctx<'_>, failure: ChildFailure) {
        let temporary = matches!(
            failure,
            ChildFailure::PeerRefused {
                notify: NotifyType::TEMPORARY_FAILURE
            }
        );
        ctx.event(Event::RekeyFailed {
            ike_sa: self.id,
            what: Rekeyed::Ike,
            failure,
        });
        if let Some(p) = self.pending_ike.take() {
            // The peer's crossing rekey made the surviving SA.
            self.adopt_pending(ctx, p);
        } else if self.fate == Fate::Live {
            self.ike_rekey_at = Some(if temporary {
                ctx.retry_at()
            } else {
                ctx.now.saturating_add(IKE_REKEY_RETRY)
            });
        }
    }

    /// The response to our IKE SA rekey.
    pub(crate) fn ike_rekey_response(
        mut self: Box<Self>,
        ctx: &mut Ctx<'_>,
        r: IkeRequest,
        c: &Collected<'_>,
    ) -> Outcome {
        let config = ctx.config;
        let (Some(sa), Some(nonce), Some(ke)) = (c.sa, c.nonce, c.ke) else {
            let failure = match c.error() {
                Some(notify) => ChildFailure::PeerRefused { notify },
                None => ChildFailure::Protocol("the response lacks SA, Nonce or KE"),
            };
            self.ike_rekey_failed(ctx, failure);
            return self.pump(ctx);
        };
        let checked =
            proposal::check_ike_rekey_answer(&sa, &config.ike_proposals).and_then(|(p, spi)| {
                if p.group != r.ke.group() || ke.group().0 != p.group.transform_id() {
                    return Err("the responder's KE payload is not in the group of ours");
                }
                check_nonce(p.prf, nonce.data())
                    .map_err(|_| "the responder's nonce is too short")?;
                Ok((p, spi))
            });
        let (proposal, peer_spi) = match checked {
            Ok(x) => x,
            Err(problem) => {
                self.ike_rekey_failed(ctx, ChildFailure::Protocol(problem));
                return self.pump(ctx);
            }
        };
        let nr = nonce.data().to_vec();
        let spis = IkeSpis {
            initiator: r.spi.to_bytes(),
            responder: peer_spi.to_bytes(),
        };
        let keys = r.ke.agree(ke.data()).and_then(|shared| {
            self.keys
                .rekey(proposal.prf, proposal.aead, &shared, &r.ni, &nr, &spis)
        });
        let keys = match keys {
            Ok(k) => k,
            Err(_) => {
                self.ike_rekey_failed(
                    ctx,
                    ChildFailure::Protocol("the responder's KE data is invalid"),
                );
                return self.pump(ctx);
            }
        };
        let new_id = super::action::IkeSaId {
            initiator: r.spi,
            responder: peer_spi,
        };
        let mut new = self.successor(ctx, new_id, Role::Initiator, keys, proposal);
        let until = ctx.now.saturating_add(ctx.config.half_open_timeout);
        match self.pending_ike.take() {
            None => {
                ctx.event(Event::IkeSaRekeyed {
                    old: self.id,
                    new: new_id,
                    by_us: true,
                });
                self.hand_over(ctx, new);
                self.fate = Fate::Deleting;
                self.want(Want::DeleteIke);
            }
            Some(p) => {
                let ours_survives = lowest(&r.ni, &nr) >= p.lowest;
                ctx.event(Event::RekeyCollision {
                    ike_sa: self.id,
                    what: Rekeyed::Ike,
                    ours_survives,
                });
                if ours_survives {
                    ctx.event(Event::IkeSaRekeyed {
                        old: self.id,
                        new: new_id,
                        by_us: true,
                    });
                    self.hand_over(ctx, new);
                    // The peer deletes the SA its exchange made.
                    let mut theirs = p.sa;
                    theirs.fate = Fate::Replaced { until };
                    ctx.spawn(theirs);
                    self.fate = Fate::Deleting;
                    self.want(Want::DeleteIke);
                } else {
                    ctx.event(Event::IkeSaRekeyed {
                        old: self.id,
                        new: p.sa.id,
                        by_us: false,
                    });
                    self.hand_over(ctx, p.sa);
                    new.fate = Fate::Deleting;
                    new.want(Want::DeleteIke);
                    if let Outcome::Keep(super::engine::State::Established(n)) = new.pump(ctx) {
                        ctx.spawn(n);
                    }
                    // The peer deletes the old SA.
                    self.fate = Fate::Replaced { until };
                }
            }
        }
        self.pump(ctx)
    }

    /// The peer's IKE SA rekey request.
    fn answer_ike_rekey(&mut self, ctx: &mut Ctx<'_>, c: &Collected<'_>) -> Vec<PayloadRepr> {
        let ours_outstanding = match self.active.as_ref().map(|a| &a.request) {
            Some(Request::Ike(_)) => true,
            Some(Request::Child(_) | Request::DeleteChildren(_)) => {
                return notify(NotifyType::TEMPORARY_FAILURE)
            }
            _ => false,
        };
        if self.pending_ike.is_some() {
            return notify(NotifyType::TEMPORARY_FAILURE);
        }
        let config = ctx.config;
        let (Some(sa), Some(nonce), Some(ke)) = (c.sa, c.nonce, c.ke) else {
            return notify(NotifyType::INVALID_SYNTAX);
        };
        let (choice, peer_spi) = proposal::choose_ike_rekey(&sa, &config.ike_proposals, ke.group());
        let (number, proposal) = match choice {
            IkeChoice::Accept { number, proposal } => (number, proposal),
            IkeChoice::WrongGroup(g) => return invalid_ke(g),
            IkeChoice::NoneAcceptable(m) => {
                ctx.event(Event::RekeyFailed {
                    ike_sa: self.id,
                    what: Rekeyed::Ike,
                    failure: ChildFailure::NoProposalChosen(m),
                });
                return notify(NotifyType::NO_PROPOSAL_CHOSEN);
            }
        };
        let Some(peer_spi) = peer_spi else {
            return notify(NotifyType::INVALID_SYNTAX);
        };
        let ni = nonce.data().to_vec();
        if check_nonce(proposal.prf, &ni).is_err() {
            return notify(NotifyType::INVALID_SYNTAX);
        }
        let (our_spi, ours) = match ctx.new_ike_spi().and_then(|spi| {
            entropy::key_exchange(ctx.entropy, proposal.group)
                .map(|k| (spi, k))
                .map_err(|e| Failure::internal("drawing a key exchange", e))
        }) {
            Ok(x) => x,
            Err(f) => {
                ctx.failed(self.id, self.role, f);
                return notify(NotifyType::TEMPORARY_FAILURE);
            }
        };
        let public = ke_repr(ours.as_ref());
        let nr = entropy::nonce(ctx.entropy);
        let spis = IkeSpis {
            initiator: peer_spi.to_bytes(),
            responder: our_spi.to_bytes(),
        };
        let keys = match ours.agree(ke.data()).and_then(|shared| {
            self.keys
                .rekey(proposal.prf, proposal.aead, &shared, &ni, &nr, &spis)
        }) {
            Ok(k) => k,
            Err(_) => return notify(NotifyType::INVALID_SYNTAX),
        };
        let new_id = super::action::IkeSaId {
            initiator: peer_spi,
            responder: our_spi,
        };
        let new = self.successor(ctx, new_id, Role::Responder, keys, proposal);
        if ours_outstanding {
            self.pending_ike = Some(PendingIke {
                sa: new,
                lowest: lowest(&ni, &nr),
            });
        } else {
            ctx.event(Event::IkeSaRekeyed {
                old: self.id,
                new: new_id,
                by_us: false,
            });
            self.hand_over(ctx, new);
            self.fate = Fate::Replaced {
                until: ctx.now.saturating_add(ctx.config.half_open_timeout),
            };
        }
        vec![
            PayloadRepr::Sa(proposal::ike_answer(number, proposal, Some(our_spi))),
            PayloadRepr::Nonce(NonceRepr { data: nr }),
            public,
        ]
    }

    /// The IKE SA a rekey makes: on our path, message IDs from 0, no CHILD
    /// SA yet ([`EstablishedSa::hand_over`] moves them).
    fn successor(
        &self,
        ctx: &mut Ctx<'_>,
        id: super::action::IkeSaId,
        role: Role,
        keys: crate::crypto::IkeSaKeys,
        proposal: super::config::IkeProposal,
    ) -> Box<EstablishedSa> {
        Box::new(EstablishedSa::new(
            ctx,
            id,
            role,
            self.path,
            keys,
            IvCounter::new(),
            self.nat,
            proposal,
            Vec::new(),
            true,
        ))
    }

    /// The new IKE SA takes our CHILD SAs and what we meant to do with
    /// them, and joins the engine.
    fn hand_over(&mut self, ctx: &mut Ctx<'_>, mut new: Box<EstablishedSa>) {
        new.children = std::mem::take(&mut self.children);
        // A CHILD SA lost and not yet made again is the new SA's to make.
        new.recreate = std::mem::take(&mut self.recreate);
        let mut kept = std::collections::VecDeque::new();
        for w in self.wanted.drain(..) {
            match w {
                Want::RekeyChild(_) | Want::DeleteChild(_) | Want::NewChild => new.want(w),
                other => kept.push_back(other),
            }
        }
        self.wanted = kept;
        self.ike_rekey_at = None;
        ctx.spawn(new);
    }

    /// The SA the peer's crossing rekey made survives: it takes over, and
    /// the peer deletes this one.
    pub(crate) fn adopt_pending(&mut self, ctx: &mut Ctx<'_>, p: PendingIke) {
        ctx.event(Event::IkeSaRekeyed {
            old: self.id,
            new: p.sa.id,
            by_us: false,
        });
        self.hand_over(ctx, p.sa);
        self.fate = Fate::Replaced {
            until: ctx.now.saturating_add(ctx.config.half_open_timeout),
        };
    }
}
