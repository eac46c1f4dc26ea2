//! `[viaduct.ipsec]`: this gateway's side (identity, private key, local
//! address, replay window), its peers, and what is checked across peers:
//! unique peer and tunnel names, SPIs and manual keys, and no ambiguous
//! overlap between tunnels.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;

use crate::algo;
use crate::model::*;
use crate::net::{parse_ip, Prefix};
use crate::raw::*;

use super::checker::{list, V};
use super::credentials::{auth, identity, private_key, same_identity};
use super::ike::{dpd, lifetimes, proposals};
use super::peer::{tfc_padding, MAX_TUNNELS_PER_PEER};
use super::personality::{address_spans, Side2};
use super::tunnel::{ambiguous, shared_keys, tunnel};

/// Default anti-replay window.
pub const DEFAULT_REPLAY_WINDOW: u32 = 4096;

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
    let local_address = v.req(&ip.local_address, &ip.span, t, "local_address").and_then(|a| {
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
    });
    let replay_window = match &ip.replay_window {
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
    };
    let red_nets: Vec<Prefix> = red
        .map(|(_, r)| r.addresses.iter().map(|a| a.network()).collect())
        .unwrap_or_default();
    let red_spans = address_spans(personalities, "red").0;
    let red_nets: Vec<(Prefix, Range<usize>)> = red_nets
        .into_iter()
        .enumerate()
        .map(|(i, n)| (n, red_spans.get(i).cloned().unwrap_or(ip.span.clone())))
        .collect();
    let mut peers = Vec::new();
    let mut peer_names = Vec::new();
    let mut tunnel_names = Vec::new();
    // (tunnel name span, field, tunnel) for the overlap check.
    let mut all_tunnels: Vec<(Range<usize>, String, Tunnel)> = Vec::new();
    let mut spis_out: Vec<(u32, Range<usize>, String)> = Vec::new();
    let mut spis_in: Vec<(u32, Range<usize>, String)> = Vec::new();
    let peer_list = v.req(&ip.peers, &ip.span, t, "peers")?;
    if peer_list.value.is_empty() {
        v.err(
            &peer_list.span,
            format!("{t}.peers"),
            "no peers: a vpn gateway needs at least one [[viaduct.ipsec.peers]]",
        );
        ok = false;
    }
    for (i, p) in peer_list.value.iter().enumerate() {
        let f = format!("{t}.peers[{i}]");
        let name = v
            .req(&p.name, &p.span, &f, "name")
            .and_then(|n| v.name(n, &format!("{f}.name")));
        if let Some(n) = &p.name {
            peer_names.push((n.value.clone(), n.span.clone(), format!("{f}.name")));
        }
        let address = v.req(&p.address, &p.span, &f, "address").and_then(|a| {
            let addr = v.parse(a, &format!("{f}.address"), parse_ip)?;
            if let (Some(local), Some(la)) = (local_address, &ip.local_address) {
                if local.is_ipv4() != addr.is_ipv4() {
                    let fam = |x: &IpAddr| if x.is_ipv4() { "IPv4" } else { "IPv6" };
                    v.err_note(
                        &a.span,
                        format!("{f}.address"),
                        format!(
                            "peer address {addr} is {} but local_address {local} is {}; IKE and ESP to a peer leave from local_address, so the peer needs an {} address",
                            fam(&addr),
                            fam(&local),
                            fam(&local)
                        ),
                        &la.span,
                        "local_address is set here",
                    );
                    return None;
                }
            }
            if let Some((net, span)) = red_nets.iter().find(|(n, _)| n.contains(&addr)) {
                v.err_note(
                    &a.span,
                    format!("{f}.address"),
                    format!(
                        "peer address {addr} is inside red's network {net}; a peer is reached over black"
                    ),
                    span,
                    "red's address is set here",
                );
                return None;
            }
            if Some(addr) == local_address {
                v.err(
                    &a.span,
                    format!("{f}.address"),
                    "the peer's address is this gateway's own local_address",
                );
                return None;
            }
            Some(addr)
        });
        let remote_id = v
            .req(&p.remote_id, &p.span, &f, "remote_id")
            .and_then(|id| {
                let r = identity(v, id, &format!("{f}.remote_id"))?;
                if let (Some(local), Some(lid)) = (&local_id, &ip.local_id) {
                    if same_identity(&r, local) {
                        v.err_note(
                            &id.span,
                            format!("{f}.remote_id"),
                            format!("remote_id `{r}` is this gateway's own identity (local_id `{local}`); give the peer's identity"),
                            &lid.span,
                            "local_id is set here",
                        );
                        return None;
                    }
                }
                Some(r)
            });
        let auth = match &p.auth {
            None => {
                v.err(&p.span, format!("{f}.auth"), "peer has no authentication: add `auth = { method = \"psk\", psk = \"tpm:<name>\" }` or `auth = { method = \"pubkey\", public_key = \"ed25519:<hex>\" }`");
                None
            }
            Some(a) => auth(v, a, &format!("{f}.auth")),
        };
        if let (Some(Auth::PublicKey { .. }), None, Some(a)) = (&auth, &ip.private_key, &p.auth) {
            v.err(&a.span, format!("{f}.auth"), "method `pubkey` needs this gateway's own key: set `viaduct.ipsec.private_key = \"tpm:<name>\"` (or `\"lab:<64 hex digits>\"` in a lab profile)");
            ok = false;
        }
        let ike_proposals = match &p.ike_proposals {
            None => Some(vec![algo::parse_ike("aes256gcm16-prfsha384-x25519").ok()?]),
            Some(l) => proposals(v, l, &format!("{f}.ike_proposals"), algo::parse_ike),
        };
        let esp_proposals = match &p.esp_proposals {
            None => Some(vec![algo::parse_esp("aes256gcm16").ok()?]),
            Some(l) => proposals(v, l, &format!("{f}.esp_proposals"), algo::parse_esp),
        };
        let encapsulation = match &p.encapsulation {
            None => Some(Encapsulation::Esp),
            Some(e) => match e.value.as_str() {
                "esp" => Some(Encapsulation::Esp),
                "udp" => Some(Encapsulation::Udp),
                other => {
                    v.err(
                        &e.span,
                        format!("{f}.encapsulation"),
                        format!("unknown encapsulation `{other}`: use `esp` (IP protocol 50) or `udp` (ESP in UDP, port 4500)"),
                    );
                    None
                }
            },
        };
        let outer_dscp = match &p.outer_dscp {
            None => Some(0),
            Some(d) => match u8::try_from(d.value) {
                Ok(x) if x <= 63 => Some(x),
                _ => {
                    let tos = if d.value <= 255 && d.value % 4 == 0 {
                        format!(" (a TOS byte? its DSCP is {})", d.value / 4)
                    } else {
                        String::new()
                    };
                    v.err(
                        &d.span,
                        format!("{f}.outer_dscp"),
                        format!("DSCP {} does not fit in 6 bits (0-63){tos}", d.value),
                    );
                    None
                }
            },
        };
        let tfc_padding = tfc_padding(v, p.tfc_padding.as_ref(), &format!("{f}.tfc_padding"));
        let lifetimes = lifetimes(v, p.lifetimes.as_ref(), &format!("{f}.lifetimes"));
        let dpd = dpd(v, p.dpd.as_ref(), &format!("{f}.dpd"));
        let mut tunnels = Vec::new();
        let tl = v.req(&p.tunnels, &p.span, &f, "tunnels");
        if tl.is_some_and(|l| l.value.is_empty()) {
            v.err(
                &tl.map(|l| l.span.clone()).unwrap_or(p.span.clone()),
                format!("{f}.tunnels"),
                "no tunnels: give at least one [[...tunnels]] with local_ts and remote_ts",
            );
            ok = false;
        }
        if let Some(l) = tl.filter(|l| l.value.len() > MAX_TUNNELS_PER_PEER) {
            v.err(
                &l.span,
                format!("{f}.tunnels"),
                format!(
                    "{} tunnels: at most {MAX_TUNNELS_PER_PEER} per peer (one IKE SA keeps at most \
                     that many CHILD SAs); split them across peers or widen the selectors",
                    l.value.len()
                ),
            );
            ok = false;
        }
        for (j, tr) in list(&p.tunnels).iter().enumerate() {
            let tf = format!("{f}.tunnels[{j}]");
            if let Some(n) = &tr.name {
                tunnel_names.push((n.value.clone(), n.span.clone(), format!("{tf}.name")));
            }
            match tunnel(v, tr, &tf, &red_nets, &mut spis_out, &mut spis_in) {
                Some(tun) => {
                    let span = tr
                        .name
                        .as_ref()
                        .map(|n| n.span.clone())
                        .unwrap_or(tr.span.clone());
                    all_tunnels.push((span, tf.clone(), tun.clone()));
                    tunnels.push(tun);
                }
                None => ok = false,
            }
        }
        match (
            name,
            address,
            remote_id,
            auth,
            ike_proposals,
            esp_proposals,
            (lifetimes, encapsulation, outer_dscp, tfc_padding, dpd),
        ) {
            (
                Some(name),
                Some(address),
                Some(remote_id),
                Some(auth),
                Some(ike_proposals),
                Some(esp_proposals),
                (
                    Some(lifetimes),
                    Some(encapsulation),
                    Some(outer_dscp),
                    Some(tfc_padding),
                    Some(dpd),
                ),
            ) => peers.push(Peer {
                name,
                address,
                remote_id,
                auth,
                ike_proposals,
                esp_proposals,
                encapsulation,
                outer_dscp,
                tfc_padding,
                lifetimes,
                dpd,
                tunnels,
            }),
            _ => ok = false,
        }
    }
    v.unique("peer", &peer_names);
    v.unique("tunnel", &tunnel_names);
    if ok {
        shared_keys(v, peer_list);
    }
    for dup in [&spis_out, &spis_in] {
        let names: Vec<(String, Range<usize>, String)> = dup
            .iter()
            .map(|(s, sp, f)| (format!("{s:#x}"), sp.clone(), f.clone()))
            .collect();
        v.unique("SPI", &names);
    }
    // Ambiguous overlap between tunnels: two tunnels whose selectors overlap
    // where neither is strictly more specific than the other. (Two tunnels
    // of one name are reported as such above: a copied tunnel is one
    // mistake.)
    for a in 0..all_tunnels.len() {
        for b in a + 1..all_tunnels.len() {
            let (a_span, _, ta) = &all_tunnels[a];
            let (span, field, tb) = &all_tunnels[b];
            if ta.name == tb.name {
                continue;
            }
            if let Some(why) = ambiguous(ta, tb) {
                let (a_span, span, field) = (a_span.clone(), span.clone(), field.clone());
                v.err_note(&span, format!("{field}.name"), format!("tunnel `{}` overlaps tunnel `{}` ambiguously ({why}); make one strictly more specific or make them disjoint", tb.name, ta.name), &a_span, format!("tunnel `{}` is declared here", ta.name));
            }
        }
    }
    ok.then_some(())?;
    Some(Ipsec {
        local_id: local_id?,
        private_key,
        local_address: local_address?,
        replay_window: replay_window?,
        peers,
    })
}
