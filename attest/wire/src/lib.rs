//! TPM 2.0 structures, the attestation agent's protocol and the runtime measurement log.
