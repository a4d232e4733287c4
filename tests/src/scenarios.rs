//! The named scenarios: each sets up a rig, plays the car's and the system's part (ignition,
//! RTC, systemd, crashes), and checks every step of the flows of `flows.md` against the event
//! logs, with the frames on the line as literal bytes ([`crate::frames`]).
//!
//! [`SCENARIOS`] lists them for the runner; the flow tests play the same functions.
//!
//! Where the daemons do not (yet) do what a flow needs, a scenario records a *known gap*
//! (one of the `GAP_*` ids), works around it the way an operator would, and goes on; the
//! tests name the gaps they expect, so a fixed daemon shows up as a test to update.

use std::collections::BTreeMap;
use std::time::Duration;

use mngr_ipc::Profile;
use mngr_ipc::client::Client;
use mngr_ipc::event_log::LoggedEvent;
use mngr_ipc::msg::{Body as MsgBody, Request, StopTarget, err as errno};

use crate::events::{int_field, str_field};
use crate::frames::{
    HB_ACTIVE, HB_DELAY, HB_INIT, HB_REBOOT, HB_S3, HB_S5, SUPPRESS_5MIN, WR_FORCE_S5, WR_IGNITION,
    WR_IGNITION_SOC, WR_RTC, WR_RTC_SOC, WR_SHUTDOWN, WR_ZERO, hex, rtc_secs, spaced,
};
use crate::rig::{HostPower, IocStart, LineFaults, LineMode, RigConfig, Timing, VmSpec};
use crate::scenario::matchers::{
    acrnd_acked, acrnd_reports, guest_wakes, ioc_rtc, ioc_sends, ioc_state, kind, kind_with,
    lcs_acked, lcs_sends, lcs_state, power_run, request, request_with, soc_sends, soc_sends_any,
    vm_launched, vm_state,
};
use crate::scenario::{Abort, Options, Report, Run};

/// A scenario body.
pub type Body = fn(&mut Run) -> Result<(), Abort>;

/// A named scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Its name (`--scenario NAME`).
    pub name: &'static str,
    /// What it shows, one line.
    pub about: &'static str,
    /// The flows of `flows.md` it covers.
    pub flows: &'static str,
    /// The body.
    pub body: Body,
}

/// The default scenario of the runner.
pub const DEFAULT: &str = "full-cycle";

/// Known gap: sos-lcs, already ALIVE (after an RTC wake), ignores a new wake source such as
/// the ignition: no ACRND_RESUME, so acrnd never resumes the VMs the RTC wake left suspended.
pub const GAP_NEW_WAKE_SOURCE: &str = "lcs-ignores-new-wake-source";
/// Known gap: after a stop-all refused at its deadline, acrnd keeps the VM that did not go
/// down "suspending" for good, though it runs.
pub const GAP_STUCK_SUSPENDING: &str = "acrnd-keeps-refusing-vm-suspending";
/// Known gap: a stop-all cancelled by ACRND_RESUME leaves each VM's DM_SUSPEND pending: the
/// guests suspend anyway, after acrnd resumed the suspended ones, and stay suspended.
pub const GAP_CANCEL_LEAVES_SUSPEND: &str = "acrnd-cancel-leaves-suspend-pending";
/// Known gap: an acrnd restarted in the middle of a shutdown knows nothing of it and nobody
/// asks it again: sos-lcs waits for a verdict until its bound and then forces S5.
pub const GAP_RESTART_MID_STOP: &str = "acrnd-restart-mid-stop-forgotten";

/// Known gap (racy): acrnd applies a DM_QUERY answer that the device model sent before a
/// DM_NOTIFY acrnd already applied: a VM that just suspended is held as started (the next
/// resume skips it), or one that just resumed is held as suspended (the next stop-all does
/// not ask it; it goes down only because its guest hears the IOC).
pub const GAP_STALE_QUERY: &str = "acrnd-stale-query-overrides-notify";

/// Every scenario, the default first.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "full-cycle",
        about: "power on; ignition off → S3 with an RTC wake-up in 3 s; RTC wake; ignition on; ignition off force S5 → power off",
        flows: "1 2 3 5 7a 6",
        body: full_cycle,
    },
    Scenario {
        name: "power-on",
        about: "ignition on, the SOS boots, acrnd starts every VM with the ignition reason",
        flows: "1 2",
        body: power_on,
    },
    Scenario {
        name: "boot",
        about: "the SOS boots before the IOC reports a reason: acrnd's WAKEUP_REASON waits for it; a stale VM socket is cleaned up",
        flows: "2",
        body: boot,
    },
    Scenario {
        name: "power-off",
        about: "ignition off with force S5: every VM stops, S5, power off",
        flows: "3 (S5)",
        body: power_off,
    },
    Scenario {
        name: "suspend",
        about: "ignition off: every VM suspends, S3; ignition on: everything resumes",
        flows: "3 (S3) 7a.8",
        body: suspend,
    },
    Scenario {
        name: "reboot",
        about: "REBOOT over IPC: reboot heartbeat; systemd stops the VMs; the SoC reboots; the VMs start again",
        flows: "8b",
        body: reboot,
    },
    Scenario {
        name: "host-reboot",
        about: "`systemctl reboot` in the SOS: acrnd stops the VMs, sos-lcs writes suppress + reboot heartbeat",
        flows: "8a",
        body: host_reboot,
    },
    Scenario {
        name: "rtc-s3",
        about: "guests' RTC wake-ups stored and sent before S3; the IOC's RTC resumes only the due VM",
        flows: "5 7a",
        body: rtc_s3,
    },
    Scenario {
        name: "rtc-s5",
        about: "an RTC wake-up survives S5; the IOC's RTC powers the SoC on; acrnd starts only the due VM",
        flows: "6 7b",
        body: rtc_s5,
    },
    Scenario {
        name: "vm-refuses-stop",
        about: "a guest ignores ignition off: acrnd refuses at the deadline naming it; sos-lcs tries again; ignition on",
        flows: "4",
        body: vm_refuses_stop,
    },
    Scenario {
        name: "vm-crash",
        about: "a device model crashes in the middle of a stop: the stop completes; the VM starts at the next boot",
        flows: "3 (S5) 2",
        body: vm_crash,
    },
    Scenario {
        name: "acrnd-restart",
        about: "acrnd is killed while the VMs run and restarted: it re-attaches to them; the next S3 works",
        flows: "2 3",
        body: acrnd_restart,
    },
    Scenario {
        name: "ignition-cancel",
        about: "ignition comes back during the shutdown delay: the shutdown is cancelled; a late SUSPEND is refused",
        flows: "3 (cancelled)",
        body: ignition_cancel,
    },
    Scenario {
        name: "no-acrnd",
        about: "sos-lcs alone (--no-acrnd): its stand-in acrnd answers; S3, then S5",
        flows: "9b",
        body: no_acrnd,
    },
    Scenario {
        name: "acrnctl-stop",
        about: "acrnctl stop, stop --force and start of single VMs while the others run",
        flows: "9a",
        body: acrnctl_stop,
    },
    Scenario {
        name: "lossy-ioc",
        about: "power on and an S3 cycle with frames dropped, duplicated, corrupted, garbage between: cdev, then uart",
        flows: "1 2 3 7a.8",
        body: lossy_ioc,
    },
    Scenario {
        name: "soak",
        about: "--cycles S3 cycles with 5 % of the IOC's frames lost: no VM, no timer, no heartbeat lost",
        flows: "3 7a.8",
        body: soak,
    },
    Scenario {
        name: "crash-lcs-in-delay",
        about: "sos-lcs is killed after acrnd acked ACRND_STOP and restarted: the S3 entry completes",
        flows: "3",
        body: crash_lcs_in_delay,
    },
    Scenario {
        name: "crash-lcs-in-suspend",
        about: "sos-lcs is killed while its suspend command runs; it restarts at the wake: everything resumes",
        flows: "3 7a.8",
        body: crash_lcs_in_suspend,
    },
    Scenario {
        name: "crash-acrnd-in-stop",
        about: "acrnd is killed after acking ACRND_STOP and restarted: the S3 entry completes, timers kept",
        flows: "3 5",
        body: crash_acrnd_in_stop,
    },
    Scenario {
        name: "crash-acrnd-store",
        about: "acrnd aborts inside the timer-store write (before the rename) in an S3 entry: no acked timer lost",
        flows: "3 5",
        body: crash_acrnd_store_before_rename,
    },
    Scenario {
        name: "crash-acrnd-store-after",
        about: "acrnd aborts inside the timer-store write (after the rename) in an S3 entry: no acked timer lost",
        flows: "3 5",
        body: crash_acrnd_store_after_rename,
    },
];

/// The scenario called `name`.
#[must_use]
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Plays `scenario` with `opts` and returns the report.
///
/// # Panics
///
/// If the run directory cannot be set up.
#[must_use]
pub fn play(scenario: &Scenario, opts: Options) -> Report {
    play_body(scenario.name, scenario.body, opts)
}

/// Plays `body` as a run named `name`.
///
/// # Panics
///
/// If the run directory cannot be set up.
#[must_use]
pub fn play_body(name: &str, body: Body, opts: Options) -> Report {
    let mut run = match Run::new(name, opts) {
        Ok(r) => r,
        Err(e) => panic!("cannot set up run {name}: {e}"),
    };
    let result = body(&mut run);
    run.finish(result)
}

// ---- shared steps -------------------------------------------------------------------------

/// Expects the SoC to send `frame` (named `name`) on the line at or after `since`.
fn soc(run: &mut Run, since: u64, name: &str, frame: [u8; 4]) -> Result<u64, Abort> {
    let what = format!("sos-lcs → IOC {name} {}", spaced(&frame));
    Ok(run.expect(&what, since, soc_sends(frame))?.t_ns)
}

/// Expects the IOC to send `frame` (named `name`) on the line at or after `since`.
fn ioc(run: &mut Run, since: u64, name: &str, frame: [u8; 4]) -> Result<u64, Abort> {
    let what = format!("IOC → sos-lcs {name} {}", spaced(&frame));
    Ok(run.expect(&what, since, ioc_sends(frame))?.t_ns)
}

/// Expects sos-lcs to enter `state` at or after `since`.
fn lcs_enters(run: &mut Run, since: u64, state: &str) -> Result<u64, Abort> {
    Ok(run
        .expect(&format!("sos-lcs enters {state}"), since, lcs_state(state))?
        .t_ns)
}

/// Expects acrnd to see every VM of `vms` reach `state`.
fn vms_reach(run: &mut Run, since: u64, vms: &[String], state: &str) -> Result<(), Abort> {
    for vm in vms {
        run.expect(&format!("acrnd: {vm} {state}"), since, vm_state(vm, state))?;
    }
    Ok(())
}

/// An RTC frame of `secs` seconds, give or take `slack` seconds below (time passes between
/// the guest's request and the frame).
fn rtc_near(run: &mut Run, since: u64, secs: u16, slack: u16, context: &str) -> Result<u64, Abort> {
    let frames: Vec<[u8; 4]> = (secs.saturating_sub(slack)..=secs).map(rtc_secs).collect();
    let what = format!(
        "sos-lcs → IOC RTC {} (or up to {slack} s less) {context}",
        spaced(&rtc_secs(secs))
    );
    Ok(run.expect(&what, since, soc_sends_any(frames))?.t_ns)
}

/// `acrnctl list` shows every VM of `want` in its state.
fn acrnctl_shows(run: &mut Run, want: &[(String, &str)]) -> Result<(), Abort> {
    let got = run.rig().vm_states()?;
    let text: Vec<String> = want.iter().map(|(v, s)| format!("{v} {s}")).collect();
    let ok = want
        .iter()
        .all(|(vm, st)| got.iter().any(|(n, s)| n == vm && s == st));
    run.check(
        &format!("acrnctl list: {}", text.join(", ")),
        ok,
        &format!("acrnctl list shows {got:?}"),
    )
}

/// The names of the timers `acrnctl --json timers` shows.
fn acrnctl_timers(run: &mut Run) -> Result<Vec<String>, Abort> {
    let out = run.rig().acrnctl(&["--json", "timers"])?;
    run.check("acrnctl timers exits 0", out.code == 0, &out.stderr)?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// The VM names in acrnd's timer store file, in order.
fn stored_timers(run: &mut Run) -> Result<Vec<String>, Abort> {
    let path = run.rig().state_dir().join("timer_list");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut names = Vec::new();
    for line in text.lines() {
        let parsed = line
            .split_once('\t')
            .filter(|(_, when)| when.parse::<u64>().is_ok());
        let Some((name, _)) = parsed else {
            run.check(
                "the timer store parses",
                false,
                &format!("bad line {line:?} in {}", path.display()),
            )?;
            continue;
        };
        names.push(name.to_owned());
    }
    Ok(names)
}

fn all_in(vms: &[String], state: &'static str) -> Vec<(String, &'static str)> {
    vms.iter().map(|v| (v.clone(), state)).collect()
}

/// A rig for `run` with the options' timing, `vms` and the IOC's initial state; ioc-sim
/// started.
fn rig_with(run: &mut Run, vms: Vec<VmSpec>, start: IocStart) -> Result<(), Abort> {
    let mut cfg = RigConfig::new(0, run.opts().timing.clone());
    cfg.vms = vms;
    cfg.ioc_start = start;
    run.new_rig(cfg)?.start_ioc()?;
    Ok(())
}

/// `n` plain VMs (at least `min`).
fn plain_vms(run: &Run, min: usize) -> Vec<VmSpec> {
    VmSpec::numbered(run.opts().vms.max(min))
}

/// Ignition on with the IOC off: it powers on.
fn ignition_on_from_off(run: &mut Run) -> Result<u64, Abort> {
    let m = run.step("ignition on: the IOC powers the SoC");
    run.rig().ctl("ignition on")?;
    run.expect("IOC off → running", m, ioc_state("running"))?;
    Ok(m)
}

/// The SOS boots (sos-lcs, acrnd) and comes alive with `reason`, which the IOC sends as
/// `wr` and, once sos-lcs is active, `wr_soc` (flows 1 and 2); without the RTC bit every VM
/// starts with the ignition reason. `since` is when the IOC started reporting.
fn boot_alive(
    run: &mut Run,
    since: u64,
    reason: u32,
    wr: [u8; 4],
    wr_soc: [u8; 4],
) -> Result<(), Abort> {
    let vms = run.rig().config().vm_names();
    let acrnd = run.rig().config().acrnd;
    let m = run.step("the SOS boots: sos-lcs and acrnd start");
    run.rig().boot()?;
    soc(run, m, "HB-INIT", HB_INIT)?;
    ioc(run, since, &format!("WR({reason:#08x})"), wr)?;
    let alive = lcs_enters(run, m, "keep_alive")?;
    soc(run, alive, "HB-ACTIVE", HB_ACTIVE)?;
    ioc(
        run,
        alive,
        &format!("WR({:#08x})", reason | 0x80_0000),
        wr_soc,
    )?;
    if !acrnd {
        return Ok(());
    }
    run.expect(
        "sos-lcs → acrnd ACRND_RESUME, acked err 0",
        alive,
        lcs_acked("ACRND_RESUME", 0),
    )?;
    run.expect(
        &format!("acrnd asks WAKEUP_REASON at boot: {reason:#x}"),
        m,
        move |e| {
            e.actor == "acrnd"
                && e.kind == "reason"
                && str_field(e, "for") == Some("Boot")
                && int_field(e, "reason") == Some(i64::from(reason))
        },
    )?;
    if reason & 0x200 == 0 {
        for vm in &vms {
            run.expect(
                &format!("acrnd launches {vm} with reason 0x20"),
                m,
                vm_launched(vm, 0x20),
            )?;
            run.expect(&format!("acrnd: {vm} started"), m, vm_state(vm, "started"))?;
            run.expect(
                &format!("{vm}: the guest wakes with the ignition bit 0x20"),
                m,
                guest_wakes(vm, 0x20),
            )?;
        }
    }
    Ok(())
}

/// The SOS boots with the ignition on (flows 1 and 2).
fn boot_ignition(run: &mut Run, since: u64) -> Result<(), Abort> {
    boot_alive(run, since, 0x20, WR_IGNITION, WR_IGNITION_SOC)
}

/// The IOC runs with the ignition on since the start: the SOS boots, every VM starts.
fn up(run: &mut Run) -> Result<(), Abort> {
    let since = run.start_ns();
    boot_ignition(run, since)
}

/// acrnd's view of every VM: the state of its last `vm.state` event.
fn acrnd_view(run: &mut Run) -> BTreeMap<String, String> {
    let mut view = BTreeMap::new();
    for e in run.events_since(0) {
        if e.actor == "acrnd"
            && e.kind == "vm.state"
            && let (Some(vm), Some(to)) = (str_field(&e, "vm"), str_field(&e, "to"))
        {
            view.insert(vm.to_owned(), to.to_owned());
        }
    }
    view
}

/// The VMs acrnd holds in `state`.
fn vms_in(run: &mut Run, state: &str) -> Vec<String> {
    acrnd_view(run)
        .into_iter()
        .filter(|(_, s)| s == state)
        .map(|(vm, _)| vm)
        .collect()
}

/// Ignition off without force: everything suspends and the SoC enters S3 (flow 3, S3; with
/// `rtc`, flow 5 for that VM). Returns the mark of the ignition-off step.
fn ignition_off_to_s3(run: &mut Run, rtc: Option<(&str, u16)>) -> Result<u64, Abort> {
    let vms = run.rig().config().vm_names();
    let m = run.step("ignition off");
    run.rig().ctl("ignition off")?;
    ioc(run, m, "WR(0x800000)", WR_SHUTDOWN)?;
    let delay = lcs_enters(run, m, "shutdown_delay")?;
    soc(run, delay, "HB-DELAY", HB_DELAY)?;
    run.expect(
        "sos-lcs → acrnd ACRND_STOP {target S3}",
        m,
        request_with("acrnd", "ACRND_STOP", "target: S3"),
    )?;
    run.expect("acrnd acks ACRND_STOP err 0", m, lcs_acked("ACRND_STOP", 0))?;
    for vm in &vms {
        run.expect(
            &format!("acrnd → {vm} DM_SUSPEND"),
            m,
            request(vm, "DM_SUSPEND"),
        )?;
    }
    if let Some((vm, secs)) = rtc {
        run.expect(
            &format!("{vm}: the guest asks its vIOC for an RTC wake-up in {secs} s"),
            m,
            kind(vm, "vioc.rtc"),
        )?;
        run.expect(
            &format!("acrnd stores {vm}'s timer"),
            m,
            kind_with("acrnd", "timer", "vm", vm),
        )?;
        run.expect(
            "acrnd writes the timer store",
            m,
            kind("acrnd", "store.saved"),
        )?;
    }
    for vm in &vms {
        ensure_suspended(run, m, vm, &format!("acrnd: {vm} suspended"))?;
    }
    if rtc.is_some() {
        run.expect(
            "acrnd → sos-lcs RTC_TIMER (nearest wake-up), acked err 0",
            m,
            acrnd_acked("RTC_TIMER", 0),
        )?;
    }
    run.expect(
        "acrnd → sos-lcs SUSPEND err 0",
        m,
        acrnd_reports("SUSPEND", 0),
    )?;
    run.expect("sos-lcs acks SUSPEND err 0", m, acrnd_acked("SUSPEND", 0))?;
    let s3 = lcs_enters(run, m, "acrnd_suspend")?;
    soc(run, s3, "HB-S3", HB_S3)?;
    if let Some((_, secs)) = rtc {
        rtc_near(run, s3, secs, 2, "with the S3 heartbeat")?;
    }
    let zero = ioc(run, s3, "WR(0)", WR_ZERO)?;
    if let Some((_, secs)) = rtc {
        rtc_near(run, zero, secs, 2, "once more at reason 0")?;
    }
    let down = lcs_enters(run, s3, "ioc_shutdown")?;
    run.expect(
        "sos-lcs runs the suspend command",
        down,
        power_run("suspend"),
    )?;
    run.expect("IOC suspends", down, ioc_state("suspended"))?;
    Ok(m)
}

/// Ignition on while suspended: the IOC wakes the system, sos-lcs comes back alive and
/// acrnd resumes every suspended VM with the ignition reason.
fn ignition_on_resumes(run: &mut Run, vms: &[String]) -> Result<u64, Abort> {
    let on = run.step("ignition on: the IOC wakes the system");
    run.rig().ctl("ignition on")?;
    run.expect("IOC suspended → running", on, ioc_state("running"))?;
    ioc(run, on, "WR(0x000020)", WR_IGNITION)?;
    run.expect(
        "the suspend command returns",
        on,
        kind_with("sos-lcs", "power.done", "action", "suspend"),
    )?;
    let alive = lcs_enters(run, on, "keep_alive")?;
    soc(run, alive, "HB-ACTIVE", HB_ACTIVE)?;
    run.expect(
        "sos-lcs → acrnd ACRND_RESUME, acked err 0",
        alive,
        lcs_acked("ACRND_RESUME", 0),
    )?;
    run.expect("acrnd: wakeup reason 0x20 (for Resume)", alive, |e| {
        e.actor == "acrnd"
            && e.kind == "reason"
            && str_field(e, "for") == Some("Resume")
            && int_field(e, "reason").is_some_and(|r| r & 0x20 != 0)
    })?;
    for vm in vms {
        ensure_resumed(run, on, vm)?;
        run.expect(
            &format!("acrnd → {vm} DM_RESUME"),
            on,
            request(vm, "DM_RESUME"),
        )?;
        run.expect(&format!("acrnd: {vm} started"), on, vm_state(vm, "started"))?;
        run.expect(
            &format!("{vm}: the guest wakes with the ignition bit 0x20"),
            on,
            guest_wakes(vm, 0x20),
        )?;
    }
    Ok(on)
}

/// The last suspend mode `vm`'s device model reported (`running`, `suspend`, ...).
fn dm_mode_of(run: &mut Run, vm: &str) -> Option<String> {
    run.events_since(0)
        .iter()
        .rev()
        .find(|e| e.actor == vm && e.kind == "dm.state")
        .and_then(|e| str_field(e, "name").map(str::to_owned))
}

/// Expects acrnd to see `vm` suspend after `since`. If it does not because it already held
/// the running VM as suspended ([`GAP_STALE_QUERY`]) and the VM did suspend (its device
/// model says so), records the gap and goes on.
fn ensure_suspended(run: &mut Run, since: u64, vm: &str, what: &str) -> Result<(), Abort> {
    if run
        .wait_event(since, Duration::from_secs(3), vm_state(vm, "suspended"))?
        .is_none()
    {
        let held = acrnd_view(run).get(vm).cloned();
        let went_down = run
            .events_since(since)
            .iter()
            .any(crate::scenario::matchers::dm_mode(vm, "suspend"));
        if held.as_deref() == Some("suspended") && went_down {
            run.known_gap(
                GAP_STALE_QUERY,
                what,
                &format!(
                    "acrnd held {vm} as suspended while it ran (a DM_QUERY answer sent before \
                     the DM_NOTIFY of its resume arrived after it), so the stop-all did not ask \
                     it; it suspended only because its guest heard the IOC"
                ),
            );
            return Ok(());
        }
    }
    run.expect(what, since, vm_state(vm, "suspended"))?;
    Ok(())
}

/// Waits a little for acrnd to resume `vm` after `on`; if it does not because it holds the
/// suspended VM as started ([`GAP_STALE_QUERY`]), restarts acrnd, which re-attaches to the
/// device models and resumes the suspended ones.
fn ensure_resumed(run: &mut Run, on: u64, vm: &str) -> Result<(), Abort> {
    let started = run.wait_event(on, Duration::from_secs(3), vm_state(vm, "started"))?;
    if started.is_some() {
        return Ok(());
    }
    let held = acrnd_view(run).get(vm).cloned();
    let mode = dm_mode_of(run, vm);
    if held.as_deref() != Some("started") || mode.as_deref() != Some("suspend") {
        return Ok(()); // Not this gap: the expectations that follow say what is wrong.
    }
    run.known_gap(
        GAP_STALE_QUERY,
        &format!("acrnd resumes {vm}"),
        &format!(
            "acrnd holds {vm} as started although its device model reported the suspend: a \
             DM_QUERY answer sent before that DM_NOTIFY arrived after it; worked around by \
             restarting acrnd, which re-attaches and resumes the suspended VMs"
        ),
    );
    run.rig().terminate("acrnd", Duration::from_secs(15))?;
    run.rig().start_acrnd(&[])?;
    Ok(())
}

/// Ignition off with force S5: every VM stops, sos-lcs agrees to S5 and the IOC confirms;
/// returns the mark of the step. `rtc`: a VM's RTC frame goes out with the S5 heartbeat.
fn ignition_off_to_s5(run: &mut Run, rtc: Option<u16>) -> Result<u64, Abort> {
    let vms = run.rig().config().vm_names();
    let off = run.step("ignition off, force S5");
    run.rig().ctl("ignition off force-s5")?;
    ioc(run, off, "WR(0xc00000)", WR_FORCE_S5)?;
    let delay = lcs_enters(run, off, "shutdown_delay")?;
    soc(run, delay, "HB-DELAY", HB_DELAY)?;
    run.expect(
        "sos-lcs → acrnd ACRND_STOP {target S5}",
        off,
        request_with("acrnd", "ACRND_STOP", "target: S5"),
    )?;
    for vm in &vms {
        run.expect(
            &format!("acrnd → {vm} DM_STOP"),
            off,
            request(vm, "DM_STOP"),
        )?;
        run.expect(
            &format!("{vm}: the guest powers off, its device model exits"),
            off,
            kind_with(vm, "dm.exit", "cause", "guest_poweroff"),
        )?;
    }
    vms_reach(run, off, &vms, "stopped")?;
    if rtc.is_some() {
        run.expect(
            "acrnd → sos-lcs RTC_TIMER, acked err 0",
            off,
            acrnd_acked("RTC_TIMER", 0),
        )?;
    }
    run.expect(
        "acrnd → sos-lcs SHUTDOWN err 0",
        off,
        acrnd_reports("SHUTDOWN", 0),
    )?;
    run.expect(
        "sos-lcs acks SHUTDOWN err 0",
        off,
        acrnd_acked("SHUTDOWN", 0),
    )?;
    let s5 = lcs_enters(run, off, "acrnd_shutdown")?;
    soc(run, s5, "HB-S5", HB_S5)?;
    if let Some(secs) = rtc {
        rtc_near(run, s5, secs, 2, "with the S5 heartbeat")?;
    }
    ioc(run, s5, "WR(0)", WR_ZERO)?;
    run.expect(
        "sos-lcs runs the poweroff command",
        s5,
        power_run("poweroff"),
    )?;
    Ok(off)
}

/// systemd carries out `systemctl poweroff`: acrnd and sos-lcs stop (sos-lcs writes
/// suppress-5-min and the S5 heartbeat), then the SoC powers off.
fn systemd_poweroff(run: &mut Run, rtc: Option<u16>) -> Result<u64, Abort> {
    let sd = run.step("systemd powers off: SIGTERM to acrnd and sos-lcs, then the SoC");
    let left = run.rig().host_power(HostPower::Poweroff)?;
    run.check(
        "no device model left running",
        left.is_empty(),
        &format!("{left:?}"),
    )?;
    if run.rig().config().acrnd {
        run.expect(
            "acrnd exits knowing the host powers off",
            sd,
            kind_with("acrnd", "exit", "intent", "poweroff"),
        )?;
    }
    run.expect(
        "sos-lcs exits knowing the host powers off",
        sd,
        kind_with("sos-lcs", "exit", "intent", "poweroff"),
    )?;
    if let Some(secs) = rtc {
        rtc_near(run, sd, secs, 3, "at sos-lcs's exit")?;
    }
    let sup = soc(run, sd, "SUPPRESS-5", SUPPRESS_5MIN)?;
    soc(run, sup, "HB-S5 after it", HB_S5)?;
    run.expect("IOC powers off", sd, ioc_state("off"))?;
    Ok(sd)
}

/// systemd carries out `systemctl reboot` (queued by sos-lcs or by someone in the SOS):
/// acrnd stops every VM, sos-lcs writes suppress-5-min and the reboot heartbeat, the SoC
/// reboots; then the SOS boots again and the VMs start.
fn systemd_reboot(run: &mut Run) -> Result<(), Abort> {
    let vms = run.rig().config().vm_names();
    let sd = run.step("systemd reboots: SIGTERM to acrnd and sos-lcs, then the SoC");
    let left = run.rig().host_power(HostPower::Reboot)?;
    run.check(
        "acrnd stopped every VM before exiting",
        left.is_empty(),
        &format!("still running: {left:?}"),
    )?;
    run.expect(
        "acrnd exits knowing the host reboots",
        sd,
        kind_with("acrnd", "exit", "intent", "reboot"),
    )?;
    for vm in &vms {
        run.expect(&format!("acrnd → {vm} DM_STOP"), sd, request(vm, "DM_STOP"))?;
    }
    vms_reach(run, sd, &vms, "stopped")?;
    run.expect(
        "sos-lcs exits knowing the host reboots",
        sd,
        kind_with("sos-lcs", "exit", "intent", "reboot"),
    )?;
    let sup = soc(run, sd, "SUPPRESS-5", SUPPRESS_5MIN)?;
    soc(run, sup, "HB-REBOOT after it", HB_REBOOT)?;
    run.expect("IOC reboots: running again", sd, |e| {
        e.actor == "ioc-sim"
            && e.kind == "ioc.state"
            && str_field(e, "to") == Some("running")
            && str_field(e, "from") == Some("prepared")
    })?;
    boot_ignition(run, sd)
}

/// A configuration for `run` with the options' timing, `vms` and the IOC's initial state.
fn config_for(run: &Run, vms: Vec<VmSpec>, start: IocStart) -> RigConfig {
    let mut cfg = RigConfig::new(0, run.opts().timing.clone());
    cfg.vms = vms;
    cfg.ioc_start = start;
    cfg
}

/// Creates the rig of `cfg` and starts ioc-sim.
fn start_rig(run: &mut Run, cfg: RigConfig) -> Result<(), Abort> {
    run.new_rig(cfg)?.start_ioc()?;
    Ok(())
}

/// After an S3 entry with `vm`'s RTC wake-up: the IOC's RTC wakes the system and acrnd
/// resumes `vm` only (flow 7a).
fn rtc_wake_resumes(run: &mut Run, wake: u64, vm: &str, others: &[String]) -> Result<(), Abort> {
    run.expect_within(
        "IOC RTC fires",
        wake,
        Duration::from_secs(15),
        ioc_rtc("fired"),
    )?;
    run.expect("IOC suspended → running", wake, ioc_state("running"))?;
    ioc(run, wake, "WR(0x000200)", WR_RTC)?;
    run.expect(
        "the suspend command returns",
        wake,
        kind_with("sos-lcs", "power.done", "action", "suspend"),
    )?;
    let alive = lcs_enters(run, wake, "keep_alive")?;
    soc(run, alive, "HB-ACTIVE", HB_ACTIVE)?;
    ioc(run, alive, "WR(0x800200)", WR_RTC_SOC)?;
    run.expect(
        "sos-lcs → acrnd ACRND_RESUME, acked err 0",
        alive,
        lcs_acked("ACRND_RESUME", 0),
    )?;
    run.expect("acrnd: wakeup reason 0x200 (for Resume)", alive, |e| {
        e.actor == "acrnd"
            && e.kind == "reason"
            && str_field(e, "for") == Some("Resume")
            && int_field(e, "reason").is_some_and(|r| r & 0x200 != 0)
    })?;
    run.expect(
        &format!("acrnd: {vm}'s timer is due"),
        wake,
        kind_with("acrnd", "timer.fire", "vm", vm),
    )?;
    run.expect(
        &format!("acrnd → {vm} DM_RESUME {{reason 0x200}}"),
        wake,
        request_with(vm, "DM_RESUME", "reason: 512"),
    )?;
    run.expect(
        &format!("acrnd: {vm} started"),
        wake,
        vm_state(vm, "started"),
    )?;
    run.expect(
        &format!("{vm}: the guest wakes with the RTC bit 0x200"),
        wake,
        guest_wakes(vm, 0x200),
    )?;
    for other in others {
        run.expect_none(
            &format!("{other} stays suspended"),
            wake,
            vm_state(other, "started"),
        )?;
    }
    Ok(())
}

/// After an RTC wake: `vm`'s vIOC forwards the IOC's reasons with the RTC bit cleared (as
/// the C mediator does, dm-monitor §5.5), so its guest sees only the SoC bit (and force-S5,
/// if latched), a shutdown request, and goes down again to `state` (`suspended` or
/// `stopped`), re-arming its wake-up.
fn rtc_woken_guest_goes_down(run: &mut Run, wake: u64, vm: &str, state: &str) -> Result<(), Abort> {
    run.note(&format!(
        "{vm}'s vIOC forwards the IOC's reason without the RTC bit, as the C mediator does: its guest sees a shutdown request"
    ));
    let (a, b) = (hex(&WR_SHUTDOWN), hex(&WR_FORCE_S5));
    let target = vm.to_owned();
    run.expect(
        &format!("{vm}'s vIOC → guest WR(0x800000) 01 00 00 80 or WR(0xc00000) 01 00 00 c0"),
        wake,
        move |e: &LoggedEvent| {
            e.actor == target
                && e.kind == "frame.guest_rx"
                && str_field(e, "hex").is_some_and(|h| h == a || h == b)
        },
    )?;
    run.expect(
        &format!("acrnd: {vm} {state} again"),
        wake,
        vm_state(vm, state),
    )?;
    run.expect(
        &format!("acrnd stores {vm}'s re-armed wake-up"),
        wake,
        kind_with("acrnd", "timer", "vm", vm),
    )?;
    Ok(())
}

/// Ignition on while the SOS is alive (after an RTC wake): every suspended VM should resume.
fn ignition_on_while_alive(run: &mut Run) -> Result<(), Abort> {
    let suspended = vms_in(run, "suspended");
    let on = run.step("ignition on");
    run.rig().ctl("ignition on")?;
    ioc(run, on, "WR(0x800020)", WR_IGNITION_SOC)?;
    if suspended.is_empty() {
        return Ok(());
    }
    let list = suspended.clone();
    let resumed = run.poll(Duration::from_millis(1500), move |run| {
        let events = run.events_since(on);
        list.iter()
            .all(|vm| events.iter().any(vm_state(vm, "started")))
    })?;
    if resumed {
        run.expect(
            "sos-lcs → acrnd ACRND_RESUME for the new wake source, acked err 0",
            on,
            lcs_acked("ACRND_RESUME", 0),
        )?;
        for vm in &suspended {
            run.expect(
                &format!("acrnd: {vm} resumes on ignition"),
                on,
                vm_state(vm, "started"),
            )?;
        }
        return Ok(());
    }
    run.known_gap(
        GAP_NEW_WAKE_SOURCE,
        &format!("{} resume on ignition", suspended.join(", ")),
        "sos-lcs, ALIVE since the RTC wake, sends no ACRND_RESUME for the new ignition reason; \
         worked around with `acrnctl resume`",
    );
    for vm in &suspended {
        if vms_in(run, "suspended").contains(vm) {
            let out = run.rig().acrnctl(&["resume", vm])?;
            run.note(&format!("acrnctl resume {vm}: exit {}", out.code));
        }
        run.expect(&format!("acrnd: {vm} started"), on, vm_state(vm, "started"))?;
    }
    Ok(())
}

// ---- scenarios ----------------------------------------------------------------------------

/// Flows 1 and 2: the car is parked (IOC off); ignition on; the SOS boots; acrnd starts every
/// VM with the ignition reason.
pub fn power_on(run: &mut Run) -> Result<(), Abort> {
    let vms = plain_vms(run, 1);
    rig_with(run, vms, IocStart::Off)?;
    let vms = run.rig().config().vm_names();
    let m = ignition_on_from_off(run)?;
    boot_ignition(run, m)?;
    acrnctl_shows(run, &all_in(&vms, "started"))
}

/// Flow 2 in detail: the SOS boots while the IOC has not reported a reason yet, with a
/// device model socket left behind by a crash; acrnd's WAKEUP_REASON waits for the first
/// reason instead of taking 0, then every VM starts with the ignition reason.
pub fn boot(run: &mut Run) -> Result<(), Abort> {
    let vms = plain_vms(run, 1);
    rig_with(run, vms, IocStart::Off)?;
    let vms = run.rig().config().vm_names();
    let stale = run.rig().socket_dir().join("vm1.monitor.999999999.socket");
    let bound = std::os::unix::net::UnixListener::bind(&stale).map_err(|e| {
        Abort::Rig(crate::rig::RigError::Io {
            what: "bind a stale socket".to_owned(),
            source: e,
        })
    })?;
    drop(bound);
    let m =
        run.step("the SOS boots before the IOC reports anything (a dead DM's socket is left over)");
    run.rig().boot()?;
    soc(run, m, "HB-INIT", HB_INIT)?;
    run.expect(
        "acrnd asks sos-lcs WAKEUP_REASON at boot",
        m,
        request("sos-lcs", "WAKEUP_REASON"),
    )?;
    let on = run.step("ignition on, within sos-lcs's wait for a first reason");
    run.rig().ctl("ignition on")?;
    ioc(run, on, "WR(0x000020)", WR_IGNITION)?;
    let alive = lcs_enters(run, on, "keep_alive")?;
    soc(run, alive, "HB-ACTIVE", HB_ACTIVE)?;
    run.expect(
        "acrnd's WAKEUP_REASON is answered with the first reason, 0x20 (not 0)",
        on,
        |e| {
            e.actor == "acrnd"
                && e.kind == "reason"
                && str_field(e, "for") == Some("Boot")
                && int_field(e, "reason") == Some(0x20)
        },
    )?;
    for vm in &vms {
        run.expect(
            &format!("acrnd launches {vm} with reason 0x20"),
            on,
            vm_launched(vm, 0x20),
        )?;
        run.expect(&format!("acrnd: {vm} started"), on, vm_state(vm, "started"))?;
        run.expect(
            &format!("{vm}: the guest wakes with WR(0x800020) 01 20 00 80"),
            on,
            {
                let vm = vm.clone();
                let want = hex(&WR_IGNITION_SOC);
                move |e: &LoggedEvent| {
                    e.actor == vm
                        && e.kind == "frame.guest_rx"
                        && str_field(e, "hex") == Some(want.as_str())
                }
            },
        )?;
    }
    run.check(
        "the dead device model's socket is gone",
        !stale.exists(),
        &format!("{} still exists", stale.display()),
    )?;
    acrnctl_shows(run, &all_in(&vms, "started"))
}

/// The default: a whole power cycle of a car.
pub fn full_cycle(run: &mut Run) -> Result<(), Abort> {
    let mut vms = plain_vms(run, 1);
    vms[0] = VmSpec::new("vm1").rtc(3);
    rig_with(run, vms, IocStart::Off)?;
    let vms = run.rig().config().vm_names();
    let others: Vec<String> = vms[1..].to_vec();

    let m = ignition_on_from_off(run)?;
    boot_ignition(run, m)?;

    run.note("vm1's guest arms an RTC wake-up in 3 s whenever it suspends or powers off");
    let off = ignition_off_to_s3(run, Some(("vm1", 3)))?;
    run.expect("IOC RTC armed", off, ioc_rtc("armed"))?;

    let wake = run.step("the IOC's RTC expires: it wakes the system");
    rtc_wake_resumes(run, wake, "vm1", &others)?;
    rtc_woken_guest_goes_down(run, wake, "vm1", "suspended")?;

    ignition_on_while_alive(run)?;
    acrnctl_shows(run, &all_in(&vms, "started"))?;

    ignition_off_to_s5(run, Some(3))?;
    systemd_poweroff(run, Some(3))?;
    Ok(())
}

/// Flow 3 with force S5: every VM stops, S5, power off.
pub fn power_off(run: &mut Run) -> Result<(), Abort> {
    let vms = plain_vms(run, 1);
    rig_with(run, vms, IocStart::Running)?;
    up(run)?;
    let off = ignition_off_to_s5(run, None)?;
    systemd_poweroff(run, None)?;
    run.expect_none("no RTC frame: no VM asked for a wake-up", off, |e| {
        e.actor == "ioc-sim" && e.kind == "frame.rx" && str_field(e, "frame") == Some("rtc")
    })?;
    let stored = stored_timers(run)?;
    run.check(
        "the timer store is empty",
        stored.is_empty(),
        &format!("{stored:?}"),
    )
}

/// Flow 3 with S3, and the wake by ignition (7a step 8).
pub fn suspend(run: &mut Run) -> Result<(), Abort> {
    let vms = plain_vms(run, 1);
    rig_with(run, vms, IocStart::Running)?;
    up(run)?;
    let vms = run.rig().config().vm_names();
    ignition_off_to_s3(run, None)?;
    ignition_on_resumes(run, &vms)?;
    acrnctl_shows(run, &all_in(&vms, "started"))
}

/// Flow 8b: REBOOT over IPC.
pub fn reboot(run: &mut Run) -> Result<(), Abort> {
    let vms = plain_vms(run, 1);
    rig_with(run, vms, IocStart::Running)?;
    up(run)?;
    let m = run.step("a client sends REBOOT {err 0} to sos-lcs");
    let reply = run.rig().ctl("reboot-request")?;
    run.check(
        "sos-lcs acks REBOOT err 0",
        reply == "ok ack err=0",
        &format!("reply {reply:?}"),
    )?;
    run.expect("sos-lcs serves REBOOT", m, request("sos-lcs", "REBOOT"))?;
    let r = lcs_enters(run, m, "acrnd_reboot")?;
    soc(run, r, "HB-REBOOT", HB_REBOOT)?;
    run.expect("IOC: shutdown prepared", r, ioc_state("prepared"))?;
    ioc(run, r, "WR(0)", WR_ZERO)?;
    run.expect("sos-lcs runs the reboot command", r, power_run("reboot"))?;
    run.expect_none(
        "acrnd is not asked to stop anything over IPC (it stops the VMs at SIGTERM)",
        m,
        request("acrnd", "ACRND_STOP"),
    )?;
    systemd_reboot(run)
}

/// Flow 8a: `systemctl reboot` in the SOS.
pub fn host_reboot(run: &mut Run) -> Result<(), Abort> {
    let vms = plain_vms(run, 1);
    rig_with(run, vms, IocStart::Running)?;
    up(run)?;
    run.step("someone runs `systemctl reboot` in the SOS");
    run.rig().queue_job(HostPower::Reboot)?;
    systemd_reboot(run)
}

/// Flows 5 and 7a: RTC wake-ups stored before S3; the RTC wakes the system and only the
/// due VM resumes.
pub fn rtc_s3(run: &mut Run) -> Result<(), Abort> {
    let off = rtc_s3_into(run)?;
    let wake = run.step("the IOC's RTC expires: it wakes the system");
    rtc_wake_resumes(run, wake, "vm1", &["vm2".to_owned(), "vm3".to_owned()])?;
    run.expect_none(
        "vm2's timer (an hour away) does not fire",
        off,
        kind_with("acrnd", "timer.fire", "vm", "vm2"),
    )?;
    let stored = stored_timers(run)?;
    run.check(
        "the timer store keeps vm2's wake-up",
        stored.iter().any(|v| v == "vm2"),
        &format!("{stored:?}"),
    )?;
    rtc_woken_guest_goes_down(run, wake, "vm1", "suspended")?;
    let timers = acrnctl_timers(run)?;
    run.check(
        "acrnctl timers: vm1 (re-armed) and vm2",
        timers == ["vm1", "vm2"],
        &format!("{timers:?}"),
    )
}

/// Flow 5 alone: RTC wake-ups stored and sent before S3.
pub fn rtc_s3_entry(run: &mut Run) -> Result<(), Abort> {
    rtc_s3_into(run).map(|_| ())
}

/// vm1 (3 s) and vm2 (an hour) arm wake-ups; ignition off; S3 with the RTC programmed.
/// Returns the mark of the ignition off.
fn rtc_s3_into(run: &mut Run) -> Result<u64, Abort> {
    let vms = vec![
        VmSpec::new("vm1").rtc(3),
        VmSpec::new("vm2").rtc(3600),
        VmSpec::new("vm3"),
    ];
    rig_with(run, vms, IocStart::Running)?;
    up(run)?;
    run.note("vm1's guest arms an RTC wake-up in 3 s when it suspends, vm2's in an hour");
    let off = ignition_off_to_s3(run, Some(("vm1", 3)))?;
    run.expect(
        "acrnd stores vm2's timer",
        off,
        kind_with("acrnd", "timer", "vm", "vm2"),
    )?;
    run.expect(
        "sos-lcs serves RTC_TIMER {t: vm1's time}",
        off,
        request("sos-lcs", "RTC_TIMER"),
    )?;
    run.expect("sos-lcs arms the RTC 1 to 3 s ahead", off, |e| {
        e.actor == "sos-lcs"
            && e.kind == "rtc.armed"
            && int_field(e, "delta").is_some_and(|d| (1..=3).contains(&d))
    })?;
    let stored = stored_timers(run)?;
    run.check(
        "the timer store holds vm1, then vm2",
        stored == ["vm1", "vm2"],
        &format!("{stored:?}"),
    )?;
    run.expect("IOC RTC armed about 3 s ahead", off, |e| {
        e.actor == "ioc-sim"
            && e.kind == "ioc.rtc"
            && str_field(e, "event") == Some("armed")
            && int_field(e, "after_ms").is_some_and(|ms| (1000..=3000).contains(&ms))
    })?;
    Ok(off)
}

/// Flows 6 and 7b: an RTC wake-up survives S5; the RTC powers the system on and acrnd starts
/// only the VM whose timer is due.
pub fn rtc_s5(run: &mut Run) -> Result<(), Abort> {
    rtc_s5_into(run)?;
    let wake = run.step("the IOC's RTC expires: it powers the SoC on");
    run.expect_within(
        "IOC RTC fires",
        wake,
        Duration::from_secs(15),
        ioc_rtc("fired"),
    )?;
    run.expect("IOC off → running", wake, ioc_state("running"))?;
    run.note("the IOC keeps the force-S5 bit of the last ignition off until the next ignition on");
    boot_alive(
        run,
        wake,
        0x40_0200,
        [0x01, 0x00, 0x02, 0x40],
        [0x01, 0x00, 0x02, 0xc0],
    )?;
    run.expect(
        "acrnd: vm1's timer is due",
        wake,
        kind_with("acrnd", "timer.fire", "vm", "vm1"),
    )?;
    run.expect(
        "acrnd launches vm1 with the RTC reason 0x200",
        wake,
        vm_launched("vm1", 0x200),
    )?;
    run.expect("acrnd: vm1 started", wake, vm_state("vm1", "started"))?;
    run.expect(
        "vm1: the guest wakes with the RTC bit 0x200",
        wake,
        guest_wakes("vm1", 0x200),
    )?;
    rtc_woken_guest_goes_down(run, wake, "vm1", "stopped")?;
    for vm in ["vm2", "vm3"] {
        run.expect_none(
            &format!("{vm} is not started: an RTC boot starts only the due VMs"),
            wake,
            kind_with("acrnd", "vm.launch", "vm", vm),
        )?;
    }
    acrnctl_shows(
        run,
        &[("vm2".to_owned(), "stopped"), ("vm3".to_owned(), "stopped")],
    )
}

/// Flow 6 alone: an RTC wake-up survives S5.
pub fn rtc_s5_entry(run: &mut Run) -> Result<(), Abort> {
    rtc_s5_into(run).map(|_| ())
}

/// vm1 arms a wake-up 4 s ahead; ignition off with force S5; power off with the RTC
/// programmed and the timer store kept. Returns the mark of the ignition off.
fn rtc_s5_into(run: &mut Run) -> Result<u64, Abort> {
    let vms = vec![
        VmSpec::new("vm1").rtc(4),
        VmSpec::new("vm2"),
        VmSpec::new("vm3"),
    ];
    rig_with(run, vms, IocStart::Running)?;
    up(run)?;
    run.note("vm1's guest arms an RTC wake-up in 4 s when it powers off");
    let off = ignition_off_to_s5(run, Some(4))?;
    run.expect(
        "acrnd stores vm1's timer",
        off,
        kind_with("acrnd", "timer", "vm", "vm1"),
    )?;
    let zero = run
        .expect("IOC confirms with WR(0)", off, ioc_sends(WR_ZERO))?
        .t_ns;
    rtc_near(run, zero, 4, 2, "once more at reason 0")?;
    systemd_poweroff(run, Some(4))?;
    let stored = stored_timers(run)?;
    run.check(
        "the timer store survives acrnd's exit: vm1",
        stored == ["vm1"],
        &format!("{stored:?}"),
    )?;
    run.expect("IOC RTC armed about 4 s ahead", off, |e| {
        e.actor == "ioc-sim"
            && e.kind == "ioc.rtc"
            && str_field(e, "event") == Some("armed")
            && int_field(e, "after_ms").is_some_and(|ms| (1000..=4000).contains(&ms))
    })?;
    Ok(off)
}

/// Flow 4: a guest ignores the stop; acrnd refuses at its deadline; sos-lcs goes back to
/// DEFAULT and the IOC's request starts another round; ignition on ends it.
pub fn vm_refuses_stop(run: &mut Run) -> Result<(), Abort> {
    let mut vms = plain_vms(run, 2);
    vms[1] = VmSpec::new("vm2").fault("refuse-suspend");
    rig_with(run, vms, IocStart::Running)?;
    up(run)?;
    let vms = run.rig().config().vm_names();
    let good: Vec<String> = vms.iter().filter(|v| *v != "vm2").cloned().collect();
    let m = run.step("ignition off (vm2's guest ignores it)");
    run.rig().ctl("ignition off")?;
    ioc(run, m, "WR(0x800000)", WR_SHUTDOWN)?;
    let delay = lcs_enters(run, m, "shutdown_delay")?;
    soc(run, delay, "HB-DELAY", HB_DELAY)?;
    run.expect("acrnd acks ACRND_STOP err 0", m, lcs_acked("ACRND_STOP", 0))?;
    vms_reach(run, m, &good, "suspended")?;
    let bound = Duration::from_secs(u64::from(run.opts().timing.stop_timeout_s) + 10);
    let deadline = run.expect_within(
        "acrnd's stop deadline names vm2 as the blocker",
        m,
        bound,
        |e: &LoggedEvent| {
            e.actor == "acrnd"
                && e.kind == "stop_all.deadline"
                && e.fields.get("blocking") == Some(&serde_json::json!(["vm2"]))
        },
    )?;
    run.expect(
        "acrnd → sos-lcs SUSPEND err -1 (refused)",
        m,
        acrnd_reports("SUSPEND", -1),
    )?;
    run.expect(
        "sos-lcs serves SUSPEND {err: -1}",
        m,
        request_with("sos-lcs", "SUSPEND", "err: -1"),
    )?;
    let back = run.expect("sos-lcs shutdown_delay → default", deadline.t_ns, |e| {
        e.actor == "sos-lcs"
            && e.kind == "state"
            && str_field(e, "from") == Some("shutdown_delay")
            && str_field(e, "to") == Some("default")
    })?;
    soc(run, back.t_ns, "HB-INIT", HB_INIT)?;
    run.expect_none("nobody forces vm2 down", m, |e| {
        e.actor == "acrnd"
            && e.kind == "dm.send"
            && str_field(e, "vm") == Some("vm2")
            && str_field(e, "msg").is_some_and(|s| s.contains("DM_STOP"))
    })?;
    let again = lcs_enters(run, back.t_ns, "shutdown_delay")?;
    run.expect(
        "the IOC still asks: sos-lcs → acrnd ACRND_STOP again",
        again,
        lcs_sends("ACRND_STOP"),
    )?;
    run.expect(
        "acrnd starts another stop-all",
        again,
        kind("acrnd", "stop_all.start"),
    )?;
    let on = run.step("ignition on");
    run.rig().ctl("ignition on")?;
    ioc(run, on, "WR(0x800020)", WR_IGNITION_SOC)?;
    let alive = lcs_enters(run, on, "keep_alive")?;
    soc(run, alive, "HB-ACTIVE", HB_ACTIVE)?;
    run.expect(
        "sos-lcs → acrnd ACRND_RESUME, acked err 0",
        alive,
        lcs_acked("ACRND_RESUME", 0),
    )?;
    for vm in &good {
        run.expect(&format!("acrnd: {vm} resumed"), on, vm_state(vm, "started"))?;
    }
    let settled = run.poll(Duration::from_secs(2), |run| {
        acrnd_view(run).get("vm2").map(String::as_str) == Some("started")
    })?;
    if settled {
        run.check("acrnd: vm2, still running, is started", true, "")?;
    } else {
        let view = acrnd_view(run);
        run.known_gap(
            GAP_STUCK_SUSPENDING,
            "acrnd: vm2, still running, is started",
            &format!(
                "acrnd keeps vm2 {:?} after refusing the stop, though its device model reports it running",
                view.get("vm2")
            ),
        );
    }
    let want: Vec<(String, &str)> = good.iter().map(|v| (v.clone(), "started")).collect();
    acrnctl_shows(run, &want)
}

/// A device model crashes (SIGABRT, socket left behind) in the middle of an S5 stop.
pub fn vm_crash(run: &mut Run) -> Result<(), Abort> {
    let mut vms = plain_vms(run, 2);
    vms[1] = VmSpec::new("vm2").fault("crash-stop");
    rig_with(run, vms, IocStart::Running)?;
    up(run)?;
    let vms = run.rig().config().vm_names();
    let off = run.step("ignition off, force S5 (vm2's device model will crash)");
    run.rig().ctl("ignition off force-s5")?;
    run.expect(
        "sos-lcs → acrnd ACRND_STOP {target S5}",
        off,
        request_with("acrnd", "ACRND_STOP", "target: S5"),
    )?;
    run.expect(
        "vm2's device model crashes in the stop",
        off,
        kind_with("vm2", "fault", "point", "crash-stop"),
    )?;
    run.expect(
        "acrnd sees vm2's device model exit at once",
        off,
        kind_with("acrnd", "vm.exit", "vm", "vm2"),
    )?;
    vms_reach(run, off, &vms, "stopped")?;
    run.expect(
        "acrnd → sos-lcs SHUTDOWN err 0",
        off,
        acrnd_reports("SHUTDOWN", 0),
    )?;
    let s5 = lcs_enters(run, off, "acrnd_shutdown")?;
    soc(run, s5, "HB-S5", HB_S5)?;
    run.expect(
        "sos-lcs runs the poweroff command",
        s5,
        power_run("poweroff"),
    )?;
    systemd_poweroff(run, None)?;
    let sock = run.rig().socket_dir();
    let stale = mngr_ipc::naming::candidates(&sock, "vm2.monitor").unwrap_or_default();
    run.check(
        "vm2's crashed device model left its socket behind",
        stale.iter().any(|c| !c.alive),
        &format!("{stale:?}"),
    )?;
    let m = ignition_on_from_off(run)?;
    boot_ignition(run, m)?;
    acrnctl_shows(run, &all_in(&vms, "started"))
}

/// acrnd is killed (SIGKILL) while the VMs run and restarted: it re-attaches to the same
/// device models, and the next ignition off suspends them.
pub fn acrnd_restart(run: &mut Run) -> Result<(), Abort> {
    let vms = plain_vms(run, 1);
    rig_with(run, vms, IocStart::Running)?;
    up(run)?;
    let vms = run.rig().config().vm_names();
    let pids = run.rig().live_dms();
    let k = run.step("acrnd crashes (SIGKILL); systemd restarts it");
    run.rig().crash("acrnd")?;
    run.rig().start_acrnd(&[])?;
    run.expect("the new acrnd boots", k, kind("acrnd", "boot"))?;
    vms_reach(run, k, &vms, "started")?;
    run.expect_none(
        "it launches no second device model",
        k,
        kind("acrnd", "vm.launch"),
    )?;
    let now = run.rig().live_dms();
    run.check(
        "the same device models run",
        now == pids,
        &format!("before {pids:?}, after {now:?}"),
    )?;
    ignition_off_to_s3(run, None)?;
    ignition_on_resumes(run, &vms)?;
    Ok(())
}

/// Ignition comes back during the shutdown delay.
pub fn ignition_cancel(run: &mut Run) -> Result<(), Abort> {
    let n = run.opts().vms.max(1);
    let slow = 2000 + run.opts().timing.guest_delay_ms;
    let vms: Vec<VmSpec> = (1..=n)
        .map(|i| VmSpec::new(&format!("vm{i}")).delay(slow))
        .collect();
    rig_with(run, vms, IocStart::Running)?;
    up(run)?;
    let vms = run.rig().config().vm_names();
    let m = run.step("ignition off (the guests take 2 s to suspend)");
    run.rig().ctl("ignition off")?;
    let delay = lcs_enters(run, m, "shutdown_delay")?;
    soc(run, delay, "HB-DELAY", HB_DELAY)?;
    run.expect(
        "acrnd starts its stop-all",
        m,
        kind("acrnd", "stop_all.start"),
    )?;
    for vm in &vms {
        run.expect(
            &format!("acrnd → {vm} DM_SUSPEND"),
            m,
            request(vm, "DM_SUSPEND"),
        )?;
    }
    let on = run.step("ignition on again, during the shutdown delay");
    run.rig().ctl("ignition on")?;
    ioc(run, on, "WR(0x800020)", WR_IGNITION_SOC)?;
    run.expect("sos-lcs shutdown_delay → keep_alive", on, |e| {
        e.actor == "sos-lcs"
            && e.kind == "state"
            && str_field(e, "from") == Some("shutdown_delay")
            && str_field(e, "to") == Some("keep_alive")
    })?;
    soc(run, on, "HB-ACTIVE", HB_ACTIVE)?;
    run.expect(
        "sos-lcs → acrnd ACRND_RESUME, acked err 0",
        on,
        lcs_acked("ACRND_RESUME", 0),
    )?;
    run.expect(
        "acrnd abandons its stop-all",
        on,
        kind("acrnd", "stop_all.cancelled"),
    )?;
    // Let the guests finish whatever they were doing.
    let settle = Duration::from_millis(slow + 3000);
    let list = vms.clone();
    run.poll(settle, move |run| {
        let view = acrnd_view(run);
        let events = run.events_since(0);
        list.iter().all(|vm| {
            let guest = events
                .iter()
                .rev()
                .find(|e| e.actor == *vm && e.kind == "guest.state")
                .and_then(|e| str_field(e, "to"));
            matches!(
                view.get(vm).map(String::as_str),
                Some("started" | "suspended")
            ) && matches!(guest, Some("active" | "suspended"))
        })
    })?;
    let suspended = vms_in(run, "suspended");
    if suspended.is_empty() {
        let started = vms_in(run, "started").len() == vms.len();
        let view = format!("{:?}", acrnd_view(run));
        run.check(&format!("{} keep running", vms.join(", ")), started, &view)?;
    } else {
        run.known_gap(
            GAP_CANCEL_LEAVES_SUSPEND,
            &format!("{} keep running", vms.join(", ")),
            &format!(
                "{} suspended after the cancel (their DM_SUSPEND stayed pending) and nothing \
                 resumed them; worked around with `acrnctl resume`",
                suspended.join(", ")
            ),
        );
        for vm in &suspended {
            let out = run.rig().acrnctl(&["resume", vm])?;
            run.note(&format!("acrnctl resume {vm}: exit {}", out.code));
        }
        let mark = run.mark();
        vms_reach(run, mark.min(on), &suspended, "started")?;
    }
    run.expect_none(
        "no SUSPEND reaches sos-lcs",
        m,
        request("sos-lcs", "SUSPEND"),
    )?;
    run.expect_none("the IOC never sees HB-S3", m, soc_sends(HB_S3))?;
    let late = run.step("a late SUSPEND {err 0} reaches sos-lcs");
    let sock = run.rig().socket_dir();
    let ack = Client::new(&sock, Profile::F).send(
        "sos-lcs",
        &Request::now(MsgBody::Suspend { err: 0 }),
        Duration::from_secs(5),
    );
    let code = ack.as_ref().ok().and_then(mngr_ipc::Ack::err);
    run.check(
        "sos-lcs refuses it (err -16, EBUSY)",
        code == Some(errno::BUSY),
        &format!("ack {ack:?}"),
    )?;
    soc(run, late, "HB-ACTIVE", HB_ACTIVE)?;
    run.expect_none("sos-lcs stays keep_alive", late, |e| {
        e.actor == "sos-lcs" && e.kind == "state"
    })?;
    acrnctl_shows(run, &all_in(&vms, "started"))
}

/// Flow 9b: sos-lcs alone with its stand-in acrnd.
pub fn no_acrnd(run: &mut Run) -> Result<(), Abort> {
    let mut cfg = config_for(run, Vec::new(), IocStart::Off);
    cfg.acrnd = false;
    start_rig(run, cfg)?;
    let m = ignition_on_from_off(run)?;
    boot_ignition(run, m)?;
    run.expect(
        "the stand-in acrnd takes ACRND_RESUME, err 0",
        m,
        lcs_acked("ACRND_RESUME", 0),
    )?;
    let off = run.step("ignition off");
    run.rig().ctl("ignition off")?;
    ioc(run, off, "WR(0x800000)", WR_SHUTDOWN)?;
    run.expect(
        "the stand-in acrnd takes ACRND_STOP, err 0",
        off,
        lcs_acked("ACRND_STOP", 0),
    )?;
    let s3 = lcs_enters(run, off, "acrnd_suspend")?;
    soc(run, s3, "HB-S3", HB_S3)?;
    ioc(run, s3, "WR(0)", WR_ZERO)?;
    run.expect("sos-lcs runs the suspend command", s3, power_run("suspend"))?;
    run.expect("IOC suspends", s3, ioc_state("suspended"))?;
    let on = run.step("ignition on");
    run.rig().ctl("ignition on")?;
    ioc(run, on, "WR(0x000020)", WR_IGNITION)?;
    let alive = lcs_enters(run, on, "keep_alive")?;
    soc(run, alive, "HB-ACTIVE", HB_ACTIVE)?;
    let off = run.step("ignition off, force S5");
    run.rig().ctl("ignition off force-s5")?;
    ioc(run, off, "WR(0xc00000)", WR_FORCE_S5)?;
    let s5 = lcs_enters(run, off, "acrnd_shutdown")?;
    soc(run, s5, "HB-S5", HB_S5)?;
    ioc(run, s5, "WR(0)", WR_ZERO)?;
    run.expect(
        "sos-lcs runs the poweroff command",
        s5,
        power_run("poweroff"),
    )?;
    systemd_poweroff(run, None)?;
    Ok(())
}

/// Flow 9a: acrnctl stops and starts single VMs.
pub fn acrnctl_stop(run: &mut Run) -> Result<(), Abort> {
    let vms = plain_vms(run, 2);
    rig_with(run, vms, IocStart::Running)?;
    up(run)?;
    let vms = run.rig().config().vm_names();
    let m = run.step("acrnctl stop vm1");
    let out = run.rig().acrnctl(&["stop", "vm1"])?;
    run.check("acrnctl stop vm1 exits 0", out.code == 0, &out.stderr)?;
    run.expect(
        "acrnd → vm1 DM_STOP {force 0}",
        m,
        request_with("vm1", "DM_STOP", "force: 0"),
    )?;
    let (s5_req, hb_s5) = (hex(&WR_FORCE_S5), hex(&HB_S5));
    run.expect(
        "vm1's vIOC → guest WR(0xc00000) 01 00 00 c0 (an emulated ignition off, force S5)",
        m,
        move |e| {
            e.actor == "vm1"
                && e.kind == "frame.guest_rx"
                && str_field(e, "hex") == Some(s5_req.as_str())
        },
    )?;
    run.expect("vm1's guest → vIOC HB-S5 02 00 01 00", m, move |e| {
        e.actor == "vm1"
            && e.kind == "frame.guest_tx"
            && str_field(e, "hex") == Some(hb_s5.as_str())
    })?;
    run.expect(
        "vm1's device model exits",
        m,
        kind_with("vm1", "dm.exit", "cause", "guest_poweroff"),
    )?;
    run.expect("acrnd: vm1 stopped", m, vm_state("vm1", "stopped"))?;
    run.expect_none("the lifecycle service is not involved", m, |e| {
        e.actor == "sos-lcs" && e.kind == "state"
    })?;
    let f = run.step("acrnctl stop --force vm2");
    let out = run.rig().acrnctl(&["stop", "--force", "vm2"])?;
    run.check(
        "acrnctl stop --force vm2 exits 0",
        out.code == 0,
        &out.stderr,
    )?;
    run.expect(
        "acrnd → vm2 DM_STOP {force 1}",
        f,
        request_with("vm2", "DM_STOP", "force: 1"),
    )?;
    run.expect(
        "vm2's device model exits at once",
        f,
        kind_with("vm2", "dm.exit", "cause", "forced_stop"),
    )?;
    run.expect("acrnd: vm2 stopped", f, vm_state("vm2", "stopped"))?;
    let want: Vec<(String, &str)> = vms
        .iter()
        .map(|v| {
            let st = if v == "vm1" || v == "vm2" {
                "stopped"
            } else {
                "started"
            };
            (v.clone(), st)
        })
        .collect();
    acrnctl_shows(run, &want)?;
    let s = run.step("acrnctl start vm1");
    let out = run.rig().acrnctl(&["start", "vm1"])?;
    run.check("acrnctl start vm1 exits 0", out.code == 0, &out.stderr)?;
    run.expect("acrnd: vm1 started", s, vm_state("vm1", "started"))?;
    let out = run.rig().acrnctl(&["stop", "vm9"])?;
    run.check(
        "acrnctl stop of an unknown VM fails with exit 1",
        out.code == 1,
        &format!("exit {}: {}", out.code, out.stderr),
    )
}

/// Flows 1, 2, 3 and 7a.8 on a line that loses, duplicates and corrupts frames, in both
/// modes.
pub fn lossy_ioc(run: &mut Run) -> Result<(), Abort> {
    let seed = run.opts().seed.unwrap_or_else(seed_from_clock);
    for mode in [LineMode::Cdev, LineMode::Uart] {
        let mut cfg = config_for(run, plain_vms(run, 1), IocStart::Running);
        cfg.name = format!("sos-{}", mode.name());
        cfg.mode = mode;
        cfg.faults = Some(LineFaults {
            seed,
            drop: 0.1,
            dup: 0.1,
            // Without a checksum (cdev), a flipped bit is another, valid reason.
            corrupt: if mode == LineMode::Uart { 0.1 } else { 0.0 },
            garbage: 0.1,
        });
        let m = run.step(&format!(
            "{} line, IOC frames dropped, duplicated{}, garbage between them (seed {seed})",
            mode.name(),
            if mode == LineMode::Uart {
                ", corrupted"
            } else {
                ""
            }
        ));
        start_rig(run, cfg)?;
        boot_ignition(run, m)?;
        let vms = run.rig().config().vm_names();
        ignition_off_to_s3(run, None)?;
        ignition_on_resumes(run, &vms)?;
        run.expect("faults were injected", m, kind("ioc-sim", "fault"))?;
        run.expect_none(
            "the watchdog never cut the power",
            m,
            kind("ioc-sim", "ioc.power_cut"),
        )?;
    }
    Ok(())
}

/// A seed from the clock, for runs without `--seed`.
#[must_use]
pub fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| {
            u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(1)
        })
}

/// The soak: `--cycles` S3 cycles with 5 % of the IOC's frames lost, at the shortest
/// periods ([`Timing::soak`]).
pub fn soak(run: &mut Run) -> Result<(), Abort> {
    let seed = run.opts().seed.unwrap_or_else(seed_from_clock);
    let cycles = run.opts().cycles.max(1);
    let mut vms = plain_vms(run, 2);
    vms[0] = VmSpec::new("vm1").rtc(3600);
    let mut cfg = config_for(run, vms, IocStart::Running);
    cfg.timing = Timing::soak();
    cfg.timing.watchdog_ms = 500;
    cfg.faults = Some(LineFaults {
        seed,
        drop: 0.05,
        dup: 0.0,
        corrupt: 0.0,
        garbage: 0.0,
    });
    let watchdog = cfg.timing.watchdog_ms;
    run.note(&format!(
        "soak: {cycles} S3 cycles, 5 % of the IOC's frames lost, seed {seed}, watchdog {watchdog} ms"
    ));
    start_rig(run, cfg)?;
    up(run)?;
    let vms = run.rig().config().vm_names();
    let pids = run.rig().live_dms();
    for i in 1..=cycles {
        soak_cycle(run, i, &vms)?;
    }
    let now = run.rig().live_dms();
    run.check(
        "no VM lost: the same device models run",
        now == pids && now.len() == vms.len(),
        &format!("before {pids:?}, after {now:?}"),
    )?;
    let timers = acrnctl_timers(run)?;
    run.check(
        "no timer lost: vm1's wake-up is pending",
        timers == ["vm1"],
        &format!("{timers:?}"),
    )?;
    let events = run.events_since(0);
    let gap = max_heartbeat_gap(&events);
    let drops = events
        .iter()
        .filter(|e| e.actor == "ioc-sim" && e.kind == "fault")
        .count();
    run.check(
        &format!("{cycles} cycles done; the IOC dropped {drops} frames"),
        drops > 0 || cycles < 10,
        "no frame was dropped: the fault injection did not work",
    )?;
    run.check(
        &format!(
            "no heartbeat gap reaches the watchdog: longest {} ms < {watchdog} ms",
            gap / 1_000_000
        ),
        gap < watchdog * 1_000_000,
        "",
    )?;
    run.expect_none(
        "the watchdog never cut the power",
        0,
        kind("ioc-sim", "ioc.power_cut"),
    )
}

fn soak_cycle(run: &mut Run, i: u32, vms: &[String]) -> Result<(), Abort> {
    let off = run.step(&format!("cycle {i}: ignition off"));
    run.rig().ctl("ignition off")?;
    for vm in vms {
        ensure_suspended(run, off, vm, &format!("cycle {i}: acrnd: {vm} suspended"))?;
    }
    run.expect(
        &format!("cycle {i}: acrnd sends vm1's wake-up (RTC_TIMER), acked err 0"),
        off,
        acrnd_acked("RTC_TIMER", 0),
    )?;
    let s3 = run
        .expect(
            &format!("cycle {i}: sos-lcs → IOC HB-S3 02 00 07 00"),
            off,
            soc_sends(HB_S3),
        )?
        .t_ns;
    let frames: Vec<[u8; 4]> = (3590..=3600).map(rtc_secs).collect();
    run.expect(
        &format!("cycle {i}: sos-lcs → IOC RTC 05 10 0e 00 (3600 s, or a few s less)"),
        s3,
        soc_sends_any(frames),
    )?;
    run.expect(
        &format!("cycle {i}: IOC suspended"),
        off,
        ioc_state("suspended"),
    )?;
    let on = run.step(&format!("cycle {i}: ignition on"));
    run.rig().ctl("ignition on")?;
    run.expect(
        &format!("cycle {i}: sos-lcs keep_alive"),
        on,
        lcs_state("keep_alive"),
    )?;
    for vm in vms {
        ensure_resumed(run, on, vm)?;
        run.expect(
            &format!("cycle {i}: acrnd: {vm} started"),
            on,
            vm_state(vm, "started"),
        )?;
    }
    Ok(())
}

/// The longest time the IOC went without a heartbeat while the SoC had power (counted from
/// power-on or from the previous heartbeat), in ns.
#[must_use]
pub fn max_heartbeat_gap(events: &[LoggedEvent]) -> u64 {
    let mut powered_since: Option<u64> = None;
    let mut last: Option<u64> = None;
    let mut max = 0;
    for e in events.iter().filter(|e| e.actor == "ioc-sim") {
        match e.kind.as_str() {
            "ioc.start" => {
                powered_since = Some(e.t_ns);
                last = None;
            }
            "ioc.state" => match str_field(e, "to") {
                Some("running" | "prepared") => {
                    if powered_since.is_none() {
                        powered_since = Some(e.t_ns);
                        last = None;
                    }
                }
                _ => {
                    powered_since = None;
                    last = None;
                }
            },
            "frame.rx" if str_field(e, "frame").is_some_and(|f| f.starts_with("heartbeat")) => {
                if let Some(from) = last.or(powered_since) {
                    max = max.max(e.t_ns.saturating_sub(from));
                    last = Some(e.t_ns);
                }
            }
            _ => {}
        }
    }
    max
}

// ---- faults -------------------------------------------------------------------------------

/// Two VMs, vm1 arming a wake-up an hour ahead at every shutdown, and a long bound on
/// sos-lcs's waiting states (a restarted daemon must not race it). With `slow`, the guests
/// take a second to go down, so that a crash right after ACRND_STOP lands in the middle of
/// the stop.
fn crash_rig(run: &mut Run, slow: bool) -> Result<Vec<String>, Abort> {
    let vms = vec![VmSpec::new("vm1").rtc(3600), VmSpec::new("vm2")];
    let mut cfg = config_for(run, vms, IocStart::Running);
    if slow {
        cfg.timing.guest_delay_ms = 1000;
    }
    cfg.timing.wait_bound_s = 60;
    start_rig(run, cfg)?;
    up(run)?;
    Ok(run.rig().config().vm_names())
}

/// sos-lcs is killed after acrnd acked ACRND_STOP; systemd restarts it; the IOC still asks
/// for the shutdown, so the new sos-lcs asks acrnd again and the S3 entry completes.
pub fn crash_lcs_in_delay(run: &mut Run) -> Result<(), Abort> {
    let vms = crash_rig(run, true)?;
    let m = run.step("ignition off");
    run.rig().ctl("ignition off")?;
    run.expect("acrnd acks ACRND_STOP err 0", m, lcs_acked("ACRND_STOP", 0))?;
    let k = run.step("sos-lcs crashes (SIGKILL) in shutdown_delay; systemd restarts it");
    run.rig().crash("sos-lcs")?;
    run.rig().start_lcs()?;
    run.expect("the new sos-lcs starts", k, kind("sos-lcs", "start"))?;
    soc(run, k, "HB-INIT", HB_INIT)?;
    let delay = lcs_enters(run, k, "shutdown_delay")?;
    run.expect(
        "sos-lcs → acrnd ACRND_STOP again, acked err 0",
        delay,
        lcs_acked("ACRND_STOP", 0),
    )?;
    vms_reach(run, m, &vms, "suspended")?;
    run.expect(
        "acrnd → sos-lcs SUSPEND err 0, acked",
        k,
        acrnd_acked("SUSPEND", 0),
    )?;
    let s3 = lcs_enters(run, k, "acrnd_suspend")?;
    soc(run, s3, "HB-S3", HB_S3)?;
    rtc_near(run, s3, 3600, 5, "with the S3 heartbeat: vm1's wake-up")?;
    ioc(run, s3, "WR(0)", WR_ZERO)?;
    run.expect("IOC suspends", s3, ioc_state("suspended"))?;
    let stored = stored_timers(run)?;
    run.check(
        "the timer store holds vm1",
        stored == ["vm1"],
        &format!("{stored:?}"),
    )?;
    ignition_on_resumes(run, &vms)?;
    Ok(())
}

/// sos-lcs is killed while its suspend command runs (the SoC in S3); systemd restarts it
/// when the system wakes; everything resumes.
pub fn crash_lcs_in_suspend(run: &mut Run) -> Result<(), Abort> {
    let vms = crash_rig(run, false)?;
    ignition_off_to_s3(run, Some(("vm1", 3600)))?;
    run.step("sos-lcs crashes (SIGKILL) while its suspend command runs");
    run.rig().crash("sos-lcs")?;
    let on = run.step("ignition on: the IOC wakes the system; systemd restarts sos-lcs");
    run.rig().ctl("ignition on")?;
    run.expect("IOC suspended → running", on, ioc_state("running"))?;
    run.rig().start_lcs()?;
    soc(run, on, "HB-INIT", HB_INIT)?;
    ioc(run, on, "WR(0x000020)", WR_IGNITION)?;
    let alive = lcs_enters(run, on, "keep_alive")?;
    soc(run, alive, "HB-ACTIVE", HB_ACTIVE)?;
    run.expect(
        "sos-lcs → acrnd ACRND_RESUME, acked err 0",
        alive,
        lcs_acked("ACRND_RESUME", 0),
    )?;
    for vm in &vms {
        run.expect(&format!("acrnd: {vm} started"), on, vm_state(vm, "started"))?;
        run.expect(
            &format!("{vm}: the guest wakes with the ignition bit 0x20"),
            on,
            guest_wakes(vm, 0x20),
        )?;
    }
    let stored = stored_timers(run)?;
    run.check(
        "the timer store still holds vm1",
        stored == ["vm1"],
        &format!("{stored:?}"),
    )?;
    Ok(())
}

/// acrnd is killed right after it acked ACRND_STOP; systemd restarts it.
pub fn crash_acrnd_in_stop(run: &mut Run) -> Result<(), Abort> {
    let vms = crash_rig(run, true)?;
    ignition_off_to_s3(run, Some(("vm1", 3600)))?;
    ignition_on_resumes(run, &vms)?;
    let m = run.step("ignition off");
    run.rig().ctl("ignition off")?;
    run.expect("acrnd acks ACRND_STOP err 0", m, lcs_acked("ACRND_STOP", 0))?;
    let k = run.step("acrnd crashes (SIGKILL) after acking ACRND_STOP; systemd restarts it");
    run.rig().crash("acrnd")?;
    run.rig().start_acrnd(&[])?;
    let stored = stored_timers(run)?;
    run.check(
        "the timer store keeps vm1's acked timer",
        stored == ["vm1"],
        &format!("{stored:?}"),
    )?;
    finish_after_acrnd_restart(run, m, k, &vms)
}

/// acrnd aborts inside the timer-store write (before the rename) during an S3 entry.
pub fn crash_acrnd_store_before_rename(run: &mut Run) -> Result<(), Abort> {
    crash_acrnd_store(run, "store.before-rename")
}

/// acrnd aborts inside the timer-store write (after the rename) during an S3 entry.
pub fn crash_acrnd_store_after_rename(run: &mut Run) -> Result<(), Abort> {
    crash_acrnd_store(run, "store.after-rename")
}

fn crash_acrnd_store(run: &mut Run, point: &'static str) -> Result<(), Abort> {
    let vms = crash_rig(run, false)?;
    ignition_off_to_s3(run, Some(("vm1", 3600)))?;
    ignition_on_resumes(run, &vms)?;
    let stored = stored_timers(run)?;
    run.check(
        "vm1's timer is stored (acked)",
        stored == ["vm1"],
        &format!("{stored:?}"),
    )?;
    let r = run.step(&format!(
        "acrnd restarts with ACRND_FAULT={point} (the VMs keep running)"
    ));
    let bound = Duration::from_secs(15);
    run.rig().terminate("acrnd", bound)?;
    run.rig().start_acrnd(&[("ACRND_FAULT", point)])?;
    vms_reach(run, r, &vms, "started")?;
    let m = run.step("ignition off: vm1's guest arms its wake-up again");
    run.rig().ctl("ignition off")?;
    run.expect(
        &format!("acrnd reaches the fault point {point}"),
        m,
        kind_with("acrnd", "fault", "point", point),
    )?;
    let aborted = run.poll(bound, |run| !run.rig().is_running("acrnd"))?;
    run.check("acrnd aborts there", aborted, "still running")?;
    let k = run.step("systemd restarts acrnd");
    run.rig().start_acrnd(&[])?;
    let stored = stored_timers(run)?;
    run.check(
        "the timer store parses and keeps vm1's acked timer",
        stored == ["vm1"],
        &format!("{stored:?}"),
    )?;
    finish_after_acrnd_restart(run, m, k, &vms)
}

/// After acrnd was restarted in the middle of an S3 entry (mark `m`, restart at `k`): the
/// entry completes.
fn finish_after_acrnd_restart(run: &mut Run, m: u64, k: u64, vms: &[String]) -> Result<(), Abort> {
    run.expect("the new acrnd boots", k, kind("acrnd", "boot"))?;
    vms_reach(run, m, vms, "suspended")?;
    let bound = Duration::from_secs(u64::from(run.opts().timing.stop_timeout_s) + 3);
    let asked = run.wait_event(k, bound, request("acrnd", "ACRND_STOP"))?;
    if asked.is_some() {
        run.check("the new acrnd is asked to stop the VMs again", true, "")?;
    } else {
        run.known_gap(
            GAP_RESTART_MID_STOP,
            "the new acrnd is asked to stop the VMs again",
            "nobody re-sends ACRND_STOP to a restarted acrnd (sos-lcs would force S5 at its \
             bound); worked around by sending it as sos-lcs would",
        );
        let sock = run.rig().socket_dir();
        let timeout = run.opts().timing.stop_timeout_s;
        let ack = Client::new(&sock, Profile::F).send(
            "acrnd",
            &Request::now(MsgBody::AcrndStop {
                force: 0,
                timeout,
                target: StopTarget::S3,
            }),
            Duration::from_secs(5),
        );
        let code = ack.as_ref().ok().and_then(mngr_ipc::Ack::err);
        run.check(
            "acrnd acks the ACRND_STOP err 0",
            code == Some(0),
            &format!("{ack:?}"),
        )?;
    }
    run.expect(
        "acrnd → sos-lcs RTC_TIMER (vm1's wake-up), acked err 0",
        k,
        acrnd_acked("RTC_TIMER", 0),
    )?;
    run.expect(
        "acrnd → sos-lcs SUSPEND err 0, acked",
        k,
        acrnd_acked("SUSPEND", 0),
    )?;
    let s3 = lcs_enters(run, m, "acrnd_suspend")?;
    soc(run, s3, "HB-S3", HB_S3)?;
    rtc_near(run, s3, 3600, 15, "with the S3 heartbeat: vm1's wake-up")?;
    run.expect("IOC suspends", s3, ioc_state("suspended"))?;
    let stored = stored_timers(run)?;
    run.check(
        "the timer store holds vm1",
        stored == ["vm1"],
        &format!("{stored:?}"),
    )?;
    ignition_on_resumes(run, vms)?;
    Ok(())
}
