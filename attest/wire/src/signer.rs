//! The identity signer's protocol: the IKE process asks the init's signer for
//! ECDSA P-256 signatures by the device identity key over SHA-256 digests, one
//! `SOCK_SEQPACKET` message each way.
//!
//! ```text
//! request:  'S' | id (u32 BE) | digest (32)                 37 bytes
//! answer:   'K' | id (u32 BE) | r (32) | s (32)             69 bytes
//! refusal:  'E' | id (u32 BE) | reason (UTF-8, 1..=200)
//! ```
//!
//! The id pairs an answer with its request: an answer that arrives after the IKE
//! process gave up on it is recognised and dropped, never taken for the next one.

/// Length of a request.
pub const REQUEST_LEN: usize = 37;
/// Length of a signature answer.
pub const SIGNATURE_LEN: usize = 69;
/// The longest reason a refusal carries.
pub const MAX_REASON: usize = 200;
/// The longest message either side sends.
pub const MAX_MESSAGE: usize = 5 + MAX_REASON;

/// A signature request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Pairs the answer with the request.
    pub id: u32,
    /// The SHA-256 digest to sign.
    pub digest: [u8; 32],
}

impl Request {
    /// The message.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut m = [0u8; REQUEST_LEN];
        m[0] = b'S';
        m[1..5].copy_from_slice(&self.id.to_be_bytes());
        m[5..].copy_from_slice(&self.digest);
        m
    }

    /// A request, if `m` is exactly one.
    pub fn decode(m: &[u8]) -> Option<Request> {
        if m.len() != REQUEST_LEN || m[0] != b'S' {
            return None;
        }
        Some(Request {
            id: u32::from_be_bytes(m[1..5].try_into().ok()?),
            digest: m[5..].try_into().ok()?,
        })
    }
}

/// An answer: the signature `(r, s)` or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The request's id.
    pub id: u32,
    /// `(r, s)`, each 32 bytes big-endian, or the reason for a refusal.
    pub result: Result<([u8; 32], [u8; 32]), String>,
}

impl Answer {
    /// The message (a reason is cut to [`MAX_REASON`] bytes at a character boundary;
    /// an empty one becomes `refused`).
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(SIGNATURE_LEN);
        match &self.result {
            Ok((r, s)) => {
                m.push(b'K');
                m.extend_from_slice(&self.id.to_be_bytes());
                m.extend_from_slice(r);
                m.extend_from_slice(s);
            }
            Err(reason) => {
                m.push(b'E');
                m.extend_from_slice(&self.id.to_be_bytes());
                let mut end = reason.len().min(MAX_REASON);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                let reason = if end == 0 { "refused" } else { &reason[..end] };
                m.extend_from_slice(reason.as_bytes());
            }
        }
        m
    }

    /// An answer, if `m` is exactly one.
    pub fn decode(m: &[u8]) -> Option<Answer> {
        let (&tag, rest) = m.split_first()?;
        let (id, body) = rest.split_at_checked(4)?;
        let id = u32::from_be_bytes(id.try_into().ok()?);
        let result = match tag {
            b'K' if body.len() == 64 => {
                Ok((body[..32].try_into().ok()?, body[32..].try_into().ok()?))
            }
            b'E' if (1..=MAX_REASON).contains(&body.len()) => {
                Err(std::str::from_utf8(body).ok()?.to_owned())
            }
            _ => return None,
        };
        Some(Answer { id, result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_round_trip() {
        let r = Request {
            id: 7,
            digest: [3; 32],
        };
        assert_eq!(Request::decode(&r.encode()), Some(r));
        let a = Answer {
            id: u32::MAX,
            result: Ok(([1; 32], [2; 32])),
        };
        assert_eq!(a.encode().len(), SIGNATURE_LEN);
        assert_eq!(Answer::decode(&a.encode()), Some(a.clone()));
        let e = Answer {
            id: 1,
            result: Err("é".repeat(150)),
        };
        let m = e.encode();
        assert!(m.len() <= MAX_MESSAGE);
        let back = Answer::decode(&m).unwrap();
        assert_eq!(back.result.unwrap_err(), "é".repeat(100));
        let empty = Answer {
            id: 1,
            result: Err(String::new()),
        };
        assert_eq!(
            Answer::decode(&empty.encode()).unwrap().result,
            Err("refused".into())
        );
        // A request is not an answer, nor the other way round; lengths are exact.
        assert_eq!(Answer::decode(&r.encode()), None);
        assert_eq!(Request::decode(&a.encode()), None);
        assert_eq!(Request::decode(&r.encode()[..36]), None);
        assert_eq!(Answer::decode(&a.encode()[..68]), None);
    }

    proptest! {
        #[test]
        fn decoding_never_panics(m in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Request::decode(&m);
            if let Some(a) = Answer::decode(&m) {
                prop_assert_eq!(a.encode(), m);
            }
        }
    }
}
