//! The study database (`NAME.study.db`, SQLite): the plan and its sha256, each board's
//! status at the start of the study, and every run's full result JSON (or its error),
//! keyed by (configuration hash, repetition). `study run` writes it; `study report`
//! reads it back through [`StudyDb::plan`], [`StudyDb::boards`] and [`StudyDb::runs`].
//!
//! WAL journal and `synchronous=FULL`: a run whose insert returned survives a crash
//! or a kill of `study run` at any later moment (resume relies on it). The schema is
//! documented in docs/study.md.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::clock::unix_ns;
use crate::jobs::protocol::ErrorBody;

use super::config::{ConfigHash, Configuration, StoredRun};

/// How long a writer waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema version stored in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS study (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    name             TEXT NOT NULL,
    plan_toml        TEXT NOT NULL,
    plan_sha256      TEXT NOT NULL,
    updated_unix_ns  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS boards (
    device           TEXT PRIMARY KEY,
    status_json      TEXT NOT NULL,
    recorded_unix_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    config_hash        TEXT NOT NULL,
    repetition         INTEGER NOT NULL,
    configuration_json TEXT NOT NULL,
    job_id             TEXT NOT NULL,
    result_json        TEXT,
    error_code         TEXT,
    error_message      TEXT,
    stored_unix_ns     INTEGER NOT NULL,
    PRIMARY KEY (config_hash, repetition)
);
";

/// Study database errors.
#[derive(Debug, thiserror::Error)]
pub enum StudyDbError {
    #[error("cannot open study database '{path}': {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("study database '{path}' has schema version {found}; this edgewatt reads version {SCHEMA_VERSION}")]
    Version { path: String, found: i64 },
    #[error("study database query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("study database holds JSON that does not decode: {0}")]
    Json(#[from] serde_json::Error),
    #[error("study database holds no plan yet (run 'edgewatt study run PLAN' first)")]
    NoPlan,
}

/// How many runs of one configuration are stored, split by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Runs with a result.
    pub ok: u32,
    /// Runs stored with an error.
    pub failed: u32,
}

/// A connection to a study database. Not `Sync`: open one per thread.
#[derive(Debug)]
pub struct StudyDb {
    conn: Connection,
}

fn now_i64() -> i64 {
    i64::try_from(unix_ns()).unwrap_or(i64::MAX)
}

impl StudyDb {
    /// Opens (creating if needed) the study database at `path`.
    pub fn open(path: &Path) -> Result<Self, StudyDbError> {
        let open_err = |source| StudyDbError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let _mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        conn.execute_batch("PRAGMA synchronous=FULL;")
            .map_err(open_err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        if version != 0 && version != SCHEMA_VERSION {
            return Err(StudyDbError::Version {
                path: path.display().to_string(),
                found: version,
            });
        }
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))
            .map_err(open_err)?;
        Ok(StudyDb { conn })
    }

    /// The underlying connection (integrity checks, ad-hoc queries in tests).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The plan the study last ran: (plan TOML text, its hex sha256, study name).
    pub fn plan(&self) -> Result<(String, String, String), StudyDbError> {
        self.conn
            .query_row(
                "SELECT plan_toml, plan_sha256, name FROM study WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
            .ok_or(StudyDbError::NoPlan)
    }

    /// Stores the plan (replacing an earlier one: a changed plan keeps the runs whose
    /// configuration hash still matches).
    pub fn set_plan(&self, toml: &str, sha256: &str, name: &str) -> Result<(), StudyDbError> {
        self.conn.execute(
            "INSERT INTO study (id, name, plan_toml, plan_sha256, updated_unix_ns)
             VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET name = ?1, plan_toml = ?2, plan_sha256 = ?3,
                 updated_unix_ns = ?4",
            params![name, toml, sha256, now_i64()],
        )?;
        Ok(())
    }

    /// Each board's status (the retained `DeviceStatus` JSON, or the local machine's)
    /// as recorded at the start of the study, sorted by device.
    pub fn boards(&self) -> Result<Vec<(String, serde_json::Value)>, StudyDbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT device, status_json FROM boards ORDER BY device")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (device, json) = row?;
            out.push((device, serde_json::from_str(&json)?));
        }
        Ok(out)
    }

    /// Records a board's status. The first record of a device is kept (the status
    /// *at the start* of the study); later calls leave it unchanged.
    pub fn record_board(
        &self,
        device: &str,
        status: &serde_json::Value,
    ) -> Result<(), StudyDbError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO boards (device, status_json, recorded_unix_ns)
             VALUES (?1, ?2, ?3)",
            params![device, serde_json::to_string(status)?, now_i64()],
        )?;
        Ok(())
    }

    /// Every stored run (results and errors), ordered by configuration hash, then
    /// repetition.
    pub fn runs(&self) -> Result<Vec<StoredRun>, StudyDbError> {
        let mut stmt = self.conn.prepare(
            "SELECT config_hash, repetition, configuration_json, job_id, result_json,
                    error_code, error_message, stored_unix_ns
             FROM runs ORDER BY config_hash, repetition",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (hash, rep, cfg, job_id, result, code, message, stored) = row?;
            let error = code.map(|code| ErrorBody {
                code,
                message: message.unwrap_or_default(),
            });
            out.push(StoredRun {
                config_hash: ConfigHash(hash),
                configuration: serde_json::from_str::<Configuration>(&cfg)?,
                repetition: u32::try_from(rep).unwrap_or(0),
                job_id,
                result: result.map(|s| serde_json::from_str(&s)).transpose()?,
                error,
                stored_unix_ns: u64::try_from(stored).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Stores one run. A successful run is never overwritten (resume never runs it
    /// twice; a second answer of the same job is a duplicate and is ignored); a
    /// failed one is replaced by the retry's outcome. Returns whether the row changed.
    pub fn put_run(&self, run: &StoredRun) -> Result<bool, StudyDbError> {
        let (code, message) = match &run.error {
            Some(e) => (Some(e.code.as_str()), Some(e.message.as_str())),
            None => (None, None),
        };
        let result = run.result.as_ref().map(serde_json::to_string).transpose()?;
        let changed = self.conn.execute(
            "INSERT INTO runs (config_hash, repetition, configuration_json, job_id,
                               result_json, error_code, error_message, stored_unix_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(config_hash, repetition) DO UPDATE SET
                 configuration_json = ?3, job_id = ?4, result_json = ?5,
                 error_code = ?6, error_message = ?7, stored_unix_ns = ?8
             WHERE runs.result_json IS NULL",
            params![
                run.config_hash.0,
                i64::from(run.repetition),
                serde_json::to_string(&run.configuration)?,
                run.job_id,
                result,
                code,
                message,
                i64::try_from(run.stored_unix_ns).unwrap_or(i64::MAX),
            ],
        )?;
        Ok(changed > 0)
    }

    /// Stored runs of one configuration, by outcome.
    pub fn counts(&self, hash: &ConfigHash) -> Result<RunCounts, StudyDbError> {
        let (ok, failed): (i64, i64) = self.conn.query_row(
            "SELECT COUNT(result_json), COUNT(*) - COUNT(result_json) FROM runs
             WHERE config_hash = ?1",
            params![hash.0],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(RunCounts {
            ok: u32::try_from(ok).unwrap_or(0),
            failed: u32::try_from(failed).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(threads: u32) -> Configuration {
        Configuration {
            device: "pi5".into(),
            model: "m".into(),
            threads: Some(threads),
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

    fn run(c: &Configuration, rep: u32, ok: bool) -> StoredRun {
        StoredRun {
            config_hash: c.hash(),
            configuration: c.clone(),
            repetition: rep,
            job_id: format!("job-{rep}"),
            result: ok.then(|| serde_json::json!({"id": format!("job-{rep}"), "tokens": 16})),
            error: (!ok).then(|| ErrorBody {
                code: "model_not_found".into(),
                message: "no model 'm'".into(),
            }),
            stored_unix_ns: 7,
        }
    }

    #[test]
    fn plan_boards_and_runs_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.study.db");
        {
            let db = StudyDb::open(&path).unwrap();
            assert!(matches!(db.plan(), Err(StudyDbError::NoPlan)));
            db.set_plan("[study]\nname = 's'\n", "abc", "s").unwrap();
            db.record_board("pi5", &serde_json::json!({"cpus": 4}))
                .unwrap();
            db.record_board("pi5", &serde_json::json!({"cpus": 99}))
                .unwrap();
            db.record_board("orin", &serde_json::json!({"cpus": 6}))
                .unwrap();
            assert!(db.put_run(&run(&cfg(1), 0, true)).unwrap());
            assert!(db.put_run(&run(&cfg(2), 0, false)).unwrap());
        }
        let db = StudyDb::open(&path).unwrap();
        assert_eq!(
            db.plan().unwrap(),
            ("[study]\nname = 's'\n".into(), "abc".into(), "s".into())
        );
        let boards = db.boards().unwrap();
        assert_eq!(boards.len(), 2);
        assert_eq!(boards[1], ("pi5".into(), serde_json::json!({"cpus": 4})));
        let runs = db.runs().unwrap();
        assert_eq!(runs.len(), 2);
        let ok = runs.iter().find(|r| r.configuration == cfg(1)).unwrap();
        assert_eq!(ok, &run(&cfg(1), 0, true));
        let failed = runs.iter().find(|r| r.configuration == cfg(2)).unwrap();
        assert_eq!(failed.error.as_ref().unwrap().code, "model_not_found");
        assert!(failed.result.is_none());
    }

    #[test]
    fn a_result_is_never_overwritten_and_a_failure_is_replaced_by_its_retry() {
        let dir = tempfile::tempdir().unwrap();
        let db = StudyDb::open(&dir.path().join("s.study.db")).unwrap();
        let c = cfg(1);
        assert!(db.put_run(&run(&c, 0, true)).unwrap());
        // A duplicate answer (or a late failure) of a stored run changes nothing.
        assert!(!db.put_run(&run(&c, 0, false)).unwrap());
        assert!(!db.put_run(&run(&c, 0, true)).unwrap());
        assert!(db.put_run(&run(&c, 1, false)).unwrap());
        assert_eq!(
            db.counts(&c.hash()).unwrap(),
            RunCounts { ok: 1, failed: 1 }
        );
        // --retry-failed: the retry's success replaces the stored failure.
        assert!(db.put_run(&run(&c, 1, true)).unwrap());
        assert_eq!(
            db.counts(&c.hash()).unwrap(),
            RunCounts { ok: 2, failed: 0 }
        );
        assert_eq!(db.runs().unwrap().len(), 2);
    }

    #[test]
    fn a_database_of_another_schema_version_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.study.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 9;")
            .unwrap();
        let err = StudyDb::open(&path).unwrap_err();
        assert!(
            matches!(err, StudyDbError::Version { found: 9, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("s.study.db"));
    }
}
