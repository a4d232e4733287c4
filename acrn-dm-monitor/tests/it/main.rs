//! Integration tests of acrn-dm-monitor.
