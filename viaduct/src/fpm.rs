//! A sans-IO reader of FRR's FPM stream (netlink encoding): the routes a
//! personality's zebra wants forwarded.
//!
//! FRR's zebra, loaded with the module `dplane_fpm_nl`, connects over TCP to
//! an "FPM server" and streams its forwarding table as FPM frames. Each frame
//! is a 4-byte header (version `1`, message type `1` = netlink, total length
//! as a big-endian `u16`, header included) followed by one or more netlink
//! messages, each padded to 4 bytes, in the host byte order of the sender
//! (read here as little-endian, as on x86_64).
//!
//! What is read: `RTM_NEWROUTE` and `RTM_DELROUTE` become [`RouteUpdate`]s
//! (family, destination prefix, table, protocol). Every other netlink message
//! (nexthops, neighbours, links, `NLMSG_ERROR`, `NLMSG_DONE`, ...) becomes
//! [`Message::Ignored`]: its length is checked, its body is not parsed. Of a
//! route's attributes only `RTA_DST`, `RTA_SRC` and `RTA_TABLE` are
//! interpreted; the others (`RTA_OIF`, `RTA_GATEWAY`, `RTA_MULTIPATH`,
//! `RTA_NH_ID`, ...) are skipped once their framing is checked (length at
//! least 4, inside the message); nested attributes are not descended into.
//!
//! A `RTM_NEWROUTE` whose `rtm_type` is not unicast (blackhole, unreachable,
//! prohibit, local, ...) is read as a [`RouteOp::Remove`] of its prefix: such
//! a destination is not to be forwarded through the black side, which is
//! what removing it achieves. A `RTM_DELROUTE` is a `Remove` whatever its
//! type.
//!
//! What is refused (the stream comes from an untrusted, possibly compromised
//! personality, so a forged message is refused rather than read some other
//! way): any FPM version but 1; the protobuf encoding (type 2) and any other
//! type; frames shorter than 20 bytes; a payload not made exactly of whole,
//! aligned netlink messages (only the last one may omit its padding, when it
//! ends the frame exactly); more than [`MAX_MESSAGES`] messages in a frame;
//! in a route: a `struct rtmsg` cut short, a family other than `AF_INET` and
//! `AF_INET6`, a prefix length beyond the family's, a source-specific route
//! (`rtm_src_len` not 0, or any `RTA_SRC`), malformed or repeated
//! attributes, a `RTA_DST` of the wrong size, a missing `RTA_DST` with a
//! prefix length other than 0, and a `RTA_DST` with bits set beyond its
//! prefix length (never silently masked). Padding bytes are not checked (the
//! kernel does not check them either).
//!
//! Errors name the frame (numbered from 0), its offset in the stream and the
//! field and value at fault. After an error the reader refuses everything
//! (the stream cannot be trusted to be in step any more): drop the
//! connection and start a new reader.
//!
//! Panics: none on any input. Slices are taken with `get`/`first_chunk`,
//! arithmetic is checked, and memory is bounded: a frame is at most
//! [`MAX_FRAME`] bytes and yields at most [`MAX_MESSAGES`] messages, and the
//! reader buffers what the caller pushed and has not taken yet, of which at
//! most `MAX_FRAME` bytes may lie outside complete frames.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[cfg(test)]
mod tests;

/// The largest FPM frame, header included (its length is a `u16`).
pub const MAX_FRAME: usize = 65535;

/// The most netlink messages one frame may carry (FRR sends one or two).
pub const MAX_MESSAGES: usize = 64;

/// The FPM header: version, message type, length.
const FPM_HEADER_LEN: usize = 4;
/// The FPM version read here.
const FPM_VERSION: u8 = 1;
/// FPM message type: netlink.
const FPM_TYPE_NETLINK: u8 = 1;
/// FPM message type: protobuf (refused).
const FPM_TYPE_PROTOBUF: u8 = 2;
/// `struct nlmsghdr`: len u32, type u16, flags u16, seq u32, pid u32.
const NLMSG_HDRLEN: usize = 16;
/// The shortest acceptable frame: an FPM header and one netlink header.
const MIN_FRAME: usize = FPM_HEADER_LEN + NLMSG_HDRLEN;
/// `struct rtmsg`.
const RTMSG_LEN: usize = 12;
/// `struct rtattr`: len u16, type u16.
const RTA_HDRLEN: usize = 4;

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

const RTN_UNICAST: u8 = 1;

const RTA_DST: u16 = 1;
const RTA_SRC: u16 = 2;
const RTA_TABLE: u16 = 15;
/// `NLA_F_NESTED | NLA_F_NET_BYTEORDER`, masked off to get an attribute's type.
const NLA_FLAGS: u16 = 0x8000 | 0x4000;

/// What a route message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteOp {
    /// Forward the prefix (a unicast `RTM_NEWROUTE`).
    Add,
    /// Stop forwarding the prefix (a `RTM_DELROUTE`, or a `RTM_NEWROUTE` of
    /// any type but unicast: blackhole, unreachable, prohibit, ...).
    Remove,
}

/// One route read from a `RTM_NEWROUTE` or `RTM_DELROUTE`.
///
/// Guaranteed by the parser: `len` is at most 32 for an IPv4 prefix and 128
/// for an IPv6 one, and `prefix` has no bit set beyond `len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteUpdate {
    /// Add or remove.
    pub op: RouteOp,
    /// The destination network address (`0.0.0.0` or `::` for a default
    /// route, which carries no `RTA_DST`).
    pub prefix: IpAddr,
    /// The prefix length (`rtm_dst_len`).
    pub len: u8,
    /// The routing table: `RTA_TABLE` if present, else `rtm_table`.
    pub table: u32,
    /// Who installed the route (`rtm_protocol`: 2 kernel, 186 BGP,
    /// 196 static, ...).
    pub protocol: u8,
    /// The `rtm_type` as sent (1 unicast, 6 blackhole, 7 unreachable, ...);
    /// informative only, [`RouteUpdate::op`] already accounts for it.
    pub route_type: u8,
}

/// One netlink message of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Message {
    /// A route to add or remove.
    Route(RouteUpdate),
    /// A well-framed message of another type (nexthop 104/105/106,
    /// neighbour, link, `NLMSG_ERROR`, `NLMSG_DONE`, ...), not parsed.
    Ignored {
        /// Its `nlmsg_type`.
        nl_type: u16,
    },
}

/// Why the FPM stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FpmError {
    /// The FPM version is not 1.
    #[error("FPM frame {frame} (stream offset {offset}): version {version}, expected 1")]
    Version {
        /// Frame number, from 0.
        frame: u64,
        /// Stream offset of the frame.
        offset: u64,
        /// The version sent.
        version: u8,
    },
    /// The frame uses the protobuf encoding.
    #[error("FPM frame {frame} (stream offset {offset}): message type 2 (protobuf) is not read; only type 1 (netlink, as sent by zebra's dplane_fpm_nl) is")]
    Protobuf {
        /// Frame number, from 0.
        frame: u64,
        /// Stream offset of the frame.
        offset: u64,
    },
    /// The FPM message type is neither netlink nor protobuf.
    #[error(
        "FPM frame {frame} (stream offset {offset}): message type {msg_type}, expected 1 (netlink)"
    )]
    MsgType {
        /// Frame number, from 0.
        frame: u64,
        /// Stream offset of the frame.
        offset: u64,
        /// The type sent.
        msg_type: u8,
    },
    /// The frame length cannot hold the header and one netlink header.
    #[error("FPM frame {frame} (stream offset {offset}): length {len}, below the minimum of 20 (4-byte FPM header and 16-byte netlink header)")]
    FrameLength {
        /// Frame number, from 0.
        frame: u64,
        /// Stream offset of the frame.
        offset: u64,
        /// The length sent.
        len: u16,
    },
    /// More than [`MAX_FRAME`] bytes were pushed that are not part of a
    /// complete frame.
    #[error("FPM frame {frame} (stream offset {offset}): {buffered} bytes buffered without completing a frame, more than the {max} a frame can hold", max = MAX_FRAME)]
    Overflow {
        /// Number of the frame that does not complete, from 0.
        frame: u64,
        /// Its stream offset.
        offset: u64,
        /// Bytes buffered from that offset on.
        buffered: usize,
    },
    /// The frame's netlink payload is malformed.
    #[error("FPM frame {frame} (stream offset {offset}): {source}")]
    Netlink {
        /// Frame number, from 0.
        frame: u64,
        /// Stream offset of the frame.
        offset: u64,
        /// What is wrong with the payload.
        source: NetlinkError,
    },
    /// The reader refused the stream before and reads nothing more.
    #[error("FPM stream already refused at frame {frame}; it cannot be read further: close the connection and start a new reader")]
    Refused {
        /// The frame at which it was refused.
        frame: u64,
    },
}

impl FpmError {
    /// The number of the frame at fault (from 0).
    pub fn frame(&self) -> u64 {
        match *self {
            Self::Version { frame, .. }
            | Self::Protobuf { frame, .. }
            | Self::MsgType { frame, .. }
            | Self::FrameLength { frame, .. }
            | Self::Overflow { frame, .. }
            | Self::Netlink { frame, .. }
            | Self::Refused { frame } => frame,
        }
    }
}

/// Why a frame's netlink payload was refused. Offsets count from the start
/// of the payload (just after the 4-byte FPM header); messages are numbered
/// from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetlinkError {
    /// The payload holds more than [`MAX_MESSAGES`] messages.
    #[error("netlink message {index} at payload offset {offset}: more than {max} messages in one frame", index = MAX_MESSAGES, max = MAX_MESSAGES)]
    TooManyMessages {
        /// Where the first message beyond the limit starts.
        offset: usize,
    },
    /// Bytes after the last message that cannot hold a netlink header.
    #[error("{len} bytes at payload offset {offset} after the last netlink message, too few for a 16-byte netlink header")]
    Trailing {
        /// Where they start.
        offset: usize,
        /// How many there are.
        len: usize,
    },
    /// `nlmsg_len` is smaller than the netlink header.
    #[error("netlink message {index} at payload offset {offset}: nlmsg_len {len}, below the 16-byte header")]
    MessageTooShort {
        /// Message number.
        index: usize,
        /// Where it starts.
        offset: usize,
        /// Its `nlmsg_len`.
        len: u32,
    },
    /// `nlmsg_len` runs past the end of the payload.
    #[error("netlink message {index} at payload offset {offset}: nlmsg_len {len} runs past the frame, which has {remaining} bytes left")]
    MessageOverrun {
        /// Message number.
        index: usize,
        /// Where it starts.
        offset: usize,
        /// Its `nlmsg_len`.
        len: u32,
        /// Payload bytes from `offset` to the end.
        remaining: usize,
    },
    /// The message is followed by part of its padding only: it neither
    /// ends the payload nor is padded to 4 bytes within it.
    #[error("netlink message {index} at payload offset {offset}: nlmsg_len {len} leaves {extra} bytes before the frame's end, not a whole padding to 4 bytes")]
    MessagePadding {
        /// Message number.
        index: usize,
        /// Where it starts.
        offset: usize,
        /// Its `nlmsg_len`.
        len: u32,
        /// Payload bytes after the message.
        extra: usize,
    },
    /// A route message is malformed.
    #[error("netlink message {index} ({}) at payload offset {offset}: {source}", route_kind(.nl_type))]
    Route {
        /// Message number.
        index: usize,
        /// Where it starts.
        offset: usize,
        /// `RTM_NEWROUTE` (24) or `RTM_DELROUTE` (25).
        nl_type: u16,
        /// What is wrong with it.
        source: RouteError,
    },
}

/// Why a `RTM_NEWROUTE` or `RTM_DELROUTE` was refused. Offsets count from
/// the start of the netlink message (its 16-byte header included).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The body cannot hold a `struct rtmsg`.
    #[error("body of {len} bytes, shorter than the 12-byte struct rtmsg")]
    BodyShort {
        /// Body length (after the netlink header).
        len: usize,
    },
    /// Neither IPv4 nor IPv6.
    #[error("rtm_family {family}, expected AF_INET (2) or AF_INET6 (10)")]
    Family {
        /// The family sent.
        family: u8,
    },
    /// The prefix length exceeds the family's address length.
    #[error("rtm_dst_len {dst_len}, above {max} for {}", family_name(.family))]
    DstLen {
        /// The family.
        family: u8,
        /// The prefix length sent.
        dst_len: u8,
        /// The family's maximum.
        max: u8,
    },
    /// A source prefix length: source-specific routes are refused.
    #[error("rtm_src_len {src_len}, expected 0: source-specific routes are refused (they could not be enforced)")]
    SrcLen {
        /// The source prefix length sent.
        src_len: u8,
    },
    /// A `RTA_SRC` attribute: source-specific routes are refused.
    #[error("RTA_SRC at message offset {offset}: source-specific routes are refused (they could not be enforced)")]
    SrcAttr {
        /// Where the attribute starts.
        offset: usize,
    },
    /// `rta_len` is smaller than the attribute header.
    #[error("attribute of type {rta_type:#06x} at message offset {offset}: rta_len {len}, below the 4-byte attribute header")]
    AttrTooShort {
        /// Where the attribute starts.
        offset: usize,
        /// Its type, flags included.
        rta_type: u16,
        /// Its `rta_len`.
        len: u16,
    },
    /// `rta_len` runs past the end of the message.
    #[error("attribute of type {rta_type:#06x} at message offset {offset}: rta_len {len} runs past the message, which has {remaining} bytes left")]
    AttrOverrun {
        /// Where the attribute starts.
        offset: usize,
        /// Its type, flags included.
        rta_type: u16,
        /// Its `rta_len`.
        len: u16,
        /// Message bytes from `offset` to the end.
        remaining: usize,
    },
    /// The attribute is followed by part of its padding only.
    #[error("attribute of type {rta_type:#06x} at message offset {offset}: rta_len {len} leaves {extra} bytes before the message's end, not a whole padding to 4 bytes")]
    AttrPadding {
        /// Where the attribute starts.
        offset: usize,
        /// Its type, flags included.
        rta_type: u16,
        /// Its `rta_len`.
        len: u16,
        /// Message bytes after the attribute.
        extra: usize,
    },
    /// Bytes after the last attribute that cannot hold an attribute header.
    #[error("{len} bytes at message offset {offset} after the last attribute, too few for a 4-byte attribute header")]
    AttrTrailing {
        /// Where they start.
        offset: usize,
        /// How many there are.
        len: usize,
    },
    /// An attribute value of the wrong size.
    #[error("{attr} at message offset {offset}: value of {len} bytes, expected {expected}")]
    AttrValueLength {
        /// `RTA_DST` or `RTA_TABLE`.
        attr: &'static str,
        /// Where the attribute starts.
        offset: usize,
        /// The value's length.
        len: usize,
        /// The length required (4 for IPv4 and `RTA_TABLE`, 16 for IPv6).
        expected: usize,
    },
    /// An attribute that may appear once appears again.
    #[error("second {attr} at message offset {offset}")]
    Duplicate {
        /// `RTA_DST` or `RTA_TABLE`.
        attr: &'static str,
        /// Where the second one starts.
        offset: usize,
    },
    /// No `RTA_DST` (a default route) but a prefix length other than 0.
    #[error("no RTA_DST (a default route) but rtm_dst_len {dst_len}, expected 0")]
    MissingDst {
        /// The prefix length sent.
        dst_len: u8,
    },
    /// The destination has bits set beyond its prefix length.
    #[error("RTA_DST {prefix} has bits set beyond its prefix length /{len}")]
    HostBits {
        /// The destination sent.
        prefix: IpAddr,
        /// The prefix length sent.
        len: u8,
    },
}

fn route_kind(nl_type: &u16) -> &'static str {
    match *nl_type {
        RTM_NEWROUTE => "RTM_NEWROUTE",
        RTM_DELROUTE => "RTM_DELROUTE",
        _ => "route message",
    }
}

fn family_name(family: &u8) -> &'static str {
    match *family {
        AF_INET => "AF_INET",
        AF_INET6 => "AF_INET6",
        _ => "an unknown family",
    }
}

/// Reads FPM frames from a byte stream pushed in pieces of any size.
///
/// Typical use: after each read from the socket, [`push`](Self::push) the
/// bytes, then call [`next_frame`](Self::next_frame) until it returns
/// `Ok(None)`. After any error the reader answers [`FpmError::Refused`].
#[derive(Debug, Default)]
pub struct FpmReader {
    /// Bytes pushed; `buf[start..]` is not taken yet.
    buf: Vec<u8>,
    /// Bytes of `buf` already taken by `next_frame`.
    start: usize,
    /// `buf[start..scanned]` is made of whole frames as delimited by their
    /// length fields (not otherwise checked yet).
    scanned: usize,
    /// How many whole frames `buf[start..scanned]` holds.
    ahead: u64,
    /// Frames taken so far (the number of the next frame).
    frames: u64,
    /// Stream bytes taken so far (the stream offset of `buf[start]`).
    taken: u64,
    /// The frame at which the stream was refused, if it was.
    refused: Option<u64>,
}

impl FpmReader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames taken so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes pushed and not taken yet.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// Appends stream bytes.
    ///
    /// Refuses ([`FpmError::Overflow`]) if more than [`MAX_FRAME`] bytes
    /// would be buffered beyond the last complete frame: no valid frame is
    /// that long, so the stream is not FPM. Complete frames are buffered
    /// until taken by [`next_frame`](Self::next_frame); take them after each
    /// push to keep the buffer small.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FpmError> {
        self.check_refused()?;
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned = self.scanned.saturating_sub(self.start);
            self.start = 0;
            if self.buf.capacity() > 2 * MAX_FRAME {
                self.buf.shrink_to(2 * MAX_FRAME);
            }
        }
        self.buf.extend_from_slice(bytes);
        // Delimit the complete frames by their length fields alone; a
        // length below the header's cannot delimit anything and stops the
        // walk (next_frame refuses that frame).
        while let Some(&[_, _, hi, lo]) = self
            .buf
            .get(self.scanned..)
            .and_then(|r| r.first_chunk::<4>())
        {
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            let end = match self.scanned.checked_add(len) {
                Some(end) if len >= FPM_HEADER_LEN && end <= self.buf.len() => end,
                _ => break,
            };
            self.scanned = end;
            self.ahead = self.ahead.saturating_add(1);
        }
        let tail = self.buf.len().saturating_sub(self.scanned);
        if tail > MAX_FRAME {
            let frame = self.frames.saturating_add(self.ahead);
            let before = self.scanned.saturating_sub(self.start);
            let offset = self
                .taken
                .saturating_add(u64::try_from(before).unwrap_or(u64::MAX));
            return Err(self.refuse(FpmError::Overflow {
                frame,
                offset,
                buffered: tail,
            }));
        }
        Ok(())
    }

    /// The messages of the next complete frame, or `Ok(None)` when more
    /// bytes are needed. The frame header is checked as soon as its 4 bytes
    /// are buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<Message>>, FpmError> {
        self.check_refused()?;
        match self.read_frame() {
            Ok(None) => Ok(None),
            Ok(Some((len, messages))) => {
                self.start = self.start.saturating_add(len);
                self.taken = self
                    .taken
                    .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
                self.frames = self.frames.saturating_add(1);
                self.ahead = self.ahead.saturating_sub(1);
                if self.start >= self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                    self.scanned = 0;
                    self.ahead = 0;
                }
                Ok(Some(messages))
            }
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// Checks and parses the frame at `buf[start..]`, returning its length
    /// and messages, without consuming it.
    fn read_frame(&self) -> Result<Option<(usize, Vec<Message>)>, FpmError> {
        let rest = self.buf.get(self.start..).unwrap_or_default();
        let Some(&[version, msg_type, hi, lo]) = rest.first_chunk::<4>() else {
            return Ok(None);
        };
        let (frame, offset) = (self.frames, self.taken);
        if version != FPM_VERSION {
            return Err(FpmError::Version {
                frame,
                offset,
                version,
            });
        }
        match msg_type {
            FPM_TYPE_NETLINK => {}
            FPM_TYPE_PROTOBUF => return Err(FpmError::Protobuf { frame, offset }),
            msg_type => {
                return Err(FpmError::MsgType {
                    frame,
                    offset,
                    msg_type,
                })
            }
        }
        let len = u16::from_be_bytes([hi, lo]);
        let frame_len = usize::from(len);
        if frame_len < MIN_FRAME {
            return Err(FpmError::FrameLength { frame, offset, len });
        }
        let Some(payload) = rest.get(FPM_HEADER_LEN..frame_len) else {
            return Ok(None);
        };
        let messages = parse_netlink(payload).map_err(|source| FpmError::Netlink {
            frame,
            offset,
            source,
        })?;
        Ok(Some((frame_len, messages)))
    }

    fn check_refused(&self) -> Result<(), FpmError> {
        match self.refused {
            Some(frame) => Err(FpmError::Refused { frame }),
            None => Ok(()),
        }
    }

    /// Records the refusal, frees the buffer and hands the error back.
    fn refuse(&mut self, e: FpmError) -> FpmError {
        self.refused = Some(e.frame());
        self.buf = Vec::new();
        self.start = 0;
        self.scanned = 0;
        self.ahead = 0;
        e
    }
}

/// Parses one frame's netlink payload (the bytes after the FPM header) into
/// its messages: all of them or an error.
pub fn parse_netlink(payload: &[u8]) -> Result<Vec<Message>, NetlinkError> {
    let mut messages = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let offset = payload.len().saturating_sub(rest.len());
        let index = messages.len();
        if index >= MAX_MESSAGES {
            return Err(NetlinkError::TooManyMessages { offset });
        }
        let Some(&[l0, l1, l2, l3, t0, t1, ..]) = rest.first_chunk::<NLMSG_HDRLEN>() else {
            return Err(NetlinkError::Trailing {
                offset,
                len: rest.len(),
            });
        };
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let nl_type = u16::from_le_bytes([t0, t1]);
        let msg_len = usize::try_from(len).unwrap_or(usize::MAX);
        if msg_len < NLMSG_HDRLEN {
            return Err(NetlinkError::MessageTooShort { index, offset, len });
        }
        let Some((message, after)) = rest.split_at_checked(msg_len) else {
            return Err(NetlinkError::MessageOverrun {
                index,
                offset,
                len,
                remaining: rest.len(),
            });
        };
        rest = match skip_padding(msg_len, after) {
            Some(next) => next,
            None => {
                return Err(NetlinkError::MessagePadding {
                    index,
                    offset,
                    len,
                    extra: after.len(),
                })
            }
        };
        let body = message.get(NLMSG_HDRLEN..).unwrap_or_default();
        messages.push(match nl_type {
            RTM_NEWROUTE | RTM_DELROUTE => {
                Message::Route(parse_route(nl_type, body).map_err(|source| {
                    NetlinkError::Route {
                        index,
                        offset,
                        nl_type,
                        source,
                    }
                })?)
            }
            _ => Message::Ignored { nl_type },
        });
    }
    Ok(messages)
}

/// The padding after `len` bytes to reach a multiple of 4 (0 to 3).
fn padding(len: usize) -> usize {
    len.wrapping_neg() & 3
}

/// What follows an item of `len` bytes once its padding is skipped, given
/// the bytes `after` it: `None` if `after` holds only part of the padding.
/// An item that ends its container exactly may omit its padding.
fn skip_padding(len: usize, after: &[u8]) -> Option<&[u8]> {
    if after.is_empty() {
        Some(after)
    } else {
        after.get(padding(len)..)
    }
}

/// Parses the body (after the netlink header) of a `RTM_NEWROUTE` or
/// `RTM_DELROUTE`.
fn parse_route(nl_type: u16, body: &[u8]) -> Result<RouteUpdate, RouteError> {
    let Some((rtm, mut attrs)) = body.split_first_chunk::<RTMSG_LEN>() else {
        return Err(RouteError::BodyShort { len: body.len() });
    };
    let [family, dst_len, src_len, _tos, rtm_table, protocol, _scope, route_type, ..] = *rtm;
    let max = match family {
        AF_INET => 32,
        AF_INET6 => 128,
        family => return Err(RouteError::Family { family }),
    };
    if dst_len > max {
        return Err(RouteError::DstLen {
            family,
            dst_len,
            max,
        });
    }
    if src_len != 0 {
        return Err(RouteError::SrcLen { src_len });
    }
    let mut dst: Option<IpAddr> = None;
    let mut table: Option<u32> = None;
    let mut offset = NLMSG_HDRLEN + RTMSG_LEN;
    while !attrs.is_empty() {
        let Some(&[l0, l1, t0, t1]) = attrs.first_chunk::<RTA_HDRLEN>() else {
            return Err(RouteError::AttrTrailing {
                offset,
                len: attrs.len(),
            });
        };
        let len = u16::from_le_bytes([l0, l1]);
        let rta_type = u16::from_le_bytes([t0, t1]);
        let attr_len = usize::from(len);
        if attr_len < RTA_HDRLEN {
            return Err(RouteError::AttrTooShort {
                offset,
                rta_type,
                len,
            });
        }
        let Some((attr, after)) = attrs.split_at_checked(attr_len) else {
            return Err(RouteError::AttrOverrun {
                offset,
                rta_type,
                len,
                remaining: attrs.len(),
            });
        };
        let Some(next) = skip_padding(attr_len, after) else {
            return Err(RouteError::AttrPadding {
                offset,
                rta_type,
                len,
                extra: after.len(),
            });
        };
        let value = attr.get(RTA_HDRLEN..).unwrap_or_default();
        match rta_type & !NLA_FLAGS {
            RTA_DST => {
                if dst.is_some() {
                    return Err(RouteError::Duplicate {
                        attr: "RTA_DST",
                        offset,
                    });
                }
                dst = Some(match family {
                    AF_INET => IpAddr::V4(Ipv4Addr::from(exact::<4>(value, "RTA_DST", offset)?)),
                    _ => IpAddr::V6(Ipv6Addr::from(exact::<16>(value, "RTA_DST", offset)?)),
                });
            }
            RTA_SRC => return Err(RouteError::SrcAttr { offset }),
            RTA_TABLE => {
                if table.is_some() {
                    return Err(RouteError::Duplicate {
                        attr: "RTA_TABLE",
                        offset,
                    });
                }
                table = Some(u32::from_le_bytes(exact::<4>(value, "RTA_TABLE", offset)?));
            }
            _ => {}
        }
        offset = offset
            .saturating_add(attr_len)
            .saturating_add(padding(attr_len));
        attrs = next;
    }
    let prefix = match dst {
        Some(prefix) => prefix,
        None if dst_len == 0 => match family {
            AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            _ => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        },
        None => return Err(RouteError::MissingDst { dst_len }),
    };
    if has_host_bits(prefix, dst_len) {
        return Err(RouteError::HostBits {
            prefix,
            len: dst_len,
        });
    }
    let op = if nl_type == RTM_NEWROUTE && route_type == RTN_UNICAST {
        RouteOp::Add
    } else {
        RouteOp::Remove
    };
    Ok(RouteUpdate {
        op,
        prefix,
        len: dst_len,
        table: table.unwrap_or(u32::from(rtm_table)),
        protocol,
        route_type,
    })
}

/// The value of attribute `attr` (at message offset `offset`) as exactly
/// `N` bytes.
fn exact<const N: usize>(
    value: &[u8],
    attr: &'static str,
    offset: usize,
) -> Result<[u8; N], RouteError> {
    value.try_into().map_err(|_| RouteError::AttrValueLength {
        attr,
        offset,
        len: value.len(),
        expected: N,
    })
}

/// Whether `addr` has a bit set beyond the first `len` bits (a `len` beyond
/// the address's width leaves no host bits).
fn has_host_bits(addr: IpAddr, len: u8) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            u32::from(a) & host != 0
        }
        IpAddr::V6(a) => {
            let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            u128::from(a) & host != 0
        }
    }
}
