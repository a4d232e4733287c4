//! `acrn-dm-sim`: parse the command line, set up logging, run the simulated device model.
//!
//! Exit codes: 0 after the VM powered off, a forced stop or SIGTERM/SIGINT; 1 on a runtime
//! error; 2 on a bad command line; SIGABRT for `--fault crash-stop`.

use std::process::ExitCode;

use acrn_dm_sim::{Args, Exit, WAKEUP_REASON_ENV};
use clap::Parser;
use mngr_ipc::daemon;

fn main() -> ExitCode {
    let args = Args::parse();
    daemon::init_logging(args.common.verbose);
    // Every client connection is a descriptor: lift the soft limit (never fatal).
    mngr_ipc::limits::raise_nofile(mngr_ipc::limits::NOFILE_WANTED);
    let env_reason = std::env::var(WAKEUP_REASON_ENV).ok();
    let config = match args.into_config(env_reason.as_deref()) {
        Ok(c) => c,
        Err(e) => return daemon::usage_error(&e),
    };
    match acrn_dm_sim::run(config) {
        Ok(Exit::Crashed) => {
            log::error!("Simulated crash: aborting");
            std::process::abort()
        }
        result => daemon::exit_code(result.map(|_| ())),
    }
}
