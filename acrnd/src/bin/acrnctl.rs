//! `acrnctl`: manage the VMs through acrnd.

use std::process::ExitCode;

use acrnd::ctl::{Cli, Outcome, run};
use clap::Parser;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let outcome = run(cli);
    match &outcome {
        Outcome::Ok(text) => println!("{text}"),
        Outcome::Failed(text) | Outcome::Usage(text) | Outcome::Unreachable(text) => {
            eprintln!("acrnctl: {text}");
        }
    }
    outcome.exit_code()
}
