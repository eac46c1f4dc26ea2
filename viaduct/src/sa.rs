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
//! - Inbound, the replay window moves only after the ICV verified.
//! - Time is passed in by the caller ([`Timestamp`]); nothing reads a clock.
//! - No allocation per packet; nothing here panics (all slicing is bounded by
//!   checked lengths).

use std::net::IpAddr;

use policy_blob::{Aead, LifetimeLimits, Lifetimes, Spi, TunnelId};

use crate::crypto::SaKey;
use crate::engine::DropReason;
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

/// Length of the ESP part (header, IV, ciphertext, ICV) for an inner packet.
pub fn esp_len(inner: usize) -> usize {
    HEADER_LEN + IV_LEN + inner + pad_len(inner) + esp::TRAILER_LEN + ICV_LEN
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
        })
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
    /// encapsulation; returns the length written.
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
        let tos = match nh {
            next_header::IPV4 => inner.get(1).copied().unwrap_or(0),
            _ => {
                let b0 = inner.first().copied().unwrap_or(0);
                let b1 = inner.get(1).copied().unwrap_or(0);
                (b0 << 4) | (b1 >> 4)
            }
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
            tos,
            ident: 0,
            protocol,
        };
        let hl = outer.header_len();
        let esp_total = esp_len(inner.len());
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
        self.seal_esp(&mut out[esp_at..esp_at + esp_total], seq, &iv, inner, nh)?;
        if self.udp_encap {
            udp::emit(&mut out[hl..esp_at], esp_total).map_err(|_| DropReason::Malformed)?;
            if let (IpAddr::V6(s), IpAddr::V6(d)) = (self.local, self.remote) {
                udp::fill_checksum(&mut out[hl..esp_at + esp_total], &s.octets(), &d.octets())
                    .map_err(|_| DropReason::Malformed)?;
            }
        }
        self.counters.packets += 1;
        self.counters.bytes += inner.len() as u64;
        self.life.after(&self.counters, now);
        Ok(esp_at + esp_total)
    }

    /// Writes SPI, seq, IV, encrypted payload+trailer and ICV into `esp_buf`
    /// (exactly `esp_len(inner.len())` bytes).
    pub(crate) fn seal_esp(
        &self,
        esp_buf: &mut [u8],
        seq: SeqNo,
        iv: &[u8; IV_LEN],
        inner: &[u8],
        nh: u8,
    ) -> Result<(), DropReason> {
        let pad = pad_len(inner.len());
        let ct_len = inner.len() + pad + esp::TRAILER_LEN;
        if esp_buf.len() != HEADER_LEN + IV_LEN + ct_len + ICV_LEN {
            return Err(DropReason::BufferTooSmall);
        }
        esp_buf[esp::field::SPI].copy_from_slice(&self.id.spi.0.to_be_bytes());
        esp_buf[esp::field::SEQ].copy_from_slice(&seq.low().to_be_bytes());
        esp_buf[esp::field::IV].copy_from_slice(iv);
        let (ct, tag_out) = esp_buf[esp::field::PAYLOAD..].split_at_mut(ct_len);
        ct[..inner.len()].copy_from_slice(inner);
        for (i, b) in ct[inner.len()..inner.len() + pad].iter_mut().enumerate() {
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

/// A successfully decapsulated packet: the inner datagram now sits at
/// `buf[..len]` of the buffer passed to [`InboundSa::decap`].
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
    /// On success the inner datagram is moved to `buf[..len]`. The SPI is
    /// assumed to have been matched by the caller.
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
        let inner_len = ct_len - esp::TRAILER_LEN - pad;
        let pad_ok = pt[inner_len..inner_len + pad]
            .iter()
            .enumerate()
            .all(|(i, &b)| usize::from(b) == i + 1);
        if !pad_ok {
            return Err(DropReason::BadPadding);
        }
        match nh {
            next_header::NO_NEXT => return Err(DropReason::Dummy),
            next_header::IPV4 | next_header::IPV6 => {}
            _ => return Err(DropReason::BadNextHeader),
        }
        buf.copy_within(esp::field::PAYLOAD..esp::field::PAYLOAD + inner_len, 0);
        self.counters.packets += 1;
        self.counters.bytes += inner_len as u64;
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
        sa.seal_esp(&mut buf, SeqNo(5), &iv, &inner, next_header::IPV4)
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
    fn padding_lengths() {
        assert_eq!(pad_len(84), 2);
        assert_eq!(pad_len(2), 0);
        assert_eq!(pad_len(3), 3);
        for n in 0..64 {
            assert_eq!((n + pad_len(n) + 2) % 4, 0);
        }
    }
}
