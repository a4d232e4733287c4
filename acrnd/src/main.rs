//! `acrnd`: parse the command line, set up logging, run the daemon.

use std::process::ExitCode;

use acrnd::config::Args;
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
    let fault = std::env::var("ACRND_FAULT").ok();
    let config = match args.into_config(sd_notify::watchdog_enabled(), fault) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{}", error_chain(&e));
            return ExitCode::from(2);
        }
    };
    match acrnd::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
