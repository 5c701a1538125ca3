"""GCG's hot loop — scoring a batch of candidate suffixes — ours (one jitted, batched call) vs a plain
PyTorch loop doing the same with the transformers model (same weights, sizes and batch: the candidates'
token-mean answer NLL, chunked forward under no_grad as nanoGCG does).

Prints one JSON object as its last line: {"results": [{"config", "candidates", "seq", "jax_candidates_per_s",
"torch_candidates_per_s", "ratio"}]}; ratio = our time / PyTorch's (< 1: we are faster). Interleaved
repeats, median time.
"""

import argparse
import json
import tempfile

import jax.numpy as jnp
import numpy as np
import torch
import transformers

from experiments.bench_forward import CONFIGS, interleaved_medians
from unlearn_jax import load_model
from unlearn_jax.audit.gcg import AttackBatch, GCGConfig, candidate_losses

PROMPT, SUFFIX, ANSWER = 12, 20, 4


def bench(name: str, candidates: int, repeats: int, chunk: int) -> dict:
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIGS[name])).eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        lm = load_model(tmp)
    vocab, seq = CONFIGS[name]["vocab_size"], PROMPT + SUFFIX + ANSWER
    rng = np.random.default_rng(0)
    ids = rng.integers(3, vocab, (1, seq)).astype(np.int32)
    loss_mask = np.zeros_like(ids)
    loss_mask[0, PROMPT + SUFFIX:] = 1
    positions = np.arange(PROMPT, PROMPT + SUFFIX, dtype=np.int32)[None]
    attack = AttackBatch(ids, np.ones_like(ids), loss_mask, positions, positions[:, -1])
    suffixes = rng.integers(3, vocab, (candidates, SUFFIX)).astype(np.int32)
    cfg = GCGConfig(suffix_length=SUFFIX, candidates=candidates)
    zeros = jnp.zeros((1, lm.config.hidden_size))
    jax_suffixes = jnp.asarray(suffixes)
    candidate_losses(lm.params, lm.config, attack, cfg, jax_suffixes, zeros).block_until_ready()

    full = np.repeat(ids, candidates, axis=0)
    full[:, PROMPT:PROMPT + SUFFIX] = suffixes
    full_t = torch.tensor(full, dtype=torch.long)
    targets = full_t[:, PROMPT + SUFFIX:]

    def torch_losses():
        out = []
        with torch.no_grad():
            for begin in range(0, candidates, chunk):
                logits = model(input_ids=full_t[begin:begin + chunk]).logits[:, PROMPT + SUFFIX - 1:-1]
                logp = torch.log_softmax(logits.float(), -1)
                out.append(-logp.gather(-1, targets[begin:begin + chunk, :, None])[..., 0].mean(-1))
        return torch.cat(out)

    ours = np.asarray(candidate_losses(lm.params, lm.config, attack, cfg, jax_suffixes, zeros))
    np.testing.assert_allclose(ours, torch_losses().numpy(), rtol=2e-3, atol=2e-4)  # the same computation
    jt, tt = interleaved_medians(
        lambda: candidate_losses(lm.params, lm.config, attack, cfg, jax_suffixes, zeros).block_until_ready(),
        torch_losses, repeats)
    return {"config": name, "candidates": candidates, "seq": seq, "jax_candidates_per_s": round(candidates / jt),
            "torch_candidates_per_s": round(candidates / tt), "ratio": round(jt / tt, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--configs", default="tiny,medium")
    parser.add_argument("--chunk", type=int, default=128, help="PyTorch forward chunk (nanoGCG batches this way)")
    args = parser.parse_args()
    results = [bench(name, 512 if name == "tiny" else 128, args.repeats, args.chunk)
               for name in args.configs.split(",")]
    for r in results:
        print(r)
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
