//! Outgoing messages: job states, status and token messages, the board status,
//! payload errors, and the topic names.

use serde::{Deserialize, Serialize};

/// `{code, message}` carried by every error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Journaled and queued.
    Accepted,
    /// On the engine (a `phase` says where).
    Running,
    /// Finished with a result.
    Succeeded,
    /// Ran and failed (engine error, crash).
    Failed,
    /// Refused before running (bad input, unknown model, admission).
    Rejected,
    /// Canceled while queued or running.
    Canceled,
}

impl JobState {
    /// The protocol's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Accepted => "accepted",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Rejected => "rejected",
            JobState::Canceled => "canceled",
        }
    }

    /// Parses the protocol's spelling.
    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "accepted" => JobState::Accepted,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "rejected" => JobState::Rejected,
            "canceled" => JobState::Canceled,
            _ => return None,
        })
    }

    /// True for states after which nothing more happens to the job.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Rejected | JobState::Canceled
        )
    }
}

/// One message on `PREFIX/DEV/job/ID/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusMsg {
    /// The job.
    pub id: String,
    /// The board that has it.
    pub device: String,
    /// New state.
    pub state: JobState,
    /// Wall-clock time of the transition, ns since the epoch.
    pub at_unix_ns: u64,
    /// While running: `load`, `prefill` or `decode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// When accepted: jobs ahead of this one (0 = next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    /// For failed / rejected / canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// One message on `PREFIX/DEV/job/ID/tokens` (QoS 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenMsg {
    /// The job.
    pub id: String,
    /// 0-based index of the first piece in this message.
    pub index: u32,
    /// The text of one or more consecutive tokens.
    pub text: String,
}

/// The retained message on `PREFIX/DEV/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// The board.
    pub device: String,
    /// `online`, `draining` or `offline`.
    pub state: String,
    /// edgewatt's version.
    pub version: String,
    /// Wall-clock time of this status, ns since the epoch.
    pub at_unix_ns: u64,
    /// Model names available.
    #[serde(default)]
    pub models: Vec<String>,
    /// Power rails measured.
    #[serde(default)]
    pub rails: Vec<String>,
    /// True when the power readings are simulated.
    #[serde(default)]
    pub simulated: bool,
    /// Jobs waiting (not counting the running one).
    #[serde(default)]
    pub queue_length: usize,
    /// The running job, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    /// What this board accepts (issue 14); absent in statuses of older daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BoardLimits>,
    /// The `[power_modes.NAME]` a job may name, with what each sets (issue 13);
    /// absent when the board has none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub power_modes: std::collections::BTreeMap<String, crate::powermode::PowerModeSpec>,
}

/// The sizes a board accepts, announced in its status so a submitter can refuse an
/// oversize job before publishing it (a PUBLISH over `max_packet_bytes` is dropped
/// by the broker without a word to either side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardLimits {
    /// `limits.max_payload_bytes`: larger jobs are rejected with `payload_too_large`.
    pub max_payload_bytes: usize,
    /// The Maximum Packet Size of the board's CONNECT: larger PUBLISHes never reach it.
    pub max_packet_bytes: u32,
    /// `limits.max_prompt_bytes`: larger prompts are rejected with `prompt_too_large`.
    pub max_prompt_bytes: usize,
}

/// A rejection of a payload with no usable id (`PREFIX/DEV/errors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayloadError {
    /// The board that refused it.
    pub device: String,
    /// Always `rejected`.
    pub state: JobState,
    /// Wall-clock time, ns since the epoch.
    pub at_unix_ns: u64,
    /// The topic the payload came in on.
    pub topic: String,
    /// Why.
    pub error: ErrorBody,
}

/// Topic names for one board (docs/protocol.md, "Topics").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Topic prefix, default `edgewatt`.
    pub prefix: String,
    /// This board's id.
    pub device: String,
}

impl Topics {
    /// Topics for `device` under `prefix`.
    pub fn new(prefix: impl Into<String>, device: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into(),
            device: device.into(),
        }
    }
    /// `PREFIX/jobs`: the fleet queue.
    pub fn fleet_jobs(&self) -> String {
        format!("{}/jobs", self.prefix)
    }
    /// `$share/GROUP/PREFIX/jobs`: what a fleet member subscribes to.
    pub fn fleet_share(&self, group: &str) -> String {
        format!("$share/{group}/{}/jobs", self.prefix)
    }
    /// `PREFIX/DEV/jobs`: jobs for this board only.
    pub fn device_jobs(&self) -> String {
        format!("{}/{}/jobs", self.prefix, self.device)
    }
    /// `PREFIX/DEV/job/+/cancel`: the cancel filter.
    pub fn cancel_filter(&self) -> String {
        format!("{}/{}/job/+/cancel", self.prefix, self.device)
    }
    /// `PREFIX/DEV/job/ID/<leaf>`.
    pub fn job(&self, id: &str, leaf: &str) -> String {
        format!("{}/{}/job/{id}/{leaf}", self.prefix, self.device)
    }
    /// `PREFIX/DEV/status` (retained).
    pub fn status(&self) -> String {
        format!("{}/{}/status", self.prefix, self.device)
    }
    /// `PREFIX/DEV/power`.
    pub fn power(&self) -> String {
        format!("{}/{}/power", self.prefix, self.device)
    }
    /// `PREFIX/DEV/errors`.
    pub fn errors(&self) -> String {
        format!("{}/{}/errors", self.prefix, self.device)
    }
    /// If `topic` is `PREFIX/DEV/job/ID/cancel`, the ID.
    pub fn cancel_id<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('/')?
            .strip_prefix(self.device.as_str())?
            .strip_prefix("/job/")?;
        let id = rest.strip_suffix("/cancel")?;
        (!id.contains('/')).then_some(id)
    }
}

/// True when `name` is usable as one MQTT topic level (device ids, prefixes, groups).
pub fn valid_topic_level(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.contains(['/', '+', '#', '\0'])
        && !name.starts_with('$')
}
