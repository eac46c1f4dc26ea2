//! The crate's integration tests: one binary.

mod common;
mod pcap;
mod semantics;
mod suricata;
