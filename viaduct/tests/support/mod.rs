//! Helpers shared by the viaduct test binaries that run real TUN devices
//! (`tests/viaduct` and `tests/xfrm_interop.rs`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Waits up to 10 s for link `dev` to exist in network namespace `ns`.
pub fn wait_link(ns: &str, dev: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let ok = Command::new("ip")
            .args(["-n", ns, "link", "show", dev])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{dev} never appeared in {ns}");
}

/// TUN UDP segmentation offload exists from Linux 6.2 on.
pub fn kernel_has_tun_uso() -> bool {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = rel
        .trim()
        .split(['.', '-'])
        .map(|x| x.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (6, 2)
}
