//! `.deb` reading in Rust: `ar` container, xz/zstd/gzip/plain tar members.
//!
//! [`Deb::parse`] validates the `ar` structure (`debian-binary` first with a
//! `2.x` format, then `control.tar[.xz|.zst|.gz]` and `data.tar[…]`; members
//! whose names start with `_` are ignored as dpkg does) and borrows the
//! members; decompression happens when entries are read.
//!
//! Invariants of every [`Entry`] handed out: `path` is relative, UTF-8,
//! `/`-separated, has no empty, `.` or `..` component and no leading `/`
//! (archives with `..` or absolute paths are rejected with
//! [`Error::UnsafePath`]); hard-link targets obey the same rule; modes are
//! masked to `0o7777`. Device nodes and FIFOs are refused (no Debian package
//! we use ships them). Each member decompresses to at most
//! [`MAX_MEMBER_BYTES`], so a decompression bomb is an error, not an OOM.
//!
//! Nothing here panics on malformed input: every failure is an [`Error`].

use std::io::{self, Read};
use std::path::Path;

use crate::deb822;
use crate::{io_err, Error};

/// Upper bound on the decompressed size of one member.
pub const MAX_MEMBER_BYTES: u64 = 4 << 30;

const AR_MAGIC: &[u8] = b"!<arch>\n";
const AR_HEADER: usize = 60;

/// How a member is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// xz.
    Xz,
    /// zstd.
    Zstd,
}

/// A parsed `.deb` borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Deb<'a> {
    control: (&'a [u8], Compression),
    data: (&'a [u8], Compression),
}

/// What an entry is.
#[derive(Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File {
        /// Permission bits (`0o7777` mask).
        mode: u32,
        /// Contents.
        data: Vec<u8>,
    },
    /// A directory.
    Dir {
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link; the target is kept verbatim (may be absolute: it is
    /// resolved inside the image, never on the host).
    Symlink {
        /// Link target.
        target: String,
    },
    /// A hard link to an earlier entry (normalised archive path).
    Hardlink {
        /// Path of the linked file.
        target: String,
    },
}

impl std::fmt::Debug for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File { mode, data } => {
                write!(f, "File {{ mode: {mode:o}, len: {} }}", data.len())
            }
            Self::Dir { mode } => write!(f, "Dir {{ mode: {mode:o} }}"),
            Self::Symlink { target } => write!(f, "Symlink {{ target: {target:?} }}"),
            Self::Hardlink { target } => write!(f, "Hardlink {{ target: {target:?} }}"),
        }
    }
}

/// One archive entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Normalised relative path (see module docs).
    pub path: String,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Kind and content.
    pub kind: EntryKind,
}

/// The fields of a package's `control` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// `(name, value)` in file order.
    pub fields: Vec<(String, String)>,
}

impl Control {
    /// A field's value (case-insensitive name).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Deb(msg.into())
}

fn ascii_field(h: &[u8], what: &str) -> Result<u64, Error> {
    let s = std::str::from_utf8(h).map_err(|_| bad(format!("ar header {what} is not ASCII")))?;
    let s = s.trim_end_matches(' ');
    if s.is_empty() {
        return Ok(0);
    }
    s.parse::<u64>()
        .map_err(|_| bad(format!("ar header {what} {s:?} is not a decimal number")))
}

/// The members of an `ar` archive as `(name, bytes)`.
pub fn ar_members(bytes: &[u8]) -> Result<Vec<(&str, &[u8])>, Error> {
    let mut rest = bytes
        .strip_prefix(AR_MAGIC)
        .ok_or_else(|| bad("not an ar archive (missing \"!<arch>\\n\" magic)"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < AR_HEADER {
            return Err(bad(format!(
                "truncated ar member header ({} bytes left)",
                rest.len()
            )));
        }
        let (h, tail) = rest.split_at(AR_HEADER);
        if &h[58..60] != b"`\n" {
            return Err(bad("ar member header has a bad terminator"));
        }
        let name = std::str::from_utf8(&h[..16])
            .map_err(|_| bad("ar member name is not UTF-8"))?
            .trim_end_matches(' ');
        let name = name.strip_suffix('/').unwrap_or(name);
        let size = ascii_field(&h[48..58], "size")?;
        let size = usize::try_from(size).map_err(|_| bad("ar member too large"))?;
        if size > tail.len() {
            return Err(bad(format!(
                "ar member {name:?} claims {size} bytes but only {} remain (truncated file?)",
                tail.len()
            )));
        }
        let (data, after) = tail.split_at(size);
        out.push((name, data));
        // Members are 2-byte aligned; the pad byte may be missing at the very end.
        rest = if size % 2 == 1 && !after.is_empty() {
            &after[1..]
        } else {
            after
        };
    }
    Ok(out)
}

fn compression_of(name: &str, base: &str) -> Result<Option<Compression>, Error> {
    let Some(ext) = name.strip_prefix(base) else {
        return Ok(None);
    };
    Ok(Some(match ext {
        "" => Compression::None,
        ".gz" => Compression::Gzip,
        ".xz" => Compression::Xz,
        ".zst" => Compression::Zstd,
        other => {
            return Err(bad(format!(
                "member {name:?}: compression {other:?} is not supported"
            )))
        }
    }))
}

/// A reader that fails (instead of truncating) past `remaining` bytes.
struct Limited<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let n64 = n as u64;
        if n64 > self.remaining {
            return Err(io::Error::other(format!(
                "member decompresses to more than {MAX_MEMBER_BYTES} bytes"
            )));
        }
        self.remaining -= n64;
        Ok(n)
    }
}

fn decoder<'a>(bytes: &'a [u8], c: Compression) -> Result<Box<dyn Read + 'a>, Error> {
    let inner: Box<dyn Read + 'a> = match c {
        Compression::None => Box::new(bytes),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(bytes)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(bytes)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(bytes)
                .map_err(|e| bad(format!("zstd: {e}")))?,
        ),
    };
    Ok(Box::new(Limited {
        inner,
        remaining: MAX_MEMBER_BYTES,
    }))
}

/// Normalises an archive path: strips `./`, refuses `..` and absolute paths.
pub fn normalize_path(raw: &[u8]) -> Result<String, Error> {
    let s = std::str::from_utf8(raw).map_err(|_| Error::UnsafePath {
        path: String::from_utf8_lossy(raw).into_owned(),
        reason: "path is not UTF-8",
    })?;
    if s.starts_with('/') {
        return Err(Error::UnsafePath {
            path: s.to_owned(),
            reason: "absolute path",
        });
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::UnsafePath {
                    path: s.to_owned(),
                    reason: "`..` component",
                })
            }
            c if c.contains('\0') => {
                return Err(Error::UnsafePath {
                    path: s.to_owned(),
                    reason: "NUL in path",
                })
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Reads a tar stream, calling `sink` for each entry whose path `select`
/// accepts (file data is only read for those). The root directory entry
/// (`./`) is skipped.
pub fn walk_tar(
    reader: impl Read,
    select: &mut dyn FnMut(&str) -> bool,
    sink: &mut dyn FnMut(Entry) -> Result<(), Error>,
) -> Result<(), Error> {
    let tar_err = |e: io::Error| bad(format!("tar: {e}"));
    let mut ar = tar::Archive::new(reader);
    for entry in ar.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let path = normalize_path(&entry.path_bytes())?;
        let h = entry.header().clone();
        let ty = h.entry_type();
        if path.is_empty() {
            if ty.is_dir() {
                continue;
            }
            return Err(Error::UnsafePath {
                path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                reason: "a non-directory entry for the archive root",
            });
        }
        if !select(&path) {
            continue;
        }
        let mode = h.mode().map_err(tar_err)? & 0o7777;
        let uid = u32::try_from(h.uid().map_err(tar_err)?)
            .map_err(|_| bad(format!("{path}: uid out of range")))?;
        let gid = u32::try_from(h.gid().map_err(tar_err)?)
            .map_err(|_| bad(format!("{path}: gid out of range")))?;
        let link_raw = entry.link_name_bytes().map(|l| l.into_owned());
        let link = || -> Result<String, Error> {
            let l = link_raw
                .as_deref()
                .ok_or_else(|| bad(format!("{path}: link without a target")))?;
            let t = std::str::from_utf8(l)
                .map_err(|_| bad(format!("{path}: link target is not UTF-8")))?;
            if t.is_empty() || t.contains('\0') {
                return Err(bad(format!("{path}: empty or invalid link target")));
            }
            Ok(t.to_owned())
        };
        let kind = match ty {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                let mut data = Vec::with_capacity(usize::try_from(size.min(1 << 26)).unwrap_or(0));
                entry.read_to_end(&mut data).map_err(tar_err)?;
                EntryKind::File { mode, data }
            }
            tar::EntryType::Directory => EntryKind::Dir { mode },
            tar::EntryType::Symlink => EntryKind::Symlink { target: link()? },
            tar::EntryType::Link => EntryKind::Hardlink {
                target: normalize_path(link()?.as_bytes())?,
            },
            other => return Err(bad(format!("{path}: unsupported tar entry type {other:?}"))),
        };
        sink(Entry {
            path,
            uid,
            gid,
            kind,
        })?;
    }
    Ok(())
}

impl<'a> Deb<'a> {
    /// Validates the `ar` layout of `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        let members = ar_members(bytes)?;
        let mut it = members.iter().filter(|(n, _)| !n.starts_with('_'));
        match it.next() {
            Some(("debian-binary", v)) if v.starts_with(b"2.") => {}
            Some(("debian-binary", v)) => {
                return Err(bad(format!(
                    "unsupported .deb format {:?}",
                    String::from_utf8_lossy(v).trim()
                )))
            }
            _ => return Err(bad("first member is not debian-binary")),
        }
        let mut control = None;
        let mut data = None;
        for (name, bytes) in it {
            if let Some(c) = compression_of(name, "control.tar")? {
                if control.replace((*bytes, c)).is_some() {
                    return Err(bad("two control.tar members"));
                }
            } else if let Some(c) = compression_of(name, "data.tar")? {
                if data.replace((*bytes, c)).is_some() {
                    return Err(bad("two data.tar members"));
                }
            } else {
                return Err(bad(format!("unexpected member {name:?}")));
            }
        }
        Ok(Self {
            control: control.ok_or_else(|| bad("no control.tar member"))?,
            data: data.ok_or_else(|| bad("no data.tar member"))?,
        })
    }

    /// Compression of the data member.
    pub fn data_compression(&self) -> Compression {
        self.data.1
    }

    /// The entries of `control.tar` (`control`, `md5sums`, maintainer scripts).
    pub fn control_entries(&self) -> Result<Vec<Entry>, Error> {
        let mut out = Vec::new();
        walk_tar(
            decoder(self.control.0, self.control.1)?,
            &mut |_| true,
            &mut |e| {
                out.push(e);
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// The fields of the `control` file.
    pub fn control(&self) -> Result<Control, Error> {
        let entries = self.control_entries()?;
        let data = entries
            .iter()
            .find_map(|e| match (&e.kind, e.path.as_str()) {
                (EntryKind::File { data, .. }, "control") => Some(data),
                _ => None,
            })
            .ok_or_else(|| bad("control.tar has no `control` file"))?;
        let text = std::str::from_utf8(data).map_err(|_| bad("control file is not UTF-8"))?;
        let paras = deb822::parse(text, "control")?;
        let p = paras.first().ok_or_else(|| bad("control file is empty"))?;
        Ok(Control {
            fields: p
                .fields
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        })
    }

    /// Streams the entries of `data.tar` whose path `select` accepts to `sink`.
    pub fn walk_data(
        &self,
        mut select: impl FnMut(&str) -> bool,
        mut sink: impl FnMut(Entry) -> Result<(), Error>,
    ) -> Result<(), Error> {
        walk_tar(decoder(self.data.0, self.data.1)?, &mut select, &mut sink)
    }

    /// All entries of `data.tar`, in archive order.
    pub fn data_entries(&self) -> Result<Vec<Entry>, Error> {
        self.data_entries_where(|_| true)
    }

    /// The entries of `data.tar` whose path `select` accepts.
    pub fn data_entries_where(
        &self,
        select: impl FnMut(&str) -> bool,
    ) -> Result<Vec<Entry>, Error> {
        let mut out = Vec::new();
        self.walk_data(select, |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }
}

/// Writes `entries` under `root` (which must exist). Refuses to write
/// through a symlink created by an earlier entry (or present before), so an
/// archive cannot escape `root`; hard links must name an earlier regular
/// file. Directory modes are applied last so read-only directories can be
/// filled. Ownership is not changed.
pub fn extract_to_dir(entries: &[Entry], root: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = std::collections::BTreeSet::new();
    let mut dirs = Vec::new();
    for e in entries {
        let dst = root.join(&e.path);
        // No component below root may be a symlink.
        let mut cur = root.to_path_buf();
        let comps: Vec<&str> = e.path.split('/').collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            cur.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::UnsafePath {
                        path: e.path.clone(),
                        reason: "a parent directory is a symlink",
                    })
                }
                Ok(m) if !m.is_dir() => {
                    return Err(Error::UnsafePath {
                        path: e.path.clone(),
                        reason: "a parent path is not a directory",
                    })
                }
                Ok(_) => {}
                Err(_) => std::fs::create_dir(&cur).map_err(io_err("creating directory", &cur))?,
            }
        }
        if !matches!(e.kind, EntryKind::Dir { .. }) {
            if let Ok(m) = std::fs::symlink_metadata(&dst) {
                if m.is_dir() {
                    return Err(bad(format!("{}: would replace a directory", e.path)));
                }
                std::fs::remove_file(&dst).map_err(io_err("replacing", &dst))?;
            }
        }
        match &e.kind {
            EntryKind::Dir { mode } => {
                match std::fs::symlink_metadata(&dst) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(bad(format!(
                            "{}: directory over an existing non-directory",
                            e.path
                        )))
                    }
                    Err(_) => {
                        std::fs::create_dir(&dst).map_err(io_err("creating directory", &dst))?
                    }
                }
                dirs.push((dst, *mode));
            }
            EntryKind::File { mode, data } => {
                std::fs::write(&dst, data).map_err(io_err("writing", &dst))?;
                std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(*mode))
                    .map_err(io_err("setting mode of", &dst))?;
                files.insert(e.path.as_str());
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &dst)
                    .map_err(io_err("creating symlink", &dst))?;
            }
            EntryKind::Hardlink { target } => {
                if !files.contains(target.as_str()) {
                    return Err(bad(format!(
                        "{}: hard link to {target}, which is not an earlier regular file",
                        e.path
                    )));
                }
                let src = root.join(target);
                std::fs::hard_link(&src, &dst).map_err(io_err("creating hard link", &dst))?;
                files.insert(e.path.as_str());
            }
        }
    }
    for (d, mode) in dirs.into_iter().rev() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("setting mode of", &d))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A raw tar entry: (name bytes, type, data, link target).
    type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

    /// A tar with the given raw entries.
    fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, ty, data, link) in entries {
            let mut h = tar::Header::new_ustar();
            {
                let old = h.as_old_mut();
                old.name[..name.len()].copy_from_slice(name);
                old.linkname[..link.len()].copy_from_slice(link);
            }
            h.set_entry_type(*ty);
            h.set_size(data.len() as u64);
            h.set_mode(if ty.is_dir() { 0o755 } else { 0o644 });
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, data) in members {
            let h = format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                100644,
                data.len()
            );
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A small synthetic .deb with the given data tar (control: Package: demo).
    fn make_deb(data_tar: &[u8], data_comp: &str) -> Vec<u8> {
        let control = raw_tar(&[
            (b"./", tar::EntryType::Directory, b"", b""),
            (
                b"./control",
                tar::EntryType::Regular,
                b"Package: demo\nVersion: 1.0-1\nArchitecture: amd64\n",
                b"",
            ),
        ]);
        let data = match data_comp {
            ".xz" => xz(data_tar),
            ".zst" => zstd::encode_all(data_tar, 3).unwrap(),
            ".gz" => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data_tar).unwrap();
                e.finish().unwrap()
            }
            _ => data_tar.to_vec(),
        };
        let data_name = format!("data.tar{data_comp}");
        ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", &xz(&control)),
            (&data_name, &data),
        ])
    }

    fn sample_data() -> Vec<u8> {
        raw_tar(&[
            (b"./", tar::EntryType::Directory, b"", b""),
            (b"./usr/", tar::EntryType::Directory, b"", b""),
            (b"./usr/bin/", tar::EntryType::Directory, b"", b""),
            (
                b"./usr/bin/demo",
                tar::EntryType::Regular,
                b"#!/bin/sh\necho hi\n",
                b"",
            ),
            (
                b"./usr/bin/demo2",
                tar::EntryType::Link,
                b"",
                b"./usr/bin/demo",
            ),
            (
                b"./usr/bin/sh",
                tar::EntryType::Symlink,
                b"",
                b"/bin/busybox",
            ),
        ])
    }

    #[test]
    fn reads_all_compressions() {
        for comp in ["", ".gz", ".xz", ".zst"] {
            let deb = make_deb(&sample_data(), comp);
            let d = Deb::parse(&deb).unwrap();
            assert_eq!(d.control().unwrap().get("package"), Some("demo"));
            let e = d.data_entries().unwrap();
            let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(
                paths,
                [
                    "usr",
                    "usr/bin",
                    "usr/bin/demo",
                    "usr/bin/demo2",
                    "usr/bin/sh"
                ],
                "{comp}"
            );
            assert_eq!(
                e[2].kind,
                EntryKind::File {
                    mode: 0o644,
                    data: b"#!/bin/sh\necho hi\n".to_vec()
                }
            );
            assert_eq!(
                e[3].kind,
                EntryKind::Hardlink {
                    target: "usr/bin/demo".into()
                }
            );
            assert_eq!(
                e[4].kind,
                EntryKind::Symlink {
                    target: "/bin/busybox".into()
                }
            );
        }
    }

    #[test]
    fn rejects_traversal() {
        for bad_name in [&b"../evil"[..], b"./a/../../evil", b"/etc/passwd"] {
            let tar = raw_tar(&[(bad_name, tar::EntryType::Regular, b"x", b"")]);
            let deb = make_deb(&tar, ".xz");
            let e = Deb::parse(&deb).unwrap().data_entries().unwrap_err();
            assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
        }
        let tar = raw_tar(&[(b"./x", tar::EntryType::Link, b"", b"../../etc/shadow")]);
        let e = Deb::parse(&make_deb(&tar, ""))
            .unwrap()
            .data_entries()
            .unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
    }

    #[test]
    fn extract_refuses_writing_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().to_str().unwrap().as_bytes().to_vec();
        let tar = raw_tar(&[
            (b"./link", tar::EntryType::Symlink, b"", &target),
            (b"./link/owned", tar::EntryType::Regular, b"x", b""),
        ]);
        let entries = Deb::parse(&make_deb(&tar, ""))
            .unwrap()
            .data_entries()
            .unwrap();
        let e = extract_to_dir(&entries, dir.path()).unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{e}");
        assert!(!outside.path().join("owned").exists());
    }

    #[test]
    fn extract_to_dir_roundtrip() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let entries = Deb::parse(&make_deb(&sample_data(), ".xz"))
            .unwrap()
            .data_entries()
            .unwrap();
        extract_to_dir(&entries, dir.path()).unwrap();
        let demo = dir.path().join("usr/bin/demo");
        assert_eq!(std::fs::read(&demo).unwrap(), b"#!/bin/sh\necho hi\n");
        assert_eq!(std::fs::metadata(&demo).unwrap().nlink(), 2);
        assert_eq!(
            std::fs::read_link(dir.path().join("usr/bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
    }

    #[test]
    fn malformed_containers() {
        assert!(Deb::parse(b"").is_err());
        assert!(Deb::parse(b"!<arch>\n").is_err());
        let good = make_deb(&sample_data(), ".xz");
        for cut in [8, 30, 68, 100, good.len() / 2, good.len() - 1] {
            let r = Deb::parse(&good[..cut]).and_then(|d| d.data_entries());
            assert!(r.is_err(), "cut at {cut} accepted");
        }
        let wrong_first = ar(&[("control.tar", b"x"), ("debian-binary", b"2.0\n")]);
        assert!(Deb::parse(&wrong_first).is_err());
        let bomb_like = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.bz2", b"x"),
            ("data.tar", b""),
        ]);
        assert!(Deb::parse(&bomb_like)
            .unwrap_err()
            .to_string()
            .contains("bz2"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            if let Ok(d) = Deb::parse(&bytes) {
                let _ = d.data_entries();
                let _ = d.control();
            }
        }

        #[test]
        fn arbitrary_ar_prefixed_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let mut v = AR_MAGIC.to_vec();
            v.extend_from_slice(&bytes);
            let _ = ar_members(&v);
        }

        #[test]
        fn arbitrary_tar_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            let _ = walk_tar(&bytes[..], &mut |_| true, &mut |_| Ok(()));
        }

        #[test]
        fn mutated_deb_never_panics(pos in 0usize..4096, val in proptest::num::u8::ANY) {
            let mut deb = make_deb(&sample_data(), "");
            let len = deb.len();
            deb[pos % len] = val;
            if let Ok(d) = Deb::parse(&deb) {
                let _ = d.data_entries();
                let _ = d.control();
            }
        }
    }
}
