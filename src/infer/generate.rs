//! One request on a loaded model: tokenize (chat template applied), prefill in
//! batches, then sample/decode token by token, emitting events with our own
//! monotonic timestamps. Runs only on the inference thread.

use std::num::NonZeroU32;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio_util::sync::CancellationToken;

use super::error::EngineError;
use super::events::{EngineEvent, EventObserver, FinishReason};
use super::metrics::{ns_to_ms, tps, RepetitionReport};
use super::request::{GenerateOptions, PromptInput};
use crate::clock::monotonic_ns;

/// How many recent tokens the repetition penalty looks at (llama.cpp's default).
const PENALTY_LAST_N: i32 = 64;

/// Renders the input to the text llama.cpp tokenizes, and whether special tokens in
/// it are to be parsed (chat templates insert them; raw user prompts must not).
pub fn render_prompt(
    model: &LlamaModel,
    model_name: &str,
    input: &PromptInput,
) -> Result<(String, bool), EngineError> {
    match input {
        PromptInput::Prompt(p) => Ok((p.clone(), false)),
        PromptInput::Tokens(_) | PromptInput::PromptTokens(_) => Ok((String::new(), false)),
        PromptInput::Messages(msgs) => {
            let tmpl = model
                .chat_template(None)
                .map_err(|_| EngineError::NoChatTemplate {
                    name: model_name.to_string(),
                })?;
            let chat = msgs
                .iter()
                .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EngineError::ChatTemplate {
                    name: model_name.to_string(),
                    reason: e.to_string(),
                })?;
            let text = model.apply_chat_template(&tmpl, &chat, true).map_err(|e| {
                EngineError::ChatTemplate {
                    name: model_name.to_string(),
                    reason: e.to_string(),
                }
            })?;
            Ok((text, true))
        }
    }
}

/// Tokenizes the input (BOS added when the model asks for it).
pub fn tokenize(
    model: &LlamaModel,
    model_name: &str,
    input: &PromptInput,
) -> Result<Vec<LlamaToken>, EngineError> {
    if let PromptInput::Tokens(ids) = input {
        let n_vocab = model.n_vocab();
        if let Some(bad) = ids.iter().find(|&&t| t < 0 || t >= n_vocab) {
            return Err(EngineError::InvalidOption {
                field: "tokens",
                reason: format!("token id '{bad}' is outside the vocabulary (0..{n_vocab})"),
            });
        }
        return Ok(ids.iter().map(|&t| LlamaToken(t)).collect());
    }
    if let PromptInput::PromptTokens(n) = input {
        // Counting only (the run draws them with the job's seed; the count is the same).
        let none = || Ok(Vec::new());
        return super::synthetic::context_tokens(model, Some(*n), none, 0, 0).map(|c| c.prompt);
    }
    let (text, parse_special) = render_prompt(model, model_name, input)?;
    let tokens = model.vocab().tokenize(text.as_bytes(), true, parse_special);
    if tokens.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    Ok(tokens)
}

/// Builds the sampler chain for the options.
fn sampler(model: &LlamaModel, o: &GenerateOptions, seed: u32) -> LlamaSampler {
    let mut chain = Vec::new();
    if o.repeat_penalty != 1.0 {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            PENALTY_LAST_N,
            o.repeat_penalty,
            0.0,
            0.0,
        ));
    }
    if o.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if o.top_k > 0 {
            chain.push(LlamaSampler::top_k(o.top_k as i32));
        }
        if o.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(o.top_p, 1));
        }
        if o.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(o.min_p, 1));
        }
        chain.push(LlamaSampler::temp(o.temperature));
        chain.push(LlamaSampler::dist(seed));
    }
    LlamaSampler::chain_simple(chain)
}

/// Creates the context for a request.
pub fn new_context<'m>(
    backend: &LlamaBackend,
    model: &'m LlamaModel,
    o: &GenerateOptions,
    n_ctx: u32,
    threads: u32,
    threads_batch: u32,
    perf: bool,
) -> Result<LlamaContext<'m>, EngineError> {
    let batch = o.batch.max(1);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(batch)
        .with_n_ubatch(batch.min(512))
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads_batch as i32)
        .with_no_perf(!perf);
    model
        .new_context(backend, params)
        .map_err(|_| EngineError::Context { n_ctx, batch })
}

/// Assembles UTF-8 text from token bytes that may split a character.
#[derive(Default)]
pub struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Appends bytes; returns the text that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let out = s.to_string();
                self.pending.clear();
                out
            }
            Err(e) if e.error_len().is_none() => {
                // Incomplete sequence at the end: hold it back for the next token.
                let valid = e.valid_up_to();
                let out = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
                self.pending.drain(..valid);
                out
            }
            Err(_) => {
                let out = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                out
            }
        }
    }

    /// Flushes held-back bytes (lossily).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Finds the earliest stop string in `text` that could have been completed by the
/// last `new_len` bytes; returns the byte index where it starts.
pub fn find_stop(text: &str, new_len: usize, stops: &[String]) -> Option<usize> {
    let longest = stops.iter().map(String::len).max()?;
    let mut from = text.len().saturating_sub(new_len + longest);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text[from..].find(s.as_str()).map(|i| from + i))
        .min()
}

/// Result of one repetition.
pub struct RepOutcome {
    pub report: RepetitionReport,
    pub text: String,
    pub token_gaps_ms: Vec<f64>,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// Decodes `tokens` into a cleared context from position 0 without logits: the
/// unmeasured `depth` block (before the repetition's start marker).
fn fill_depth(
    ctx: &mut LlamaContext<'_>,
    tokens: &[LlamaToken],
    n_batch: usize,
    cancel: &CancellationToken,
) -> Result<(), EngineError> {
    let mut batch = LlamaBatch::new(n_batch.max(1), 1);
    for (c, chunk) in tokens.chunks(n_batch.max(1)).enumerate() {
        if cancel.is_cancelled() {
            return Err(EngineError::Canceled);
        }
        batch.clear();
        for (j, t) in chunk.iter().enumerate() {
            let pos = c * n_batch + j;
            batch
                .add(*t, pos as i32, &[0], false)
                .map_err(|e| EngineError::Decode {
                    pos: pos as u32,
                    reason: e.to_string(),
                })?;
        }
        ctx.decode(&mut batch).map_err(|e| EngineError::Decode {
            pos: (c * n_batch) as u32,
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// Runs one repetition (prefill + decode) on a fresh KV cache, after putting the
/// unmeasured `depth` tokens into it.
#[allow(clippy::too_many_arguments)]
pub fn run_repetition(
    ctx: &mut LlamaContext<'_>,
    model: &LlamaModel,
    depth: &[LlamaToken],
    tokens: &[LlamaToken],
    o: &GenerateOptions,
    seed: u32,
    index: u32,
    warmup: bool,
    observer: &mut dyn EventObserver,
    cancel: &CancellationToken,
) -> Result<RepOutcome, EngineError> {
    let n_ctx = ctx.n_ctx();
    let n_batch = ctx.n_batch().max(1) as usize;
    ctx.clear_kv_cache();
    fill_depth(ctx, depth, n_batch, cancel)?;
    let base = depth.len();
    let vocab = model.vocab();
    let mut smpl = sampler(model, o, seed);

    let start_ns = monotonic_ns();
    observer.on_event(&EngineEvent::RepetitionStart {
        t_ns: start_ns,
        index,
        warmup,
    });

    // Prefill: the prompt in n_batch chunks; logits only for the last token.
    let prefill_start = monotonic_ns();
    observer.on_event(&EngineEvent::PrefillStart {
        t_ns: prefill_start,
        prompt_tokens: tokens.len() as u32,
    });
    let mut batch = LlamaBatch::new(n_batch.max(1), 1);
    let last = tokens.len() - 1;
    for (c, chunk) in tokens.chunks(n_batch).enumerate() {
        if cancel.is_cancelled() {
            return Err(EngineError::Canceled);
        }
        batch.clear();
        for (j, t) in chunk.iter().enumerate() {
            let pos = c * n_batch + j;
            batch
                .add(*t, (base + pos) as i32, &[0], pos == last)
                .map_err(|e| EngineError::Decode {
                    pos: pos as u32,
                    reason: e.to_string(),
                })?;
        }
        ctx.decode(&mut batch).map_err(|e| EngineError::Decode {
            pos: (c * n_batch) as u32,
            reason: e.to_string(),
        })?;
    }
    let prefill_end = monotonic_ns();
    observer.on_event(&EngineEvent::PrefillEnd { t_ns: prefill_end });

    // Decode: sample from the last logits, emit, then feed the token back.
    let mut text = String::new();
    let mut utf8 = Utf8Assembler::default();
    let mut n_past = (base + tokens.len()) as u32;
    let mut generated: u32 = 0;
    let mut token_times: Vec<u64> = Vec::with_capacity(o.max_tokens as usize);
    let mut logits_idx = batch.n_tokens() - 1;
    let finish = loop {
        if cancel.is_cancelled() {
            break FinishReason::Canceled;
        }
        let token = smpl.sample(ctx, logits_idx);
        let t_tok = monotonic_ns();
        let eog = vocab.is_eog(token);
        if eog && !o.ignore_eos {
            break FinishReason::Eog;
        }
        let bytes = vocab.token_to_piece(token, false, None);
        let piece = utf8.push(&bytes);
        let before = text.len();
        text.push_str(&piece);
        generated += 1;
        token_times.push(t_tok);
        observer.on_event(&EngineEvent::Token {
            t_ns: t_tok,
            index: generated - 1,
            id: token.0,
            piece,
        });
        if let Some(at) = find_stop(&text, text.len() - before, &o.stop) {
            text.truncate(at);
            break FinishReason::Stop;
        }
        if generated >= o.max_tokens || n_past >= n_ctx {
            break FinishReason::Length;
        }
        batch.clear();
        batch
            .add(token, n_past as i32, &[0], true)
            .map_err(|e| EngineError::Decode {
                pos: n_past,
                reason: e.to_string(),
            })?;
        ctx.decode(&mut batch).map_err(|e| EngineError::Decode {
            pos: n_past,
            reason: e.to_string(),
        })?;
        n_past += 1;
        logits_idx = 0;
    };
    text.push_str(&utf8.finish());
    let end_ns = monotonic_ns();
    observer.on_event(&EngineEvent::Done {
        t_ns: end_ns,
        finish_reason: finish,
    });

    let prefill_ms = ns_to_ms(prefill_end - prefill_start);
    let ttft_ms = token_times
        .first()
        .map(|t| ns_to_ms(t - prefill_start))
        .unwrap_or(0.0);
    let decode_ms = match (token_times.first(), token_times.last()) {
        (Some(a), Some(b)) => ns_to_ms(b - a),
        _ => 0.0,
    };
    let token_gaps_ms: Vec<f64> = token_times
        .windows(2)
        .map(|w| ns_to_ms(w[1] - w[0]))
        .collect();
    let report = RepetitionReport {
        index,
        prompt_tokens: tokens.len() as u32,
        generated,
        prefill_ms,
        ttft_ms,
        decode_ms,
        prefill_tps: tps(tokens.len() as u32, prefill_ms),
        decode_tps: tps(generated.saturating_sub(1), decode_ms),
        finish_reason: Some(finish),
    };
    Ok(RepOutcome {
        report,
        text,
        token_gaps_ms,
        start_ns,
        end_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens_is_held_back() {
        let mut a = Utf8Assembler::default();
        let e = "é".as_bytes();
        assert_eq!(a.push(&e[..1]), "");
        assert_eq!(a.push(&e[1..]), "é");
        assert_eq!(a.push(b"ok"), "ok");
        assert_eq!(a.push(&[0xff]), "\u{fffd}");
    }

    #[test]
    fn stop_strings_found_across_pieces() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(find_stop("hello\n", 1, &stops), None);
        assert_eq!(find_stop("hello\n\n", 1, &stops), Some(5));
        assert_eq!(find_stop("abcEN", 2, &stops), None);
        assert_eq!(find_stop("abcEND", 1, &stops), Some(3));
        assert_eq!(find_stop("x", 1, &[]), None);
        assert_eq!(find_stop("héllo END", 3, &stops), Some(7));
    }
}
