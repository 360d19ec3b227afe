//! SQLite store in the state directory: jobs (request, result, energy, state) and
//! traces (samples as a packed little-endian blob, markers and the rest as JSON).
//!
//! WAL journal, `synchronous=FULL` (edge boards lose power: a commit that returned
//! must survive it) and a busy timeout, so the daemon's own tables (journal,
//! outbox) can live in the same file behind another connection.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::clock::{unix_ns, ClockAnchor};
use crate::power::{RailInfo, Sample};

use super::thermal::ThermalSeries;
use super::trace::{Gap, Marker, Trace};

/// How long a writer waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Blob format tag: "EWS" + version 1.
const SAMPLES_MAGIC: [u8; 4] = *b"EWS1";
/// Bytes per packed sample: t_before u64, t_after u64, rail u16, bus_mv u32,
/// current_ua i64, power_uw i64.
const SAMPLE_BYTES: usize = 8 + 8 + 2 + 4 + 8 + 8;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    request_json     TEXT,
    result_json      TEXT,
    energy_json      TEXT,
    created_unix_ns  INTEGER NOT NULL,
    updated_unix_ns  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_unix_ns);
CREATE TABLE IF NOT EXISTS traces (
    job_id           TEXT PRIMARY KEY,
    meta_json        TEXT NOT NULL,
    markers_json     TEXT NOT NULL,
    samples          BLOB NOT NULL,
    sample_count     INTEGER NOT NULL,
    bytes            INTEGER NOT NULL,
    created_unix_ns  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_created ON traces(created_unix_ns);
";

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store '{path}': {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot encode or decode stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("stored samples of job '{job}' are corrupt: {why}")]
    Corrupt { job: String, why: String },
}

/// One row of `jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    /// Job id (primary key).
    pub id: String,
    /// Free-form state name (the daemon's: queued, running, done, failed, …).
    pub state: String,
    /// The request as received, JSON.
    pub request_json: Option<String>,
    /// The result as published, JSON.
    pub result_json: Option<String>,
    /// The result's `energy` object (EnergySummary), JSON.
    pub energy_json: Option<String>,
    /// Row creation, unix ns.
    pub created_unix_ns: i64,
    /// Last change, unix ns (retention ages by it).
    pub updated_unix_ns: i64,
}

/// What `apply_retention` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Job rows removed (age limit).
    pub jobs_deleted: u64,
    /// Traces removed (age and size limits).
    pub traces_deleted: u64,
    /// Bytes of the traces removed.
    pub trace_bytes_freed: u64,
}

/// Everything of a trace except samples and markers, stored as JSON.
#[derive(Serialize, Deserialize)]
struct TraceMeta {
    model: Option<String>,
    rails: Vec<RailInfo>,
    simulated: bool,
    anchor: ClockAnchor,
    sampler_stats: serde_json::Value,
    gaps: Vec<Gap>,
    thermal: Option<ThermalSeries>,
}

/// Packs samples into the blob format.
pub fn pack_samples(samples: &[Sample]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SAMPLES_MAGIC.len() + samples.len() * SAMPLE_BYTES);
    out.extend_from_slice(&SAMPLES_MAGIC);
    for s in samples {
        out.extend_from_slice(&s.t_before_ns.to_le_bytes());
        out.extend_from_slice(&s.t_after_ns.to_le_bytes());
        out.extend_from_slice(&s.rail.to_le_bytes());
        out.extend_from_slice(&s.bus_mv.to_le_bytes());
        out.extend_from_slice(&s.current_ua.to_le_bytes());
        out.extend_from_slice(&s.power_uw.to_le_bytes());
    }
    out
}

/// Unpacks a blob written by [`pack_samples`]; `Err` names what is wrong.
pub fn unpack_samples(blob: &[u8]) -> Result<Vec<Sample>, String> {
    let body = blob
        .strip_prefix(&SAMPLES_MAGIC)
        .ok_or_else(|| "unknown sample blob format (expected 'EWS1')".to_string())?;
    if body.len() % SAMPLE_BYTES != 0 {
        return Err(format!(
            "blob length {} is not a multiple of {SAMPLE_BYTES}",
            body.len()
        ));
    }
    fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&b[..N]);
        a
    }
    Ok(body
        .chunks_exact(SAMPLE_BYTES)
        .map(|c| Sample {
            t_before_ns: u64::from_le_bytes(arr(&c[0..])),
            t_after_ns: u64::from_le_bytes(arr(&c[8..])),
            rail: u16::from_le_bytes(arr(&c[16..])),
            bus_mv: u32::from_le_bytes(arr(&c[18..])),
            current_ua: i64::from_le_bytes(arr(&c[22..])),
            power_uw: i64::from_le_bytes(arr(&c[30..])),
        })
        .collect())
}

fn now_i64() -> i64 {
    i64::try_from(unix_ns()).unwrap_or(i64::MAX)
}

/// A connection to the store. Not `Sync`: open one per thread (cheap), or share
/// it behind a mutex.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the store at `path` and its schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // journal_mode returns a row; query it rather than execute.
        let _mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        conn.execute_batch("PRAGMA synchronous=FULL;")
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(Store { conn })
    }

    /// The underlying connection (for `PRAGMA integrity_check` and the like).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Inserts a job, or replaces its state and request when it exists.
    pub fn upsert_job(&self, id: &str, state: &str, request_json: &str) -> Result<(), StoreError> {
        let now = now_i64();
        self.conn.execute(
            "INSERT INTO jobs (id, state, request_json, created_unix_ns, updated_unix_ns)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT(id) DO UPDATE SET state = ?2, request_json = ?3, updated_unix_ns = ?4",
            params![id, state, request_json, now],
        )?;
        Ok(())
    }

    /// Sets a job's state; returns false when there is no such job.
    pub fn set_state(&self, id: &str, state: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE jobs SET state = ?2, updated_unix_ns = ?3 WHERE id = ?1",
            params![id, state, now_i64()],
        )?;
        Ok(n > 0)
    }

    /// Stores a job's result and state (creating the row when missing, e.g. for a
    /// local `generate` run). The result's `energy` object, when present, is also
    /// kept in `energy_json`.
    pub fn set_result(&self, id: &str, state: &str, result_json: &str) -> Result<(), StoreError> {
        let energy = serde_json::from_str::<serde_json::Value>(result_json)
            .ok()
            .and_then(|v| v.get("energy").cloned())
            .filter(|e| !e.is_null())
            .map(|e| e.to_string());
        let now = now_i64();
        self.conn.execute(
            "INSERT INTO jobs (id, state, result_json, energy_json, created_unix_ns, updated_unix_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT(id) DO UPDATE SET state = ?2, result_json = ?3,
                 energy_json = COALESCE(?4, energy_json), updated_unix_ns = ?5",
            params![id, state, result_json, energy, now],
        )?;
        Ok(())
    }

    /// Stores a job's energy summary JSON on its own (creating the row as `done`).
    pub fn set_energy(&self, id: &str, energy_json: &str) -> Result<(), StoreError> {
        let now = now_i64();
        self.conn.execute(
            "INSERT INTO jobs (id, state, energy_json, created_unix_ns, updated_unix_ns)
             VALUES (?1, 'done', ?2, ?3, ?3)
             ON CONFLICT(id) DO UPDATE SET energy_json = ?2, updated_unix_ns = ?3",
            params![id, energy_json, now],
        )?;
        Ok(())
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
        Ok(JobRow {
            id: r.get(0)?,
            state: r.get(1)?,
            request_json: r.get(2)?,
            result_json: r.get(3)?,
            energy_json: r.get(4)?,
            created_unix_ns: r.get(5)?,
            updated_unix_ns: r.get(6)?,
        })
    }

    /// One job.
    pub fn get_job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, state, request_json, result_json, energy_json, created_unix_ns,
                        updated_unix_ns FROM jobs WHERE id = ?1",
                params![id],
                Self::row,
            )
            .optional()?)
    }

    /// All jobs, oldest first.
    pub fn list_jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, state, request_json, result_json, energy_json, created_unix_ns,
                    updated_unix_ns FROM jobs ORDER BY created_unix_ns, id",
        )?;
        let rows = st.query_map([], Self::row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Stores (or replaces) a job's trace in one transaction.
    pub fn put_trace(&self, trace: &Trace) -> Result<(), StoreError> {
        let meta = serde_json::to_string(&TraceMeta {
            model: trace.model.clone(),
            rails: trace.rails.clone(),
            simulated: trace.simulated,
            anchor: trace.anchor,
            sampler_stats: trace.sampler_stats.clone(),
            gaps: trace.gaps.clone(),
            thermal: trace.thermal.clone(),
        })?;
        let markers = serde_json::to_string(&trace.markers)?;
        let blob = pack_samples(&trace.samples);
        let bytes = (blob.len() + meta.len() + markers.len()) as i64;
        self.conn.execute(
            "INSERT OR REPLACE INTO traces
                 (job_id, meta_json, markers_json, samples, sample_count, bytes, created_unix_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                trace.job_id,
                meta,
                markers,
                blob,
                trace.samples.len() as i64,
                bytes,
                now_i64()
            ],
        )?;
        Ok(())
    }

    /// A job's trace.
    pub fn get_trace(&self, job_id: &str) -> Result<Option<Trace>, StoreError> {
        let row: Option<(String, String, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT meta_json, markers_json, samples FROM traces WHERE job_id = ?1",
                params![job_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((meta, markers, blob)) = row else {
            return Ok(None);
        };
        let meta: TraceMeta = serde_json::from_str(&meta)?;
        let markers: Vec<Marker> = serde_json::from_str(&markers)?;
        let samples = unpack_samples(&blob).map_err(|why| StoreError::Corrupt {
            job: job_id.to_string(),
            why,
        })?;
        Ok(Some(Trace {
            job_id: job_id.to_string(),
            model: meta.model,
            rails: meta.rails,
            simulated: meta.simulated,
            anchor: meta.anchor,
            samples,
            markers,
            sampler_stats: meta.sampler_stats,
            gaps: meta.gaps,
            thermal: meta.thermal,
        }))
    }

    /// Total bytes of stored traces.
    pub fn trace_bytes(&self) -> Result<u64, StoreError> {
        let n: i64 =
            self.conn
                .query_row("SELECT COALESCE(SUM(bytes), 0) FROM traces", [], |r| {
                    r.get(0)
                })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes jobs and traces older than `max_age` (by last update / creation),
    /// then the oldest traces until the traces' bytes fit `max_bytes` (job rows
    /// are small and kept). `None` disables a limit.
    pub fn apply_retention(
        &mut self,
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Result<RetentionReport, StoreError> {
        let mut rep = RetentionReport::default();
        // BEGIN IMMEDIATE: this transaction reads before it deletes, and a deferred one
        // cannot take the write lock after the journal's connection committed in
        // between (SQLITE_BUSY at once, no busy timeout; seen in the soak, issue 14).
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if let Some(age) = max_age {
            let age_ns = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
            let cutoff = now_i64().saturating_sub(age_ns);
            let freed: i64 = tx.query_row(
                "SELECT COALESCE(SUM(bytes), 0) FROM traces WHERE created_unix_ns < ?1",
                params![cutoff],
                |r| r.get(0),
            )?;
            rep.traces_deleted += tx.execute(
                "DELETE FROM traces WHERE created_unix_ns < ?1",
                params![cutoff],
            )? as u64;
            rep.trace_bytes_freed += u64::try_from(freed).unwrap_or(0);
            rep.jobs_deleted += tx.execute(
                "DELETE FROM jobs WHERE updated_unix_ns < ?1",
                params![cutoff],
            )? as u64;
        }
        if let Some(limit) = max_bytes {
            let mut total: i64 =
                tx.query_row("SELECT COALESCE(SUM(bytes), 0) FROM traces", [], |r| {
                    r.get(0)
                })?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let victims: Vec<(String, i64)> = {
                let mut st = tx
                    .prepare("SELECT job_id, bytes FROM traces ORDER BY created_unix_ns, job_id")?;
                let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let mut v = Vec::new();
                for row in rows {
                    if total <= limit {
                        break;
                    }
                    let (id, bytes): (String, i64) = row?;
                    total -= bytes;
                    v.push((id, bytes));
                }
                v
            };
            for (id, bytes) in victims {
                tx.execute("DELETE FROM traces WHERE job_id = ?1", params![id])?;
                rep.traces_deleted += 1;
                rep.trace_bytes_freed += u64::try_from(bytes).unwrap_or(0);
            }
        }
        tx.commit()?;
        Ok(rep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u64) -> Sample {
        Sample {
            t_before_ns: i * 10,
            t_after_ns: i * 10 + 3,
            rail: (i % 3) as u16,
            bus_mv: 5000 + i as u32,
            current_ua: -(i as i64) * 7,
            power_uw: i as i64 * 1_000_003,
        }
    }

    #[test]
    fn samples_round_trip() {
        let v: Vec<Sample> = (0..100).map(sample).collect();
        let blob = pack_samples(&v);
        assert_eq!(blob.len(), 4 + 100 * SAMPLE_BYTES);
        assert_eq!(unpack_samples(&blob), Ok(v));
        assert!(unpack_samples(b"XXXX").is_err());
        assert!(unpack_samples(&blob[..blob.len() - 1]).is_err());
    }

    #[test]
    fn jobs_crud() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = Store::open(&d.path().join("s.db")).expect("open");
        s.upsert_job("a", "queued", "{}").expect("upsert");
        assert!(s.set_state("a", "running").expect("state"));
        assert!(!s.set_state("nope", "running").expect("state"));
        s.set_result("a", "done", r#"{"energy":{"definitions":"x"}}"#)
            .expect("result");
        let row = s.get_job("a").expect("get").expect("row");
        assert_eq!(row.state, "done");
        assert_eq!(row.request_json.as_deref(), Some("{}"));
        assert_eq!(row.energy_json.as_deref(), Some(r#"{"definitions":"x"}"#));
        s.set_result("b", "done", "{}")
            .expect("result without upsert");
        assert_eq!(s.list_jobs().expect("list").len(), 2);
        assert_eq!(s.get_job("zz").expect("get"), None);
    }
}
