//! The pump's per-read path, through its public `Direction` API: a read
//! from red goes through `pump::Outbound` (vnet header, checksum completion,
//! TSO/USO segmentation, the left engine's outbound path, UDP batching for
//! black) and every frame it writes to black is read back and handed, as a
//! black read, to the right's `pump::Inbound` (ESP-in-UDP super-packets cut
//! in place, the right engine's inbound path, GRO coalescing for red). The
//! two engines have mirrored policies and keys (`viaduct_fuzz::policy`), so
//! what the left seals the right opens. The ports are SOCK_SEQPACKET socket
//! pairs standing in for the TUN devices.
//!
//! Input: `[params: 4 bytes]` (see `Params::decode`), `[ports]` (bit 0 red
//! ports carry vnet headers, bit 1 black ports carry vnet headers with UDP
//! segmentation, bit 2 GRO on the right's red, bit 3 red ports negotiated
//! TSO), then up to 64 operations `[op][len: 2 bytes BE][data]`: `op & 3` =
//! 0 a read from the left's red port, 1 a read from the right's black port,
//! 2 end of a batch (flushes), 3 the counters' reports. Every input ends
//! with an end of batch on both sides.
//!
//! Checked: nothing panics; every frame written to the right's red port is
//! at most a vnet header and 65 535 bytes, and a coalesced frame splits
//! again.
#![no_main]

use std::fs::File;
use std::os::fd::OwnedFd;

use libfuzzer_sys::fuzz_target;
use viaduct::offload::{gso_split, VnetHdr, GSO_NONE, VNET_HDR_LEN};
use viaduct::pump::{Direction, Inbound, Outbound, PumpConfig};
use viaduct::tun::{Port, OFFLOAD_TCP, OFFLOAD_USO};
use viaduct::Timestamp;
use viaduct_fuzz::*;

const FRAME_MAX: usize = VNET_HDR_LEN + 65_535;

/// A non-blocking SOCK_SEQPACKET pair: (the pump's end, ours).
fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    use rustix::net::{socketpair, sockopt, AddressFamily, SocketFlags, SocketType};
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair");
    for fd in [&a, &b] {
        let _ = sockopt::set_socket_send_buffer_size(fd, 4 << 20);
    }
    (a, b)
}

/// Every datagram waiting on `fd` (non-blocking).
fn drain(fd: &OwnedFd, buf: &mut [u8]) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    while let Ok(n) = rustix::io::read(fd, &mut *buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

struct World {
    /// The left's black port: (pump end, our end).
    black: (OwnedFd, OwnedFd),
    /// The right's red port.
    red: (OwnedFd, OwnedFd),
    /// Stands in for the input ports (the target calls `handle` itself).
    null: File,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

thread_local! {
    static WORLD: std::cell::RefCell<World> = std::cell::RefCell::new(World {
        black: seqpacket_pair(),
        red: seqpacket_pair(),
        null: File::open("/dev/null").expect("/dev/null"),
        buf: vec![0u8; 1 << 17],
        scratch: vec![0u8; 65_535 + 40],
    });
}

fn port(fd: &OwnedFd, vnet: bool, offloads: u32) -> Port {
    Port {
        fd: fd.try_clone().expect("dup"),
        vnet,
        offloads: if vnet { offloads } else { 0 },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let head = input.bytes(Params::LEN);
    let mut h = [0u8; Params::LEN];
    h[..head.len()].copy_from_slice(head);
    let p = Params::decode(h);
    let ports = input.u8();
    let red_vnet = ports & 1 != 0;
    let black_vnet = ports & 2 != 0;
    let gro = ports & 4 != 0;
    let red_offloads = if ports & 8 != 0 { OFFLOAD_TCP } else { 0 };
    let now = Timestamp(0);

    WORLD.with(|w| {
        let w = &mut *w.borrow_mut();
        // Nothing is left over from an earlier input.
        drain(&w.black.1, &mut w.buf);
        drain(&w.red.1, &mut w.buf);
        let null: OwnedFd = w.null.try_clone().expect("dup").into();

        let (left_out, _, _) = engine(&policy(&p, Side::Left), now).split();
        let (_, right_in, _) = engine(&policy(&p, Side::Right), now).split();
        let mut out = Outbound::new(
            left_out,
            port(&null, red_vnet, red_offloads),
            port(&w.black.0, black_vnet, OFFLOAD_USO),
        );
        let mut inb = Inbound::new(
            right_in,
            port(&null, black_vnet, OFFLOAD_USO),
            port(&w.red.0, red_vnet, red_offloads),
            PumpConfig { gro },
        );

        let mut red_frames: Vec<Vec<u8>> = Vec::new();
        // Hands what the left wrote to black to the right, as black reads.
        let forward = |w: &mut World, inb: &mut Inbound, red_frames: &mut Vec<Vec<u8>>| {
            for mut f in drain(&w.black.1, &mut w.buf) {
                inb.handle(&mut f, now);
            }
            red_frames.extend(drain(&w.red.1, &mut w.buf));
        };

        for _ in 0..64 {
            if input.is_empty() {
                break;
            }
            let op = input.u8();
            let rec = input.record();
            match op & 3 {
                0 => {
                    let mut read = rec.to_vec();
                    out.handle(&mut read, now);
                    forward(w, &mut inb, &mut red_frames);
                }
                1 => {
                    let mut read = rec.to_vec();
                    inb.handle(&mut read, now);
                    red_frames.extend(drain(&w.red.1, &mut w.buf));
                }
                2 => {
                    out.end_batch(now);
                    forward(w, &mut inb, &mut red_frames);
                    inb.end_batch(now);
                    red_frames.extend(drain(&w.red.1, &mut w.buf));
                }
                _ => {
                    let _ = out.report();
                    let _ = inb.report();
                }
            }
        }
        out.end_batch(now);
        forward(w, &mut inb, &mut red_frames);
        inb.end_batch(now);
        red_frames.extend(drain(&w.red.1, &mut w.buf));

        for f in &red_frames {
            assert!(f.len() <= FRAME_MAX, "a frame of {} bytes on red", f.len());
            if red_vnet {
                let fh = VnetHdr::parse(f).expect("a red frame starts with a vnet header");
                if fh.gso_type != GSO_NONE {
                    gso_split(&f[VNET_HDR_LEN..], &fh, &mut w.scratch, |_| ())
                        .expect("a coalesced frame splits");
                }
            }
        }
    });
});
