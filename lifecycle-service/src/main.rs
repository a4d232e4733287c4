//! `sos-lcs`: parse the command line, set up logging, run the service.

use std::process::ExitCode;

use clap::Parser;
use lifecycle_service::config::Args;
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
    let config = match args.into_config(sd_notify::watchdog_enabled()) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{}", error_chain(&e));
            return ExitCode::from(2);
        }
    };
    match lifecycle_service::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
