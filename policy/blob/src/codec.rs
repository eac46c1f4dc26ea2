//! Hand-written canonical encoder and decoder. The reader checks every length
//! against the remaining input before slicing, so decoding cannot panic; list
//! counts are bounded by the remaining bytes before anything is allocated.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sha2::{Digest as _, Sha256};
use zeroize::Zeroize;

use crate::error::BlobError;
use crate::model::*;
use viaduct_ids as ids;

/// Magic bytes at the start of every blob.
pub const MAGIC: &[u8; 5] = b"VDPOL";
/// The only format version this crate reads and writes.
///
/// 2: tunnels carry the outer DSCP and the TFC padding sizes, filter rules
/// a TCP flags match. A version-1 blob is refused rather than read with
/// defaults: its filter rules and fragment handling meant something weaker,
/// and the blob is always built together with the Viaduct that reads it.
/// 3: an optional IKEv2 section (identity, peers, proposals, credential
/// references) follows the default filter action.
/// 4: each IKE peer carries its dead-peer detection (delay u32 seconds, 0 for
/// none; action tag 0 restart, 1 clear) after its IKE rekey time.
/// 5: filter rules carry connection states (u8 bits), an optional rate
/// limit and optional flow timeouts; the connection table's size follows
/// the default filter action.
/// 6: a log flag after each filter rule's timeouts, and after the default
/// filter action.
/// 7: static routes (prefix, via tag 1 red / 2 black) and an optional learn
/// section (allowed prefix ranges, the most routes, martians flag) after the
/// connection table's size.
/// 8: an optional IDS section (the signatures: header as address and port
/// ranges, flow, dsize, the content chain, message) after the learn section.
pub const FORMAT_VERSION: u16 = 8;

/// Content flag bits of an IDS signature's content.
const CONTENT_NEGATED: u8 = 1;
const CONTENT_NOCASE: u8 = 2;
const CONTENT_FAST_PATTERN: u8 = 4;

const HEADER_LEN: usize = MAGIC.len() + 2 + 4;
const DIGEST_LEN: usize = 32;
const MAX_STR: usize = u16::MAX as usize;

/// Encodes into a buffer that never leaves a copy behind: when it must grow, the new
/// allocation is made by us and the old one wiped (the body holds lab keys).
struct Writer(Vec<u8>);

impl Writer {
    fn put(&mut self, b: &[u8]) {
        if self.0.capacity() - self.0.len() < b.len() {
            let mut grown = Vec::with_capacity((self.0.capacity() * 2).max(self.0.len() + b.len()));
            grown.extend_from_slice(&self.0);
            self.0.zeroize();
            self.0 = grown;
        }
        self.0.extend_from_slice(b);
    }
    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    /// Strings longer than u16::MAX are truncated at a char boundary;
    /// `validate` rejects them, so a validated policy never hits that.
    fn str(&mut self, s: &str) {
        let mut end = s.len().min(MAX_STR);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.put(&s.as_bytes()[..end]);
    }
    fn bytes(&mut self, b: &[u8]) {
        let end = b.len().min(MAX_STR);
        self.u16(end as u16);
        self.put(&b[..end]);
    }
    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn ip(&mut self, ip: &IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.u8(4);
                self.put(&a.octets());
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.put(&a.octets());
            }
        }
    }
    fn prefix(&mut self, p: &Prefix) {
        self.ip(&p.addr);
        self.u8(p.len);
    }
    fn ports(&mut self, p: &PortRange) {
        self.u16(p.start);
        self.u16(p.end);
    }
    fn ts(&mut self, ts: &TrafficSelector) {
        self.prefix(&ts.prefix);
        self.u8(ts.protocol.0);
        self.ports(&ts.ports);
    }
    fn selector(&mut self, s: &Selector) {
        self.prefix(&s.src);
        self.prefix(&s.dst);
        self.u8(s.protocol.0);
        self.ports(&s.src_ports);
        self.ports(&s.dst_ports);
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
        }
    }
    fn limits(&mut self, l: &LifetimeLimits) {
        self.opt_u64(l.bytes);
        self.opt_u64(l.packets);
        self.opt_u64(l.seconds);
    }
    fn manual_sa(&mut self, sa: &ManualSa) {
        self.u32(sa.spi.0);
        self.bytes(sa.key.expose());
    }
    fn tunnel(&mut self, t: &Tunnel) {
        self.u32(t.id.0);
        self.str(&t.name);
        self.ip(&t.local);
        self.ip(&t.remote);
        self.count(t.local_ts.len());
        t.local_ts.iter().for_each(|ts| self.ts(ts));
        self.count(t.remote_ts.len());
        t.remote_ts.iter().for_each(|ts| self.ts(ts));
        self.u8(aead_tag(t.aead));
        self.bool(t.esn);
        self.limits(&t.lifetimes.soft);
        self.limits(&t.lifetimes.hard);
        self.u32(t.replay_window);
        match &t.manual {
            None => self.u8(0),
            Some(m) => {
                self.u8(1);
                self.manual_sa(&m.outbound);
                self.manual_sa(&m.inbound);
            }
        }
        self.bool(t.udp_encap);
        self.u8(t.outer_dscp);
        self.count(t.tfc_sizes.len());
        t.tfc_sizes.iter().for_each(|&n| self.u16(n));
    }
}

impl Writer {
    fn opt_u32(&mut self, v: Option<u32>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u32(v);
            }
        }
    }
    fn signature(&mut self, sig: &ids::Signature) {
        self.u32(sig.sid);
        self.u32(sig.rev);
        self.u8(match sig.action {
            ids::Action::Alert => 1,
            ids::Action::Drop => 2,
        });
        self.u8(match sig.proto {
            ids::Proto::Tcp => 1,
            ids::Proto::Udp => 2,
            ids::Proto::Icmp => 3,
            ids::Proto::Ip => 4,
        });
        for (addrs, ports) in [(&sig.src, &sig.src_ports), (&sig.dst, &sig.dst_ports)] {
            self.count(addrs.v4_ranges().len());
            for &(a, b) in addrs.v4_ranges() {
                self.u32(a);
                self.u32(b);
            }
            self.count(addrs.v6_ranges().len());
            for &(a, b) in addrs.v6_ranges() {
                self.put(&a.to_be_bytes());
                self.put(&b.to_be_bytes());
            }
            self.count(ports.ranges().len());
            for &(a, b) in ports.ranges() {
                self.u16(a);
                self.u16(b);
            }
        }
        self.bool(sig.bidirectional);
        self.u8(match sig.flow.direction {
            None => 0,
            Some(ids::FlowDirection::ToServer) => 1,
            Some(ids::FlowDirection::ToClient) => 2,
        });
        self.u8(match sig.flow.state {
            None => 0,
            Some(ids::FlowState::Established) => 1,
            Some(ids::FlowState::NotEstablished) => 2,
        });
        match sig.dsize {
            None => self.u8(0),
            Some(ids::DsizeMatch::Eq(n)) => {
                self.u8(1);
                self.u16(n);
            }
            Some(ids::DsizeMatch::Lt(n)) => {
                self.u8(2);
                self.u16(n);
            }
            Some(ids::DsizeMatch::Gt(n)) => {
                self.u8(3);
                self.u16(n);
            }
            Some(ids::DsizeMatch::Range(a, b)) => {
                self.u8(4);
                self.u16(a);
                self.u16(b);
            }
        }
        self.count(sig.contents.len());
        for c in &sig.contents {
            self.bytes(&c.bytes);
            let mut flags = 0;
            if c.negated {
                flags |= CONTENT_NEGATED;
            }
            if c.nocase {
                flags |= CONTENT_NOCASE;
            }
            if c.fast_pattern {
                flags |= CONTENT_FAST_PATTERN;
            }
            self.u8(flags);
            self.opt_u32(c.offset);
            self.opt_u32(c.depth);
            self.opt_u32(c.distance.map(|d| d as u32));
            self.opt_u32(c.within);
        }
        self.str(&sig.msg);
    }
    fn identity(&mut self, id: &IkeIdentity) {
        match id {
            IkeIdentity::Fqdn(s) => {
                self.u8(1);
                self.str(s);
            }
            IkeIdentity::Addr(a) => {
                self.u8(2);
                self.ip(a);
            }
        }
    }
    fn credential(&mut self, c: &Credential) {
        match c {
            Credential::Lab(k) => {
                self.u8(1);
                self.bytes(k.expose());
            }
            Credential::Device(name) => {
                self.u8(2);
                self.str(name);
            }
        }
    }
    fn ike(&mut self, ike: &IkeConfig) {
        self.identity(&ike.local_id);
        match &ike.private_key {
            None => self.u8(0),
            Some(c) => {
                self.u8(1);
                self.credential(c);
            }
        }
        self.count(ike.peers.len());
        for p in &ike.peers {
            self.str(&p.name);
            self.ip(&p.local);
            self.ip(&p.remote);
            self.identity(&p.remote_id);
            match &p.auth {
                IkeAuth::Psk(c) => {
                    self.u8(1);
                    self.credential(c);
                }
                IkeAuth::Ed25519 { peer_public_key } => {
                    self.u8(2);
                    self.put(peer_public_key);
                }
                IkeAuth::EcdsaP256 { peer_public_key } => {
                    self.u8(3);
                    self.put(peer_public_key);
                }
            }
            self.count(p.ike_proposals.len());
            for x in &p.ike_proposals {
                self.u8(aead_tag(x.aead));
                self.u8(prf_tag(x.prf));
                self.u8(group_tag(x.group));
            }
            self.count(p.esp_proposals.len());
            for x in &p.esp_proposals {
                self.u8(aead_tag(x.aead));
                self.bool(x.esn);
            }
            self.u8(p.pfs.map_or(0, group_tag));
            self.u64(p.ike_rekey_seconds);
            self.u32(p.dpd.delay_seconds);
            self.u8(match p.dpd.action {
                DpdAction::Restart => 0,
                DpdAction::Clear => 1,
            });
            self.count(p.tunnels.len());
            p.tunnels.iter().for_each(|t| self.u32(t.0));
        }
    }
}

fn prf_tag(p: IkePrf) -> u8 {
    match p {
        IkePrf::Sha256 => 1,
        IkePrf::Sha384 => 2,
        IkePrf::Sha512 => 3,
    }
}

fn group_tag(g: KeGroup) -> u8 {
    match g {
        KeGroup::X25519 => 1,
        KeGroup::Ecp256 => 2,
    }
}

fn aead_tag(a: Aead) -> u8 {
    match a {
        Aead::Aes128Gcm16 => 1,
        Aead::Aes256Gcm16 => 2,
        Aead::ChaCha20Poly1305 => 3,
    }
}

fn encode_body(p: &Policy) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256));
    w.str(&p.profile_name);
    w.str(&p.profile_version);
    w.u64(p.security_version.0);
    w.count(p.local.len());
    p.local.iter().for_each(|a| w.ip(a));
    w.count(p.tunnels.len());
    p.tunnels.iter().for_each(|t| w.tunnel(t));
    w.count(p.spd.len());
    for e in &p.spd {
        w.str(&e.name);
        w.selector(&e.selector);
        match e.action {
            SpdAction::Protect(id) => {
                w.u8(1);
                w.u32(id.0);
            }
            SpdAction::Bypass => w.u8(2),
            SpdAction::Discard => w.u8(3),
        }
    }
    w.count(p.filters.len());
    for f in &p.filters {
        w.str(&f.name);
        w.u8(match f.direction {
            Direction::Outbound => 1,
            Direction::Inbound => 2,
        });
        w.selector(&f.selector);
        w.u8(f.tcp_flags.mask);
        w.u8(f.tcp_flags.value);
        w.u8(f.states.0);
        match &f.limit {
            None => w.u8(0),
            Some(l) => {
                w.u8(1);
                w.u32(l.rate);
                w.u32(l.per_seconds);
                w.u32(l.burst);
            }
        }
        match &f.timeouts {
            None => w.u8(0),
            Some(t) => {
                w.u8(1);
                for v in t {
                    w.u32(*v);
                }
            }
        }
        w.u8(u8::from(f.log));
        w.u8(filter_tag(f.action));
    }
    w.u8(filter_tag(p.default_filter));
    w.u8(u8::from(p.filter_default_log));
    w.u32(p.filter_max_flows);
    w.count(p.routes.len());
    for r in &p.routes {
        w.prefix(&r.prefix);
        w.u8(match r.via {
            RouteVia::Red => 1,
            RouteVia::Black => 2,
        });
    }
    match &p.learn {
        None => w.u8(0),
        Some(l) => {
            w.u8(1);
            w.count(l.allow.len());
            for a in &l.allow {
                w.prefix(&a.prefix);
                w.u8(a.min_len);
                w.u8(a.max_len);
            }
            w.u32(l.max_routes);
            w.u8(u8::from(l.martians));
        }
    }
    match &p.ids {
        None => w.u8(0),
        Some(i) => {
            w.u8(1);
            w.count(i.signatures.len());
            i.signatures.iter().for_each(|sig| w.signature(sig));
        }
    }
    match &p.ike {
        None => w.u8(0),
        Some(ike) => {
            w.u8(1);
            w.ike(ike);
        }
    }
    w.0
}

fn filter_tag(a: FilterAction) -> u8 {
    match a {
        FilterAction::Accept => 1,
        FilterAction::Drop => 2,
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], BlobError> {
        if self.buf.len() < n {
            return Err(BlobError::Truncated { what });
        }
        let (h, t) = self.buf.split_at(n);
        self.buf = t;
        Ok(h)
    }
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], BlobError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, BlobError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, BlobError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, BlobError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, BlobError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    fn flag(&mut self, what: &'static str) -> Result<bool, BlobError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(BlobError::InvalidTag {
                what,
                value: u64::from(v),
            }),
        }
    }
    fn str(&mut self, what: &'static str) -> Result<String, BlobError> {
        let n = usize::from(self.u16(what)?);
        let b = self.take(n, what)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| BlobError::InvalidUtf8 { what })
    }
    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], BlobError> {
        let n = usize::from(self.u16(what)?);
        self.take(n, what)
    }
    /// A list count, bounded by the remaining input (every element takes at
    /// least `min_elem` bytes) so a hostile count cannot force a huge allocation.
    fn count(&mut self, what: &'static str, min_elem: usize) -> Result<usize, BlobError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_elem) > self.buf.len() {
            return Err(BlobError::Truncated { what });
        }
        Ok(n)
    }
    fn ip(&mut self, what: &'static str) -> Result<IpAddr, BlobError> {
        match self.u8(what)? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>(what)?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>(what)?))),
            v => Err(BlobError::InvalidTag {
                what: "address family",
                value: u64::from(v),
            }),
        }
    }
    fn prefix(&mut self, what: &'static str) -> Result<Prefix, BlobError> {
        let addr = self.ip(what)?;
        let len = self.u8(what)?;
        Ok(Prefix { addr, len })
    }
    fn ports(&mut self, what: &'static str) -> Result<PortRange, BlobError> {
        Ok(PortRange {
            start: self.u16(what)?,
            end: self.u16(what)?,
        })
    }
    fn ts(&mut self) -> Result<TrafficSelector, BlobError> {
        Ok(TrafficSelector {
            prefix: self.prefix("traffic selector prefix")?,
            protocol: Protocol(self.u8("traffic selector protocol")?),
            ports: self.ports("traffic selector ports")?,
        })
    }
    fn selector(&mut self) -> Result<Selector, BlobError> {
        Ok(Selector {
            src: self.prefix("selector source")?,
            dst: self.prefix("selector destination")?,
            protocol: Protocol(self.u8("selector protocol")?),
            src_ports: self.ports("selector source ports")?,
            dst_ports: self.ports("selector destination ports")?,
        })
    }
    fn opt_u64(&mut self, what: &'static str) -> Result<Option<u64>, BlobError> {
        if self.flag(what)? {
            Ok(Some(self.u64(what)?))
        } else {
            Ok(None)
        }
    }
    fn limits(&mut self) -> Result<LifetimeLimits, BlobError> {
        Ok(LifetimeLimits {
            bytes: self.opt_u64("lifetime bytes")?,
            packets: self.opt_u64("lifetime packets")?,
            seconds: self.opt_u64("lifetime seconds")?,
        })
    }
    fn manual_sa(&mut self) -> Result<ManualSa, BlobError> {
        Ok(ManualSa {
            spi: Spi(self.u32("SPI")?),
            key: KeyMaterial::from_slice(self.bytes("key material")?),
        })
    }
    fn tunnel(&mut self) -> Result<Tunnel, BlobError> {
        let id = TunnelId(self.u32("tunnel id")?);
        let name = self.str("tunnel name")?;
        let local = self.ip("tunnel local address")?;
        let remote = self.ip("tunnel remote address")?;
        let n = self.count("local traffic selectors", 10)?;
        let local_ts = (0..n).map(|_| self.ts()).collect::<Result<_, _>>()?;
        let n = self.count("remote traffic selectors", 10)?;
        let remote_ts = (0..n).map(|_| self.ts()).collect::<Result<_, _>>()?;
        let aead = match self.u8("AEAD")? {
            1 => Aead::Aes128Gcm16,
            2 => Aead::Aes256Gcm16,
            3 => Aead::ChaCha20Poly1305,
            v => {
                return Err(BlobError::InvalidTag {
                    what: "AEAD",
                    value: u64::from(v),
                })
            }
        };
        let esn = self.flag("ESN flag")?;
        let soft = self.limits()?;
        let hard = self.limits()?;
        let replay_window = self.u32("replay window")?;
        let manual = if self.flag("manual keying flag")? {
            Some(ManualKeys {
                outbound: self.manual_sa()?,
                inbound: self.manual_sa()?,
            })
        } else {
            None
        };
        let udp_encap = self.flag("UDP encapsulation flag")?;
        let outer_dscp = self.u8("outer DSCP")?;
        let n = self.count("TFC padding sizes", 2)?;
        let tfc_sizes = (0..n)
            .map(|_| self.u16("TFC padding size"))
            .collect::<Result<_, _>>()?;
        Ok(Tunnel {
            id,
            name,
            local,
            remote,
            local_ts,
            remote_ts,
            aead,
            esn,
            lifetimes: Lifetimes { soft, hard },
            replay_window,
            manual,
            udp_encap,
            outer_dscp,
            tfc_sizes,
        })
    }
    fn aead(&mut self, what: &'static str) -> Result<Aead, BlobError> {
        match self.u8(what)? {
            1 => Ok(Aead::Aes128Gcm16),
            2 => Ok(Aead::Aes256Gcm16),
            3 => Ok(Aead::ChaCha20Poly1305),
            v => Err(BlobError::InvalidTag {
                what,
                value: u64::from(v),
            }),
        }
    }
    fn group(&mut self, what: &'static str, none: bool) -> Result<Option<KeGroup>, BlobError> {
        match self.u8(what)? {
            0 if none => Ok(None),
            1 => Ok(Some(KeGroup::X25519)),
            2 => Ok(Some(KeGroup::Ecp256)),
            v => Err(BlobError::InvalidTag {
                what,
                value: u64::from(v),
            }),
        }
    }
    fn identity(&mut self, what: &'static str) -> Result<IkeIdentity, BlobError> {
        match self.u8(what)? {
            1 => Ok(IkeIdentity::Fqdn(self.str(what)?)),
            2 => Ok(IkeIdentity::Addr(self.ip(what)?)),
            v => Err(BlobError::InvalidTag {
                what,
                value: u64::from(v),
            }),
        }
    }
    fn credential(&mut self, what: &'static str) -> Result<Credential, BlobError> {
        match self.u8(what)? {
            1 => Ok(Credential::Lab(KeyMaterial::from_slice(self.bytes(what)?))),
            2 => Ok(Credential::Device(self.str(what)?)),
            v => Err(BlobError::InvalidTag {
                what,
                value: u64::from(v),
            }),
        }
    }
    fn ike(&mut self) -> Result<IkeConfig, BlobError> {
        let local_id = self.identity("IKE local identity")?;
        let private_key = if self.flag("IKE private key flag")? {
            Some(self.credential("IKE private key")?)
        } else {
            None
        };
        let n = self.count("IKE peers", 30)?;
        let mut peers = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.str("IKE peer name")?;
            let local = self.ip("IKE peer local address")?;
            let remote = self.ip("IKE peer address")?;
            let remote_id = self.identity("IKE peer identity")?;
            let auth = match self.u8("IKE authentication")? {
                1 => IkeAuth::Psk(self.credential("IKE PSK")?),
                2 => IkeAuth::Ed25519 {
                    peer_public_key: self.array("IKE peer public key")?,
                },
                3 => IkeAuth::EcdsaP256 {
                    peer_public_key: self.array("IKE peer public key")?,
                },
                v => {
                    return Err(BlobError::InvalidTag {
                        what: "IKE authentication",
                        value: u64::from(v),
                    })
                }
            };
            let m = self.count("IKE proposals", 3)?;
            let mut ike_proposals = Vec::with_capacity(m);
            for _ in 0..m {
                let aead = self.aead("IKE proposal AEAD")?;
                let prf = match self.u8("IKE proposal PRF")? {
                    1 => IkePrf::Sha256,
                    2 => IkePrf::Sha384,
                    3 => IkePrf::Sha512,
                    v => {
                        return Err(BlobError::InvalidTag {
                            what: "IKE proposal PRF",
                            value: u64::from(v),
                        })
                    }
                };
                let Some(group) = self.group("IKE proposal group", false)? else {
                    return Err(BlobError::InvalidTag {
                        what: "IKE proposal group",
                        value: 0,
                    });
                };
                ike_proposals.push(IkeProposal { aead, prf, group });
            }
            let m = self.count("ESP proposals", 2)?;
            let mut esp_proposals = Vec::with_capacity(m);
            for _ in 0..m {
                let aead = self.aead("ESP proposal AEAD")?;
                let esn = self.flag("ESP proposal ESN flag")?;
                esp_proposals.push(EspProposal { aead, esn });
            }
            let pfs = self.group("PFS group", true)?;
            let ike_rekey_seconds = self.u64("IKE rekey seconds")?;
            let delay_seconds = self.u32("DPD delay seconds")?;
            let action = match self.u8("DPD action")? {
                0 => DpdAction::Restart,
                1 => DpdAction::Clear,
                v => {
                    return Err(BlobError::InvalidTag {
                        what: "DPD action",
                        value: u64::from(v),
                    })
                }
            };
            let m = self.count("IKE peer tunnels", 4)?;
            let tunnels = (0..m)
                .map(|_| self.u32("IKE peer tunnel id").map(TunnelId))
                .collect::<Result<_, _>>()?;
            peers.push(IkePeer {
                name,
                local,
                remote,
                remote_id,
                auth,
                ike_proposals,
                esp_proposals,
                pfs,
                ike_rekey_seconds,
                dpd: Dpd {
                    delay_seconds,
                    action,
                },
                tunnels,
            });
        }
        Ok(IkeConfig {
            local_id,
            private_key,
            peers,
        })
    }
    fn opt_u32(&mut self, what: &'static str) -> Result<Option<u32>, BlobError> {
        if self.flag(what)? {
            Ok(Some(self.u32(what)?))
        } else {
            Ok(None)
        }
    }
    fn tag<T>(&mut self, what: &'static str, values: &[T]) -> Result<T, BlobError>
    where
        T: Copy,
    {
        let v = self.u8(what)?;
        usize::from(v)
            .checked_sub(1)
            .and_then(|i| values.get(i).copied())
            .ok_or(BlobError::InvalidTag {
                what,
                value: u64::from(v),
            })
    }
    /// A signature's addresses and ports, refused unless sorted, disjoint and
    /// not adjacent (the form the encoder writes), so a blob has one encoding.
    fn ids_endpoint(&mut self) -> Result<(ids::AddrMatch, ids::PortMatch), BlobError> {
        let n = self.count("IDS IPv4 ranges", 8)?;
        let v4 = (0..n)
            .map(|_| Ok((self.u32("IDS IPv4 range")?, self.u32("IDS IPv4 range")?)))
            .collect::<Result<Vec<_>, BlobError>>()?;
        let n = self.count("IDS IPv6 ranges", 32)?;
        let v6 = (0..n)
            .map(|_| {
                Ok((
                    u128::from_be_bytes(self.array("IDS IPv6 range")?),
                    u128::from_be_bytes(self.array("IDS IPv6 range")?),
                ))
            })
            .collect::<Result<Vec<_>, BlobError>>()?;
        let n = self.count("IDS port ranges", 4)?;
        let ports = (0..n)
            .map(|_| Ok((self.u16("IDS port range")?, self.u16("IDS port range")?)))
            .collect::<Result<Vec<_>, BlobError>>()?;
        let addrs = ids::AddrMatch::from_ranges(v4.clone(), v6.clone());
        let pm = ids::PortMatch::from_ranges(ports.clone());
        if addrs.v4_ranges() != v4 || addrs.v6_ranges() != v6 || pm.ranges() != ports {
            return Err(BlobError::NotCanonical {
                what: "IDS address or port ranges",
            });
        }
        Ok((addrs, pm))
    }
    fn signature(&mut self) -> Result<ids::Signature, BlobError> {
        use ids::{Action, DsizeMatch, FlowDirection, FlowState, Proto};
        let sid = self.u32("IDS sid")?;
        let rev = self.u32("IDS rev")?;
        let action = self.tag("IDS action", &[Action::Alert, Action::Drop])?;
        let proto = self.tag(
            "IDS protocol",
            &[Proto::Tcp, Proto::Udp, Proto::Icmp, Proto::Ip],
        )?;
        let (src, src_ports) = self.ids_endpoint()?;
        let (dst, dst_ports) = self.ids_endpoint()?;
        let bidirectional = self.flag("IDS bidirectional flag")?;
        let direction = match self.u8("IDS flow direction")? {
            0 => None,
            1 => Some(FlowDirection::ToServer),
            2 => Some(FlowDirection::ToClient),
            v => {
                return Err(BlobError::InvalidTag {
                    what: "IDS flow direction",
                    value: u64::from(v),
                })
            }
        };
        let state = match self.u8("IDS flow state")? {
            0 => None,
            1 => Some(FlowState::Established),
            2 => Some(FlowState::NotEstablished),
            v => {
                return Err(BlobError::InvalidTag {
                    what: "IDS flow state",
                    value: u64::from(v),
                })
            }
        };
        let dsize = match self.u8("IDS dsize")? {
            0 => None,
            1 => Some(DsizeMatch::Eq(self.u16("IDS dsize")?)),
            2 => Some(DsizeMatch::Lt(self.u16("IDS dsize")?)),
            3 => Some(DsizeMatch::Gt(self.u16("IDS dsize")?)),
            4 => Some(DsizeMatch::Range(
                self.u16("IDS dsize")?,
                self.u16("IDS dsize")?,
            )),
            v => {
                return Err(BlobError::InvalidTag {
                    what: "IDS dsize",
                    value: u64::from(v),
                })
            }
        };
        let n = self.count("IDS contents", 7)?;
        let mut contents = Vec::with_capacity(n);
        for _ in 0..n {
            let bytes = self.bytes("IDS content")?.to_vec();
            let flags = self.u8("IDS content flags")?;
            if flags & !(CONTENT_NEGATED | CONTENT_NOCASE | CONTENT_FAST_PATTERN) != 0 {
                return Err(BlobError::InvalidTag {
                    what: "IDS content flags",
                    value: u64::from(flags),
                });
            }
            contents.push(ids::ContentMatch {
                bytes,
                negated: flags & CONTENT_NEGATED != 0,
                nocase: flags & CONTENT_NOCASE != 0,
                fast_pattern: flags & CONTENT_FAST_PATTERN != 0,
                offset: self.opt_u32("IDS content offset")?,
                depth: self.opt_u32("IDS content depth")?,
                distance: self.opt_u32("IDS content distance")?.map(|d| d as i32),
                within: self.opt_u32("IDS content within")?,
            });
        }
        let msg = self.str("IDS message")?;
        Ok(ids::Signature {
            sid,
            rev,
            action,
            proto,
            src,
            src_ports,
            dst,
            dst_ports,
            bidirectional,
            flow: ids::FlowMatch { direction, state },
            dsize,
            contents,
            msg,
        })
    }
    fn filter_action(&mut self, what: &'static str) -> Result<FilterAction, BlobError> {
        match self.u8(what)? {
            1 => Ok(FilterAction::Accept),
            2 => Ok(FilterAction::Drop),
            v => Err(BlobError::InvalidTag {
                what,
                value: u64::from(v),
            }),
        }
    }
}

fn decode_body(body: &[u8]) -> Result<Policy, BlobError> {
    let mut r = Reader { buf: body };
    let profile_name = r.str("profile name")?;
    let profile_version = r.str("profile version")?;
    let security_version = SecurityVersion(r.u64("security version")?);
    let n = r.count("local addresses", 5)?;
    let local = (0..n)
        .map(|_| r.ip("local address"))
        .collect::<Result<_, _>>()?;
    let n = r.count("tunnels", 43)?;
    let tunnels = (0..n).map(|_| r.tunnel()).collect::<Result<_, _>>()?;
    let n = r.count("SPD entries", 20)?;
    let mut spd = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str("SPD entry name")?;
        let selector = r.selector()?;
        let action = match r.u8("SPD action")? {
            1 => SpdAction::Protect(TunnelId(r.u32("SPD tunnel id")?)),
            2 => SpdAction::Bypass,
            3 => SpdAction::Discard,
            v => {
                return Err(BlobError::InvalidTag {
                    what: "SPD action",
                    value: u64::from(v),
                })
            }
        };
        spd.push(SpdEntry {
            name,
            selector,
            action,
        });
    }
    let n = r.count("filter rules", 25)?;
    let mut filters = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str("filter rule name")?;
        let direction = match r.u8("filter direction")? {
            1 => Direction::Outbound,
            2 => Direction::Inbound,
            v => {
                return Err(BlobError::InvalidTag {
                    what: "filter direction",
                    value: u64::from(v),
                })
            }
        };
        let selector = r.selector()?;
        let tcp_flags = TcpFlags {
            mask: r.u8("filter TCP flags mask")?,
            value: r.u8("filter TCP flags value")?,
        };
        let states = FilterStates(r.u8("filter states")?);
        let limit = if r.flag("filter rate limit flag")? {
            Some(RateLimit {
                rate: r.u32("filter rate")?,
                per_seconds: r.u32("filter rate period")?,
                burst: r.u32("filter burst")?,
            })
        } else {
            None
        };
        let timeouts = if r.flag("filter timeouts flag")? {
            let mut t = [0u32; 14];
            for v in &mut t {
                *v = r.u32("filter timeout")?;
            }
            Some(t)
        } else {
            None
        };
        let log = r.flag("filter log flag")?;
        let action = r.filter_action("filter action")?;
        filters.push(FilterRule {
            name,
            direction,
            selector,
            tcp_flags,
            states,
            limit,
            timeouts,
            log,
            action,
        });
    }
    let default_filter = r.filter_action("default filter action")?;
    let filter_default_log = r.flag("default filter log flag")?;
    let filter_max_flows = r.u32("filter max flows")?;
    let n = r.count("static routes", 7)?;
    let mut routes = Vec::with_capacity(n);
    for _ in 0..n {
        let prefix = r.prefix("route prefix")?;
        let via = match r.u8("route via")? {
            1 => RouteVia::Red,
            2 => RouteVia::Black,
            v => {
                return Err(BlobError::InvalidTag {
                    what: "route via",
                    value: u64::from(v),
                })
            }
        };
        routes.push(StaticRoute { prefix, via });
    }
    let learn = if r.flag("learn section flag")? {
        let n = r.count("learned route ranges", 8)?;
        let mut allow = Vec::with_capacity(n);
        for _ in 0..n {
            allow.push(PrefixRange {
                prefix: r.prefix("learned route range prefix")?,
                min_len: r.u8("learned route range min length")?,
                max_len: r.u8("learned route range max length")?,
            });
        }
        Some(LearnPolicy {
            allow,
            max_routes: r.u32("learned routes max")?,
            martians: r.flag("learned routes martians flag")?,
        })
    } else {
        None
    };
    let ids = if r.flag("IDS section flag")? {
        let n = r.count("IDS signatures", 40)?;
        let signatures = (0..n).map(|_| r.signature()).collect::<Result<_, _>>()?;
        Some(IdsPolicy { signatures })
    } else {
        None
    };
    let ike = if r.flag("IKE section flag")? {
        Some(r.ike()?)
    } else {
        None
    };
    if !r.buf.is_empty() {
        return Err(BlobError::TrailingBytes {
            count: r.buf.len(),
            after: "policy body",
        });
    }
    Ok(Policy {
        profile_name,
        profile_version,
        security_version,
        local,
        tunnels,
        spd,
        filters,
        default_filter,
        filter_max_flows,
        filter_default_log,
        routes,
        learn,
        ids,
        ike,
    })
}

impl Policy {
    /// Encodes the policy into the canonical blob. Call [`Policy::validate`]
    /// first: an invalid policy encodes, but the Viaduct will refuse it.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = encode_body(self);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + DIGEST_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&body);
        body.zeroize();
        let d = Sha256::digest(&out);
        out.extend_from_slice(&d);
        out
    }

    /// SHA-256 over the encoded header and body: the value appended to the
    /// blob, which the manifest and the gateway init pin.
    pub fn digest(&self) -> Digest {
        let mut blob = self.encode();
        let mut d = [0u8; 32];
        d.copy_from_slice(&blob[blob.len() - DIGEST_LEN..]);
        blob.zeroize();
        Digest(d)
    }

    /// Decodes and validates a blob. Never panics.
    pub fn decode(blob: &[u8]) -> Result<Policy, BlobError> {
        let mut r = Reader { buf: blob };
        if r.take(MAGIC.len(), "magic")? != MAGIC {
            return Err(BlobError::BadMagic);
        }
        let version = r.u16("format version")?;
        if version != FORMAT_VERSION {
            return Err(BlobError::UnsupportedVersion {
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        let len = r.u32("body length")? as usize;
        let body = r.take(len, "body")?;
        let digest = r.take(DIGEST_LEN, "digest")?;
        if !r.buf.is_empty() {
            return Err(BlobError::TrailingBytes {
                count: r.buf.len(),
                after: "digest",
            });
        }
        let covered = &blob[..HEADER_LEN + len];
        let actual = Sha256::digest(covered);
        if actual.as_slice() != digest {
            return Err(BlobError::DigestMismatch);
        }
        let policy = decode_body(body)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Digest of an encoded blob without decoding it (`None` if it is shorter
    /// than a header and digest).
    pub fn blob_digest(blob: &[u8]) -> Option<Digest> {
        if blob.len() < HEADER_LEN + DIGEST_LEN {
            return None;
        }
        let mut d = [0u8; 32];
        d.copy_from_slice(&blob[blob.len() - DIGEST_LEN..]);
        Some(Digest(d))
    }
}
