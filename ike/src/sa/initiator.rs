//! The initiator's states: [`InitSent`] (IKE_SA_INIT request out) and
//! [`AuthSent`] (IKE_AUTH request out). Each retransmits its request, byte
//! for byte, on the engine's timer until a response comes or the tries are
//! spent (RFC 7296 §2.1); message IDs 0 and 1 (window of 1).
//!
//! IKE_SA_INIT answers that cost a round trip (§1.2, §2.6): a COOKIE is
//! put first in the same request, resent with the same SPIi and nonce; an
//! INVALID_KE_PAYLOAD naming a group we allow gets a new KE payload in that
//! group, the same proposals, SPIi, nonce and any cookie (§2.6.1's shorter
//! exchange). An answer that repeats what we already did (a duplicate or
//! delayed datagram) is ignored; at most [`MAX_RETRIES`] such round trips.

use crate::crypto::{Group, IkeSaKeys, IkeSpis, IvCounter, KeyExchange, Role};
use crate::wire::{
    Chain, ChildSpi, ExchangeType, IkeSpi, KeMethod, KeRepr, Message, NonceRepr, NotifyRepr,
    NotifyType, PayloadRepr, SelectorRepr, TsRepr,
};

use super::action::{Action, ChildSaInstall, Event, IkeSaId, NatStatus, Path, Timestamp};
use super::authn;
use super::config::{Identity, IkeProposal};
use super::engine::{Ctx, Outcome, Retx, State};
use super::entropy;
use super::established::{Child, ChildPair, EstablishedSa};
use super::failure::{AuthSide, ChildFailure, Dropped, Failure};
use super::msg::{self, Collected};
use super::natd;
use super::proposal;
use super::ts;

/// At most this many COOKIE and INVALID_KE_PAYLOAD round trips per IKE SA.
pub(crate) const MAX_RETRIES: u32 = 4;

/// IKE port and the NAT-T port (RFC 7296 §2.23).
const IKE_PORT: u16 = 500;
pub(crate) const NAT_T_PORT: u16 = 4500;

/// IKE_SA_INIT request sent.
pub(crate) struct InitSent {
    spi_i: IkeSpi,
    path: Path,
    ni: Vec<u8>,
    ke: Box<dyn KeyExchange>,
    cookie: Option<Vec<u8>>,
    request: Vec<u8>,
    retx: Retx,
    retries: u32,
}

fn id(spi_i: IkeSpi, spi_r: IkeSpi) -> IkeSaId {
    IkeSaId {
        initiator: spi_i,
        responder: spi_r,
    }
}

fn ts_repr(ts: &[crate::wire::TrafficSelector]) -> TsRepr {
    TsRepr {
        selectors: ts.iter().map(|t| SelectorRepr::Range(*t)).collect(),
    }
}

impl InitSent {
    /// Draws the nonce and key exchange, sends the request. `None` (with a
    /// Failed event) if that fails.
    pub(crate) fn start(ctx: &mut Ctx<'_>, spi_i: IkeSpi, path: Path) -> Option<InitSent> {
        let fail = |ctx: &mut Ctx<'_>, f| {
            ctx.failed(id(spi_i, IkeSpi(0)), Role::Initiator, f);
            None
        };
        // Validated: at least one proposal.
        let group = ctx
            .config
            .ike_proposals
            .first()
            .map_or(Group::Curve25519, |p| p.group);
        let ni = entropy::nonce(ctx.entropy);
        let ke = match entropy::key_exchange(ctx.entropy, group) {
            Ok(k) => k,
            Err(e) => return fail(ctx, Failure::internal("drawing a key exchange", e)),
        };
        let request = match build_request(ctx, spi_i, path, &ni, ke.as_ref(), None) {
            Ok(r) => r,
            Err(f) => return fail(ctx, f),
        };
        ctx.send(path, request.clone());
        Some(InitSent {
            spi_i,
            path,
            ni,
            ke,
            cookie: None,
            request,
            retx: Retx::new(ctx),
            retries: 0,
        })
    }

    pub(crate) fn deadline(&self) -> Timestamp {
        self.retx.deadline()
    }

    fn id(&self) -> IkeSaId {
        id(self.spi_i, IkeSpi(0))
    }

    pub(crate) fn on_timer(mut self, ctx: &mut Ctx<'_>) -> Outcome {
        match self.retx.expire(ctx) {
            Some(sends) => {
                ctx.send(self.path, self.request.clone());
                ctx.event(Event::Retransmitted {
                    ike_sa: self.id(),
                    exchange: ExchangeType::IKE_SA_INIT,
                    sends,
                });
                Outcome::Keep(State::InitSent(self))
            }
            None => {
                ctx.failed(
                    self.id(),
                    Role::Initiator,
                    Failure::Timeout {
                        exchange: ExchangeType::IKE_SA_INIT,
                        sends: self.retx.sends(),
                    },
                );
                Outcome::Remove
            }
        }
    }

    fn keep(self) -> Outcome {
        Outcome::Keep(State::InitSent(self))
    }

    fn fail(self, ctx: &mut Ctx<'_>, failure: Failure) -> Outcome {
        ctx.failed(self.id(), Role::Initiator, failure);
        Outcome::Remove
    }

    /// Sends the request again, rebuilt (after a COOKIE or INVALID_KE).
    fn resend_rebuilt(mut self, ctx: &mut Ctx<'_>) -> Outcome {
        match build_request(
            ctx,
            self.spi_i,
            self.path,
            &self.ni,
            self.ke.as_ref(),
            self.cookie.as_deref(),
        ) {
            Ok(r) => {
                ctx.send(self.path, r.clone());
                self.request = r;
                self.retx = Retx::new(ctx);
                self.keep()
            }
            Err(f) => self.fail(ctx, f),
        }
    }

    pub(crate) fn on_message(
        mut self,
        ctx: &mut Ctx<'_>,
        m: &Message<&[u8]>,
        path: Path,
    ) -> Outcome {
        let h = m.header();
        let flags = h.flags();
        if h.exchange() != ExchangeType::IKE_SA_INIT || !flags.response || h.message_id() != 0 {
            ctx.dropped(
                path.remote,
                Dropped::Unexpected {
                    exchange: h.exchange(),
                    message_id: h.message_id(),
                    why: "waiting for the IKE_SA_INIT response",
                },
            );
            return self.keep();
        }
        let c = match Collected::new(m.payloads()) {
            Ok(c) => c,
            Err(problem) => {
                return self.fail(
                    ctx,
                    Failure::Protocol {
                        exchange: ExchangeType::IKE_SA_INIT,
                        problem,
                    },
                )
            }
        };
        if let Some(n) = c.notify(NotifyType::COOKIE) {
            if self.cookie.as_deref() == Some(n.data()) {
                return self.keep();
            }
            if self.retries >= MAX_RETRIES {
                return self.fail(
                    ctx,
                    Failure::TooManyRetries {
                        notify: NotifyType::COOKIE,
                    },
                );
            }
            self.retries += 1;
            self.cookie = Some(n.data().to_vec());
            return self.resend_rebuilt(ctx);
        }
        if let Some(requested) = c
            .notify(NotifyType::INVALID_KE_PAYLOAD)
            .and_then(|n| n.invalid_ke_group())
        {
            return self.invalid_ke(ctx, requested);
        }
        if let Some(notify) = c.error() {
            let failure = if notify == NotifyType::NO_PROPOSAL_CHOSEN {
                Failure::PeerChoseNoProposal {
                    exchange: ExchangeType::IKE_SA_INIT,
                    offered: ctx
                        .config
                        .ike_proposals
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                }
            } else {
                Failure::PeerError {
                    exchange: ExchangeType::IKE_SA_INIT,
                    notify,
                }
            };
            return self.fail(ctx, failure);
        }
        self.complete(ctx, m, &c, path)
    }

    fn invalid_ke(mut self, ctx: &mut Ctx<'_>, requested: KeMethod) -> Outcome {
        let ours = |g: Group| ctx.config.ike_proposals.iter().any(|p| p.group == g);
        let group = Group::from_transform_id(requested.0).filter(|g| ours(*g));
        match group {
            // A duplicate or delayed answer to an earlier request.
            Some(g) if g == self.ke.group() => self.keep(),
            Some(_) if self.retries >= MAX_RETRIES => self.fail(
                ctx,
                Failure::TooManyRetries {
                    notify: NotifyType::INVALID_KE_PAYLOAD,
                },
            ),
            Some(g) => match entropy::key_exchange(ctx.entropy, g) {
                Ok(ke) => {
                    self.retries += 1;
                    self.ke = ke;
                    self.resend_rebuilt(ctx)
                }
                Err(e) => self.fail(ctx, Failure::internal("drawing a key exchange", e)),
            },
            None => {
                let mut allowed: Vec<Group> = Vec::new();
                for p in &ctx.config.ike_proposals {
                    if !allowed.contains(&p.group) {
                        allowed.push(p.group);
                    }
                }
                self.fail(ctx, Failure::InvalidKeGroup { requested, allowed })
            }
        }
    }

    /// The regular response: keys, NAT detection, then IKE_AUTH.
    fn complete(
        self,
        ctx: &mut Ctx<'_>,
        m: &Message<&[u8]>,
        c: &Collected<'_>,
        path: Path,
    ) -> Outcome {
        let protocol = |problem| Failure::Protocol {
            exchange: ExchangeType::IKE_SA_INIT,
            problem,
        };
        let spi_r = m.header().spi_r();
        if spi_r.0 == 0 {
            return self.fail(ctx, protocol("the response has no responder SPI"));
        }
        let (Some(sa), Some(ke), Some(nonce)) = (c.sa, c.ke, c.nonce) else {
            return self.fail(
                ctx,
                protocol("the response lacks an SA, KE or Nonce payload"),
            );
        };
        let proposal = match proposal::check_ike_answer(&sa, &ctx.config.ike_proposals) {
            Ok(p) => p,
            Err(problem) => return self.fail(ctx, protocol(problem)),
        };
        if proposal.group != self.ke.group() || ke.group().0 != proposal.group.transform_id() {
            return self.fail(
                ctx,
                protocol("the responder's KE payload is not in the group of our KE payload"),
            );
        }
        let nr = nonce.data().to_vec();
        let peer_value = |error| Failure::PeerValue {
            exchange: ExchangeType::IKE_SA_INIT,
            error,
        };
        if let Err(e) = crate::crypto::check_nonce(proposal.prf, &nr) {
            return self.fail(ctx, peer_value(e));
        }
        let ike_id = id(self.spi_i, spi_r);
        let InitSent {
            ni,
            ke: our_ke,
            request,
            path: sent_path,
            ..
        } = self;
        let fail = |ctx: &mut Ctx<'_>, f: Failure| {
            ctx.failed(ike_id, Role::Initiator, f);
            Outcome::Remove
        };
        let shared = match our_ke.agree(ke.data()) {
            Ok(s) => s,
            Err(e) => return fail(ctx, peer_value(e)),
        };
        let spis = IkeSpis {
            initiator: ike_id.initiator.to_bytes(),
            responder: spi_r.to_bytes(),
        };
        let keys = match IkeSaKeys::initial(proposal.prf, proposal.aead, &shared, &ni, &nr, &spis) {
            Ok(k) => k,
            Err(e) => return fail(ctx, peer_value(e)),
        };
        let nat = natd::detect(
            &c.notifies,
            ike_id.initiator,
            spi_r,
            path,
            ctx.config.force_udp_encapsulation,
        );
        let peer_hashes = authn::peer_hashes(c.notify(NotifyType::SIGNATURE_HASH_ALGORITHMS));
        let auth_path = if nat.any()
            && sent_path.local.port() == IKE_PORT
            && sent_path.remote.port() == IKE_PORT
        {
            let mut p = sent_path;
            p.local.set_port(NAT_T_PORT);
            p.remote.set_port(NAT_T_PORT);
            p
        } else {
            sent_path
        };
        let started = AuthStart {
            id: ike_id,
            path: auth_path,
            keys,
            proposal,
            ni,
            nr,
            init_request: request,
            init_response: m.as_bytes().to_vec(),
            nat,
            peer_hashes,
        };
        match AuthSent::start(ctx, started) {
            Ok(s) => Outcome::Keep(State::AuthSent(Box::new(s))),
            Err(f) => fail(ctx, f),
        }
    }
}

/// The IKE_SA_INIT request: [N(COOKIE)], SA, KE, Ni, N(NAT_DETECTION_*),
/// N(SIGNATURE_HASH_ALGORITHMS).
fn build_request(
    ctx: &Ctx<'_>,
    spi_i: IkeSpi,
    path: Path,
    ni: &[u8],
    ke: &dyn KeyExchange,
    cookie: Option<&[u8]>,
) -> Result<Vec<u8>, Failure> {
    let mut payloads = Vec::new();
    if let Some(c) = cookie {
        payloads.push(PayloadRepr::Notify(NotifyRepr::new(
            NotifyType::COOKIE,
            c.to_vec(),
        )));
    }
    payloads.push(PayloadRepr::Sa(proposal::ike_offer(
        &ctx.config.ike_proposals,
        None,
    )));
    payloads.push(PayloadRepr::Ke(KeRepr {
        group: KeMethod(ke.group().transform_id()),
        data: ke.public_value().to_vec(),
    }));
    payloads.push(PayloadRepr::Nonce(NonceRepr { data: ni.to_vec() }));
    for n in natd::notifies(spi_i, IkeSpi(0), path, ctx.config.force_udp_encapsulation) {
        payloads.push(PayloadRepr::Notify(n));
    }
    payloads.push(PayloadRepr::Notify(authn::signature_hash_notify()));
    msg::plain(
        msg::header(
            id(spi_i, IkeSpi(0)),
            ExchangeType::IKE_SA_INIT,
            Role::Initiator,
            false,
            0,
        ),
        payloads,
    )
}

/// What IKE_SA_INIT leaves for IKE_AUTH.
struct AuthStart {
    id: IkeSaId,
    path: Path,
    keys: IkeSaKeys,
    proposal: IkeProposal,
    ni: Vec<u8>,
    nr: Vec<u8>,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    nat: NatStatus,
    peer_hashes: Vec<u16>,
}

/// IKE_AUTH request sent.
pub(crate) struct AuthSent {
    id: IkeSaId,
    path: Path,
    keys: IkeSaKeys,
    iv: IvCounter,
    proposal: IkeProposal,
    ni: Vec<u8>,
    nr: Vec<u8>,
    /// The responder's IKE_SA_INIT message: its AUTH covers it.
    init_response: Vec<u8>,
    nat: NatStatus,
    child_spi: ChildSpi,
    request: Vec<u8>,
    retx: Retx,
}

impl AuthSent {
    fn start(ctx: &mut Ctx<'_>, s: AuthStart) -> Result<AuthSent, Failure> {
        let config = ctx.config;
        let idi = config.local_id.to_repr();
        let octets = authn::octets(
            &s.keys,
            Role::Initiator,
            &s.init_request,
            &s.nr,
            &authn::id_body(&idi)?,
        );
        let auth = authn::ours(config, s.proposal.prf, &octets, &s.peer_hashes)?;
        let child_spi = ctx.new_child_spi()?;
        let mut inner = vec![PayloadRepr::IdI(idi)];
        // No other IKE SA with this peer: it may drop whatever it still holds
        // from an earlier life of ours (RFC 7296 §2.4).
        if !ctx.has_established_sa() {
            inner.push(PayloadRepr::Notify(NotifyRepr::new(
                NotifyType::INITIAL_CONTACT,
                vec![],
            )));
        }
        inner.extend([
            PayloadRepr::IdR(config.remote_id.to_repr()),
            PayloadRepr::Auth(auth),
            PayloadRepr::Sa(proposal::esp_offer(&config.esp_proposals, child_spi, None)),
            PayloadRepr::TsI(ts_repr(&config.local_ts)),
            PayloadRepr::TsR(ts_repr(&config.remote_ts)),
        ]);
        let mut iv = IvCounter::new();
        let request = msg::sealed(
            &s.keys,
            Role::Initiator,
            &mut iv,
            msg::header(s.id, ExchangeType::IKE_AUTH, Role::Initiator, false, 1),
            inner,
        )?;
        ctx.send(s.path, request.clone());
        Ok(AuthSent {
            id: s.id,
            path: s.path,
            keys: s.keys,
            iv,
            proposal: s.proposal,
            ni: s.ni,
            nr: s.nr,
            init_response: s.init_response,
            nat: s.nat,
            child_spi,
            request,
            retx: Retx::new(ctx),
        })
    }

    pub(crate) fn deadline(&self) -> Timestamp {
        self.retx.deadline()
    }

    pub(crate) fn on_timer(mut self: Box<Self>, ctx: &mut Ctx<'_>) -> Outcome {
        match self.retx.expire(ctx) {
            Some(sends) => {
                ctx.send(self.path, self.request.clone());
                ctx.event(Event::Retransmitted {
                    ike_sa: self.id,
                    exchange: ExchangeType::IKE_AUTH,
                    sends,
                });
                Outcome::Keep(State::AuthSent(self))
            }
            None => {
                ctx.failed(
                    self.id,
                    Role::Initiator,
                    Failure::Timeout {
                        exchange: ExchangeType::IKE_AUTH,
                        sends: self.retx.sends(),
                    },
                );
                Outcome::Remove
            }
        }
    }

    fn fail(self, ctx: &mut Ctx<'_>, failure: Failure) -> Outcome {
        ctx.failed(self.id, Role::Initiator, failure);
        Outcome::Remove
    }

    /// We could not authenticate the responder: tell it (INFORMATIONAL
    /// with AUTHENTICATION_FAILED, message ID 2, sent once, RFC 7296
    /// §2.21.2) and give up.
    fn refuse(mut self, ctx: &mut Ctx<'_>, failure: Failure) -> Outcome {
        if let Ok(bytes) = msg::sealed(
            &self.keys,
            Role::Initiator,
            &mut self.iv,
            msg::header(
                self.id,
                ExchangeType::INFORMATIONAL,
                Role::Initiator,
                false,
                2,
            ),
            vec![PayloadRepr::Notify(NotifyRepr::new(
                NotifyType::AUTHENTICATION_FAILED,
                vec![],
            ))],
        ) {
            ctx.send(self.path, bytes);
        }
        self.fail(ctx, failure)
    }

    pub(crate) fn on_message(
        self: Box<Self>,
        ctx: &mut Ctx<'_>,
        m: &Message<&[u8]>,
        path: Path,
    ) -> Outcome {
        let h = m.header();
        if h.exchange() != ExchangeType::IKE_AUTH
            || !h.flags().response
            || h.message_id() != 1
            || h.spi_r() != self.id.responder
        {
            ctx.dropped(
                path.remote,
                Dropped::Unexpected {
                    exchange: h.exchange(),
                    message_id: h.message_id(),
                    why: "waiting for the IKE_AUTH response",
                },
            );
            return Outcome::Keep(State::AuthSent(self));
        }
        let (pt, first) = match msg::open(&self.keys, Role::Initiator, m) {
            Ok(o) => o,
            Err(reason) => {
                ctx.dropped(path.remote, reason);
                return Outcome::Keep(State::AuthSent(self));
            }
        };
        let chain = match Chain::new_checked_inner(first, &pt) {
            Ok(c) => c,
            Err(error) => {
                ctx.dropped(
                    path.remote,
                    Dropped::MalformedContent {
                        exchange: ExchangeType::IKE_AUTH,
                        error,
                    },
                );
                return Outcome::Keep(State::AuthSent(self));
            }
        };
        let protocol = |problem| Failure::Protocol {
            exchange: ExchangeType::IKE_AUTH,
            problem,
        };
        let c = match Collected::new(chain.payloads()) {
            Ok(c) => c,
            Err(problem) => return self.fail(ctx, protocol(problem)),
        };
        let config = ctx.config;
        if c.notify(NotifyType::AUTHENTICATION_FAILED).is_some() {
            let failure = Failure::AuthenticationFailed {
                side: AuthSide::Us,
                identity: config.local_id.clone(),
                method: config.auth.method(),
            };
            return self.fail(ctx, failure);
        }
        let (Some(idr), Some(auth)) = (c.id_r, c.auth) else {
            let failure = match c.error() {
                Some(notify) => Failure::PeerError {
                    exchange: ExchangeType::IKE_AUTH,
                    notify,
                },
                None => protocol("the response lacks IDr or AUTH"),
            };
            return self.fail(ctx, failure);
        };
        let peer = Identity::from_payload(idr.id_type(), idr.data());
        if !config.remote_id.matches(&peer) {
            let failure = Failure::IdentityMismatch {
                payload: "IDr",
                expected: config.remote_id.clone(),
                received: peer,
            };
            return self.refuse(ctx, failure);
        }
        let octets = authn::octets(
            &self.keys,
            Role::Responder,
            &self.init_response,
            &self.ni,
            idr.rest_of_payload(),
        );
        if let Err(f) = authn::check_peer(config, self.proposal.prf, &octets, &auth, &peer) {
            return self.refuse(ctx, f);
        }
        ctx.initial_contact = c.notify(NotifyType::INITIAL_CONTACT).is_some();
        ctx.event(Event::IkeSaEstablished(super::action::Established {
            ike_sa: self.id,
            role: Role::Initiator,
            remote_id: peer,
            proposal: self.proposal,
            path: self.path,
            nat: self.nat,
        }));
        let child = match self.child(ctx, &c) {
            Ok(pair) => Some(pair),
            Err(failure) => {
                ctx.release_child_spi(self.child_spi);
                ctx.event(Event::ChildSaRefused {
                    ike_sa: self.id,
                    role: Role::Initiator,
                    failure,
                });
                None
            }
        };
        let s = *self;
        // Up: the CHILD SAs of further tunnels are asked for at once.
        Box::new(EstablishedSa::new(
            ctx,
            s.id,
            Role::Initiator,
            s.path,
            s.keys,
            s.iv,
            s.nat,
            s.proposal,
            child.into_iter().collect(),
            false,
        ))
        .pump(ctx)
    }

    /// The CHILD SA part of the response: check it and install.
    fn child(&self, ctx: &mut Ctx<'_>, c: &Collected<'_>) -> Result<Child, ChildFailure> {
        let config = ctx.config;
        let (Some(sa), Some(tsi), Some(tsr)) = (c.sa, c.ts_i, c.ts_r) else {
            return Err(match c.error() {
                Some(notify) => ChildFailure::PeerRefused { notify },
                None => ChildFailure::Protocol("the response lacks SA, TSi or TSr"),
            });
        };
        let (esp, peer_spi) = proposal::check_esp_answer(&sa, &config.esp_proposals, None)
            .map_err(ChildFailure::Protocol)?;
        let (tsi, tsr) = (ts::ranges(&tsi), ts::ranges(&tsr));
        if tsi.is_empty()
            || tsr.is_empty()
            || !ts::all_within(&tsi, &config.local_ts)
            || !ts::all_within(&tsr, &config.remote_ts)
        {
            return Err(ChildFailure::Protocol(
                "the responder's traffic selectors are not within ours",
            ));
        }
        let keys = self
            .keys
            .child_sa_keys(esp.aead, None, &self.ni, &self.nr)
            .map_err(|_| ChildFailure::Protocol("CHILD SA keys could not be derived"))?;
        ctx.push(Action::InstallChildSa(Box::new(ChildSaInstall {
            ike_sa: self.id,
            tunnel: 0,
            inbound_spi: self.child_spi,
            outbound_spi: peer_spi,
            aead: esp.aead,
            esn: esp.esn,
            local_ts: tsi.clone(),
            remote_ts: tsr.clone(),
            lifetimes: config.child_lifetimes,
            path: self.path,
            udp_encapsulation: self.nat.any(),
            outbound_active: true,
            replaces: None,
            keys,
            role: Role::Initiator,
        })));
        let pair = ChildPair {
            inbound: self.child_spi,
            outbound: peer_spi,
        };
        Ok(Child::new(ctx, pair, 0, tsi, tsr, true))
    }
}
