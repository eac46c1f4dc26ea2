//! Parses arbitrary bytes as a whole IKE message (`ike::wire::Message`) and
//! walks every view and accessor of what is accepted. Nothing may panic.
//!
//! Besides panics it checks the codec's round trip: an accepted message's
//! content (`MessageRepr`) must encode again, and the encoding must parse to
//! the same content.
//!
//! The input is tried three ways:
//! - as it is (header rules: version, length, size bound);
//! - with the header's Length set to the input's length and the version to
//!   2.0, so that mutations reach the payload chain instead of stopping at
//!   the length check;
//! - the body of an SK/SKF payload, as if it were decrypted content
//!   (`Chain::new_checked_inner`): the seeds carry plain inner chains (built
//!   by `ike/src/wire/tests.rs`), so the payloads that only travel encrypted
//!   (IDi, AUTH, TSi, Delete, …) are reached without keys.
#![no_main]

use ike::wire::{Chain, ChainRepr, Header, Message, MessageRepr, Payload, PayloadType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    one(data);
    if data.len() >= 28 {
        let mut fixed = data.to_vec();
        fixed[17] = 0x20;
        let len = u32::try_from(fixed.len()).unwrap_or(u32::MAX);
        fixed[24..28].copy_from_slice(&len.to_be_bytes());
        one(&fixed);
    }
});

fn one(data: &[u8]) {
    if let Ok(h) = Header::new_checked(data) {
        let _ = (
            h.spi_i(),
            h.spi_r(),
            h.next_payload(),
            h.exchange().to_string(),
        );
        let _ = (
            h.flags(),
            h.flags_byte(),
            h.message_id(),
            h.length(),
            h.minor_version(),
        );
    }
    let m = match Message::new_checked(data) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.to_string();
            let _ = e.peer().map(|p| p.notify_type());
            return;
        }
    };
    walk_chain(&m.chain());
    let repr = MessageRepr::parse(&m);
    let bytes = repr
        .to_vec()
        .unwrap_or_else(|e| panic!("an accepted message does not re-encode: {e}"));
    let again = MessageRepr::from_bytes(&bytes)
        .unwrap_or_else(|e| panic!("a re-encoded message is refused: {e}"));
    assert_eq!(again, repr, "the round trip changed the content");
    assert_eq!(bytes.len(), repr.buffer_len());

    if let Some(e) = m.encrypted() {
        let _ = (e.aad().len(), e.body_range(), e.fragment());
        if let Ok(inner) = Chain::new_checked_inner(e.first_inner(), e.body()) {
            walk_chain(&inner);
            let r = ChainRepr::parse(&inner);
            let bytes = r
                .to_vec()
                .unwrap_or_else(|e| panic!("accepted inner content does not re-encode: {e}"));
            let reparsed = Chain::new_checked_inner(r.first_payload(), &bytes)
                .unwrap_or_else(|e| panic!("re-encoded inner content is refused: {e}"));
            assert_eq!(ChainRepr::parse(&reparsed), r);
        }
    }
}

fn walk_chain(c: &Chain<'_>) {
    for raw in c.raw() {
        let _ = (
            raw.payload_type,
            raw.next_payload,
            raw.critical,
            raw.index,
            raw.body.len(),
        );
    }
    for p in c.payloads() {
        match p {
            Payload::Sa(sa) => {
                for pr in sa.proposals() {
                    let _ = (pr.number(), pr.protocol(), pr.protocol_id(), pr.spi());
                    let _ = pr.transform_count();
                    for t in pr.transforms() {
                        let _ = (t.transform_type().to_string(), t.id(), t.key_length());
                        for a in t.attributes() {
                            let _ = a;
                        }
                    }
                }
            }
            Payload::Ke(k) => {
                let _ = (k.group().to_string(), k.data());
            }
            Payload::IdI(i) | Payload::IdR(i) => {
                let _ = (i.id_type().to_string(), i.data(), i.rest_of_payload());
            }
            Payload::Cert(c) | Payload::CertReq(c) => {
                let _ = (c.encoding().to_string(), c.data());
            }
            Payload::Auth(a) => {
                let _ = (a.method().to_string(), a.data(), a.digital_signature());
            }
            Payload::Nonce(n) => {
                let _ = n.data();
            }
            Payload::Notify(n) => {
                let _ = (
                    n.notify_type().to_string(),
                    n.protocol_id(),
                    n.spi(),
                    n.target(),
                );
                let _ = (n.data(), n.invalid_ke_group());
                if let Some(algs) = n.signature_hash_algorithms() {
                    let _ = algs.count();
                }
            }
            Payload::Delete(d) => {
                let _ = (d.protocol_id(), d.spis().count());
            }
            Payload::TsI(t) | Payload::TsR(t) => {
                let _ = t.count();
                for s in t.selectors() {
                    let _ = s;
                }
            }
            Payload::Sk(s) => {
                let _ = (s.first_inner() == PayloadType::NONE, s.body());
            }
            Payload::Skf(s) => {
                let _ = (
                    s.first_inner(),
                    s.fragment_number(),
                    s.total_fragments(),
                    s.body(),
                );
            }
            Payload::VendorId(b) | Payload::Cp(b) | Payload::Eap(b) => {
                let _ = b.len();
            }
        }
    }
}
