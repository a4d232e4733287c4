//! acrnd process tests.
