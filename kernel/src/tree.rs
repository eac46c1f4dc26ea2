//! Kernel image and driver modules from a Debian `linux-image-*` package.
//!
//! The package ships `boot/vmlinuz-<kver>`, `lib/modules/<kver>/kernel/**.ko`
//! (plain in Debian 12; `.ko.xz`/`.ko.zst`/`.ko.gz` are accepted too),
//! `modules.builtin` and `modules.order` — but *not* `modules.dep`, which
//! depmod generates at install time. So dependencies are read from each
//! module's ELF `.modinfo` section: `depends=` (hard, comma-separated) and
//! `softdep=pre:` (optional: loaded first when present, ignored when absent).
//!
//! Module names are normalised (`-` → `_`). A name listed in
//! `modules.builtin` is satisfied by the kernel itself (no file). If two
//! files define the same module, the lexicographically first path wins.
//!
//! [`KernelTree::resolve`] returns a deterministic load order: drivers in the
//! caller's order, each preceded by its soft pre-dependencies and then its
//! hard dependencies (sorted), depth first, each module once. A hard
//! dependency cycle is an error; a soft dependency closing a cycle is
//! skipped. Module files are returned decompressed (`.ko`), for an initramfs.
//!
//! Nothing here panics on malformed packages or ELF files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;

use components::deb::{Deb, Entry, EntryKind};

use crate::Error;

/// Upper bound on a decompressed module.
const MAX_MODULE_BYTES: u64 = 256 << 20;

/// A normalised kernel module name (`-` replaced by `_`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModuleName(String);

impl ModuleName {
    /// Normalises `name`.
    pub fn new(name: &str) -> Self {
        Self(name.trim().replace('-', "_"))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `.modinfo` says about one loadable module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// The module's name.
    pub name: ModuleName,
    /// Its path in the package (possibly compressed).
    pub path: String,
    /// Hard dependencies (`depends=`).
    pub depends: Vec<ModuleName>,
    /// Optional modules to load first (`softdep=pre:`).
    pub softdep_pre: Vec<ModuleName>,
}

/// A module ready for the initramfs.
#[derive(Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Module name.
    pub name: ModuleName,
    /// Installed path, decompressed: `lib/modules/<kver>/kernel/…/x.ko`.
    pub path: String,
    /// Plain ELF contents.
    pub data: Vec<u8>,
}

impl fmt::Debug for ModuleFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ModuleFile({}, {}, {} bytes)",
            self.name,
            self.path,
            self.data.len()
        )
    }
}

/// The result of [`KernelTree::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Loadable modules, dependencies first.
    pub load_order: Vec<ModuleName>,
    /// Requested or required modules that are built into the kernel.
    pub builtin: Vec<ModuleName>,
}

/// The kernel package: version, image and module index.
#[derive(Clone, PartialEq, Eq)]
pub struct KernelTree {
    kver: String,
    image: Vec<u8>,
    modules: BTreeMap<ModuleName, ModuleInfo>,
    builtin: BTreeSet<ModuleName>,
}

impl fmt::Debug for KernelTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelTree")
            .field("kver", &self.kver)
            .field("image_len", &self.image.len())
            .field("modules", &self.modules.len())
            .field("builtin", &self.builtin.len())
            .finish()
    }
}

/// `(kver, rest)` for `[usr/]lib/modules/<kver>/<rest>`.
fn split_modules_path(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix("lib/modules/")
        .or_else(|| path.strip_prefix("usr/lib/modules/"))?;
    rest.split_once('/')
}

fn module_stem(path: &str) -> Option<(&str, &'static str)> {
    let base = path.rsplit('/').next()?;
    for ext in [".ko", ".ko.xz", ".ko.zst", ".ko.gz"] {
        if let Some(stem) = base.strip_suffix(ext) {
            return Some((stem, ext));
        }
    }
    None
}

fn decompress_module(path: &str, data: &[u8]) -> Result<Vec<u8>, Error> {
    let err = |e: std::io::Error| Error::ModInfo {
        module: path.to_owned(),
        message: format!("cannot decompress: {e}"),
    };
    let reader: Box<dyn Read + '_> = match module_stem(path).map(|(_, e)| e) {
        Some(".ko.xz") => Box::new(liblzma::read::XzDecoder::new_multi_decoder(data)),
        Some(".ko.zst") => Box::new(zstd::stream::read::Decoder::with_buffer(data).map_err(err)?),
        Some(".ko.gz") => Box::new(flate2::read::GzDecoder::new(data)),
        _ => return Ok(data.to_vec()),
    };
    let mut out = Vec::new();
    reader
        .take(MAX_MODULE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(err)?;
    if out.len() as u64 > MAX_MODULE_BYTES {
        return Err(Error::ModInfo {
            module: path.to_owned(),
            message: format!("decompresses to more than {MAX_MODULE_BYTES} bytes"),
        });
    }
    Ok(out)
}

fn rd<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

/// The contents of the ELF64 little-endian section called `name`.
pub fn elf_section<'a>(elf: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, String> {
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let shoff = u64::from_le_bytes(rd(elf, 0x28).ok_or("truncated ELF header")?);
    let shentsize = u16::from_le_bytes(rd(elf, 0x3a).ok_or("truncated ELF header")?) as usize;
    let shnum = u16::from_le_bytes(rd(elf, 0x3c).ok_or("truncated ELF header")?) as usize;
    let shstrndx = u16::from_le_bytes(rd(elf, 0x3e).ok_or("truncated ELF header")?) as usize;
    if shentsize < 64 {
        return Err(format!("section header size {shentsize} < 64"));
    }
    let shoff = usize::try_from(shoff).map_err(|_| "section table offset out of range")?;
    let section = |i: usize| -> Result<(u32, &'a [u8]), String> {
        let base = i
            .checked_mul(shentsize)
            .and_then(|x| x.checked_add(shoff))
            .ok_or("section header offset overflows")?;
        let h = elf
            .get(base..base.checked_add(64).ok_or("overflow")?)
            .ok_or("section header out of bounds")?;
        let name = u32::from_le_bytes(rd(h, 0).ok_or("short header")?);
        let ty = u32::from_le_bytes(rd(h, 4).ok_or("short header")?);
        let off = u64::from_le_bytes(rd(h, 24).ok_or("short header")?);
        let size = u64::from_le_bytes(rd(h, 32).ok_or("short header")?);
        if ty == 8 {
            // SHT_NOBITS: no contents in the file.
            return Ok((name, &[]));
        }
        let off = usize::try_from(off).map_err(|_| "section offset out of range")?;
        let size = usize::try_from(size).map_err(|_| "section size out of range")?;
        let data = elf
            .get(off..off.checked_add(size).ok_or("section end overflows")?)
            .ok_or("section contents out of bounds")?;
        Ok((name, data))
    };
    let (_, strtab) = section(shstrndx)?;
    for i in 0..shnum {
        let (n, data) = section(i)?;
        let n = n as usize;
        let s = strtab.get(n..).ok_or("section name out of bounds")?;
        let end = s
            .iter()
            .position(|&b| b == 0)
            .ok_or("unterminated section name")?;
        if s.get(..end) == Some(name.as_bytes()) {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// The `key=value` strings of a `.modinfo` section.
pub fn modinfo_fields(section: &[u8]) -> Vec<(String, String)> {
    section
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = String::from_utf8_lossy(s);
            let (k, v) = s.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn parse_module(path: &str, data: &[u8]) -> Result<ModuleInfo, Error> {
    let (stem, _) = module_stem(path).ok_or_else(|| Error::ModInfo {
        module: path.to_owned(),
        message: "not a module file name".into(),
    })?;
    let elf = decompress_module(path, data)?;
    let section = elf_section(&elf, ".modinfo")
        .map_err(|message| Error::ModInfo {
            module: path.to_owned(),
            message,
        })?
        .ok_or_else(|| Error::ModInfo {
            module: path.to_owned(),
            message: "no .modinfo section".into(),
        })?;
    let fields = modinfo_fields(section);
    let name = fields
        .iter()
        .find(|(k, _)| k == "name")
        .map_or_else(|| ModuleName::new(stem), |(_, v)| ModuleName::new(v));
    let mut depends: Vec<ModuleName> = fields
        .iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(ModuleName::new)
        })
        .collect();
    depends.sort();
    depends.dedup();
    let mut softdep_pre = Vec::new();
    for (_, v) in fields.iter().filter(|(k, _)| k == "softdep") {
        let mut in_pre = false;
        for tok in v.split_whitespace() {
            match tok {
                "pre:" => in_pre = true,
                "post:" => in_pre = false,
                t if in_pre => {
                    let m = ModuleName::new(t);
                    if !softdep_pre.contains(&m) {
                        softdep_pre.push(m);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(ModuleInfo {
        name,
        path: path.to_owned(),
        depends,
        softdep_pre,
    })
}

/// Accumulates a tree from entries in archive order.
#[derive(Default)]
struct Builder {
    kvers: BTreeSet<String>,
    images: BTreeMap<String, Vec<u8>>,
    modules: BTreeMap<ModuleName, ModuleInfo>,
    builtin: BTreeSet<ModuleName>,
}

impl Builder {
    fn wants(path: &str) -> bool {
        path.starts_with("boot/vmlinuz-")
            || split_modules_path(path)
                .is_some_and(|(_, rest)| rest == "modules.builtin" || module_stem(rest).is_some())
    }

    fn add(&mut self, e: &Entry) -> Result<(), Error> {
        if let Some((kver, _)) = split_modules_path(&e.path) {
            if !kver.is_empty() {
                self.kvers.insert(kver.to_owned());
            }
        }
        let EntryKind::File { data, .. } = &e.kind else {
            return Ok(());
        };
        if let Some(kver) = e.path.strip_prefix("boot/vmlinuz-") {
            self.images.insert(kver.to_owned(), data.clone());
        } else if let Some((_, rest)) = split_modules_path(&e.path) {
            if rest == "modules.builtin" {
                let text = std::str::from_utf8(data)
                    .map_err(|_| Error::Package("modules.builtin is not UTF-8".into()))?;
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let (stem, _) = module_stem(line.trim()).ok_or_else(|| {
                        Error::Package(format!("modules.builtin: unexpected line {line:?}"))
                    })?;
                    self.builtin.insert(ModuleName::new(stem));
                }
            } else if module_stem(rest).is_some() {
                let info = parse_module(&e.path, data)?;
                match self.modules.get(&info.name) {
                    Some(old) if old.path <= info.path => {}
                    _ => {
                        self.modules.insert(info.name.clone(), info);
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<KernelTree, Error> {
        let kver = match self.kvers.len() {
            1 => self.kvers.pop_first().unwrap_or_default(),
            0 => {
                return Err(Error::Package(
                    "no lib/modules/<version>/ directory: is this a linux-image package?".into(),
                ))
            }
            _ => {
                return Err(Error::Package(format!(
                    "several kernel versions in one package: {:?}",
                    self.kvers
                )))
            }
        };
        let image = self.images.remove(&kver).ok_or_else(|| {
            Error::Package(format!(
                "no boot/vmlinuz-{kver} (images found: {:?})",
                self.images.keys().collect::<Vec<_>>()
            ))
        })?;
        if self.builtin.is_empty() && self.modules.is_empty() {
            return Err(Error::Package(format!(
                "kernel {kver} has neither modules nor modules.builtin"
            )));
        }
        Ok(KernelTree {
            kver,
            image,
            modules: self.modules,
            builtin: self.builtin,
        })
    }
}

impl KernelTree {
    /// Indexes an extracted kernel package.
    pub fn from_entries(entries: &[Entry]) -> Result<Self, Error> {
        let mut b = Builder::default();
        for e in entries
            .iter()
            .filter(|e| Builder::wants(&e.path) || e.path.contains("/modules/"))
        {
            b.add(e)?;
        }
        b.finish()
    }

    /// Indexes a kernel package streaming through its data member (module
    /// contents are read for `.modinfo` and dropped).
    pub fn from_deb(deb: &Deb<'_>) -> Result<Self, Error> {
        let mut b = Builder::default();
        walk_data(
            deb,
            |p| Builder::wants(p) || split_modules_path(p).is_some(),
            |e| b.add(&e),
        )?;
        b.finish()
    }

    /// The kernel version (`6.1.0-…-amd64`).
    pub fn version(&self) -> &str {
        &self.kver
    }

    /// The kernel image (`boot/vmlinuz-<kver>`, a bzImage/PE).
    pub fn image(&self) -> &[u8] {
        &self.image
    }

    /// All loadable modules.
    pub fn modules(&self) -> &BTreeMap<ModuleName, ModuleInfo> {
        &self.modules
    }

    /// Whether `name` is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&ModuleName::new(name))
    }

    /// The load order for `drivers` (see module docs).
    pub fn resolve(&self, drivers: &[&str]) -> Result<Resolution, Error> {
        let mut st = Walk {
            tree: self,
            done: BTreeSet::new(),
            stack: Vec::new(),
            order: Vec::new(),
            builtin: BTreeSet::new(),
        };
        for d in drivers {
            let m = ModuleName::new(d);
            if !self.modules.contains_key(&m) && !self.builtin.contains(&m) {
                let names = self
                    .modules
                    .keys()
                    .chain(self.builtin.iter())
                    .map(ModuleName::as_str);
                return Err(Error::UnknownDriver {
                    name: (*d).to_owned(),
                    kver: self.kver.clone(),
                    suggestions: components::close_names(m.as_str(), names),
                });
            }
            st.visit(&m, None)?;
        }
        Ok(Resolution {
            load_order: st.order,
            builtin: st.builtin.into_iter().collect(),
        })
    }

    fn install_path(&self, path: &str) -> String {
        match module_stem(path) {
            Some((_, ext)) if ext != ".ko" => {
                format!("{}.ko", path.strip_suffix(ext).unwrap_or(path))
            }
            _ => path.to_owned(),
        }
    }

    fn collect(
        &self,
        res: &Resolution,
        files: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Vec<ModuleFile>, Error> {
        res.load_order
            .iter()
            .map(|name| {
                let info = self.modules.get(name).ok_or_else(|| {
                    Error::Package(format!("module {name} is not in this kernel"))
                })?;
                let data = files.get(&info.path).ok_or_else(|| {
                    Error::Package(format!("{} missing from the package", info.path))
                })?;
                Ok(ModuleFile {
                    name: name.clone(),
                    path: self.install_path(&info.path),
                    data: decompress_module(&info.path, data)?,
                })
            })
            .collect()
    }

    /// The files of `res.load_order`, decompressed, from extracted entries.
    pub fn module_files_from_entries(
        &self,
        entries: &[Entry],
        res: &Resolution,
    ) -> Result<Vec<ModuleFile>, Error> {
        let wanted = self.wanted_paths(res);
        let files = entries
            .iter()
            .filter(|e| wanted.contains(e.path.as_str()))
            .filter_map(|e| match &e.kind {
                EntryKind::File { data, .. } => Some((e.path.clone(), data.clone())),
                _ => None,
            })
            .collect();
        self.collect(res, &files)
    }

    /// The files of `res.load_order`, decompressed, read from the package.
    pub fn module_files_from_deb(
        &self,
        deb: &Deb<'_>,
        res: &Resolution,
    ) -> Result<Vec<ModuleFile>, Error> {
        let wanted = self.wanted_paths(res);
        let mut files = BTreeMap::new();
        deb.walk_data(
            |p| wanted.contains(p),
            |e| {
                if let EntryKind::File { data, .. } = e.kind {
                    files.insert(e.path, data);
                }
                Ok(())
            },
        )?;
        self.collect(res, &files)
    }

    fn wanted_paths(&self, res: &Resolution) -> BTreeSet<&str> {
        res.load_order
            .iter()
            .filter_map(|n| self.modules.get(n).map(|i| i.path.as_str()))
            .collect()
    }
}

/// [`Deb::walk_data`] with a sink that fails with this crate's [`Error`]:
/// the sink's first error stops the walk and is returned as it is. (The walk
/// is stopped by a placeholder [`components::Error`] that never leaves this
/// function.)
fn walk_data(
    deb: &Deb<'_>,
    select: impl FnMut(&str) -> bool,
    mut sink: impl FnMut(Entry) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut failed = None;
    let walked = deb.walk_data(select, |e| {
        sink(e).map_err(|e| {
            failed = Some(e);
            components::Error::BadRequest("stopped by the kernel package's reader".into())
        })
    });
    match failed {
        Some(e) => Err(e),
        None => walked.map_err(Error::from),
    }
}

struct Walk<'t> {
    tree: &'t KernelTree,
    done: BTreeSet<ModuleName>,
    stack: Vec<ModuleName>,
    order: Vec<ModuleName>,
    builtin: BTreeSet<ModuleName>,
}

impl Walk<'_> {
    /// Visits `m`; `soft_parent` is set when `m` is an optional soft dependency.
    fn visit(
        &mut self,
        m: &ModuleName,
        required_by: Option<(&ModuleName, bool)>,
    ) -> Result<(), Error> {
        if self.done.contains(m) {
            return Ok(());
        }
        let soft = required_by.is_some_and(|(_, soft)| soft);
        if self.tree.builtin.contains(m) {
            self.builtin.insert(m.clone());
            self.done.insert(m.clone());
            return Ok(());
        }
        let Some(info) = self.tree.modules.get(m) else {
            if soft {
                return Ok(());
            }
            let parent = required_by.map_or_else(String::new, |(p, _)| p.to_string());
            return Err(Error::Package(format!(
                "module {parent} depends on {m}, which is neither a module nor built in"
            )));
        };
        if self.stack.contains(m) {
            if soft {
                return Ok(());
            }
            return Err(Error::Package(format!(
                "dependency cycle: {} -> {m}",
                self.stack
                    .iter()
                    .map(ModuleName::as_str)
                    .collect::<Vec<_>>()
                    .join(" -> ")
            )));
        }
        self.stack.push(m.clone());
        for d in &info.softdep_pre {
            self.visit(d, Some((m, true)))?;
        }
        for d in &info.depends {
            self.visit(d, Some((m, false)))?;
        }
        self.stack.pop();
        self.done.insert(m.clone());
        self.order.push(m.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 LE file with a `.modinfo` section.
    fn fake_module(modinfo: &str) -> Vec<u8> {
        let strtab = b"\0.modinfo\0.shstrtab\0";
        let info = modinfo.replace(';', "\0").into_bytes();
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let info_off = elf.len();
        elf.extend_from_slice(&info);
        let str_off = elf.len();
        elf.extend_from_slice(strtab);
        let shoff = elf.len();
        let sh = |name: u32, ty: u32, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&ty.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            h.to_vec()
        };
        let mut shdrs = sh(0, 0, 0, 0);
        shdrs.extend(sh(1, 1, info_off, info.len()));
        shdrs.extend(sh(10, 3, str_off, strtab.len()));
        elf.extend_from_slice(&shdrs);
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf
    }

    fn file(path: &str, data: Vec<u8>) -> Entry {
        Entry {
            path: path.into(),
            uid: 0,
            gid: 0,
            kind: EntryKind::File { mode: 0o644, data },
        }
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn tree() -> (Vec<Entry>, KernelTree) {
        let k = "lib/modules/6.1.0-9-amd64/kernel";
        let entries = vec![
            file("boot/vmlinuz-6.1.0-9-amd64", b"MZkernel".to_vec()),
            file(
                "lib/modules/6.1.0-9-amd64/modules.builtin",
                b"kernel/drivers/virtio/virtio.ko\nkernel/drivers/char/tpm/tpm.ko\n".to_vec(),
            ),
            file(
                &format!("{k}/net/virtio_net.ko"),
                fake_module("name=virtio_net;depends=net_failover,virtio"),
            ),
            file(
                &format!("{k}/net/net_failover.ko.xz"),
                xz(&fake_module("depends=failover;name=net_failover")),
            ),
            file(
                &format!("{k}/net/failover.ko"),
                fake_module("name=failover;depends="),
            ),
            file(
                &format!("{k}/crypto/crc32c-intel.ko"),
                fake_module("name=crc32c_intel;depends="),
            ),
            file(
                &format!("{k}/fs/ext4.ko"),
                fake_module("name=ext4;softdep=pre: crc32c nonexistent;depends=mbcache"),
            ),
            file(
                &format!("{k}/fs/mbcache.ko"),
                fake_module("name=mbcache;depends="),
            ),
            file(
                &format!("{k}/crypto/crc32c.ko"),
                fake_module("name=crc32c;softdep=pre: ext4;depends="),
            ),
            file(
                &format!("{k}/bad/loop_a.ko"),
                fake_module("name=loop_a;depends=loop_b"),
            ),
            file(
                &format!("{k}/bad/loop_b.ko"),
                fake_module("name=loop_b;depends=loop_a"),
            ),
        ];
        let t = KernelTree::from_entries(&entries).unwrap();
        (entries, t)
    }

    fn names(v: &[ModuleName]) -> Vec<&str> {
        v.iter().map(ModuleName::as_str).collect()
    }

    #[test]
    fn load_order_and_builtins() {
        let (entries, t) = tree();
        assert_eq!(t.version(), "6.1.0-9-amd64");
        assert_eq!(t.image(), b"MZkernel");
        let r = t.resolve(&["virtio-net", "tpm"]).unwrap();
        assert_eq!(
            names(&r.load_order),
            ["failover", "net_failover", "virtio_net"]
        );
        assert_eq!(names(&r.builtin), ["tpm", "virtio"]);
        let files = t.module_files_from_entries(&entries, &r).unwrap();
        assert_eq!(
            files[1].path,
            "lib/modules/6.1.0-9-amd64/kernel/net/net_failover.ko"
        );
        assert!(files[1].data.starts_with(b"\x7fELF"), "decompressed");
    }

    #[test]
    fn softdeps_are_optional_and_first() {
        let (_, t) = tree();
        let r = t.resolve(&["ext4"]).unwrap();
        // crc32c's soft dep on ext4 closes a cycle and is skipped; `nonexistent` is ignored.
        assert_eq!(names(&r.load_order), ["crc32c", "mbcache", "ext4"]);
    }

    #[test]
    fn errors() {
        let (_, t) = tree();
        let e = t.resolve(&["virtio_nett"]).unwrap_err().to_string();
        assert!(e.contains("virtio_nett") && e.contains("virtio_net"), "{e}");
        let e = t.resolve(&["loop_a"]).unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
        let mut entries = tree().0;
        entries.remove(0);
        assert!(KernelTree::from_entries(&entries)
            .unwrap_err()
            .to_string()
            .contains("vmlinuz"));
    }

    /// A `.deb` (plain tar members) whose data member holds `entries`' files
    /// and, first, `extra` as raw `(path, contents)`.
    fn deb_of(entries: &[Entry], extra: &[(&str, &[u8])]) -> Vec<u8> {
        fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
            let mut out = Vec::new();
            for (path, data) in files {
                let mut h = tar::Header::new_ustar();
                let name = &mut h.as_old_mut().name;
                name[..path.len()].copy_from_slice(path.as_bytes());
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
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
        let mut files: Vec<(&str, &[u8])> = extra.to_vec();
        for e in entries {
            if let EntryKind::File { data, .. } = &e.kind {
                files.push((&e.path, data));
            }
        }
        let control: &[(&str, &[u8])] = &[("./control", b"Package: linux-image-test\n")];
        let mut deb = b"!<arch>\n".to_vec();
        for (name, data) in [
            ("debian-binary", b"2.0\n".to_vec()),
            ("control.tar", tar(control)),
            ("data.tar", tar(&files)),
        ] {
            let h = format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                0,
                100644,
                data.len()
            );
            deb.extend_from_slice(h.as_bytes());
            deb.extend_from_slice(&data);
            if data.len() % 2 == 1 {
                deb.push(b'\n');
            }
        }
        deb
    }

    #[test]
    fn a_deb_reads_like_its_entries() {
        let (entries, t) = tree();
        let bytes = deb_of(&entries, &[]);
        let deb = Deb::parse(&bytes).unwrap();
        assert_eq!(KernelTree::from_deb(&deb).unwrap(), t);
        let r = t.resolve(&["virtio_net", "ext4"]).unwrap();
        assert_eq!(
            t.module_files_from_deb(&deb, &r).unwrap(),
            t.module_files_from_entries(&entries, &r).unwrap()
        );
    }

    /// A failure while streaming the package is reported as it is: the
    /// kernel's own error, or the `.deb` reader's.
    #[test]
    fn deb_errors_come_through_unchanged() {
        let (entries, _) = tree();
        let builtin = "lib/modules/6.1.0-9-amd64/modules.builtin";
        let bytes = deb_of(&entries, &[(builtin, b"kernel/not-a-module\n")]);
        let e = KernelTree::from_deb(&Deb::parse(&bytes).unwrap()).unwrap_err();
        assert!(matches!(e, Error::Package(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "kernel package: modules.builtin: unexpected line \"kernel/not-a-module\""
        );
        let bytes = deb_of(&entries, &[("../escape", b"")]);
        let e = KernelTree::from_deb(&Deb::parse(&bytes).unwrap()).unwrap_err();
        assert!(matches!(e, Error::Components(_)), "{e:?}");
        assert!(e.to_string().starts_with("unsafe path"), "{e}");
    }

    #[test]
    fn elf_section_bounds() {
        let m = fake_module("name=x;depends=a,b");
        assert_eq!(
            modinfo_fields(elf_section(&m, ".modinfo").unwrap().unwrap()).len(),
            2
        );
        for cut in [0, 10, 64, m.len() - 1] {
            assert!(elf_section(&m[..cut], ".modinfo").is_err(), "cut {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn elf_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = elf_section(&bytes, ".modinfo");
        }

        #[test]
        fn mutated_elf_never_panics(pos in 0usize..400, val in proptest::num::u8::ANY) {
            let mut m = fake_module("name=x;depends=a,b;softdep=pre: c post: d");
            let len = m.len();
            m[pos % len] = val;
            if let Ok(Some(s)) = elf_section(&m, ".modinfo") {
                let _ = modinfo_fields(s);
            }
        }
    }
}
