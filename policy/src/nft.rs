//! `appliance policy export --format nft`: a compiled policy's filter stage as
//! an nftables ruleset, for a host (or a test namespace) that forwards between
//! an interface standing for red and one standing for black.
//!
//! The rules keep their order and first-match meaning: each ends in
//! `accept` or `drop`, the chain's policy is the filter's default, and a
//! rule naming connection states matches `ct state` as the Viaduct's
//! tracker names them. What the ruleset cannot say, its header says:
//! - the Viaduct opens a TCP flow only with a bare SYN; Linux conntrack does
//!   the same only with `net.netfilter.nf_conntrack_tcp_loose = 0`; both
//!   track TCP windows (`nf_conntrack_tcp_be_liberal = 0`, the default);
//! - nftables reassembles fragments before conntrack and the rules; the
//!   Viaduct does not, so its later fragments are `invalid` and match no
//!   rule about ports or flags (`unclassified_fragment`);
//! - the SPD (what is encrypted, bypassed or discarded) is not part of it.

use std::fmt::Write as _;

use policy_blob as blob;

fn tcp_flag_names(bits: u8) -> String {
    let names: Vec<&str> = [
        ("fin", blob::TcpFlags::FIN),
        ("syn", blob::TcpFlags::SYN),
        ("rst", blob::TcpFlags::RST),
        ("psh", blob::TcpFlags::PSH),
        ("ack", blob::TcpFlags::ACK),
        ("urg", blob::TcpFlags::URG),
        ("ecn", blob::TcpFlags::ECE),
        ("cwr", blob::TcpFlags::CWR),
    ]
    .iter()
    .filter(|(_, b)| bits & b != 0)
    .map(|(n, _)| *n)
    .collect();
    if names.is_empty() {
        "0x0".into()
    } else {
        names.join(" | ")
    }
}

fn range(r: &blob::PortRange) -> String {
    if r.start == r.end {
        r.start.to_string()
    } else {
        format!("{}-{}", r.start, r.end)
    }
}

/// Quotes a name for an nftables string (only printable ASCII but `"` and
/// `\`; anything else becomes `_`).
fn quoted(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("\"{clean}\"")
}

/// One filter rule as an nftables rule (without indentation).
pub fn rule(f: &blob::FilterRule, red_if: &str, black_if: &str) -> String {
    let s = &f.selector;
    let v4 = s.src.addr.is_ipv4();
    let fam = if v4 { "ip" } else { "ip6" };
    let mut parts = vec![
        format!(
            "iifname {}",
            quoted(match f.direction {
                blob::Direction::Outbound => red_if,
                blob::Direction::Inbound => black_if,
            })
        ),
        format!("meta nfproto {}", if v4 { "ipv4" } else { "ipv6" }),
    ];
    if s.src.len > 0 {
        parts.push(format!("{fam} saddr {}", s.src));
    }
    if s.dst.len > 0 {
        parts.push(format!("{fam} daddr {}", s.dst));
    }
    match s.protocol.0 {
        0 => {}
        p @ (1 | 58) => {
            let icmp = if p == 1 { "icmp" } else { "icmpv6" };
            parts.push(format!("meta l4proto {icmp}"));
            // ICMP "ports" are the type and the code (RFC 4301 §4.4.1.1).
            if !s.src_ports.is_any() {
                parts.push(format!("{icmp} type {}", range(&s.src_ports)));
            }
            if !s.dst_ports.is_any() {
                parts.push(format!("{icmp} code {}", range(&s.dst_ports)));
            }
        }
        p => {
            parts.push(format!("meta l4proto {p}"));
            if !s.src_ports.is_any() {
                parts.push(format!("th sport {}", range(&s.src_ports)));
            }
            if !s.dst_ports.is_any() {
                parts.push(format!("th dport {}", range(&s.dst_ports)));
            }
        }
    }
    if !f.tcp_flags.is_any() {
        parts.push(format!(
            "tcp flags & ({}) == {}",
            tcp_flag_names(f.tcp_flags.mask),
            tcp_flag_names(f.tcp_flags.value)
        ));
    }
    if !f.states.is_any() {
        parts.push(format!("ct state {{ {} }}", f.states.names().join(", ")));
    }
    if let Some(l) = &f.limit {
        let unit = match l.per_seconds {
            1 => "second",
            60 => "minute",
            _ => "hour",
        };
        parts.push(format!(
            "limit rate {}/{unit} burst {} packets",
            l.rate, l.burst
        ));
    }
    if f.log {
        // The Viaduct rate-limits its log lines; nftables logs each packet.
        parts.push(format!(
            "log prefix {}",
            quoted(&format!("viaduct {}: ", f.name))
        ));
    }
    parts.push("counter".into());
    parts.push(
        match f.action {
            blob::FilterAction::Accept => "accept",
            blob::FilterAction::Drop => "drop",
        }
        .into(),
    );
    parts.push(format!("comment {}", quoted(&f.name)));
    parts.join(" ")
}

/// The whole ruleset: `table inet viaduct` with one `forward` chain.
pub fn export(p: &blob::Policy, red_if: &str, black_if: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# The filter stage of policy {} {} (digest {}), from `appliance policy export --format nft`.",
        p.profile_name,
        p.profile_version,
        p.digest().to_hex()
    );
    let _ = writeln!(
        o,
        "# Red is {red_if:?}, black is {black_if:?}: packets forwarded between them."
    );
    if p.stateful() {
        let _ = writeln!(
            o,
            "# Connection tracking as the Viaduct's: only a bare SYN opens a TCP connection\n\
             # (sysctl net.netfilter.nf_conntrack_tcp_loose=0), TCP windows are tracked\n\
             # (net.netfilter.nf_conntrack_tcp_be_liberal=0); at most {} connections\n\
             # (net.netfilter.nf_conntrack_max).",
            p.filter_max_flows
        );
    }
    let _ = writeln!(
        o,
        "# nftables reassembles fragments; the Viaduct does not (later fragments are `invalid`)."
    );
    for f in p.filters.iter().filter(|f| f.timeouts.is_some()) {
        let _ = writeln!(
            o,
            "# Rule {}: its connections' timeouts ({}) are not expressed here (nftables: ct timeout objects).",
            quoted(&f.name),
            crate::timeouts_text(&f.timeouts.unwrap_or(blob::DEFAULT_FLOW_TIMEOUTS))
        );
    }
    let _ = writeln!(o, "table inet viaduct {{");
    let _ = writeln!(o, "\tchain filter {{");
    let _ = writeln!(
        o,
        "\t\ttype filter hook forward priority filter; policy {};",
        match p.default_filter {
            blob::FilterAction::Accept => "accept",
            blob::FilterAction::Drop => "drop",
        }
    );
    for f in &p.filters {
        let _ = writeln!(o, "\t\t{}", rule(f, red_if, black_if));
    }
    if p.filter_default_log {
        for iif in [red_if, black_if] {
            let _ = writeln!(
                o,
                "\t\tiifname {} log prefix \"viaduct default: \"",
                quoted(iif)
            );
        }
    }
    let _ = writeln!(o, "\t}}");
    let _ = writeln!(o, "}}");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_render_selectors_flags_states_and_actions() {
        let tcp443 = blob::Selector {
            src: blob::Prefix::new("10.1.0.0".parse().unwrap(), 24),
            protocol: blob::Protocol::TCP,
            dst_ports: blob::PortRange::single(443),
            ..blob::Selector::any_v4()
        };
        let p = blob::Policy::new("fw", "1.0")
            .with_tcp_filter(
                "tls \"out\"",
                blob::Direction::Outbound,
                tcp443,
                blob::TcpFlags {
                    mask: blob::TcpFlags::SYN | blob::TcpFlags::ACK,
                    value: blob::TcpFlags::SYN,
                },
                blob::FilterAction::Accept,
            )
            .with_states(blob::FilterStates(blob::FilterStates::NEW))
            .with_filter(
                "tracked",
                blob::Direction::Inbound,
                blob::Selector::any_v6(),
                blob::FilterAction::Accept,
            )
            .with_states(blob::FilterStates(
                blob::FilterStates::ESTABLISHED | blob::FilterStates::RELATED,
            ))
            .with_filter(
                "no-ping",
                blob::Direction::Inbound,
                blob::Selector {
                    protocol: blob::Protocol(1),
                    src_ports: blob::PortRange::single(8),
                    ..blob::Selector::any_v4()
                },
                blob::FilterAction::Drop,
            )
            .with_default_filter(blob::FilterAction::Drop);
        let text = export(&p, "red0", "black0");
        for want in [
            "type filter hook forward priority filter; policy drop;",
            "iifname \"red0\" meta nfproto ipv4 ip saddr 10.1.0.0/24 meta l4proto 6 th dport 443 tcp flags & (syn | ack) == syn ct state { new } counter accept comment \"tls _out_\"",
            "iifname \"black0\" meta nfproto ipv6 ct state { established, related } counter accept comment \"tracked\"",
            "iifname \"black0\" meta nfproto ipv4 meta l4proto icmp icmp type 8 counter drop comment \"no-ping\"",
            "nf_conntrack_tcp_loose=0",
            "nf_conntrack_tcp_be_liberal=0",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
    }
}
