//! KL divergence of a model's next-token distributions from a reference's, token by
//! token, summarised as `llama-perplexity --kl-divergence` reports it: mean KLD ± its
//! standard error, the 99th percentile (linear interpolation between ranks), mean
//! Δp of the correct token (p_model − p_reference) ± error, and the fraction of
//! tokens with the same most likely token ("same top p") ± error.
//!
//! llama-perplexity reads the reference from a logits file of 16-bit log-probs and
//! drops reference tokens below e⁻¹⁶; here both models run in the same job and the
//! sum is over the whole vocabulary in full precision (so KLD ≥ 0 holds exactly and a
//! model against itself gives 0).

use super::perplexity::NllSum;

/// One token's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenKld {
    pub kld: f64,
    /// p(tok | model) − p(tok | reference).
    pub p_diff: f64,
    pub same_top: bool,
    pub nll: f64,
    pub nll_ref: f64,
}

/// log-softmax parts of a row: (max, ln Σ exp(l − max), argmax (first maximum)).
fn lse(row: &[f32]) -> (f32, f64, usize) {
    let mut imax = 0;
    for (i, &l) in row.iter().enumerate() {
        if l > row[imax] {
            imax = i;
        }
    }
    let max = row[imax];
    let sum: f64 = row.iter().map(|&l| (l - max).exp() as f64).sum();
    (max, sum.ln(), imax)
}

/// KL(reference ‖ model) for one position, and the correct token's figures.
pub fn token_kld(reference: &[f32], model: &[f32], tok: usize) -> TokenKld {
    let (mr, lr, ir) = lse(reference);
    let (mm, lm, im) = lse(model);
    let mut kld = 0.0f64;
    for (&r, &m) in reference.iter().zip(model) {
        let log_pr = (r - mr) as f64 - lr;
        let log_pm = (m - mm) as f64 - lm;
        kld += log_pr.exp() * (log_pr - log_pm);
    }
    let nll_ref = lr - (reference[tok] - mr) as f64;
    let nll = lm - (model[tok] - mm) as f64;
    TokenKld {
        // Rounding can leave −1e-17 for identical rows; KL is never below 0.
        kld: kld.max(0.0),
        p_diff: (-nll).exp() - (-nll_ref).exp(),
        same_top: ir == im,
        nll,
        nll_ref,
    }
}

/// Mean and its standard error, llama-perplexity's `mean_and_uncertainty`
/// (error 0 for ten values or fewer).
pub fn mean_and_uncertainty(sum: f64, sum2: f64, count: u64) -> (f64, f64) {
    if count == 0 {
        return (0.0, 0.0);
    }
    let n = count as f64;
    let f = sum / n;
    let df = sum2 / n - f * f;
    let df = if df > 0.0 && count > 10 {
        (df / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (f, df)
}

/// Linear-interpolation percentile of sorted values (llama-perplexity's `percentile`).
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        _ if fraction <= 0.0 => sorted[0],
        n if fraction >= 1.0 => sorted[n - 1],
        n => {
            let p = fraction * (n - 1) as f64;
            let ip = p as usize;
            let t = p - ip as f64;
            (1.0 - t) * sorted[ip] + t * sorted[(ip + 1).min(n - 1)]
        }
    }
}

/// Running KLD sums.
#[derive(Debug, Clone, Default)]
pub struct KldSum {
    pub nll: NllSum,
    pub nll_ref: NllSum,
    pub kld: f64,
    pub kld2: f64,
    pub p_diff: f64,
    pub p_diff2: f64,
    pub same_top: u64,
    pub count: u64,
    /// Every token's KLD (for the percentiles).
    pub values: Vec<f64>,
}

/// The summary.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KldStats {
    pub kld_mean: f64,
    pub kld_stderr: f64,
    pub kld_p99: f64,
    pub delta_p_mean: f64,
    pub delta_p_stderr: f64,
    pub top1_agreement: f64,
    pub top1_stderr: f64,
}

impl KldSum {
    pub fn add(&mut self, t: &TokenKld) {
        self.nll.add(t.nll);
        self.nll_ref.add(t.nll_ref);
        self.kld += t.kld;
        self.kld2 += t.kld * t.kld;
        self.p_diff += t.p_diff;
        self.p_diff2 += t.p_diff * t.p_diff;
        self.same_top += t.same_top as u64;
        self.count += 1;
        self.values.push(t.kld);
    }

    pub fn stats(&self) -> KldStats {
        let (kld_mean, kld_stderr) = mean_and_uncertainty(self.kld, self.kld2, self.count);
        let (delta_p_mean, delta_p_stderr) =
            mean_and_uncertainty(self.p_diff, self.p_diff2, self.count);
        let n = self.count.max(1) as f64;
        let top = self.same_top as f64 / n;
        let top1_stderr = if self.count > 1 {
            (top * (1.0 - top) / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        KldStats {
            kld_mean,
            kld_stderr,
            kld_p99: percentile(&sorted, 0.99),
            delta_p_mean,
            delta_p_stderr,
            top1_agreement: top,
            top1_stderr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_rows_have_zero_kld_and_agree() {
        let row = [0.5f32, -1.0, 3.0, 2.0];
        let t = token_kld(&row, &row, 1);
        assert_eq!(t.kld, 0.0);
        assert_eq!(t.p_diff, 0.0);
        assert!(t.same_top);
        assert_eq!(t.nll, t.nll_ref);
    }

    #[test]
    fn kld_matches_the_definition() {
        let r = [0.0f32, 1.0, 2.0];
        let m = [2.0f32, 1.0, 0.0];
        let p = |v: &[f32]| {
            let z: f64 = v.iter().map(|&x| (x as f64).exp()).sum();
            v.iter().map(|&x| (x as f64).exp() / z).collect::<Vec<_>>()
        };
        let (pr, pm) = (p(&r), p(&m));
        let want: f64 = pr.iter().zip(&pm).map(|(a, b)| a * (a / b).ln()).sum();
        let t = token_kld(&r, &m, 0);
        assert!((t.kld - want).abs() < 1e-6, "{} vs {want}", t.kld);
        assert!(t.kld > 0.0);
        assert!((t.p_diff - (pm[0] - pr[0])).abs() < 1e-6);
        assert!(!t.same_top);
    }

    #[test]
    fn summary_follows_llama_perplexity() {
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.99) - 4.96).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(mean_and_uncertainty(10.0, 30.0, 5), (2.0, 0.0));
        let mut s = KldSum::default();
        for i in 0..20 {
            s.add(&TokenKld {
                kld: i as f64 * 0.01,
                p_diff: -0.01,
                same_top: i % 4 != 0,
                nll: 1.0,
                nll_ref: 1.0,
            });
        }
        let st = s.stats();
        assert!((st.kld_mean - 0.095).abs() < 1e-12);
        assert!(st.kld_stderr > 0.0);
        assert!((st.kld_p99 - 0.1881).abs() < 1e-9);
        assert!((st.delta_p_mean + 0.01).abs() < 1e-12);
        assert_eq!(st.top1_agreement, 0.75);
        assert!((st.top1_stderr - (0.75f64 * 0.25 / 19.0).sqrt()).abs() < 1e-12);
    }
}
