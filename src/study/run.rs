//! `study run`: every board runs its configurations one run at a time, boards in
//! parallel, each finished run stored at once (so a kill at any moment loses no
//! finished run); a re-run reads what is stored and continues (nothing run twice,
//! nothing skipped). The board is behind [`Board`]: this machine
//! ([`super::local::LocalBoard`]) or a daemon over MQTT.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::config::{ConfigHash, Configuration, StoredRun};
use super::db::{StudyDb, StudyDbError};
use super::job;
use super::plan::{invalid, LoadedPlan, Order, PlanError};
use super::schedule::{needs_more, round_order, Progress};
use crate::clock::unix_ns;
use crate::jobs::protocol::ErrorBody;

/// A board that runs study jobs, one at a time.
pub trait Board: Send + Sync {
    /// Its device id (the plan's `device` axis value).
    fn device(&self) -> &str;
    /// Its status (the retained `DeviceStatus` JSON or the local equivalent).
    fn status(&self) -> Value;
    /// Runs one job payload; the protocol's result JSON, or why it failed.
    fn run(&self, payload: &Value) -> Result<Value, ErrorBody>;
}

/// What `study run` reports as it goes.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A board starts: its configurations and the runs planned (at least `min` each,
    /// minus what is stored).
    BoardStart {
        device: String,
        configurations: usize,
        runs_planned: u32,
        runs_stored: u32,
    },
    /// One run finished and is stored.
    Run(Box<Finished>),
    /// A board has nothing left to run.
    BoardDone { device: String, runs: u32 },
}

/// One finished run.
#[derive(Debug, Clone, Serialize)]
pub struct Finished {
    pub device: String,
    pub config_hash: ConfigHash,
    pub configuration: Configuration,
    pub repetition: u32,
    pub job_id: String,
    /// `succeeded` or `failed`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// Measured figures (null when the run failed or had no sensors).
    pub decode_tps: Option<f64>,
    pub j_per_token: Option<f64>,
    /// The result's `timings.total_ms`.
    pub total_ms: f64,
    /// The board's settle wait before the run (`settle.settle_ms`; 0 without one).
    pub settle_ms: f64,
    /// Whether the board settled (`settle.settled`; null without a gate).
    pub settled: Option<bool>,
    /// Wall time of the whole call (payload out → result stored), ms.
    pub wall_ms: f64,
    /// More runs the board expects (lower bound: adaptive repetitions may add some).
    pub remaining: u32,
}

/// Options of `study run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Re-run stored failures (once each per invocation).
    pub retry_failed: bool,
}

/// What a `study run` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub runs: u32,
    pub failed: u32,
    /// Sum of the runs' `timings.total_ms`.
    pub total_ms: f64,
    /// Sum of the runs' settle waits, ms.
    pub settle_ms: f64,
    /// Wall time of the whole `study run`, ms.
    pub wall_ms: f64,
}

/// Errors of `study run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Db(#[from] StudyDbError),
    #[error("board thread of '{device}' panicked")]
    Panicked { device: String },
}

/// Checks the configurations against the boards' reported status: a device the
/// plan names but no board answers for, a model a board does not have, `threads`
/// above its CPU count. A missing model is an error only when `strict_models` (the
/// dry run); `study run` warns (`on_missing_model`) and stores those runs' errors.
pub fn check_boards(
    cfgs: &[Configuration],
    boards: &[(String, Value)],
    strict_models: bool,
    on_missing_model: &mut dyn FnMut(&PlanError),
) -> Result<(), PlanError> {
    for c in cfgs {
        let Some((_, status)) = boards.iter().find(|(d, _)| *d == c.device) else {
            let known: Vec<&str> = boards.iter().map(|(d, _)| d.as_str()).collect();
            return Err(invalid(
                "axes.device",
                &c.device,
                format!("a board that is online: {}", known.join(", ")),
            ));
        };
        if let Some(models) = status["models"].as_array() {
            if !models.iter().any(|m| m.as_str() == Some(c.model.as_str())) {
                let have: Vec<&str> = models.iter().filter_map(Value::as_str).collect();
                let e = invalid(
                    "axes.model",
                    &c.model,
                    format!("a model board '{}' has: {}", c.device, have.join(", ")),
                );
                if strict_models {
                    return Err(e);
                }
                on_missing_model(&e);
            }
        }
        if let (Some(t), Some(cpus)) = (c.threads, status["cpus"].as_u64()) {
            if u64::from(t) > cpus {
                return Err(invalid(
                    "axes.threads",
                    t,
                    format!("1..={cpus} (the CPU count of board '{}')", c.device),
                ));
            }
        }
    }
    Ok(())
}

/// What is stored of one configuration, and what this invocation did to it.
#[derive(Default)]
struct CfgState {
    progress: Progress,
    /// Repetition indices stored (succeeded or failed).
    taken: BTreeSet<u32>,
    /// Stored failures: repetition → its job id.
    failures: BTreeMap<u32, String>,
    /// Repetitions whose failure was retried in this invocation (once each).
    retried: BTreeSet<u32>,
    /// Runs in this invocation (the first gets the plan's warm-up).
    ran: u32,
}

impl CfgState {
    fn add(&mut self, run: &StoredRun) {
        self.taken.insert(run.repetition);
        match &run.result {
            Some(r) => {
                self.failures.remove(&run.repetition);
                self.progress.ok += 1;
                if let Some(v) = job::decode_tps(r) {
                    self.progress.decode_tps.push(v);
                }
                if let Some(v) = job::j_per_token(r) {
                    self.progress.j_per_token.push(v);
                }
            }
            None => {
                self.failures.insert(run.repetition, run.job_id.clone());
            }
        }
        self.progress.failed = self.failures.len() as u32;
    }

    /// The first stored failure not yet retried in this invocation.
    fn next_retry(&self) -> Option<(u32, &str)> {
        self.failures
            .iter()
            .find(|(r, _)| !self.retried.contains(r))
            .map(|(&r, id)| (r, id.as_str()))
    }

    fn pending_retries(&self) -> u32 {
        self.failures
            .keys()
            .filter(|r| !self.retried.contains(r))
            .count() as u32
    }
}

/// The attempt number of a retry of the failure stored under `job_id`.
fn next_attempt(job_id: &str) -> u32 {
    job_id
        .rsplit_once("-t")
        .and_then(|(_, n)| n.parse::<u32>().ok())
        .map_or(1, |n| n + 1)
}

/// Runs the study on the boards (one thread each) until every configuration has
/// its repetitions; `on_event` sees every board start, run and end.
pub fn run_study(
    loaded: &LoadedPlan,
    cfgs: &[Configuration],
    db_path: &Path,
    boards: &[&dyn Board],
    opts: RunOptions,
    on_event: &(dyn Fn(&Event) + Sync),
    cancel: &CancellationToken,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let db = StudyDb::open(db_path)?;
    db.set_plan(&loaded.text, &loaded.sha256, &loaded.plan.study.name)?;
    for b in boards {
        db.record_board(b.device(), &b.status())?;
    }
    drop(db);
    let results: Vec<Result<Summary, RunError>> = std::thread::scope(|s| {
        let handles: Vec<_> = boards
            .iter()
            .map(|b| {
                let mine: Vec<Configuration> = cfgs
                    .iter()
                    .filter(|c| c.device == b.device())
                    .cloned()
                    .collect();
                let device = b.device().to_string();
                let handle =
                    s.spawn(move || run_board(loaded, &mine, db_path, *b, opts, on_event, cancel));
                (device, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(device, h)| h.join().unwrap_or(Err(RunError::Panicked { device })))
            .collect()
    });
    let mut total = Summary::default();
    for r in results {
        let r = r?;
        total.runs += r.runs;
        total.failed += r.failed;
        total.total_ms += r.total_ms;
        total.settle_ms += r.settle_ms;
    }
    total.wall_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(total)
}

/// One board's share of the study.
fn run_board(
    loaded: &LoadedPlan,
    cfgs: &[Configuration],
    db_path: &Path,
    board: &dyn Board,
    opts: RunOptions,
    on_event: &(dyn Fn(&Event) + Sync),
    cancel: &CancellationToken,
) -> Result<Summary, RunError> {
    let db = StudyDb::open(db_path)?;
    let plan = &loaded.plan;
    let reps = plan.study.repetitions;
    let mut state: Vec<CfgState> = cfgs.iter().map(|_| CfgState::default()).collect();
    let index: BTreeMap<ConfigHash, usize> = cfgs
        .iter()
        .enumerate()
        .map(|(i, c)| (c.hash(), i))
        .collect();
    let mut stored = 0;
    for run in db.runs()? {
        if let Some(&i) = index.get(&run.config_hash) {
            state[i].add(&run);
            stored += 1;
        }
    }
    // A quality run ([quality]) runs once: min = max = 1, whatever the plan's repetitions.
    let reps_of = |i: usize| {
        if cfgs[i].quality.is_some() {
            super::plan::Repetitions {
                min: 1,
                max: 1,
                target_ci_rel: 0.0,
            }
        } else {
            reps
        }
    };
    let wants = |i: usize, st: &CfgState| {
        (opts.retry_failed && st.pending_retries() > 0)
            || needs_more(&st.progress, &reps_of(i), false)
    };
    let remaining = |state: &[CfgState]| -> u32 {
        state
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let retry = if opts.retry_failed {
                    st.pending_retries()
                } else {
                    0
                };
                if st.progress.failed > retry {
                    retry
                } else {
                    retry + reps_of(i).min.saturating_sub(st.progress.ok + retry)
                }
            })
            .sum()
    };
    on_event(&Event::BoardStart {
        device: board.device().to_string(),
        configurations: cfgs.len(),
        runs_planned: remaining(&state),
        runs_stored: stored,
    });

    let mut summary = Summary::default();
    let mut run_one = |i: usize, state: &mut Vec<CfgState>| -> Result<(), RunError> {
        let c = &cfgs[i];
        let hash = c.hash();
        let st = &mut state[i];
        // A retry takes the failed repetition's place, under a new id.
        let (rep, attempt) = match st.next_retry() {
            Some((rep, id)) if opts.retry_failed => (rep, next_attempt(id)),
            _ => ((0..).find(|r| !st.taken.contains(r)).unwrap_or(0), 0),
        };
        if attempt > 0 {
            st.retried.insert(rep);
        }
        let id = job::job_id(&loaded.sha256, &hash.0, rep, attempt);
        let warmup = if st.ran == 0 { plan.study.warmup } else { 0 };
        let payload = job::payload(&id, c, plan, warmup);
        let t0 = Instant::now();
        let outcome = board.run(&payload);
        if cancel.is_cancelled() && matches!(&outcome, Err(e) if e.code == "canceled") {
            // Stopped by the study's own cancel (Ctrl-C) mid-run: not stored, so the
            // resumed study runs it again under the same id.
            return Ok(());
        }
        let run = StoredRun {
            config_hash: hash.clone(),
            configuration: c.clone(),
            repetition: rep,
            job_id: id.clone(),
            result: outcome.as_ref().ok().cloned(),
            error: outcome.as_ref().err().cloned(),
            stored_unix_ns: unix_ns(),
        };
        db.put_run(&run)?;
        let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
        st.add(&run);
        st.ran += 1;
        let total_ms = run.result.as_ref().map(job::total_ms).unwrap_or(0.0);
        let settle_ms = run.result.as_ref().map(job::settle_ms).unwrap_or(0.0);
        summary.runs += 1;
        summary.total_ms += total_ms;
        summary.settle_ms += settle_ms;
        if run.error.is_some() {
            summary.failed += 1;
        }
        on_event(&Event::Run(Box::new(Finished {
            device: board.device().to_string(),
            config_hash: hash,
            configuration: c.clone(),
            repetition: rep,
            job_id: id,
            state: if run.result.is_some() {
                "succeeded"
            } else {
                "failed"
            },
            error: run.error.clone(),
            decode_tps: run.result.as_ref().and_then(job::decode_tps),
            j_per_token: run.result.as_ref().and_then(job::j_per_token),
            total_ms,
            settle_ms,
            settled: run
                .result
                .as_ref()
                .and_then(|r| r["settle"]["settled"].as_bool()),
            wall_ms,
            remaining: remaining(state),
        })));
        Ok(())
    };

    let all: Vec<&Configuration> = cfgs.iter().collect();
    match plan.study.order {
        Order::Grouped => {
            for i in round_order(&all, Order::Grouped, plan.study.seed, 0) {
                while wants(i, &state[i]) && !cancel.is_cancelled() {
                    run_one(i, &mut state)?;
                }
            }
        }
        Order::Interleaved => {
            for round in 0.. {
                let active: Vec<usize> = (0..cfgs.len()).filter(|&i| wants(i, &state[i])).collect();
                if active.is_empty() || cancel.is_cancelled() {
                    break;
                }
                let sub: Vec<&Configuration> = active.iter().map(|&i| &cfgs[i]).collect();
                for k in round_order(&sub, Order::Interleaved, plan.study.seed, round) {
                    let i = active[k];
                    if cancel.is_cancelled() {
                        break;
                    }
                    if wants(i, &state[i]) {
                        run_one(i, &mut state)?;
                    }
                }
            }
        }
    }
    on_event(&Event::BoardDone {
        device: board.device().to_string(),
        runs: summary.runs,
    });
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A board that answers from a formula (the real boards are tested in
    /// tests/study_*.rs); it fails every run of model `missing`, and counts the ids it
    /// was sent.
    struct Formula {
        device: String,
        ids: Mutex<Vec<String>>,
        fail_model: &'static str,
    }

    impl Board for Formula {
        fn device(&self) -> &str {
            &self.device
        }
        fn status(&self) -> Value {
            serde_json::json!({"device": self.device, "cpus": 4})
        }
        fn run(&self, payload: &Value) -> Result<Value, ErrorBody> {
            self.ids
                .lock()
                .unwrap()
                .push(payload["id"].as_str().unwrap().to_string());
            if payload["model"] == self.fail_model {
                return Err(ErrorBody {
                    code: "model_not_found".into(),
                    message: "no such model".into(),
                });
            }
            Ok(
                serde_json::json!({"id": payload["id"], "timings": {"decode_tps": 100.0, "total_ms": 1.0},
                                  "energy": {"j_per_token": {"decode": 0.1}}}),
            )
        }
    }

    fn plan(order: &str) -> LoadedPlan {
        let text = format!(
            "[study]\nname = \"t\"\norder = \"{order}\"\nrepetitions = {{ min = 2, max = 4, target_ci_rel = 0.05 }}\n\
             [axes]\ndevice = [\"a\", \"b\"]\nmodel = [\"m\", \"missing\"]\nthreads = [1, 2]\n\
             prompt_tokens = [8]\ngen_tokens = [8]\nn_ctx = [64]\n"
        );
        LoadedPlan {
            sha256: "f".repeat(64),
            plan: super::super::plan::parse(&text).unwrap(),
            text,
        }
    }

    fn board(d: &str) -> Formula {
        Formula {
            device: d.into(),
            ids: Mutex::default(),
            fail_model: "missing",
        }
    }

    #[test]
    fn every_configuration_gets_min_runs_failures_once_and_a_rerun_adds_nothing() {
        for order in ["interleaved", "grouped"] {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("t.study.db");
            let p = plan(order);
            let cfgs = super::super::expand::expand(&p.plan).unwrap();
            let (a, b) = (board("a"), board("b"));
            let boards: Vec<&dyn Board> = vec![&a, &b];
            let cancel = CancellationToken::new();
            let s = run_study(
                &p,
                &cfgs,
                &db,
                &boards,
                RunOptions::default(),
                &|_| {},
                &cancel,
            )
            .unwrap();
            // 4 good configurations × 2 (identical values: the CI is 0 at min) + 4
            // failing ones × 1 (a failure stops its configuration).
            assert_eq!((s.runs, s.failed), (12, 4), "{order}");
            let runs = StudyDb::open(&db).unwrap().runs().unwrap();
            assert_eq!(runs.len(), 12);
            let again = run_study(
                &p,
                &cfgs,
                &db,
                &boards,
                RunOptions::default(),
                &|_| {},
                &cancel,
            )
            .unwrap();
            assert_eq!(again.runs, 0, "{order}: nothing run twice");
            // --retry-failed: each failure once more, under a new id, in its place.
            let retry = RunOptions { retry_failed: true };
            let r = run_study(&p, &cfgs, &db, &boards, retry, &|_| {}, &cancel).unwrap();
            assert_eq!((r.runs, r.failed), (4, 4), "{order}");
            let runs = StudyDb::open(&db).unwrap().runs().unwrap();
            assert_eq!(runs.len(), 12);
            assert!(runs
                .iter()
                .filter(|r| r.error.is_some())
                .all(|r| r.job_id.ends_with("-t1")));
            let ids = a.ids.lock().unwrap().clone();
            let unique: BTreeSet<_> = ids.iter().collect();
            assert_eq!(unique.len(), ids.len(), "no id sent twice");
        }
    }

    #[test]
    fn boards_are_checked_for_models_threads_and_presence() {
        let p = plan("grouped");
        let cfgs = super::super::expand::expand(&p.plan).unwrap();
        let status = |d: &str, cpus: u64| {
            (
                d.to_string(),
                serde_json::json!({"models": ["m", "missing"], "cpus": cpus}),
            )
        };
        let check = |boards: &[(String, Value)], strict| {
            let mut warned = Vec::new();
            let r = check_boards(&cfgs, boards, strict, &mut |e| warned.push(e.to_string()));
            (r, warned)
        };
        assert!(check(&[status("a", 4), status("b", 4)], true).0.is_ok());
        let e = check(&[status("a", 4)], true).0.unwrap_err();
        assert!(
            e.to_string().contains("axes.device") && e.to_string().contains("'b'"),
            "{e}"
        );
        let e = check(&[status("a", 1), status("b", 4)], true)
            .0
            .unwrap_err();
        assert!(
            e.to_string().contains("axes.threads") && e.to_string().contains("'2'"),
            "{e}"
        );
        let no_model = (
            "a".to_string(),
            serde_json::json!({"models": ["m"], "cpus": 4}),
        );
        let e = check(&[no_model.clone(), status("b", 4)], true)
            .0
            .unwrap_err();
        assert!(e.to_string().contains("'missing'"), "{e}");
        // study run: a warning per configuration, and the runs go ahead.
        let (r, warned) = check(&[no_model, status("b", 4)], false);
        assert!(r.is_ok());
        assert_eq!(warned.len(), 2, "{warned:?}");
    }

    #[test]
    fn retry_attempts_count_up() {
        assert_eq!(next_attempt("st-a-b-r0"), 1);
        assert_eq!(next_attempt("st-a-b-r0-t1"), 2);
    }
}
