//! Sizes and durations as written in profiles (`512MiB`, `24h`).

use std::fmt;

use serde::Serialize;

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `512MiB`, `1GiB`, `64KiB`, `4096` (bytes). Decimal units (`MB`)
    /// are refused so that nobody is surprised by 10^6 vs 2^20.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size; write e.g. `512MiB`"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "MB" | "GB" | "TB" | "kB" | "K" | "M" | "G" => {
                return Err(format!("`{s}`: use binary units KiB, MiB, GiB, TiB"))
            }
            other => {
                return Err(format!(
                    "`{other}` is not a size unit; use KiB, MiB, GiB or TiB"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [
            (1u64 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (m, u) in units {
            if self.0 >= m && self.0 % m == 0 {
                return write!(f, "{}{u}", self.0 / m);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A duration in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Seconds(pub u64);

impl Seconds {
    /// Parses `90s`, `30m`, `1h`, `1d`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration; write e.g. `1h` or `30m`"))?;
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            "" => return Err(format!("`{s}` needs a unit: s, m, h or d")),
            other => {
                return Err(format!(
                    "`{other}` is not a duration unit; use s, m, h or d"
                ))
            }
        };
        n.checked_mul(mult)
            .map(Seconds)
            .ok_or_else(|| format!("`{s}` is too long"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("512MiB").unwrap().0, 512 << 20);
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert!(ByteSize::parse("1MB").unwrap_err().contains("binary"));
        assert!(ByteSize::parse("MiB").is_err());
        assert!(ByteSize::parse("99999999999999TiB").is_err());
        assert_eq!(ByteSize(3 << 30).to_string(), "3GiB");
    }

    #[test]
    fn durations() {
        assert_eq!(Seconds::parse("1h").unwrap().0, 3600);
        assert_eq!(Seconds::parse("30m").unwrap().0, 1800);
        assert!(Seconds::parse("30").is_err());
        assert!(Seconds::parse("1y").is_err());
    }
}
