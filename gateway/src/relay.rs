//! Black's management relay: runs inside the black personality (started by
//! its compartment init, as untrusted as the rest of black) and copies bytes
//! between TCP connections on the plan's management port and the init's
//! socket at [`crate::update::BLACK_DIR`]. It understands nothing of what it
//! carries: every endpoint behind it authenticates what it acts on.
//!
//! At most [`MAX_CONNECTIONS`] streams at once; a stream idle for
//! [`IDLE`] is closed.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Streams relayed at once.
pub const MAX_CONNECTIONS: usize = 4;
/// Longest silence on a stream.
pub const IDLE: Duration = Duration::from_secs(120);

fn pump(mut from: impl Read, mut to: impl Write) -> u64 {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return total,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return total;
                }
                total += n as u64;
            }
        }
    }
}

fn relay(tcp: TcpStream, socket: &Path) {
    let peer = tcp
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let unix = match UnixStream::connect(socket) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("relay: {peer}: the init's socket: {e}");
            return;
        }
    };
    for t in [Some(IDLE), Some(IDLE)] {
        let _ = tcp.set_read_timeout(t);
        let _ = unix.set_read_timeout(t);
    }
    let (Ok(tcp2), Ok(unix2)) = (tcp.try_clone(), unix.try_clone()) else {
        eprintln!("relay: {peer}: cannot clone the streams");
        return;
    };
    let up = std::thread::spawn(move || {
        let n = pump(&tcp2, &unix2);
        let _ = unix2.shutdown(Shutdown::Write);
        n
    });
    let down = pump(&unix, &tcp);
    let _ = tcp.shutdown(Shutdown::Both);
    let _ = unix.shutdown(Shutdown::Both);
    let up = up.join().unwrap_or(0);
    eprintln!("relay: {peer}: {up} bytes in, {down} bytes out");
}

/// Listens on `port` (IPv6 and IPv4, or IPv4 alone) and relays each stream
/// to `socket`. Returns only if the port cannot be bound.
pub fn run(port: u16, socket: &Path) -> std::io::Error {
    let listener = match TcpListener::bind(("::", port)) {
        Ok(l) => l,
        Err(_) => match TcpListener::bind(("0.0.0.0", port)) {
            Ok(l) => l,
            Err(e) => return e,
        },
    };
    eprintln!("relay: management port {port} open");
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = tcp.shutdown(Shutdown::Both);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (mine, socket) = (Arc::clone(&active), socket.to_owned());
        let spawned = std::thread::Builder::new().spawn(move || {
            relay(tcp, &socket);
            mine.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            // The thread (and its stream) never ran.
            active.fetch_sub(1, Ordering::SeqCst);
            eprintln!("relay: cannot start a thread");
        }
    }
    std::io::Error::other("the listener stopped")
}
