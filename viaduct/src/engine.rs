//! The sans-IO engine: filter → SPD → ESP outbound, and SAD → ESP → selector
//! check → filter inbound, built from a validated [`policy_blob::Policy`].
//!
//! The engine is two independent halves ([`OutboundPath`], [`InboundPath`])
//! sharing the immutable rules through an `Arc`, so the pump can run one
//! thread per direction without locks. Every packet ends in a [`Verdict`];
//! every drop is counted per [`DropReason`]. No allocation per packet, no
//! clock, no panics.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use policy_blob::{
    Direction, FilterAction, FilterStates, Policy, RouteVia, Selector, SpdAction, TcpFlags,
    TrafficSelector, TunnelId,
};

use viaduct_channel::{InstallRules, Refusal, SaInstall};

use crate::conntrack::{CtState, Timeouts, Tracker};
pub use crate::drop::{DropCounters, DropReason};
use crate::error::EngineError;
use crate::ids::{FlowInfo, IdsStage};
use crate::router::Routes;
use crate::sa::{InboundSa, OutboundSa, SaId, Timestamp};
use crate::wire::ip::{five_tuple, FiveTuple, Ipv4Packet, Ipv6Packet};
use crate::wire::{udp, WireError};

/// Outcome of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward `len` bytes (outbound: `out[..len]`; inbound: `pkt[..len]`).
    Send(usize),
    /// Dropped and counted.
    Drop(DropReason),
    /// Inbound only: an IKE message from a peer, for the IKE process
    /// (never for red).
    Ike(IkeIn),
}

/// Where an inbound IKE message is: `pkt[offset..offset + len]`, from peer
/// `peer` (its index in the policy's IKE section) between these UDP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeIn {
    /// The peer.
    pub peer: u16,
    /// Our port: 500 or 4500.
    pub local_port: u16,
    /// The peer's port.
    pub remote_port: u16,
    /// Start of the IKE message (after the non-ESP marker on 4500).
    pub offset: usize,
    /// Its length.
    pub len: usize,
}

/// An SA lifetime event for the control plane (rekey / delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaEvent {
    /// Which SA.
    pub sa: SaId,
    /// True if the hard lifetime was reached (SA unusable).
    pub hard: bool,
    /// The tunnel is keyed by IKE (the event is for the IKE process).
    pub ike: bool,
}

#[derive(Debug)]
struct TunnelRules {
    id: TunnelId,
    name: String,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    /// Outer addresses and the settings an SA installed by IKE takes from
    /// the policy.
    local: IpAddr,
    remote: IpAddr,
    replay_window: u32,
    lifetimes: policy_blob::Lifetimes,
    outer_dscp: u8,
    tfc_sizes: Vec<u16>,
    /// Keyed by IKE.
    ike: bool,
}

/// One filter rule as the engine matches it.
#[derive(Debug)]
struct Filter {
    /// Its place in the policy's filter list.
    index: u32,
    /// Its name (for counters).
    name: String,
    /// Its rate limit.
    limit: Option<policy_blob::RateLimit>,
    /// The timeouts of the flows it admits.
    timeouts: Option<Timeouts>,
    /// Whether the packets it decides are logged.
    log: bool,
    selector: Selector,
    tcp_flags: TcpFlags,
    states: FilterStates,
    action: FilterAction,
}

/// An accepting rule: its index ([`DEFAULT_RULE`] for the default) and the
/// timeouts of the flows it admits.
type Admitted = (u32, Option<Timeouts>);

/// The rule index a flow admitted by the default verdict records.
const DEFAULT_RULE: u32 = u32::MAX;

/// Packets each filter rule decided (by its index in the policy's list),
/// and the default, for one half.
#[derive(Debug, Default)]
struct RuleHits {
    rules: Vec<u64>,
    default: u64,
    /// Per rule with a rate limit: (tokens in thousandths of a packet,
    /// when last filled), by rule index.
    buckets: Vec<Option<(u64, Timestamp)>>,
    /// Packets a rule passed over because its rate was exceeded.
    limited: Vec<u64>,
    /// Log lines of logged rules, waiting for the pump to write them.
    log: FilterLog,
}

/// Log lines at most per second, on average ([`FilterLog`]).
pub const LOG_LINES_PER_SECOND: u64 = 20;
/// Log lines at most in a burst.
pub const LOG_BURST: u64 = 100;

/// The filter's log for one half: lines of the packets logged rules
/// decide, rate-limited (a token bucket of [`LOG_LINES_PER_SECOND`], bursts
/// of [`LOG_BURST`]) so that no traffic can make the Viaduct spend its time
/// writing, or fill the console; the lines left out are counted. A line
/// holds numbers and addresses the Viaduct formats itself, never a byte of
/// the packet's payload.
#[derive(Debug, Default)]
pub(crate) struct FilterLog {
    pub(crate) lines: Vec<String>,
    /// Tokens in thousandths of a line, and when last filled.
    bucket: Option<(u64, Timestamp)>,
    pub(crate) written: u64,
    pub(crate) suppressed: u64,
}

impl FilterLog {
    pub(crate) fn admit(&mut self, now: Timestamp) -> bool {
        let full = LOG_BURST * 1000;
        let (tokens, last) = self.bucket.get_or_insert((full, now));
        let elapsed = now.0.saturating_sub(last.0);
        if elapsed > 0 {
            *tokens = tokens
                .saturating_add(elapsed.saturating_mul(LOG_LINES_PER_SECOND * 1000))
                .min(full);
            *last = now;
        }
        if *tokens >= 1000 && self.lines.len() < LOG_BURST as usize {
            *tokens -= 1000;
            self.written += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// One log line: `filter log <dir> rule=<i>|default [name=<n>] <verdict>
/// [state=<s>] proto=<p> <src>[:<port>] > <dst>[:<port>] [flags=<f>]`.
fn log_line(
    dir: Direction,
    rule: Option<(u32, &str)>,
    accepted: bool,
    t: &FiveTuple,
    state: Option<CtState>,
) -> String {
    let mut l = String::with_capacity(128);
    let _ = write!(
        l,
        "filter log {} ",
        match dir {
            Direction::Outbound => "out",
            Direction::Inbound => "in",
        }
    );
    match rule {
        Some((i, name)) => {
            let _ = write!(l, "rule={i} name={name}");
        }
        None => l.push_str("default"),
    }
    l.push_str(if accepted { " accept" } else { " drop" });
    if let Some(s) = state {
        let _ = write!(l, " state={}", s.name());
    }
    let _ = write!(l, " proto={}", t.protocol);
    let icmp = matches!(t.protocol, 1 | 58);
    let at = |a: IpAddr, p: Option<u16>| match (a, p) {
        (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    };
    match (t.ports, icmp) {
        (Some((ty, code)), true) => {
            let _ = write!(l, " {} > {} type={ty} code={code}", t.src, t.dst);
        }
        (ports, _) => {
            let _ = write!(
                l,
                " {} > {}",
                at(t.src, ports.map(|p| p.0)),
                at(t.dst, ports.map(|p| p.1))
            );
        }
    }
    if let Some(f) = t.tcp_flags {
        l.push_str(" flags=");
        for (bit, c) in [
            (0x02, 'S'),
            (0x10, 'A'),
            (0x01, 'F'),
            (0x04, 'R'),
            (0x08, 'P'),
            (0x20, 'U'),
            (0x40, 'E'),
            (0x80, 'C'),
        ] {
            if f & bit != 0 {
                l.push(c);
            }
        }
    }
    if t.ports_unknown {
        l.push_str(" fragment");
    }
    l
}

impl RuleHits {
    fn new(n: usize) -> RuleHits {
        RuleHits {
            rules: vec![0; n],
            default: 0,
            buckets: vec![None; n],
            limited: vec![0; n],
            log: FilterLog::default(),
        }
    }

    /// Takes a token from rule `f`'s bucket at `now` (filled at `rate` per
    /// period since last time, up to `burst`); `false` when it is empty,
    /// counted.
    fn take(&mut self, f: &Filter, now: Timestamp) -> bool {
        let Some(l) = f.limit else {
            return true;
        };
        let i = f.index as usize;
        let Some(slot) = self.buckets.get_mut(i) else {
            return true;
        };
        let full = u64::from(l.burst) * 1000;
        let (tokens, last) = slot.get_or_insert((full, now));
        let elapsed = now.0.saturating_sub(last.0);
        if elapsed > 0 {
            let add = elapsed
                .saturating_mul(u64::from(l.rate))
                .saturating_mul(1000)
                / u64::from(l.per_seconds.max(1));
            *tokens = tokens.saturating_add(add).min(full);
            *last = now;
        }
        if *tokens >= 1000 {
            *tokens -= 1000;
            true
        } else {
            if let Some(n) = self.limited.get_mut(i) {
                *n += 1;
            }
            false
        }
    }

    fn count(&mut self, rule: Option<u32>) {
        match rule {
            Some(DEFAULT_RULE) => self.default += 1,
            Some(i) => {
                if let Some(n) = self.rules.get_mut(i as usize) {
                    *n += 1;
                }
            }
            None => {}
        }
    }

    /// `<prefix> filter rule=<index> name=<name> packets=<n>` for the rules
    /// of `list`, then the default.
    fn write(&self, s: &mut String, prefix: &str, list: &[Filter]) {
        for f in list {
            let n = self.rules.get(f.index as usize).copied().unwrap_or(0);
            let limited = match f.limit {
                Some(_) => format!(
                    " limited={}",
                    self.limited.get(f.index as usize).copied().unwrap_or(0)
                ),
                None => String::new(),
            };
            let _ = writeln!(
                s,
                "{prefix} filter rule={} name={} packets={n}{limited}",
                f.index, f.name
            );
        }
        if !list.is_empty() {
            let _ = writeln!(s, "{prefix} filter default packets={}", self.default);
        }
        if self.log.written + self.log.suppressed > 0 {
            let _ = writeln!(
                s,
                "{prefix} filter log written={} suppressed={}",
                self.log.written, self.log.suppressed
            );
        }
    }
}

/// The connection table both halves share when the policy is stateful.
type SharedTracker = Option<Arc<Mutex<Tracker>>>;

/// The router role's routes, shared by both halves and whoever reads
/// black's routing daemon (role `router`; `None` otherwise).
pub type SharedRoutes = Option<Arc<RwLock<Routes>>>;

/// Where the router role sends cleartext to `dst`: `None` when the policy
/// does not route; `Some(None)` when no route matches.
fn route_of(routes: &SharedRoutes, dst: IpAddr) -> Option<Option<RouteVia>> {
    routes
        .as_ref()
        .map(|r| r.read().unwrap_or_else(PoisonError::into_inner).lookup(dst))
}

/// What the table learns from an accepted packet, recorded only once the
/// packet has gone on (a packet the SPD or the SA drops after the filter
/// leaves no state).
#[derive(Debug)]
struct Deferred {
    c: crate::conntrack::Classified,
    rule: u32,
    timeouts: Option<Timeouts>,
}

/// Records `d` (if any) in the table.
fn commit_deferred(tracker: &SharedTracker, d: Option<Deferred>, now: Timestamp) {
    if let (Some(tr), Some(d)) = (tracker, d) {
        let mut table = tr.lock().unwrap_or_else(PoisonError::into_inner);
        table.commit(&d.c, d.rule, d.timeouts, now);
    }
}

/// The IDS stage (role `ids`) on a packet the filter admitted, with what
/// the connection table says of its flow.
fn ids_inspect(
    ids: &mut Option<IdsStage>,
    pkt: &[u8],
    t: &FiveTuple,
    deferred: Option<&Deferred>,
    now: Timestamp,
) -> Result<(), DropReason> {
    let Some(stage) = ids else { return Ok(()) };
    let flow = deferred.and_then(|d| {
        d.c.from_originator().map(|to_server| FlowInfo {
            to_server,
            established: d.c.state == CtState::Established,
        })
    });
    stage.inspect(pkt, t, flow, now)
}

fn state_bit(s: CtState) -> u8 {
    match s {
        CtState::New => FilterStates::NEW,
        CtState::Established => FilterStates::ESTABLISHED,
        CtState::Related => FilterStates::RELATED,
        CtState::Invalid => FilterStates::INVALID,
    }
}

/// Immutable compiled rules shared by both halves.
#[derive(Debug)]
struct Rules {
    spd: Vec<(Selector, SpdAction)>,
    filters_out: Vec<Filter>,
    filters_in: Vec<Filter>,
    default_filter: FilterAction,
    /// Whether the packets the default decides are logged.
    default_log: bool,
    tunnels: Vec<TunnelRules>,
    /// The IKE peers, by index: (our address, the peer's).
    ike_peers: Vec<(IpAddr, IpAddr)>,
}

fn ports_match(range: &policy_blob::PortRange, port: Option<u16>) -> bool {
    range.is_any() || port.is_some_and(|p| range.contains(p))
}

/// Whether a five-tuple matches a selector (RFC 4301 §4.4.1: a packet
/// without ports, or a non-first fragment, matches only ANY port ranges).
pub fn selector_matches(s: &Selector, t: &FiveTuple) -> bool {
    addresses_match(s, t)
        && ports_match(&s.src_ports, t.ports.map(|p| p.0))
        && ports_match(&s.dst_ports, t.ports.map(|p| p.1))
}

/// Addresses and protocol only.
fn addresses_match(s: &Selector, t: &FiveTuple) -> bool {
    s.src.contains(t.src) && s.dst.contains(t.dst) && s.protocol.matches(t.protocol)
}

/// The outcome of a first-match lookup (filter or SPD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup<T> {
    /// This entry matched.
    Match(T),
    /// A later fragment reached an entry about ports or TCP flags that
    /// matches its addresses and protocol: whether the entry applies
    /// depends on what only the first fragment shows, so no entry can be
    /// chosen. The packet is dropped (`unclassified_fragment`).
    Unclassified,
    /// No entry matched.
    None,
}

/// The first-match rule for every ordered list the engine consults, in one
/// place. An entry about ports (or TCP flags) matches only a packet whose
/// ports (and flags) it can read. A later fragment has none: it skips a
/// port entry that its addresses or protocol rule out, but one that they
/// do not rule out makes it [`Lookup::Unclassified`]; skipping the entry
/// would let the fragment of a port it names pass as if it were any other
/// port (`drop tcp 23` evaded; a PROTECTed port's fragments sent in clear
/// by a later BYPASS). A port-less entry decides for it as for any packet.
fn first_match<'a, E: 'a>(
    list: impl IntoIterator<Item = &'a E>,
    t: &FiveTuple,
    selector: impl Fn(&E) -> &Selector,
    flags: impl Fn(&E) -> TcpFlags,
) -> Lookup<&'a E> {
    for e in list {
        let s = selector(e);
        if !addresses_match(s, t) {
            continue;
        }
        let f = flags(e);
        let about_l4 = !s.src_ports.is_any() || !s.dst_ports.is_any() || !f.is_any();
        if !about_l4 {
            return Lookup::Match(e);
        }
        if t.ports_unknown {
            return Lookup::Unclassified;
        }
        let flags_ok = f.is_any() || t.tcp_flags.is_some_and(|x| f.matches(x));
        if flags_ok
            && ports_match(&s.src_ports, t.ports.map(|p| p.0))
            && ports_match(&s.dst_ports, t.ports.map(|p| p.1))
        {
            return Lookup::Match(e);
        }
    }
    Lookup::None
}

fn ts_matches(list: &[TrafficSelector], addr: IpAddr, proto: u8, port: Option<u16>) -> bool {
    list.iter().any(|ts| {
        ts.prefix.contains(addr) && ts.protocol.matches(proto) && ports_match(&ts.ports, port)
    })
}

impl Rules {
    /// The filter's verdict: the first matching rule's, or the default;
    /// an unclassifiable fragment is dropped as such. With a connection
    /// state, rules naming other states are passed over. Returns the
    /// accepting rule's index ([`DEFAULT_RULE`] for the default).
    fn filter(
        &self,
        hits: &mut RuleHits,
        dir: Direction,
        t: &FiveTuple,
        state: Option<CtState>,
        now: Timestamp,
    ) -> (Option<u32>, Result<Admitted, DropReason>) {
        let list = match dir {
            Direction::Outbound => &self.filters_out,
            Direction::Inbound => &self.filters_in,
        };
        let bit = state.map(state_bit);
        // A rule over its rate is passed over: the search goes on after it.
        let mut from = 0;
        let (action, index, timeouts) = loop {
            let applies = list[from.min(list.len())..]
                .iter()
                .filter(|f| bit.is_none_or(|b| f.states.matches(b)));
            match first_match(applies, t, |f| &f.selector, |f| f.tcp_flags) {
                Lookup::Match(f) => {
                    if hits.take(f, now) {
                        if f.log && hits.log.admit(now) {
                            let accepted = f.action == FilterAction::Accept;
                            let line = log_line(dir, Some((f.index, &f.name)), accepted, t, state);
                            hits.log.lines.push(line);
                        }
                        break (f.action, f.index, f.timeouts);
                    }
                    from = list
                        .iter()
                        .position(|g| g.index == f.index)
                        .map_or(list.len(), |p| p + 1);
                }
                Lookup::Unclassified => return (None, Err(DropReason::UnclassifiedFragment)),
                Lookup::None => {
                    if self.default_log && hits.log.admit(now) {
                        let accepted = self.default_filter == FilterAction::Accept;
                        let line = log_line(dir, None, accepted, t, state);
                        hits.log.lines.push(line);
                    }
                    break (self.default_filter, DEFAULT_RULE, None);
                }
            }
        };
        (
            Some(index),
            match action {
                FilterAction::Accept => Ok((index, timeouts)),
                FilterAction::Drop => Err(DropReason::Filter),
            },
        )
    }

    /// The filter stage: stateless, or, when the policy tracks connections,
    /// the packet's state from the table and the rules knowing it; an
    /// accepted packet that would open a flow must find room. What the
    /// table is to record comes back, for when the packet has gone on: a
    /// dropped packet leaves the table as it was.
    #[allow(clippy::too_many_arguments)]
    fn filter_packet(
        &self,
        tracker: &SharedTracker,
        hits: &mut RuleHits,
        dir: Direction,
        pkt: &[u8],
        t: &FiveTuple,
        now: Timestamp,
    ) -> Result<Option<Deferred>, DropReason> {
        let Some(tracker) = tracker else {
            let (rule, verdict) = self.filter(hits, dir, t, None, now);
            hits.count(rule);
            return verdict.map(|_| None);
        };
        let mut table = tracker.lock().unwrap_or_else(PoisonError::into_inner);
        let c = table.classify(dir, pkt, t, now);
        let (rule, verdict) = self.filter(hits, dir, t, Some(c.state), now);
        hits.count(rule);
        let (rule, timeouts) = verdict?;
        if !table.has_room(&c, now) {
            return Err(DropReason::StateTableFull);
        }
        Ok(Some(Deferred { c, rule, timeouts }))
    }

    /// The SPD's action for an outbound five-tuple (first match).
    fn spd(&self, t: &FiveTuple) -> Lookup<SpdAction> {
        match first_match(&self.spd, t, |(s, _)| s, |_| TcpFlags::ANY) {
            Lookup::Match((_, a)) => Lookup::Match(*a),
            Lookup::Unclassified => Lookup::Unclassified,
            Lookup::None => Lookup::None,
        }
    }

    fn tunnel_index(&self, id: TunnelId) -> Option<usize> {
        self.tunnels.iter().position(|t| t.id == id)
    }

    /// Outbound: src in local TS, dst in remote TS.
    fn outbound_in_ts(&self, idx: usize, t: &FiveTuple) -> bool {
        let tr = &self.tunnels[idx];
        ts_matches(&tr.local_ts, t.src, t.protocol, t.ports.map(|p| p.0))
            && ts_matches(&tr.remote_ts, t.dst, t.protocol, t.ports.map(|p| p.1))
    }

    /// Inbound: src in remote TS, dst in local TS.
    fn inbound_in_ts(&self, idx: usize, t: &FiveTuple) -> bool {
        let tr = &self.tunnels[idx];
        ts_matches(&tr.remote_ts, t.src, t.protocol, t.ports.map(|p| p.0))
            && ts_matches(&tr.local_ts, t.dst, t.protocol, t.ports.map(|p| p.1))
    }
}

/// Red → black half.
#[derive(Debug)]
pub struct OutboundPath {
    rules: Arc<Rules>,
    /// Indexed like `rules.tunnels`: the SA each tunnel sends with.
    sas: Vec<Option<OutboundSa>>,
    /// For IKE-keyed tunnels: the inbound SPI of the active SA's pair.
    active_spi: Vec<Option<u32>>,
    /// Installed by IKE, not yet sent with: (tunnel index, inbound SPI, SA).
    pending: Vec<(usize, u32, OutboundSa)>,
    /// The connection table (a stateful policy).
    tracker: SharedTracker,
    /// The routes (role `router`).
    routes: SharedRoutes,
    /// Payload inspection (role `ids`).
    ids: Option<IdsStage>,
    hits: RuleHits,
    drops: DropCounters,
    bypassed: u64,
}

/// Black → red half.
#[derive(Debug)]
pub struct InboundPath {
    rules: Arc<Rules>,
    /// (SPI, tunnel index, SA), sorted by SPI.
    sad: Vec<(u32, usize, InboundSa)>,
    /// Some tunnel receives ESP inside UDP (RFC 3948): UDP/4500 is ESP.
    any_udp: bool,
    /// The connection table (a stateful policy), shared with the outbound half.
    tracker: SharedTracker,
    /// The routes (role `router`), shared with the outbound half.
    routes: SharedRoutes,
    /// Payload inspection (role `ids`).
    ids: Option<IdsStage>,
    /// What the packet being processed is to record in it, once sent.
    deferred: Option<Deferred>,
    hits: RuleHits,
    drops: DropCounters,
    bypassed: u64,
    ike_received: u64,
}

/// The whole engine.
#[derive(Debug)]
pub struct Engine {
    /// Red → black.
    pub outbound: OutboundPath,
    /// Black → red.
    pub inbound: InboundPath,
    /// What IKE asks of the data plane.
    pub control: ControlPath,
}

impl Engine {
    /// Builds the engine from a policy: validates it and installs the
    /// manually keyed SAs (installed at `now`) — only once `ledger` has claimed their
    /// keys ([`crate::ledger`]): a key that carried traffic before is never installed
    /// again, so no (key, nonce) pair is used twice.
    pub fn new(
        policy: &Policy,
        now: Timestamp,
        ledger: &mut dyn crate::KeyLedger,
    ) -> Result<Engine, EngineError> {
        policy.validate()?;
        let uses = policy.manual_key_uses();
        if !uses.is_empty() {
            ledger.claim(&uses)?;
        }
        let check = InstallRules::new(policy);
        let mut tunnels = Vec::with_capacity(policy.tunnels.len());
        let mut out_sas = Vec::with_capacity(policy.tunnels.len());
        let mut sad = Vec::new();
        for (idx, t) in policy.tunnels.iter().enumerate() {
            tunnels.push(TunnelRules {
                id: t.id,
                name: t.name.clone(),
                local_ts: t.local_ts.clone(),
                remote_ts: t.remote_ts.clone(),
                local: t.local,
                remote: t.remote,
                replay_window: t.replay_window,
                lifetimes: t.lifetimes,
                outer_dscp: t.outer_dscp,
                tfc_sizes: t.tfc_sizes.clone(),
                ike: check.ike_keyed(t.id),
            });
            match &t.manual {
                Some(m) => {
                    let mut sa = OutboundSa::new(
                        t.id,
                        m.outbound.spi,
                        t.aead,
                        m.outbound.key.expose(),
                        t.esn,
                        t.local,
                        t.remote,
                        t.lifetimes,
                        now,
                    )?;
                    sa.set_udp_encap(t.udp_encap);
                    sa.set_outer_dscp(t.outer_dscp);
                    sa.set_tfc_sizes(&t.tfc_sizes);
                    out_sas.push(Some(sa));
                    let mut sa = InboundSa::new(
                        t.id,
                        m.inbound.spi,
                        t.aead,
                        m.inbound.key.expose(),
                        t.esn,
                        t.replay_window,
                        t.lifetimes,
                        now,
                    )?;
                    sa.set_udp_encap(t.udp_encap);
                    sad.push((m.inbound.spi.0, idx, sa));
                }
                None => out_sas.push(None),
            }
        }
        sad.sort_by_key(|(spi, _, _)| *spi);
        let split = |d: Direction| {
            policy
                .filters
                .iter()
                .enumerate()
                .filter(|(_, f)| f.direction == d)
                .map(|(i, f)| Filter {
                    index: i as u32,
                    name: f.name.clone(),
                    limit: f.limit,
                    timeouts: f.timeouts.map(Timeouts::from_array),
                    log: f.log,
                    selector: f.selector.clone(),
                    tcp_flags: f.tcp_flags,
                    states: f.states,
                    action: f.action,
                })
                .collect()
        };
        let tracker: SharedTracker = policy.tracks_connections().then(|| {
            Arc::new(Mutex::new(Tracker::new(
                policy.filter_max_flows as usize,
                Timeouts::default(),
            )))
        });
        let routes: SharedRoutes = Routes::new(policy).map(|r| Arc::new(RwLock::new(r)));
        let signatures = match &policy.ids {
            Some(i) => Some(Arc::new(viaduct_ids::Engine::new(i.signatures.clone())?)),
            None => None,
        };
        let stage = |dir| {
            signatures
                .clone()
                .map(|s| IdsStage::new(s, dir, policy.filter_max_flows as usize))
        };
        let rules = Arc::new(Rules {
            spd: policy
                .spd
                .iter()
                .map(|e| (e.selector.clone(), e.action))
                .collect(),
            filters_out: split(Direction::Outbound),
            filters_in: split(Direction::Inbound),
            default_filter: policy.default_filter,
            default_log: policy.filter_default_log,
            tunnels,
            ike_peers: policy
                .ike
                .iter()
                .flat_map(|i| i.peers.iter().map(|p| (p.local, p.remote)))
                .collect(),
        });
        let any_ike = !rules.ike_peers.is_empty();
        let n_tunnels = rules.tunnels.len();
        let manual_spis = sad.iter().map(|(spi, _, _)| *spi).collect();
        Ok(Engine {
            control: ControlPath {
                rules: rules.clone(),
                check,
                manual_spis,
                ike_sas: std::collections::BTreeMap::new(),
                ike_sent: 0,
                keyed: std::collections::BTreeSet::new(),
            },
            outbound: OutboundPath {
                rules: rules.clone(),
                sas: out_sas,
                active_spi: vec![None; n_tunnels],
                pending: Vec::new(),
                tracker: tracker.clone(),
                routes: routes.clone(),
                ids: stage("red-to-black"),
                hits: RuleHits::new(policy.filters.len()),
                drops: DropCounters::default(),
                bypassed: 0,
            },
            inbound: InboundPath {
                rules,
                sad,
                // IKE may turn UDP encapsulation on for any of its tunnels.
                any_udp: any_ike || policy.tunnels.iter().any(|t| t.udp_encap),
                tracker,
                routes,
                ids: stage("black-to-red"),
                deferred: None,
                hits: RuleHits::new(policy.filters.len()),
                drops: DropCounters::default(),
                bypassed: 0,
                ike_received: 0,
            },
        })
    }

    /// Red → black; see [`OutboundPath::process`].
    pub fn outbound(&mut self, inner: &[u8], out: &mut [u8], now: Timestamp) -> Verdict {
        self.outbound.process(inner, out, now)
    }

    /// Black → red; see [`InboundPath::process`].
    pub fn inbound(&mut self, pkt: &mut [u8], now: Timestamp) -> Verdict {
        self.inbound.process(pkt, now)
    }

    /// The routes of the router role, for whoever reads black's routing
    /// daemon (`None`: the policy does not route cleartext).
    pub fn routes(&self) -> SharedRoutes {
        self.outbound.routes.clone()
    }

    /// Splits into the two halves (one per pump thread) and the control
    /// half.
    pub fn split(self) -> (OutboundPath, InboundPath, ControlPath) {
        (self.outbound, self.inbound, self.control)
    }
}

impl OutboundPath {
    /// Processes one inner datagram from red: filter, SPD, then ESP into
    /// `out` (PROTECT) or a copy into `out` (BYPASS). The packet goes to
    /// black as `out[..len]`.
    pub fn process(&mut self, inner: &[u8], out: &mut [u8], now: Timestamp) -> Verdict {
        let mut deferred = None;
        match self.process_inner(inner, out, now, &mut deferred) {
            Ok(n) => {
                commit_deferred(&self.tracker, deferred, now);
                Verdict::Send(n)
            }
            Err(r) => {
                self.drops.inc(r);
                Verdict::Drop(r)
            }
        }
    }

    fn process_inner(
        &mut self,
        inner: &[u8],
        out: &mut [u8],
        now: Timestamp,
        deferred: &mut Option<Deferred>,
    ) -> Result<usize, DropReason> {
        let t = five_tuple(inner).map_err(wire_drop)?;
        *deferred = self.rules.filter_packet(
            &self.tracker,
            &mut self.hits,
            Direction::Outbound,
            inner,
            &t,
            now,
        )?;
        let action = match self.rules.spd(&t) {
            Lookup::Match(a) => a,
            Lookup::Unclassified => return Err(DropReason::UnclassifiedFragment),
            Lookup::None => return Err(DropReason::NoPolicy),
        };
        match action {
            SpdAction::Discard => Err(DropReason::Discard),
            SpdAction::Bypass => {
                // The router role: only where a route sends it to black.
                if let Some(via) = route_of(&self.routes, t.dst) {
                    if via != Some(RouteVia::Black) {
                        return Err(DropReason::NoRoute);
                    }
                }
                let dst = out
                    .get_mut(..inner.len())
                    .ok_or(DropReason::BufferTooSmall)?;
                // The IDS last: what it takes into a stream is sent.
                ids_inspect(&mut self.ids, inner, &t, deferred.as_ref(), now)?;
                dst.copy_from_slice(inner);
                self.bypassed += 1;
                Ok(inner.len())
            }
            SpdAction::Protect(id) => {
                let idx = self.rules.tunnel_index(id).ok_or(DropReason::NoSa)?;
                if !self.rules.outbound_in_ts(idx, &t) {
                    return Err(DropReason::SelectorMismatch);
                }
                if self.sas.get(idx).and_then(Option::as_ref).is_none() {
                    return Err(DropReason::NoSa);
                }
                // The IDS last: what it takes into a stream is sent.
                ids_inspect(&mut self.ids, inner, &t, deferred.as_ref(), now)?;
                let sa = self
                    .sas
                    .get_mut(idx)
                    .and_then(Option::as_mut)
                    .ok_or(DropReason::NoSa)?;
                sa.encap(inner, out, now)
            }
        }
    }

    /// Drop counters.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// The outbound SA of a tunnel.
    pub fn sa_mut(&mut self, tunnel: TunnelId) -> Option<&mut OutboundSa> {
        let idx = self.rules.tunnel_index(tunnel)?;
        self.sas.get_mut(idx).and_then(Option::as_mut)
    }

    /// Collects lifetime events (each reported once).
    pub fn poll_events(&mut self, now: Timestamp, mut f: impl FnMut(SaEvent)) {
        for (sa, t) in self.sas.iter_mut().zip(&self.rules.tunnels) {
            let Some(sa) = sa else { continue };
            let state = sa.life_state(now);
            if sa.take_soft_event() {
                f(SaEvent {
                    sa: sa.id(),
                    hard: state == crate::sa::LifeState::Hard,
                    ike: t.ike,
                });
            }
        }
    }

    /// The filter's log lines since the last call (logged rules only;
    /// rate-limited, see [`LOG_LINES_PER_SECOND`]).
    pub fn take_log(&mut self) -> Vec<String> {
        let mut lines = std::mem::take(&mut self.hits.log.lines);
        if let Some(ids) = &mut self.ids {
            lines.append(&mut ids.take_lines());
        }
        lines
    }

    /// Human-readable counters, one line each.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for (sa, t) in self.sas.iter().zip(&self.rules.tunnels) {
            if let Some(sa) = sa {
                let c = sa.counters();
                let _ = writeln!(
                    s,
                    "out tunnel={} spi={} packets={} bytes={} tfc_bytes={}",
                    t.name,
                    sa.id().spi,
                    c.packets,
                    c.bytes,
                    c.tfc_bytes
                );
            }
        }
        let _ = writeln!(s, "out bypassed={}", self.bypassed);
        self.hits.write(&mut s, "out", &self.rules.filters_out);
        if let Some(ids) = &self.ids {
            ids.write_report(&mut s, "out");
        }
        write_drops(&mut s, "out", &self.drops);
        if let Some(tr) = &self.tracker {
            let table = tr.lock().unwrap_or_else(PoisonError::into_inner);
            let c = table.counters();
            let _ = writeln!(
                s,
                "conntrack flows={} max={} inserted={} expired={} removed_by_policy={} table_full={} invalid={} out_of_window={} related={}",
                table.len(),
                table.capacity(),
                c.inserted,
                c.expired,
                c.removed_by_policy,
                c.table_full,
                c.invalid,
                c.out_of_window,
                c.related
            );
        }
        if let Some(r) = &self.routes {
            s.push_str(&r.read().unwrap_or_else(PoisonError::into_inner).report());
        }
        s
    }
}

impl InboundPath {
    /// Processes one outer datagram from black. ESP (as IP protocol 50, or
    /// inside UDP to port 4500 when a tunnel uses UDP encapsulation): SAD by SPI, replay
    /// check, decrypt, selector check, filter. Cleartext: allowed only if the
    /// SPD (seen from the other side) says BYPASS, then filtered. On
    /// `Send(len)` the datagram for red is `pkt[..len]`.
    pub fn process(&mut self, pkt: &mut [u8], now: Timestamp) -> Verdict {
        self.deferred = None;
        let r = self.process_inner(pkt, now);
        let deferred = self.deferred.take();
        match r {
            Ok(Inbound::Red(n)) => {
                commit_deferred(&self.tracker, deferred, now);
                Verdict::Send(n)
            }
            Ok(Inbound::Ike(i)) => {
                self.ike_received += 1;
                Verdict::Ike(i)
            }
            Err(r) => {
                self.drops.inc(r);
                Verdict::Drop(r)
            }
        }
    }

    /// An IKE message from a configured peer to our address on it: UDP to
    /// port 500, or to 4500 behind the non-ESP marker.
    fn ike(&self, pkt: &[u8], o: &Outer) -> Option<IkeIn> {
        let peer = self
            .rules
            .ike_peers
            .iter()
            .position(|(local, remote)| *local == o.dst && *remote == o.src)?;
        let udp = pkt.get(o.l4_off..)?;
        let h = udp.get(..udp::HEADER_LEN)?;
        let (sport, dport) = (
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[2], h[3]]),
        );
        let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if len != udp.len() || len < udp::HEADER_LEN {
            return None;
        }
        let body = o.l4_off + udp::HEADER_LEN;
        let (offset, len) = match dport {
            500 => (body, len - udp::HEADER_LEN),
            udp::NAT_T_PORT => match udp.get(udp::HEADER_LEN..udp::HEADER_LEN + 4) {
                Some([0, 0, 0, 0]) => (body + 4, len - udp::HEADER_LEN - 4),
                _ => return None,
            },
            _ => return None,
        };
        Some(IkeIn {
            peer: u16::try_from(peer).ok()?,
            local_port: dport,
            remote_port: sport,
            offset,
            len,
        })
    }

    fn process_inner(&mut self, pkt: &mut [u8], now: Timestamp) -> Result<Inbound, DropReason> {
        let outer = outer_esp_offset(pkt)?;
        if outer.protocol == udp::PROTOCOL && !self.rules.ike_peers.is_empty() {
            if let Some(i) = self.ike(pkt, &outer) {
                return Ok(Inbound::Ike(i));
            }
        }
        let Outer {
            protocol: proto,
            l4_off,
            ecn: outer_ecn,
            ..
        } = outer;
        let (esp_off, in_udp) = match proto {
            50 => (l4_off, false),
            udp::PROTOCOL if self.any_udp => {
                match udp::classify(pkt, l4_off).map_err(wire_drop)? {
                    Some(udp::Payload::Esp(off)) => (off, true),
                    Some(udp::Payload::NonEsp) => return Err(DropReason::NonEsp),
                    Some(udp::Payload::Keepalive) => return Err(DropReason::Keepalive),
                    None => return self.cleartext(pkt, now).map(Inbound::Red),
                }
            }
            _ => return self.cleartext(pkt, now).map(Inbound::Red),
        };
        let esp = &mut pkt[esp_off..];
        let spi = esp
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(DropReason::Truncated)?;
        let pos = self
            .sad
            .binary_search_by_key(&spi, |(s, _, _)| *s)
            .map_err(|_| DropReason::UnknownSpi)?;
        let (_, tidx, sa) = &mut self.sad[pos];
        let tidx = *tidx;
        if sa.udp_encap() != in_udp {
            return Err(DropReason::EncapMismatch);
        }
        // `decap` checked that the next header agrees with the version.
        let d = sa.decap(esp, now)?;
        let inner = &esp[..d.len];
        let t = five_tuple(inner).map_err(wire_drop)?;
        if !self.rules.inbound_in_ts(tidx, &t) {
            return Err(DropReason::SelectorMismatch);
        }
        // RFC 4301 §5.2: the packet must be one the SPD, seen from the
        // other side, protects with this very tunnel. The SA's selectors
        // alone would let a peer whose tunnel encloses another's (nested
        // selectors) send with the other peer's addresses, and let a
        // DISCARD or BYPASS carved out of a tunnel in through it.
        let tunnel = self.rules.tunnels.get(tidx).map(|t| t.id);
        match (self.rules.spd(&t.reversed()), tunnel) {
            (Lookup::Match(SpdAction::Protect(id)), Some(mine)) if id == mine => {}
            (Lookup::Unclassified, _) => return Err(DropReason::UnclassifiedFragment),
            _ => return Err(DropReason::SpdMismatch),
        }
        self.deferred = self.rules.filter_packet(
            &self.tracker,
            &mut self.hits,
            Direction::Inbound,
            &esp[..d.len],
            &t,
            now,
        )?;
        ids_inspect(
            &mut self.ids,
            &esp[..d.len],
            &t,
            self.deferred.as_ref(),
            now,
        )?;
        ecn_decapsulate(&mut esp[..d.len], outer_ecn)?;
        pkt.copy_within(esp_off..esp_off + d.len, 0);
        Ok(Inbound::Red(d.len))
    }

    /// A datagram that is not ESP: passed to red only if the SPD (seen
    /// from the other side) says BYPASS, then filtered.
    fn cleartext(&mut self, pkt: &[u8], now: Timestamp) -> Result<usize, DropReason> {
        let t = five_tuple(pkt).map_err(wire_drop)?;
        match self.rules.spd(&t.reversed()) {
            Lookup::Match(SpdAction::Bypass) => {}
            Lookup::Unclassified => return Err(DropReason::UnclassifiedFragment),
            _ => return Err(DropReason::Unprotected),
        }
        // The router role: only where a route sends it to red.
        if let Some(via) = route_of(&self.routes, t.dst) {
            if via != Some(RouteVia::Red) {
                return Err(DropReason::NoRoute);
            }
        }
        self.deferred = self.rules.filter_packet(
            &self.tracker,
            &mut self.hits,
            Direction::Inbound,
            pkt,
            &t,
            now,
        )?;
        ids_inspect(&mut self.ids, pkt, &t, self.deferred.as_ref(), now)?;
        self.bypassed += 1;
        Ok(pkt.len())
    }

    /// Drop counters.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// The inbound SA with this SPI.
    pub fn sa_mut(&mut self, spi: u32) -> Option<&mut InboundSa> {
        let pos = self.sad.binary_search_by_key(&spi, |(s, _, _)| *s).ok()?;
        Some(&mut self.sad[pos].2)
    }

    /// Collects lifetime events (each reported once).
    pub fn poll_events(&mut self, now: Timestamp, mut f: impl FnMut(SaEvent)) {
        for (_, idx, sa) in self.sad.iter_mut() {
            let state = sa.life_state(now);
            if sa.take_soft_event() {
                f(SaEvent {
                    sa: sa.id(),
                    hard: state == crate::sa::LifeState::Hard,
                    ike: self.rules.tunnels.get(*idx).is_some_and(|t| t.ike),
                });
            }
        }
    }

    /// The filter's log lines since the last call (logged rules only;
    /// rate-limited, see [`LOG_LINES_PER_SECOND`]).
    pub fn take_log(&mut self) -> Vec<String> {
        let mut lines = std::mem::take(&mut self.hits.log.lines);
        if let Some(ids) = &mut self.ids {
            lines.append(&mut ids.take_lines());
        }
        lines
    }

    /// Human-readable counters, one line each.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for (_, tidx, sa) in &self.sad {
            let c = sa.counters();
            let name = self
                .rules
                .tunnels
                .get(*tidx)
                .map_or("?", |t| t.name.as_str());
            let _ = writeln!(
                s,
                "in tunnel={} spi={} packets={} bytes={} tfc_bytes={}",
                name,
                sa.id().spi,
                c.packets,
                c.bytes,
                c.tfc_bytes
            );
        }
        let _ = writeln!(s, "in bypassed={}", self.bypassed);
        if !self.rules.ike_peers.is_empty() {
            let _ = writeln!(s, "in ike_received={}", self.ike_received);
        }
        self.hits.write(&mut s, "in", &self.rules.filters_in);
        if let Some(ids) = &self.ids {
            ids.write_report(&mut s, "in");
        }
        write_drops(&mut s, "in", &self.drops);
        s
    }
}

fn write_drops(s: &mut String, dir: &str, d: &DropCounters) {
    for r in DropReason::ALL {
        let n = d.get(r);
        if n > 0 {
            let _ = writeln!(s, "{dir} drop {r}={n}");
        }
    }
    let _ = writeln!(s, "{dir} drop total={}", d.total());
}

fn wire_drop(e: WireError) -> DropReason {
    match e {
        WireError::Truncated => DropReason::Truncated,
        WireError::Malformed => DropReason::Malformed,
        WireError::Fragment => DropReason::BadFragment,
    }
}

/// ECN codepoints (RFC 3168 §5): the low two bits of the TOS / traffic class.
mod ecn {
    pub const NOT_ECT: u8 = 0b00;
    pub const ECT1: u8 = 0b01;
    pub const ECT0: u8 = 0b10;
    pub const CE: u8 = 0b11;
}

/// Decapsulation of the ECN field (RFC 6040 §4.2, Figure 4): the inner
/// packet's ECN field from its own and the outer header's. Inner Not-ECT
/// stays Not-ECT (its sender understands only drops), and is dropped when
/// the outer says CE; CE on the outer marks an ECN-capable inner packet CE;
/// outer ECT(1) turns inner ECT(0) into ECT(1). The DSCP is left alone
/// (pipe model: the outer DSCP is the policy's, not the inner one's).
/// `inner` is a whole datagram whose header `five_tuple` checked; an IPv4
/// header checksum is updated incrementally (RFC 1624).
fn ecn_decapsulate(inner: &mut [u8], outer: u8) -> Result<(), DropReason> {
    use ecn::*;
    let v4 = inner.first().map(|b| b >> 4) == Some(4);
    let old = match (v4, inner.get(..2)) {
        (true, Some(h)) => h[1] & 3,
        (false, Some(h)) => (h[1] >> 4) & 3,
        (_, None) => return Err(DropReason::Truncated),
    };
    let new = match (old, outer & 3) {
        (NOT_ECT, CE) => return Err(DropReason::CeOnNotEct),
        (NOT_ECT, _) => NOT_ECT,
        (_, CE) | (CE, _) => CE,
        (ECT0, ECT1) => ECT1,
        (x, _) => x,
    };
    if new == old {
        return Ok(());
    }
    if v4 {
        let h = inner.get_mut(..12).ok_or(DropReason::Truncated)?;
        let word = |h: &[u8]| u16::from_be_bytes([h[0], h[1]]);
        let before = word(h);
        h[1] = (h[1] & !3) | new;
        let after = word(h);
        // HC' = ~(~HC + ~m + m')
        let hc = u16::from_be_bytes([h[10], h[11]]);
        let sum = u64::from(!hc) + u64::from(!before) + u64::from(after);
        let c = !crate::wire::fold(sum);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    } else if let Some(b) = inner.get_mut(1) {
        *b = (*b & 0xcf) | (new << 4);
    }
    Ok(())
}

/// What the inbound path needs of an outer header.
struct Outer {
    /// Source and destination.
    src: IpAddr,
    dst: IpAddr,
    /// Upper-layer protocol (50 ESP, 17 UDP, …).
    protocol: u8,
    /// Offset of its header.
    l4_off: usize,
    /// The outer ECN field.
    ecn: u8,
}

// ------------------------------------------------ SAs installed by IKE

fn lifetimes_for(t: &TunnelRules, i: &SaInstall) -> policy_blob::Lifetimes {
    let mut l = t.lifetimes;
    l.soft.seconds = Some(i.soft_seconds);
    l.hard.seconds = Some(i.hard_seconds);
    l
}

/// Seconds after its hard lifetime at which the data plane removes a CHILD
/// SA the IKE process did not.
pub const ORPHAN_GRACE_SECONDS: u64 = 10;

/// The control half: checks what the IKE process asks of the data plane and
/// prepares it for the two pump halves, and writes the IKE messages it
/// sends. It keeps no key: [`InstallRules`] is the policy without them.
#[derive(Debug)]
pub struct ControlPath {
    rules: Arc<Rules>,
    check: InstallRules,
    /// Inbound SPIs of the manually keyed SAs (never IKE's to use or remove).
    manual_spis: Vec<u32>,
    /// The CHILD SAs IKE installed and has not removed: inbound SPI →
    /// (tunnel, when the data plane removes it by itself).
    ike_sas: std::collections::BTreeMap<u32, (TunnelId, Timestamp)>,
    ike_sent: u64,
    /// Tunnels IKE has installed an SA for at least once.
    keyed: std::collections::BTreeSet<u32>,
}

/// A checked install, its two SAs built (keys expanded), for the halves.
#[derive(Debug)]
pub struct Prepared {
    /// The inbound half, for [`InboundPath::insert`].
    pub inbound: PreparedIn,
    /// The outbound half, for [`OutboundPath::insert`].
    pub outbound: PreparedOut,
}

/// The inbound SA of a [`Prepared`] install.
#[derive(Debug)]
pub struct PreparedIn {
    idx: usize,
    spi: u32,
    sa: InboundSa,
}

/// The outbound SA of a [`Prepared`] install.
#[derive(Debug)]
pub struct PreparedOut {
    idx: usize,
    inbound_spi: u32,
    active: bool,
    sa: OutboundSa,
}

impl ControlPath {
    /// Records that `tunnel` got an SA; true the first time.
    pub fn first_keyed(&mut self, tunnel: TunnelId) -> bool {
        self.keyed.insert(tunnel.0)
    }

    /// Checks an install the IKE process asks for ([`InstallRules::check`])
    /// and builds both of its SAs, to be inserted inbound first.
    ///
    /// # Errors
    /// The [`Refusal`]; nothing changes then.
    pub fn prepare(&mut self, i: &SaInstall, now: Timestamp) -> Result<Prepared, Refusal> {
        let (manual, ike) = (&self.manual_spis, &self.ike_sas);
        self.check
            .check(i, |spi| manual.contains(&spi) || ike.contains_key(&spi))?;
        let idx = self
            .rules
            .tunnel_index(i.tunnel)
            .ok_or(Refusal::UnknownTunnel)?;
        let t = &self.rules.tunnels[idx];
        let life = lifetimes_for(t, i);
        let mut inbound = InboundSa::new(
            i.tunnel,
            policy_blob::Spi(i.inbound_spi),
            i.aead,
            &i.key_in,
            i.esn,
            t.replay_window,
            life,
            now,
        )
        .map_err(|_| Refusal::Key)?;
        inbound.set_udp_encap(i.udp_remote_port.is_some());
        let mut outbound = OutboundSa::new(
            i.tunnel,
            policy_blob::Spi(i.outbound_spi),
            i.aead,
            &i.key_out,
            i.esn,
            t.local,
            t.remote,
            life,
            now,
        )
        .map_err(|_| Refusal::Key)?;
        if let Some(port) = i.udp_remote_port {
            outbound.set_udp_encap(true);
            outbound.set_udp_remote_port(port);
        }
        outbound.set_outer_dscp(t.outer_dscp);
        outbound.set_tfc_sizes(&t.tfc_sizes);
        // IKE deletes its SAs before their hard lifetime; one it forgot (an
        // IKE process that died and started again knows nothing of its
        // predecessor's SAs) goes at the hard lifetime plus a grace period.
        let end = Timestamp(
            now.0
                .saturating_add(i.hard_seconds)
                .saturating_add(ORPHAN_GRACE_SECONDS),
        );
        self.ike_sas.insert(i.inbound_spi, (i.tunnel, end));
        Ok(Prepared {
            inbound: PreparedIn {
                idx,
                spi: i.inbound_spi,
                sa: inbound,
            },
            outbound: PreparedOut {
                idx,
                inbound_spi: i.inbound_spi,
                active: i.outbound_active,
                sa: outbound,
            },
        })
    }

    /// Whether IKE installed this CHILD SA (by its inbound SPI) for this
    /// tunnel and has not removed it: only then may it switch to it or
    /// remove it.
    pub fn owns(&self, tunnel: TunnelId, inbound_spi: u32) -> bool {
        self.ike_sas.get(&inbound_spi).map(|e| e.0) == Some(tunnel)
    }

    /// Forgets a CHILD SA IKE removes; false (and nothing forgotten) if
    /// [`ControlPath::owns`] is false.
    pub fn forget(&mut self, tunnel: TunnelId, inbound_spi: u32) -> bool {
        if !self.owns(tunnel, inbound_spi) {
            return false;
        }
        self.ike_sas.remove(&inbound_spi);
        true
    }

    /// Whether the tunnel is keyed by IKE.
    pub fn ike_keyed(&self, tunnel: TunnelId) -> bool {
        self.check.ike_keyed(tunnel)
    }

    /// Forgets the CHILD SAs IKE installed whose hard lifetime ended more
    /// than [`ORPHAN_GRACE_SECONDS`] ago (IKE did not remove them) and
    /// returns them (tunnel, inbound SPI), for removal from both halves.
    pub fn expire(&mut self, now: Timestamp) -> Vec<(TunnelId, u32)> {
        let gone: Vec<(TunnelId, u32)> = self
            .ike_sas
            .iter()
            .filter(|(_, (_, end))| now.0 >= end.0)
            .map(|(spi, (t, _))| (*t, *spi))
            .collect();
        for (_, spi) in &gone {
            self.ike_sas.remove(spi);
        }
        gone
    }

    /// CHILD SAs installed by IKE and not removed.
    pub fn ike_sa_count(&self) -> usize {
        self.ike_sas.len()
    }

    /// Writes an IKE message for peer `peer` into `out`: the outer header
    /// from the policy's addresses (our `local`, the peer's `remote`; TOS 0,
    /// TTL 64), UDP from `local_port` (500, or 4500 with the non-ESP marker)
    /// to `remote_port`, checksum filled. Returns the length.
    ///
    /// # Errors
    /// `NoPolicy` for a peer not in the policy or ports IKE does not use;
    /// `BufferTooSmall` or `Malformed` for a message that does not fit.
    pub fn ike_datagram(
        &mut self,
        peer: u16,
        local_port: u16,
        remote_port: u16,
        ike: &[u8],
        out: &mut [u8],
    ) -> Result<usize, DropReason> {
        let &(local, remote) = self
            .rules
            .ike_peers
            .get(usize::from(peer))
            .ok_or(DropReason::NoPolicy)?;
        let marker = match (local_port, ike) {
            (500, _) => 0,
            // A NAT-keepalive (RFC 3948 §2.3): the one byte 0xFF, no marker
            // (no IKE message is one byte long).
            (udp::NAT_T_PORT, [0xff]) => 0,
            (udp::NAT_T_PORT, _) => 4,
            _ => return Err(DropReason::NoPolicy),
        };
        if remote_port == 0 {
            return Err(DropReason::NoPolicy);
        }
        let outer = crate::wire::ip::OuterRepr {
            src: local,
            dst: remote,
            tos: 0,
            ident: 0,
            protocol: udp::PROTOCOL,
        };
        let hl = outer.header_len();
        let udp_len = udp::HEADER_LEN + marker + ike.len();
        let total = hl + udp_len;
        if out.len() < total || udp_len > usize::from(u16::MAX) {
            return Err(DropReason::BufferTooSmall);
        }
        outer
            .emit(&mut out[..hl], udp_len)
            .map_err(|_| DropReason::Malformed)?;
        udp::emit_ports(&mut out[hl..], local_port, remote_port, marker + ike.len())
            .map_err(|_| DropReason::Malformed)?;
        let body = hl + udp::HEADER_LEN;
        out[body..body + marker].fill(0);
        out[body + marker..total].copy_from_slice(ike);
        let (s, d) = match (local, remote) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets().to_vec(), d.octets().to_vec()),
            (IpAddr::V6(s), IpAddr::V6(d)) => (s.octets().to_vec(), d.octets().to_vec()),
            _ => return Err(DropReason::Malformed),
        };
        udp::fill_checksum(&mut out[hl..total], &s, &d).map_err(|_| DropReason::Malformed)?;
        self.ike_sent += 1;
        Ok(total)
    }

    /// IKE messages written by [`ControlPath::ike_datagram`].
    pub fn ike_sent(&self) -> u64 {
        self.ike_sent
    }
}

impl Engine {
    /// Checks an SA the IKE process asks for ([`ControlPath::prepare`]) and
    /// installs it in both halves: the inbound SA at once, the outbound SA
    /// in use now or after [`OutboundPath::use_outbound`]. (The pump does
    /// the same across its threads.)
    ///
    /// # Errors
    /// The [`Refusal`]; nothing is installed then.
    pub fn install(&mut self, i: &SaInstall, now: Timestamp) -> Result<(), Refusal> {
        let p = self.control.prepare(i, now)?;
        self.inbound.insert(p.inbound);
        self.outbound.insert(p.outbound);
        Ok(())
    }

    /// Removes the CHILD SAs IKE left behind ([`ControlPath::expire`]) from
    /// both halves; returns how many.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let gone = self.control.expire(now);
        for (t, spi) in &gone {
            self.outbound.remove(*t, *spi);
            self.inbound.remove(*spi);
        }
        gone.len()
    }

    /// Removes a CHILD SA IKE installed, both halves; false if IKE does not
    /// own it.
    pub fn remove(&mut self, tunnel: TunnelId, inbound_spi: u32) -> bool {
        if !self.control.forget(tunnel, inbound_spi) {
            return false;
        }
        self.outbound.remove(tunnel, inbound_spi);
        self.inbound.remove(inbound_spi);
        true
    }
}

impl OutboundPath {
    /// Inserts the outbound half of a prepared install: in use at once if
    /// the install said so, else waiting for [`OutboundPath::use_outbound`].
    pub fn insert(&mut self, p: PreparedOut) {
        if p.active {
            self.sas[p.idx] = Some(p.sa);
            self.active_spi[p.idx] = Some(p.inbound_spi);
        } else {
            self.pending.push((p.idx, p.inbound_spi, p.sa));
        }
    }

    /// The inbound SPI paired with the SA the tunnel sends with, if IKE
    /// installed it.
    pub fn active_pair(&self, tunnel: TunnelId) -> Option<u32> {
        let idx = self.rules.tunnel_index(tunnel)?;
        self.active_spi[idx]
    }

    /// Sends the tunnel's traffic with the SA paired with `inbound_spi`
    /// from now on; false if no such SA waits.
    pub fn use_outbound(&mut self, tunnel: TunnelId, inbound_spi: u32) -> bool {
        let Some(idx) = self.rules.tunnel_index(tunnel) else {
            return false;
        };
        let Some(pos) = self
            .pending
            .iter()
            .position(|(t, spi, _)| *t == idx && *spi == inbound_spi)
        else {
            return self.active_spi[idx] == Some(inbound_spi);
        };
        let (_, _, sa) = self.pending.swap_remove(pos);
        self.sas[idx] = Some(sa);
        self.active_spi[idx] = Some(inbound_spi);
        true
    }

    /// Removes the outbound SA paired with `inbound_spi` (in use or
    /// waiting); false if there is none.
    pub fn remove(&mut self, tunnel: TunnelId, inbound_spi: u32) -> bool {
        let Some(idx) = self.rules.tunnel_index(tunnel) else {
            return false;
        };
        if self.active_spi[idx] == Some(inbound_spi) {
            self.sas[idx] = None;
            self.active_spi[idx] = None;
            return true;
        }
        let before = self.pending.len();
        self.pending
            .retain(|(t, spi, _)| !(*t == idx && *spi == inbound_spi));
        before != self.pending.len()
    }
}

impl InboundPath {
    /// Whether an inbound SA has this SPI.
    pub fn has_spi(&self, spi: u32) -> bool {
        self.sad.binary_search_by_key(&spi, |(s, _, _)| *s).is_ok()
    }

    /// Inserts the inbound half of a prepared install; false (and nothing
    /// inserted) if the SPI is taken, which [`ControlPath::prepare`] rules
    /// out.
    pub fn insert(&mut self, p: PreparedIn) -> bool {
        match self.sad.binary_search_by_key(&p.spi, |(s, _, _)| *s) {
            Ok(_) => false,
            Err(pos) => {
                self.sad.insert(pos, (p.spi, p.idx, p.sa));
                true
            }
        }
    }

    /// Removes the inbound SA with this SPI; false if there is none.
    pub fn remove(&mut self, spi: u32) -> bool {
        match self.sad.binary_search_by_key(&spi, |(s, _, _)| *s) {
            Ok(p) => {
                self.sad.remove(p);
                true
            }
            Err(_) => false,
        }
    }

    /// IKE messages steered to the IKE process.
    pub fn ike_received(&self) -> u64 {
        self.ike_received
    }
}

/// What an inbound datagram becomes.
enum Inbound {
    /// `pkt[..len]` for red.
    Red(usize),
    /// An IKE message for the IKE process.
    Ike(IkeIn),
}

/// Parses an outer datagram's header; fragments are refused.
fn outer_esp_offset(pkt: &[u8]) -> Result<Outer, DropReason> {
    match pkt.first().map(|b| b >> 4) {
        Some(4) => {
            let p = Ipv4Packet::new_checked(pkt).map_err(wire_drop)?;
            let flags = u16::from_be_bytes([pkt[6], pkt[7]]);
            if flags & 0x3fff != 0 {
                return Err(DropReason::Fragment);
            }
            Ok(Outer {
                src: IpAddr::V4(p.src()),
                dst: IpAddr::V4(p.dst()),
                protocol: p.protocol(),
                l4_off: p.header_len(),
                ecn: p.tos() & 3,
            })
        }
        Some(6) => {
            let p = Ipv6Packet::new_checked(pkt).map_err(wire_drop)?;
            let ecn = p.traffic_class() & 3;
            let mut nh = p.next_header();
            let mut off = 40;
            // Skip hop-by-hop / routing / destination options; refuse fragments.
            for _ in 0..8 {
                match nh {
                    0 | 43 | 60 => {
                        let h = pkt.get(off..off + 2).ok_or(DropReason::Truncated)?;
                        nh = h[0];
                        off += (usize::from(h[1]) + 1) * 8;
                        if off > pkt.len() {
                            return Err(DropReason::Truncated);
                        }
                    }
                    44 => return Err(DropReason::Fragment),
                    _ => {
                        return Ok(Outer {
                            src: IpAddr::V6(p.src()),
                            dst: IpAddr::V6(p.dst()),
                            protocol: nh,
                            l4_off: off,
                            ecn,
                        })
                    }
                }
            }
            Err(DropReason::Malformed)
        }
        Some(_) => Err(DropReason::Malformed),
        None => Err(DropReason::Truncated),
    }
}
