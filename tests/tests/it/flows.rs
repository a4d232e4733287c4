//! One test per flow of `flows.md`.

use acrn_tests::scenarios;

use crate::check;

#[test]
fn flow_1_power_button_power_on() {
    check("flow-1", scenarios::power_on, 3, &[]);
}

#[test]
fn flow_2_sos_boot_waits_for_the_reason_and_starts_every_vm() {
    check("flow-2", scenarios::boot, 3, &[]);
}

#[test]
fn flow_3_ignition_off_suspends_everything() {
    check("flow-3-s3", scenarios::suspend, 3, &[]);
}

#[test]
fn flow_3_ignition_off_with_force_s5_powers_off() {
    check("flow-3-s5", scenarios::power_off, 3, &[]);
}

#[test]
fn flow_3_ignition_back_during_the_delay_cancels_the_shutdown() {
    check("flow-3-cancel", scenarios::ignition_cancel, 3, &[]);
}

#[test]
fn flow_4_a_vm_refusing_to_stop() {
    check("flow-4", scenarios::vm_refuses_stop, 3, &[]);
}

#[test]
fn flow_5_rtc_s3_entry() {
    check("flow-5", scenarios::rtc_s3_entry, 3, &[]);
}

#[test]
fn flow_6_rtc_s5_entry() {
    check("flow-6", scenarios::rtc_s5_entry, 3, &[]);
}

#[test]
fn flow_7a_rtc_s3_exit() {
    check("flow-7a", scenarios::rtc_s3, 3, &[]);
}

#[test]
fn flow_7b_rtc_s5_exit_cold_boot() {
    check("flow-7b", scenarios::rtc_s5, 3, &[]);
}

#[test]
fn flow_8a_reboot_in_the_sos() {
    check("flow-8a", scenarios::host_reboot, 3, &[]);
}

#[test]
fn flow_8b_reboot_over_ipc() {
    check("flow-8b", scenarios::reboot, 3, &[]);
}

#[test]
fn flow_9a_acrnctl_stop() {
    check("flow-9a", scenarios::acrnctl_stop, 3, &[]);
}

#[test]
fn flow_9b_no_acrnd() {
    check("flow-9b", scenarios::no_acrnd, 0, &[]);
}

#[test]
fn the_full_power_cycle_of_the_runner() {
    check("full-cycle", scenarios::full_cycle, 3, &[]);
}

#[test]
fn a_lossy_line_in_both_modes() {
    check("lossy-ioc", scenarios::lossy_ioc, 2, &[]);
}
