//! What a device model embeds to be managed by acrnd and acrnctl, and nothing else: the
//! monitor, its VM-ops providers, and the lifecycle model of the virtual IOC.
//!
//! * [`monitor`]: the `<vm>.monitor` mngr IPC endpoint ([`monitor::Monitor`], which joins
//!   the device model's event loop), the state it keeps for the device model
//!   ([`monitor::MonitorState`]) and the helpers to reach acrnd (wakeup reason, ACRND_TIMER,
//!   DM_NOTIFY), none of which blocks the loop.
//! * [`ops`]: the registry of VM-ops providers (stop, suspend, resume, pause, unpause,
//!   query, rescan) with the rules that make an ack out of their results.
//! * [`vioc`]: the virtual IOC's lifecycle state machine (pure).
//!
//! VM names follow the one rule of the suite, [`mngr_ipc::vocabulary::VmName`]. The
//! simulated device model built from these pieces (`acrn-dm-sim`, with a simulated guest)
//! is a crate of its own, `sims/acrn-dm-sim`: a device model embedding this library
//! compiles no simulator.
//!
//! No global state: everything hangs off the device model's state `C`, owned by one
//! [`EventLoop`](mngr_ipc::runtime::EventLoop); the only other threads are the loop's
//! workers that send to acrnd.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod monitor;
pub mod ops;
pub mod vioc;
