//! The lab testbed. Today: [`vm`], one QEMU gateway (q35, TCG, OVMF, swtpm)
//! with its serial console, which the image and Secure Boot tests boot;
//! [`pcap`], our reader for captures of the wire; [`lab`], the lab profiles
//! for tests. The two-gateway topology and `appliance testbed` build on them.
#![forbid(unsafe_code)]

pub mod lab;
pub mod pcap;
pub mod vm;
