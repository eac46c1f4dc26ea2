//! The data plane's half of IKE: SAs installed by the IKE process (checked
//! against the policy, make-before-break switching, removal), IKE messages
//! steered from black to the IKE process (never to red), and IKE messages
//! built from the policy's addresses.

use policy_blob::*;
use viaduct::{DropReason, Engine, MemoryLedger, Timestamp, Verdict};
use viaduct_channel::{Refusal, SaInstall};
use zeroize::Zeroizing;

use crate::common::{udp4, v4};

const T0: Timestamp = Timestamp(0);

/// Gateway `me` (1 or 2) of a pair, tunnel 10.me/24 ↔ 10.other/24 keyed by
/// IKE peer 0.
fn policy(me: u8) -> Policy {
    let other = 3 - me;
    let addr = |n: u8| v4(&format!("198.51.100.{n}"));
    let net = |n: u8| TrafficSelector::prefix(Prefix::new(v4(&format!("10.{n}.0.0")), 24));
    let t = Tunnel::new(1, "t", addr(me), addr(other), Aead::ChaCha20Poly1305)
        .with_local_ts(net(me))
        .with_remote_ts(net(other));
    let mut p = Policy::new("gw", "1")
        .with_local(addr(me))
        .with_tunnel(t)
        .with_spd(
            "t",
            Selector::between(
                Prefix::new(v4(&format!("10.{me}.0.0")), 24),
                Prefix::new(v4(&format!("10.{other}.0.0")), 24),
            ),
            SpdAction::Protect(TunnelId(1)),
        )
        .with_spd("rest", Selector::any_v4(), SpdAction::Discard);
    p.ike = Some(IkeConfig {
        local_id: IkeIdentity::Addr(addr(me)),
        private_key: None,
        peers: vec![IkePeer {
            name: "peer".into(),
            local: addr(me),
            remote: addr(other),
            remote_id: IkeIdentity::Addr(addr(other)),
            auth: IkeAuth::Psk(Credential::Device("psk".into())),
            ike_proposals: vec![IkeProposal {
                aead: Aead::ChaCha20Poly1305,
                prf: IkePrf::Sha256,
                group: KeGroup::X25519,
            }],
            esp_proposals: vec![EspProposal {
                aead: Aead::ChaCha20Poly1305,
                esn: false,
            }],
            pfs: None,
            ike_rekey_seconds: 3600,
            dpd: Dpd::default(),
            tunnels: vec![TunnelId(1)],
        }],
    });
    p.validate().unwrap();
    p
}

fn engine(p: &Policy) -> Engine {
    Engine::new(p, T0, &mut MemoryLedger::default()).unwrap()
}

/// The install of gateway 1 (`mirror`: gateway 2's view of the same SA).
fn install(spi_1: u32, spi_2: u32, key_seed: u8, active: bool, mirror: bool) -> SaInstall {
    let k = |s: u8| Zeroizing::new(vec![s; 36]);
    let (in_spi, out_spi, key_in, key_out) = if mirror {
        (spi_2, spi_1, k(key_seed), k(key_seed + 1))
    } else {
        (spi_1, spi_2, k(key_seed + 1), k(key_seed))
    };
    SaInstall {
        tunnel: TunnelId(1),
        inbound_spi: in_spi,
        outbound_spi: out_spi,
        aead: Aead::ChaCha20Poly1305,
        esn: false,
        key_out,
        key_in,
        udp_remote_port: None,
        outbound_active: active,
        soft_seconds: 3000,
        hard_seconds: 3600,
    }
}

fn lan_packet(from: u8, marker: &[u8]) -> Vec<u8> {
    let other = 3 - from;
    udp4(
        &format!("10.{from}.0.5"),
        &format!("10.{other}.0.7"),
        1000,
        2000,
        marker,
    )
}

/// Sends one LAN packet from gateway `a` to gateway `b`: the ESP `a` writes
/// and what `b` makes of it.
fn carry(a: &mut Engine, b: &mut Engine, from: u8, marker: &[u8]) -> (Verdict, Verdict, Vec<u8>) {
    let inner = lan_packet(from, marker);
    let mut out = vec![0u8; 2048];
    let v = a.outbound(&inner, &mut out, T0);
    let Verdict::Send(n) = v else {
        return (v, Verdict::Drop(DropReason::NoSa), Vec::new());
    };
    let mut wire = out[..n].to_vec();
    let spi = wire[20..24].to_vec();
    let w = b.inbound(&mut wire, T0);
    (v, w, spi)
}

#[test]
fn checked_installs_carry_traffic_and_switch_make_before_break() {
    let (p1, p2) = (policy(1), policy(2));
    let (mut g1, mut g2) = (engine(&p1), engine(&p2));
    // No SA yet: nothing leaves.
    assert_eq!(
        carry(&mut g1, &mut g2, 1, b"x").0,
        Verdict::Drop(DropReason::NoSa)
    );
    g1.install(&install(0x1001, 0x2001, 1, true, false), T0)
        .unwrap();
    g2.install(&install(0x1001, 0x2001, 1, true, true), T0)
        .unwrap();
    let (v, w, spi) = carry(&mut g1, &mut g2, 1, b"first");
    assert!(matches!(v, Verdict::Send(_)), "{v:?}");
    assert!(matches!(w, Verdict::Send(_)), "{w:?}");
    assert_eq!(spi, 0x2001u32.to_be_bytes());
    assert!(matches!(
        carry(&mut g2, &mut g1, 2, b"back").1,
        Verdict::Send(_)
    ));

    // Rekey: gateway 1 (initiator) installs the new SA in use at once;
    // gateway 2 (responder) installs it waiting. Both still carry traffic.
    g2.install(&install(0x1002, 0x2002, 5, false, true), T0)
        .unwrap();
    g1.install(&install(0x1002, 0x2002, 5, true, false), T0)
        .unwrap();
    let (_, w, spi) = carry(&mut g1, &mut g2, 1, b"new");
    assert_eq!(
        spi,
        0x2002u32.to_be_bytes(),
        "the initiator sends on the new SA"
    );
    assert!(
        matches!(w, Verdict::Send(_)),
        "the responder receives on it: {w:?}"
    );
    let (_, w, spi) = carry(&mut g2, &mut g1, 2, b"old");
    assert_eq!(
        spi,
        0x1001u32.to_be_bytes(),
        "the responder still sends on the old SA"
    );
    assert!(matches!(w, Verdict::Send(_)), "{w:?}");
    // The initiator deletes the old SA: the responder switches.
    assert!(g2.outbound.use_outbound(TunnelId(1), 0x2002));
    let (_, w, spi) = carry(&mut g2, &mut g1, 2, b"switched");
    assert_eq!(spi, 0x1002u32.to_be_bytes());
    assert!(matches!(w, Verdict::Send(_)));
    // The old SA goes from both halves.
    // Switching replaced the old outbound SA: nothing of it is left.
    assert!(!g2.outbound.remove(TunnelId(1), 0x2001));
    assert!(g2.inbound.remove(0x2001));
    assert!(!g2.inbound.remove(0x2001));
    assert!(g1.inbound.remove(0x1001));
    // Removing the SA in use leaves the tunnel without one: nothing leaves
    // in clear.
    assert!(g1.outbound.remove(TunnelId(1), 0x1002));
    assert_eq!(
        carry(&mut g1, &mut g2, 1, b"x").0,
        Verdict::Drop(DropReason::NoSa)
    );
}

#[test]
fn installs_the_policy_does_not_allow_are_refused_and_change_nothing() {
    let p1 = policy(1);
    let mut g1 = engine(&p1);
    g1.install(&install(0x1001, 0x2001, 1, true, false), T0)
        .unwrap();
    let mut again = install(0x1001, 0x2009, 9, true, false);
    assert_eq!(g1.install(&again, T0), Err(Refusal::SpiInUse));
    again.inbound_spi = 0x1009;
    again.aead = Aead::Aes256Gcm16;
    assert_eq!(g1.install(&again, T0), Err(Refusal::Transform));
    again.aead = Aead::ChaCha20Poly1305;
    again.tunnel = TunnelId(7);
    assert_eq!(g1.install(&again, T0), Err(Refusal::UnknownTunnel));
    // The SA in use is still the first.
    let mut out = vec![0u8; 2048];
    let Verdict::Send(n) = g1.outbound(&lan_packet(1, b"x"), &mut out, T0) else {
        panic!()
    };
    assert_eq!(out[20..24], 0x2001u32.to_be_bytes());
    assert!(n > 28);
}

#[test]
fn ike_messages_go_to_the_ike_process_never_to_red() {
    let (p1, p2) = (policy(1), policy(2));
    let (mut g1, mut g2) = (engine(&p1), engine(&p2));
    let ike = vec![0x42u8; 100];
    for (local_port, remote_port) in [(500, 500), (4500, 4500), (4500, 61000)] {
        let mut out = vec![0u8; 2048];
        let n = g1
            .control
            .ike_datagram(0, local_port, remote_port, &ike, &mut out)
            .unwrap();
        let mut wire = out[..n].to_vec();
        // Gateway 2 sees it arrive on its port `remote_port`... as sent
        // from gateway 1's `local_port`: its own ports are the reverse.
        match g2.inbound(&mut wire, T0) {
            Verdict::Ike(i) => {
                assert_eq!(i.peer, 0);
                assert_eq!((i.local_port, i.remote_port), (remote_port, local_port));
                assert_eq!(&wire[i.offset..i.offset + i.len], &ike[..]);
            }
            other if remote_port == 61000 => {
                // Only 500 and 4500 are IKE ports on the receiving side.
                assert!(matches!(other, Verdict::Drop(_)), "{other:?}");
            }
            other => panic!("{local_port}->{remote_port}: {other:?}"),
        }
    }
    // From an address that is not the peer, or to port 500 of another
    // address: not IKE; dropped like any other cleartext.
    let mut stranger = udp4("198.51.100.9", "198.51.100.2", 500, 500, &ike);
    assert!(matches!(g2.inbound(&mut stranger, T0), Verdict::Drop(_)));
    let mut elsewhere = udp4("198.51.100.1", "198.51.100.99", 500, 500, &ike);
    assert!(matches!(g2.inbound(&mut elsewhere, T0), Verdict::Drop(_)));
    // Port 4500 without the non-ESP marker is ESP (unknown SPI here).
    let mut esp = udp4(
        "198.51.100.1",
        "198.51.100.2",
        4500,
        4500,
        &[1, 2, 3, 4, 5, 6, 7, 8],
    );
    assert_eq!(
        g2.inbound(&mut esp, T0),
        Verdict::Drop(DropReason::UnknownSpi)
    );
    assert_eq!(g2.inbound.ike_received(), 2);
    assert_eq!(g1.control.ike_sent(), 3);
    // Peers and ports IKE does not use are refused.
    let mut out = vec![0u8; 2048];
    assert_eq!(
        g1.control.ike_datagram(1, 500, 500, &ike, &mut out),
        Err(DropReason::NoPolicy)
    );
    assert_eq!(
        g1.control.ike_datagram(0, 53, 500, &ike, &mut out),
        Err(DropReason::NoPolicy)
    );
    assert_eq!(
        g1.control.ike_datagram(0, 500, 500, &ike, &mut out[..50]),
        Err(DropReason::BufferTooSmall)
    );
}

/// A NAT-keepalive from the IKE process (one byte 0xFF on port 4500) leaves
/// without the non-ESP marker, and the peer's data plane drops it as a
/// keepalive (counted), never handing it to IKE or red.
#[test]
fn nat_keepalives_leave_without_the_marker_and_are_dropped_on_arrival() {
    let (p1, p2) = (policy(1), policy(2));
    let (mut g1, mut g2) = (engine(&p1), engine(&p2));
    let mut out = vec![0u8; 2048];
    let n = g1
        .control
        .ike_datagram(0, 4500, 61000, &[0xff], &mut out)
        .unwrap();
    // IPv4 header (20) + UDP header (8) + the one byte.
    assert_eq!(n, 29);
    assert_eq!(out[28], 0xff);
    let n = g1
        .control
        .ike_datagram(0, 4500, 4500, &[0xff], &mut out)
        .unwrap();
    let mut wire = out[..n].to_vec();
    assert_eq!(
        g2.inbound(&mut wire, T0),
        Verdict::Drop(DropReason::Keepalive)
    );
    assert_eq!(g2.inbound.ike_received(), 0);
    // On port 500, or any other payload: IKE, behind the marker on 4500.
    let n = g1
        .control
        .ike_datagram(0, 4500, 4500, &[0xff, 0xff], &mut out)
        .unwrap();
    assert_eq!(n, 20 + 8 + 4 + 2);
}

#[test]
fn esp_in_udp_goes_to_the_port_ike_learned() {
    let (p1, p2) = (policy(1), policy(2));
    let (mut g1, mut g2) = (engine(&p1), engine(&p2));
    let mut i1 = install(0x1001, 0x2001, 1, true, false);
    i1.udp_remote_port = Some(40500);
    let mut i2 = install(0x1001, 0x2001, 1, true, true);
    i2.udp_remote_port = Some(4500);
    g1.install(&i1, T0).unwrap();
    g2.install(&i2, T0).unwrap();
    let mut out = vec![0u8; 2048];
    let Verdict::Send(n) = g1.outbound(&lan_packet(1, b"nat"), &mut out, T0) else {
        panic!()
    };
    assert_eq!(out[9], 17, "UDP");
    assert_eq!(&out[20..22], &4500u16.to_be_bytes());
    assert_eq!(&out[22..24], &40500u16.to_be_bytes());
    // A NAT would map 40500 back to 4500 on the way: gateway 2 receives it.
    let mut wire = out[..n].to_vec();
    wire[22..24].copy_from_slice(&4500u16.to_be_bytes());
    wire[26..28].copy_from_slice(&[0, 0]);
    assert!(matches!(g2.inbound(&mut wire, T0), Verdict::Send(_)));
}

/// Gateway 1's policy with a second, manually keyed tunnel (10.1.1/24 ↔
/// 10.2.1/24, SPIs 0x5001 out and 0x6001 in).
fn policy_with_manual() -> Policy {
    let mut p = policy(1);
    let addr = |n: u8| v4(&format!("198.51.100.{n}"));
    let net = |s: &str| TrafficSelector::prefix(Prefix::new(v4(s), 24));
    let key = |b: u8| KeyMaterial::new(vec![b; 36]);
    let t = Tunnel::new(2, "manual", addr(1), addr(2), Aead::ChaCha20Poly1305)
        .with_local_ts(net("10.1.1.0"))
        .with_remote_ts(net("10.2.1.0"))
        .with_manual_keys(
            ManualSa {
                spi: Spi(0x5001),
                key: key(7),
            },
            ManualSa {
                spi: Spi(0x6001),
                key: key(8),
            },
        );
    p = p.with_tunnel(t);
    p.spd.insert(
        0,
        SpdEntry {
            name: "manual".into(),
            selector: Selector::between(
                Prefix::new(v4("10.1.1.0"), 24),
                Prefix::new(v4("10.2.1.0"), 24),
            ),
            action: SpdAction::Protect(TunnelId(2)),
        },
    );
    p.validate().unwrap();
    p
}

#[test]
fn ike_can_neither_take_nor_remove_a_manual_sa() {
    let p = policy_with_manual();
    let mut g = engine(&p);
    // An install for the manual tunnel, or reusing its inbound SPI.
    let mut i = install(0x1001, 0x2001, 1, true, false);
    i.tunnel = TunnelId(2);
    assert_eq!(g.install(&i, T0), Err(Refusal::NotIkeKeyed));
    let mut i = install(0x6001, 0x2001, 1, true, false);
    assert_eq!(g.install(&i, T0), Err(Refusal::SpiInUse));
    // Removing it, under either tunnel: not IKE's.
    assert!(!g.remove(TunnelId(2), 0x6001));
    assert!(!g.remove(TunnelId(1), 0x6001));
    assert!(g.inbound.has_spi(0x6001));
    let manual_packet = udp4("10.1.1.5", "10.2.1.7", 1, 2, b"m");
    let mut out = vec![0u8; 2048];
    assert!(matches!(
        g.outbound(&manual_packet, &mut out, T0),
        Verdict::Send(_)
    ));
    assert_eq!(out[20..24], 0x5001u32.to_be_bytes());
    // IKE's own SA: removed once; then its SPI is free again.
    i.inbound_spi = 0x1001;
    g.install(&i, T0).unwrap();
    assert!(
        !g.remove(TunnelId(2), 0x1001),
        "named under the wrong tunnel"
    );
    assert!(g.remove(TunnelId(1), 0x1001));
    assert!(!g.remove(TunnelId(1), 0x1001));
    assert!(!g.inbound.has_spi(0x1001));
    assert_eq!(
        g.outbound(&lan_packet(1, b"x"), &mut out, T0),
        Verdict::Drop(DropReason::NoSa)
    );
    g.install(&i, T0).unwrap();
    assert_eq!(g.control.ike_sa_count(), 1);
}

#[test]
fn an_sa_ike_forgets_goes_after_its_hard_lifetime() {
    let p = policy(1);
    let mut g = engine(&p);
    g.install(&install(0x1001, 0x2001, 1, true, false), T0)
        .unwrap();
    let end = 3600 + viaduct::engine::ORPHAN_GRACE_SECONDS;
    assert_eq!(g.expire(Timestamp(end - 1)), 0);
    assert!(g.inbound.has_spi(0x1001));
    assert_eq!(g.expire(Timestamp(end)), 1);
    assert!(!g.inbound.has_spi(0x1001));
    assert_eq!(g.control.ike_sa_count(), 0);
    let mut out = vec![0u8; 2048];
    assert_eq!(
        g.outbound(&lan_packet(1, b"x"), &mut out, Timestamp(end)),
        Verdict::Drop(DropReason::NoSa)
    );
    // Its SPI may be used again; removing it again is refused.
    assert!(!g.remove(TunnelId(1), 0x1001));
    g.install(&install(0x1001, 0x2001, 1, true, false), Timestamp(end))
        .unwrap();
}

/// The race a rekey used to lose a packet to: IKE sends the install of a new
/// CHILD SA and then the message that completes it (the CREATE_CHILD_SA
/// response); the peer starts sending under the new SA as soon as it reads
/// that message. The install is applied by the pump threads between their
/// batches, so the message must not leave before both have caught up. Here
/// the pump threads are held back (their mailboxes not drained) while the
/// control thread handles both records: nothing reaches black; the inbound
/// thread drains: the inbound SA is in, still nothing leaves; the outbound
/// thread drains: its SA is in, and only then the message leaves. The
/// peer's first packet under the new SA is delivered, and ours go out
/// under it.
#[test]
fn an_ike_message_never_overtakes_the_install_before_it() {
    use rustix::net::{socketpair, AddressFamily, RecvFlags, SocketFlags, SocketType};
    use std::os::fd::OwnedFd;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use viaduct::ikelink::{mailbox, serve, Links, Tap};
    use viaduct::pump::{Control, Direction, Inbound, Outbound, PumpConfig};
    use viaduct::tun::Port;
    use viaduct_channel::{IkeDatagram, ToDataPlane};

    let (p1, p2) = (policy(1), policy(2));
    let (g1, mut g2) = (engine(&p1), engine(&p2));
    let pair = |t: SocketType| -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::UNIX,
            t,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    };
    let port = |fd: OwnedFd| Port {
        fd,
        vnet: false,
        offloads: 0,
    };
    let (black, black_wire) = pair(SocketType::DGRAM);
    let (red, red_wire) = pair(SocketType::DGRAM);
    let (red_in, _lan) = pair(SocketType::DGRAM);
    let (channel, ike) = pair(SocketType::SEQPACKET);
    let channel = Arc::new(channel);
    let (to_in, in_mail) = mailbox().unwrap();
    let (to_out, out_mail) = mailbox().unwrap();
    let (out_half, in_half, control) = g1.split();
    let black2 = black.try_clone().unwrap();
    let mut inbound = Inbound::new(in_half, port(black), port(red), PumpConfig { gro: false })
        .with_ike(in_mail, to_out, Tap::new(channel.clone()));
    let mut outbound = Outbound::new(out_half, port(red_in), port(black2))
        .with_ike(out_mail, Tap::new(channel.clone()));
    let ctl = Arc::new(Control::default());
    let links = Links {
        channel: channel.clone(),
        inbound: to_in,
    };
    let c = ctl.clone();
    let control_thread = std::thread::spawn(move || serve(control, links, &c));

    // The peer (gateway 2, the rekey initiator) already has the new SA; its
    // first packet under it is ready.
    g2.install(&install(0x1001, 0x2001, 1, true, true), T0)
        .unwrap();
    let mut esp = vec![0u8; 2048];
    let Verdict::Send(n) = g2.outbound(&lan_packet(2, b"first under the new SA"), &mut esp, T0)
    else {
        panic!("gateway 2 does not send")
    };
    esp.truncate(n);
    assert_eq!(esp[20..24], 0x1001u32.to_be_bytes());

    // IKE: the install, then the response that completes it.
    let response = vec![0x2au8; 80];
    let install_rec =
        ToDataPlane::InstallSa(Box::new(install(0x1001, 0x2001, 1, true, false))).encode();
    let send_rec = ToDataPlane::SendIke(IkeDatagram {
        peer: 0,
        local_port: 500,
        remote_port: 500,
        bytes: response.clone(),
    })
    .encode();
    rustix::io::write(&ike, &install_rec).unwrap();
    rustix::io::write(&ike, &send_rec).unwrap();

    // The control thread has handled both once the inbound thread's wake-up
    // is readable and a little time has passed: still nothing on black.
    let wake = inbound.wake().expect("an IKE link");
    let mut fds = [rustix::event::PollFd::new(
        wake,
        rustix::event::PollFlags::IN,
    )];
    let five = rustix::event::Timespec {
        tv_sec: 5,
        tv_nsec: 0,
    };
    assert_eq!(rustix::event::poll(&mut fds, Some(&five)).unwrap(), 1);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut buf = vec![0u8; 4096];
    assert_eq!(
        rustix::net::recv(&black_wire, &mut buf[..], RecvFlags::DONTWAIT).map(|r| r.0),
        Err(rustix::io::Errno::AGAIN),
        "the IKE response left before the inbound thread inserted the SA"
    );
    // Had the response left, the peer's packet would have been lost.
    let mut early = esp.clone();
    let before = esp.clone();
    inbound.handle(&mut early, T0);
    assert_eq!(early, before, "decrypted without an SA?");
    assert!(
        rustix::net::recv(&red_wire, &mut buf[..], RecvFlags::DONTWAIT).is_err(),
        "delivered without an SA?"
    );

    // The inbound thread catches up: its SA is in; the response waits for
    // the outbound thread.
    inbound.commands(T0, true);
    assert_eq!(
        rustix::net::recv(&black_wire, &mut buf[..], RecvFlags::DONTWAIT).map(|r| r.0),
        Err(rustix::io::Errno::AGAIN),
        "the IKE response left before the outbound thread inserted its SA"
    );
    // The outbound thread catches up: its SA, then the response.
    outbound.commands(T0, true);
    let (got, _) = rustix::net::recv(&black_wire, &mut buf[..], RecvFlags::DONTWAIT).unwrap();
    assert_eq!(got, 20 + 8 + response.len(), "IPv4 + UDP + the message");
    assert_eq!(buf[9], 17, "UDP");
    assert_eq!(buf[22..24], 500u16.to_be_bytes());
    assert_eq!(&buf[28..got], &response[..]);
    // The peer answers at once under the new SA: delivered.
    let mut pkt = esp.clone();
    inbound.handle(&mut pkt, T0);
    let (got, _) = rustix::net::recv(&red_wire, &mut buf[..], RecvFlags::DONTWAIT)
        .expect("the peer's first packet under the new SA reaches red");
    assert_eq!(&buf[..got], &lan_packet(2, b"first under the new SA")[..]);
    // And ours leave under it.
    let mut reply = lan_packet(1, b"reply");
    outbound.handle(&mut reply, T0);
    let (got, _) = rustix::net::recv(&black_wire, &mut buf[..], RecvFlags::DONTWAIT)
        .expect("our reply leaves under the new SA");
    assert_eq!(buf[20..24], 0x2001u32.to_be_bytes());
    let mut wire = buf[..got].to_vec();
    assert!(matches!(g2.inbound(&mut wire, T0), Verdict::Send(_)));
    assert!(outbound
        .report()
        .contains("viaduct black ike-out: written=1 write_errors=0"));

    ctl.stop.store(true, Ordering::Relaxed);
    drop(ike);
    control_thread.join().unwrap().unwrap();
}
