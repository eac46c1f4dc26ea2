//! The responder: IKE_SA_INIT answered statelessly (COOKIE, errors) or by
//! creating a half-open IKE SA ([`InitAnswered`]), then IKE_AUTH.
//!
//! Order of the IKE_SA_INIT checks: the payloads SA, KE and Nonce present;
//! a valid COOKIE if the half-open counts demand one (computed over Ni, so
//! the nonce comes first); an acceptable proposal (else
//! NO_PROPOSAL_CHOSEN); the KE payload in the chosen group (else
//! INVALID_KE_PAYLOAD naming it); nonce and KE lengths. Only then is
//! anything drawn, computed or kept. The initiator's IKE_SA_INIT message is
//! kept as received (its AUTH covers it) and our response as sent (ours
//! covers it, and a retransmitted request gets it again).

use crate::crypto::{check_nonce, IkeSaKeys, IkeSpis, IvCounter, Role};
use crate::wire::{
    Chain, ExchangeType, IkeSpi, KeMethod, KeRepr, Message, NonceRepr, NotifyRepr, NotifyType,
    PayloadRepr, SelectorRepr, TsRepr,
};

use super::action::{Action, ChildSaInstall, Event, IkeSaId, NatStatus, Path, Timestamp};
use super::authn;
use super::config::{Identity, IkeProposal};
use super::cookie::CookieJar;
use super::engine::{Ctx, Outcome, State};
use super::entropy::{self, Entropy};
use super::established::{Child, ChildPair, Closing, EstablishedSa};
use super::failure::{ChildFailure, Dropped, Failure};
use super::msg::{self, Collected};
use super::natd;
use super::proposal::{self, IkeChoice};
use super::ts;

/// What became of an IKE_SA_INIT request.
pub(crate) enum InitOutcome {
    /// Answered without state (or dropped).
    Stateless,
    /// A half-open IKE SA.
    Created(Box<InitAnswered>),
}

fn stateless_reply(
    ctx: &mut Ctx<'_>,
    m: &Message<&[u8]>,
    path: Path,
    notify: NotifyRepr,
    failure: Option<Failure>,
) -> InitOutcome {
    let spi_i = m.header().spi_i();
    let header = msg::header(
        IkeSaId {
            initiator: spi_i,
            responder: IkeSpi(0),
        },
        ExchangeType::IKE_SA_INIT,
        Role::Responder,
        true,
        0,
    );
    let notify_type = notify.notify_type;
    match msg::plain(header, vec![PayloadRepr::Notify(notify)]) {
        Ok(bytes) => {
            ctx.send(path, bytes);
            ctx.event(Event::InitAnsweredStatelessly {
                remote: path.remote,
                initiator_spi: spi_i,
                notify: notify_type,
                failure,
            });
        }
        Err(f) => ctx.failed(
            IkeSaId {
                initiator: spi_i,
                responder: IkeSpi(0),
            },
            Role::Responder,
            f,
        ),
    }
    InitOutcome::Stateless
}

fn error_reply(ctx: &mut Ctx<'_>, m: &Message<&[u8]>, path: Path, failure: Failure) -> InitOutcome {
    let notify = failure.notify_type().unwrap_or(NotifyType::INVALID_SYNTAX);
    stateless_reply(ctx, m, path, NotifyRepr::new(notify, vec![]), Some(failure))
}

/// Answers an IKE_SA_INIT request that is not a retransmission.
pub(crate) fn answer_init(
    ctx: &mut Ctx<'_>,
    m: &Message<&[u8]>,
    path: Path,
    cookies: &CookieJar,
    cookie_required: bool,
    draw_spi: impl FnOnce(&mut dyn Entropy) -> Option<IkeSpi>,
) -> InitOutcome {
    let protocol = |problem| Failure::Protocol {
        exchange: ExchangeType::IKE_SA_INIT,
        problem,
    };
    let spi_i = m.header().spi_i();
    if m.header().message_id() != 0 {
        ctx.dropped(
            path.remote,
            Dropped::Unexpected {
                exchange: ExchangeType::IKE_SA_INIT,
                message_id: m.header().message_id(),
                why: "IKE_SA_INIT requests have message ID 0",
            },
        );
        return InitOutcome::Stateless;
    }
    let c = match Collected::new(m.payloads()) {
        Ok(c) => c,
        Err(problem) => return error_reply(ctx, m, path, protocol(problem)),
    };
    let (Some(sa), Some(ke), Some(nonce)) = (c.sa, c.ke, c.nonce) else {
        return error_reply(
            ctx,
            m,
            path,
            protocol("the request lacks an SA, KE or Nonce payload"),
        );
    };
    let ni = nonce.data();
    if cookie_required {
        let valid = c
            .notify(NotifyType::COOKIE)
            .is_some_and(|n| cookies.verify(n.data(), ni, path.remote.ip(), spi_i));
        if !valid {
            let cookie = cookies.make(ni, path.remote.ip(), spi_i);
            return stateless_reply(
                ctx,
                m,
                path,
                NotifyRepr::new(NotifyType::COOKIE, cookie),
                None,
            );
        }
    }
    let (number, chosen) = match proposal::choose_ike(&sa, &ctx.config.ike_proposals, ke.group()) {
        IkeChoice::Accept { number, proposal } => (number, proposal),
        IkeChoice::WrongGroup(g) => {
            return stateless_reply(
                ctx,
                m,
                path,
                NotifyRepr::new(
                    NotifyType::INVALID_KE_PAYLOAD,
                    g.transform_id().to_be_bytes().to_vec(),
                ),
                None,
            )
        }
        IkeChoice::NoneAcceptable(mismatch) => {
            return error_reply(ctx, m, path, Failure::NoProposalChosen(mismatch))
        }
    };
    let peer_value = |error| Failure::PeerValue {
        exchange: ExchangeType::IKE_SA_INIT,
        error,
    };
    if let Err(e) = check_nonce(chosen.prf, ni) {
        return error_reply(ctx, m, path, peer_value(e));
    }
    if ke.data().len() != chosen.group.ke_data_len() {
        return error_reply(
            ctx,
            m,
            path,
            peer_value(crate::crypto::Error::InvalidPeerPublicValue),
        );
    }
    // Acceptable: from here on, state.
    let our_ke = match entropy::key_exchange(ctx.entropy, chosen.group) {
        Ok(k) => k,
        Err(e) => return error_reply(ctx, m, path, Failure::internal("drawing a key exchange", e)),
    };
    let public = our_ke.public_value().to_vec();
    let shared = match our_ke.agree(ke.data()) {
        Ok(s) => s,
        Err(e) => return error_reply(ctx, m, path, peer_value(e)),
    };
    let Some(spi_r) = draw_spi(ctx.entropy) else {
        return error_reply(
            ctx,
            m,
            path,
            Failure::internal("drawing an IKE SPI", "the entropy source repeats itself"),
        );
    };
    let nr = entropy::nonce(ctx.entropy);
    let id = IkeSaId {
        initiator: spi_i,
        responder: spi_r,
    };
    let spis = IkeSpis {
        initiator: spi_i.to_bytes(),
        responder: spi_r.to_bytes(),
    };
    let keys = match IkeSaKeys::initial(chosen.prf, chosen.aead, &shared, ni, &nr, &spis) {
        Ok(k) => k,
        Err(e) => return error_reply(ctx, m, path, peer_value(e)),
    };
    let force = ctx.config.force_udp_encapsulation;
    let nat = natd::detect(&c.notifies, spi_i, IkeSpi(0), path, force);
    let signature_hashes = c.notify(NotifyType::SIGNATURE_HASH_ALGORITHMS);
    let peer_hashes = authn::peer_hashes(signature_hashes);
    let mut payloads = vec![
        PayloadRepr::Sa(proposal::ike_answer(number, chosen, None)),
        PayloadRepr::Ke(KeRepr {
            group: KeMethod(chosen.group.transform_id()),
            data: public,
        }),
        PayloadRepr::Nonce(NonceRepr { data: nr.clone() }),
    ];
    if c.notify(NotifyType::NAT_DETECTION_SOURCE_IP).is_some() {
        for n in natd::notifies(spi_i, spi_r, path, force) {
            payloads.push(PayloadRepr::Notify(n));
        }
    }
    if signature_hashes.is_some() {
        payloads.push(PayloadRepr::Notify(authn::signature_hash_notify()));
    }
    let response = match msg::plain(
        msg::header(id, ExchangeType::IKE_SA_INIT, Role::Responder, true, 0),
        payloads,
    ) {
        Ok(r) => r,
        Err(f) => {
            ctx.failed(id, Role::Responder, f);
            return InitOutcome::Stateless;
        }
    };
    ctx.send(path, response.clone());
    InitOutcome::Created(Box::new(InitAnswered {
        id,
        path,
        keys,
        proposal: chosen,
        ni: ni.to_vec(),
        nr,
        request: m.as_bytes().to_vec(),
        response,
        nat,
        peer_hashes,
        expires: ctx.now.saturating_add(ctx.config.half_open_timeout),
    }))
}

/// Half-open: IKE_SA_INIT answered, waiting for IKE_AUTH.
pub(crate) struct InitAnswered {
    id: IkeSaId,
    path: Path,
    keys: IkeSaKeys,
    proposal: IkeProposal,
    ni: Vec<u8>,
    nr: Vec<u8>,
    /// The initiator's IKE_SA_INIT request as received.
    request: Vec<u8>,
    /// Our IKE_SA_INIT response as sent.
    response: Vec<u8>,
    nat: NatStatus,
    peer_hashes: Vec<u16>,
    expires: Timestamp,
}

fn ts_repr(ts: &[crate::wire::TrafficSelector]) -> TsRepr {
    TsRepr {
        selectors: ts.iter().map(|t| SelectorRepr::Range(*t)).collect(),
    }
}

impl InitAnswered {
    pub(crate) fn spi(&self) -> IkeSpi {
        self.id.responder
    }

    pub(crate) fn request(&self) -> &[u8] {
        &self.request
    }

    pub(crate) fn response(&self) -> &[u8] {
        &self.response
    }

    pub(crate) fn deadline(&self) -> Timestamp {
        self.expires
    }

    pub(crate) fn on_timer(self: Box<Self>, ctx: &mut Ctx<'_>) -> Outcome {
        ctx.failed(
            self.id,
            Role::Responder,
            Failure::HalfOpenExpired {
                after: ctx.config.half_open_timeout,
            },
        );
        Outcome::Remove
    }

    pub(crate) fn on_message(
        mut self: Box<Self>,
        ctx: &mut Ctx<'_>,
        m: &Message<&[u8]>,
        path: Path,
    ) -> Outcome {
        let h = m.header();
        if h.exchange() != ExchangeType::IKE_AUTH
            || h.flags().response
            || h.message_id() != 1
            || h.spi_i() != self.id.initiator
        {
            ctx.dropped(
                path.remote,
                Dropped::Unexpected {
                    exchange: h.exchange(),
                    message_id: h.message_id(),
                    why: "waiting for the IKE_AUTH request",
                },
            );
            return Outcome::Keep(State::InitAnswered(self));
        }
        let (pt, first) = match msg::open(&self.keys, Role::Responder, m) {
            Ok(o) => o,
            Err(reason) => {
                ctx.dropped(path.remote, reason);
                return Outcome::Keep(State::InitAnswered(self));
            }
        };
        // Authenticated: the peer's address from now on (RFC 7296 §2.23).
        self.path = path;
        let mut iv = IvCounter::new();
        let c = Chain::new_checked_inner(first, &pt)
            .map_err(|_| "the encrypted content is not a valid payload chain")
            .and_then(|chain| Collected::new(chain.payloads()));
        let c = match c {
            Ok(c) => c,
            Err(problem) => {
                let f = Failure::Protocol {
                    exchange: ExchangeType::IKE_AUTH,
                    problem,
                };
                return self.refuse(ctx, &mut iv, f);
            }
        };
        match self.authenticate(ctx, &c) {
            Ok(peer) => self.accept(ctx, iv, &c, peer),
            Err(f) => self.refuse(ctx, &mut iv, f),
        }
    }

    /// Checks IDi (and IDr if sent) and the initiator's AUTH.
    fn authenticate(&self, ctx: &Ctx<'_>, c: &Collected<'_>) -> Result<Identity, Failure> {
        let config = ctx.config;
        let Some(idi) = c.id_i else {
            return Err(Failure::Protocol {
                exchange: ExchangeType::IKE_AUTH,
                problem: "the request has no IDi",
            });
        };
        let peer = Identity::from_payload(idi.id_type(), idi.data());
        if !config.remote_id.matches(&peer) {
            return Err(Failure::IdentityMismatch {
                payload: "IDi",
                expected: config.remote_id.clone(),
                received: peer,
            });
        }
        if let Some(idr) = c.id_r {
            let asked = Identity::from_payload(idr.id_type(), idr.data());
            if !config.local_id.matches(&asked) {
                return Err(Failure::IdentityMismatch {
                    payload: "IDr",
                    expected: config.local_id.clone(),
                    received: asked,
                });
            }
        }
        let Some(auth) = c.auth else {
            // No AUTH: the initiator wants EAP (RFC 7296 §2.16), which we
            // do not offer.
            return Err(Failure::UnexpectedAuthMethod {
                identity: peer,
                expected: config.auth.method(),
                received: crate::wire::AuthMethod(0),
            });
        };
        let octets = authn::octets(
            &self.keys,
            Role::Initiator,
            &self.request,
            &self.nr,
            idi.rest_of_payload(),
        );
        authn::check_peer(config, self.proposal.prf, &octets, &auth, &peer)?;
        Ok(peer)
    }

    /// Answers AUTHENTICATION_FAILED (or INVALID_SYNTAX), encrypted, and
    /// keeps the answer for retransmissions.
    fn refuse(self: Box<Self>, ctx: &mut Ctx<'_>, iv: &mut IvCounter, failure: Failure) -> Outcome {
        let notify = failure
            .notify_type()
            .unwrap_or(NotifyType::AUTHENTICATION_FAILED);
        let response = msg::sealed(
            &self.keys,
            Role::Responder,
            iv,
            msg::header(self.id, ExchangeType::IKE_AUTH, Role::Responder, true, 1),
            vec![PayloadRepr::Notify(NotifyRepr::new(notify, vec![]))],
        );
        ctx.failed(self.id, Role::Responder, failure);
        match response {
            Ok(bytes) => {
                ctx.send(self.path, bytes.clone());
                Outcome::Keep(State::Closing(Closing::new(
                    Some((1, bytes)),
                    ctx.now.saturating_add(ctx.config.half_open_timeout),
                )))
            }
            Err(f) => {
                ctx.failed(self.id, Role::Responder, f);
                Outcome::Remove
            }
        }
    }

    /// Authenticated: our AUTH, the CHILD SA, the response.
    fn accept(
        self: Box<Self>,
        ctx: &mut Ctx<'_>,
        mut iv: IvCounter,
        c: &Collected<'_>,
        peer: Identity,
    ) -> Outcome {
        let config = ctx.config;
        let idr = config.local_id.to_repr();
        let auth = authn::id_body(&idr).and_then(|body| {
            let octets =
                authn::octets(&self.keys, Role::Responder, &self.response, &self.ni, &body);
            authn::ours(config, self.proposal.prf, &octets, &self.peer_hashes)
        });
        let auth = match auth {
            Ok(a) => a,
            Err(f) => return self.refuse(ctx, &mut iv, f),
        };
        let mut inner = vec![PayloadRepr::IdR(idr), PayloadRepr::Auth(auth)];
        let (child, install) = match self.child(ctx, c, &mut inner) {
            Ok(Some((child, install))) => (Some(child), Some(install)),
            Ok(None) => (None, None),
            Err(failure) => {
                inner.push(PayloadRepr::Notify(NotifyRepr::new(
                    failure.notify_type(),
                    vec![],
                )));
                ctx.event(Event::ChildSaRefused {
                    ike_sa: self.id,
                    role: Role::Responder,
                    failure,
                });
                (None, None)
            }
        };
        let response = match msg::sealed(
            &self.keys,
            Role::Responder,
            &mut iv,
            msg::header(self.id, ExchangeType::IKE_AUTH, Role::Responder, true, 1),
            inner,
        ) {
            Ok(r) => r,
            Err(f) => {
                ctx.failed(self.id, Role::Responder, f);
                return Outcome::Remove;
            }
        };
        ctx.initial_contact = c.notify(NotifyType::INITIAL_CONTACT).is_some();
        ctx.event(Event::IkeSaEstablished(super::action::Established {
            ike_sa: self.id,
            role: Role::Responder,
            remote_id: peer,
            proposal: self.proposal,
            path: self.path,
            nat: self.nat,
        }));
        // Installed before the response leaves: the initiator may send ESP
        // as soon as it has it.
        if let Some(install) = install {
            ctx.push(Action::InstallChildSa(install));
        }
        ctx.send(self.path, response.clone());
        let s = *self;
        let mut est = EstablishedSa::new(
            ctx,
            s.id,
            Role::Responder,
            s.path,
            s.keys,
            iv,
            s.nat,
            s.proposal,
            child.into_iter().collect(),
            false,
        );
        est.answered(1, response);
        Outcome::Keep(State::Established(Box::new(est)))
    }

    /// The first CHILD SA: ESP proposal and narrowed selectors, appended to
    /// `inner`. `Ok(None)` if the initiator asked for none (no SA and no TS
    /// payloads, RFC 6023).
    #[allow(clippy::type_complexity)]
    fn child(
        &self,
        ctx: &mut Ctx<'_>,
        c: &Collected<'_>,
        inner: &mut Vec<PayloadRepr>,
    ) -> Result<Option<(Child, Box<ChildSaInstall>)>, ChildFailure> {
        let config = ctx.config;
        let (sa, tsi, tsr) = match (c.sa, c.ts_i, c.ts_r) {
            (None, None, None) => return Ok(None),
            (Some(sa), Some(tsi), Some(tsr)) => (sa, tsi, tsr),
            _ => return Err(ChildFailure::Protocol("the request lacks SA, TSi or TSr")),
        };
        let (number, esp, peer_spi) =
            proposal::choose_esp(&sa, &config.esp_proposals, proposal::KeRule::Ignore)
                .map_err(ChildFailure::NoProposalChosen)?;
        let (tunnel, tsi, tsr) = ts::answer(&tsi, &tsr, config)?;
        let keys = self
            .keys
            .child_sa_keys(esp.aead, None, &self.ni, &self.nr)
            .map_err(|_| ChildFailure::Protocol("CHILD SA keys could not be derived"))?;
        let our_spi = ctx
            .new_child_spi()
            .map_err(|_| ChildFailure::Protocol("no ESP SPI could be drawn"))?;
        inner.push(PayloadRepr::Sa(proposal::esp_answer(
            number, esp, our_spi, None,
        )));
        inner.push(PayloadRepr::TsI(ts_repr(&tsi)));
        inner.push(PayloadRepr::TsR(ts_repr(&tsr)));
        let install = Box::new(ChildSaInstall {
            ike_sa: self.id,
            tunnel,
            inbound_spi: our_spi,
            outbound_spi: peer_spi,
            aead: esp.aead,
            esn: esp.esn,
            local_ts: tsr,
            remote_ts: tsi,
            lifetimes: config.child_lifetimes,
            path: self.path,
            udp_encapsulation: self.nat.any(),
            outbound_active: true,
            replaces: None,
            keys,
            role: Role::Responder,
        });
        let pair = ChildPair {
            inbound: our_spi,
            outbound: peer_spi,
        };
        let (local_ts, remote_ts) = (install.local_ts.clone(), install.remote_ts.clone());
        let child = Child::new(ctx, pair, tunnel, local_ts, remote_ts, true);
        Ok(Some((child, install)))
    }
}
