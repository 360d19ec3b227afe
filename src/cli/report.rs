//! `edgewatt report [--format md|csv|json] [-o FILE]`: one row per stored job.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::trace::report::{rows, to_csv, to_json, to_markdown};
use crate::trace::store::Store;

/// `edgewatt report`
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Table format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Md)]
    pub format: ReportFormat,
    /// Write here instead of standard output.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Md,
    Csv,
    Json,
}

/// Renders the report of every job in the store.
pub fn render(store: &Store, format: ReportFormat) -> anyhow::Result<String> {
    let jobs = store.list_jobs().context("listing stored jobs")?;
    let rows = rows(&jobs);
    Ok(match format {
        ReportFormat::Md => to_markdown(&rows),
        ReportFormat::Csv => to_csv(&rows),
        ReportFormat::Json => to_json(&rows)? + "\n",
    })
}

/// Runs `edgewatt report`.
pub fn run(args: ReportArgs, store_path: &Path) -> anyhow::Result<()> {
    if !store_path.exists() {
        anyhow::bail!(
            "no store at '{}': run a job first, or point state_dir at the daemon's",
            store_path.display()
        );
    }
    let store = Store::open(store_path)
        .with_context(|| format!("opening store '{}'", store_path.display()))?;
    let text = render(&store, args.format)?;
    match &args.output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing '{}'", p.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
