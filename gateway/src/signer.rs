//! The identity signer: the one way the IKE process reaches the device identity
//! key. When the policy names `private_key = "tpm:identity"` and this boot has a
//! usable identity (see [`crate::identity`]), the init forks this signer next to
//! each IKE process it starts, joined to it by a `SOCK_SEQPACKET` socketpair. The
//! signer holds no key: for each request (a SHA-256 digest, see
//! `attest_wire::signer`) it opens the TPM, satisfies the key's policy
//! (PolicyPCR + PolicyAuthorize with this boot's ticket) and has the TPM sign.
//!
//! - Only the IKE process holds the other end; nothing else can ask.
//! - At most [`BURST`] signatures at once, then [`PER_SECOND`] a second: the
//!   IKE process signs once per IKE SA it authenticates, so a flood of attempts
//!   (which a peer cannot cause without the peer's key: the responder checks the
//!   initiator's AUTH before it signs) cannot keep the TPM busy for others.
//! - It runs without capabilities and with `no_new_privs`; it exits when the IKE
//!   process's end closes, and the init starts a new one with the next IKE process.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use attest_wire::signer::{Answer, Request, MAX_MESSAGE};

use crate::identity::{self, Identity};
use crate::tpm::Transport;

/// Signatures answered at once before the rate applies.
pub const BURST: f64 = 32.0;
/// Signatures a second after the burst.
pub const PER_SECOND: f64 = 1.0;

/// A token bucket.
#[derive(Debug, Clone)]
pub struct RateLimit {
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// Full.
    pub fn new(now: Instant) -> Self {
        RateLimit {
            tokens: BURST,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * PER_SECOND).min(BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A TPM integer as 32 bytes, left-padded (a TPM may drop leading zeros).
fn fixed32(v: &[u8]) -> Option<[u8; 32]> {
    let start = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    let v = &v[start..];
    let mut out = [0u8; 32];
    out.get_mut(32usize.checked_sub(v.len())?..)?
        .copy_from_slice(v);
    Some(out)
}

/// Answers requests on `sock` until its other end closes. `open_tpm` opens the TPM
/// for one signature; `log` gets one line per refusal or failure (never a digest or
/// a signature). Returns the number of signatures made.
pub fn serve(
    sock: &UnixDatagram,
    open_tpm: &mut dyn FnMut() -> crate::Result<Box<dyn Transport>>,
    id: &Identity,
    log: &mut dyn FnMut(&str),
) -> u64 {
    let mut bucket = RateLimit::new(Instant::now());
    let mut buf = [0u8; MAX_MESSAGE];
    let mut signed = 0u64;
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(0) => return signed,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                log(&format!("signer: the IKE process's socket: {e}"));
                return signed;
            }
        };
        let Some(req) = buf.get(..n).and_then(Request::decode) else {
            log("signer: a malformed request was ignored");
            continue;
        };
        let result = if !bucket.take(Instant::now()) {
            Err(format!(
                "rate limit: {BURST} signatures at once, then {PER_SECOND} a second"
            ))
        } else {
            open_tpm()
                .and_then(|mut t| identity::sign(&mut *t, id, &req.digest))
                .map_err(|e| format!("the TPM did not sign: {e}"))
                .and_then(|(r, s)| match (fixed32(&r), fixed32(&s)) {
                    (Some(r), Some(s)) => Ok((r, s)),
                    _ => Err("the TPM's signature is not a P-256 one".into()),
                })
        };
        match &result {
            Ok(_) => signed += 1,
            Err(e) => log(&format!("signer: refused a signature: {e}")),
        }
        let answer = Answer { id: req.id, result };
        if let Err(e) = sock.send(&answer.encode()) {
            log(&format!("signer: answering the IKE process: {e}"));
            return signed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = RateLimit::new(t0);
        assert_eq!((0..40).filter(|_| b.take(t0)).count(), 32);
        assert!(!b.take(t0 + Duration::from_millis(500)));
        assert!(b.take(t0 + Duration::from_millis(1100)));
        assert!(!b.take(t0 + Duration::from_millis(1200)));
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..40).filter(|_| b.take(later)).count(), 32);
    }

    #[test]
    fn tpm_integers_become_32_bytes() {
        assert_eq!(fixed32(&[1; 32]), Some([1; 32]));
        let mut short = [0u8; 32];
        short[2..].copy_from_slice(&[7; 30]);
        assert_eq!(fixed32(&[7; 30]), Some(short));
        let mut padded = vec![0u8; 2];
        padded.extend_from_slice(&[9; 32]);
        assert_eq!(fixed32(&padded), Some([9; 32]));
        assert_eq!(fixed32(&[1; 33]), None);
        assert_eq!(fixed32(&[]), Some([0; 32]));
    }

    #[test]
    fn a_malformed_request_is_ignored_and_eof_ends_the_signer() {
        // SOCK_SEQPACKET, as the init makes it: the other end closing is an
        // end-of-file (a datagram pair has none).
        let (a, b) = crate::sys::seqpacket_pair().unwrap();
        let (a, b) = (UnixDatagram::from(a), UnixDatagram::from(b));
        a.send(b"nonsense").unwrap();
        drop(a);
        // An identity that can never be used: the TPM is never opened here.
        let id = Identity {
            public: attest_wire::policy::identity_template(&[0; 34], &[0; 64]),
            policy: attest_wire::policy::SignedPolicy {
                pcrs: 1 << 11,
                pol: [0; 32],
                key_x: [0; 32],
                key_y: [0; 32],
                sig_r: [0; 32],
                sig_s: [0; 32],
            },
            policy_key_name: vec![],
            ticket: vec![],
        };
        let mut lines = Vec::new();
        let mut open = || -> crate::Result<Box<dyn Transport>> { panic!("the TPM was opened") };
        let n = serve(&b, &mut open, &id, &mut |l: &str| lines.push(l.to_owned()));
        assert_eq!(n, 0);
        assert_eq!(lines, ["signer: a malformed request was ignored"]);
    }
}
