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
pub fn run(args: &DaemonArgs, cfg: Config) -> anyhow::Result<()> {
    let cfg = args.apply(cfg)?;
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
        // SIGHUP's default action would kill the daemon (systemd's ExecReload sends it).
        // Nothing is reloaded in place yet: say so and keep serving.
        let hup = tokio::spawn(async {
            use tokio::signal::unix::{signal, SignalKind};
            if let Ok(mut hup) = signal(SignalKind::hangup()) {
                while hup.recv().await.is_some() {
                    tracing::warn!("SIGHUP: reloading the configuration in place is not supported; restart the daemon to apply changes");
                }
            }
        });
        let result = crate::daemon::run(cfg, shutdown_signal()).await;
        hup.abort();
        let _ = hup.await;
        result
    })
}

/// Caps glibc's malloc arenas at two. By default every thread that allocates may get
/// its own 64 MB arena, and freed memory stays in it: measured, that was ~10 MB of an
/// idle daemon's RSS (docs/protocol.md has the numbers). Must run before the runtime
/// and the inference thread start.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
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
