//! Test helpers: Suricata rule text → the engine's signatures (through the
//! host-side parser), and packets.

use std::net::IpAddr;

use viaduct_ids::{Engine, Packet, Proto, Signature};

/// One parsed rule as a signature.
pub fn signature(r: &ids_rules::Rule) -> Signature {
    ids_rules::signature(r)
}

/// Parses rule text; every rule must compile.
pub fn signatures(text: &str) -> Vec<Signature> {
    let set = ids_rules::parse(text, &ids_rules::Vars::default());
    assert!(set.refused.is_empty(), "refused: {:?}", set.refused);
    set.rules.iter().map(signature).collect()
}

/// An engine from rule text.
pub fn engine(text: &str) -> Engine {
    Engine::new(signatures(text)).expect("engine builds")
}

/// A TCP packet from 10.0.0.1:40000 to 10.0.0.2:80, established, to server.
pub fn tcp(payload_len: usize) -> Packet {
    Packet {
        proto: Proto::Tcp,
        src: IpAddr::from([10, 0, 0, 1]),
        dst: IpAddr::from([10, 0, 0, 2]),
        src_port: 40000,
        dst_port: 80,
        to_server: true,
        established: true,
        dsize: payload_len,
    }
}

/// The sids that match `payload` in a packet like [`tcp`].
pub fn sids(e: &Engine, pkt: &Packet, payload: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    e.inspect(pkt, payload, &mut out);
    out.iter().map(|h| h.sid).collect()
}
