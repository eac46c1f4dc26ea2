//! The checks of a firewall lab (`profiles/lab/firewall`: both gateways the
//! shipped stateful firewall, forwarding in clear), after the common ones
//! (ready, measured, enrolled, attested):
//!
//! 1. each LAN host opens a web connection to the internet host (the lab
//!    router, `busybox httpd` on port 80) and fetches a file, SHA-256 equal;
//!    the answers came in by the `established` rule;
//! 2. a ping from each LAN host to the internet host is refused (no rule lets
//!    ICMP out), counted by the default;
//! 3. the internet host cannot open a connection in, to either LAN: web and
//!    ping time out, counted by the Viaduct's default, and the refused SYN
//!    is on the console (the profile logs what the default drops);
//! 4. LAN A → LAN B: gw-a lets the opening out (web), gw-b refuses it in;
//! 5. the capture of the internet: nothing left a LAN but what the firewall
//!    lets a LAN open (TCP 80/443, UDP 53).

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{capture_now, file_sha256, parse_capture, Report, Spawned};
use crate::host::{self, in_netns, io, Error};
use crate::lab::{Gateway, Lab};
use crate::wire;

/// What the shipped firewall lets a LAN open.
const TCP_OUT: [u16; 2] = [80, 443];
const UDP_OUT: [u16; 1] = [53];

/// Size of the web transfer.
pub(super) const FETCH_BYTES: usize = 1024 * 1024;

/// The Viaduct's counter lines after `counters` (text after `viaduct| `).
///
/// The serial console under TCG now and then doubles a character of what
/// it relays (`oout drop total=0`); a dump whose drop lines do not add up
/// to their totals, or that lacks a total, is asked for again (three
/// times at most), so that no check reads a mangled counter as zero.
pub(super) fn viaduct_counters(lab: &Lab, g: &Gateway) -> Result<Vec<String>, Error> {
    let mut last = String::new();
    for _ in 0..3 {
        let mut c = lab.console(g);
        c.poll();
        let from = c.len();
        c.send("counters")?;
        let mut complete = true;
        for dir in ["out", "in"] {
            let key = format!("viaduct| {dir} drop total=");
            if let Err(e) = c.wait_for(
                &format!("`{key}…` after `counters`"),
                from,
                Duration::from_secs(20),
                |l| l.contains(&key),
                |_| false,
            ) {
                if matches!(e, Error::Interrupted) {
                    return Err(e);
                }
                last = e.to_string();
                complete = false;
                break;
            }
        }
        if !complete {
            continue;
        }
        // The other thread's lines may follow a moment later.
        host::sleep(Duration::from_millis(300))?;
        c.poll();
        let lines: Vec<String> = c.lines()[from..]
            .iter()
            .filter_map(|l| l.split("viaduct| ").nth(1))
            .map(str::to_owned)
            .collect();
        if ["out", "in"]
            .iter()
            .all(|d| drops_add_up(&lines, d) && filter_whole(&lines, d))
        {
            return Ok(lines);
        }
        last = format!("a mangled or cut dump:\n{}", lines.join("\n"));
        // The init relays the Viaduct's lines at 20 a second (bursts of
        // 100), with its filter log and IDS alerts among them: a dump asked
        // for right after a burst of those loses lines. Let the relay's
        // budget refill before asking again.
        host::sleep(Duration::from_secs(3))?;
    }
    Err(Error::State(format!(
        "{}: no readable counters after three `counters`: {last}",
        g.name
    )))
}

/// Whether a dump with filter rules in `dir` also has their default's line
/// (`<dir> filter default packets=`): the Viaduct writes both, so one
/// without the other was cut by the relay.
fn filter_whole(lines: &[String], dir: &str) -> bool {
    let rules = format!("{dir} filter rule=");
    let default = format!("{dir} filter default ");
    !lines.iter().any(|l| l.starts_with(&rules)) || lines.iter().any(|l| l.starts_with(&default))
}

/// Whether the lines of filter rule `name` in `dir` are all in a dump
/// (the Viaduct writes every rule, numbered across both directions; a
/// profile rule's lines are consecutive): they are numbered without a gap,
/// and the numbers just before and after them are there too (or none
/// follows at all). A line the relay cut or the console mangled around
/// them leaves a gap; only the very last rule's line cut cannot be told
/// from none (the dump does not say how many rules there are).
pub(super) fn rule_lines_whole(lines: &[String], dir: &str, name: &str) -> bool {
    let numbered: Vec<(u64, bool)> = lines
        .iter()
        .filter_map(|l| {
            let (d, rest) = l.split_once(" filter rule=")?;
            if d != "out" && d != "in" {
                return None;
            }
            let mut words = rest.split_whitespace();
            let n = words.next()?.parse().ok()?;
            let is = d == dir && words.next() == Some(&format!("name={name}"));
            Some((n, is))
        })
        .collect();
    let ours: Vec<u64> = numbered
        .iter()
        .filter(|(_, is)| *is)
        .map(|(n, _)| *n)
        .collect();
    let (Some(&lo), Some(&hi)) = (ours.iter().min(), ours.iter().max()) else {
        return false;
    };
    let has = |n: u64| numbered.iter().any(|(m, _)| *m == n);
    let max = numbered.iter().map(|(n, _)| *n).max().unwrap_or(hi);
    ours.len() as u64 == hi - lo + 1 && (lo == 0 || has(lo - 1)) && (hi == max || has(hi + 1))
}

/// Whether the `<dir> drop <reason>=N` lines of a dump add up to its
/// `<dir> drop total=N` (one of each, well formed).
fn drops_add_up(lines: &[String], dir: &str) -> bool {
    let prefix = format!("{dir} drop ");
    let mut total = None;
    let mut sum = 0u64;
    for l in lines.iter().filter(|l| l.starts_with(&prefix)) {
        let Some((k, v)) = l[prefix.len()..].split_once('=') else {
            return false;
        };
        let Ok(n) = v.trim().parse::<u64>() else {
            return false;
        };
        if k == "total" {
            if total.is_some() {
                return false;
            }
            total = Some(n);
        } else {
            sum += n;
        }
    }
    total == Some(sum)
}

/// `key=N` on the first counter line starting with `prefix`.
pub(super) fn counter(lines: &[String], prefix: &str, key: &str) -> Option<u64> {
    let l = lines.iter().find(|l| l.starts_with(prefix))?;
    l.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|n| n.parse().ok())
}

/// Packets the filter rule `name` matched in `dir` (summed over the blob rules
/// the profile rule compiled into), or the default's with `name` `None`.
pub(super) fn filter_packets(lines: &[String], dir: &str, name: Option<&str>) -> u64 {
    match name {
        None => counter(lines, &format!("{dir} filter default "), "packets").unwrap_or(0),
        Some(n) => lines
            .iter()
            .filter(|l| {
                l.starts_with(&format!("{dir} filter rule="))
                    && l.split_whitespace().any(|w| w == format!("name={n}"))
            })
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("packets="))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .sum(),
    }
}

/// `busybox wget`, bounded by `timeout` (this busybox's `wget -T` crashes).
pub(super) fn wget(
    cmd: &mut std::process::Command,
    url: &str,
    dest: &str,
    secs: u32,
) -> Result<bool, Error> {
    let out = host::output(cmd.args([
        "timeout",
        &secs.to_string(),
        "busybox",
        "wget",
        "-q",
        "-O",
        dest,
        url,
    ]))?;
    Ok(out.status.success())
}

pub(super) fn ping(
    cmd: &mut std::process::Command,
    to: Ipv4Addr,
    count: u32,
) -> Result<bool, Error> {
    let out = host::output(cmd.args([
        "ping",
        "-c",
        &count.to_string(),
        "-i",
        "0.3",
        "-W",
        "2",
        &to.to_string(),
    ]))?;
    Ok(out.status.success())
}

/// What a clear lab's checks stand on: the internet host's address, the
/// web file's SHA-256, and `busybox httpd` on port 80 on the internet host
/// and both LAN hosts (stopped when dropped), each answering on its own
/// address.
pub(super) struct WebHosts {
    /// The internet host (the lab router).
    pub internet: Ipv4Addr,
    /// SHA-256 of `/data`, hex.
    pub want: String,
    _servers: Vec<Spawned>,
}

/// `busybox` on LAN host `g`, or on the internet host (`None`).
pub(super) fn busybox_at(lab: &Lab, g: Option<&Gateway>) -> std::process::Command {
    match g {
        None => in_netns(&lab.inet_ns(), "busybox"),
        Some(g) => lab.host_command(g, "busybox"),
    }
}

/// Starts the web servers of a clear lab (`kind` names it in errors);
/// `seed` varies the file's bytes.
pub(super) fn web_hosts(lab: &Lab, kind: &str, seed: usize) -> Result<WebHosts, Error> {
    let (a, b) = (&lab.gateways[0], &lab.gateways[1]);
    let internet = a.wan_gateway.ok_or_else(|| {
        Error::State(format!(
            "{}: personalities.black.gateway: a {kind} lab needs the lab router as black's gateway (it is the internet host)",
            a.profile.display()
        ))
    })?;
    let www = lab.run_dir().join("www");
    std::fs::create_dir_all(&www).map_err(io(format!("creating {}", www.display())))?;
    let data: Vec<u8> = (0..FETCH_BYTES).map(|i| (i * seed % 251) as u8).collect();
    let want = hex::encode(Sha256::digest(&data));
    std::fs::write(www.join("data"), &data).map_err(io("writing the web file"))?;
    std::fs::write(www.join("ready"), b"ok").map_err(io("writing the web file"))?;
    let mut servers = Vec::new();
    for g in [None, Some(a), Some(b)] {
        servers.push(Spawned::new(
            busybox_at(lab, g)
                .args(["httpd", "-f", "-p", "80", "-h"])
                .arg(&www)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "busybox httpd",
        )?);
    }
    for (g, addr) in [(None, internet), (Some(a), a.host), (Some(b), b.host)] {
        let t = Instant::now();
        while !wget(
            &mut busybox_at(lab, g),
            &format!("http://{addr}/ready"),
            "/dev/null",
            2,
        )? {
            if t.elapsed() > Duration::from_secs(10) {
                return Err(Error::State(format!(
                    "busybox httpd on {addr} does not answer"
                )));
            }
            host::sleep(Duration::from_millis(100))?;
        }
    }
    Ok(WebHosts {
        internet,
        want,
        _servers: servers,
    })
}

pub(super) fn checks(
    lab: &Lab,
    report: &mut Report,
    log: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let (a, b) = (&lab.gateways[0], &lab.gateways[1]);
    let inet = lab.inet_ns();
    let run = lab.run_dir();
    // Web servers on port 80: the internet host, and both LAN hosts (which
    // nothing outside their LAN may reach).
    let web = web_hosts(lab, "firewall", 7)?;
    let (internet, want) = (web.internet, web.want.clone());

    // 1. Out: web from each LAN to the internet host.
    for g in [a, b] {
        let name = format!(
            "LAN {} → internet host: web opened out, {} KiB, SHA-256 equal",
            g.letter.to_ascii_uppercase(),
            FETCH_BYTES / 1024
        );
        report.check(log, &name, || {
            let before = viaduct_counters(lab, g)?;
            let dest = run.join(format!("fetch-{}", g.name));
            let t = Instant::now();
            let ok = wget(
                &mut lab.host_command(g, "busybox"),
                &format!("http://{internet}/data"),
                &dest.display().to_string(),
                60,
            )?;
            let secs = t.elapsed().as_secs_f64();
            let got = if ok { file_sha256(&dest)? } else { String::new() };
            let _ = std::fs::remove_file(&dest);
            let after = viaduct_counters(lab, g)?;
            let opened = filter_packets(&after, "out", Some("web-out"))
                .saturating_sub(filter_packets(&before, "out", Some("web-out")));
            let answers = filter_packets(&after, "in", Some("tracked-in"))
                .saturating_sub(filter_packets(&before, "in", Some("tracked-in")));
            let flows = after
                .iter()
                .find(|l| l.starts_with("conntrack "))
                .cloned()
                .unwrap_or_default();
            Ok((
                ok && got == want && opened >= 1 && answers > 0,
                format!(
                    "{}, {secs:.1} s; web-out matched {opened}, tracked-in {answers} answers; {flows}",
                    if ok {
                        format!("sha256 {}", &got[..16.min(got.len())])
                    } else {
                        "wget failed".into()
                    }
                ),
            ))
        })?;
    }

    // 2. Out, refused: ping from each LAN.
    for g in [a, b] {
        let name = format!(
            "LAN {} → internet host: ping refused (no rule lets it out), counted",
            g.letter.to_ascii_uppercase()
        );
        report.check(log, &name, || {
            let before = filter_packets(&viaduct_counters(lab, g)?, "out", None);
            let answered = ping(&mut lab.host_command(g, "busybox"), internet, 3)?;
            let after = filter_packets(&viaduct_counters(lab, g)?, "out", None);
            Ok((
                !answered && after >= before + 3,
                format!(
                    "{}; out default (drop) {before} → {after}",
                    if answered { "ANSWERED" } else { "no answer" }
                ),
            ))
        })?;
    }

    // 3. In, refused: the internet host opens nothing into either LAN.
    for g in [a, b] {
        let name = format!(
            "internet host → LAN {}: web and ping cannot open in, counted",
            g.letter.to_ascii_uppercase()
        );
        report.check(log, &name, || {
            let before = filter_packets(&viaduct_counters(lab, g)?, "in", None);
            let web = wget(
                &mut in_netns(&inet, "busybox"),
                &format!("http://{}/ready", g.host),
                "/dev/null",
                4,
            )?;
            let answered = ping(&mut in_netns(&inet, "busybox"), g.host, 3)?;
            let after = filter_packets(&viaduct_counters(lab, g)?, "in", None);
            // The profile logs what the default drops: the SYN is on the
            // console.
            let syn = format!("> {}:80 flags=S", g.host);
            let mut console = lab.console(g);
            console.poll();
            let logged = console.lines().iter().any(|l| {
                l.contains("viaduct| filter log in default drop state=new proto=6 ")
                    && l.contains(&syn)
            });
            // At least the SYN and the three echo requests.
            Ok((
                !web && !answered && after >= before + 4 && logged,
                format!(
                    "web {}, ping {}; in default (drop) {before} → {after}; the SYN {}logged",
                    if web { "OPENED" } else { "timed out" },
                    if answered { "ANSWERED" } else { "unanswered" },
                    if logged { "" } else { "NOT " }
                ),
            ))
        })?;
    }

    // 4. LAN A → LAN B: out of gw-a by its web rule, refused in by gw-b.
    report.check(
        log,
        "LAN A → LAN B: web let out by gw-a, refused in by gw-b",
        || {
            let a0 = filter_packets(&viaduct_counters(lab, a)?, "out", Some("web-out"));
            let b0 = filter_packets(&viaduct_counters(lab, b)?, "in", None);
            let web = wget(
                &mut lab.host_command(a, "busybox"),
                &format!("http://{}/ready", b.host),
                "/dev/null",
                4,
            )?;
            let a1 = filter_packets(&viaduct_counters(lab, a)?, "out", Some("web-out"));
            let b1 = filter_packets(&viaduct_counters(lab, b)?, "in", None);
            Ok((
                !web && a1 > a0 && b1 > b0,
                format!(
                    "web {}; gw-a web-out {a0} → {a1}, gw-b in default (drop) {b0} → {b1}",
                    if web { "OPENED" } else { "timed out" }
                ),
            ))
        },
    )?;

    // 5. The wire: nothing left a LAN but what a LAN may open.
    report.check(
        log,
        "internet capture: nothing left a LAN but web and DNS openings",
        || {
            host::sleep(Duration::from_millis(500))?;
            let bytes = capture_now(lab)?;
            let cap = parse_capture(&bytes)?;
            let lans: Vec<(Ipv4Addr, u8)> = lab.gateways.iter().map(Gateway::lan_net).collect();
            let r = wire::left_lans(&cap, &lans, &TCP_OUT, &UDP_OUT);
            Ok((
                r.violations == 0 && r.allowed > 0,
                format!(
                    "{} frames; {} packets from a LAN, {} allowed, {} not{}",
                    cap.frames.len(),
                    r.packets,
                    r.allowed,
                    r.violations,
                    if r.examples.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.examples.join("; "))
                    }
                ),
            ))
        },
    )?;
    for g in [a, b] {
        if let Some(l) = viaduct_counters(lab, g)?
            .into_iter()
            .find(|l| l.starts_with("conntrack "))
        {
            report.figure(&format!("{} {}", g.name, "connection table"), l);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mangled_dump_is_told_apart() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(drops_add_up(
            &v(&["out drop no_route=2", "out drop total=2"]),
            "out"
        ));
        assert!(drops_add_up(&v(&["out drop total=0"]), "out"));
        assert!(!drops_add_up(&v(&["oout drop total=0"]), "out"));
        assert!(!drops_add_up(
            &v(&["out drop no_rroute=2", "out drop total=3"]),
            "out"
        ));
        assert!(!drops_add_up(
            &v(&["out drop no_route=2", "out drop total=3"]),
            "out"
        ));
        assert!(!drops_add_up(&v(&["out drop total=1x"]), "out"));
        // Rule lines: numbered across both directions, none missing
        // around the rule asked for.
        let dump = [
            "out filter rule=0 name=a packets=1",
            "out filter rule=2 name=b packets=0",
            "out filter rule=3 name=b packets=0",
            "out filter default packets=0",
            "in filter rule=1 name=c packets=0",
            "in filter rule=4 name=d packets=0",
            "in filter rule=5 name=e packets=0",
            "in filter default packets=0",
        ];
        assert!(rule_lines_whole(&v(&dump), "out", "a"));
        assert!(rule_lines_whole(&v(&dump), "out", "b"));
        assert!(rule_lines_whole(&v(&dump), "in", "d"));
        assert!(!rule_lines_whole(&v(&dump), "in", "b"));
        assert!(!rule_lines_whole(&v(&dump), "out", "x"));
        let cut = |i: usize| {
            let mut d = v(&dump);
            d.remove(i);
            d
        };
        // Its own line, or a neighbour's, cut or mangled.
        assert!(!rule_lines_whole(&cut(1), "out", "b"));
        assert!(!rule_lines_whole(&cut(2), "out", "b"));
        assert!(!rule_lines_whole(&cut(4), "out", "b"));
        assert!(!rule_lines_whole(&cut(5), "out", "b"));
        let mut mangled = v(&dump);
        mangled[5] = "in  filter rule=4 name=d packets=0".into();
        assert!(!rule_lines_whole(&mangled, "out", "b"));
        // A line far from it does not matter.
        assert!(rule_lines_whole(&cut(0), "in", "d"));
        // The last rule's line cut cannot be told from none after it.
        assert!(rule_lines_whole(&cut(6), "in", "d"));
    }

    #[test]
    fn filter_counters_are_read_by_rule_name_and_summed() {
        let lines: Vec<String> = [
            "out bypassed=9",
            "out filter rule=2 name=web-out packets=3",
            "out filter rule=3 name=web-out packets=4",
            "out filter rule=4 name=web-out-2 packets=100",
            "out filter default packets=7",
            "in filter rule=0 name=tracked-in packets=11",
            "in filter default packets=5",
            "conntrack flows=1 max=100000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(filter_packets(&lines, "out", Some("web-out")), 7);
        assert_eq!(filter_packets(&lines, "out", None), 7);
        assert_eq!(filter_packets(&lines, "in", None), 5);
        assert_eq!(filter_packets(&lines, "in", Some("tracked-in")), 11);
        assert_eq!(filter_packets(&lines, "in", Some("nothing")), 0);
        assert_eq!(counter(&lines, "conntrack ", "max"), Some(100000));
    }
}
