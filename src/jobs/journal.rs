//! The job journal and the result outbox: what makes "no lost jobs" true.
//!
//! Both tables live in the store's SQLite file (WAL) next to the trace store's own
//! tables, through this module's own connection (`busy_timeout` set, so the two
//! writers wait for each other instead of failing).
//!
//! - `journal`: one row per job id, written *before* the broker's copy is acked, so a
//!   crash after the ack finds the job here. The raw payload is kept: a redelivery
//!   is recognised by id + identical payload, and recovery re-parses it.
//! - `outbox`: every message that must reach the broker (terminal statuses, results,
//!   rejections) is inserted in the same transaction that records the job's outcome,
//!   and marked sent only after the broker's PUBACK. Unsent rows are republished at
//!   start-up, so delivery is at-least-once; consumers dedupe by job id.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::protocol::JobState;

/// Journal failures (SQLite errors, with the file named when opening).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the job journal '{path}': {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("job journal: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("job journal: the journal thread panicked")]
    Panicked,
    #[error("job journal: unknown state '{0}' in the database")]
    BadState(String),
}

/// Where to send a job's answers besides its own topics: the MQTT v5 Response Topic
/// and Correlation Data the job arrived with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// Response Topic of the job's PUBLISH.
    pub response_topic: Option<String>,
    /// Correlation Data of the job's PUBLISH, echoed back unchanged.
    pub correlation: Option<Vec<u8>>,
}

/// One job as the journal knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalJob {
    /// Job id.
    pub id: String,
    /// Last recorded state.
    pub state: JobState,
    /// How many times it was started (crash recovery re-runs at most once).
    pub attempts: u32,
    /// The payload exactly as received.
    pub payload: Vec<u8>,
    /// Response Topic and Correlation Data.
    pub reply: Reply,
    /// The topic it arrived on.
    pub source_topic: String,
    /// When it was journaled, ns since the epoch.
    pub received_unix_ns: u64,
    /// The result message, once terminal.
    pub result_json: Option<String>,
}

/// What [`Journal::admit`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// First time this id is seen; now recorded as `accepted`.
    New,
    /// The same job again (same id, same payload): a broker redelivery or a resubmission.
    Redelivered(JournalJob),
    /// The id belongs to a different job.
    Conflict(JournalJob),
}

/// A message to put in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Topic to publish on.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Retain flag.
    pub retain: bool,
    /// Correlation Data to attach (for Response Topic copies).
    pub correlation: Option<Vec<u8>>,
}

/// An outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Row id, increasing: publish in this order.
    pub seq: i64,
    /// The job it belongs to, if any.
    pub job_id: Option<String>,
    /// The message.
    pub msg: NewMessage,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal (
    id               TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    payload          BLOB NOT NULL,
    source_topic     TEXT NOT NULL DEFAULT '',
    response_topic   TEXT,
    correlation      BLOB,
    received_unix_ns INTEGER NOT NULL,
    updated_unix_ns  INTEGER NOT NULL,
    result_json      TEXT
);
CREATE INDEX IF NOT EXISTS journal_state ON journal(state);
CREATE TABLE IF NOT EXISTS outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          TEXT,
    topic           TEXT NOT NULL,
    payload         BLOB NOT NULL,
    retain          INTEGER NOT NULL DEFAULT 0,
    correlation     BLOB,
    created_unix_ns INTEGER NOT NULL,
    sent_unix_ns    INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(seq) WHERE sent_unix_ns IS NULL;
";

/// The journal over one SQLite connection. Blocking: call it through [`SharedJournal`]
/// from async code.
pub struct Journal {
    /// Our own connection to the store's file.
    conn: Connection,
}

fn now_ns() -> u64 {
    crate::clock::unix_ns()
}

impl Journal {
    /// Opens (creating if needed) the journal tables in the SQLite file at `path`.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let open_err = |source| JournalError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        // WAL for concurrent readers (the trace store, `edgewatt report`); FULL sync
        // so an acked job survives a power cut, not just a process crash.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(Journal { conn })
    }

    /// A write transaction that takes the write lock at BEGIN (`BEGIN IMMEDIATE`).
    /// A deferred one that reads first (`admit` looks the id up, then inserts) cannot
    /// be upgraded once the store's connection has committed in between: SQLite
    /// answers SQLITE_BUSY at once, without the busy timeout (WAL snapshot rule). The
    /// soak hit that at start-up, when store retention runs while the first jobs
    /// arrive (issue 14). Taking the lock first makes it wait instead.
    fn write_tx(&mut self) -> rusqlite::Result<Transaction<'_>> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
    }

    /// Records a newly received job as `accepted`, unless its id is known.
    pub fn admit(
        &mut self,
        id: &str,
        payload: &[u8],
        reply: &Reply,
        source_topic: &str,
    ) -> Result<Admission, JournalError> {
        let tx = self.write_tx()?;
        if let Some(existing) = get_job(&tx, id)? {
            tx.commit()?;
            return Ok(if existing.payload == payload {
                Admission::Redelivered(existing)
            } else {
                Admission::Conflict(existing)
            });
        }
        let now = now_ns() as i64;
        tx.execute(
            "INSERT INTO journal (id, state, attempts, payload, source_topic, response_topic, correlation, received_unix_ns, updated_unix_ns)
             VALUES (?1, 'accepted', 0, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![id, payload, source_topic, reply.response_topic, reply.correlation, now],
        )?;
        tx.commit()?;
        Ok(Admission::New)
    }

    /// Records a job refused before running, with its outbox messages, in one
    /// transaction. A job id already in the journal is left as it was (a conflicting
    /// duplicate must not overwrite the original); only the messages are queued.
    pub fn record_rejected(
        &mut self,
        id: &str,
        payload: &[u8],
        reply: &Reply,
        source_topic: &str,
        result_json: &str,
        messages: &[NewMessage],
    ) -> Result<Vec<OutboxEntry>, JournalError> {
        let tx = self.write_tx()?;
        let now = now_ns() as i64;
        tx.execute(
            "INSERT OR IGNORE INTO journal (id, state, attempts, payload, source_topic, response_topic, correlation, received_unix_ns, updated_unix_ns, result_json)
             VALUES (?1, 'rejected', 0, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
            params![id, payload, source_topic, reply.response_topic, reply.correlation, now, result_json],
        )?;
        let out = insert_outbox(&tx, Some(id), messages)?;
        tx.commit()?;
        Ok(out)
    }

    /// Queues messages that belong to no job (or whose job row must not change).
    pub fn enqueue(
        &mut self,
        job_id: Option<&str>,
        messages: &[NewMessage],
    ) -> Result<Vec<OutboxEntry>, JournalError> {
        let tx = self.write_tx()?;
        let out = insert_outbox(&tx, job_id, messages)?;
        tx.commit()?;
        Ok(out)
    }

    /// Marks a job `running` and counts the attempt; returns the attempt number (1 = first).
    pub fn start(&mut self, id: &str) -> Result<u32, JournalError> {
        let tx = self.write_tx()?;
        tx.execute(
            "UPDATE journal SET state = 'running', attempts = attempts + 1, updated_unix_ns = ?2 WHERE id = ?1",
            params![id, now_ns() as i64],
        )?;
        let attempts: u32 = tx
            .query_row("SELECT attempts FROM journal WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or(0);
        tx.commit()?;
        Ok(attempts)
    }

    /// Puts a job back to `accepted` (graceful shutdown with the job unfinished); the
    /// attempt does not count.
    pub fn requeue(&mut self, id: &str) -> Result<(), JournalError> {
        self.conn.execute(
            "UPDATE journal SET state = 'accepted', attempts = MAX(attempts - 1, 0), updated_unix_ns = ?2 WHERE id = ?1",
            params![id, now_ns() as i64],
        )?;
        Ok(())
    }

    /// Records a job's outcome and queues its messages, in one transaction.
    pub fn finish(
        &mut self,
        id: &str,
        state: JobState,
        result_json: &str,
        messages: &[NewMessage],
    ) -> Result<Vec<OutboxEntry>, JournalError> {
        let tx = self.write_tx()?;
        tx.execute(
            "UPDATE journal SET state = ?2, result_json = ?3, updated_unix_ns = ?4 WHERE id = ?1",
            params![id, state.as_str(), result_json, now_ns() as i64],
        )?;
        let out = insert_outbox(&tx, Some(id), messages)?;
        tx.commit()?;
        Ok(out)
    }

    /// Outbox rows not yet acknowledged by the broker, oldest first.
    pub fn unsent(&self) -> Result<Vec<OutboxEntry>, JournalError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, job_id, topic, payload, retain, correlation FROM outbox WHERE sent_unix_ns IS NULL ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(OutboxEntry {
                seq: r.get(0)?,
                job_id: r.get(1)?,
                msg: NewMessage {
                    topic: r.get(2)?,
                    payload: r.get(3)?,
                    retain: r.get::<_, i64>(4)? != 0,
                    correlation: r.get(5)?,
                },
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Marks outbox rows as acknowledged by the broker.
    pub fn mark_sent(&mut self, seqs: &[i64]) -> Result<(), JournalError> {
        let tx = self.write_tx()?;
        {
            let mut stmt = tx.prepare("UPDATE outbox SET sent_unix_ns = ?2 WHERE seq = ?1")?;
            let now = now_ns() as i64;
            for s in seqs {
                stmt.execute(params![s, now])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Jobs that were accepted or running when the daemon last stopped, oldest first.
    pub fn unfinished(&self) -> Result<Vec<JournalJob>, JournalError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM journal WHERE state IN ('accepted', 'running') ORDER BY received_unix_ns, id"
        ))?;
        let rows = stmt.query_map([], row_to_job)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// One job by id.
    pub fn get(&self, id: &str) -> Result<Option<JournalJob>, JournalError> {
        get_job(&self.conn, id)
    }

    /// Deletes terminal jobs and sent outbox rows older than `before_unix_ns`.
    pub fn prune(&mut self, before_unix_ns: u64) -> Result<usize, JournalError> {
        let tx = self.write_tx()?;
        let n = tx.execute(
            "DELETE FROM journal WHERE state NOT IN ('accepted', 'running') AND updated_unix_ns < ?1",
            [before_unix_ns as i64],
        )?;
        tx.execute(
            "DELETE FROM outbox WHERE sent_unix_ns IS NOT NULL AND sent_unix_ns < ?1",
            [before_unix_ns as i64],
        )?;
        tx.commit()?;
        Ok(n)
    }
}

const JOB_COLUMNS: &str = "id, state, attempts, payload, response_topic, correlation, source_topic, received_unix_ns, result_json";

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<JournalJob, JournalError>> {
    let state: String = r.get(1)?;
    let Some(state) = JobState::parse(&state) else {
        return Ok(Err(JournalError::BadState(state)));
    };
    Ok(Ok(JournalJob {
        id: r.get(0)?,
        state,
        attempts: r.get(2)?,
        payload: r.get(3)?,
        reply: Reply {
            response_topic: r.get(4)?,
            correlation: r.get(5)?,
        },
        source_topic: r.get(6)?,
        received_unix_ns: r.get::<_, i64>(7)? as u64,
        result_json: r.get(8)?,
    }))
}

fn get_job(conn: &Connection, id: &str) -> Result<Option<JournalJob>, JournalError> {
    let row = conn
        .query_row(
            &format!("SELECT {JOB_COLUMNS} FROM journal WHERE id = ?1"),
            [id],
            row_to_job,
        )
        .optional()?;
    row.transpose()
}

fn insert_outbox(
    conn: &Connection,
    job_id: Option<&str>,
    messages: &[NewMessage],
) -> Result<Vec<OutboxEntry>, JournalError> {
    let now = now_ns() as i64;
    let mut stmt = conn.prepare(
        "INSERT INTO outbox (job_id, topic, payload, retain, correlation, created_unix_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        stmt.execute(params![
            job_id,
            m.topic,
            m.payload,
            m.retain as i64,
            m.correlation,
            now
        ])?;
        out.push(OutboxEntry {
            seq: conn.last_insert_rowid(),
            job_id: job_id.map(str::to_string),
            msg: m.clone(),
        });
    }
    Ok(out)
}

/// The journal shared by the daemon's tasks. Every call runs on tokio's blocking
/// pool, never on the async workers (SQLite with `synchronous = FULL` fsyncs).
#[derive(Clone)]
pub struct SharedJournal {
    /// The one connection, behind a mutex: calls are short and serialised anyway.
    inner: Arc<Mutex<Journal>>,
}

impl SharedJournal {
    /// Wraps an opened journal.
    pub fn new(journal: Journal) -> Self {
        SharedJournal {
            inner: Arc::new(Mutex::new(journal)),
        }
    }

    /// Runs `f` on the journal on the blocking pool.
    pub async fn call<R, F>(&self, f: F) -> Result<R, JournalError>
    where
        F: FnOnce(&mut Journal) -> Result<R, JournalError> + Send + 'static,
        R: Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock().map_err(|_| JournalError::Panicked)?;
            f(&mut guard)
        })
        .await
        .map_err(|_| JournalError::Panicked)?
    }
}

#[cfg(test)]
mod tests {
    /// Regression (the soak, issue 14): another connection commits between `admit`'s
    /// lookup and its insert; with a deferred transaction that was an immediate
    /// `database is locked`, now `admit` waits for the lock and succeeds.
    #[test]
    fn admit_waits_for_a_concurrent_writer_instead_of_failing_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.db");
        let mut j = Journal::open(&path).unwrap();
        for round in 0..20 {
            let other = Connection::open(&path).unwrap();
            other
                .busy_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            other
                .execute_batch("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
                .unwrap();
            let writer = std::thread::spawn(move || {
                for _ in 0..50 {
                    other.execute("INSERT INTO t VALUES (1)", []).unwrap();
                }
            });
            for k in 0..50 {
                let id = format!("j-{round}-{k}");
                j.admit(&id, b"{}", &Reply::default(), "t").unwrap();
            }
            writer.join().unwrap();
        }
    }

    use super::*;

    fn msg(topic: &str) -> NewMessage {
        NewMessage {
            topic: topic.into(),
            payload: b"{}".to_vec(),
            retain: false,
            correlation: Some(vec![1, 2]),
        }
    }

    #[test]
    fn admit_recognises_redelivery_and_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("s.db")).unwrap();
        let reply = Reply {
            response_topic: Some("r/1".into()),
            correlation: Some(vec![9]),
        };
        assert_eq!(j.admit("a", b"p1", &reply, "t").unwrap(), Admission::New);
        match j.admit("a", b"p1", &reply, "t").unwrap() {
            Admission::Redelivered(job) => {
                assert_eq!(job.state, JobState::Accepted);
                assert_eq!(job.reply, reply);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            j.admit("a", b"p2", &reply, "t").unwrap(),
            Admission::Conflict(_)
        ));
    }

    #[test]
    fn outbox_survives_reopen_until_marked_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let mut j = Journal::open(&path).unwrap();
            j.admit("a", b"p", &Reply::default(), "t").unwrap();
            assert_eq!(j.start("a").unwrap(), 1);
            let out = j
                .finish(
                    "a",
                    JobState::Succeeded,
                    "{\"id\":\"a\"}",
                    &[msg("x"), msg("y")],
                )
                .unwrap();
            assert_eq!(out.len(), 2);
            j.mark_sent(&[out[0].seq]).unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let unsent = j.unsent().unwrap();
        assert_eq!(unsent.len(), 1);
        assert_eq!(unsent[0].msg.topic, "y");
        assert_eq!(unsent[0].msg.correlation, Some(vec![1, 2]));
        let job = j.get("a").unwrap().unwrap();
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.result_json.as_deref(), Some("{\"id\":\"a\"}"));
        assert!(j.unfinished().unwrap().is_empty());
    }

    #[test]
    fn unfinished_lists_accepted_and_running_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("s.db")).unwrap();
        j.admit("a", b"1", &Reply::default(), "t").unwrap();
        j.admit("b", b"2", &Reply::default(), "t").unwrap();
        j.start("a").unwrap();
        let u = j.unfinished().unwrap();
        assert_eq!(
            u.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(u[0].state, JobState::Running);
        assert_eq!(u[0].attempts, 1);
        j.requeue("a").unwrap();
        assert_eq!(j.get("a").unwrap().unwrap().attempts, 0);
    }

    #[test]
    fn rejected_duplicate_does_not_overwrite_original() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("s.db")).unwrap();
        j.admit("a", b"1", &Reply::default(), "t").unwrap();
        let out = j
            .record_rejected("a", b"2", &Reply::default(), "t", "{}", &[msg("s")])
            .unwrap();
        assert_eq!(out.len(), 1);
        let job = j.get("a").unwrap().unwrap();
        assert_eq!(job.state, JobState::Accepted);
        assert_eq!(job.payload, b"1");
    }
}
