//! `edgewatt trace export JOB --format csv|json [-o FILE]` and
//! `edgewatt trace plot JOB -o trace.svg`: a stored trace as data or as a picture.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::trace::energy::{summarize, EnergyOptions, EnergySummary};
use crate::trace::export::{write_csv, write_json};
use crate::trace::plot::render_svg;
use crate::trace::store::Store;
use crate::trace::trace::Trace;

/// `edgewatt trace …`
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    /// `export` or `plot`.
    pub command: TraceCommand,
}

/// The trace subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TraceCommand {
    /// Export a job's trace: CSV (one row per sample: t_ns, rail, bus_mv,
    /// current_ua, power_uw, phase) or JSON (the whole trace).
    Export(ExportArgs),
    /// Plot a job's trace as SVG: power per rail, phase bands, token ticks, idle lines.
    Plot(PlotArgs),
}

/// `edgewatt trace export`
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Job id.
    pub job: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,
    /// Write here instead of standard output.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

/// `edgewatt trace plot`
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// Job id.
    pub job: String,
    /// SVG file to write.
    #[arg(short = 'o', long, default_value = "trace.svg")]
    pub output: PathBuf,
}

/// Opens an existing store (a missing file is an error here, not a new store).
pub(crate) fn open_existing(store_path: &Path) -> anyhow::Result<Store> {
    if !store_path.exists() {
        anyhow::bail!(
            "no store at '{}': run a job first, or point state_dir at the daemon's",
            store_path.display()
        );
    }
    Store::open(store_path).with_context(|| format!("opening store '{}'", store_path.display()))
}

fn load_trace(store: &Store, store_path: &Path, job: &str) -> anyhow::Result<Trace> {
    store
        .get_trace(job)
        .with_context(|| format!("reading trace of job '{job}'"))?
        .with_context(|| {
            format!(
                "no trace stored for job '{job}' in '{}'",
                store_path.display()
            )
        })
}

/// Runs `edgewatt trace …`.
pub fn run(args: TraceArgs, store_path: &Path) -> anyhow::Result<()> {
    let store = open_existing(store_path)?;
    match args.command {
        TraceCommand::Export(a) => {
            let trace = load_trace(&store, store_path, &a.job)?;
            let out: Box<dyn Write> = match &a.output {
                Some(p) => Box::new(BufWriter::new(
                    File::create(p).with_context(|| format!("creating '{}'", p.display()))?,
                )),
                None => Box::new(BufWriter::new(std::io::stdout().lock())),
            };
            match a.format {
                ExportFormat::Csv => write_csv(&trace, out)?,
                ExportFormat::Json => write_json(&trace, out)?,
            }
        }
        TraceCommand::Plot(a) => {
            let trace = load_trace(&store, store_path, &a.job)?;
            // The stored summary's idle baselines, or ones computed with defaults.
            let stored: Option<EnergySummary> = store
                .get_job(&a.job)?
                .and_then(|row| row.energy_json)
                .and_then(|j| serde_json::from_str(&j).ok());
            let summary = stored.unwrap_or_else(|| summarize(&trace, &EnergyOptions::default()));
            let svg = render_svg(&trace, Some(&summary))?;
            std::fs::write(&a.output, svg)
                .with_context(|| format!("writing '{}'", a.output.display()))?;
            eprintln!("wrote {}", a.output.display());
        }
    }
    Ok(())
}
