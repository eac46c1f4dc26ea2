//! The router role (sans-IO): where cleartext may go, and which routes the
//! black personality's routing daemon may add.
//!
//! The Viaduct does not choose next hops: black's kernel forwards what the
//! Viaduct hands it, by the routes its daemon (FRR) installed. What the
//! Viaduct decides is whether a packet may cross at all: red's cleartext
//! goes to black only for a destination whose longest matching route
//! points to black, and black's goes to red only for a destination routed
//! to red. The routes are the profile's static ones (compiled into the
//! policy, red's own networks among them) and the routes black learned and
//! reported (FRR's forwarding table over FPM, see [`crate::fpm`]), each
//! admitted only if it falls in a range the profile allows, is not
//! special-purpose space (unless martians are allowed), does not reach a
//! destination routed to red, and fits in the table. A compromised black
//! can withdraw routes, or fail to add them (availability), but cannot
//! route anything where the profile forbids: a refused route changes
//! nothing, and a static route always wins over a learned one of the same
//! prefix.
//!
//! Lookups are longest-prefix matches over hash maps, one per prefix length
//! in use (at most 33 for IPv4, 129 for IPv6); the learned table is bounded
//! by the policy's `max_routes`.
#![forbid(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use policy_blob::{LearnPolicy, Policy, Prefix, RouteVia};

/// Prefixes of one family by length, longest first. The maps hash with
/// keys drawn once, when the policy is loaded (before the Viaduct confines
/// itself: no thread may draw random bytes afterwards), and random per
/// process, so that black cannot choose prefixes that collide.
#[derive(Debug, Clone)]
struct Family {
    /// (length, network bits → where), sorted by length, longest first.
    by_len: Vec<(u8, HashMap<u128, RouteVia>)>,
    hasher: RandomState,
}

impl Family {
    fn new(hasher: RandomState) -> Family {
        Family {
            by_len: Vec::new(),
            hasher,
        }
    }

    fn mask(len: u8, width: u8) -> u128 {
        // The address in the top `width` bits of a u128 (IPv4 shifted up).
        if len == 0 {
            0
        } else {
            (u128::MAX << (128 - u32::from(len))) & (u128::MAX << (128 - u32::from(width)))
        }
    }

    fn get(&self, bits: u128, len: u8, width: u8) -> Option<RouteVia> {
        let m = Self::mask(len, width);
        self.by_len
            .iter()
            .find(|(l, _)| *l == len)
            .and_then(|(_, map)| map.get(&(bits & m)).copied())
    }

    fn insert(&mut self, bits: u128, len: u8, width: u8, via: RouteVia) -> Option<RouteVia> {
        let m = Self::mask(len, width);
        let pos = match self.by_len.iter().position(|(l, _)| *l <= len) {
            Some(p) if self.by_len[p].0 == len => p,
            Some(p) => {
                let map = HashMap::with_hasher(self.hasher.clone());
                self.by_len.insert(p, (len, map));
                p
            }
            None => {
                let map = HashMap::with_hasher(self.hasher.clone());
                self.by_len.push((len, map));
                self.by_len.len() - 1
            }
        };
        self.by_len[pos].1.insert(bits & m, via)
    }

    fn remove(&mut self, bits: u128, len: u8, width: u8) -> Option<RouteVia> {
        let m = Self::mask(len, width);
        let pos = self.by_len.iter().position(|(l, _)| *l == len)?;
        let old = self.by_len[pos].1.remove(&(bits & m));
        if self.by_len[pos].1.is_empty() {
            self.by_len.remove(pos);
        }
        old
    }

    /// The longest prefix holding `bits`: (its length, where).
    fn lookup(&self, bits: u128, width: u8) -> Option<(u8, RouteVia)> {
        self.by_len.iter().find_map(|(len, map)| {
            map.get(&(bits & Self::mask(*len, width)))
                .map(|v| (*len, *v))
        })
    }

    fn len(&self) -> usize {
        self.by_len.iter().map(|(_, m)| m.len()).sum()
    }
}

/// A table of both families.
#[derive(Debug, Clone)]
struct Table {
    v4: Family,
    v6: Family,
}

/// The address as the top bits of a u128, and the family's width.
fn bits(a: IpAddr) -> (u128, u8) {
    match a {
        IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

impl Table {
    fn new(hasher: &RandomState) -> Table {
        Table {
            v4: Family::new(hasher.clone()),
            v6: Family::new(hasher.clone()),
        }
    }

    fn family(&self, a: IpAddr) -> &Family {
        match a {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        }
    }

    fn family_mut(&mut self, a: IpAddr) -> &mut Family {
        match a {
            IpAddr::V4(_) => &mut self.v4,
            IpAddr::V6(_) => &mut self.v6,
        }
    }

    fn get(&self, p: &Prefix) -> Option<RouteVia> {
        let (b, w) = bits(p.addr);
        self.family(p.addr).get(b, p.len, w)
    }

    fn insert(&mut self, p: &Prefix, via: RouteVia) -> Option<RouteVia> {
        let (b, w) = bits(p.addr);
        self.family_mut(p.addr).insert(b, p.len, w, via)
    }

    fn remove(&mut self, p: &Prefix) -> Option<RouteVia> {
        let (b, w) = bits(p.addr);
        self.family_mut(p.addr).remove(b, p.len, w)
    }

    fn lookup(&self, a: IpAddr) -> Option<(u8, RouteVia)> {
        let (b, w) = bits(a);
        self.family(a).lookup(b, w)
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// Why a learned route was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A length beyond the family, or host bits set.
    Malformed,
    /// In no range the profile allows.
    NotAllowed,
    /// Inside special-purpose space, and martians are denied.
    Martian,
    /// It would take traffic routed to red: it is, or lies inside, a
    /// destination a static route sends to red.
    ReachesRed,
    /// The learned table holds `max_routes` already.
    TableFull,
    /// The policy allows no learned routes.
    NotLearning,
}

impl Refusal {
    /// Every refusal, in counter order.
    pub const ALL: [Refusal; 6] = [
        Refusal::Malformed,
        Refusal::NotAllowed,
        Refusal::Martian,
        Refusal::ReachesRed,
        Refusal::TableFull,
        Refusal::NotLearning,
    ];

    /// Stable snake-case name for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::NotAllowed => "not_allowed",
            Refusal::Martian => "martian",
            Refusal::ReachesRed => "reaches_red",
            Refusal::TableFull => "table_full",
            Refusal::NotLearning => "not_learning",
        }
    }
}

/// What a learned route change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Added to the table.
    Added,
    /// Already there: nothing changed.
    Present,
    /// Removed from the table.
    Withdrawn,
    /// A withdrawal of a route the table did not hold: nothing changed.
    Unknown,
}

/// The router role's routes: static (from the policy) and learned.
#[derive(Debug, Clone)]
pub struct Routes {
    fixed: Table,
    learned: Table,
    learn: Option<LearnPolicy>,
    added: u64,
    withdrawn: u64,
    refused: [u64; Refusal::ALL.len()],
}

impl Routes {
    /// The policy's routes, or `None` when the policy does not route
    /// cleartext ([`Policy::routed`]).
    pub fn new(policy: &Policy) -> Option<Routes> {
        if !policy.routed() {
            return None;
        }
        // The keys: drawn here, in the thread loading the policy.
        let hasher = RandomState::new();
        let mut fixed = Table::new(&hasher);
        for r in &policy.routes {
            fixed.insert(&r.prefix, r.via);
        }
        Some(Routes {
            fixed,
            learned: Table::new(&hasher),
            learn: policy.learn.clone(),
            added: 0,
            withdrawn: 0,
            refused: [0; Refusal::ALL.len()],
        })
    }

    /// Where cleartext to `dst` goes: the longest matching route, a static
    /// one winning over a learned one of the same length; `None` when no
    /// route matches.
    pub fn lookup(&self, dst: IpAddr) -> Option<RouteVia> {
        match (self.fixed.lookup(dst), self.learned.lookup(dst)) {
            (Some((fl, fv)), Some((ll, lv))) => Some(if ll > fl { lv } else { fv }),
            (Some((_, v)), None) | (None, Some((_, v))) => Some(v),
            (None, None) => None,
        }
    }

    /// Black reports a route to `p` (its daemon installed it): admitted
    /// into the learned table (pointing to black) or refused, counted.
    pub fn add(&mut self, p: Prefix) -> Result<Learned, Refusal> {
        let r = self.check(&p);
        match r {
            Ok(Learned::Added) => {
                self.learned.insert(&p, RouteVia::Black);
                self.added += 1;
            }
            Err(why) => {
                if let Some(n) = self.refused.get_mut(why as usize) {
                    *n += 1;
                }
            }
            _ => {}
        }
        r
    }

    fn check(&self, p: &Prefix) -> Result<Learned, Refusal> {
        let learn = self.learn.as_ref().ok_or(Refusal::NotLearning)?;
        if p.len > p.max_len() || !p.host_bits_clear() {
            return Err(Refusal::Malformed);
        }
        if !learn.allow.iter().any(|a| a.admits(p)) {
            return Err(Refusal::NotAllowed);
        }
        if !learn.martians && policy_blob::special::is_martian(p) {
            return Err(Refusal::Martian);
        }
        // A destination routed to red (red's networks among them): no
        // learned route may be it or lie inside it. One covering it is
        // harmless: the longer static route wins (and on equal length the
        // static one).
        let (b, w) = bits(p.addr);
        let inside_red = self
            .fixed
            .family(p.addr)
            .by_len
            .iter()
            .filter(|(l, _)| *l <= p.len)
            .any(|(l, map)| map.get(&(b & Family::mask(*l, w))) == Some(&RouteVia::Red));
        if inside_red {
            return Err(Refusal::ReachesRed);
        }
        if self.learned.get(p).is_some() {
            return Ok(Learned::Present);
        }
        if self.learned.len() >= learn.max_routes as usize {
            return Err(Refusal::TableFull);
        }
        Ok(Learned::Added)
    }

    /// Black withdraws its route to `p`.
    pub fn remove(&mut self, p: Prefix) -> Learned {
        if p.len <= p.max_len() && self.learned.remove(&p).is_some() {
            self.withdrawn += 1;
            Learned::Withdrawn
        } else {
            Learned::Unknown
        }
    }

    /// Forgets every learned route (black's daemon restarted or its
    /// stream ended: it reports its whole table again when it reconnects).
    pub fn clear_learned(&mut self) -> usize {
        let n = self.learned.len();
        self.withdrawn += n as u64;
        self.learned = Table::new(&self.learned.v4.hasher);
        n
    }

    /// Learned routes held.
    pub fn learned_len(&self) -> usize {
        self.learned.len()
    }

    /// Routes refused for `why` so far.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused.get(why as usize).copied().unwrap_or(0)
    }

    /// `routes static=… learned=… max=… added=… withdrawn=… refused_…=…`.
    pub fn report(&self) -> String {
        let mut s = format!(
            "routes static={} learned={} max={} added={} withdrawn={}",
            self.fixed.len(),
            self.learned.len(),
            self.learn.as_ref().map_or(0, |l| l.max_routes),
            self.added,
            self.withdrawn
        );
        for r in Refusal::ALL {
            let _ = write!(s, " refused_{}={}", r.name(), self.refused(r));
        }
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests;
