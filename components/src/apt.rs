//! A private apt: `apt-get` with its own state, cache and configuration.
//!
//! [`AptContext::new`] lays out `<root>/` as
//! ```text
//! apt.conf            generated, passed via APT_CONFIG
//! etc/                Dir::Etc: sources.list.d/ (copied from the host),
//!                     empty apt.conf.d/ and preferences.d/
//! state/status        an EMPTY dpkg status: apt sees nothing installed
//! state/lists/        Packages indices (plain, Acquire::GzipIndexes=false)
//! cache/              Dir::Cache (pkgcache.bin …)
//! log/                Dir::Log
//! ```
//! The host's `apt.conf.d` is deliberately *not* read: on Debian images it
//! holds hooks such as docker-clean's `APT::Update::Post-Invoke` that delete
//! files in `/var/cache/apt`. Host sources (`sources.list`,
//! `sources.list.d/*.list|*.sources`) are copied at construction, without
//! their backports suites (image components come from the stable release;
//! a host may carry `bookworm-backports` for its own tools); keyrings
//! are referenced read-only (`Signed-By:` paths, `/etc/apt/trusted.gpg*`).
//! `Debug::NoLocking` avoids `/var/lib/dpkg/lock`, `APT::Sandbox::User=root`
//! keeps apt from handing the private directories to `_apt` when run as
//! root (it is ignored otherwise). So no root is needed and the host's
//! package state (`/var/lib/apt`, `/var/cache/apt`, `/var/lib/dpkg`) is never
//! changed — the integration tests check this.
//!
//! Concurrency: one [`AptContext`] serialises its own apt-get runs; contexts
//! made in one process refresh their configuration one at a time; two
//! processes must not use the same root at the same time (apt's own lock is
//! disabled); distinct roots are independent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::digest::Sha256Digest;
use crate::index::{Index, ARCH};
use crate::{io_err, user_cache_dir, Error};

/// When the private package indices are refreshed (`apt-get update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Refresh unless the indices were refreshed less than this long ago from
    /// the host's current sources (the default: [`MAX_INDEX_AGE`]).
    IfOlderThan(Duration),
    /// Always refresh.
    Always,
    /// Never refresh (offline): use the indices as they are.
    Never,
}

/// How old the indices may be before a build refreshes them: Debian
/// publishes security updates several times a day.
pub const MAX_INDEX_AGE: Duration = Duration::from_secs(3600);

impl Default for Refresh {
    fn default() -> Self {
        Refresh::IfOlderThan(MAX_INDEX_AGE)
    }
}

/// Where the host keeps its apt configuration (sources, trusted keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostApt {
    /// Normally `/etc/apt`.
    pub etc: PathBuf,
}

impl Default for HostApt {
    fn default() -> Self {
        Self {
            etc: PathBuf::from("/etc/apt"),
        }
    }
}

/// A private apt installation rooted in one directory.
#[derive(Debug)]
pub struct AptContext {
    root: PathBuf,
    /// SHA-256 (hex) of the copied host sources.
    sources: String,
    index: Mutex<Option<Arc<Index>>>,
    /// Serialises this context's apt-get runs (apt's own lock is disabled).
    apt: Mutex<()>,
}

impl AptContext {
    /// Creates (or refreshes) a private apt under `root`, using the host's
    /// sources from `/etc/apt`.
    pub fn new(root: &Path) -> Result<Self, Error> {
        Self::with_host(root, &HostApt::default())
    }

    /// The default root: `$XDG_CACHE_HOME/appliance/apt` or
    /// `~/.cache/appliance/apt`.
    pub fn default_root() -> Option<PathBuf> {
        user_cache_dir().map(|d| d.join("apt"))
    }

    /// Like [`AptContext::new`] with another host configuration directory.
    pub fn with_host(root: &Path, host: &HostApt) -> Result<Self, Error> {
        let root = if root.is_absolute() {
            root.to_owned()
        } else {
            std::env::current_dir()
                .map_err(io_err("resolving current directory for", root))?
                .join(root)
        };
        // Two contexts on one root in this process (parallel tests, builds) must
        // not refresh its configuration at the same time: one lists the sources
        // while the other removes them.
        static SETUP: Mutex<()> = Mutex::new(());
        let _setup = SETUP.lock().unwrap_or_else(|e| e.into_inner());
        for d in [
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/sources.list.d",
            "state/lists/partial",
            "cache/archives/partial",
            "log",
        ] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err("creating directory", &p))?;
        }
        // Sources: replace our copy with the host's current ones.
        let ours = root.join("etc/sources.list.d");
        for e in std::fs::read_dir(&ours).map_err(io_err("listing", &ours))? {
            let p = e.map_err(io_err("listing", &ours))?.path();
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err("removing", &p)(e));
                }
                _ => {}
            }
        }
        let mut copied = 0;
        let main_list = host.etc.join("sources.list");
        if main_list.is_file() {
            let dst = ours.join("host-sources.list");
            if copy_without_backports(&main_list, &dst)? {
                copied += 1;
            }
        }
        let parts = host.etc.join("sources.list.d");
        if parts.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&parts)
                .map_err(io_err("listing", &parts))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|x| x.to_str()),
                        Some("list" | "sources")
                    )
                })
                .collect();
            entries.sort();
            for src in entries {
                let Some(name) = src.file_name() else {
                    continue;
                };
                let dst = ours.join(name);
                if copy_without_backports(&src, &dst)? {
                    copied += 1;
                }
            }
        }
        if copied == 0 {
            return Err(Error::BadRequest(format!(
                "no apt sources found in {} (sources.list or sources.list.d/*.sources): configure a Debian 12 mirror on the host",
                host.etc.display()
            )));
        }
        // The sources' identity, so that changed sources make the indices stale.
        let mut sources = Sha256::new();
        let mut copied_files: Vec<PathBuf> = std::fs::read_dir(&ours)
            .map_err(io_err("listing", &ours))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        copied_files.sort();
        for f in &copied_files {
            sources.update(f.file_name().unwrap_or_default().as_encoded_bytes());
            sources.update([0]);
            sources.update(std::fs::read(f).map_err(io_err("reading", f))?);
            sources.update([0]);
        }
        let sources = hex::encode(sources.finalize());
        let status = root.join("state/status");
        std::fs::write(&status, b"").map_err(io_err("writing", &status))?;
        let q = |p: &Path| {
            p.display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
        };
        let conf = format!(
            "// Generated by the `components` crate: a private apt that never touches the host's state.\n\
Dir \"/\";\n\
Dir::State \"{state}\";\n\
Dir::State::lists \"{state}/lists/\";\n\
Dir::State::status \"{state}/status\";\n\
Dir::Cache \"{cache}\";\n\
Dir::Cache::archives \"{cache}/archives/\";\n\
Dir::Etc \"{etc}\";\n\
Dir::Etc::main \"/dev/null\";\n\
Dir::Etc::Parts \"{etc}/apt.conf.d\";\n\
Dir::Etc::SourceList \"/dev/null\";\n\
Dir::Etc::SourceParts \"{etc}/sources.list.d\";\n\
Dir::Etc::Preferences \"/dev/null\";\n\
Dir::Etc::PreferencesParts \"{etc}/preferences.d\";\n\
Dir::Etc::Trusted \"{host}/trusted.gpg\";\n\
Dir::Etc::TrustedParts \"{host}/trusted.gpg.d\";\n\
Dir::Log \"{log}\";\n\
Debug::NoLocking \"true\";\n\
APT::Sandbox::User \"root\";\n\
APT::Architecture \"{ARCH}\";\n\
APT::Architectures {{ \"{ARCH}\"; }};\n\
APT::Get::AllowUnauthenticated \"false\";\n\
Acquire::AllowInsecureRepositories \"false\";\n\
Acquire::Languages \"none\";\n\
Acquire::GzipIndexes \"false\";\n\
Acquire::PDiffs \"false\";\n\
Acquire::Retries \"3\";\n",
            state = q(&root.join("state")),
            cache = q(&root.join("cache")),
            etc = q(&root.join("etc")),
            log = q(&root.join("log")),
            host = q(&host.etc),
        );
        let conf_path = root.join("apt.conf");
        std::fs::write(&conf_path, conf).map_err(io_err("writing", &conf_path))?;
        Ok(Self {
            root,
            sources,
            index: Mutex::new(None),
            apt: Mutex::new(()),
        })
    }

    /// The private root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The private lists directory.
    pub fn lists_dir(&self) -> PathBuf {
        self.root.join("state/lists")
    }

    /// Whether `update` has produced Packages indices.
    pub fn has_indices(&self) -> bool {
        std::fs::read_dir(self.lists_dir()).is_ok_and(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
        })
    }

    /// An `apt-get` command configured for this context (environment
    /// cleared of locale and apt variables).
    pub fn apt_get(&self) -> Command {
        let mut c = Command::new("apt-get");
        c.env("APT_CONFIG", self.root.join("apt.conf"))
            .env("LC_ALL", "C.UTF-8")
            .env_remove("LANGUAGE")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .arg("-q");
        c
    }

    /// Runs `apt-get update` into the private state and drops the cached index.
    pub fn update(&self) -> Result<(), Error> {
        let mut c = self.apt_get();
        c.arg("update");
        {
            let _serial = self.apt.lock().map_err(|_| poisoned())?;
            let stamp = self.stamp();
            // A failed update must not leave a fresh-looking stamp behind.
            let _ = std::fs::remove_file(&stamp);
            run(c, "apt-get update")?;
            std::fs::write(&stamp, format!("{}\n", self.sources))
                .map_err(io_err("writing", &stamp))?;
        }
        if let Ok(mut g) = self.index.lock() {
            *g = None;
        }
        Ok(())
    }

    /// Records when, and from which sources, the indices were last refreshed.
    fn stamp(&self) -> PathBuf {
        self.root.join("state/refreshed")
    }

    /// How long ago the indices were refreshed from the host's current
    /// sources; `None` when there are none, or they came from other sources.
    pub fn indices_age(&self) -> Option<Duration> {
        if !self.has_indices() {
            return None;
        }
        let stamp = self.stamp();
        let text = std::fs::read_to_string(&stamp).ok()?;
        if text.trim() != self.sources {
            return None;
        }
        let modified = std::fs::metadata(&stamp).and_then(|m| m.modified()).ok()?;
        Some(
            SystemTime::now()
                .duration_since(modified)
                .unwrap_or(Duration::ZERO),
        )
    }

    /// Whether [`AptContext::refresh`] with `policy` would run `apt-get update`.
    pub fn needs_refresh(&self, policy: Refresh) -> bool {
        match policy {
            Refresh::Always => true,
            Refresh::Never => false,
            Refresh::IfOlderThan(max) => self.indices_age().is_none_or(|age| age >= max),
        }
    }

    /// Refreshes the indices as `policy` says; returns whether it ran
    /// `apt-get update`. With [`Refresh::Never`] and no indices at all, fails
    /// with [`Error::NoIndices`].
    pub fn refresh(&self, policy: Refresh) -> Result<bool, Error> {
        let needed = self.needs_refresh(policy);
        if needed {
            self.update()?;
        } else if !self.has_indices() {
            return Err(Error::NoIndices {
                lists: self.lists_dir(),
            });
        }
        Ok(needed)
    }

    /// A digest naming the current indices: the suites' signed Release files
    /// (which carry the digest of every index), by file name and content.
    pub fn indices_id(&self) -> Result<Sha256Digest, Error> {
        let lists = self.lists_dir();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&lists)
            .map_err(io_err("listing", &lists))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with("_InRelease") || n.ends_with("_Release"))
            })
            .collect();
        files.sort();
        let mut h = Sha256::new();
        for f in &files {
            h.update(f.file_name().unwrap_or_default().as_encoded_bytes());
            h.update([0]);
            h.update(Sha256::digest(
                std::fs::read(f).map_err(io_err("reading", f))?,
            ));
        }
        Ok(Sha256Digest(h.finalize().into()))
    }

    /// Downloads `uri` (http, https or file, through apt's own transports and
    /// proxy settings) to `target`, checking its SHA-256 on the way.
    pub fn download_uri(
        &self,
        uri: &str,
        target: &Path,
        sha256: &Sha256Digest,
    ) -> Result<(), Error> {
        let mut c = Command::new("/usr/lib/apt/apt-helper");
        c.env("APT_CONFIG", self.root.join("apt.conf"))
            .env("LC_ALL", "C.UTF-8")
            .env_remove("LANGUAGE")
            .arg("download-file")
            .arg(uri)
            .arg(target)
            .arg(format!("SHA256:{}", sha256.to_hex()));
        let _serial = self.apt.lock().map_err(|_| poisoned())?;
        run(c, &format!("apt-helper download-file {uri}"))
    }

    /// The parsed Packages indices (loaded once per update).
    pub fn index(&self) -> Result<Arc<Index>, Error> {
        let mut g = self.index.lock().map_err(|_| poisoned())?;
        if let Some(i) = g.as_ref() {
            return Ok(Arc::clone(i));
        }
        let idx = Arc::new(Index::load(&self.lists_dir())?);
        *g = Some(Arc::clone(&idx));
        Ok(idx)
    }

    /// `apt-get download` of `specs` (`name:arch=version`) into `dir`.
    pub fn download(&self, specs: &[String], dir: &Path) -> Result<(), Error> {
        if specs.is_empty() {
            return Ok(());
        }
        let mut c = self.apt_get();
        c.current_dir(dir).arg("download").args(specs);
        let _serial = self.apt.lock().map_err(|_| poisoned())?;
        run(c, &format!("apt-get download {}", specs.join(" ")))
    }
}

fn poisoned() -> Error {
    Error::BadRequest(
        "an earlier package download in this run failed unexpectedly; run the command again".into(),
    )
}

fn run(mut c: Command, shown: &str) -> Result<(), Error> {
    let out = c.output().map_err(|source| Error::AptMissing {
        program: "apt-get".into(),
        source,
    })?;
    // apt-get update exits 0 on some fetch failures but reports them as "E:"/"W:" lines.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed_fetch = stderr
        .lines()
        .any(|l| l.starts_with("E:") || l.starts_with("W: Failed to fetch"));
    if !out.status.success() || failed_fetch {
        return Err(Error::AptFailed {
            command: shown.to_owned(),
            status: out.status.to_string(),
            stderr: stderr.trim().to_owned(),
        });
    }
    Ok(())
}

/// Copies an apt sources file (`.list` one-line style, or deb822 `.sources`)
/// without its backports suites (`*-backports`): a one-line entry naming one
/// is dropped, a deb822 stanza loses them from `Suites:` and is dropped when
/// none is left. `false` (nothing written) when nothing is left.
fn copy_without_backports(src: &Path, dst: &Path) -> Result<bool, Error> {
    let text = std::fs::read_to_string(src).map_err(io_err("reading", src))?;
    let deb822 = src.extension().and_then(|x| x.to_str()) == Some("sources");
    let kept = if deb822 {
        deb822_without_backports(&text)
    } else {
        one_line_without_backports(&text)
    };
    if kept.trim().is_empty() {
        return Ok(false);
    }
    std::fs::write(dst, kept).map_err(io_err("writing", dst))?;
    Ok(true)
}

fn is_backports(suite: &str) -> bool {
    suite.ends_with("-backports") || suite.ends_with("-backports-sloppy")
}

/// One-line sources without the lines whose suite is a backports one.
fn one_line_without_backports(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("deb") {
            // `deb [options] URI SUITE COMPONENTS…`: options may hold spaces.
            let rest = match t.find('[') {
                Some(open) => match t[open..].find(']') {
                    Some(close) => format!("{} {}", &t[..open], &t[open + close + 1..]),
                    None => t.to_string(),
                },
                None => t.to_string(),
            };
            if rest.split_whitespace().nth(2).is_some_and(is_backports) {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// deb822 sources without backports suites; a stanza left without a suite
/// is dropped.
fn deb822_without_backports(text: &str) -> String {
    let mut out = String::new();
    for stanza in text.split("\n\n") {
        let mut lines = Vec::new();
        let mut has_suites = false;
        let mut suites_left = false;
        for line in stanza.lines() {
            if line.to_ascii_lowercase().starts_with("suites:") {
                has_suites = true;
                let keep: Vec<&str> = line["suites:".len()..]
                    .split_whitespace()
                    .filter(|s| !is_backports(s))
                    .collect();
                suites_left = !keep.is_empty();
                lines.push(format!("Suites: {}", keep.join(" ")));
            } else {
                lines.push(line.to_string());
            }
        }
        if has_suites && !suites_left {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&lines.join("\n"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backports_suites_are_left_out_of_the_private_sources() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates bookworm-backports\nComponents: main\n\n\
                      Types: deb\n# a comment\nURIs: http://deb.debian.org/debian\nsuites: bookworm-backports\nComponents: main\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n";
        let kept = deb822_without_backports(deb822);
        assert_eq!(
            kept,
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
             Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n"
        );
        assert!(deb822_without_backports(
            "Types: deb\nURIs: x\nSuites: bookworm-backports\nComponents: main\n"
        )
        .trim()
        .is_empty());
        let list = "deb http://deb.debian.org/debian bookworm main\n\
                    deb [signed-by=/k a.gpg] http://deb.debian.org/debian bookworm-backports main\n\
                    # deb http://x bookworm-backports main\n\
                    deb-src http://deb.debian.org/debian bookworm-backports main\n\
                    deb http://deb.debian.org/debian-security bookworm-security main\n";
        assert_eq!(
            one_line_without_backports(list),
            "deb http://deb.debian.org/debian bookworm main\n\
             # deb http://x bookworm-backports main\n\
             deb http://deb.debian.org/debian-security bookworm-security main\n"
        );
    }
}
