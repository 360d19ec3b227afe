//! The daemon's side of the Prometheus metrics: the scrape-time source (queue, broker,
//! model cache, sampler), the endpoint and the rail-energy task, started when
//! `[metrics] listen` is set. The figures themselves live in [`crate::metrics`].

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Ctx;
use crate::metrics::{BuildLabels, Metrics, RailSnapshot, Snapshot, SnapshotSource};

/// Reads the live figures from the daemon's context. It holds the context weakly
/// (the context holds the metrics), set once the context exists; before that, and
/// after the daemon is gone, a scrape sees zeros.
#[derive(Debug, Default)]
pub struct DaemonSource {
    ctx: Arc<OnceLock<Weak<Ctx>>>,
}

impl SnapshotSource for DaemonSource {
    fn snapshot(&self) -> Snapshot {
        let Some(ctx) = self.ctx.get().and_then(Weak::upgrade) else {
            return Snapshot::default();
        };
        let rails = match ctx.measure.sampler() {
            Some(s) => {
                let latest = s.latest();
                s.stats()
                    .rails
                    .into_iter()
                    .map(|r| RailSnapshot {
                        power_w: latest
                            .get(usize::from(r.rail))
                            .copied()
                            .flatten()
                            .map(|x| x.power_uw as f64 / 1e6),
                        effective_rate_hz: r.effective_rate_hz,
                        samples: r.samples,
                        conversions_missed: r.conversions_missed,
                        gaps: r.gaps,
                        errors_by_kind: r.errors_by_kind,
                        name: r.name,
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        Snapshot {
            queue_length: ctx.queue.len(),
            broker_connected: *ctx.session.connected().borrow(),
            model_cache_bytes: ctx.engine.model_cache_bytes(),
            rails,
        }
    }
}

/// The metrics handle for a daemon on `device`, and the hook that connects its source
/// to the context once there is one ([`attach`]).
pub fn new_metrics(device: &str) -> (Metrics, Arc<OnceLock<Weak<Ctx>>>) {
    let b = crate::cli::info::build_info();
    let build = BuildLabels {
        version: b.version.to_string(),
        target_cpu: b.target_cpu.to_string(),
        features: b.rust_features.join(","),
        gpu_backends: b.gpu_backends.join(","),
    };
    let source = DaemonSource::default();
    let slot = source.ctx.clone();
    (Metrics::new(device, build, Box::new(source)), slot)
}

/// Points the source at the context.
pub fn attach(slot: &OnceLock<Weak<Ctx>>, ctx: &Arc<Ctx>) {
    let _ = slot.set(Arc::downgrade(ctx));
}

/// Binds `listen` and spawns the endpoint and the rail-energy task on `tracker`, both
/// stopped by `cancel`. A port that cannot be bound stops the start: the operator
/// asked for metrics and would otherwise scrape nothing.
pub async fn start(
    ctx: &Arc<Ctx>,
    listen: SocketAddr,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on metrics.listen '{listen}'"))?;
    let bound = listener.local_addr().unwrap_or(listen);
    tracker.spawn(crate::metrics::http::serve(
        listener,
        ctx.metrics.clone(),
        cancel.clone(),
    ));
    if let Some(sampler) = ctx.measure.sampler() {
        let p = &ctx.settings.power;
        let bridge = crate::metrics::energy::max_bridge_ns(
            p.max_gap_ms.saturating_mul(1_000_000),
            p.idle_rate_hz,
        );
        tracker.spawn(crate::metrics::energy::run(
            sampler,
            ctx.metrics.clone(),
            bridge,
            cancel,
        ));
    }
    tracing::info!("metrics on http://{bound}/metrics");
    Ok(bound)
}
