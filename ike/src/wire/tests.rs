//! Tests over whole messages: real messages from other implementations
//! (`ike/testdata/wire/`, see its README), the RFC 7634 Appendix A message,
//! builder round trips, and no-panic properties on arbitrary and mutated
//! messages. The fuzz seeds (`ike/fuzz/seeds/message/`) are written by the
//! ignored test `write_fuzz_seeds` and checked by `fuzz_seeds_parse`.

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;

const WIRESHARK_INIT: &[u8] =
    include_bytes!("../../testdata/wire/wireshark-ikev2-sa-init-request.bin");
const IPSEC_PARSER_INIT: &[u8] =
    include_bytes!("../../testdata/wire/ipsec-parser-sa-init-request.bin");
const IPSEC_PARSER_INIT_RESPONSE: &[u8] =
    include_bytes!("../../testdata/wire/ipsec-parser-sa-init-response.bin");
const IPSEC_PARSER_INIT_4: &[u8] =
    include_bytes!("../../testdata/wire/ipsec-parser-sa-init-request-4-proposals.bin");
const RFC7634: &[u8] = include_bytes!("../../testdata/wire/rfc7634-appendix-a.bin");

macro_rules! strongswan {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_bytes!(concat!("../../testdata/wire/strongswan-5.9.8-", $name, ".bin")))),*]
    };
}

/// The strongSwan 5.9.8 IKE SA of `testdata/wire/README.md`, in order.
const STRONGSWAN: &[(&str, &[u8])] = strongswan![
    "ike-sa-init-request",
    "ike-sa-init-response",
    "ike-auth-request",
    "ike-auth-response",
    "create-child-sa-request",
    "create-child-sa-response",
    "informational-delete-child-request",
    "informational-delete-child-response",
    "informational-delete-ike-request",
    "informational-delete-ike-response",
];

/// SK_ei and SK_er of that IKE SA (ChaCha20-Poly1305 key ‖ salt).
const STRONGSWAN_SK_EI: &str =
    "55598c23d6d4fdae804bea085a1de34279a91c81e675d6281745ba717d3a4e371f5d6710";
const STRONGSWAN_SK_ER: &str =
    "d730bf52c06b94b37e2aca540ec28bcf496d9f88c033a782bffa374051915b02229e57e4";

/// The non-strongSwan real messages of `testdata/wire`.
const OTHERS: &[(&str, &[u8])] = &[
    ("wireshark-ikev2-sa-init-request", WIRESHARK_INIT),
    ("ipsec-parser-sa-init-request", IPSEC_PARSER_INIT),
    ("ipsec-parser-sa-init-response", IPSEC_PARSER_INIT_RESPONSE),
    (
        "ipsec-parser-sa-init-request-4-proposals",
        IPSEC_PARSER_INIT_4,
    ),
    ("rfc7634-appendix-a", RFC7634),
];

/// Every real message of `testdata/wire`, named as its file.
pub(crate) fn real() -> Vec<(String, &'static [u8])> {
    OTHERS
        .iter()
        .map(|(n, b)| (n.to_string(), *b))
        .chain(
            STRONGSWAN
                .iter()
                .map(|(n, b)| (format!("strongswan-5.9.8-{n}"), *b)),
        )
        .collect()
}

/// Decrypts the SK payload of `m` with a ChaCha20-Poly1305 key ‖ salt
/// (RFC 7634: nonce = salt ‖ IV, associated data = everything before the
/// IV) and strips the padding: the content, ready for the inner chain.
fn open_sk(m: &Message<&[u8]>, key_salt: &[u8]) -> Vec<u8> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let e = m.encrypted().expect("an SK payload");
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key_salt[..32]).unwrap());
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&key_salt[32..36]);
    nonce[4..].copy_from_slice(&e.body()[..8]);
    let mut sealed = e.body()[8..].to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(e.aad()),
            &mut sealed,
        )
        .expect("the ICV verifies")
        .to_vec();
    // Padding, then the Pad Length byte (§3.14).
    let (&pad, rest) = plain.split_last().unwrap();
    rest[..rest.len() - usize::from(pad)].to_vec()
}

/// Reads every accessor of every view of a checked message, as the fuzz
/// target does, and treats an SK body as if it were decrypted content.
fn walk(m: &Message<&[u8]>) -> usize {
    let mut n = 0usize;
    let h = m.header();
    let _ = (
        h.spi_i(),
        h.spi_r(),
        h.exchange().to_string(),
        h.flags(),
        h.message_id(),
        h.minor_version(),
    );
    walk_chain(&m.chain(), &mut n);
    if let Some(e) = m.encrypted() {
        let _ = (e.aad().len(), e.fragment(), e.body_range());
        if let Ok(inner) = Chain::new_checked_inner(e.first_inner(), e.body()) {
            walk_chain(&inner, &mut n);
        }
    }
    n
}

fn walk_chain(c: &Chain<'_>, n: &mut usize) {
    for raw in c.raw() {
        *n += raw.body.len();
    }
    for p in c.payloads() {
        *n += 1;
        match p {
            Payload::Sa(sa) => {
                for pr in sa.proposals() {
                    let _ = (pr.number(), pr.protocol(), pr.spi(), pr.transform_count());
                    for t in pr.transforms() {
                        let _ = (t.transform_type(), t.id(), t.key_length());
                        *n += t.attributes().count();
                    }
                }
            }
            Payload::Ke(k) => *n += k.data().len() + usize::from(k.group().0),
            Payload::IdI(i) | Payload::IdR(i) => *n += i.data().len() + i.rest_of_payload().len(),
            Payload::Cert(c) | Payload::CertReq(c) => *n += c.data().len(),
            Payload::Auth(a) => {
                let _ = (a.method(), a.digital_signature());
            }
            Payload::Nonce(x) => *n += x.data().len(),
            Payload::Notify(x) => {
                let _ = (
                    x.target(),
                    x.data(),
                    x.invalid_ke_group(),
                    x.notify_type().is_error(),
                );
                *n += x.signature_hash_algorithms().map_or(0, |i| i.count());
            }
            Payload::Delete(d) => *n += d.spis().count(),
            Payload::TsI(t) | Payload::TsR(t) => *n += t.selectors().count(),
            Payload::Sk(s) => *n += s.body().len(),
            Payload::Skf(s) => *n += usize::from(s.fragment_number()) + s.body().len(),
            Payload::VendorId(b) | Payload::Cp(b) | Payload::Eap(b) => *n += b.len(),
        }
    }
}

/// `parse` then `emit` reproduces a checked message's content, and for
/// messages without reserved bits set, unknown payloads or stray protocol
/// IDs, its bytes.
fn re_emit(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let repr = MessageRepr::from_bytes(bytes)?;
    let out = repr.to_vec().expect("a parsed message re-encodes");
    assert_eq!(MessageRepr::from_bytes(&out).unwrap(), repr);
    Ok(out)
}

#[test]
fn wireshark_sa_init_request() {
    let m = Message::new_checked(WIRESHARK_INIT).unwrap();
    let h = m.header();
    assert_eq!(h.spi_i(), IkeSpi(0x8992_2c91_5f35_570e));
    assert_eq!(h.spi_r(), IkeSpi(0));
    assert_eq!(h.exchange(), ExchangeType::IKE_SA_INIT);
    assert!(h.flags().initiator && !h.flags().response);
    assert_eq!((h.message_id(), h.length()), (0, 300));
    let types: Vec<_> = m.payloads().map(|p| p.payload_type()).collect();
    assert_eq!(
        types,
        [
            PayloadType::SA,
            PayloadType::KE,
            PayloadType::NONCE,
            PayloadType::VENDOR_ID,
            PayloadType::VENDOR_ID,
            PayloadType::VENDOR_ID,
            PayloadType::VENDOR_ID,
            PayloadType::NOTIFY,
            PayloadType::NOTIFY,
            PayloadType::NOTIFY,
        ]
    );
    let repr = MessageRepr::parse(&m);
    let PayloadRepr::Sa(sa) = &repr.payloads[0] else {
        panic!()
    };
    assert_eq!(
        sa.proposals,
        vec![ProposalRepr {
            number: 1,
            protocol: ProposalProtocol::Ike(None),
            transforms: vec![
                TransformRepr::new(TransformType::ENCR, TransformId::ENCR_AES_GCM_16)
                    .with_key_length(256),
                TransformRepr::new(TransformType::PRF, TransformId::PRF_HMAC_SHA2_256),
                TransformRepr::new(TransformType::KE, TransformId(19)),
            ],
        }]
    );
    let PayloadRepr::Ke(ke) = &repr.payloads[1] else {
        panic!()
    };
    assert_eq!((ke.group, ke.data.len()), (KeMethod::ECP_256, 64));
    let PayloadRepr::Nonce(nonce) = &repr.payloads[2] else {
        panic!()
    };
    assert_eq!(nonce.data.len(), 40);
    let notifies: Vec<_> = m
        .payloads()
        .filter_map(|p| match p {
            Payload::Notify(n) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(
        notifies.iter().map(|n| n.notify_type()).collect::<Vec<_>>(),
        [
            NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
            NotifyType::REDIRECT_SUPPORTED,
            NotifyType::SIGNATURE_HASH_ALGORITHMS
        ]
    );
    assert_eq!(
        notifies[2]
            .signature_hash_algorithms()
            .unwrap()
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(re_emit(WIRESHARK_INIT).unwrap(), WIRESHARK_INIT);
}

#[test]
fn ipsec_parser_sa_init_exchange() {
    let req = MessageRepr::from_bytes(IPSEC_PARSER_INIT).unwrap();
    assert_eq!(req.header.spi_i, IkeSpi(0x54c1_8496_1bc3_fd77));
    let PayloadRepr::Sa(sa) = &req.payloads[0] else {
        panic!()
    };
    let ids: Vec<_> = sa.proposals[0]
        .transforms
        .iter()
        .map(|t| (t.transform_type, t.id.0, t.key_length()))
        .collect();
    assert_eq!(
        ids,
        [
            (TransformType::ENCR, 12, Some(128)),
            (TransformType::ENCR, 3, None),
            (TransformType::PRF, 2, None),
            (TransformType::INTEG, 2, None),
            (TransformType::KE, 2, None),
        ]
    );
    assert_eq!(re_emit(IPSEC_PARSER_INIT).unwrap(), IPSEC_PARSER_INIT);

    let resp = Message::new_checked(IPSEC_PARSER_INIT_RESPONSE).unwrap();
    let h = resp.header();
    assert_eq!(h.spi_r(), IkeSpi(0x6386_aa22_73ed_3972));
    assert!(h.flags().response && !h.flags().initiator);
    let types: Vec<_> = resp.payloads().map(|p| p.payload_type()).collect();
    assert_eq!(
        types,
        [
            PayloadType::SA,
            PayloadType::KE,
            PayloadType::NONCE,
            PayloadType::CERTREQ,
            PayloadType::NOTIFY
        ]
    );
    for p in resp.payloads() {
        match p {
            Payload::CertReq(c) => {
                assert_eq!(c.encoding(), CertEncoding::X509_SIGNATURE);
                assert_eq!(c.data().len(), 20);
            }
            Payload::Notify(n) => {
                assert_eq!(n.notify_type(), NotifyType::HTTP_CERT_LOOKUP_SUPPORTED)
            }
            _ => {}
        }
    }
    assert_eq!(
        re_emit(IPSEC_PARSER_INIT_RESPONSE).unwrap(),
        IPSEC_PARSER_INIT_RESPONSE
    );

    let four = MessageRepr::from_bytes(IPSEC_PARSER_INIT_4).unwrap();
    let PayloadRepr::Sa(sa) = &four.payloads[0] else {
        panic!()
    };
    assert_eq!(
        sa.proposals.iter().map(|p| p.number).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(
        sa.proposals
            .iter()
            .map(|p| p.transforms.len())
            .collect::<Vec<_>>(),
        [3, 3, 4, 4]
    );
    assert_eq!(re_emit(IPSEC_PARSER_INIT_4).unwrap(), IPSEC_PARSER_INIT_4);
}

/// RFC 7634 Appendix A: an INFORMATIONAL request protected with
/// ChaCha20-Poly1305 (header + SK). The split is checked here, and the
/// content decrypted with the RFC's key to parse the inner chain: one
/// SET_WINDOW_SIZE notification with window 10.
#[test]
fn rfc7634_appendix_a() {
    let m = Message::new_checked(RFC7634).unwrap();
    let h = m.header();
    assert_eq!(h.spi_i(), IkeSpi(0xc0c1_c2c3_c4c5_c6c7));
    assert_eq!(h.spi_r(), IkeSpi(0xd0d1_d2d3_d4d5_d6d7));
    assert_eq!(h.exchange(), ExchangeType::INFORMATIONAL);
    assert_eq!((h.message_id(), h.length()), (9, 69));
    let e = m.encrypted().unwrap();
    assert_eq!(e.first_inner(), PayloadType::NOTIFY);
    assert_eq!(e.aad(), &RFC7634[..32]);
    assert_eq!(e.body().len(), 8 + 13 + 16);
    assert_eq!(
        &e.body()[..8],
        &[0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17]
    );
    assert_eq!(re_emit(RFC7634).unwrap(), RFC7634);

    let key_salt: Vec<u8> = (0x80..=0xa3).collect();
    let content = &open_sk(&m, &key_salt)[..];
    let inner = Chain::new_checked_inner(e.first_inner(), content).unwrap();
    let r = ChainRepr::parse(&inner);
    assert_eq!(
        r.payloads,
        vec![PayloadRepr::Notify(NotifyRepr::new(
            NotifyType::SET_WINDOW_SIZE,
            vec![0, 0, 0, 10]
        ))]
    );
    assert_eq!(r.to_vec().unwrap(), content);
}

/// Payload lists as charon logs them ("IKE_AUTH request 1 [ IDi N(INIT_CONTACT) … ]").
fn charon_names(c: &Chain<'_>) -> String {
    let names: Vec<String> = c
        .payloads()
        .map(|p| match p {
            Payload::Sa(_) => "SA".into(),
            Payload::Ke(_) => "KE".into(),
            Payload::Nonce(_) => "No".into(),
            Payload::IdI(_) => "IDi".into(),
            Payload::IdR(_) => "IDr".into(),
            Payload::Auth(_) => "AUTH".into(),
            Payload::TsI(_) => "TSi".into(),
            Payload::TsR(_) => "TSr".into(),
            Payload::Delete(_) => "D".into(),
            Payload::Notify(n) => format!(
                "N({})",
                match n.notify_type().0 {
                    16384 => "INIT_CONTACT",
                    16388 => "NATD_S_IP",
                    16389 => "NATD_D_IP",
                    16393 => "REKEY_SA",
                    16396 => "MOBIKE_SUP",
                    16399 => "NO_ADD_ADDR",
                    16404 => "MULT_AUTH",
                    16406 => "REDIR_SUP",
                    16417 => "EAP_ONLY",
                    16418 => "CHDLESS_SUP",
                    16420 => "MSG_ID_SYN_SUP",
                    16430 => "FRAG_SUP",
                    16431 => "HASH_ALG",
                    _ => "?",
                }
            ),
            other => format!("{}", other.payload_type()),
        })
        .collect();
    format!("[ {} ]", names.join(" ")).replace("[  ]", "[ ]")
}

/// strongSwan 5.9.8's messages of one IKE SA (`testdata/wire/README.md`):
/// every message parses and re-encodes to the same bytes; every SK payload
/// decrypts with the logged keys and its content parses, re-encodes to the
/// same bytes and holds what charon's log lists.
#[test]
fn strongswan_5_9_8_ike_sa() {
    let ei = hex::decode(STRONGSWAN_SK_EI).unwrap();
    let er = hex::decode(STRONGSWAN_SK_ER).unwrap();
    let logged = [
        "[ SA KE No N(NATD_S_IP) N(NATD_D_IP) N(FRAG_SUP) N(HASH_ALG) N(REDIR_SUP) ]",
        "[ SA KE No N(NATD_S_IP) N(NATD_D_IP) N(FRAG_SUP) N(HASH_ALG) N(CHDLESS_SUP) N(MULT_AUTH) ]",
        "[ IDi N(INIT_CONTACT) IDr AUTH SA TSi TSr N(MOBIKE_SUP) N(NO_ADD_ADDR) N(MULT_AUTH) \
         N(EAP_ONLY) N(MSG_ID_SYN_SUP) ]",
        "[ IDr AUTH SA TSi TSr N(MOBIKE_SUP) N(NO_ADD_ADDR) ]",
        "[ N(REKEY_SA) SA No TSi TSr ]",
        "[ SA No TSi TSr ]",
        "[ D ]",
        "[ D ]",
        "[ D ]",
        "[ ]",
    ];
    let exchanges = [
        ExchangeType::IKE_SA_INIT,
        ExchangeType::IKE_AUTH,
        ExchangeType::CREATE_CHILD_SA,
        ExchangeType::INFORMATIONAL,
        ExchangeType::INFORMATIONAL,
    ];
    let mut contents = Vec::new();
    for (i, (name, bytes)) in STRONGSWAN.iter().enumerate() {
        let m = Message::new_checked(*bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let h = m.header();
        let response = i % 2 == 1;
        assert_eq!(h.spi_i(), IkeSpi(0x64d9_dc4e_a298_df36), "{name}");
        assert_eq!(
            h.spi_r(),
            IkeSpi(if i == 0 { 0 } else { 0xe127_423d_1427_7742 }),
            "{name}"
        );
        assert_eq!(h.exchange(), exchanges[i / 2], "{name}");
        assert_eq!(h.message_id() as usize, i / 2, "{name}");
        assert_eq!(h.flags().response, response, "{name}");
        assert_eq!(h.flags().initiator, !response, "{name}");
        assert_eq!(re_emit(bytes).unwrap(), *bytes, "{name}");
        let chain = match m.encrypted() {
            None => {
                assert_eq!(charon_names(&m.chain()), logged[i], "{name}");
                continue;
            }
            Some(_) => open_sk(&m, if response { &er } else { &ei }),
        };
        let inner = Chain::new_checked_inner(m.encrypted().unwrap().first_inner(), &chain)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(charon_names(&inner), logged[i], "{name}");
        let repr = ChainRepr::parse(&inner);
        assert_eq!(repr.to_vec().unwrap(), chain, "{name}");
        contents.push(repr);
    }

    // IKE_SA_INIT: both proposals of the request, the responder's choice.
    let init = MessageRepr::from_bytes(STRONGSWAN[0].1).unwrap();
    let PayloadRepr::Sa(sa) = &init.payloads[0] else {
        panic!()
    };
    assert_eq!(
        sa.proposals,
        vec![
            ProposalRepr {
                number: 1,
                protocol: ProposalProtocol::Ike(None),
                transforms: vec![
                    TransformRepr::new(TransformType::ENCR, TransformId::ENCR_CHACHA20_POLY1305),
                    TransformRepr::new(TransformType::PRF, TransformId::PRF_HMAC_SHA2_256),
                    TransformRepr::new(TransformType::KE, TransformId(31)),
                ],
            },
            ProposalRepr {
                number: 2,
                protocol: ProposalProtocol::Ike(None),
                transforms: vec![
                    TransformRepr::new(TransformType::ENCR, TransformId::ENCR_AES_CBC)
                        .with_key_length(256),
                    TransformRepr::new(TransformType::INTEG, TransformId::AUTH_HMAC_SHA2_256_128),
                    TransformRepr::new(TransformType::PRF, TransformId::PRF_HMAC_SHA2_256),
                    TransformRepr::new(TransformType::KE, TransformId(14)),
                ],
            },
        ]
    );
    let PayloadRepr::Ke(ke) = &init.payloads[1] else {
        panic!()
    };
    assert_eq!((ke.group, ke.data.len()), (KeMethod::CURVE25519, 32));
    let m = Message::new_checked(STRONGSWAN[0].1).unwrap();
    let algs: Vec<u16> = m
        .payloads()
        .find_map(|p| match p {
            Payload::Notify(n) => n.signature_hash_algorithms().map(|a| a.collect()),
            _ => None,
        })
        .unwrap();
    assert_eq!(algs, [2, 3, 4, 5]);
    let resp = MessageRepr::from_bytes(STRONGSWAN[1].1).unwrap();
    let PayloadRepr::Sa(chosen) = &resp.payloads[0] else {
        panic!()
    };
    assert_eq!(chosen.proposals, sa.proposals[..1]);

    // IKE_AUTH request: identities, PSK AUTH, the ESP proposal with the
    // initiator's inbound SPI, the traffic selectors.
    let auth = &contents[0].payloads;
    assert_eq!(
        auth[0],
        PayloadRepr::IdI(IdRepr {
            id_type: IdType::FQDN,
            data: b"a.test".to_vec()
        })
    );
    assert_eq!(
        auth[2],
        PayloadRepr::IdR(IdRepr {
            id_type: IdType::FQDN,
            data: b"b.test".to_vec()
        })
    );
    let PayloadRepr::Auth(a) = &auth[3] else {
        panic!()
    };
    assert_eq!((a.method, a.data.len()), (AuthMethod::SHARED_KEY_MIC, 32));
    let esp = |spi| SaRepr {
        proposals: vec![ProposalRepr {
            number: 1,
            protocol: ProposalProtocol::Esp(ChildSpi(spi)),
            transforms: vec![
                TransformRepr::new(TransformType::ENCR, TransformId::ENCR_CHACHA20_POLY1305),
                TransformRepr::new(TransformType::ESN, TransformId::ESN_NO),
            ],
        }],
    };
    assert_eq!(auth[4], PayloadRepr::Sa(esp(0x0cdf_30a1)));
    let ts = |a: &str, b: &str| TsRepr {
        selectors: vec![SelectorRepr::Range(TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: a.parse().unwrap(),
            end: b.parse().unwrap(),
        })],
    };
    assert_eq!(auth[5], PayloadRepr::TsI(ts("10.1.0.0", "10.1.0.255")));
    assert_eq!(auth[6], PayloadRepr::TsR(ts("10.2.0.0", "10.2.0.255")));
    assert_eq!(contents[1].payloads[2], PayloadRepr::Sa(esp(0xd41f_ae1f)));

    // CREATE_CHILD_SA names the rekeyed SA; the deletes name the old SAs,
    // then the IKE SA.
    assert_eq!(
        contents[2].payloads[0],
        PayloadRepr::Notify(NotifyRepr {
            notify_type: NotifyType::REKEY_SA,
            target: NotifyTarget::Esp(ChildSpi(0x0cdf_30a1)),
            data: vec![],
        })
    );
    assert_eq!(
        contents[4].payloads,
        [PayloadRepr::Delete(DeleteRepr::Esp(vec![ChildSpi(
            0x0cdf_30a1
        )]))]
    );
    assert_eq!(
        contents[5].payloads,
        [PayloadRepr::Delete(DeleteRepr::Esp(vec![ChildSpi(
            0xd41f_ae1f
        )]))]
    );
    assert_eq!(contents[6].payloads, [PayloadRepr::Delete(DeleteRepr::Ike)]);
    assert!(contents[7].payloads.is_empty());
}

#[test]
fn ikev1_and_unknown_critical_payload() {
    let mut v1 = WIRESHARK_INIT.to_vec();
    v1[17] = 0x10;
    let e = Message::new_checked(&v1[..]).unwrap_err();
    let Error::Peer(pe) = &e else { panic!() };
    assert_eq!(pe.notify_type(), NotifyType::INVALID_MAJOR_VERSION);
    assert!(e.to_string().contains("IKE version 1.0"), "{e}");

    // Give the last Notify an unknown type... by renaming the payload type
    // that names it (the previous Notify's Next Payload) to 99.
    let mut unknown = WIRESHARK_INIT.to_vec();
    let prev_next = 300 - 16 - 8;
    assert_eq!(unknown[prev_next], 41);
    unknown[prev_next] = 99;
    let m = Message::new_checked(&unknown[..]).unwrap();
    assert_eq!(m.payloads().count(), 9);
    // Its MessageRepr drops it and still encodes.
    let out = re_emit(&unknown).unwrap();
    assert_eq!(out.len(), 300 - 16);
    unknown[prev_next + 9] |= CRITICAL;
    match Message::new_checked(&unknown[..]) {
        Err(Error::Peer(PeerError::UnsupportedCriticalPayload { payload_type, at })) => {
            assert_eq!(payload_type, 99);
            assert_eq!(
                at.place,
                Place::Payload {
                    ty: PayloadType(99),
                    index: 10
                }
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A full set of message shapes the exchanges build, used as fuzz seeds:
/// IKE_SA_INIT request and response, a COOKIE answer, INVALID_KE_PAYLOAD,
/// and IKE_AUTH / CREATE_CHILD_SA / INFORMATIONAL whose SK body is the
/// *unencrypted* inner chain (so that the fuzz target, which parses an SK
/// body as if decrypted, reaches the inner payloads), plus SKF fragments.
pub(crate) fn built_messages() -> Vec<(&'static str, MessageRepr)> {
    let hdr = |exchange: ExchangeType, response: bool, message_id: u32| HeaderRepr {
        spi_i: IkeSpi(0x0011_2233_4455_6677),
        spi_r: IkeSpi(if exchange == ExchangeType::IKE_SA_INIT && !response {
            0
        } else {
            0x8899_aabb_ccdd_eeff
        }),
        exchange,
        flags: Flags {
            initiator: !response,
            higher_version: false,
            response,
        },
        message_id,
    };
    let ike_sa = SaRepr {
        proposals: vec![
            ProposalRepr {
                number: 1,
                protocol: ProposalProtocol::Ike(None),
                transforms: vec![
                    TransformRepr::new(TransformType::ENCR, TransformId::ENCR_AES_GCM_16)
                        .with_key_length(256),
                    TransformRepr::new(TransformType::PRF, TransformId::PRF_HMAC_SHA2_256),
                    TransformRepr::new(TransformType::KE, TransformId(31)),
                ],
            },
            ProposalRepr {
                number: 2,
                protocol: ProposalProtocol::Ike(None),
                transforms: vec![
                    TransformRepr::new(TransformType::ENCR, TransformId::ENCR_CHACHA20_POLY1305),
                    TransformRepr::new(TransformType::PRF, TransformId::PRF_HMAC_SHA2_512),
                    TransformRepr::new(TransformType::KE, TransformId(31)),
                    TransformRepr::new(TransformType::ADDKE1, TransformId(36)),
                ],
            },
        ],
    };
    let esp_sa = |spi| SaRepr {
        proposals: vec![ProposalRepr {
            number: 1,
            protocol: ProposalProtocol::Esp(ChildSpi(spi)),
            transforms: vec![
                TransformRepr::new(TransformType::ENCR, TransformId::ENCR_AES_GCM_16)
                    .with_key_length(256),
                TransformRepr::new(TransformType::ESN, TransformId::ESN_NO),
            ],
        }],
    };
    let ts = |a: &str, b: &str| TsRepr {
        selectors: vec![SelectorRepr::Range(TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: a.parse::<IpAddr>().unwrap(),
            end: b.parse::<IpAddr>().unwrap(),
        })],
    };
    let nat = |t| PayloadRepr::Notify(NotifyRepr::new(t, vec![0x5a; 20]));
    let frag = PayloadRepr::Notify(NotifyRepr::new(
        NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
        vec![],
    ));
    let sha = PayloadRepr::Notify(NotifyRepr::new(
        NotifyType::SIGNATURE_HASH_ALGORITHMS,
        vec![0, 2, 0, 3, 0, 4, 0, 5],
    ));
    let ke = |g| {
        PayloadRepr::Ke(KeRepr {
            group: g,
            data: vec![0x42; 32],
        })
    };
    let nonce = |b| PayloadRepr::Nonce(NonceRepr { data: vec![b; 32] });
    let sk = |inner: Vec<PayloadRepr>| {
        let c = ChainRepr { payloads: inner };
        PayloadRepr::Sk(SkRepr {
            first_inner: c.first_payload(),
            body: c.to_vec().unwrap(),
        })
    };
    let auth_inner = vec![
        PayloadRepr::IdI(IdRepr {
            id_type: IdType::FQDN,
            data: b"sw.test".to_vec(),
        }),
        PayloadRepr::Cert(CertRepr {
            encoding: CertEncoding::X509_SIGNATURE,
            data: vec![0x30, 0x82, 0x01, 0x00],
        }),
        PayloadRepr::CertReq(CertRepr {
            encoding: CertEncoding::X509_SIGNATURE,
            data: vec![0x11; 20],
        }),
        PayloadRepr::Notify(NotifyRepr::new(NotifyType::INITIAL_CONTACT, vec![])),
        PayloadRepr::IdR(IdRepr {
            id_type: IdType::IPV4_ADDR,
            data: vec![192, 0, 2, 2],
        }),
        PayloadRepr::Auth(AuthRepr {
            method: AuthMethod::DIGITAL_SIGNATURE,
            data: vec![2, 0x30, 0x05, 0xee, 0xee],
        }),
        PayloadRepr::Sa(esp_sa(0xc000_0001)),
        PayloadRepr::TsI(ts("10.1.0.0", "10.1.0.255")),
        PayloadRepr::TsR(ts("10.2.0.0", "10.2.0.255")),
        PayloadRepr::Cp(vec![1, 0, 0, 0, 0, 1, 0, 0]),
        PayloadRepr::Eap(vec![1, 1, 0, 5, 1]),
    ];
    let rekey_inner = vec![
        PayloadRepr::Notify(NotifyRepr {
            notify_type: NotifyType::REKEY_SA,
            target: NotifyTarget::Esp(ChildSpi(0xc000_0001)),
            data: vec![],
        }),
        PayloadRepr::Sa(esp_sa(0xc000_0002)),
        nonce(0x33),
        ke(KeMethod::CURVE25519),
        PayloadRepr::TsI(ts("2001:db8:1::", "2001:db8:1::ffff")),
        PayloadRepr::TsR(TsRepr {
            selectors: vec![
                SelectorRepr::Range(TrafficSelector {
                    ip_protocol: 17,
                    start_port: 500,
                    end_port: 500,
                    start: "2001:db8:2::".parse().unwrap(),
                    end: "2001:db8:2::ffff".parse().unwrap(),
                }),
                SelectorRepr::Other {
                    ts_type: TsType::SECLABEL,
                    data: b"label".to_vec(),
                },
            ],
        }),
    ];
    let delete_inner = vec![
        PayloadRepr::Delete(DeleteRepr::Esp(vec![ChildSpi(0xc000_0001), ChildSpi(7)])),
        PayloadRepr::Delete(DeleteRepr::Ike),
    ];
    vec![
        (
            "ike_sa_init_request",
            MessageRepr {
                header: hdr(ExchangeType::IKE_SA_INIT, false, 0),
                payloads: vec![
                    PayloadRepr::Sa(ike_sa.clone()),
                    ke(KeMethod::CURVE25519),
                    nonce(0x11),
                    nat(NotifyType::NAT_DETECTION_SOURCE_IP),
                    nat(NotifyType::NAT_DETECTION_DESTINATION_IP),
                    frag.clone(),
                    sha.clone(),
                    PayloadRepr::VendorId(b"viaduct".to_vec()),
                ],
            },
        ),
        (
            "ike_sa_init_response",
            MessageRepr {
                header: hdr(ExchangeType::IKE_SA_INIT, true, 0),
                payloads: vec![
                    PayloadRepr::Sa(SaRepr {
                        proposals: vec![ike_sa.proposals[1].clone()],
                    }),
                    ke(KeMethod::CURVE25519),
                    nonce(0x22),
                    nat(NotifyType::NAT_DETECTION_SOURCE_IP),
                    nat(NotifyType::NAT_DETECTION_DESTINATION_IP),
                    PayloadRepr::CertReq(CertRepr {
                        encoding: CertEncoding::X509_SIGNATURE,
                        data: vec![0x11; 40],
                    }),
                    frag,
                    sha,
                ],
            },
        ),
        (
            "cookie",
            MessageRepr {
                header: hdr(ExchangeType::IKE_SA_INIT, true, 0),
                payloads: vec![PayloadRepr::Notify(NotifyRepr::new(
                    NotifyType::COOKIE,
                    vec![0xc0; 32],
                ))],
            },
        ),
        (
            "invalid_ke_payload",
            MessageRepr {
                header: hdr(ExchangeType::IKE_SA_INIT, true, 0),
                payloads: vec![PayloadRepr::Notify(NotifyRepr::new(
                    NotifyType::INVALID_KE_PAYLOAD,
                    vec![0, 19],
                ))],
            },
        ),
        (
            "ike_auth_plain_sk",
            MessageRepr {
                header: hdr(ExchangeType::IKE_AUTH, false, 1),
                payloads: vec![sk(auth_inner)],
            },
        ),
        (
            "create_child_sa_plain_sk",
            MessageRepr {
                header: hdr(ExchangeType::CREATE_CHILD_SA, false, 2),
                payloads: vec![sk(rekey_inner)],
            },
        ),
        (
            "informational_delete_plain_sk",
            MessageRepr {
                header: hdr(ExchangeType::INFORMATIONAL, true, 3),
                payloads: vec![sk(delete_inner)],
            },
        ),
        (
            "informational_dpd",
            MessageRepr {
                header: hdr(ExchangeType::INFORMATIONAL, false, 4),
                payloads: vec![PayloadRepr::Sk(SkRepr {
                    first_inner: PayloadType::NONE,
                    body: vec![0x77; 8 + 16 + 1],
                })],
            },
        ),
        (
            "skf_first_fragment",
            MessageRepr {
                header: hdr(ExchangeType::IKE_AUTH, false, 1),
                payloads: vec![PayloadRepr::Skf(SkfRepr {
                    first_inner: PayloadType::ID_I,
                    fragment_number: 1,
                    total_fragments: 3,
                    body: vec![0x55; 64],
                })],
            },
        ),
        (
            "skf_later_fragment",
            MessageRepr {
                header: hdr(ExchangeType::IKE_AUTH, false, 1),
                payloads: vec![PayloadRepr::Skf(SkfRepr {
                    first_inner: PayloadType::NONE,
                    fragment_number: 3,
                    total_fragments: 3,
                    body: vec![0x66; 40],
                })],
            },
        ),
    ]
}

#[test]
fn built_messages_round_trip() {
    for (name, repr) in built_messages() {
        let bytes = repr.to_vec().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(bytes.len(), repr.buffer_len(), "{name}");
        let m = Message::new_checked(&bytes[..]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(MessageRepr::parse(&m), repr, "{name}");
        assert!(walk(&m) > 0, "{name}");
    }
}

#[test]
fn plain_sk_content_parses_as_inner_chain() {
    let (_, repr) = built_messages()
        .into_iter()
        .find(|(n, _)| *n == "ike_auth_plain_sk")
        .unwrap();
    let bytes = repr.to_vec().unwrap();
    let m = Message::new_checked(&bytes[..]).unwrap();
    let e = m.encrypted().unwrap();
    let inner = Chain::new_checked_inner(e.first_inner(), e.body()).unwrap();
    let types: Vec<_> = inner.payloads().map(|p| p.payload_type()).collect();
    assert_eq!(types.len(), 11);
    assert_eq!(types[0], PayloadType::ID_I);
    // An inner chain error says where.
    let mut broken = e.body().to_vec();
    broken[3] = 3;
    let err = Chain::new_checked_inner(e.first_inner(), &broken).unwrap_err();
    assert_eq!(
        err.to_string(),
        "IKE message from the peer refused: IDi payload #1 inside SK: payload length 3 \
         is below the minimum 4"
    );
}

fn seeds_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/message")
}

/// Writes the fuzz seeds: the real messages and the built ones.
/// `cargo test -p ike write_fuzz_seeds -- --ignored`
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = seeds_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in real() {
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
    for (name, repr) in built_messages() {
        std::fs::write(dir.join(format!("{name}.bin")), repr.to_vec().unwrap()).unwrap();
    }
}

/// Every committed seed is a valid message, so the fuzzer starts inside the
/// parser, and the seeds cover every built and real message.
#[test]
fn fuzz_seeds_parse() {
    let dir = seeds_dir();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let m =
            Message::new_checked(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        walk(&m);
        names.push(path.file_stem().unwrap().to_string_lossy().into_owned());
    }
    let expected = real()
        .into_iter()
        .map(|(n, _)| n)
        .chain(built_messages().into_iter().map(|(n, _)| n.to_string()));
    for name in expected {
        assert!(names.contains(&name), "seed {name} missing");
    }
}

// ---------------------------------------------------------------- properties

fn header() -> impl Strategy<Value = HeaderRepr> {
    (
        any::<(u64, u64)>(),
        any::<u8>(),
        any::<(bool, bool, bool)>(),
        any::<u32>(),
    )
        .prop_map(|((i, r), x, (fi, fv, fr), message_id)| HeaderRepr {
            spi_i: IkeSpi(i),
            spi_r: IkeSpi(r),
            exchange: ExchangeType(x),
            flags: Flags {
                initiator: fi,
                higher_version: fv,
                response: fr,
            },
            message_id,
        })
}

fn valid<T: Clone + std::fmt::Debug>(
    s: impl Strategy<Value = T>,
    check: fn(&T) -> bool,
) -> impl Strategy<Value = T> {
    s.prop_filter("encodable", check)
}

/// Payloads that encode (not SK/SKF).
fn payload() -> impl Strategy<Value = PayloadRepr> {
    use super::payload::tests::bytes;
    let id = || {
        (
            prop_oneof![Just(IdType::FQDN), Just(IdType::KEY_ID), Just(IdType::NULL)],
            bytes(0..24),
        )
            .prop_map(|(id_type, data)| IdRepr { id_type, data })
    };
    let cert = || {
        (any::<u8>(), bytes(0..40)).prop_map(|(e, data)| CertRepr {
            encoding: CertEncoding(e),
            data,
        })
    };
    prop_oneof![
        super::sa::tests::sa().prop_map(PayloadRepr::Sa),
        (any::<u16>(), bytes(1..64)).prop_map(|(g, data)| PayloadRepr::Ke(KeRepr {
            group: KeMethod(g),
            data
        })),
        id().prop_map(PayloadRepr::IdI),
        id().prop_map(PayloadRepr::IdR),
        cert().prop_map(PayloadRepr::Cert),
        cert().prop_map(PayloadRepr::CertReq),
        (any::<u8>(), bytes(0..40)).prop_map(|(m, data)| PayloadRepr::Auth(AuthRepr {
            method: AuthMethod(m),
            data
        })),
        bytes(16..80).prop_map(|data| PayloadRepr::Nonce(NonceRepr { data })),
        valid(super::notify::tests::notify(), |n| n
            .emit(&mut vec![0; n.buffer_len()])
            .is_ok())
        .prop_map(PayloadRepr::Notify),
        super::notify::tests::delete().prop_map(PayloadRepr::Delete),
        bytes(0..20).prop_map(PayloadRepr::VendorId),
        super::ts::tests::ts().prop_map(PayloadRepr::TsI),
        super::ts::tests::ts().prop_map(PayloadRepr::TsR),
        bytes(0..12).prop_map(PayloadRepr::Cp),
        bytes(0..12).prop_map(PayloadRepr::Eap),
    ]
}

fn encrypted_last() -> impl Strategy<Value = Option<PayloadRepr>> {
    use super::payload::tests::bytes;
    proptest::option::of(prop_oneof![
        (any::<u8>(), bytes(0..48)).prop_map(|(t, body)| PayloadRepr::Sk(SkRepr {
            first_inner: PayloadType(t),
            body
        })),
        (any::<u8>(), 1u16..5, 0u16..5, bytes(0..48)).prop_map(|(t, total, k, body)| {
            let fragment_number = 1 + k % total;
            PayloadRepr::Skf(SkfRepr {
                first_inner: if fragment_number == 1 {
                    PayloadType(t)
                } else {
                    PayloadType::NONE
                },
                fragment_number,
                total_fragments: total,
                body,
            })
        }),
    ])
}

fn message() -> impl Strategy<Value = MessageRepr> {
    (
        header(),
        proptest::collection::vec(payload(), 0..6),
        encrypted_last(),
    )
        .prop_map(|(header, mut payloads, last)| {
            payloads.extend(last);
            MessageRepr { header, payloads }
        })
}

fn real_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0..real().len()).prop_map(|i| real()[i].1.to_vec()),
        (0..10usize).prop_map(|i| built_messages()[i].1.to_vec().unwrap()),
    ]
}

/// Byte mutations: (position, new value); positions wrap around the message.
fn mutate(mut b: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(at, v) in edits {
        if !b.is_empty() {
            let i = at % b.len();
            b[i] = v;
        }
    }
    if let Some(c) = cut {
        b.truncate(c % (b.len() + 1));
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn message_round_trip(m in message()) {
        let mut buf = vec![0; m.buffer_len()];
        let n = m.emit(&mut buf).unwrap();
        prop_assert_eq!(n, buf.len());
        let parsed = Message::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(MessageRepr::parse(&parsed), m);
        walk(&parsed);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in super::payload::tests::bytes(0..400)) {
        if let Ok(m) = Message::new_checked(&b[..]) {
            walk(&m);
            re_emit(&b).unwrap();
        }
        if let Ok(c) = Chain::new_checked_inner(PayloadType(b.first().copied().unwrap_or(0)), &b) {
            walk_chain(&c, &mut 0);
        }
    }

    /// Arbitrary bytes behind a well-formed header reach the chain parser.
    #[test]
    fn arbitrary_chains_never_panic(first in 33u8..=54, b in super::payload::tests::bytes(0..300)) {
        let mut msg = vec![0u8; 28];
        msg[16] = first;
        msg[17] = 0x20;
        msg[24..28].copy_from_slice(&((28 + b.len()) as u32).to_be_bytes());
        msg.extend_from_slice(&b);
        if let Ok(m) = Message::new_checked(&msg[..]) {
            walk(&m);
            re_emit(&msg).unwrap();
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        b in real_message(),
        edits in proptest::collection::vec(any::<(usize, u8)>(), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let b = mutate(b, &edits, cut);
        if let Ok(m) = Message::new_checked(&b[..]) {
            walk(&m);
            re_emit(&b).unwrap();
        }
    }

    /// Encoding never panics, whatever the content (valid or not), and what
    /// it accepts parses back to the same content.
    #[test]
    fn emit_never_panics(
        header in header(),
        raw in proptest::collection::vec(
            (any::<u8>(), super::payload::tests::bytes(0..40), super::notify::tests::notify()), 0..5),
        room in 0usize..400,
    ) {
        let payloads: Vec<PayloadRepr> = raw.into_iter().map(|(k, data, n)| match k % 8 {
            0 => PayloadRepr::Nonce(NonceRepr { data }),
            1 => PayloadRepr::Ke(KeRepr { group: KeMethod(7), data }),
            2 => PayloadRepr::Notify(n),
            3 => PayloadRepr::IdI(IdRepr { id_type: IdType(k % 6), data }),
            4 => PayloadRepr::Sk(SkRepr { first_inner: PayloadType(k), body: data }),
            5 => PayloadRepr::Skf(SkfRepr { first_inner: PayloadType(k), fragment_number: u16::from(k % 3),
                                             total_fragments: 2, body: data }),
            6 => PayloadRepr::Delete(DeleteRepr::Ah(data.iter().map(|&x| ChildSpi(x.into())).collect())),
            _ => PayloadRepr::VendorId(data),
        }).collect();
        let m = MessageRepr { header, payloads };
        let mut buf = vec![0; room];
        if let Ok(n) = m.emit(&mut buf) {
            prop_assert_eq!(MessageRepr::from_bytes(&buf[..n]).unwrap(), m);
        }
    }
}
