//! Security associations: ESP tunnel-mode encapsulation (outbound) and
//! decapsulation (inbound), RFC 4303 with AEAD transforms (RFC 4106, RFC 7634).
//!
//! Invariants:
//! - Outbound sequence numbers start at 1, increase by one per packet and
//!   never wrap: at 2^32 - 1 (no ESN) or 2^64 - 1 (ESN) the SA stops
//!   ([`DropReason::SeqOverflow`]). The explicit IV is the 64-bit sequence
//!   number, so a (key, nonce) pair is never reused.
//! - AAD = SPI || seq-low, or SPI || seq-high || seq-low with ESN
//!   (RFC 4106 §5, RFC 7634 §2.1); seq-high is never transmitted.
//! - The outer header carries nothing red chose but the length: its TOS /
//!   traffic class is the policy's DSCP with ECN Not-ECT (RFC 6040
//!   compatibility mode), whatever the inner packet's; identification,
//!   TTL/hop limit, flow label and flags are fixed or derived from the
//!   sequence number. With TFC padding (RFC 4303 §2.4) the length too is
//!   rounded up to one of the tunnel's size classes.
//! - Inbound, the replay window moves only after the ICV verified.
//! - Time is passed in by the caller ([`Timestamp`]); nothing reads a clock.
//! - No allocation per packet; nothing here panics (all slicing is bounded by
//!   checked lengths).

use std::net::IpAddr;

use policy_blob::{Aead, LifetimeLimits, Lifetimes, Spi, TunnelId};

use crate::crypto::SaKey;
use crate::drop::DropReason;
use crate::replay::{ReplayError, ReplayWindow, SeqNo};
use crate::wire::esp::{self, EspPacket, HEADER_LEN, ICV_LEN, IV_LEN};
use crate::wire::ip::OuterRepr;
use crate::wire::udp;

/// Monotonic time in seconds, supplied by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

/// IP protocol numbers carried in the ESP next-header field.
pub mod next_header {
    /// IPv4 in tunnel mode.
    pub const IPV4: u8 = 4;
    /// IPv6 in tunnel mode.
    pub const IPV6: u8 = 41;
    /// Dummy packet (traffic flow confidentiality), dropped silently.
    pub const NO_NEXT: u8 = 59;
}

/// Packet and byte counters of one SA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaCounters {
    /// Packets processed successfully.
    pub packets: u64,
    /// Inner payload bytes processed successfully.
    pub bytes: u64,
    /// TFC padding bytes added (outbound) or stripped (inbound).
    pub tfc_bytes: u64,
}

/// Lifetime state of an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifeState {
    /// Within all soft limits.
    Fresh,
    /// A soft limit was crossed: rekey soon.
    Soft,
    /// A hard limit was crossed: the SA is unusable.
    Hard,
}

#[derive(Debug, Clone)]
struct Lifetime {
    limits: Lifetimes,
    installed: Timestamp,
    state: LifeState,
    soft_reported: bool,
}

fn crossed(l: &LifetimeLimits, c: &SaCounters, age: u64) -> bool {
    l.packets.is_some_and(|p| c.packets >= p)
        || l.bytes.is_some_and(|b| c.bytes >= b)
        || l.seconds.is_some_and(|s| age >= s)
}

impl Lifetime {
    /// Whether `len` more bytes in one more packet would pass a hard limit
    /// (or the hard time passed). Marks the SA hard-expired if so.
    fn admit(&mut self, c: &SaCounters, len: usize, now: Timestamp) -> bool {
        if self.state == LifeState::Hard {
            return false;
        }
        let h = &self.limits.hard;
        let age = now.0.saturating_sub(self.installed.0);
        let over = h.seconds.is_some_and(|s| age >= s)
            || h.packets.is_some_and(|p| c.packets >= p)
            || h.bytes
                .is_some_and(|b| c.bytes.saturating_add(len as u64) > b);
        if over {
            self.state = LifeState::Hard;
        }
        !over
    }

    fn after(&mut self, c: &SaCounters, now: Timestamp) {
        let age = now.0.saturating_sub(self.installed.0);
        if self.state == LifeState::Fresh && crossed(&self.limits.soft, c, age) {
            self.state = LifeState::Soft;
        }
        if crossed(&self.limits.hard, c, age) {
            self.state = LifeState::Hard;
        }
    }

    fn tick(&mut self, c: &SaCounters, now: Timestamp) {
        if self.state != LifeState::Hard {
            self.after(c, now);
        }
    }
}

/// Identity of an SA for reports and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaId {
    /// The tunnel.
    pub tunnel: TunnelId,
    /// The SPI.
    pub spi: Spi,
    /// true = inbound SA.
    pub inbound: bool,
}

fn aad(spi: u32, seq: SeqNo, esn: bool, buf: &mut [u8; 12]) -> usize {
    buf[0..4].copy_from_slice(&spi.to_be_bytes());
    if esn {
        buf[4..8].copy_from_slice(&seq.high().to_be_bytes());
        buf[8..12].copy_from_slice(&seq.low().to_be_bytes());
        12
    } else {
        buf[4..8].copy_from_slice(&seq.low().to_be_bytes());
        8
    }
}

/// Number of padding bytes so that payload + pad + 2 is a multiple of 4.
pub fn pad_len(payload: usize) -> usize {
    (4 - (payload + esp::TRAILER_LEN) % 4) % 4
}

/// Length of the ESP part (header, IV, ciphertext, ICV) for a payload
/// (the inner packet and its TFC padding) of `inner` bytes.
pub fn esp_len(inner: usize) -> usize {
    HEADER_LEN + IV_LEN + inner + pad_len(inner) + esp::TRAILER_LEN + ICV_LEN
}

/// The payload length of an inner packet of `len` bytes under TFC padding
/// `sizes` (increasing): the first size that holds it, or `len` itself if
/// none does (or there are none).
pub fn tfc_len(sizes: &[u16], len: usize) -> usize {
    sizes
        .iter()
        .map(|&n| usize::from(n))
        .find(|&n| n >= len)
        .unwrap_or(len)
}

/// The length of the IP datagram at the start of `payload` as its header
/// says (IPv4 total length, IPv6 40 + payload length), checked against the
/// ESP next header and against the payload it must fit in: what follows
/// it is TFC padding (RFC 4303 §2.4).
fn datagram_len(payload: &[u8], nh: u8) -> Result<usize, DropReason> {
    let version = payload.first().map(|b| b >> 4);
    let len = match (nh, version) {
        (next_header::IPV4, Some(4)) => {
            let h = payload.get(..20).ok_or(DropReason::Truncated)?;
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            if total < usize::from(h[0] & 0x0f) * 4 || total < 20 {
                return Err(DropReason::Malformed);
            }
            total
        }
        (next_header::IPV6, Some(6)) => {
            let h = payload.get(..40).ok_or(DropReason::Truncated)?;
            // Payload length 0 would be a jumbogram (RFC 2675): not carried.
            40 + usize::from(u16::from_be_bytes([h[4], h[5]]))
        }
        // Another next header, or one that disagrees with the version.
        _ => return Err(DropReason::BadNextHeader),
    };
    if len > payload.len() {
        return Err(DropReason::Truncated);
    }
    Ok(len)
}

/// An outbound SA: encrypts inner packets into ESP tunnel packets.
#[derive(Debug)]
pub struct OutboundSa {
    id: SaId,
    key: SaKey,
    esn: bool,
    last_seq: u64,
    local: IpAddr,
    remote: IpAddr,
    life: Lifetime,
    counters: SaCounters,
    udp_encap: bool,
    /// TOS / traffic class of the outer header: DSCP << 2, ECN Not-ECT.
    outer_tos: u8,
    /// TFC padding sizes, increasing (empty: none).
    tfc_sizes: Vec<u16>,
    /// The peer's UDP port for ESP in UDP (4500, or what a NAT mapped it to).
    udp_remote_port: u16,
}

impl OutboundSa {
    /// A new SA (first packet gets sequence number 1).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tunnel: TunnelId,
        spi: Spi,
        aead: Aead,
        key_material: &[u8],
        esn: bool,
        local: IpAddr,
        remote: IpAddr,
        lifetimes: Lifetimes,
        now: Timestamp,
    ) -> Result<Self, crate::EngineError> {
        Ok(OutboundSa {
            id: SaId {
                tunnel,
                spi,
                inbound: false,
            },
            key: SaKey::new(aead, key_material)?,
            esn,
            last_seq: 0,
            local,
            remote,
            life: Lifetime {
                limits: lifetimes,
                installed: now,
                state: LifeState::Fresh,
                soft_reported: false,
            },
            counters: SaCounters::default(),
            udp_encap: false,
            outer_tos: 0,
            tfc_sizes: Vec::new(),
            udp_remote_port: udp::NAT_T_PORT,
        })
    }

    /// Sends ESP in UDP to this port of the peer's (a NAT's mapping, as IKE
    /// learned it); 4500 by default.
    pub fn set_udp_remote_port(&mut self, port: u16) {
        self.udp_remote_port = port;
    }

    /// Sends ESP inside UDP, ports 4500 (RFC 3948), instead of as IP
    /// protocol 50.
    pub fn set_udp_encap(&mut self, on: bool) {
        self.udp_encap = on;
    }

    /// Whether ESP goes out inside UDP.
    pub fn udp_encap(&self) -> bool {
        self.udp_encap
    }

    /// The DSCP of every outer header (the low 6 bits of `dscp`; the ECN
    /// field stays Not-ECT).
    pub fn set_outer_dscp(&mut self, dscp: u8) {
        self.outer_tos = (dscp & 0x3f) << 2;
    }

    /// TFC padding sizes (increasing; the policy blob checks that).
    /// Allocates: call when installing the SA, not per packet.
    pub fn set_tfc_sizes(&mut self, sizes: &[u16]) {
        self.tfc_sizes = sizes.to_vec();
    }

    /// Sets the last used sequence number (tests of overflow and ESN).
    pub fn set_last_seq(&mut self, seq: SeqNo) {
        self.last_seq = seq.0;
    }

    /// Identity.
    pub fn id(&self) -> SaId {
        self.id
    }
    /// Counters.
    pub fn counters(&self) -> SaCounters {
        self.counters
    }
    /// Lifetime state (re-evaluated against `now`).
    pub fn life_state(&mut self, now: Timestamp) -> LifeState {
        self.life.tick(&self.counters, now);
        self.life.state
    }
    /// Returns true once when the SA first reached its soft (or hard) lifetime.
    pub fn take_soft_event(&mut self) -> bool {
        if self.life.state != LifeState::Fresh && !self.life.soft_reported {
            self.life.soft_reported = true;
            return true;
        }
        false
    }

    fn next_seq(&mut self) -> Result<SeqNo, DropReason> {
        let max = if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        if self.last_seq >= max {
            return Err(DropReason::SeqOverflow);
        }
        self.last_seq += 1;
        Ok(SeqNo(self.last_seq))
    }

    /// Encapsulates `inner` (a whole IPv4/IPv6 datagram) into `out` as
    /// outer IP header || ESP, or outer IP header || UDP || ESP with UDP
    /// encapsulation; returns the length written. The outer TOS / traffic
    /// class is the policy's (never the inner packet's); with TFC sizes the
    /// payload is padded to the first size that holds the packet.
    pub fn encap(
        &mut self,
        inner: &[u8],
        out: &mut [u8],
        now: Timestamp,
    ) -> Result<usize, DropReason> {
        let nh = match inner.first().map(|b| b >> 4) {
            Some(4) => next_header::IPV4,
            Some(6) => next_header::IPV6,
            _ => return Err(DropReason::Malformed),
        };
        if !self.life.admit(&self.counters, inner.len(), now) {
            return Err(DropReason::Expired);
        }
        let (protocol, udp_len) = if self.udp_encap {
            (udp::PROTOCOL, udp::HEADER_LEN)
        } else {
            (50, 0)
        };
        let outer = OuterRepr {
            src: self.local,
            dst: self.remote,
            tos: self.outer_tos,
            ident: 0,
            protocol,
        };
        let hl = outer.header_len();
        let payload_len = tfc_len(&self.tfc_sizes, inner.len());
        let esp_total = esp_len(payload_len);
        let esp_at = hl + udp_len;
        if out.len() < esp_at + esp_total {
            return Err(DropReason::BufferTooSmall);
        }
        let seq = self.next_seq()?;
        let outer = OuterRepr {
            ident: seq.low() as u16,
            ..outer
        };
        outer
            .emit(&mut out[..hl], udp_len + esp_total)
            .map_err(|_| DropReason::Malformed)?;
        let iv = seq.0.to_be_bytes();
        self.seal_esp(
            &mut out[esp_at..esp_at + esp_total],
            seq,
            &iv,
            inner,
            payload_len,
            nh,
        )?;
        if self.udp_encap {
            udp::emit_ports(
                &mut out[hl..esp_at],
                udp::NAT_T_PORT,
                self.udp_remote_port,
                esp_total,
            )
            .map_err(|_| DropReason::Malformed)?;
            if let (IpAddr::V6(s), IpAddr::V6(d)) = (self.local, self.remote) {
                udp::fill_checksum(&mut out[hl..esp_at + esp_total], &s.octets(), &d.octets())
                    .map_err(|_| DropReason::Malformed)?;
            }
        }
        self.counters.packets += 1;
        self.counters.bytes += inner.len() as u64;
        self.counters.tfc_bytes += (payload_len - inner.len()) as u64;
        self.life.after(&self.counters, now);
        Ok(esp_at + esp_total)
    }

    /// Writes SPI, seq, IV, encrypted payload+trailer and ICV into `esp_buf`
    /// (exactly `esp_len(payload_len)` bytes). The payload is `inner`
    /// followed by `payload_len - inner.len()` zero bytes of TFC padding.
    pub(crate) fn seal_esp(
        &self,
        esp_buf: &mut [u8],
        seq: SeqNo,
        iv: &[u8; IV_LEN],
        inner: &[u8],
        payload_len: usize,
        nh: u8,
    ) -> Result<(), DropReason> {
        if payload_len < inner.len() {
            return Err(DropReason::Malformed);
        }
        let pad = pad_len(payload_len);
        let ct_len = payload_len + pad + esp::TRAILER_LEN;
        if esp_buf.len() != HEADER_LEN + IV_LEN + ct_len + ICV_LEN {
            return Err(DropReason::BufferTooSmall);
        }
        esp_buf[esp::field::SPI].copy_from_slice(&self.id.spi.0.to_be_bytes());
        esp_buf[esp::field::SEQ].copy_from_slice(&seq.low().to_be_bytes());
        esp_buf[esp::field::IV].copy_from_slice(iv);
        let (ct, tag_out) = esp_buf[esp::field::PAYLOAD..].split_at_mut(ct_len);
        ct[..inner.len()].copy_from_slice(inner);
        ct[inner.len()..payload_len].fill(0);
        for (i, b) in ct[payload_len..payload_len + pad].iter_mut().enumerate() {
            *b = (i + 1) as u8;
        }
        ct[ct_len - 2] = pad as u8;
        ct[ct_len - 1] = nh;
        let mut a = [0u8; 12];
        let alen = aad(self.id.spi.0, seq, self.esn, &mut a);
        let tag = self
            .key
            .seal(iv, &a[..alen], ct)
            .map_err(|_| DropReason::Malformed)?;
        tag_out.copy_from_slice(&tag);
        Ok(())
    }
}

/// An inbound SA: verifies, decrypts and checks ESP packets.
#[derive(Debug)]
pub struct InboundSa {
    id: SaId,
    key: SaKey,
    esn: bool,
    window: ReplayWindow,
    life: Lifetime,
    counters: SaCounters,
    udp_encap: bool,
}

/// A successfully decapsulated packet: the inner datagram (TFC padding
/// stripped) now sits at `buf[..len]` of the buffer passed to
/// [`InboundSa::decap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapped {
    /// Inner datagram length.
    pub len: usize,
    /// Next header (4 or 41).
    pub next_header: u8,
    /// Full sequence number.
    pub seq: SeqNo,
}

impl InboundSa {
    /// A new inbound SA with a replay window of `window` packets.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tunnel: TunnelId,
        spi: Spi,
        aead: Aead,
        key_material: &[u8],
        esn: bool,
        window: u32,
        lifetimes: Lifetimes,
        now: Timestamp,
    ) -> Result<Self, crate::EngineError> {
        Ok(InboundSa {
            id: SaId {
                tunnel,
                spi,
                inbound: true,
            },
            key: SaKey::new(aead, key_material)?,
            esn,
            window: ReplayWindow::new(window, esn),
            life: Lifetime {
                limits: lifetimes,
                installed: now,
                state: LifeState::Fresh,
                soft_reported: false,
            },
            counters: SaCounters::default(),
            udp_encap: false,
        })
    }

    /// Expects ESP inside UDP, port 4500 (RFC 3948), instead of as IP
    /// protocol 50.
    pub fn set_udp_encap(&mut self, on: bool) {
        self.udp_encap = on;
    }

    /// Whether ESP arrives inside UDP.
    pub fn udp_encap(&self) -> bool {
        self.udp_encap
    }

    /// Identity.
    pub fn id(&self) -> SaId {
        self.id
    }
    /// Counters.
    pub fn counters(&self) -> SaCounters {
        self.counters
    }
    /// The replay window (read-only).
    pub fn window(&self) -> &ReplayWindow {
        &self.window
    }
    /// Mutable replay window (tests that fast-forward across 2^32).
    pub fn window_mut(&mut self) -> &mut ReplayWindow {
        &mut self.window
    }
    /// Lifetime state (re-evaluated against `now`).
    pub fn life_state(&mut self, now: Timestamp) -> LifeState {
        self.life.tick(&self.counters, now);
        self.life.state
    }
    /// Returns true once when the SA first reached its soft (or hard) lifetime.
    pub fn take_soft_event(&mut self) -> bool {
        if self.life.state != LifeState::Fresh && !self.life.soft_reported {
            self.life.soft_reported = true;
            return true;
        }
        false
    }

    /// Decapsulates the ESP packet in `buf` (starting at the SPI) in place.
    /// On success the inner datagram is moved to `buf[..len]`; its length
    /// comes from its own IP header, so TFC padding after it (RFC 4303
    /// §2.4) is stripped. The SPI is assumed to have been matched by the
    /// caller.
    pub fn decap(&mut self, buf: &mut [u8], now: Timestamp) -> Result<Decapped, DropReason> {
        let pkt = EspPacket::new_checked(&*buf).map_err(|_| DropReason::Truncated)?;
        let seq_low = pkt.seq_low();
        let iv = pkt.iv();
        let ct_len = pkt.ciphertext_len();
        if !self.life.admit(&self.counters, 0, now) {
            return Err(DropReason::Expired);
        }
        let seq = self.window.check(seq_low).map_err(|e| match e {
            ReplayError::Replay => DropReason::Replay,
            ReplayError::OutsideWindow => DropReason::OutsideWindow,
        })?;
        let mut a = [0u8; 12];
        let alen = aad(self.id.spi.0, seq, self.esn, &mut a);
        let sealed = &mut buf[esp::field::PAYLOAD..];
        let n = self.key.open(&iv, &a[..alen], sealed).map_err(|_| {
            if self.window.is_wrap_guess(seq) {
                DropReason::OutsideWindow
            } else {
                DropReason::AuthFailed
            }
        })?;
        if n != ct_len {
            return Err(DropReason::AuthFailed);
        }
        // Authentic: only now may the window move (RFC 4303 §3.4.3).
        self.window.accept(seq);
        let pt = &sealed[..ct_len];
        if ct_len % 4 != 0 {
            return Err(DropReason::BadPadding);
        }
        let nh = pt[ct_len - 1];
        let pad = usize::from(pt[ct_len - 2]);
        if pad + esp::TRAILER_LEN > ct_len {
            return Err(DropReason::BadPadding);
        }
        let payload_len = ct_len - esp::TRAILER_LEN - pad;
        let pad_ok = pt[payload_len..payload_len + pad]
            .iter()
            .enumerate()
            .all(|(i, &b)| usize::from(b) == i + 1);
        if !pad_ok {
            return Err(DropReason::BadPadding);
        }
        if nh == next_header::NO_NEXT {
            return Err(DropReason::Dummy);
        }
        let inner_len = datagram_len(&pt[..payload_len], nh)?;
        buf.copy_within(esp::field::PAYLOAD..esp::field::PAYLOAD + inner_len, 0);
        self.counters.packets += 1;
        self.counters.bytes += inner_len as u64;
        self.counters.tfc_bytes += (payload_len - inner_len) as u64;
        self.life.after(&self.counters, now);
        Ok(Decapped {
            len: inner_len,
            next_header: nh,
            seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // RFC 7634 Appendix A: ESP example (ChaCha20-Poly1305, SPI 0x01020304,
    // seq 5, IV 0x1011121314151617, no ESN).
    const KEYMAT: &str =
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f a0a1a2a3";
    const INNER: &str = "45000054a6f200004001e778c6336405c000020508005b7a3a080000553bec10
        0007362708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223
        2425262728292a2b2c2d2e2f3031323334353637";
    const ESP: &str = "01020304000000051011121314151617
        24039428b97f417e3c13753a4f05087b67c352e6a7fab1b982d466ef407ae5c6
        14ee8099d52844eb61aa95dfab4c02f72aa71e7c4c4f64c9befe2facc638e8f3
        cbec163fac469b502773f6fb94e664da9165b82829f641e0
        76aaa8266b7fb0f7b11b369907e1ad43";

    fn any_ip() -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    }

    #[test]
    fn rfc7634_appendix_a_encap_exact_bytes() {
        let sa = OutboundSa::new(
            TunnelId(1),
            Spi(0x01020304),
            Aead::ChaCha20Poly1305,
            &hex(KEYMAT),
            false,
            any_ip(),
            any_ip(),
            Lifetimes::default(),
            Timestamp(0),
        )
        .unwrap();
        let inner = hex(INNER);
        let want = hex(ESP);
        let mut buf = vec![0u8; esp_len(inner.len())];
        assert_eq!(buf.len(), want.len());
        let iv: [u8; 8] = hex("1011121314151617").try_into().unwrap();
        sa.seal_esp(
            &mut buf,
            SeqNo(5),
            &iv,
            &inner,
            inner.len(),
            next_header::IPV4,
        )
        .unwrap();
        assert_eq!(buf, want);
    }

    #[test]
    fn rfc7634_appendix_a_decap() {
        let mut sa = InboundSa::new(
            TunnelId(1),
            Spi(0x01020304),
            Aead::ChaCha20Poly1305,
            &hex(KEYMAT),
            false,
            1024,
            Lifetimes::default(),
            Timestamp(0),
        )
        .unwrap();
        let mut pkt = hex(ESP);
        let d = sa.decap(&mut pkt, Timestamp(0)).unwrap();
        assert_eq!(d.seq, SeqNo(5));
        assert_eq!(d.next_header, next_header::IPV4);
        assert_eq!(&pkt[..d.len], &hex(INNER)[..]);
        // The same packet again is a replay.
        let mut again = hex(ESP);
        assert_eq!(sa.decap(&mut again, Timestamp(0)), Err(DropReason::Replay));
    }

    #[test]
    fn tfc_lengths() {
        let sizes = [128u16, 512, 1400];
        assert_eq!(tfc_len(&sizes, 20), 128);
        assert_eq!(tfc_len(&sizes, 128), 128);
        assert_eq!(tfc_len(&sizes, 129), 512);
        assert_eq!(tfc_len(&sizes, 1400), 1400);
        assert_eq!(
            tfc_len(&sizes, 1401),
            1401,
            "beyond the last size: unpadded"
        );
        assert_eq!(tfc_len(&[], 77), 77);
    }

    #[test]
    fn datagram_length_from_the_inner_header() {
        let mut v4 = vec![0u8; 64];
        v4[0] = 0x45;
        v4[3] = 40;
        assert_eq!(datagram_len(&v4, next_header::IPV4), Ok(40));
        assert_eq!(
            datagram_len(&v4, next_header::IPV6),
            Err(DropReason::BadNextHeader)
        );
        v4[3] = 65;
        assert_eq!(
            datagram_len(&v4, next_header::IPV4),
            Err(DropReason::Truncated)
        );
        v4[3] = 19;
        assert_eq!(
            datagram_len(&v4, next_header::IPV4),
            Err(DropReason::Malformed)
        );
        v4[0] = 0x46; // IHL 24 > total 20
        v4[3] = 20;
        assert_eq!(
            datagram_len(&v4, next_header::IPV4),
            Err(DropReason::Malformed)
        );
        let mut v6 = vec![0u8; 100];
        v6[0] = 0x60;
        v6[5] = 8;
        assert_eq!(datagram_len(&v6, next_header::IPV6), Ok(48));
        v6[5] = 61;
        assert_eq!(
            datagram_len(&v6, next_header::IPV6),
            Err(DropReason::Truncated)
        );
        assert_eq!(
            datagram_len(&v6[..39], next_header::IPV6),
            Err(DropReason::Truncated)
        );
        assert_eq!(
            datagram_len(&[], next_header::IPV4),
            Err(DropReason::BadNextHeader)
        );
        assert_eq!(datagram_len(&v6, 6), Err(DropReason::BadNextHeader));
    }

    #[test]
    fn tfc_padding_is_zeros_before_the_esp_padding() {
        let key = hex(KEYMAT);
        let mut out_sa = OutboundSa::new(
            TunnelId(1),
            Spi(0x01020304),
            Aead::ChaCha20Poly1305,
            &key,
            false,
            any_ip(),
            any_ip(),
            Lifetimes::default(),
            Timestamp(0),
        )
        .unwrap();
        out_sa.set_tfc_sizes(&[200]);
        out_sa.set_outer_dscp(0xff); // only 6 bits are a DSCP
        let inner = hex(INNER);
        let mut buf = vec![0u8; 512];
        let n = out_sa.encap(&inner, &mut buf, Timestamp(0)).unwrap();
        assert_eq!(buf[1], 0xfc, "DSCP 63, ECN Not-ECT");
        assert_eq!(n, 20 + esp_len(200));
        let mut in_sa = InboundSa::new(
            TunnelId(1),
            Spi(0x01020304),
            Aead::ChaCha20Poly1305,
            &key,
            false,
            1024,
            Lifetimes::default(),
            Timestamp(0),
        )
        .unwrap();
        // Open by hand to see the plaintext: inner, zeros, pad 1, 2, …
        let mut esp = buf[20..n].to_vec();
        let d = in_sa.decap(&mut esp, Timestamp(0)).unwrap();
        assert_eq!(&esp[..d.len], &inner[..]);
        // The plaintext stays in place behind the moved inner packet.
        let pt = &esp[esp::field::PAYLOAD..];
        assert!(
            pt[inner.len()..200].iter().all(|&b| b == 0),
            "TFC padding is zeros"
        );
        assert_eq!(&pt[200..200 + pad_len(200)], &[1, 2][..pad_len(200)]);
        assert_eq!(in_sa.counters().tfc_bytes, (200 - inner.len()) as u64);
        assert_eq!(out_sa.counters().tfc_bytes, (200 - inner.len()) as u64);
    }

    #[test]
    fn padding_lengths() {
        assert_eq!(pad_len(84), 2);
        assert_eq!(pad_len(2), 0);
        assert_eq!(pad_len(3), 3);
        for n in 0..64 {
            assert_eq!((n + pad_len(n) + 2) % 4, 0);
        }
    }
}
