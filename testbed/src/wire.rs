//! What may appear on the lab's internet segment, decided frame by frame from a
//! capture: between the gateways only ESP (and ARP to find each other); never a LAN
//! address in clear, never the marker the tests put into their LAN traffic, nothing
//! else from a gateway's card.

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
}

/// What a capture held.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WireReport {
    /// Frames inspected.
    pub frames: usize,
    /// ESP packets between the gateways.
    pub esp: usize,
    /// ARP frames.
    pub arp: usize,
    /// Frames neither from nor to a gateway (the lab's own router).
    pub lab: usize,
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
                } else if proto == 50 && gw(src) && gw(dst) && src != dst {
                    r.esp += 1;
                } else if gw(src) || gw(dst) || from_gateway {
                    bad(&mut r, format!("not ESP: {src} → {dst}, protocol {proto}"));
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
        };
        let a = [198, 51, 100, 1];
        let b = [198, 51, 100, 2];
        let frames = [
            eth(ga, 0x0800, &ipv4(a, b, 50, b"\0\0\x10\x01ciphertext")),
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
            times: vec![1.0, 2.0, 3.0],
        };
        let r = inspect(&cap, &rules, None);
        assert!(r.clean(), "{r:?}");
        assert_eq!((r.frames, r.esp, r.arp, r.lab), (3, 1, 1, 1));
        // Each rule broken once.
        let bad_frames = [
            eth(ga, 0x0800, &ipv4(a, b, 1, b"ping")),
            eth(ga, 0x0800, &ipv4([10, 1, 0, 2], [10, 2, 0, 2], 6, b"")),
            eth(ga, 0x0800, &ipv4(a, b, 50, b"xx MARKER-1234 xx")),
            eth(ga, 0x86dd, &[0x60; 40]),
            eth(ga, 0x0800, &[0x45, 0]),
            vec![1, 2, 3],
            eth(ga, 0x0800, &ipv4(a, [203, 0, 113, 9], 50, b"")),
        ];
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
