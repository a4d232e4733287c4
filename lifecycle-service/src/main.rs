//! `sos-lcs`: parse the command line, set up logging, run the service.

use std::process::ExitCode;

use clap::Parser;
use lifecycle_service::config::Args;
use mngr_ipc::daemon::{exit_code, init_logging, usage_error};

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.common.verbose);
    // Every client connection is a descriptor: lift the soft limit (never fatal).
    mngr_ipc::limits::raise_nofile(mngr_ipc::limits::NOFILE_WANTED);
    match args.into_config(sd_notify::watchdog_enabled()) {
        Ok(config) => exit_code(lifecycle_service::run(config)),
        Err(e) => usage_error(&e),
    }
}
