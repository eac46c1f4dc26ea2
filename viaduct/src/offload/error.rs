//! The error of the offload layers: why a frame could not be processed.
//! The pump drops such a frame and counts it (`offload_malformed`).

/// Why a frame could not be processed (the pump drops it and counts
/// `offload_malformed`). The string names the field or rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Shorter than the headers it declares.
    #[error("offload frame truncated")]
    Truncated,
    /// A header field contradicts the packet or the offload rules.
    #[error("malformed offload frame: {0}")]
    Malformed(&'static str),
    /// Valid, but not something this module handles.
    #[error("unsupported offload frame: {0}")]
    Unsupported(&'static str),
}

#[cfg(test)]
mod tests {
    use super::OffloadError::{Malformed, Truncated, Unsupported};

    #[test]
    fn error_display_names_the_rule() {
        assert_eq!(
            Malformed("gso_size").to_string(),
            "malformed offload frame: gso_size"
        );
        assert!(Unsupported("gso ecn").to_string().contains("gso ecn"));
        assert!(!Truncated.to_string().is_empty());
    }
}
