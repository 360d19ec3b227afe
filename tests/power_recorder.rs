//! A job's recording drains the sampler's ring while it runs: a recording much longer
//! than the ring holds every sample, in order, once; a recording starved for longer
//! than the ring lasts reports the overwritten span as a gap instead of hiding it.

mod power_common;

use std::sync::Arc;
use std::time::Duration;

use edgewatt::clock::monotonic_ns;
use edgewatt::power::{start_sampler, Recorded, Recorder, SamplerHandle, SamplerOptions};
use power_common::{spec, INA219_SIM};
use tokio_util::sync::CancellationToken;

fn sampler(ring_capacity: usize) -> Arc<SamplerHandle> {
    Arc::new(
        start_sampler(
            &[spec(INA219_SIM)],
            SamplerOptions {
                ring_capacity,
                ..SamplerOptions::default()
            },
            CancellationToken::new(),
        )
        .expect("sampler"),
    )
}

/// Records from now for `run`, draining every `every`; returns when it started.
fn record(h: &Arc<SamplerHandle>, every: Duration, run: Duration) -> (u64, Recorded) {
    let t0 = monotonic_ns();
    let rec = Recorder::start(h.clone(), t0, every, &CancellationToken::new()).expect("recorder");
    std::thread::sleep(run);
    (t0, rec.finish())
}

#[test]
fn recording_outlasts_the_ring_without_loss_or_repeats() {
    let ring = 256; // ~0.27 s at 940 Hz
    let h = sampler(ring);
    std::thread::sleep(Duration::from_millis(400)); // the ring has wrapped already
    let (t0, got) = record(&h, Duration::from_millis(50), Duration::from_millis(1500));
    let stats = h.stats();
    h.shutdown();

    assert!(got.lost.is_empty(), "nothing lost: {:?}", got.lost);
    assert!(
        got.samples.len() > 4 * ring,
        "{} samples recorded, ring holds {ring}",
        got.samples.len()
    );
    // Strictly increasing: no sample twice, none out of order.
    for w in got.samples.windows(2) {
        assert!(w[0].t_ns() < w[1].t_ns(), "{:?} then {:?}", w[0], w[1]);
    }
    // No holes: every interval is about one conversion period (1.064 ms), allowing a
    // descheduled sampler on a loaded CI box but nothing like a lost ring's worth.
    let max_dt = got
        .samples
        .windows(2)
        .map(|w| w[1].t_ns() - w[0].t_ns())
        .max()
        .unwrap_or(0);
    assert!(max_dt < 100_000_000, "largest interval {max_dt} ns");
    // Everything the sampler produced after t0 is there: compare with its counter.
    assert!(got.samples.first().is_some_and(|s| s.t_ns() >= t0));
    let produced = stats.rails[0].samples;
    assert!(
        got.samples.len() as u64 <= produced,
        "{} recorded, {produced} produced",
        got.samples.len()
    );
}

#[test]
fn starved_recording_reports_the_overwritten_span() {
    let ring = 128; // ~0.14 s at 940 Hz
    let h = sampler(ring);
    std::thread::sleep(Duration::from_millis(100));
    // Drains only at finish: 0.8 s of samples into a 0.14 s ring.
    let (_, got) = record(&h, Duration::from_secs(60), Duration::from_millis(800));
    h.shutdown();

    assert_eq!(got.lost.len(), 1, "one gap on the one rail: {:?}", got.lost);
    let gap = &got.lost[0];
    assert!(gap.reason.contains("ring overflowed"), "{}", gap.reason);
    assert!(gap.reason.contains("power.ring_capacity"), "{}", gap.reason);
    assert!(gap.end_ns > gap.start_ns);
    // The gap ends where the surviving samples begin, and they are the ring's worth.
    let first = got
        .samples
        .iter()
        .find(|s| s.t_before_ns >= gap.end_ns)
        .expect("samples after the gap");
    assert_eq!(first.t_before_ns, gap.end_ns);
    assert!(got.samples.len() <= ring + 400, "{}", got.samples.len());
}
