//! `ioc-sim`: an IOC on a pty for hardware-free runs (`run`), and its control client
//! (`ctl`). Everything else lives in the `ioc_sim` library.
//!
//! Errors go to stderr as one line each, whatever the log level (a scenario's line number
//! must reach whoever started the simulator).

use std::process::ExitCode;

use clap::Parser;
use ioc_sim::{Cli, CliCommand, Config, EXIT_FAILURE, EXIT_USAGE, ctl, run};
use mngr_ipc::daemon::init_logging_with;
use mngr_ipc::error_chain;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Quiet (warnings) by default, -v info, -vv debug, -vvv trace; timestamps in ms (its
    // runs are read next to other programs' event logs).
    init_logging_with(cli.verbose, &["warn", "info", "debug", "trace"], true);
    match cli.command {
        CliCommand::Run(args) => {
            let config = match Config::from_args(*args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ioc-sim: {}", error_chain(&e));
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            eprintln!("ioc-sim: fault seed {}", config.faults.seed);
            match run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ioc-sim: {}", error_chain(&e));
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        CliCommand::Ctl(args) => match ctl::request(&args.control, &args.request(), args.timeout())
        {
            Ok(reply) => {
                println!("{reply}");
                ExitCode::from(ctl::reply_status(&reply))
            }
            Err(e) => {
                eprintln!("ioc-sim ctl: {}", error_chain(&e));
                ExitCode::from(e.exit_status())
            }
        },
    }
}
