//! Integration tests of mngr-ipc: golden vectors, properties, and real sockets.
// The whole binary is test code; the lint is meant for unit tests inside library modules.
#![allow(clippy::tests_outside_test_module)]

mod cbc_golden;
mod golden;
mod hostile;
mod props;
mod sockets;
