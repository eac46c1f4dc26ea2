//! Cross-checks against strongSwan 5.9.8: the captured IKE SA of
//! `ike/testdata/wire/` (see its README) run through this module's NAT
//! detection, proposal choice, selector narrowing and our responder, and its
//! SK payloads opened with `crypto::open`.

use std::net::SocketAddr;

use crate::crypto::{self, Aead, Group, PreSharedKey, Prf, SkKey};
use crate::wire::{
    AuthMethod, Chain, ChildSpi, IkeSpi, Message, Payload, ProposalProtocol, TransformId,
    TransformType,
};

use super::msg::Collected;
use super::*;

macro_rules! strongswan {
    ($name:literal) => {
        include_bytes!(concat!(
            "../../testdata/wire/strongswan-5.9.8-",
            $name,
            ".bin"
        ))
    };
}

const INIT_REQUEST: &[u8] = strongswan!("ike-sa-init-request");
const INIT_RESPONSE: &[u8] = strongswan!("ike-sa-init-response");
const AUTH_REQUEST: &[u8] = strongswan!("ike-auth-request");
const AUTH_RESPONSE: &[u8] = strongswan!("ike-auth-response");
const ENCRYPTED: &[(&str, &[u8])] = &[
    ("ike-auth-request", AUTH_REQUEST),
    ("ike-auth-response", AUTH_RESPONSE),
    (
        "create-child-sa-request",
        strongswan!("create-child-sa-request"),
    ),
    (
        "create-child-sa-response",
        strongswan!("create-child-sa-response"),
    ),
    (
        "informational-delete-child-request",
        strongswan!("informational-delete-child-request"),
    ),
    (
        "informational-delete-child-response",
        strongswan!("informational-delete-child-response"),
    ),
    (
        "informational-delete-ike-request",
        strongswan!("informational-delete-ike-request"),
    ),
    (
        "informational-delete-ike-response",
        strongswan!("informational-delete-ike-response"),
    ),
];

/// SK_ei and SK_er of the captured IKE SA (README: from charon's log).
const SK_EI: &str = "55598c23d6d4fdae804bea085a1de34279a91c81e675d6281745ba717d3a4e371f5d6710";
const SK_ER: &str = "d730bf52c06b94b37e2aca540ec28bcf496d9f88c033a782bffa374051915b02229e57e4";

const SPI_I: IkeSpi = IkeSpi(0x64d9_dc4e_a298_df36);
const SPI_R: IkeSpi = IkeSpi(0xe127_423d_1427_7742);

fn a() -> SocketAddr {
    "192.0.2.1:500".parse().unwrap()
}

fn b() -> SocketAddr {
    "192.0.2.2:500".parse().unwrap()
}

fn range(start: &str, end: &str) -> crate::wire::TrafficSelector {
    crate::wire::TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: u16::MAX,
        start: start.parse().unwrap(),
        end: end.parse().unwrap(),
    }
}

/// b.test's side of the captured connection, as our configuration.
fn responder_config() -> Config {
    let mut c = Config::new(
        b(),
        a(),
        Identity::Fqdn("b.test".into()),
        Identity::Fqdn("a.test".into()),
        Auth::Psk(PreSharedKey::new(b"not the lab's key").unwrap()),
    );
    c.ike_proposals = vec![
        IkeProposal {
            aead: Aead::AesGcm16_256,
            prf: Prf::HmacSha2_256,
            group: Group::Ecp256,
        },
        IkeProposal {
            aead: Aead::ChaCha20Poly1305,
            prf: Prf::HmacSha2_256,
            group: Group::Curve25519,
        },
    ];
    c.esp_proposals = vec![
        EspProposal {
            aead: Aead::AesGcm16_256,
            esn: false,
        },
        EspProposal {
            aead: Aead::ChaCha20Poly1305,
            esn: false,
        },
    ];
    c.local_ts = vec![range("10.2.0.0", "10.2.0.255")];
    c.remote_ts = vec![range("10.1.0.0", "10.1.0.255")];
    c
}

struct Counter(u64);

impl Entropy for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1);
            *b = (self.0 >> 56) as u8;
        }
    }
}

fn notifies<'a>(m: &'a Message<&'a [u8]>) -> Vec<crate::wire::NotifyPayload<'a>> {
    m.payloads()
        .filter_map(|p| match p {
            Payload::Notify(n) => Some(n),
            _ => None,
        })
        .collect()
}

#[test]
fn nat_detection_hashes_agree_with_strongswan() {
    // Both daemons ran with `encap = yes`, which makes strongSwan send a
    // random source hash to force UDP encapsulation: the destination hashes
    // are real and must match ours, the source hashes must not.
    let req = Message::new_checked(INIT_REQUEST).unwrap();
    let at_b = Path {
        local: b(),
        remote: a(),
    };
    assert_eq!(
        natd::detect(&notifies(&req), SPI_I, IkeSpi(0), at_b, false),
        NatStatus {
            local_behind_nat: false,
            remote_behind_nat: true
        }
    );
    let resp = Message::new_checked(INIT_RESPONSE).unwrap();
    let at_a = Path {
        local: a(),
        remote: b(),
    };
    assert_eq!(
        natd::detect(&notifies(&resp), SPI_I, SPI_R, at_a, false),
        NatStatus {
            local_behind_nat: false,
            remote_behind_nat: true
        }
    );
    // With the SPIs swapped or the port changed, nothing matches.
    assert!(natd::detect(&notifies(&req), SPI_I, SPI_R, at_b, false).local_behind_nat);
    let moved = Path {
        local: "192.0.2.2:4500".parse().unwrap(),
        remote: a(),
    };
    assert!(natd::detect(&notifies(&req), SPI_I, IkeSpi(0), moved, false).local_behind_nat);
}

#[test]
fn our_responder_answers_strongswans_ike_sa_init() {
    let mut ike = Ike::new(responder_config(), Counter(7), Timestamp::from_millis(0)).unwrap();
    let path = Path {
        local: b(),
        remote: a(),
    };
    let out = ike.handle(INIT_REQUEST, path, Timestamp::from_millis(1));
    let sent: Vec<&Datagram> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!(sent[0].path, path);
    assert_eq!(ike.half_open(), 1);
    let m = Message::new_checked(&sent[0].bytes[..]).unwrap();
    let h = m.header();
    assert_eq!(h.spi_i(), SPI_I);
    assert_ne!(h.spi_r().0, 0);
    assert!(h.flags().response && !h.flags().initiator);
    let mut kinds = Vec::new();
    for p in m.payloads() {
        match p {
            Payload::Sa(sa) => {
                // strongSwan's #1, chacha20poly1305-prfsha256-x25519 (its #2
                // is AES-CBC with MODP-2048, which we do not take).
                let props: Vec<_> = sa.proposals().collect();
                assert_eq!(props.len(), 1);
                assert_eq!(props[0].number(), 1);
                assert_eq!(props[0].protocol(), ProposalProtocol::Ike(None));
                let t: Vec<_> = props[0]
                    .transforms()
                    .map(|t| (t.transform_type(), t.id(), t.key_length()))
                    .collect();
                assert_eq!(
                    t,
                    [
                        (
                            TransformType::ENCR,
                            TransformId::ENCR_CHACHA20_POLY1305,
                            None
                        ),
                        (TransformType::PRF, TransformId::PRF_HMAC_SHA2_256, None),
                        (TransformType::KE, TransformId(31), None),
                    ]
                );
                kinds.push("SA".to_owned());
            }
            Payload::Ke(k) => {
                assert_eq!((k.group().0, k.data().len()), (31, 32));
                kinds.push("KE".to_owned());
            }
            Payload::Nonce(n) => {
                assert_eq!(n.data().len(), 32);
                kinds.push("Nonce".to_owned());
            }
            Payload::Notify(n) => kinds.push(n.notify_type().to_string()),
            p => kinds.push(p.payload_type().to_string()),
        }
    }
    assert_eq!(
        kinds,
        [
            "SA",
            "KE",
            "Nonce",
            "NAT_DETECTION_SOURCE_IP",
            "NAT_DETECTION_DESTINATION_IP",
            "SIGNATURE_HASH_ALGORITHMS"
        ]
    );
    // Our NAT detection, checked as strongSwan would at a.
    let at_a = Path {
        local: a(),
        remote: b(),
    };
    assert_eq!(
        natd::detect(&notifies(&m), SPI_I, h.spi_r(), at_a, false),
        NatStatus::default()
    );
    // strongSwan retransmits the identical request: the same answer.
    let again = ike.handle(INIT_REQUEST, path, Timestamp::from_millis(1000));
    let Some(Action::Send(d)) = again.first() else {
        panic!("{again:?}")
    };
    assert_eq!(d.bytes, sent[0].bytes);
    assert_eq!(ike.half_open(), 1);
}

fn open<'a>(bytes: &'a [u8], key: &str) -> (Message<&'a [u8]>, crypto::Plaintext) {
    let m = Message::new_checked(bytes).unwrap();
    let key = SkKey::from_bytes(Aead::ChaCha20Poly1305, &hex::decode(key).unwrap()).unwrap();
    let offset = m.encrypted().unwrap().payload_offset();
    let pt = crypto::open(&key, bytes, offset).unwrap();
    (m, pt)
}

#[test]
fn strongswan_sk_payloads_open_with_crypto_open() {
    for (name, bytes) in ENCRYPTED {
        let m = Message::new_checked(*bytes).unwrap();
        let response = m.header().flags().response;
        let (m, pt) = open(bytes, if response { SK_ER } else { SK_EI });
        let first = m.encrypted().unwrap().first_inner();
        Chain::new_checked_inner(first, &pt).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The other direction's key does not open it.
        let wrong = SkKey::from_bytes(
            Aead::ChaCha20Poly1305,
            &hex::decode(if response { SK_EI } else { SK_ER }).unwrap(),
        )
        .unwrap();
        let offset = m.encrypted().unwrap().payload_offset();
        assert_eq!(
            crypto::open(&wrong, bytes, offset).unwrap_err(),
            crypto::Error::AuthenticationFailed,
            "{name}"
        );
    }
}

#[test]
fn strongswans_ike_auth_through_our_choice_and_checks() {
    let config = responder_config();
    // The request: IDi, IDr, PSK AUTH, ESP proposal, selectors.
    let (m, pt) = open(AUTH_REQUEST, SK_EI);
    let chain = Chain::new_checked_inner(m.encrypted().unwrap().first_inner(), &pt).unwrap();
    let c = Collected::new(chain.payloads()).unwrap();
    let idi = c.id_i.unwrap();
    assert_eq!(
        Identity::from_payload(idi.id_type(), idi.data()),
        Identity::Fqdn("a.test".into())
    );
    assert!(config.local_id.matches(&Identity::from_payload(
        c.id_r.unwrap().id_type(),
        c.id_r.unwrap().data()
    )));
    let auth = c.auth.unwrap();
    assert_eq!(auth.method(), AuthMethod::SHARED_KEY_MIC);
    assert_eq!(auth.data().len(), Prf::HmacSha2_256.output_len());
    let (number, esp, peer_spi) = proposal::choose_esp(
        &c.sa.unwrap(),
        &config.esp_proposals,
        proposal::KeRule::Ignore,
    )
    .unwrap_or_else(|m| panic!("{m}"));
    assert_eq!(number, 1);
    assert_eq!(esp.aead, Aead::ChaCha20Poly1305);
    assert_ne!(peer_spi, ChildSpi(0));
    let tsi = ts::narrow(&ts::ranges(&c.ts_i.unwrap()), &config.remote_ts);
    let tsr = ts::narrow(&ts::ranges(&c.ts_r.unwrap()), &config.local_ts);
    assert_eq!(tsi, [range("10.1.0.0", "10.1.0.255")]);
    assert_eq!(tsr, [range("10.2.0.0", "10.2.0.255")]);
    assert!(c.error().is_none());

    // The response, checked as our initiator would (a.test's side).
    let (m, pt) = open(AUTH_RESPONSE, SK_ER);
    let chain = Chain::new_checked_inner(m.encrypted().unwrap().first_inner(), &pt).unwrap();
    let c = Collected::new(chain.payloads()).unwrap();
    let ours = [EspProposal {
        aead: Aead::ChaCha20Poly1305,
        esn: false,
    }];
    let (chosen, responder_spi) = proposal::check_esp_answer(&c.sa.unwrap(), &ours, None).unwrap();
    assert_eq!(chosen, ours[0]);
    assert_ne!(responder_spi, peer_spi);
    assert!(ts::all_within(
        &ts::ranges(&c.ts_i.unwrap()),
        &[range("10.1.0.0", "10.1.0.255")]
    ));
    assert!(ts::all_within(
        &ts::ranges(&c.ts_r.unwrap()),
        &[range("10.2.0.0", "10.2.0.255")]
    ));
    let idr = c.id_r.unwrap();
    assert_eq!(
        Identity::from_payload(idr.id_type(), idr.data()),
        Identity::Fqdn("b.test".into())
    );
}

#[test]
fn strongswans_ike_proposals_and_our_mismatch_report() {
    // Offered only AES-GCM with ECP-256, we refuse strongSwan's request
    // and say how close it came.
    let mut config = responder_config();
    config.ike_proposals.truncate(1);
    let m = Message::new_checked(INIT_REQUEST).unwrap();
    let c = Collected::new(m.payloads()).unwrap();
    let proposal::IkeChoice::NoneAcceptable(mismatch) =
        proposal::choose_ike(&c.sa.unwrap(), &config.ike_proposals, c.ke.unwrap().group())
    else {
        panic!()
    };
    assert_eq!(
        mismatch.to_string(),
        "no IKE proposal chosen (NO_PROPOSAL_CHOSEN): peer offered \
         [#1 chacha20poly1305-prfsha256-x25519, #2 aes256-sha256-prfsha256-modp2048], \
         we allow [aes256gcm16-prfsha256-ecp256]; closest: the peer's #1 and our \
         aes256gcm16-prfsha256-ecp256, which differ in ENCR, KE"
    );
}
