//! The run control every Viaduct thread shares: the stop and dump requests
//! the main thread sets on signals, and the engine's clock.
//!
//! A layer below both users: the pump threads (`pump::run`) and the IKE
//! link's control thread (`ikelink::serve`) poll it, so `ikelink` does not
//! depend on the pump that depends on it. The public path is the re-export
//! `viaduct::pump::Control`.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use crate::sa::Timestamp;

/// Shared control flags set by the main thread on signals.
#[derive(Debug)]
pub struct Control {
    /// Stop the pump.
    pub stop: AtomicBool,
    /// Incremented to request a counter dump.
    pub dump: AtomicU64,
    start: Instant,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            stop: AtomicBool::new(false),
            dump: AtomicU64::new(0),
            start: Instant::now(),
        }
    }
}

impl Control {
    /// Seconds since the pump started (the engine's clock).
    pub fn now(&self) -> Timestamp {
        Timestamp(self.start.elapsed().as_secs())
    }
}
