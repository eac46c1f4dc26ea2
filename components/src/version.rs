//! Debian package names, versions and their ordering.
//!
//! [`Version`] implements the comparison of `dpkg --compare-versions`
//! (deb-version(7)): epoch numerically, then upstream version and Debian
//! revision with `verrevcmp` (`~` sorts before everything, even the end of
//! the string; letters before non-letters; digit runs compared numerically,
//! without overflow).
//!
//! Invariants: a [`Version`] is non-empty, has no whitespace, and its epoch
//! (if any) is all digits; a [`PackageName`] follows Debian policy §5.6.1
//! (`[a-z0-9][a-z0-9+.-]+`). Nothing here panics.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

/// A Debian binary package name (policy §5.6.1).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PackageName(String);

impl PackageName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, Error> {
        let b = name.as_bytes();
        let ok = b.len() >= 2
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+.-".contains(c));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(Error::InvalidName {
                what: "package name",
                value: name.to_owned(),
                rule: "at least two characters of a-z, 0-9, '+', '-', '.', starting with a letter or digit",
            })
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PackageName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::new(&s)
    }
}

impl From<PackageName> for String {
    fn from(n: PackageName) -> String {
        n.0
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Debian version `[epoch:]upstream[-revision]`.
///
/// `Ord` is dpkg's ordering, with ties between textually different but
/// dpkg-equal versions (`1.0` vs `1.00`) broken by the text, so that `Ord`
/// agrees with `Eq`. Use [`Version::dpkg_cmp`] for the pure dpkg relation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version(String);

impl Version {
    /// Validates `v`.
    pub fn new(v: &str) -> Result<Self, Error> {
        let bad = |rule| Error::InvalidName {
            what: "Debian version",
            value: v.to_owned(),
            rule,
        };
        if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("must be non-empty and contain no whitespace"));
        }
        if let Some((epoch, rest)) = v.split_once(':') {
            if epoch.is_empty() || !epoch.bytes().all(|c| c.is_ascii_digit()) || rest.is_empty() {
                return Err(bad(
                    "the epoch before ':' must be digits, followed by a version",
                ));
            }
        }
        Ok(Self(v.to_owned()))
    }

    /// The version as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parts(&self) -> (&str, &str, &str) {
        let (epoch, rest) = match self.0.split_once(':') {
            Some((e, r)) => (e, r),
            None => ("0", self.0.as_str()),
        };
        match rest.rsplit_once('-') {
            Some((up, rev)) => (epoch, up, rev),
            None => (epoch, rest, ""),
        }
    }

    /// dpkg's comparison (`dpkg --compare-versions a lt b` ⇔ `Less`).
    pub fn dpkg_cmp(&self, other: &Version) -> Ordering {
        let (ea, ua, ra) = self.parts();
        let (eb, ub, rb) = other.parts();
        cmp_digits(ea, eb)
            .then_with(|| verrevcmp(ua, ub))
            .then_with(|| verrevcmp(ra, rb))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dpkg_cmp(other).then_with(|| self.0.cmp(&other.0))
    }
}

impl TryFrom<String> for Version {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::new(&s)
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Compares two runs of ASCII digits numerically, whatever their length.
fn cmp_digits(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// dpkg's character weight in the non-digit part.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() || j < b.len() {
        // Non-digit prefix.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ac = order(a.get(i).copied());
            let bc = order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        let si = i;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        let sj = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        // Both slices are ASCII digits, hence valid UTF-8.
        let da = std::str::from_utf8(&a[si..i]).unwrap_or("");
        let db = std::str::from_utf8(&b[sj..j]).unwrap_or("");
        let c = cmp_digits(da, db);
        if c != Ordering::Equal {
            return c;
        }
    }
    Ordering::Equal
}

/// A version relation in a dependency (`<<`, `<=`, `=`, `>=`, `>>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// `<<`
    Less,
    /// `<=` (and the obsolete `<`)
    LessEq,
    /// `=`
    Eq,
    /// `>=` (and the obsolete `>`)
    GreaterEq,
    /// `>>`
    Greater,
}

impl Relation {
    /// Parses an operator token.
    pub fn parse(op: &str) -> Option<Self> {
        Some(match op {
            "<<" => Self::Less,
            "<=" | "<" => Self::LessEq,
            "=" => Self::Eq,
            ">=" | ">" => Self::GreaterEq,
            ">>" => Self::Greater,
            _ => return None,
        })
    }

    /// Whether `have REL want` holds.
    pub fn holds(self, have: &Version, want: &Version) -> bool {
        let c = have.dpkg_cmp(want);
        match self {
            Self::Less => c == Ordering::Less,
            Self::LessEq => c != Ordering::Greater,
            Self::Eq => c == Ordering::Equal,
            Self::GreaterEq => c != Ordering::Less,
            Self::Greater => c == Ordering::Greater,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::new(s).unwrap()
    }

    #[test]
    fn dpkg_known_pairs() {
        // (a, b, expected a cmp b), checked against `dpkg --compare-versions`.
        let cases = [
            ("1.0", "1.0", Ordering::Equal),
            ("1.0", "1.00", Ordering::Equal),
            ("1.0~rc1", "1.0", Ordering::Less),
            ("1.0~~", "1.0~", Ordering::Less),
            ("1.0~", "1.0", Ordering::Less),
            ("1.0", "1.0+b1", Ordering::Less),
            ("1.0-1", "1.0-1+deb12u1", Ordering::Less),
            ("1:0.1", "2.0", Ordering::Greater),
            ("0:2.0", "2.0", Ordering::Equal),
            ("2.0-1", "2.0-10", Ordering::Less),
            ("2.9", "2.10", Ordering::Less),
            ("1.2a", "1.2+", Ordering::Less),
            ("a", "b", Ordering::Less),
            ("1.0-a", "1.0-1", Ordering::Greater),
            ("6.1.0-56", "6.1.0-9", Ordering::Greater),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Ordering::Less),
            ("1:1.35.0-4+deb12u1+b1", "1:1.35.0-4", Ordering::Greater),
            (
                "99999999999999999999999",
                "99999999999999999999998",
                Ordering::Greater,
            ),
            ("7.88.1-10+deb12u5", "7.88.1-10+deb12u12", Ordering::Less),
            ("1.2.3", "1.2.3-0", Ordering::Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(v(a).dpkg_cmp(&v(b)), want, "{a} vs {b}");
            assert_eq!(v(b).dpkg_cmp(&v(a)), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn ord_consistent_with_eq() {
        assert_ne!(v("1.0"), v("1.00"));
        assert_ne!(v("1.0").cmp(&v("1.00")), Ordering::Equal);
    }

    #[test]
    fn relations() {
        assert!(Relation::Less.holds(&v("1"), &v("2")));
        assert!(!Relation::Less.holds(&v("2"), &v("2")));
        assert!(Relation::GreaterEq.holds(&v("2"), &v("2")));
        assert!(Relation::Eq.holds(&v("0:2"), &v("2")));
        assert!(Relation::Greater.holds(&v("2.1"), &v("2")));
        assert!(Relation::LessEq.holds(&v("2~"), &v("2")));
    }

    #[test]
    fn invalid() {
        assert!(Version::new("").is_err());
        assert!(Version::new("1 2").is_err());
        assert!(Version::new("a:1").is_err());
        assert!(Version::new("1:").is_err());
        assert!(PackageName::new("A").is_err());
        assert!(PackageName::new("libc6").is_ok());
        assert!(PackageName::new("g++").is_ok());
    }

    proptest::proptest! {
        #[test]
        fn cmp_never_panics_and_is_antisymmetric(a in "[0-9a-z.+~:-]{1,12}", b in "[0-9a-z.+~:-]{1,12}") {
            if let (Ok(a), Ok(b)) = (Version::new(&a), Version::new(&b)) {
                proptest::prop_assert_eq!(a.dpkg_cmp(&b), b.dpkg_cmp(&a).reverse());
                proptest::prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            }
        }
    }
}
