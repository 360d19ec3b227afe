//! What a board runs next: adaptive repetitions (`min` … `max` until the 95 % CI
//! half-width of decode t/s and of J/token are within `target_ci_rel` of their means)
//! and the order (interleaved rounds shuffled with the seed, models kept together;
//! or grouped). Pure functions with their tests.

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::config::Configuration;
use super::plan::{Order, Repetitions};

/// Two-sided 95 % Student-t critical values t(0.975, df) for df = 1 … 30.
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// t(0.975, df): the table up to 30, then the Cornish-Fisher expansion around the
/// normal quantile (error < 1e-3 for df > 30). `df` 0 has no interval: infinity.
pub fn t_975(df: u32) -> f64 {
    match df {
        0 => f64::INFINITY,
        1..=30 => T975[df as usize - 1],
        _ => {
            let z: f64 = 1.959_964;
            let n = f64::from(df);
            z + (z.powi(3) + z) / (4.0 * n)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * n * n)
        }
    }
}

/// Mean and sample standard deviation (Welford; stable for close values).
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    let (mut mean, mut m2) = (0.0, 0.0);
    for (i, &x) in values.iter().enumerate() {
        let d = x - mean;
        mean += d / (i + 1) as f64;
        m2 += d * (x - mean);
    }
    let sd = if values.len() > 1 {
        (m2 / (values.len() - 1) as f64).sqrt()
    } else {
        0.0
    };
    (mean, sd)
}

/// 95 % CI half-width relative to the mean; `None` below two values or at mean 0.
pub fn ci_rel(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let (mean, sd) = mean_sd(values);
    if mean == 0.0 || !mean.is_finite() {
        return None;
    }
    let half = t_975(values.len() as u32 - 1) * sd / (values.len() as f64).sqrt();
    Some((half / mean).abs())
}

/// What is stored of one configuration so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Successful runs.
    pub ok: u32,
    /// Runs stored with an error (not yet retried).
    pub failed: u32,
    /// Decode t/s of each successful run.
    pub decode_tps: Vec<f64>,
    /// Decode J/token of each successful run that has energy figures.
    pub j_per_token: Vec<f64>,
}

/// Whether the configuration needs another run. A failed run stops the
/// configuration (it is reported incomplete) unless failures are being retried.
pub fn needs_more(p: &Progress, r: &Repetitions, retry_failed: bool) -> bool {
    if p.failed > 0 && !retry_failed {
        return false;
    }
    if p.failed > 0 {
        return true;
    }
    if p.ok < r.min {
        return true;
    }
    if p.ok >= r.max {
        return false;
    }
    if r.target_ci_rel <= 0.0 {
        return true;
    }
    let tight = |v: &[f64]| ci_rel(v).is_some_and(|c| c <= r.target_ci_rel);
    // J/token counts only when every run has it (a board without sensors has none).
    let energy_ok = p.j_per_token.len() < p.ok as usize || tight(&p.j_per_token);
    !(tight(&p.decode_tps) && energy_ok)
}

/// The order of one round of an interleaved board: the configurations (indices into
/// `cfgs`) grouped by model, models alternating direction each round so the model
/// that ends a round starts the next (one reload per model change, none between
/// rounds), configurations shuffled with the seed within each model.
pub fn round_order(cfgs: &[&Configuration], order: Order, seed: u32, round: u32) -> Vec<usize> {
    let mut models: Vec<&str> = Vec::new();
    for c in cfgs {
        if !models.contains(&c.model.as_str()) {
            models.push(&c.model);
        }
    }
    if round % 2 == 1 {
        models.reverse();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64((u64::from(seed) << 32) | u64::from(round));
    let mut out = Vec::with_capacity(cfgs.len());
    for m in models {
        let mut group: Vec<usize> = (0..cfgs.len()).filter(|&i| cfgs[i].model == m).collect();
        if order == Order::Interleaved {
            group.shuffle(&mut rng);
        }
        out.extend(group);
    }
    out
}

/// Model loads a run sequence costs (a load whenever the model changes).
pub fn model_switches(models: &[&str]) -> usize {
    models
        .iter()
        .enumerate()
        .filter(|(i, m)| *i == 0 || models[i - 1] != **m)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reps(min: u32, max: u32, ci: f64) -> Repetitions {
        Repetitions {
            min,
            max,
            target_ci_rel: ci,
        }
    }

    fn progress(tps: &[f64], jpt: &[f64]) -> Progress {
        Progress {
            ok: tps.len() as u32,
            failed: 0,
            decode_tps: tps.to_vec(),
            j_per_token: jpt.to_vec(),
        }
    }

    #[test]
    fn student_t_matches_the_table_and_tends_to_the_normal() {
        assert_eq!(t_975(1), 12.706);
        assert_eq!(t_975(9), 2.262);
        assert!((t_975(40) - 2.021).abs() < 1e-3, "{}", t_975(40));
        assert!((t_975(120) - 1.980).abs() < 1e-3, "{}", t_975(120));
        assert!((t_975(100_000) - 1.960).abs() < 1e-3);
        assert!(t_975(0).is_infinite());
        // Monotone decreasing across the table's end.
        assert!(t_975(30) > t_975(31) && t_975(31) > t_975(32));
    }

    #[test]
    fn mean_sd_is_stable_and_the_ci_is_relative() {
        let (m, sd) = mean_sd(&[1e9 + 4.0, 1e9 + 7.0, 1e9 + 13.0, 1e9 + 16.0]);
        assert_eq!(m, 1e9 + 10.0);
        assert!((sd - 30f64.sqrt()).abs() < 1e-6, "{sd}");
        // n = 2: half = 12.706 × sd / √2; values 9, 11: sd = √2 → half 12.706, mean 10.
        assert!((ci_rel(&[9.0, 11.0]).unwrap() - 1.2706).abs() < 1e-9);
        assert_eq!(ci_rel(&[5.0]), None);
        assert_eq!(ci_rel(&[0.0, 0.0]), None);
    }

    #[test]
    fn repetitions_stop_at_min_when_tight_continue_when_noisy_never_past_max() {
        let r = reps(2, 5, 0.05);
        assert!(needs_more(&progress(&[100.0], &[0.1]), &r, false));
        // Tight on both metrics at min: stop.
        assert!(!needs_more(
            &progress(&[100.0, 100.5], &[0.1, 0.1001]),
            &r,
            false
        ));
        // Noisy decode t/s: continue.
        assert!(needs_more(
            &progress(&[100.0, 120.0], &[0.1, 0.1]),
            &r,
            false
        ));
        // Tight t/s but noisy energy: continue.
        assert!(needs_more(
            &progress(&[100.0, 100.0], &[0.1, 0.2]),
            &r,
            false
        ));
        // At max: stop however noisy.
        let noisy = [100.0, 150.0, 90.0, 130.0, 70.0];
        assert!(!needs_more(&progress(&noisy, &noisy), &r, false));
        // No energy figures (no sensors): decode t/s alone decides.
        assert!(!needs_more(&progress(&[100.0, 100.2], &[]), &r, false));
        // target 0: always max.
        assert!(needs_more(
            &progress(&[100.0, 100.0], &[]),
            &reps(2, 3, 0.0),
            false
        ));
    }

    #[test]
    fn a_failure_stops_the_configuration_unless_retried() {
        let r = reps(2, 5, 0.05);
        let mut p = progress(&[100.0], &[]);
        p.failed = 1;
        assert!(!needs_more(&p, &r, false));
        assert!(needs_more(&p, &r, true));
    }

    fn cfg(model: &str, threads: u32) -> Configuration {
        Configuration {
            device: "a".into(),
            model: model.into(),
            threads: Some(threads),
            prompt_tokens: 32,
            gen_tokens: 32,
            depth: 0,
            n_ctx: 512,
            batch: None,
            n_gpu_layers: 0,
            power_mode: None,
            quality: None,
        }
    }

    #[test]
    fn interleaved_rounds_are_shuffled_by_seed_and_keep_models_together() {
        let owned: Vec<Configuration> =
            (1..=6).flat_map(|t| [cfg("m1", t), cfg("m2", t)]).collect();
        let cfgs: Vec<&Configuration> = owned.iter().collect();
        let r0 = round_order(&cfgs, Order::Interleaved, 1, 0);
        let r1 = round_order(&cfgs, Order::Interleaved, 1, 1);
        let mut sorted = r0.clone();
        sorted.sort();
        assert_eq!(sorted, (0..12).collect::<Vec<_>>(), "a permutation");
        assert_eq!(
            r0,
            round_order(&cfgs, Order::Interleaved, 1, 0),
            "deterministic"
        );
        assert_ne!(
            r0,
            round_order(&cfgs, Order::Interleaved, 2, 0),
            "follows the seed"
        );
        // Two rounds back to back: one load per model for both (the direction flips).
        let seq: Vec<&str> = r0
            .iter()
            .chain(&r1)
            .map(|&i| cfgs[i].model.as_str())
            .collect();
        assert_eq!(model_switches(&seq), 3);
        // Within a model the order is not the plan's.
        let m1: Vec<usize> = r0
            .iter()
            .copied()
            .filter(|&i| cfgs[i].model == "m1")
            .collect();
        assert_ne!(m1, vec![0, 2, 4, 6, 8, 10]);
    }

    #[test]
    fn grouped_keeps_the_plan_order_within_each_model() {
        let owned = [cfg("m1", 1), cfg("m2", 1), cfg("m1", 2)];
        let cfgs: Vec<&Configuration> = owned.iter().collect();
        assert_eq!(round_order(&cfgs, Order::Grouped, 1, 0), vec![0, 2, 1]);
    }
}
