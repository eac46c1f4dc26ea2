//! The Viaduct's vhost-user-net ports (trusted).
//!
//! Under the `microvm` runtime each personality is a virtual machine whose
//! network card toward the Viaduct is a virtio-net device served here: the
//! VMM (untrusted, like the personality) passes the guest's memory and the
//! queues' notification descriptors over a vhost-user socket
//! ([`backend`]); the Viaduct then moves packets through the guest's
//! virtqueues in shared memory ([`queue`], [`net`]) with no VMM and no host
//! network stack in the path.
//!
//! What the guest controls — every byte of its memory, its rings, the
//! messages its VMM sends — is read once, checked, and copied before use.
//! All `unsafe` lives in the private `sys` module (the mapping and its
//! bounds-checked accessors).
//!
//! Panics: none on any input from the front end or the guest.
#![warn(missing_docs)]

pub mod backend;
#[cfg(feature = "driver")]
pub mod driver;
pub mod mem;
pub mod msg;
pub mod net;
pub mod queue;
mod sys;

pub use backend::{listen, serve, Session};
pub use net::{PortCounters, PortShared, RxHalf, SendError, TxHalf};
