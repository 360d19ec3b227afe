//! Daemon benchmark (not a test): publish → `running` latency on an idle daemon, the
//! daemon's idle CPU, and its RSS beyond the model's file mapping.
//!
//! `cargo run --release --example daemon_bench [-- --jobs 100 --idle-s 10]`
//!
//! Starts Mosquitto on a free loopback port and the daemon as a child process (this
//! example re-executed with `--child CONFIG`, running `edgewatt::daemon::run`, the same
//! code as `edgewatt daemon`) with the simulated sensor and the real model.

#[path = "../tests/daemon_support/mod.rs"]
mod daemon_support;

use std::time::{Duration, Instant};

use daemon_support::*;
use serde_json::json;

const P: &str = "edgewatt";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        edgewatt::cli::daemon_cmd::tune_allocator();
        let cfg: edgewatt::config::Config =
            serde_json::from_str(&std::fs::read_to_string(&args[i + 1])?)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        return rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            edgewatt::daemon::run(cfg, async move {
                term.recv().await;
            })
            .await
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench(arg("--jobs", 100) as usize, arg("--idle-s", 10)))
}

fn ticks(pid: u32) -> u64 {
    // utime + stime, fields 14 and 15 of /proc/PID/stat (after the ')' of comm).
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// CPU ticks per thread name (summed over threads of the same name).
fn thread_ticks(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let s = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let name = s
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map(|(n, _)| n.to_string())
            .unwrap_or_default();
        let tid = e.file_name().to_string_lossy().into_owned();
        *out.entry(name).or_insert(0) += ticks_of(&s);
        let _ = tid;
    }
    out
}

fn ticks_of(s: &str) -> u64 {
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// (total Rss kB, Rss kB of mappings of `file`).
fn rss_kb(pid: u32, file: &str) -> (u64, u64) {
    let total = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Rss:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut in_model = false;
    let mut model = 0;
    for l in smaps.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first.contains('-')
            && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit())
            && !first.ends_with(':')
        {
            in_model = l.ends_with(file);
        } else if in_model {
            if let Some(v) = l.strip_prefix("Rss:") {
                model += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    (total, model)
}

fn pct(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

async fn bench(jobs: usize, idle_s: u64) -> anyhow::Result<()> {
    let broker = Broker::start();
    let state = tempfile::tempdir()?;
    let dev = "bench";
    let mut cfg = daemon_config(&broker.url(), dev, state.path());
    cfg.power.sensors[0].rate_hz = Some(100.0);
    if std::env::args().any(|a| a == "--no-thermal") {
        cfg.power.thermal_interval_ms = 0;
    }
    if std::env::args().any(|a| a == "--unload") {
        cfg.models.keep_alive_s = 0;
    }
    if std::env::args().any(|a| a == "--no-sensors") {
        cfg.power.sensors.clear();
    }
    let cfg_path = state.path().join("config.json");
    std::fs::write(&cfg_path, serde_json::to_string(&cfg)?)?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["--child", cfg_path.to_str().unwrap_or_default()])
        .stdin(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id();
    let reply = "bench/reply";
    let status_filter = format!("{P}/{dev}/job/+/status");
    let mut c = Client::connect(
        &broker.url(),
        &[reply, &status_filter, &format!("{P}/{dev}/status")],
        false,
    )
    .await;
    wait_online(&mut c, P, dev).await;

    let job = |id: &str| {
        json!({"id": id, "model": MODEL, "prompt": "Hi", "max_tokens": 1, "n_ctx": 256}).to_string()
    };
    // Warm-up: the model loads once.
    c.publish(
        &format!("{P}/{dev}/jobs"),
        job("warm"),
        Some((reply, b"warm")),
    )
    .await;
    c.wait_for(Duration::from_secs(120), "warm-up result", |m| {
        m.topic == reply
    })
    .await;

    let mut lat_ms = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let id = format!("lat-{i}");
        let topic = format!("{P}/{dev}/job/{id}/status");
        c.msgs.clear();
        tokio::time::sleep(Duration::from_millis(100)).await; // idle daemon
        let t0 = Instant::now();
        c.publish(
            &format!("{P}/{dev}/jobs"),
            job(&id),
            Some((reply, id.as_bytes())),
        )
        .await;
        let m = c
            .wait_for(Duration::from_secs(30), "running", |m| {
                m.topic == topic && m.json()["state"] == "running"
            })
            .await;
        lat_ms.push((m.at - t0).as_secs_f64() * 1e3);
        c.wait_for(Duration::from_secs(60), "result", |m| {
            m.topic == reply && m.correlation.as_deref() == Some(id.as_bytes())
        })
        .await;
    }
    println!(
        "publish -> running latency over {jobs} jobs: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (target p99 <= 10 ms)",
        pct(&lat_ms, 0.5),
        pct(&lat_ms, 0.9),
        pct(&lat_ms, 0.99),
        pct(&lat_ms, 1.0)
    );

    // Idle: no jobs; the sampler (100 Hz sim), thermal recorder (10 Hz), live power (1 Hz) run.
    c.pump(Duration::from_secs(2)).await;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (t0, w0) = (ticks(pid), Instant::now());
    c.pump(Duration::from_secs(idle_s)).await;
    let (t1, w1) = (ticks(pid), Instant::now());
    let cpu = (t1 - t0) as f64 / hz / (w1 - w0).as_secs_f64() * 100.0;
    println!("idle CPU of the daemon over {idle_s} s: {cpu:.2} % of one core  (target < 1 %)");
    if std::env::args().any(|a| a == "--verbose") {
        let (t0, w0) = (thread_ticks(pid), Instant::now());
        c.pump(Duration::from_secs(idle_s)).await;
        let t1 = thread_ticks(pid);
        let secs = w0.elapsed().as_secs_f64();
        for (name, v) in &t1 {
            let d = v.saturating_sub(t0.get(name).copied().unwrap_or(0));
            if d > 0 {
                println!("  thread {name}: {:.2} %", d as f64 / hz / secs * 100.0);
            }
        }
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        let mut cur = String::new();
        let mut rows: Vec<(u64, String)> = Vec::new();
        for l in smaps.lines() {
            let first = l.split_whitespace().next().unwrap_or("");
            if first.contains('-') && !first.ends_with(':') {
                cur = l.to_string();
            } else if let Some(v) = l.strip_prefix("Rss:") {
                rows.push((
                    v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0),
                    cur.clone(),
                ));
            }
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (kb, m) in rows.iter().take(12) {
            println!("  {kb:>8} kB  {m}");
        }
    }

    let file = format!("{MODEL}.gguf");
    let (total, model) = rss_kb(pid, &file);
    println!(
        "daemon RSS: {:.1} MB total, model mapping {:.1} MB, beyond the model {:.1} MB  (target <= 15 MB)",
        total as f64 / 1024.0,
        model as f64 / 1024.0,
        (total.saturating_sub(model)) as f64 / 1024.0
    );

    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    c.close().await;
    Ok(())
}
