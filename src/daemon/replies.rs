//! The messages a job produces: statuses, results, and the Response Topic copy.
//! Non-terminal statuses are published directly (QoS 1); terminal ones go through
//! the journal's outbox together with the result, so they survive a crash.

use serde_json::{json, Value};

use super::Ctx;
use crate::jobs::journal::{JournalError, NewMessage, Reply};
use crate::jobs::mqtt::OutMessage;
use crate::jobs::protocol::{ErrorBody, JobState, StatusMsg};

impl Ctx {
    /// A status message for job `id`.
    pub fn status_json(
        &self,
        id: &str,
        state: JobState,
        phase: Option<&str>,
        queue_position: Option<usize>,
        error: Option<&ErrorBody>,
    ) -> Vec<u8> {
        let msg = StatusMsg {
            id: id.to_string(),
            device: self.settings.device.clone(),
            state,
            at_unix_ns: crate::clock::unix_ns(),
            phase: phase.map(str::to_string),
            queue_position,
            error: error.cloned(),
        };
        serde_json::to_vec(&msg).unwrap_or_default()
    }

    /// Publishes a non-terminal status directly (QoS 1, not journaled: a lost
    /// `running` is harmless, the terminal status and result are journaled).
    pub async fn publish_status(
        &self,
        id: &str,
        state: JobState,
        phase: Option<&str>,
        queue_position: Option<usize>,
        error: Option<&ErrorBody>,
    ) {
        let payload = self.status_json(id, state, phase, queue_position, error);
        let _ = self
            .session
            .publish(OutMessage::json(self.topics.job(id, "status"), payload))
            .await;
    }

    /// The result object of a job that ended without a run report.
    pub fn error_result(&self, id: &str, state: JobState, error: &ErrorBody) -> Value {
        json!({
            "id": id,
            "device": self.settings.device,
            "state": state.as_str(),
            "error": error,
            "finished_unix_ns": crate::clock::unix_ns(),
        })
    }

    /// The terminal status, the result on the job's result topic, and a copy of the
    /// result on the Response Topic (with the Correlation Data) when there is one.
    pub fn terminal_messages(
        &self,
        id: &str,
        reply: &Reply,
        state: JobState,
        error: Option<&ErrorBody>,
        result: &Value,
    ) -> Vec<NewMessage> {
        let result_bytes = serde_json::to_vec(result).unwrap_or_default();
        let mut out = vec![
            NewMessage {
                topic: self.topics.job(id, "status"),
                payload: self.status_json(id, state, None, None, error),
                retain: false,
                correlation: None,
            },
            NewMessage {
                topic: self.topics.job(id, "result"),
                payload: result_bytes.clone(),
                retain: false,
                correlation: None,
            },
        ];
        if let Some(rt) = &reply.response_topic {
            out.push(NewMessage {
                topic: rt.clone(),
                payload: result_bytes,
                retain: false,
                correlation: reply.correlation.clone(),
            });
        }
        out
    }

    /// Records a job's end without a run (canceled while queued, queue full, crash
    /// policy `fail`) and queues its messages.
    pub async fn finish_with_error(
        &self,
        id: &str,
        reply: &Reply,
        state: JobState,
        error: ErrorBody,
    ) -> Result<(), JournalError> {
        let result = self.error_result(id, state, &error);
        let messages = self.terminal_messages(id, reply, state, Some(&error), &result);
        let (jid, rj) = (id.to_string(), result.to_string());
        let (msgs, rj2) = (messages.clone(), rj.clone());
        if let Err(e) = self
            .journal
            .call(move |j| j.finish(&jid, state, &rj, &msgs))
            .await
        {
            // Disk full: answered anyway, straight over the session (see `unjournaled`).
            self.answer_unjournaled(&e, messages, Some((id, state, rj2)))
                .await;
            return Err(e);
        }
        self.outbox_wake.notify_one();
        Ok(())
    }
}
