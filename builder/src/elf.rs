//! Just enough ELF to prove a gateway binary is static (it must have no
//! `PT_INTERP`, dynamic loader, program header) and to find what a dynamic
//! one loads (its interpreter and `DT_NEEDED` libraries: the VMM's root
//! holds QEMU and exactly the libraries it needs). Never panics.

/// `Ok(())` if `bytes` is a 64-bit little-endian x86-64 ELF without
/// `PT_INTERP`; otherwise a description of the problem.
pub fn check_static(bytes: &[u8]) -> Result<(), String> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if bytes.get(0..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF".into());
    }
    if u16_at(18) != Some(62) {
        return Err("not an x86-64 binary".into());
    }
    let phoff = u64_at(32).ok_or("truncated ELF header")? as usize;
    let phentsize = u16_at(54).ok_or("truncated ELF header")? as usize;
    let phnum = u16_at(56).ok_or("truncated ELF header")? as usize;
    for i in 0..phnum {
        let off = phoff
            .checked_add(i.checked_mul(phentsize).ok_or("bad program headers")?)
            .ok_or("bad program headers")?;
        let ty = u32_at(off).ok_or("truncated program headers")?;
        if ty == 3 {
            return Err("it is dynamically linked (has an ELF interpreter)".into());
        }
    }
    Ok(())
}

/// What a dynamically linked ELF file needs to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// Its `PT_INTERP` (the dynamic loader's path), if any.
    pub interpreter: Option<String>,
    /// Its `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
}

/// The interpreter and `DT_NEEDED` libraries of a 64-bit little-endian ELF
/// file (empty for a static one); a description of the problem for anything
/// else or anything malformed.
pub fn dynamic(bytes: &[u8]) -> Result<Dynamic, String> {
    let get = |o: usize, n: usize| o.checked_add(n).and_then(|end| bytes.get(o..end));
    let u16_at = |o: usize| get(o, 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| get(o, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |o: usize| {
        get(o, 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let cstr = |o: usize| -> Result<String, String> {
        let rest = bytes.get(o..).ok_or("string outside the file")?;
        let end = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or("unterminated string")?;
        String::from_utf8(rest[..end].to_vec()).map_err(|_| "string is not UTF-8".to_string())
    };
    if bytes.get(0..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let phoff = u64_at(32).ok_or("truncated ELF header")? as usize;
    let phentsize = u16_at(54).ok_or("truncated ELF header")? as usize;
    let phnum = u16_at(56).ok_or("truncated ELF header")? as usize;
    // (type, offset, vaddr, filesz) of each program header.
    let mut headers = Vec::with_capacity(phnum);
    for i in 0..phnum {
        let off = i
            .checked_mul(phentsize)
            .and_then(|x| x.checked_add(phoff))
            .ok_or("bad program headers")?;
        let ty = u32_at(off).ok_or("truncated program headers")?;
        let field = |k: usize| u64_at(off + k).ok_or("truncated program headers");
        headers.push((ty, field(8)?, field(16)?, field(32)?));
    }
    let mut out = Dynamic::default();
    if let Some(&(_, off, _, _)) = headers.iter().find(|h| h.0 == 3) {
        out.interpreter = Some(cstr(usize::try_from(off).map_err(|_| "bad PT_INTERP")?)?);
    }
    let Some(&(_, dyn_off, _, dyn_size)) = headers.iter().find(|h| h.0 == 2) else {
        return Ok(out);
    };
    // A virtual address → file offset, through the PT_LOAD segments.
    let file_offset = |addr: u64| -> Option<usize> {
        headers
            .iter()
            .filter(|h| h.0 == 1)
            .find(|h| addr >= h.2 && addr - h.2 < h.3)
            .and_then(|h| usize::try_from(addr - h.2 + h.1).ok())
    };
    let mut strtab = None;
    let mut needed = Vec::new();
    let count = usize::try_from(dyn_size / 16).map_err(|_| "bad PT_DYNAMIC")?;
    let base = usize::try_from(dyn_off).map_err(|_| "bad PT_DYNAMIC")?;
    for i in 0..count {
        let at = i
            .checked_mul(16)
            .and_then(|x| x.checked_add(base))
            .ok_or("bad PT_DYNAMIC")?;
        let tag = u64_at(at).ok_or("truncated dynamic section")?;
        let val = u64_at(at + 8).ok_or("truncated dynamic section")?;
        match tag {
            0 => break,
            1 => needed.push(val),
            5 => strtab = Some(val),
            _ => {}
        }
    }
    if needed.is_empty() {
        return Ok(out);
    }
    let strtab = file_offset(strtab.ok_or("DT_NEEDED without DT_STRTAB")?)
        .ok_or("DT_STRTAB outside every loaded segment")?;
    for n in needed {
        let off = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_add(strtab))
            .ok_or("bad DT_NEEDED")?;
        out.needed.push(cstr(off)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_binaries_are_dynamic() {
        let ls = std::fs::read("/bin/ls").unwrap();
        assert!(check_static(&ls)
            .unwrap_err()
            .contains("dynamically linked"));
    }

    /// Checked against `ldd`'s view of a host binary: the same direct
    /// libraries (DT_NEEDED) and loader.
    #[test]
    fn dynamic_reads_needed_libraries() {
        let ls = std::fs::read("/bin/ls").unwrap();
        let d = dynamic(&ls).unwrap();
        assert_eq!(
            d.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(d.needed.contains(&"libc.so.6".to_string()), "{d:?}");
        assert!(d.needed.contains(&"libselinux.so.1".to_string()), "{d:?}");
        let libc = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let d = dynamic(&libc).unwrap();
        assert_eq!(d.needed, vec!["ld-linux-x86-64.so.2".to_string()]);
    }

    /// Every prefix and many corruptions of a real binary: an error or a
    /// result, never a panic.
    #[test]
    fn dynamic_never_panics() {
        let ls = std::fs::read("/bin/ls").unwrap();
        for len in (0..ls.len().min(70_000)).step_by(97) {
            let _ = dynamic(&ls[..len]);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let mut b = ls[..ls.len().min(70_000)].to_vec();
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % b.len();
                b[i] = (x >> 32) as u8;
            }
            let _ = dynamic(&b);
        }
    }

    #[test]
    fn garbage_is_rejected_without_panic() {
        for bytes in [
            &b""[..],
            b"\x7fELF",
            b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00",
        ] {
            assert!(check_static(bytes).is_err());
        }
    }
}
