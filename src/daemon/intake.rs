//! Incoming messages: jobs and cancels.
//!
//! A job is acked to the broker only after the journal holds it (accepted or
//! rejected). If the journal refuses the write (the state directory's filesystem is
//! full), the job is rejected with `store_full` straight over the session and acked:
//! left unacked it would wait, unanswered, until our next session (issue 14's soak).
//! A cancel that cannot be journaled stays unacked (redelivered at the next session). The intake never waits on inference: it journals (on the
//! blocking pool), publishes `accepted`, queues, acks, and moves on.

use std::sync::Arc;

use rumqttc::v5::mqttbytes::v5::Publish;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::clock::monotonic_ns;
use crate::jobs::journal::{Admission, JournalError, JournalJob, NewMessage, Reply};
use crate::jobs::mqtt::{reply_of, SessionEvent};
use crate::jobs::protocol::{parse_job, ErrorBody, JobError, JobState, PayloadError, Rejected};
use crate::jobs::queue::{CancelOutcome, QueuedJob};

/// Runs until `stop` fires or the session ends.
pub async fn run(ctx: Arc<Ctx>, mut events: mpsc::Receiver<SessionEvent>, stop: CancellationToken) {
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => break,
            ev = events.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
        };
        match ev {
            SessionEvent::Connected { session_present } => {
                tracing::info!(session_present, "connected to the broker");
                // The broker may have published our Will while we were away: say
                // `online` again, and push out whatever the outbox holds.
                ctx.status_wake.notify_one();
                ctx.outbox_wake.notify_one();
            }
            SessionEvent::Subscribed => {}
            SessionEvent::Disconnected { reason } => {
                tracing::warn!("disconnected from the broker: {reason}");
            }
            SessionEvent::Message(p) => {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let is_cancel = ctx.topics.cancel_id(&topic).is_some();
                if ctx.draining.is_cancelled() && !is_cancel {
                    // Not acked: the broker keeps it in our session for the next start.
                    continue;
                }
                match handle(&ctx, &topic, &p).await {
                    Ok(()) => {
                        let _ = ctx.session.ack(p).await;
                    }
                    Err(e) if !is_cancel => {
                        ctx.reject_unjournaled(&topic, &p, &e).await;
                        let _ = ctx.session.ack(p).await;
                    }
                    Err(e) => {
                        // Unacked: redelivered after the next reconnect.
                        tracing::error!(
                            "cannot journal a message on '{topic}': {e}; leaving it unacked"
                        );
                    }
                }
            }
        }
    }
}

async fn handle(ctx: &Arc<Ctx>, topic: &str, p: &Publish) -> Result<(), JournalError> {
    if let Some(id) = ctx.topics.cancel_id(topic) {
        return cancel(ctx, id).await;
    }
    let reply = reply_of(p);
    let payload = p.payload.clone();
    let limits = &ctx.settings.limits;
    let job = match parse_job(&payload, limits, &ctx.settings.defaults) {
        Ok(job) => job,
        Err(Rejected { id: None, error }) => {
            return reject_without_id(ctx, topic, &reply, &error).await
        }
        Err(Rejected {
            id: Some(id),
            error,
        }) => return reject(ctx, &id, &payload, &reply, topic, error.to_error_body()).await,
    };
    // Cheap existence check now, so an unknown model never waits in the queue.
    if let Err(e) = ctx.engine.resolve_model(&job.request.model) {
        let body = ErrorBody {
            code: e.code().to_string(),
            message: e.to_string(),
        };
        return reject(ctx, &job.id, &payload, &reply, topic, body).await;
    }
    // An unknown power mode, or one this board cannot apply, never waits either.
    if let Err(body) = super::power_mode::check(ctx, &job).await {
        return reject(ctx, &job.id, &payload, &reply, topic, body).await;
    }

    let id = job.id.clone();
    let (pl, rp, tp) = (payload.to_vec(), reply.clone(), topic.to_string());
    let jid = id.clone();
    let admission = ctx
        .journal
        .call(move |j| j.admit(&jid, &pl, &rp, &tp))
        .await?;
    match admission {
        Admission::New => {
            // `accepted` goes out before the job can start, so the order holds.
            let position = ctx.queue.len() + usize::from(ctx.queue.running().is_some());
            ctx.publish_status(&id, JobState::Accepted, None, Some(position), None)
                .await;
            let model = job.request.model.clone();
            let queued = QueuedJob {
                job,
                reply: reply.clone(),
                accepted_ns: monotonic_ns(),
                attempts: 0,
            };
            if let Err(full) = ctx.queue.push(queued, false) {
                let body = ErrorBody {
                    code: "queue_full".into(),
                    message: full.to_string(),
                };
                // On a journal failure it was answered directly; the job is acked.
                let _ = ctx
                    .finish_with_error(&id, &reply, JobState::Rejected, body)
                    .await;
                ctx.metrics
                    .job_finished(&model, JobState::Rejected.as_str(), None);
            }
            ctx.status_wake.notify_one();
        }
        Admission::Redelivered(existing) => answer_again(ctx, &existing, &reply).await?,
        Admission::Conflict(_) => duplicate(ctx, &id, topic, &reply).await?,
    }
    Ok(())
}

/// A job refused before running. If its id is already known, it is either the same
/// payload again (answered from the store) or a different job (`duplicate_id`).
async fn reject(
    ctx: &Arc<Ctx>,
    id: &str,
    payload: &[u8],
    reply: &Reply,
    topic: &str,
    error: ErrorBody,
) -> Result<(), JournalError> {
    let jid = id.to_string();
    if let Some(existing) = ctx.journal.call(move |j| j.get(&jid)).await? {
        if existing.payload == payload {
            return answer_again(ctx, &existing, reply).await;
        }
        return duplicate(ctx, id, topic, reply).await;
    }
    tracing::info!("job '{id}' rejected: {} ({})", error.message, error.code);
    let result = ctx.error_result(id, JobState::Rejected, &error);
    let messages = ctx.terminal_messages(id, reply, JobState::Rejected, Some(&error), &result);
    let (jid, pl, rp, tp) = (
        id.to_string(),
        payload.to_vec(),
        reply.clone(),
        topic.to_string(),
    );
    let rj = result.to_string();
    ctx.journal
        .call(move |j| j.record_rejected(&jid, &pl, &rp, &tp, &rj, &messages))
        .await?;
    ctx.metrics
        .job_finished("", JobState::Rejected.as_str(), None);
    ctx.outbox_wake.notify_one();
    Ok(())
}

/// A payload with no usable id: rejected on `PREFIX/DEV/errors` and on its Response
/// Topic when it has one.
async fn reject_without_id(
    ctx: &Arc<Ctx>,
    topic: &str,
    reply: &Reply,
    error: &JobError,
) -> Result<(), JournalError> {
    tracing::info!("payload on '{topic}' rejected: {error}");
    ctx.metrics
        .job_finished("", JobState::Rejected.as_str(), None);
    send_payload_error(ctx, topic, reply, error.to_error_body()).await
}

async fn duplicate(
    ctx: &Arc<Ctx>,
    id: &str,
    topic: &str,
    reply: &Reply,
) -> Result<(), JournalError> {
    // Not on the job's own topics: those belong to the original job with this id.
    let error = JobError::DuplicateId { id: id.to_string() };
    tracing::info!("{error}");
    send_payload_error(ctx, topic, reply, error.to_error_body()).await
}

async fn send_payload_error(
    ctx: &Arc<Ctx>,
    topic: &str,
    reply: &Reply,
    error: ErrorBody,
) -> Result<(), JournalError> {
    let body = PayloadError {
        device: ctx.settings.device.clone(),
        state: JobState::Rejected,
        at_unix_ns: crate::clock::unix_ns(),
        topic: topic.to_string(),
        error,
    };
    let payload = serde_json::to_vec(&body).unwrap_or_default();
    let mut messages = vec![NewMessage {
        topic: ctx.topics.errors(),
        payload: payload.clone(),
        retain: false,
        correlation: None,
    }];
    if let Some(rt) = &reply.response_topic {
        messages.push(NewMessage {
            topic: rt.clone(),
            payload,
            retain: false,
            correlation: reply.correlation.clone(),
        });
    }
    ctx.journal
        .call(move |j| j.enqueue(None, &messages))
        .await?;
    ctx.outbox_wake.notify_one();
    Ok(())
}

/// The same job again (broker redelivery, or a client resubmitting): if it finished,
/// its stored result is published again without running it (to the Response Topic of
/// this delivery, else the original one); otherwise it is already queued or running
/// and nothing more is needed.
async fn answer_again(
    ctx: &Arc<Ctx>,
    existing: &JournalJob,
    reply: &Reply,
) -> Result<(), JournalError> {
    if !existing.state.is_terminal() {
        tracing::debug!(
            "job '{}' redelivered while {}",
            existing.id,
            existing.state.as_str()
        );
        return Ok(());
    }
    let Some(result) = existing
        .result_json
        .as_deref()
        .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
    else {
        return Ok(());
    };
    tracing::info!(
        "job '{}' redelivered; answering from the store",
        existing.id
    );
    let error: Option<ErrorBody> = result
        .get("error")
        .and_then(|e| serde_json::from_value(e.clone()).ok());
    let reply = if reply.response_topic.is_some() {
        reply
    } else {
        &existing.reply
    };
    let messages =
        ctx.terminal_messages(&existing.id, reply, existing.state, error.as_ref(), &result);
    let id = existing.id.clone();
    ctx.journal
        .call(move |j| j.enqueue(Some(&id), &messages))
        .await?;
    ctx.outbox_wake.notify_one();
    Ok(())
}

async fn cancel(ctx: &Arc<Ctx>, id: &str) -> Result<(), JournalError> {
    match ctx.queue.cancel(id) {
        CancelOutcome::Queued(q) => {
            tracing::info!("job '{id}' canceled while queued");
            let body = ErrorBody {
                code: "canceled".into(),
                message: "canceled by request while queued".into(),
            };
            // On a journal failure it was answered directly (and is retried).
            let _ = ctx
                .finish_with_error(id, &q.reply, JobState::Canceled, body)
                .await;
            ctx.metrics
                .job_finished(&q.job.request.model, JobState::Canceled.as_str(), None);
            ctx.status_wake.notify_one();
        }
        CancelOutcome::Running => tracing::info!("job '{id}' canceled while running"),
        CancelOutcome::NotFound => {
            tracing::info!("cancel for job '{id}': not queued or running here")
        }
    }
    Ok(())
}
