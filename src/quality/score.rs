//! One quality run on loaded models, on the inference thread: tokenize the text once,
//! evaluate it chunk by chunk (both models for `kld`, the same chunk on each before the
//! next), score the second half of every chunk from the logits, stop between chunks
//! when canceled.
//!
//! Events: `repetition_start`, `prefill_start` (the eval phase: `prompt_tokens` = the
//! tokens every chunk evaluates together), `done` (which closes it) — so traces,
//! phases and energy are computed for a quality job as for any job.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio_util::sync::CancellationToken;

use super::kld::{token_kld, KldSum, TokenKld};
use super::perplexity::{chunk_count, first_scored, token_nll, NllSum};
use super::{QualityError, QualityKind, QualityRequest, QualityResult, MIN_N_CTX};
use crate::clock::monotonic_ns;
use crate::infer::error::EngineError;
use crate::infer::events::{EngineEvent, EventObserver, FinishReason};
use crate::infer::generate::new_context;
use crate::infer::metrics::ns_to_ms;
use crate::infer::request::GenerateOptions;

/// A loaded model and its name.
pub struct Loaded<'m> {
    pub name: &'m str,
    pub model: &'m LlamaModel,
}

/// What one run produced.
pub struct ScoreOutcome {
    pub result: QualityResult,
    pub finish_reason: FinishReason,
    /// Tokens the text tokenized to (with this model's vocabulary).
    pub text_tokens: usize,
    pub eval_start_ns: u64,
    pub eval_end_ns: u64,
}

fn refuse(e: QualityError) -> EngineError {
    EngineError::Quality(e)
}

/// Checks `n_ctx` against the bounds and the model's trained context.
pub fn check_n_ctx(n_ctx: u32, trained: u32) -> Result<(), QualityError> {
    let max = trained.max(MIN_N_CTX);
    if n_ctx < MIN_N_CTX || n_ctx > max {
        return Err(QualityError::BadNCtx { n_ctx, max });
    }
    Ok(())
}

/// Tokenizes the text for `model` (BOS added when the model wants one, special tokens
/// not parsed: llama-perplexity's `common_tokenize(ctx, prompt, true)`).
fn tokenize(model: &LlamaModel, bytes: &[u8]) -> Vec<LlamaToken> {
    model.vocab().tokenize(bytes, true, false)
}

/// Fills `batch` with chunk `c` (BOS replacing its first token when wanted); logits
/// only for the scored half.
fn fill_chunk(
    batch: &mut LlamaBatch,
    tokens: &[LlamaToken],
    n_ctx: usize,
    bos: Option<LlamaToken>,
    c: usize,
) -> Result<(), EngineError> {
    let first = n_ctx / 2;
    batch.clear();
    let chunk = &tokens[c * n_ctx..(c + 1) * n_ctx];
    for (pos, &t) in chunk.iter().enumerate() {
        let t = match (pos, bos) {
            (0, Some(b)) => b,
            _ => t,
        };
        batch
            .add(t, pos as i32, &[0], pos >= first)
            .map_err(|e| EngineError::Decode {
                pos: pos as u32,
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

fn decode(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch,
    c: usize,
    n_ctx: usize,
) -> Result<(), EngineError> {
    ctx.clear_kv_cache();
    ctx.decode(batch).map_err(|e| EngineError::Decode {
        pos: (c * n_ctx) as u32,
        reason: e.to_string(),
    })
}

/// The logits rows of batch positions `first .. first + rows`.
fn logits_rows<'c>(ctx: &'c LlamaContext<'_>, first: usize, rows: usize) -> Vec<&'c [f32]> {
    (0..rows)
        .map(|i| ctx.get_logits_ith((first + i) as i32))
        .collect()
}

/// Runs `f(row)` for rows `0..n` on `threads` threads, in contiguous ranges; results
/// come back in row order (so sums are reproducible).
fn par_rows<T: Send>(n: usize, threads: usize, f: &(dyn Fn(usize) -> T + Sync)) -> Vec<T> {
    let per = n.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(per)
            .map(|lo| s.spawn(move || (lo..(lo + per).min(n)).map(f).collect::<Vec<T>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("scoring thread panicked"))
            .collect()
    })
}

/// Scores `req.text` with `model` (and, for `kld`, against `reference`).
#[allow(clippy::too_many_arguments)]
pub fn score(
    backend: &LlamaBackend,
    model: Loaded<'_>,
    reference: Option<Loaded<'_>>,
    req: &QualityRequest,
    threads: u32,
    perf: bool,
    observer: &mut dyn EventObserver,
    cancel: &CancellationToken,
) -> Result<ScoreOutcome, EngineError> {
    let n_ctx = req.n_ctx;
    check_n_ctx(n_ctx, model.model.n_ctx_train()).map_err(refuse)?;
    if let Some(r) = &reference {
        check_n_ctx(n_ctx, r.model.n_ctx_train()).map_err(refuse)?;
    }
    if req.max_chunks == Some(0) {
        return Err(refuse(QualityError::BadMaxChunks));
    }
    let bytes = req.text.prompt_bytes();
    let tokens = tokenize(model.model, bytes);
    if let Some(r) = &reference {
        let mismatch = |detail: String| {
            refuse(QualityError::VocabMismatch {
                model: model.name.to_string(),
                reference: r.name.to_string(),
                detail,
            })
        };
        let (a, b) = (model.model.n_vocab(), r.model.n_vocab());
        if a != b {
            return Err(mismatch(format!("{a} vs {b} tokens")));
        }
        if tokenize(r.model, bytes) != tokens {
            return Err(mismatch("the text tokenizes differently".into()));
        }
    }
    let n = n_ctx as usize;
    let planned = chunk_count(tokens.len(), n_ctx, req.max_chunks);
    if planned == 0 {
        return Err(refuse(QualityError::TextTooShort {
            name: req.text.name.clone(),
            tokens: tokens.len(),
            n_ctx,
        }));
    }
    let bos = |m: &LlamaModel| m.vocab().should_add_bos().then(|| m.vocab().bos());

    let o = GenerateOptions {
        n_ctx,
        batch: n_ctx,
        ..GenerateOptions::default()
    };
    let mut ctx = new_context(backend, model.model, &o, n_ctx, threads, threads, perf)?;
    let mut ref_ctx = match &reference {
        Some(r) => Some(new_context(
            backend, r.model, &o, n_ctx, threads, threads, perf,
        )?),
        None => None,
    };
    let mut batch = LlamaBatch::new(n, 1);
    let first = first_scored(n_ctx);
    let rows = n - 1 - first;

    let start_ns = monotonic_ns();
    observer.on_event(&EngineEvent::RepetitionStart {
        t_ns: start_ns,
        index: 0,
        warmup: false,
    });
    let eval_start_ns = monotonic_ns();
    observer.on_event(&EngineEvent::PrefillStart {
        t_ns: eval_start_ns,
        prompt_tokens: (planned * n).min(u32::MAX as usize) as u32,
    });
    let mut nll = NllSum::default();
    let mut kld = KldSum::default();
    let mut done = 0usize;
    let mut finish = FinishReason::Length;
    for c in 0..planned {
        if cancel.is_cancelled() {
            finish = FinishReason::Canceled;
            break;
        }
        let targets = &tokens[c * n + first + 1..(c + 1) * n];
        fill_chunk(&mut batch, &tokens, n, bos(model.model), c)?;
        decode(&mut ctx, &mut batch, c, n)?;
        match (&reference, ref_ctx.as_mut()) {
            (Some(r), Some(rc)) => {
                fill_chunk(&mut batch, &tokens, n, bos(r.model), c)?;
                decode(rc, &mut batch, c, n)?;
                // The contexts are not Sync; their logits rows are.
                let q = logits_rows(&ctx, first, rows);
                let base = logits_rows(rc, first, rows);
                let per: Vec<TokenKld> = par_rows(rows, threads as usize, &|i| {
                    token_kld(base[i], q[i], targets[i].0 as usize)
                });
                for t in &per {
                    kld.add(t);
                }
            }
            _ => {
                let q = logits_rows(&ctx, first, rows);
                let per: Vec<f64> = par_rows(rows, threads as usize, &|i| {
                    token_nll(q[i], targets[i].0 as usize).0
                });
                for v in per {
                    nll.add(v);
                }
            }
        }
        done += 1;
    }
    // No `prefill_end`: it would open a decode phase (and a `decode` status) that a
    // quality job does not have; `done` closes the eval phase.
    let eval_end_ns = monotonic_ns();
    observer.on_event(&EngineEvent::Done {
        t_ns: eval_end_ns,
        finish_reason: finish,
    });

    let eval_ms = ns_to_ms(eval_end_ns - eval_start_ns);
    let per_s = |n: u64| {
        if eval_ms > 0.0 {
            n as f64 / (eval_ms / 1000.0)
        } else {
            0.0
        }
    };
    let tokens_scored = (done * rows) as u64;
    let tokens_evaluated = (done * n) as u64;
    let mut result = QualityResult {
        kind: req.kind.as_str().to_string(),
        text: req.text.name.clone(),
        text_sha256: req.text.sha256.clone(),
        n_ctx,
        chunks: done as u32,
        chunks_planned: planned as u32,
        tokens_scored,
        tokens_evaluated,
        eval_ms,
        tokens_scored_per_s: per_s(tokens_scored),
        tokens_evaluated_per_s: per_s(tokens_evaluated),
        ..QualityResult::default()
    };
    if req.kind == QualityKind::Kld {
        let st = kld.stats();
        let (ppl, se) = ppl_kld_style(&kld.nll);
        result.ppl = ppl;
        result.ppl_stderr = se;
        result.reference = reference.as_ref().map(|r| r.name.to_string());
        result.reference_ppl = Some(ppl_kld_style(&kld.nll_ref).0);
        result.kld_mean = Some(st.kld_mean);
        result.kld_stderr = Some(st.kld_stderr);
        result.kld_p99 = Some(st.kld_p99);
        result.delta_p_mean = Some(st.delta_p_mean);
        result.delta_p_stderr = Some(st.delta_p_stderr);
        result.top1_agreement = Some(st.top1_agreement);
        result.top1_stderr = Some(st.top1_stderr);
    } else {
        (result.ppl, result.ppl_stderr) = nll.ppl();
    }
    Ok(ScoreOutcome {
        result,
        finish_reason: finish,
        text_tokens: tokens.len(),
        eval_start_ns,
        eval_end_ns,
    })
}

/// PPL ± as the `--kl-divergence` run prints it (`mean_and_uncertainty` of the NLL).
fn ppl_kld_style(s: &NllSum) -> (f64, f64) {
    let (m, u) = super::kld::mean_and_uncertainty(s.nll, s.nll2, s.count);
    let ppl = if s.count > 0 { m.exp() } else { 0.0 };
    (ppl, ppl * u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_ctx_bounds() {
        assert!(check_n_ctx(512, 8192).is_ok());
        assert!(check_n_ctx(16, 8192).is_ok());
        assert_eq!(check_n_ctx(15, 8192).unwrap_err().code(), "invalid_n_ctx");
        assert_eq!(check_n_ctx(9000, 8192).unwrap_err().code(), "invalid_n_ctx");
    }

    #[test]
    fn rows_come_back_in_order_on_any_thread_count() {
        for t in [1, 2, 3, 7, 64] {
            let v = par_rows(10, t, &|i| i * i);
            assert_eq!(v, (0..10).map(|i| i * i).collect::<Vec<_>>());
        }
        assert!(par_rows(0, 4, &|i| i).is_empty());
    }
}
