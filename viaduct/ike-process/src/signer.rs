//! The device identity key, as the IKE process sees it: a signer on a
//! descriptor the init hands over (`--signer FD`), answered by the init's
//! signer child, which holds the TPM (see `attest_wire::signer` for the
//! messages). The key never enters this process; a signature that does not
//! verify under the key's public point is never sent (`ike` checks it).
//!
//! Each signature blocks the engine until the answer or [`TIMEOUT`]: it is
//! asked once per IKE SA authenticated, and the TPM answers in milliseconds.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use attest_wire::signer::{Answer, Request, MAX_MESSAGE};
use ike::crypto::{Error, ExternalSigner};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{recv, send, RecvFlags, SendFlags};

/// How long a signature may take before the AUTH fails (the IKE SA is then
/// retried by the engine like any failed attempt).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The identity key behind the init's signer.
pub struct TpmSigner {
    fd: Mutex<(OwnedFd, u32)>,
    timeout: Duration,
}

impl std::fmt::Debug for TpmSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TpmSigner")
    }
}

impl TpmSigner {
    /// The signer on `fd` (a `SOCK_SEQPACKET` socket).
    pub fn new(fd: OwnedFd) -> Self {
        Self::with_timeout(fd, TIMEOUT)
    }

    /// The signer on `fd`, waiting at most `timeout` for each answer.
    pub fn with_timeout(fd: OwnedFd, timeout: Duration) -> Self {
        TpmSigner {
            fd: Mutex::new((fd, 0)),
            timeout,
        }
    }
}

impl ExternalSigner for TpmSigner {
    fn sign_p256_sha256(&self, digest: &[u8; 32]) -> Result<([u8; 32], [u8; 32]), Error> {
        let mut guard = self
            .fd
            .lock()
            .map_err(|_| Error::ExternalSigner("the signer's lock is poisoned"))?;
        guard.1 = guard.1.wrapping_add(1);
        let id = guard.1;
        let fd = guard.0.as_fd();
        let request = Request {
            id,
            digest: *digest,
        };
        send(fd, &request.encode(), SendFlags::NOSIGNAL)
            .map_err(|_| Error::ExternalSigner("the identity signer is gone"))?;
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; MAX_MESSAGE + 1];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::ExternalSigner(
                    "the identity signer did not answer in time",
                ));
            }
            let ts = Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: 5,
                tv_nsec: 0,
            });
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                Err(_) => return Err(Error::ExternalSigner("waiting for the identity signer")),
            }
            let n = match recv(fd, &mut buf[..], RecvFlags::DONTWAIT) {
                Ok((_, 0)) => return Err(Error::ExternalSigner("the identity signer is gone")),
                Ok((_, n)) => n,
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
                Err(_) => return Err(Error::ExternalSigner("the identity signer is gone")),
            };
            match buf.get(..n).and_then(Answer::decode) {
                // A late answer to a request given up on.
                Some(a) if a.id != id => continue,
                Some(Answer { result: Ok(rs), .. }) => return Ok(rs),
                Some(Answer { result: Err(_), .. }) => {
                    return Err(Error::ExternalSigner("the identity signer refused"))
                }
                None => return Err(Error::ExternalSigner("a malformed answer from the signer")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn pair() -> (OwnedFd, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        (OwnedFd::from(a), b)
    }

    #[test]
    fn answers_are_paired_with_their_request_and_failures_named() {
        let (ours, theirs) = pair();
        let s = TpmSigner::with_timeout(ours, Duration::from_millis(300));
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            // 1: a late answer to an older id first, then the right one.
            let n = theirs.recv(&mut buf).unwrap();
            let r = Request::decode(&buf[..n]).unwrap();
            assert_eq!(r.digest, [9; 32]);
            let stale = Answer {
                id: r.id.wrapping_sub(1),
                result: Ok(([0; 32], [0; 32])),
            };
            theirs.send(&stale.encode()).unwrap();
            let good = Answer {
                id: r.id,
                result: Ok(([1; 32], [2; 32])),
            };
            theirs.send(&good.encode()).unwrap();
            // 2: a refusal.
            let n = theirs.recv(&mut buf).unwrap();
            let r = Request::decode(&buf[..n]).unwrap();
            let no = Answer {
                id: r.id,
                result: Err("rate limit".into()),
            };
            theirs.send(&no.encode()).unwrap();
            // 3: silence (the timeout), then 4: garbage, then gone.
            let _ = theirs.recv(&mut buf).unwrap();
            let _ = theirs.recv(&mut buf).unwrap();
            theirs.send(b"K\0\0").unwrap();
        });
        assert_eq!(s.sign_p256_sha256(&[9; 32]), Ok(([1; 32], [2; 32])));
        assert_eq!(
            s.sign_p256_sha256(&[9; 32]),
            Err(Error::ExternalSigner("the identity signer refused"))
        );
        assert_eq!(
            s.sign_p256_sha256(&[9; 32]),
            Err(Error::ExternalSigner(
                "the identity signer did not answer in time"
            ))
        );
        assert_eq!(
            s.sign_p256_sha256(&[9; 32]),
            Err(Error::ExternalSigner("a malformed answer from the signer"))
        );
        server.join().unwrap();
        assert_eq!(
            s.sign_p256_sha256(&[9; 32]),
            Err(Error::ExternalSigner("the identity signer is gone"))
        );
    }
}
