//! Power actions, run as commands on worker threads (never through a shell, never in a
//! signal handler, never on the event loop).

use std::io;
use std::process::{Command, ExitStatus, Stdio};

/// Runs `argv` and waits for it (on the calling worker thread).
pub fn run(argv: &[String]) -> io::Result<ExitStatus> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    Command::new(prog).args(args).stdin(Stdio::null()).status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_run_without_a_shell() {
        let argv: Vec<String> = ["sh", "-c", "exit 3"].map(String::from).to_vec();
        assert_eq!(run(&argv).expect("runs").code(), Some(3));
        // Metacharacters are plain arguments.
        let echo: Vec<String> = ["echo", "a;", "false"].map(String::from).to_vec();
        assert!(run(&echo).expect("runs").success());
        assert!(run(&[]).is_err());
    }
}
