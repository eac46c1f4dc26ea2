//! Limits of one `[[viaduct.ipsec.peers]]` entry: how many tunnels, and
//! its TFC padding sizes.

use crate::raw::*;

use super::checker::V;

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
