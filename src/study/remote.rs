//! A daemon over MQTT as a study board, on the shared job client
//! ([`crate::jobs::client`]). One client (its own reply topic) per board; the board's
//! thread blocks on the client's runtime for one run at a time.
//!
//! A run whose result does not come within `resend_after` is published again under
//! the *same* id: a daemon that finished it answers from its store, one that has it
//! journaled (queued, running, or re-run after a crash) answers when done — never a
//! second run. Only past `run_timeout` is the run stored as failed (`timeout`).

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::runtime::Handle;
use tokio::sync::Mutex;

use super::run::Board;
use crate::jobs::client::{Client, ClientOptions, JobEvent};
use crate::jobs::protocol::ErrorBody;

/// Publish the run again after this long without its result.
pub const RESEND_AFTER: Duration = Duration::from_secs(30);

/// One daemon.
pub struct RemoteBoard {
    device: String,
    status: Value,
    client: Mutex<Client>,
    rt: Handle,
    resend_after: Duration,
    run_timeout: Duration,
}

impl RemoteBoard {
    /// Connects a client for `device` (its status taken from `status`).
    pub async fn connect(
        opts: &ClientOptions,
        device: &str,
        status: Value,
        run_timeout: Duration,
    ) -> anyhow::Result<RemoteBoard> {
        let mut o = opts.clone();
        o.tokens = false;
        o.board_statuses = false;
        let client = Client::connect(&o).await?;
        Ok(RemoteBoard {
            device: device.to_string(),
            status,
            client: Mutex::new(client),
            rt: Handle::current(),
            resend_after: RESEND_AFTER.min(run_timeout),
            run_timeout,
        })
    }

    /// Disconnects.
    pub async fn close(self) {
        self.client.into_inner().close().await;
    }

    async fn run_async(&self, payload: &Value) -> Result<Value, ErrorBody> {
        let job = payload.as_object().cloned().unwrap_or_default();
        let id = payload["id"].as_str().unwrap_or_default().to_string();
        let deadline = Instant::now() + self.run_timeout;
        let mut client = self.client.lock().await;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ErrorBody {
                    code: "timeout".into(),
                    message: format!(
                        "no result from board '{}' within {} s",
                        self.device,
                        self.run_timeout.as_secs()
                    ),
                });
            }
            let wait = self.resend_after.min(deadline - now);
            let outcome = client
                .run_job(Some(&self.device), job.clone(), wait, |_: &JobEvent| {})
                .await
                .map_err(|e| ErrorBody {
                    code: "client_failed".into(),
                    message: e.to_string(),
                })?;
            if outcome.state.is_none() {
                tracing::info!(job = %id, device = %self.device, "no result yet; publishing the job again (same id)");
                continue;
            }
            let state = outcome.result["state"].as_str().unwrap_or("");
            if state == "succeeded" {
                return Ok(outcome.result);
            }
            let error = &outcome.result["error"];
            return Err(ErrorBody {
                code: error["code"].as_str().unwrap_or(state).to_string(),
                message: error["message"]
                    .as_str()
                    .unwrap_or("the job did not succeed")
                    .to_string(),
            });
        }
    }
}

impl Board for RemoteBoard {
    fn device(&self) -> &str {
        &self.device
    }

    fn status(&self) -> Value {
        self.status.clone()
    }

    fn run(&self, payload: &Value) -> Result<Value, ErrorBody> {
        self.rt.block_on(self.run_async(payload))
    }
}
