//! The SOS Life Cycle Service (`sos-lcs`) and the IOC simulator (`ioc-sim`).
#![deny(missing_docs)]

pub mod ioc_sim;
