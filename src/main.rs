//! The `edgewatt` binary: parse the command line, set up logging, run, map errors
//! to exit codes. Everything else lives in the library (`edgewatt::cli`).

use std::process::ExitCode;

use clap::Parser;
use edgewatt::cli::{self, Cli, Exit};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
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

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,llama_cpp_2=off,ggml=off",
        1 => "info,llama_cpp_2=warn",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
