//! The vhost-user control plane of one port: a listening socket, one front
//! end (the personality's VMM) at a time, and the whitelisted requests of
//! [`crate::msg`] applied to the port's queues.
//!
//! Rules beyond the protocol's:
//! - features: at most `VERSION_1 | MAC | MTU | MRG_RXBUF` and
//!   `PROTOCOL_FEATURES`; protocol features at most `REPLY_ACK`;
//! - queues 0 (receive) and 1 (transmit) only; a queue's size, addresses
//!   and base change only while it is stopped;
//! - the memory table changes only while no queue runs (a repeat of the
//!   same table is accepted while they do): queues never see memory change
//!   under them;
//! - a kick without a descriptor (polling mode) is refused;
//! - any refused request ends the connection: the port's queues stop and
//!   its memory is unmapped when the halves let go of it.
//!
//! The session ([`Session`]) is sans-IO: it takes decoded requests and
//! descriptors and returns the reply bytes; [`serve`] does the socket work.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use thiserror::Error;

use crate::mem::{GuestMemory, MemError};
use crate::msg::{self, Header, MsgError, Request, VringAddr, HDR_LEN};
use crate::net::{PortShared, HDR_LEN as NET_HDR_LEN, RX, TX};
use crate::queue::{Dir, Queue, SetupError};

/// `VIRTIO_NET_F_MTU`.
pub const F_MTU: u64 = 1 << 3;
/// `VIRTIO_NET_F_MAC`.
pub const F_MAC: u64 = 1 << 5;
/// `VIRTIO_NET_F_MRG_RXBUF`.
pub const F_MRG_RXBUF: u64 = 1 << 15;
/// `VHOST_USER_F_PROTOCOL_FEATURES`.
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// `VIRTIO_F_VERSION_1`.
pub const F_VERSION_1: u64 = 1 << 32;
/// The features offered: no offloads, no indirect descriptors, no event
/// index, no IOMMU, no control queue.
pub const OFFERED: u64 = F_MTU | F_MAC | F_MRG_RXBUF | F_PROTOCOL_FEATURES | F_VERSION_1;
/// `VHOST_USER_PROTOCOL_F_REPLY_ACK`.
pub const PF_REPLY_ACK: u64 = 1 << 3;
/// The protocol features offered.
pub const PROTOCOL_OFFERED: u64 = PF_REPLY_ACK;

/// Why a connection was ended.
#[derive(Debug, Error)]
pub enum SessionError {
    /// A malformed or unknown message.
    #[error(transparent)]
    Msg(#[from] MsgError),
    /// A memory table that cannot be used.
    #[error("SET_MEM_TABLE: {0}")]
    Mem(#[from] MemError),
    /// A queue that cannot be set up.
    #[error("queue {index}: {source}")]
    Setup {
        /// Queue index.
        index: u32,
        /// Why.
        source: SetupError,
    },
    /// A request that breaks one of the rules above.
    #[error("{request}: {what}")]
    Refused {
        /// The request.
        request: String,
        /// The rule.
        what: String,
    },
    /// The socket failed or the front end went away mid-message.
    #[error("{0}")]
    Io(String),
}

#[derive(Debug, Default)]
struct RingCfg {
    num: Option<u32>,
    addr: Option<VringAddr>,
    base: u16,
    kick: Option<Arc<OwnedFd>>,
    enabled: bool,
}

/// One front end's session.
#[derive(Debug)]
pub struct Session {
    shared: Arc<PortShared>,
    features: u64,
    protocol: u64,
    /// SET_PROTOCOL_FEATURES came: rings start disabled. (QEMU 7.2 leaves
    /// bit 30 out of SET_FEATURES after negotiating protocol features, so
    /// this, not the bit, tells.)
    protocol_negotiated: bool,
    mem: Option<Arc<GuestMemory>>,
    rings: [RingCfg; 2],
}

fn refused(request: u32, what: impl Into<String>) -> SessionError {
    SessionError::Refused {
        request: msg::name(request),
        what: what.into(),
    }
}

impl Session {
    /// A new session on `shared`'s queues (which must be stopped).
    pub fn new(shared: Arc<PortShared>) -> Session {
        Session {
            shared,
            features: 0,
            protocol: 0,
            protocol_negotiated: false,
            mem: None,
            rings: Default::default(),
        }
    }

    fn running(&self, i: usize) -> bool {
        self.shared.slot(i).queue.is_some()
    }

    fn index(&self, request: u32, i: u32) -> Result<usize, SessionError> {
        match i {
            0 | 1 => Ok(i as usize),
            _ => Err(refused(
                request,
                format!("queue {i} (the port has queues 0 and 1)"),
            )),
        }
    }

    fn stopped(&self, request: u32, i: usize) -> Result<(), SessionError> {
        if self.running(i) {
            return Err(refused(
                request,
                format!("queue {i} is running (stop it with GET_VRING_BASE first)"),
            ));
        }
        Ok(())
    }

    /// Starts queue `i` if it has everything (size, addresses, kick,
    /// memory) and is enabled.
    fn try_start(&mut self, i: usize) -> Result<(), SessionError> {
        let r = &self.rings[i];
        let (Some(num), Some(addr), Some(kick), Some(mem), true) =
            (r.num, r.addr, r.kick.clone(), self.mem.clone(), r.enabled)
        else {
            return Ok(());
        };
        let mut slot = self.shared.slot(i);
        if slot.queue.is_some() {
            return Ok(());
        }
        let dir = if i == TX {
            Dir::DeviceReads
        } else {
            Dir::DeviceWrites
        };
        let q = Queue::new(mem, dir, num, &addr, r.base).map_err(|e| SessionError::Setup {
            index: i as u32,
            source: e,
        })?;
        slot.queue = Some(q);
        slot.kick = Some(kick);
        slot.hdr_len = if self.features & (F_VERSION_1 | F_MRG_RXBUF) != 0 {
            NET_HDR_LEN
        } else {
            10
        };
        slot.mrg = self.features & F_MRG_RXBUF != 0;
        self.shared.changed(i, &mut slot);
        Ok(())
    }

    /// Stops queue `i`; returns its next available index.
    fn stop(&mut self, i: usize) -> u16 {
        let mut slot = self.shared.slot(i);
        if let Some(q) = slot.queue.take() {
            self.rings[i].base = q.last_avail();
        }
        slot.kick = None;
        self.shared.changed(i, &mut slot);
        self.rings[i].base
    }

    /// Stops both queues and forgets the memory (end of a connection).
    pub fn reset(&mut self) {
        for i in [RX, TX] {
            self.stop(i);
            let mut slot = self.shared.slot(i);
            slot.call = None;
            self.shared.changed(i, &mut slot);
            self.rings[i] = RingCfg::default();
        }
        self.mem = None;
        self.features = 0;
        self.protocol = 0;
        self.protocol_negotiated = false;
    }

    /// Handles one request with its descriptors; returns the reply to send,
    /// if any. An error ends the connection (the caller calls
    /// [`Session::reset`]).
    pub fn handle(
        &mut self,
        h: &Header,
        req: Request,
        mut fds: Vec<OwnedFd>,
    ) -> Result<Option<Vec<u8>>, SessionError> {
        if fds.len() != req.fds() {
            return Err(refused(
                h.request,
                format!("{} descriptors (expected {})", fds.len(), req.fds()),
            ));
        }
        let code = h.request;
        let u64_reply = |v: u64| Some(msg::reply(code, &v.to_le_bytes()));
        let reply = match req {
            Request::GetFeatures => u64_reply(OFFERED),
            Request::SetFeatures(f) => {
                if f & !OFFERED != 0 {
                    return Err(refused(
                        code,
                        format!("features {:#x} beyond the offer {OFFERED:#x}", f & !OFFERED),
                    ));
                }
                if f != self.features && (self.running(RX) || self.running(TX)) {
                    return Err(refused(code, "features changed while queues run"));
                }
                self.features = f;
                None
            }
            Request::SetOwner => None,
            Request::ResetOwner => {
                self.reset();
                None
            }
            Request::GetProtocolFeatures => u64_reply(PROTOCOL_OFFERED),
            Request::SetProtocolFeatures(f) => {
                if f & !PROTOCOL_OFFERED != 0 {
                    return Err(refused(code, format!("protocol features {f:#x}")));
                }
                self.protocol = f;
                self.protocol_negotiated = true;
                None
            }
            Request::SetMemTable(table) => {
                let running = self.running(RX) || self.running(TX);
                match (&self.mem, running) {
                    (Some(m), true) if m.same_layout(&table) => {}
                    (_, true) => {
                        return Err(refused(code, "the memory table changed while queues run"))
                    }
                    (_, false) => {
                        self.mem = Some(Arc::new(GuestMemory::new(&table, fds)?));
                    }
                }
                None
            }
            Request::SetVringNum(i, n) => {
                let i = self.index(code, i)?;
                self.stopped(code, i)?;
                self.rings[i].num = Some(n);
                None
            }
            Request::SetVringAddr(a) => {
                let i = self.index(code, a.index)?;
                self.stopped(code, i)?;
                self.rings[i].addr = Some(a);
                None
            }
            Request::SetVringBase(i, b) => {
                let i = self.index(code, i)?;
                self.stopped(code, i)?;
                self.rings[i].base =
                    u16::try_from(b).map_err(|_| refused(code, format!("base {b} > 65535")))?;
                None
            }
            Request::GetVringBase(i) => {
                let i = self.index(code, i)?;
                let base = self.stop(i);
                self.rings[i].kick = None;
                let mut p = [0u8; 8];
                p[..4].copy_from_slice(&(i as u32).to_le_bytes());
                p[4..].copy_from_slice(&(base as u32).to_le_bytes());
                Some(msg::reply(code, &p))
            }
            Request::SetVringKick(i, has_fd) => {
                let i = self.index(code, i)?;
                if !has_fd {
                    return Err(refused(code, "polling mode (no kick descriptor)"));
                }
                self.stopped(code, i)?;
                let fd = fds.pop().ok_or_else(|| refused(code, "no descriptor"))?;
                nonblocking(&fd);
                self.rings[i].kick = Some(Arc::new(fd));
                // Without protocol features a queue runs once kicked; with
                // them, once SET_VRING_ENABLE says so.
                if !self.protocol_negotiated && self.features & F_PROTOCOL_FEATURES == 0 {
                    self.rings[i].enabled = true;
                }
                self.try_start(i)?;
                None
            }
            Request::SetVringCall(i, has_fd) => {
                let i = self.index(code, i)?;
                let fd = fds.pop().map(|f| {
                    nonblocking(&f);
                    Arc::new(f)
                });
                debug_assert!(has_fd == fd.is_some());
                let mut slot = self.shared.slot(i);
                slot.call = fd;
                self.shared.changed(i, &mut slot);
                None
            }
            Request::SetVringErr(i, _) => {
                // Never signalled: the descriptor is closed.
                self.index(code, i)?;
                None
            }
            Request::SetVringEnable(i, on) => {
                let i = self.index(code, i)?;
                self.rings[i].enabled = on;
                if on {
                    self.try_start(i)?;
                } else {
                    self.stop(i);
                }
                None
            }
        };
        if reply.is_none() && h.need_reply() && self.protocol & PF_REPLY_ACK != 0 {
            return Ok(u64_reply(0));
        }
        Ok(reply)
    }
}

fn nonblocking(fd: &OwnedFd) {
    if let Ok(fl) = rustix::fs::fcntl_getfl(fd) {
        let _ = rustix::fs::fcntl_setfl(fd, fl | rustix::fs::OFlags::NONBLOCK);
    }
}

/// How long a started message may take to arrive whole.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Waits until `fd` is readable, `stop` is set (`Ok(false)`) or `deadline`.
fn wait_readable(
    fd: &OwnedFd,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> Result<bool, SessionError> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(SessionError::Io("a message arrived only in part".into()));
        }
        let mut p = [PollFd::new(fd, PollFlags::IN)];
        let t = Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        match poll(&mut p, Some(&t)) {
            Ok(0) | Err(Errno::INTR) => continue,
            Ok(_) => return Ok(true),
            Err(e) => return Err(SessionError::Io(e.to_string())),
        }
    }
}

/// A message as read: header, payload, descriptors.
type Message = (Header, Vec<u8>, Vec<OwnedFd>);

/// Reads one message. `Ok(None)` at end of connection or on stop.
fn read_message(sock: &OwnedFd, stop: &AtomicBool) -> Result<Option<Message>, SessionError> {
    if !wait_readable(sock, stop, None)? {
        return Ok(None);
    }
    let deadline = Some(Instant::now() + MESSAGE_TIMEOUT);
    let mut hb = [0u8; HDR_LEN];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < HDR_LEN {
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut anc = RecvAncillaryBuffer::new(&mut space);
        let r = rustix::net::recvmsg(
            sock,
            &mut [std::io::IoSliceMut::new(&mut hb[got..])],
            &mut anc,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        );
        for m in anc.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = m {
                fds.extend(rights);
            }
        }
        match r {
            Ok(r) if r.bytes == 0 => {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(SessionError::Io("the front end left mid-message".into()))
                }
            }
            Ok(r) => {
                if r.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
                    return Err(SessionError::Io(
                        "more than 8 descriptors with one message".into(),
                    ));
                }
                got += r.bytes
            }
            Err(Errno::AGAIN) | Err(Errno::INTR) => {
                if !wait_readable(sock, stop, deadline)? {
                    return Ok(None);
                }
            }
            Err(e) => return Err(SessionError::Io(e.to_string())),
        }
    }
    let h = Header::parse(&hb)?;
    let mut payload = vec![0u8; h.size as usize];
    let mut got = 0;
    while got < payload.len() {
        match rustix::io::read(sock, &mut payload[got..]) {
            Ok(0) => return Err(SessionError::Io("the front end left mid-message".into())),
            Ok(n) => got += n,
            Err(Errno::AGAIN) | Err(Errno::INTR) => {
                if !wait_readable(sock, stop, deadline)? {
                    return Ok(None);
                }
            }
            Err(e) => return Err(SessionError::Io(e.to_string())),
        }
    }
    Ok(Some((h, payload, fds)))
}

fn write_all(sock: &OwnedFd, mut b: &[u8]) -> Result<(), SessionError> {
    let deadline = Instant::now() + MESSAGE_TIMEOUT;
    while !b.is_empty() {
        match rustix::io::write(sock, b) {
            Ok(n) => b = &b[n..],
            Err(Errno::AGAIN) | Err(Errno::INTR) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(SessionError::Io(e.to_string())),
        }
    }
    Ok(())
}

/// Serves one connection until it ends, an error or `stop`.
pub fn serve_connection(
    sock: &OwnedFd,
    session: &mut Session,
    stop: &AtomicBool,
) -> Result<(), SessionError> {
    loop {
        let Some((h, payload, fds)) = read_message(sock, stop)? else {
            return Ok(());
        };
        let result = Request::parse(&h, &payload)
            .map_err(SessionError::from)
            .and_then(|req| session.handle(&h, req, fds));
        match result {
            Ok(Some(reply)) => write_all(sock, &reply)?,
            Ok(None) => {}
            Err(e) => {
                if h.need_reply() && session.protocol & PF_REPLY_ACK != 0 {
                    let _ = write_all(sock, &msg::reply(h.request, &1u64.to_le_bytes()));
                }
                return Err(e);
            }
        }
    }
}

/// Accepts front ends on `listener` one after another until `stop`; each
/// connection's end stops the port's queues. Errors are reported on stderr
/// with the port's name; the port waits for the next front end (the
/// personality's VM restarted).
pub fn serve(listener: OwnedFd, shared: Arc<PortShared>, stop: &AtomicBool) {
    let name = shared.name;
    let mut session = Session::new(shared);
    loop {
        match wait_readable(&listener, stop, None) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                eprintln!("viaduct: {name} port: {e}");
                return;
            }
        }
        let sock = match rustix::net::accept_with(
            &listener,
            rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
        ) {
            Ok(s) => s,
            Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
            Err(e) => {
                eprintln!("viaduct: {name} port: accept: {e}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        eprintln!("viaduct: {name} port: front end connected");
        match serve_connection(&sock, &mut session, stop) {
            Ok(()) => eprintln!("viaduct: {name} port: front end disconnected"),
            Err(e) => eprintln!("viaduct: {name} port: front end refused and disconnected: {e}"),
        }
        session.reset();
        drop(sock);
    }
}

/// Makes the port's listening socket at `path` (removing a stale one),
/// mode 0600 (the VMM's user is given access by its owner).
pub fn listen(path: &std::path::Path) -> std::io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let _ = std::fs::remove_file(path);
    let s = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let addr = SocketAddrUnix::new(path)?;
    rustix::net::bind(&s, &addr)?;
    rustix::net::listen(&s, 1)?;
    Ok(s)
}

/// Adopts an inherited listening socket (descriptor `n`), made non-blocking.
pub fn adopt_listener(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    let ty = rustix::net::sockopt::socket_type(&fd)?;
    if ty != rustix::net::SocketType::STREAM {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the vhost-user descriptor is not a stream socket",
        ));
    }
    nonblocking(&fd);
    Ok(fd)
}
