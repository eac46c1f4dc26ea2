//! The viaduct crate's integration tests (one binary): published vectors,
//! engine behaviour, and the confined pump in network namespaces.

mod common;
mod engine;
mod ids;
mod ike;
mod netns;
mod nft;
#[path = "../support/mod.rs"]
mod support;
mod vectors;
mod vhost;
