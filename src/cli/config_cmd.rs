//! `edgewatt config check [--config PATH]`: validate the layered configuration and
//! print the effective values with secrets masked (issue 6).

use std::path::Path;

use crate::config::{self, DEFAULT_PATH, ENV_PREFIX};

/// `edgewatt config …`
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// What to do with the configuration.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration (defaults → file → EDGEWATT__SECTION__KEY variables)
    /// and print the effective values, secrets masked. Exits non-zero on an error.
    Check {
        /// Print nothing on success; only the exit status tells.
        #[arg(long, short)]
        quiet: bool,
    },
}

/// Runs `config check`. `config_path` is the global `--config` (or `EDGEWATT_CONFIG`).
/// A configuration error is returned as [`config::ConfigError`] inside the anyhow
/// error, so `main` can map it to its exit code with `downcast_ref`.
pub fn run(args: &ConfigArgs, config_path: Option<&Path>) -> anyhow::Result<()> {
    match &args.command {
        ConfigCommand::Check { quiet } => {
            let cfg = config::load(config_path)?;
            if !quiet {
                print!("{}", header(config_path));
                print!("{}", cfg.to_masked_toml());
            }
            Ok(())
        }
    }
}

/// A TOML comment saying which layers made the configuration.
fn header(config_path: Option<&Path>) -> String {
    let file = match config_path {
        Some(p) => format!("file '{}'", p.display()),
        None if Path::new(DEFAULT_PATH).exists() => format!("file '{DEFAULT_PATH}'"),
        None => format!("built-in defaults only ({DEFAULT_PATH} does not exist)"),
    };
    let prefix = format!("{ENV_PREFIX}__");
    let mut vars: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.to_uppercase().starts_with(&prefix))
        .collect();
    vars.sort();
    let env = if vars.is_empty() {
        "none".to_string()
    } else {
        vars.join(", ")
    };
    format!("# edgewatt effective configuration: valid\n# from: {file}\n# environment overrides: {env}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[arg(long, global = true)]
        config: Option<std::path::PathBuf>,
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        Config(ConfigArgs),
    }

    #[test]
    fn parses_check_with_global_config() {
        Wrapper::command().debug_assert();
        let w = Wrapper::parse_from(["x", "config", "check", "--config", "/tmp/a.toml", "-q"]);
        assert_eq!(w.config.as_deref(), Some(Path::new("/tmp/a.toml")));
        let Sub::Config(args) = w.cmd;
        assert!(matches!(args.command, ConfigCommand::Check { quiet: true }));
    }

    #[test]
    fn error_keeps_its_type_for_exit_codes() {
        let args = ConfigArgs {
            command: ConfigCommand::Check { quiet: true },
        };
        let e = run(&args, Some(Path::new("/nonexistent/edgewatt.toml"))).unwrap_err();
        assert!(e.downcast_ref::<config::ConfigError>().is_some());
    }
}
