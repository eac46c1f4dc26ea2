//! The vhost-user messages the back end accepts, parsed from bytes the
//! front end (the personality's VMM, untrusted) sends. Parsing never panics;
//! a request outside the whitelist is an error naming it.
//!
//! Wire format (QEMU `docs/interop/vhost-user.rst`): a 12-byte header
//! `request: u32, flags: u32, size: u32` (little-endian), then `size` bytes
//! of payload; descriptors travel as `SCM_RIGHTS` with the header.

use thiserror::Error;

/// Header length.
pub const HDR_LEN: usize = 12;
/// The largest payload accepted: a memory table of [`MAX_REGIONS`] regions.
pub const MAX_PAYLOAD: usize = 8 + 32 * MAX_REGIONS;
/// Memory regions per table (the protocol's limit without memory slots).
pub const MAX_REGIONS: usize = 8;
/// Protocol version in the header's flags.
pub const VERSION: u32 = 0x1;
/// Flags bit: this message is a reply.
pub const FLAG_REPLY: u32 = 1 << 2;
/// Flags bit: the front end wants an acknowledgement (REPLY_ACK).
pub const FLAG_NEED_REPLY: u32 = 1 << 3;
/// In SET_VRING_KICK/CALL/ERR payloads: no descriptor comes with this message.
pub const VRING_NOFD: u64 = 1 << 8;

/// Request codes (front end → back end).
pub mod code {
    #![allow(missing_docs)]
    pub const GET_FEATURES: u32 = 1;
    pub const SET_FEATURES: u32 = 2;
    pub const SET_OWNER: u32 = 3;
    pub const RESET_OWNER: u32 = 4;
    pub const SET_MEM_TABLE: u32 = 5;
    pub const SET_VRING_NUM: u32 = 8;
    pub const SET_VRING_ADDR: u32 = 9;
    pub const SET_VRING_BASE: u32 = 10;
    pub const GET_VRING_BASE: u32 = 11;
    pub const SET_VRING_KICK: u32 = 12;
    pub const SET_VRING_CALL: u32 = 13;
    pub const SET_VRING_ERR: u32 = 14;
    pub const GET_PROTOCOL_FEATURES: u32 = 15;
    pub const SET_PROTOCOL_FEATURES: u32 = 16;
    pub const SET_VRING_ENABLE: u32 = 18;
}

/// A request's name for messages (`#N` for codes outside the protocol's list).
pub fn name(request: u32) -> String {
    let known = [
        "GET_FEATURES",
        "SET_FEATURES",
        "SET_OWNER",
        "RESET_OWNER",
        "SET_MEM_TABLE",
        "SET_LOG_BASE",
        "SET_LOG_FD",
        "SET_VRING_NUM",
        "SET_VRING_ADDR",
        "SET_VRING_BASE",
        "GET_VRING_BASE",
        "SET_VRING_KICK",
        "SET_VRING_CALL",
        "SET_VRING_ERR",
        "GET_PROTOCOL_FEATURES",
        "SET_PROTOCOL_FEATURES",
        "GET_QUEUE_NUM",
        "SET_VRING_ENABLE",
        "SEND_RARP",
        "NET_SET_MTU",
        "SET_BACKEND_REQ_FD",
        "IOTLB_MSG",
        "SET_VRING_ENDIAN",
        "GET_CONFIG",
        "SET_CONFIG",
    ];
    match request.checked_sub(1).and_then(|i| known.get(i as usize)) {
        Some(n) => (*n).to_owned(),
        None => format!("#{request}"),
    }
}

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The request code.
    pub request: u32,
    /// Version and flag bits.
    pub flags: u32,
    /// Payload length.
    pub size: u32,
}

impl Header {
    /// Parses and checks a header: version 1, not a reply, a payload no
    /// larger than [`MAX_PAYLOAD`].
    pub fn parse(b: &[u8; HDR_LEN]) -> Result<Header, MsgError> {
        let h = Header {
            request: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            flags: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            size: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        };
        if h.flags & 0x3 != VERSION {
            return Err(MsgError::Version(h.flags & 0x3));
        }
        if h.flags & FLAG_REPLY != 0 {
            return Err(MsgError::UnexpectedReply(name(h.request)));
        }
        if h.size as usize > MAX_PAYLOAD {
            return Err(MsgError::TooLong {
                request: name(h.request),
                size: h.size,
            });
        }
        Ok(h)
    }

    /// Whether the front end asked for an acknowledgement.
    pub fn need_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }
}

/// One memory region of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionDesc {
    /// Guest-physical address.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// The front end's own virtual address for it (ring addresses use these).
    pub uva: u64,
    /// Offset of the region in its descriptor's file.
    pub mmap_offset: u64,
}

/// Ring addresses (SET_VRING_ADDR), in the front end's virtual addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringAddr {
    /// Queue index.
    pub index: u32,
    /// Flags (bit 0: log the used ring; refused).
    pub flags: u32,
    /// Descriptor table.
    pub desc: u64,
    /// Used ring.
    pub used: u64,
    /// Available ring.
    pub avail: u64,
}

/// A request the back end understands, with its payload decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// GET_FEATURES.
    GetFeatures,
    /// SET_FEATURES.
    SetFeatures(u64),
    /// SET_OWNER.
    SetOwner,
    /// RESET_OWNER.
    ResetOwner,
    /// SET_MEM_TABLE (one descriptor per region).
    SetMemTable(Vec<RegionDesc>),
    /// SET_VRING_NUM `(index, size)`.
    SetVringNum(u32, u32),
    /// SET_VRING_ADDR.
    SetVringAddr(VringAddr),
    /// SET_VRING_BASE `(index, next available index)`.
    SetVringBase(u32, u32),
    /// GET_VRING_BASE `(index)`.
    GetVringBase(u32),
    /// SET_VRING_KICK `(index, with a descriptor)`.
    SetVringKick(u32, bool),
    /// SET_VRING_CALL `(index, with a descriptor)`.
    SetVringCall(u32, bool),
    /// SET_VRING_ERR `(index, with a descriptor)`.
    SetVringErr(u32, bool),
    /// GET_PROTOCOL_FEATURES.
    GetProtocolFeatures,
    /// SET_PROTOCOL_FEATURES.
    SetProtocolFeatures(u64),
    /// SET_VRING_ENABLE `(index, enable)`.
    SetVringEnable(u32, bool),
}

/// A malformed or refused message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MsgError {
    /// The header's version is not 1.
    #[error("vhost-user version {0} (only version 1 is spoken)")]
    Version(u32),
    /// The front end sent a reply.
    #[error("a reply-flagged {0} from the front end")]
    UnexpectedReply(String),
    /// The payload is longer than any accepted request's.
    #[error("{request} with a {size}-byte payload (at most {MAX_PAYLOAD})", MAX_PAYLOAD = MAX_PAYLOAD)]
    TooLong {
        /// The request.
        request: String,
        /// Its declared size.
        size: u32,
    },
    /// The payload's length does not fit the request.
    #[error("{request} with a {got}-byte payload (expected {want})")]
    Length {
        /// The request.
        request: String,
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// The request is outside the whitelist.
    #[error("request {0} is not accepted by this back end")]
    NotAccepted(String),
    /// A field's value is refused.
    #[error("{request}: {what}")]
    Field {
        /// The request.
        request: String,
        /// What is wrong.
        what: String,
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

impl Request {
    /// Decodes `payload` for the request in `h`. Lengths are checked exactly
    /// (no trailing bytes).
    pub fn parse(h: &Header, payload: &[u8]) -> Result<Request, MsgError> {
        let req = || name(h.request);
        let want = |n: usize| {
            if payload.len() == n {
                Ok(())
            } else {
                Err(MsgError::Length {
                    request: req(),
                    got: payload.len(),
                    want: n,
                })
            }
        };
        let fd_flag = |v: u64| -> Result<(u32, bool), MsgError> {
            if v & !(VRING_NOFD | 0xff) != 0 {
                return Err(MsgError::Field {
                    request: req(),
                    what: format!("unknown bits in {v:#x}"),
                });
            }
            Ok(((v & 0xff) as u32, v & VRING_NOFD == 0))
        };
        Ok(match h.request {
            code::GET_FEATURES => {
                want(0)?;
                Request::GetFeatures
            }
            code::SET_FEATURES => {
                want(8)?;
                Request::SetFeatures(u64_at(payload, 0))
            }
            code::SET_OWNER => {
                want(0)?;
                Request::SetOwner
            }
            code::RESET_OWNER => {
                want(0)?;
                Request::ResetOwner
            }
            code::SET_MEM_TABLE => {
                if payload.len() < 8 {
                    return Err(MsgError::Length {
                        request: req(),
                        got: payload.len(),
                        want: 8,
                    });
                }
                let n = u32_at(payload, 0) as usize;
                if n == 0 || n > MAX_REGIONS {
                    return Err(MsgError::Field {
                        request: req(),
                        what: format!("{n} regions (1 to {MAX_REGIONS})"),
                    });
                }
                want(8 + 32 * n)?;
                let regions = (0..n)
                    .map(|i| {
                        let at = 8 + 32 * i;
                        RegionDesc {
                            gpa: u64_at(payload, at),
                            size: u64_at(payload, at + 8),
                            uva: u64_at(payload, at + 16),
                            mmap_offset: u64_at(payload, at + 24),
                        }
                    })
                    .collect();
                Request::SetMemTable(regions)
            }
            code::SET_VRING_NUM | code::SET_VRING_BASE | code::SET_VRING_ENABLE => {
                want(8)?;
                let (i, v) = (u32_at(payload, 0), u32_at(payload, 4));
                match h.request {
                    code::SET_VRING_NUM => Request::SetVringNum(i, v),
                    code::SET_VRING_BASE => Request::SetVringBase(i, v),
                    _ => match v {
                        0 | 1 => Request::SetVringEnable(i, v == 1),
                        _ => {
                            return Err(MsgError::Field {
                                request: req(),
                                what: format!("enable takes 0 or 1, got {v}"),
                            })
                        }
                    },
                }
            }
            code::GET_VRING_BASE => {
                want(8)?;
                Request::GetVringBase(u32_at(payload, 0))
            }
            code::SET_VRING_ADDR => {
                want(40)?;
                Request::SetVringAddr(VringAddr {
                    index: u32_at(payload, 0),
                    flags: u32_at(payload, 4),
                    desc: u64_at(payload, 8),
                    used: u64_at(payload, 16),
                    avail: u64_at(payload, 24),
                })
            }
            code::SET_VRING_KICK | code::SET_VRING_CALL | code::SET_VRING_ERR => {
                want(8)?;
                let (i, fd) = fd_flag(u64_at(payload, 0))?;
                match h.request {
                    code::SET_VRING_KICK => Request::SetVringKick(i, fd),
                    code::SET_VRING_CALL => Request::SetVringCall(i, fd),
                    _ => Request::SetVringErr(i, fd),
                }
            }
            code::GET_PROTOCOL_FEATURES => {
                want(0)?;
                Request::GetProtocolFeatures
            }
            code::SET_PROTOCOL_FEATURES => {
                want(8)?;
                Request::SetProtocolFeatures(u64_at(payload, 0))
            }
            other => return Err(MsgError::NotAccepted(name(other))),
        })
    }

    /// How many descriptors must come with this request.
    pub fn fds(&self) -> usize {
        match self {
            Request::SetMemTable(r) => r.len(),
            Request::SetVringKick(_, true)
            | Request::SetVringCall(_, true)
            | Request::SetVringErr(_, true) => 1,
            _ => 0,
        }
    }
}

/// Encodes a reply to `request` carrying `payload`.
pub fn reply(request: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HDR_LEN + payload.len());
    v.extend_from_slice(&request.to_le_bytes());
    v.extend_from_slice(&(VERSION | FLAG_REPLY).to_le_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// Encodes a request (the front end's side; for the driver and tests).
pub fn request(request: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HDR_LEN + payload.len());
    v.extend_from_slice(&request.to_le_bytes());
    v.extend_from_slice(&(VERSION | flags).to_le_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(req: u32, size: u32) -> Header {
        Header {
            request: req,
            flags: VERSION,
            size,
        }
    }

    #[test]
    fn mem_table_parses_and_refuses_bad_counts() {
        let mut p = vec![0u8; 8 + 32];
        p[0] = 1;
        p[8..16].copy_from_slice(&0x1000u64.to_le_bytes());
        p[16..24].copy_from_slice(&0x2000u64.to_le_bytes());
        let r = Request::parse(&hdr(code::SET_MEM_TABLE, 40), &p).unwrap();
        assert_eq!(
            r,
            Request::SetMemTable(vec![RegionDesc {
                gpa: 0x1000,
                size: 0x2000,
                uva: 0,
                mmap_offset: 0
            }])
        );
        assert_eq!(r.fds(), 1);
        p[0] = 9;
        assert!(matches!(
            Request::parse(&hdr(code::SET_MEM_TABLE, 40), &p),
            Err(MsgError::Field { .. })
        ));
        p[0] = 2;
        assert!(matches!(
            Request::parse(&hdr(code::SET_MEM_TABLE, 40), &p),
            Err(MsgError::Length { .. })
        ));
    }

    #[test]
    fn requests_outside_the_whitelist_are_named() {
        let e = Request::parse(&hdr(6, 8), &[0; 8]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "request SET_LOG_BASE is not accepted by this back end"
        );
        let e = Request::parse(&hdr(99, 0), &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "request #99 is not accepted by this back end"
        );
    }

    #[test]
    fn headers_check_version_reply_and_size() {
        let mut b = [0u8; HDR_LEN];
        b[0] = 1;
        b[4] = 2;
        assert_eq!(Header::parse(&b), Err(MsgError::Version(2)));
        b[4] = 1 | FLAG_REPLY as u8;
        assert!(matches!(
            Header::parse(&b),
            Err(MsgError::UnexpectedReply(_))
        ));
        b[4] = 1;
        b[8..12].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(Header::parse(&b), Err(MsgError::TooLong { .. })));
    }

    #[test]
    fn kick_payload_bits_are_checked() {
        let r = Request::parse(
            &hdr(code::SET_VRING_KICK, 8),
            &(1u64 | VRING_NOFD).to_le_bytes(),
        );
        assert_eq!(r, Ok(Request::SetVringKick(1, false)));
        let r = Request::parse(&hdr(code::SET_VRING_KICK, 8), &(1u64 << 40).to_le_bytes());
        assert!(matches!(r, Err(MsgError::Field { .. })));
        assert!(matches!(
            Request::parse(&hdr(code::SET_VRING_ENABLE, 8), &[0, 0, 0, 0, 2, 0, 0, 0]),
            Err(MsgError::Field { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_bytes_never_panics(req in 0u32..30, body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = Request::parse(&hdr(req, body.len() as u32), &body);
        }
    }
}
