//! `edgewatt study plan|run`: dry-run a plan (configurations, run count, boards, ETA)
//! and run it over MQTT (or `--local`), resumably, into `NAME.study.db` next to the
//! plan (docs/study.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::jobs::client::{Client, ClientOptions};
use crate::study::expand::expand;
use crate::study::local::LocalBoard;
use crate::study::plan::{self, LoadedPlan};
use crate::study::remote::RemoteBoard;
use crate::study::run::{check_boards, run_study, Board, Event, RunOptions};
use crate::study::{Configuration, StudyDb};

/// `edgewatt study …`
#[derive(Debug, clap::Args)]
pub struct StudyArgs {
    #[command(subcommand)]
    pub command: StudyCommand,
}

/// The study subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum StudyCommand {
    /// Dry run: the configurations, the run count, the boards and an ETA.
    Plan(PlanArgs),
    /// Run the plan (resumes: what is stored is not run again).
    Run(RunArgs),
    /// The study's tables and figures from its database (md, csv, json, html).
    Report(super::study_report::ReportArgs),
    /// Two studies side by side: ratio of means, Welch p-value, significant changes.
    Compare(super::study_report::CompareArgs),
}

/// `study plan PLAN`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The plan (TOML).
    pub plan: PathBuf,
    /// The boards are this machine (device "local").
    #[arg(long)]
    pub local: bool,
    /// Study database (default: NAME.study.db next to the plan).
    #[arg(long)]
    pub db: Option<PathBuf>,
}

/// `study run PLAN`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The plan (TOML).
    pub plan: PathBuf,
    /// Run on this machine through the engine in-process (no broker); the plan's
    /// device axis must be ["local"].
    #[arg(long)]
    pub local: bool,
    /// Study database (default: NAME.study.db next to the plan).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Run the stored failures again (once each).
    #[arg(long)]
    pub retry_failed: bool,
    /// One JSON line per finished run on stdout instead of progress bars.
    #[arg(long)]
    pub json: bool,
    /// A run whose result has not come after this long is stored as failed (`timeout`).
    #[arg(long, default_value_t = 3600)]
    pub run_timeout_s: u64,
}

/// The study database of a plan: `--db`, else `NAME.study.db` next to the plan.
pub fn db_path(plan_path: &Path, loaded: &LoadedPlan, db: Option<&Path>) -> PathBuf {
    db.map(Path::to_path_buf).unwrap_or_else(|| {
        plan_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("{}.study.db", loaded.plan.study.name))
    })
}

/// Runs `edgewatt study …`.
pub fn run(args: StudyArgs, cfg: &Config) -> anyhow::Result<()> {
    match args.command {
        StudyCommand::Plan(a) => dry_run(&a, cfg),
        StudyCommand::Run(a) => run_plan(&a, cfg),
        StudyCommand::Report(a) => super::study_report::report(&a),
        StudyCommand::Compare(a) => super::study_report::compare(&a),
    }
}

fn load(path: &Path, local: bool) -> anyhow::Result<(LoadedPlan, Vec<Configuration>)> {
    let loaded = plan::load(path)?;
    let mut cfgs = expand(&loaded.plan)?;
    // [quality]: one scoring run per board × model, stored and resumed like the rest.
    let quality_runs = crate::study::quality::quality_runs(&loaded.plan, &cfgs);
    cfgs.extend(quality_runs);
    if local {
        if let Some(c) = cfgs.iter().find(|c| c.device != "local") {
            anyhow::bail!(
                "plan key 'axes.device' is invalid: '{}' (--local runs on this machine only: device = [\"local\"])",
                c.device
            );
        }
    }
    Ok((loaded, cfgs))
}

fn local_status(cfg: &Config) -> Value {
    let models = crate::infer::registry::list(&cfg.models.dir)
        .map(|l| l.into_iter().map(|m| m.name).collect::<Vec<_>>())
        .unwrap_or_default();
    serde_json::json!({"device": "local", "models": models, "cpus": crate::jobs::protocol::cpu_count()})
}

/// The online boards' retained statuses, as JSON.
async fn fleet_statuses(opts: &ClientOptions) -> anyhow::Result<Vec<(String, Value)>> {
    let mut o = opts.clone();
    o.board_statuses = true;
    o.tokens = false;
    let mut client = Client::connect(&o).await?;
    let statuses = client
        .read_statuses(Duration::from_millis(1500))
        .await
        .clone();
    client.close().await;
    Ok(statuses
        .into_values()
        .filter(|s| s.state == "online")
        .map(|s| {
            let json = serde_json::to_value(&s).unwrap_or(Value::Null);
            (s.device, json)
        })
        .collect())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Seconds one run of `c` is expected to take: the mean `total_ms` of its stored
/// runs, else a rough figure from the model's size (decode reads every weight once
/// per token at ~5 GB/s; prefill ~20× faster per token; plus a load).
fn eta_s(c: &Configuration, stored: &BTreeMap<String, Vec<f64>>, model_dir: &Path) -> f64 {
    if let Some(ms) = stored.get(&c.hash().0).filter(|v| !v.is_empty()) {
        return ms.iter().sum::<f64>() / ms.len() as f64 / 1e3;
    }
    let size = std::fs::metadata(model_dir.join(format!("{}.gguf", c.model)))
        .map(|m| m.len() as f64)
        .unwrap_or(500e6);
    let per_token_s = size / 5e9;
    f64::from(c.gen_tokens) * per_token_s
        + f64::from(c.prompt_tokens + c.depth) * per_token_s / 20.0
        + 0.2
}

fn dry_run(a: &PlanArgs, cfg: &Config) -> anyhow::Result<()> {
    let (loaded, cfgs) = load(&a.plan, a.local)?;
    let db_path = db_path(&a.plan, &loaded, a.db.as_deref());
    let reps = loaded.plan.study.repetitions;
    // What is stored already (a re-run continues from it).
    let mut stored: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    if db_path.exists() {
        for r in StudyDb::open(&db_path)?.runs()? {
            if let Some(res) = &r.result {
                stored
                    .entry(r.config_hash.0.clone())
                    .or_default()
                    .push(crate::study::job::total_ms(res));
            }
        }
    }
    let boards = if a.local {
        vec![("local".to_string(), local_status(cfg))]
    } else {
        let opts = ClientOptions::from_config(cfg)?;
        match runtime()?.block_on(fleet_statuses(&opts)) {
            Ok(b) => b,
            Err(e) => {
                eprintln!(
                    "cannot read the boards' statuses ({e:#}); not checking models and threads"
                );
                Vec::new()
            }
        }
    };
    println!(
        "study '{}' (plan sha256 {}), {} configurations + {} quality runs, order {:?}, repetitions {}..{} (target CI ±{:.1} %)",
        loaded.plan.study.name,
        &loaded.sha256[..12],
        cfgs.iter().filter(|c| c.quality.is_none()).count(),
        cfgs.iter().filter(|c| c.quality.is_some()).count(),
        loaded.plan.study.order,
        reps.min,
        reps.max,
        reps.target_ci_rel * 100.0
    );
    println!(
        "  {:<10} {:<30} {:>7} {:>6} {:>6} {:>6} {:>6} {:>5} {:>6}  {:>6}",
        "device", "model", "threads", "pp", "tg", "depth", "n_ctx", "ngl", "stored", "eta s"
    );
    let mut per_board: BTreeMap<&str, (u32, u32, f64)> = BTreeMap::new();
    for c in &cfgs {
        let have = stored.get(&c.hash().0).map_or(0, |v| v.len() as u32);
        let (lo, hi) = if c.quality.is_some() {
            (1, 1)
        } else {
            (reps.min, reps.max)
        };
        let todo_min = lo.saturating_sub(have);
        let todo_max = hi.saturating_sub(have);
        let per_run = match &c.quality {
            Some(q) if !stored.contains_key(&c.hash().0) => {
                crate::study::quality::eta_s(c, q, &cfg.models.dir, &cfg.quality.texts_dir)
            }
            _ => eta_s(c, &stored, &cfg.models.dir),
        };
        let e = per_board.entry(c.device.as_str()).or_default();
        e.0 += todo_min;
        e.1 += todo_max;
        e.2 += per_run * f64::from(todo_min);
        if let Some(q) = &c.quality {
            println!(
                "  {:<10} {:<30} quality: {} on '{}', n_ctx {}, chunks {}{}  stored {have}  eta {per_run:.1} s",
                c.device,
                c.model,
                q.kind,
                q.text,
                c.n_ctx,
                q.max_chunks.map_or("all".into(), |n| n.to_string()),
                q.reference
                    .as_ref()
                    .map_or(String::new(), |r| format!(", reference {r}")),
            );
            continue;
        }
        println!(
            "  {:<10} {:<30} {:>7} {:>6} {:>6} {:>6} {:>6} {:>5} {:>6}  {:>6.1}",
            c.device,
            c.model,
            c.threads.map_or("all".into(), |t| t.to_string()),
            c.prompt_tokens,
            c.gen_tokens,
            c.depth,
            c.n_ctx,
            c.n_gpu_layers,
            have,
            per_run
        );
    }
    println!("boards:");
    for (device, (min, max, eta)) in &per_board {
        let online = boards.iter().any(|(d, _)| d == device);
        println!(
            "  {device:<10} {} runs to go ({min}..{max} with adaptive repetitions), ETA {:.0} s{}",
            min,
            eta,
            if online || boards.is_empty() {
                ""
            } else {
                "  [NOT ONLINE]"
            }
        );
    }
    let eta = per_board.values().map(|v| v.2).fold(0.0, f64::max);
    println!(
        "total: {} runs at least, ETA {:.0} s (boards in parallel); database {}",
        per_board.values().map(|v| v.0).sum::<u32>(),
        eta,
        db_path.display()
    );
    if !boards.is_empty() {
        check_boards(&cfgs, &boards, true, &mut |_| {})?;
    }
    let model_dir = a.local.then_some(cfg.models.dir.as_path());
    crate::study::quality::check_references(&cfgs, &boards, model_dir)?;
    if a.local {
        crate::study::quality::check_text(&loaded.plan, &cfg.quality.texts_dir)?;
    }
    Ok(())
}

fn run_plan(a: &RunArgs, cfg: &Config) -> anyhow::Result<()> {
    let (loaded, cfgs) = load(&a.plan, a.local)?;
    let db_path = db_path(&a.plan, &loaded, a.db.as_deref());
    let cancel = CancellationToken::new();
    let rt = runtime()?;
    {
        let c = cancel.clone();
        rt.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: finishing the run in progress, then stopping (run again to resume)");
                c.cancel();
            }
        });
    }
    let mut locals = Vec::new();
    let mut remotes = Vec::new();
    let mut warn = |e: &crate::study::plan::PlanError| {
        eprintln!("warning: {e}; its runs will fail and be stored with their error")
    };
    if a.local {
        locals.push(LocalBoard::start(cfg, cancel.child_token())?);
        let local = [("local".into(), local_status(cfg))];
        check_boards(&cfgs, &local, false, &mut warn)?;
        crate::study::quality::check_references(&cfgs, &local, Some(&cfg.models.dir))?;
        crate::study::quality::check_text(&loaded.plan, &cfg.quality.texts_dir)?;
    } else {
        let opts = ClientOptions::from_config(cfg)?;
        let statuses = rt.block_on(fleet_statuses(&opts))?;
        check_boards(&cfgs, &statuses, false, &mut warn)?;
        crate::study::quality::check_references(&cfgs, &statuses, None)?;
        let mut devices: Vec<&str> = cfgs.iter().map(|c| c.device.as_str()).collect();
        devices.sort();
        devices.dedup();
        for d in devices {
            let status = statuses
                .iter()
                .find(|(s, _)| s == d)
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null);
            let timeout = Duration::from_secs(a.run_timeout_s.max(1));
            remotes.push(rt.block_on(RemoteBoard::connect(&opts, d, status, timeout))?);
        }
    }
    let boards: Vec<&dyn Board> = locals
        .iter()
        .map(|b| b as &dyn Board)
        .chain(remotes.iter().map(|b| b as &dyn Board))
        .collect();

    let multi = indicatif::MultiProgress::new();
    if a.json {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:<10} {bar:30} {pos}/{len} runs  ETA {eta}  {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    let bars: BTreeMap<String, indicatif::ProgressBar> = boards
        .iter()
        .map(|b| {
            let pb = multi.add(indicatif::ProgressBar::new(0));
            pb.set_style(style.clone());
            pb.set_prefix(b.device().to_string());
            (b.device().to_string(), pb)
        })
        .collect();
    let json = a.json;
    let on_event = |ev: &Event| match ev {
        Event::BoardStart {
            device,
            runs_planned,
            runs_stored,
            ..
        } => {
            if let Some(pb) = bars.get(device) {
                pb.set_length(u64::from(*runs_planned));
                pb.set_message(format!("({runs_stored} stored)"));
            }
        }
        Event::Run(f) => {
            if json {
                if let Ok(line) = serde_json::to_string(f) {
                    println!("{line}");
                }
            }
            if let Some(pb) = bars.get(&f.device) {
                pb.inc(1);
                pb.set_length(pb.position() + u64::from(f.remaining));
                let what = match (&f.error, f.decode_tps) {
                    (Some(e), _) => format!("{} failed: {}", f.configuration.model, e.code),
                    (None, Some(tps)) => format!("{} {tps:.1} t/s", f.configuration.model),
                    _ => f.configuration.model.clone(),
                };
                pb.set_message(what);
            }
        }
        Event::BoardDone { device, .. } => {
            if let Some(pb) = bars.get(device) {
                pb.finish();
            }
        }
    };
    let opts = RunOptions {
        retry_failed: a.retry_failed,
    };
    let summary = run_study(&loaded, &cfgs, &db_path, &boards, opts, &on_event, &cancel)?;
    drop(boards);
    for r in remotes {
        rt.block_on(r.close());
    }
    cancel.cancel();
    if !a.json {
        eprintln!(
            "{} runs ({} failed) in {:.1} s; runs' own time {:.1} s; settle waits {:.1} s; database {}",
            summary.runs,
            summary.failed,
            summary.wall_ms / 1e3,
            summary.total_ms / 1e3,
            summary.settle_ms / 1e3,
            db_path.display()
        );
    }
    Ok(())
}
