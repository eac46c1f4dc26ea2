//! Kernel command line: extracts the plan digest pinned by `appliance.plan=<hex>`.
//!
//! The cmdline is measured into PCR 11 by systemd-stub, so the digest found here is
//! attested; the init trusts the plan only if its SHA-256 matches.
//!
//! Invariants: exactly one `appliance.plan=` parameter is accepted (two are ambiguous
//! and rejected); the value must be 64 lowercase hex digits. Nothing here panics.

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// The parameter name.
pub const PLAN_PARAM: &str = "appliance.plan";

/// Finds the plan digest in a kernel command line (contents of `/proc/cmdline`).
pub fn plan_digest(cmdline: &str) -> Result<Sha256Digest> {
    let mut found = None;
    for word in cmdline.split_ascii_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        if key != PLAN_PARAM {
            continue;
        }
        if found.is_some() {
            return Err(Error::Cmdline(format!(
                "`{PLAN_PARAM}=` appears more than once"
            )));
        }
        let d = Sha256Digest::from_hex(value).ok_or_else(|| {
            Error::Cmdline(format!(
                "`{PLAN_PARAM}={value}` is not 64 lowercase hex digits"
            ))
        })?;
        found = Some(d);
    }
    found.ok_or_else(|| Error::Cmdline(format!("no `{PLAN_PARAM}=` parameter")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn finds_the_digest_among_other_parameters() {
        let c = format!("console=ttyS0 appliance.plan={H} panic=-1\n");
        assert_eq!(plan_digest(&c).unwrap().to_hex(), H);
    }

    #[test]
    fn rejects_missing_duplicate_and_malformed() {
        assert!(plan_digest("console=ttyS0 quiet").is_err());
        assert!(plan_digest(&format!("appliance.plan={H} appliance.plan={H}")).is_err());
        assert!(plan_digest(&format!("appliance.plan={}", H.to_uppercase())).is_err());
        assert!(plan_digest(&format!("appliance.plan={}", &H[1..])).is_err());
        assert!(plan_digest("appliance.plan=").is_err());
        // Similar names do not count.
        assert!(plan_digest(&format!("appliance.planx={H} xappliance.plan={H}")).is_err());
    }
}
