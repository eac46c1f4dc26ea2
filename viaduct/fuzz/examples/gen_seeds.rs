//! Writes the committed seeds of the Viaduct fuzz targets from the engine
//! itself (not from a fuzzer): ESP packets of every AEAD, outer IPv4 and
//! IPv6, plain and in UDP/4500, sealed by the left engine of
//! `viaduct_fuzz::policy` (so the targets' right engines open them), and
//! inputs in the `esp_seal` and `pump` formats, and `offload` frames
//! (TSO super-packets, a packet needing its checksum). Every sealed packet is
//! checked to open on the right before it is written. It also checks that
//! the policy seeds (`policy/blob/fuzz/seeds/decode`, compiled by the CLI)
//! decode and that the `decode_body` seeds are their bodies.
//!
//! ```sh
//! cd viaduct/fuzz && cargo run --example gen_seeds
//! ```
//! Deterministic: the same engine writes the same bytes.

use std::path::Path;

use policy_blob::{Aead, Policy};
use viaduct::offload::{VnetHdr, GSO_TCPV4, GSO_TCPV6, VIRTIO_NET_HDR_F_NEEDS_CSUM};
use viaduct::{Timestamp, Verdict};
use viaduct_fuzz::inner::*;
use viaduct_fuzz::*;

fn aead_name(a: Aead) -> &'static str {
    match a {
        Aead::Aes128Gcm16 => "aes128gcm16",
        Aead::Aes256Gcm16 => "aes256gcm16",
        Aead::ChaCha20Poly1305 => "chacha20poly1305",
    }
}

fn params(aead: Aead, v6: bool, udp: bool) -> Params {
    Params {
        aead,
        v6,
        udp,
        esn: true,
        tfc: Vec::new(),
        dscp: 0,
        lifetimes: false,
        small_window: false,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("seed directory");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

/// Seals `inner` with the left engine of `p` and checks that the right
/// engine delivers it unchanged.
fn seal(p: &Params, inner: &[u8]) -> Vec<u8> {
    let now = Timestamp(0);
    let mut left = engine(&policy(p, Side::Left), now);
    let mut right = engine(&policy(p, Side::Right), now);
    let mut out = vec![0u8; 65_535];
    let Verdict::Send(n) = left.outbound(inner, &mut out, now) else {
        panic!("the left does not send {inner:02x?}");
    };
    let sealed = out[..n].to_vec();
    let mut pkt = sealed.clone();
    assert_eq!(right.inbound(&mut pkt, now), Verdict::Send(inner.len()));
    assert_eq!(&pkt[..inner.len()], inner);
    sealed
}

fn tso_v4(payload_len: usize, mss: u16) -> Vec<u8> {
    let data: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    let pkt = ipv4(L4, R4, 6, 0x02, &tcp(40000, 443, 0x18, &data));
    let h = VnetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 40,
        gso_size: mss,
        csum_start: 20,
        csum_offset: 16,
    };
    [&h.to_bytes()[..], &pkt].concat()
}

fn tso_v6(payload_len: usize, mss: u16) -> Vec<u8> {
    let data: Vec<u8> = (0..payload_len).map(|i| (i * 7) as u8).collect();
    let pkt = ipv6(L6, R6, 6, 0, &tcp(40001, 8080, 0x10, &data));
    let h = VnetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: GSO_TCPV6,
        hdr_len: 60,
        gso_size: mss,
        csum_start: 40,
        csum_offset: 16,
    };
    [&h.to_bytes()[..], &pkt].concat()
}

/// The vhost target's seed: a front end's whole set-up of both queues
/// (as QEMU sends it), a transmit chain with a frame and receive buffers
/// written into guest memory, then reads and a receive.
fn vhost_seed() -> Vec<u8> {
    const UVA: u64 = 0x1000_0000;
    let mut s = Vec::new();
    let msg = |s: &mut Vec<u8>, req: u8, payload: &[u8]| {
        s.extend_from_slice(&[0, req, payload.len() as u8]);
        s.extend_from_slice(payload);
    };
    let mem = |s: &mut Vec<u8>, off: u16, bytes: &[u8]| {
        for (i, chunk) in bytes.chunks(255).enumerate() {
            s.push(1);
            s.extend_from_slice(&(off + 255 * i as u16).to_le_bytes());
            s.push(chunk.len() as u8);
            s.extend_from_slice(chunk);
        }
    };
    let features: u64 = (1 << 3) | (1 << 5) | (1 << 15) | (1 << 30) | (1 << 32);
    msg(&mut s, 2, &features.to_le_bytes());
    msg(&mut s, 16, &0u64.to_le_bytes());
    let mut t = vec![1, 0, 0, 0, 0, 0, 0, 0];
    for v in [0u64, 65536, UVA, 0] {
        t.extend_from_slice(&v.to_le_bytes());
    }
    msg(&mut s, 5, &t);
    for q in [1u32, 0] {
        let base = if q == 1 { 0u64 } else { 0x1000 };
        let pair = |a: u32, b: u32| [a.to_le_bytes(), b.to_le_bytes()].concat();
        msg(&mut s, 8, &pair(q, 16));
        msg(&mut s, 10, &pair(q, 0));
        let mut a = pair(q, 0);
        for v in [UVA + base, UVA + base + 0x800, UVA + base + 0x400] {
            a.extend_from_slice(&v.to_le_bytes());
        }
        msg(&mut s, 9, &a);
        msg(&mut s, 13, &(q as u64).to_le_bytes());
        msg(&mut s, 12, &(q as u64).to_le_bytes());
        msg(&mut s, 18, &pair(q, 1));
    }
    // Transmit: descriptor 0 -> a frame at 0x4000, made available.
    let mut frame = vec![0u8; 12];
    frame.extend_from_slice(&[2, 0x76, 0x64, 0, 0, 0xfe, 2, 0x76, 0x64, 0, 0, 1, 8, 0]);
    let mut ip = vec![0u8; 40];
    ip[0] = 0x45;
    ip[3] = 40;
    frame.extend_from_slice(&ip);
    mem(&mut s, 0x4000, &frame);
    let desc = |addr: u64, len: u32, flags: u16| {
        [
            &addr.to_le_bytes()[..],
            &len.to_le_bytes(),
            &flags.to_le_bytes(),
            &0u16.to_le_bytes(),
        ]
        .concat()
    };
    mem(&mut s, 0, &desc(0x4000, frame.len() as u32, 0));
    mem(&mut s, 0x400, &[0, 0, 1, 0, 0, 0]);
    // Receive: four 2 KiB buffers at 0x8000.
    let mut d = Vec::new();
    for i in 0..4u64 {
        d.extend_from_slice(&desc(0x8000 + 2048 * i, 2048, 2));
    }
    mem(&mut s, 0x1000, &d);
    mem(&mut s, 0x1400, &[0, 0, 4, 0, 0, 0, 1, 0, 2, 0, 3, 0]);
    s.extend_from_slice(&[2, 4]);
    s.extend_from_slice(&[3, 100, 0]);
    s.extend_from_slice(&[3, 0x40, 0x1f]);
    s
}

/// A LAN host's TCP connection, DNS query and ping through the tracker, an
/// ICMP error about the connection, and a stray SYN-ACK, as `conntrack`
/// chunks: `[flags (bit 0 inbound, bit 1 accepted), dt, length (u16 BE),
/// datagram]`.
fn conntrack_seed() -> Vec<u8> {
    fn v4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4: &[u8]) -> Vec<u8> {
        let total = 20 + l4.len();
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            protocol,
            0,
            0,
        ];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }
    fn tcp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, flags: u8) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&sp.to_be_bytes());
        h[2..4].copy_from_slice(&dp.to_be_bytes());
        h[12] = 0x50;
        h[13] = flags;
        v4(src, dst, 6, &h)
    }
    fn udp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> Vec<u8> {
        let mut h = vec![0u8; 9];
        h[0..2].copy_from_slice(&sp.to_be_bytes());
        h[2..4].copy_from_slice(&dp.to_be_bytes());
        h[4..6].copy_from_slice(&9u16.to_be_bytes());
        v4(src, dst, 17, &h)
    }
    let (lan, net, router) = ([10, 1, 0, 2], [198, 51, 100, 7], [203, 0, 113, 1]);
    let syn = tcp(lan, 40000, net, 443, 0x02);
    let mut error = vec![3, 1, 0, 0, 0, 0, 0, 0];
    error.extend_from_slice(&syn[..28]);
    let chunks: Vec<(u8, u8, Vec<u8>)> = vec![
        (2, 0, syn.clone()),
        (3, 1, tcp(net, 443, lan, 40000, 0x12)),
        (2, 1, tcp(lan, 40000, net, 443, 0x10)),
        (3, 0, v4(router, lan, 1, &error)),
        (3, 1, tcp(net, 443, lan, 40000, 0x11)),
        (2, 1, tcp(lan, 40000, net, 443, 0x11)),
        (2, 0, udp(lan, 50000, net, 53)),
        (3, 1, udp(net, 53, lan, 50000)),
        (2, 0, v4(lan, net, 1, &[8, 0, 0, 0, 0, 9, 0, 1])),
        (3, 1, v4(net, lan, 1, &[0, 0, 0, 0, 0, 9, 0, 1])),
        (1, 2, tcp(net, 443, lan, 40001, 0x12)),
        (2, 200, tcp(lan, 40000, net, 443, 0x02)),
    ];
    let mut s = Vec::new();
    for (flags, dt, pkt) in chunks {
        s.extend_from_slice(&[flags, dt]);
        s.extend_from_slice(&(pkt.len() as u16).to_be_bytes());
        s.extend_from_slice(&pkt);
    }
    s
}

/// A TCP connection tracked by its numbers: SYN and SYN-ACK with window
/// scale and SACK-permitted, data both ways, a SACK block, a reset in the
/// window but not exact, one far out of it, data past the window, and the
/// exact reset.
fn conntrack_window_seed() -> Vec<u8> {
    #[allow(clippy::too_many_arguments)]
    fn tcp(
        src: [u8; 4],
        sp: u16,
        dst: [u8; 4],
        dp: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        opts: &[u8],
        len: usize,
    ) -> Vec<u8> {
        let mut h = vec![0u8; 20];
        h[0..2].copy_from_slice(&sp.to_be_bytes());
        h[2..4].copy_from_slice(&dp.to_be_bytes());
        h[4..8].copy_from_slice(&seq.to_be_bytes());
        h[8..12].copy_from_slice(&ack.to_be_bytes());
        h[12] = (((20 + opts.len()) / 4) << 4) as u8;
        h[13] = flags;
        h[14..16].copy_from_slice(&1024u16.to_be_bytes());
        h.extend_from_slice(opts);
        h.extend(std::iter::repeat_n(b'd', len));
        let total = 20 + h.len();
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            6,
            0,
            0,
        ];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&h);
        p
    }
    let (lan, net) = ([10, 1, 0, 2], [198, 51, 100, 7]);
    let (c, s) = (1_000_000u32, 3_000_000u32);
    let ws_sack = [1, 3, 3, 7, 1, 1, 4, 2];
    let mut sack = vec![1, 1, 5, 10];
    sack.extend_from_slice(&(s + 1001).to_be_bytes());
    sack.extend_from_slice(&(s + 1101).to_be_bytes());
    let out =
        |f, seq, ack, o: &[u8], len| (2u8, 0u8, tcp(lan, 40000, net, 443, f, seq, ack, o, len));
    let inn =
        |f, seq, ack, o: &[u8], len| (3u8, 0u8, tcp(net, 443, lan, 40000, f, seq, ack, o, len));
    let chunks: Vec<(u8, u8, Vec<u8>)> = vec![
        out(0x02, c, 0, &ws_sack, 0),
        inn(0x12, s, c + 1, &ws_sack, 0),
        out(0x10, c + 1, s + 1, &[], 0),
        out(0x18, c + 1, s + 1, &[], 50),
        inn(0x18, s + 1, c + 51, &[], 1000),
        inn(0x18, s + 1101, c + 51, &[], 100),
        out(0x10, c + 51, s + 1, &sack, 0),
        inn(0x04, s + 5000, 0, &[], 0),
        inn(0x04, s.wrapping_add(1 << 31), 0, &[], 0),
        inn(0x18, s + 10_000_000, c + 51, &[], 10),
        out(0x10, c + 51, s + 1201, &[], 0),
        inn(0x04, s + 1201, 0, &[], 0),
    ];
    let mut v = Vec::new();
    for (flags, dt, pkt) in chunks {
        v.extend_from_slice(&[flags, dt]);
        v.extend_from_slice(&(pkt.len() as u16).to_be_bytes());
        v.extend_from_slice(&pkt);
    }
    v
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = root.join("seeds");
    write(&seeds.join("vhost"), "setup-tx-rx.bin", &vhost_seed());
    write(
        &seeds.join("conntrack"),
        "tcp-udp-echo-error.bin",
        &conntrack_seed(),
    );
    write(
        &seeds.join("conntrack"),
        "tcp-window.bin",
        &conntrack_window_seed(),
    );
    let samples = samples();
    let protected = ["v4-tcp-ack-ect0", "v6-udp"];

    // esp_decap: outer datagrams as they leave the left engine.
    for aead in AEADS {
        for v6 in [false, true] {
            for udp in [false, true] {
                let p = params(aead, v6, udp);
                for (name, inner) in samples.iter().filter(|(n, _)| protected.contains(n)) {
                    let sealed = seal(&p, inner);
                    let file = format!(
                        "{}-{}-{}-{}.bin",
                        aead_name(aead),
                        if v6 { "v6" } else { "v4" },
                        if udp { "udp" } else { "esp" },
                        name
                    );
                    write(&seeds.join("esp_decap"), &file, &sealed);
                }
            }
        }
    }

    // esp_seal: per AEAD and a few parameter sets, every sample sealed
    // (op 0), crafted plaintexts of each mode (op 1), a replay and a
    // report (op 3), and the engine's own sealed packets as raw black
    // reads (op 2, last: they move the replay window).
    let sets = [
        (false, false, false, Vec::new(), false),
        (true, true, true, vec![256, 1500], false),
        (false, true, false, vec![100, 1500], true),
    ];
    for aead in AEADS {
        for (i, (v6, udp, esn, tfc, lifetimes)) in sets.iter().enumerate() {
            let p = Params {
                aead,
                v6: *v6,
                udp: *udp,
                esn: *esn,
                tfc: tfc.clone(),
                dscp: 10,
                lifetimes: *lifetimes,
                small_window: i == 2,
            };
            let mut s = p.encode().to_vec();
            assert_eq!(Params::decode(p.encode()), p);
            for (_, inner) in &samples {
                s.push(0);
                push_record(&mut s, inner);
            }
            // An ECN-capable packet under an outer CE mark.
            s.push(0x0c);
            push_record(&mut s, &samples[1].1);
            for mode in 0u8..4 {
                let inner = &samples[if mode % 2 == 0 { 0 } else { 5 }].1;
                let mut c = vec![mode | 0x04 | 0x08, 0, 4];
                c.extend_from_slice(&0u64.to_be_bytes());
                c.extend_from_slice(inner);
                if mode == 0 {
                    c.extend_from_slice(&[1, 2, 2, 4]);
                }
                if mode == 1 {
                    c.extend_from_slice(&[1, 2]);
                    c[1] = 2;
                }
                s.push(1);
                push_record(&mut s, &c);
            }
            s.push(3);
            push_record(&mut s, &[0]);
            s.push(3);
            push_record(&mut s, &[3]);
            let pr = params(aead, *v6, *udp);
            let sealed = seal(&pr, &samples[0].1);
            s.push(2);
            push_record(&mut s, &sealed);
            write(
                &seeds.join("esp_seal"),
                &format!("{}-set{i}.bin", aead_name(aead)),
                &s,
            );
        }
    }

    // pump: reads from red (plain, with vnet headers, TSO super-packets)
    // and ESP read from black, per AEAD, without and with offloads.
    for aead in AEADS {
        for (ports, udp, v6) in [
            (0u8, false, false),
            (0x0f, true, false),
            (0x0f, true, true),
            (0x0d, false, true),
        ] {
            let p = params(aead, v6, udp);
            let mut s = p.encode().to_vec();
            s.push(ports);
            let red_vnet = ports & 1 != 0;
            let frame = |pkt: &[u8]| {
                if red_vnet {
                    [&VnetHdr::NONE.to_bytes()[..], pkt].concat()
                } else {
                    pkt.to_vec()
                }
            };
            for (_, inner) in samples.iter().take(8) {
                s.push(0);
                push_record(&mut s, &frame(inner));
            }
            if red_vnet {
                s.push(0);
                push_record(&mut s, &tso_v4(4000, 1400));
                s.push(0);
                push_record(&mut s, &tso_v6(3000, 1200));
            }
            s.push(2);
            push_record(&mut s, &[]);
            s.push(3);
            push_record(&mut s, &[]);
            let black_vnet = ports & 2 != 0;
            let mut sealed = seal(&p, &samples[1].1);
            if black_vnet {
                sealed = [&VnetHdr::NONE.to_bytes()[..], &sealed].concat();
            }
            s.push(1);
            push_record(&mut s, &sealed);
            let name = format!(
                "{}-{}-{}-ports{ports:02x}.bin",
                aead_name(aead),
                if v6 { "v6" } else { "v4" },
                if udp { "udp" } else { "esp" }
            );
            write(&seeds.join("pump"), &name, &s);
        }
    }

    // offload: TSO super-packets (IPv4, IPv6) and a UDP packet whose
    // checksum is left to "hardware", as a personality's TUN hands them over.
    let offload = seeds.join("offload");
    write(&offload, "tso-v4.bin", &tso_v4(4000, 1400));
    write(&offload, "tso-v6.bin", &tso_v6(3000, 1200));
    let udp_csum = VnetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: viaduct::offload::GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 20,
        csum_offset: 6,
    };
    write(
        &offload,
        "udp-needs-csum.bin",
        &[&udp_csum.to_bytes()[..], &samples[2].1].concat(),
    );

    // The policy seeds: blobs compiled by the CLI must decode, and each
    // decode_body seed is its blob without header and digest.
    let pol = root.join("../../policy/blob/fuzz/seeds");
    let mut n = 0;
    for e in std::fs::read_dir(pol.join("decode")).expect("policy seeds") {
        let path = e.expect("entry").path();
        let blob = std::fs::read(&path).expect("blob");
        Policy::decode(&blob).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        let body = &blob[11..blob.len() - 32];
        let stem = path
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let have =
            std::fs::read(pol.join("decode_body").join(format!("{stem}.body"))).expect("body seed");
        assert_eq!(have, body, "{stem}.body is not the body of {stem}.blob");
        n += 1;
    }
    println!("seeds written; {n} policy blobs decode and match their bodies");
}
