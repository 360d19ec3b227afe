#!/usr/bin/env python3
"""Writes a tiny llama-architecture GGUF with RANDOM WEIGHTS (issue 15).

    scripts/tiny-llama-gguf.py OUT.gguf [--layers 8] [--embd 256] [--ff 768] [--seed 15]

What it is for: a model small enough to travel with the working tree to a lent GPU
machine (a few MB), that llama.cpp loads and runs like any llama model, so a run can
prove offload (layers on the GPU, device memory) and measure speed. What it is NOT:
a language model. Its text is noise; never use it for quality or energy-per-answer
figures. The file says so in general.name and general.description.

Needs llama.cpp's `gguf` package (PyPI: pip install gguf==0.19.0, brings numpy).
Weights: Q8_0 for the matrices, F32 for the norms; deterministic for a given seed.
Tokenizer: SentencePiece-style ("llama"): <unk> <s> </s>, 256 byte tokens (byte
fallback) and the printable ASCII characters, so any text tokenizes.
"""

import argparse
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("tiny-llama-gguf: the 'gguf' package is missing: pip install gguf==0.19.0")


def vocab():
    tokens, scores, types = [], [], []
    T = gguf.TokenType
    for t in ("<unk>", "<s>", "</s>"):
        tokens.append(t)
        scores.append(0.0)
        types.append(T.UNKNOWN if t == "<unk>" else T.CONTROL)
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(T.BYTE)
    for i, c in enumerate(chr(c) for c in range(32, 127)):
        tokens.append("\u2581" if c == " " else c)
        scores.append(-float(i + 1))
        types.append(T.NORMAL)
    return tokens, scores, types


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--ff", type=int, default=768)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=15)
    a = ap.parse_args()

    rng = np.random.default_rng(a.seed)
    tokens, scores, types = vocab()
    n_vocab = len(tokens)
    head_dim = a.embd // a.heads
    n_embd_kv = head_dim * a.kv_heads

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("tiny-llama RANDOM WEIGHTS (offload/speed check only, not a language model)")
    w.add_description("random weights written by edgewatt scripts/tiny-llama-gguf.py; "
                      "proves GPU offload and speed, says nothing about quality")
    w.add_context_length(a.ctx)
    w.add_embedding_length(a.embd)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(a.ff)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)

    def mat(name, rows, cols):
        x = (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)
        q = gguf.quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    def norm(name, n):
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    mat("token_embd.weight", n_vocab, a.embd)
    for i in range(a.layers):
        p = f"blk.{i}."
        norm(p + "attn_norm.weight", a.embd)
        mat(p + "attn_q.weight", a.embd, a.embd)
        mat(p + "attn_k.weight", n_embd_kv, a.embd)
        mat(p + "attn_v.weight", n_embd_kv, a.embd)
        mat(p + "attn_output.weight", a.embd, a.embd)
        norm(p + "ffn_norm.weight", a.embd)
        mat(p + "ffn_gate.weight", a.ff, a.embd)
        mat(p + "ffn_up.weight", a.ff, a.embd)
        mat(p + "ffn_down.weight", a.embd, a.ff)
    norm("output_norm.weight", a.embd)
    mat("output.weight", n_vocab, a.embd)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"tiny-llama-gguf: wrote {a.out} ({a.layers} layers, embd {a.embd}, "
          f"vocab {n_vocab}, RANDOM WEIGHTS)")


if __name__ == "__main__":
    main()
