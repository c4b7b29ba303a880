//! What the property-test files share.

use proptest::test_runner::Config as ProptestConfig;

/// `default` cases, or `PROPTEST_CASES`; no failure files in the tree.
pub fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
