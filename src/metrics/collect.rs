//! Figures read at scrape time rather than pushed: queue length, broker state, model
//! cache size, and the sampler's own counters (which it already keeps, see
//! [`crate::power::stats`]) with each rail's latest power.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// One rail's live figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RailSnapshot {
    /// Rail name.
    pub name: String,
    /// Latest reading, W (`None` before the first sample).
    pub power_w: Option<f64>,
    /// Fresh samples per second over the sampler's life.
    pub effective_rate_hz: f64,
    /// Fresh samples since start.
    pub samples: u64,
    /// Conversions the chip made that were not read.
    pub conversions_missed: u64,
    /// Gaps recorded.
    pub gaps: u64,
    /// Read errors by kind (`nack`, `bus`, `stale`, …).
    pub errors_by_kind: BTreeMap<String, u64>,
}

/// Everything the collector reads at one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Jobs waiting (not counting the running one).
    pub queue_length: usize,
    /// Whether the MQTT session is connected.
    pub broker_connected: bool,
    /// Bytes of the models held in the engine's cache.
    pub model_cache_bytes: u64,
    /// Per rail (empty without sensors).
    pub rails: Vec<RailSnapshot>,
}

/// Where the snapshot comes from (the daemon; a fixed value in tests).
pub trait SnapshotSource: Send + Sync + std::fmt::Debug + 'static {
    /// The figures now. Called on each scrape, off the async runtime.
    fn snapshot(&self) -> Snapshot;
}

/// Encodes a [`Snapshot`] on each scrape.
#[derive(Debug)]
pub struct SnapshotCollector {
    source: Box<dyn SnapshotSource>,
}

impl SnapshotCollector {
    /// Wraps a source.
    pub fn new(source: Box<dyn SnapshotSource>) -> Self {
        SnapshotCollector { source }
    }
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A family of one value per rail; `value` returns `None` to leave a rail out.
fn per_rail<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    rails: &[RailSnapshot],
    value: impl Fn(&RailSnapshot) -> Option<M>,
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, None, metric_type)?;
    for r in rails {
        if let Some(m) = value(r) {
            let labels = [("rail", r.name.as_str())];
            m.encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.source.snapshot();
        gauge(
            &mut enc,
            "edgewatt_queue_length",
            "Jobs waiting in the local queue behind the running one.",
            s.queue_length as f64,
        )?;
        gauge(
            &mut enc,
            "edgewatt_broker_connected",
            "1 while the MQTT session is connected, else 0.",
            if s.broker_connected { 1.0 } else { 0.0 },
        )?;
        gauge(
            &mut enc,
            "edgewatt_model_cache_bytes",
            "Bytes of the models loaded in the engine's cache.",
            s.model_cache_bytes as f64,
        )?;
        if s.rails.is_empty() {
            return Ok(());
        }
        per_rail(
            &mut enc,
            "edgewatt_rail_power_watts",
            "Latest power reading of each rail.",
            MetricType::Gauge,
            &s.rails,
            |r| r.power_w.map(ConstGauge::new),
        )?;
        per_rail(
            &mut enc,
            "edgewatt_sampler_effective_rate_hertz",
            "Fresh samples per second each rail delivered since start.",
            MetricType::Gauge,
            &s.rails,
            |r| Some(ConstGauge::new(r.effective_rate_hz)),
        )?;
        per_rail(
            &mut enc,
            "edgewatt_sampler_samples",
            "Fresh samples read from each rail since start.",
            MetricType::Counter,
            &s.rails,
            |r| Some(ConstCounter::new(r.samples)),
        )?;
        per_rail(
            &mut enc,
            "edgewatt_sampler_conversions_missed",
            "Conversions the chip made that the sampler did not read.",
            MetricType::Counter,
            &s.rails,
            |r| Some(ConstCounter::new(r.conversions_missed)),
        )?;
        per_rail(
            &mut enc,
            "edgewatt_sampler_gaps",
            "Stretches without samples longer than power.max_gap_ms, per rail.",
            MetricType::Counter,
            &s.rails,
            |r| Some(ConstCounter::new(r.gaps)),
        )?;
        let mut family = enc.encode_descriptor(
            "edgewatt_sampler_read_errors",
            "Sensor read errors by rail and kind.",
            None,
            MetricType::Counter,
        )?;
        for r in &s.rails {
            for (kind, n) in &r.errors_by_kind {
                let labels = [("rail", r.name.as_str()), ("kind", kind.as_str())];
                ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
