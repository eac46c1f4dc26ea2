//! The checks of a router lab (`profiles/lab/router`: both gateways the
//! shipped router profile, forwarding in clear by their static routes),
//! after the common ones (ready, measured, enrolled, attested):
//!
//! 1. each LAN host fetches a file from the internet host (the lab router,
//!    routed out through black), SHA-256 equal, and pings it;
//! 2. the internet host reaches each LAN host (routed in to red);
//! 3. LAN A and LAN B reach each other through both gateways;
//! 4. a destination no route sends to black (192.0.2.1, which the lab router
//!    holds and black's own default route would reach) is not reached: the
//!    Viaduct drops it as `no_route`, counted, and it is never on the wire;
//! 5. the shipped profile's ACLs: a LAN host sending with a source outside
//!    its LAN is dropped (`spoofed-out`), never on the wire; the internet
//!    host sending with a source inside a LAN is dropped (`spoofed-in`); a
//!    LAN host's service on port 445 is not reached from the internet
//!    (`legacy-tcp-in`), though it answers on the LAN host itself; each
//!    counted by its rule;
//!
//! and, when the gateways learn routes (`[viaduct.learned_routes]`, FRR in
//! black: `profiles/lab/router/bgp.toml`), with gobgpd (AS 65002) on the lab
//! router announcing [`ANNOUNCED`] to both gateways' FRR (AS 65001), which
//! installs all three in black:
//!
//! 6. each Viaduct learns the one route its ranges allow and refuses the
//!    others; each LAN reaches the allowed prefix; the others are dropped as
//!    `no_route` and never on the wire;
//! 7. a withdrawal from gobgpd takes effect in the Viaduct (LAN A no longer
//!    reaches the prefix), and the route comes back when announced again.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::firewall::{
    busybox_at, counter, filter_packets, ping, rule_lines_whole, viaduct_counters, web_hosts, wget,
    FETCH_BYTES,
};
use super::{capture_now, file_sha256, parse_capture, Report, Spawned};
use crate::host::{self, ip, Error};
use crate::lab::{Gateway, Lab};

/// An address the lab router holds but no lab route sends to black.
pub const UNROUTED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn no_route_drops(lab: &Lab, g: &Gateway) -> Result<u64, Error> {
    Ok(counter(&viaduct_counters(lab, g)?, "out drop no_route=", "no_route").unwrap_or(0))
}

/// IPv4 packets to `dst` in the capture.
fn on_the_wire(cap: &crate::pcap::Capture<'_>, dst: Ipv4Addr) -> usize {
    cap.frames
        .iter()
        .filter(|f| f.len() >= 34 && f[12..14] == [0x08, 0x00] && f[30..34] == dst.octets())
        .count()
}

/// IPv4 packets from `src` in the capture.
fn from_on_the_wire(cap: &crate::pcap::Capture<'_>, src: Ipv4Addr) -> usize {
    cap.frames
        .iter()
        .filter(|f| f.len() >= 34 && f[12..14] == [0x08, 0x00] && f[26..30] == src.octets())
        .count()
}

/// A source outside every lab LAN, for LAN hosts to forge.
pub const FORGED_OUT: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);
/// A port the shipped profile's ACLs close inbound (`legacy-tcp-in`).
pub const CLOSED_PORT: u16 = 445;

/// An address in `g`'s LAN that neither its host nor red holds, for the
/// internet host to forge.
fn forged_in(g: &Gateway) -> Ipv4Addr {
    let [a, b, c, _] = g.host.octets();
    let mut last = 77;
    while Ipv4Addr::new(a, b, c, last) == g.host || Ipv4Addr::new(a, b, c, last) == g.red.0 {
        last += 1;
    }
    Ipv4Addr::new(a, b, c, last)
}

/// `ping` from `cmd`'s namespace with source address `src`.
fn ping_from(cmd: &mut std::process::Command, src: Ipv4Addr, to: Ipv4Addr) -> Result<bool, Error> {
    let out = host::output(cmd.args([
        "ping",
        "-c",
        "3",
        "-i",
        "0.3",
        "-W",
        "2",
        "-I",
        &src.to_string(),
        &to.to_string(),
    ]))?;
    Ok(out.status.success())
}

/// Packets the filter rule `name` matched in `dir` on `g`, read from a dump
/// that has its lines whole (the relay may cut one, the console mangle
/// one: asked for again, five times at most), and, when `at_least` is
/// given, asked for again until it is reached.
fn rule_packets(
    lab: &Lab,
    g: &Gateway,
    dir: &str,
    name: &str,
    at_least: Option<u64>,
) -> Result<u64, Error> {
    let mut seen = None;
    for _ in 0..5 {
        let lines = viaduct_counters(lab, g)?;
        if rule_lines_whole(&lines, dir, name) {
            let n = filter_packets(&lines, dir, Some(name));
            seen = Some(n);
            if at_least.is_none_or(|m| n >= m) {
                return Ok(n);
            }
        }
        host::sleep(Duration::from_secs(1))?;
    }
    seen.ok_or_else(|| {
        Error::State(format!(
            "{}: `{dir} filter rule=… name={name}` and the lines around it not whole in five counter dumps",
            g.name
        ))
    })
}

/// The shipped router profile's ACLs on each gateway (item 5): forged
/// sources both ways and a closed port, each dropped by its rule.
fn acl_checks(
    lab: &Lab,
    report: &mut Report,
    log: &mut dyn FnMut(&str),
    www: &std::path::Path,
) -> Result<(), Error> {
    let inet = lab.inet_ns();
    for g in &lab.gateways {
        let letter = g.letter.to_ascii_uppercase();
        let name = format!(
            "LAN {letter} → internet host from {FORGED_OUT} (not LAN {letter}'s): dropped by the ACL spoofed-out, counted, not on the wire"
        );
        ip(&[
            "-n",
            &lab.lan_ns(g),
            "addr",
            "add",
            &format!("{FORGED_OUT}/32"),
            "dev",
            "lo",
        ])?;
        let internet = g.wan_gateway.unwrap_or(Ipv4Addr::UNSPECIFIED);
        report.check(log, &name, || {
            let before = rule_packets(lab, g, "out", "spoofed-out", None)?;
            let answered = ping_from(&mut busybox_at(lab, Some(g)), FORGED_OUT, internet)?;
            let after = rule_packets(lab, g, "out", "spoofed-out", Some(before + 3))?;
            host::sleep(Duration::from_millis(300))?;
            let seen = from_on_the_wire(&parse_capture(&capture_now(lab)?)?, FORGED_OUT);
            Ok((
                !answered && after >= before + 3 && seen == 0,
                format!(
                    "{}; out spoofed-out {before} → {after}; {seen} packets from {FORGED_OUT} on the wire",
                    if answered { "ANSWERED" } else { "no answer" }
                ),
            ))
        })?;
        ip(&[
            "-n",
            &lab.lan_ns(g),
            "addr",
            "del",
            &format!("{FORGED_OUT}/32"),
            "dev",
            "lo",
        ])?;

        let forged = forged_in(g);
        let name = format!(
            "internet host → LAN {letter} from {forged} (a LAN {letter} source): dropped by the ACL spoofed-in, counted"
        );
        ip(&[
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{forged}/32"),
            "dev",
            "lo",
        ])?;
        report.check(log, &name, || {
            let before = rule_packets(lab, g, "in", "spoofed-in", None)?;
            let answered = ping_from(&mut busybox_at(lab, None), forged, g.host)?;
            let after = rule_packets(lab, g, "in", "spoofed-in", Some(before + 3))?;
            Ok((
                !answered && after >= before + 3,
                format!(
                    "{}; in spoofed-in {before} → {after}",
                    if answered { "ANSWERED" } else { "no answer" }
                ),
            ))
        })?;
        ip(&[
            "-n",
            &inet,
            "addr",
            "del",
            &format!("{forged}/32"),
            "dev",
            "lo",
        ])?;

        let name = format!(
            "internet host → LAN {letter} port {CLOSED_PORT}: dropped by the ACL legacy-tcp-in, counted; served on the LAN host itself"
        );
        let _server = Spawned::new(
            busybox_at(lab, Some(g))
                .args(["httpd", "-f", "-p", &CLOSED_PORT.to_string(), "-h"])
                .arg(www)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
            "busybox httpd",
        )?;
        report.check(log, &name, || {
            let url = |a: Ipv4Addr| format!("http://{a}:{CLOSED_PORT}/ready");
            // The server is up: it answers on the LAN host itself.
            let t = Instant::now();
            let mut local = false;
            while !local && t.elapsed() < Duration::from_secs(10) {
                local = wget(&mut busybox_at(lab, Some(g)), &url(g.host), "/dev/null", 2)?;
                if !local {
                    host::sleep(Duration::from_millis(100))?;
                }
            }
            let before = rule_packets(lab, g, "in", "legacy-tcp-in", None)?;
            let remote = wget(&mut busybox_at(lab, None), &url(g.host), "/dev/null", 5)?;
            let after = rule_packets(lab, g, "in", "legacy-tcp-in", Some(before + 1))?;
            Ok((
                local && !remote && after > before,
                format!(
                    "on the LAN host: {}; from the internet host: {}; in legacy-tcp-in {before} → {after}",
                    if local { "served" } else { "NOT SERVED" },
                    if remote { "SERVED" } else { "not reached" }
                ),
            ))
        })?;
    }
    Ok(())
}

pub(super) fn checks(
    lab: &Lab,
    report: &mut Report,
    log: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let (a, b) = (&lab.gateways[0], &lab.gateways[1]);
    let inet = lab.inet_ns();
    ip(&[
        "-n",
        &inet,
        "addr",
        "add",
        &format!("{UNROUTED}/32"),
        "dev",
        "lo",
    ])?;
    let run = lab.run_dir();
    let web = web_hosts(lab, "router", 13)?;
    let (internet, want) = (web.internet, web.want.clone());
    let busybox_at = |g: Option<&Gateway>| busybox_at(lab, g);

    // 1. Out: web and ping from each LAN to the internet host.
    for g in [a, b] {
        let name = format!(
            "LAN {} → internet host: web and ping routed out, {} KiB, SHA-256 equal",
            g.letter.to_ascii_uppercase(),
            FETCH_BYTES / 1024
        );
        report.check(log, &name, || {
            let dest = run.join(format!("fetch-{}", g.name));
            let t = Instant::now();
            let ok = wget(
                &mut busybox_at(Some(g)),
                &format!("http://{internet}/data"),
                &dest.display().to_string(),
                60,
            )?;
            let secs = t.elapsed().as_secs_f64();
            let got = if ok {
                file_sha256(&dest)?
            } else {
                String::new()
            };
            let _ = std::fs::remove_file(&dest);
            let pinged = ping(&mut busybox_at(Some(g)), internet, 3)?;
            Ok((
                ok && got == want && pinged,
                format!(
                    "{}, {secs:.1} s; ping {}",
                    if ok {
                        format!("sha256 {}", &got[..16.min(got.len())])
                    } else {
                        "wget failed".into()
                    },
                    if pinged { "answered" } else { "UNANSWERED" }
                ),
            ))
        })?;
    }

    // 2. In: the internet host reaches each LAN (routed to red).
    for g in [a, b] {
        let name = format!(
            "internet host → LAN {}: ping and web routed in",
            g.letter.to_ascii_uppercase()
        );
        report.check(log, &name, || {
            let pinged = ping(&mut busybox_at(None), g.host, 3)?;
            let web = wget(
                &mut busybox_at(None),
                &format!("http://{}/ready", g.host),
                "/dev/null",
                10,
            )?;
            Ok((
                pinged && web,
                format!(
                    "ping {}, web {}",
                    if pinged { "answered" } else { "UNANSWERED" },
                    if web { "served" } else { "FAILED" }
                ),
            ))
        })?;
    }

    // 3. LAN to LAN through both gateways.
    report.check(
        log,
        "LAN A ↔ LAN B: ping both ways through both routers",
        || {
            let ab = ping(&mut busybox_at(Some(a)), b.host, 3)?;
            let ba = ping(&mut busybox_at(Some(b)), a.host, 3)?;
            Ok((
                ab && ba,
                format!(
                    "A → B {}, B → A {}",
                    if ab { "answered" } else { "UNANSWERED" },
                    if ba { "answered" } else { "UNANSWERED" }
                ),
            ))
        },
    )?;

    // 4. No route: dropped by the Viaduct, counted, never on the wire.
    for g in [a, b] {
        let name = format!(
            "LAN {} → {UNROUTED} (no route): dropped by the Viaduct, counted, not on the wire",
            g.letter.to_ascii_uppercase()
        );
        report.check(log, &name, || {
            let before = no_route_drops(lab, g)?;
            let answered = ping(&mut busybox_at(Some(g)), UNROUTED, 3)?;
            let after = no_route_drops(lab, g)?;
            host::sleep(Duration::from_millis(300))?;
            let bytes = capture_now(lab)?;
            let seen = on_the_wire(&parse_capture(&bytes)?, UNROUTED);
            Ok((
                !answered && after >= before + 3 && seen == 0,
                format!(
                    "{}; out drop no_route {before} → {after}; {seen} packets to {UNROUTED} on the wire",
                    if answered { "ANSWERED" } else { "no answer" }
                ),
            ))
        })?;
    }
    // 5. The shipped profile's ACLs.
    acl_checks(lab, report, log, &run.join("www"))?;

    // The speaker runs on until the figures are taken: they show the
    // learned route.
    let speaker = bgp_checks(lab, report, log)?;
    for g in [a, b] {
        if let Some(l) = viaduct_counters(lab, g)?
            .into_iter()
            .find(|l| l.starts_with("routes "))
        {
            report.figure(&format!("{} routes", g.name), l);
        }
    }
    drop((speaker, web));
    Ok(())
}

/// What the lab router's gobgpd announces: each prefix with an address the
/// lab router holds in it. The lab's ranges (`1.1.0.0/16 le 24`) admit the
/// first only: the second is too specific, the third outside.
pub const ANNOUNCED: [(&str, Ipv4Addr); 3] = [
    ("1.1.1.0/24", Ipv4Addr::new(1, 1, 1, 1)),
    ("1.1.2.0/25", Ipv4Addr::new(1, 1, 2, 1)),
    ("2.2.2.0/24", Ipv4Addr::new(2, 2, 2, 1)),
];
/// The AS of the lab router's gobgpd.
pub const LAB_AS: u32 = 65002;
/// The AS the lab gateways' FRR speaks (`profiles/lab/router/bgp.toml`).
pub const GATEWAY_AS: u32 = 65001;
/// gobgpd's API, on the internet namespace's loopback.
const GOBGP_API: [&str; 4] = ["-u", "127.0.0.1", "-p", "50051"];

/// Whether `ranges` admit `prefix` (an allowed range covers it and its
/// length is within the range's bounds).
fn admits(ranges: &profiles::model::LearnedRoutes, prefix: &str) -> bool {
    let Ok(p) = prefix.parse::<profiles::net::Prefix>() else {
        return false;
    };
    ranges
        .allow
        .iter()
        .any(|r| r.prefix.covers(&p) && (r.ge..=r.le).contains(&p.len()))
}

/// `gobgp` against the lab router's gobgpd (retried while it starts).
fn gobgp(lab: &Lab, args: &[&str]) -> Result<(), Error> {
    let t = Instant::now();
    loop {
        let out = host::output(
            host::in_netns(&lab.inet_ns(), "gobgp")
                .args(GOBGP_API)
                .args(args),
        )?;
        if out.status.success() {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(20) {
            return Err(Error::State(format!(
                "gobgp {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        host::sleep(Duration::from_millis(300))?;
    }
}

/// `learned=N` on `g`'s Viaduct `routes` line.
fn learned(lab: &Lab, g: &Gateway) -> Result<Option<u64>, Error> {
    Ok(counter(&viaduct_counters(lab, g)?, "routes ", "learned"))
}

/// Waits until every gateway's Viaduct holds `want` learned routes; the
/// seconds it took, or `None` after `limit`.
fn wait_learned(lab: &Lab, want: u64, limit: Duration) -> Result<Option<f64>, Error> {
    let t = Instant::now();
    loop {
        let mut all = true;
        for g in &lab.gateways {
            all &= learned(lab, g)? == Some(want);
        }
        if all {
            return Ok(Some(t.elapsed().as_secs_f64()));
        }
        if t.elapsed() > limit {
            return Ok(None);
        }
        host::sleep(Duration::from_secs(2))?;
    }
}

/// Checks 5 and 6 (see the module's text), when the gateways learn routes;
/// returns the running BGP speaker (stopped when dropped).
fn bgp_checks(
    lab: &Lab,
    report: &mut Report,
    log: &mut dyn FnMut(&str),
) -> Result<Option<Spawned>, Error> {
    let (a, b) = (&lab.gateways[0], &lab.gateways[1]);
    let learning: Vec<&Gateway> = lab.gateways.iter().filter(|g| g.learns.is_some()).collect();
    if learning.is_empty() {
        return Ok(None);
    }
    if learning.len() != lab.gateways.len() {
        return Err(Error::State(
            "viaduct.learned_routes: a router lab learns routes on both gateways or on neither"
                .into(),
        ));
    }
    for g in [a, b] {
        let ranges = g.learns.as_ref().expect("checked above");
        let got: Vec<bool> = ANNOUNCED.iter().map(|(p, _)| admits(ranges, p)).collect();
        if got != [true, false, false] {
            return Err(Error::State(format!(
                "{}: viaduct.learned_routes.allow: the router lab announces {}, {} and {} and expects the ranges to admit the first only (as 1.1.0.0/16 le 24 does)",
                g.profile.display(),
                ANNOUNCED[0].0,
                ANNOUNCED[1].0,
                ANNOUNCED[2].0
            )));
        }
    }
    for tool in ["gobgpd", "gobgp"] {
        if host::output(
            std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]),
        )
        .map(|o| !o.status.success())
        .unwrap_or(true)
        {
            return Err(Error::State(format!(
                "the router lab's BGP speaker needs `{tool}` on this host (Debian package gobgpd)"
            )));
        }
    }
    let inet = lab.inet_ns();
    let run = lab.run_dir();
    let router = a.wan_gateway.ok_or_else(|| {
        Error::State(format!(
            "{}: personalities.black.gateway: the router lab's BGP speaker is black's gateway",
            a.profile.display()
        ))
    })?;
    ip(&["-n", &inet, "link", "set", "lo", "up"])?;
    for (_, addr) in ANNOUNCED {
        ip(&[
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "lo",
        ])?;
    }
    let mut conf = format!(
        "[global.config]\n  as = {LAB_AS}\n  router-id = \"{router}\"\n  port = 179\n  local-address-list = [\"{router}\"]\n"
    );
    for g in [a, b] {
        conf.push_str(&format!(
            "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {GATEWAY_AS}\n",
            g.wan
        ));
    }
    let conf_path = run.join("gobgpd.toml");
    std::fs::write(&conf_path, conf).map_err(host::io("writing gobgpd.toml"))?;
    let out =
        std::fs::File::create(run.join("gobgpd.log")).map_err(host::io("creating gobgpd.log"))?;
    let err = out.try_clone().map_err(host::io("gobgpd.log"))?;
    let speaker = Spawned::new(
        host::in_netns(&inet, "gobgpd")
            .args(["-t", "toml", "-f"])
            .arg(&conf_path)
            .args(["--api-hosts", "127.0.0.1:50051"])
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err),
        "gobgpd",
    )?;
    let announce = |prefix: &str| -> Result<(), Error> {
        gobgp(
            lab,
            &[
                "global",
                "rib",
                "add",
                prefix,
                "nexthop",
                &router.to_string(),
                "-a",
                "ipv4",
            ],
        )
    };
    for (p, _) in ANNOUNCED {
        announce(p)?;
    }
    let busybox_at = |g: Option<&Gateway>| busybox_at(lab, g);

    // 5. Learned: the allowed route only.
    report.check(
        log,
        &format!(
            "BGP: each Viaduct learns {} from black's FRR and refuses {} and {}",
            ANNOUNCED[0].0, ANNOUNCED[1].0, ANNOUNCED[2].0
        ),
        || {
            let took = wait_learned(lab, 1, Duration::from_secs(240))?;
            let mut lines = Vec::new();
            let mut refused_ok = true;
            for g in [a, b] {
                let c = viaduct_counters(lab, g)?;
                refused_ok &= counter(&c, "routes ", "refused_not_allowed").unwrap_or(0) >= 2;
                if let Some(l) = c.into_iter().find(|l| l.starts_with("routes ")) {
                    lines.push(format!("{}: {l}", g.name));
                }
            }
            Ok((
                took.is_some() && refused_ok,
                format!(
                    "{}; {}",
                    took.map_or("not learned within 240 s".into(), |s| format!(
                        "learned after {s:.0} s"
                    )),
                    lines.join("; ")
                ),
            ))
        },
    )?;
    for g in [a, b] {
        let name = format!(
            "LAN {} → {} (learned, allowed): answered; {} and {} (learned by FRR, outside the ranges): dropped as no_route, not on the wire",
            g.letter.to_ascii_uppercase(),
            ANNOUNCED[0].1,
            ANNOUNCED[1].1,
            ANNOUNCED[2].1
        );
        report.check(log, &name, || {
            let allowed = ping(&mut busybox_at(Some(g)), ANNOUNCED[0].1, 3)?;
            let before = no_route_drops(lab, g)?;
            let mut answered = Vec::new();
            for (_, addr) in &ANNOUNCED[1..] {
                if ping(&mut busybox_at(Some(g)), *addr, 3)? {
                    answered.push(addr.to_string());
                }
            }
            let after = no_route_drops(lab, g)?;
            host::sleep(Duration::from_millis(300))?;
            let cap = capture_now(lab)?;
            let cap = parse_capture(&cap)?;
            let seen: usize = ANNOUNCED[1..].iter().map(|(_, d)| on_the_wire(&cap, *d)).sum();
            Ok((
                allowed && answered.is_empty() && after >= before + 6 && seen == 0,
                format!(
                    "{} {}; others {}; out drop no_route {before} → {after}; {seen} packets to them on the wire",
                    ANNOUNCED[0].1,
                    if allowed { "answered" } else { "UNANSWERED" },
                    if answered.is_empty() {
                        "unanswered".to_string()
                    } else {
                        format!("ANSWERED: {}", answered.join(", "))
                    }
                ),
            ))
        })?;
    }

    // 6. Withdrawn, then announced again.
    report.check(
        log,
        &format!(
            "BGP: {} withdrawn by gobgpd leaves both Viaducts and LAN A no longer reaches it; announced again, it does",
            ANNOUNCED[0].0
        ),
        || {
            gobgp(lab, &["global", "rib", "del", ANNOUNCED[0].0, "-a", "ipv4"])?;
            let gone = wait_learned(lab, 0, Duration::from_secs(120))?;
            let before = no_route_drops(lab, a)?;
            let during = ping(&mut busybox_at(Some(a)), ANNOUNCED[0].1, 2)?;
            let after = no_route_drops(lab, a)?;
            announce(ANNOUNCED[0].0)?;
            let back = wait_learned(lab, 1, Duration::from_secs(120))?;
            let again = back.is_some() && ping(&mut busybox_at(Some(a)), ANNOUNCED[0].1, 3)?;
            Ok((
                gone.is_some() && !during && after >= before + 2 && again,
                format!(
                    "withdrawn {}; ping {} (no_route {before} → {after}); announced again {}; ping {}",
                    gone.map_or("NOT within 120 s".into(), |s| format!("after {s:.0} s")),
                    if during { "ANSWERED" } else { "unanswered" },
                    back.map_or("NOT learned within 120 s".into(), |s| format!("learned after {s:.0} s")),
                    if again { "answered" } else { "UNANSWERED" }
                ),
            ))
        },
    )?;
    Ok(Some(speaker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_ranges_admit_the_first_announced_route_only() {
        let ranges = profiles::model::LearnedRoutes {
            allow: vec![profiles::model::PrefixRange {
                prefix: "1.1.0.0/16".parse().unwrap(),
                ge: 16,
                le: 24,
            }],
            max: 100,
            martians: false,
        };
        let got: Vec<bool> = ANNOUNCED.iter().map(|(p, _)| admits(&ranges, p)).collect();
        assert_eq!(got, [true, false, false]);
        // The addresses are inside their prefixes.
        for (p, a) in ANNOUNCED {
            let p: profiles::net::Prefix = p.parse().unwrap();
            assert!(p.contains(&std::net::IpAddr::V4(a)), "{p} {a}");
        }
        assert!(!admits(&ranges, "not a prefix"));
    }

    #[test]
    fn packets_to_an_address_are_counted_on_the_wire() {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        f.extend([
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 1, 0, 0, 10, 1, 0, 2, 192, 0, 2, 1,
        ]);
        let mut g = f.clone();
        g[33] = 9;
        let cap = crate::pcap::Capture {
            link_type: 1,
            frames: vec![&f, &g, &f[..20]],
            times: vec![0.0; 3],
        };
        assert_eq!(on_the_wire(&cap, UNROUTED), 1);
    }
}
