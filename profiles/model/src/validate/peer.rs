//! One `[[viaduct.ipsec.peers]]` entry: its name, address and identity, its
//! authentication and proposals, ESP encapsulation and outer DSCP, TFC
//! padding, lifetimes and DPD, and its tunnels.

use std::net::IpAddr;
use std::ops::Range;

use crate::algo;
use crate::model::*;
use crate::net::{parse_ip, Prefix};
use crate::raw::*;

use super::checker::{list, V};
use super::credentials::{auth, identity, same_identity};
use super::ike::{dpd, lifetimes, proposals};
use super::tunnel::tunnel;

/// Tunnels one peer may have: its IKE SA keeps one CHILD SA per tunnel, and
/// the IKE engine allows at most this many (`ike::sa::MAX_TUNNELS`).
pub const MAX_TUNNELS_PER_PEER: usize = 16;

/// Largest TFC padding size: the MTU of red's Viaduct port (the network
/// script sets 1400 so that ESP with its outer headers fits the internet
/// side's 1500 bytes). A larger size would pad packets past that.
pub const MAX_TFC_PADDING: u64 = 1400;

/// Smallest TFC padding size: the smallest IPv4 header.
pub const MIN_TFC_PADDING: u64 = 20;

/// `tfc_padding`: sizes from [`MIN_TFC_PADDING`] to [`MAX_TFC_PADDING`],
/// strictly increasing.
pub(super) fn tfc_padding(
    v: &mut V<'_>,
    l: Option<&Sp<Vec<Sp<u64>>>>,
    f: &str,
) -> Option<Vec<u16>> {
    let Some(l) = l else {
        return Some(Vec::new());
    };
    let mut out: Vec<u16> = Vec::new();
    for (i, n) in l.value.iter().enumerate() {
        let field = format!("{f}[{i}]");
        if n.value > MAX_TFC_PADDING {
            v.err(&n.span, field, format!("{} is larger than the {MAX_TFC_PADDING} bytes of red's Viaduct port (its MTU): no packet needs it, and padding to it would make ESP packets too big for the internet side; end the list with {MAX_TFC_PADDING}", n.value));
            return None;
        }
        if n.value < MIN_TFC_PADDING {
            v.err(
                &n.span,
                field,
                format!(
                    "{} is smaller than any IP packet; use at least {MIN_TFC_PADDING}",
                    n.value
                ),
            );
            return None;
        }
        let size = n.value as u16;
        if let Some(&last) = out.last() {
            if size <= last {
                let msg = if size == last {
                    format!("{size} is listed twice")
                } else {
                    format!("{size} follows {last}; list the sizes in increasing order")
                };
                v.err(&n.span, field, msg);
                return None;
            }
        }
        out.push(size);
    }
    Some(out)
}

/// This gateway's side of `[viaduct.ipsec]`, as far as it is valid: what
/// each peer is checked against.
pub(super) struct LocalSide<'a> {
    /// The section as written, for the spans of its keys.
    pub(super) raw: &'a Sp<RawIpsec>,
    /// `local_id`, if valid.
    pub(super) id: Option<&'a str>,
    /// `local_address`, if valid.
    pub(super) address: Option<IpAddr>,
    /// Red's networks, each with the span of the address that sets it.
    pub(super) red_nets: &'a [(Prefix, Range<usize>)],
}

/// What the checks of each peer gather for the checks across peers.
#[derive(Default)]
pub(super) struct Gathered {
    /// (name, span, field) of each peer that has a name.
    pub(super) peer_names: Vec<(String, Range<usize>, String)>,
    /// (name, span, field) of each tunnel that has a name.
    pub(super) tunnel_names: Vec<(String, Range<usize>, String)>,
    /// (tunnel name span, field, tunnel) of each valid tunnel, for the
    /// overlap check.
    pub(super) tunnels: Vec<(Range<usize>, String, Tunnel)>,
    /// (SPI, span, field) of each manually keyed SA, one list per direction.
    pub(super) spis_out: Vec<(u32, Range<usize>, String)>,
    pub(super) spis_in: Vec<(u32, Range<usize>, String)>,
}

/// One peer; `f` is its field (`viaduct.ipsec.peers[i]`). `None` when the
/// peer or one of its tunnels has an error, which is reported.
pub(super) fn peer(
    v: &mut V<'_>,
    p: &Sp<RawPeer>,
    f: &str,
    side: &LocalSide<'_>,
    seen: &mut Gathered,
) -> Option<Peer> {
    let mut ok = true;
    let name = v
        .req(&p.name, &p.span, f, "name")
        .and_then(|n| v.name(n, &format!("{f}.name")));
    if let Some(n) = &p.name {
        seen.peer_names
            .push((n.value.clone(), n.span.clone(), format!("{f}.name")));
    }
    let address = address(v, p, f, side);
    let remote_id = remote_id(v, p, f, side);
    let auth = match &p.auth {
        None => {
            v.err(&p.span, format!("{f}.auth"), "peer has no authentication: add `auth = { method = \"psk\", psk = \"tpm:<name>\" }` or `auth = { method = \"pubkey\", public_key = \"ed25519:<hex>\" }`");
            None
        }
        Some(a) => auth(v, a, &format!("{f}.auth")),
    };
    if let (Some(Auth::PublicKey { .. } | Auth::PublicKeyEcdsaP256 { .. }), None, Some(a)) =
        (&auth, &side.raw.private_key, &p.auth)
    {
        v.err(&a.span, format!("{f}.auth"), "method `pubkey` needs this gateway's own key: set `viaduct.ipsec.private_key = \"tpm:identity\"` (the device identity key in the TPM), `\"tpm:<name>\"` (a provisioned Ed25519 seed) or `\"lab:<64 hex digits>\"` in a lab profile");
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
    let encapsulation = encapsulation(v, p, f);
    let outer_dscp = outer_dscp(v, p, f);
    let tfc_padding = tfc_padding(v, p.tfc_padding.as_ref(), &format!("{f}.tfc_padding"));
    let lifetimes = lifetimes(v, p.lifetimes.as_ref(), &format!("{f}.lifetimes"));
    let dpd = dpd(v, p.dpd.as_ref(), &format!("{f}.dpd"));
    let tunnels = tunnels(v, p, f, side, seen);
    ok.then_some(())?;
    Some(Peer {
        name: name?,
        address: address?,
        remote_id: remote_id?,
        auth: auth?,
        ike_proposals: ike_proposals?,
        esp_proposals: esp_proposals?,
        encapsulation: encapsulation?,
        outer_dscp: outer_dscp?,
        tfc_padding: tfc_padding?,
        lifetimes: lifetimes?,
        dpd: dpd?,
        tunnels: tunnels?,
    })
}

/// `address`: of `local_address`'s family, outside red's networks, and not
/// `local_address` itself.
fn address(v: &mut V<'_>, p: &Sp<RawPeer>, f: &str, side: &LocalSide<'_>) -> Option<IpAddr> {
    v.req(&p.address, &p.span, f, "address").and_then(|a| {
        let addr = v.parse(a, &format!("{f}.address"), parse_ip)?;
        if let (Some(local), Some(la)) = (side.address, &side.raw.local_address) {
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
        if let Some((net, span)) = side.red_nets.iter().find(|(n, _)| n.contains(&addr)) {
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
        if Some(addr) == side.address {
            v.err(
                &a.span,
                format!("{f}.address"),
                "the peer's address is this gateway's own local_address",
            );
            return None;
        }
        Some(addr)
    })
}

/// `remote_id`: an identity, not this gateway's own.
fn remote_id(v: &mut V<'_>, p: &Sp<RawPeer>, f: &str, side: &LocalSide<'_>) -> Option<String> {
    v.req(&p.remote_id, &p.span, f, "remote_id")
        .and_then(|id| {
            let r = identity(v, id, &format!("{f}.remote_id"))?;
            if let (Some(local), Some(lid)) = (side.id, &side.raw.local_id) {
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
        })
}

/// `encapsulation`: `esp` (the default) or `udp`.
fn encapsulation(v: &mut V<'_>, p: &Sp<RawPeer>, f: &str) -> Option<Encapsulation> {
    match &p.encapsulation {
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
    }
}

/// `outer_dscp`: a 6-bit DSCP, 0 when not given.
fn outer_dscp(v: &mut V<'_>, p: &Sp<RawPeer>, f: &str) -> Option<u8> {
    match &p.outer_dscp {
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
    }
}

/// `tunnels`: one to [`MAX_TUNNELS_PER_PEER`], each checked on its own.
/// `None` when the list or one of its tunnels has an error; a missing list
/// is reported as missing and gives no tunnels.
fn tunnels(
    v: &mut V<'_>,
    p: &Sp<RawPeer>,
    f: &str,
    side: &LocalSide<'_>,
    seen: &mut Gathered,
) -> Option<Vec<Tunnel>> {
    let mut ok = true;
    let mut tunnels = Vec::new();
    let tl = v.req(&p.tunnels, &p.span, f, "tunnels");
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
            seen.tunnel_names
                .push((n.value.clone(), n.span.clone(), format!("{tf}.name")));
        }
        match tunnel(
            v,
            tr,
            &tf,
            side.red_nets,
            &mut seen.spis_out,
            &mut seen.spis_in,
        ) {
            Some(tun) => {
                let span = tr
                    .name
                    .as_ref()
                    .map(|n| n.span.clone())
                    .unwrap_or(tr.span.clone());
                seen.tunnels.push((span, tf.clone(), tun.clone()));
                tunnels.push(tun);
            }
            None => ok = false,
        }
    }
    ok.then_some(tunnels)
}
