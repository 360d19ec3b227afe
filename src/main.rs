//! The `edgewatt` binary: parse the command line, set up logging, run, map errors
//! to exit codes. Everything else lives in the library (`edgewatt::cli`).

use std::process::ExitCode;

use clap::Parser;
use edgewatt::cli::{self, Cli, Exit};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Journald under systemd (JOURNAL_STREAM), stderr otherwise.
    if let Err(e) = edgewatt::daemon::logging::init(cli.verbose) {
        eprintln!("error: {e}");
        return ExitCode::from(Exit::Config as u8);
    }
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain, so the operator sees the cause, not just the context.
            eprintln!("error: {e:#}");
            let code = if e.downcast_ref::<edgewatt::config::ConfigError>().is_some() {
                Exit::Config
            } else {
                Exit::Failure
            };
            ExitCode::from(code as u8)
        }
    }
}
