//! The Viaduct's IKE process (`viaduct-ike`): it runs the IKEv2 engine
//! ([`ike`]) for the peers of the compiled policy and speaks to the data
//! plane only through the channel ([`viaduct_channel`]) on one inherited
//! descriptor. It has no network of its own: IKE datagrams reach it, and
//! leave it, through the data plane, named by peer index.
//!
//! - [`config`]: the policy's IKE section → one engine configuration per
//!   peer, credentials resolved (lab ones from the policy, device ones from
//!   the descriptor the init hands over, [`credentials`]).
//! - [`driver`]: the engines between channel messages and time.
//! - [`signer`]: the device identity key, signing through the init's signer.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod confine;
pub mod credentials;
pub mod driver;
pub mod signer;
