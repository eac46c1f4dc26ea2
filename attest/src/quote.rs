//! Checking a quote: every check by name, each one independent of the others' results
//! so a report names everything that is wrong.
//!
//! The checks, in order (names as `appliance attest` prints them):
//!
//! | name | what holds |
//! |---|---|
//! | `reference-signature` | the reference values are the ones the release key signed (checked by [`crate::reference`]) |
//! | `ak-enrolled` | the AK the gateway presents is the one enrolled for this device, byte for byte |
//! | `ak-attributes` | the enrolled AK is a restricted signing key that never leaves its TPM (fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign, not decrypt, a fixed SHA-256 scheme) |
//! | `quote-signature` | the quote's `TPMS_ATTEST` is signed by the enrolled AK |
//! | `pcr-selection` | the **signed** PCR selection equals the one requested (bank, size, bitmap) — not the unsigned one next to the quote |
//! | `nonce` | the signed `extraData` is the binding of our nonce, the enrolled AK's name and the address we dialled |
//! | `pcr-digest` | the signed PCR digest is the hash of the PCR values sent |
//! | `event-log` | the firmware's event log, then the init's runtime log, replay to the quoted value of every quoted PCR |
//! | `reference` | the quoted PCRs 4, 7, 11 and 12 are one of the reference's accepted sets, and the runtime log is exactly the reference's events (this plan, this policy) |
//! | `identity` | with an identity key enrolled: the gateway presents it, certified by the AK for this request, and PCR 15's event names it |
//! | `clock` | the TPM's reset and restart counters and its clock did not go back since this device's last good quote |
//!
//! A TPM's `TPMS_ATTEST` and its signature are verified before any field of it is
//! trusted; the PCR values and logs (unsigned) are trusted only through the signed
//! digest.

use std::collections::BTreeMap;

use attest_wire::proto::{self, Evidence, QuoteRequest};
use attest_wire::runtime;
use attest_wire::tpms::{self, Attest, Attested, KeyParams, PcrSelection, Public, Signature};
use serde::Serialize;

use crate::fleet::{ClockRecord, Device};
use crate::reference::Reference;

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Its name (see the module table).
    pub name: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// Every check, and what the quote showed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// The quoted PCR values (hex), if the quote parsed.
    pub pcrs: BTreeMap<u8, String>,
    /// The TPM's clock in the quote, if it parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockRecord>,
    /// The accepted set that matched (its condition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<String>,
}

impl Report {
    /// True when every check holds.
    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }
    fn push(&mut self, name: &'static str, r: Result<String, String>) {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.checks.push(Check { name, ok, detail });
    }
}

/// The PCRs `appliance attest` asks for: 0–7 (firmware, boot path, Secure Boot), 11
/// (the UKI), 12 (the init's runtime events) and 15 (device identity).
pub const DEFAULT_PCRS: u32 = 0xff | 1 << 11 | 1 << 12 | 1 << 15;

/// Verifies `sig` over `msg` with the public key in `key` (RSASSA/RSAPSS-SHA256 or
/// ECDSA-P256-SHA256).
pub fn verify_signature(key: &Public, msg: &[u8], sig: &Signature) -> Result<(), String> {
    use aws_lc_rs::signature::{self as sg, UnparsedPublicKey};
    match (&key.params, sig) {
        (
            KeyParams::Rsa {
                modulus, exponent, ..
            },
            Signature::RsaSsa(h, s) | Signature::RsaPss(h, s),
        ) => {
            if *h != tpms::ALG_SHA256 {
                return Err(format!("signature hash {h:#06x}, not SHA-256"));
            }
            let e = if *exponent == 0 { 65537 } else { *exponent };
            let e = e.to_be_bytes();
            let first = e.iter().position(|b| *b != 0).unwrap_or(3);
            let comps = sg::RsaPublicKeyComponents {
                n: modulus.as_slice(),
                e: &e[first..],
            };
            let alg: &sg::RsaParameters = if matches!(sig, Signature::RsaSsa(..)) {
                &sg::RSA_PKCS1_2048_8192_SHA256
            } else {
                &sg::RSA_PSS_2048_8192_SHA256
            };
            comps
                .verify(alg, msg, s)
                .map_err(|_| "the signature does not verify with this key".to_string())
        }
        (KeyParams::Ecc { curve, x, y, .. }, Signature::Ecdsa(h, r, s)) => {
            if *h != tpms::ALG_SHA256 || *curve != tpms::ECC_NIST_P256 {
                return Err("only ECDSA P-256 with SHA-256".into());
            }
            if x.len() > 32 || y.len() > 32 || r.len() > 32 || s.len() > 32 {
                return Err("ECDSA values longer than 32 bytes".into());
            }
            let pad = |v: &[u8]| {
                let mut o = vec![0u8; 32 - v.len()];
                o.extend_from_slice(v);
                o
            };
            let mut point = vec![4u8];
            point.extend(pad(x));
            point.extend(pad(y));
            let mut rs = pad(r);
            rs.extend(pad(s));
            UnparsedPublicKey::new(&sg::ECDSA_P256_SHA256_FIXED, point)
                .verify(msg, &rs)
                .map_err(|_| "the signature does not verify with this key".to_string())
        }
        _ => Err("the signature's algorithm does not match the key".into()),
    }
}

/// The quoted PCR values by index, in the order of `mask`.
fn quoted(mask: u32, values: &[[u8; 32]]) -> Option<BTreeMap<u8, [u8; 32]>> {
    let idx = tpms::pcrs_of(mask);
    (idx.len() == values.len()).then(|| idx.into_iter().zip(values.iter().copied()).collect())
}

/// Replays the firmware log, then the runtime log: the value every PCR in `mask`
/// should have.
fn replay(
    event_log: &[u8],
    runtime_events: &[runtime::Event],
    mask: u32,
) -> Result<BTreeMap<u8, [u8; 32]>, String> {
    let log = signing::eventlog::EventLog::parse(event_log)
        .map_err(|e| format!("the firmware event log does not parse: {e}"))?;
    let fw = log
        .replay_sha256()
        .map_err(|e| format!("the firmware event log does not replay: {e}"))?;
    let mut start: BTreeMap<u8, [u8; 32]> = BTreeMap::new();
    for p in tpms::pcrs_of(mask) {
        let v = fw.get(&u32::from(p)).copied().unwrap_or_else(|| {
            let mut z = [0u8; 32];
            if p == 0 {
                if let Some(l) = log.startup_locality {
                    z[31] = l;
                }
            }
            z
        });
        start.insert(p, v);
    }
    let after = runtime::replay(&start, runtime_events);
    Ok(tpms::pcrs_of(mask)
        .into_iter()
        .map(|p| {
            (
                p,
                after.get(&p).or(start.get(&p)).copied().unwrap_or([0; 32]),
            )
        })
        .collect())
}

/// Checks `evidence`, the answer to `request`, from the device `device`, against
/// `reference` (already checked by [`crate::reference::load`]: its result is the first
/// check).
pub fn check(
    evidence: &Evidence,
    request: &QuoteRequest,
    device: &Device,
    reference: &Result<Reference, String>,
) -> Report {
    let mut r = Report {
        checks: Vec::new(),
        pcrs: BTreeMap::new(),
        clock: None,
        matched: None,
    };
    r.push(
        "reference-signature",
        match reference {
            Ok(rf) => Ok(format!(
                "{} {} (security version {}), signed by {}",
                rf.values.name, rf.values.version, rf.values.security_version, rf.signer
            )),
            Err(e) => Err(e.clone()),
        },
    );
    let enrolled = device.ak();
    r.push(
        "ak-enrolled",
        match &enrolled {
            Ok(_) if evidence.ak_public == device.ak_public_bytes() => {
                Ok(format!("AK {}", device.ak_name))
            }
            Ok(_) => Err(format!(
                "the gateway presents another AK than the one enrolled ({}); a replaced TPM or another device must be enrolled again",
                device.ak_name
            )),
            Err(e) => Err(e.clone()),
        },
    );
    r.push(
        "ak-attributes",
        match &enrolled {
            Ok(ak) => {
                let v = ak.ak_violations();
                if v.is_empty() {
                    Ok(format!(
                        "restricted signing key: {}",
                        tpms::attr::names(ak.attributes)
                    ))
                } else {
                    Err(v.join("; "))
                }
            }
            Err(e) => Err(e.clone()),
        },
    );
    let attest = Attest::parse(&evidence.quote);
    let sig = Signature::parse(&evidence.signature);
    r.push(
        "quote-signature",
        match (&enrolled, &attest, &sig) {
            (Ok(ak), Ok(_), Ok(s)) => verify_signature(ak, &evidence.quote, s)
                .map(|()| "signed by the enrolled AK".into()),
            (Err(e), _, _) => Err(format!("no enrolled AK to check with: {e}")),
            (_, Err(e), _) => Err(format!("the quote does not parse: {e}")),
            (_, _, Err(e)) => Err(format!("the signature does not parse: {e}")),
        },
    );
    let (selection, digest) = match &attest {
        Ok(Attest {
            attested: Attested::Quote { selection, digest },
            ..
        }) => (Some(selection.clone()), Some(digest.clone())),
        _ => (None, None),
    };
    let want = PcrSelection::sha256(request.pcrs);
    r.push(
        "pcr-selection",
        match &selection {
            Some(s) if *s == want => Ok(format!("sha256: {:?}", tpms::pcrs_of(request.pcrs))),
            Some(s) => Err(format!(
                "the quote signs PCRs {} but {:?} were asked for",
                describe_selection(s),
                tpms::pcrs_of(request.pcrs)
            )),
            None => Err("no quote to read the selection from".into()),
        },
    );
    let name = enrolled.as_ref().ok().and_then(|ak| ak.name().ok());
    r.push(
        "nonce",
        match (&attest, &name) {
            (Ok(a), Some(n)) => {
                let b = proto::binding(&request.nonce, n, &request.target);
                if a.extra_data == b {
                    Ok(
                        "the quote names our nonce, this device's AK and the address dialled"
                            .into(),
                    )
                } else {
                    Err(
                        "the quote was made for another request (another nonce, device or address)"
                            .into(),
                    )
                }
            }
            _ => Err("no quote or no enrolled AK".into()),
        },
    );
    r.push(
        "pcr-digest",
        match &digest {
            Some(d) if d[..] == tpms::pcr_digest(&evidence.pcr_values)[..] => {
                Ok(format!("{} PCR values", evidence.pcr_values.len()))
            }
            Some(_) => Err("the PCR values sent are not the ones the quote signs".into()),
            None => Err("no quote digest".into()),
        },
    );
    let values = quoted(request.pcrs, &evidence.pcr_values);
    if let Some(v) = &values {
        r.pcrs = v.iter().map(|(p, d)| (*p, hex::encode(d))).collect();
    }
    let runtime_events = runtime::parse(&evidence.runtime_log);
    r.push(
        "event-log",
        match (&values, &runtime_events) {
            (None, _) => Err("the PCR values do not match the selection".into()),
            (_, Err(e)) => Err(format!("the runtime log: {e}")),
            (Some(v), Ok(ev)) => match replay(&evidence.event_log, ev, request.pcrs) {
                Err(e) => Err(e),
                Ok(rep) => {
                    let bad: Vec<String> = v
                        .iter()
                        .filter(|(p, d)| rep.get(p) != Some(d))
                        .map(|(p, _)| format!("PCR {p}"))
                        .collect();
                    if bad.is_empty() {
                        Ok(format!(
                            "the firmware log and {} runtime event(s) replay to every quoted PCR",
                            ev.len()
                        ))
                    } else {
                        Err(format!(
                            "the logs do not replay to the quoted {}",
                            bad.join(", ")
                        ))
                    }
                }
            },
        },
    );
    let matched = match (reference, &values, &runtime_events) {
        (Err(_), _, _) => Err("no signed reference values".into()),
        (_, None, _) => Err("no PCR values".into()),
        (_, _, Err(e)) => Err(format!("the runtime log: {e}")),
        (Ok(rf), Some(v), Ok(ev)) => match_reference(rf, v, ev),
    };
    r.matched = matched.as_ref().ok().map(|(c, _)| c.clone());
    r.push("reference", matched.map(|(_, d)| d));
    r.push(
        "identity",
        check_identity(evidence, request, device, &enrolled, &runtime_events),
    );
    let clock = match &attest {
        Ok(a) => {
            r.clock = Some(ClockRecord::from(&a.clock));
            check_clock(device.last_clock.as_ref(), &a.clock)
        }
        Err(_) => Err("no quote".into()),
    };
    r.push("clock", clock);
    r
}

/// The identity key: the one enrolled, certified by the AK for this request, and
/// named by the init's PCR 15 event.
fn check_identity(
    evidence: &Evidence,
    request: &QuoteRequest,
    device: &Device,
    enrolled: &Result<Public, String>,
    runtime_events: &Result<Vec<runtime::Event>, attest_wire::tpms::Error>,
) -> Result<String, String> {
    let pcr15: Vec<&str> = match runtime_events {
        Ok(ev) => ev
            .iter()
            .filter(|e| e.pcr == runtime::PCR_IDENTITY)
            .map(|e| e.text.as_str())
            .collect(),
        Err(e) => return Err(format!("the runtime log: {e}")),
    };
    let Some(point) = device.identity_point() else {
        return Ok(match pcr15.as_slice() {
            [] => "no identity key enrolled, none reported".into(),
            [e] => format!("no identity key enrolled; the gateway reports {e:?}"),
            _ => "no identity key enrolled".into(),
        });
    };
    let ak = enrolled.as_ref().map_err(|e| e.clone())?;
    let ci = evidence.identity.as_ref().ok_or(
        "the enrolled identity key was not presented (this boot has none: an unsigned image, or one signed by another release key)",
    )?;
    let name = ak.name().map_err(|e| e.to_string())?;
    let qualifying = proto::binding(&request.nonce, &name, &request.target);
    let public = crate::identity::check_certified(ci, ak, &qualifying)?;
    if attest_wire::policy::identity_point(&public) != Some(point) {
        return Err("the gateway presents another identity key than the one enrolled".into());
    }
    let fp = attest_wire::policy::identity_fingerprint(&public).unwrap_or_default();
    let want = format!("appliance-identity key sha256:{}", hex::encode(fp));
    if pcr15 != [want.as_str()] {
        return Err(format!(
            "PCR 15 says {pcr15:?}, not the enrolled key's event {want:?}"
        ));
    }
    Ok(format!(
        "the enrolled ECDSA P-256 key sha256:{}…, certified by the AK, in PCR 15",
        &hex::encode(fp)[..16]
    ))
}

fn describe_selection(s: &PcrSelection) -> String {
    s.banks
        .iter()
        .map(|(h, bits)| {
            let mut m = 0u32;
            for (i, b) in bits.iter().take(4).enumerate() {
                m |= u32::from(*b) << (8 * i);
            }
            let bank = if *h == tpms::ALG_SHA256 {
                "sha256".to_string()
            } else {
                format!("bank {h:#06x}")
            };
            format!("{bank}: {:?}", tpms::pcrs_of(m))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn match_reference(
    rf: &Reference,
    v: &BTreeMap<u8, [u8; 32]>,
    ev: &[runtime::Event],
) -> Result<(String, String), String> {
    let want: Vec<(u32, &str)> = rf
        .values
        .runtime
        .iter()
        .map(|e| (e.pcr, e.text.as_str()))
        .collect();
    // The reference names the init's PCR 12 events; PCR 15 (identity) is device-specific
    // and checked by `identity`.
    let got: Vec<(u32, &str)> = ev
        .iter()
        .filter(|e| e.pcr == runtime::PCR_RUNTIME)
        .map(|e| (u32::from(e.pcr), e.text.as_str()))
        .collect();
    if want != got {
        return Err(format!(
            "the init measured [{}], the reference says [{}]: another plan or policy than {} {}",
            got.iter().map(|(_, t)| *t).collect::<Vec<_>>().join("; "),
            want.iter().map(|(_, t)| *t).collect::<Vec<_>>().join("; "),
            rf.values.name,
            rf.values.version
        ));
    }
    let mut misses = Vec::new();
    for set in &rf.values.accepted {
        let diff: Vec<String> = set
            .pcrs
            .iter()
            .filter(|(p, want)| {
                u8::try_from(**p)
                    .ok()
                    .and_then(|p| v.get(&p))
                    .map(hex::encode)
                    .as_deref()
                    != Some(want.as_str())
            })
            .map(|(p, _)| format!("PCR {p}"))
            .collect();
        if diff.is_empty() {
            let policy = rf.policy_sha256.as_str();
            return Ok((
                set.condition.clone(),
                format!(
                    "{} {}: UKI {}, policy sha256:{policy} ({})",
                    rf.values.name,
                    rf.values.version,
                    rf.values.uki_authenticode_sha256,
                    set.condition
                ),
            ));
        }
        misses.push(format!("{}: {} differ", set.condition, diff.join(", ")));
    }
    Err(format!(
        "the quoted PCRs are none of {} {}'s accepted sets ({}): another image, boot path or Secure Boot state",
        rf.values.name,
        rf.values.version,
        misses.join("; ")
    ))
}

fn check_clock(last: Option<&ClockRecord>, now: &tpms::ClockInfo) -> Result<String, String> {
    if !now.safe {
        return Err("the TPM says its clock may have gone back (safe = 0)".into());
    }
    let Some(l) = last else {
        return Ok(format!(
            "reset count {}, restart count {} (first quote recorded for this device)",
            now.reset_count, now.restart_count
        ));
    };
    if now.reset_count < l.reset_count {
        return Err(format!(
            "the reset count went back from {} to {}",
            l.reset_count, now.reset_count
        ));
    }
    if now.reset_count == l.reset_count && now.restart_count < l.restart_count {
        return Err(format!(
            "the restart count went back from {} to {}",
            l.restart_count, now.restart_count
        ));
    }
    if now.clock <= l.clock {
        return Err(format!(
            "the TPM clock went back from {} ms to {} ms",
            l.clock, now.clock
        ));
    }
    Ok(format!(
        "reset count {} (was {}), clock {} ms (was {})",
        now.reset_count, l.reset_count, now.clock, l.clock
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_must_not_go_back() {
        let c = |reset, restart, clock| tpms::ClockInfo {
            clock,
            reset_count: reset,
            restart_count: restart,
            safe: true,
        };
        let last = ClockRecord::from(&c(3, 1, 1000));
        assert!(check_clock(Some(&last), &c(3, 1, 1001)).is_ok());
        assert!(check_clock(Some(&last), &c(4, 0, 2000)).is_ok());
        assert!(check_clock(Some(&last), &c(2, 9, 5000))
            .unwrap_err()
            .contains("reset"));
        assert!(check_clock(Some(&last), &c(3, 0, 5000))
            .unwrap_err()
            .contains("restart"));
        assert!(check_clock(Some(&last), &c(3, 1, 999))
            .unwrap_err()
            .contains("clock"));
        assert!(check_clock(None, &c(0, 0, 1)).is_ok());
        let mut unsafe_clock = c(3, 1, 2000);
        unsafe_clock.safe = false;
        assert!(check_clock(Some(&last), &unsafe_clock).is_err());
    }
}
