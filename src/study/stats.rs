//! Statistics of repeated measurements: per metric n, mean, sample sd (Welford, f64),
//! the 95 % Student-t confidence interval, median, CV, min/max, outliers by the MAD
//! modified z-score (Iglewicz & Hoaglin), a slow-first-run check, and Welch's t-test.
//!
//! The Student-t CDF is computed from the regularized incomplete beta function
//! (continued fraction, modified Lentz — Numerical Recipes §6.4); its inverse by
//! bracketing and bisection on that CDF, so quantiles for any (also fractional,
//! Welch) degrees of freedom are exact to ~1e-12, not read from a short table.

use serde::{Deserialize, Serialize};

/// Modified z-score above which a value is an outlier (Iglewicz & Hoaglin, 1993).
pub const OUTLIER_Z: f64 = 3.5;
/// A first measured run this much slower than the median of the others (and slower
/// than every other) means the warm-up was too short.
pub const SLOW_FIRST_REL: f64 = 0.10;

/// Summary of one metric over a configuration's runs. Fields that need two values
/// (`sd`, the CI, `cv`) are `None` with fewer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Values summarised.
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1 denominator).
    pub sd: Option<f64>,
    /// 95 % Student-t confidence interval of the mean.
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
    pub median: f64,
    /// Coefficient of variation, sd ÷ |mean|.
    pub cv: Option<f64>,
    pub min: f64,
    pub max: f64,
    /// Indices (into the values given, i.e. repetition order) of outliers; shown,
    /// never dropped.
    pub outliers: Vec<usize>,
}

impl Summary {
    /// Summarises `values` (non-finite values are the caller's to exclude); `None`
    /// when empty.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let (n, mean, var) = welford(values)?;
        let sd = var.map(f64::sqrt);
        let half = sd.and_then(|s| ci95_halfwidth(s, n));
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Summary {
            n,
            mean,
            sd,
            ci95_low: half.map(|h| mean - h),
            ci95_high: half.map(|h| mean + h),
            median: median(values)?,
            cv: sd.filter(|_| mean != 0.0).map(|s| s / mean.abs()),
            min,
            max,
            outliers: mad_outliers(values),
        })
    }

    /// Half-width of the 95 % CI relative to |mean| (`None` below two values or at
    /// mean 0).
    pub fn ci_rel_halfwidth(&self) -> Option<f64> {
        let h = self.ci95_high? - self.mean;
        (self.mean != 0.0).then(|| h / self.mean.abs())
    }
}

/// Count, mean and sample variance in one stable pass (Welford 1962). Variance is
/// `None` below two values.
pub fn welford(values: &[f64]) -> Option<(usize, f64, Option<f64>)> {
    if values.is_empty() {
        return None;
    }
    let (mut mean, mut m2) = (0.0f64, 0.0f64);
    for (i, &x) in values.iter().enumerate() {
        let d = x - mean;
        mean += d / (i + 1) as f64;
        m2 += d * (x - mean);
    }
    let n = values.len();
    Some((n, mean, (n > 1).then(|| m2 / (n - 1) as f64)))
}

/// Half-width of the 95 % Student-t CI of a mean from its sample sd and n.
pub fn ci95_halfwidth(sd: f64, n: usize) -> Option<f64> {
    if n < 2 {
        return None;
    }
    Some(t_quantile(0.975, (n - 1) as f64)? * sd / (n as f64).sqrt())
}

/// Relative half-width of the 95 % CI of `values`' mean: what adaptive repetitions
/// compare with `repetitions.target_ci_rel`. `None` below two values or at mean 0.
pub fn ci_rel_halfwidth(values: &[f64]) -> Option<f64> {
    let (n, mean, var) = welford(values)?;
    let h = ci95_halfwidth(var?.sqrt(), n)?;
    (mean != 0.0).then(|| h / mean.abs())
}

/// Median (mean of the middle two for even n).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 0 {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    })
}

/// Modified z-scores, 0.6745·(x − median) ÷ MAD. With MAD = 0 (over half the values
/// equal) the mean absolute deviation stands in, scaled by 1.253314 (IBM's rule);
/// all zeros when that is 0 too.
pub fn modified_z(values: &[f64]) -> Vec<f64> {
    let Some(med) = median(values) else {
        return Vec::new();
    };
    let dev: Vec<f64> = values.iter().map(|x| (x - med).abs()).collect();
    let mad = median(&dev).unwrap_or(0.0);
    if mad > 0.0 {
        return values.iter().map(|x| 0.6745 * (x - med) / mad).collect();
    }
    let mean_ad = dev.iter().sum::<f64>() / dev.len() as f64;
    if mean_ad > 0.0 {
        values
            .iter()
            .map(|x| (x - med) / (1.253314 * mean_ad))
            .collect()
    } else {
        vec![0.0; values.len()]
    }
}

/// Indices of values whose |modified z| exceeds [`OUTLIER_Z`] (needs ≥ 3 values).
pub fn mad_outliers(values: &[f64]) -> Vec<usize> {
    if values.len() < 3 {
        return Vec::new();
    }
    modified_z(values)
        .iter()
        .enumerate()
        .filter(|(_, z)| z.abs() > OUTLIER_Z)
        .map(|(i, _)| i)
        .collect()
}

/// Whether the first of `rates` (a higher-is-better rate in repetition order, ≥ 3
/// values) is below every other and more than [`SLOW_FIRST_REL`] below their median.
pub fn slow_first(rates: &[f64]) -> bool {
    let [first, rest @ ..] = rates else {
        return false;
    };
    if rest.len() < 2 || rest.iter().any(|r| r <= first) {
        return false;
    }
    median(rest).is_some_and(|m| m > 0.0 && (m - first) / m > SLOW_FIRST_REL)
}

/// Welch's two-sample t-test: (t, degrees of freedom, two-sided p). `None` when a
/// side has fewer than two values or both variances are 0.
pub fn welch(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    let (na, ma, va) = welford(a)?;
    let (nb, mb, vb) = welford(b)?;
    let (sa, sb) = (va? / na as f64, vb? / nb as f64);
    let se2 = sa + sb;
    if se2 <= 0.0 {
        return None;
    }
    let t = (ma - mb) / se2.sqrt();
    let df = se2 * se2 / (sa * sa / (na - 1) as f64 + sb * sb / (nb - 1) as f64);
    Some((t, df, t_two_sided_p(t, df)?))
}

/// Two-sided p-value of Student's t with `df` degrees of freedom:
/// I_{df/(df+t²)}(df/2, 1/2).
pub fn t_two_sided_p(t: f64, df: f64) -> Option<f64> {
    if df.is_nan() || df <= 0.0 || !t.is_finite() {
        return None;
    }
    inc_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// Student-t CDF.
pub fn t_cdf(t: f64, df: f64) -> Option<f64> {
    let tail = t_two_sided_p(t, df)? / 2.0;
    Some(if t > 0.0 { 1.0 - tail } else { tail })
}

/// Student-t quantile (inverse CDF) for 0 < p < 1 and df > 0, by bisection on
/// [`t_cdf`] to ~1e-13 relative.
pub fn t_quantile(p: f64, df: f64) -> Option<f64> {
    if p.is_nan() || p <= 0.0 || p >= 1.0 || df.is_nan() || df <= 0.0 {
        return None;
    }
    if p < 0.5 {
        return t_quantile(1.0 - p, df).map(|q| -q);
    }
    if p == 0.5 {
        return Some(0.0);
    }
    let mut hi = 1.0f64;
    while t_cdf(hi, df)? < p {
        hi *= 2.0;
        if hi > 1e12 {
            return None;
        }
    }
    let mut lo = 0.0f64;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df)? < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-14 * hi {
            break;
        }
    }
    Some(0.5 * (lo + hi))
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; ~1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized incomplete beta I_x(a, b) for a, b > 0, 0 ≤ x ≤ 1.
pub fn inc_beta(a: f64, b: f64, x: f64) -> Option<f64> {
    if a.is_nan() || b.is_nan() || a <= 0.0 || b <= 0.0 || !(0.0..=1.0).contains(&x) {
        return None;
    }
    if x == 0.0 || x == 1.0 {
        return Some(x);
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    // The continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry
    // I_x(a,b) = 1 − I_{1−x}(b,a) on the other side.
    if x < (a + 1.0) / (a + b + 2.0) {
        Some(front * beta_cf(a, b, x)? / a)
    } else {
        Some(1.0 - front * beta_cf(b, a, 1.0 - x)? / b)
    }
}

/// The incomplete beta continued fraction (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> Option<f64> {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-15;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0f64;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=1000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in [
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ] {
            d = 1.0 + aa * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        // The last factor of the pair decides convergence.
        if (d * c - 1.0).abs() < EPS {
            return Some(h);
        }
    }
    None
}

#[cfg(test)]
// Reference values are printed at the precision mpmath gave them.
#[allow(clippy::excessive_precision)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) {
        assert!(
            (a - b).abs() <= rel * b.abs().max(1e-300),
            "{a} vs {b} (rel {rel})"
        );
    }

    // Reference values: mpmath 1.3 at 30 digits (betainc, findroot on the t CDF).
    #[test]
    fn t_quantiles_match_reference() {
        for (df, q) in [
            (1.0, 12.706204736174705),
            (2.0, 4.3026527297494639),
            (3.0, 3.1824463052837096),
            (5.0, 2.5705818356363155),
            (10.0, 2.2281388519862747),
            (30.0, 2.0422724563012383),
            (100.0, 1.9839715185235523),
            (7.5, 2.3330396268649746),
        ] {
            close(t_quantile(0.975, df).unwrap(), q, 1e-10);
        }
        close(t_quantile(0.995, 4.0).unwrap(), 4.6040948713499932, 1e-10);
        close(t_quantile(0.9, 3.0).unwrap(), 1.6377443536962101, 1e-10);
        close(t_quantile(0.025, 5.0).unwrap(), -2.5705818356363155, 1e-10);
        assert_eq!(t_quantile(0.5, 3.0), Some(0.0));
        assert_eq!(t_quantile(1.0, 3.0), None);
        assert_eq!(t_quantile(0.9, 0.0), None);
    }

    #[test]
    fn incomplete_beta_and_t_cdf_match_reference() {
        for (a, b, x, v) in [
            (2.0, 3.0, 0.4, 0.5248),
            (0.5, 0.5, 0.3, 0.36901011956554538),
            (10.0, 2.5, 0.9, 0.8121862743088557),
            (1.5, 0.5, 0.05, 0.0048182304681985513),
        ] {
            close(inc_beta(a, b, x).unwrap(), v, 1e-12);
        }
        close(t_cdf(2.0, 5.0).unwrap(), 0.94903026058507082, 1e-12);
        close(t_cdf(-1.3, 12.4).unwrap(), 0.10862351072197258, 1e-11);
        assert_eq!(inc_beta(1.0, 1.0, 1.5), None);
        // ln Γ(0.5) = ln √π, ln Γ(10) = ln 9!.
        close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-14);
        close(ln_gamma(10.0), 362880f64.ln(), 1e-14);
    }

    #[test]
    fn welch_matches_reference() {
        // Wikipedia's Welch example A1/A2.
        let a = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let b = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        let (t, df, p) = welch(&a, &b).unwrap();
        close(t, -2.455356398286009, 1e-12);
        close(df, 24.988529290231414, 1e-12);
        close(p, 0.021378001462866843, 1e-10);
        let (t, df, p) = welch(&[1.0, 1.1, 0.9, 1.05], &[1.3, 1.4, 1.2]).unwrap();
        close(t, -4.0037860869810527, 1e-12);
        close(df, 3.9900936355000695, 1e-12);
        close(p, 0.016158207473188123, 1e-10);
        assert_eq!(welch(&[1.0], &[2.0, 3.0]), None);
        assert_eq!(welch(&[1.0, 1.0], &[1.0, 1.0]), None);
    }

    #[test]
    fn summary_of_known_values() {
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.n, 8);
        close(s.mean, 5.0, 1e-15);
        close(s.sd.unwrap(), (32.0f64 / 7.0).sqrt(), 1e-14);
        let h = 2.3646242515927853 * (32.0f64 / 7.0).sqrt() / 8f64.sqrt(); // t(0.975, 7)
        close(s.ci95_high.unwrap(), 5.0 + h, 1e-10);
        close(s.ci95_low.unwrap(), 5.0 - h, 1e-10);
        close(s.ci_rel_halfwidth().unwrap(), h / 5.0, 1e-10);
        assert_eq!((s.median, s.min, s.max), (4.5, 2.0, 9.0));
        close(s.cv.unwrap(), s.sd.unwrap() / 5.0, 1e-15);
        // MAD = 0.5 around 4.5: 9 is 0.6745·4.5/0.5 = 6.1 out, 2 only 3.4.
        assert_eq!(s.outliers, vec![7]);
        let one = Summary::of(&[3.0]).unwrap();
        assert_eq!((one.sd, one.ci95_low, one.cv), (None, None, None));
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn welford_is_stable_at_a_large_offset() {
        // Naive Σx² − n·mean² loses every digit here; Welford keeps them.
        let v: Vec<f64> = [4.0, 7.0, 13.0, 16.0].iter().map(|x| 1e9 + x).collect();
        let (_, mean, var) = welford(&v).unwrap();
        close(mean, 1e9 + 10.0, 1e-15);
        close(var.unwrap(), 30.0, 1e-9);
        close(
            ci_rel_halfwidth(&v).unwrap(),
            ci95_halfwidth(30f64.sqrt(), 4).unwrap() / (1e9 + 10.0),
            1e-9,
        );
    }

    #[test]
    fn outliers_by_modified_z() {
        let v = [10.0, 10.2, 9.9, 10.1, 10.0, 14.0];
        assert_eq!(mad_outliers(&v), vec![5]);
        // MAD = 0 (most values equal): the mean absolute deviation stands in.
        assert_eq!(mad_outliers(&[5.0, 5.0, 5.0, 5.0, 9.0]), vec![4]);
        assert!(mad_outliers(&[5.0, 5.0, 5.0]).is_empty());
        assert!(mad_outliers(&[1.0, 100.0]).is_empty());
    }

    #[test]
    fn slow_first_run_is_flagged() {
        assert!(slow_first(&[40.0, 50.0, 51.0, 49.5]));
        assert!(!slow_first(&[48.0, 50.0, 51.0, 49.5])); // within 10 %
        assert!(!slow_first(&[40.0, 50.0, 39.0])); // not the slowest
        assert!(!slow_first(&[40.0, 50.0])); // too few
    }
}
