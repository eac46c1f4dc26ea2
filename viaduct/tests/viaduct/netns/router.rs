//! The router role against FRR and a BGP speaker we did not write, in
//! network namespaces (needs `frr` and `gobgpd`; skips loudly without):
//!
//! ```text
//! netns lan:  vred (TUN, 10.1.0.1/24) ══ Viaduct (router) ══ netns blk: vblk (TUN)
//!   blk: FRR zebra (dplane_fpm_nl → the Viaduct's FPM socket 127.0.0.1:2620
//!        in blk) and bgpd AS 65001, wan 172.31.50.1/24
//!   ── veth ── netns peer: wan 172.31.50.2/24, gobgpd AS 65002;
//!        "internet hosts" 1.1.1.1, 1.1.2.1, 1.1.3.1, 2.2.2.2 on lo
//! ```
//!
//! The profile's ranges allow 1.1.0.0/16 le 24. gobgpd announces 1.1.1.0/24
//! (allowed), 1.1.2.0/25 (too specific), 2.2.2.0/24 (outside) and
//! 10.1.0.128/25 (into red's LAN); FRR, told to accept everything (`no bgp
//! ebgp-requires-policy`), installs all four in black's kernel and streams
//! them to the Viaduct, which admits only 1.1.1.0/24. Then: traffic to the
//! admitted prefix flows, to the rest it is dropped and counted; a
//! withdrawal takes effect; and, with zebra gone, a forged FPM stream
//! from black cannot add a forbidden route, and a malformed one ends its
//! connection with every learned route withdrawn.

use super::*;

fn have(tool: &str) -> bool {
    Path::new(tool).exists()
        || std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false)
}

fn pre(s: &str) -> Prefix {
    let (a, l) = s.split_once('/').unwrap();
    Prefix::new(a.parse().unwrap(), l.parse().unwrap())
}

/// `ping` from `ns` to `dst`: whether any answer came.
fn pings(ns: &str, dst: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "busybox", "ping", "-c", "2", "-W", "1", dst,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The Viaduct's counters (SIGUSR1), as the last dump in its log.
fn dump(viaduct: u32, log: &Path) -> String {
    let before = std::fs::read_to_string(log).unwrap_or_default().len();
    let pid = Pid::from_raw(viaduct as i32).expect("a process id");
    let _ = kill_process(pid, Signal::USR1);
    let t = Instant::now();
    loop {
        let s = std::fs::read_to_string(log).unwrap_or_default();
        let new = s.get(before..).unwrap_or_default();
        if new.contains("routes static=") && new.contains("in drop total=") {
            return new.to_owned();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no counters in the Viaduct's log:\n{s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `f(counters)` holds (dumping every half second), up to
/// `secs`; returns the last counters.
fn wait_counters(
    viaduct: u32,
    log: &Path,
    secs: u64,
    what: &str,
    f: impl Fn(&str) -> bool,
) -> String {
    let t = Instant::now();
    loop {
        let c = dump(viaduct, log);
        if f(&c) {
            return c;
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what} within {secs} s; counters:\n{c}\nlog:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn routes_counter(c: &str, key: &str) -> u64 {
    counter(c, "routes static=", key)
}

/// One FPM frame holding an RTM_NEWROUTE (24) or RTM_DELROUTE (25) for
/// an IPv4 prefix in the main table, as zebra writes it.
fn fpm_route(add: bool, net: [u8; 4], len: u8) -> Vec<u8> {
    let mut nl = Vec::new();
    let body_len = 16 + 12 + 8; // header, rtmsg, RTA_DST
    nl.extend((body_len as u32).to_le_bytes());
    nl.extend((if add { 24u16 } else { 25 }).to_le_bytes());
    nl.extend(0x0501u16.to_le_bytes());
    nl.extend([0u8; 8]);
    nl.extend([2, len, 0, 0, 254, 186, 0, 1]);
    nl.extend([0u8; 4]);
    nl.extend(8u16.to_le_bytes());
    nl.extend(1u16.to_le_bytes());
    nl.extend(net);
    let mut f = vec![1u8, 1];
    f.extend(((4 + nl.len()) as u16).to_be_bytes());
    f.extend(nl);
    f
}

/// A router lab in namespaces (see the module's picture), the Viaduct on
/// `policy`, black's bgpd configured with `bgpd_in` after its neighbour;
/// `None` (after saying why, loudly) when a tool is missing.
fn setup(policy: &Policy, bgpd_in: &str) -> Option<RouterLab> {
    if skipped() {
        return None;
    }
    for (tool, pkg) in [
        ("/usr/lib/frr/zebra", "frr"),
        ("/usr/lib/frr/bgpd", "frr"),
        ("gobgpd", "gobgpd"),
        ("gobgp", "gobgpd"),
    ] {
        if !have(tool) {
            eprintln!("SKIP (LOUD): {tool} not found: install package {pkg}; the router's FRR test did not run");
            return None;
        }
    }
    let tag = format!(
        "{}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(format!("viaduct-router-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut g = Guard {
        netns: vec![],
        children: vec![],
    };
    let lan = g.netns(format!("vr{tag}lan"));
    let blk = g.netns(format!("vr{tag}blk"));
    let peer = g.netns(format!("vr{tag}peer"));
    for ns in [&lan, &blk, &peer] {
        ns_sysctl(ns, "net/ipv6/conf/all/disable_ipv6", "1");
        ns_sysctl(ns, "net/ipv6/conf/default/disable_ipv6", "1");
    }
    ip_ns(
        &blk,
        &format!("link add wan type veth peer name wan netns {peer}"),
    );
    ip_ns(&blk, "addr add 172.31.50.1/24 dev wan");
    ip_ns(&blk, "link set wan up");
    ip_ns(&peer, "addr add 172.31.50.2/24 dev wan");
    ip_ns(&peer, "link set wan up");
    for host in ["1.1.1.1", "1.1.2.1", "1.1.3.1", "2.2.2.2"] {
        ip_ns(&peer, &format!("addr add {host}/32 dev lo"));
    }
    ip_ns(&peer, "route add 10.1.0.0/24 via 172.31.50.1");
    ns_sysctl(&blk, "net/ipv4/conf/all/rp_filter", "0");

    let pol = write_policy(&dir, "router.pol", policy);
    let log = dir.join("viaduct.log");
    let fpm_ns = format!("/run/netns/{blk}");
    g.children.push(spawn_viaduct(
        &pol,
        &lan,
        &blk,
        &log,
        &["--fpm-listen", "127.0.0.1:2620", "--fpm-netns", &fpm_ns],
    ));
    wait_link(&lan, "vred");
    wait_link(&blk, "vblk");
    ip_ns(&lan, "addr add 10.1.0.1/24 dev vred");
    ip_ns(&lan, "link set vred up");
    ip_ns(&lan, "route add default dev vred");
    ip_ns(&blk, "link set vblk up");
    ip_ns(&blk, "route add 10.1.0.0/24 dev vblk");

    // FRR in black: zebra streams its table to the Viaduct; bgpd peers
    // with gobgpd and accepts whatever it is sent.
    let run = dir.join("frr");
    std::fs::create_dir_all(&run).unwrap();
    sh(&["chown", "frr:frr", run.to_str().unwrap()]);
    std::fs::write(
        dir.join("zebra.conf"),
        "hostname black\nfpm address 127.0.0.1 port 2620\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("bgpd.conf"),
        format!("hostname black\nrouter bgp 65001\n bgp router-id 172.31.50.1\n no bgp ebgp-requires-policy\n no bgp network import-check\n neighbor 172.31.50.2 remote-as 65002\n neighbor 172.31.50.2 timers connect 1\n{bgpd_in}"),
    )
    .unwrap();
    for f in ["zebra.conf", "bgpd.conf"] {
        sh(&["chmod", "644", dir.join(f).to_str().unwrap()]);
    }
    let daemon = |name: &str, extra: &[&str]| -> Child {
        Command::new("ip")
            .args(["netns", "exec", &blk])
            .arg(format!("/usr/lib/frr/{name}"))
            .args(["-u", "frr", "-g", "frr", "-f"])
            .arg(dir.join(format!("{name}.conf")))
            .arg("-i")
            .arg(run.join(format!("{name}.pid")))
            .arg("-z")
            .arg(run.join("zserv.api"))
            .arg("--vty_socket")
            .arg(&run)
            .args(["-A", "127.0.0.1"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join(format!("{name}.out"))).unwrap())
            .stderr(File::create(dir.join(format!("{name}.err"))).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let zebra = daemon("zebra", &["-M", "dplane_fpm_nl"]);
    g.children.push(zebra);
    std::thread::sleep(Duration::from_millis(500));
    g.children.push(daemon("bgpd", &[]));

    // gobgpd in the peer namespace.
    std::fs::write(
        dir.join("gobgpd.toml"),
        "[global.config]\n  as = 65002\n  router-id = \"172.31.50.2\"\n  port = 179\n\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"172.31.50.1\"\n    peer-as = 65001\n",
    )
    .unwrap();
    g.children.push(
        Command::new("ip")
            .args(["netns", "exec", &peer, "gobgpd", "-t", "toml", "-f"])
            .arg(dir.join("gobgpd.toml"))
            .args(["--api-hosts", "127.0.0.1:50051"])
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("gobgpd.out")).unwrap())
            .stderr(File::create(dir.join("gobgpd.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    Some(RouterLab {
        dir,
        g,
        lan,
        blk,
        peer,
        log,
        run,
    })
}

/// What [`setup`] made.
struct RouterLab {
    dir: PathBuf,
    g: Guard,
    lan: String,
    blk: String,
    peer: String,
    log: PathBuf,
    run: PathBuf,
}

/// `gobgp` in the peer namespace (retried while gobgpd starts).
fn gobgp(peer: &str, args: &str) {
    let t = Instant::now();
    loop {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                peer,
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
                "50051",
            ])
            .args(args.split_whitespace())
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "gobgp {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The destinations of the BGP routes in `ns`'s kernel table (FRR
/// installed them), sorted, each as a prefix (a host route as `/32`).
fn bgp_routes(ns: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-n", ns, "route", "show", "proto", "bgp"])
        .output()
        .unwrap();
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|d| {
            if d.contains('/') {
                d.to_owned()
            } else {
                format!("{d}/32")
            }
        })
        .collect();
    got.sort();
    got
}

#[test]
fn router_admits_only_allowed_routes_from_frr_and_a_forged_stream_changes_nothing() {
    // The Viaduct: red's LAN routed to red, learned routes in 1.1.0.0/16
    // down to /24, at most 16.
    let policy = Policy::new("router", "1")
        .with_spd("all", Selector::any_v4(), SpdAction::Bypass)
        .with_route(pre("10.1.0.0/24"), RouteVia::Red)
        .with_learn(LearnPolicy {
            allow: vec![PrefixRange {
                prefix: pre("1.1.0.0/16"),
                min_len: 16,
                max_len: 24,
            }],
            max_routes: 16,
            martians: false,
        });
    let Some(RouterLab {
        dir,
        mut g,
        lan,
        blk,
        peer,
        log,
        run,
    }) = setup(&policy, "")
    else {
        return;
    };
    let gobgp = |args: &str| gobgp(&peer, args);
    for p in ["1.1.1.0/24", "1.1.2.0/25", "2.2.2.0/24", "10.1.0.128/25"] {
        gobgp(&format!("global rib add {p} nexthop 172.31.50.2 -a ipv4"));
    }

    // FRR installs all four in black's kernel (it was told to accept
    // everything) ...
    let t = Instant::now();
    loop {
        let table = bgp_routes(&blk);
        if ["1.1.1.0/24", "1.1.2.0/25", "2.2.2.0/24", "10.1.0.128/25"]
            .iter()
            .all(|p| table.iter().any(|r| r == p))
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "FRR did not install the four routes in black within 120 s:\n{table:?}\nbgpd: {}",
            std::fs::read_to_string(dir.join("bgpd.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // ... and the Viaduct admits one: the rest are refused as outside the
    // ranges (1.1.2.0/25 too specific, 2.2.2.0/24, 10.1.0.128/25; black's own kernel takes it, the
    // Viaduct does not).
    let viaduct = g.children[0].id();
    let c = wait_counters(viaduct, &log, 30, "one learned route", |c| {
        routes_counter(c, "learned") == 1 && routes_counter(c, "refused_not_allowed") >= 3
    });
    assert_eq!(routes_counter(&c, "refused_martian"), 0, "{c}");

    // Traffic: to the admitted prefix it flows; to the others, though
    // black's kernel routes them, the Viaduct drops it, counted.
    if !pings(&lan, "1.1.1.1") {
        let routes = Command::new("ip")
            .args(["-n", &blk, "route"])
            .output()
            .unwrap();
        panic!(
            "no answer from 1.1.1.1 through the admitted 1.1.1.0/24; black's routes:\n{}\ncounters:\n{}",
            String::from_utf8_lossy(&routes.stdout),
            dump(viaduct, &log)
        );
    }
    let before = counter(&dump(viaduct, &log), "out drop total=", "total");
    let dropped = |c: &str| {
        viaduct::pump::counter_values(c, "out drop no_route=", "no_route")
            .last()
            .unwrap_or(0)
    };
    let nr0 = dropped(&dump(viaduct, &log));
    for dst in ["1.1.2.1", "2.2.2.2"] {
        assert!(!pings(&lan, dst), "{dst} answered through a refused route");
    }
    let c = dump(viaduct, &log);
    assert!(
        dropped(&c) >= nr0 + 4,
        "no_route drops {nr0} → {}:\n{c}",
        dropped(&c)
    );
    assert!(counter(&c, "out drop total=", "total") >= before + 4);

    // A withdrawal takes effect.
    gobgp("global rib del 1.1.1.0/24 -a ipv4");
    wait_counters(viaduct, &log, 30, "the withdrawal", |c| {
        routes_counter(c, "learned") == 0 && routes_counter(c, "withdrawn") >= 1
    });
    assert!(
        !pings(&lan, "1.1.1.1"),
        "1.1.1.1 answered after the withdrawal"
    );
    gobgp("global rib add 1.1.1.0/24 nexthop 172.31.50.2 -a ipv4");
    wait_counters(viaduct, &log, 30, "the route again", |c| {
        routes_counter(c, "learned") == 1
    });
    assert!(pings(&lan, "1.1.1.1"), "ping after the route came back");

    // Black compromised: zebra gone (its connection ends, every learned
    // route is withdrawn), a forged stream in its place.
    let _ = g.children[1].kill();
    let _ = g.children[1].wait();
    wait_counters(viaduct, &log, 30, "the routes withdrawn with zebra", |c| {
        routes_counter(c, "learned") == 0
    });
    let refused0 = routes_counter(&dump(viaduct, &log), "refused_not_allowed");
    let forged = in_netns(&blk, move || {
        let mut s = TcpStream::connect("127.0.0.1:2620").expect("the FPM socket in black");
        // Forbidden: outside the ranges, and into red's LAN; allowed:
        // 1.1.3.0/24.
        s.write_all(&fpm_route(true, [2, 2, 2, 0], 24)).unwrap();
        s.write_all(&fpm_route(true, [10, 1, 0, 0], 25)).unwrap();
        s.write_all(&fpm_route(true, [1, 1, 3, 0], 24)).unwrap();
        s
    })
    .join()
    .unwrap();
    let c = wait_counters(viaduct, &log, 20, "the forged stream read", |c| {
        routes_counter(c, "learned") == 1
            && routes_counter(c, "refused_not_allowed") >= refused0 + 2
    });
    assert_eq!(routes_counter(&c, "learned"), 1, "{c}");
    // Black's kernel routes both (black does as it likes with its own
    // table): only the Viaduct's admission stands between red and 2.2.2.2.
    ip_ns(&blk, "route replace 1.1.3.0/24 via 172.31.50.2");
    ip_ns(&blk, "route replace 2.2.2.0/24 via 172.31.50.2");
    assert!(
        pings(&lan, "1.1.3.1"),
        "the allowed forged route is a route"
    );
    assert!(
        !pings(&lan, "2.2.2.2"),
        "a forged route outside the ranges was used"
    );
    // A malformed frame (version 2): the connection is refused and what it
    // taught is withdrawn.
    let mut s = forged;
    let mut bad = fpm_route(true, [1, 1, 4, 0], 24);
    bad[0] = 2;
    in_netns(&blk, move || {
        let _ = s.write_all(&bad);
        std::thread::sleep(Duration::from_millis(300));
        s
    })
    .join()
    .unwrap();
    wait_counters(viaduct, &log, 20, "the malformed stream refused", |c| {
        routes_counter(c, "learned") == 0
    });
    assert!(
        !pings(&lan, "1.1.3.1"),
        "a route of a refused stream stayed"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("viaduct: fpm: connection ended (refused: FPM frame 3"),
        "{text}"
    );
    assert!(
        text.contains("route 2.2.2.0/24 (protocol 186) refused: not_allowed"),
        "{text}"
    );
    // FRR's own processes in black: stopped by the guard with the rest.
    if let Ok(pid) = std::fs::read_to_string(run.join("bgpd.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same ranges on both sides: black's bgpd filters its neighbour with
/// the prefix lists `appliance policy export --format frr` makes from the
/// policy, and the Viaduct admits by the policy. gobgpd announces 26 routes
/// inside, around and outside the ranges (too short, too long, martian,
/// into red's LAN, elsewhere): FRR installs exactly the expected ones, and
/// the Viaduct learns exactly as many and refuses none of what FRR sends.
#[test]
fn frrs_prefix_lists_from_the_policy_accept_what_the_viaduct_admits() {
    let policy = Policy::new("router", "1")
        .with_spd("all", Selector::any_v4(), SpdAction::Bypass)
        .with_route(pre("10.1.0.0/24"), RouteVia::Red)
        .with_learn(LearnPolicy {
            allow: vec![
                PrefixRange {
                    prefix: pre("1.1.0.0/16"),
                    min_len: 20,
                    max_len: 24,
                },
                PrefixRange {
                    prefix: pre("2.0.0.0/8"),
                    min_len: 8,
                    max_len: 16,
                },
                PrefixRange {
                    prefix: pre("172.16.0.0/12"),
                    min_len: 12,
                    max_len: 24,
                },
            ],
            max_routes: 1000,
            martians: false,
        });
    let lists = policy::frr::export(&policy);
    let bgpd_in = format!(" neighbor 172.31.50.2 prefix-list viaduct-learn in\n!\n{lists}");
    let Some(RouterLab {
        dir,
        g,
        blk,
        peer,
        log,
        ..
    }) = setup(&policy, &bgpd_in)
    else {
        return;
    };
    let mut announced: Vec<String> = Vec::new();
    for i in 0..8 {
        announced.push(format!("1.1.{}.0/24", i * 7));
    }
    announced.extend(
        [
            "1.1.16.0/20",
            "1.1.0.0/16",
            "1.1.5.0/25",
            "1.1.6.128/25",
            "2.0.0.0/8",
            "2.7.0.0/16",
            "2.9.0.0/16",
            "2.3.4.0/24",
            "2.128.0.0/9",
            "172.16.5.0/24",
            "172.20.0.0/16",
            "10.1.0.128/25",
            "8.8.8.0/24",
            "1.2.0.0/24",
            "3.0.0.0/8",
            "2.5.0.0/17",
            "1.1.200.0/23",
            "1.1.44.0/22",
        ]
        .map(str::to_owned),
    );
    let expected: Vec<&String> = announced
        .iter()
        .filter(|a| {
            let p = pre(a);
            policy
                .learn
                .as_ref()
                .unwrap()
                .allow
                .iter()
                .any(|r| r.admits(&p))
                && !policy_blob::special::is_martian(&p)
        })
        .collect();
    assert_eq!(expected.len(), 15, "{expected:?}");
    for p in &announced {
        gobgp(
            &peer,
            &format!("global rib add {p} nexthop 172.31.50.2 -a ipv4"),
        );
    }
    // FRR's accepted set, from black's kernel: exactly the expected ones.
    let t = Instant::now();
    let installed = loop {
        let got = bgp_routes(&blk);
        if got.len() >= expected.len() || t.elapsed() > Duration::from_secs(120) {
            // A moment more for stragglers, then the final table.
            std::thread::sleep(Duration::from_secs(2));
            break bgp_routes(&blk);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(
        installed,
        want,
        "FRR's accepted set (bgpd: {})",
        std::fs::read_to_string(dir.join("bgpd.err")).unwrap_or_default()
    );
    // The Viaduct: the same number learned, no BGP route FRR sent refused
    // (what it refuses are black's own connected and kernel routes, which
    // zebra reports too: protocols 2 and 3, never BGP's 186).
    let viaduct = g.children[0].id();
    let c = wait_counters(viaduct, &log, 30, "the Viaduct learning FRR's set", |c| {
        routes_counter(c, "learned") == want.len() as u64
    });
    assert_eq!(routes_counter(&c, "added"), want.len() as u64, "{c}");
    let text = std::fs::read_to_string(&log).unwrap();
    let refused: Vec<&str> = text.lines().filter(|l| l.contains(") refused: ")).collect();
    assert!(
        refused.iter().all(|l| !l.contains("(protocol 186)")),
        "a BGP route FRR accepted was refused by the Viaduct:\n{}",
        refused.join("\n")
    );
    assert_eq!(
        refused.len() as u64,
        [
            "refused_malformed",
            "refused_not_allowed",
            "refused_martian",
            "refused_reaches_red",
            "refused_table_full",
        ]
        .iter()
        .map(|k| routes_counter(&c, k))
        .sum::<u64>(),
        "every refusal logged: {c}\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
