//! Start-up recovery: jobs the journal holds as `accepted` go back in the queue;
//! jobs left `running` by a crash are re-run once (`jobs.on_crash = "rerun"`) or
//! failed with code `interrupted`. Unsent outbox rows are the outbox task's business.

use std::sync::Arc;

use super::Ctx;
use crate::clock::monotonic_ns;
use crate::config::OnCrash;
use crate::jobs::journal::JournalError;
use crate::jobs::protocol::{parse_job, ErrorBody, JobState};
use crate::jobs::queue::QueuedJob;

/// Re-queues or fails what the previous run left unfinished.
pub async fn recover(ctx: &Arc<Ctx>) -> Result<(), JournalError> {
    let jobs = ctx.journal.call(|j| j.unfinished()).await?;
    for j in jobs {
        let job = match parse_job(&j.payload, &ctx.settings.limits, &ctx.settings.defaults) {
            Ok(job) => job,
            Err(r) => {
                // The limits changed since it was accepted.
                ctx.finish_with_error(&j.id, &j.reply, JobState::Rejected, r.error.to_error_body())
                    .await?;
                ctx.metrics
                    .job_finished("", JobState::Rejected.as_str(), None);
                continue;
            }
        };
        if j.state == JobState::Running {
            let policy = ctx.settings.on_crash;
            if policy == OnCrash::Fail || j.attempts >= 2 {
                let why = if policy == OnCrash::Fail {
                    "jobs.on_crash = 'fail'".to_string()
                } else {
                    format!("it was already re-run once ({} attempts)", j.attempts)
                };
                tracing::warn!(
                    "job '{}' was interrupted by a crash; failing it: {why}",
                    j.id
                );
                let body = ErrorBody {
                    code: "interrupted".into(),
                    message: format!("the daemon stopped while this job was running and {why}"),
                };
                ctx.finish_with_error(&j.id, &j.reply, JobState::Failed, body)
                    .await?;
                ctx.metrics
                    .job_finished(&job.request.model, JobState::Failed.as_str(), None);
                continue;
            }
            tracing::warn!(
                "job '{}' was interrupted by a crash; running it again",
                j.id
            );
        } else {
            tracing::info!(
                "job '{}' was queued before the restart; queueing it again",
                j.id
            );
        }
        let queued = QueuedJob {
            job,
            reply: j.reply,
            accepted_ns: monotonic_ns(),
            attempts: j.attempts,
        };
        // Already accepted (and acked): never refused for capacity.
        let _ = ctx.queue.push(queued, true);
    }
    Ok(())
}
