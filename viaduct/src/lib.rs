//! The Viaduct (trusted): ESP tunnel mode, SPD/SAD, anti-replay, the confined
//! packet pump.
//!
//! The library is a sans-IO engine ([`Engine`]): it takes a packet, a caller's
//! output buffer and the current time ([`Timestamp`]) and returns a
//! [`Verdict`]. The binary (`src/main.rs`) adds the I/O: TUN devices, one
//! thread per direction, self-confinement ([`confine`]). All `unsafe` lives in
//! the private `sys` module.
//!
//! Panics: none on any packet input; slicing is bounded by lengths validated
//! in `new_checked` views. Construction errors are [`EngineError`]s.
#![warn(missing_docs)]

pub mod batch;
pub mod confine;
pub mod conntrack;
mod control;
pub mod crypto;
mod drop;
pub mod engine;
pub mod error;
pub mod fpm;
pub mod fpmlink;
pub mod ids;
pub mod ikelink;
pub mod ledger;
pub mod offload;
pub mod port;
pub mod pump;
pub mod replay;
pub mod router;
pub mod sa;
mod sys;
pub mod tun;
pub mod wire;

pub use drop::{DropCounters, DropReason};
pub use engine::{ControlPath, Engine, InboundPath, OutboundPath, SaEvent, Verdict};
pub use error::EngineError;
pub use ledger::{ClaimToken, KeyLedger, MemoryLedger};
pub use replay::{ReplayWindow, SeqNo};
pub use sa::{InboundSa, OutboundSa, SaCounters, Timestamp};

/// Process set-up for the binary's main thread: signal masking and waiting,
/// allocator settings.
pub mod process {
    /// Blocks `signals` in the calling thread and the threads it spawns later.
    pub fn block(signals: &[i32]) -> std::io::Result<()> {
        crate::sys::block_signals(signals)
    }
    /// Sets up the allocator so it never needs a file once confined (see
    /// `sys::malloc_without_files`); call before starting threads.
    pub fn malloc_without_files() -> std::io::Result<()> {
        crate::sys::malloc_without_files()
    }
    /// Waits up to `timeout` for one of the (blocked) `signals` and returns
    /// its number, or `None` when none came.
    pub fn wait(signals: &[i32], timeout: std::time::Duration) -> std::io::Result<Option<i32>> {
        crate::sys::wait_signal(signals, timeout)
    }
}
