//! Power modes (issue 13): what the board's CPU/GPU clocks were set to during a job,
//! recorded always, and — when a job names a `[power_modes.NAME]` — set before the
//! job, checked to have taken effect, and put back afterwards (also after a crash).
//!
//! Every path is under one injectable root (`/` on a board; a temp dir in tests):
//! `sys/devices/system/cpu/cpufreq/policyN/`, `sys/class/devfreq/*/`,
//! `etc/nvpmodel.conf`, `var/lib/nvpmodel/status`, `dev/vcio`.
//!
//! # Layout
//! - [`spec`]    — `[power_modes.NAME]`: what a mode sets (the config and status type)
//! - [`read`]    — the board's current mode, read from sysfs / nvpmodel files / firmware
//! - [`apply`]   — checking a mode against the board, applying it, waiting, restoring
//! - [`nvpmodel`] — the Jetson's nvpmodel files and the request file a root unit answers
//! - [`journal`] — the mode to restore, on disk before anything is changed

pub mod apply;
pub mod journal;
pub mod nvpmodel;
pub mod read;
pub mod spec;

use std::path::{Path, PathBuf};

pub use apply::{apply, check, plan, previous, restore, wait_applied, Plan, Previous};
pub use journal::RestoreJournal;
pub use nvpmodel::{NvpmodelSetter, RequestFile};
pub use read::{read, PowerModeRecord};
pub use spec::{CpufreqSetting, PowerModeSpec};

/// `sys/devices/system/cpu/cpufreq` under `root`.
pub fn cpufreq_dir(root: &Path) -> PathBuf {
    root.join("sys/devices/system/cpu/cpufreq")
}

/// Why a mode cannot be used or did not take effect. Each variant has a stable code.
#[derive(Debug, thiserror::Error)]
pub enum PowerModeError {
    /// The board cannot apply the mode (file missing or not writable, governor or
    /// frequency not offered, no nvpmodel).
    #[error("power mode '{mode}' cannot be applied on this board: {reason}")]
    Unavailable {
        /// The mode's name.
        mode: String,
        /// What is missing, naming the file.
        reason: String,
    },
    /// Writing a setting failed.
    #[error("power mode '{mode}': cannot write '{value}' to '{path}': {source}")]
    Write {
        /// The mode's name.
        mode: String,
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The settings were written but did not read back within the wait.
    #[error("power mode '{mode}' did not take effect within {waited_ms} ms: {what}")]
    NotApplied {
        /// The mode's name.
        mode: String,
        /// How long we waited.
        waited_ms: u64,
        /// What read back differently.
        what: String,
    },
    /// nvpmodel could not be run (through the request file and its root unit).
    #[error("power mode '{mode}': nvpmodel {id} failed: {message}")]
    Nvpmodel {
        /// The mode's name.
        mode: String,
        /// The nvpmodel id.
        id: u32,
        /// What happened.
        message: String,
    },
}

impl PowerModeError {
    /// Stable machine-readable code (docs/protocol.md).
    pub fn code(&self) -> &'static str {
        match self {
            PowerModeError::Unavailable { .. } => "power_mode_unavailable",
            PowerModeError::Write { .. } | PowerModeError::Nvpmodel { .. } => "power_mode_failed",
            PowerModeError::NotApplied { .. } => "power_mode_not_applied",
        }
    }
}

/// Reads a sysfs file, trimmed; `None` when it is missing or unreadable.
pub(crate) fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Reads a sysfs file holding one unsigned integer.
pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    read_trim(path)?.parse().ok()
}
