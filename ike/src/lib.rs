//! IKEv2 (RFC 7296) for the Viaduct's compartment: trusted, sans-IO, `unsafe` forbidden.
//!
//! - [`wire`]: zero-copy views of IKE messages and payloads, validated once
//!   (`new_checked`), and their encoders; no accessor panics afterwards.
//! - [`crypto`]: the PRFs (HMAC-SHA2, RFC 4868), `prf+`, SKEYSEED and the IKE and
//!   CHILD SA keys (RFC 7296 §2.13, §2.14, §2.17, §2.18), key exchange (x25519, ECP-256),
//!   the Encrypted (SK) payload with AES-GCM (RFC 5282) and ChaCha20-Poly1305 (RFC 7634),
//!   and AUTH (PSK; Ed25519 and ECDSA signatures, RFC 7427); secrets zeroized on drop,
//!   comparisons in constant time.
//!
//! - [`sa`]: the exchanges, as initiator and responder: IKE_SA_INIT and
//!   IKE_AUTH (cookies, INVALID_KE retries, NAT detection, traffic selector
//!   narrowing, retransmissions), CREATE_CHILD_SA (CHILD SA and IKE SA
//!   rekeying with their collisions, PFS) and INFORMATIONAL (deletes, dead
//!   peer detection).
//!
//! The exchange state machines build on these. Nothing here does I/O, reads the clock
//! or draws random numbers: time and randomness come in from the caller (the one
//! exception: aws-lc draws ECDSA signing nonces itself).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crypto;
pub mod sa;
pub mod wire;
