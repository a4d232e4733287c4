//! The CBC lifecycle service frames the scenarios assert, as literal bytes.
//!
//! These are the byte images captured from the C programs (`cbc_lifecycle`, the IOC), written
//! out by hand here on purpose: the tests compare what crossed the line with these arrays,
//! never with bytes produced by the suite's own codec.

/// SoC → IOC heartbeat "initial": `02 03 00 00`.
pub const HB_INIT: [u8; 4] = [0x02, 0x03, 0x00, 0x00];
/// SoC → IOC heartbeat "active": `02 01 00 00`.
pub const HB_ACTIVE: [u8; 4] = [0x02, 0x01, 0x00, 0x00];
/// SoC → IOC heartbeat "shutdown delay": `02 02 00 00`.
pub const HB_DELAY: [u8; 4] = [0x02, 0x02, 0x00, 0x00];
/// SoC → IOC heartbeat "shutdown prepared, S5": `02 00 01 00`.
pub const HB_S5: [u8; 4] = [0x02, 0x00, 0x01, 0x00];
/// SoC → IOC heartbeat "shutdown prepared, reboot": `02 00 02 00`.
pub const HB_REBOOT: [u8; 4] = [0x02, 0x00, 0x02, 0x00];
/// SoC → IOC heartbeat "shutdown prepared, S3 (RAM refresh)": `02 00 07 00`.
pub const HB_S3: [u8; 4] = [0x02, 0x00, 0x07, 0x00];
/// SoC → IOC "suppress the heartbeat check for 5 minutes": `04 e0 93 04`.
pub const SUPPRESS_5MIN: [u8; 4] = [0x04, 0xe0, 0x93, 0x04];
/// SoC → IOC "suppress the heartbeat check for 30 minutes": `04 40 77 1b`.
pub const SUPPRESS_30MIN: [u8; 4] = [0x04, 0x40, 0x77, 0x1b];

/// IOC → SoC wakeup reason: ignition (`CBC_WK_RSN_BTN`): `01 20 00 00`.
pub const WR_IGNITION: [u8; 4] = [0x01, 0x20, 0x00, 0x00];
/// IOC → SoC wakeup reason: ignition, SoC active: `01 20 00 80`.
pub const WR_IGNITION_SOC: [u8; 4] = [0x01, 0x20, 0x00, 0x80];
/// IOC → SoC wakeup reason: RTC (`CBC_WK_RSN_RTC`): `01 00 02 00`.
pub const WR_RTC: [u8; 4] = [0x01, 0x00, 0x02, 0x00];
/// IOC → SoC wakeup reason: RTC, SoC active: `01 00 02 80`.
pub const WR_RTC_SOC: [u8; 4] = [0x01, 0x00, 0x02, 0x80];
/// IOC → SoC wakeup reason: only the SoC bit, a shutdown request: `01 00 00 80`.
pub const WR_SHUTDOWN: [u8; 4] = [0x01, 0x00, 0x00, 0x80];
/// IOC → SoC wakeup reason: SoC and force-S5 bits: `01 00 00 c0`.
pub const WR_FORCE_S5: [u8; 4] = [0x01, 0x00, 0x00, 0xc0];
/// IOC → SoC wakeup reason 0: the IOC confirms the shutdown: `01 00 00 00`.
pub const WR_ZERO: [u8; 4] = [0x01, 0x00, 0x00, 0x00];

/// SoC → IOC RTC wake-up in `secs` seconds (unit 0, seconds): `05 v0 v1 00`.
///
/// Only for delays below 65536 s, the range the scenarios use.
///
/// # Panics
///
/// If `secs` does not fit in 16 bits.
#[must_use]
pub fn rtc_secs(secs: u16) -> [u8; 4] {
    let [v0, v1] = secs.to_le_bytes();
    [0x05, v0, v1, 0x00]
}

/// Lower-case hex without separators (`02010000`), as the event logs write frames.
pub use mngr_ipc::event_log::hex;

/// Hex with a space between bytes (`02 01 00 00`), for people.
#[must_use]
pub fn spaced(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `02010000` → `02 01 00 00`; anything else is returned unchanged.
#[must_use]
pub fn spaced_hex(hex: &str) -> String {
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex.to_owned();
    }
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The name the flows give a literal frame (`HB-ACTIVE`, `WR(0x800020)`, `RTC 3 s`), if it is
/// one of the constants above, a wakeup reason or an RTC frame in seconds.
#[must_use]
pub fn name_of(hex_frame: &str) -> Option<String> {
    let known: [(&[u8; 4], &str); 9] = [
        (&HB_INIT, "HB-INIT"),
        (&HB_ACTIVE, "HB-ACTIVE"),
        (&HB_DELAY, "HB-DELAY"),
        (&HB_S5, "HB-S5"),
        (&HB_REBOOT, "HB-REBOOT"),
        (&HB_S3, "HB-S3"),
        (&SUPPRESS_5MIN, "SUPPRESS-5"),
        (&SUPPRESS_30MIN, "SUPPRESS-30"),
        (&WR_ZERO, "WR(0)"),
    ];
    for (bytes, name) in known {
        if hex(bytes) == hex_frame {
            return Some(name.to_owned());
        }
    }
    let b = parse_hex4(hex_frame)?;
    match b[0] {
        0x01 => Some(format!(
            "WR({:#08x})",
            u32::from_le_bytes([b[1], b[2], b[3], 0])
        )),
        0x05 if b[3] == 0 => Some(format!("RTC {} s", u16::from_le_bytes([b[1], b[2]]))),
        _ => None,
    }
}

/// The bytes of a hex string without separators (`02010000`); `None` if it is not one.
#[must_use]
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The four bytes of an 8-digit hex frame.
#[must_use]
pub fn parse_hex4(hex_frame: &str) -> Option<[u8; 4]> {
    unhex(hex_frame)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_frames_and_names() {
        assert_eq!(hex(&HB_ACTIVE), "02010000");
        assert_eq!(spaced(&SUPPRESS_5MIN), "04 e0 93 04");
        assert_eq!(spaced_hex("0500020e"), "05 00 02 0e");
        assert_eq!(spaced_hex("xyz"), "xyz");
        assert_eq!(rtc_secs(3600), [0x05, 0x10, 0x0e, 0x00]);
        assert_eq!(name_of("02000700").as_deref(), Some("HB-S3"));
        assert_eq!(name_of("012000c0").as_deref(), Some("WR(0xc00020)"));
        assert_eq!(name_of("01000000").as_deref(), Some("WR(0)"));
        assert_eq!(name_of("05030000").as_deref(), Some("RTC 3 s"));
        assert_eq!(name_of("06000000"), None);
        assert_eq!(parse_hex4("0102030g"), None);
        assert_eq!(parse_hex4("01020304"), Some([1, 2, 3, 4]));
    }
}
