//! Crashes: a device model, acrnd and sos-lcs killed at named points of a shutdown (through
//! acrnd's `ACRND_FAULT` hooks, or at points read from the event logs), then restarted: the
//! flow completes and the timer store keeps every acked timer.

use acrn_tests::scenarios;

use crate::check;

#[test]
fn a_device_model_crashing_in_a_stop() {
    check("vm-crash", scenarios::vm_crash, 3, &[]);
}

#[test]
fn acrnd_killed_while_the_vms_run() {
    check("acrnd-restart", scenarios::acrnd_restart, 3, &[]);
}

#[test]
fn sos_lcs_killed_after_acrnd_acked_acrnd_stop() {
    check("crash-lcs-delay", scenarios::crash_lcs_in_delay, 2, &[]);
}

#[test]
fn sos_lcs_killed_while_its_suspend_command_runs() {
    check("crash-lcs-susp", scenarios::crash_lcs_in_suspend, 2, &[]);
}

#[test]
fn acrnd_killed_after_acking_acrnd_stop() {
    check("crash-acrnd-stop", scenarios::crash_acrnd_in_stop, 2, &[]);
}

#[test]
fn acrnd_aborted_in_the_timer_store_before_the_rename() {
    check(
        "crash-store-before",
        scenarios::crash_acrnd_store_before_rename,
        2,
        &[],
    );
}

#[test]
fn acrnd_aborted_in_the_timer_store_after_the_rename() {
    check(
        "crash-store-after",
        scenarios::crash_acrnd_store_after_rename,
        2,
        &[],
    );
}
