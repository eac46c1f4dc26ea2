//! The ceiling of a data plane between two TUN ports on this host: moves
//! every frame from red to black and back unchanged — no ESP, no
//! segmentation, no checksums — with the same vnet headers and offloads the
//! Viaduct negotiates on red (TCP/UDP segmentation, checksum offload) on
//! both ports, so TCP super-packets cross whole.
//!
//! `bench/netns-throughput.sh` runs two of these in the Viaducts' place
//! (`BENCH_RELAY=1`): whatever a TUN-port data plane does on top of the four
//! TUN crossings (crypto, cutting super-packets, checksums) can only make
//! it slower than this.
//!
//! `tun-relay <red> <red-netns> <black> <black-netns>`; SIGTERM/SIGINT stop it.

use std::os::fd::AsFd;
use std::process::ExitCode;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use viaduct::offload::VNET_HDR_LEN;
use viaduct::tun::{self, OffloadRequest, Port};

/// One direction: read a frame, write it to the other port, until an error.
fn relay(from: Port, to: Port) -> std::io::Result<()> {
    let mut buf = vec![0u8; VNET_HDR_LEN + 65_535];
    loop {
        let mut fds = [PollFd::new(&from.fd, PollFlags::IN)];
        match poll(&mut fds, None) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        loop {
            let n = match rustix::io::read(from.fd.as_fd(), &mut buf[..]) {
                Ok(n) => n,
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            // A full queue on the other side drops the frame, as a link would.
            let _ = rustix::io::write(&to.fd, &buf[..n]);
        }
    }
}

fn open(name: &str, netns: &str) -> Result<Port, String> {
    let fd = tun::open_in_netns(name, netns, true).map_err(|e| e.to_string())?;
    tun::negotiate(fd, true, OffloadRequest::RED, name).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [red, red_ns, black, black_ns] = &args[..] else {
        eprintln!("usage: tun-relay <red> <red-netns> <black> <black-netns>");
        return ExitCode::from(2);
    };
    let ports = open(red, red_ns).and_then(|r| Ok((r, open(black, black_ns)?)));
    let (red, black) = match ports {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tun-relay: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "tun-relay: red offloads {}; black offloads {}",
        red.describe_offloads(),
        black.describe_offloads()
    );
    let (red2, black2) = match (red.try_clone(), black.try_clone()) {
        (Ok(r), Ok(b)) => (r, b),
        _ => {
            eprintln!("tun-relay: cannot duplicate the port descriptors");
            return ExitCode::from(1);
        }
    };
    let out = std::thread::spawn(move || relay(red, black));
    let inb = std::thread::spawn(move || relay(black2, red2));
    for t in [out, inb] {
        if let Ok(Err(e)) = t.join() {
            eprintln!("tun-relay: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
