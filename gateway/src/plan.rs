//! The runtime plan: what the host-side image builder tells the init to do.
//!
//! # Format (version 1)
//! Canonical, line-oriented ASCII text. Every line is `key SP value LF` (the last one is
//! the bare `end LF`); keys come in this fixed order, `module` repeats 0 to
//! [`MAX_MODULES`] times:
//!
//! ```text
//! appliance-plan 1
//! profile-name vpn-gateway
//! profile-version 1.4.0
//! security-version 3
//! policy-path /etc/appliance/policy.bin
//! policy-sha256 <64 lowercase hex digits>
//! module /lib/modules/6.1.0-56-amd64/kernel/drivers/net/virtio_net.ko
//! end
//! ```
//!
//! # Invariants
//! - Canonical: for every byte string `b`, `decode(b) == Ok(p)` implies `p.encode() == b`.
//!   One plan has exactly one encoding, so its SHA-256 (pinned on the measured kernel
//!   command line) identifies it.
//! - The decoder rejects: unknown format versions (before looking at anything else),
//!   unknown or out-of-order keys, duplicate single keys, bytes outside printable ASCII
//!   and LF, CR, tabs, double spaces, missing final LF, anything after `end`, plans
//!   larger than [`MAX_PLAN_LEN`].
//! - Extension: a new format version may add keys at fixed positions and repeated
//!   blocks (next: `compartment red|black|viaduct` blocks with `nic`, `address`,
//!   `service` lines, closed by `end-compartment`). An init never skips unknown
//!   fields: it rejects a version it does not know and stays closed.
//!
//! Nothing in this module panics, whatever the input.

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use std::fmt;

/// The format version this init reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Largest plan the decoder accepts, in bytes.
pub const MAX_PLAN_LEN: usize = 64 * 1024;
/// Largest number of kernel modules in a plan.
pub const MAX_MODULES: usize = 256;
/// Longest path in a plan, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Where the plan lives inside the initramfs.
pub const PLAN_PATH: &str = "/etc/appliance/plan";

/// A profile name: `[a-z0-9][a-z0-9._-]{0,63}`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProfileName(String);

impl ProfileName {
    /// Validates a profile name.
    pub fn new(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.bytes().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
            });
        if ok {
            Ok(ProfileName(s.to_owned()))
        } else {
            Err(Error::PlanValue {
                field: "profile-name",
                reason: format!("{s:?} must match [a-z0-9][a-z0-9._-]{{0,63}}"),
            })
        }
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A profile version: 1 to 64 characters from `[A-Za-z0-9.+~_-]`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProfileVersion(String);

impl ProfileVersion {
    /// Validates a profile version.
    pub fn new(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'~' | b'_' | b'-')
            });
        if ok {
            Ok(ProfileVersion(s.to_owned()))
        } else {
            Err(Error::PlanValue {
                field: "profile-version",
                reason: format!("{s:?} must be 1-64 characters from [A-Za-z0-9.+~_-]"),
            })
        }
    }
    /// The version.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProfileVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Anti-rollback security version of the image.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct SecurityVersion(pub u32);

/// An absolute, normalised path inside the initramfs: `/`-separated components from
/// `[A-Za-z0-9._+-]`, none empty, `.` or `..`; at most [`MAX_PATH_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct InitramfsPath(String);

impl InitramfsPath {
    /// Validates a path.
    pub fn new(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::PlanValue {
            field: "path",
            reason: format!("{s:?}: {reason}"),
        };
        if s.len() > MAX_PATH_LEN {
            return Err(bad("too long"));
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(bad("must be absolute"));
        };
        for comp in rest.split('/') {
            if comp.is_empty() || comp == "." || comp == ".." {
                return Err(bad("empty, `.` or `..` component"));
            }
            if !comp
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'+' | b'-'))
            {
                return Err(bad("characters outside [A-Za-z0-9._+-/]"));
            }
        }
        Ok(InitramfsPath(s.to_owned()))
    }
    /// The path as a string (always starts with `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The path below `root` (used to run the init against a test directory).
    pub fn under(&self, root: &std::path::Path) -> std::path::PathBuf {
        root.join(&self.0[1..])
    }
}

impl fmt::Display for InitramfsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A kernel module to load: an [`InitramfsPath`] ending in `.ko`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ModulePath(InitramfsPath);

impl ModulePath {
    /// Validates a module path.
    pub fn new(s: &str) -> Result<Self> {
        let p = InitramfsPath::new(s)?;
        if !s.ends_with(".ko") {
            return Err(Error::PlanValue {
                field: "module",
                reason: format!("{s:?} must be an uncompressed `.ko` file"),
            });
        }
        Ok(ModulePath(p))
    }
    /// The path.
    pub fn path(&self) -> &InitramfsPath {
        &self.0
    }
}

/// The runtime plan, version [`FORMAT_VERSION`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Plan {
    /// Profile the image was built from.
    pub profile_name: ProfileName,
    /// Version of that profile.
    pub profile_version: ProfileVersion,
    /// Anti-rollback security version.
    pub security_version: SecurityVersion,
    /// Where the compiled policy blob lives in the initramfs.
    pub policy_path: InitramfsPath,
    /// Its expected SHA-256.
    pub policy_sha256: Sha256Digest,
    /// Kernel modules to load, in order.
    pub modules: Vec<ModulePath>,
}

const K_MAGIC: &str = "appliance-plan";
const K_NAME: &str = "profile-name";
const K_VERSION: &str = "profile-version";
const K_SECVER: &str = "security-version";
const K_POLICY_PATH: &str = "policy-path";
const K_POLICY_SHA: &str = "policy-sha256";
const K_MODULE: &str = "module";
const K_END: &str = "end";

impl Plan {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = String::new();
        let mut line = |k: &str, v: &str| {
            s.push_str(k);
            s.push(' ');
            s.push_str(v);
            s.push('\n');
        };
        line(K_MAGIC, &FORMAT_VERSION.to_string());
        line(K_NAME, self.profile_name.as_str());
        line(K_VERSION, self.profile_version.as_str());
        line(K_SECVER, &self.security_version.0.to_string());
        line(K_POLICY_PATH, self.policy_path.as_str());
        line(K_POLICY_SHA, &self.policy_sha256.to_hex());
        for m in &self.modules {
            line(K_MODULE, m.path().as_str());
        }
        s.push_str(K_END);
        s.push('\n');
        s.into_bytes()
    }

    /// SHA-256 of the canonical encoding (what `appliance.plan=` pins).
    pub fn digest(&self) -> Sha256Digest {
        Sha256Digest::of(&self.encode())
    }

    /// Decodes and validates a plan. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Plan> {
        if bytes.len() > MAX_PLAN_LEN {
            return Err(syntax(
                0,
                format!("plan is {} bytes, limit is {MAX_PLAN_LEN}", bytes.len()),
            ));
        }
        if let Some(pos) = bytes
            .iter()
            .position(|&c| c != b'\n' && !(0x20..=0x7e).contains(&c))
        {
            let line = 1 + bytes[..pos].iter().filter(|&&c| c == b'\n').count();
            return Err(syntax(
                line,
                format!("byte {:#04x} is not printable ASCII", bytes[pos]),
            ));
        }
        // All bytes are ASCII, so this cannot fail; map the error anyway instead of unwrapping.
        let text = std::str::from_utf8(bytes).map_err(|_| syntax(0, "not ASCII".into()))?;
        let Some(body) = text.strip_suffix('\n') else {
            return Err(syntax(0, "plan must end with a newline".into()));
        };
        let mut lines = Lines {
            inner: body.split('\n').enumerate(),
            last: 0,
        };

        // The version comes first and is checked before anything else.
        let v = lines.value(K_MAGIC)?;
        if v != FORMAT_VERSION.to_string() {
            return Err(Error::PlanVersion {
                found: v.to_owned(),
                supported: FORMAT_VERSION,
            });
        }
        let profile_name = lines.parse(K_NAME, ProfileName::new)?;
        let profile_version = lines.parse(K_VERSION, ProfileVersion::new)?;
        let security_version = lines.parse(K_SECVER, parse_u32)?;
        let policy_path = lines.parse(K_POLICY_PATH, InitramfsPath::new)?;
        let policy_sha256 = lines.parse(K_POLICY_SHA, |s| {
            Sha256Digest::from_hex(s).ok_or_else(|| Error::PlanValue {
                field: "policy-sha256",
                reason: "must be 64 lowercase hex digits".into(),
            })
        })?;
        let mut modules = Vec::new();
        loop {
            let (n, line) = lines.next_line()?;
            if line == K_END {
                break;
            }
            let (k, v) = split_kv(n, line)?;
            if k != K_MODULE {
                return Err(syntax(
                    n,
                    format!("expected `{K_MODULE}` or `{K_END}`, found key `{k}`"),
                ));
            }
            if modules.len() == MAX_MODULES {
                return Err(syntax(n, format!("more than {MAX_MODULES} modules")));
            }
            modules.push(ModulePath::new(v).map_err(|e| syntax(n, e.to_string()))?);
        }
        if let Some((n, _)) = lines.inner.next() {
            return Err(syntax(n + 1, "trailing data after `end`".into()));
        }
        Ok(Plan {
            profile_name,
            profile_version,
            security_version: SecurityVersion(security_version),
            policy_path,
            policy_sha256,
            modules,
        })
    }
}

fn syntax(line: usize, reason: String) -> Error {
    Error::PlanSyntax { line, reason }
}

fn parse_u32(s: &str) -> Result<u32> {
    let canonical =
        !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    match s.parse::<u32>() {
        Ok(v) if canonical => Ok(v),
        _ => Err(Error::PlanValue {
            field: "security-version",
            reason: format!("{s:?} must be a decimal u32 without leading zeros"),
        }),
    }
}

fn split_kv(n: usize, line: &str) -> Result<(&str, &str)> {
    let Some((k, v)) = line.split_once(' ') else {
        return Err(syntax(n, format!("expected `key value`, found {line:?}")));
    };
    if k.is_empty() || v.is_empty() || v.contains(' ') {
        return Err(syntax(
            n,
            format!("expected exactly one space between key and value in {line:?}"),
        ));
    }
    Ok((k, v))
}

struct Lines<'a> {
    inner: std::iter::Enumerate<std::str::Split<'a, char>>,
    last: usize,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Result<(usize, &'a str)> {
        match self.inner.next() {
            Some((i, l)) => {
                self.last = i + 1;
                Ok((i + 1, l))
            }
            None => Err(syntax(
                self.last + 1,
                "unexpected end of plan (missing `end`?)".into(),
            )),
        }
    }

    fn value(&mut self, key: &str) -> Result<&'a str> {
        let (n, line) = self.next_line()?;
        let (k, v) = split_kv(n, line)?;
        if k != key {
            return Err(syntax(n, format!("expected key `{key}`, found `{k}`")));
        }
        Ok(v)
    }

    fn parse<T>(&mut self, key: &str, f: impl FnOnce(&str) -> Result<T>) -> Result<T> {
        let v = self.value(key)?;
        let n = self.last;
        f(v).map_err(|e| syntax(n, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Plan {
        Plan {
            profile_name: ProfileName::new("vpn-gateway").unwrap(),
            profile_version: ProfileVersion::new("1.4.0").unwrap(),
            security_version: SecurityVersion(3),
            policy_path: InitramfsPath::new("/etc/appliance/policy.bin").unwrap(),
            policy_sha256: Sha256Digest::of(b"policy"),
            modules: vec![
                ModulePath::new("/lib/modules/failover.ko").unwrap(),
                ModulePath::new("/lib/modules/virtio_net.ko").unwrap(),
            ],
        }
    }

    #[test]
    fn encodes_documented_layout() {
        let text = String::from_utf8(sample().encode()).unwrap();
        let expected = format!(
            "appliance-plan 1\nprofile-name vpn-gateway\nprofile-version 1.4.0\nsecurity-version 3\n\
             policy-path /etc/appliance/policy.bin\npolicy-sha256 {}\n\
             module /lib/modules/failover.ko\nmodule /lib/modules/virtio_net.ko\nend\n",
            Sha256Digest::of(b"policy")
        );
        assert_eq!(text, expected);
        assert_eq!(Plan::decode(text.as_bytes()).unwrap(), sample());
    }

    #[test]
    fn rejects_unknown_version_before_anything_else() {
        let err = Plan::decode(b"appliance-plan 2\nwhatever\n").unwrap_err();
        assert!(
            matches!(err, Error::PlanVersion { ref found, supported: 1 } if found == "2"),
            "{err}"
        );
    }

    fn mutate(f: impl FnOnce(String) -> String) -> Result<Plan> {
        Plan::decode(f(String::from_utf8(sample().encode()).unwrap()).as_bytes())
    }

    #[test]
    fn rejects_trailing_garbage_and_structural_damage() {
        assert!(mutate(|s| s + "x").is_err());
        assert!(mutate(|s| s + "\n").is_err());
        assert!(mutate(|s| s + "end\n").is_err());
        assert!(mutate(|s| s.trim_end().to_owned()).is_err());
        assert!(mutate(|s| s.replace('\n', "\r\n")).is_err());
        assert!(mutate(|s| s.replace("profile-name ", "profile-name  ")).is_err());
        assert!(mutate(|s| s.replace("security-version 3", "security-version 03")).is_err());
        assert!(
            mutate(|s| s.replace("security-version 3", "security-version 4294967296")).is_err()
        );
        assert!(mutate(|s| s.replace("/lib/modules/failover.ko", "/lib/../failover.ko")).is_err());
        assert!(mutate(|s| s.replace("failover.ko", "failover.ko.xz")).is_err());
        assert!(mutate(|s| s.replace("policy-path /etc", "policy-path etc")).is_err());
        assert!(mutate(|s| s.replace("module /lib/modules/failover.ko\n", "")).is_ok());
        assert!(mutate(|s| s.replace("profile-version 1.4.0\n", "")).is_err());
        assert!(mutate(|s| s.replace("end\n", "")).is_err());
        assert!(mutate(|s| s.replace("end\n", "nic eth0\nend\n")).is_err());
    }

    #[test]
    fn rejects_too_many_modules_and_oversized_plans() {
        let mut p = sample();
        p.modules = (0..=MAX_MODULES)
            .map(|i| ModulePath::new(&format!("/m/{i}.ko")).unwrap())
            .collect();
        assert!(Plan::decode(&p.encode()).is_err());
        p.modules.pop();
        assert_eq!(Plan::decode(&p.encode()).unwrap(), p);
        assert!(Plan::decode(&vec![b'a'; MAX_PLAN_LEN + 1]).is_err());
    }

    #[test]
    fn value_validation() {
        assert!(ProfileName::new("Vpn").is_err());
        assert!(ProfileName::new("-vpn").is_err());
        assert!(ProfileName::new(&"a".repeat(65)).is_err());
        assert!(ProfileVersion::new("1 2").is_err());
        assert!(InitramfsPath::new("/a//b").is_err());
        assert!(InitramfsPath::new("/a/").is_err());
        assert!(InitramfsPath::new("/").is_err());
        assert!(InitramfsPath::new("/a/./b").is_err());
        assert!(InitramfsPath::new(&format!("/{}", "a".repeat(MAX_PATH_LEN))).is_err());
        assert_eq!(
            InitramfsPath::new("/etc/x")
                .unwrap()
                .under(std::path::Path::new("/tmp/r")),
            std::path::PathBuf::from("/tmp/r/etc/x")
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn arb_path() -> impl Strategy<Value = String> {
        prop::collection::vec("[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,15}", 1..5)
            .prop_map(|c| format!("/{}", c.join("/")))
            .prop_filter("no dot components", |p| {
                !p.split('/').any(|c| c == "." || c == "..")
            })
    }

    prop_compose! {
        fn arb_plan()(
            name in "[a-z0-9][a-z0-9._-]{0,63}",
            version in "[A-Za-z0-9.+~_-]{1,64}",
            secver in any::<u32>(),
            policy in arb_path(),
            sha in any::<[u8; 32]>(),
            modules in prop::collection::vec(arb_path(), 0..8),
        ) -> Plan {
            Plan {
                profile_name: ProfileName::new(&name).unwrap(),
                profile_version: ProfileVersion::new(&version).unwrap(),
                security_version: SecurityVersion(secver),
                policy_path: InitramfsPath::new(&policy).unwrap(),
                policy_sha256: Sha256Digest(sha),
                modules: modules.iter().map(|m| ModulePath::new(&format!("{m}.ko")).unwrap()).collect(),
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(p in arb_plan()) {
            prop_assert_eq!(Plan::decode(&p.encode()).unwrap(), p);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_accepted_input_is_canonical(b in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(p) = Plan::decode(&b) {
                prop_assert_eq!(p.encode(), b);
            }
        }

        #[test]
        fn mutated_plans_never_panic_and_stay_canonical(p in arb_plan(), pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
            let mut b = p.encode();
            let i = pos.index(b.len());
            if cut { b.truncate(i); } else { b[i] = byte; }
            if let Ok(q) = Plan::decode(&b) {
                prop_assert_eq!(q.encode(), b);
            }
        }
    }
}
