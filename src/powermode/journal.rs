//! The mode to restore, on disk before a mode is applied, so that a daemon that
//! dies mid-job (crash, OOM kill, power cut before the restore) has the board put
//! back by its next start ([`recover`]).
//!
//! One JSON file beside the job journal (`power-mode-restore.json`), written to a
//! temporary name, fsynced and renamed. It is written only when absent: if an
//! earlier restore failed, the file still holds the state from before the first
//! unrestored change, which is the one to go back to.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{restore, NvpmodelSetter, Previous};

/// The restore journal's file name, beside the job journal.
pub const FILE_NAME: &str = "power-mode-restore.json";

/// Journal errors.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be written, read or removed.
    #[error("power mode restore journal '{path}': {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a journal we wrote.
    #[error("power mode restore journal '{path}' is not valid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What serde said.
        reason: String,
    },
}

/// The restore journal.
#[derive(Debug, Clone)]
pub struct RestoreJournal {
    /// The JSON file.
    path: PathBuf,
}

impl RestoreJournal {
    /// The journal in `dir` (the state directory).
    pub fn in_dir(dir: &Path) -> Self {
        RestoreJournal {
            path: dir.join(FILE_NAME),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes `prev` unless a journal is already there; `true` when written.
    pub fn save_if_absent(&self, prev: &Previous) -> Result<bool, JournalError> {
        if self.path.exists() {
            return Ok(false);
        }
        let text = serde_json::to_vec_pretty(prev).map_err(|e| JournalError::Invalid {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| self.io(e))?;
        f.write_all(&text).map_err(|e| self.io(e))?;
        f.sync_all().map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(true)
    }

    /// The journaled state, if any.
    pub fn load(&self) -> Result<Option<Previous>, JournalError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| JournalError::Invalid {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Removes the journal (after a successful restore).
    pub fn clear(&self) -> Result<(), JournalError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(e)),
        }
    }
}

/// At start: restores a journaled mode left by a daemon that did not restore it,
/// and clears the journal. Returns what was restored. A failed restore keeps the
/// journal (the next start tries again) and is returned as the error.
pub fn recover(
    journal: &RestoreJournal,
    root: &Path,
    setter: &dyn NvpmodelSetter,
) -> anyhow::Result<Option<Previous>> {
    let Some(prev) = journal.load()? else {
        return Ok(None);
    };
    restore(&prev, root, setter)?;
    journal.clear()?;
    Ok(Some(prev))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::apply::testing::FakeNvpmodel;
    use super::super::read::fake::*;
    use super::super::{apply, plan, previous, read, wait_applied, PowerModeSpec};
    use super::*;

    #[test]
    fn a_crash_between_apply_and_restore_is_undone_by_the_next_start() {
        let board = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let r = board.path();
        orin_nano(r);
        let before = read(r, None);
        let nvp = FakeNvpmodel {
            root: r.to_path_buf(),
            ..Default::default()
        };
        let spec = PowerModeSpec {
            governor: Some("powersave".into()),
            nvpmodel: Some(3),
            ..Default::default()
        };
        {
            // The daemon's sequence up to the job; then it "crashes": everything is
            // dropped without a restore.
            let journal = RestoreJournal::in_dir(state.path());
            let p = plan("7w", &spec, r).unwrap();
            assert!(journal.save_if_absent(&previous(&p, r)).unwrap());
            apply(&p, r, &nvp).unwrap();
            wait_applied(&p, r, Duration::from_secs(1)).unwrap();
            // A second apply before any restore keeps the first journal.
            let p2 = plan("7w", &spec, r).unwrap();
            assert!(!journal.save_if_absent(&previous(&p2, r)).unwrap());
        }
        let changed = read(r, None);
        assert_ne!(changed.nvpmodel, before.nvpmodel);
        // The next start.
        let journal = RestoreJournal::in_dir(state.path());
        let restored = recover(&journal, r, &nvp).unwrap().unwrap();
        assert_eq!(restored.mode, "7w");
        assert_eq!(restored.nvpmodel, Some(0));
        let after = read(r, None);
        assert_eq!(after.nvpmodel, before.nvpmodel);
        assert_eq!(
            after
                .cpufreq
                .iter()
                .map(|p| p.governor.clone())
                .collect::<Vec<_>>(),
            before
                .cpufreq
                .iter()
                .map(|p| p.governor.clone())
                .collect::<Vec<_>>()
        );
        assert!(!journal.path().exists());
        // Nothing left: the start after that does nothing.
        assert!(recover(&journal, r, &nvp).unwrap().is_none());
    }

    #[test]
    fn a_garbled_journal_is_an_error_naming_the_file() {
        let state = tempfile::tempdir().unwrap();
        let journal = RestoreJournal::in_dir(state.path());
        std::fs::write(journal.path(), "{not json").unwrap();
        let e = journal.load().unwrap_err().to_string();
        assert!(e.contains(FILE_NAME) && e.contains("not valid"), "{e}");
    }
}
