//! What the builder adds to each personality's root: the network setup
//! script (`templates/network-<side>.j2`), the DHCP client's hooks,
//! `/etc/hostname`, the accounts where the packages ship none, and red's
//! dnsmasq configuration.

use std::collections::BTreeMap;

use profiles::{Profile, Side};

use super::template::render;
use super::{at, personality, NETWORK_SETUP, UDHCPC_SCRIPT};
use crate::stages::parts::Shipped;
use crate::BuildError;

/// An entry the builder adds to a personality's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RootEntry {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(&'static str),
}

/// The small files the builder adds to a personality's root, by path
/// relative to it: mount points, the network setup (and DHCP hooks),
/// `/etc/hostname`, and `/etc/passwd`, `/etc/group`, `/bin/sh` where the
/// packages do not ship them. Refuses a package set that cannot run the
/// network setup.
pub(crate) fn personality_root(
    profile: &Profile,
    side: Side,
    shipped: &Shipped,
) -> Result<BTreeMap<String, RootEntry>, BuildError> {
    let p = personality(profile, side);
    let packages = format!("personalities.{}.packages", side.name());
    let missing = |what: &str| {
        BuildError::Plan(format!(
            "{packages}: the {} personality's network setup ({NETWORK_SETUP}) needs {what}; add it to the packages and run `appliance lock`",
            side.name()
        ))
    };
    if !shipped.has("bin/sh") && !shipped.has("bin/busybox") {
        return Err(missing("a shell, /bin/sh (busybox-static provides one)"));
    }
    // Called by its path: busybox's shell prefers its own `ip` applet.
    let ip = ["bin/ip", "sbin/ip", "usr/bin/ip", "usr/sbin/ip"]
        .into_iter()
        .find(|ip| shipped.has(ip))
        .map(|ip| format!("/{ip}"))
        .ok_or_else(|| missing("iproute2's `ip`"))?;
    if p.dhcp && !shipped.has("bin/busybox") {
        return Err(missing("/bin/busybox for the DHCP client (busybox-static)"));
    }
    let ctx = serde_json::json!({
        "name": profile.appliance.name,
        "side": side.name(),
        "ip": ip,
    });
    let mut out = BTreeMap::new();
    for (d, mode) in [
        ("dev", 0o755),
        ("proc", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("etc", 0o755),
        ("etc/appliance", 0o755),
    ] {
        out.insert(d.to_string(), RootEntry::Dir(mode));
    }
    let file = |mode: u32, text: String| RootEntry::File(mode, text.into_bytes());
    out.insert(
        NETWORK_SETUP[1..].to_string(),
        file(0o555, network_script(profile, side, &ip)?),
    );
    if p.dhcp {
        out.insert(
            UDHCPC_SCRIPT[1..].to_string(),
            file(0o555, render("udhcpc.script", &ctx)?),
        );
    }
    out.insert(
        "etc/hostname".into(),
        file(0o444, render("hostname", &ctx)?),
    );
    for f in ["passwd", "group"] {
        let path = format!("etc/{f}");
        if !shipped.has(&path) {
            out.insert(path, file(0o444, render(f, &ctx)?));
        }
    }
    if !shipped.has("bin/sh") {
        out.insert("bin/sh".into(), RootEntry::Symlink("busybox"));
    }
    // The profile's files, over what the packages ship (and over the
    // accounts above), with the directories they need.
    for (i, f) in p.files.iter().enumerate() {
        let path = f.path[1..].to_string();
        if shipped.is_dir(&path) == Some(true) || matches!(out.get(&path), Some(RootEntry::Dir(_)))
        {
            return Err(BuildError::Plan(format!(
                "personalities.{}.files[{i}].path: {} is a directory in the personality's root",
                side.name(),
                f.path
            )));
        }
        for (at, _) in path.match_indices('/') {
            let dir = &path[..at];
            if shipped.is_dir(dir).is_none() {
                out.entry(dir.to_string()).or_insert(RootEntry::Dir(0o755));
            }
        }
        out.insert(
            path,
            RootEntry::File(f.mode, f.content.clone().into_bytes()),
        );
    }
    // Nothing may land below something the packages made a file or symlink
    // (a symlinked /bin would be replaced by a directory when unpacking).
    for (path, entry) in &out {
        let mut ancestors: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        if matches!(entry, RootEntry::Dir(_)) {
            ancestors.push(path);
        }
        if let Some(a) = ancestors
            .into_iter()
            .find(|a| shipped.is_dir(a) == Some(false))
        {
            return Err(BuildError::Plan(format!(
                "{packages}: a package ships /{a} as a file or symlink, but the builder needs the directory /{a} for /{path}"
            )));
        }
    }
    Ok(out)
}

/// The network setup script of a personality (`/etc/appliance/network`,
/// from `templates/network-<side>.j2`); `ip` is the path of iproute2's `ip`
/// inside the personality (called by path: busybox's shell would otherwise
/// run its own `ip` applet).
pub fn network_script(profile: &Profile, side: Side, ip: &str) -> Result<String, BuildError> {
    let p = personality(profile, side);
    let t = format!("personalities.{}", side.name());
    // Interpolated into a shell script: only validated names.
    let name =
        gateway_plan::ProfileName::new(&profile.appliance.name).map_err(at("appliance.name"))?;
    let nic = gateway_plan::ShortName::new("nic", &p.nic).map_err(at(format!("{t}.nic")))?;
    let addresses: Vec<String> = if p.dhcp {
        Vec::new()
    } else {
        p.addresses.iter().map(ToString::to_string).collect()
    };
    let ipv6 = !p.dhcp && p.addresses.iter().any(|a| a.addr.is_ipv6());
    let gateway = if p.dhcp {
        None
    } else {
        p.gateway.map(|g| g.to_string())
    };
    // Some peer receives ESP inside UDP (port 4500): black steers that too.
    let udp_encap = profile.viaduct.ipsec.as_ref().is_some_and(|i| {
        i.peers
            .iter()
            .any(|p| p.encapsulation == profiles::model::Encapsulation::Udp)
    });
    // Some tunnel is keyed by IKE: black steers IKE (UDP 500, and 4500 where
    // NAT traversal moves it) to the Viaduct.
    let ike = profile.viaduct.ipsec.as_ref().is_some_and(|i| {
        i.peers
            .iter()
            .any(|p| p.tunnels.iter().any(|t| t.manual.is_none()))
    });
    // A role forwarding in clear (firewall, router): black reaches red's
    // networks through the Viaduct's port, which decides what crosses.
    let clear = profile.viaduct.roles.iter().any(|r| {
        matches!(
            r,
            profiles::model::Role::Firewall | profiles::model::Role::Router
        )
    });
    let lan_routes: Vec<String> = if side == Side::Black && clear {
        profile
            .red
            .addresses
            .iter()
            .map(|a| a.network().to_string())
            .collect()
    } else {
        Vec::new()
    };
    render(
        match side {
            Side::Red => "network-red",
            Side::Black => "network-black",
        },
        serde_json::json!({
            "name": name.as_str(),
            "ip": ip,
            "nic": nic.as_str(),
            "dhcp": p.dhcp,
            "addresses": addresses,
            "ipv6": ipv6,
            "gateway": gateway,
            "udp_encap": udp_encap,
            "ike": ike,
            "lan_routes": lan_routes,
        }),
    )
}

pub(crate) fn dnsmasq_conf(p: &Profile) -> Result<String, BuildError> {
    let mut ranges = Vec::new();
    let mut addrs = Vec::new();
    for a in &p.red.addresses {
        addrs.push(a.addr.to_string());
        if let std::net::IpAddr::V4(v4) = a.addr {
            let net = u32::from(v4) & (u32::MAX << (32 - u32::from(a.len)));
            let size = 1u64 << (32 - u32::from(a.len));
            if size >= 16 {
                let start = std::net::Ipv4Addr::from(net + (size / 2) as u32);
                let end = std::net::Ipv4Addr::from(net + (size - 2) as u32);
                let mask = std::net::Ipv4Addr::from(u32::MAX << (32 - u32::from(a.len)));
                ranges.push(serde_json::json!({"start": start.to_string(), "end": end.to_string(), "netmask": mask.to_string()}));
            }
        }
    }
    render(
        "dnsmasq.conf",
        serde_json::json!({"name": p.appliance.name, "interface": p.red.nic, "ranges": ranges, "addresses": addrs}),
    )
}
