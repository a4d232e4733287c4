//! `acrnd`: parse the command line, set up logging, run the daemon.

use std::process::ExitCode;

use acrnd::config::Args;
use clap::Parser;
use mngr_ipc::daemon::{exit_code, init_logging, usage_error};

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.common.verbose);
    // Every client connection is a descriptor: lift the soft limit (never fatal).
    mngr_ipc::limits::raise_nofile(mngr_ipc::limits::NOFILE_WANTED);
    let fault = std::env::var("ACRND_FAULT").ok();
    match args.into_config(sd_notify::watchdog_enabled(), fault) {
        Ok(config) => exit_code(acrnd::run(config)),
        Err(e) => usage_error(&e),
    }
}
