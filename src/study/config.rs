//! One configuration of a study and one stored run of it: the contract between the
//! runner (which writes runs into the study database) and the report (which reads
//! them back). Both sides use these types; nothing else about a run is assumed.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::jobs::protocol::ErrorBody;

/// One point of the plan's axes: everything that makes two runs comparable.
///
/// Optional fields are `None` when the plan does not set that axis (the board's
/// default then applies and the result's `params` records what it was).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Configuration {
    /// The board (`device` axis; the daemon's device id, or `local`).
    pub device: String,
    /// Model name (file stem in the board's model directory).
    pub model: String,
    /// `threads` (None = the board's default: all its cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Synthetic prompt length, tokens (`prompt_tokens` job field).
    pub prompt_tokens: u32,
    /// Generated tokens, exactly (`ignore_eos` + `max_tokens`).
    pub gen_tokens: u32,
    /// Tokens already in the context before the prompt (`depth` job field).
    #[serde(default)]
    pub depth: u32,
    /// Context size (0 = the model's trained context).
    #[serde(default)]
    pub n_ctx: u32,
    /// Logical batch size (None = the board's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    /// Layers offloaded to the GPU.
    #[serde(default)]
    pub n_gpu_layers: u32,
    /// Power mode name the board's configuration defines (None = as the board is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_mode: Option<String>,
    /// Set for a quality run (the plan's `[quality]`): one per board × model, scored
    /// once; absent (and not hashed) for every other configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<super::quality::QualityRun>,
}

/// Hex sha256 of a configuration's canonical JSON: the key runs are stored under,
/// stable across plan edits that keep the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConfigHash(pub String);

impl Configuration {
    /// The configuration's stable hash (sha256 over its canonical JSON: fields in
    /// declaration order, unset options omitted).
    pub fn hash(&self) -> ConfigHash {
        let json = serde_json::to_vec(self).unwrap_or_default();
        ConfigHash(hex(&Sha256::digest(&json)))
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One measured run as stored in the study database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRun {
    /// `configuration.hash()`.
    pub config_hash: ConfigHash,
    /// The configuration it ran.
    pub configuration: Configuration,
    /// 0-based repetition index within the configuration (warm-up runs are not stored
    /// as repetitions).
    pub repetition: u32,
    /// The job id it was sent as.
    pub job_id: String,
    /// The full result JSON (the protocol's result schema) when the run succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why it did not (failed / rejected / canceled, with the protocol's code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// Wall-clock time the run was stored, ns since the epoch.
    pub stored_unix_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Configuration {
        Configuration {
            device: "pi5".into(),
            model: "m".into(),
            threads: Some(2),
            prompt_tokens: 32,
            gen_tokens: 16,
            depth: 0,
            n_ctx: 512,
            batch: None,
            n_gpu_layers: 0,
            power_mode: None,
            quality: None,
        }
    }

    #[test]
    fn hash_is_stable_and_distinguishes_configurations() {
        let a = cfg();
        assert_eq!(a.hash(), cfg().hash());
        assert_eq!(a.hash().0.len(), 64);
        let mut b = cfg();
        b.threads = Some(1);
        assert_ne!(a.hash(), b.hash());
        let mut c = cfg();
        c.power_mode = Some("max".into());
        assert_ne!(a.hash(), c.hash());
    }
}
