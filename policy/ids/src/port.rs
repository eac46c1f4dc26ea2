//! Port sets: what a rule's source or destination port field matches.
//!
//! Atoms are `any`, `N`, `N:M`, `N:` (N to 65535) and `:M` (0 to M), each
//! number within 0..=65535; a range with N > M is refused.

use crate::expr::{shorten, Domain};
use crate::ranges::Ranges;

/// A normalised set of ports (0..=65535).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortSet(Ranges<u16>);

impl PortSet {
    /// Every port (`any`).
    pub fn any() -> Self {
        PortSet(Ranges::full())
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.0.contains(port)
    }

    /// Whether the set holds every port (`any`).
    pub fn is_any(&self) -> bool {
        self.0.is_full()
    }

    /// Whether the set holds no port.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ports, as sorted, disjoint inclusive ranges.
    pub fn ranges(&self) -> &[(u16, u16)] {
        self.0.ranges()
    }
}

impl Domain for PortSet {
    fn universe() -> Self {
        Self::any()
    }

    fn nothing() -> Self {
        PortSet(Ranges::empty())
    }

    fn union(&self, other: &Self) -> Self {
        PortSet(self.0.union(&other.0))
    }

    fn subtract(&self, other: &Self) -> Self {
        PortSet(self.0.subtract(&other.0))
    }

    fn atom(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("any") {
            return Ok(Self::any());
        }
        let Some((lo, hi)) = text.split_once(':') else {
            let p = port(text)?;
            return Ok(PortSet(Ranges::span(p, p)));
        };
        if lo.is_empty() && hi.is_empty() {
            return Err("`:` is not a port range".to_string());
        }
        let lo = if lo.is_empty() { 0 } else { port(lo)? };
        let hi = if hi.is_empty() { u16::MAX } else { port(hi)? };
        if lo > hi {
            return Err(format!("port range `{text}` is empty: {lo} > {hi}"));
        }
        Ok(PortSet(Ranges::span(lo, hi)))
    }
}

fn port(text: &str) -> Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{}` is not a port", shorten(text)));
    }
    text.parse::<u16>()
        .map_err(|_| format!("port `{}` is out of range (0 to 65535)", shorten(text)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::eval;
    use crate::Vars;

    fn set(text: &str) -> PortSet {
        eval::<PortSet>(text, &Vars::suricata_defaults()).unwrap()
    }

    fn err(text: &str) -> String {
        eval::<PortSet>(text, &Vars::suricata_defaults()).unwrap_err()
    }

    #[test]
    fn single_ports_and_ranges() {
        assert!(set("any").is_any());
        let p = set("80");
        assert!(p.contains(80) && !p.contains(81) && !p.contains(79));
        assert_eq!(set("1024:").ranges(), &[(1024, 65535)]);
        assert_eq!(set(":1023").ranges(), &[(0, 1023)]);
        assert_eq!(set("10:20").ranges(), &[(10, 20)]);
        assert_eq!(set("0").ranges(), &[(0, 0)]);
        assert_eq!(set("65535").ranges(), &[(65535, 65535)]);
    }

    #[test]
    fn lists_negations_and_variables() {
        let s = set("[1:100,!50:60,443]");
        assert!(s.contains(1) && s.contains(49) && !s.contains(50) && !s.contains(60));
        assert!(s.contains(61) && s.contains(443) && !s.contains(444));
        let n = set("!80");
        assert!(!n.contains(80) && n.contains(0) && n.contains(65535));
        assert_eq!(set("$SHELLCODE_PORTS"), n);
        assert_eq!(
            set("$FILE_DATA_PORTS").ranges(),
            &[(80, 80), (110, 110), (143, 143)]
        );
        assert_eq!(
            set("![$HTTP_PORTS,443]").ranges(),
            &[(0, 79), (81, 442), (444, 65535)]
        );
    }

    #[test]
    fn malformed_ports() {
        assert_eq!(err("70000"), "port `70000` is out of range (0 to 65535)");
        assert_eq!(err("20:10"), "port range `20:10` is empty: 20 > 10");
        assert_eq!(err("http"), "`http` is not a port");
        assert_eq!(err("-1"), "`-1` is not a port");
        assert_eq!(err(":"), "`:` is not a port range");
        assert_eq!(err("$NOPE"), "unknown variable `$NOPE`");
        assert!(set("!any").is_empty());
    }
}
