//! The record encoding of [`ToDataPlane`] and [`ToIke`].

use policy_blob::{Aead, TunnelId};
use zeroize::Zeroizing;

use crate::check::Refusal;
use crate::{IkeDatagram, SaInstall, ToDataPlane, ToIke};

/// The largest record either side sends or accepts: an IKE message of up
/// to 65,535 bytes and its header.
pub const MAX_RECORD: usize = 65_535 + 16;

/// Why a record was not a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// It ended inside a field.
    #[error("channel record truncated in {0}")]
    Truncated(&'static str),
    /// A tag or flag has no meaning.
    #[error("channel record has an invalid {what} ({value})")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u8,
    },
    /// Bytes follow the message.
    #[error("channel record has {0} trailing bytes")]
    Trailing(usize),
    /// It is longer than [`MAX_RECORD`].
    #[error("channel record of {0} bytes is too long")]
    TooLong(usize),
}

mod tag {
    pub const SEND_IKE: u8 = 1;
    pub const INSTALL_SA: u8 = 2;
    pub const USE_OUTBOUND: u8 = 3;
    pub const DELETE_SA: u8 = 4;
    pub const IKE_DATAGRAM: u8 = 0x81;
    pub const SA_LIFETIME: u8 = 0x82;
    pub const REFUSED: u8 = 0x83;
}

fn aead_tag(a: Aead) -> u8 {
    match a {
        Aead::Aes128Gcm16 => 1,
        Aead::Aes256Gcm16 => 2,
        Aead::ChaCha20Poly1305 => 3,
    }
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// At most 65,535 bytes (longer is cut: senders never build such).
    fn bytes(&mut self, b: &[u8]) {
        let n = b.len().min(usize::from(u16::MAX));
        self.u16(u16::try_from(n).unwrap_or(u16::MAX));
        self.0.extend_from_slice(b.get(..n).unwrap_or_default());
    }
    fn datagram(&mut self, d: &IkeDatagram) {
        self.u16(d.peer);
        self.u16(d.local_port);
        self.u16(d.remote_port);
        self.bytes(&d.bytes);
    }
}

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?.first().copied().unwrap_or(0))
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::Invalid { what, value }),
        }
    }
    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
    fn aead(&mut self) -> Result<Aead, DecodeError> {
        match self.u8("AEAD")? {
            1 => Ok(Aead::Aes128Gcm16),
            2 => Ok(Aead::Aes256Gcm16),
            3 => Ok(Aead::ChaCha20Poly1305),
            value => Err(DecodeError::Invalid {
                what: "AEAD",
                value,
            }),
        }
    }
    fn datagram(&mut self) -> Result<IkeDatagram, DecodeError> {
        Ok(IkeDatagram {
            peer: self.u16("peer")?,
            local_port: self.u16("local port")?,
            remote_port: self.u16("remote port")?,
            bytes: self.bytes("IKE message")?.to_vec(),
        })
    }
    fn end(self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.0.len()))
        }
    }
}

fn start(record: &[u8]) -> Result<(R<'_>, u8), DecodeError> {
    if record.len() > MAX_RECORD {
        return Err(DecodeError::TooLong(record.len()));
    }
    let mut r = R(record);
    let t = r.u8("tag")?;
    Ok((r, t))
}

impl ToDataPlane {
    /// The record. Key material is written into a buffer that is zeroized
    /// when dropped.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut w = W(Vec::with_capacity(64));
        match self {
            ToDataPlane::SendIke(d) => {
                w.u8(tag::SEND_IKE);
                w.datagram(d);
            }
            ToDataPlane::InstallSa(i) => {
                // Room for everything first: no reallocation leaves a copy
                // of the keys behind.
                w.0.reserve(64 + i.key_out.len() + i.key_in.len());
                w.u8(tag::INSTALL_SA);
                w.u32(i.tunnel.0);
                w.u32(i.inbound_spi);
                w.u32(i.outbound_spi);
                w.u8(aead_tag(i.aead));
                w.u8(u8::from(i.esn));
                w.bytes(&i.key_out);
                w.bytes(&i.key_in);
                match i.udp_remote_port {
                    None => w.u8(0),
                    Some(p) => {
                        w.u8(1);
                        w.u16(p);
                    }
                }
                w.u8(u8::from(i.outbound_active));
                w.u64(i.soft_seconds);
                w.u64(i.hard_seconds);
            }
            ToDataPlane::UseOutbound {
                tunnel,
                inbound_spi,
            } => {
                w.u8(tag::USE_OUTBOUND);
                w.u32(tunnel.0);
                w.u32(*inbound_spi);
            }
            ToDataPlane::DeleteSa {
                tunnel,
                inbound_spi,
            } => {
                w.u8(tag::DELETE_SA);
                w.u32(tunnel.0);
                w.u32(*inbound_spi);
            }
        }
        Zeroizing::new(w.0)
    }

    /// Reads one record. Never panics.
    ///
    /// # Errors
    /// [`DecodeError`] for anything but exactly one message.
    pub fn decode(record: &[u8]) -> Result<ToDataPlane, DecodeError> {
        let (mut r, t) = start(record)?;
        let m = match t {
            tag::SEND_IKE => ToDataPlane::SendIke(r.datagram()?),
            tag::INSTALL_SA => ToDataPlane::InstallSa(Box::new(SaInstall {
                tunnel: TunnelId(r.u32("tunnel")?),
                inbound_spi: r.u32("inbound SPI")?,
                outbound_spi: r.u32("outbound SPI")?,
                aead: r.aead()?,
                esn: r.flag("ESN flag")?,
                key_out: Zeroizing::new(r.bytes("outbound key")?.to_vec()),
                key_in: Zeroizing::new(r.bytes("inbound key")?.to_vec()),
                udp_remote_port: if r.flag("UDP flag")? {
                    Some(r.u16("UDP port")?)
                } else {
                    None
                },
                outbound_active: r.flag("outbound flag")?,
                soft_seconds: r.u64("soft lifetime")?,
                hard_seconds: r.u64("hard lifetime")?,
            })),
            tag::USE_OUTBOUND => ToDataPlane::UseOutbound {
                tunnel: TunnelId(r.u32("tunnel")?),
                inbound_spi: r.u32("inbound SPI")?,
            },
            tag::DELETE_SA => ToDataPlane::DeleteSa {
                tunnel: TunnelId(r.u32("tunnel")?),
                inbound_spi: r.u32("inbound SPI")?,
            },
            value => return Err(DecodeError::Invalid { what: "tag", value }),
        };
        r.end()?;
        Ok(m)
    }
}

impl ToIke {
    /// The record.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(16));
        match self {
            ToIke::IkeDatagram(d) => {
                w.u8(tag::IKE_DATAGRAM);
                w.datagram(d);
            }
            ToIke::SaLifetime {
                tunnel,
                inbound_spi,
                hard,
            } => {
                w.u8(tag::SA_LIFETIME);
                w.u32(tunnel.0);
                w.u32(*inbound_spi);
                w.u8(u8::from(*hard));
            }
            ToIke::Refused {
                tunnel,
                inbound_spi,
                refusal,
            } => {
                w.u8(tag::REFUSED);
                w.u32(tunnel.0);
                w.u32(*inbound_spi);
                w.u8(refusal.tag());
            }
        }
        w.0
    }

    /// Reads one record. Never panics.
    ///
    /// # Errors
    /// [`DecodeError`] for anything but exactly one message.
    pub fn decode(record: &[u8]) -> Result<ToIke, DecodeError> {
        let (mut r, t) = start(record)?;
        let m = match t {
            tag::IKE_DATAGRAM => ToIke::IkeDatagram(r.datagram()?),
            tag::SA_LIFETIME => ToIke::SaLifetime {
                tunnel: TunnelId(r.u32("tunnel")?),
                inbound_spi: r.u32("inbound SPI")?,
                hard: r.flag("hard flag")?,
            },
            tag::REFUSED => {
                let tunnel = TunnelId(r.u32("tunnel")?);
                let inbound_spi = r.u32("inbound SPI")?;
                let value = r.u8("refusal")?;
                let refusal = Refusal::from_tag(value).ok_or(DecodeError::Invalid {
                    what: "refusal",
                    value,
                })?;
                ToIke::Refused {
                    tunnel,
                    inbound_spi,
                    refusal,
                }
            }
            value => return Err(DecodeError::Invalid { what: "tag", value }),
        };
        r.end()?;
        Ok(m)
    }
}
