//! A compiled rule as the Viaduct's engine takes it: [`viaduct_ids::Signature`].

use viaduct_ids::{
    Action, AddrMatch, ContentMatch, DsizeMatch, FlowDirection, FlowMatch, FlowState, PortMatch,
    Proto, Signature,
};

use crate::{AddrSet, Dsize, PortSet, Rule};

fn addrs(a: &AddrSet) -> AddrMatch {
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
}

fn ports(p: &PortSet) -> PortMatch {
    PortMatch::from_ranges(p.ranges().to_vec())
}

/// The engine's signature for a compiled rule: the same header, flow,
/// `dsize` and content chain; `classtype`, `priority`, `metadata` and
/// `reference` stay on the host (the alert carries sid, rev and message).
pub fn signature(r: &Rule) -> Signature {
    Signature {
        sid: r.sid,
        rev: r.rev,
        action: match r.action {
            crate::Action::Alert => Action::Alert,
            crate::Action::Drop => Action::Drop,
        },
        proto: match r.proto {
            crate::Proto::Tcp => Proto::Tcp,
            crate::Proto::Udp => Proto::Udp,
            crate::Proto::Icmp => Proto::Icmp,
            crate::Proto::Ip => Proto::Ip,
        },
        src: addrs(&r.src),
        src_ports: ports(&r.src_ports),
        dst: addrs(&r.dst),
        dst_ports: ports(&r.dst_ports),
        bidirectional: r.bidirectional,
        flow: FlowMatch {
            direction: r.flow.direction.map(|d| match d {
                crate::FlowDirection::ToServer => FlowDirection::ToServer,
                crate::FlowDirection::ToClient => FlowDirection::ToClient,
            }),
            state: r.flow.state.and_then(|s| match s {
                crate::FlowState::Established => Some(FlowState::Established),
                crate::FlowState::NotEstablished => Some(FlowState::NotEstablished),
                crate::FlowState::Stateless => None,
            }),
        },
        dsize: r.dsize.map(|d| match d {
            Dsize::Eq(n) => DsizeMatch::Eq(n),
            Dsize::Lt(n) => DsizeMatch::Lt(n),
            Dsize::Gt(n) => DsizeMatch::Gt(n),
            Dsize::Range(a, b) => DsizeMatch::Range(a, b),
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
