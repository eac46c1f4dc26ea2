//! cpio "newc" (SVR4, magic `070701`) archives, as the Linux kernel unpacks for an
//! initramfs.
//!
//! # Writer invariants
//! * Entries are written sorted by path (byte order), so parents precede children;
//!   missing parent directories are created with mode `0755`.
//! * uid = gid = 0, every mtime is the caller's [`Epoch`], inode numbers are 1, 2, 3, …
//!   in that order, `nlink` is 2 + number of subdirectories for directories and 1
//!   otherwise (no hard links), device numbers of the archive itself are 0.
//! * Every header + name and every data block is padded to 4 bytes; the archive ends
//!   with a `TRAILER!!!` record (no 512-byte block padding; the kernel does not need it
//!   and concatenation stays 4-byte aligned).
//! * Insertion order does not matter: the same set of entries gives the same bytes.
//!
//! Paths are relative (`dev/console`); a leading `/` or `./` is stripped. No entry is
//! written for the root directory itself.
//!
//! # Reader
//! [`parse_newc`] validates one archive completely (magic, hex fields, bounds, NUL
//! terminated names, trailer, only zero padding after it) and never panics.

use std::collections::BTreeMap;
use std::io::Write;

use crate::{ByteLen, Content, Epoch, Error, Result};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFMT: u32 = 0o170000;

/// What an archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file.
    File(Content),
    /// A symbolic link to the given target.
    Symlink(String),
    /// A character device node (e.g. `dev/console` = 5:1, `dev/null` = 1:3).
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device node.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

#[derive(Clone, Debug)]
struct Entry {
    perm: u32,
    kind: EntryKind,
}

/// Collects entries and writes a deterministic newc archive.
#[derive(Clone, Debug)]
pub struct CpioBuilder {
    mtime: u32,
    entries: BTreeMap<String, Entry>,
}

/// Normalises an archive path: strips a leading `/` or `./`, rejects empty, `.`/`..`
/// components, empty components, NUL and trailing `/`.
pub(crate) fn normalize_path(path: &str) -> Result<String> {
    let bad = |reason| Error::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    let p = path.strip_prefix("./").unwrap_or(path);
    let p = p.trim_start_matches('/');
    if p.is_empty() {
        return Err(bad("empty path (the root directory is implied)"));
    }
    if p.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    for c in p.split('/') {
        match c {
            "" => return Err(bad("empty component (double or trailing '/')")),
            "." | ".." => return Err(bad("'.' and '..' components are not allowed")),
            _ => {}
        }
    }
    Ok(p.to_owned())
}

fn check_perm(path: &str, perm: u32) -> Result<u32> {
    if perm > 0o7777 {
        return Err(Error::InvalidPath {
            path: path.to_owned(),
            reason: "mode has bits outside 0o7777; give permission bits only",
        });
    }
    Ok(perm)
}

fn parent_of(p: &str) -> Option<&str> {
    p.rfind('/').map(|i| &p[..i])
}

impl CpioBuilder {
    /// A new, empty archive whose entries all get `mtime`.
    ///
    /// Fails if `mtime` does not fit the 32-bit newc field.
    pub fn new(mtime: Epoch) -> Result<Self> {
        let mtime = u32::try_from(mtime.0).map_err(|_| Error::FieldOverflow {
            what: "cpio mtime",
            value: mtime.0,
            max: u32::MAX as u64,
            hint: "newc stores 32-bit timestamps; use an epoch before 2106",
        })?;
        Ok(CpioBuilder {
            mtime,
            entries: BTreeMap::new(),
        })
    }

    fn insert(&mut self, path: &str, perm: u32, kind: EntryKind) -> Result<()> {
        let p = normalize_path(path)?;
        let perm = check_perm(&p, perm)?;
        if self.entries.contains_key(&p) {
            return Err(Error::DuplicatePath(p));
        }
        self.entries.insert(p, Entry { perm, kind });
        Ok(())
    }

    /// Adds a directory with permission bits `perm` (e.g. `0o755`).
    pub fn add_dir(&mut self, path: &str, perm: u32) -> Result<()> {
        self.insert(path, perm, EntryKind::Directory)
    }

    /// Adds a regular file.
    pub fn add_file(&mut self, path: &str, perm: u32, content: impl Into<Content>) -> Result<()> {
        self.insert(path, perm, EntryKind::File(content.into()))
    }

    /// Adds a symbolic link (mode `0777`).
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<()> {
        if target.is_empty() || target.contains('\0') {
            return Err(Error::InvalidPath {
                path: target.to_owned(),
                reason: "symlink target must be non-empty and free of NUL bytes",
            });
        }
        self.insert(path, 0o777, EntryKind::Symlink(target.to_owned()))
    }

    /// Adds a character device node.
    pub fn add_char_device(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        self.insert(path, perm, EntryKind::CharDevice { major, minor })
    }

    /// Adds a block device node.
    pub fn add_block_device(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        self.insert(path, perm, EntryKind::BlockDevice { major, minor })
    }

    /// Adds any entry kind (generic form of the `add_*` methods).
    pub fn add(&mut self, path: &str, perm: u32, kind: EntryKind) -> Result<()> {
        if let EntryKind::Symlink(t) = &kind {
            let t = t.clone();
            return self.add_symlink(path, &t);
        }
        self.insert(path, perm, kind)
    }

    /// The complete entry list (with implied parents), sorted by path.
    fn plan(&self) -> Result<BTreeMap<String, Entry>> {
        let mut all = self.entries.clone();
        for path in self.entries.keys() {
            let mut cur = path.as_str();
            while let Some(parent) = parent_of(cur) {
                match all.get(parent) {
                    Some(Entry {
                        kind: EntryKind::Directory,
                        ..
                    }) => {}
                    Some(_) => {
                        return Err(Error::ParentNotDirectory {
                            path: path.clone(),
                            parent: parent.to_owned(),
                        })
                    }
                    None => {
                        all.insert(
                            parent.to_owned(),
                            Entry {
                                perm: 0o755,
                                kind: EntryKind::Directory,
                            },
                        );
                    }
                }
                cur = parent;
            }
        }
        Ok(all)
    }

    /// Writes the archive to `out` and returns its length. The output is streamed:
    /// file contents are read in 64 KiB chunks, never held in memory as a whole.
    /// Entries are written sorted by path.
    pub fn write_to<W: Write>(&self, out: W) -> Result<ByteLen> {
        let all = self.plan()?;
        let order: Vec<&String> = all.keys().collect();
        self.write_in_order(&all, &order, out)
    }

    /// Like [`CpioBuilder::write_to`], in another order: every directory first
    /// (sorted by path, so parents precede children), then every other entry
    /// sorted by `key(path)` and then by path. An archive holding several
    /// trees with mostly the same files (`a/usr/lib/x`, `b/usr/lib/x`) puts
    /// the copies next to each other with a `key` that strips the tree's
    /// prefix, so a compressor with a window larger than the largest file
    /// stores each second copy as a short reference to the first.
    pub fn write_grouped_to<W: Write, K: Ord>(
        &self,
        out: W,
        key: impl Fn(&str) -> K,
    ) -> Result<ByteLen> {
        let all = self.plan()?;
        let (mut dirs, mut rest): (Vec<&String>, Vec<&String>) = all.keys().partition(|p| {
            all.get(p.as_str())
                .is_some_and(|e| e.kind == EntryKind::Directory)
        });
        dirs.sort();
        rest.sort_by_cached_key(|p| (key(p), (*p).clone()));
        dirs.extend(rest);
        self.write_in_order(&all, &dirs, out)
    }

    fn write_in_order<W: Write>(
        &self,
        all: &BTreeMap<String, Entry>,
        order: &[&String],
        out: W,
    ) -> Result<ByteLen> {
        let mut subdirs: BTreeMap<&str, u32> = BTreeMap::new();
        for (p, e) in all {
            if e.kind == EntryKind::Directory {
                if let Some(parent) = parent_of(p) {
                    *subdirs.entry(parent).or_default() += 1;
                }
            }
        }
        let mut w = CountingWriter { inner: out, n: 0 };
        for (ino, path) in (1u32..).zip(order.iter()) {
            let Some(e) = all.get(path.as_str()) else {
                continue;
            };
            let (fmt, size, rdev) = match &e.kind {
                EntryKind::Directory => (S_IFDIR, 0, (0, 0)),
                EntryKind::File(c) => (S_IFREG, c.len()?.0, (0, 0)),
                EntryKind::Symlink(t) => (S_IFLNK, t.len() as u64, (0, 0)),
                EntryKind::CharDevice { major, minor } => (S_IFCHR, 0, (*major, *minor)),
                EntryKind::BlockDevice { major, minor } => (S_IFBLK, 0, (*major, *minor)),
            };
            let size = u32::try_from(size).map_err(|_| Error::FieldOverflow {
                what: "cpio file size",
                value: size,
                max: u32::MAX as u64,
                hint: "newc cannot hold files of 4 GiB or more; split or compress the file",
            })?;
            // Every non-directory has one link: no two paths share an inode
            // (the kernel links entries only when nlink > 1).
            let nlink = match e.kind {
                EntryKind::Directory => 2 + subdirs.get(path.as_str()).copied().unwrap_or(0),
                _ => 1,
            };
            let hdr = Header {
                ino,
                mode: fmt | e.perm,
                nlink,
                mtime: self.mtime,
                filesize: size,
                rdev_major: rdev.0,
                rdev_minor: rdev.1,
            };
            w.write_header(&hdr, path)?;
            match &e.kind {
                EntryKind::File(c) => {
                    c.for_each_chunk(size as u64, |_, chunk| w.put(chunk))?;
                }
                EntryKind::Symlink(t) => w.put(t.as_bytes())?,
                _ => {}
            }
            w.pad4()?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            rdev_major: 0,
            rdev_minor: 0,
        };
        w.write_header(&trailer, TRAILER)?;
        w.inner.flush().map_err(Error::write("cpio archive"))?;
        Ok(ByteLen(w.n))
    }

    /// Convenience: the archive as a byte vector.
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.write_to(&mut v)?;
        Ok(v)
    }
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

struct CountingWriter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> CountingWriter<W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.inner
            .write_all(b)
            .map_err(Error::write("cpio archive"))?;
        self.n += b.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> Result<()> {
        let pad = (4 - (self.n % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    fn write_header(&mut self, h: &Header, name: &str) -> Result<()> {
        let namesize = name.len() as u32 + 1;
        let fields = [
            h.ino,
            h.mode,
            0,
            0,
            h.nlink,
            h.mtime,
            h.filesize,
            0,
            0,
            h.rdev_major,
            h.rdev_minor,
            namesize,
            0,
        ];
        let mut buf = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        buf.extend_from_slice(MAGIC);
        for f in fields {
            buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        self.put(&buf)?;
        self.pad4()
    }
}

/// One record of a parsed archive (the trailer is not returned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpioRecord<'a> {
    /// Path as stored (without the NUL).
    pub name: &'a [u8],
    /// Inode number.
    pub ino: u32,
    /// File type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time.
    pub mtime: u32,
    /// Device major of a device node.
    pub rdev_major: u32,
    /// Device minor of a device node.
    pub rdev_minor: u32,
    /// File contents or symlink target.
    pub data: &'a [u8],
}

impl CpioRecord<'_> {
    /// The path, lossily decoded as UTF-8.
    pub fn path(&self) -> String {
        String::from_utf8_lossy(self.name).into_owned()
    }

    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    /// True for regular files.
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    /// True for symlinks.
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }

    /// True for character devices.
    pub fn is_char_device(&self) -> bool {
        self.mode & S_IFMT == S_IFCHR
    }

    /// Permission bits.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

fn parse_hex8(b: &[u8]) -> Option<u32> {
    if b.len() != 8 {
        return None;
    }
    let mut v: u32 = 0;
    for &c in b {
        let d = (c as char).to_digit(16)?;
        v = (v << 4) | d;
    }
    Some(v)
}

fn align4(x: usize) -> Option<usize> {
    x.checked_add(3).map(|v| v & !3)
}

/// Parses one complete newc archive. Only zero bytes may follow the trailer.
pub fn parse_newc(buf: &[u8]) -> Result<Vec<CpioRecord<'_>>> {
    let mut records = Vec::new();
    let mut off = 0usize;
    loop {
        let err = |reason| Error::CpioMalformed {
            offset: off as u64,
            reason,
        };
        let hdr = buf
            .get(off..off + HEADER_LEN)
            .ok_or_else(|| err("truncated header (archive ends without TRAILER!!!)"))?;
        if &hdr[..6] != MAGIC {
            return Err(err("bad magic: only newc (070701) is supported"));
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            *v = parse_hex8(&hdr[6 + 8 * i..14 + 8 * i])
                .ok_or_else(|| err("header field is not 8 hex digits"))?;
        }
        let [ino, mode, uid, gid, nlink, mtime, filesize, _dmaj, _dmin, rmaj, rmin, namesize, _check] =
            f;
        if namesize == 0 {
            return Err(err("name size is 0"));
        }
        let name_start = off + HEADER_LEN;
        let name_end = name_start
            .checked_add(namesize as usize)
            .ok_or_else(|| err("name size overflows"))?;
        let name_full = buf
            .get(name_start..name_end)
            .ok_or_else(|| err("name runs past the end of the archive"))?;
        let (nul, name) = name_full
            .split_last()
            .ok_or_else(|| err("name size is 0"))?;
        if *nul != 0 || name.contains(&0) {
            return Err(err("name is not NUL-terminated or contains NUL"));
        }
        let data_start = align4(name_end).ok_or_else(|| err("offset overflows"))?;
        let data_end = data_start
            .checked_add(filesize as usize)
            .ok_or_else(|| err("file size overflows"))?;
        let data = buf
            .get(data_start..data_end)
            .ok_or_else(|| err("file data runs past the end of the archive"))?;
        let next = align4(data_end).ok_or_else(|| err("offset overflows"))?;
        if name == TRAILER.as_bytes() {
            let rest = buf.get(data_end..).unwrap_or(&[]);
            if rest.iter().any(|&b| b != 0) {
                return Err(err("non-zero bytes after TRAILER!!!"));
            }
            return Ok(records);
        }
        records.push(CpioRecord {
            name,
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            rdev_major: rmaj,
            rdev_minor: rmin,
            data,
        });
        off = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(order: &[usize]) -> Vec<u8> {
        let mut b = CpioBuilder::new(Epoch(1_700_000_000)).unwrap();
        type Op = Box<dyn Fn(&mut CpioBuilder)>;
        let ops: Vec<Op> = vec![
            Box::new(|b| b.add_file("/init", 0o755, b"#!/bin/sh\n".to_vec()).unwrap()),
            Box::new(|b| b.add_char_device("dev/console", 0o600, 5, 1).unwrap()),
            Box::new(|b| b.add_char_device("dev/null", 0o666, 1, 3).unwrap()),
            Box::new(|b| b.add_symlink("bin/sh", "busybox").unwrap()),
            Box::new(|b| {
                b.add_file("bin/busybox", 0o755, vec![1, 2, 3, 4, 5])
                    .unwrap()
            }),
            Box::new(|b| b.add_dir("etc", 0o700).unwrap()),
        ];
        for &i in order {
            ops[i](&mut b);
        }
        b.to_vec().unwrap()
    }

    #[test]
    fn deterministic_regardless_of_insertion_order() {
        let a = sample(&[0, 1, 2, 3, 4, 5]);
        let b = sample(&[5, 4, 3, 2, 1, 0]);
        let c = sample(&[2, 0, 5, 1, 4, 3]);
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn layout_inodes_nlink_and_padding() {
        let a = sample(&[0, 1, 2, 3, 4, 5]);
        assert_eq!(a.len() % 4, 0);
        let recs = parse_newc(&a).unwrap();
        let names: Vec<String> = recs.iter().map(|r| r.path()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "dev/null",
                "etc",
                "init"
            ]
        );
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.ino, i as u32 + 1);
            assert_eq!((r.uid, r.gid, r.mtime), (0, 0, 1_700_000_000));
        }
        assert!(recs[0].is_dir() && recs[0].perm() == 0o755 && recs[0].nlink == 2);
        assert_eq!(recs[1].data, &[1, 2, 3, 4, 5]);
        assert!(recs[2].is_symlink() && recs[2].data == b"busybox");
        assert!(recs[4].is_char_device());
        assert_eq!((recs[4].rdev_major, recs[4].rdev_minor), (5, 1));
        assert_eq!(recs[6].perm(), 0o700);
        assert!(a.ends_with(b"TRAILER!!!\0\0\0\0"));
    }

    #[test]
    fn grouped_order_puts_directories_first_and_copies_together() {
        let mut b = CpioBuilder::new(Epoch(1)).unwrap();
        for side in ["red", "black"] {
            b.add_file(&format!("p/{side}/usr/lib/libc.so"), 0o644, vec![1u8; 10])
                .unwrap();
            b.add_file(&format!("p/{side}/bin/sh"), 0o755, vec![2u8; 5])
                .unwrap();
            b.add_symlink(&format!("p/{side}/lib"), "usr/lib").unwrap();
        }
        let mut out = Vec::new();
        b.write_grouped_to(&mut out, |p| {
            let mut it = p.splitn(3, '/');
            let (_, side, rest) = (it.next(), it.next(), it.next());
            (rest.unwrap_or(p).to_owned(), side.unwrap_or("").to_owned())
        })
        .unwrap();
        let recs = parse_newc(&out).unwrap();
        let names: Vec<String> = recs.iter().map(|r| r.path()).collect();
        let first_file = recs.iter().position(|r| !r.is_dir()).unwrap();
        assert!(recs[first_file..].iter().all(|r| !r.is_dir()), "{names:?}");
        // Parents precede children.
        for (i, n) in names.iter().enumerate() {
            if let Some(parent) = n.rsplit_once('/').map(|x| x.0) {
                assert!(
                    names[..i].iter().any(|m| m == parent),
                    "{n} before {parent}"
                );
            }
        }
        assert_eq!(
            &names[first_file..],
            [
                "p/black/bin/sh",
                "p/red/bin/sh",
                "p/black/lib",
                "p/red/lib",
                "p/black/usr/lib/libc.so",
                "p/red/usr/lib/libc.so"
            ]
        );
        // The same entries as the sorted archive, one link each.
        let mut sorted = parse_newc(&b.to_vec().unwrap())
            .unwrap()
            .iter()
            .map(|r| (r.path(), r.mode, r.data.to_vec()))
            .collect::<Vec<_>>();
        let mut grouped = recs
            .iter()
            .map(|r| (r.path(), r.mode, r.data.to_vec()))
            .collect::<Vec<_>>();
        sorted.sort();
        grouped.sort();
        assert_eq!(sorted, grouped);
        assert!(recs.iter().filter(|r| !r.is_dir()).all(|r| r.nlink == 1));
    }

    #[test]
    fn nlink_counts_subdirectories() {
        let mut b = CpioBuilder::new(Epoch(0)).unwrap();
        b.add_dir("a/b", 0o755).unwrap();
        b.add_dir("a/c", 0o755).unwrap();
        b.add_file("a/f", 0o644, vec![]).unwrap();
        let v = b.to_vec().unwrap();
        let recs = parse_newc(&v).unwrap();
        assert_eq!(recs[0].path(), "a");
        assert_eq!(recs[0].nlink, 4);
    }

    #[test]
    fn rejects_bad_paths_duplicates_and_file_parents() {
        let mut b = CpioBuilder::new(Epoch(0)).unwrap();
        for p in ["", "/", "a//b", "a/../b", "a/./b", "a/", "x\0y"] {
            assert!(b.add_dir(p, 0o755).is_err(), "{p:?}");
        }
        b.add_file("a", 0o644, vec![]).unwrap();
        assert!(matches!(
            b.add_file("/a", 0o644, vec![]),
            Err(Error::DuplicatePath(_))
        ));
        assert!(b.add_file("b", 0o10644, vec![]).is_err());
        b.add_file("a/b", 0o644, vec![]).unwrap();
        assert!(matches!(b.to_vec(), Err(Error::ParentNotDirectory { .. })));
        assert!(CpioBuilder::new(Epoch(1 << 32)).is_err());
    }

    #[test]
    fn reader_rejects_malformed() {
        let good = sample(&[0, 1, 2, 3, 4, 5]);
        assert!(parse_newc(&good[..good.len() - 20]).is_err());
        let mut bad = good.clone();
        bad[0] = b'1';
        assert!(parse_newc(&bad).is_err());
        let mut bad = good.clone();
        bad[10] = b'z';
        assert!(parse_newc(&bad).is_err());
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0; 512]);
        assert!(parse_newc(&trailing).is_ok());
        trailing.push(1);
        assert!(parse_newc(&trailing).is_err());
        assert!(parse_newc(b"").is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_newc(&data);
        }

        #[test]
        fn parser_never_panics_on_mutated_archive(idx in 0usize..400, val in any::<u8>()) {
            let mut a = sample(&[0, 1, 2, 3, 4, 5]);
            let i = idx % a.len();
            a[i] = val;
            let _ = parse_newc(&a);
        }

        #[test]
        fn roundtrip(files in proptest::collection::btree_map("[a-z]{1,6}(/[a-z]{1,6}){0,2}", proptest::collection::vec(any::<u8>(), 0..40), 1..8)) {
            let mut b = CpioBuilder::new(Epoch(42)).unwrap();
            let mut added = BTreeMap::new();
            for (p, d) in &files {
                // Skip paths that would be a parent of an already added file.
                if added.keys().any(|k: &String| k.starts_with(&format!("{p}/")) || p.starts_with(&format!("{k}/"))) {
                    continue;
                }
                b.add_file(p, 0o644, d.clone()).unwrap();
                added.insert(p.clone(), d.clone());
            }
            let v = b.to_vec().unwrap();
            let recs = parse_newc(&v).unwrap();
            let got: BTreeMap<String, Vec<u8>> = recs.iter().filter(|r| r.is_file()).map(|r| (r.path(), r.data.to_vec())).collect();
            prop_assert_eq!(got, added);
        }
    }
}
