//! Reliability tests: crash consistency, storage faults, properties (being written).
