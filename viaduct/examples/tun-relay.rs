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

use std::process::ExitCode;

use viaduct::pump::{self, Control, Direction, Port};
use viaduct::tun::{self, OffloadRequest};
use viaduct::Timestamp;

/// One direction: every read goes to the other port as it came, through the
/// Viaduct's own pump loop (same polling, turns and batch sizes).
struct Relay {
    from: Port,
    to: Port,
    name: &'static str,
}

impl Direction for Relay {
    fn input(&self) -> &Port {
        &self.from
    }

    fn input_mut(&mut self) -> &mut Port {
        &mut self.from
    }

    fn input_name(&self) -> &'static str {
        self.name
    }

    fn handle(&mut self, read: &mut [u8], _now: Timestamp) {
        // A full queue on the other side drops the frame, as a link would.
        let _ = self.to.write_frame(read);
    }

    fn end_batch(&mut self, _now: Timestamp) {}

    fn report(&self) -> String {
        String::new()
    }
}

fn open(name: &str, netns: &str) -> Result<tun::Port, String> {
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
    let ctl = std::sync::Arc::new(Control::default());
    let c = ctl.clone();
    let out = std::thread::spawn(move || {
        let mut d = Relay {
            from: red.into(),
            to: black.into(),
            name: "red",
        };
        pump::run(&mut [&mut d], &c)
    });
    let inb = std::thread::spawn(move || {
        let mut d = Relay {
            from: black2.into(),
            to: red2.into(),
            name: "black",
        };
        pump::run(&mut [&mut d], &ctl)
    });
    for t in [out, inb] {
        if let Ok(Err(e)) = t.join() {
            eprintln!("tun-relay: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
