//! The vhost-user port as a hostile VMM and guest see it: a sequence of
//! operations, each either a vhost-user message to the session (with the
//! descriptors it names: a 64 KiB sealed memfd as guest memory, eventfds
//! for kicks and calls), a write of arbitrary bytes into that guest memory
//! (rings, descriptors, frames), or data-path work: the transmit half
//! reading frames, the receive half writing packets.
//!
//! Nothing may panic; every packet the transmit half hands over is an IPv4
//! or IPv6 packet no longer than the caller's buffer.
//!
//! Input: repeated `op:u8` then
//! - op % 4 == 0: `request:u8 len:u8 payload[len]` (a message);
//! - op % 4 == 1: `offset:u16 len:u8 bytes[len]` (guest memory write);
//! - op % 4 == 2: up to `n:u8 % 8` transmit reads;
//! - op % 4 == 3: `len:u16` then a receive of an IPv4 packet of
//!   `len % 9000` bytes, then both halves finish.
#![no_main]

use std::os::fd::OwnedFd;

use libfuzzer_sys::fuzz_target;
use viaduct_vhost::msg::{Header, Request, VERSION};
use viaduct_vhost::net::{GUEST_MAC_RED, VIADUCT_MAC};
use viaduct_vhost::{PortShared, Session};

const RAM: u64 = 64 * 1024;

fn ev() -> OwnedFd {
    rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK)
        .unwrap()
}

fuzz_target!(|data: &[u8]| {
    let ram = viaduct_vhost::mem::sealed_memfd("fuzz-ram", RAM).unwrap();
    let shared = PortShared::new("red", GUEST_MAC_RED, VIADUCT_MAC).unwrap();
    let (mut tx, mut rx) = shared.halves();
    let mut session = Session::new(shared.clone());
    let mut buf = vec![0u8; 2048];
    let mut d = data;
    let take = |n: usize, d: &mut &[u8]| -> Option<Vec<u8>> {
        if d.len() < n {
            return None;
        }
        let (a, b) = d.split_at(n);
        *d = b;
        Some(a.to_vec())
    };
    while let Some(op) = take(1, &mut d) {
        match op[0] % 4 {
            0 => {
                let Some(h) = take(2, &mut d) else { break };
                let Some(payload) = take(h[1] as usize, &mut d) else { break };
                let header = Header {
                    request: h[0] as u32 % 24,
                    flags: VERSION,
                    size: payload.len() as u32,
                };
                let Ok(req) = Request::parse(&header, &payload) else {
                    session.reset();
                    continue;
                };
                let fds: Vec<OwnedFd> = (0..req.fds())
                    .map(|_| match req {
                        Request::SetMemTable(_) => ram.try_clone().unwrap(),
                        _ => ev(),
                    })
                    .collect();
                if session.handle(&header, req, fds).is_err() {
                    session.reset();
                }
            }
            1 => {
                let Some(h) = take(3, &mut d) else { break };
                let off = u16::from_le_bytes([h[0], h[1]]) as u64;
                let Some(bytes) = take(h[2] as usize, &mut d) else { break };
                let _ = rustix::io::pwrite(&ram, &bytes, off);
            }
            2 => {
                let Some(n) = take(1, &mut d) else { break };
                for _ in 0..n[0] % 8 {
                    match tx.recv(&mut buf[..1500]) {
                        Ok(len) => {
                            assert!(len <= 1500);
                            assert!(matches!(buf[0] >> 4, 4 | 6));
                        }
                        Err(_) => break,
                    }
                }
            }
            _ => {
                let Some(l) = take(2, &mut d) else { break };
                let len = (u16::from_le_bytes([l[0], l[1]]) as usize % 9000).max(20);
                let mut p = vec![0x45u8; len];
                p[1] = 0;
                let _ = rx.send(&p);
                rx.finish();
                tx.finish();
            }
        }
    }
});
