//! `acrn-scenario`: builds the workspace's binaries, runs a simulated Service OS (ioc-sim,
//! sos-lcs, acrnd, acrn-dm-sim VMs) in a private directory, plays a scenario and prints the
//! merged timeline and a summary. Everything else lives in `acrn_tests::scenarios`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use acrn_tests::rig::Timing;
use acrn_tests::scenario::{Options, Run};
use acrn_tests::scenarios::{DEFAULT, SCENARIOS, find};
use anyhow::{Context, bail};
use clap::Parser;

/// Runs the ACRN lifecycle suite on simulated hardware and shows what happens.
#[derive(Debug, Parser)]
#[command(
    name = "acrn-scenario",
    version,
    after_help = "Run `acrn-scenario --list` for the scenarios. Exit status: 0 every expectation held \
                  (known daemon gaps, worked around, are flagged GAP), 1 one failed or the run was \
                  interrupted, 2 bad usage, 3 the build failed."
)]
struct Cli {
    /// The scenario to play.
    #[arg(short, long, value_name = "NAME", default_value = DEFAULT)]
    scenario: String,
    /// Number of VMs (at least 1; some scenarios use a fixed set).
    #[arg(long, value_name = "N", default_value_t = 3)]
    vms: usize,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Do not run `cargo build --workspace --bins` first.
    #[arg(long)]
    no_build: bool,
    /// Longest the build may take.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    build_timeout: u64,
    /// Keep the run directory (it is kept anyway when the run fails).
    #[arg(long)]
    keep: bool,
    /// Do not print the timeline while the run goes (the summary is still printed).
    #[arg(short, long)]
    quiet: bool,
    /// Show every event: repeated heartbeats, mirror copies, polls.
    #[arg(short, long)]
    verbose: bool,
    /// Short periods (100 ms heartbeats) instead of the watchable 200 ms.
    #[arg(long)]
    fast: bool,
    /// Seed of the line faults (lossy-ioc, soak); default from the clock.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Cycles of the soak scenario.
    #[arg(long, value_name = "N", default_value_t = 20)]
    cycles: u32,
}

/// Exit status after a second Ctrl-C.
const EXIT_INTERRUPTED: i32 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        println!("Scenarios (flows of flows.md in brackets):");
        for s in SCENARIOS {
            let default = if s.name == DEFAULT { " (default)" } else { "" };
            println!("  {:<16} {}{default} [{}]", s.name, s.about, s.flows);
        }
        return ExitCode::SUCCESS;
    }
    let Some(scenario) = find(&cli.scenario) else {
        eprintln!(
            "acrn-scenario: no scenario {:?}; `acrn-scenario --list` lists them",
            cli.scenario
        );
        return ExitCode::from(2);
    };
    if cli.vms == 0 {
        eprintln!("acrn-scenario: --vms must be at least 1");
        return ExitCode::from(2);
    }
    if !cli.no_build
        && let Err(e) = build(Duration::from_secs(cli.build_timeout))
    {
        eprintln!("acrn-scenario: {e:#}");
        return ExitCode::from(3);
    }
    // The first Ctrl-C stops the scenario, which then stops every process it started; a
    // second one exits at once.
    let interrupt = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let caught = signal_hook::flag::register_conditional_shutdown(
            sig,
            EXIT_INTERRUPTED,
            Arc::clone(&interrupt),
        )
        .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&interrupt)));
        if let Err(e) = caught {
            eprintln!("acrn-scenario: cannot catch signal {sig}: {e}");
        }
    }
    let opts = Options {
        vms: cli.vms,
        timing: if cli.fast {
            Timing::fast()
        } else {
            Timing::watchable()
        },
        seed: cli.seed,
        cycles: cli.cycles,
        live: !cli.quiet,
        verbose: cli.verbose,
        keep: cli.keep,
        interrupt: Some(interrupt),
    };
    let mut run = match Run::new(scenario.name, opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("acrn-scenario: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("== scenario {}: {}", scenario.name, scenario.about);
    println!(
        "   flows: {}; run dir: {}",
        scenario.flows,
        run.path().display()
    );
    println!("   time since start, actor, event:");
    let started = Instant::now();
    let result = (scenario.body)(&mut run);
    let report = run.finish(result);
    if cli.quiet && !report.passed() {
        println!("{}", report.timeline_text(200));
    }
    println!();
    print!("{}", report.summary());
    println!("  took:       {:.1} s", started.elapsed().as_secs_f64());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        for (label, tail) in &report.stderr_tails {
            println!("---- {label} stderr (tail):\n{tail}");
        }
        ExitCode::FAILURE
    }
}

/// `cargo build --workspace --bins` with the profile this binary was built with, through
/// the `cargo` that runs us (`CARGO`), its output passed through, bounded by `timeout`.
fn build(timeout: Duration) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--workspace")
        .arg("--bins")
        .arg("--manifest-path")
        .arg(&manifest);
    match profile_dir()?.as_deref() {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.arg("--profile").arg(other);
        }
    }
    eprintln!(
        "acrn-scenario: building the daemons: {} {}",
        Path::new(&cargo).display(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut child = cmd.spawn().context("Cannot run cargo")?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("Cannot wait for cargo")? {
            if status.success() {
                return Ok(());
            }
            bail!("The build failed ({status})");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("The build took longer than {timeout:?}; stopped (raise --build-timeout)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The name of the directory holding this executable (`debug`, `release`, ...).
fn profile_dir() -> anyhow::Result<Option<String>> {
    let exe: PathBuf = std::env::current_exe().context("Cannot locate this executable")?;
    Ok(exe
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned()))
}
