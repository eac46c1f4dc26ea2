//! The lab testbed: two QEMU gateways built from the lab profiles, each with a LAN
//! host, joined by an emulated internet; `appliance testbed up|test|down|status`.
//! The pair is a VPN (`profiles/lab`, its variants), or two firewalls or two
//! routers forwarding in clear (`profiles/lab/firewall`, `profiles/lab/router`),
//! each with its own checks.
//!
//! - [`lab`]: the topology (images, namespaces, taps, capture, both VMs), `up`,
//!   `down`, `status`;
//! - [`checks`]: the end-to-end test and its report;
//! - [`vm`]: one QEMU gateway (q35, TCG, OVMF, swtpm), also booted by the image and
//!   Secure Boot tests;
//! - [`console`]: the serial console of a detached VM (log file + socket);
//! - [`pcap`], [`wire`]: our reader of captures and the rules for the wire;
//! - [`host`]: host commands, tools and their packages, Ctrl-C.
#![forbid(unsafe_code)]

pub mod checks;
pub mod console;
pub mod host;
pub mod lab;
pub mod pcap;
pub mod vm;
pub mod wire;
