//! Synthetic token sequences for benchmark jobs: the `prompt_tokens` prompt (exactly N
//! tokens, what llama-bench's `-p` measures) and the `depth` tokens put into the
//! context before it (llama-bench's `-d`). Deterministic from the job's seed.
//!
//! Like llama-bench, tokens are drawn uniformly from the vocabulary and the sequence
//! starts with BOS when the model adds one. Unlike llama-bench, control tokens (EOG,
//! chat markers) are never drawn, and BOS appears only once, at context position 0:
//! with `depth` it opens the depth block and the measured prompt has none (llama-bench
//! starts both blocks with BOS). BOS counts towards `prompt_tokens`.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use rand::{Rng, SeedableRng};

use super::error::EngineError;

/// The two blocks of a request's context: unmeasured depth, then the measured prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextTokens {
    /// Tokens decoded first, unmeasured (`depth`); empty when depth is 0.
    pub depth: Vec<LlamaToken>,
    /// The measured prompt.
    pub prompt: Vec<LlamaToken>,
}

/// Which of a seed's two streams a block is drawn from (the prompt's does not
/// change with `depth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The measured prompt (`prompt_tokens`).
    Prompt,
    /// The unmeasured depth block.
    Depth,
}

/// `n` token ids drawn uniformly (seeded) from `0..n_vocab` among those `usable`
/// accepts, the first one replaced by `bos` when given. Pure: same arguments, same
/// sequence.
pub fn synthetic_ids(
    n: u32,
    seed: u32,
    stream: Stream,
    n_vocab: i32,
    bos: Option<i32>,
    usable: impl Fn(i32) -> bool,
) -> Vec<i32> {
    let stream_bit = match stream {
        Stream::Prompt => 0,
        Stream::Depth => 1,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64((u64::from(seed) << 1) | stream_bit);
    let mut out = Vec::with_capacity(n as usize);
    if n == 0 || n_vocab <= 0 {
        return out;
    }
    if let Some(b) = bos {
        out.push(b);
    }
    // A vocabulary with no usable token at all would loop forever: bound the tries.
    let mut tries = 0u64;
    while out.len() < n as usize {
        let id = rng.gen_range(0..n_vocab);
        tries += 1;
        if usable(id) || tries > 1_000 * u64::from(n) {
            out.push(id);
        }
    }
    out
}

/// Builds the context tokens of a request: `depth` synthetic tokens, then either
/// `prompt_tokens` synthetic tokens or the tokenized prompt (`prompt`), whose leading
/// BOS is dropped when a depth block already opened the context.
pub fn context_tokens(
    model: &LlamaModel,
    prompt_tokens: Option<u32>,
    prompt: impl FnOnce() -> Result<Vec<LlamaToken>, EngineError>,
    depth: u32,
    seed: u32,
) -> Result<ContextTokens, EngineError> {
    let vocab = model.vocab();
    let n_vocab = model.n_vocab();
    let bos = vocab.should_add_bos().then(|| vocab.bos().0);
    let usable = |id: i32| !vocab.is_control(LlamaToken(id)) && !vocab.is_eog(LlamaToken(id));
    let draw = |n: u32, stream: Stream, bos: Option<i32>| -> Vec<LlamaToken> {
        synthetic_ids(n, seed, stream, n_vocab, bos, usable)
            .into_iter()
            .map(LlamaToken)
            .collect()
    };
    let depth_block = draw(depth, Stream::Depth, bos);
    let opened = !depth_block.is_empty();
    let prompt = match prompt_tokens {
        Some(n) => draw(n, Stream::Prompt, if opened { None } else { bos }),
        None => {
            let mut p = prompt()?;
            if opened && p.len() > 1 && bos == Some(p[0].0) {
                p.remove(0);
            }
            p
        }
    };
    if prompt.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    Ok(ContextTokens {
        depth: depth_block,
        prompt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_length_bos_first_deterministic_per_seed() {
        let a = synthetic_ids(32, 7, Stream::Prompt, 1000, Some(1), |_| true);
        assert_eq!(a.len(), 32);
        assert_eq!(a[0], 1);
        assert_eq!(
            a,
            synthetic_ids(32, 7, Stream::Prompt, 1000, Some(1), |_| true)
        );
        assert_ne!(
            a,
            synthetic_ids(32, 8, Stream::Prompt, 1000, Some(1), |_| true)
        );
        assert_ne!(
            a,
            synthetic_ids(32, 7, Stream::Depth, 1000, Some(1), |_| true)
        );
        let no_bos = synthetic_ids(32, 7, Stream::Prompt, 1000, None, |_| true);
        assert_eq!(no_bos.len(), 32);
        assert!(no_bos.iter().all(|&t| (0..1000).contains(&t)));
        assert!(synthetic_ids(0, 7, Stream::Prompt, 1000, Some(1), |_| true).is_empty());
        assert_eq!(
            synthetic_ids(1, 7, Stream::Prompt, 1000, Some(1), |_| true),
            [1]
        );
    }

    #[test]
    fn unusable_tokens_are_never_drawn_and_a_vocab_without_any_still_ends() {
        let ids = synthetic_ids(500, 3, Stream::Prompt, 100, None, |t| t % 2 == 0);
        assert!(ids.iter().all(|t| t % 2 == 0));
        let ids = synthetic_ids(5, 3, Stream::Prompt, 100, None, |_| false);
        assert_eq!(ids.len(), 5);
    }
}
