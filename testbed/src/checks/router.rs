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
//!    Viaduct drops it as `no_route`, counted, and it is never on the wire.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::firewall::{busybox_at, counter, ping, viaduct_counters, web_hosts, wget, FETCH_BYTES};
use super::{capture_now, file_sha256, parse_capture, Report};
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
    for g in [a, b] {
        if let Some(l) = viaduct_counters(lab, g)?
            .into_iter()
            .find(|l| l.starts_with("routes "))
        {
            report.figure(&format!("{} routes", g.name), l);
        }
    }
    drop(web);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
