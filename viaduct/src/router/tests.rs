use super::*;
use policy_blob::PrefixRange;
use proptest::prelude::*;

fn p(s: &str) -> Prefix {
    let (a, l) = s.split_once('/').unwrap();
    Prefix::new(a.parse().unwrap(), l.parse().unwrap())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn range(s: &str, ge: u8, le: u8) -> PrefixRange {
    PrefixRange {
        prefix: p(s),
        min_len: ge,
        max_len: le,
    }
}

/// LAN 10.1.0.0/24 and a partner 10.9.0.0/16 behind red; black may
/// install routes inside 1.0.0.0/8 (to /24), 2a00::/12 (to /48), a default
/// route, and 172.16.0.0/12 to /24 (martian space); at most 4 routes.
fn policy(martians: bool) -> Policy {
    Policy::new("r", "1")
        .with_route(p("10.1.0.0/24"), RouteVia::Red)
        .with_route(p("10.9.0.0/16"), RouteVia::Red)
        .with_route(p("192.0.2.0/24"), RouteVia::Black)
        .with_learn(LearnPolicy {
            allow: vec![
                range("1.0.0.0/8", 8, 24),
                range("2a00::/12", 12, 48),
                range("0.0.0.0/0", 0, 0),
                range("172.16.0.0/12", 12, 24),
                range("10.0.0.0/8", 8, 32),
            ],
            max_routes: 4,
            martians,
        })
}

#[test]
fn a_policy_without_routes_routes_nothing() {
    assert!(Routes::new(&Policy::new("fw", "1")).is_none());
}

#[test]
fn static_routes_decide_by_longest_prefix() {
    let r = Routes::new(&policy(false)).unwrap();
    assert_eq!(r.lookup(ip("10.1.0.7")), Some(RouteVia::Red));
    assert_eq!(r.lookup(ip("10.9.200.1")), Some(RouteVia::Red));
    assert_eq!(r.lookup(ip("192.0.2.9")), Some(RouteVia::Black));
    assert_eq!(r.lookup(ip("1.2.3.4")), None, "nothing learned yet");
    assert_eq!(r.lookup(ip("2a00::1")), None);
}

#[test]
fn learned_routes_are_admitted_only_inside_allowed_ranges() {
    let mut r = Routes::new(&policy(false)).unwrap();
    assert_eq!(r.add(p("1.2.3.0/24")), Ok(Learned::Added));
    assert_eq!(r.lookup(ip("1.2.3.4")), Some(RouteVia::Black));
    assert_eq!(r.lookup(ip("1.2.4.4")), None);
    assert_eq!(r.add(p("1.2.3.0/24")), Ok(Learned::Present));
    // Too specific for its range, outside every range, an IPv6 /64 where
    // /48 is the longest.
    assert_eq!(r.add(p("1.2.3.128/25")), Err(Refusal::NotAllowed));
    assert_eq!(r.add(p("8.8.8.0/24")), Err(Refusal::NotAllowed));
    assert_eq!(r.add(p("2a00:1::/64")), Err(Refusal::NotAllowed));
    assert_eq!(r.add(p("2a00:1::/48")), Ok(Learned::Added));
    assert_eq!(r.lookup(ip("2a00:1::9")), Some(RouteVia::Black));
    // The default route, exactly as allowed.
    assert_eq!(r.add(p("0.0.0.0/0")), Ok(Learned::Added));
    assert_eq!(r.lookup(ip("8.8.8.8")), Some(RouteVia::Black));
    // ...which takes nothing from red: the static routes are longer.
    assert_eq!(r.lookup(ip("10.1.0.7")), Some(RouteVia::Red));
    assert_eq!(r.refused(Refusal::NotAllowed), 3);
    // Malformed: host bits, a length beyond the family.
    assert_eq!(r.add(p("1.2.3.1/24")), Err(Refusal::Malformed));
    assert_eq!(r.add(p("1.2.3.0/33")), Err(Refusal::Malformed));
}

#[test]
fn martians_are_refused_unless_allowed() {
    let mut r = Routes::new(&policy(false)).unwrap();
    assert_eq!(r.add(p("172.16.5.0/24")), Err(Refusal::Martian));
    assert_eq!(r.refused(Refusal::Martian), 1);
    let mut r = Routes::new(&policy(true)).unwrap();
    assert_eq!(r.add(p("172.16.5.0/24")), Ok(Learned::Added));
}

#[test]
fn nothing_learned_may_take_what_is_routed_to_red() {
    let mut r = Routes::new(&policy(true)).unwrap();
    // Red's LAN itself, a part of it, a part of the partner's network.
    for bad in ["10.1.0.0/24", "10.1.0.128/25", "10.1.0.7/32", "10.9.3.0/24"] {
        assert_eq!(r.add(p(bad)), Err(Refusal::ReachesRed), "{bad}");
    }
    // Covering red's networks is harmless and admitted: the static routes
    // are longer.
    assert_eq!(r.add(p("10.0.0.0/8")), Ok(Learned::Added));
    assert_eq!(r.lookup(ip("10.1.0.7")), Some(RouteVia::Red));
    assert_eq!(r.lookup(ip("10.9.0.1")), Some(RouteVia::Red));
    assert_eq!(r.lookup(ip("10.200.0.1")), Some(RouteVia::Black));
    assert_eq!(r.refused(Refusal::ReachesRed), 4);
}

#[test]
fn the_learned_table_is_bounded_and_withdrawals_free_it() {
    let mut r = Routes::new(&policy(false)).unwrap();
    for i in 0..4u8 {
        assert_eq!(r.add(p(&format!("1.0.{i}.0/24"))), Ok(Learned::Added));
    }
    assert_eq!(r.add(p("1.0.9.0/24")), Err(Refusal::TableFull));
    assert_eq!(r.refused(Refusal::TableFull), 1);
    assert_eq!(r.remove(p("1.0.0.0/24")), Learned::Withdrawn);
    assert_eq!(r.lookup(ip("1.0.0.1")), None);
    assert_eq!(r.remove(p("1.0.0.0/24")), Learned::Unknown);
    assert_eq!(r.add(p("1.0.9.0/24")), Ok(Learned::Added));
    // Withdrawing a static route's prefix changes nothing.
    assert_eq!(r.remove(p("192.0.2.0/24")), Learned::Unknown);
    assert_eq!(r.lookup(ip("192.0.2.1")), Some(RouteVia::Black));
    assert_eq!(r.clear_learned(), 4);
    assert_eq!(r.learned_len(), 0);
    let rep = r.report();
    assert!(
        rep.starts_with("routes static=3 learned=0 max=4 added=5 withdrawn=5 "),
        "{rep}"
    );
    assert!(rep.contains(" refused_table_full=1"), "{rep}");
}

#[test]
fn a_policy_with_static_routes_only_learns_nothing() {
    let mut r =
        Routes::new(&Policy::new("r", "1").with_route(p("0.0.0.0/0"), RouteVia::Black)).unwrap();
    assert_eq!(r.add(p("1.0.0.0/24")), Err(Refusal::NotLearning));
    assert_eq!(r.lookup(ip("1.0.0.1")), Some(RouteVia::Black));
}

fn arb_prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![
        // Near the ranges and red's networks: 1/8, 10/8, 172.16/12.
        (
            prop::sample::select(vec![1u32, 10, 172]),
            any::<u32>(),
            0u8..=32
        )
            .prop_map(|(top, a, l)| {
                let a = (top << 24) | (a & 0x00ff_ffff);
                let m = if l == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(l))
                };
                Prefix::new(IpAddr::V4((a & m).into()), l)
            }),
        (any::<u32>(), 0u8..=32).prop_map(|(a, l)| {
            let m = if l == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(l))
            };
            Prefix::new(IpAddr::V4((a & m).into()), l)
        }),
        (any::<u128>(), 0u8..=128).prop_map(|(a, l)| {
            let m = if l == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(l))
            };
            Prefix::new(IpAddr::V6((a & m).into()), l)
        }),
    ]
}

proptest! {
    /// Whatever black reports, in any order: red's destinations stay red's,
    /// every learned route lies in an allowed range (martians left out),
    /// the table never exceeds its bound, and the lookup equals a naive
    /// longest-prefix match over what is held.
    #[test]
    fn black_never_routes_where_the_profile_forbids(
        ops in proptest::collection::vec((any::<bool>(), arb_prefix()), 0..64),
        probes in proptest::collection::vec(any::<u32>(), 0..32),
    ) {
        let pol = policy(false);
        let mut r = Routes::new(&pol).unwrap();
        let mut held: Vec<Prefix> = Vec::new();
        for (add, pre) in ops {
            if add {
                if r.add(pre) == Ok(Learned::Added) {
                    held.push(pre);
                }
            } else if r.remove(pre) == Learned::Withdrawn {
                held.retain(|h| *h != pre);
            }
            prop_assert!(r.learned_len() <= 4);
            prop_assert_eq!(r.learned_len(), held.len());
        }
        let learn = pol.learn.as_ref().unwrap();
        for h in &held {
            prop_assert!(learn.allow.iter().any(|a| a.admits(h)));
            prop_assert!(!policy_blob::special::is_martian(h));
        }
        let near = probes.iter().map(|v| IpAddr::V4(((1u32 << 24) | (v & 0x00ff_ffff)).into()));
        let tens = probes.iter().map(|v| IpAddr::V4(((10u32 << 24) | (v & 0x00ff_ffff)).into()));
        for a in probes
            .iter()
            .map(|v| IpAddr::V4((*v).into()))
            .chain(near)
            .chain(tens)
            .chain([ip("10.1.0.1"), ip("10.9.255.255")])
        {
            let naive = pol
                .routes
                .iter()
                .map(|s| (s.prefix, s.via, 0))
                .chain(held.iter().map(|h| (*h, RouteVia::Black, 1)))
                .filter(|(pre, _, _)| pre.contains(a))
                .max_by_key(|(pre, _, learned)| (pre.len, 1 - learned))
                .map(|(_, v, _)| v);
            prop_assert_eq!(r.lookup(a), naive);
            if p("10.1.0.0/24").contains(a) || p("10.9.0.0/16").contains(a) {
                prop_assert_eq!(r.lookup(a), Some(RouteVia::Red));
            }
        }
    }
}
