//! Publishes the journal's outbox and marks rows sent when the broker acknowledges
//! them (PUBACK). Rows stay unsent across restarts until acknowledged, so results
//! are delivered at least once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::jobs::mqtt::{json_properties, Confirm, OutMessage};

/// Most outbox rows handed to the session and not yet acknowledged.
const WINDOW: usize = 256;
/// A row handed to the session this long ago without PUBACK is published again
/// (e.g. the broker dropped our session).
const RESEND_AFTER: Duration = Duration::from_secs(60);

/// Runs until `cancel` fires.
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let (ack_tx, mut ack_rx) = mpsc::channel::<i64>(WINDOW * 2);
    let mut inflight: HashMap<i64, Instant> = HashMap::new();
    // Rows the broker acknowledged that the journal could not mark sent (disk full):
    // never published again from here, marked on the next tick. Without this, every
    // PUBACK re-read them as unsent and published them again at once — a hot loop
    // that answered jobs over and over while the disk was full (the soak, issue 14).
    let mut acked_unmarked: HashSet<i64> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    // Retention, hourly: the store's jobs and traces (`store.max_age_days`,
    // `store.max_bytes`) and the journal (finished jobs and sent rows only).
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Rows left unsent by a previous run go first.
    publish_unsent(&ctx, &ack_tx, &mut inflight, &acked_unmarked).await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ctx.outbox_wake.notified() => publish_unsent(&ctx, &ack_tx, &mut inflight, &acked_unmarked).await,
            Some(seq) = ack_rx.recv() => {
                let mut acked = vec![seq];
                while let Ok(s) = ack_rx.try_recv() {
                    acked.push(s);
                }
                for s in &acked {
                    inflight.remove(s);
                }
                let keep = acked.clone();
                if let Err(e) = ctx.journal.call(move |j| j.mark_sent(&acked)).await {
                    if acked_unmarked.is_empty() {
                        tracing::error!("cannot mark outbox rows sent (retried every 15 s): {e}");
                    }
                    acked_unmarked.extend(keep);
                }
                if inflight.len() < WINDOW / 2 {
                    publish_unsent(&ctx, &ack_tx, &mut inflight, &acked_unmarked).await;
                }
            }
            _ = prune.tick() => {
                // Stored jobs and traces: by age and by size (`[store]`).
                ctx.measure
                    .apply_retention(ctx.settings.max_age_days, ctx.settings.store_max_bytes)
                    .await;
                if ctx.settings.max_age_days == 0 {
                    continue;
                }
                let age_ns = u64::from(ctx.settings.max_age_days) * 86_400 * 1_000_000_000;
                let before = crate::clock::unix_ns().saturating_sub(age_ns);
                match ctx.journal.call(move |j| j.prune(before)).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("pruned {n} finished jobs from the journal"),
                    Err(e) => tracing::warn!("cannot prune the journal: {e}"),
                }
            }
            _ = tick.tick() => {
                if !acked_unmarked.is_empty() {
                    let seqs: Vec<i64> = acked_unmarked.iter().copied().collect();
                    if ctx.journal.call(move |j| j.mark_sent(&seqs)).await.is_ok() {
                        acked_unmarked.clear();
                    }
                }
                if !ctx.unjournaled.is_empty() {
                    ctx.retry_unjournaled().await;
                }
                if *ctx.session.connected().borrow() {
                    inflight.retain(|_, at| at.elapsed() < RESEND_AFTER);
                }
                publish_unsent(&ctx, &ack_tx, &mut inflight, &acked_unmarked).await;
            }
        }
    }
}

async fn publish_unsent(
    ctx: &Arc<Ctx>,
    ack_tx: &mpsc::Sender<i64>,
    inflight: &mut HashMap<i64, Instant>,
    acked_unmarked: &HashSet<i64>,
) {
    if inflight.len() >= WINDOW {
        return;
    }
    let rows = match ctx.journal.call(|j| j.unsent()).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!("cannot read the outbox: {e}");
            return;
        }
    };
    for row in rows {
        if inflight.len() >= WINDOW {
            break;
        }
        if inflight.contains_key(&row.seq) || acked_unmarked.contains(&row.seq) {
            continue;
        }
        let msg = OutMessage {
            topic: row.msg.topic,
            payload: Bytes::from(row.msg.payload),
            qos: QoS::AtLeastOnce,
            retain: row.msg.retain,
            properties: Some(json_properties(row.msg.correlation)),
            confirm: Some(Confirm {
                tag: row.seq,
                tx: ack_tx.clone(),
            }),
        };
        if ctx.session.publish(msg).await.is_err() {
            return;
        }
        inflight.insert(row.seq, Instant::now());
    }
}

/// Waits (up to `timeout`) until the outbox is empty: used by the graceful shutdown
/// so results reach the broker before the board says `offline`.
pub async fn flush(ctx: &Arc<Ctx>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match ctx.journal.call(|j| j.unsent()).await {
            Ok(rows) if rows.is_empty() => return,
            Ok(_) => ctx.outbox_wake.notify_one(),
            Err(_) => return,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!("outbox not empty at shutdown; the rest is published at the next start");
}
