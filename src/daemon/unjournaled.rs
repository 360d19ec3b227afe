//! When the state directory cannot take a write (the filesystem is full, the SQLite
//! file fails): the job is still answered, with a code, straight over the session.
//!
//! The journal's outbox is what normally carries a job's answer, but when the disk is
//! full the transaction that records the outcome fails too, and the answer would sit
//! nowhere: the submitter waits for a timeout (found by the soak test, issue 14). So a
//! job whose result cannot be stored fails with `store_full` (or `store_failed`), and
//! when even that cannot be journaled its messages are published directly (QoS 1) and
//! the outcome is kept in memory until the journal takes it — without that, the job's
//! row would stay `running` and the next start would run it again.

use std::sync::Mutex;

use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::mqttbytes::QoS;

use super::Ctx;
use crate::jobs::journal::{JournalError, NewMessage};
use crate::jobs::mqtt::{json_properties, reply_of, OutMessage};
use crate::jobs::protocol::{ErrorBody, JobState, PayloadError};

/// `store_full` when SQLite said the disk is full, else `fallback`.
pub fn code_for(e: &rusqlite::Error, fallback: &'static str) -> &'static str {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
            "store_full"
        }
        _ => fallback,
    }
}

/// [`code_for`] of a journal error.
pub fn journal_code(e: &JournalError) -> &'static str {
    match e {
        JournalError::Sql(s) | JournalError::Open { source: s, .. } => {
            code_for(s, "journal_failed")
        }
        _ => "journal_failed",
    }
}

/// Outcomes answered directly whose journal row still says `accepted`/`running`:
/// (job id, final state, result JSON), written when the journal takes writes again.
#[derive(Default)]
pub struct Pending(Mutex<Vec<(String, JobState, String)>>);

impl Pending {
    fn push(&self, id: &str, state: JobState, result_json: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push((id.to_string(), state, result_json));
        }
    }

    fn take(&self) -> Vec<(String, JobState, String)> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    /// How many outcomes wait for the journal.
    pub fn len(&self) -> usize {
        self.0.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Ctx {
    /// Publishes `messages` directly (QoS 1, not journaled) because the journal
    /// refused them with `e`; `outcome` (id, state, result) is remembered for
    /// [`Ctx::retry_unjournaled`].
    pub async fn answer_unjournaled(
        &self,
        e: &JournalError,
        messages: Vec<NewMessage>,
        outcome: Option<(&str, JobState, String)>,
    ) {
        tracing::error!(
            "the journal cannot record an answer ({e}); publishing {} message(s) directly",
            messages.len()
        );
        for m in messages {
            let out = OutMessage {
                topic: m.topic,
                payload: m.payload.into(),
                qos: QoS::AtLeastOnce,
                retain: m.retain,
                properties: Some(json_properties(m.correlation)),
                confirm: None,
            };
            let _ = self.session.publish(out).await;
        }
        if let Some((id, state, result)) = outcome {
            self.unjournaled.push(id, state, result);
        }
    }

    /// A job (or payload) whose arrival the journal refused with `e`: rejected with
    /// [`journal_code`] straight over the session, on its own topics when it names an
    /// id, else on the board's errors topic, and on its Response Topic either way.
    pub async fn reject_unjournaled(&self, topic: &str, p: &Publish, e: &JournalError) {
        let reply = reply_of(p);
        let body = ErrorBody {
            code: journal_code(e).into(),
            message: format!(
                "cannot record the job in the journal '{}': {e}; the board's state directory refuses writes",
                self.settings.store_path.display()
            ),
        };
        let id = serde_json::from_slice::<serde_json::Value>(&p.payload)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string))
            .filter(|id| crate::jobs::protocol::validate_id(id).is_ok());
        let messages = match id {
            Some(id) => {
                let result = self.error_result(&id, JobState::Rejected, &body);
                self.terminal_messages(&id, &reply, JobState::Rejected, Some(&body), &result)
            }
            None => {
                let payload = serde_json::to_vec(&PayloadError {
                    device: self.settings.device.clone(),
                    state: JobState::Rejected,
                    at_unix_ns: crate::clock::unix_ns(),
                    topic: topic.to_string(),
                    error: body,
                })
                .unwrap_or_default();
                let mut m = vec![NewMessage {
                    topic: self.topics.errors(),
                    payload: payload.clone(),
                    retain: false,
                    correlation: None,
                }];
                if let Some(rt) = reply.response_topic {
                    m.push(NewMessage {
                        topic: rt,
                        payload,
                        retain: false,
                        correlation: reply.correlation,
                    });
                }
                m
            }
        };
        self.answer_unjournaled(e, messages, None).await;
    }

    /// Writes the outcomes answered directly into the journal (no messages: they were
    /// published); what still fails stays pending.
    pub async fn retry_unjournaled(&self) {
        for (id, state, result) in self.unjournaled.take() {
            let (jid, rj) = (id.clone(), result.clone());
            let res = self
                .journal
                .call(move |j| j.finish(&jid, state, &rj, &[]))
                .await;
            match res {
                Ok(_) => {
                    tracing::info!("journaled the outcome of job '{id}' after a store failure")
                }
                Err(_) => self.unjournaled.push(&id, state, result),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_store_full_other_errors_keep_their_code() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        assert_eq!(code_for(&full, "store_failed"), "store_full");
        assert_eq!(journal_code(&JournalError::Sql(full)), "store_full");
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert_eq!(code_for(&busy, "store_failed"), "store_failed");
        assert_eq!(journal_code(&JournalError::Panicked), "journal_failed");
    }
}
