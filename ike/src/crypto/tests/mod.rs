//! Known-answer tests (RFCs, NIST CAVP, strongSwan's vectors), Wycheproof, and property
//! tests for [`crate::crypto`]. The data is in `ike/testdata/` (see its README).

mod kat;
mod props;
mod vectors;
mod wycheproof;
