//! What may appear on the lab's internet segment, decided frame by frame from a
//! capture: between the gateways only ESP and IKE (UDP 500 → 500, or 4500 → 4500,
//! where ESP may also travel inside UDP) and ARP to find each other; never a LAN
//! address in clear, never the marker the tests put into their LAN traffic, nothing
//! else from a gateway's card; and no ESP (SPI, sequence number) pair twice — one
//! would be an AEAD nonce used twice under one key.

use std::net::Ipv4Addr;

use crate::pcap::Capture;

/// The rules for one capture.
#[derive(Debug, Clone)]
pub struct WireRules {
    /// The gateways' internet addresses.
    pub gateways: Vec<Ipv4Addr>,
    /// The gateways' internet-side MAC addresses.
    pub gateway_macs: Vec<[u8; 6]>,
    /// LAN networks (address, prefix length) that must never appear in clear.
    pub lans: Vec<(Ipv4Addr, u8)>,
    /// Bytes that must never appear on the wire.
    pub marker: Vec<u8>,
    /// The verifier's address and the gateways' management port: TCP between them
    /// (enrolment, attestation) is allowed, counted apart.
    pub management: Option<(Ipv4Addr, u16)>,
}

/// What a capture held.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct WireReport {
    /// Frames inspected.
    pub frames: usize,
    /// ESP packets between the gateways (plain, or inside UDP 4500).
    pub esp: usize,
    /// IKE messages between the gateways.
    pub ike: usize,
    /// Distinct ESP SPIs seen (a rekey adds two).
    pub spis: usize,
    /// The first ESP packet's time (seconds since the epoch), if any.
    pub first_esp: Option<f64>,
    /// ARP frames.
    pub arp: usize,
    /// Frames neither from nor to a gateway (the lab's own router).
    pub lab: usize,
    /// TCP between the verifier and a gateway's management port.
    pub management: usize,
    /// Frames that break a rule (count).
    pub violations: usize,
    /// The first few violations, described.
    pub examples: Vec<String>,
}

impl WireReport {
    /// True when no frame broke a rule.
    pub fn clean(&self) -> bool {
        self.violations == 0
    }
}

fn in_net(a: Ipv4Addr, (net, len): (Ipv4Addr, u8)) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    u32::from(a) & mask == u32::from(net) & mask
}

/// Inspects the frames of `cap` captured in `[from, to]` (seconds since the epoch;
/// `None`: all).
pub fn inspect(cap: &Capture<'_>, rules: &WireRules, window: Option<(f64, f64)>) -> WireReport {
    let mut r = WireReport::default();
    let mut sealed = std::collections::HashSet::new();
    let mut spis = std::collections::HashSet::new();
    for (i, f) in cap.frames.iter().enumerate() {
        if let (Some((from, to)), Some(t)) = (window, cap.times.get(i)) {
            if *t < from || *t > to {
                continue;
            }
        }
        r.frames += 1;
        let bad = |r: &mut WireReport, why: String| {
            r.violations += 1;
            if r.examples.len() < 5 {
                r.examples.push(format!("frame {}: {why}", i + 1));
            }
        };
        if !rules.marker.is_empty() && f.windows(rules.marker.len()).any(|w| w == rules.marker) {
            bad(&mut r, "the LAN traffic's marker string in clear".into());
            continue;
        }
        if f.len() < 14 {
            bad(&mut r, format!("runt frame of {} bytes", f.len()));
            continue;
        }
        let src_mac: [u8; 6] = f[6..12].try_into().unwrap_or_default();
        let from_gateway = rules.gateway_macs.contains(&src_mac);
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        match ethertype {
            0x0806 => r.arp += 1,
            0x0800 => {
                let ip = &f[14..];
                if ip.len() < 20 || ip[0] >> 4 != 4 || usize::from(ip[0] & 15) * 4 < 20 {
                    bad(&mut r, "malformed IPv4 header".into());
                    continue;
                }
                let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
                let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
                let proto = ip[9];
                let gw = |a| rules.gateways.contains(&a);
                if let Some(lan) = [src, dst]
                    .into_iter()
                    .find(|a| rules.lans.iter().any(|n| in_net(*a, *n)))
                {
                    bad(
                        &mut r,
                        format!("LAN address {lan} in clear ({src} → {dst}, protocol {proto})"),
                    );
                } else if gw(src) && gw(dst) && src != dst && (proto == 50 || proto == 17) {
                    let l4 = &ip[usize::from(ip[0] & 15) * 4..];
                    let esp = match (proto, l4.get(..4)) {
                        (50, _) => l4.get(..8),
                        (_, Some([0x01, 0xf4, 0x01, 0xf4])) => {
                            r.ike += 1;
                            continue;
                        }
                        (_, Some([0x11, 0x94, 0x11, 0x94])) => match l4.get(8..12) {
                            Some([0, 0, 0, 0]) => {
                                r.ike += 1;
                                continue;
                            }
                            _ => l4.get(8..16),
                        },
                        _ => {
                            let ports = l4.get(..4).unwrap_or_default();
                            bad(
                                &mut r,
                                format!("UDP other than IKE: {src} → {dst}, ports {ports:02x?}"),
                            );
                            continue;
                        }
                    };
                    let Some(esp) = esp else {
                        bad(&mut r, format!("truncated ESP: {src} → {dst}"));
                        continue;
                    };
                    r.esp += 1;
                    if r.first_esp.is_none() {
                        r.first_esp = cap.times.get(i).copied();
                    }
                    spis.insert(esp[..4].to_vec());
                    if !sealed.insert(esp.to_vec()) {
                        bad(
                            &mut r,
                            format!("ESP (SPI, sequence) {:02x?} seen twice", esp),
                        );
                    }
                } else if proto == 6
                    && rules.management.is_some_and(|(v, port)| {
                        let l4 = &ip[usize::from(ip[0] & 15) * 4..];
                        let (sp, dp) = match l4.get(..4) {
                            Some(p) => (
                                u16::from_be_bytes([p[0], p[1]]),
                                u16::from_be_bytes([p[2], p[3]]),
                            ),
                            None => return false,
                        };
                        (src == v && gw(dst) && dp == port) || (dst == v && gw(src) && sp == port)
                    })
                {
                    r.management += 1;
                } else if gw(src) || gw(dst) || from_gateway {
                    bad(
                        &mut r,
                        format!("not ESP or IKE: {src} → {dst}, protocol {proto}"),
                    );
                } else {
                    r.lab += 1;
                }
            }
            other => {
                if from_gateway {
                    bad(&mut r, format!("ethertype {other:#06x} from a gateway"));
                } else {
                    r.lab += 1;
                }
            }
        }
    }
    r.spis = spis.len();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(src_mac: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend(src_mac);
        f.extend(ethertype.to_be_bytes());
        f.extend(payload);
        f
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, body: &[u8]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        h.extend(src);
        h.extend(dst);
        h.extend(body);
        h
    }

    #[test]
    fn only_esp_between_gateways_passes() {
        let ga = [2, 0, 0, 0, 0, 1];
        let rules = WireRules {
            gateways: vec![
                Ipv4Addr::new(198, 51, 100, 1),
                Ipv4Addr::new(198, 51, 100, 2),
            ],
            gateway_macs: vec![ga],
            lans: vec![(Ipv4Addr::new(10, 0, 0, 0), 8)],
            marker: b"MARKER-1234".to_vec(),
            management: Some((Ipv4Addr::new(198, 51, 100, 254), 7443)),
        };
        let a = [198, 51, 100, 1];
        let b = [198, 51, 100, 2];
        let udp = |sp: u16, dp: u16, body: &[u8]| {
            let mut u = sp.to_be_bytes().to_vec();
            u.extend(dp.to_be_bytes());
            u.extend((8 + body.len() as u16).to_be_bytes());
            u.extend([0, 0]);
            u.extend(body);
            u
        };
        let frames = [
            eth(ga, 0x0800, &ipv4(a, b, 50, b"\0\0\x10\x01ciphertext")),
            // IKE on 500, IKE on 4500 (non-ESP marker), ESP in UDP on 4500.
            eth(ga, 0x0800, &ipv4(a, b, 17, &udp(500, 500, b"ike message"))),
            eth(
                ga,
                0x0800,
                &ipv4(a, b, 17, &udp(4500, 4500, b"\0\0\0\0ike message")),
            ),
            eth(
                ga,
                0x0800,
                &ipv4(a, b, 17, &udp(4500, 4500, b"\0\0\x10\x02\0\0\0\x01ct")),
            ),
            eth(ga, 0x0806, &[0; 28]),
            eth(
                [2, 0, 0, 0, 0, 9],
                0x0800,
                &ipv4([198, 51, 100, 254], [224, 0, 0, 1], 2, b""),
            ),
        ];
        let good: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        let cap = Capture {
            link_type: 1,
            frames: good.clone(),
            times: vec![1.0, 1.5, 1.6, 1.7, 2.0, 3.0],
        };
        let r = inspect(&cap, &rules, None);
        assert!(r.clean(), "{r:?}");
        assert_eq!((r.frames, r.esp, r.ike, r.arp, r.lab), (6, 2, 2, 1, 1));
        assert_eq!((r.spis, r.first_esp), (2, Some(1.0)));
        // The same (SPI, sequence) twice is a violation.
        let twice = [frames[0].as_slice(), frames[0].as_slice()];
        let cap2 = Capture {
            link_type: 1,
            frames: twice.to_vec(),
            times: vec![1.0, 2.0],
        };
        assert_eq!(inspect(&cap2, &rules, None).violations, 1);
        // Each rule broken once.
        let bad_frames = [
            eth(ga, 0x0800, &ipv4(a, b, 1, b"ping")),
            eth(ga, 0x0800, &ipv4([10, 1, 0, 2], [10, 2, 0, 2], 6, b"")),
            eth(ga, 0x0800, &ipv4(a, b, 50, b"xx MARKER-1234 xx")),
            eth(ga, 0x86dd, &[0x60; 40]),
            eth(ga, 0x0800, &[0x45, 0]),
            vec![1, 2, 3],
            eth(ga, 0x0800, &ipv4(a, [203, 0, 113, 9], 50, b"")),
            eth(ga, 0x0800, &ipv4(a, b, 17, &udp(53, 53, b"dns"))),
            eth(ga, 0x0800, &ipv4(a, b, 17, &udp(500, 4500, b"mixed"))),
            // TCP to the management port from anyone but the verifier, or to
            // another port from the verifier, or between the gateways.
            eth(
                ga,
                0x0800,
                &ipv4([198, 51, 100, 9], a, 6, &udp(40000, 7443, b"")),
            ),
            eth(
                ga,
                0x0800,
                &ipv4([198, 51, 100, 254], a, 6, &udp(40000, 22, b"")),
            ),
            eth(ga, 0x0800, &ipv4(b, a, 6, &udp(40000, 7443, b""))),
            // The marker inside a management stream is still found.
            eth(
                ga,
                0x0800,
                &ipv4([198, 51, 100, 254], a, 6, &udp(40000, 7443, b"MARKER-1234")),
            ),
        ];
        // The verifier's TCP with a gateway's management port, both ways: allowed.
        for f in [
            eth(
                ga,
                0x0800,
                &ipv4([198, 51, 100, 254], a, 6, &udp(40000, 7443, b"")),
            ),
            eth(
                ga,
                0x0800,
                &ipv4(a, [198, 51, 100, 254], 6, &udp(7443, 40000, b"")),
            ),
        ] {
            let cap = Capture {
                link_type: 1,
                frames: vec![f.as_slice()],
                times: vec![5.0],
            };
            let r = inspect(&cap, &rules, None);
            assert!(r.clean() && r.management == 1, "{r:?}");
        }
        for f in &bad_frames {
            let cap = Capture {
                link_type: 1,
                frames: vec![f.as_slice()],
                times: vec![5.0],
            };
            let r = inspect(&cap, &rules, None);
            assert_eq!(r.violations, 1, "{f:02x?}: {r:?}");
            // Outside the window it is not looked at.
            assert_eq!(inspect(&cap, &rules, Some((6.0, 7.0))).frames, 0);
        }
    }
}

/// What left the LANs on a firewall lab's internet segment: every IPv4
/// packet from a LAN address, by whether the firewall profile lets a LAN open
/// it (TCP to `tcp_ports`, UDP to `udp_ports`). Nothing else may leave a LAN:
/// no ping, no other port, and no answer to a connection the internet
/// opened (none can be opened).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LeftLans {
    /// Packets from a LAN address.
    pub packets: usize,
    /// Those the rules allow.
    pub allowed: usize,
    /// The others (count).
    pub violations: usize,
    /// The first few violations, described.
    pub examples: Vec<String>,
}

/// Inspects every frame of `cap` for [`LeftLans`].
pub fn left_lans(
    cap: &Capture<'_>,
    lans: &[(Ipv4Addr, u8)],
    tcp_ports: &[u16],
    udp_ports: &[u16],
) -> LeftLans {
    let mut r = LeftLans::default();
    for f in &cap.frames {
        // Ethernet II, IPv4 only (the lab has no IPv6).
        if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &f[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        if !lans.iter().any(|&n| in_net(src, n)) {
            continue;
        }
        r.packets += 1;
        let proto = ip[9];
        let first_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
        let dport = (ihl >= 20 && ip.len() >= ihl + 4 && first_fragment)
            .then(|| u16::from_be_bytes([ip[ihl + 2], ip[ihl + 3]]));
        let ok = match (proto, dport) {
            (6, Some(p)) => tcp_ports.contains(&p),
            (17, Some(p)) => udp_ports.contains(&p),
            _ => false,
        };
        if ok {
            r.allowed += 1;
        } else {
            r.violations += 1;
            if r.examples.len() < 5 {
                r.examples.push(format!(
                    "{src} → {dst} protocol {proto}{}",
                    dport.map(|p| format!(" port {p}")).unwrap_or_default()
                ));
            }
        }
    }
    r
}

#[cfg(test)]
mod left_lans_tests {
    use super::*;

    fn frame(src: [u8; 4], dst: [u8; 4], proto: u8, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0];
        ip.extend(src);
        ip.extend(dst);
        ip.extend(40000u16.to_be_bytes());
        ip.extend(dport.to_be_bytes());
        ip.extend([0u8; 16]);
        f.extend(ip);
        f
    }

    #[test]
    fn only_what_a_lan_may_open_passes() {
        let frames = [
            frame([10, 1, 0, 2], [198, 51, 100, 254], 6, 80),
            frame([10, 1, 0, 2], [198, 51, 100, 254], 17, 53),
            frame([198, 51, 100, 254], [10, 1, 0, 2], 6, 22),
            frame([10, 1, 0, 2], [198, 51, 100, 254], 1, 0),
            frame([10, 2, 0, 2], [198, 51, 100, 254], 6, 22),
            frame([10, 2, 0, 2], [198, 51, 100, 254], 17, 80),
        ];
        let cap = Capture {
            link_type: 1,
            frames: frames.iter().map(Vec::as_slice).collect(),
            times: vec![0.0; frames.len()],
        };
        let lans = [
            (Ipv4Addr::new(10, 1, 0, 0), 24),
            (Ipv4Addr::new(10, 2, 0, 0), 24),
        ];
        let r = left_lans(&cap, &lans, &[80, 443], &[53]);
        assert_eq!((r.packets, r.allowed, r.violations), (5, 2, 3), "{r:?}");
        assert!(r.examples[0].contains("protocol 1"), "{r:?}");
        assert!(r.examples[1].contains("port 22"), "{r:?}");
    }
}
