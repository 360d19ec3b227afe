//! `edgewatt daemon --config PATH [--broker URL] [--device DEV]`: the MQTT service.
//! The two flags override the configuration, for quick starts and tests.

use anyhow::Context as _;

use crate::config::Config;

/// Options for `edgewatt daemon` (`--config` is the global flag).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DaemonArgs {
    /// Broker URL (mqtt://HOST:PORT or mqtts://HOST:PORT); overrides mqtt.url.
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// This board's id in topics (PREFIX/DEV/...); overrides device.id.
    #[arg(long, value_name = "DEV")]
    pub device: Option<String>,
}

impl DaemonArgs {
    /// Applies the overrides to a loaded configuration and re-validates it.
    pub fn apply(&self, mut cfg: Config) -> anyhow::Result<Config> {
        if let Some(url) = &self.broker {
            cfg.mqtt.url = url.clone();
        }
        if let Some(dev) = &self.device {
            cfg.device.id = dev.clone();
        }
        cfg.validate()
            .context("invalid value given on the command line")?;
        Ok(cfg)
    }
}

/// Runs the daemon until SIGTERM or SIGINT, then drains and exits.
pub fn run(
    args: &DaemonArgs,
    cfg: Config,
    config_path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let cfg = args.apply(cfg)?;
    let running = cfg.clone();
    let path = config_path.map(std::path::Path::to_path_buf);
    let overrides = args.clone();
    tune_allocator();
    // Two workers are plenty: the async side only moves messages; inference, sampling
    // and SQLite run on their own threads / the blocking pool.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("edgewatt-rt")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        // SIGHUP (systemd's ExecReload): re-read and validate the configuration and
        // say what differs from the running one. Nothing is applied in place yet, so
        // the operator learns at once whether the new file is valid and that a
        // restart is needed, instead of finding out at the next start.
        let hup = tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            if let Ok(mut hup) = signal(SignalKind::hangup()) {
                while hup.recv().await.is_some() {
                    let path = path.clone();
                    let new = tokio::task::spawn_blocking(move || crate::config::load(path.as_deref())).await;
                    match new.map_err(anyhow::Error::from).and_then(|r| r.map_err(anyhow::Error::from)).and_then(|c| overrides.apply(c)) {
                        Err(e) => tracing::error!("SIGHUP: the configuration is invalid; the running one stays in force: {e:#}"),
                        Ok(new) if new == running => tracing::info!("SIGHUP: configuration re-read; nothing changed"),
                        Ok(new) => {
                            let mut keys = running.restart_required(&new);
                            if keys.is_empty() {
                                keys.push("(generation defaults, limits, retention or jobs)");
                            }
                            tracing::warn!(
                                "SIGHUP: configuration re-read and valid; changed: {}; this version applies changes only at start: run `systemctl restart edgewatt`",
                                keys.join(", ")
                            );
                        }
                    }
                }
            }
        });
        let result = crate::daemon::run(cfg, shutdown_signal()).await;
        hup.abort();
        let _ = hup.await;
        result
    })
}

/// Caps glibc's malloc arenas at two and fixes the mmap threshold at 256 KiB. By
/// default every thread that allocates may get its own 64 MB arena, and freed memory
/// stays in it: measured, that was ~10 MB of an idle daemon's RSS (docs/protocol.md
/// has the numbers). And glibc raises its mmap threshold each time a mapped block is
/// freed (up to 32 MB), after which a job's KV cache and compute buffers come from
/// the arena and leave it fragmented (runs of 100 jobs ended ~10 MB apart); a fixed
/// threshold keeps every large buffer in its own mapping, returned whole on free.
/// Must run before the runtime and the inference thread start.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            // Cannot install handlers (should not happen on Linux): Ctrl-C only.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
