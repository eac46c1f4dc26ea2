//! A peer's tunnels: traffic selectors, manually keyed SAs (lab only), and
//! the checks between tunnels (no cipher key used twice, no ambiguous
//! overlap).

use std::ops::Range;

use crate::algo;
use crate::model::*;
use crate::net::{Prefix, TrafficSelector};
use crate::raw::*;

use super::checker::{hex_bytes, list, V};

/// One tunnel, `tf` its field: a name, local and remote traffic selectors
/// that share an address family (remote ones outside red's networks), and a
/// manually keyed SA if any. Its SPIs are added to `spis_out`/`spis_in`.
pub(super) fn tunnel(
    v: &mut V<'_>,
    tr: &Sp<RawTunnel>,
    tf: &str,
    red_nets: &[(Prefix, Range<usize>)],
    spis_out: &mut Vec<(u32, Range<usize>, String)>,
    spis_in: &mut Vec<(u32, Range<usize>, String)>,
) -> Option<Tunnel> {
    let name = v
        .req(&tr.name, &tr.span, tf, "name")
        .and_then(|n| v.name(n, &format!("{tf}.name")));
    let ts = |v: &mut V<'_>,
              l: &Option<Sp<Vec<Sp<String>>>>,
              key: &str|
     -> Option<Vec<TrafficSelector>> {
        let l = v.req(l, &tr.span, tf, key)?;
        if l.value.is_empty() {
            v.err(
                &l.span,
                format!("{tf}.{key}"),
                "at least one traffic selector is needed",
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, s) in l.value.iter().enumerate() {
            match v.parse(s, &format!("{tf}.{key}[{i}]"), |x| {
                x.parse::<TrafficSelector>()
            }) {
                Some(t) => out.push(t),
                None => ok = false,
            }
        }
        ok.then_some(out)
    };
    let local_ts = ts(v, &tr.local_ts, "local_ts");
    let remote_ts = ts(v, &tr.remote_ts, "remote_ts").and_then(|r| {
        for (i, sel) in r.iter().enumerate() {
            if let Some((net, red_span)) = red_nets.iter().find(|(n, _)| n.overlaps(&sel.prefix)) {
                let span = tr
                    .remote_ts
                    .as_ref()
                    .and_then(|l| l.value.get(i))
                    .map(|x| x.span.clone())
                    .unwrap_or(tr.span.clone());
                v.err_note(
                    &span,
                    format!("{tf}.remote_ts[{i}]"),
                    format!(
                        "remote selector {} overlaps red's own network {net}",
                        sel.prefix
                    ),
                    red_span,
                    "red's address is set here",
                );
                return None;
            }
        }
        Some(r)
    });
    if let (Some(l), Some(r)) = (&local_ts, &remote_ts) {
        let fam = |x: &[TrafficSelector], v4: bool| x.iter().any(|t| t.prefix.is_ipv4() == v4);
        if !(fam(l, true) && fam(r, true) || fam(l, false) && fam(r, false)) {
            v.err(
                &tr.span,
                tf.to_string(),
                "local_ts and remote_ts share no address family",
            );
            return None;
        }
    }
    let manual = match &tr.manual {
        None => Some(None),
        Some(m) => manual(v, m, &format!("{tf}.manual"), spis_out, spis_in).map(Some),
    };
    Some(Tunnel {
        name: name?,
        local_ts: local_ts?,
        remote_ts: remote_ts?,
        manual: manual?,
    })
}

/// A manually keyed SA (lab profiles only): an AEAD, SPIs from 256, keys of
/// the AEAD's length plus salt, a different key for each direction.
fn manual(
    v: &mut V<'_>,
    m: &Sp<RawManualSa>,
    f: &str,
    spis_out: &mut Vec<(u32, Range<usize>, String)>,
    spis_in: &mut Vec<(u32, Range<usize>, String)>,
) -> Option<ManualSa> {
    if !v.lab {
        v.err(&m.span, f, "manually keyed SAs carry keys in the image and are only allowed in lab profiles (appliance.lab = true); use IKE");
        return None;
    }
    let aead = v
        .req(&m.aead, &m.span, f, "aead")
        .and_then(|a| v.parse(a, &format!("{f}.aead"), algo::parse_aead));
    let spi = |v: &mut V<'_>,
               s: &Option<Sp<u32>>,
               key: &str,
               list: &mut Vec<(u32, Range<usize>, String)>|
     -> Option<u32> {
        let s = v.req(s, &m.span, f, key)?;
        if s.value < 256 {
            v.err(
                &s.span,
                format!("{f}.{key}"),
                "SPIs 0-255 are reserved (RFC 4303 §2.1); use 256 or more",
            );
            return None;
        }
        list.push((s.value, s.span.clone(), format!("{f}.{key}")));
        Some(s.value)
    };
    let spi_out = spi(v, &m.spi_out, "spi_out", spis_out);
    let spi_in = spi(v, &m.spi_in, "spi_in", spis_in);
    let key = |v: &mut V<'_>, k: &Option<Sp<String>>, key: &str| -> Option<LabKey> {
        let k = v.req(k, &m.span, f, key)?;
        let aead = aead?;
        let want = aead.key_len() + algo::Aead::SALT_LEN;
        match hex_bytes(&k.value) {
            Some(b) if b.len() == want => Some(LabKey::new(b)),
            _ => {
                v.err(
                    &k.span,
                    format!("{f}.{key}"),
                    format!(
                        "{} needs {want} bytes of key material ({} key + 4 salt) as {} hex digits",
                        aead.name(),
                        aead.key_len(),
                        want * 2
                    ),
                );
                None
            }
        }
    };
    let key_out = key(v, &m.key_out, "key_out");
    let key_in = key(v, &m.key_in, "key_in");
    if let (Some(a), Some(b), Some(aead)) = (&key_out, &key_in, aead) {
        // The cipher key, not the salt after it: one key under two salts
        // is still one key used by two SAs.
        if a.same_cipher_key(b, aead.key_len()) {
            if let (Some(k), Some(o)) = (&m.key_in, &m.key_out) {
                v.err_note(
                    &k.span,
                    format!("{f}.key_in"),
                    "key_in has the same key as key_out (the salt aside); each direction needs its own key",
                    &o.span,
                    "key_out is set here",
                );
            }
            return None;
        }
    }
    Some(ManualSa {
        aead: aead?,
        spi_out: spi_out?,
        spi_in: spi_in?,
        key_out: key_out?,
        key_in: key_in?,
    })
}

/// No SPI is used twice in one direction (`spis_out` and `spis_in` hold
/// (SPI, span, field) of each manually keyed SA).
pub(super) fn spis_unique(
    v: &mut V<'_>,
    spis_out: &[(u32, Range<usize>, String)],
    spis_in: &[(u32, Range<usize>, String)],
) {
    for dup in [spis_out, spis_in] {
        let names: Vec<(String, Range<usize>, String)> = dup
            .iter()
            .map(|(s, sp, f)| (format!("{s:#x}"), sp.clone(), f.clone()))
            .collect();
        v.unique("SPI", &names);
    }
}

/// Every manually keyed SA has its own cipher key: no key (salt aside) is
/// used by two tunnels (within one tunnel, `manual` reports key_in equal to
/// key_out). The later use is reported with a note at the first. Keys are
/// compared in constant time and in place. Called only once every peer and
/// tunnel validated, so the keys parse.
pub(super) fn shared_keys(v: &mut V<'_>, peers: &Sp<Vec<Sp<RawPeer>>>) {
    struct Seen<'a> {
        key: LabKey,
        key_len: usize,
        span: &'a Range<usize>,
        field: String,
        tunnel: usize,
    }
    let mut seen: Vec<Seen<'_>> = Vec::new();
    let mut tunnel = 0;
    for (i, p) in peers.value.iter().enumerate() {
        for (j, t) in list(&p.tunnels).iter().enumerate() {
            tunnel += 1;
            let Some(m) = &t.manual else { continue };
            let Some(key_len) = m
                .aead
                .as_ref()
                .and_then(|a| algo::parse_aead(&a.value).ok())
                .map(|a| a.key_len())
            else {
                continue;
            };
            for (name, k) in [("key_out", &m.key_out), ("key_in", &m.key_in)] {
                let Some(k) = k else { continue };
                let Some(key) = hex_bytes(&k.value).map(LabKey::new) else {
                    continue;
                };
                let field = format!("viaduct.ipsec.peers[{i}].tunnels[{j}].manual.{name}");
                let first = seen.iter().find(|s| {
                    s.tunnel != tunnel
                        && s.key_len == key_len
                        && s.key.same_cipher_key(&key, key_len)
                });
                if let Some(first) = first {
                    let msg = format!("the same key as {} (the salt aside); every manually keyed SA needs its own key", first.field);
                    let (span, note) = (first.span.clone(), format!("{} is set here", first.field));
                    v.err_note(&k.span, field.clone(), msg, &span, note);
                }
                seen.push(Seen {
                    key,
                    key_len,
                    span: &k.span,
                    field,
                    tunnel,
                });
            }
        }
    }
}

/// Ambiguous overlap between tunnels: two tunnels whose selectors overlap
/// where neither is strictly more specific than the other. `tunnels` holds
/// (tunnel name span, field, tunnel) of every valid tunnel of every peer.
/// (Two tunnels of one name are reported as such: a copied tunnel is one
/// mistake.)
pub(super) fn ambiguous_overlaps(v: &mut V<'_>, tunnels: &[(Range<usize>, String, Tunnel)]) {
    for a in 0..tunnels.len() {
        for b in a + 1..tunnels.len() {
            let (a_span, _, ta) = &tunnels[a];
            let (span, field, tb) = &tunnels[b];
            if ta.name == tb.name {
                continue;
            }
            if let Some(why) = ambiguous(ta, tb) {
                let (a_span, span, field) = (a_span.clone(), span.clone(), field.clone());
                v.err_note(&span, format!("{field}.name"), format!("tunnel `{}` overlaps tunnel `{}` ambiguously ({why}); make one strictly more specific or make them disjoint", tb.name, ta.name), &a_span, format!("tunnel `{}` is declared here", ta.name));
            }
        }
    }
}

/// Why two tunnels' selector pairs overlap with no most-specific winner.
fn ambiguous(a: &Tunnel, b: &Tunnel) -> Option<String> {
    for la in &a.local_ts {
        for ra in &a.remote_ts {
            for lb in &b.local_ts {
                for rb in &b.remote_ts {
                    if !(la.overlaps(lb) && ra.overlaps(rb)) {
                        continue;
                    }
                    let a_in_b = lb.covers(la) && rb.covers(ra);
                    let b_in_a = la.covers(lb) && ra.covers(rb);
                    if a_in_b && b_in_a {
                        return Some(format!("both select {la} ↔ {ra}"));
                    }
                    if !a_in_b && !b_in_a {
                        return Some(format!("{la} ↔ {ra} partly overlaps {lb} ↔ {rb}"));
                    }
                }
            }
        }
    }
    None
}
