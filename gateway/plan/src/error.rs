//! The plan's errors: a plan that does not decode, or a value that cannot be
//! put into one. Each message says what to do: the init prints it on the
//! console of a device that has no other UI, the builder names the profile
//! field it came from.

/// What is wrong with a plan or a plan value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The runtime plan is malformed.
    #[error("plan line {line}: {reason}; rebuild the image with a matching `appliance` version")]
    PlanSyntax {
        /// 1-based line number in the plan.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The runtime plan has a format version this init does not know.
    #[error("plan format version {found} is not supported (this init reads version {supported}); rebuild the image with a matching `appliance` version")]
    PlanVersion {
        /// Version found in the plan.
        found: String,
        /// Version this init supports.
        supported: u32,
    },
    /// A value cannot be put into a plan (encoder side).
    #[error("invalid plan value for {field}: {reason}")]
    PlanValue {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;
