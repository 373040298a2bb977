//! Passwords the tests sign up with.

/// A password that satisfies the policy (12..=128, upper, lower, digit, symbol).
pub const PASSWORD: &str = "Tr0ub4dor&3-horse";
/// A second valid password, different from [`PASSWORD`].
pub const OTHER_PASSWORD: &str = "Correct!Horse9Battery";
