//! [`Ike`]: the IKE SAs of one connection, keyed by our SPI, with the
//! responder's shared state (cookie secrets, half-open counts), and the
//! dispatch of datagrams and timers to each SA's state.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use crate::crypto::Role;
use crate::wire::{ChildSpi, ExchangeType, IkeSpi, Message};

use super::action::ChildSaId;
use super::action::{Action, Datagram, Event, IkeSaId, Path, Timestamp};
use super::config::Config;
use super::cookie::CookieJar;
use super::entropy::{self, Entropy};
use super::established::{Closing, EstablishedSa, Fate, Want};
use super::failure::{Dropped, Failure};
use super::initiator::{AuthSent, InitSent};
use super::responder::{self, InitAnswered, InitOutcome};
use super::Error;

/// What a state handler needs from the engine: configuration, randomness,
/// the actions being collected, the time, and ESP SPI allocation.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a Config,
    pub(crate) entropy: &'a mut dyn Entropy,
    pub(crate) now: Timestamp,
    actions: &'a mut Vec<Action>,
    child_spis: &'a mut HashSet<ChildSpi>,
    owned: &'a mut Vec<ChildSpi>,
    /// The IKE SAs in the engine (without the one running), and the SPI
    /// of the one running: taken IKE SPIs.
    sas: &'a HashMap<IkeSpi, Sa>,
    current: Option<IkeSpi>,
    /// IKE SAs created by a rekey, to be added when the handler returns.
    spawned: &'a mut Vec<Spawned>,
    /// Set by IKE_AUTH when the peer, now authenticated, sent INITIAL_CONTACT:
    /// it has no other IKE SA with us, so ours are stale (RFC 7296 §2.4).
    pub(crate) initial_contact: bool,
}

/// An IKE SA created by a rekey, with the ESP SPIs it took over.
pub(crate) struct Spawned {
    spi: IkeSpi,
    role: Role,
    state: State,
    child_spis: Vec<ChildSpi>,
}

impl Ctx<'_> {
    pub(crate) fn push(&mut self, a: Action) {
        self.actions.push(a);
    }

    pub(crate) fn send(&mut self, path: Path, bytes: Vec<u8>) {
        self.actions.push(Action::Send(Datagram { path, bytes }));
    }

    pub(crate) fn event(&mut self, e: Event) {
        self.actions.push(Action::Event(e));
    }

    pub(crate) fn dropped(&mut self, remote: SocketAddr, reason: Dropped) {
        self.event(Event::Dropped { remote, reason });
    }

    pub(crate) fn failed(&mut self, ike_sa: IkeSaId, role: Role, failure: Failure) {
        self.event(Event::Failed {
            ike_sa,
            role,
            failure,
        });
    }

    /// Whether another IKE SA of this connection is established.
    pub(crate) fn has_established_sa(&self) -> bool {
        self.sas
            .values()
            .any(|s| matches!(s.state, State::Established(_)))
    }

    /// A fresh inbound ESP SPI, owned by the current IKE SA.
    pub(crate) fn new_child_spi(&mut self) -> Result<ChildSpi, Failure> {
        let used = &*self.child_spis;
        let spi = entropy::child_spi(self.entropy, |s| used.contains(&s)).ok_or_else(|| {
            Failure::internal("drawing an ESP SPI", "the entropy source repeats itself")
        })?;
        self.child_spis.insert(spi);
        self.owned.push(spi);
        Ok(spi)
    }

    /// Gives back an ESP SPI that was not installed.
    pub(crate) fn release_child_spi(&mut self, spi: ChildSpi) {
        self.child_spis.remove(&spi);
        self.owned.retain(|s| *s != spi);
    }

    /// A fresh IKE SPI for an IKE SA created by a rekey.
    pub(crate) fn new_ike_spi(&mut self) -> Result<IkeSpi, Failure> {
        let (sas, current, spawned) = (self.sas, self.current, &*self.spawned);
        entropy::ike_spi(self.entropy, |s| {
            sas.contains_key(&s) || current == Some(s) || spawned.iter().any(|x| x.spi == s)
        })
        .ok_or_else(|| Failure::internal("drawing an IKE SPI", "the entropy source repeats itself"))
    }

    /// Adds an IKE SA made by a rekey to the engine, with the CHILD SAs it
    /// holds (their ESP SPIs move to it).
    pub(crate) fn spawn(&mut self, sa: Box<EstablishedSa>) {
        let child_spis: Vec<ChildSpi> = sa.children.iter().map(|c| c.pair.inbound).collect();
        self.owned.retain(|s| !child_spis.contains(s));
        let spi = match sa.role {
            Role::Initiator => sa.id.initiator,
            Role::Responder => sa.id.responder,
        };
        self.spawned.push(Spawned {
            spi,
            role: sa.role,
            state: State::Established(sa),
            child_spis,
        });
    }

    /// `now + d`, less a random share of up to
    /// [`Config::rekey_jitter_percent`] of `d`.
    pub(crate) fn jittered(&mut self, d: std::time::Duration) -> Timestamp {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let span = ms / 100 * u64::from(self.config.rekey_jitter_percent);
        let r = u64::from_be_bytes(entropy::array(self.entropy));
        let early = r.checked_rem(span.saturating_add(1)).unwrap_or(0);
        Timestamp::from_millis(
            self.now
                .as_millis()
                .saturating_add(ms.saturating_sub(early)),
        )
    }

    /// When to retry an exchange the peer answered TEMPORARY_FAILURE: 1 to
    /// 4 s from now, at random (so that two peers do not collide again).
    pub(crate) fn retry_at(&mut self) -> Timestamp {
        let r = u64::from_be_bytes(entropy::array(self.entropy));
        Timestamp::from_millis(self.now.as_millis().saturating_add(1000 + r % 3000))
    }
}

/// An initiator's retransmission schedule.
#[derive(Debug)]
pub(crate) struct Retx {
    sends: u32,
    deadline: Timestamp,
}

impl Retx {
    /// After the first send.
    pub(crate) fn new(ctx: &Ctx<'_>) -> Retx {
        Retx {
            sends: 1,
            deadline: ctx.now.saturating_add(ctx.config.retransmit.timeout(0)),
        }
    }

    pub(crate) fn deadline(&self) -> Timestamp {
        self.deadline
    }

    pub(crate) fn sends(&self) -> u32 {
        self.sends
    }

    /// The timer expired: `Some(sends)` if the request is to be sent again
    /// now (the count including this send), `None` if the tries are spent.
    pub(crate) fn expire(&mut self, ctx: &Ctx<'_>) -> Option<u32> {
        let r = ctx.config.retransmit;
        if self.sends >= r.sends {
            return None;
        }
        self.deadline = ctx.now.saturating_add(r.timeout(self.sends));
        self.sends = self.sends.saturating_add(1);
        Some(self.sends)
    }
}

/// The state of one IKE SA: one type per state, each holding exactly what
/// that state needs (the key exchange until IKE_SA_INIT completes, keys
/// from then on).
pub(crate) enum State {
    /// Initiator: IKE_SA_INIT request sent.
    InitSent(InitSent),
    /// Initiator: IKE_AUTH request sent.
    AuthSent(Box<AuthSent>),
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH (half-open).
    InitAnswered(Box<InitAnswered>),
    /// Both: authenticated.
    Established(Box<EstablishedSa>),
    /// Both: failed or deleted, kept a while to answer retransmissions.
    Closing(Closing),
}

/// What a handler made of its state.
pub(crate) enum Outcome {
    /// The state to continue with.
    Keep(State),
    /// The IKE SA is gone.
    Remove,
}

impl State {
    fn deadline(&self, config: &Config) -> Option<Timestamp> {
        match self {
            State::InitSent(s) => Some(s.deadline()),
            State::AuthSent(s) => Some(s.deadline()),
            State::InitAnswered(s) => Some(s.deadline()),
            State::Established(s) => s.deadline(config.dpd_delay),
            State::Closing(s) => Some(s.deadline()),
        }
    }

    fn on_timer(self, ctx: &mut Ctx<'_>) -> Outcome {
        match self {
            State::InitSent(s) => s.on_timer(ctx),
            State::AuthSent(s) => s.on_timer(ctx),
            State::InitAnswered(s) => s.on_timer(ctx),
            State::Established(s) => s.on_timer(ctx),
            State::Closing(_) => Outcome::Remove,
        }
    }

    fn on_message(self, ctx: &mut Ctx<'_>, msg: &Message<&[u8]>, path: Path) -> Outcome {
        match self {
            State::InitSent(s) => s.on_message(ctx, msg, path),
            State::AuthSent(s) => s.on_message(ctx, msg, path),
            State::InitAnswered(s) => s.on_message(ctx, msg, path),
            State::Established(s) => s.on_message(ctx, msg, path),
            State::Closing(s) => s.on_message(ctx, msg, path),
        }
    }

    fn phase(&self) -> Phase {
        match self {
            State::InitSent(_) | State::AuthSent(_) => Phase::Connecting,
            State::InitAnswered(_) => Phase::HalfOpen,
            State::Established(s) => Phase::Established {
                child_sa: s.has_child(),
            },
            State::Closing(_) => Phase::Closing,
        }
    }
}

/// Where an IKE SA stands, for observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Initiator, before the IKE_AUTH response.
    Connecting,
    /// Responder, between IKE_SA_INIT and IKE_AUTH.
    HalfOpen,
    /// Authenticated.
    Established {
        /// Whether its CHILD SA is installed.
        child_sa: bool,
    },
    /// Gone but for the last response, kept for retransmissions.
    Closing,
}

struct Sa {
    role: Role,
    state: State,
    /// The requester's address while counted as half-open.
    half_open_from: Option<IpAddr>,
    /// The responder's key for recognising IKE_SA_INIT retransmissions.
    init_key: Option<(IkeSpi, SocketAddr)>,
    /// ESP SPIs allocated by this IKE SA.
    child_spis: Vec<ChildSpi>,
    /// Its state's deadline as entered in [`Ike::deadlines`].
    deadline: Option<Timestamp>,
}

/// The IKE SAs of one connection ([`Config`]), both as initiator and as
/// responder. Sans-IO: datagrams and time go in, [`Action`]s come out.
pub struct Ike<E: Entropy> {
    config: Config,
    entropy: E,
    sas: HashMap<IkeSpi, Sa>,
    /// Every SA's next deadline, earliest first: the next timer and the due
    /// SAs without a walk over all SAs (a datagram costs the same with ten
    /// IKE SAs as with a hundred thousand).
    deadlines: BTreeSet<(Timestamp, IkeSpi)>,
    init_index: HashMap<(IkeSpi, SocketAddr), IkeSpi>,
    half_open: HashMap<IpAddr, u32>,
    half_open_total: u32,
    child_spis: HashSet<ChildSpi>,
    cookies: CookieJar,
}

impl<E: Entropy> std::fmt::Debug for Ike<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ike")
            .field("local_id", &self.config.local_id)
            .field("remote_id", &self.config.remote_id)
            .field("sas", &self.sas.len())
            .field("half_open", &self.half_open_total)
            .finish_non_exhaustive()
    }
}

impl<E: Entropy> Ike<E> {
    /// An endpoint for `config`, drawing randomness from `entropy`. `now`
    /// starts the cookie secret's lifetime.
    ///
    /// # Errors
    /// [`Error::Config`] if the configuration does not validate.
    pub fn new(config: Config, mut entropy: E, now: Timestamp) -> Result<Self, Error> {
        config.validate()?;
        let cookies = CookieJar::new(&mut entropy, now, &config.cookies);
        Ok(Ike {
            config,
            entropy,
            sas: HashMap::new(),
            deadlines: BTreeSet::new(),
            init_index: HashMap::new(),
            half_open: HashMap::new(),
            half_open_total: 0,
            child_spis: HashSet::new(),
            cookies,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts a new IKE SA as initiator: sends IKE_SA_INIT.
    pub fn initiate(&mut self, now: Timestamp) -> Vec<Action> {
        let mut actions = Vec::new();
        let sas = &self.sas;
        let Some(spi) = entropy::ike_spi(&mut self.entropy, |s| sas.contains_key(&s)) else {
            actions.push(Action::Event(Event::Failed {
                ike_sa: IkeSaId {
                    initiator: IkeSpi(0),
                    responder: IkeSpi(0),
                },
                role: Role::Initiator,
                failure: Failure::internal(
                    "drawing an IKE SPI",
                    "the entropy source repeats itself",
                ),
            }));
            return actions;
        };
        let path = Path {
            local: self.config.local,
            remote: self.config.remote,
        };
        let mut owned = Vec::new();
        let mut spawned = Vec::new();
        let mut ctx = Ctx {
            config: &self.config,
            entropy: &mut self.entropy,
            now,
            actions: &mut actions,
            child_spis: &mut self.child_spis,
            owned: &mut owned,
            sas: &self.sas,
            current: Some(spi),
            spawned: &mut spawned,
            initial_contact: false,
        };
        if let Some(state) = InitSent::start(&mut ctx, spi, path) {
            self.put(
                spi,
                Sa {
                    role: Role::Initiator,
                    state: State::InitSent(state),
                    half_open_from: None,
                    init_key: None,
                    child_spis: owned,
                    deadline: None,
                },
            );
        }
        self.push_timer(&mut actions);
        actions
    }

    /// Handles a received datagram (the UDP payload, without any non-ESP
    /// marker) that arrived on `path`.
    pub fn handle(&mut self, datagram: &[u8], path: Path, now: Timestamp) -> Vec<Action> {
        let mut actions = Vec::new();
        match Message::new_checked(datagram) {
            Err(e) => actions.push(Action::Event(Event::Dropped {
                remote: path.remote,
                reason: Dropped::Malformed(e),
            })),
            Ok(msg) => self.dispatch(&msg, path, now, &mut actions),
        }
        self.push_timer(&mut actions);
        actions
    }

    /// Runs the timers that are due.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Action> {
        let mut actions = Vec::new();
        let due: Vec<IkeSpi> = self
            .deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, spi)| *spi)
            .collect();
        for spi in due {
            self.run(spi, now, &mut actions, |state, ctx| state.on_timer(ctx));
        }
        self.push_timer(&mut actions);
        actions
    }

    /// The earliest time [`Ike::tick`] has something to do.
    pub fn next_timer(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Enters `sa` under `spi`, with its deadline in the index.
    fn put(&mut self, spi: IkeSpi, mut sa: Sa) {
        sa.deadline = sa.state.deadline(&self.config);
        if let Some(d) = sa.deadline {
            self.deadlines.insert((d, spi));
        }
        self.sas.insert(spi, sa);
    }

    /// Takes the SA `spi` out, and its deadline out of the index.
    fn take(&mut self, spi: IkeSpi) -> Option<Sa> {
        let sa = self.sas.remove(&spi)?;
        if let Some(d) = sa.deadline {
            self.deadlines.remove(&(d, spi));
        }
        Some(sa)
    }

    /// The established IKE SAs and their CHILD SAs as a `status` display
    /// shows them at `now` (ages, time to the next rekey and to expiry),
    /// ordered by age, oldest first.
    pub fn status(&self, now: Timestamp) -> Vec<super::IkeSaStatus> {
        let mut v: Vec<super::IkeSaStatus> = self
            .sas
            .values()
            .filter_map(|sa| match &sa.state {
                State::Established(e) => Some(e.status(now)),
                _ => None,
            })
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.age));
        v
    }

    /// Every IKE SA by our SPI: our role and its phase.
    pub fn sas(&self) -> Vec<(IkeSpi, Role, Phase)> {
        let mut v: Vec<_> = self
            .sas
            .iter()
            .map(|(spi, sa)| (*spi, sa.role, sa.state.phase()))
            .collect();
        v.sort_by_key(|(spi, _, _)| *spi);
        v
    }

    /// Rekeys the CHILD SA with our inbound SPI `inbound` now (say, when
    /// the data plane reports its soft byte or packet lifetime). Nothing
    /// happens for an SPI that names no CHILD SA in service.
    pub fn rekey_child(&mut self, inbound: ChildSpi, now: Timestamp) -> Vec<Action> {
        let owner = self
            .sas
            .iter()
            .find(|(_, sa)| sa.child_spis.contains(&inbound))
            .map(|(spi, _)| *spi);
        self.with_established(owner, now, |s| s.want(Want::RekeyChild(inbound)))
    }

    /// Deletes the CHILD SA with our inbound SPI `inbound` (a Delete to the
    /// peer; it leaves the data plane when the peer answers).
    pub fn delete_child(&mut self, inbound: ChildSpi, now: Timestamp) -> Vec<Action> {
        let owner = self
            .sas
            .iter()
            .find(|(_, sa)| sa.child_spis.contains(&inbound))
            .map(|(spi, _)| *spi);
        self.with_established(owner, now, |s| {
            if s.child(inbound).is_some() {
                s.delete_later(inbound, super::action::ChildDeleted::ByUs);
            }
        })
    }

    /// Rekeys the IKE SA with our SPI `spi` now.
    pub fn rekey_ike(&mut self, spi: IkeSpi, now: Timestamp) -> Vec<Action> {
        self.with_established(Some(spi), now, |s| {
            if s.fate == Fate::Live {
                s.ike_rekey_at = None;
                s.want(Want::RekeyIke);
            }
        })
    }

    /// Deletes the IKE SA with our SPI `spi` and its CHILD SAs (a Delete
    /// to the peer; the CHILD SAs leave the data plane when it answers).
    pub fn delete_ike(&mut self, spi: IkeSpi, now: Timestamp) -> Vec<Action> {
        self.with_established(Some(spi), now, |s| {
            if s.fate == Fate::Live {
                s.fate = Fate::Deleting;
                s.want(Want::DeleteIke);
            }
        })
    }

    /// The CHILD SAs in service (not being deleted), by IKE SA.
    pub fn child_sas(&self) -> Vec<ChildSaId> {
        let mut v: Vec<ChildSaId> = self
            .sas
            .values()
            .filter_map(|sa| match &sa.state {
                State::Established(s) => Some(s.live_children()),
                _ => None,
            })
            .flatten()
            .collect();
        v.sort_by_key(|c| (c.ike_sa.initiator, c.inbound_spi));
        v
    }

    fn with_established(
        &mut self,
        spi: Option<IkeSpi>,
        now: Timestamp,
        f: impl FnOnce(&mut EstablishedSa),
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(spi) = spi {
            self.run(spi, now, &mut actions, |state, ctx| match state {
                State::Established(mut s) => {
                    f(&mut s);
                    s.pump(ctx)
                }
                other => Outcome::Keep(other),
            });
        }
        self.push_timer(&mut actions);
        actions
    }

    /// Half-open IKE SAs (responder, IKE_AUTH not yet received).
    pub fn half_open(&self) -> u32 {
        self.half_open_total
    }

    fn push_timer(&self, actions: &mut Vec<Action>) {
        if let Some(t) = self.next_timer() {
            actions.push(Action::SetTimer(t));
        }
    }

    fn dispatch(
        &mut self,
        msg: &Message<&[u8]>,
        path: Path,
        now: Timestamp,
        actions: &mut Vec<Action>,
    ) {
        let h = msg.header();
        let flags = h.flags();
        if h.exchange() == ExchangeType::IKE_SA_INIT
            && flags.initiator
            && !flags.response
            && h.spi_r().0 == 0
        {
            self.init_request(msg, path, now, actions);
            return;
        }
        // The original initiator sets the I flag: then we are the responder
        // and our SPI is SPIr.
        let (ours, role) = if flags.initiator {
            (h.spi_r(), Role::Responder)
        } else {
            (h.spi_i(), Role::Initiator)
        };
        match self.sas.get(&ours) {
            Some(sa) if sa.role == role => {}
            _ => {
                actions.push(Action::Event(Event::Dropped {
                    remote: path.remote,
                    reason: Dropped::UnknownSpi,
                }));
                return;
            }
        }
        self.run(ours, now, actions, |state, ctx| {
            state.on_message(ctx, msg, path)
        });
    }

    /// Takes the SA out, lets `f` run its state, and puts back what comes
    /// out, keeping the half-open count and the indexes right.
    fn run(
        &mut self,
        spi: IkeSpi,
        now: Timestamp,
        actions: &mut Vec<Action>,
        f: impl FnOnce(State, &mut Ctx<'_>) -> Outcome,
    ) {
        let Some(mut sa) = self.take(spi) else {
            return;
        };
        let mut spawned = Vec::new();
        let mut ctx = Ctx {
            config: &self.config,
            entropy: &mut self.entropy,
            now,
            actions,
            child_spis: &mut self.child_spis,
            owned: &mut sa.child_spis,
            sas: &self.sas,
            current: Some(spi),
            spawned: &mut spawned,
            initial_contact: false,
        };
        let outcome = f(sa.state, &mut ctx);
        let initial_contact = ctx.initial_contact;
        for s in spawned {
            self.put(
                s.spi,
                Sa {
                    role: s.role,
                    state: s.state,
                    half_open_from: None,
                    init_key: None,
                    child_spis: s.child_spis,
                    deadline: None,
                },
            );
        }
        match outcome {
            Outcome::Keep(state) => {
                if !matches!(state, State::InitAnswered(_)) {
                    if let Some(ip) = sa.half_open_from.take() {
                        self.uncount_half_open(ip);
                    }
                }
                sa.state = state;
                self.put(spi, sa);
            }
            Outcome::Remove => {
                if let Some(ip) = sa.half_open_from.take() {
                    self.uncount_half_open(ip);
                }
                if let Some(key) = sa.init_key {
                    self.init_index.remove(&key);
                }
                for s in sa.child_spis {
                    self.child_spis.remove(&s);
                }
            }
        }
        if initial_contact {
            // The peer started again: every other established IKE SA with it,
            // and their CHILD SAs, are gone on its side. Removed without a
            // Delete (it would not know them).
            let stale: Vec<IkeSpi> = self
                .sas
                .iter()
                .filter(|(s, sa)| **s != spi && matches!(sa.state, State::Established(_)))
                .map(|(s, _)| *s)
                .collect();
            // A function, not a closure: one instance of `run` serves every level.
            fn restarted(state: State, ctx: &mut Ctx<'_>) -> Outcome {
                match state {
                    State::Established(e) => e.peer_restarted(ctx),
                    other => Outcome::Keep(other),
                }
            }
            for s in stale {
                self.run(
                    s,
                    now,
                    actions,
                    restarted as fn(State, &mut Ctx<'_>) -> Outcome,
                );
            }
        }
    }

    fn uncount_half_open(&mut self, ip: IpAddr) {
        self.half_open_total = self.half_open_total.saturating_sub(1);
        if let Some(n) = self.half_open.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.half_open.remove(&ip);
            }
        }
    }

    /// An IKE_SA_INIT request: a retransmission of one we answered, or a
    /// new IKE SA (statelessly refused, or created half-open).
    fn init_request(
        &mut self,
        msg: &Message<&[u8]>,
        path: Path,
        now: Timestamp,
        actions: &mut Vec<Action>,
    ) {
        let key = (msg.header().spi_i(), path.remote);
        if let Some(ours) = self.init_index.get(&key) {
            match self.sas.get(ours).map(|sa| &sa.state) {
                Some(State::InitAnswered(s)) if s.request() == msg.as_bytes() => {
                    actions.push(Action::Send(Datagram {
                        path,
                        bytes: s.response().to_vec(),
                    }));
                }
                _ => actions.push(Action::Event(Event::Dropped {
                    remote: path.remote,
                    reason: Dropped::Unexpected {
                        exchange: ExchangeType::IKE_SA_INIT,
                        message_id: 0,
                        why: "an IKE_SA_INIT request with the SPI of an IKE SA in progress \
                              but different content",
                    },
                })),
            }
            return;
        }
        self.cookies
            .rotate(&mut self.entropy, now, &self.config.cookies);
        let policy = self.config.cookies;
        let from_ip = self.half_open.get(&path.remote.ip()).copied().unwrap_or(0);
        let cookie_required = self.half_open_total >= policy.global_threshold
            || from_ip >= policy.per_address_threshold;
        let mut owned = Vec::new();
        let mut spawned = Vec::new();
        let sas = &self.sas;
        let mut ctx = Ctx {
            config: &self.config,
            entropy: &mut self.entropy,
            now,
            actions,
            child_spis: &mut self.child_spis,
            owned: &mut owned,
            sas,
            current: None,
            spawned: &mut spawned,
            initial_contact: false,
        };
        let outcome =
            responder::answer_init(&mut ctx, msg, path, &self.cookies, cookie_required, |e| {
                entropy::ike_spi(e, |s| sas.contains_key(&s))
            });
        if let InitOutcome::Created(state) = outcome {
            let spi = state.spi();
            let ip = path.remote.ip();
            *self.half_open.entry(ip).or_insert(0) += 1;
            self.half_open_total = self.half_open_total.saturating_add(1);
            self.init_index.insert(key, spi);
            self.put(
                spi,
                Sa {
                    role: Role::Responder,
                    state: State::InitAnswered(state),
                    half_open_from: Some(ip),
                    init_key: Some(key),
                    child_spis: owned,
                    deadline: None,
                },
            );
        }
    }
}
