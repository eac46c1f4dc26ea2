//! Traffic selector narrowing (RFC 7296 §2.9): the responder answers with
//! the intersection of the initiator's selectors and its own; the initiator
//! accepts an answer only if every selector lies within what it offered.
//!
//! Selectors of other types (e.g. TS_SECLABEL) take no part: they neither
//! widen nor narrow, and are never answered.

use std::net::IpAddr;

use crate::wire::{Selector, TrafficSelector, TsPayload};

/// The responder's answer to TSi and TSr: the tunnel they are for and each
/// narrowed to that tunnel's selectors (its `remote_ts` for the initiator's
/// side, `local_ts` for ours), or TS_UNACCEPTABLE with both sides'
/// selectors (every tunnel's, ours) if no tunnel leaves both non-empty.
///
/// With several tunnels, the one whose selectors the request names exactly
/// wins, then one that grants the request as asked, then the first that
/// narrows it; a request spanning two tunnels is narrowed to one.
pub(crate) fn answer(
    tsi: &TsPayload<'_>,
    tsr: &TsPayload<'_>,
    config: &super::Config,
) -> Result<(usize, Vec<TrafficSelector>, Vec<TrafficSelector>), super::ChildFailure> {
    let (peer_tsi, peer_tsr) = (ranges(tsi), ranges(tsr));
    let mut best: Option<(u8, usize, Vec<TrafficSelector>, Vec<TrafficSelector>)> = None;
    for i in 0..config.tunnel_count() {
        let Some((local, remote)) = config.tunnel(i) else {
            break;
        };
        let our_tsi = narrow(&peer_tsi, remote);
        let our_tsr = narrow(&peer_tsr, local);
        if our_tsi.is_empty() || our_tsr.is_empty() {
            continue;
        }
        // 3: the request is exactly this tunnel; 2: it lies within this
        // tunnel, granted as asked; 1: it is narrowed. The first wins a tie,
        // so a request for a nested tunnel (TCP within all traffic) goes to
        // the nested one, not to the wider one that merely contains it.
        let asked = our_tsi == peer_tsi && our_tsr == peer_tsr;
        let score = if asked && remote == &peer_tsi[..] && local == &peer_tsr[..] {
            3
        } else if asked {
            2
        } else {
            1
        };
        if best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, i, our_tsi, our_tsr));
        }
    }
    match best {
        Some((_, i, our_tsi, our_tsr)) => Ok((i, our_tsi, our_tsr)),
        None => {
            let (mut our_tsi, mut our_tsr) = (Vec::new(), Vec::new());
            for i in 0..config.tunnel_count() {
                if let Some((local, remote)) = config.tunnel(i) {
                    our_tsi.extend_from_slice(remote);
                    our_tsr.extend_from_slice(local);
                }
            }
            Err(super::ChildFailure::TsUnacceptable(Box::new(
                super::TsMismatch {
                    peer_tsi,
                    peer_tsr,
                    our_tsi,
                    our_tsr,
                },
            )))
        }
    }
}

/// The address-range selectors of a TS payload.
pub(crate) fn ranges(p: &TsPayload<'_>) -> Vec<TrafficSelector> {
    p.selectors()
        .filter_map(|s| match s {
            Selector::Range(t) => Some(t),
            Selector::Other { .. } => None,
        })
        .collect()
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// Port ranges as (start, end) with OPAQUE (65535, 0) kept apart.
fn ports(a: &TrafficSelector, b: &TrafficSelector) -> Option<(u16, u16)> {
    let full = |t: &TrafficSelector| (t.start_port, t.end_port) == (0, u16::MAX);
    match (a.opaque_ports(), b.opaque_ports()) {
        (true, true) => Some((u16::MAX, 0)),
        // OPAQUE lies within "any port" only.
        (true, false) if full(b) => Some((u16::MAX, 0)),
        (false, true) if full(a) => Some((u16::MAX, 0)),
        (true, false) | (false, true) => None,
        (false, false) => {
            let start = a.start_port.max(b.start_port);
            let end = a.end_port.min(b.end_port);
            (start <= end).then_some((start, end))
        }
    }
}

/// The intersection of two selectors, if not empty.
pub(crate) fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    if !same_family(a.start, b.start) {
        return None;
    }
    let ip_protocol = match (a.ip_protocol, b.ip_protocol) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let (start_port, end_port) = ports(a, b)?;
    let start = a.start.max(b.start);
    let end = a.end.min(b.end);
    (start <= end).then_some(TrafficSelector {
        ip_protocol,
        start_port,
        end_port,
        start,
        end,
    })
}

/// Every non-empty intersection of an offered selector with one of ours,
/// in the offer's order, without duplicates.
pub(crate) fn narrow(
    offered: &[TrafficSelector],
    ours: &[TrafficSelector],
) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for a in offered {
        for b in ours {
            if let Some(t) = intersect(a, b) {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
    }
    out
}

/// Whether `inner` lies within `outer`.
fn within(inner: &TrafficSelector, outer: &TrafficSelector) -> bool {
    intersect(inner, outer).as_ref() == Some(inner)
}

/// Whether every selector of `answer` lies within one of `offered`.
pub(crate) fn all_within(answer: &[TrafficSelector], offered: &[TrafficSelector]) -> bool {
    answer.iter().all(|a| offered.iter().any(|o| within(a, o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(start: &str, end: &str) -> TrafficSelector {
        TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
        }
    }

    #[test]
    fn narrows_addresses_protocols_and_ports() {
        let wide = ts("10.1.0.0", "10.1.255.255");
        let narrow_ = ts("10.1.2.0", "10.1.2.255");
        assert_eq!(intersect(&wide, &narrow_), Some(narrow_));
        assert_eq!(intersect(&narrow_, &wide), Some(narrow_));
        let tcp = TrafficSelector {
            ip_protocol: 6,
            start_port: 1000,
            end_port: 2000,
            ..wide
        };
        let ports = TrafficSelector {
            start_port: 1500,
            end_port: 3000,
            ..narrow_
        };
        assert_eq!(
            intersect(&tcp, &ports),
            Some(TrafficSelector {
                ip_protocol: 6,
                start_port: 1500,
                end_port: 2000,
                ..narrow_
            })
        );
        let udp = TrafficSelector {
            ip_protocol: 17,
            ..wide
        };
        assert_eq!(intersect(&tcp, &udp), None);
        assert_eq!(intersect(&wide, &ts("10.2.0.0", "10.2.0.255")), None);
        assert_eq!(intersect(&wide, &ts("::", "::ffff")), None);
    }

    #[test]
    fn opaque_ports() {
        let any = ts("10.0.0.0", "10.0.0.255");
        let opaque = TrafficSelector {
            start_port: u16::MAX,
            end_port: 0,
            ..any
        };
        let some = TrafficSelector {
            start_port: 80,
            end_port: 80,
            ..any
        };
        assert_eq!(intersect(&opaque, &any), Some(opaque));
        assert_eq!(intersect(&any, &opaque), Some(opaque));
        assert_eq!(intersect(&opaque, &some), None);
    }

    #[test]
    fn narrow_and_check() {
        let offered = [ts("10.1.0.0", "10.1.255.255"), ts("10.9.0.0", "10.9.0.255")];
        let ours = [ts("10.1.2.0", "10.1.2.255"), ts("10.1.3.0", "10.1.3.255")];
        let n = narrow(&offered, &ours);
        assert_eq!(n, ours.to_vec());
        assert!(all_within(&n, &offered));
        assert!(!all_within(&offered, &ours));
        assert!(narrow(&[ts("192.0.2.0", "192.0.2.255")], &ours).is_empty());
    }
}
