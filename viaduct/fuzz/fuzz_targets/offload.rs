//! Feeds arbitrary frames (first 10 bytes: vnet header, rest: IP packet) to
//! the offload module: checksum completion, GSO splitting and the GRO
//! coalescer. None may panic; every frame the coalescer emits is at most
//! 10 + 65535 bytes; `gso_split` reports as many segments as it emitted; a
//! frame merged from segments splits again.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use viaduct::offload::{complete_csum, gso_split, Coalescer, VnetHdr, GSO_NONE, VNET_HDR_LEN};

const FRAME_MAX: usize = VNET_HDR_LEN + 65535;

thread_local! {
    // Allocated once: a Coalescer holds 8 × 64 KiB. Every run ends with a
    // flush, so no packet carries over from one input to the next.
    static STATE: RefCell<(Coalescer, Vec<u8>)> = RefCell::new((Coalescer::new(), vec![0u8; 65535 + 40]));
}

fuzz_target!(|data: &[u8]| {
    let Ok(h) = VnetHdr::parse(data) else {
        return;
    };
    let pkt = &data[VNET_HDR_LEN..];
    STATE.with(|st| {
        let (co, scratch) = &mut *st.borrow_mut();

        let mut done = pkt.to_vec();
        let _ = complete_csum(&mut done, &h);
        let none = VnetHdr {
            gso_type: GSO_NONE,
            ..h
        };
        let _ = complete_csum(&mut done, &none);

        let mut segments = Vec::new();
        if let Ok(n) = gso_split(pkt, &h, scratch, |s| segments.push(s.to_vec())) {
            assert_eq!(n, segments.len());
        }

        let mut out = |f: &[u8]| assert!(f.len() <= FRAME_MAX);
        co.push(pkt, &mut out);
        co.push(&done, &mut out);
        co.flush(&mut out);

        let mut frames = Vec::new();
        for s in &segments {
            co.push(s, &mut |f: &[u8]| frames.push(f.to_vec()));
        }
        co.flush(&mut |f: &[u8]| frames.push(f.to_vec()));
        for f in &frames {
            assert!(f.len() <= FRAME_MAX);
            let fh = VnetHdr::parse(f).expect("a frame starts with a header");
            if fh.gso_type != GSO_NONE {
                gso_split(&f[VNET_HDR_LEN..], &fh, scratch, |_| ()).expect("a merged frame splits");
            }
        }
    });
});
