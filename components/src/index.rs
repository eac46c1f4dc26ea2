//! The archive's Packages indices and dependency resolution.
//!
//! [`Index`] holds every binary package of the configured suites (amd64 and
//! `all`), read from the plain `*_Packages` files `apt-get update` leaves in
//! the lists directory, plus each suite's Release `Date:`.
//!
//! Resolution rules ([`Index::resolve`]), chosen to be deterministic and
//! independent of the order in which packages are visited:
//! - each package name has one *candidate*: its highest version by dpkg
//!   ordering (what apt picks with default pins); ties between suites go to
//!   the lexicographically first index file;
//! - `Pre-Depends` and `Depends` are followed; `Recommends`/`Suggests` are not;
//! - for `a | b | c`, the first alternative that is excluded (the caller
//!   promises the base system covers it) or satisfiable wins;
//! - an alternative is satisfied by the candidate of that name if it meets
//!   the version constraint, else by a package whose candidate `Provides` it
//!   (versioned provides for versioned dependencies). Among several
//!   providers, a root package wins, then an excluded one (no package added),
//!   then the smallest name;
//! - the result is sorted by name.
//!
//! Nothing here panics on malformed indices: bad fields are errors naming
//! the file and line.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use crate::digest::Sha256Digest;
use crate::version::{PackageName, Relation, Version};
use crate::{deb822, io_err, Error};

/// The architecture we build for.
pub const ARCH: &str = "amd64";

/// One binary package version from a Packages index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Package name.
    pub name: PackageName,
    /// Version.
    pub version: Version,
    /// `amd64` or `all`.
    pub architecture: String,
    /// Path in the archive (`pool/main/…`).
    pub filename: String,
    /// Size of the `.deb` in bytes.
    pub size: u64,
    /// SHA-256 of the `.deb`.
    pub sha256: Sha256Digest,
    /// Raw `Depends`.
    pub depends: String,
    /// Raw `Pre-Depends`.
    pub pre_depends: String,
    /// Raw `Provides`.
    pub provides: String,
    /// Which Release (suite) this record came from: index into [`Index::releases`].
    pub release: usize,
}

/// A suite's Release file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The InRelease/Release file in the lists directory.
    pub file: PathBuf,
    /// Its `Suite:` (or `Codename:`).
    pub suite: String,
    /// Its `Date:` as seconds since the Unix epoch.
    pub date: u64,
}

/// All packages of the configured suites.
#[derive(Debug, Default)]
pub struct Index {
    packages: HashMap<String, Vec<Package>>,
    providers: HashMap<String, Vec<(String, Option<Version>)>>,
    releases: Vec<Release>,
}

/// One dependency alternative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    /// Package (or virtual package) name, without an arch qualifier.
    pub name: String,
    /// Version constraint.
    pub constraint: Option<(Relation, Version)>,
}

/// Parses a `Depends`-style field into clauses of alternatives. Alternatives
/// restricted to other architectures (`[!amd64]`, `[arm64]`) are dropped;
/// build profiles (`<…>`) are ignored.
pub fn parse_depends(field: &str) -> Result<Vec<Vec<Dep>>, String> {
    let mut out = Vec::new();
    for clause in field.split(',') {
        if clause.trim().is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for alt in clause.split('|') {
            if let Some(dep) = parse_alt(alt.trim())? {
                alts.push(dep);
            }
        }
        if !alts.is_empty() {
            out.push(alts);
        }
    }
    Ok(out)
}

fn parse_alt(s: &str) -> Result<Option<Dep>, String> {
    let end = s
        .find(|c: char| c.is_whitespace() || "([<".contains(c))
        .unwrap_or(s.len());
    let (name, mut rest) = s.split_at(end);
    let name = name.split(':').next().unwrap_or("");
    if name.is_empty() {
        return Err(format!("empty package name in dependency {s:?}"));
    }
    let mut constraint = None;
    rest = rest.trim_start();
    if let Some(r) = rest.strip_prefix('(') {
        let close = r
            .find(')')
            .ok_or_else(|| format!("unclosed '(' in dependency {s:?}"))?;
        let inner = r[..close].trim();
        let op_end = inner
            .find(|c: char| !"<>=".contains(c))
            .unwrap_or(inner.len());
        let (op, ver) = inner.split_at(op_end);
        let rel = Relation::parse(op).ok_or_else(|| format!("bad relation {op:?} in {s:?}"))?;
        let ver = Version::new(ver.trim()).map_err(|e| e.to_string())?;
        constraint = Some((rel, ver));
        rest = r[close + 1..].trim_start();
    }
    if let Some(r) = rest.strip_prefix('[') {
        let close = r
            .find(']')
            .ok_or_else(|| format!("unclosed '[' in dependency {s:?}"))?;
        let archs: Vec<&str> = r[..close].split_whitespace().collect();
        let negated = archs.iter().any(|a| a.starts_with('!'));
        let matches = |a: &str| a == ARCH || a == "any" || a == "linux-any" || a == "any-amd64";
        let applies = if negated {
            !archs
                .iter()
                .any(|a| a.strip_prefix('!').is_some_and(matches))
        } else {
            archs.iter().any(|a| matches(a))
        };
        if !applies {
            return Ok(None);
        }
    }
    Ok(Some(Dep {
        name: name.to_owned(),
        constraint,
    }))
}

/// Parses an RFC 2822 date as found in Release files
/// (`Sat, 11 Jul 2026 10:16:37 UTC`) into Unix seconds.
pub fn parse_release_date(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.split_once(',').map_or(s, |(_, r)| r).trim();
    let mut it = s.split_whitespace();
    let day: u64 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let sec: i64 = hms.next()?.parse().ok()?;
    let offset = match it.next() {
        None | Some("UTC" | "GMT" | "Z") => 0i64,
        Some(z) => {
            let (sign, digits) = match z.as_bytes().first()? {
                b'+' => (1, &z[1..]),
                b'-' => (-1, &z[1..]),
                _ => return None,
            };
            if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let hh: i64 = digits[..2].parse().ok()?;
            let mm: i64 = digits[2..].parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
    };
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || !(1970..=9999).contains(&year) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let t = days * 86400 + h * 3600 + m * 60 + sec - offset;
    u64::try_from(t).ok()
}

enum Sat<'a> {
    Excluded,
    By(&'a Package),
}

impl Index {
    /// Reads every `*_Packages` file (and `*InRelease`/`*_Release`) in `lists`.
    pub fn load(lists: &Path) -> Result<Self, Error> {
        let rd = std::fs::read_dir(lists).map_err(io_err("listing", lists))?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let name = |p: &Path| {
            p.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_owned()
        };
        let mut idx = Index::default();
        for f in files.iter().filter(|f| {
            let n = name(f);
            n.ends_with("_InRelease") || n.ends_with("_Release")
        }) {
            let text = std::fs::read_to_string(f).map_err(io_err("reading", f))?;
            let field = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':')))
                    .map(|v| v.trim().to_owned())
            };
            let date = field("Date")
                .as_deref()
                .and_then(parse_release_date)
                .ok_or_else(|| Error::IndexSyntax {
                    file: f.display().to_string(),
                    line: 1,
                    message: "Release file without a valid `Date:` field".into(),
                })?;
            let suite = field("Suite")
                .or_else(|| field("Codename"))
                .unwrap_or_default();
            idx.releases.push(Release {
                file: f.clone(),
                suite,
                date,
            });
        }
        let packages: Vec<&PathBuf> = files
            .iter()
            .filter(|f| name(f).ends_with("_Packages"))
            .collect();
        if packages.is_empty() {
            return Err(Error::NoIndices {
                lists: lists.to_owned(),
            });
        }
        for f in packages {
            let n = name(f);
            // The Release whose file-name prefix is the longest prefix of this index.
            let release = idx
                .releases
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let rn = name(&r.file);
                    let prefix = rn
                        .strip_suffix("InRelease")
                        .or_else(|| rn.strip_suffix("Release"))?;
                    n.starts_with(prefix).then_some((prefix.len(), i))
                })
                .max()
                .map(|(_, i)| i)
                .ok_or_else(|| Error::IndexSyntax {
                    file: f.display().to_string(),
                    line: 1,
                    message:
                        "no Release file for this index in the lists directory; run update again"
                            .into(),
                })?;
            let text = std::fs::read_to_string(f).map_err(io_err("reading", f))?;
            idx.add_packages(&text, &f.display().to_string(), release)?;
        }
        idx.finish();
        Ok(idx)
    }

    /// Builds an index from Packages text (tests, offline use). All records
    /// belong to one release with the given `date`.
    pub fn from_packages_text(text: &str, date: u64) -> Result<Self, Error> {
        let mut idx = Index {
            releases: vec![Release {
                file: PathBuf::from("<memory>"),
                suite: "memory".into(),
                date,
            }],
            ..Index::default()
        };
        idx.add_packages(text, "<memory>", 0)?;
        idx.finish();
        Ok(idx)
    }

    fn add_packages(&mut self, text: &str, file: &str, release: usize) -> Result<(), Error> {
        for p in deb822::parse(text, file)? {
            let err = |message: String| Error::IndexSyntax {
                file: file.to_owned(),
                line: p.line,
                message,
            };
            let need = |k: &str| p.get(k).ok_or_else(|| err(format!("missing field `{k}`")));
            let arch = need("Architecture")?;
            if arch != ARCH && arch != "all" {
                continue;
            }
            let name = PackageName::new(need("Package")?).map_err(|e| err(e.to_string()))?;
            let version = Version::new(need("Version")?).map_err(|e| err(e.to_string()))?;
            let size = need("Size")?
                .parse::<u64>()
                .map_err(|e| err(format!("bad Size: {e}")))?;
            let sha256 = Sha256Digest::from_hex(need("SHA256")?).map_err(|e| err(e.to_string()))?;
            let pkg = Package {
                name,
                version,
                architecture: arch.to_owned(),
                filename: need("Filename")?.to_owned(),
                size,
                sha256,
                depends: p.get("Depends").unwrap_or("").to_owned(),
                pre_depends: p.get("Pre-Depends").unwrap_or("").to_owned(),
                provides: p.get("Provides").unwrap_or("").to_owned(),
                release,
            };
            let list = self
                .packages
                .entry(pkg.name.as_str().to_owned())
                .or_default();
            if !list
                .iter()
                .any(|q| q.version == pkg.version && q.architecture == pkg.architecture)
            {
                list.push(pkg);
            }
        }
        Ok(())
    }

    fn finish(&mut self) {
        let mut providers: HashMap<String, Vec<(String, Option<Version>)>> = HashMap::new();
        for list in self.packages.values_mut() {
            // Highest version first; stable sort keeps the first index file's record on ties.
            list.sort_by(|a, b| b.version.cmp(&a.version));
            if let Some(c) = list.first() {
                // Malformed Provides are ignored here and reported if the package is used.
                if let Ok(clauses) = parse_depends(&c.provides) {
                    for d in clauses.into_iter().flatten() {
                        let ver = match d.constraint {
                            Some((Relation::Eq, v)) => Some(v),
                            _ => None,
                        };
                        providers
                            .entry(d.name)
                            .or_default()
                            .push((c.name.as_str().to_owned(), ver));
                    }
                }
            }
        }
        for v in providers.values_mut() {
            v.sort();
            v.dedup();
        }
        self.providers = providers;
    }

    /// The suites' Release files.
    pub fn releases(&self) -> &[Release] {
        &self.releases
    }

    /// Number of distinct package names.
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// The candidate (highest version) of `name`.
    pub fn candidate(&self, name: &str) -> Option<&Package> {
        self.packages.get(name).and_then(|l| l.first())
    }

    /// All versions of `name`, highest first.
    pub fn versions(&self, name: &str) -> &[Package] {
        self.packages.get(name).map_or(&[], |l| l.as_slice())
    }

    /// Names close to `name` (for error messages).
    pub fn suggestions(&self, name: &str) -> Vec<String> {
        let mut names: Vec<&str> = self.packages.keys().map(String::as_str).collect();
        names.sort_unstable();
        crate::close_names(name, names.into_iter())
    }

    fn satisfy<'s>(
        &'s self,
        dep: &Dep,
        excludes: &BTreeSet<String>,
        preferred: &BTreeSet<String>,
    ) -> Option<Sat<'s>> {
        if excludes.contains(&dep.name) {
            return Some(Sat::Excluded);
        }
        if let Some(c) = self.candidate(&dep.name) {
            if dep
                .constraint
                .as_ref()
                .is_none_or(|(rel, v)| rel.holds(&c.version, v))
            {
                return Some(Sat::By(c));
            }
        }
        let provs: Vec<&str> = self
            .providers
            .get(&dep.name)
            .map(|v| {
                v.iter()
                    .filter(|(_, pv)| match (&dep.constraint, pv) {
                        (None, _) => true,
                        (Some((rel, want)), Some(have)) => rel.holds(have, want),
                        (Some(_), None) => false,
                    })
                    .map(|(n, _)| n.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let pick = provs
            .iter()
            .find(|p| preferred.contains(**p))
            .or_else(|| provs.iter().find(|p| excludes.contains(**p)))
            .or_else(|| provs.first())?;
        if excludes.contains(*pick) {
            return Some(Sat::Excluded);
        }
        self.candidate(pick).map(Sat::By)
    }

    /// The dependency closure of `roots`, sorted by name. `excludes` are never
    /// added (dependencies on them count as satisfied); `preferred` breaks
    /// ties between providers of a virtual package (pass all roots of the
    /// lock request).
    pub fn resolve(
        &self,
        roots: &[String],
        excludes: &BTreeSet<String>,
        preferred: &BTreeSet<String>,
    ) -> Result<Vec<Package>, Error> {
        let mut chosen: BTreeMap<String, &Package> = BTreeMap::new();
        let mut queue: VecDeque<&Package> = VecDeque::new();
        for r in roots {
            let dep = Dep {
                name: r.clone(),
                constraint: None,
            };
            match self.satisfy(&dep, excludes, preferred) {
                Some(Sat::By(p)) => {
                    if chosen.insert(p.name.as_str().to_owned(), p).is_none() {
                        queue.push_back(p);
                    }
                }
                Some(Sat::Excluded) => {
                    return Err(Error::ExcludedRoot {
                        name: r.clone(),
                        group: String::new(),
                    })
                }
                None => {
                    return Err(Error::UnknownPackage {
                        name: r.clone(),
                        suggestions: self.suggestions(r),
                    })
                }
            }
        }
        while let Some(p) = queue.pop_front() {
            for field in [&p.pre_depends, &p.depends] {
                let clauses = parse_depends(field).map_err(|m| Error::IndexSyntax {
                    file: format!("Packages index, {} {}", p.name, p.version),
                    line: 1,
                    message: m,
                })?;
                for alts in clauses {
                    let sat = alts
                        .iter()
                        .find_map(|d| self.satisfy(d, excludes, preferred))
                        .ok_or_else(|| Error::Unsatisfiable {
                            package: format!("{} {}", p.name, p.version),
                            dependency: field
                                .split(',')
                                .map(str::trim)
                                .find(|c| {
                                    c.split('|')
                                        .any(|a| a.trim().starts_with(alts[0].name.as_str()))
                                })
                                .unwrap_or(alts[0].name.as_str())
                                .to_owned(),
                        })?;
                    if let Sat::By(q) = sat {
                        if !chosen.contains_key(q.name.as_str()) {
                            chosen.insert(q.name.as_str().to_owned(), q);
                            queue.push_back(q);
                        }
                    }
                }
            }
        }
        Ok(chosen.into_values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn pkg(name: &str, ver: &str, arch: &str, extra: &str) -> String {
        format!(
            "Package: {name}\nVersion: {ver}\nArchitecture: {arch}\nFilename: pool/{name}_{ver}.deb\nSize: 10\nSHA256: {SHA}\n{extra}\n"
        )
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn names(p: &[Package]) -> Vec<String> {
        p.iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect()
    }

    fn sample() -> Index {
        let text = [
            pkg("app", "1.0", "amd64", "Depends: libfoo (>= 2), awk | mawk, debconf (>= 0.5) | debconf-2.0\nPre-Depends: libc6 (>= 2.36)"),
            pkg("libfoo", "2.0", "amd64", "Depends: libc6"),
            pkg("libfoo", "10.0", "amd64", "Depends: libc6, libbar [arm64]"),
            pkg("libfoo", "3.0", "i386", ""),
            pkg("libc6", "2.36-9+deb12u4", "amd64", "Depends: libgcc-s1"),
            pkg("libc6", "2.36-9+deb12u10", "amd64", "Depends: libgcc-s1"),
            pkg("libgcc-s1", "12.2.0-14", "amd64", ""),
            pkg("mawk", "1.3.4", "amd64", "Provides: awk"),
            pkg("gawk", "5.2", "amd64", "Provides: awk"),
            pkg("cdebconf", "0.270", "amd64", "Provides: debconf-2.0"),
            pkg("old", "1", "amd64", "Depends: libc6 (<< 2.0)"),
            pkg("docs", "1", "all", ""),
        ]
        .join("\n");
        Index::from_packages_text(&text, 0).unwrap()
    }

    #[test]
    fn depends_parsing() {
        let d = parse_depends("a (>= 1.0), b:any | c (<< 2~) [!amd64], d [arm64], e <!nocheck>")
            .unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0][0].name, "a");
        assert_eq!(d[1].len(), 1, "c is arch-restricted away: {d:?}");
        assert_eq!(d[1][0].name, "b");
        assert_eq!(d[2][0].name, "e");
        assert!(parse_depends("a (>= 1").is_err());
        assert!(parse_depends("a (~~ 1)").is_err());
    }

    #[test]
    fn closure_picks_highest_and_providers() {
        let idx = sample();
        let got = idx
            .resolve(&["app".into()], &set(&["debconf"]), &set(&["app"]))
            .unwrap();
        assert_eq!(
            names(&got),
            vec![
                "app=1.0",
                "gawk=5.2",
                "libc6=2.36-9+deb12u10",
                "libfoo=10.0",
                "libgcc-s1=12.2.0-14",
            ]
        );
    }

    #[test]
    fn preferred_provider_wins() {
        let idx = sample();
        let got = idx
            .resolve(&["app".into()], &set(&["debconf"]), &set(&["mawk"]))
            .unwrap();
        assert!(
            names(&got).contains(&"mawk=1.3.4".to_owned()),
            "{:?}",
            names(&got)
        );
        // Excluding the first alternative's providers: debconf excluded -> cdebconf not pulled.
        assert!(!names(&got).iter().any(|n| n.starts_with("cdebconf")));
    }

    #[test]
    fn unsatisfiable_and_unknown() {
        let idx = sample();
        let e = idx
            .resolve(&["old".into()], &set(&[]), &set(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("libc6 (<< 2.0)"), "{e}");
        let e = idx
            .resolve(&["lbfoo".into()], &set(&[]), &set(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lbfoo") && e.contains("libfoo"), "{e}");
        let e = idx
            .resolve(&["libc6".into()], &set(&["libc6"]), &set(&[]))
            .unwrap_err();
        assert!(matches!(e, Error::ExcludedRoot { .. }));
    }

    #[test]
    fn release_dates() {
        assert_eq!(parse_release_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_release_date("Sat, 10 Jun 2023 08:55:14 UTC"),
            Some(1_686_387_314)
        );
        assert_eq!(
            parse_release_date("Sat, 10 Jun 2023 10:55:14 +0200"),
            Some(1_686_387_314)
        );
        assert_eq!(
            parse_release_date("Sat, 29 Feb 2024 00:00:00 UTC"),
            Some(1_709_164_800)
        );
        assert_eq!(parse_release_date("garbage"), None);
        assert_eq!(parse_release_date("Sat, 10 Foo 2023 08:55:14 UTC"), None);
    }

    proptest::proptest! {
        #[test]
        fn depends_never_panics(s in ".{0,80}") {
            let _ = parse_depends(&s);
        }
        #[test]
        fn dates_never_panic(s in ".{0,40}") {
            let _ = parse_release_date(&s);
        }
        #[test]
        fn index_never_panics(s in "(Package|Version|Architecture|Size|SHA256|Filename|Depends)?:? ?[a-z0-9 .:()<>=|,\n]{0,200}") {
            if let Ok(idx) = Index::from_packages_text(&s, 0) {
                let _ = idx.resolve(&["a".into()], &BTreeSet::new(), &BTreeSet::new());
            }
        }
    }
}
