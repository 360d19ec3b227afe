//! Soak and faults (issue 14): three real `edgewatt daemon` processes on a real
//! Mosquitto with the real SmolLM2 model, a seeded mix of jobs (short generations of
//! different lengths, perplexity with `max_chunks = 1`, jobs canceled while queued or
//! running, malformed payloads), and seeded chaos: `kill -9` of daemons, broker
//! restarts, the disk board's store filesystem (a small tmpfs) filled up and freed,
//! and simulated I2C faults (NACK storms, a stuck bus, brown-outs, bus errors) firing
//! during jobs. Every job must be answered exactly once (succeeded, or with an error
//! code); no daemon may panic or die; the long run also reports RSS drift and the
//! journal/store sizes.
//!
//! - `cargo test --release --test soak` — the short version (part of `make test`)
//! - `make soak` — the long run (`SOAK_JOBS`, `SOAK_SEED`, `SOAK_KILLS`,
//!   `SOAK_BROKER_RESTARTS`, `SOAK_DISK_FULL`, `SOAK_REPORT` = a file for the table)

#[path = "../daemon_support/mod.rs"]
mod daemon_support;
mod fleet;
mod plan;
mod tally;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use daemon_support::{Broker, Client, P};
use fleet::{Board, Disk, DiskMode};
use plan::{Chaos, Kind, Rng, Sizes};
use tally::Tally;

const REPLY: &str = "soak/reply";

/// What a run measured.
struct Report {
    sizes: Sizes,
    disk: DiskMode,
    outcome: tally::Outcome,
    panics: usize,
    died: usize,
    bad_exits: Vec<String>,
    rss_start_kib: Option<u64>,
    rss_end_kib: Option<u64>,
    rss_max_kib: u64,
    wall: Duration,
    /// (device, store bytes, journal rows, unsent outbox rows, stored jobs, traces, starts).
    boards: Vec<(String, u64, i64, i64, i64, i64, u32)>,
    /// Per disk-full episode: codes answered to jobs sent while full, and the state of
    /// the first job after space came back.
    disk_episodes: Vec<(Vec<String>, String)>,
    /// Board-0 jobs answered `succeeded` whose journal row is not `succeeded` at the end.
    earlier_lost: usize,
    chaos_applied: HashMap<&'static str, usize>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Moves the replies received so far into the tally.
fn drain(c: &mut Client, t: &mut Tally) {
    for m in c.msgs.drain(..) {
        if m.topic == REPLY {
            if let Some(corr) = &m.correlation {
                t.record(&String::from_utf8_lossy(corr), &m.json(), &m.payload);
            }
        }
    }
}

async fn run(s: Sizes, max_outstanding: usize, stall: Duration) -> Report {
    let t0 = Instant::now();
    let root = tempfile::tempdir().unwrap();
    if std::env::var_os("SOAK_KEEP").is_some() {
        eprintln!("soak: state and logs kept in {}", root.path().display());
    }
    let mut broker = Broker::start();
    let disk = Disk::mount(&root.path().join("soak0"));
    let mut disk = disk;
    let mut boards: Vec<Board> = (0..s.boards)
        .map(|b| Board::new(root.path(), &broker.url(), b))
        .collect();
    let mut rng = Rng::new(s.seed);
    let jobs = plan::jobs(&s, &mut rng);
    let chaos = plan::chaos(&s, &mut rng);

    let mut c = Client::connect(&broker.url(), &[REPLY, &format!("{P}/+/status")], true).await;
    for b in &mut boards {
        b.start();
    }
    for b in &boards {
        daemon_support::wait_online(&mut c, P, &b.device).await;
    }
    c.msgs.clear();

    let mut t = Tally::default();
    let mut cancels: Vec<(Instant, String, String)> = Vec::new();
    let mut chaos_at = chaos.iter().peekable();
    let mut chaos_applied: HashMap<&'static str, usize> = HashMap::new();
    let mut sent_to: HashMap<String, usize> = HashMap::new();
    let mut episodes: Vec<(Vec<String>, Option<String>)> = Vec::new();
    let mut awaiting_after_back = false;
    let mut rss_start_kib = None;
    let mut rss_max_kib = 0;
    let warmup = (s.jobs / 20).max(10).min(s.jobs);
    let rss_board = s.boards - 1;
    let mut died = 0;

    // One step of housekeeping: replies, due cancels, due restarts, RSS.
    macro_rules! tick {
        ($dur:expr) => {{
            c.pump($dur).await;
            drain(&mut c, &mut t);
            let now = Instant::now();
            for (_, dev, id) in cancels.iter().filter(|(at, _, _)| *at <= now) {
                c.publish(&format!("{P}/{dev}/job/{id}/cancel"), "{}", None)
                    .await;
            }
            cancels.retain(|(at, _, _)| *at > now);
            for b in boards.iter_mut() {
                b.due();
                if !b.alive() {
                    died += 1;
                    eprintln!("soak: {} died on its own; restarting it", b.device);
                    b.start();
                }
            }
            if let Some(r) = boards[rss_board].rss_kib() {
                rss_max_kib = rss_max_kib.max(r);
            }
        }};
    }

    for (i, j) in jobs.iter().enumerate() {
        while let Some((_, ev)) = chaos_at.next_if(|(at, _)| *at <= i) {
            match ev {
                Chaos::Kill { board, down_ms } => {
                    if *board == 0 && disk.full {
                        continue;
                    }
                    eprintln!("soak: job {i}: kill -9 {}", boards[*board].device);
                    boards[*board].kill9(Duration::from_millis(*down_ms));
                    *chaos_applied.entry("kill -9").or_default() += 1;
                }
                Chaos::BrokerRestart => {
                    eprintln!("soak: job {i}: broker restart");
                    tokio::task::block_in_place(|| {
                        broker.stop();
                        std::thread::sleep(Duration::from_millis(1500));
                        broker.restart();
                    });
                    *chaos_applied.entry("broker restart").or_default() += 1;
                }
                Chaos::DiskFull if disk.mode == DiskMode::Tmpfs && !disk.full => {
                    eprintln!("soak: job {i}: store filesystem of soak0 full");
                    tokio::task::block_in_place(|| disk.fill());
                    episodes.push((Vec::new(), None));
                    *chaos_applied.entry("disk full").or_default() += 1;
                }
                Chaos::SpaceBack if disk.full => {
                    eprintln!("soak: job {i}: space back on soak0");
                    disk.free();
                    awaiting_after_back = true;
                }
                _ => {}
            }
        }
        // Back-pressure: a bounded number of unanswered jobs; a stall moves on (what
        // never comes back is counted as lost at the end).
        let mut last_progress = Instant::now();
        let mut answered = t.answers.len();
        while sent_to.len() - t.answers.len().min(sent_to.len()) >= max_outstanding {
            tick!(Duration::from_millis(100));
            if t.answers.len() != answered {
                answered = t.answers.len();
                last_progress = Instant::now();
            } else if last_progress.elapsed() > stall {
                eprintln!(
                    "soak: no answer for {stall:?} with {max_outstanding} outstanding; moving on"
                );
                break;
            }
        }
        // While the disk board's store is full, jobs go to it (that is the point).
        let board = if disk.full && j.kind != Kind::Malformed {
            0
        } else {
            j.board
        };
        let dev = boards[board].device.clone();
        if board == 0 && j.kind != Kind::Malformed {
            if disk.full {
                if let Some(e) = episodes.last_mut() {
                    e.0.push(j.id.clone());
                }
            } else if awaiting_after_back && matches!(j.kind, Kind::Generate | Kind::Perplexity) {
                if let Some(e) = episodes.last_mut() {
                    e.1 = Some(j.id.clone());
                }
                awaiting_after_back = false;
            }
        }
        c.submit_job(P, &dev, j.payload.clone(), REPLY, j.id.as_bytes())
            .await;
        sent_to.insert(j.id.clone(), board);
        if let Some(ms) = j.cancel_after_ms {
            cancels.push((
                Instant::now() + Duration::from_millis(ms),
                dev,
                j.id.clone(),
            ));
        }
        if (warmup..warmup + 50).contains(&i) {
            // The smallest reading over 50 submissions after warm-up: one taken
            // mid-job holds that job's buffers, which is not drift.
            if let Some(r) = boards[rss_board].rss_kib() {
                rss_start_kib = Some(rss_start_kib.map_or(r, |s: u64| s.min(r)));
            }
        }
        tick!(Duration::from_millis(5));
    }
    // The end: space back, every board up, then wait until every job is answered or
    // nothing has come back for `stall`.
    disk.free();
    for b in &mut boards {
        if b.pid().is_none() {
            b.start();
        }
    }
    let mut last_progress = Instant::now();
    let mut answered = t.answers.len();
    while t.answers.len() < jobs.len() && last_progress.elapsed() < stall {
        tick!(Duration::from_millis(200));
        if t.answers.len() != answered {
            answered = t.answers.len();
            last_progress = Instant::now();
        }
    }
    // Late duplicates (a republished outbox row) would arrive now.
    tick!(Duration::from_secs(5));
    let rss_end_kib = boards[rss_board].rss_kib();

    let mut bad_exits = Vec::new();
    for b in &mut boards {
        match b.sigterm() {
            Some(s) if s.success() => {}
            other => bad_exits.push(format!("{}: {other:?}", b.device)),
        }
    }
    c.close().await;
    let panics = boards
        .iter()
        .map(|b| {
            std::fs::read_to_string(&b.log)
                .unwrap_or_default()
                .matches("panicked")
                .count()
        })
        .sum();
    let outcome = tally::outcome(&jobs, &t);
    let earlier_lost = jobs
        .iter()
        .filter(|j| sent_to.get(&j.id) == Some(&0))
        .filter(|j| {
            t.answers
                .get(&j.id)
                .is_some_and(|a| a[0].state == "succeeded")
        })
        .filter(|j| boards[0].journal_state(&j.id).as_deref() != Some("succeeded"))
        .count();
    let disk_episodes = episodes
        .into_iter()
        .map(|(during, after)| {
            let codes = during
                .iter()
                .map(|id| match t.answers.get(id) {
                    Some(a) => a[0].code.clone().unwrap_or_else(|| a[0].state.clone()),
                    None => "lost".into(),
                })
                .collect();
            let after = match after {
                Some(id) => t
                    .answers
                    .get(&id)
                    .map_or("lost".to_string(), |a| a[0].state.clone()),
                None => "no job after".into(),
            };
            (codes, after)
        })
        .collect();
    let disk_mode = disk.mode;
    let boards_rows = boards
        .iter()
        .map(|b| {
            let (j, o, s, tr) = b.rows();
            (b.device.clone(), b.store_bytes(), j, o, s, tr, b.starts)
        })
        .collect();
    if std::env::var_os("SOAK_KEEP").is_some() {
        drop(disk);
        let _ = root.keep();
    }
    Report {
        sizes: s,
        disk: disk_mode,
        outcome,
        panics,
        died,
        bad_exits,
        rss_start_kib,
        rss_end_kib,
        rss_max_kib,
        wall: t0.elapsed(),
        boards: boards_rows,
        disk_episodes,
        earlier_lost,
        chaos_applied,
    }
}

fn table(r: &Report) -> String {
    let o = &r.outcome;
    let s = &r.sizes;
    let mut m = String::new();
    let _ = writeln!(
        m,
        "seed {}, {} jobs, {} boards, wall {:.0} s; disk-full mode: {}\n",
        s.seed,
        s.jobs,
        s.boards,
        r.wall.as_secs_f64(),
        match r.disk {
            DiskMode::Tmpfs => "tmpfs (24 MiB, filled up by the harness)",
            DiskMode::Unavailable => "none (mount not permitted; no disk-full episodes)",
        }
    );
    let _ = writeln!(m, "| outcome | jobs |\n|---|---:|");
    let _ = writeln!(m, "| submitted | {} |", o.submitted);
    let _ = writeln!(m, "| answered exactly once: succeeded | {} |", o.once_ok);
    let _ = writeln!(
        m,
        "| answered exactly once: canceled/failed/rejected with a code | {} |",
        o.once_code
    );
    let _ = writeln!(
        m,
        "| answered twice or more (different answers) | {} |",
        o.twice
    );
    let _ = writeln!(
        m,
        "| same answer delivered again (QoS 1 copy after a broker restart) | {} |",
        o.redelivered
    );
    let _ = writeln!(m, "| lost (never answered) | {} |", o.lost);
    let _ = writeln!(m, "| answered without a code | {} |", o.no_code);
    let _ = writeln!(m, "| panics in the daemons' logs | {} |", r.panics);
    let _ = writeln!(m, "| daemons that died on their own | {} |", r.died);
    let _ = writeln!(
        m,
        "| SIGTERM at the end not exit 0 | {} |",
        r.bad_exits.len()
    );
    let _ = writeln!(
        m,
        "| earlier results of the disk board missing from its journal | {} |\n",
        r.earlier_lost
    );
    let _ = writeln!(
        m,
        "| kind | sent | succeeded | canceled | failed/rejected |\n|---|---:|---:|---:|---:|"
    );
    for (k, v) in &o.by_kind {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} |",
            k.name(),
            v[0],
            v[1],
            v[2],
            v[3]
        );
    }
    let codes: Vec<String> = o.codes.iter().map(|(c, n)| format!("`{c}` {n}")).collect();
    let _ = writeln!(m, "\nerror codes: {}\n", codes.join(", "));
    let mut chaos: Vec<_> = r.chaos_applied.iter().collect();
    chaos.sort();
    let chaos: Vec<String> = chaos.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
    let _ = writeln!(m, "chaos applied: {}\n", chaos.join(", "));
    for (n, (during, after)) in r.disk_episodes.iter().enumerate() {
        let _ = writeln!(
            m,
            "disk-full episode {}: jobs sent while full answered [{}]; first job after space back: {}",
            n + 1,
            during.join(", "),
            after
        );
    }
    let kib = |v: Option<u64>| v.map_or("?".into(), |v| format!("{:.1} MiB", v as f64 / 1024.0));
    let drift = match (r.rss_start_kib, r.rss_end_kib) {
        (Some(a), Some(b)) => format!("{:+.2} MiB", (b as f64 - a as f64) / 1024.0),
        _ => "?".into(),
    };
    let _ = writeln!(
        m,
        "\nRSS of {} (never killed): after warm-up (smallest of 50 readings) {}, end (idle) {}, drift {drift}, max {:.1} MiB\n",
        r.boards.last().map_or("", |b| b.0.as_str()),
        kib(r.rss_start_kib),
        kib(r.rss_end_kib),
        r.rss_max_kib as f64 / 1024.0
    );
    let _ = writeln!(m, "| board | starts | store file + WAL | journal rows | unsent outbox | stored jobs | traces |\n|---|---:|---:|---:|---:|---:|---:|");
    for (d, bytes, j, ob, sj, tr, starts) in &r.boards {
        let _ = writeln!(
            m,
            "| {d} | {starts} | {:.2} MiB | {j} | {ob} | {sj} | {tr} |",
            *bytes as f64 / (1024.0 * 1024.0)
        );
    }
    if !o.lost_ids.is_empty() {
        let _ = writeln!(m, "\nlost: {:?}", o.lost_ids);
    }
    if !o.redelivered_ids.is_empty() {
        let _ = writeln!(m, "delivered again: {:?}", o.redelivered_ids);
    }
    if !o.twice_ids.is_empty() {
        let _ = writeln!(m, "twice: {:?}", o.twice_ids);
    }
    if !r.bad_exits.is_empty() {
        let _ = writeln!(m, "bad exits: {:?}", r.bad_exits);
    }
    m
}

fn check(r: &Report, rss_limit_kib: Option<u64>) {
    let m = table(r);
    eprintln!("{m}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        std::fs::write(path, &m).unwrap();
    }
    let o = &r.outcome;
    assert_eq!(o.lost, 0, "jobs lost\n{m}");
    assert_eq!(o.twice, 0, "jobs answered twice\n{m}");
    assert_eq!(o.no_code, 0, "answers without a code\n{m}");
    assert_eq!(r.panics, 0, "daemon panics\n{m}");
    assert_eq!(r.died, 0, "daemons died\n{m}");
    assert!(r.bad_exits.is_empty(), "bad exits\n{m}");
    assert_eq!(r.earlier_lost, 0, "earlier results lost\n{m}");
    for (_, after) in &r.disk_episodes {
        assert!(
            after == "succeeded" || after == "no job after",
            "the disk board did not serve the next job after space came back\n{m}"
        );
    }
    if let (Some(limit), Some(a), Some(b)) = (rss_limit_kib, r.rss_start_kib, r.rss_end_kib) {
        assert!(
            b.saturating_sub(a) < limit,
            "RSS drift over {limit} KiB\n{m}"
        );
    }
}

/// The short version, in `make test`: 40 jobs, one kill, one broker restart, one
/// disk-full episode, faults on every board.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short_every_job_answered_once_through_kills_restarts_and_a_full_disk() {
    let sizes = Sizes {
        seed: env_or("SOAK_SEED", 14),
        jobs: 40,
        boards: 3,
        kills: 1,
        broker_restarts: 1,
        disk_full_episodes: 1,
        unkilled: 1,
    };
    let r = run(sizes, 9, Duration::from_secs(120)).await;
    check(&r, None);
}

/// The long run behind `make soak`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn soak_long() {
    let jobs = env_or("SOAK_JOBS", 500usize);
    let sizes = Sizes {
        seed: env_or("SOAK_SEED", 14),
        jobs,
        boards: 3,
        kills: env_or("SOAK_KILLS", (jobs / 50).max(1)),
        broker_restarts: env_or("SOAK_BROKER_RESTARTS", (jobs / 100).max(1)),
        disk_full_episodes: env_or("SOAK_DISK_FULL", (jobs / 150).max(1)),
        unkilled: 1,
    };
    let r = run(sizes, 12, Duration::from_secs(180)).await;
    check(&r, Some(2 * 1024));
}
