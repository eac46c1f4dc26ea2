//! The management link of a VM's black: black's relay (in its guest) and the
//! init's management socket joined over one byte stream, a virtio serial
//! port of black's VMM (`appliance.mgmt`), whose host end is a Unix socket
//! the init's bridge process accepts.
//!
//! A TCP stream has two independent directions that each end (the update
//! protocol's request ends with the client's half-close). A serial port has
//! neither ends nor several streams, so the link carries **frames**:
//!
//! ```text
//! u8 kind   1 data, 2 end (this direction of the session is over), 3 reset (abandoned)
//! u16 BE    payload length: data 1..=MAX_PAYLOAD, end and reset 0
//! payload
//! ```
//!
//! One session at a time: the guest's relay sends a session's request as
//! data frames and `end` (or `reset`); the init's side answers with data
//! frames and `end`. A session is over once each side has read the other's
//! `end` (or a `reset`); the next begins with the guest's next frame.
//!
//! The init's side ([`bridge`]) is trusted and parses what the guest sends:
//! anything but a well-formed frame ends the connection (the VMM reconnects
//! and the next session starts clean); a session silent for
//! [`SESSION_IDLE`] is dropped the same way. Nothing here panics, whatever
//! the input.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// Largest data payload.
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// The virtio serial port's name (the guest finds it in
/// `/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "appliance.mgmt";
/// Longest silence within a session.
pub const SESSION_IDLE: Duration = Duration::from_secs(120);

const DATA: u8 = 1;
const END: u8 = 2;
const RESET: u8 = 3;

/// A frame read from the link.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Bytes of the session's stream.
    Data(Vec<u8>),
    /// This direction of the session is over.
    End,
    /// The session is abandoned.
    Reset,
}

/// A frame's header and payload, encoded.
pub fn encode(frame: &Frame) -> Vec<u8> {
    match frame {
        Frame::Data(d) => {
            let mut v = Vec::with_capacity(3 + d.len());
            v.push(DATA);
            v.extend_from_slice(&(d.len() as u16).to_be_bytes());
            v.extend_from_slice(d);
            v
        }
        Frame::End => vec![END, 0, 0],
        Frame::Reset => vec![RESET, 0, 0],
    }
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// Reads one frame; `Ok(None)` when the link ended cleanly before a frame.
/// A malformed header is an error (`InvalidData`), never a panic.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<Frame>> {
    let mut h = [0u8; 3];
    let mut got = 0;
    while got < 3 {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = usize::from(u16::from_be_bytes([h[1], h[2]]));
    match h[0] {
        DATA if (1..=MAX_PAYLOAD).contains(&len) => {
            let mut d = vec![0u8; len];
            r.read_exact(&mut d)?;
            Ok(Some(Frame::Data(d)))
        }
        END if len == 0 => Ok(Some(Frame::End)),
        RESET if len == 0 => Ok(Some(Frame::Reset)),
        k => Err(invalid(format!("frame kind {k} with length {len}"))),
    }
}

/// Sends what `from` yields as data frames, then `end` when it ends (or
/// `reset` when reading it fails). Returns the bytes sent.
fn stream_to_link(mut from: impl Read, mut link: impl Write) -> u64 {
    let mut buf = vec![0u8; MAX_PAYLOAD];
    let mut total = 0u64;
    let last = loop {
        match from.read(&mut buf) {
            Ok(0) => break Frame::End,
            Ok(n) => {
                if link
                    .write_all(&encode(&Frame::Data(buf[..n].to_vec())))
                    .is_err()
                {
                    return total;
                }
                total += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break Frame::Reset,
        }
    };
    let _ = link.write_all(&encode(&last));
    total
}

/// How a session's incoming direction ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// `end` or `reset` read: the link is aligned for the next session.
    Frame(Frame),
    /// The link failed or sent garbage: it must be dropped.
    Broken,
}

/// Writes the data frames of one session's direction into `to` until `end`
/// or `reset`; keeps reading (and dropping) if `to` fails, so that the link
/// stays aligned. `done` runs on `to` when the direction ends.
fn link_to_stream<W: Write>(
    link: &mut impl Read,
    to: &mut W,
    mut done: impl FnMut(&mut W, &Frame),
) -> (Ended, u64) {
    let mut total = 0u64;
    let mut writable = true;
    loop {
        match read_frame(link) {
            Ok(Some(Frame::Data(d))) => {
                if writable && to.write_all(&d).is_err() {
                    writable = false;
                }
                total += d.len() as u64;
            }
            Ok(Some(f)) => {
                done(to, &f);
                return (Ended::Frame(f), total);
            }
            Ok(None) | Err(_) => {
                done(to, &Frame::Reset);
                return (Ended::Broken, total);
            }
        }
    }
}

/// The init's side, in a process of its own: accepts the VMM's connection
/// on `listener` and serves its sessions one after another, each on a new
/// connection to the init's management socket at `socket`. Returns only if
/// the listener fails.
pub fn bridge(listener: UnixListener, socket: &Path) -> std::io::Error {
    loop {
        let link = match listener.accept() {
            Ok((l, _)) => l,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return e,
        };
        serve_link(link, socket);
    }
}

fn serve_link(mut link: UnixStream, socket: &Path) {
    loop {
        // Between sessions the link may stay silent for ever.
        let _ = link.set_read_timeout(None);
        let first = match read_frame(&mut link) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                eprintln!("mgmt-link: {e}; dropping the link");
                return;
            }
        };
        let _ = link.set_read_timeout(Some(SESSION_IDLE));
        let Ok(mut write_link) = link.try_clone() else {
            return;
        };
        let unix = UnixStream::connect(socket)
            .map_err(|e| eprintln!("mgmt-link: the init's socket: {e}"))
            .ok();
        // Back toward the guest, in its own thread (the answer may begin
        // before the request ends): the answer, then `end`.
        let down = match unix.as_ref().and_then(|u| u.try_clone().ok()) {
            Some(u) => {
                let _ = u.set_read_timeout(Some(SESSION_IDLE));
                std::thread::spawn(move || stream_to_link(&u, &mut write_link))
            }
            None => std::thread::spawn(move || {
                let _ = write_link.write_all(&encode(&Frame::End));
                0
            }),
        };
        // Toward the init: the first frame, then the rest of the session.
        let close = |u: &mut &UnixStream, f: &Frame| {
            let _ = u.shutdown(if *f == Frame::End {
                Shutdown::Write
            } else {
                Shutdown::Both
            });
        };
        let (ended, up) = match (first, unix.as_ref()) {
            (Frame::Data(d), Some(mut u)) => {
                let _ = u.write_all(&d);
                let (e, n) = link_to_stream(&mut link, &mut u, close);
                (e, n + d.len() as u64)
            }
            (Frame::Data(_), None) => link_to_stream(&mut link, &mut std::io::sink(), |_, _| {}),
            (f, u) => {
                // An empty request (`end` at once) still gets its answer.
                if let Some(mut u) = u {
                    close(&mut u, &f);
                }
                (Ended::Frame(f), 0)
            }
        };
        if ended == Ended::Broken {
            if let Some(u) = &unix {
                let _ = u.shutdown(Shutdown::Both);
            }
        }
        let down = down.join().unwrap_or(0);
        eprintln!("mgmt-link: session: {up} bytes in, {down} bytes out");
        if ended == Ended::Broken {
            eprintln!("mgmt-link: the link broke or sent a malformed frame; dropping it");
            return;
        }
    }
}

/// Black's relay inside its VM: listens on `port` (IPv6 and IPv4, or IPv4
/// alone) and carries each TCP stream, one at a time, over the serial port
/// `device`. Returns only if the port or the device cannot be used.
pub fn relay_serial(port: u16, device: &Path) -> std::io::Error {
    let listener = match TcpListener::bind(("::", port)) {
        Ok(l) => l,
        Err(_) => match TcpListener::bind(("0.0.0.0", port)) {
            Ok(l) => l,
            Err(e) => return e,
        },
    };
    let link = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
    {
        Ok(f) => f,
        Err(e) => return e,
    };
    eprintln!(
        "relay: management port {port} open, over {}",
        device.display()
    );
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        let _ = tcp.set_read_timeout(Some(SESSION_IDLE));
        let (Ok(tcp_in), Ok(link_out), Ok(mut link_in)) =
            (tcp.try_clone(), link.try_clone(), link.try_clone())
        else {
            return std::io::Error::other("cannot clone the streams");
        };
        let up = std::thread::spawn(move || stream_to_link(&tcp_in, link_out));
        let mut tcp_out = &tcp;
        let (ended, down) = link_to_stream(&mut link_in, &mut tcp_out, |t, _| {
            let _ = t.shutdown(Shutdown::Write);
        });
        let up = up.join().unwrap_or(0);
        let _ = tcp.shutdown(Shutdown::Both);
        eprintln!("relay: session: {up} bytes in, {down} bytes out");
        if ended == Ended::Broken {
            return std::io::Error::other("the management link broke");
        }
    }
    std::io::Error::other("the listener stopped")
}

/// Finds black's management port among the guest's virtio serial ports
/// (`sysfs` is `/sys`): its device node, `/dev/vportNpM`.
pub fn find_port(sysfs: &Path) -> Option<std::path::PathBuf> {
    let dir = std::fs::read_dir(sysfs.join("class/virtio-ports")).ok()?;
    dir.flatten().find_map(|e| {
        let name = std::fs::read_to_string(e.path().join("name")).ok()?;
        (name.trim() == PORT_NAME).then(|| Path::new("/dev").join(e.file_name()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_and_bad_headers_are_errors() {
        for f in [
            Frame::Data(vec![1, 2, 3]),
            Frame::Data(vec![7; MAX_PAYLOAD]),
            Frame::End,
            Frame::Reset,
        ] {
            let b = encode(&f);
            assert_eq!(read_frame(&mut &b[..]).unwrap(), Some(f));
        }
        assert_eq!(read_frame(&mut &[][..]).unwrap(), None);
        for bad in [
            &[1u8, 0, 0][..], // empty data
            &[1, 0x40, 0x01], // longer than MAX_PAYLOAD
            &[2, 0, 1, 0],    // end with a payload
            &[3, 0, 5],       // reset with a length
            &[9, 0, 0],       // unknown kind
            &[1, 0],          // truncated header
            &[1, 0, 4, 1, 2], // truncated payload
        ] {
            assert!(read_frame(&mut &bad[..]).is_err(), "{bad:?}");
        }
    }

    /// A whole session over a socketpair standing for the serial port: the
    /// guest's relay side against the init's bridge side, with the init's
    /// management socket played by a server that answers after the
    /// request's half-close; two sessions in a row stay aligned.
    #[test]
    fn sessions_carry_half_closed_requests_and_stay_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("mgmt.sock");
        let server = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            for c in server.incoming() {
                let mut c = c.unwrap();
                let mut req = Vec::new();
                c.read_to_end(&mut req).unwrap();
                c.write_all(format!("got {} bytes", req.len()).as_bytes())
                    .unwrap();
            }
        });
        let (host, guest) = UnixStream::pair().unwrap();
        let path = sock.clone();
        std::thread::spawn(move || serve_link(host, &path));
        for size in [5usize, 3 * MAX_PAYLOAD + 17] {
            let mut g_out = guest.try_clone().unwrap();
            let mut g_in = guest.try_clone().unwrap();
            let req = vec![0x5a; size];
            stream_to_link(&req[..], &mut g_out);
            let mut answer = Vec::new();
            let (ended, _) = link_to_stream(&mut g_in, &mut answer, |_, _| {});
            assert_eq!(ended, Ended::Frame(Frame::End));
            assert_eq!(
                String::from_utf8(answer).unwrap(),
                format!("got {size} bytes")
            );
        }
        // Garbage from the guest: the bridge drops the link (EOF here).
        let mut g = guest.try_clone().unwrap();
        g.write_all(&[9, 9, 9]).unwrap();
        g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let _ = g.read_to_end(&mut rest);
        assert!(
            rest.is_empty() || rest.ends_with(&encode(&Frame::End)),
            "{rest:?}"
        );
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut r = &b[..];
            while let Ok(Some(_)) = read_frame(&mut r) {}
        }
    }
}
