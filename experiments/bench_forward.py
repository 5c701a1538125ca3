"""Forward-pass throughput of our Flax model vs transformers' PyTorch model, same weights, side by side.

Prints one JSON object as its last line: {"results": [{"config", "batch", "seq", "jax_tokens_per_s",
"torch_tokens_per_s", "ratio"}]} where ratio = jax time / torch time (< 1: we are faster).
Interleaved repeats, median time, because neighbours' load on a shared 2-core machine swings timings.
"""

import argparse
import json
import statistics
import tempfile
import time

import jax
import numpy as np
import torch
import transformers

from unlearn_jax import load_model

CONFIGS = {
    "tiny": dict(vocab_size=1024, hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512),
    "medium": dict(vocab_size=8192, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                   num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512),
}


def interleaved_medians(jax_fn, torch_fn, repeats: int) -> tuple[float, float]:
    """Median seconds of each function, timed alternately so a neighbour's load hits both alike."""
    jax_times, torch_times = [], []
    for _ in range(repeats):
        for fn, times in ((jax_fn, jax_times), (torch_fn, torch_times)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(jax_times), statistics.median(torch_times)


def bench(name: str, batch: int, seq: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIGS[name])).eval()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        lm = load_model(tmp)
    ids = np.random.default_rng(0).integers(0, CONFIGS[name]["vocab_size"], size=(batch, seq))
    ids_t = torch.tensor(ids)
    jax_ids = jax.numpy.asarray(ids)
    lm.logits(jax_ids).block_until_ready()
    def torch_forward():
        with torch.no_grad():
            model(input_ids=ids_t)

    jt, tt = interleaved_medians(lambda: lm.logits(jax_ids).block_until_ready(), torch_forward, repeats)
    tokens = batch * seq
    return {"config": name, "batch": batch, "seq": seq, "jax_tokens_per_s": round(tokens / jt),
            "torch_tokens_per_s": round(tokens / tt), "ratio": round(jt / tt, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--configs", default="tiny,medium")
    args = parser.parse_args()
    results = [bench(name, 32 if name == "tiny" else 8, 64 if name == "tiny" else 256, args.repeats)
               for name in args.configs.split(",")]
    for r in results:
        print(r)
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
