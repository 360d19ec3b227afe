//! Perplexity as `llama-perplexity` computes it (tools/perplexity/perplexity.cpp):
//! non-overlapping chunks of `n_ctx` tokens, the first token of each chunk replaced by
//! BOS when the model wants one, only the second half of each chunk scored (token
//! `first + i + 1` from the logits at `first + i`, `first = n_ctx / 2`), and
//! PPL = exp(mean NLL) with the standard error llama-perplexity prints
//! (`PPL × sqrt((E[NLL²] − E[NLL]²) / (count − 1))`).

/// Negative log-likelihood of `tok` under `logits` (log-softmax with the max
/// subtracted, f32 exponentials summed in f64 — llama.cpp's `log_softmax`), and the
/// token's probability.
pub fn token_nll(logits: &[f32], tok: usize) -> (f64, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum_exp: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let nll = -((logits[tok] - max) as f64 - sum_exp.ln());
    (nll, (logits[tok] - max).exp() / sum_exp as f32)
}

/// Running sums of NLL.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NllSum {
    pub nll: f64,
    pub nll2: f64,
    pub count: u64,
}

impl NllSum {
    pub fn add(&mut self, v: f64) {
        self.nll += v;
        self.nll2 += v * v;
        self.count += 1;
    }

    pub fn merge(&mut self, o: &NllSum) {
        self.nll += o.nll;
        self.nll2 += o.nll2;
        self.count += o.count;
    }

    /// (PPL, its standard error), llama-perplexity's final estimate. (0, 0) when empty.
    pub fn ppl(&self) -> (f64, f64) {
        if self.count == 0 {
            return (0.0, 0.0);
        }
        let n = self.count as f64;
        let mean = self.nll / n;
        let ppl = mean.exp();
        let var = self.nll2 / n - mean * mean;
        let se = if var > 0.0 && self.count > 1 {
            (var / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        (ppl, se * ppl)
    }
}

/// Whole chunks of `n_ctx` in `n_tokens`, at most `max_chunks`.
pub fn chunk_count(n_tokens: usize, n_ctx: u32, max_chunks: Option<u32>) -> usize {
    let whole = n_tokens / n_ctx.max(1) as usize;
    max_chunks.map_or(whole, |m| whole.min(m as usize))
}

/// Index of the first scored logits row in a chunk.
pub fn first_scored(n_ctx: u32) -> usize {
    n_ctx as usize / 2
}

/// Tokens scored per chunk: `n_ctx − 1 − first`.
pub fn scored_per_chunk(n_ctx: u32) -> usize {
    n_ctx as usize - 1 - first_scored(n_ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_is_minus_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let (nll, p) = token_nll(&logits, 2);
        assert!((nll - (z.ln() - 3.0)).abs() < 1e-6);
        assert!((p as f64 - 3f64.exp() / z).abs() < 1e-6);
        // Uniform logits over V tokens: NLL = ln V, whatever the offset.
        let (nll, _) = token_nll(&[1000.0; 4], 1);
        assert!((nll - 4f64.ln()).abs() < 1e-9);
    }

    #[test]
    fn ppl_and_stderr_match_llama_perplexity_formula() {
        let mut s = NllSum::default();
        for v in [1.0, 2.0, 3.0, 4.0] {
            s.add(v);
        }
        let (ppl, se) = s.ppl();
        assert!((ppl - 2.5f64.exp()).abs() < 1e-12);
        // E[v²] − E[v]² = 7.5 − 6.25 = 1.25; / (n − 1) = 0.41667; sqrt × ppl.
        assert!((se - (1.25f64 / 3.0).sqrt() * ppl).abs() < 1e-12);
        let mut a = NllSum::default();
        a.add(1.0);
        a.add(2.0);
        let mut b = NllSum::default();
        b.add(3.0);
        b.add(4.0);
        a.merge(&b);
        assert_eq!(a, s);
        assert_eq!(NllSum::default().ppl(), (0.0, 0.0));
    }

    #[test]
    fn chunks_are_whole_and_capped() {
        assert_eq!(chunk_count(1100, 512, None), 2);
        assert_eq!(chunk_count(1100, 512, Some(1)), 1);
        assert_eq!(chunk_count(511, 512, None), 0);
        assert_eq!(first_scored(512), 256);
        assert_eq!(scored_per_chunk(512), 255);
        assert_eq!(scored_per_chunk(17), 8);
    }
}
