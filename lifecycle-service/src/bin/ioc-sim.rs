//! `ioc-sim`: an IOC on a pty for hardware-free runs (`run`), and its control client
//! (`ctl`). Everything else lives in `lifecycle_service::ioc_sim`.

use std::process::ExitCode;

use clap::Parser;
use lifecycle_service::ioc_sim::{Cli, CliCommand, Config, ctl, error_chain, run};

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match cli.command {
        CliCommand::Run(args) => {
            let config = match Config::from_args(*args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ioc-sim: {}", error_chain(&e));
                    return e.into();
                }
            };
            eprintln!("ioc-sim: fault seed {}", config.faults.seed);
            match run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ioc-sim: {}", error_chain(&e));
                    e.into()
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
