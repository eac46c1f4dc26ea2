//! `[viaduct.ipsec]`: this gateway's side (identity, private key, local
//! address, replay window), its peers, and what is checked across peers:
//! unique peer and tunnel names, SPIs and manual keys, and no ambiguous
//! overlap between tunnels.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;

use crate::model::*;
use crate::net::{parse_ip, Prefix};
use crate::raw::*;

use super::checker::V;
use super::credentials::{identity, private_key};
use super::peer::{peer, Gathered, LocalSide};
use super::personality::{address_spans, Side2};
use super::tunnel::{ambiguous_overlaps, shared_keys, spis_unique};

/// Default anti-replay window.
pub const DEFAULT_REPLAY_WINDOW: u32 = 4096;

/// `[viaduct.ipsec]`: this gateway's side first, then each peer against it,
/// then the checks across peers (in that order, so that errors keep their
/// order).
pub(super) fn ipsec(
    v: &mut V<'_>,
    ip: &Sp<RawIpsec>,
    red: Side2<'_>,
    black: Side2<'_>,
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) -> Option<Ipsec> {
    let t = "viaduct.ipsec";
    let mut ok = true;
    let local_id = v
        .req(&ip.local_id, &ip.span, t, "local_id")
        .and_then(|id| identity(v, id, &format!("{t}.local_id")));
    let private_key = ip
        .private_key
        .as_ref()
        .map(|k| private_key(v, k, &format!("{t}.private_key")));
    if private_key.as_ref().is_some_and(|k| k.is_none()) {
        ok = false;
    }
    let private_key = private_key.flatten();
    let local_address = local_address(v, ip, black, personalities);
    let replay_window = replay_window(v, ip);
    let red_nets = red_nets(ip, red, personalities);
    let mut seen = Gathered::default();
    let peer_list = v.req(&ip.peers, &ip.span, t, "peers")?;
    if peer_list.value.is_empty() {
        v.err(
            &peer_list.span,
            format!("{t}.peers"),
            "no peers: a vpn gateway needs at least one [[viaduct.ipsec.peers]]",
        );
        ok = false;
    }
    let side = LocalSide {
        raw: ip,
        id: local_id.as_deref(),
        address: local_address,
        red_nets: &red_nets,
    };
    let mut peers = Vec::new();
    for (i, p) in peer_list.value.iter().enumerate() {
        match peer(v, p, &format!("{t}.peers[{i}]"), &side, &mut seen) {
            Some(p) => peers.push(p),
            None => ok = false,
        }
    }
    v.unique("peer", &seen.peer_names);
    v.unique("tunnel", &seen.tunnel_names);
    if ok {
        shared_keys(v, peer_list);
    }
    spis_unique(v, &seen.spis_out, &seen.spis_in);
    ambiguous_overlaps(v, &seen.tunnels);
    ok.then_some(())?;
    Some(Ipsec {
        local_id: local_id?,
        private_key,
        local_address: local_address?,
        replay_window: replay_window?,
        peers,
    })
}

/// `local_address`: one of black's addresses (unless black uses DHCP).
fn local_address(
    v: &mut V<'_>,
    ip: &Sp<RawIpsec>,
    black: Side2<'_>,
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) -> Option<IpAddr> {
    let t = "viaduct.ipsec";
    v.req(&ip.local_address, &ip.span, t, "local_address").and_then(|a| {
        let addr = v.parse(a, &format!("{t}.local_address"), parse_ip)?;
        if let Some((_, b)) = black {
            if !b.dhcp && !b.addresses.iter().any(|x| x.addr == addr) {
                let list: Vec<String> = b.addresses.iter().map(|x| x.addr.to_string()).collect();
                let msg = format!("{addr} is not one of black's addresses ({}); the Viaduct speaks ESP from black's public address", list.join(", "));
                match address_spans(personalities, "black").1 {
                    Some(other) => v.err_note(&a.span, format!("{t}.local_address"), msg, &other, "black's addresses are set here"),
                    None => v.err(&a.span, format!("{t}.local_address"), msg),
                }
                return None;
            }
        }
        Some(addr)
    })
}

/// `replay_window`: 1024 to 1048576 packets, [`DEFAULT_REPLAY_WINDOW`]
/// when not given.
fn replay_window(v: &mut V<'_>, ip: &Sp<RawIpsec>) -> Option<u32> {
    let t = "viaduct.ipsec";
    match &ip.replay_window {
        None => Some(DEFAULT_REPLAY_WINDOW),
        Some(w) if w.value < 1024 || w.value > (1 << 20) => {
            v.err(
                &w.span,
                format!("{t}.replay_window"),
                "replay_window must be between 1024 and 1048576 packets",
            );
            None
        }
        Some(w) => Some(w.value as u32),
    }
}

/// Red's networks, each with the span of the address that sets it (the
/// section's span when there is none to point at): no peer address and no
/// remote selector may be inside them.
fn red_nets(
    ip: &Sp<RawIpsec>,
    red: Side2<'_>,
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) -> Vec<(Prefix, Range<usize>)> {
    let red_nets: Vec<Prefix> = red
        .map(|(_, r)| r.addresses.iter().map(|a| a.network()).collect())
        .unwrap_or_default();
    let red_spans = address_spans(personalities, "red").0;
    red_nets
        .into_iter()
        .enumerate()
        .map(|(i, n)| (n, red_spans.get(i).cloned().unwrap_or(ip.span.clone())))
        .collect()
}
