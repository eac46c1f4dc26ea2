//! The IDS section (format 8): signatures round-trip with every field, the
//! encoding stays canonical, and what the engine would refuse is refused
//! when the blob is read.

use policy_blob::*;
use proptest::prelude::*;
use viaduct_ids::{
    Action, AddrMatch, ContentMatch, DsizeMatch, FlowDirection, FlowMatch, FlowState, PortMatch,
    Proto, Signature,
};

fn content(bytes: &[u8]) -> ContentMatch {
    ContentMatch::new(bytes)
}

fn full() -> Signature {
    Signature {
        sid: 1000001,
        rev: 3,
        action: Action::Drop,
        proto: Proto::Tcp,
        src: AddrMatch::any(),
        src_ports: PortMatch::from_ranges(vec![(1024, 65535)]),
        dst: AddrMatch::from_ranges(vec![(0x0a01_0000, 0x0a01_00ff)], vec![(1, 1)]),
        dst_ports: PortMatch::from_ranges(vec![(80, 80), (8080, 8081)]),
        bidirectional: true,
        flow: FlowMatch {
            direction: Some(FlowDirection::ToServer),
            state: Some(FlowState::Established),
        },
        dsize: Some(DsizeMatch::Range(3, 1400)),
        contents: vec![
            ContentMatch {
                nocase: true,
                offset: Some(2),
                depth: Some(40),
                fast_pattern: true,
                ..content(b"GET ")
            },
            ContentMatch {
                distance: Some(-3),
                within: Some(20),
                ..content(b"() {")
            },
            ContentMatch {
                negated: true,
                ..content(b"\x00\xff")
            },
        ],
        msg: "Shellshock \"probe\"\nin a web request".into(),
    }
}

fn with(sigs: Vec<Signature>) -> Policy {
    Policy::new("ids", "1").with_ids(sigs)
}

#[test]
fn every_field_round_trips_and_stays_canonical() {
    let mut other = Signature::any(7, Proto::Udp, vec![content(b"x")]);
    other.dsize = Some(DsizeMatch::Lt(5));
    other.flow.state = Some(FlowState::NotEstablished);
    other.flow.direction = Some(FlowDirection::ToClient);
    let p = with(vec![full(), other]);
    p.validate().unwrap();
    let blob = p.encode();
    let q = Policy::decode(&blob).unwrap();
    assert_eq!(q, p);
    assert_eq!(q.encode(), blob);
    assert!(q.tracks_connections() && !q.stateful());
    assert!(!Policy::new("x", "1").tracks_connections());
}

/// A blob whose body was altered, with its digest made right again.
fn reframe(mut blob: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    blob.truncate(blob.len() - 32);
    edit(&mut blob);
    let len = (blob.len() - 11) as u32;
    blob[7..11].copy_from_slice(&len.to_be_bytes());
    let d = Sha256::digest(&blob);
    blob.extend_from_slice(&d);
    blob
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in blob")
}

#[test]
fn ranges_in_another_form_are_refused() {
    // Two port ranges, (80, 80) and (8080, 8081): swapped they are the same
    // set, in a form the encoder never writes.
    let blob = with(vec![full()]).encode();
    let at = find(&blob, &[0, 80, 0, 80, 0x1f, 0x90, 0x1f, 0x91]);
    let swapped = reframe(blob.clone(), |b| {
        b[at..at + 8].copy_from_slice(&[0x1f, 0x90, 0x1f, 0x91, 0, 80, 0, 80]);
    });
    assert!(matches!(
        Policy::decode(&swapped),
        Err(BlobError::NotCanonical { .. })
    ));
    // Adjacent ranges that one range would write.
    let adjacent = reframe(blob, |b| {
        b[at..at + 8].copy_from_slice(&[0, 80, 0, 81, 0, 82, 0, 83]);
    });
    assert!(matches!(
        Policy::decode(&adjacent),
        Err(BlobError::NotCanonical { .. })
    ));
}

#[test]
fn unknown_content_flags_and_tags_are_refused() {
    let blob = with(vec![Signature::any(9, Proto::Tcp, vec![content(b"abc")])]).encode();
    // The content: u16 length, the bytes, then the flags byte.
    let at = find(&blob, &[0, 3, b'a', b'b', b'c']) + 5;
    let flags = reframe(blob.clone(), |b| b[at] = 0x08);
    assert!(matches!(
        Policy::decode(&flags),
        Err(BlobError::InvalidTag {
            what: "IDS content flags",
            ..
        })
    ));
    // The action tag follows sid and rev.
    let at = find(&blob, &[0, 0, 0, 9, 0, 0, 0, 1]) + 8;
    let action = reframe(blob, |b| b[at] = 3);
    assert!(matches!(
        Policy::decode(&action),
        Err(BlobError::InvalidTag {
            what: "IDS action",
            ..
        })
    ));
}

#[test]
fn what_the_engine_would_refuse_is_refused_on_reading() {
    let refused = |sigs: Vec<Signature>, want: &str| {
        let p = with(sigs);
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
        // The encoder writes it; the reader refuses it.
        assert!(Policy::decode(&p.encode()).is_err());
    };
    let tcp = |sid, c| Signature::any(sid, Proto::Tcp, vec![c]);
    refused(vec![], "no signature");
    refused(
        vec![tcp(5, content(b"a")), tcp(5, content(b"b"))],
        "sid 5 is 0 or used twice",
    );
    refused(vec![tcp(0, content(b"a"))], "sid 0");
    refused(
        vec![tcp(
            6,
            ContentMatch {
                negated: true,
                ..content(b"a")
            },
        )],
        "every content is negated",
    );
    refused(
        vec![tcp(
            6,
            ContentMatch {
                depth: Some(1),
                ..content(b"abc")
            },
        )],
        "shorter than its content",
    );
    refused(vec![tcp(6, content(&[b'a'; 1025]))], "longer than 1024");
    let mut empty = tcp(6, content(b"a"));
    empty.dst_ports = PortMatch::from_ranges(vec![]);
    refused(vec![empty], "empty");
}

fn arb_content() -> impl Strategy<Value = ContentMatch> {
    (
        proptest::collection::vec(any::<u8>(), 1..12),
        any::<bool>(),
        prop::option::of(0u32..100),
        prop::option::of(12u32..200),
        prop::option::of(-20i32..20),
        any::<bool>(),
    )
        .prop_map(|(bytes, nocase, offset, depth, distance, relative)| {
            let mut c = ContentMatch::new(&bytes);
            c.nocase = nocase;
            if relative {
                c.distance = distance;
                c.within = depth;
            } else {
                c.offset = offset;
                c.depth = depth;
            }
            c
        })
}

fn arb_signature() -> impl Strategy<Value = Signature> {
    (
        1u32..50,
        any::<bool>(),
        0usize..4,
        proptest::collection::vec((any::<u32>(), any::<u32>()), 1..4),
        proptest::collection::vec((any::<u16>(), any::<u16>()), 1..4),
        proptest::collection::vec(arb_content(), 1..4),
        "\\PC{0,12}",
        prop::option::of((any::<u16>(), any::<u16>())),
    )
        .prop_map(|(sid, drop, proto, v4, ports, contents, msg, dsize)| {
            let mut s = Signature::any(
                sid,
                [Proto::Tcp, Proto::Udp, Proto::Icmp, Proto::Ip][proto],
                contents,
            );
            s.action = if drop { Action::Drop } else { Action::Alert };
            let v4: Vec<(u32, u32)> = v4.into_iter().map(|(a, b)| (a.min(b), a.max(b))).collect();
            let ports: Vec<(u16, u16)> = ports
                .into_iter()
                .map(|(a, b)| (a.min(b), a.max(b)))
                .collect();
            s.dst = AddrMatch::from_ranges(v4, vec![(0, u128::MAX >> 1)]);
            s.src_ports = PortMatch::from_ranges(ports);
            s.dsize = dsize.map(|(a, b)| DsizeMatch::Range(a, b));
            s.msg = msg;
            s
        })
}

proptest! {
    /// Any valid set of signatures decodes to itself, and re-encodes to the
    /// same bytes.
    #[test]
    fn signatures_round_trip(sigs in proptest::collection::vec(arb_signature(), 1..6)) {
        let mut sigs = sigs;
        sigs.sort_by_key(|s| s.sid);
        sigs.dedup_by_key(|s| s.sid);
        let p = with(sigs);
        prop_assume!(p.validate().is_ok());
        let blob = p.encode();
        let q = Policy::decode(&blob).unwrap();
        prop_assert_eq!(&q, &p);
        prop_assert_eq!(q.encode(), blob);
    }
}
