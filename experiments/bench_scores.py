"""Scoring throughput vs a bare forward pass over the same data (target: >= 90 %).

Both sides are jitted, batched the same way (the score path runs the forward and derives every score —
loss, Min-K% and Min-K%++ at two k, exact match — from its logits). Prints one JSON object last:
{"results": [{"config", "records", "forward_s", "score_s", "throughput_ratio"}]}.
"""

import argparse
import json
import statistics
import time
from functools import partial

import jax
import numpy as np

from unlearn_jax.data.tokenize import TokenSet
from unlearn_jax.models import llama
from unlearn_jax.objectives.logprobs import forward_logits
from unlearn_jax.objectives.reference import map_records
from unlearn_jax.scores.memorization import score_records

CONFIGS = {
    "tiny": (llama.ModelConfig(vocab_size=384, hidden_size=128, intermediate_size=344, num_layers=4, num_heads=4,
                               num_kv_heads=4, head_dim=32), 1024, 32),
    "medium": (llama.ModelConfig(vocab_size=8192, hidden_size=512, intermediate_size=1376, num_layers=8,
                                 num_heads=8, num_kv_heads=8, head_dim=64), 64, 256),
}


@partial(jax.jit, static_argnums=1)
def _bare_forward(params, config, batch):
    return {"argmax": forward_logits(params, config, batch).argmax(-1)}  # a [B, S] result: no V-sized copy out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = []
    for name, (config, n, seq) in CONFIGS.items():
        params = llama.init_params(config, jax.random.PRNGKey(0))
        rng = np.random.default_rng(0)
        ids = rng.integers(3, config.vocab_size, size=(n, seq)).astype(np.int32)
        ones = np.ones_like(ids)
        loss = ones.copy()
        loss[:, : seq // 2] = 0
        data = TokenSet(ids, ones, loss, tuple(map(str, range(n))))
        texts = ["some answer text"] * n
        forward = partial(map_records, partial(_bare_forward, params, config), data, 32)
        scoring = partial(score_records, params, config, data, texts, batch_size=32)
        forward()
        scoring()
        f_times, s_times = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            forward()
            f_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            scoring()
            s_times.append(time.perf_counter() - start)
        f, s = statistics.median(f_times), statistics.median(s_times)
        results.append({"config": name, "records": n, "forward_s": round(f, 3), "score_s": round(s, 3),
                        "throughput_ratio": round(f / s, 3)})
        print(results[-1], flush=True)
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
