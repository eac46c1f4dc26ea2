//! Reading pcap captures (the classic libpcap format that `tcpdump -w` and
//! QEMU's `filter-dump` write), so tests and the testbed can check what was on
//! the wire with our own code.

/// Errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcapError {
    /// Shorter than the 24-byte file header.
    #[error("pcap: file is {0} bytes, shorter than the 24-byte header")]
    Short(usize),
    /// Not a pcap magic number.
    #[error("pcap: bad magic {0:02x?}")]
    Magic([u8; 4]),
}

/// A capture: link type and frames in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture<'a> {
    /// Link type (1 = Ethernet).
    pub link_type: u32,
    /// Captured bytes of each frame (a record cut short by the end of the
    /// file gives what is there).
    pub frames: Vec<&'a [u8]>,
    /// When each frame was captured, in seconds since the Unix epoch.
    pub times: Vec<f64>,
}

/// Link type of Ethernet captures.
pub const LINKTYPE_ETHERNET: u32 = 1;

/// Parse a pcap file (either byte order, micro- or nanosecond timestamps).
pub fn parse(data: &[u8]) -> Result<Capture<'_>, PcapError> {
    if data.len() < 24 {
        return Err(PcapError::Short(data.len()));
    }
    let magic = [data[0], data[1], data[2], data[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err(PcapError::Magic(magic)),
    };
    let rd32 = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let link_type = rd32(&data[20..24]);
    let nanos = matches!(magic, [0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d]);
    let mut frames = Vec::new();
    let mut times = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let sec = f64::from(rd32(&data[off..off + 4]));
        let frac = f64::from(rd32(&data[off + 4..off + 8]));
        times.push(sec + frac / if nanos { 1e9 } else { 1e6 });
        let caplen = rd32(&data[off + 8..off + 12]) as usize;
        let start = off + 16;
        let end = start.saturating_add(caplen).min(data.len());
        frames.push(&data[start..end]);
        off = start.saturating_add(caplen);
    }
    Ok(Capture {
        link_type,
        frames,
        times,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_frames_and_refuses_garbage() {
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        f.extend([0u8; 8]);
        f.extend(65535u32.to_le_bytes());
        f.extend(1u32.to_le_bytes());
        for payload in [&b"abc"[..], &b"de"[..]] {
            f.extend(1_700_000_000u32.to_le_bytes());
            f.extend(250_000u32.to_le_bytes());
            f.extend((payload.len() as u32).to_le_bytes());
            f.extend((payload.len() as u32).to_le_bytes());
            f.extend(payload);
        }
        let c = parse(&f).unwrap();
        assert_eq!(c.link_type, LINKTYPE_ETHERNET);
        assert_eq!(c.frames, vec![&b"abc"[..], &b"de"[..]]);
        assert_eq!(c.times, vec![1_700_000_000.25, 1_700_000_000.25]);
        assert_eq!(parse(&f[..10]), Err(PcapError::Short(10)));
        assert!(matches!(parse(&[0u8; 24]), Err(PcapError::Magic(_))));
        // Truncated last record: what is there.
        assert_eq!(parse(&f[..f.len() - 1]).unwrap().frames[1], b"d");
    }
}
