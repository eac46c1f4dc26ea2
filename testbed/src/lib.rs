//! The lab testbed. Today: [`vm`], one QEMU gateway (q35, TCG, OVMF, swtpm)
//! with its serial console, which the image and Secure Boot tests boot. The
//! two-gateway topology and `appliance testbed` build on it.
#![forbid(unsafe_code)]

pub mod vm;
