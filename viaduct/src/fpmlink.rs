//! The router role's link to black's routing daemon: FRR's zebra, loaded
//! with `dplane_fpm_nl`, connects to a TCP listening socket made inside
//! black's network namespace (by the gateway's init, or by `--fpm-listen`)
//! and streams its forwarding table; the Viaduct reads it with
//! [`crate::fpm::FpmReader`] and applies each route to the learned table
//! ([`crate::router::Routes`]), where only what the profile allows is
//! admitted.
//!
//! Everything on this link comes from black and is hostile: a malformed
//! frame ends the connection (the daemon reconnects and sends its whole
//! table again), and whenever a connection ends, every learned route is
//! withdrawn, so that the Viaduct never routes by a table black no longer
//! stands behind. One connection at a time; the Viaduct never writes to
//! it. Refused routes are counted (`routes … refused_<why>=N`) and the
//! first [`LOGGED_REFUSALS`] of each connection are logged.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use crate::error::EngineError;
use crate::fpm::{FpmReader, Message, RouteOp};
use crate::router::Routes;

/// Refusals logged per connection; the rest are counted only.
pub const LOGGED_REFUSALS: usize = 32;

/// The main routing table's number: routes of other tables (VRFs) are not
/// black's forwarding table towards the internet and are ignored.
pub const MAIN_TABLE: u32 = 254;

/// What one connection did to the table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Routes added.
    pub added: u64,
    /// Routes withdrawn.
    pub withdrawn: u64,
    /// Routes refused.
    pub refused: u64,
    /// Messages ignored (another table, nexthops, neighbours ...).
    pub ignored: u64,
    /// Refusals still to be logged before [`LOGGED_REFUSALS`].
    pub log_left: usize,
}

impl Applied {
    /// A fresh count for a new connection.
    pub fn new() -> Applied {
        Applied {
            log_left: LOGGED_REFUSALS,
            ..Applied::default()
        }
    }
}

/// Applies one frame's messages to `routes` (sans-IO); returns the lines
/// to log, for the caller to write once it no longer holds the table (the
/// pump threads read it for every packet).
pub fn apply(routes: &mut Routes, messages: &[Message], a: &mut Applied) -> Vec<String> {
    let mut lines = Vec::new();
    for m in messages {
        let r = match m {
            Message::Route(r) if r.table == MAIN_TABLE => r,
            _ => {
                a.ignored += 1;
                continue;
            }
        };
        let p = policy_blob::Prefix::new(r.prefix, r.len);
        match r.op {
            RouteOp::Add => match routes.add(p) {
                Ok(crate::router::Learned::Added) => a.added += 1,
                Ok(_) => {}
                Err(why) => {
                    a.refused += 1;
                    if a.log_left > 0 {
                        a.log_left -= 1;
                        lines.push(format!(
                            "viaduct: fpm: route {}/{} (protocol {}) refused: {}{}",
                            r.prefix,
                            r.len,
                            r.protocol,
                            why.name(),
                            if a.log_left == 0 {
                                "; further refusals on this connection are counted only"
                            } else {
                                ""
                            }
                        ));
                    }
                }
            },
            RouteOp::Remove => {
                if routes.remove(p) == crate::router::Learned::Withdrawn {
                    a.withdrawn += 1;
                }
            }
        }
    }
    lines
}

/// A TCP listening socket on `addr`, made inside the network namespace at
/// `netns` when given (the calling thread returns to its own namespace,
/// even on failure). Non-blocking, close-on-exec, backlog 1.
pub fn listen(addr: SocketAddr, netns: Option<&str>) -> Result<OwnedFd, EngineError> {
    let nserr = |path: &str, e: std::io::Error| EngineError::Netns {
        path: path.to_owned(),
        source: e,
    };
    let make = || -> std::io::Result<OwnedFd> {
        let family = match addr.ip() {
            IpAddr::V4(_) => AddressFamily::INET,
            IpAddr::V6(_) => AddressFamily::INET6,
        };
        let s = rustix::net::socket_with(
            family,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        rustix::net::sockopt::set_socket_reuseaddr(&s, true)?;
        rustix::net::bind(&s, &addr)?;
        rustix::net::listen(&s, 1)?;
        Ok(s)
    };
    let io = |e: std::io::Error| EngineError::Io {
        port: "fpm",
        source: e,
    };
    let Some(ns) = netns else {
        return make().map_err(io);
    };
    let own = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(|e| nserr("/proc/thread-self/ns/net", e))?;
    let target = std::fs::File::open(ns).map_err(|e| nserr(ns, e))?;
    move_into_link_name_space(target.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| nserr(ns, e.into()))?;
    let made = make();
    move_into_link_name_space(own.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| nserr("/proc/thread-self/ns/net", e.into()))?;
    made.map_err(io)
}

/// Adopts an inherited listening socket: a stream socket, made
/// non-blocking.
pub fn adopt(fd: OwnedFd) -> Result<OwnedFd, EngineError> {
    let bad = |e: std::io::Error| EngineError::Io {
        port: "fpm",
        source: e,
    };
    let ty = rustix::net::sockopt::socket_type(&fd).map_err(|e| bad(e.into()))?;
    if ty != SocketType::STREAM {
        return Err(bad(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the --fpm-fd descriptor is not a stream socket",
        )));
    }
    rustix::io::ioctl_fionbio(&fd, true).map_err(|e| bad(e.into()))?;
    Ok(fd)
}

/// Waits until `fd` is readable (`true`) or `stop` is set (`false`).
fn readable(fd: &OwnedFd, stop: &AtomicBool) -> Result<bool, Errno> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let mut p = [PollFd::new(fd, PollFlags::IN)];
        let t = Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        match poll(&mut p, Some(&t)) {
            Ok(0) | Err(Errno::INTR) => continue,
            Ok(_) => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// Serves black's daemon on `listener` until `stop`: one connection at a
/// time, its frames applied to `routes`; when it ends (closed, or refused
/// for a malformed frame), every learned route is withdrawn.
pub fn serve(listener: OwnedFd, routes: Arc<RwLock<Routes>>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match readable(&listener, stop) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                eprintln!("viaduct: fpm: {e}");
                return;
            }
        }
        let sock =
            match rustix::net::accept_with(&listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)
            {
                Ok(s) => s,
                Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                Err(e) => {
                    eprintln!("viaduct: fpm: accept: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            };
        eprintln!("viaduct: fpm: black's routing daemon connected");
        let mut reader = FpmReader::new();
        let mut a = Applied::new();
        let end = loop {
            match readable(&sock, stop) {
                Ok(true) => {}
                Ok(false) => break "the Viaduct stops".to_string(),
                Err(e) => break e.to_string(),
            }
            let n = match rustix::io::read(&sock, &mut buf) {
                Ok(0) => break "closed by black".to_string(),
                Ok(n) => n,
                Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                Err(e) => break e.to_string(),
            };
            if let Err(e) = reader.push(buf.get(..n).unwrap_or_default()) {
                break format!("refused: {e}");
            }
            let failed = loop {
                match reader.next_frame() {
                    Ok(Some(msgs)) => {
                        let lines = {
                            let mut t = routes.write().unwrap_or_else(PoisonError::into_inner);
                            apply(&mut t, &msgs, &mut a)
                        };
                        for l in lines {
                            eprintln!("{l}");
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(format!("refused: {e}")),
                }
            };
            if let Some(f) = failed {
                break f;
            }
        };
        drop(sock);
        let cleared = routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear_learned();
        eprintln!(
            "viaduct: fpm: connection ended ({end}): {} frames, {} routes added, {} withdrawn, {} refused, {} messages ignored; {cleared} learned routes withdrawn",
            reader.frames(),
            a.added,
            a.withdrawn,
            a.refused,
            a.ignored
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_blob::{LearnPolicy, Policy, Prefix, PrefixRange, RouteVia};

    fn pre(s: &str) -> Prefix {
        let (a, l) = s.split_once('/').unwrap();
        Prefix::new(a.parse().unwrap(), l.parse().unwrap())
    }

    /// FRR 8.4's stream (nexthop groups) applied to a router allowing
    /// 198.18.0.0/15 and 203.0.113.0/24 le 25, martians allowed: the
    /// statics it holds are admitted, the rest refused, withdrawals taken.
    #[test]
    fn frrs_stream_is_applied_within_the_allowed_ranges() {
        let policy = Policy::new("r", "1")
            .with_route(pre("10.1.0.0/24"), RouteVia::Red)
            .with_learn(LearnPolicy {
                allow: vec![
                    PrefixRange {
                        prefix: pre("198.18.0.0/15"),
                        min_len: 15,
                        max_len: 15,
                    },
                    PrefixRange {
                        prefix: pre("203.0.113.0/24"),
                        min_len: 24,
                        max_len: 25,
                    },
                ],
                max_routes: 10,
                martians: true,
            });
        let mut routes = Routes::new(&policy).unwrap();
        let data = include_bytes!("../tests/data/fpm/frr-8.4-nexthop-groups.bin");
        let mut reader = FpmReader::new();
        reader.push(data).unwrap();
        let mut a = Applied::new();
        let mut lines = Vec::new();
        while let Some(m) = reader.next_frame().unwrap() {
            lines.extend(apply(&mut routes, &m, &mut a));
        }
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(
            lines[0]
                .starts_with("viaduct: fpm: route 10.9.0.0/24 (protocol 2) refused: not_allowed"),
            "{lines:?}"
        );
        // 198.18.0.0/15 and 203.0.113.0/25 admitted; 10.9.0.0/24,
        // 192.0.2.0/24, 2001:db8:77::/48, fd00:9::/64, fe80::/64 refused;
        // the withdrawals of 192.0.2.0/24 and 2001:db8:77::/48 find
        // nothing; 6 nexthop messages ignored.
        assert_eq!(
            (a.added, a.refused, a.withdrawn, a.ignored),
            (2, 5, 0, 6),
            "{a:?}"
        );
        assert_eq!(
            routes.lookup("198.19.1.1".parse().unwrap()),
            Some(RouteVia::Black)
        );
        assert_eq!(
            routes.lookup("203.0.113.9".parse().unwrap()),
            Some(RouteVia::Black)
        );
        assert_eq!(routes.lookup("203.0.113.200".parse().unwrap()), None);
        assert_eq!(routes.lookup("192.0.2.1".parse().unwrap()), None);
        assert_eq!(routes.learned_len(), 2);
    }
}
