//! One end of the virtual UART between a guest's CBC driver and the virtual IOC.
//!
//! Even in-process, the guest ↔ vioc path carries real CBC link frames (the shared codec of
//! [`mngr_ipc::cbc`]): lifecycle channel (mux 1), high priority (6), a sequence counter per
//! sender starting at 0, and reassembly with resynchronisation on the receiving side. A
//! lifecycle service frame of 4 bytes makes an 8-byte link frame, e.g. the first reason the
//! vioc sends a booting guest, 0x800020 with sequence 0:
//!
//! ```
//! use acrn_dm_sim::link::LinkEnd;
//!
//! let mut vioc = LinkEnd::new();
//! let bytes = vioc.encode([0x01, 0x20, 0x00, 0x80]);
//! assert_eq!(bytes, [0x05, 0x00, 0x0E, 0x01, 0x20, 0x00, 0x80, 0x4C]);
//! let mut guest = LinkEnd::new();
//! assert_eq!(guest.receive(&bytes), vec![[0x01, 0x20, 0x00, 0x80]]);
//! ```
//!
//! Receiving checks the sequence (previous + 1, the first frame may carry any value); a
//! gap is counted and logged, never fatal, as on a real line. Frames of other channels are
//! counted and skipped.

use mngr_ipc::cbc::{LinkStream, PRIO_HIGH, SeqCounter, encode_link, mux};

/// One end of the link: its transmit sequence and its receive reassembly.
#[derive(Debug, Default)]
pub struct LinkEnd {
    seq: SeqCounter,
    rx: LinkStream,
    last_rx_seq: Option<u8>,
    seq_errors: u64,
    foreign: u64,
}

impl LinkEnd {
    /// A fresh end: transmit sequence 0, nothing received.
    pub fn new() -> Self {
        Self::default()
    }

    /// The link frame carrying the lifecycle service frame `service`, with the next
    /// sequence number.
    pub fn encode(&mut self, service: [u8; 4]) -> Vec<u8> {
        encode_link(self.seq.next_seq(), mux::LIFECYCLE, PRIO_HIGH, &service)
            .expect("4 service bytes, sequence < 4, mux 1 and priority 6 always fit a link frame")
    }

    /// Feeds received bytes; returns the lifecycle service frames now complete.
    pub fn receive(&mut self, bytes: &[u8]) -> Vec<[u8; 4]> {
        self.rx.feed(bytes);
        let mut out = Vec::new();
        while let Some(f) = self.rx.next_frame() {
            if let Some(prev) = self.last_rx_seq
                && f.seq != (prev + 1) & 0x03
            {
                self.seq_errors += 1;
                log::debug!("CBC link: sequence {} after {prev}; resynchronised", f.seq);
            }
            self.last_rx_seq = Some(f.seq);
            if f.mux != mux::LIFECYCLE {
                self.foreign += 1;
                log::debug!("CBC link: frame of channel {} ignored", f.mux);
                continue;
            }
            match f.region.get(..4).and_then(|r| <[u8; 4]>::try_from(r).ok()) {
                Some(service) => out.push(service),
                None => self.foreign += 1,
            }
        }
        out
    }

    /// Sequence gaps seen.
    pub fn seq_errors(&self) -> u64 {
        self.seq_errors
    }

    /// Frames skipped: other channels.
    pub fn skipped(&self) -> u64 {
        self.foreign
    }

    /// Bytes dropped while resynchronising.
    pub fn dropped(&self) -> u64 {
        self.rx.dropped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_examples() {
        let mut v = LinkEnd::new();
        assert_eq!(
            v.encode([0x01, 0x20, 0x00, 0x80]),
            [0x05, 0x00, 0x0E, 0x01, 0x20, 0x00, 0x80, 0x4C]
        );
        assert_eq!(
            v.encode([0x01, 0x20, 0x00, 0x00]),
            [0x05, 0x01, 0x0E, 0x01, 0x20, 0x00, 0x00, 0xCB]
        );
        assert_eq!(
            v.encode([0x01, 0x00, 0x00, 0x00]),
            [0x05, 0x02, 0x0E, 0x01, 0x00, 0x00, 0x00, 0xEA]
        );
        assert_eq!(
            v.encode([0x01, 0x00, 0x00, 0xC0]),
            [0x05, 0x03, 0x0E, 0x01, 0x00, 0x00, 0xC0, 0x29]
        );
        // The counter wraps.
        assert_eq!(v.encode([0x01, 0x20, 0x00, 0x80])[1], 0x00);
        let mut g = LinkEnd::new();
        assert_eq!(
            g.encode([0x02, 0x03, 0x00, 0x00]),
            [0x05, 0x00, 0x0E, 0x02, 0x03, 0x00, 0x00, 0xE8]
        );
        assert_eq!(
            g.encode([0x02, 0x01, 0x00, 0x00]),
            [0x05, 0x01, 0x0E, 0x02, 0x01, 0x00, 0x00, 0xE9],
            "the spec's heartbeat example"
        );
    }

    #[test]
    fn receives_across_splits_garbage_and_other_channels() {
        let mut rx = LinkEnd::new();
        let mut bytes = vec![0xAA, 0x05];
        bytes.extend_from_slice(&[0x05, 0x00, 0x0E, 0x02, 0x03, 0x00, 0x00, 0xE8]);
        bytes.extend(encode_link(1, mux::SIGNALS, 6, &[9, 9, 9, 9]).expect("encodes"));
        bytes.extend_from_slice(&[0x05, 0x02, 0x0E, 0x02, 0x01, 0x00, 0x00]);
        assert_eq!(rx.receive(&bytes), vec![[2, 3, 0, 0]]);
        assert_eq!(rx.receive(&[0xE8]), vec![[2, 1, 0, 0]]);
        assert_eq!(rx.skipped(), 1);
        assert_eq!(rx.seq_errors(), 0);
        assert!(rx.dropped() >= 2);
        // A gap is counted, not fatal.
        assert_eq!(
            rx.receive(&[0x05, 0x00, 0x0E, 0x02, 0x01, 0x00, 0x00, 0xEA]),
            vec![[2, 1, 0, 0]]
        );
        assert_eq!(rx.seq_errors(), 1);
        // A bad checksum is dropped.
        assert_eq!(
            rx.receive(&[0x05, 0x01, 0x0E, 0x02, 0x01, 0x00, 0x00, 0x00]),
            Vec::<[u8; 4]>::new()
        );
    }
}
