//! Host-side helper: reads a serial console transcript on stdin and writes the TCG event
//! log framed in it (`appliance: eventlog …` lines) to stdout, after checking its length
//! and SHA-256. Exit status 1 when the transcript holds no intact log.
//!
//! `cargo run -q -p signing --example reassemble_eventlog < console.log > eventlog.bin`

use std::io::{Read, Write};

fn main() {
    let mut raw = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut raw) {
        eprintln!("reading stdin: {e}");
        std::process::exit(1);
    }
    match signing::eventlog::from_console(&String::from_utf8_lossy(&raw)) {
        Ok(log) => {
            if let Err(e) = std::io::stdout().write_all(&log) {
                eprintln!("writing stdout: {e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
