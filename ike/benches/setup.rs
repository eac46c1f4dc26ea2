//! IKE SA setups per second: a complete IKE_SA_INIT + IKE_AUTH with the
//! first CHILD SA between two engines in one process (PSK and Ed25519,
//! x25519, AES-GCM-256), and the responder's share of it measured alone
//! (the initiator's messages recorded once, replayed to fresh responders
//! with the same entropy, so the responder does all its work each time).
//!
//! `cargo bench -p ike --bench setup`. Comparing with strongSwan's charon
//! needs a UDP load generator against both daemons; see docs/design/ike.md.

use std::net::SocketAddr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ike::crypto::{PreSharedKey, SigningKey};
use ike::sa::{Action, Auth, Config, Entropy, Identity, Ike, Path, Timestamp};

struct Counter(u64, u64);

impl Entropy for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0 ^ self.1.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 31;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x ^= x >> 29;
            self.1 += 1;
            let b = x.to_be_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

const I: &str = "192.0.2.1:500";
const R: &str = "192.0.2.2:500";

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn auth(sig: bool, me: u8) -> Auth {
    if sig {
        Auth::Signature {
            key: SigningKey::ed25519_from_seed(&[me; 32]).unwrap(),
            peer: SigningKey::ed25519_from_seed(&[3 - me; 32])
                .unwrap()
                .public_key()
                .unwrap(),
        }
    } else {
        Auth::Psk(PreSharedKey::new(b"a benchmark pre-shared key, 32 b").unwrap())
    }
}

fn configs(sig: bool) -> (Config, Config) {
    let mut i = Config::new(
        sock(I),
        sock(R),
        Identity::Fqdn("a.test".into()),
        Identity::Fqdn("b.test".into()),
        auth(sig, 1),
    );
    let mut r = Config::new(
        sock(R),
        sock(I),
        Identity::Fqdn("b.test".into()),
        Identity::Fqdn("a.test".into()),
        auth(sig, 2),
    );
    for c in [&mut i, &mut r] {
        c.dpd_delay = None;
        c.ike_rekey_after = None;
    }
    (i, r)
}

fn sends(actions: Vec<Action>) -> Vec<Vec<u8>> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Send(d) => Some(d.bytes),
            _ => None,
        })
        .collect()
}

/// One whole setup; returns the initiator's two requests.
fn setup(sig: bool, seed: u64) -> Vec<Vec<u8>> {
    let (ci, cr) = configs(sig);
    let now = Timestamp::from_millis(0);
    let mut i = Ike::new(ci, Counter(seed, 0), now).unwrap();
    let mut r = Ike::new(cr, Counter(seed ^ 0xff, 0), now).unwrap();
    let to_r = Path {
        local: sock(R),
        remote: sock(I),
    };
    let to_i = Path {
        local: sock(I),
        remote: sock(R),
    };
    let init = sends(i.initiate(now));
    let resp = sends(r.handle(&init[0], to_r, now));
    let auth = sends(i.handle(&resp[0], to_i, now));
    let done = r.handle(&auth[0], to_r, now);
    assert!(done.iter().any(|a| matches!(a, Action::InstallChildSa(_))));
    vec![init[0].clone(), auth[0].clone()]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ike_sa_setup");
    g.measurement_time(Duration::from_secs(5));
    for (name, sig) in [("psk", false), ("ed25519", true)] {
        g.bench_function(format!("both_engines_{name}"), |b| b.iter(|| setup(sig, 7)));
        // The responder alone: replay the recorded requests to a fresh
        // responder with the entropy that produced them.
        let recorded = setup(sig, 7);
        g.bench_function(format!("responder_{name}"), |b| {
            b.iter_batched(
                || {
                    let (_, cr) = configs(sig);
                    Ike::new(cr, Counter(7 ^ 0xff, 0), Timestamp::from_millis(0)).unwrap()
                },
                |mut r| {
                    let now = Timestamp::from_millis(0);
                    let to_r = Path {
                        local: sock(R),
                        remote: sock(I),
                    };
                    r.handle(&recorded[0], to_r, now);
                    let out = r.handle(&recorded[1], to_r, now);
                    assert!(out.iter().any(|a| matches!(a, Action::InstallChildSa(_))));
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
