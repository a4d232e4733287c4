//! The device-model side of the lifecycle suite.
#![deny(missing_docs)]
