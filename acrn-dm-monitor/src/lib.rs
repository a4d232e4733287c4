//! The device-model side of the ACRN lifecycle suite: what a device model embeds to be
//! managed by acrnd and acrnctl, the lifecycle model of its virtual IOC, and a simulated
//! device model built from both.
//!
//! * [`monitor`]: the `<vm>.monitor` mngr IPC endpoint ([`monitor::Monitor`], a subscriber
//!   of the device model's event loop), the state it keeps for the device model
//!   ([`monitor::MonitorState`]) and the helpers to reach acrnd (wakeup reason, ACRND_TIMER,
//!   DM_NOTIFY), none of which blocks the loop.
//! * [`ops`]: the registry of VM-ops providers (stop, suspend, resume, pause, unpause,
//!   query, rescan) with the rules that make an ack out of their results.
//! * [`name`]: VM name validation.
//! * [`vioc`]: the virtual IOC's lifecycle state machine (pure); [`link`]: the CBC link
//!   framing of the virtual UART between guest and virtual IOC.
//! * [`guest`]: a simulated guest's lifecycle software (pure).
//! * [`sim`]: `acrn-dm-sim`, the device-model process for hardware-free runs.
//!
//! No global state: everything hangs off the device model's state `C`, owned by one
//! [`EventLoop`](mngr_ipc::runtime::EventLoop); the only other threads are the workers that
//! send to acrnd.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod guest;
pub mod link;
pub mod monitor;
pub mod name;
pub mod ops;
pub mod sim;
pub mod vioc;
