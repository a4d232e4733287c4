//! `acrn-dm-sim`: parse the command line, set up logging, run the simulated device model.
//!
//! Exit codes: 0 after the VM powered off, a forced stop or SIGTERM/SIGINT; 1 on a runtime
//! error; 2 on a bad command line; SIGABRT for `--fault crash-stop`.

use std::process::ExitCode;

use acrn_dm_monitor::sim::{self, Args, RunError, WAKEUP_REASON_ENV};
use clap::Parser;
use mngr_ipc::error_chain;

fn main() -> ExitCode {
    let args = Args::parse();
    let level = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    // Every client connection is a descriptor: lift the soft limit (never fatal).
    mngr_ipc::limits::raise_nofile(mngr_ipc::limits::NOFILE_WANTED);
    let env_reason = std::env::var(WAKEUP_REASON_ENV).ok();
    let config = match args.into_config(env_reason.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{}", error_chain(&e));
            return ExitCode::from(2);
        }
    };
    match sim::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Crashed) => {
            log::error!("Simulated crash: aborting");
            std::process::abort()
        }
        Err(e) => {
            log::error!("{}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
