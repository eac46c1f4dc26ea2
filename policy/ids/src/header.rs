//! The rule header: `action proto src_addr src_port direction dst_addr
//! dst_port`, seven fields separated by blanks (so a list holds no blanks,
//! as in Suricata).

use crate::addr::AddrSet;
use crate::expr::{eval, shorten, Domain};
use crate::port::PortSet;
use crate::{Refuse, Vars};

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Raise an alert.
    Alert,
    /// Drop the packet (and alert).
    Drop,
}

/// The protocol a rule inspects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP (v4 and v6).
    Icmp,
    /// Any IP packet.
    Ip,
}

impl Proto {
    /// Whether the protocol has ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Udp)
    }
}

/// A parsed header.
#[derive(Debug)]
pub(crate) struct Header {
    pub(crate) action: Action,
    pub(crate) proto: Proto,
    pub(crate) src: AddrSet,
    pub(crate) src_ports: PortSet,
    pub(crate) bidirectional: bool,
    pub(crate) dst: AddrSet,
    pub(crate) dst_ports: PortSet,
}

/// Parses the text before the options' `(`. Checks go left to right, so the
/// refusal names the first field that fails.
pub(crate) fn parse_header(text: &str, vars: &Vars) -> Result<Header, Refuse> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let Some(&action_word) = fields.first() else {
        return Err(Refuse::new(None, "no header before `(`".to_string()));
    };
    let action = match action_word.to_ascii_lowercase().as_str() {
        "alert" => Action::Alert,
        "drop" => Action::Drop,
        _ => {
            return Err(Refuse::kw(
                action_word,
                format!(
                    "action `{}` is not supported: alert and drop only",
                    shorten(action_word)
                ),
            ))
        }
    };
    let proto = match fields.get(1) {
        None => None,
        Some(p) => Some(match p.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "icmp" => Proto::Icmp,
            "ip" => Proto::Ip,
            _ => {
                return Err(Refuse::kw(
                    p,
                    format!(
                        "protocol `{}` is not supported: tcp, udp, icmp and ip only",
                        shorten(p)
                    ),
                ))
            }
        }),
    };
    let (Some(proto), [_, _, src, sport, dir, dst, dport]) = (proto, fields.as_slice()) else {
        return Err(Refuse::new(
            None,
            format!(
                "the header has {} fields, not 7: `action proto src_addr src_port -> dst_addr dst_port`",
                fields.len()
            ),
        ));
    };
    let src = field::<AddrSet>("source address", src, vars, AddrSet::is_empty)?;
    let src_ports = field::<PortSet>("source port", sport, vars, PortSet::is_empty)?;
    let bidirectional = match *dir {
        "->" => false,
        "<>" => true,
        _ => {
            return Err(Refuse::new(
                None,
                format!(
                    "direction `{}` is not supported: `->` or `<>`",
                    shorten(dir)
                ),
            ))
        }
    };
    let dst = field::<AddrSet>("destination address", dst, vars, AddrSet::is_empty)?;
    let dst_ports = field::<PortSet>("destination port", dport, vars, PortSet::is_empty)?;
    let any_ports = src_ports.is_any() && dst_ports.is_any();
    if !proto.has_ports() && !any_ports {
        return Err(Refuse::new(
            None,
            format!(
                "ports apply to tcp and udp only: a `{}` rule's ports must be `any`",
                fields[1].to_ascii_lowercase()
            ),
        ));
    }
    Ok(Header {
        action,
        proto,
        src,
        src_ports,
        bidirectional,
        dst,
        dst_ports,
    })
}

fn field<D: Domain>(
    what: &str,
    text: &str,
    vars: &Vars,
    is_empty: fn(&D) -> bool,
) -> Result<D, Refuse> {
    let set = eval::<D>(text, vars)
        .map_err(|e| Refuse::new(None, format!("{what} `{}`: {e}", shorten(text))))?;
    if is_empty(&set) {
        let noun = what.rsplit(' ').next().unwrap_or(what);
        return Err(Refuse::new(
            None,
            format!("{what} `{}` matches no {noun}", shorten(text)),
        ));
    }
    Ok(set)
}
