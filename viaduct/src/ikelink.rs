//! The data plane's side of the IKE channel (`viaduct --ike-channel FD`).
//!
//! The IKE process (`viaduct-ike`) runs apart from the data plane and speaks
//! to it over one `SOCK_SEQPACKET` socket, one record per message
//! ([`viaduct_channel`]). Here:
//!
//! - the **control thread** ([`serve`]) reads its records: an install is
//!   checked and its two SAs built ([`ControlPath::prepare`]), then handed to
//!   the inbound pump thread, which inserts the inbound SA and passes the
//!   outbound SA on to the outbound thread — inbound first, so that the
//!   peer's first packet under the new SA is never dropped; a switch or a
//!   removal is carried out only for a CHILD SA IKE installed itself
//!   ([`ControlPath::owns`]), and travels the same way (through the inbound
//!   thread), so it never overtakes the install it names.
//!   An IKE message to send is built here ([`ControlPath::ike_datagram`]:
//!   our address, the peer's, ports 500/4500 only) and travels the same way
//!   too, through the inbound thread to the outbound one, which writes it to
//!   black: it leaves only once every command IKE sent before it is applied
//!   in both threads. IKE sends the install of a CHILD SA before the message
//!   that completes it (the CREATE_CHILD_SA response, the IKE_AUTH
//!   response), so the peer — which starts sending under the new SA as soon
//!   as it reads that message — never meets a data plane that has not
//!   inserted it yet; and a DELETE of a rekeyed SA leaves only after our
//!   outbound thread has switched away from it.
//!   A refused install is answered with [`ToIke::Refused`].
//! - the pump threads take their commands from a [`Mailbox`] (a queue and an
//!   eventfd their `poll` watches), between batches: no lock on the packet
//!   path, and a command waits for one batch at most.
//! - the inbound thread passes the IKE messages the engine steers
//!   ([`crate::Verdict::Ike`]) to the IKE process, and both threads report SA
//!   lifetimes ([`ToIke::SaLifetime`]); writes never block (the channel is
//!   non-blocking): when the IKE process does not read, its messages are
//!   dropped and counted, and traffic goes on.
//!
//! Keys flow one way: nothing written to the channel carries key material.
//! When the IKE process closes the channel the control thread ends; the
//! established SAs carry traffic until their hard lifetimes. An SA IKE never
//! removes (its process died and a new one, which knows nothing of it, took
//! the channel over) is removed [`crate::engine::ORPHAN_GRACE_SECONDS`] after
//! its hard lifetime, so that such SAs cannot pile up.

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;

use policy_blob::TunnelId;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::io::Errno;
use viaduct_channel::{IkeDatagram, ToDataPlane, ToIke, MAX_RECORD};

use crate::control::Control;
use crate::engine::{ControlPath, Prepared, PreparedOut};

/// A command for the inbound pump thread.
#[derive(Debug)]
pub enum InCmd {
    /// Insert the inbound SA, then pass the outbound one on.
    Install(Box<Prepared>),
    /// Remove the inbound SA with this SPI.
    Remove(u32),
    /// Pass this IKE datagram (a complete IP packet) on to the outbound
    /// thread, which writes it to black after the commands before it.
    SendIke(Vec<u8>),
    /// Pass this on to the outbound thread (after what came before it: a
    /// switch never overtakes the install it names).
    Outbound(OutCmd),
}

/// A command for the outbound pump thread.
#[derive(Debug)]
pub enum OutCmd {
    /// Insert a prepared outbound SA.
    Install(Box<PreparedOut>),
    /// Send the tunnel's traffic with the SA paired with this inbound SPI.
    Use(TunnelId, u32),
    /// Remove the SA paired with this inbound SPI.
    Remove(TunnelId, u32),
    /// Write this IKE datagram (a complete IP packet) to black.
    SendIke(Vec<u8>),
}

/// The sending end of a pump thread's mailbox.
#[derive(Debug)]
pub struct Post<T> {
    tx: Sender<T>,
    wake: Arc<OwnedFd>,
}

impl<T> Post<T> {
    /// Queues `cmd` and wakes the thread. False if the thread is gone.
    pub fn send(&self, cmd: T) -> bool {
        if self.tx.send(cmd).is_err() {
            return false;
        }
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
        true
    }
}

/// A pump thread's mailbox: a queue and the eventfd its `poll` watches.
#[derive(Debug)]
pub struct Mailbox<T> {
    rx: Receiver<T>,
    wake: Arc<OwnedFd>,
}

impl<T> Mailbox<T> {
    /// The descriptor that becomes readable when a command waits.
    pub fn wake_fd(&self) -> &OwnedFd {
        &self.wake
    }

    /// Takes every waiting command. When `woken` (the pump's `poll` found the
    /// eventfd readable) the wake-up is reset first, so that a command queued
    /// meanwhile wakes the next `poll`; otherwise no system call is made (a
    /// command taken without reading the eventfd leaves it readable: the next
    /// `poll` returns at once and resets it).
    pub fn drain(&self, woken: bool, mut f: impl FnMut(T)) {
        if woken {
            let mut b = [0u8; 8];
            let _ = rustix::io::read(&*self.wake, &mut b);
        }
        loop {
            match self.rx.try_recv() {
                Ok(c) => f(c),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }
}

/// A mailbox and its sending end. Call before confinement (eventfd2).
///
/// # Errors
/// The eventfd could not be created.
pub fn mailbox<T>() -> std::io::Result<(Post<T>, Mailbox<T>)> {
    let fd = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
    )?;
    let wake = Arc::new(fd);
    let (tx, rx) = std::sync::mpsc::channel();
    Ok((
        Post {
            tx,
            wake: wake.clone(),
        },
        Mailbox { rx, wake },
    ))
}

/// A pump thread's write end of the channel, with its counters.
#[derive(Debug)]
pub struct Tap {
    channel: Arc<OwnedFd>,
    /// Records written.
    pub sent: u64,
    /// Records dropped because the IKE process did not read (or was gone).
    pub dropped: u64,
}

impl Tap {
    /// A tap on `channel`.
    pub fn new(channel: Arc<OwnedFd>) -> Tap {
        Tap {
            channel,
            sent: 0,
            dropped: 0,
        }
    }

    /// Writes one record without blocking; counts it sent or dropped.
    pub fn send(&mut self, m: &ToIke) {
        match rustix::io::write(&*self.channel, &m.encode()) {
            Ok(_) => self.sent += 1,
            Err(_) => self.dropped += 1,
        }
    }

    /// The counters, one line.
    pub fn report(&self, who: &str) -> String {
        format!(
            "viaduct {who} ike-channel: sent={} dropped={}\n",
            self.sent, self.dropped
        )
    }
}

/// Adopts the inherited channel descriptor `fd`: a `SOCK_SEQPACKET` (or
/// `SOCK_DGRAM`) socket, made non-blocking and close-on-exec.
///
/// # Errors
/// `BadFd` when `fd` is stdio, not open or not such a socket.
pub fn adopt_channel(fd: i32) -> Result<OwnedFd, crate::EngineError> {
    let bad = |e: std::io::Error| crate::EngineError::BadFd { fd, source: e };
    let invalid = |m: &str| bad(std::io::Error::new(std::io::ErrorKind::InvalidInput, m));
    if fd < 3 {
        return Err(invalid("descriptors 0-2 are stdio, not the IKE channel"));
    }
    let owned = crate::sys::adopt_fd(fd).map_err(bad)?;
    match rustix::net::sockopt::socket_type(&owned) {
        Ok(rustix::net::SocketType::SEQPACKET | rustix::net::SocketType::DGRAM) => {}
        Ok(_) => return Err(invalid("the IKE channel must be a SOCK_SEQPACKET socket")),
        Err(e) => return Err(bad(e.into())),
    }
    let fl = rustix::fs::fcntl_getfl(&owned).map_err(|e| bad(e.into()))?;
    rustix::fs::fcntl_setfl(&owned, fl | rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| bad(e.into()))?;
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC).map_err(|e| bad(e.into()))?;
    Ok(owned)
}

/// What the control thread counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct ControlCounters {
    /// Records read.
    pub records: u64,
    /// Records that did not decode (dropped).
    pub malformed: u64,
    /// IKE messages built and passed on (the outbound thread writes them to
    /// black and counts what black refuses).
    pub ike_sent: u64,
    /// IKE messages that could not be built (bad peer or port).
    pub ike_send_failed: u64,
    /// Installs passed to the pump.
    pub installs: u64,
    /// Installs refused.
    pub refused: u64,
    /// Switches and removals passed to the pump.
    pub switches: u64,
    /// Removals passed to the pump.
    pub removals: u64,
    /// Switches or removals of SAs IKE does not own (ignored).
    pub not_owned: u64,
    /// SAs IKE left past their hard lifetime, removed by the data plane.
    pub expired: u64,
}

/// The control thread's ends.
pub struct Links {
    /// The channel (read here; the taps write on clones).
    pub channel: Arc<OwnedFd>,
    /// The inbound thread's mailbox (which passes the outbound thread's
    /// commands and the IKE messages to send on, in order).
    pub inbound: Post<InCmd>,
}

/// Runs the control thread until `ctl.stop` or until the IKE process closes
/// the channel. Prints its counters at exit and on dump requests.
///
/// # Errors
/// A read or poll on the channel failed.
pub fn serve(mut cp: ControlPath, links: Links, ctl: &Control) -> std::io::Result<()> {
    let mut rec = vec![0u8; MAX_RECORD + 1];
    let mut out = vec![0u8; MAX_RECORD + 128];
    let mut c = ControlCounters::default();
    let mut refusals = Tap::new(links.channel.clone());
    let mut seen_dump = ctl.dump.load(Ordering::Relaxed);
    let timeout = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    let report = |c: &ControlCounters, cp: &ControlPath, r: &Tap| {
        eprint!(
            "viaduct control: records={} malformed={} ike_sent={} ike_send_failed={} \
             installs={} refused={} switches={} removals={} not_owned={} expired={} ike_child_sas={}\n{}",
            c.records,
            c.malformed,
            cp.ike_sent(),
            c.ike_send_failed,
            c.installs,
            c.refused,
            c.switches,
            c.removals,
            c.not_owned,
            c.expired,
            cp.ike_sa_count(),
            r.report("control")
        );
    };
    let result = loop {
        if ctl.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let d = ctl.dump.load(Ordering::Relaxed);
        if d != seen_dump {
            seen_dump = d;
            report(&c, &cp, &refusals);
        }
        for (t, spi) in cp.expire(ctl.now()) {
            c.expired += 1;
            links.inbound.send(InCmd::Outbound(OutCmd::Remove(t, spi)));
            links.inbound.send(InCmd::Remove(spi));
        }
        let mut fds = [PollFd::new(&*links.channel, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => break Err(e.into()),
        }
        // A bounded batch, then look at stop and dump again.
        let mut closed = false;
        for _ in 0..64 {
            let n = match rustix::io::read(&*links.channel, &mut rec) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => n,
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            c.records += 1;
            let now = ctl.now();
            let Some(r) = rec.get(..n) else { break };
            match ToDataPlane::decode(r) {
                Err(_) => c.malformed += 1,
                Ok(m) => handle(m, &mut cp, &links, &mut out, &mut refusals, &mut c, now),
            }
        }
        // Wipe whatever key bytes the last install left in the buffer.
        zeroize::Zeroize::zeroize(&mut rec[..]);
        if closed {
            eprintln!(
                "viaduct: the IKE process closed its channel; established SAs carry \
                 traffic until their hard lifetimes"
            );
            break Ok(());
        }
    };
    report(&c, &cp, &refusals);
    result
}

fn handle(
    m: ToDataPlane,
    cp: &mut ControlPath,
    links: &Links,
    out: &mut [u8],
    refusals: &mut Tap,
    c: &mut ControlCounters,
    now: crate::sa::Timestamp,
) {
    match m {
        ToDataPlane::SendIke(IkeDatagram {
            peer,
            local_port,
            remote_port,
            bytes,
        }) => {
            let Ok(len) = cp.ike_datagram(peer, local_port, remote_port, &bytes, out) else {
                c.ike_send_failed += 1;
                return;
            };
            if let Some(pkt) = out.get(..len) {
                links.inbound.send(InCmd::SendIke(pkt.to_vec()));
            }
        }
        ToDataPlane::InstallSa(i) => match cp.prepare(&i, now) {
            Ok(p) => {
                c.installs += 1;
                links.inbound.send(InCmd::Install(Box::new(p)));
                // Once per tunnel: the init counts these lines to judge a
                // trial boot good ("tunnels-up").
                if cp.first_keyed(i.tunnel) {
                    eprintln!(
                        "viaduct: tunnel {} keyed (SA {:08x}, IKE)",
                        i.tunnel.0, i.inbound_spi
                    );
                }
            }
            Err(refusal) => {
                c.refused += 1;
                eprintln!(
                    "viaduct: refused the IKE process's install of SA {:08x} on tunnel {}: {refusal}",
                    i.inbound_spi, i.tunnel.0
                );
                refusals.send(&ToIke::Refused {
                    tunnel: i.tunnel,
                    inbound_spi: i.inbound_spi,
                    refusal,
                });
            }
        },
        ToDataPlane::UseOutbound {
            tunnel,
            inbound_spi,
        } => {
            if cp.owns(tunnel, inbound_spi) {
                c.switches += 1;
                links
                    .inbound
                    .send(InCmd::Outbound(OutCmd::Use(tunnel, inbound_spi)));
            } else {
                c.not_owned += 1;
            }
        }
        ToDataPlane::DeleteSa {
            tunnel,
            inbound_spi,
        } => {
            if cp.forget(tunnel, inbound_spi) {
                c.removals += 1;
                links
                    .inbound
                    .send(InCmd::Outbound(OutCmd::Remove(tunnel, inbound_spi)));
                links.inbound.send(InCmd::Remove(inbound_spi));
            } else {
                c.not_owned += 1;
            }
        }
    }
}
