//! Test helpers: Suricata rule text → the engine's signatures (through the
//! host-side parser), and packets.

use std::net::IpAddr;

use viaduct_ids::{
    Action, AddrMatch, ContentMatch, DsizeMatch, Engine, FlowDirection, FlowMatch, FlowState,
    Packet, PortMatch, Proto, Signature,
};

/// One parsed rule as a signature.
pub fn signature(r: &ids_rules::Rule) -> Signature {
    let addr = |a: &ids_rules::AddrSet| {
        AddrMatch::from_ranges(
            a.v4_ranges()
                .iter()
                .map(|&(x, y)| (x.into(), y.into()))
                .collect(),
            a.v6_ranges()
                .iter()
                .map(|&(x, y)| (x.into(), y.into()))
                .collect(),
        )
    };
    let ports = |p: &ids_rules::PortSet| PortMatch::from_ranges(p.ranges().to_vec());
    Signature {
        sid: r.sid,
        rev: r.rev,
        action: match r.action {
            ids_rules::Action::Alert => Action::Alert,
            ids_rules::Action::Drop => Action::Drop,
        },
        proto: match r.proto {
            ids_rules::Proto::Tcp => Proto::Tcp,
            ids_rules::Proto::Udp => Proto::Udp,
            ids_rules::Proto::Icmp => Proto::Icmp,
            ids_rules::Proto::Ip => Proto::Ip,
        },
        src: addr(&r.src),
        src_ports: ports(&r.src_ports),
        dst: addr(&r.dst),
        dst_ports: ports(&r.dst_ports),
        bidirectional: r.bidirectional,
        flow: FlowMatch {
            direction: r.flow.direction.map(|d| match d {
                ids_rules::FlowDirection::ToServer => FlowDirection::ToServer,
                ids_rules::FlowDirection::ToClient => FlowDirection::ToClient,
            }),
            state: r.flow.state.and_then(|s| match s {
                ids_rules::FlowState::Established => Some(FlowState::Established),
                ids_rules::FlowState::NotEstablished => Some(FlowState::NotEstablished),
                ids_rules::FlowState::Stateless => None,
            }),
        },
        dsize: r.dsize.map(|d| match d {
            ids_rules::Dsize::Eq(n) => DsizeMatch::Eq(n),
            ids_rules::Dsize::Lt(n) => DsizeMatch::Lt(n),
            ids_rules::Dsize::Gt(n) => DsizeMatch::Gt(n),
            ids_rules::Dsize::Range(a, b) => DsizeMatch::Range(a, b),
        }),
        contents: r
            .contents
            .iter()
            .map(|c| ContentMatch {
                bytes: c.bytes.clone(),
                negated: c.negated,
                nocase: c.nocase,
                offset: c.offset,
                depth: c.depth,
                distance: c.distance,
                within: c.within,
                fast_pattern: c.fast_pattern,
            })
            .collect(),
        msg: r.msg.clone(),
    }
}

/// Parses rule text; every rule must compile.
pub fn signatures(text: &str) -> Vec<Signature> {
    let set = ids_rules::parse(text, &ids_rules::Vars::default());
    assert!(set.refused.is_empty(), "refused: {:?}", set.refused);
    set.rules.iter().map(signature).collect()
}

/// An engine from rule text.
pub fn engine(text: &str) -> Engine {
    Engine::new(signatures(text)).expect("engine builds")
}

/// A TCP packet from 10.0.0.1:40000 to 10.0.0.2:80, established, to server.
pub fn tcp(payload_len: usize) -> Packet {
    Packet {
        proto: Proto::Tcp,
        src: IpAddr::from([10, 0, 0, 1]),
        dst: IpAddr::from([10, 0, 0, 2]),
        src_port: 40000,
        dst_port: 80,
        to_server: true,
        established: true,
        dsize: payload_len,
    }
}

/// The sids that match `payload` in a packet like [`tcp`].
pub fn sids(e: &Engine, pkt: &Packet, payload: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    e.inspect(pkt, payload, &mut out);
    out.iter().map(|h| h.sid).collect()
}
