//! Daemon benchmark (not a test): publish → `running` latency on an idle daemon, the
//! daemon's idle CPU, and where its resident memory goes.
//!
//! `cargo run --release --example daemon_bench [-- --daemon-bin PATH --jobs 100 --idle-s 10 --verbose]`
//!
//! Starts Mosquitto on a free loopback port and the daemon as a child process with the
//! simulated sensor and the real model. With `--daemon-bin PATH` the daemon is that
//! binary (`PATH daemon --config FILE`, the configuration written as TOML): this is how
//! the shipped binary is measured (`make bench-daemon` passes `target/dist/edgewatt`).
//! Without it, this example re-executes itself with `--child CONFIG` and runs
//! `edgewatt::daemon::run`, the same code, linked into a bigger binary.
//!
//! The memory target is "RSS beyond the model ≤ 15 MB". Any llama.cpp program holding a
//! model pays for the file mapping *and* for the tables llama.cpp builds from it at load
//! (the vocabulary's hash maps and piece cache, and the unicode flags table built by the
//! first tokenization, which for BPE vocabularies is the load's own). The bench measures
//! those tables in its own process before starting the daemon (RssAnon before and after
//! loading the model and tokenizing one prompt, the way `infer::engine` does) and splits
//! the daemon's RSS (from /proc/PID/smaps) into the model mapping, those tables, the
//! executable's pages, shared libraries and the daemon's own anonymous memory, once on
//! the fresh daemon, once after the first job and once at the end.

#[path = "../tests/daemon_support/mod.rs"]
mod daemon_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use daemon_support::*;
use serde_json::json;

const P: &str = "edgewatt";
/// The target for RSS beyond the model (mapping + llama.cpp's tables for it).
const TARGET_BEYOND_MODEL_MB: f64 = 15.0;

fn arg_str(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn arg(name: &str, default: u64) -> u64 {
    arg_str(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
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
    let daemon_bin = match arg_str("--daemon-bin") {
        Some(p) => {
            let p = PathBuf::from(p);
            anyhow::ensure!(
                p.is_file(),
                "daemon binary '{}' not found: build it first (cargo build --profile dist --bin edgewatt)",
                p.display()
            );
            Some(p)
        }
        None => None,
    };
    // The same allocator settings as the daemon, and before any other thread exists,
    // so the measurement below sees only llama.cpp.
    edgewatt::cli::daemon_cmd::tune_allocator();
    let tables = measure_llama_tables(&model_dir().join(format!("{MODEL}.gguf")))?;
    println!(
        "llama.cpp in this process (RssAnon deltas): backend init {:.1} MB, model load {:.1} MB, \
         first tokenize {:.1} MB; model tables = load + tokenize = {:.1} MB",
        mb(tables.backend_kb),
        mb(tables.load_kb),
        mb(tables.tokenize_kb),
        mb(tables.model_tables_kb())
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(bench(
        arg("--jobs", 100) as usize,
        arg("--idle-s", 10),
        daemon_bin,
        tables.model_tables_kb(),
    ))
}

/// What llama.cpp allocates on the heap in this process, as RssAnon deltas (kB).
struct LlamaTables {
    /// `LlamaBackend::init` (the daemon does it at start, before any job).
    backend_kb: u64,
    /// `LlamaModel::load_from_file` with default params (mmap): the vocabulary's maps,
    /// token data and piece cache, tensor metadata.
    load_kb: u64,
    /// The first tokenize: the unicode flags table, built once per process (0 when
    /// the load already built it: llama.cpp tokenizes "\n" for BPE vocabularies).
    tokenize_kb: u64,
}

impl LlamaTables {
    /// What a loaded, used model costs beyond its file mapping.
    fn model_tables_kb(&self) -> u64 {
        self.load_kb + self.tokenize_kb
    }
}

/// Loads the model the way `infer::engine` does (backend init, default params with no
/// GPU layers, mmap) and tokenizes one prompt, reading RssAnon between the steps.
///
/// Each reading follows `malloc_trim(0)`, as the daemon trims after every job
/// (`daemon::runner`): without it the load's temporaries (the GGUF metadata strings,
/// freed once the vocabulary is built) would stay resident here and count as tables.
fn measure_llama_tables(model: &Path) -> anyhow::Result<LlamaTables> {
    use llama_cpp_2::llama_backend::LlamaBackend;
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::model::LlamaModel;

    // No tracing subscriber here: this silences llama.cpp's load log.
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    let t0 = live_anon_kb()?;
    let backend = LlamaBackend::init().context("llama.cpp backend init")?;
    let t1 = live_anon_kb()?;
    let params = LlamaModelParams::default().with_n_gpu_layers(0);
    let m = LlamaModel::load_from_file(&backend, model, &params)
        .with_context(|| format!("cannot load model '{}'", model.display()))?;
    let t2 = live_anon_kb()?;
    let tokens = m.vocab().tokenize(b"The capital of France is", true, false);
    anyhow::ensure!(
        !tokens.is_empty(),
        "the model tokenized the prompt to nothing"
    );
    let t3 = live_anon_kb()?;
    drop(m);
    drop(backend);
    Ok(LlamaTables {
        backend_kb: t1.saturating_sub(t0),
        load_kb: t2.saturating_sub(t1),
        tokenize_kb: t3.saturating_sub(t2),
    })
}

/// This process's RssAnon (kB) after handing free heap memory back.
fn live_anon_kb() -> anyhow::Result<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    rss_anon_kb("self")
}

/// RssAnon (kB) of `/proc/{pid}/status`; `pid` may be `self`.
fn rss_anon_kb(pid: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&path).with_context(|| format!("cannot read '{path}'"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("RssAnon:").and_then(parse_kb))
        .with_context(|| format!("no RssAnon line in '{path}'"))
}

/// `"  1234 kB"` → 1234.
fn parse_kb(v: &str) -> Option<u64> {
    v.trim().trim_end_matches("kB").trim().parse().ok()
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// What a mapping in smaps is backed by.
#[derive(Debug, Clone, Copy)]
enum Mapping {
    /// The model's GGUF file (mmapped by llama.cpp).
    Model,
    /// The daemon's own executable (`/proc/PID/exe`).
    Exe,
    /// A shared library.
    Lib,
    /// Anything else: anonymous memory, [vdso], other files.
    Other,
}

/// The daemon's RSS split by where the pages come from (kB), from /proc/PID/smaps.
/// Every mapping's `Anonymous` pages (heap, stacks, anonymous mmaps, copy-on-write
/// pages of file mappings) go to `anon`; its other resident pages to the category of
/// its file. The categories add up to `total`.
#[derive(Debug, Default)]
struct Footprint {
    /// Every resident page of the process.
    total: u64,
    /// File pages of the model's mapping.
    model: u64,
    /// File pages of the executable (code, rodata, the unwritten part of .data).
    exe: u64,
    /// File pages of shared libraries (`*.so*`).
    libs: u64,
    /// Every anonymous page.
    anon: u64,
    /// File pages of other files, [vdso] and the like.
    other: u64,
}

impl Footprint {
    fn read(pid: u32, model_file: &str) -> anyhow::Result<Footprint> {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .with_context(|| format!("cannot read the executable of pid {pid}"))?;
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
            .with_context(|| format!("cannot read /proc/{pid}/smaps"))?;
        Ok(Footprint::parse(&smaps, &exe.to_string_lossy(), model_file))
    }

    fn parse(smaps: &str, exe: &str, model_file: &str) -> Footprint {
        let mut f = Footprint::default();
        let mut kind = Mapping::Other;
        let mut rss = 0;
        for l in smaps.lines() {
            if let Some(v) = l.strip_prefix("Rss:") {
                rss = parse_kb(v).unwrap_or(0);
            } else if let Some(v) = l.strip_prefix("Anonymous:") {
                // The last per-mapping field we need; smaps prints Rss before it.
                f.add(kind, rss, parse_kb(v).unwrap_or(0));
                rss = 0;
            } else if is_mapping_header(l) {
                // addr perms offset dev inode [path]; the path may contain spaces.
                let path = l.splitn(6, char::is_whitespace).nth(5).unwrap_or("").trim();
                kind = if path.ends_with(model_file) {
                    Mapping::Model
                } else if path == exe {
                    Mapping::Exe
                } else if path.contains(".so") {
                    Mapping::Lib
                } else {
                    Mapping::Other
                };
            }
        }
        f
    }

    /// One mapping's resident pages: `anon` of them anonymous, the rest its file's.
    fn add(&mut self, kind: Mapping, rss_kb: u64, anon_kb: u64) {
        let file = rss_kb.saturating_sub(anon_kb);
        self.total += rss_kb;
        self.anon += anon_kb;
        match kind {
            Mapping::Model => self.model += file,
            Mapping::Exe => self.exe += file,
            Mapping::Lib => self.libs += file,
            Mapping::Other => self.other += file,
        }
    }

    fn print(&self, label: &str, tables_kb: u64) {
        // The tables exist only while the model is loaded; with keep_alive 0 it is not.
        let loaded = self.model > 0;
        let tables = if loaded { tables_kb } else { 0 };
        let own = self.anon.saturating_sub(tables);
        let beyond_mapping = self.total.saturating_sub(self.model);
        let beyond_model = beyond_mapping.saturating_sub(tables);
        println!("daemon RSS, {label}:");
        let row = |name: &str, kb: u64, note: &str| {
            println!("  {name:<44} {:>7.1} MB{note}", mb(kb));
        };
        row("total", self.total, "");
        row("model file mapping", self.model, "");
        row(
            "llama.cpp model tables (measured above)",
            tables,
            if loaded { "" } else { "  (model not loaded)" },
        );
        row("executable code + rodata pages", self.exe, "");
        row("shared libraries", self.libs, "");
        row(
            "daemon's own anonymous memory",
            own,
            &format!(
                "  (all anonymous {:.1} MB − llama.cpp tables)",
                mb(self.anon)
            ),
        );
        row("other (vdso, other files)", self.other, "");
        let verdict = if mb(beyond_model) <= TARGET_BEYOND_MODEL_MB {
            "met"
        } else {
            "NOT met"
        };
        row(
            "beyond the model (mapping + llama.cpp tables)",
            beyond_model,
            &format!("  (target <= {TARGET_BEYOND_MODEL_MB} MB: {verdict})"),
        );
        row("beyond the model mapping alone (raw)", beyond_mapping, "");
    }
}

/// A smaps mapping header: `7f…-7f… r-xp 00000000 08:01 1234 /path`.
fn is_mapping_header(l: &str) -> bool {
    let first = l.split_whitespace().next().unwrap_or("");
    !first.ends_with(':')
        && first
            .split_once('-')
            .is_some_and(|(a, b)| is_hex(a) && is_hex(b))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The daemon process, sent SIGTERM and reaped when dropped (also on a panic).
struct DaemonProcess(std::process::Child);

impl DaemonProcess {
    /// `bin daemon --config FILE` (TOML) when a binary is given, else this example
    /// re-executed with `--child FILE` (JSON).
    fn spawn(
        bin: Option<&Path>,
        cfg: &edgewatt::config::Config,
        dir: &Path,
    ) -> anyhow::Result<DaemonProcess> {
        let mut cmd = match bin {
            Some(bin) => {
                let path = dir.join("edgewatt.toml");
                std::fs::write(&path, toml::to_string(cfg).context("config as TOML")?)?;
                let mut c = std::process::Command::new(bin);
                c.arg("daemon").arg("--config").arg(path);
                c
            }
            None => {
                let path = dir.join("config.json");
                std::fs::write(&path, serde_json::to_string(cfg)?)?;
                let mut c = std::process::Command::new(std::env::current_exe()?);
                c.arg("--child").arg(path);
                c
            }
        };
        let child = cmd
            .stdin(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start the daemon: {cmd:?}"))?;
        Ok(DaemonProcess(child))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// utime + stime of a whole process.
fn ticks(pid: u32) -> u64 {
    ticks_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
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
        *out.entry(name).or_insert(0) += ticks_of(&s);
    }
    out
}

/// utime + stime from a `stat` line: fields 14 and 15 (after the ')' of comm).
fn ticks_of(s: &str) -> u64 {
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn pct(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

async fn bench(
    jobs: usize,
    idle_s: u64,
    daemon_bin: Option<PathBuf>,
    tables_kb: u64,
) -> anyhow::Result<()> {
    let broker = Broker::start();
    let state = tempfile::tempdir()?;
    let dev = "bench";
    let mut cfg = daemon_config(&broker.url(), dev, state.path());
    cfg.power.sensors[0].rate_hz = Some(100.0);
    if flag("--no-thermal") {
        cfg.power.thermal_interval_ms = 0;
    }
    if flag("--unload") {
        cfg.models.keep_alive_s = 0;
    }
    if flag("--no-sensors") {
        cfg.power.sensors.clear();
    }
    let daemon = DaemonProcess::spawn(daemon_bin.as_deref(), &cfg, state.path())?;
    let pid = daemon.pid();
    println!(
        "daemon: {} (pid {pid})",
        daemon_bin
            .as_deref()
            .map_or("this example re-executed with --child".into(), |p| p
                .display()
                .to_string())
    );
    let model_file = format!("{MODEL}.gguf");
    let reply = "bench/reply";
    let status_filter = format!("{P}/{dev}/job/+/status");
    let mut c = Client::connect(
        &broker.url(),
        &[reply, &status_filter, &format!("{P}/{dev}/status")],
        false,
    )
    .await;
    wait_online(&mut c, P, dev).await;
    // Let the sampler, thermal recorder and live power publisher settle in.
    c.pump(Duration::from_secs(1)).await;
    Footprint::read(pid, &model_file)?.print("fresh daemon, before any job", tables_kb);

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
    c.pump(Duration::from_secs(1)).await;
    Footprint::read(pid, &model_file)?.print("after the first job", tables_kb);

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
    if flag("--verbose") {
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
            if is_mapping_header(l) {
                cur = l.to_string();
            } else if let Some(v) = l.strip_prefix("Rss:") {
                rows.push((parse_kb(v).unwrap_or(0), cur.clone()));
            }
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (kb, m) in rows.iter().take(12) {
            println!("  {kb:>8} kB  {m}");
        }
    }

    let end = Footprint::read(pid, &model_file)?;
    end.print(
        &format!("after {} jobs and {idle_s} s idle", jobs + 1),
        tables_kb,
    );
    let tables = if end.model > 0 { tables_kb } else { 0 };
    let beyond_mapping = end.total.saturating_sub(end.model);
    println!(
        "daemon RSS: {:.1} MB total, model mapping {:.1} MB, llama.cpp model tables {:.1} MB, \
         beyond the model {:.1} MB  (target <= {TARGET_BEYOND_MODEL_MB} MB); beyond the mapping alone {:.1} MB",
        mb(end.total),
        mb(end.model),
        mb(tables),
        mb(beyond_mapping.saturating_sub(tables)),
        mb(beyond_mapping)
    );

    drop(daemon);
    c.close().await;
    Ok(())
}
