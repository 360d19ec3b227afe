//! The board's retained status (`PREFIX/DEV/status`: online / draining / offline, the
//! Will), the live power stream (`PREFIX/DEV/power`, ~1 Hz), and the systemd watchdog.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::measure::Measure;
use super::{systemd, Ctx, Settings};
use crate::jobs::mqtt::OutMessage;
use crate::jobs::protocol::{BoardLimits, DeviceStatus};

/// The retained status message.
pub fn device_status_json(
    settings: &Settings,
    state: &str,
    models: &[String],
    measure: &Measure,
    queue_length: usize,
    running: Option<String>,
) -> Vec<u8> {
    let s = DeviceStatus {
        device: settings.device.clone(),
        state: state.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        at_unix_ns: crate::clock::unix_ns(),
        models: models.to_vec(),
        rails: measure.rail_names(),
        simulated: measure.simulated(),
        queue_length,
        running,
        limits: Some(BoardLimits {
            max_payload_bytes: settings.limits.max_payload_bytes,
            max_packet_bytes: settings.session.max_packet_bytes,
            max_prompt_bytes: settings.limits.max_prompt_bytes,
        }),
        power_modes: settings.power_modes.clone(),
    };
    let mut v = serde_json::to_value(&s).unwrap_or_default();
    if let (Some(label), Some(obj)) = (&settings.label, v.as_object_mut()) {
        obj.insert("label".into(), json!(label));
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

async fn publish_status(ctx: &Ctx, state: &str, models: &[String]) {
    let payload = device_status_json(
        &ctx.settings,
        state,
        models,
        &ctx.measure,
        ctx.queue.len(),
        ctx.queue.running(),
    );
    let mut msg = OutMessage::json(ctx.topics.status(), payload);
    msg.retain = true;
    let _ = ctx.session.publish(msg).await;
}

/// Publishes `offline` (retained) at the end of a graceful shutdown.
pub async fn publish_offline(ctx: &Ctx, models: &[String]) {
    publish_status(ctx, "offline", models).await;
}

/// Keeps the retained status current and streams live power until `cancel` fires.
pub async fn run(ctx: Arc<Ctx>, models: Vec<String>, cancel: CancellationToken) {
    let live_every = ctx.settings.power.live_interval_ms;
    let mut live = tokio::time::interval(Duration::from_millis(if live_every == 0 {
        3_600_000
    } else {
        live_every
    }));
    live.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // WATCHDOG=1 proves progress, not just a live timer: it is sent only while this
    // loop runs (the runtime is responsive) AND the inference thread has shown
    // progress (an idle tick or an engine event) within the watchdog interval. A
    // wedged llama.cpp call therefore gets the service restarted by systemd.
    let wd = systemd::watchdog_ping_period().unwrap_or(Duration::from_secs(3600));
    let mut watchdog = tokio::time::interval(wd);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ctx.status_wake.notified() => {
                // Coalesce bursts (a queue filling up) into one message.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let state = if ctx.draining.is_cancelled() { "draining" } else { "online" };
                publish_status(&ctx, state, &models).await;
            }
            _ = live.tick(), if live_every > 0 => {
                if let Some(mut v) = ctx.measure.live() {
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("device".into(), json!(ctx.settings.device));
                        obj.insert("at_unix_ns".into(), json!(crate::clock::unix_ns()));
                    }
                    let mut msg = OutMessage::json(ctx.topics.power(), serde_json::to_vec(&v).unwrap_or_default());
                    msg.qos = QoS::AtMostOnce;
                    ctx.session.try_publish(msg);
                }
            }
            _ = watchdog.tick() => {
                let quiet_ns = crate::clock::monotonic_ns().saturating_sub(ctx.engine.last_progress_ns());
                if u128::from(quiet_ns) < 2 * wd.as_nanos() {
                    systemd::watchdog();
                } else {
                    tracing::error!(
                        quiet_s = quiet_ns / 1_000_000_000,
                        "the inference thread has made no progress; withholding the watchdog ping"
                    );
                    systemd::status("inference thread stalled; waiting for the watchdog");
                }
            }
        }
    }
}
