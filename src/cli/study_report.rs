//! `edgewatt study report PLAN|DB` and `edgewatt study compare A B`: the report is
//! rebuilt from the study database every time (a pure function of its stored runs).
//!
//! Wiring (in `cli/study.rs`'s subcommand enum): `Report(study_report::ReportArgs)` →
//! `study_report::report(&args)`, `Compare(study_report::CompareArgs)` →
//! `study_report::compare(&args)`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::study::cost::CostConfig;
use crate::study::db::StudyDb;
use crate::study::report::{self, compare as cmp, figures, html, table, Report, StudyMeta};

/// Output formats of `study report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Markdown table (and figures as SVG files with -o).
    Md,
    /// One flattened row per configuration.
    Csv,
    /// The machine contract (docs/study-report.md).
    Json,
    /// One self-contained page: tables and inline SVG figures.
    Html,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Md => "md",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Html => "html",
        }
    }
}

/// `edgewatt study report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The plan (its database `NAME.study.db` next to it is read) or a study database.
    pub input: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "md")]
    pub format: Format,
    /// Write `report.FORMAT` (and, for md and html, the figures as SVG files) into
    /// this directory instead of printing the report.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

/// `edgewatt study compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Baseline study (plan or database).
    pub a: PathBuf,
    /// Study compared against it.
    pub b: PathBuf,
    /// Noise threshold: a difference is marked only beyond this relative change
    /// (and at Welch p < 0.05).
    #[arg(long, default_value_t = 0.02)]
    pub threshold: f64,
    /// Print JSON instead of a Markdown table.
    #[arg(long)]
    pub json: bool,
}

/// The database a `study report`/`compare` argument names: a `.toml` plan's
/// `NAME.study.db` beside it, else the path itself.
pub fn database_path(input: &Path) -> anyhow::Result<PathBuf> {
    if input.extension().is_some_and(|e| e == "toml") {
        let text = std::fs::read_to_string(input)
            .with_context(|| format!("cannot read plan '{}'", input.display()))?;
        let plan: toml::Value = toml::from_str(&text)
            .with_context(|| format!("plan '{}' is not valid TOML", input.display()))?;
        let name = plan
            .get("study")
            .and_then(|s| s.get("name"))
            .and_then(|n| n.as_str())
            .with_context(|| format!("plan '{}' has no [study] name", input.display()))?;
        let dir = input.parent().unwrap_or(Path::new("."));
        return Ok(dir.join(format!("{name}.study.db")));
    }
    Ok(input.to_path_buf())
}

/// The plan's `[cost]` table, when it has one.
pub fn cost_from_plan(plan_toml: &str) -> anyhow::Result<Option<CostConfig>> {
    let plan: toml::Value = toml::from_str(plan_toml).context("stored plan is not valid TOML")?;
    let Some(cost) = plan.get("cost") else {
        return Ok(None);
    };
    let cost: CostConfig = cost.clone().try_into().context("plan's [cost] table")?;
    cost.validate()?;
    Ok(Some(cost))
}

/// Builds the report of the study a plan or database names.
pub fn load_report(input: &Path) -> anyhow::Result<Report> {
    let path = database_path(input)?;
    if !path.exists() {
        bail!(
            "study database '{}' does not exist (run 'edgewatt study run' first)",
            path.display()
        );
    }
    let db = StudyDb::open(&path)?;
    let (plan_toml, plan_sha256, name) = db.plan()?;
    let meta = StudyMeta {
        name,
        plan_sha256,
        cost: cost_from_plan(&plan_toml)?,
        board_status: db.boards()?.into_iter().collect(),
    };
    Ok(report::build(&meta, &db.runs()?))
}

/// Renders the report in `format`; with figures for md (as files) and html (inline).
fn render(rep: &Report, format: Format, figs: &[figures::Figure]) -> String {
    match format {
        Format::Md => {
            let mut s = table::markdown(rep);
            if !figs.is_empty() {
                s.push_str("\n## Figures\n\n");
                for f in figs {
                    s.push_str(&format!("![{}](fig_{}.svg)\n\n", f.title, f.name));
                }
            }
            s
        }
        Format::Csv => report::csv::to_csv(rep),
        Format::Json => report::json::to_json(rep),
        Format::Html => html::to_html(rep, figs),
    }
}

/// `edgewatt study report`.
pub fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let rep = load_report(&args.input)?;
    let figs = match args.format {
        Format::Md | Format::Html => figures::all(&rep)?,
        _ => Vec::new(),
    };
    let text = render(&rep, args.format, &figs);
    let Some(dir) = &args.out else {
        print!("{text}");
        return Ok(());
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory '{}'", dir.display()))?;
    let file = dir.join(format!("report.{}", args.format.extension()));
    std::fs::write(&file, text).with_context(|| format!("cannot write '{}'", file.display()))?;
    println!("{}", file.display());
    for f in &figs {
        let p = dir.join(format!("fig_{}.svg", f.name));
        std::fs::write(&p, &f.svg).with_context(|| format!("cannot write '{}'", p.display()))?;
        println!("{}", p.display());
    }
    Ok(())
}

/// `edgewatt study compare`.
pub fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    if !(args.threshold.is_finite() && args.threshold >= 0.0) {
        bail!(
            "--threshold is '{}'; it must be a relative change >= 0 (0.02 = 2 %)",
            args.threshold
        );
    }
    let a = load_report(&args.a)?;
    let b = load_report(&args.b)?;
    let c = cmp::compare(&a, &b, args.threshold);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print!("{}", cmp::markdown(&c));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_names_its_database_and_cost() {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("p.toml");
        std::fs::write(&plan, "[study]\nname = \"pi-vs-orin\"\n").unwrap();
        assert_eq!(
            database_path(&plan).unwrap(),
            dir.path().join("pi-vs-orin.study.db")
        );
        let db = dir.path().join("x.study.db");
        assert_eq!(database_path(&db).unwrap(), db);
        std::fs::write(&plan, "[axes]\n").unwrap();
        assert!(database_path(&plan)
            .unwrap_err()
            .to_string()
            .contains("no [study] name"));

        let c = cost_from_plan("[cost]\nenergy_price_per_kwh = 0.3\ncurrency = \"EUR\"\n")
            .unwrap()
            .unwrap();
        assert_eq!((c.energy_price_per_kwh, c.currency.as_str()), (0.3, "EUR"));
        assert_eq!(cost_from_plan("[study]\nname = \"x\"\n").unwrap(), None);
        let e =
            cost_from_plan("[cost]\nenergy_price_per_kwh = 0.3\nutilization = 2.0\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("cost.utilization is '2'"),
            "{e:#}"
        );
    }
}
