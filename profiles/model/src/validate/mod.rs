//! Validation: raw model → [`Profile`]. Every rule reports a [`Diagnostic`]
//! at the span of the value at fault, with the dotted field path. All
//! problems are collected (not just the first); a rule that depends on a
//! broken value is skipped so that one mistake gives one error.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;

/// Tunnels one peer may have: its IKE SA keeps one CHILD SA per tunnel, and
/// the IKE engine allows at most this many (`ike::sa::MAX_TUNNELS`).
pub const MAX_TUNNELS_PER_PEER: usize = 16;

use crate::algo;
use crate::diag::{Diagnostic, Diagnostics};
use crate::model::*;
use crate::net::{parse_ip, parse_protocol, IfAddr, PortRange, Prefix, TrafficSelector};
use crate::raw::*;
use crate::source::SourceMap;
use crate::units::{ByteSize, Seconds};

/// Smallest ESP accepted, and the figure the profile reference prints.
///
/// FAT32 needs at least 65525 clusters (with fewer, a volume is FAT16 by
/// definition). The ESP writer (`images::fat`) uses 512-byte clusters below
/// 260 MiB, 32 reserved sectors and two FATs of 4-byte entries, so the
/// smallest FAT32 volume is 65525 clusters + 2 × 512 FAT sectors + 32
/// reserved sectors = 34 089 472 bytes (32.5 MiB). The ESP is a whole number
/// of MiB, so the minimum is that rounded up: 33 MiB.
pub const MIN_ESP: ByteSize = ByteSize(min_esp_bytes());

const fn min_esp_bytes() -> u64 {
    const SECTOR: u64 = 512;
    const MIN_CLUSTERS: u64 = 65525;
    const RESERVED_SECTORS: u64 = 32;
    const FATS: u64 = 2;
    const MIB: u64 = 1 << 20;
    // Each FAT holds a 4-byte entry per cluster plus the two reserved entries.
    let fat_sectors = ((MIN_CLUSTERS + 2) * 4).div_ceil(SECTOR);
    let volume = (RESERVED_SECTORS + FATS * fat_sectors + MIN_CLUSTERS) * SECTOR;
    volume.div_ceil(MIB) * MIB
}
/// Largest TFC padding size: the MTU of red's Viaduct port (the network
/// script sets 1400 so that ESP with its outer headers fits the internet
/// side's 1500 bytes). A larger size would pad packets past that.
pub const MAX_TFC_PADDING: u64 = 1400;
/// Smallest TFC padding size: the smallest IPv4 header.
pub const MIN_TFC_PADDING: u64 = 20;
/// Default anti-replay window.
pub const DEFAULT_REPLAY_WINDOW: u32 = 4096;

struct V<'a> {
    sources: &'a SourceMap,
    diags: Vec<Diagnostic>,
    lab: bool,
}

impl V<'_> {
    fn err(&mut self, span: &Range<usize>, field: impl Into<String>, msg: impl Into<String>) {
        self.diags
            .push(Diagnostic::spanned(self.sources, span, field, msg));
    }

    /// An error that involves a second place, shown as a note with its own
    /// snippet (it may be in another file of the `extends` chain).
    fn err_note(
        &mut self,
        span: &Range<usize>,
        field: impl Into<String>,
        msg: impl Into<String>,
        other: &Range<usize>,
        note: impl Into<String>,
    ) {
        self.diags.push(
            Diagnostic::spanned(self.sources, span, field, msg).with_note(
                self.sources,
                other,
                note,
            ),
        );
    }

    /// Was `a` written after `b`? Later in the same file, or in a file that
    /// extends `b`'s (the profile's own file comes first in the source map).
    /// Of two conflicting values, the later one is reported, the earlier one
    /// is the note.
    fn later(&self, a: &Range<usize>, b: &Range<usize>) -> bool {
        let base = |s: &Range<usize>| self.sources.file_at(s.start).map(|f| f.base);
        match (base(a), base(b)) {
            (Some(fa), Some(fb)) if fa != fb => fa < fb,
            _ => a.start > b.start,
        }
    }

    /// A required value; reports it missing at the parent table's span.
    fn req<'b, T>(
        &mut self,
        v: &'b Option<Sp<T>>,
        parent: &Range<usize>,
        table: &str,
        key: &str,
    ) -> Option<&'b Sp<T>> {
        if v.is_none() {
            let field = if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            };
            let place = if table.is_empty() {
                "the profile".to_string()
            } else {
                format!("[{table}]")
            };
            self.err(parent, field, format!("missing `{key}` in {place}"));
        }
        v.as_ref()
    }

    fn name(&mut self, v: &Sp<String>, field: &str) -> Option<String> {
        let s = v.value.as_str();
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Some(s.to_string())
        } else {
            self.err(
                &v.span,
                field,
                format!("`{s}` is not a valid name: use 1-63 lowercase letters, digits and `-`"),
            );
            None
        }
    }

    fn parse<T>(
        &mut self,
        v: &Sp<String>,
        field: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match f(&v.value) {
            Ok(t) => Some(t),
            Err(msg) => {
                self.err(&v.span, field, msg);
                None
            }
        }
    }

    fn one_of<T: Copy>(&mut self, v: &Sp<String>, field: &str, options: &[(&str, T)]) -> Option<T> {
        if let Some((_, t)) = options.iter().find(|(n, _)| *n == v.value) {
            return Some(*t);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        self.err(
            &v.span,
            field,
            format!("`{}` is not one of: {}", v.value, names.join(", ")),
        );
        None
    }

    /// Reports duplicate names; `names` holds (name, span, field), in
    /// list order. The second use is reported, with a note at the first.
    fn unique(&mut self, what: &str, names: &[(String, Range<usize>, String)]) {
        let mut seen: HashMap<&str, &Range<usize>> = HashMap::new();
        for (n, span, field) in names {
            if let Some(first) = seen.get(n.as_str()) {
                let first = (*first).clone();
                let msg = if what == "SPI" {
                    format!("SPI {n} is used twice; each manually keyed SA needs its own SPI")
                } else {
                    format!("{what} name `{n}` is used twice; names must be unique")
                };
                self.err_note(
                    span,
                    field.clone(),
                    msg,
                    &first,
                    format!("`{n}` is first used here"),
                );
            } else {
                seen.insert(n.as_str(), span);
            }
        }
    }
}

fn list<T>(v: &Option<Sp<Vec<Sp<T>>>>) -> &[Sp<T>] {
    v.as_ref().map(|l| l.value.as_slice()).unwrap_or(&[])
}

/// Outcome of checking one profile file.
#[derive(Debug)]
pub enum Checked {
    /// A complete, valid profile.
    Profile(Box<Profile>),
    /// An abstract base: keys and types are valid; completeness not checked.
    Abstract,
}

/// Validates a loaded profile.
pub fn validate(
    path: &Path,
    sources: &SourceMap,
    raw: &RawProfile,
) -> Result<Checked, Diagnostics> {
    if raw.is_abstract.as_ref().is_some_and(|a| a.value) {
        return Ok(Checked::Abstract);
    }
    let mut v = V {
        sources,
        diags: Vec::new(),
        lab: false,
    };
    let whole = 0..0;
    let profile = build(&mut v, path, raw, &whole);
    let mut diags = Diagnostics(v.diags);
    diags.sort();
    match profile {
        Some(p) if diags.0.is_empty() => Ok(Checked::Profile(Box::new(p))),
        _ if diags.0.is_empty() => {
            // Every `None` above comes with a diagnostic; keep the invariant
            // visible instead of returning an empty error list.
            Err(Diagnostics(vec![Diagnostic::spanned(
                sources,
                &whole,
                "(profile)",
                "the profile is incomplete",
            )]))
        }
        _ => Err(diags),
    }
}

fn build(v: &mut V<'_>, path: &Path, raw: &RawProfile, whole: &Range<usize>) -> Option<Profile> {
    let appliance = v
        .req(&raw.appliance, whole, "", "appliance")
        .map(|a| appliance(v, a));
    let hardware = v.req(&raw.hardware, whole, "", "hardware");
    let kernel = v
        .req(&raw.kernel, whole, "", "kernel")
        .map(|k| kernel(v, k));
    let personalities = v.req(&raw.personalities, whole, "", "personalities");
    let viaduct_raw = v.req(&raw.viaduct, whole, "", "viaduct");
    let image = v.req(&raw.image, whole, "", "image").map(|i| image(v, i));
    let signing = raw.signing.as_ref().map(|s| signing(path, s));

    let nics = hardware.map(|h| nics(v, h));
    let (red, black) = match personalities {
        Some(p) => personalities_of(v, p, nics.as_ref()),
        None => (None, None),
    };
    let mut nic_list = Vec::new();
    if let (Some(hw), Some(nics)) = (hardware, &nics) {
        nic_list = nic_ownership(v, hw, nics, red.as_ref(), black.as_ref(), personalities);
    }
    if let (Some(hw), Some(nics), Some(k)) = (hardware, &nics, &raw.kernel) {
        nic_drivers(v, hw, nics, k, personalities);
    }
    if let (Some(r), Some(b)) = (&red, &black) {
        disjoint_subnets(v, r, b, personalities);
    }
    let via =
        viaduct_raw.and_then(|vr| viaduct(v, vr, red.as_ref(), black.as_ref(), personalities));
    let links = links(v, raw, nics.as_ref(), red.as_ref(), black.as_ref());

    let target = hardware
        .and_then(|h| h.target.as_ref())
        .map(|t| {
            if t.value != "x86_64-uefi" {
                v.err(
                    &t.span,
                    "hardware.target",
                    format!("unsupported target `{}`; supported: x86_64-uefi", t.value),
                );
            }
            t.value.clone()
        })
        .unwrap_or_else(|| "x86_64-uefi".into());

    let mut files: Vec<_> = sources_paths(v.sources);
    files.dedup();
    Some(Profile {
        path: path.to_path_buf(),
        files,
        appliance: appliance??,
        hardware: Hardware {
            target,
            nics: nic_list,
        },
        kernel: kernel??,
        red: red?.1,
        black: black?.1,
        viaduct: via?,
        links: links?,
        image: image??,
        signing,
    })
}

fn sources_paths(s: &SourceMap) -> Vec<std::path::PathBuf> {
    s.files().iter().map(|f| f.path.clone()).collect()
}

fn appliance(v: &mut V<'_>, a: &Sp<RawAppliance>) -> Option<Appliance> {
    let t = "appliance";
    let name = v
        .req(&a.name, &a.span, t, "name")
        .and_then(|n| v.name(n, "appliance.name"));
    let version = v.req(&a.version, &a.span, t, "version").and_then(|ver| {
        let ok = !ver.value.is_empty()
            && ver.value.len() <= 64
            && ver
                .value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+~-".contains(&b))
            && ver.value.as_bytes()[0].is_ascii_digit();
        if ok {
            Some(ver.value.clone())
        } else {
            v.err(
                &ver.span,
                "appliance.version",
                format!(
                    "`{}` is not a version: start with a digit, use letters, digits and . _ + ~ -",
                    ver.value
                ),
            );
            None
        }
    });
    let security_version = v
        .req(&a.security_version, &a.span, t, "security_version")
        .map(|s| s.value);
    let lab = a.lab.as_ref().is_some_and(|l| l.value);
    v.lab = lab;
    let runtime = match &a.runtime {
        None => Some(Runtime::Compartment),
        Some(r) => match r.value.as_str() {
            "compartment" => Some(Runtime::Compartment),
            "microvm" => {
                v.err(
                    &r.span,
                    "appliance.runtime",
                    "runtime `microvm` is reserved for a later release; use `compartment`",
                );
                None
            }
            other => {
                v.err(
                    &r.span,
                    "appliance.runtime",
                    format!("unknown runtime `{other}`; use `compartment`"),
                );
                None
            }
        },
    };
    Some(Appliance {
        name: name?,
        version: version?,
        security_version: security_version?,
        description: a.description.as_ref().map(|d| d.value.clone()),
        runtime: runtime?,
        lab,
    })
}

fn kernel(v: &mut V<'_>, k: &Sp<RawKernel>) -> Option<Kernel> {
    let package = v
        .req(&k.package, &k.span, "kernel", "package")
        .and_then(|p| debian_package(v, p, "kernel.package"));
    let mut drivers = Vec::new();
    let mut ok = true;
    for (i, d) in list(&k.drivers).iter().enumerate() {
        let field = format!("kernel.drivers[{i}]");
        let norm = d.value.replace('-', "_");
        if norm.is_empty() || !norm.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            v.err(
                &d.span,
                field,
                format!("`{}` is not a kernel module name", d.value),
            );
            ok = false;
        } else if drivers.contains(&norm) {
            v.err(
                &d.span,
                field,
                format!("driver `{}` is listed twice", d.value),
            );
            ok = false;
        } else {
            drivers.push(norm);
        }
    }
    let cmdline: Vec<String> = list(&k.cmdline).iter().map(|c| c.value.clone()).collect();
    for (i, c) in list(&k.cmdline).iter().enumerate() {
        if c.value.is_empty()
            || c.value
                .chars()
                .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            v.err(
                &c.span,
                format!("kernel.cmdline[{i}]"),
                "a command-line argument must be one word without spaces",
            );
            ok = false;
        } else if let Some((_, why)) = crate::cmdline::refusal(&c.value) {
            v.err(&c.span, format!("kernel.cmdline[{i}]"), why);
            ok = false;
        }
    }
    ok.then_some(())?;
    Some(Kernel {
        package: package?,
        drivers,
        cmdline,
    })
}

fn debian_package(v: &mut V<'_>, p: &Sp<String>, field: &str) -> Option<String> {
    let s = &p.value;
    let ok = s.len() >= 2
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if ok {
        Some(s.clone())
    } else {
        v.err(
            &p.span,
            field,
            format!("`{s}` is not a Debian package name"),
        );
        None
    }
}

/// A declared NIC: its table's span, the NIC if valid, and the span of its `network`.
struct NicInfo {
    span: Range<usize>,
    nic: Option<Nic>,
    network_span: Option<Range<usize>>,
}

type Nics = BTreeMap<String, NicInfo>;

fn nics(v: &mut V<'_>, h: &Sp<RawHardware>) -> Nics {
    let mut out = BTreeMap::new();
    let Some(nics) = v.req(&h.nics, &h.span, "hardware", "nics") else {
        return out;
    };
    if nics.value.is_empty() {
        v.err(
            &nics.span,
            "hardware.nics",
            "no NICs declared; a gateway needs one NIC for red and one for black",
        );
    }
    for (role, n) in &nics.value {
        let t = format!("hardware.nics.{role}");
        let role_ok = v
            .name(
                &Sp {
                    span: n.span.clone(),
                    value: role.clone(),
                },
                &t,
            )
            .is_some();
        let driver = v.req(&n.driver, &n.span, &t, "driver").and_then(|d| {
            let norm = d.value.replace('-', "_");
            if norm.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !norm.is_empty() {
                Some(norm)
            } else {
                v.err(
                    &d.span,
                    format!("{t}.driver"),
                    format!("`{}` is not a kernel module name", d.value),
                );
                None
            }
        });
        let pci = n.pci.as_ref().and_then(|p| {
            if is_pci(&p.value) {
                Some(p.value.to_ascii_lowercase())
            } else {
                let with_domain = format!("0000:{}", p.value);
                let msg = if is_pci(&with_domain) {
                    format!(
                        "`{}` lacks the PCI domain; write `{}`",
                        p.value,
                        with_domain.to_ascii_lowercase()
                    )
                } else {
                    format!(
                        "`{}` is not a PCI address; write domain:bus:device.function in hex, e.g. `0000:00:02.0`",
                        p.value
                    )
                };
                v.err(&p.span, format!("{t}.pci"), msg);
                None
            }
        });
        let mac = n.mac.as_ref().and_then(|m| {
            if is_mac(&m.value) {
                Some(m.value.to_ascii_lowercase())
            } else {
                let msg = match mac_with_colons(&m.value) {
                    Some(fixed) => {
                        format!("`{}`: write a MAC address with colons, `{fixed}`", m.value)
                    }
                    None => format!(
                        "`{}` is not a MAC address; write six hex pairs, e.g. `52:54:00:12:34:56`",
                        m.value
                    ),
                };
                v.err(&m.span, format!("{t}.mac"), msg);
                None
            }
        });
        let network = n
            .network
            .as_ref()
            .and_then(|net| v.name(net, &format!("{t}.network")));
        let nic = match (role_ok, driver) {
            (true, Some(driver))
                if n.pci.is_some() == pci.is_some()
                    && n.mac.is_some() == mac.is_some()
                    && n.network.is_some() == network.is_some() =>
            {
                Some(Nic {
                    role: role.clone(),
                    driver,
                    pci,
                    mac,
                    network,
                    owner: Side::Red,
                })
            }
            _ => None,
        };
        out.insert(
            role.clone(),
            NicInfo {
                span: n.span.clone(),
                nic,
                network_span: n.network.as_ref().map(|x| x.span.clone()),
            },
        );
    }
    // Two roles for one card: the same PCI address or the same MAC address
    // (compared normalised: lower case).
    for (key, what) in [("pci", "PCI address"), ("mac", "MAC address")] {
        let mut seen: Vec<(String, &str, Range<usize>)> = Vec::new();
        for (role, info) in &out {
            let (Some(nic), Some(raw)) = (&info.nic, nics.value.get(role)) else {
                continue;
            };
            let (value, span) = match key {
                "pci" => (nic.pci.clone(), raw.pci.as_ref().map(|p| p.span.clone())),
                _ => (nic.mac.clone(), raw.mac.as_ref().map(|m| m.span.clone())),
            };
            let (Some(value), Some(span)) = (value, span) else {
                continue;
            };
            if let Some((_, other, other_span)) = seen.iter().find(|(x, _, _)| *x == value) {
                let (this, that, this_span, that_span) = if v.later(&span, other_span) {
                    (role.as_str(), *other, &span, other_span)
                } else {
                    (*other, role.as_str(), other_span, &span)
                };
                v.err_note(
                    this_span,
                    format!("hardware.nics.{this}.{key}"),
                    format!(
                        "NICs `{that}` and `{this}` have the same {what} {value}; each role is a different card: correct the {what} or remove one of the roles"
                    ),
                    that_span,
                    format!("NIC `{that}` has {what} {value} here"),
                );
                continue;
            }
            seen.push((value, role.as_str(), span));
        }
    }
    out
}

/// `52-54-00-12-34-56`, `525400123456` or `5254.0012.3456` written the way
/// profiles accept it (`52:54:00:12:34:56`), if it is a MAC address.
fn mac_with_colons(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let pairs: Vec<String> = (0..6)
        .map(|i| hex[2 * i..2 * i + 2].to_ascii_lowercase())
        .collect();
    Some(pairs.join(":"))
}

fn is_pci(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s[..4]
            .bytes()
            .chain(s[5..7].bytes())
            .chain(s[8..10].bytes())
            .all(|c| c.is_ascii_hexdigit())
        && (b'0'..=b'7').contains(&b[11])
        // The device number has 5 bits: 00-1f.
        && u8::from_str_radix(&s[8..10], 16).is_ok_and(|d| d <= 0x1f)
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()))
}

type PersonalityOut = Option<(Range<usize>, Personality)>;

fn personalities_of(
    v: &mut V<'_>,
    p: &Sp<BTreeMap<String, Sp<RawPersonality>>>,
    nics: Option<&Nics>,
) -> (PersonalityOut, PersonalityOut) {
    let mut unknown = false;
    for (name, raw) in &p.value {
        if name != "red" && name != "black" {
            unknown = true;
            v.err(
                &raw.span,
                format!("personalities.{name}"),
                format!("unknown personality `{name}`; a gateway has exactly `red` and `black`"),
            );
        }
    }
    let mut get = |side: Side| -> PersonalityOut {
        let n = side.name();
        match p.value.get(n) {
            // A misspelt personality is reported above; that it is then
            // missing under its right name is the same mistake.
            None if unknown => None,
            None => {
                v.err(
                    &p.span,
                    format!("personalities.{n}"),
                    format!("missing [personalities.{n}]"),
                );
                None
            }
            Some(raw) => personality(v, side, raw, nics).map(|pp| (raw.span.clone(), pp)),
        }
    };
    let red = get(Side::Red);
    let black = get(Side::Black);
    (red, black)
}

const ALLOWED_CAPS: &[&str] = &[
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_KILL",
];

fn personality(
    v: &mut V<'_>,
    side: Side,
    p: &Sp<RawPersonality>,
    nics: Option<&Nics>,
) -> Option<Personality> {
    let t = format!("personalities.{}", side.name());
    let mut ok = true;
    let nic = v.req(&p.nic, &p.span, &t, "nic").and_then(|n| match nics {
        Some(nics) if !nics.contains_key(&n.value) => {
            let known: Vec<&str> = nics.keys().map(String::as_str).collect();
            v.err(
                &n.span,
                format!("{t}.nic"),
                format!(
                    "no NIC with role `{}` in [hardware.nics]; known: {}",
                    n.value,
                    known.join(", ")
                ),
            );
            None
        }
        _ => Some(n.value.clone()),
    });
    let mut packages = Vec::new();
    for (i, pk) in list(&p.packages).iter().enumerate() {
        match debian_package(v, pk, &format!("{t}.packages[{i}]")) {
            Some(name) if packages.contains(&name) => {
                v.err(
                    &pk.span,
                    format!("{t}.packages[{i}]"),
                    format!("package `{name}` is listed twice"),
                );
                ok = false;
            }
            Some(name) => packages.push(name),
            None => ok = false,
        }
    }
    let dhcp = p.dhcp.as_ref().is_some_and(|d| d.value);
    if dhcp && side == Side::Red {
        let span = &p
            .dhcp
            .as_ref()
            .map(|d| d.span.clone())
            .unwrap_or(p.span.clone());
        v.err(
            span,
            format!("{t}.dhcp"),
            "red serves its LAN and needs static addresses; DHCP client mode is for black only",
        );
        ok = false;
    }
    let mut addresses = Vec::new();
    let mut addresses_ok = true;
    for (i, a) in list(&p.addresses).iter().enumerate() {
        match v.parse(a, &format!("{t}.addresses[{i}]"), |s| s.parse::<IfAddr>()) {
            Some(addr) if addresses.contains(&addr) => {
                v.err(
                    &a.span,
                    format!("{t}.addresses[{i}]"),
                    format!("address {addr} is listed twice"),
                );
                addresses_ok = false;
            }
            Some(addr) => addresses.push(addr),
            None => addresses_ok = false,
        }
    }
    ok &= addresses_ok;
    if addresses.is_empty() && !dhcp && ok {
        let span = p
            .addresses
            .as_ref()
            .map(|a| a.span.clone())
            .unwrap_or(p.span.clone());
        v.err(
            &span,
            format!("{t}.addresses"),
            "no address: give at least one `addresses` entry (or `dhcp = true` on black)",
        );
        ok = false;
    }
    // With an address already reported, the gateway may be on the network
    // that address was meant to give: not checked then.
    let gateway = p.gateway.as_ref().and_then(|g| {
        let ip = v.parse(g, &format!("{t}.gateway"), parse_ip)?;
        if !dhcp
            && addresses_ok
            && !addresses.is_empty()
            && !addresses.iter().any(|a| a.network().contains(&ip))
        {
            let nets: Vec<String> = addresses.iter().map(|a| a.network().to_string()).collect();
            match &p.addresses {
                Some(list) => v.err_note(
                    &g.span,
                    format!("{t}.gateway"),
                    format!(
                        "gateway {ip} is not on any of this personality's networks ({})",
                        nets.join(", ")
                    ),
                    &list.span,
                    "the addresses are set here",
                ),
                None => v.err(
                    &g.span,
                    format!("{t}.gateway"),
                    format!("gateway {ip} is not on any of this personality's networks"),
                ),
            }
            return None;
        }
        Some(ip)
    });
    if p.gateway.is_some() && gateway.is_none() {
        ok = false;
    }
    let mut services = Vec::new();
    let mut names = Vec::new();
    for (i, s) in list(&p.services).iter().enumerate() {
        let st = format!("{t}.services[{i}]");
        let name = v
            .req(&s.name, &s.span, &st, "name")
            .and_then(|n| v.name(n, &format!("{st}.name")));
        if let Some(n) = &s.name {
            names.push((n.value.clone(), n.span.clone(), format!("{st}.name")));
        }
        let command = v.req(&s.command, &s.span, &st, "command").and_then(|c| {
            let words: Vec<String> = c.value.iter().map(|w| w.value.clone()).collect();
            match words.first() {
                None => {
                    v.err(
                        &c.span,
                        format!("{st}.command"),
                        "the command is empty; give the program's absolute path and its arguments",
                    );
                    None
                }
                Some(prog) if !prog.starts_with('/') => {
                    v.err(
                        &c.value[0].span,
                        format!("{st}.command[0]"),
                        format!("`{prog}` must be an absolute path (e.g. /usr/sbin/{prog})"),
                    );
                    None
                }
                Some(_) => Some(words),
            }
        });
        let restart = match &s.restart {
            None => Some(Restart::Always),
            Some(r) => v.one_of(
                r,
                &format!("{st}.restart"),
                &[
                    ("always", Restart::Always),
                    ("on-failure", Restart::OnFailure),
                    ("never", Restart::Never),
                ],
            ),
        };
        let mut caps = Vec::new();
        for (j, c) in list(&s.capabilities).iter().enumerate() {
            if ALLOWED_CAPS.contains(&c.value.as_str()) {
                caps.push(c.value.clone());
            } else {
                v.err(
                    &c.span,
                    format!("{st}.capabilities[{j}]"),
                    format!(
                        "capability `{}` is not allowed in a personality; allowed: {}",
                        c.value,
                        ALLOWED_CAPS.join(", ")
                    ),
                );
                ok = false;
            }
        }
        match (name, command, restart) {
            (Some(name), Some(command), Some(restart)) => services.push(Service {
                name,
                command,
                restart,
                capabilities: caps,
            }),
            _ => ok = false,
        }
    }
    v.unique("service", &names);
    let memory_limit = match &p.memory_limit {
        None => Some(ByteSize(256 << 20)),
        Some(m) => v.parse(m, &format!("{t}.memory_limit"), |s| {
            let b = ByteSize::parse(s)?;
            if b.0 < (16 << 20) {
                return Err(format!(
                    "`{s}` is too small; a personality needs at least 16MiB"
                ));
            }
            Ok(b)
        }),
    };
    let pids_limit = match &p.pids_limit {
        None => Some(256),
        Some(n) if n.value < 8 || n.value > 65536 => {
            v.err(
                &n.span,
                format!("{t}.pids_limit"),
                "pids_limit must be between 8 and 65536",
            );
            None
        }
        Some(n) => Some(n.value),
    };
    ok.then_some(())?;
    Some(Personality {
        side,
        nic: nic?,
        packages,
        addresses,
        gateway,
        dhcp,
        services,
        memory_limit: memory_limit?,
        pids_limit: pids_limit?,
    })
}

/// Every NIC's driver must be among the kernel's drivers, or the card never
/// comes up. Checked when both lists are valid, for each NIC a personality
/// names (a NIC no personality names is reported as unused instead).
fn nic_drivers(
    v: &mut V<'_>,
    hw: &Sp<RawHardware>,
    nics: &Nics,
    k: &Sp<RawKernel>,
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) {
    let mut drivers = Vec::new();
    for d in list(&k.drivers) {
        let norm = d.value.replace('-', "_");
        if norm.is_empty() || !norm.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return; // reported by `kernel`
        }
        drivers.push(norm);
    }
    let named: BTreeSet<&str> = personalities
        .map(|p| {
            p.value
                .values()
                .filter_map(|x| x.nic.as_ref().map(|n| n.value.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let raw_nics = hw.nics.as_ref().map(|n| &n.value);
    // NICs by missing driver: one missing driver is one mistake, however
    // many cards need it.
    let mut missing: BTreeMap<&str, Vec<(&str, &Sp<String>)>> = BTreeMap::new();
    for (role, info) in nics {
        let (Some(nic), Some(raw)) = (&info.nic, raw_nics.and_then(|n| n.get(role))) else {
            continue;
        };
        let Some(d) = &raw.driver else { continue };
        if drivers.contains(&nic.driver) || !named.contains(role.as_str()) {
            continue;
        }
        missing
            .entry(nic.driver.as_str())
            .or_default()
            .push((role.as_str(), d));
    }
    for (driver, users) in missing {
        let Some((role, d)) = users.first() else {
            continue;
        };
        let cards = match users.as_slice() {
            [_] => format!("NIC `{role}` needs driver `{}`", d.value),
            _ => {
                let roles: Vec<String> = users.iter().map(|(r, _)| format!("`{r}`")).collect();
                format!("NICs {} need driver `{}`", roles.join(" and "), d.value)
            }
        };
        let them = if users.len() == 1 {
            "the card"
        } else {
            "the cards"
        };
        let msg = format!(
            "{cards}, which is not in kernel.drivers, so {them} would never come up; add `{driver}` to kernel.drivers"
        );
        let field = format!("hardware.nics.{role}.driver");
        match &k.drivers {
            Some(list) => {
                // The list comes from a base profile: `{ append = [...] }`
                // in the profile itself adds to it instead of replacing it.
                let other_file = v.sources.file_at(list.span.start).map(|f| f.base) != Some(0);
                let note = if other_file {
                    format!("kernel.drivers is set here; to add to it from the extending profile, write `drivers = {{ append = [\"{driver}\"] }}` under [kernel]")
                } else {
                    "kernel.drivers is set here".to_string()
                };
                v.err_note(&d.span, field, msg, &list.span, note);
            }
            None => v.err(&d.span, field, msg),
        }
    }
}

fn nic_ownership(
    v: &mut V<'_>,
    hw: &Sp<RawHardware>,
    nics: &Nics,
    red: Option<&(Range<usize>, Personality)>,
    black: Option<&(Range<usize>, Personality)>,
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) -> Vec<Nic> {
    let nic_span = |side: &str| -> Range<usize> {
        personalities
            .and_then(|p| p.value.get(side))
            .and_then(|p| p.nic.as_ref())
            .map(|n| n.span.clone())
            .unwrap_or(hw.span.clone())
    };
    let mut shared = None;
    if let (Some((_, r)), Some((_, b))) = (red, black) {
        if r.nic == b.nic {
            shared = Some(b.nic.clone());
            // Report the assignment written last (in the extending profile,
            // or further down the file); the other one is the note.
            let (rs, bs) = (nic_span("red"), nic_span("black"));
            let (this, that, this_span, that_span) = if v.later(&rs, &bs) {
                ("red", "black", rs, bs)
            } else {
                ("black", "red", bs, rs)
            };
            v.err_note(
                &this_span,
                format!("personalities.{this}.nic"),
                format!(
                    "NIC `{}` is already given to {that}; each NIC belongs to exactly one personality",
                    b.nic
                ),
                &that_span,
                format!("{that} is given NIC `{}` here", b.nic),
            );
        }
    }
    let mut out = Vec::new();
    for (role, NicInfo { span, nic, .. }) in nics {
        let owners: Vec<Side> = [red, black]
            .iter()
            .flatten()
            .filter(|(_, p)| &p.nic == role)
            .map(|(_, p)| p.side)
            .collect();
        // With one NIC given to both, the other one is left over: the
        // double assignment is the mistake to report, not the leftover.
        if owners.is_empty() && red.is_some() && black.is_some() && shared.is_none() {
            v.err(span, format!("hardware.nics.{role}"), format!("NIC `{role}` is not given to any personality; set `nic = \"{role}\"` on red or black, or remove it"));
        }
        if let (Some(nic), Some(owner)) = (nic, owners.first()) {
            let mut nic = nic.clone();
            nic.owner = *owner;
            out.push(nic);
        }
    }
    out
}

fn disjoint_subnets(
    v: &mut V<'_>,
    red: &(Range<usize>, Personality),
    black: &(Range<usize>, Personality),
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) {
    let spans = |side: &str, whole: &Range<usize>, n: usize| -> Vec<Range<usize>> {
        let raw: Vec<Range<usize>> = personalities
            .and_then(|p| p.value.get(side))
            .map(|b| list(&b.addresses).iter().map(|a| a.span.clone()).collect())
            .unwrap_or_default();
        (0..n)
            .map(|i| raw.get(i).cloned().unwrap_or(whole.clone()))
            .collect()
    };
    let black_spans = spans("black", &black.0, black.1.addresses.len());
    let red_spans = spans("red", &red.0, red.1.addresses.len());
    for (i, b) in black.1.addresses.iter().enumerate() {
        for (j, r) in red.1.addresses.iter().enumerate() {
            if b.network().overlaps(&r.network()) {
                let (bs, rs) = (&black_spans[i], &red_spans[j]);
                let (span, field, other, note) = if v.later(rs, bs) {
                    (
                        rs,
                        format!("personalities.red.addresses[{j}]"),
                        bs,
                        format!("black's network {} is set here", b.network()),
                    )
                } else {
                    (
                        bs,
                        format!("personalities.black.addresses[{i}]"),
                        rs,
                        format!("red's network {} is set here", r.network()),
                    )
                };
                v.err_note(span, field, format!("black network {} overlaps red network {}; red and black subnets must be disjoint", b.network(), r.network()), other, note);
                break;
            }
        }
    }
}

fn selector(
    v: &mut V<'_>,
    field: &str,
    src: &Option<Sp<String>>,
    dst: &Option<Sp<String>>,
    protocol: &Option<Sp<String>>,
    src_ports: &Option<Sp<String>>,
    dst_ports: &Option<Sp<String>>,
) -> Option<Selector> {
    let mut ok = true;
    let mut prefix = |v: &mut V<'_>, p: &Option<Sp<String>>, key: &str| -> Option<Prefix> {
        let p = p.as_ref()?;
        let r = v.parse(p, &format!("{field}.{key}"), |s| s.parse::<Prefix>());
        if r.is_none() {
            ok = false;
        }
        r
    };
    let src_p = prefix(v, src, "src");
    let dst_p = prefix(v, dst, "dst");
    let mut proto_ok = true;
    let proto = match protocol {
        None => None,
        Some(p) => match v.parse(p, &format!("{field}.protocol"), parse_protocol) {
            Some(x) => x,
            None => {
                proto_ok = false;
                None
            }
        },
    };
    ok &= proto_ok;
    let mut ports = |v: &mut V<'_>, p: &Option<Sp<String>>, key: &str| -> PortRange {
        let Some(p) = p else { return PortRange::ANY };
        // After an unknown protocol (reported above) only the ports' own
        // syntax is checked: whether they fit the protocol meant is unknown.
        if !proto_ok {
            if v.parse(p, &format!("{field}.{key}"), |s| s.parse::<PortRange>())
                .is_none()
            {
                ok = false;
            }
            return PortRange::ANY;
        }
        if !matches!(proto, Some(6) | Some(17)) {
            v.err(
                &p.span,
                format!("{field}.{key}"),
                "ports need `protocol = \"tcp\"` or `\"udp\"`",
            );
            ok = false;
            return PortRange::ANY;
        }
        v.parse(p, &format!("{field}.{key}"), |s| s.parse::<PortRange>())
            .unwrap_or_else(|| {
                ok = false;
                PortRange::ANY
            })
    };
    let src_ports = ports(v, src_ports, "src_ports");
    let dst_ports = ports(v, dst_ports, "dst_ports");
    if let (Some(s), Some(d)) = (src_p, dst_p) {
        if s.is_ipv4() != d.is_ipv4() {
            if let Some(d) = dst {
                v.err(
                    &d.span,
                    format!("{field}.dst"),
                    "source and destination must be the same address family",
                );
            }
            ok = false;
        }
    }
    ok.then_some(Selector {
        src: src_p,
        dst: dst_p,
        protocol: proto,
        src_ports,
        dst_ports,
    })
}

type Side2<'a> = Option<&'a (Range<usize>, Personality)>;

fn viaduct(
    v: &mut V<'_>,
    vr: &Sp<RawViaduct>,
    red: Side2<'_>,
    black: Side2<'_>,
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) -> Option<Viaduct> {
    let mut ok = true;
    if let Some(n) = &vr.nic {
        v.err(&n.span, "viaduct.nic", "the Viaduct owns no NIC: give every NIC to red or black and link the Viaduct to both with [[links]]");
        ok = false;
    }
    let mut roles = BTreeSet::new();
    // A misspelt role is reported once: the section of the role meant is
    // then not also reported as given without its role.
    let mut misspelt_role = false;
    let role_list = v.req(&vr.roles, &vr.span, "viaduct", "roles");
    if let Some(rl) = role_list {
        if rl.value.is_empty() {
            v.err(
                &rl.span,
                "viaduct.roles",
                "no role: give one or more of vpn, firewall, ids, router",
            );
            ok = false;
        }
        for (i, r) in rl.value.iter().enumerate() {
            match v.one_of(
                r,
                &format!("viaduct.roles[{i}]"),
                &[
                    ("vpn", Role::Vpn),
                    ("firewall", Role::Firewall),
                    ("ids", Role::Ids),
                    ("router", Role::Router),
                ],
            ) {
                Some(role) => {
                    if !roles.insert(role) {
                        v.err(
                            &r.span,
                            format!("viaduct.roles[{i}]"),
                            format!("role `{}` is listed twice", r.value),
                        );
                    }
                }
                None => {
                    ok = false;
                    misspelt_role = true;
                }
            }
        }
    } else {
        ok = false;
    }
    let role_span = role_list.map(|r| r.span.clone()).unwrap_or(vr.span.clone());

    // Sections must match roles.
    let need = |v: &mut V<'_>,
                role: Role,
                present: bool,
                span: Option<&Range<usize>>,
                key: &str,
                what: &str|
     -> bool {
        let has_role = roles.contains(&role);
        match (has_role, present, span) {
            (true, false, _) => {
                v.err(
                    &role_span,
                    format!("viaduct.{key}"),
                    format!("role `{}` needs {what}", role_name(role)),
                );
                false
            }
            (false, true, Some(_)) if misspelt_role => false,
            (false, true, Some(span)) => {
                v.err(span, format!("viaduct.{key}"), format!("{what} given but role `{}` is not in viaduct.roles; add it or remove the section", role_name(role)));
                false
            }
            _ => true,
        }
    };
    if role_list.is_some() {
        ok &= need(
            v,
            Role::Vpn,
            vr.ipsec.is_some(),
            vr.ipsec.as_ref().map(|s| &s.span),
            "ipsec",
            "an [viaduct.ipsec] section",
        );
        ok &= need(
            v,
            Role::Firewall,
            !list(&vr.filter).is_empty(),
            vr.filter.as_ref().map(|s| &s.span),
            "filter",
            "[[viaduct.filter]] rules",
        );
        ok &= need(
            v,
            Role::Ids,
            !list(&vr.ids).is_empty(),
            vr.ids.as_ref().map(|s| &s.span),
            "ids",
            "[[viaduct.ids]] rules",
        );
        ok &= need(
            v,
            Role::Router,
            !list(&vr.routes).is_empty(),
            vr.routes.as_ref().map(|s| &s.span),
            "routes",
            "[[viaduct.routes]]",
        );
    }

    let ipsec = match &vr.ipsec {
        Some(ip) if roles.contains(&Role::Vpn) => {
            let r = ipsec(v, ip, red, black, personalities);
            if r.is_none() {
                ok = false;
            }
            r
        }
        _ => None,
    };

    let mut names = Vec::new();
    let mut spd = Vec::new();
    for (i, r) in list(&vr.spd).iter().enumerate() {
        let f = format!("viaduct.spd[{i}]");
        let name = v
            .req(&r.name, &r.span, &f, "name")
            .and_then(|n| v.name(n, &format!("{f}.name")));
        if let Some(n) = &r.name {
            names.push((n.value.clone(), n.span.clone(), format!("{f}.name")));
        }
        let sel = selector(v, &f, &r.src, &r.dst, &r.protocol, &None, &r.dst_ports);
        let action = v.req(&r.action, &r.span, &f, "action").and_then(|a| {
            v.one_of(
                a,
                &format!("{f}.action"),
                &[
                    ("bypass", SpdAction::Bypass),
                    ("discard", SpdAction::Discard),
                ],
            )
        });
        match (name, sel, action) {
            (Some(name), Some(selector), Some(action)) => spd.push(SpdRule {
                name,
                selector,
                action,
            }),
            _ => ok = false,
        }
    }
    v.unique("SPD rule", &names);

    let mut names = Vec::new();
    let mut filter = Vec::new();
    for (i, r) in list(&vr.filter).iter().enumerate() {
        let f = format!("viaduct.filter[{i}]");
        let name = v
            .req(&r.name, &r.span, &f, "name")
            .and_then(|n| v.name(n, &format!("{f}.name")));
        if let Some(n) = &r.name {
            names.push((n.value.clone(), n.span.clone(), format!("{f}.name")));
        }
        let direction = v.req(&r.direction, &r.span, &f, "direction").and_then(|d| {
            v.one_of(
                d,
                &format!("{f}.direction"),
                &[
                    ("outbound", Direction::Outbound),
                    ("inbound", Direction::Inbound),
                ],
            )
        });
        let sel = selector(
            v,
            &f,
            &r.src,
            &r.dst,
            &r.protocol,
            &r.src_ports,
            &r.dst_ports,
        );
        // After a protocol that did not parse, flags are not checked
        // against it (one mistake, one error).
        let flags = match (&r.tcp_flags, &sel) {
            (None, _) => Some(TcpFlags::default()),
            (Some(l), Some(s)) => tcp_flags(v, l, s.protocol, &f),
            (Some(_), None) => None,
        };
        let action = v.req(&r.action, &r.span, &f, "action").and_then(|a| {
            v.one_of(
                a,
                &format!("{f}.action"),
                &[
                    ("accept", FilterAction::Accept),
                    ("drop", FilterAction::Drop),
                ],
            )
        });
        match (name, direction, sel, flags, action) {
            (Some(name), Some(direction), Some(selector), Some(tcp_flags), Some(action)) => filter
                .push(FilterRule {
                    name,
                    direction,
                    selector,
                    tcp_flags,
                    action,
                }),
            _ => ok = false,
        }
    }
    v.unique("filter rule", &names);
    let filter_default = match &vr.filter_default {
        None => Some(FilterAction::Accept),
        Some(d) => v.one_of(
            d,
            "viaduct.filter_default",
            &[
                ("accept", FilterAction::Accept),
                ("drop", FilterAction::Drop),
            ],
        ),
    };

    let mut names = Vec::new();
    let mut ids = Vec::new();
    for (i, r) in list(&vr.ids).iter().enumerate() {
        let f = format!("viaduct.ids[{i}]");
        let name = v
            .req(&r.name, &r.span, &f, "name")
            .and_then(|n| v.name(n, &format!("{f}.name")));
        if let Some(n) = &r.name {
            names.push((n.value.clone(), n.span.clone(), format!("{f}.name")));
        }
        let content = v.req(&r.content, &r.span, &f, "content").and_then(|c| {
            if c.value.is_empty() || c.value.len() > 256 {
                v.err(
                    &c.span,
                    format!("{f}.content"),
                    "content must be 1 to 256 bytes",
                );
                None
            } else {
                Some(c.value.clone())
            }
        });
        let sel = selector(v, &f, &None, &None, &r.protocol, &None, &r.dst_ports);
        let action = v.req(&r.action, &r.span, &f, "action").and_then(|a| {
            v.one_of(
                a,
                &format!("{f}.action"),
                &[("alert", IdsAction::Alert), ("drop", IdsAction::Drop)],
            )
        });
        match (name, content, sel, action) {
            (Some(name), Some(content), Some(sel), Some(action)) => ids.push(IdsRule {
                name,
                content,
                protocol: sel.protocol,
                dst_ports: sel.dst_ports,
                action,
            }),
            _ => ok = false,
        }
    }
    v.unique("IDS rule", &names);

    let routes = match routes(v, vr, ipsec.as_ref(), red, personalities) {
        Some(r) => r,
        None => {
            ok = false;
            Vec::new()
        }
    };

    ok.then_some(())?;
    Some(Viaduct {
        roles,
        ipsec,
        spd,
        filter,
        filter_default: filter_default?,
        ids,
        routes,
    })
}

/// A route that parsed, with where it was written.
struct RouteAt {
    route: Route,
    field: String,
    dst_span: Range<usize>,
}

/// `[[viaduct.routes]]`: each route on its own, then the table as a whole:
/// no destination routed twice, no part of red's networks sent out of black
/// (by longest-prefix match over all routes), and a route into a tunnel
/// only for destinations the tunnel's remote selectors cover.
fn routes(
    v: &mut V<'_>,
    vr: &Sp<RawViaduct>,
    ipsec: Option<&Ipsec>,
    red: Side2<'_>,
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
) -> Option<Vec<Route>> {
    let mut ok = true;
    // Tunnels as written (a tunnel with its own error is still a tunnel:
    // a route into it is not reported as naming no tunnel).
    let raw_tunnels: Vec<&Sp<RawTunnel>> = vr
        .ipsec
        .iter()
        .flat_map(|i| list(&i.peers))
        .flat_map(|p| list(&p.tunnels))
        .collect();
    let valid: Vec<&Tunnel> = ipsec
        .iter()
        .flat_map(|i| i.peers.iter().flat_map(|p| p.tunnels.iter()))
        .collect();
    let mut parsed: Vec<RouteAt> = Vec::new();
    for (i, r) in list(&vr.routes).iter().enumerate() {
        let f = format!("viaduct.routes[{i}]");
        let dst = v
            .req(&r.dst, &r.span, &f, "dst")
            .and_then(|d| v.parse(d, &format!("{f}.dst"), |s| s.parse::<Prefix>()));
        let via = v.req(&r.via, &r.span, &f, "via").and_then(|via| match via.value.as_str() {
            "red" => Some(RouteVia::Red),
            "black" => Some(RouteVia::Black),
            s => match s.strip_prefix("tunnel:") {
                Some(t) if valid.iter().any(|x| x.name == t) => Some(RouteVia::Tunnel(t.to_string())),
                Some(t) if raw_tunnels.iter().any(|x| x.name.as_ref().is_some_and(|n| n.value == t)) => None,
                Some(t) => {
                    let names: Vec<&str> = raw_tunnels.iter().filter_map(|x| x.name.as_ref().map(|n| n.value.as_str())).collect();
                    let known = if names.is_empty() { "there are no tunnels".to_string() } else { format!("tunnels: {}", names.join(", ")) };
                    v.err(&via.span, format!("{f}.via"), format!("no tunnel named `{t}` ({known})"));
                    None
                }
                None => {
                    v.err(&via.span, format!("{f}.via"), format!("`{s}` is not a next hop; use `red`, `black` or `tunnel:<name>`"));
                    None
                }
            },
        });
        match (dst, via, &r.dst) {
            (Some(dst), Some(via), Some(d)) => parsed.push(RouteAt {
                route: Route { dst, via },
                field: format!("{f}.dst"),
                dst_span: d.span.clone(),
            }),
            _ => ok = false,
        }
    }
    let via_name = |via: &RouteVia| match via {
        RouteVia::Red => "red".to_string(),
        RouteVia::Black => "black".to_string(),
        RouteVia::Tunnel(t) => format!("tunnel:{t}"),
    };
    // The same destination twice (prefixes compare as networks: `10.2.0.0/16`
    // and `10.2.0.0/016` are one destination; IPv4 and IPv6 never are).
    let mut doubled = vec![false; parsed.len()];
    for j in 0..parsed.len() {
        if let Some(i) = (0..j).find(|&i| parsed[i].route.dst == parsed[j].route.dst) {
            doubled[i] = true;
            doubled[j] = true;
            let (a, b) = (&parsed[i], &parsed[j]);
            let (this, that) = if v.later(&b.dst_span, &a.dst_span) {
                (b, a)
            } else {
                (a, b)
            };
            let msg = if a.route.via == b.route.via {
                format!(
                    "{} is routed twice, both via {}; remove one of the routes",
                    this.route.dst,
                    via_name(&this.route.via)
                )
            } else {
                format!(
                    "{} is routed twice, via {} and via {}; a destination has one next hop: remove one of the routes",
                    this.route.dst,
                    via_name(&that.route.via),
                    via_name(&this.route.via)
                )
            };
            let (span, field, other) = (
                this.dst_span.clone(),
                this.field.clone(),
                that.dst_span.clone(),
            );
            v.err_note(
                &span,
                field,
                msg,
                &other,
                format!("{} is also routed here", that.route.dst),
            );
            ok = false;
        }
    }
    // Red's own networks must not leave through black: for each route via
    // black, the part of red's network it matches must be taken by more
    // specific routes (longest prefix wins). This looks at the whole table:
    // with a route already reported (perhaps the one meant for red), it
    // would report a consequence of that mistake, so it waits.
    if let (Some((_, red)), true) = (red, ok) {
        // A valid personality's addresses are its raw addresses, in order.
        let red_spans: Vec<Range<usize>> = personalities
            .and_then(|p| p.value.get("red"))
            .map(|r| list(&r.addresses).iter().map(|a| a.span.clone()).collect())
            .unwrap_or_default();
        for (k, r) in parsed.iter().enumerate() {
            if r.route.via != RouteVia::Black || doubled[k] {
                continue;
            }
            let more_specific: Vec<Prefix> = parsed
                .iter()
                .map(|x| x.route.dst)
                .filter(|d| d.len() > r.route.dst.len())
                .collect();
            for (j, a) in red.addresses.iter().enumerate() {
                let net = a.network();
                if !net.overlaps(&r.route.dst) {
                    continue;
                }
                let region = if r.route.dst.covers(&net) {
                    net
                } else {
                    r.route.dst
                };
                if let Some(part) = region.uncovered_by(&more_specific) {
                    let what = if part == net {
                        format!("red's network {net}")
                    } else {
                        format!("{part}, part of red's network {net},")
                    };
                    let other = red_spans.get(j).cloned().unwrap_or(r.dst_span.clone());
                    v.err_note(
                        &r.dst_span,
                        r.field.clone(),
                        format!(
                            "route {} via black sends {what} out of the internet side; add a more specific route to it via red, or narrow this route",
                            r.route.dst
                        ),
                        &other,
                        format!("red's address {a} is set here"),
                    );
                    ok = false;
                    break;
                }
            }
        }
    }
    // A route into a tunnel carries only what the tunnel's remote selectors
    // cover; the rest would be dropped by the Viaduct.
    for (k, r) in parsed.iter().enumerate() {
        let RouteVia::Tunnel(name) = &r.route.via else {
            continue;
        };
        if doubled[k] {
            continue;
        }
        let Some(t) = valid.iter().find(|t| &t.name == name) else {
            continue;
        };
        let remote: Vec<Prefix> = t.remote_ts.iter().map(|s| s.prefix).collect();
        if let Some(part) = r.route.dst.uncovered_by(&remote) {
            let sels: Vec<String> = remote.iter().map(Prefix::to_string).collect();
            let what = if part == r.route.dst {
                format!("{}", r.route.dst)
            } else {
                format!("{part} (part of {})", r.route.dst)
            };
            let note_span = raw_tunnels
                .iter()
                .find(|x| x.name.as_ref().is_some_and(|n| &n.value == name))
                .and_then(|x| x.remote_ts.as_ref().map(|l| l.span.clone()))
                .unwrap_or(r.dst_span.clone());
            v.err_note(
                &r.dst_span,
                r.field.clone(),
                format!(
                    "route {} into tunnel `{name}`: its remote selectors ({}) do not cover {what}, which the Viaduct would drop; narrow the route or widen the tunnel's remote_ts",
                    r.route.dst,
                    sels.join(", ")
                ),
                &note_span,
                format!("tunnel `{name}`'s remote selectors are set here"),
            );
            ok = false;
        }
    }
    ok.then(|| parsed.into_iter().map(|r| r.route).collect())
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Vpn => "vpn",
        Role::Firewall => "firewall",
        Role::Ids => "ids",
        Role::Router => "router",
    }
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Spans of a personality's addresses as written (for a valid personality,
/// in the order of [`Personality::addresses`]), and of the whole list.
fn address_spans(
    personalities: Option<&Sp<BTreeMap<String, Sp<RawPersonality>>>>,
    side: &str,
) -> (Vec<Range<usize>>, Option<Range<usize>>) {
    let raw = personalities.and_then(|p| p.value.get(side));
    let each = raw
        .map(|r| list(&r.addresses).iter().map(|a| a.span.clone()).collect())
        .unwrap_or_default();
    let whole = raw.and_then(|r| r.addresses.as_ref().map(|a| a.span.clone()));
    (each, whole)
}

fn ipsec(
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

/// `tfc_padding`: sizes from [`MIN_TFC_PADDING`] to [`MAX_TFC_PADDING`],
/// strictly increasing.
fn tfc_padding(v: &mut V<'_>, l: Option<&Sp<Vec<Sp<u64>>>>, f: &str) -> Option<Vec<u16>> {
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

/// `tcp_flags` of a filter rule: `flag` (set) or `!flag` (clear), each
/// named once, only on TCP rules.
fn tcp_flags(
    v: &mut V<'_>,
    l: &Sp<Vec<Sp<String>>>,
    protocol: Option<u8>,
    f: &str,
) -> Option<TcpFlags> {
    let field = format!("{f}.tcp_flags");
    if protocol != Some(6) {
        v.err(
            &l.span,
            field,
            "TCP flags need `protocol = \"tcp\"`; other packets have none",
        );
        return None;
    }
    if l.value.is_empty() {
        v.err(
            &l.span,
            field,
            "no flags: name at least one (e.g. [\"ack\"]) or leave tcp_flags out",
        );
        return None;
    }
    let mut flags = TcpFlags::default();
    for (i, x) in l.value.iter().enumerate() {
        let (clear, name) = match x.value.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, x.value.as_str()),
        };
        let name = name.to_ascii_lowercase();
        let Some(&(canon, bit)) = TcpFlags::NAMES.iter().find(|(n, _)| *n == name) else {
            v.err(
                &x.span,
                format!("{field}[{i}]"),
                format!("unknown TCP flag `{}`: use fin, syn, rst, psh, ack, urg, ece or cwr, written `!syn` for a flag that must be clear", x.value),
            );
            return None;
        };
        if flags.mask & bit != 0 {
            v.err(
                &x.span,
                format!("{field}[{i}]"),
                format!("`{canon}` is named twice; name each flag once, set (`{canon}`) or clear (`!{canon}`)"),
            );
            return None;
        }
        flags.mask |= bit;
        if !clear {
            flags.value |= bit;
        }
    }
    Some(flags)
}

/// Every manually keyed SA has its own cipher key: no key (salt aside) is
/// used by two tunnels (within one tunnel, `manual` reports key_in equal to
/// key_out). The later use is reported with a note at the first. Keys are
/// compared in constant time and in place. Called only once every peer and
/// tunnel validated, so the keys parse.
fn shared_keys(v: &mut V<'_>, peers: &Sp<Vec<Sp<RawPeer>>>) {
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

/// Do two IKE identities name the same party? IKE compares an identity by
/// its type and value: addresses as addresses (`2001:db8::1` is
/// `2001:DB8:0::1`), FQDNs and e-mail style IDs without regard to case (DNS
/// names are case-insensitive; strongSwan compares both so), an FQDN with or
/// without its final dot.
/// A type prefix as strongSwan writes one (`fqdn:gw.example.net`) is read as
/// the type it names.
fn same_identity(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        let lower = s.to_ascii_lowercase();
        let (typed, value) = match lower.split_once(':') {
            Some((t @ ("fqdn" | "email" | "rfc822" | "userfqdn" | "ipv4" | "ipv6"), v)) => {
                (Some(t), v.to_string())
            }
            _ => (None, lower.clone()),
        };
        match (typed, value.parse::<IpAddr>()) {
            (None | Some("ipv4" | "ipv6"), Ok(ip)) => format!("ip:{ip}"),
            _ => {
                let kind = match typed {
                    Some("email" | "rfc822" | "userfqdn") => "email",
                    Some("fqdn") => "fqdn",
                    _ if value.contains('@') => "email",
                    _ => "fqdn",
                };
                format!("{kind}:{}", value.trim_end_matches('.'))
            }
        }
    };
    norm(a) == norm(b)
}

fn identity(v: &mut V<'_>, id: &Sp<String>, field: &str) -> Option<String> {
    let s = &id.value;
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_@:".contains(&b));
    if ok {
        Some(s.clone())
    } else {
        v.err(&id.span, field, format!("`{s}` is not an identity: use an FQDN (gw.example.net), an e-mail style ID or an address"));
        None
    }
}

/// `private_key`: `tpm:<name>`, or `lab:<64 hex>` in lab profiles.
fn private_key(v: &mut V<'_>, k: &Sp<String>, f: &str) -> Option<PrivateKey> {
    if let Some(name) = k.value.strip_prefix("tpm:") {
        let n = Sp {
            span: k.span.clone(),
            value: name.to_string(),
        };
        return v.name(&n, f).map(|name| PrivateKey::Tpm { name });
    }
    if let Some(hex) = k.value.strip_prefix("lab:") {
        if !v.lab {
            v.err(&k.span, f, "an inline `lab:` private key is only allowed in lab profiles (appliance.lab = true); use `tpm:<name>`");
            return None;
        }
        return match hex_bytes(hex) {
            Some(b) if b.len() == 32 => Some(PrivateKey::Lab {
                seed: LabKey::new(b),
            }),
            _ => {
                v.err(
                    &k.span,
                    f,
                    "a lab Ed25519 private key is its 32-byte seed as 64 hex digits",
                );
                None
            }
        };
    }
    v.err(&k.span, f, "a private key is a reference: `tpm:<name>` (provisioned on the device), never the key itself");
    None
}

fn auth(v: &mut V<'_>, a: &Sp<RawAuth>, f: &str) -> Option<Auth> {
    let method = v.req(&a.method, &a.span, f, "method")?;
    match method.value.as_str() {
        "psk" => {
            if let Some(pk) = &a.public_key {
                v.err(
                    &pk.span,
                    format!("{f}.public_key"),
                    "`public_key` belongs to method `pubkey`, not `psk`",
                );
                return None;
            }
            let psk = match &a.psk {
                Some(p) => p,
                None => {
                    v.err(
                        &a.span,
                        format!("{f}.psk"),
                        "method `psk` needs `psk = \"tpm:<name>\"` (a key sealed on the device)",
                    );
                    return None;
                }
            };
            if let Some(name) = psk.value.strip_prefix("tpm:") {
                let n = Sp {
                    span: psk.span.clone(),
                    value: name.to_string(),
                };
                return v
                    .name(&n, &format!("{f}.psk"))
                    .map(|name| Auth::PskTpm { name });
            }
            if let Some(hex) = psk.value.strip_prefix("lab:") {
                if !v.lab {
                    v.err(&psk.span, format!("{f}.psk"), "an inline `lab:` PSK is only allowed in lab profiles (appliance.lab = true); use `tpm:<name>`");
                    return None;
                }
                return match hex_bytes(hex) {
                    Some(b) if b.len() >= 16 => Some(Auth::PskLab {
                        key: LabKey::new(b),
                    }),
                    _ => {
                        v.err(
                            &psk.span,
                            format!("{f}.psk"),
                            "a lab PSK is at least 16 bytes written as hex (32+ hex digits)",
                        );
                        None
                    }
                };
            }
            v.err(&psk.span, format!("{f}.psk"), "a PSK is a reference: `tpm:<name>` (sealed on the device), never the secret itself");
            None
        }
        "pubkey" => {
            let Some(pk) = &a.public_key else {
                v.err(
                    &a.span,
                    format!("{f}.public_key"),
                    "method `pubkey` needs `public_key = \"ed25519:<64 hex digits>\"`",
                );
                return None;
            };
            match pk.value.strip_prefix("ed25519:").and_then(hex_bytes) {
                Some(b) if b.len() == 32 => {
                    let mut k = [0u8; 32];
                    k.copy_from_slice(&b);
                    Some(Auth::PublicKey { ed25519: k })
                }
                _ => {
                    v.err(&pk.span, format!("{f}.public_key"), "a public key is `ed25519:` followed by 64 hex digits (32 bytes); other key types are not supported");
                    None
                }
            }
        }
        other => {
            v.err(
                &method.span,
                format!("{f}.method"),
                format!("unsupported authentication `{other}`; use `psk` or `pubkey` (Ed25519)"),
            );
            None
        }
    }
}

fn proposals<T>(
    v: &mut V<'_>,
    l: &Sp<Vec<Sp<String>>>,
    f: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Option<Vec<T>> {
    if l.value.is_empty() {
        v.err(
            &l.span,
            f,
            "no proposals; remove the key to use the default or give at least one",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, p) in l.value.iter().enumerate() {
        match v.parse(p, &format!("{f}[{i}]"), parse) {
            Some(x) => out.push(x),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `dpd`: `delay` a duration from 1 s to 1 h or `off`; `action` `restart` or
/// `clear`.
fn dpd(v: &mut V<'_>, d: Option<&Sp<RawDpd>>, f: &str) -> Option<Dpd> {
    let Some(d) = d else {
        return Some(Dpd::default());
    };
    let delay = match &d.value.delay {
        None => Some(Some(Seconds(30))),
        Some(s) if s.value.trim() == "off" => Some(None),
        Some(s) => v
            .parse(s, &format!("{f}.delay"), |t| {
                let x = Seconds::parse(t)?;
                if !(1..=3600).contains(&x.0) {
                    return Err(format!(
                        "`{t}` is out of range: 1s to 1h, or `off` for no liveness checks"
                    ));
                }
                Ok(x)
            })
            .map(Some),
    };
    let action = match &d.value.action {
        None => Some(DpdAction::Restart),
        Some(a) => match a.value.as_str() {
            "restart" => Some(DpdAction::Restart),
            "clear" => Some(DpdAction::Clear),
            other => {
                v.err(
                    &a.span,
                    format!("{f}.action"),
                    format!("`{other}` is not a DPD action: use `restart` or `clear`"),
                );
                None
            }
        },
    };
    Some(Dpd {
        delay: delay?,
        action: action?,
    })
}

fn lifetimes(v: &mut V<'_>, l: Option<&Sp<RawLifetimes>>, f: &str) -> Option<Lifetimes> {
    let dur = |v: &mut V<'_>, x: &Option<Sp<String>>, key: &str, default: u64| -> Option<Seconds> {
        match x {
            None => Some(Seconds(default)),
            Some(s) => v.parse(s, &format!("{f}.{key}"), |t| {
                let d = Seconds::parse(t)?;
                if d.0 < 60 {
                    return Err(format!("`{t}` is too short; at least 60s"));
                }
                Ok(d)
            }),
        }
    };
    let none = RawLifetimes {
        ike: None,
        child: None,
        child_rekey: None,
        child_bytes: None,
        child_packets: None,
    };
    let raw = l.map(|l| &l.value).unwrap_or(&none);
    let ike = dur(v, &raw.ike, "ike", 86400);
    let child = dur(v, &raw.child, "child", 3600);
    // Parsed on its own, so that a mistake in it is reported even when
    // `child` has one too; compared with `child` only when both are valid.
    let rekey = raw
        .child_rekey
        .as_ref()
        .map(|r| (r, dur(v, &Some(r.clone()), "child_rekey", 0)));
    let rekey = match (rekey, child) {
        (None, Some(c)) => Some(Seconds(c.0 * 9 / 10)),
        (Some((r, Some(d))), Some(c)) => {
            if d >= c {
                let msg = "child_rekey must be shorter than child (it is the soft lifetime)";
                match &raw.child {
                    Some(cs) => v.err_note(
                        &r.span,
                        format!("{f}.child_rekey"),
                        msg,
                        &cs.span,
                        "child is set here",
                    ),
                    None => v.err(
                        &r.span,
                        format!("{f}.child_rekey"),
                        format!("{msg}, which is 1h when not given"),
                    ),
                }
                None
            } else {
                Some(d)
            }
        }
        _ => None,
    };
    // A limit of zero would expire every SA at once: a limit is left out
    // for none, never written as 0.
    let bytes = match &raw.child_bytes {
        None => Some(None),
        Some(b) => v
            .parse(b, &format!("{f}.child_bytes"), |s| {
                let n = ByteSize::parse(s)?;
                if n.0 == 0 {
                    return Err(format!(
                        "`{s}` is a byte limit of zero, which would expire every child SA at once; give a size such as `64GiB`, or remove child_bytes for no byte limit"
                    ));
                }
                Ok(n)
            })
            .map(Some),
    };
    let packets = match &raw.child_packets {
        None => Some(None),
        Some(p) if p.value == 0 => {
            v.err(
                &p.span,
                format!("{f}.child_packets"),
                "a packet limit of zero would expire every child SA at once; give a number of packets, or remove child_packets for no packet limit",
            );
            None
        }
        Some(p) => Some(Some(p.value)),
    };
    Some(Lifetimes {
        ike: ike?,
        child: child?,
        child_rekey: rekey?,
        child_bytes: bytes?,
        child_packets: packets?,
    })
}

fn tunnel(
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

fn links(
    v: &mut V<'_>,
    raw: &RawProfile,
    nics: Option<&Nics>,
    red: Side2<'_>,
    black: Side2<'_>,
) -> Option<Vec<Link>> {
    let mut ok = true;
    let networks: BTreeSet<String> = nics
        .map(|n| {
            n.values()
                .filter_map(|i| i.nic.as_ref().and_then(|x| x.network.clone()))
                .collect()
        })
        .unwrap_or_default();
    // Network names as written, valid or not: a link to a network whose
    // NIC has an error is not also reported as naming an unknown end.
    let raw_networks: BTreeSet<&str> = raw
        .hardware
        .as_ref()
        .and_then(|h| h.nics.as_ref())
        .map(|n| {
            n.value
                .values()
                .filter_map(|x| x.network.as_ref().map(|net| net.value.as_str()))
                .collect()
        })
        .unwrap_or_default();
    // A link with an error is reported on its own; which ends it was meant
    // to join is unknown, so a missing link is not reported on top of it.
    let mut broken_link = false;
    let mut out = Vec::new();
    let mut names = Vec::new();
    // Graph edges with the span that declared them.
    let mut edges: Vec<(Node, Node, Range<usize>, String)> = Vec::new();
    let whole = 0..0;
    let link_list = list(&raw.links);
    for (i, l) in link_list.iter().enumerate() {
        let f = format!("links[{i}]");
        let name = v
            .req(&l.name, &l.span, &f, "name")
            .and_then(|n| v.name(n, &format!("{f}.name")));
        if let Some(n) = &l.name {
            names.push((n.value.clone(), n.span.clone(), format!("{f}.name")));
        }
        let Some(between) = v.req(&l.between, &l.span, &f, "between") else {
            ok = false;
            broken_link = true;
            continue;
        };
        if between.value.len() != 2 {
            v.err(
                &between.span,
                format!("{f}.between"),
                "a link has exactly two ends",
            );
            ok = false;
            broken_link = true;
            continue;
        }
        let mut ends = Vec::new();
        for (j, e) in between.value.iter().enumerate() {
            let node = match e.value.as_str() {
                "red" => Some(Node::Red),
                "black" => Some(Node::Black),
                "viaduct" => Some(Node::Viaduct),
                other if networks.contains(other) => Some(Node::Network(other.to_string())),
                other if raw_networks.contains(other) => None,
                other if nics.is_some_and(|n| n.contains_key(other)) => {
                    v.err(&e.span, format!("{f}.between[{j}]"), format!("`{other}` is a NIC; NICs belong to personalities (`nic = ...`), links join red, black, viaduct and networks"));
                    None
                }
                other => {
                    v.err(&e.span, format!("{f}.between[{j}]"), format!("unknown link end `{other}`; use red, black, viaduct or a network named in hardware.nics"));
                    None
                }
            };
            ends.push(node);
        }
        let (Some(a), Some(b)) = (ends[0].clone(), ends[1].clone()) else {
            ok = false;
            broken_link = true;
            continue;
        };
        if a == b {
            v.err(
                &between.span,
                format!("{f}.between"),
                "a link joins two different ends",
            );
            ok = false;
            broken_link = true;
            continue;
        }
        if matches!(
            (&a, &b),
            (Node::Viaduct, Node::Network(_)) | (Node::Network(_), Node::Viaduct)
        ) {
            v.err(
                &between.span,
                format!("{f}.between"),
                "the Viaduct owns no NIC and joins no network; link it to red and black only",
            );
            ok = false;
            broken_link = true;
            continue;
        }
        edges.push((
            a.clone(),
            b.clone(),
            between.span.clone(),
            format!("{f}.between"),
        ));
        if let Some(name) = name {
            out.push(Link {
                name,
                between: [a, b],
            });
        } else {
            ok = false;
        }
    }
    v.unique("link", &names);
    // NIC attachments are edges too (unless one NIC is given to both
    // personalities: that mistake is reported on its own).
    let shared_nic = matches!((red, black), (Some((_, r)), Some((_, b))) if r.nic == b.nic);
    for (side, p) in [(Node::Red, red), (Node::Black, black)]
        .into_iter()
        .filter(|_| !shared_nic)
    {
        if let (Some((span, p)), Some(nics)) = (p, nics) {
            if let Some(NicInfo {
                nic: Some(nic),
                network_span,
                ..
            }) = nics.get(&p.nic)
            {
                let net = nic
                    .network
                    .clone()
                    .unwrap_or_else(|| format!("nic:{}", nic.role));
                let span = network_span.clone().unwrap_or(span.clone());
                edges.push((
                    side.clone(),
                    Node::Network(net),
                    span,
                    format!("hardware.nics.{}.network", nic.role),
                ));
            }
        }
    }
    if red.is_none() || black.is_none() {
        return ok.then_some(out);
    }
    let links_span = raw
        .links
        .as_ref()
        .map(|l| l.span.clone())
        .unwrap_or(whole.clone());
    // Path check: without the Viaduct, red must not reach black.
    let bypass = bypass_path(&edges);
    if let Some((span, field, path)) = &bypass {
        v.err(span, field.clone(), format!("red reaches black without passing through the Viaduct ({path}); the only path between red and black must be the Viaduct"));
        ok = false;
    }
    // A missing Viaduct link next to a bypass is most likely the bypass
    // link written with the wrong end: the bypass is the one reported.
    for side in [Node::Red, Node::Black]
        .into_iter()
        .filter(|_| !broken_link && bypass.is_none())
    {
        let linked = edges.iter().any(|(a, b, _, _)| {
            (a == &Node::Viaduct && b == &side) || (b == &Node::Viaduct && a == &side)
        });
        if !linked {
            let n = if side == Node::Red { "red" } else { "black" };
            v.err(&links_span, "links", format!("no link between the Viaduct and {n}: add [[links]] with `between = [\"{n}\", \"viaduct\"]`"));
            ok = false;
        }
    }
    ok.then_some(out)
}

fn node_name(n: &Node) -> String {
    match n {
        Node::Red => "red".into(),
        Node::Black => "black".into(),
        Node::Viaduct => "viaduct".into(),
        Node::Network(s) => s
            .strip_prefix("nic:")
            .map(|r| format!("NIC {r}"))
            .unwrap_or_else(|| format!("network {s}")),
    }
}

/// Breadth-first search from red to black over every edge not touching the
/// Viaduct; returns the span and field of the edge that completes the path.
fn bypass_path(
    edges: &[(Node, Node, Range<usize>, String)],
) -> Option<(Range<usize>, String, String)> {
    let mut prev: HashMap<Node, (Node, usize)> = HashMap::new();
    let mut queue = VecDeque::from([Node::Red]);
    let mut seen = BTreeSet::from([Node::Red]);
    while let Some(n) = queue.pop_front() {
        for (i, (a, b, _, _)) in edges.iter().enumerate() {
            if a == &Node::Viaduct || b == &Node::Viaduct {
                continue;
            }
            let next = if a == &n {
                b
            } else if b == &n {
                a
            } else {
                continue;
            };
            if seen.insert(next.clone()) {
                prev.insert(next.clone(), (n.clone(), i));
                if next == &Node::Black {
                    let mut path = vec![node_name(&Node::Black)];
                    let mut cur = Node::Black;
                    let mut last_edge = i;
                    let mut first = true;
                    while let Some((p, e)) = prev.get(&cur) {
                        if first {
                            last_edge = *e;
                            first = false;
                        }
                        path.push(node_name(p));
                        cur = p.clone();
                    }
                    path.reverse();
                    let (_, _, span, field) = &edges[last_edge];
                    return Some((span.clone(), field.clone(), path.join(" - ")));
                }
                queue.push_back(next.clone());
            }
        }
    }
    None
}

fn image(v: &mut V<'_>, i: &Sp<RawImage>) -> Option<Image> {
    let t = "image";
    let size = v
        .req(&i.size, &i.span, t, "size")
        .and_then(|s| v.parse(s, "image.size", ByteSize::parse));
    let esp_size = match &i.esp_size {
        None => Some(ByteSize(256 << 20)),
        Some(s) => v.parse(s, "image.esp_size", |x| {
            let b = ByteSize::parse(x)?;
            if b < MIN_ESP {
                return Err(format!(
                    "`{x}` is too small for a FAT32 ESP (65525 clusters or more); use at least `{MIN_ESP}`"
                ));
            }
            if b.0 % (1 << 20) != 0 {
                return Err(match b.0.checked_next_multiple_of(1 << 20) {
                    Some(up) => format!(
                        "`{x}` is not a whole number of MiB (partitions are aligned to 1 MiB); use `{}`",
                        ByteSize(up)
                    ),
                    None => format!("`{x}` is not a whole number of MiB"),
                });
            }
            Ok(b)
        }),
    };
    let slots = match &i.slots {
        None => Some(Slots::Ab),
        Some(s) => v.one_of(
            s,
            "image.slots",
            &[("ab", Slots::Ab), ("single", Slots::Single)],
        ),
    };
    let mut qcow2 = false;
    let mut ok = true;
    for (j, f) in list(&i.formats).iter().enumerate() {
        match f.value.as_str() {
            "raw" => {}
            "qcow2" => qcow2 = true,
            other => {
                v.err(
                    &f.span,
                    format!("image.formats[{j}]"),
                    format!("unknown format `{other}`; use raw or qcow2"),
                );
                ok = false;
            }
        }
    }
    if let (Some(size), Some(esp), Some(s)) = (size, esp_size, &i.size) {
        // GPT needs 1 MiB at the start and 1 MiB (rounded) at the end.
        let need = esp.0 + (2 << 20);
        if size.0 < need {
            v.err(&s.span, "image.size", format!("disk size {size} cannot hold the {esp} ESP plus the partition tables; use at least `{}`", ByteSize(need)));
            ok = false;
        }
        if size.0 % (1 << 20) != 0 {
            v.err(
                &s.span,
                "image.size",
                "disk size must be a whole number of MiB",
            );
            ok = false;
        }
    }
    ok.then_some(())?;
    Some(Image {
        size: size?,
        esp_size: esp_size?,
        slots: slots?,
        qcow2,
    })
}

fn signing(path: &Path, s: &Sp<RawSigning>) -> Signing {
    let dir = path.parent().unwrap_or(Path::new("."));
    Signing {
        key: s.key.as_ref().map(|k| dir.join(&k.value)),
        public_key: s.public_key.as_ref().map(|k| dir.join(&k.value)),
        secure_boot: s.secure_boot.as_ref().is_some_and(|b| b.value),
    }
}

/// Addresses of a personality as `IpAddr`s (for the compiler).
pub fn addresses(p: &Personality) -> Vec<IpAddr> {
    p.addresses.iter().map(|a| a.addr).collect()
}
