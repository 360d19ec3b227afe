//! The runner: takes one job at a time from the queue to the engine.
//!
//! Per job: `running` (phase `load`) is published, the attempt is journaled, the
//! engine runs with an observer that forwards phase changes and (when asked) text
//! pieces to a forwarder task over a bounded channel — the observer runs on the
//! inference thread and only ever `try_send`s. When the engine returns, the energy is
//! computed, and the outcome is journaled together with its messages (terminal
//! status, result, Response Topic copy) for the outbox.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::clock::monotonic_ns;
use crate::infer::{
    EngineError, EngineEvent, EventLog, EventObserver, FinishReason, RunReport, Tee,
};
use crate::jobs::mqtt::OutMessage;
use crate::jobs::protocol::{ErrorBody, JobState, TokenMsg, TraceLevel};
use crate::jobs::queue::QueuedJob;

/// Trace messages are split into chunks of at most this many bytes of JSON text.
const TRACE_CHUNK: usize = 64 * 1024;

/// Runs jobs until the queue closes or `cancel` fires.
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    while let Some((job, token)) = ctx.queue.next(&cancel).await {
        ctx.status_wake.notify_one();
        // Order before a job: power mode applied (and read back), then the settle gate
        // waits for the board *in that mode* (its idle power and temperature are the
        // mode's), then the recording and the run; the mode is restored after the run.
        // The mode's previous state is journaled before it is written, so a crash at any
        // point after this is undone at the next start.
        if let Some(power_mode) = begin_power_mode(&ctx, &job).await {
            // The settle gate (job field `settle`) at the idle rate, before the recording.
            let settle = super::settle::before_job(&ctx, &job.job, &token).await;
            // Full-rate sampling for the job; `finish_report` drops back to the idle rate
            // once the trace is captured, and this covers the paths without a trace.
            ctx.measure.set_active(true);
            let recording = ctx.measure.begin_job();
            run_one(&ctx, job, token, recording, settle, power_mode).await;
            ctx.measure.set_active(false);
        }
        ctx.queue.finish_running();
        ctx.status_wake.notify_one();
        // llama.cpp's compute buffers and the token strings of a run are freed into
        // glibc's arenas, which keep them; hand them back so an idle daemon stays small.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        let _ = tokio::task::spawn_blocking(|| {
            // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
            unsafe { libc::malloc_trim(0) }
        })
        .await;
    }
}

/// What the observer tells the forwarder.
enum Progress {
    Phase(&'static str),
    Token(u32, String),
}

/// Engine observer: phase changes always, text pieces when streaming. Never blocks.
struct Forward {
    tx: mpsc::Sender<Progress>,
    stream: bool,
}

impl EventObserver for Forward {
    fn on_event(&mut self, event: &EngineEvent) {
        let p = match event {
            EngineEvent::PrefillStart { .. } => Progress::Phase("prefill"),
            EngineEvent::PrefillEnd { .. } => Progress::Phase("decode"),
            EngineEvent::Token { index, piece, .. } if self.stream => {
                Progress::Token(*index, piece.clone())
            }
            _ => return,
        };
        // A full channel drops a piece rather than stall generation.
        let _ = self.tx.try_send(p);
    }
}

async fn forward(ctx: Arc<Ctx>, id: String, mut rx: mpsc::Receiver<Progress>) {
    let mut last_phase = "load";
    let tokens_topic = ctx.topics.job(&id, "tokens");
    while let Some(p) = rx.recv().await {
        match p {
            Progress::Phase(phase) => {
                if phase != last_phase {
                    last_phase = phase;
                    ctx.publish_status(&id, JobState::Running, Some(phase), None, None)
                        .await;
                }
            }
            Progress::Token(index, text) => {
                let msg = TokenMsg {
                    id: id.clone(),
                    index,
                    text,
                };
                let mut out = OutMessage::json(
                    tokens_topic.clone(),
                    serde_json::to_vec(&msg).unwrap_or_default(),
                );
                out.qos = rumqttc::v5::mqttbytes::QoS::AtMostOnce;
                // In order with the statuses; QoS 0, so a broker outage loses pieces,
                // never the result.
                let _ = ctx.session.publish(out).await;
            }
        }
    }
}

/// Applies the job's power mode (a no-op without one). `None`: the mode cannot be
/// applied and the job has been answered `rejected` with its code; nothing ran.
async fn begin_power_mode(ctx: &Arc<Ctx>, q: &QueuedJob) -> Option<super::power_mode::Active> {
    match super::power_mode::begin(ctx, &q.job).await {
        Ok(active) => Some(active),
        Err(body) => {
            let id = &q.job.id;
            tracing::info!("job '{id}' rejected: {} ({})", body.message, body.code);
            if let Err(e) = ctx
                .finish_with_error(id, &q.reply, JobState::Rejected, body)
                .await
            {
                tracing::error!("cannot journal the outcome of job '{id}': {e}");
            }
            ctx.metrics
                .job_finished(&q.job.request.model, JobState::Rejected.as_str(), None);
            None
        }
    }
}

async fn run_one(
    ctx: &Arc<Ctx>,
    q: QueuedJob,
    token: CancellationToken,
    recording: Option<crate::power::Recorder>,
    settle: Option<Value>,
    power_mode: super::power_mode::Active,
) {
    let id = q.job.id.clone();
    let queue_ms = monotonic_ns().saturating_sub(q.accepted_ns) as f64 / 1e6;
    ctx.publish_status(&id, JobState::Running, Some("load"), None, None)
        .await;
    let jid = id.clone();
    if let Err(e) = ctx.journal.call(move |j| j.start(&jid)).await {
        // Without the attempt recorded a crash could re-run it forever; fail it now.
        tracing::error!("cannot journal the start of job '{id}': {e}");
        let body = ErrorBody {
            code: super::unjournaled::journal_code(&e).into(),
            message: e.to_string(),
        };
        let _ = ctx
            .finish_with_error(&id, &q.reply, JobState::Failed, body)
            .await;
        ctx.metrics
            .job_finished(&q.job.request.model, JobState::Failed.as_str(), None);
        super::power_mode::end(ctx, power_mode).await;
        return;
    }

    let stream = q.job.stream.unwrap_or(ctx.settings.stream_default);
    let (tx, rx) = mpsc::channel(1024);
    let log = Arc::new(Mutex::new(EventLog::default()));
    let observer = Tee(vec![
        Box::new(log.clone()),
        Box::new(Forward { tx, stream }),
    ]);
    let forwarder = tokio::spawn(forward(ctx.clone(), id.clone(), rx));

    let request_json = request_json(&q);
    let generation = super::quality_job::run_engine(ctx, &q.job, Box::new(observer), token.clone());
    tokio::pin!(generation);

    // A graceful shutdown lets the job finish within the drain timeout; after that it
    // is canceled and put back as `accepted`, to run again at the next start.
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut requeue = false;
    let outcome = loop {
        tokio::select! {
            r = &mut generation => break r,
            _ = ctx.draining.cancelled(), if drain_deadline.is_none() => {
                drain_deadline = Some(tokio::time::Instant::now() + ctx.settings.drain_timeout);
            }
            _ = sleep_until(drain_deadline), if !requeue => {
                tracing::warn!("job '{id}' did not finish within the drain timeout; requeueing it");
                requeue = true;
                token.cancel();
            }
        }
    };
    // The engine drops the observer when the job ends, which closes the channel.
    if tokio::time::timeout(Duration::from_secs(2), forwarder)
        .await
        .is_err()
    {
        tracing::warn!("token forwarder of job '{id}' did not finish");
    }

    let power_mode = super::power_mode::end(ctx, power_mode).await;

    if requeue {
        let jid = id.clone();
        if let Err(e) = ctx.journal.call(move |j| j.requeue(&jid)).await {
            tracing::error!("cannot requeue job '{id}': {e}");
        }
        return;
    }

    let events = log.lock().map(|l| l.events.clone()).unwrap_or_default();
    match outcome {
        Ok(report) => {
            let done = Finished {
                report,
                events,
                recording,
                power_mode,
                settle,
            };
            finish_report(ctx, &q, done, queue_ms, request_json).await
        }
        Err(e) => finish_error(ctx, &q, e, request_json).await,
    }
    ctx.outbox_wake.notify_one();
}

/// What a job that ran to its end left: the engine's report and events, and the
/// recording of its samples.
struct Finished {
    report: RunReport,
    events: Vec<EngineEvent>,
    recording: Option<crate::power::Recorder>,
    /// The result's `power_mode` (the mode the job ran under).
    power_mode: Value,
    /// The settle gate's outcome (`settle` result key), when the job asked for one.
    settle: Option<Value>,
}

async fn finish_report(
    ctx: &Arc<Ctx>,
    q: &QueuedJob,
    done: Finished,
    queue_ms: f64,
    request_json: String,
) {
    let Finished {
        report,
        events,
        recording,
        power_mode,
        settle,
    } = done;
    let id = &q.job.id;
    let canceled = report.finish_reason == FinishReason::Canceled;
    let state = if canceled {
        JobState::Canceled
    } else {
        JobState::Succeeded
    };
    let measured = ctx
        .measure
        .job(recording, id, &q.job.request.model, events, &report)
        .await;
    ctx.measure.set_active(false);
    let mut result = serde_json::to_value(&report).unwrap_or_else(|_| json!({}));
    if let Some(obj) = result.as_object_mut() {
        obj.insert("id".into(), json!(id));
        obj.insert("device".into(), json!(ctx.settings.device));
        obj.insert("state".into(), json!(state.as_str()));
        obj.insert("energy".into(), measured.energy);
        let mut power_mode = power_mode;
        super::power_mode::widen_with_thermal(&mut power_mode, &measured.thermal);
        obj.insert("thermal".into(), measured.thermal);
        obj.insert("power_mode".into(), power_mode);
        if let Some(t) = obj.get_mut("timings").and_then(Value::as_object_mut) {
            t.insert("queue_ms".into(), json!(queue_ms));
        }
        if let Some(spec) = &q.job.quality {
            obj.insert("kind".into(), json!(spec.kind.as_str()));
        }
        if let Some(s) = settle {
            obj.insert("settle".into(), s);
        }
    }
    crate::quality::energy::annotate(&mut result);
    let error = canceled.then(|| ErrorBody {
        code: "canceled".into(),
        message: "canceled by request while running; the result holds the tokens so far".into(),
    });
    if let (Some(e), Some(obj)) = (&error, result.as_object_mut()) {
        obj.insert("error".into(), json!(e));
    }
    let figures = crate::metrics::JobFigures::from_result(&result);
    tracing::info!(
        "job '{id}' {}: {} tokens, decode {:.1} t/s",
        state.as_str(),
        report.tokens.generated,
        report.timings.decode_tps
    );
    if q.job.trace != TraceLevel::None {
        if let Some(t) = &measured.trace {
            publish_trace(ctx, id, q.job.trace, t).await;
        }
    }
    // Stored before it is answered: a result the store cannot keep (disk full) fails
    // the job with a code instead of answering `succeeded` for a row that is not there.
    let (state, error, result) = match ctx
        .measure
        .try_store(id, state.as_str(), request_json, &result, measured.trace)
        .await
    {
        Ok(_) => (state, error, result),
        Err(e) => {
            let code = match &e {
                crate::trace::StoreError::Sql(s) => super::unjournaled::code_for(s, "store_failed"),
                _ => "store_failed",
            };
            tracing::error!("cannot store the result of job '{id}': {e}");
            let body = ErrorBody {
                code: code.into(),
                message: format!(
                    "the job ran but its result cannot be stored in '{}': {e}",
                    ctx.settings.store_path.display()
                ),
            };
            let result = ctx.error_result(id, JobState::Failed, &body);
            (JobState::Failed, Some(body), result)
        }
    };
    let stored = state != JobState::Failed;
    ctx.metrics.job_finished(
        &q.job.request.model,
        state.as_str(),
        stored.then_some(&figures),
    );
    let messages = ctx.terminal_messages(id, &q.reply, state, error.as_ref(), &result);
    let (jid, rj, msgs) = (id.clone(), result.to_string(), messages.clone());
    if let Err(e) = ctx
        .journal
        .call(move |j| j.finish(&jid, state, &rj, &msgs))
        .await
    {
        ctx.answer_unjournaled(&e, messages, Some((id, state, result.to_string())))
            .await;
    }
}

async fn finish_error(ctx: &Arc<Ctx>, q: &QueuedJob, e: EngineError, request_json: String) {
    let id = &q.job.id;
    let state = if matches!(e, EngineError::Canceled) {
        JobState::Canceled
    } else if e.is_rejection() {
        JobState::Rejected
    } else {
        JobState::Failed
    };
    tracing::info!("job '{id}' {}: {e}", state.as_str());
    let body = ErrorBody {
        code: e.code().to_string(),
        message: e.to_string(),
    };
    let result = ctx.error_result(id, state, &body);
    if let Err(err) = ctx.finish_with_error(id, &q.reply, state, body).await {
        tracing::error!("cannot journal the outcome of job '{id}': {err}");
    }
    ctx.metrics
        .job_finished(&q.job.request.model, state.as_str(), None);
    ctx.measure
        .store(id, state.as_str(), request_json, &result, None)
        .await;
}

/// The request as stored for reports: model, options, input kind.
fn request_json(q: &QueuedJob) -> String {
    let r = &q.job.request;
    json!({
        "id": q.job.id,
        "model": r.model,
        "input": r.input,
        "options": r.options,
        "keep_alive_s": r.keep_alive_s,
        "quality": q.job.quality,
        "power_mode": q.job.power_mode,
    })
    .to_string()
}

/// Publishes the trace on `PREFIX/DEV/job/ID/trace` in chunks:
/// `{id, chunk, chunks, level, json}`; concatenating `json` in chunk order gives the
/// trace (summary: everything but the samples).
async fn publish_trace(ctx: &Arc<Ctx>, id: &str, level: TraceLevel, trace: &crate::trace::Trace) {
    let text = match level {
        TraceLevel::Full => serde_json::to_string(trace),
        _ => {
            let mut t = trace.clone();
            t.samples.clear();
            serde_json::to_string(&t)
        }
    }
    .unwrap_or_default();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + TRACE_CHUNK).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        parts.push(&text[start..end]);
        start = end;
    }
    let topic = ctx.topics.job(id, "trace");
    let n = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        let body = json!({ "id": id, "chunk": i, "chunks": n, "level": level, "json": part });
        let _ = ctx
            .session
            .publish(OutMessage::json(
                topic.clone(),
                serde_json::to_vec(&body).unwrap_or_default(),
            ))
            .await;
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
