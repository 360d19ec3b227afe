//! The SQLite store: round trips, several connections on one file, retention, and
//! a writer killed with SIGKILL mid-write (the test binary re-executes itself as
//! the writer).

mod trace_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgewatt::trace::thermal::{ThermalReading, ThermalSeries, ThermalSources};
use edgewatt::trace::{Gap, Store};
use trace_common::*;

/// Set in the child: the database the writer writes to.
const CHILD_ENV: &str = "EDGEWATT_TRACE_STORE_CRASH_DB";

fn big_trace(job: &str, n: u64) -> edgewatt::trace::Trace {
    let j = Job::typical();
    let samples = sample_wave(
        Wave::Sine {
            mean_w: 4.0,
            amp_w: 1.0,
            hz: 2.0,
        },
        0,
        T0_NS,
        T0_NS + n * MS / 10,
        Sampling::regular(MS / 10),
    );
    let mut t = trace_with(vec![rail("VDD_IN", true)], samples, j.markers());
    t.job_id = job.to_string();
    t
}

/// Not a test on its own: the writer half of `killed_writer_leaves_a_consistent_store`.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&path)).expect("child open");
    for i in 0u64.. {
        let id = format!("job-{i}");
        store.upsert_job(&id, "running", "{}").expect("upsert");
        store.put_trace(&big_trace(&id, 20_000)).expect("trace");
        store
            .set_result(
                &id,
                "done",
                &format!(r#"{{"i":{i},"energy":{{"avg_w":1.0}}}}"#),
            )
            .expect("result");
        println!("committed {i}");
    }
}

#[test]
fn killed_writer_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("edgewatt.db");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("stdout");
    let mut last: Option<u64> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(n) = line.strip_prefix("committed ") {
            last = Some(n.trim().parse().expect("n"));
        }
        if last >= Some(15) || Instant::now() > deadline {
            break;
        }
    }
    // SIGKILL: the writer is in the middle of its next job's writes.
    child.kill().expect("kill");
    let status = child.wait().expect("wait");
    assert!(!status.success());
    let last = last.expect("the writer committed something");

    let store = Store::open(&db).expect("reopen after crash");
    let check: String = store
        .connection()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    let mode: String = store
        .connection()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    for i in 0..=last {
        let id = format!("job-{i}");
        let row = store.get_job(&id).expect("get").expect("committed row");
        assert_eq!(row.state, "done");
        let t = store
            .get_trace(&id)
            .expect("get trace")
            .expect("committed trace");
        assert_eq!(t.samples.len(), big_trace(&id, 20_000).samples.len());
    }
    // Whatever the killed transaction wrote is either all there or absent.
    let next = format!("job-{}", last + 1);
    if let Some(t) = store.get_trace(&next).expect("get") {
        assert_eq!(t.samples.len(), big_trace(&next, 20_000).samples.len());
    }
    // And the store is writable again.
    store
        .upsert_job("after", "queued", "{}")
        .expect("write after crash");
}

#[test]
fn trace_round_trips_with_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("s.db")).expect("open");
    let mut t = big_trace("rt", 300);
    t.sampler_stats = serde_json::json!({"rate_hz": 1000.0, "errors": 2});
    t.gaps = vec![Gap {
        rail: 0,
        start_ns: T0_NS,
        end_ns: T0_NS + MS,
        reason: "bus error".into(),
    }];
    t.thermal = Some(ThermalSeries {
        sources: ThermalSources {
            zones: vec!["cpu-thermal".into()],
            cpus: vec![0, 1],
            throttle: false,
        },
        readings: vec![ThermalReading {
            t_ns: T0_NS,
            temp_mc: vec![Some(45_000)],
            freq_khz: vec![Some(1_500_000), None],
            throttled: None,
        }],
    });
    store.put_trace(&t).expect("put");
    assert_eq!(store.get_trace("rt").expect("get"), Some(t.clone()));
    assert_eq!(store.get_trace("missing").expect("get"), None);
    // Replacing keeps one row.
    store.put_trace(&t).expect("put again");
    assert_eq!(store.get_trace("rt").expect("get"), Some(t));
}

#[test]
fn several_connections_share_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shared.db");
    let first = Store::open(&db).expect("open");
    // The daemon's own tables in the same file, through a plain connection.
    let other = rusqlite::Connection::open(&db).expect("raw");
    other.busy_timeout(Duration::from_secs(5)).expect("busy");
    other
        .execute_batch("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, body TEXT)")
        .expect("outbox");
    let threads: Vec<_> = (0..3)
        .map(|k| {
            let db = db.clone();
            std::thread::spawn(move || {
                let s = Store::open(&db).expect("open in thread");
                for i in 0..50 {
                    let id = format!("t{k}-{i}");
                    s.upsert_job(&id, "queued", "{}").expect("upsert");
                    s.set_result(&id, "done", "{}").expect("result");
                }
            })
        })
        .collect();
    for i in 0..100 {
        other
            .execute("INSERT INTO outbox (body) VALUES (?1)", [format!("m{i}")])
            .expect("outbox insert");
    }
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(first.list_jobs().expect("list").len(), 150);
    let n: i64 = other
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 100);
}

#[test]
fn retention_by_age_and_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(&dir.path().join("r.db")).expect("open");
    for i in 0..5 {
        let id = format!("j{i}");
        store.upsert_job(&id, "done", "{}").expect("upsert");
        store.put_trace(&big_trace(&id, 200)).expect("put");
    }
    // Age j0 and j1 by a day.
    let day_ns: i64 = 86_400 * 1_000_000_000;
    store
        .connection()
        .execute(
            "UPDATE jobs SET updated_unix_ns = updated_unix_ns - ?1, created_unix_ns = created_unix_ns - ?1 WHERE id IN ('j0','j1')",
            [day_ns],
        )
        .expect("age jobs");
    store
        .connection()
        .execute(
            "UPDATE traces SET created_unix_ns = created_unix_ns - ?1 WHERE job_id IN ('j0','j1')",
            [day_ns],
        )
        .expect("age traces");
    // Make creation order explicit for the size pass: j2 < j3 < j4.
    for (k, id) in ["j2", "j3", "j4"].iter().enumerate() {
        store
            .connection()
            .execute(
                "UPDATE traces SET created_unix_ns = created_unix_ns + ?1 WHERE job_id = ?2",
                rusqlite::params![k as i64, id],
            )
            .expect("order");
    }
    let rep = store
        .apply_retention(Some(Duration::from_secs(3600)), None)
        .expect("age retention");
    assert_eq!((rep.jobs_deleted, rep.traces_deleted), (2, 2));
    assert!(store.get_job("j0").expect("get").is_none());
    assert!(store.get_trace("j1").expect("get").is_none());

    let per_trace = store.trace_bytes().expect("bytes") / 3;
    let rep = store
        .apply_retention(None, Some(per_trace * 2))
        .expect("size retention");
    assert_eq!(rep.traces_deleted, 1);
    assert!(
        store.get_trace("j2").expect("get").is_none(),
        "oldest goes first"
    );
    assert!(store.get_trace("j4").expect("get").is_some());
    assert!(
        store.get_job("j2").expect("get").is_some(),
        "job rows are kept"
    );
    assert!(store.trace_bytes().expect("bytes") <= per_trace * 2);
}
