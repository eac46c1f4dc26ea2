//! The vhost-user-net port against a guest played by the driver: packets
//! both ways, merged receive buffers, interrupts, the control plane's
//! whitelist, and a hostile guest's rings and frames.

use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use viaduct_vhost::backend::{self, F_MAC, F_MRG_RXBUF, F_MTU, F_PROTOCOL_FEATURES, F_VERSION_1};
use viaduct_vhost::driver::{self, Guest, Transport, GUEST_MAC, QSIZE, VIADUCT_MAC};
use viaduct_vhost::msg::code;
use viaduct_vhost::net::{RX, TX};
use viaduct_vhost::{PortShared, RxHalf, Session, TxHalf};

const ALL: u64 = F_MTU | F_MAC | F_MRG_RXBUF | F_PROTOCOL_FEATURES | F_VERSION_1;

fn port() -> (Arc<PortShared>, TxHalf, RxHalf) {
    let sh = PortShared::new("red", GUEST_MAC, VIADUCT_MAC).unwrap();
    let (tx, rx) = sh.halves();
    (sh, tx, rx)
}

fn direct(sh: &Arc<PortShared>, features: u64) -> Guest {
    Guest::new(
        Transport::Direct(Box::new(Session::new(sh.clone()))),
        features,
    )
    .unwrap()
}

/// An IPv4 packet of `len` bytes whose payload counts up from `seed`.
fn ip(len: usize, seed: u8) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    for (i, b) in p.iter_mut().enumerate().skip(20) {
        *b = seed.wrapping_add(i as u8);
    }
    p
}

#[test]
fn packets_cross_both_ways_and_the_guest_is_interrupted() {
    for features in [ALL, F_MAC | F_VERSION_1, F_MAC] {
        let (sh, mut tx, mut rx) = port();
        let mut g = direct(&sh, features);
        let mut buf = vec![0u8; 70_000];
        assert_eq!(tx.recv(&mut buf), Err(rustix::io::Errno::AGAIN));
        for n in [20, 64, 1400, 1500] {
            let p = ip(n, n as u8);
            assert!(g.transmit(&p));
            g.kick(TX);
            let got = tx.recv(&mut buf).expect("a packet");
            assert_eq!(&buf[..got], &p[..], "features {features:#x}, {n} bytes");
        }
        assert_eq!(tx.recv(&mut buf), Err(rustix::io::Errno::AGAIN));
        assert!(
            g.interrupted(TX),
            "transmit buffers returned with an interrupt"
        );
        assert_eq!(
            g.reclaim_tx(),
            1,
            "the last frame (earlier ones were reclaimed by the next transmit)"
        );
        for n in [20, 64, 1400, 1500] {
            let p = ip(n, 7);
            rx.send(&p).unwrap();
            rx.finish();
            assert!(g.interrupted(RX));
            assert_eq!(g.receive_packet().unwrap(), p);
        }
        assert_eq!(tx.counters.packets, 4);
        assert_eq!(rx.counters.packets, 4);
    }
}

#[test]
fn large_packets_span_merged_receive_buffers() {
    let (sh, _tx, mut rx) = port();
    let mut g = direct(&sh, ALL);
    let p = ip(9000, 3);
    rx.send(&p).unwrap();
    let f = g.receive().unwrap();
    assert_eq!(u16::from_le_bytes([f[10], f[11]]), 5, "num_buffers");
    assert_eq!(&f[12 + 14..], &p[..]);
    // Without merged buffers a packet larger than one buffer is dropped.
    let (sh, _tx, mut rx) = port();
    let mut g = direct(&sh, F_VERSION_1 | F_MAC);
    assert_eq!(rx.send(&p), Err(viaduct_vhost::SendError::NoBuffers));
    let small = ip(100, 1);
    rx.send(&small).unwrap();
    assert_eq!(
        g.receive_packet().unwrap(),
        small,
        "the buffer was put back"
    );
}

#[test]
fn a_guest_without_receive_buffers_loses_packets_counted() {
    let (sh, _tx, mut rx) = port();
    let mut g = direct(&sh, ALL);
    let p = ip(1000, 1);
    for _ in 0..QSIZE {
        rx.send(&p).unwrap();
    }
    assert_eq!(rx.send(&p), Err(viaduct_vhost::SendError::NoBuffers));
    assert_eq!(rx.counters.no_buffers, 1);
    assert!(g.receive().is_some());
    rx.send(&p).unwrap();
}

#[test]
fn frames_that_are_not_plain_ip_are_dropped_and_counted() {
    let (sh, mut tx, _rx) = port();
    let mut g = direct(&sh, ALL);
    let mut buf = vec![0u8; 2000];
    let hl = 12;
    // ARP.
    let mut arp = vec![0u8; hl];
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&GUEST_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    assert!(g.transmit_frame(&arp));
    // An offload request (NEEDS_CSUM) that was never negotiated.
    let mut csum = vec![0u8; hl];
    csum[0] = 1;
    csum.extend_from_slice(&[0u8; 12]);
    csum.extend_from_slice(&[0x08, 0x00]);
    csum.extend_from_slice(&ip(40, 0));
    assert!(g.transmit_frame(&csum));
    // A GSO type.
    let mut gso = csum.clone();
    gso[0] = 0;
    gso[1] = 1;
    assert!(g.transmit_frame(&gso));
    // Shorter than its headers.
    assert!(g.transmit_frame(&[0u8; 10]));
    // EtherType IPv4 around an IPv6 packet.
    let mut mixed = vec![0u8; hl + 12];
    mixed.extend_from_slice(&[0x08, 0x00]);
    mixed.extend_from_slice(&[0x60; 40]);
    assert!(g.transmit_frame(&mixed));
    // Too big for the caller's buffer.
    assert!(g.transmit(&ip(2000 - 10, 0)));
    let good = ip(60, 9);
    assert!(g.transmit(&good));
    g.kick(TX);
    let n = tx.recv(&mut buf[..1500]).unwrap();
    assert_eq!(&buf[..n], &good[..]);
    let c = tx.counters;
    assert_eq!(
        (c.not_ip, c.malformed, c.too_big, c.packets),
        (1, 4, 1, 1),
        "{c:?}"
    );
}

#[test]
fn hostile_descriptor_chains_are_returned_empty_and_counted() {
    let (sh, mut tx, _rx) = port();
    let mut g = direct(&sh, ALL);
    let mut buf = vec![0u8; 70_000];
    let frame = {
        let mut f = vec![0u8; 12 + 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip(100, 0));
        f
    };
    g.write_mem(driver::buf_gpa(TX, 0), &frame);
    let b0 = driver::buf_gpa(TX, 0);
    // A loop: 0 -> 1 -> 0 (NEXT).
    g.write_desc(TX, 0, b0, 10, 1, 1);
    g.write_desc(TX, 1, b0, 10, 1, 0);
    g.make_available(TX, 0);
    // A device-writable buffer on the transmit queue.
    g.write_desc(TX, 2, b0, frame.len() as u32, 2, 0);
    g.make_available(TX, 2);
    // An indirect descriptor.
    g.write_desc(TX, 3, b0, 16, 4, 0);
    g.make_available(TX, 3);
    // A buffer outside the guest's memory.
    g.write_desc(TX, 4, driver::RAM - 8, 100, 0, 0);
    g.make_available(TX, 4);
    // A chain whose next index is past the table.
    g.write_desc(TX, 5, b0, 8, 1, QSIZE + 3);
    g.make_available(TX, 5);
    // A chain of 17 descriptors (each 1 byte), one more than allowed.
    for i in 10..26u16 {
        g.write_desc(TX, i, b0, 1, 1, i + 1);
    }
    g.write_desc(TX, 26, b0, 1, 0, 0);
    g.make_available(TX, 10);
    // A chain longer than any frame (70 kB).
    g.write_desc(TX, 80, b0, 70_000, 0, 0);
    g.make_available(TX, 80);
    // Then a good frame split over three descriptors: header, Ethernet, packet.
    g.write_desc(TX, 100, b0, 12, 1, 101);
    g.write_desc(TX, 101, b0 + 12, 14, 1, 102);
    g.write_desc(TX, 102, b0 + 26, 100, 0, 0);
    g.make_available(TX, 100);
    g.kick(TX);
    let n = tx.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &ip(100, 0)[..]);
    assert_eq!(tx.counters.bad_chains, 7, "{:?}", tx.counters);
    assert_eq!(
        g.reclaim_tx(),
        8,
        "every chain came back, the bad ones empty"
    );
    // An available index that runs ahead of the ring breaks the queue.
    g.set_avail_idx(TX, 8 + QSIZE + 1);
    assert_eq!(tx.recv(&mut buf), Err(rustix::io::Errno::AGAIN));
    assert!(sh.slot(TX).queue.as_ref().unwrap().broken().is_some());
    // The front end setting it up again repairs it.
    let s = g.session().unwrap();
    let h = viaduct_vhost::msg::Header {
        request: code::GET_VRING_BASE,
        flags: 1,
        size: 8,
    };
    s.handle(&h, viaduct_vhost::msg::Request::GetVringBase(1), vec![])
        .unwrap();
    assert!(sh.slot(TX).queue.is_none());
}

#[test]
fn a_head_outside_the_table_breaks_the_queue() {
    let (sh, mut tx, _rx) = port();
    let mut g = direct(&sh, ALL);
    g.make_available(TX, QSIZE + 5);
    g.kick(TX);
    assert_eq!(tx.recv(&mut [0u8; 2000]), Err(rustix::io::Errno::AGAIN));
    assert_eq!(
        sh.slot(TX).queue.as_ref().unwrap().broken(),
        Some(viaduct_vhost::queue::Broken::Head)
    );
}

fn refused(g: &mut Guest, req: u32, payload: &[u8], fds: Vec<OwnedFd>) -> String {
    g.request(req, payload, fds).unwrap_err()
}

#[test]
fn the_control_plane_accepts_only_its_whitelist() {
    let (sh, _tx, _rx) = port();
    let mut g = direct(&sh, ALL);
    assert!(refused(&mut g, 6, &[0; 8], vec![]).contains("SET_LOG_BASE is not accepted"));
    // Every refusal ends the session: the queues stopped.
    assert!(sh.slot(TX).queue.is_none() && sh.slot(RX).queue.is_none());

    let (sh, _tx, _rx) = port();
    let mut g = direct(&sh, ALL);
    let e = refused(&mut g, code::SET_FEATURES, &(ALL | 1).to_le_bytes(), vec![]);
    assert!(e.contains("beyond the offer"), "{e}");

    let (sh, _tx, _rx) = port();
    let mut g = direct(&sh, ALL);
    // The same table again while the queues run: accepted.
    let mut t = vec![0u8; 40];
    t[0] = 1;
    t[16..24].copy_from_slice(&driver::RAM.to_le_bytes());
    t[24..32].copy_from_slice(&driver::UVA_BASE.to_le_bytes());
    let fd = g.ram_fd.try_clone().unwrap();
    g.request(code::SET_MEM_TABLE, &t, vec![fd]).unwrap();
    assert!(sh.slot(TX).queue.is_some());
    // Another one: refused.
    t[16..24].copy_from_slice(&(driver::RAM / 2).to_le_bytes());
    let fd = g.ram_fd.try_clone().unwrap();
    let e = refused(&mut g, code::SET_MEM_TABLE, &t, vec![fd]);
    assert!(e.contains("changed while queues run"), "{e}");

    let (sh, _tx, _rx) = port();
    let mut g = direct(&sh, ALL);
    let mut st = [0u8; 8];
    st[0] = 2;
    let e = refused(&mut g, code::SET_VRING_NUM, &st, vec![]);
    assert!(e.contains("queue 2"), "{e}");

    let (sh, _tx, _rx) = port();
    let mut g = direct(&sh, ALL);
    st[0] = 1;
    st[4] = 64;
    let e = refused(&mut g, code::SET_VRING_NUM, &st, vec![]);
    assert!(e.contains("running"), "{e}");

    let (sh, _tx, _rx) = port();
    let mut g = direct(&sh, ALL);
    let e = refused(
        &mut g,
        code::SET_VRING_KICK,
        &(1u64 | 1 << 8).to_le_bytes(),
        vec![],
    );
    assert!(e.contains("polling mode"), "{e}");
}

#[test]
fn memory_that_can_shrink_is_refused() {
    let (sh, _tx, _rx) = port();
    let mut s = Session::new(sh);
    let fd = rustix::fs::memfd_create("ram", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, 1 << 20).unwrap();
    let mut t = vec![0u8; 40];
    t[0] = 1;
    t[16..24].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let h = viaduct_vhost::msg::Header {
        request: code::SET_MEM_TABLE,
        flags: 1,
        size: 40,
    };
    let r = viaduct_vhost::msg::Request::parse(&h, &t).unwrap();
    let e = s.handle(&h, r, vec![fd]).unwrap_err().to_string();
    assert!(e.contains("F_SEAL_SHRINK"), "{e}");
}

#[test]
fn rings_outside_memory_or_misaligned_are_refused() {
    let (sh, _tx, _rx) = port();
    let mut s = Session::new(sh.clone());
    let ram = viaduct_vhost::mem::sealed_memfd("ram", 1 << 20).unwrap();
    let mut run = |req: u32, p: &[u8], fds: Vec<OwnedFd>| {
        let h = viaduct_vhost::msg::Header {
            request: req,
            flags: 1,
            size: p.len() as u32,
        };
        let r = viaduct_vhost::msg::Request::parse(&h, p).unwrap();
        s.handle(&h, r, fds).map_err(|e| e.to_string())
    };
    run(code::SET_FEATURES, &(F_VERSION_1).to_le_bytes(), vec![]).unwrap();
    let mut t = vec![0u8; 40];
    t[0] = 1;
    t[16..24].copy_from_slice(&(1u64 << 20).to_le_bytes());
    t[24..32].copy_from_slice(&0x1000_0000u64.to_le_bytes());
    run(code::SET_MEM_TABLE, &t, vec![ram]).unwrap();
    run(code::SET_VRING_NUM, &[1, 0, 0, 0, 0, 1, 0, 0], vec![]).unwrap();
    let mut a = [0u8; 40];
    a[0] = 1;
    a[8..16].copy_from_slice(&(0x1000_0000u64 + (1 << 20) - 64).to_le_bytes());
    a[16..24].copy_from_slice(&0x1000_2000u64.to_le_bytes());
    a[24..32].copy_from_slice(&0x1000_1001u64.to_le_bytes());
    run(code::SET_VRING_ADDR, &a, vec![]).unwrap();
    let kick = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    let e = run(code::SET_VRING_KICK, &1u64.to_le_bytes(), vec![kick]).unwrap_err();
    assert!(e.contains("descriptor ring"), "{e}");
    assert!(sh.slot(TX).queue.is_none());
}

#[test]
fn over_a_socket_a_restarted_guest_is_served_again() {
    let dir = tempdir();
    let path = dir.join("red.sock");
    let listener = backend::listen(&path).unwrap();
    let (sh, mut tx, mut rx) = port();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (sh, stop) = (sh.clone(), stop.clone());
        std::thread::spawn(move || backend::serve(listener, sh, &stop))
    };
    for round in 0..3u8 {
        let sock = rustix::net::socket(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            None,
        )
        .unwrap();
        rustix::net::connect(&sock, &rustix::net::SocketAddrUnix::new(&path).unwrap()).unwrap();
        let mut g = Guest::new(Transport::Socket(sock), ALL).unwrap();
        // The control thread starts the queues; wait for it.
        let t0 = std::time::Instant::now();
        while sh.slot(TX).queue.is_none() || sh.slot(RX).queue.is_none() {
            assert!(t0.elapsed().as_secs() < 5, "queues never started");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let p = ip(500, round);
        assert!(g.transmit(&p));
        g.kick(TX);
        let mut buf = vec![0u8; 2000];
        let n = loop {
            match tx.recv(&mut buf) {
                Ok(n) => break n,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
            }
        };
        assert_eq!(&buf[..n], &p[..]);
        rx.send(&p).unwrap();
        assert_eq!(g.receive_packet().unwrap(), p);
        drop(g);
        let t0 = std::time::Instant::now();
        while sh.slot(TX).queue.is_some() {
            assert!(t0.elapsed().as_secs() < 5, "queues never stopped");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(rx.send(&p), Err(viaduct_vhost::SendError::NotReady));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vhost-port-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A kick descriptor that is not an eventfd: an empty blocking pipe (a
/// read would block the pump forever unless the port made it non-blocking)
/// and a regular file (always readable). Packets still pass and reads end
/// with AGAIN.
#[test]
fn a_kick_that_is_not_an_eventfd_neither_blocks_nor_breaks_the_port() {
    let (sh, mut tx, _rx) = port();
    let mut g = direct(&sh, ALL);
    let file = tempdir().join("kick-file");
    std::fs::write(&file, [7u8; 64]).unwrap();
    let (pipe_r, _pipe_w) = rustix::pipe::pipe().unwrap();
    let file_fd: OwnedFd = std::fs::File::open(&file).unwrap().into();
    for kick in [pipe_r, file_fd] {
        let mut st = [0u8; 8];
        st[0] = 1;
        g.request(code::GET_VRING_BASE, &st, vec![]).unwrap();
        assert!(sh.slot(TX).queue.is_none());
        g.request(code::SET_VRING_KICK, &1u64.to_le_bytes(), vec![kick])
            .unwrap();
        assert!(sh.slot(TX).queue.is_some());
        let p = ip(300, 5);
        assert!(g.transmit(&p));
        let mut buf = vec![0u8; 2000];
        let n = tx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &p[..]);
        assert_eq!(tx.recv(&mut buf), Err(rustix::io::Errno::AGAIN));
    }
}
