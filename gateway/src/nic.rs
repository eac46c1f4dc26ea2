//! Physical NICs: finding the profile's cards in sysfs and moving each into its
//! personality's network namespace (rtnetlink `RTM_NEWLINK` with `IFLA_NET_NS_FD` and
//! the new name in one message, so the card never appears in the target namespace
//! under a kernel-chosen name).
//!
//! Discovery reads `<sys>/class/net/<if>/`: `address` (MAC), `device/driver` (driver
//! name) and the canonical path of `device`, whose ancestors include the PCI function
//! (`…/0000:00:02.0/virtio0` for virtio-net, `…/0000:03:00.0` for e1000e). Nothing
//! here panics on odd sysfs contents; unreadable entries simply do not match.

use crate::plan::{check_mac, check_pci, NicMatch};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// What sysfs says about one interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NicInfo {
    /// Kernel interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: i32,
    /// MAC address, lower case.
    pub mac: Option<String>,
    /// Driver of the underlying device.
    pub driver: Option<String>,
    /// PCI function the device hangs off.
    pub pci: Option<String>,
}

impl NicInfo {
    /// Whether every field of `m` that is set matches.
    pub fn matches(&self, m: &NicMatch) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| match want {
            None => true,
            Some(w) => have.as_deref() == Some(w.as_str()),
        };
        eq(&m.pci, &self.pci)
            && eq(&m.mac, &self.mac)
            && eq(&m.driver, &self.driver)
            && m.name.as_ref().is_none_or(|n| *n == self.name)
    }

    /// A one-line description for log messages.
    pub fn describe(&self) -> String {
        format!(
            "{} (pci {}, driver {}, mac {})",
            self.name,
            self.pci.as_deref().unwrap_or("-"),
            self.driver.as_deref().unwrap_or("-"),
            self.mac.as_deref().unwrap_or("-")
        )
    }
}

/// Describes a match for log messages.
pub fn describe_match(m: &NicMatch) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("pci", &m.pci),
        ("mac", &m.mac),
        ("driver", &m.driver),
        ("name", &m.name),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k} {v}"));
        }
    }
    parts.join(", ")
}

fn read_trim(p: &Path) -> Option<String> {
    let mut s = String::new();
    std::fs::File::open(p)
        .ok()?
        .take(4096)
        .read_to_string(&mut s)
        .ok()?;
    Some(s.trim().to_owned())
}

/// Lists the interfaces under `class_net` (normally `/sys/class/net`), sorted by name.
pub fn list(class_net: &Path) -> Vec<NicInfo> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(class_net) else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let base = class_net.join(&name);
        let ifindex = read_trim(&base.join("ifindex"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mac = read_trim(&base.join("address"))
            .map(|s| s.to_ascii_lowercase())
            .filter(|s| check_mac(s).is_ok());
        let driver = std::fs::read_link(base.join("device/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
        let pci = std::fs::canonicalize(base.join("device"))
            .ok()
            .and_then(|p| {
                p.iter()
                    .rev()
                    .map(|c| c.to_string_lossy().into_owned())
                    .find(|c| check_pci(c).is_ok())
            });
        out.push(NicInfo {
            name,
            ifindex,
            mac,
            driver,
            pci,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The interfaces matching `m` (normally exactly one).
pub fn find(class_net: &Path, m: &NicMatch) -> Vec<NicInfo> {
    list(class_net)
        .into_iter()
        .filter(|n| n.name != "lo" && n.matches(m))
        .collect()
}

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_NET_NS_FD: u16 = 28;

fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

/// The rtnetlink request that moves interface `ifindex` into the network namespace
/// `netns_fd` and renames it to `new_name` there.
pub fn move_request(seq: u32, ifindex: i32, netns_fd: i32, new_name: &str) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    // struct ifinfomsg: family, pad, type, index, flags, change.
    b.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    push_attr(&mut b, IFLA_NET_NS_FD, &(netns_fd as u32).to_ne_bytes());
    let mut name = new_name.as_bytes().to_vec();
    name.push(0);
    push_attr(&mut b, IFLA_IFNAME, &name);
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    b
}

/// The rtnetlink request that deletes the interface named `name` (in the network
/// namespace of the socket it is sent on).
pub fn delete_request(seq: u32, name: &str) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    b.extend_from_slice(&0i32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    push_attr(&mut b, IFLA_IFNAME, &n);
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..6].copy_from_slice(&RTM_DELLINK.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    b
}

/// Deletes the interface `name` in the caller's network namespace; `Ok` also when
/// there is none.
pub fn delete_link(name: &str) -> std::io::Result<()> {
    let sock = crate::sys::netlink_route_socket()?;
    let mut f = std::fs::File::from(sock);
    f.write_all(&delete_request(1, name))?;
    let mut buf = vec![0u8; 8192];
    let n = f.read(&mut buf)?;
    match parse_ack(&buf[..n], 1) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        other => other,
    }
}

/// Reads the kernel's answer to request `seq`: `Ok(())` for an ACK, the errno otherwise.
pub fn parse_ack(reply: &[u8], seq: u32) -> Result<(), std::io::Error> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let mut rest = reply;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let s = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if len < 16 || len > rest.len() {
            return Err(bad("truncated netlink message"));
        }
        if kind == NLMSG_ERROR && s == seq {
            if len < 20 {
                return Err(bad("short netlink error message"));
            }
            let code = i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]);
            // The kernel sends 0 or a negative errno (> -4096); anything else (i32::MIN
            // would overflow when negated) is a malformed reply, not an errno.
            return match code {
                0 => Ok(()),
                c if (-4095..0).contains(&c) => Err(std::io::Error::from_raw_os_error(-c)),
                c => Err(bad(&format!(
                    "netlink error code {c} is not a negative errno"
                ))),
            };
        }
        let step = (len + 3) & !3;
        rest = rest.get(step..).unwrap_or(&[]);
    }
    Err(bad("no netlink acknowledgement"))
}

const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_MACVLAN_MODE: u16 = 1;
/// `MACVLAN_MODE_PASSTHRU`: one macvtap owns the NIC (its MAC, all its traffic).
const MACVLAN_MODE_PASSTHRU: u32 = 8;

fn finish(mut b: Vec<u8>, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    b[4..6].copy_from_slice(&kind.to_ne_bytes());
    b[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    b
}

fn ifinfo(ifindex: i32, flags: u32, change: u32) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&change.to_ne_bytes());
    b
}

/// The rtnetlink request that creates the macvtap `name` in passthru mode on
/// interface `lower` (it takes the NIC's MAC and all its traffic), up.
pub fn macvtap_request(seq: u32, name: &str, lower: i32) -> Vec<u8> {
    let up = libc::IFF_UP as u32;
    let mut b = ifinfo(0, up, up);
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    push_attr(&mut b, IFLA_IFNAME, &n);
    push_attr(&mut b, IFLA_LINK, &(lower as u32).to_ne_bytes());
    let mut data = Vec::new();
    push_attr(
        &mut data,
        IFLA_MACVLAN_MODE,
        &MACVLAN_MODE_PASSTHRU.to_ne_bytes(),
    );
    let mut info = Vec::new();
    push_attr(&mut info, IFLA_INFO_KIND, b"macvtap\0");
    push_attr(&mut info, IFLA_INFO_DATA, &data);
    push_attr(&mut b, IFLA_LINKINFO, &info);
    finish(b, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, seq)
}

/// The rtnetlink request that sets interface `ifindex`'s `flags` among
/// `change` (`IFF_UP`, `IFF_NOARP`) and, when given, renames it.
pub fn set_link_request(
    seq: u32,
    ifindex: i32,
    flags: u32,
    change: u32,
    rename: Option<&str>,
) -> Vec<u8> {
    let mut b = ifinfo(ifindex, flags, change);
    if let Some(name) = rename {
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        push_attr(&mut b, IFLA_IFNAME, &n);
    }
    finish(b, RTM_NEWLINK, 0, seq)
}

/// Sends one rtnetlink request (in the caller's network namespace) and reads its ACK.
pub fn request(req: &[u8]) -> std::io::Result<()> {
    let sock = crate::sys::netlink_route_socket()?;
    let mut f = std::fs::File::from(sock);
    f.write_all(req)?;
    let mut buf = vec![0u8; 8192];
    let n = f.read(&mut buf)?;
    let seq = req
        .get(8..12)
        .map_or(0, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]));
    parse_ack(&buf[..n], seq)
}

/// Moves `nic` into the network namespace `netns` under the name `new_name`.
pub fn move_to_netns(nic: &NicInfo, netns: BorrowedFd<'_>, new_name: &str) -> std::io::Result<()> {
    let sock = crate::sys::netlink_route_socket()?;
    let mut f = std::fs::File::from(sock);
    let seq = 1;
    f.write_all(&move_request(seq, nic.ifindex, netns.as_raw_fd(), new_name))?;
    let mut buf = vec![0u8; 8192];
    let n = f.read(&mut buf)?;
    parse_ack(&buf[..n], seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `netlink_ack` fuzz target: an error code of i32::MIN overflowed
    /// when negated (a panic with overflow checks). Codes that are not a negative
    /// errno are malformed replies.
    #[test]
    fn netlink_error_code_i32_min_is_malformed_not_a_panic() {
        let ack = |code: i32| {
            let mut m = Vec::new();
            m.extend_from_slice(&36u32.to_ne_bytes());
            m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            m.extend_from_slice(&0u16.to_ne_bytes());
            m.extend_from_slice(&7u32.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(&code.to_ne_bytes());
            m.extend_from_slice(&[0u8; 16]);
            parse_ack(&m, 7)
        };
        for bad in [i32::MIN, -4096, 1, i32::MAX] {
            let e = ack(bad).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{bad}: {e}");
        }
        assert_eq!(ack(-19).unwrap_err().raw_os_error(), Some(19));
        assert!(ack(0).is_ok());
        let crash = include_bytes!("../fuzz/seeds/netlink_ack/crash-nlmsgerr-error-i32-min");
        let seq = u32::from_ne_bytes([crash[0], crash[1], crash[2], crash[3]]);
        assert!(parse_ack(&crash[4..], seq).is_err());
    }

    #[test]
    fn request_layout() {
        let r = move_request(7, 3, 9, "lan");
        // header 16 + ifinfomsg 16 + fd attr 8 + name attr 8 ("lan\0" padded).
        assert_eq!(r.len(), 48);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 48);
        assert_eq!(i32::from_ne_bytes(r[20..24].try_into().unwrap()), 3);
        assert_eq!(&r[32..36], &[8, 0, 28, 0]);
        assert_eq!(u32::from_ne_bytes(r[36..40].try_into().unwrap()), 9);
        assert_eq!(&r[44..48], b"lan\0");
    }

    #[test]
    fn macvtap_and_set_link_request_layout() {
        let r = macvtap_request(7, "vmt-red", 3);
        assert_eq!(
            u32::from_ne_bytes(r[0..4].try_into().unwrap()) as usize,
            r.len()
        );
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), RTM_NEWLINK);
        let flags = u16::from_ne_bytes([r[6], r[7]]);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        // ifinfomsg: up among up.
        assert_eq!(u32::from_ne_bytes(r[24..28].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(r[28..32].try_into().unwrap()), 1);
        let text = String::from_utf8_lossy(&r);
        assert!(text.contains("vmt-red\0") && text.contains("macvtap\0"));
        // The lower link's index, then the mode (passthru) nested in the link info.
        let link = [8u8, 0, 5, 0, 3, 0, 0, 0];
        assert!(r.windows(8).any(|w| w == link));
        let mode = [8u8, 0, 1, 0, 8, 0, 0, 0];
        assert!(r.windows(8).any(|w| w == mode));
        let noarp = libc::IFF_NOARP as u32;
        let r = set_link_request(9, 4, noarp, noarp | 1, Some("viaduct"));
        assert_eq!(u32::from_ne_bytes(r[20..24].try_into().unwrap()), 4);
        assert_eq!(u32::from_ne_bytes(r[24..28].try_into().unwrap()), noarp);
        assert_eq!(u32::from_ne_bytes(r[28..32].try_into().unwrap()), noarp | 1);
        assert!(String::from_utf8_lossy(&r).contains("viaduct\0"));
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), NLM_F_REQUEST | NLM_F_ACK);
    }

    #[test]
    fn delete_request_layout() {
        let r = delete_request(9, "viaduct");
        // header 16 + ifinfomsg 16 + name attr 12 ("viaduct\0").
        assert_eq!(r.len(), 44);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), RTM_DELLINK);
        assert_eq!(&r[32..36], &[12, 0, 3, 0]);
        assert_eq!(&r[36..44], b"viaduct\0");
    }

    #[test]
    fn ack_parsing_never_panics() {
        let mut ok = vec![0u8; 36];
        ok[0..4].copy_from_slice(&36u32.to_ne_bytes());
        ok[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ok[8..12].copy_from_slice(&5u32.to_ne_bytes());
        assert!(parse_ack(&ok, 5).is_ok());
        let mut e = ok.clone();
        e[16..20].copy_from_slice(&(-libc::ENODEV).to_ne_bytes());
        assert_eq!(
            parse_ack(&e, 5).unwrap_err().raw_os_error(),
            Some(libc::ENODEV)
        );
        assert!(parse_ack(&ok, 6).is_err());
        for cut in 0..ok.len() {
            let _ = parse_ack(&ok[..cut], 5);
        }
        let mut huge = ok.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse_ack(&huge, 5).is_err());
    }

    #[test]
    fn matching() {
        let n = NicInfo {
            name: "eth0".into(),
            ifindex: 2,
            mac: Some("52:54:00:00:00:01".into()),
            driver: Some("virtio_net".into()),
            pci: Some("0000:00:02.0".into()),
        };
        let mut m = NicMatch {
            pci: Some("0000:00:02.0".into()),
            driver: Some("virtio_net".into()),
            ..NicMatch::default()
        };
        assert!(n.matches(&m));
        m.driver = Some("e1000e".into());
        assert!(!n.matches(&m));
        let by_name = NicMatch {
            name: Some("eth0".into()),
            ..NicMatch::default()
        };
        assert!(n.matches(&by_name));
        assert_eq!(describe_match(&m), "pci 0000:00:02.0, driver e1000e");
    }

    #[test]
    fn lists_this_hosts_interfaces_without_panicking() {
        let l = list(Path::new("/sys/class/net"));
        assert!(l.iter().any(|n| n.name == "lo"));
        assert!(list(Path::new("/nonexistent")).is_empty());
    }
}
