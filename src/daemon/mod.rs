//! The daemon: wires broker, engine, sampler and store together.
//!
//! [`run`] is what `edgewatt daemon` calls and what the integration tests drive with
//! their own shutdown future. It owns one root `CancellationToken`; every task it
//! spawns runs on one `TaskTracker` and is awaited before `run` returns.
//!
//! Data flow: the broker session ([`crate::jobs::mqtt`]) hands incoming PUBLISHes to
//! the intake ([`intake`]), which validates, journals, acks and queues them; the runner
//! ([`runner`]) takes one job at a time to the engine and records its outcome with its
//! messages in the journal's outbox; the outbox task ([`outbox`]) publishes those and
//! marks them sent on PUBACK. [`status`] keeps the retained board status and the live
//! power stream; [`measure`] turns samples + engine events into the energy figures.
//!
//! - [`settings`] — the daemon's view of the configuration
//! - [`intake`]   — incoming jobs and cancels → journal → ack → queue
//! - [`runner`]   — one job at a time on the engine; results, statuses, streaming
//! - [`settle`]   — the `settle` gate before a job: wait until the board is cool and idle
//! - [`quality_job`] — a quality job's text resolved, then scored by the engine
//! - [`outbox`]   — publishes journaled messages, marks them sent on PUBACK
//! - [`status`]   — retained board status, live power, watchdog
//! - [`measure`]  — sampler + thermal + trace → energy summary
//! - [`recovery`] — what a restart does with jobs left accepted or running
//! - [`power_mode`] — a job's power mode: checked, applied, recorded, restored (crash-safe)
//! - [`metrics`]  — the Prometheus endpoint's source, server and rail-energy task
//! - [`unjournaled`] — answers when the state directory refuses writes (disk full)
pub mod logging;
pub mod systemd;

pub mod intake;
pub mod measure;
pub mod metrics;
pub mod outbox;
pub mod power_mode;
pub mod quality_job;
pub mod recovery;
mod replies;
pub mod runner;
pub mod settings;
pub mod settle;
pub mod status;
pub mod unjournaled;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::infer::{Engine, PromptInput};
use crate::jobs::journal::{Journal, SharedJournal};
use crate::jobs::mqtt::{self, SessionHandle};
use crate::jobs::protocol::Topics;
use crate::jobs::queue::JobQueue;

pub use settings::Settings;

/// What every daemon task shares.
pub struct Ctx {
    /// Resolved settings.
    pub settings: Settings,
    /// Topic names for this board.
    pub topics: Topics,
    /// The broker session.
    pub session: SessionHandle,
    /// Journal and outbox.
    pub journal: SharedJournal,
    /// The local queue.
    pub queue: JobQueue,
    /// The inference engine.
    pub engine: Engine,
    /// Sampler, thermal recorder and trace store.
    pub measure: measure::Measure,
    /// Power modes: applied before, restored after, recorded in every result.
    pub power_modes: Arc<power_mode::PowerModes>,
    /// Wakes the outbox task when rows were added.
    pub outbox_wake: Notify,
    /// Wakes the status task when the queue changed.
    pub status_wake: Notify,
    /// Set when draining: intake refuses nothing but stops acking new jobs.
    pub draining: CancellationToken,
    /// Prometheus metrics (updated whether or not `[metrics] listen` serves them).
    pub metrics: crate::metrics::Metrics,
    /// Outcomes answered directly because the journal refused them (disk full),
    /// written to the journal once it takes writes again.
    pub unjournaled: unjournaled::Pending,
}

/// Runs the daemon until `shutdown` completes (SIGTERM/SIGINT in the binary, a
/// oneshot in tests), then drains: stops taking jobs, publishes `draining`, lets the
/// running job finish (or requeues it after the drain timeout), flushes the outbox,
/// publishes `offline` and disconnects.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let settings = Settings::from_config(&config).context("invalid daemon configuration")?;
    run_with(settings, shutdown).await
}

/// [`run`] with settings already resolved (tests override fields directly).
pub async fn run_with(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    let result = run_inner(settings, shutdown, &root, &tracker).await;
    // Whatever happened, stop every task and wait for them.
    root.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some daemon tasks did not stop within 10 s");
    }
    result
}

async fn run_inner(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
    root: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    let topics = Topics::new(&settings.prefix, &settings.device);
    systemd::status("opening the job journal");

    // Journal first: nothing is acked before it can record.
    if let Some(dir) = settings.store_path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("cannot create the state directory '{}'", dir.display())
            })?;
        }
    }
    let path = settings.store_path.clone();
    let journal = tokio::task::spawn_blocking(move || Journal::open(&path))
        .await
        .context("journal open task failed")??;
    let journal = SharedJournal::new(journal);

    // A power mode left applied by a daemon that died mid-job goes back first.
    let power_modes = Arc::new(power_mode::PowerModes::new(&settings));
    let pm = power_modes.clone();
    tokio::task::spawn_blocking(move || pm.recover())
        .await
        .context("power mode recovery task failed")?;

    systemd::status("starting the inference engine");
    let engine = Engine::start(settings.engine.clone(), root.child_token())
        .context("cannot start the inference engine")?;
    preload(&engine, &settings.preload).await?;
    let models: Vec<String> = engine.list_models().into_iter().map(|m| m.name).collect();
    tracing::info!(
        "models in '{}': {:?}",
        settings.engine.model_dir.display(),
        models
    );

    systemd::status("probing power sensors");
    let measure =
        measure::Measure::start(&settings.power, &settings.store_path, root.child_token())
            .context("cannot start the power sampler")?;

    // The Will: `offline`, retained, so a board that vanishes says so.
    let mut session_opts = settings.session.clone();
    session_opts.will = Some(mqtt::Will {
        topic: topics.status(),
        payload: status::device_status_json(&settings, "offline", &models, &measure, 0, None),
    });
    session_opts.subscriptions = vec![
        topics.fleet_share(&settings.group),
        topics.device_jobs(),
        topics.cancel_filter(),
    ];
    systemd::status(&format!(
        "connecting to the broker {}:{}",
        settings.session.url.host, settings.session.url.port
    ));
    let (session, events) = mqtt::start(session_opts, root.child_token(), tracker)
        .context("cannot set up the MQTT session")?;

    let (metrics, metrics_slot) = metrics::new_metrics(&settings.device);
    let ctx = Arc::new(Ctx {
        topics,
        session,
        journal,
        queue: JobQueue::new(settings.queue_capacity),
        engine,
        measure,
        power_modes,
        outbox_wake: Notify::new(),
        status_wake: Notify::new(),
        draining: CancellationToken::new(),
        metrics,
        unjournaled: Default::default(),
        settings,
    });
    metrics::attach(&metrics_slot, &ctx);
    if let Some(listen) = ctx.settings.metrics_listen {
        metrics::start(&ctx, listen, tracker, root.child_token()).await?;
    }

    // Jobs left from the previous run go back in the queue before anything new.
    recovery::recover(&ctx)
        .await
        .context("crash recovery failed")?;

    let work = root.child_token();
    tracker.spawn(outbox::run(ctx.clone(), work.clone()));
    tracker.spawn(status::run(ctx.clone(), models.clone(), work.clone()));
    let runner = tracker.spawn(runner::run(ctx.clone(), work.clone()));
    let intake_stop = CancellationToken::new();
    let intake = tracker.spawn(intake::run(ctx.clone(), events, intake_stop.clone()));

    tokio::pin!(shutdown);
    // Startup is complete when the broker accepted us (models and sensors are done).
    // `shutdown` must complete exactly once: it is an `async fn`'s future (the signal
    // handler), and polling one again after it returned Ready panics with "`async fn`
    // resumed after completion". That is what a SIGTERM before the first CONNACK did
    // (issue 14): the select below consumed it, then `shutdown.await` polled it again.
    // So the select says whether it already fired, and only if not do we wait for it.
    let stop_requested = tokio::select! {
        r = ctx.session.wait_connected() => {
            r.context("the MQTT session ended before connecting")?;
            systemd::ready();
            systemd::status(&format!("online as '{}'", ctx.settings.device));
            tracing::info!("connected; online as '{}'", ctx.settings.device);
            false
        }
        _ = &mut shutdown => {
            tracing::info!("shutdown requested before the broker connected");
            true
        }
    };
    if !stop_requested {
        shutdown.await;
    }

    // ---- graceful drain ----
    systemd::stopping();
    systemd::status("draining: finishing the running job");
    tracing::info!("draining");
    ctx.draining.cancel();
    ctx.queue.close();
    ctx.status_wake.notify_one();
    // The runner finishes its job, or gives up after the drain timeout and requeues it.
    let drain = ctx.settings.drain_timeout;
    if tokio::time::timeout(drain + Duration::from_secs(5), runner)
        .await
        .is_err()
    {
        tracing::warn!("the runner did not stop in time");
    }
    // Results must reach the broker before we say offline.
    outbox::flush(&ctx, Duration::from_secs(5)).await;
    intake_stop.cancel();
    let _ = intake.await;
    status::publish_offline(&ctx, &models).await;
    work.cancel();
    let _ = ctx.session.disconnect().await;
    systemd::status("stopped");
    Ok(())
}

/// Loads `models.preload` before the daemon reports ready, asking systemd for more
/// start time while each one loads (a multi-GB GGUF on an SD card takes a while).
/// Loading goes through a tokenization, which also builds llama.cpp's lazy tables.
async fn preload(engine: &Engine, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        systemd::status(&format!("loading model '{name}'"));
        systemd::extend_timeout(Duration::from_secs(300));
        let (e, n) = (engine.clone(), name.clone());
        let t0 = std::time::Instant::now();
        tokio::task::spawn_blocking(move || {
            e.tokenize_blocking(&n, PromptInput::Prompt("Hello".into()))
        })
        .await
        .context("model preload task failed")?
        .with_context(|| format!("models.preload: cannot load '{name}'"))?;
        tracing::info!(
            model = %name,
            load_ms = t0.elapsed().as_millis() as u64,
            "model preloaded"
        );
    }
    Ok(())
}
