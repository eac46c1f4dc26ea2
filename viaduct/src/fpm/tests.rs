//! The FPM reader against two captures of FRR 8.4's `dplane_fpm_nl` and
//! against hand-built frames, each malformed in one field.

use super::*;
use std::net::IpAddr;

const NEXTHOP_GROUPS: &[u8] = include_bytes!("../../tests/data/fpm/frr-8.4-nexthop-groups.bin");
const PLAIN: &[u8] = include_bytes!("../../tests/data/fpm/frr-8.4-plain.bin");

const KERNEL: u8 = 2;
const STATIC: u8 = 196;
const MAIN: u32 = 254;

// ---- builders ----------------------------------------------------------

/// An FPM frame around `payload`.
fn frame(version: u8, msg_type: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(4 + payload.len()).unwrap();
    let mut f = vec![version, msg_type];
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A netlink frame (version 1, type 1) around `payload`.
fn nl_frame(payload: &[u8]) -> Vec<u8> {
    frame(1, 1, payload)
}

/// A netlink message, padded to 4 bytes.
fn nlmsg(nl_type: u16, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(16 + body.len()).unwrap();
    let mut m = len.to_le_bytes().to_vec();
    m.extend_from_slice(&nl_type.to_le_bytes());
    m.extend_from_slice(&0x0501u16.to_le_bytes());
    m.extend_from_slice(&[0; 4]); // seq
    m.extend_from_slice(&[0x80, 0x79, 0xe9, 0xd4]); // pid, as zebra's
    m.extend_from_slice(body);
    while m.len() % 4 != 0 {
        m.push(0);
    }
    m
}

/// A netlink message whose `nlmsg_len` is `len` whatever its real length,
/// not padded.
fn nlmsg_raw(len: u32, nl_type: u16, body: &[u8]) -> Vec<u8> {
    let mut m = len.to_le_bytes().to_vec();
    m.extend_from_slice(&nl_type.to_le_bytes());
    m.extend_from_slice(&[0; 10]);
    m.extend_from_slice(body);
    m
}

/// A `struct rtmsg`.
fn rtmsg(family: u8, dst_len: u8, src_len: u8, table: u8, protocol: u8, rtype: u8) -> Vec<u8> {
    vec![
        family, dst_len, src_len, 0, table, protocol, 0, rtype, 0, 0, 0, 0,
    ]
}

/// A route attribute, padded to 4 bytes.
fn attr(rta_type: u16, value: &[u8]) -> Vec<u8> {
    let mut a = attr_raw(u16::try_from(4 + value.len()).unwrap(), rta_type, value);
    while a.len() % 4 != 0 {
        a.push(0);
    }
    a
}

/// A route attribute whose `rta_len` is `len` whatever its real length,
/// not padded.
fn attr_raw(len: u16, rta_type: u16, value: &[u8]) -> Vec<u8> {
    let mut a = len.to_le_bytes().to_vec();
    a.extend_from_slice(&rta_type.to_le_bytes());
    a.extend_from_slice(value);
    a
}

/// A route message: `rtm` then `attrs`.
fn route_msg(nl_type: u16, rtm: &[u8], attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut body = rtm.to_vec();
    for a in attrs {
        body.extend_from_slice(a);
    }
    nlmsg(nl_type, &body)
}

/// `RTA_PRIORITY 20`, as zebra sends.
fn priority() -> Vec<u8> {
    attr(6, &20u32.to_le_bytes())
}

/// A static unicast IPv4 `RTM_NEWROUTE` to `dst/len` in the main table.
fn v4_route(dst: [u8; 4], len: u8) -> Vec<u8> {
    route_msg(
        RTM_NEWROUTE,
        &rtmsg(2, len, 0, 254, STATIC, 1),
        &[attr(1, &dst), priority()],
    )
}

// ---- expectations and helpers -----------------------------------------

fn route(op: RouteOp, prefix: &str, len: u8, protocol: u8, route_type: u8) -> Message {
    Message::Route(RouteUpdate {
        op,
        prefix: prefix.parse().unwrap(),
        len,
        table: MAIN,
        protocol,
        route_type,
    })
}

fn add(prefix: &str, len: u8, protocol: u8) -> Message {
    route(RouteOp::Add, prefix, len, protocol, 1)
}

fn del(prefix: &str, len: u8, protocol: u8) -> Message {
    route(RouteOp::Remove, prefix, len, protocol, 0)
}

fn nexthop_groups_expected() -> Vec<Vec<Message>> {
    let nh = |nl_type| vec![Message::Ignored { nl_type }];
    vec![
        nh(104),
        nh(104),
        nh(104),
        nh(104),
        nh(104),
        vec![add("10.9.0.0", 24, KERNEL)],
        vec![add("192.0.2.0", 24, STATIC)],
        vec![add("198.18.0.0", 15, STATIC)],
        vec![add("2001:db8:77::", 48, STATIC)],
        vec![add("fd00:9::", 64, KERNEL)],
        vec![add("fe80::", 64, KERNEL)],
        vec![del("192.0.2.0", 24, STATIC)],
        vec![add("203.0.113.0", 25, STATIC)],
        vec![del("2001:db8:77::", 48, STATIC)],
        nh(105),
    ]
}

fn plain_expected() -> Vec<Vec<Message>> {
    vec![
        vec![add("10.9.0.0", 24, KERNEL)],
        vec![add("192.0.2.0", 24, STATIC)],
        vec![add("198.18.0.0", 15, STATIC)],
        vec![add("2001:db8:77::", 48, STATIC)],
        vec![add("fd00:9::", 64, KERNEL)],
        vec![add("fe80::", 64, KERNEL)],
        vec![del("198.18.0.0", 15, STATIC)],
    ]
}

/// Pushes `chunks` one after the other, taking every complete frame after
/// each push; stops at the first error.
fn read_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Vec<Message>>, FpmError> {
    let mut r = FpmReader::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        r.push(chunk)?;
        while let Some(messages) = r.next_frame()? {
            frames.push(messages);
        }
    }
    assert_eq!(r.buffered(), 0, "bytes left over after the last frame");
    assert_eq!(r.frames(), u64::try_from(frames.len()).unwrap());
    Ok(frames)
}

fn read_all(stream: &[u8]) -> Result<Vec<Vec<Message>>, FpmError> {
    read_chunks([stream])
}

/// The first error of a one-frame payload, through the reader.
fn payload_error(payload: &[u8]) -> NetlinkError {
    match read_all(&nl_frame(payload)) {
        Err(FpmError::Netlink {
            frame: 0,
            offset: 0,
            source,
        }) => {
            assert_eq!(parse_netlink(payload), Err(source.clone()));
            source
        }
        other => panic!("expected a netlink error in frame 0, got {other:?}"),
    }
}

/// The route error of a single route message, through the reader.
fn route_error(message: &[u8]) -> RouteError {
    match payload_error(message) {
        NetlinkError::Route {
            index: 0,
            offset: 0,
            nl_type: RTM_NEWROUTE | RTM_DELROUTE,
            source,
        } => source,
        other => panic!("expected a route error in message 0, got {other:?}"),
    }
}

/// The one route of a single route message.
fn one_route(message: &[u8]) -> RouteUpdate {
    match parse_netlink(message).unwrap().as_slice() {
        [Message::Route(r)] => *r,
        other => panic!("expected one route, got {other:?}"),
    }
}

/// A small deterministic generator (Knuth's MMIX LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Splits `bytes` into chunks of 1 to `max` bytes drawn from `seed`.
fn random_chunks(bytes: &[u8], seed: u64, max: u64) -> Vec<&[u8]> {
    let mut rng = Lcg(seed);
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = usize::try_from(rng.next() % max + 1)
            .unwrap()
            .min(rest.len());
        let (chunk, after) = rest.split_at(n);
        chunks.push(chunk);
        rest = after;
    }
    chunks
}

/// The invariants of every route yielded, checked independently of the
/// parser's own code.
fn assert_route_sound(r: &RouteUpdate) {
    match r.prefix {
        IpAddr::V4(a) => {
            assert!(r.len <= 32, "{r:?}");
            if r.len < 32 {
                assert_eq!(u32::from(a) & (u32::MAX >> r.len), 0, "{r:?}");
            }
        }
        IpAddr::V6(a) => {
            assert!(r.len <= 128, "{r:?}");
            if r.len < 128 {
                assert_eq!(u128::from(a) & (u128::MAX >> r.len), 0, "{r:?}");
            }
        }
    }
}

// ---- the captures --------------------------------------------------------

#[test]
fn captures_decode_whole() {
    assert_eq!(read_all(NEXTHOP_GROUPS).unwrap(), nexthop_groups_expected());
    assert_eq!(read_all(PLAIN).unwrap(), plain_expected());
}

#[test]
fn captures_decode_byte_by_byte() {
    let bytes = |s: &'static [u8]| s.chunks(1).collect::<Vec<_>>();
    assert_eq!(
        read_chunks(bytes(NEXTHOP_GROUPS)).unwrap(),
        nexthop_groups_expected()
    );
    assert_eq!(read_chunks(bytes(PLAIN)).unwrap(), plain_expected());
}

#[test]
fn captures_decode_in_random_chunks() {
    for seed in 0..200 {
        for max in [3, 17, 64, 200] {
            assert_eq!(
                read_chunks(random_chunks(NEXTHOP_GROUPS, seed, max)).unwrap(),
                nexthop_groups_expected(),
                "seed {seed}, chunks up to {max}"
            );
            assert_eq!(
                read_chunks(random_chunks(PLAIN, seed, max)).unwrap(),
                plain_expected(),
                "seed {seed}, chunks up to {max}"
            );
        }
    }
}

#[test]
fn captures_decode_one_after_the_other() {
    let mut both = NEXTHOP_GROUPS.to_vec();
    both.extend_from_slice(PLAIN);
    let mut expected = nexthop_groups_expected();
    expected.extend(plain_expected());
    assert_eq!(read_all(&both).unwrap(), expected);
}

#[test]
fn frames_are_taken_only_when_complete() {
    let mut r = FpmReader::new();
    let (head, tail) = PLAIN.split_at(55); // the first frame is 56 bytes
    r.push(head).unwrap();
    assert_eq!(r.next_frame(), Ok(None));
    assert_eq!(r.frames(), 0);
    assert_eq!(r.buffered(), 55);
    r.push(&tail[..1]).unwrap();
    assert_eq!(r.next_frame(), Ok(Some(plain_expected()[0].clone())));
    assert_eq!(r.next_frame(), Ok(None));
    assert_eq!((r.frames(), r.buffered()), (1, 0));
}

// ---- frame header ------------------------------------------------------

#[test]
fn refuses_version_2() {
    let mut s = NEXTHOP_GROUPS[..52].to_vec(); // frame 0 (52 bytes)
    s.extend(frame(2, 1, &nlmsg(104, &[0; 8])));
    let e = read_all(&s).unwrap_err();
    assert_eq!(
        e,
        FpmError::Version {
            frame: 1,
            offset: 52,
            version: 2
        }
    );
    assert_eq!(
        e.to_string(),
        "FPM frame 1 (stream offset 52): version 2, expected 1"
    );
}

#[test]
fn header_is_checked_before_the_frame_completes() {
    let mut r = FpmReader::new();
    r.push(&[2, 1, 0, 200]).unwrap();
    assert_eq!(
        r.next_frame(),
        Err(FpmError::Version {
            frame: 0,
            offset: 0,
            version: 2
        })
    );
}

#[test]
fn refuses_protobuf() {
    let e = read_all(&frame(1, 2, &[0; 16])).unwrap_err();
    assert_eq!(
        e,
        FpmError::Protobuf {
            frame: 0,
            offset: 0
        }
    );
    assert!(e.to_string().contains("protobuf"), "{e}");
}

#[test]
fn refuses_other_message_types() {
    assert_eq!(
        read_all(&frame(1, 0, &nlmsg(3, &[]))),
        Err(FpmError::MsgType {
            frame: 0,
            offset: 0,
            msg_type: 0
        })
    );
}

#[test]
fn refuses_frame_length_below_20() {
    for len in [0u16, 3, 4, 19] {
        let mut s = vec![1, 1];
        s.extend(len.to_be_bytes());
        s.extend([0; 40]);
        assert_eq!(
            read_all(&s),
            Err(FpmError::FrameLength {
                frame: 0,
                offset: 0,
                len
            }),
            "length {len}"
        );
    }
}

#[test]
fn accepts_a_frame_of_max_size() {
    // 4 + 16 + 65515 = 65535: the message (65531 bytes) ends the frame
    // without its 1 byte of padding.
    let mut payload = nlmsg_raw(65531, 28, &[0; 65515]);
    assert_eq!(nl_frame(&payload).len(), MAX_FRAME);
    assert_eq!(
        read_all(&nl_frame(&payload)).unwrap(),
        vec![vec![Message::Ignored { nl_type: 28 }]]
    );
    // One byte more does not fit a frame.
    payload.push(0);
    assert!(u16::try_from(4 + payload.len()).is_err());
}

#[test]
fn refuses_buffering_more_than_max_frame_without_a_frame() {
    // A good frame, then a header whose length (2) delimits nothing, and
    // bytes up to one more than a frame can hold.
    let mut r = FpmReader::new();
    r.push(&PLAIN[..56]).unwrap();
    r.push(&[1, 1, 0, 2]).unwrap();
    r.push(&vec![0; MAX_FRAME - 4]).unwrap();
    assert_eq!(r.buffered(), 56 + MAX_FRAME);
    let e = r.push(&[0]).unwrap_err();
    assert_eq!(
        e,
        FpmError::Overflow {
            frame: 1,
            offset: 56,
            buffered: MAX_FRAME + 1
        }
    );
    assert_eq!(
        e.to_string(),
        "FPM frame 1 (stream offset 56): 65536 bytes buffered without completing a frame, more than the 65535 a frame can hold"
    );
    assert_eq!(r.buffered(), 0, "the buffer is freed");
    assert_eq!(r.next_frame(), Err(FpmError::Refused { frame: 1 }));
}

#[test]
fn overflow_counts_from_the_last_complete_frame() {
    // Frames taken before and frames still buffered both count.
    let mut r = FpmReader::new();
    r.push(PLAIN).unwrap();
    assert_eq!(r.next_frame().unwrap(), Some(plain_expected()[0].clone()));
    let mut garbage = vec![1, 1, 0, 0];
    garbage.resize(MAX_FRAME + 1, 0xee);
    assert_eq!(
        r.push(&garbage),
        Err(FpmError::Overflow {
            frame: 7,
            offset: u64::try_from(PLAIN.len()).unwrap(),
            buffered: MAX_FRAME + 1
        })
    );
}

#[test]
fn many_complete_frames_may_be_pushed_at_once() {
    let mut stream = Vec::new();
    while stream.len() <= 3 * MAX_FRAME {
        stream.extend_from_slice(NEXTHOP_GROUPS);
    }
    let frames = read_all(&stream).unwrap();
    assert_eq!(frames.len() % 15, 0);
    assert_eq!(frames[15..30], nexthop_groups_expected()[..]);
}

#[test]
fn reader_stays_refused_after_an_error() {
    let mut r = FpmReader::new();
    r.push(&frame(1, 2, &[0; 16])).unwrap();
    assert!(matches!(r.next_frame(), Err(FpmError::Protobuf { .. })));
    assert_eq!(r.push(PLAIN), Err(FpmError::Refused { frame: 0 }));
    assert_eq!(r.next_frame(), Err(FpmError::Refused { frame: 0 }));
    assert_eq!(r.buffered(), 0);
}

// ---- netlink framing -----------------------------------------------------

#[test]
fn refuses_netlink_length_past_the_frame() {
    let mut payload = nlmsg(104, &[0; 8]);
    payload[0] = 40; // 24 bytes in truth
    assert_eq!(
        payload_error(&payload),
        NetlinkError::MessageOverrun {
            index: 0,
            offset: 0,
            len: 40,
            remaining: 24
        }
    );
    // The same as the second message of a frame.
    let mut payload = v4_route([10, 9, 0, 0], 24);
    let first = payload.len();
    payload.extend(nlmsg_raw(u32::MAX, 104, &[0; 4]));
    assert_eq!(
        payload_error(&payload),
        NetlinkError::MessageOverrun {
            index: 1,
            offset: first,
            len: u32::MAX,
            remaining: 20
        }
    );
}

#[test]
fn refuses_netlink_length_below_16() {
    assert_eq!(
        payload_error(&nlmsg_raw(15, 104, &[0; 4])),
        NetlinkError::MessageTooShort {
            index: 0,
            offset: 0,
            len: 15
        }
    );
    assert_eq!(
        payload_error(&nlmsg_raw(0, 104, &[0; 4])),
        NetlinkError::MessageTooShort {
            index: 0,
            offset: 0,
            len: 0
        }
    );
}

#[test]
fn refuses_trailing_garbage_in_a_frame() {
    let mut payload = nlmsg(104, &[0; 8]);
    payload.extend([0xde, 0xad, 0xbe, 0xef]);
    let e = payload_error(&payload);
    assert_eq!(e, NetlinkError::Trailing { offset: 24, len: 4 });
    let e = read_all(&nl_frame(&payload)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "FPM frame 0 (stream offset 0): 4 bytes at payload offset 24 after the last netlink message, too few for a 16-byte netlink header"
    );
}

#[test]
fn the_last_message_may_omit_its_padding() {
    // 21 bytes ending the frame: accepted.
    let payload = nlmsg_raw(21, 104, &[7; 5]);
    assert_eq!(
        parse_netlink(&payload),
        Ok(vec![Message::Ignored { nl_type: 104 }])
    );
    // 21 bytes and 2 of padding: neither padded nor ending the frame.
    let mut payload = nlmsg_raw(21, 104, &[7; 5]);
    payload.extend([0, 0]);
    assert_eq!(
        payload_error(&payload),
        NetlinkError::MessagePadding {
            index: 0,
            offset: 0,
            len: 21,
            extra: 2
        }
    );
    // 21 bytes and 3 of padding, then another message: accepted.
    let mut payload = nlmsg_raw(21, 104, &[7; 5]);
    payload.extend([0, 0, 0]);
    payload.extend(nlmsg(3, &[]));
    assert_eq!(
        parse_netlink(&payload),
        Ok(vec![
            Message::Ignored { nl_type: 104 },
            Message::Ignored { nl_type: 3 }
        ])
    );
}

#[test]
fn accepts_64_messages_and_refuses_65() {
    let done = nlmsg(3, &[]);
    let payload: Vec<u8> = done.repeat(64);
    assert_eq!(
        parse_netlink(&payload),
        Ok(vec![Message::Ignored { nl_type: 3 }; 64])
    );
    let payload: Vec<u8> = done.repeat(65);
    assert_eq!(
        payload_error(&payload),
        NetlinkError::TooManyMessages { offset: 64 * 16 }
    );
}

#[test]
fn several_messages_in_one_frame() {
    // zebra replaces a route with a delete and an add in one frame.
    let mut payload = route_msg(
        RTM_DELROUTE,
        &rtmsg(2, 24, 0, 254, STATIC, 1),
        &[attr(1, &[192, 0, 2, 0])],
    );
    payload.extend(v4_route([192, 0, 2, 0], 24));
    payload.extend(nlmsg(2, &[0; 20])); // NLMSG_ERROR
    assert_eq!(
        read_all(&nl_frame(&payload)).unwrap(),
        vec![vec![
            route(RouteOp::Remove, "192.0.2.0", 24, STATIC, 1),
            add("192.0.2.0", 24, STATIC),
            Message::Ignored { nl_type: 2 },
        ]]
    );
}

#[test]
fn route_errors_name_frame_message_and_field() {
    let mut s = PLAIN[..56].to_vec();
    let mut payload = nlmsg(104, &[0; 8]);
    payload.extend(route_msg(
        RTM_NEWROUTE,
        &rtmsg(7, 24, 0, 254, STATIC, 1),
        &[],
    ));
    s.extend(nl_frame(&payload));
    let e = read_all(&s).unwrap_err();
    assert_eq!(
        e,
        FpmError::Netlink {
            frame: 1,
            offset: 56,
            source: NetlinkError::Route {
                index: 1,
                offset: 24,
                nl_type: RTM_NEWROUTE,
                source: RouteError::Family { family: 7 }
            }
        }
    );
    assert_eq!(
        e.to_string(),
        "FPM frame 1 (stream offset 56): netlink message 1 (RTM_NEWROUTE) at payload offset 24: rtm_family 7, expected AF_INET (2) or AF_INET6 (10)"
    );
}

// ---- routes --------------------------------------------------------------

#[test]
fn refuses_family_7() {
    assert_eq!(
        route_error(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(7, 24, 0, 254, STATIC, 1),
            &[attr(1, &[10, 9, 0, 0])]
        )),
        RouteError::Family { family: 7 }
    );
    // A DELROUTE too.
    assert_eq!(
        route_error(&route_msg(
            RTM_DELROUTE,
            &rtmsg(0, 0, 0, 254, STATIC, 1),
            &[]
        )),
        RouteError::Family { family: 0 }
    );
}

#[test]
fn refuses_short_rtmsg() {
    assert_eq!(
        route_error(&nlmsg(RTM_NEWROUTE, &[2, 24, 0, 0, 254, 196, 0, 1])),
        RouteError::BodyShort { len: 8 }
    );
}

#[test]
fn refuses_dst_len_beyond_the_family() {
    let e = route_error(&v4_route([10, 9, 0, 0], 33));
    assert_eq!(
        e,
        RouteError::DstLen {
            family: 2,
            dst_len: 33,
            max: 32
        }
    );
    assert_eq!(e.to_string(), "rtm_dst_len 33, above 32 for AF_INET");
    assert_eq!(
        route_error(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(10, 129, 0, 254, STATIC, 1),
            &[attr(1, &[0; 16])]
        )),
        RouteError::DstLen {
            family: 10,
            dst_len: 129,
            max: 128
        }
    );
}

#[test]
fn refuses_source_specific_routes() {
    assert_eq!(
        route_error(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(2, 24, 8, 254, STATIC, 1),
            &[attr(1, &[10, 9, 0, 0]), attr(2, &[10, 0, 0, 0])]
        )),
        RouteError::SrcLen { src_len: 8 }
    );
    // RTA_SRC with rtm_src_len 0.
    assert_eq!(
        route_error(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(2, 24, 0, 254, STATIC, 1),
            &[attr(1, &[10, 9, 0, 0]), attr(2, &[0, 0, 0, 0])]
        )),
        RouteError::SrcAttr { offset: 36 }
    );
}

#[test]
fn refuses_dst_of_the_wrong_size() {
    assert_eq!(
        route_error(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(2, 24, 0, 254, STATIC, 1),
            &[attr(1, &[10, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]
        )),
        RouteError::AttrValueLength {
            attr: "RTA_DST",
            offset: 28,
            len: 16,
            expected: 4
        }
    );
    assert_eq!(
        route_error(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(10, 24, 0, 254, STATIC, 1),
            &[priority(), attr(1, &[10, 9, 0, 0])]
        )),
        RouteError::AttrValueLength {
            attr: "RTA_DST",
            offset: 36,
            len: 4,
            expected: 16
        }
    );
}

#[test]
fn refuses_host_bits() {
    let e = route_error(&v4_route([10, 9, 0, 1], 24));
    assert_eq!(
        e,
        RouteError::HostBits {
            prefix: "10.9.0.1".parse().unwrap(),
            len: 24
        }
    );
    assert_eq!(
        e.to_string(),
        "RTA_DST 10.9.0.1 has bits set beyond its prefix length /24"
    );
    // Bit 16 of 198.19.0.0/15.
    assert!(matches!(
        route_error(&v4_route([198, 19, 0, 0], 15)),
        RouteError::HostBits { len: 15, .. }
    ));
    // Any address at /0.
    assert!(matches!(
        route_error(&v4_route([0, 0, 0, 1], 0)),
        RouteError::HostBits { len: 0, .. }
    ));
    let mut fd00 = [0u8; 16];
    fd00[0] = 0xfd;
    fd00[8] = 1;
    assert_eq!(
        route_error(&route_msg(
            RTM_DELROUTE,
            &rtmsg(10, 64, 0, 254, STATIC, 0),
            &[attr(1, &fd00)]
        )),
        RouteError::HostBits {
            prefix: "fd00::100:0:0:0".parse().unwrap(),
            len: 64
        }
    );
}

#[test]
fn full_length_prefixes_are_accepted() {
    let r = one_route(&v4_route([10, 9, 0, 1], 32));
    assert_eq!((r.prefix, r.len), ("10.9.0.1".parse().unwrap(), 32));
    let r = one_route(&route_msg(
        RTM_NEWROUTE,
        &rtmsg(10, 128, 0, 254, STATIC, 1),
        &[attr(1, &[0xff; 16])],
    ));
    assert_eq!(r.len, 128);
}

#[test]
fn refuses_duplicate_dst_and_table() {
    assert_eq!(
        route_error(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(2, 24, 0, 254, STATIC, 1),
            &[attr(1, &[10, 9, 0, 0]), attr(1, &[10, 9, 0, 0])]
        )),
        RouteError::Duplicate {
            attr: "RTA_DST",
            offset: 36
        }
    );
    // The second RTA_DST hides behind NLA_F_NET_BYTEORDER.
    assert_eq!(
        route_error(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(2, 24, 0, 254, STATIC, 1),
            &[
                attr(1, &[10, 9, 0, 0]),
                priority(),
                attr(0x4001, &[10, 8, 0, 0])
            ]
        )),
        RouteError::Duplicate {
            attr: "RTA_DST",
            offset: 44
        }
    );
    assert_eq!(
        route_error(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(2, 24, 0, 252, STATIC, 1),
            &[
                attr(15, &1000u32.to_le_bytes()),
                attr(1, &[10, 9, 0, 0]),
                attr(15, &254u32.to_le_bytes())
            ]
        )),
        RouteError::Duplicate {
            attr: "RTA_TABLE",
            offset: 44
        }
    );
}

#[test]
fn rta_table_overrides_rtm_table() {
    let r = one_route(&route_msg(
        RTM_NEWROUTE,
        &rtmsg(2, 24, 0, 252, STATIC, 1),
        &[attr(1, &[10, 9, 0, 0]), attr(15, &1000u32.to_le_bytes())],
    ));
    assert_eq!(r.table, 1000);
    let r = one_route(&route_msg(
        RTM_NEWROUTE,
        &rtmsg(2, 24, 0, 10, STATIC, 1),
        &[attr(1, &[10, 9, 0, 0])],
    ));
    assert_eq!(r.table, 10);
    assert_eq!(
        route_error(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(2, 24, 0, 252, STATIC, 1),
            &[attr(1, &[10, 9, 0, 0]), attr(15, &[0, 1])]
        )),
        RouteError::AttrValueLength {
            attr: "RTA_TABLE",
            offset: 36,
            len: 2,
            expected: 4
        }
    );
}

#[test]
fn refuses_attribute_length_below_4() {
    assert_eq!(
        route_error(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(2, 24, 0, 254, STATIC, 1),
            &[attr_raw(2, 6, &[0, 0])]
        )),
        RouteError::AttrTooShort {
            offset: 28,
            rta_type: 6,
            len: 2
        }
    );
}

#[test]
fn refuses_attribute_past_the_message() {
    // The message's own length ends the attributes, even where the frame
    // goes on: a second message follows.
    let mut payload = route_msg(
        RTM_NEWROUTE,
        &rtmsg(2, 24, 0, 254, STATIC, 1),
        &[attr(1, &[10, 9, 0, 0]), attr_raw(12, 6, &[20, 0, 0, 0])],
    );
    payload.extend(nlmsg(3, &[]));
    let e = payload_error(&payload);
    assert_eq!(
        e,
        NetlinkError::Route {
            index: 0,
            offset: 0,
            nl_type: RTM_NEWROUTE,
            source: RouteError::AttrOverrun {
                offset: 36,
                rta_type: 6,
                len: 12,
                remaining: 8
            }
        }
    );
    assert_eq!(
        e.to_string(),
        "netlink message 0 (RTM_NEWROUTE) at payload offset 0: attribute of type 0x0006 at message offset 36: rta_len 12 runs past the message, which has 8 bytes left"
    );
}

#[test]
fn attribute_padding_and_trailing_bytes() {
    // An unpadded last attribute ending the message: accepted.
    let r = one_route(&nlmsg_raw(
        16 + 12 + 8 + 5,
        RTM_NEWROUTE,
        &[
            rtmsg(2, 24, 0, 254, STATIC, 1),
            attr(1, &[10, 9, 0, 0]),
            attr_raw(5, 99, &[1]),
        ]
        .concat(),
    ));
    assert_eq!(r.prefix, "10.9.0.0".parse::<IpAddr>().unwrap());
    // Two bytes after a 5-byte attribute: partial padding.
    assert_eq!(
        route_error(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(2, 24, 0, 254, STATIC, 1),
            &[attr(1, &[10, 9, 0, 0]), attr_raw(5, 99, &[1, 0, 0])]
        )),
        RouteError::AttrPadding {
            offset: 36,
            rta_type: 99,
            len: 5,
            extra: 2
        }
    );
    // Two bytes after the last attribute.
    assert_eq!(
        route_error(&nlmsg_raw(
            16 + 12 + 8 + 2,
            RTM_NEWROUTE,
            &[
                rtmsg(2, 24, 0, 254, STATIC, 1),
                attr(1, &[10, 9, 0, 0]),
                vec![0, 0]
            ]
            .concat(),
        )),
        RouteError::AttrTrailing { offset: 36, len: 2 }
    );
}

#[test]
fn refuses_missing_dst_with_dst_len() {
    assert_eq!(
        route_error(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(2, 24, 0, 254, STATIC, 1),
            &[priority()]
        )),
        RouteError::MissingDst { dst_len: 24 }
    );
}

#[test]
fn missing_dst_is_the_default_route() {
    let r = one_route(&route_msg(
        RTM_NEWROUTE,
        &rtmsg(2, 0, 0, 254, 186, 1),
        &[priority(), attr(5, &[10, 9, 0, 2])],
    ));
    assert_eq!(
        r,
        RouteUpdate {
            op: RouteOp::Add,
            prefix: "0.0.0.0".parse().unwrap(),
            len: 0,
            table: MAIN,
            protocol: 186,
            route_type: 1
        }
    );
    let r = one_route(&route_msg(RTM_DELROUTE, &rtmsg(10, 0, 0, 254, 186, 1), &[]));
    assert_eq!(
        (r.op, r.prefix, r.len),
        (RouteOp::Remove, "::".parse().unwrap(), 0)
    );
}

#[test]
fn blackhole_newroute_becomes_remove() {
    for rtype in [0, 2, 3, 6, 7, 8, 9] {
        let r = one_route(&route_msg(
            RTM_NEWROUTE,
            &rtmsg(2, 24, 0, 254, STATIC, rtype),
            &[attr(1, &[192, 0, 2, 0]), priority()],
        ));
        assert_eq!(
            r,
            RouteUpdate {
                op: RouteOp::Remove,
                prefix: "192.0.2.0".parse().unwrap(),
                len: 24,
                table: MAIN,
                protocol: STATIC,
                route_type: rtype
            },
            "rtm_type {rtype}"
        );
    }
    // DELROUTE of a unicast route: Remove too.
    let r = one_route(&route_msg(
        RTM_DELROUTE,
        &rtmsg(2, 24, 0, 254, STATIC, 1),
        &[attr(1, &[192, 0, 2, 0])],
    ));
    assert_eq!(r.op, RouteOp::Remove);
}

#[test]
fn attribute_flags_are_masked() {
    // RTA_DST with NLA_F_NESTED, RTA_TABLE with NLA_F_NET_BYTEORDER.
    let r = one_route(&route_msg(
        RTM_NEWROUTE,
        &rtmsg(2, 24, 0, 252, STATIC, 1),
        &[
            attr(0x8001, &[10, 9, 0, 0]),
            attr(0x400f, &7u32.to_le_bytes()),
        ],
    ));
    assert_eq!(
        (r.prefix, r.len, r.table),
        ("10.9.0.0".parse().unwrap(), 24, 7)
    );
}

#[test]
fn other_message_bodies_are_not_parsed() {
    // Nexthops, links, neighbours, errors: ignored whatever their bodies.
    for nl_type in [2, 3, 16, 28, 104, 105, 106, 0xffff] {
        assert_eq!(
            parse_netlink(&nlmsg(nl_type, &[0xff; 7])),
            Ok(vec![Message::Ignored { nl_type }])
        );
    }
}

// ---- hostile input -------------------------------------------------------

/// Pushes `stream` in `chunks` (sizes, cycled), taking frames after each
/// push until an error; checks every route yielded.
fn read_hostile(stream: &[u8], chunks: &[usize]) {
    let mut r = FpmReader::new();
    let mut rest = stream;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = sizes
            .next()
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        let (chunk, after) = rest.split_at(n);
        rest = after;
        if r.push(chunk).is_err() {
            assert!(matches!(r.push(&[]), Err(FpmError::Refused { .. })));
            return;
        }
        loop {
            match r.next_frame() {
                Ok(Some(messages)) => {
                    assert!(messages.len() <= MAX_MESSAGES);
                    for m in &messages {
                        if let Message::Route(route) = m {
                            assert_route_sound(route);
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    assert!(matches!(r.next_frame(), Err(FpmError::Refused { .. })));
                    return;
                }
            }
        }
        assert!(r.buffered() <= MAX_FRAME);
    }
}

proptest::proptest! {
    /// Arbitrary bytes in arbitrary chunks: no panic, and any route yielded
    /// is sound.
    #[test]
    fn arbitrary_bytes_in_arbitrary_chunks_never_panic(
        stream in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
        chunks in proptest::collection::vec(1usize..300, 1..20),
    ) {
        read_hostile(&stream, &chunks);
    }

    /// Arbitrary bytes behind a valid frame header (so that the payload
    /// parser is reached): no panic, and any route yielded is sound.
    #[test]
    fn arbitrary_payloads_never_panic(
        payload in proptest::collection::vec(proptest::num::u8::ANY, 16..600),
    ) {
        if let Ok(messages) = parse_netlink(&payload) {
            for m in &messages {
                if let Message::Route(route) = m {
                    assert_route_sound(route);
                }
            }
        }
    }

    /// The captures with bytes overwritten, in arbitrary chunks: no panic,
    /// and any route yielded is sound.
    #[test]
    fn mutated_captures_are_never_misread(
        plain in proptest::bool::ANY,
        edits in proptest::collection::vec((0usize..820, proptest::num::u8::ANY), 1..6),
        chunks in proptest::collection::vec(1usize..100, 1..8),
    ) {
        let mut stream = if plain { PLAIN.to_vec() } else { NEXTHOP_GROUPS.to_vec() };
        for (at, byte) in edits {
            let at = at % stream.len();
            stream[at] = byte;
        }
        read_hostile(&stream, &chunks);
    }

    /// Route messages built from arbitrary fields and attributes: no panic;
    /// a route is yielded only when sound, and is an `Add` exactly for a
    /// unicast `RTM_NEWROUTE`.
    #[test]
    fn built_routes_are_sound(
        del in proptest::bool::ANY,
        family in proptest::sample::select(vec![2u8, 10, 7]),
        dst_len in 0u8..=130,
        rtype in 0u8..10,
        attrs in proptest::collection::vec(
            (proptest::sample::select(vec![1u16, 2, 6, 15, 0x8001, 0x8009, 99]),
             proptest::collection::vec(proptest::num::u8::ANY, 0..20)),
            0..4,
        ),
    ) {
        let attrs: Vec<Vec<u8>> = attrs.iter().map(|(t, v)| attr(*t, v)).collect();
        let nl_type = if del { RTM_DELROUTE } else { RTM_NEWROUTE };
        let message = route_msg(nl_type, &rtmsg(family, dst_len, 0, 254, STATIC, rtype), &attrs);
        if let Ok(messages) = parse_netlink(&message) {
            let [Message::Route(r)] = messages.as_slice() else {
                panic!("one route expected, got {messages:?}");
            };
            assert_route_sound(r);
            assert_eq!(r.len, dst_len);
            assert_eq!(r.op == RouteOp::Add, !del && rtype == 1);
        }
    }
}
