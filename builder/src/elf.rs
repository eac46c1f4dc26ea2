//! Just enough ELF to prove a gateway binary is static: it must have no
//! `PT_INTERP` (dynamic loader) program header. Never panics.

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
